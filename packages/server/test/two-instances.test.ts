import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Customer, Drawdown, DrawdownError, type Subscription, toCredits } from "@drawdown/sdk";
import type { TestDatabase } from "@drawdown/storage/testing";
import { POSTGRES_URL, postgresDatabase, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Two server instances sharing one PostgreSQL database, as two processes of one deployment:
 * each with its own connection pool, key and clock caches, and a scheduler running every few
 * milliseconds, racing the requests. Requests alternate between the instances or go to both at
 * once: test-clock advances renew every period exactly once and expire every grant exactly once
 * (invariant 7), a code's claims never exceed its uses, concurrent debits never overdraw and
 * lose nothing (invariant 4), an idempotency key answers alike on both (invariant 5), a revoked
 * key stops, and reconcile stays clean (invariants 1 and 3).
 *
 * Registered only when DATABASE_URL is set (CI sets it), like the other PostgreSQL-only tests:
 * PGlite is one process's database, so two instances cannot share it.
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();
const UNIT = 1_000_000_000n;
/** An hour into each monthly period after the first (April to August 2026). */
const MONTHS = [4, 5, 6, 7, 8].map((m) => Date.UTC(2026, m - 1, 1) + HOUR);

if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("two server instances sharing PostgreSQL", () => {
    /** The instances' own clock: only the tenants' test clocks make time pass. */
    const now = T0;
    let database: TestDatabase;
    let a: TestServer;
    let b: TestServer;

    before(async () => {
      database = await postgresDatabase(url, { max: 2 });
      a = await startTestServer({ database, clock: () => now, schedulerMs: 15 });
      b = await startTestServer({ database, clock: () => now, schedulerMs: 15 });
    });
    after(async () => {
      await a?.close();
      await b?.close();
      await database?.close();
    });

    /** A fresh test tenant with a client on each instance, its clock at T0. */
    async function tenant() {
      const t = await a.newTenant("Two instances");
      const client = (server: TestServer) =>
        new Drawdown({ apiKey: t.key, baseUrl: server.url, maxRetries: 0 });
      const A = client(a);
      const B = client(b);
      await B.testClock.advance({ to: iso(T0) });
      /** The i-th request's instance: A, B, A, B... */
      const on = (i: number) => (i % 2 === 0 ? A : B);
      return { tenantId: t.tenantId, key: t.key, A, B, on };
    }

    const reconciles = async (tenantId: string) =>
      assert.deepEqual((await a.store.reconcile(tenantId)).differences, [], "reconcile finds no difference");

    /** Renewal keys per subscription, and renewal grants per subscription and period. */
    async function renewals(tenantId: string) {
      const { rows } = await a.store.db.query<{ subscription_id: string; period_index: number; n: number }>(
        `SELECT subscription_id, period_index, count(*)::int AS n FROM subscription_renewals
         WHERE tenant_id = $1 AND key LIKE 'renewal:%' GROUP BY 1, 2 ORDER BY 1, 2`,
        [tenantId],
      );
      const grants = await a.store.db.query<{ sub: string; period: string; n: number }>(
        `SELECT metadata->>'subscription_id' AS sub, metadata->>'period_index' AS period, count(*)::int AS n
         FROM grants WHERE tenant_id = $1 AND metadata->>'lifecycle' = 'renewal' GROUP BY 1, 2`,
        [tenantId],
      );
      return { keys: rows, grants: grants.rows };
    }

    /** Both instances advance the clock to each target at once (a retried advance is harmless). */
    async function advanceOnBoth(t: { A: Drawdown; B: Drawdown }, to: number) {
      const [x, y] = await Promise.all([
        t.A.testClock.advance({ to: iso(to) }),
        t.B.testClock.advance({ to: iso(to) }),
      ]);
      assert.equal(x.to, iso(to));
      assert.equal(y.to, iso(to));
    }

    test("advances issued on both instances at once renew each period exactly once", async () => {
      const t = await tenant();
      const plain = await t.A.plans.create({
        name: "Monthly 25",
        base_fee: { amount: "20", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
      });
      const rolling = await t.B.plans.create({
        name: "Rolling 25",
        base_fee: { amount: "20", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
        rollover: { kind: "full", max_periods: 1 },
      });
      const customers: Customer[] = [];
      const subs: Subscription[] = [];
      for (let i = 0; i < 6; i++) {
        const c = await t.on(i).customers.create({ kind: "organization" });
        customers.push(c);
        subs.push(
          await t
            .on(i + 1)
            .subscriptions.create({ customer_id: c.id, plan_id: (i % 2 ? rolling : plain).id }),
        );
      }
      for (const [i, to] of MONTHS.entries()) {
        // Halfway into the month, then just into the next: both instances, each time.
        await advanceOnBoth(t, to - 15 * DAY);
        await advanceOnBoth(t, to);
        for (const [j, c] of customers.entries()) {
          // Read on either instance: the period just renewed is in force on both.
          const balance = await t.on(i + j).wallets.balance(c.wallet_id);
          assert.equal(balance.available, j % 2 ? "50" : "25", `customer ${j} after month ${i + 1}`);
          assert.equal((await t.on(i + j + 1).subscriptions.get(subs[j]!.id)).current_period, i + 1);
        }
      }
      const { keys, grants } = await renewals(t.tenantId);
      assert.equal(keys.length, subs.length * (MONTHS.length + 1));
      assert.ok(keys.every((k) => k.n === 1));
      assert.equal(grants.length, subs.length * (MONTHS.length + 1), "one renewal grant per period");
      assert.ok(
        grants.every((g) => g.n === 1),
        "no period granted twice",
      );
      await reconciles(t.tenantId);
    });

    test("a change on one instance is in force on the other at once: the tenant's time is the database's", async () => {
      const t = await tenant();
      const plan = await t.A.plans.create({
        name: "Rolling 25",
        base_fee: { amount: "20", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
        rollover: { kind: "full" },
      });
      const c = await t.A.customers.create({ kind: "organization" });
      const sub = await t.B.subscriptions.create({ customer_id: c.id, plan_id: plan.id, seats: 2 });
      let expected = 25;
      for (const [i, to] of MONTHS.entries()) {
        // B has just served the tenant (its caches are warm); A alone moves the clock.
        assert.equal((await t.B.wallets.balance(c.wallet_id)).available, String(expected));
        await t.A.testClock.advance({ to: iso(to) });
        expected += 25;
        // Everything B does next happens at the tenant's new time: the new period's credits are usable.
        const balance = await t.B.wallets.balance(c.wallet_id);
        assert.equal(balance.as_of, iso(to));
        assert.equal(balance.available, String(expected), `month ${i + 1}`);
        const tx = await t.B.adjustments.debit(c.wallet_id, {
          amount: String(expected - 5),
          reason: "usage",
        });
        assert.equal(tx.posted_at, iso(to), "B posts at the tenant's time");
        assert.equal((await t.B.testClock.get()).now, iso(to));
        expected = 5;
        assert.equal((await t.A.subscriptions.get(sub.id)).current_period, i + 1);
      }
      // And a subscription started on B right after A moved the clock starts at the new time.
      await t.A.testClock.advance({ to: iso(MONTHS[4]! + DAY) });
      await t.B.subscriptions.cancel(sub.id);
      const other = await t.A.customers.create({ kind: "individual" });
      const started = await t.B.subscriptions.create({ customer_id: other.id, plan_id: plan.id });
      assert.equal(started.started_at, iso(MONTHS[4]! + DAY));
      await reconciles(t.tenantId);
    });

    test("a subscription's life with each change on the other instance: seats, upgrade, downgrade, cancel", async () => {
      const t = await tenant();
      const plan = (name: string, allotment: string) =>
        t.A.plans.create({
          name,
          base_fee: { amount: "10", currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment,
          per_seat: true,
        });
      const team = await plan("Team", "10");
      const business = await plan("Business", "20");
      const c = await t.B.customers.create({ kind: "organization" });
      const sub = await t.A.subscriptions.create({ customer_id: c.id, plan_id: team.id, seats: 2 });
      const balance = async (dd: Drawdown) => (await dd.wallets.balance(c.wallet_id)).available;
      assert.equal(await balance(t.B), "20");
      // March has 31 days: a seat added with 21 left gets 21/31 of 10, rounded down to the unit.
      await t.A.testClock.advance({ to: iso(T0 + 10 * DAY) });
      await t.B.subscriptions.changeSeats(sub.id, { seats: 3 });
      const seat = (10n * UNIT * 21n) / 31n;
      assert.equal(await balance(t.A), toCredits(20n * UNIT + seat));
      // The upgrade with 11 days left: 11/31 of the difference at 3 seats (60 - 30).
      await t.B.testClock.advance({ to: iso(T0 + 20 * DAY) });
      const up = await t.A.subscriptions.changePlan(sub.id, { plan_id: business.id });
      assert.equal(up.plan_id, business.id);
      const upgrade = (30n * UNIT * 11n) / 31n;
      assert.equal(await balance(t.B), toCredits(20n * UNIT + seat + upgrade));
      await advanceOnBoth(t, MONTHS[0]!);
      assert.equal(await balance(t.A), "60", "April: Business at 3 seats; March's credits expired");
      const down = await t.B.subscriptions.changePlan(sub.id, { plan_id: team.id });
      assert.equal(down.pending_plan_id, team.id);
      assert.equal((await t.A.subscriptions.get(sub.id)).pending_plan_id, team.id);
      await advanceOnBoth(t, MONTHS[1]!);
      assert.equal(await balance(t.B), "30", "May: Team at 3 seats");
      const canceled = await t.A.subscriptions.cancel(sub.id);
      assert.equal(canceled.status, "canceled");
      await fails(t.B.subscriptions.cancel(sub.id), "invalid_argument", 400);
      await advanceOnBoth(t, MONTHS[2]!);
      assert.equal(await balance(t.A), "0", "closed at the period end");
      assert.equal((await t.B.subscriptions.get(sub.id)).next_renewal_at, null);
      const { keys, grants } = await renewals(t.tenantId);
      assert.deepEqual(
        keys.map((k) => [k.period_index, k.n]),
        [
          [0, 1],
          [1, 1],
          [2, 1],
        ],
      );
      assert.equal(grants.length, 3);
      const closes = await a.store.db.query(
        "SELECT 1 FROM subscription_renewals WHERE tenant_id = $1 AND key = $2",
        [t.tenantId, `close:${sub.id}`],
      );
      assert.equal(closes.rowCount, 1, "closed once");
      await reconciles(t.tenantId);
    });

    test("concurrent expiry: every grant expires once, at its time, whichever instance runs it", async () => {
      const t = await tenant();
      const grants: { id: string; expiresAt: number }[] = [];
      for (let i = 0; i < 6; i++) {
        const c = await t.on(i).customers.create({ kind: "organization" });
        const member = await t.on(i + 1).subjects.create(c.id, { kind: "member" });
        const mine = await t.on(i).wallets.create({ customer_id: c.id, member_id: member.id });
        for (const [j, walletId] of [c.wallet_id, mine.id, c.wallet_id].entries()) {
          const expiresAt = T0 + (1 + ((i * 3 + j) % 7)) * DAY + j * HOUR;
          const { grant } = await t.on(i + j).grants.create({
            wallet_id: walletId,
            amount: String(5 + j),
            source: "promo",
            expires_at: iso(expiresAt),
          });
          grants.push({ id: grant.id, expiresAt });
        }
      }
      for (const day of [2, 4, 4, 9]) await advanceOnBoth(t, T0 + day * DAY);
      for (const [i, g] of grants.entries()) {
        const after = await t.on(i).grants.get(g.id);
        assert.equal(after.status, "expired");
        assert.equal(after.remaining, "0");
        assert.equal(after.status_changed_at, iso(g.expiresAt), "expired at its own time");
      }
      const { rows } = await a.store.db.query<{ grant_id: string; n: number }>(
        `SELECT e.grant_id, count(*)::int AS n FROM journal_entries e
         JOIN journal_transactions t ON t.tenant_id = e.tenant_id AND t.id = e.tx_id
         WHERE e.tenant_id = $1 AND t.kind = 'expire' AND e.grant_id IS NOT NULL GROUP BY 1`,
        [t.tenantId],
      );
      assert.deepEqual(
        rows.map((r) => r.grant_id).sort(),
        grants.map((g) => g.id).sort(),
        "each grant's credits went to breakage",
      );
      assert.ok(
        rows.every((r) => r.n === 1),
        "once",
      );
      await reconciles(t.tenantId);
    });

    test("a gift code claimed on both instances at once: never more claims than uses, one per customer", async () => {
      const t = await tenant();
      const customers: Customer[] = [];
      for (let i = 0; i < 8; i++) customers.push(await t.on(i).customers.create({ kind: "individual" }));
      for (const uses of [1, 3]) {
        const code = await t.A.gifts.createCode({ code: `TWO-${uses}`, amount: "10", max_uses: uses });
        const outcomes = await Promise.allSettled(
          customers.map((c, i) => t.on(i).gifts.claim({ code: code.code, customer_id: c.id })),
        );
        const won = outcomes.filter((o) => o.status === "fulfilled");
        assert.equal(won.length, uses, `${uses} claim(s) of ${customers.length}`);
        for (const o of outcomes) {
          if (o.status === "rejected") {
            assert.ok(o.reason instanceof DrawdownError);
            assert.equal(o.reason.code, "gift_code_exhausted");
          }
        }
        const listed = (await t.B.gifts.listCodes()).data.find((x) => x.id === code.id)!;
        assert.equal(listed.uses, uses);
      }
      // One customer claiming one code on both instances at once: one claim.
      const code = await t.B.gifts.createCode({ code: "TWICE", amount: "4", max_uses: 5 });
      const both = await Promise.allSettled([
        t.A.gifts.claim({ code: code.code, customer_id: customers[0]!.id }),
        t.B.gifts.claim({ code: code.code, customer_id: customers[0]!.id }),
      ]);
      assert.equal(both.filter((o) => o.status === "fulfilled").length, 1);
      const lost = both.find((o) => o.status === "rejected") as PromiseRejectedResult;
      assert.equal((lost.reason as DrawdownError).code, "already_exists");
      // 10 (the single use) + 10 (one of three) + 4 for the first customer, as both instances see it.
      const { rows } = await a.store.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM gift_claims WHERE tenant_id = $1",
        [t.tenantId],
      );
      assert.equal(rows[0]!.n, 1 + 3 + 1);
      await reconciles(t.tenantId);
    });

    test("debits against one wallet from both instances at once: never below zero, nothing lost", async () => {
      const t = await tenant();
      const c = await t.A.customers.create({ kind: "organization" });
      await t.B.grants.create({
        wallet_id: c.wallet_id,
        amount: "100",
        source: "purchase",
        cost_basis: "0.01",
        currency: "USD",
      });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) =>
          t.on(i).adjustments.debit(c.wallet_id, { amount: "3", reason: `step ${i}` }),
        ),
      );
      const ok = outcomes.filter((o) => o.status === "fulfilled").length;
      assert.equal(ok, 33, "exactly what 100 credits cover");
      for (const o of outcomes)
        if (o.status === "rejected") assert.equal((o.reason as DrawdownError).code, "insufficient_credits");
      for (const dd of [t.A, t.B]) {
        const balance = await dd.wallets.balance(c.wallet_id);
        assert.equal(balance.total, "1");
        assert.equal(balance.available, "1");
      }
      const { rows } = await a.store.db.query<{ total: string }>(
        `SELECT sum(e.amount)::text AS total FROM journal_entries e JOIN journal_transactions t
           ON t.tenant_id = e.tenant_id AND t.id = e.tx_id
         WHERE e.tenant_id = $1 AND t.kind = 'adjustment.debit' AND e.account = 'adjustments'`,
        [t.tenantId],
      );
      assert.equal(BigInt(rows[0]!.total), 99n * 10n ** 9n, "every accepted debit journaled, once");
      await reconciles(t.tenantId);
    });

    test("an idempotency key answers alike on both instances, with one effect", async () => {
      const t = await tenant();
      const c = await t.A.customers.create({ kind: "organization" });
      const body = { wallet_id: c.wallet_id, amount: "12", source: "promo" as const };
      const first = await t.A.grants.create(body, { idempotencyKey: "grant-1" }).withResponse();
      const again = await t.B.grants.create(body, { idempotencyKey: "grant-1" }).withResponse();
      assert.equal(again.idempotentReplayed, true);
      assert.deepEqual(again.data, first.data);
      await fails(
        t.B.grants.create({ ...body, amount: "13" }, { idempotencyKey: "grant-1" }),
        "idempotency_key_reused",
        409,
      );
      // Sent to both at once: one grant, the same answer twice.
      const [x, y] = await Promise.all([
        t.A.grants.create(body, { idempotencyKey: "grant-2" }).withResponse(),
        t.B.grants.create(body, { idempotencyKey: "grant-2" }).withResponse(),
      ]);
      assert.deepEqual(x.data, y.data);
      assert.equal([x, y].filter((r) => r.idempotentReplayed).length, 1);
      // A subscription created twice at once under one key: one subscription, one period renewed.
      const plan = await t.B.plans.create({
        name: "Monthly 5",
        base_fee: { amount: "0", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "5",
      });
      const [s1, s2] = await Promise.all([
        t.A.subscriptions.create({ customer_id: c.id, plan_id: plan.id }, { idempotencyKey: "sub-1" }),
        t.B.subscriptions.create({ customer_id: c.id, plan_id: plan.id }, { idempotencyKey: "sub-1" }),
      ]);
      assert.deepEqual(s1, s2);
      assert.equal((await t.A.subscriptions.list(c.id)).data.length, 1);
      assert.equal((await t.B.wallets.balance(c.wallet_id)).available, String(12 + 12 + 5));
      await reconciles(t.tenantId);
    });

    test("a revoked key: refused at once by the instance that revoked it, and by another that had not cached it", async () => {
      const t = await tenant();
      const other = await t.A.apiKeys.create({ kind: "secret", name: "soon revoked" });
      const viaA = new Drawdown({ apiKey: other.secret!, baseUrl: a.url, maxRetries: 0 });
      const viaB = new Drawdown({ apiKey: other.secret!, baseUrl: b.url, maxRetries: 0 });
      await viaA.customers.list();
      await t.A.apiKeys.revoke(other.id);
      await fails(viaA.customers.list(), "unauthorized", 401);
      await fails(viaB.customers.create({ kind: "individual" }), "unauthorized", 401);
      // Revoked on B, used on A (which never saw it): refused too, and nothing written.
      const third = await t.A.apiKeys.create({ kind: "secret", name: "revoked elsewhere" });
      await t.B.apiKeys.revoke(third.id);
      const before = (await t.A.customers.list({ limit: 100 })).data.length;
      await fails(
        new Drawdown({ apiKey: third.secret!, baseUrl: a.url, maxRetries: 0 }).customers.create({
          kind: "individual",
        }),
        "unauthorized",
        401,
      );
      assert.equal((await t.B.customers.list({ limit: 100 })).data.length, before);
    });
  });

  /**
   * Revocations heard across instances: with a key cache that would trust a key for ten
   * minutes, a key revoked on one instance is refused by another that had cached it, as soon
   * as the notification arrives; and again after the other's listening connection was cut
   * (it reconnects, and empties its cache, since it may have missed one).
   */
  describe("a revocation reaches an instance that had cached the key", () => {
    const TEN_MINUTES = 600_000;
    let database: TestDatabase;
    let a: TestServer;
    let b: TestServer;

    before(async () => {
      database = await postgresDatabase(url, { max: 2 });
      a = await startTestServer({ database, clock: () => T0, keyCacheMs: TEN_MINUTES });
      b = await startTestServer({ database, clock: () => T0, keyCacheMs: TEN_MINUTES });
    });
    after(async () => {
      await a?.close();
      await b?.close();
      await database?.close();
    });

    /** Polls until `request` fails with `unauthorized`; only a heard revocation can end it (the cache would trust the key for ten minutes). */
    async function refusedSoon(request: () => Promise<unknown>): Promise<void> {
      for (let i = 0; i < 1_000; i++) {
        try {
          await request();
        } catch (error) {
          assert.ok(error instanceof DrawdownError);
          assert.equal(error.code, "unauthorized");
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail("the revoked key was still served from the cache");
    }

    test("refused by the instance that cached it, once the revocation is heard", async () => {
      const t = await a.newTenant("Revocations");
      const admin = new Drawdown({ apiKey: t.key, baseUrl: a.url, maxRetries: 0 });
      const other = await admin.apiKeys.create({ kind: "secret", name: "cached on B" });
      const viaB = new Drawdown({ apiKey: other.secret!, baseUrl: b.url, maxRetries: 0 });
      await viaB.customers.list(); // cached on B
      await admin.apiKeys.revoke(other.id);
      await refusedSoon(() => viaB.customers.list());
      // From then on it writes nothing.
      await fails(viaB.customers.create({ kind: "individual" }), "unauthorized", 401);
      assert.equal((await admin.customers.list({ limit: 100 })).data.length, 0);
    });

    test("a test clock's first advance on one instance is the other's time once heard", async () => {
      const t = await a.newTenant("First advance");
      const A = new Drawdown({ apiKey: t.key, baseUrl: a.url, maxRetries: 0 });
      const B = new Drawdown({ apiKey: t.key, baseUrl: b.url, maxRetries: 0 });
      const c = await A.customers.create({ kind: "individual" });
      // B serves the tenant in real time (its instance clock, T0), with the key cached.
      assert.equal((await B.wallets.balance(c.wallet_id)).as_of, iso(T0));
      const to = iso(T0 + DAY);
      await A.testClock.advance({ to });
      for (let i = 0; i < 1_000; i++) {
        if ((await B.wallets.balance(c.wallet_id)).as_of === to) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail("B still served the tenant at its own time");
    });

    test("after its listening connection is cut, the instance listens again", async () => {
      const t = await a.newTenant("Revocations after a cut");
      const admin = new Drawdown({ apiKey: t.key, baseUrl: a.url, maxRetries: 0 });
      const other = await admin.apiKeys.create({ kind: "secret", name: "cached on B" });
      const viaB = new Drawdown({ apiKey: other.secret!, baseUrl: b.url, maxRetries: 0 });
      await viaB.customers.list();
      const cut = await database.db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN drawdown_instances'",
      );
      assert.ok(cut.rowCount >= 2, "both instances' listeners were cut");
      await admin.apiKeys.revoke(other.id);
      await refusedSoon(() => viaB.customers.list());
      // Listening again: a key cached after the reconnection is refused once revoked.
      const later = await admin.apiKeys.create({ kind: "secret", name: "cached after the cut" });
      const laterViaB = new Drawdown({ apiKey: later.secret!, baseUrl: b.url, maxRetries: 0 });
      await laterViaB.customers.list();
      await admin.apiKeys.revoke(later.id);
      await refusedSoon(() => laterViaB.customers.list());
    });
  });
}
