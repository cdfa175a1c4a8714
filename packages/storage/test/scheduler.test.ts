/**
 * The scheduler's storage half: `runDue` expires every grant due by its tenant's clock
 * through the locked write pipeline, exactly once (invariant 7) whatever the number of
 * instances running it, and catches up on whatever came due while nothing ran; `advanceClock`
 * moves a test tenant's clock forward through every due time in order. On PGlite and (when
 * DATABASE_URL is set) PostgreSQL; the race between two instances needs real connections and
 * runs on PostgreSQL only. Time is the injected clock: nothing sleeps.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type Result } from "@drawdown/core";
import type { GrantRecord, Store } from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const c = (n: number): bigint => credits(BigInt(n));

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

for (const backend of backends()) {
  describe(`scheduler on ${backend.name}`, () => {
    let database: TestDatabase;
    /** The store's clock: real time as far as tenants without a test clock know. */
    let now = T0;
    let store: Store;

    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
    });
    after(async () => {
      await database?.close();
    });

    /** A tenant with `customers` customers, each with its pool wallet and a member's wallet. */
    async function tenant(environment: "live" | "test", customers = 1) {
      const t = await store.createTenant(`Scheduler ${environment}`, environment);
      const wallets: { customerId: string; pool: string; member: string }[] = [];
      for (let i = 0; i < customers; i++) {
        const customer = okv(
          await store.db.transaction((tx) => store.createCustomer(tx, t.id, { kind: "organization" })),
        );
        const subject = okv(
          await store.db.transaction((tx) =>
            store.createSubject(tx, t.id, { customerId: customer.id, kind: "member" }),
          ),
        );
        const member = okv(
          await store.db.transaction((tx) => store.createMemberWallet(tx, t.id, customer.id, subject.id)),
        );
        wallets.push({ customerId: customer.id, pool: customer.walletId, member: member.id });
      }
      return { tenantId: t.id, wallets };
    }

    async function grant(tenantId: string, walletId: string, amount: number, expiresAt: number | null) {
      return okv(
        await store.db.transaction((tx) =>
          store.createGrant(tx, tenantId, { walletId, amount: c(amount), source: "promo", expiresAt }),
        ),
      ).grant;
    }

    /** Every expire transaction of a tenant: when posted, and the grants it took from. */
    async function expiries(tenantId: string) {
      const { rows } = await store.db.query<{ id: string; posted_at: unknown; grants: string[] }>(
        `SELECT t.id, t.posted_at, array_agg(e.grant_id ORDER BY e.grant_id) FILTER (WHERE e.grant_id IS NOT NULL) AS grants
         FROM journal_transactions t JOIN journal_entries e ON e.tenant_id = t.tenant_id AND e.tx_id = t.id
         WHERE t.tenant_id = $1 AND t.kind = 'expire' GROUP BY t.id, t.posted_at, t.seq ORDER BY t.seq`,
        [tenantId],
      );
      return rows.map((r) => ({
        at: new Date(r.posted_at as string).getTime(),
        grants: r.grants ?? [],
      }));
    }

    /** How many breakage entries each grant has (invariant 7: one per expired grant with credits). */
    async function breakagesPerGrant(tenantId: string): Promise<Map<string, number>> {
      const { rows } = await store.db.query<{ grant_id: string; n: number }>(
        `SELECT e.grant_id, count(*)::int AS n FROM journal_entries e
         JOIN journal_transactions t ON t.tenant_id = e.tenant_id AND t.id = e.tx_id
         WHERE e.tenant_id = $1 AND t.kind = 'expire' AND e.grant_id IS NOT NULL GROUP BY e.grant_id`,
        [tenantId],
      );
      return new Map(rows.map((r) => [r.grant_id, r.n]));
    }

    const statusOf = async (tenantId: string, g: GrantRecord) => {
      const x = (await store.getGrant(tenantId, g.id))!;
      return [x.status, x.remaining, x.statusAt] as const;
    };

    async function assertReconciles(): Promise<void> {
      assert.deepEqual((await store.reconcile()).differences, []);
    }

    test("runDue expires the due grants of real-time tenants, by the injected clock, once", async () => {
      now = T0;
      const live = await tenant("live");
      const test = await tenant("test");
      const [l] = live.wallets;
      const [t] = test.wallets;
      const due = [
        await grant(live.tenantId, l!.pool, 10, now + HOUR),
        await grant(live.tenantId, l!.member, 4, now + 2 * HOUR),
        await grant(test.tenantId, t!.pool, 7, now + HOUR),
      ];
      const later = await grant(live.tenantId, l!.pool, 5, now + 365 * DAY);
      const never = await grant(test.tenantId, t!.pool, 3, null);

      now = T0 + 30 * 60_000;
      assert.equal(await store.runDue(), 0, "nothing is due yet");
      now = T0 + 3 * HOUR;
      assert.equal(await store.runDue(), 3);
      for (const [g, tenantId] of [
        [due[0]!, live.tenantId],
        [due[1]!, live.tenantId],
        [due[2]!, test.tenantId],
      ] as const) {
        // Expired when the run saw it due: real-time tenants live in the store's clock.
        assert.deepEqual(await statusOf(tenantId, g), ["expired", 0n, now]);
      }
      assert.deepEqual(await statusOf(live.tenantId, later), ["active", c(5), null]);
      assert.deepEqual(await statusOf(test.tenantId, never), ["active", c(3), null]);
      // Posted at the run's time; the member's and the pool's together or apart, as the run met them.
      const posted = await expiries(live.tenantId);
      assert.deepEqual(posted.flatMap((e) => e.grants).sort(), [due[0]!.id, due[1]!.id].sort());
      assert.ok(posted.every((e) => e.at === now));
      assert.equal((await store.getWallet(live.tenantId, l!.pool))!.balance, c(5));
      assert.equal((await store.getWallet(live.tenantId, l!.member))!.balance, 0n);

      // Again, and again later: each grant expired once.
      assert.equal(await store.runDue(), 0);
      now += HOUR;
      assert.equal(await store.runDue(), 0);
      const once = new Map(due.map((g) => [g.id, 1]));
      assert.deepEqual(
        new Map([...(await breakagesPerGrant(live.tenantId)), ...(await breakagesPerGrant(test.tenantId))]),
        once,
      );
      await assertReconciles();
    });

    test("runDue(tenant) runs one tenant's effects only", async () => {
      const a = await tenant("test");
      const b = await tenant("test");
      const ga = await grant(a.tenantId, a.wallets[0]!.pool, 1, now + HOUR);
      const gb = await grant(b.tenantId, b.wallets[0]!.pool, 1, now + HOUR);
      now += 2 * HOUR;
      assert.equal(await store.runDue(a.tenantId), 1);
      assert.equal((await statusOf(a.tenantId, ga))[0], "expired");
      assert.equal((await statusOf(b.tenantId, gb))[0], "active");
      assert.equal(await store.runDue(), 1);
      assert.equal((await statusOf(b.tenantId, gb))[0], "expired");
    });

    test("each tenant by its own clock: a frozen test clock holds its grants until it is advanced", async () => {
      const frozen = await tenant("test");
      const real = await tenant("test");
      const start = now;
      const held = await grant(frozen.tenantId, frozen.wallets[0]!.pool, 8, start + DAY);
      const gone = await grant(real.tenantId, real.wallets[0]!.pool, 8, start + DAY);
      const moved = okv(await store.advanceClock(frozen.tenantId, start + HOUR));
      assert.deepEqual(moved, { from: start, to: start + HOUR, expiredGrants: 0 });
      assert.deepEqual(await store.clockOf(frozen.tenantId), { now: start + HOUR, testClock: true });

      now = start + 2 * DAY;
      assert.equal(await store.runDue(), 1, "the real-time tenant's grant only");
      assert.equal((await statusOf(real.tenantId, gone))[0], "expired");
      assert.deepEqual(await statusOf(frozen.tenantId, held), ["active", c(8), null]);
      assert.deepEqual(await store.clockOf(frozen.tenantId), { now: start + HOUR, testClock: true });

      // Advanced past it, it expires at its own expiry time, not at the store's clock.
      assert.equal(okv(await store.advanceClock(frozen.tenantId, start + 3 * DAY)).expiredGrants, 1);
      assert.deepEqual(await statusOf(frozen.tenantId, held), ["expired", 0n, start + DAY]);
      assert.deepEqual(await expiries(frozen.tenantId), [{ at: start + DAY, grants: [held.id] }]);
      // Nothing for runDue to do after that, and the clock stays where it was put.
      assert.equal(await store.runDue(), 0);
      assert.deepEqual(await store.clockOf(frozen.tenantId), { now: start + 3 * DAY, testClock: true });
      await assertReconciles();
    });

    test("advanceClock: live tenants have none; it never moves back", async () => {
      const live = await tenant("live");
      const t = await tenant("test");
      const refused = await store.advanceClock(live.tenantId, now + DAY);
      assert.ok(!refused.ok && refused.error.code === "invalid_argument", "a live tenant has no test clock");
      assert.deepEqual(await store.clockOf(live.tenantId), { now, testClock: false });
      okv(await store.advanceClock(t.tenantId, { seconds: 3600 }));
      assert.deepEqual(await store.clockOf(t.tenantId), { now: now + HOUR, testClock: true });
      const back = await store.advanceClock(t.tenantId, now);
      assert.ok(!back.ok && back.error.code === "invalid_argument", "never backward");
      assert.deepEqual(await store.clockOf(t.tenantId), { now: now + HOUR, testClock: true });
    });

    test("catch-up: everything that came due while nothing ran is expired at the next run", async () => {
      const down = await tenant("live", 6);
      const start = now;
      const grants: { tenantId: string; g: GrantRecord }[] = [];
      for (const [i, w] of down.wallets.entries()) {
        for (const [k, walletId] of [w.pool, w.member].entries()) {
          // Due over four days of downtime, at different times.
          const g = await grant(down.tenantId, walletId, 1 + i, start + (i + 1) * HOUR + k * DAY);
          grants.push({ tenantId: down.tenantId, g });
        }
      }
      const survivor = await grant(down.tenantId, down.wallets[0]!.pool, 9, start + 30 * DAY);
      now = start + 5 * DAY;
      // A small page, so the run goes round several times.
      assert.equal(await store.runDue(null, 3), grants.length);
      for (const { tenantId, g } of grants)
        assert.deepEqual(await statusOf(tenantId, g), ["expired", 0n, now]);
      assert.equal((await statusOf(down.tenantId, survivor))[0], "active");
      assert.deepEqual(
        [...(await breakagesPerGrant(down.tenantId)).values()],
        grants.map(() => 1),
      );
      assert.equal(await store.runDue(), 0);
      await assertReconciles();
    });

    test("concurrent advances of one test clock: it only moves forward, each grant expires once at its time", async () => {
      const t = await tenant("test", 2);
      const start = now;
      const gs = [
        await grant(t.tenantId, t.wallets[0]!.pool, 1, start + DAY),
        await grant(t.tenantId, t.wallets[1]!.member, 2, start + 3 * DAY),
        await grant(t.tenantId, t.wallets[0]!.member, 3, start + 7 * DAY),
        await grant(t.tenantId, t.wallets[1]!.pool, 4, start + 9 * DAY),
      ];
      const results = await Promise.all([
        store.advanceClock(t.tenantId, start + 10 * DAY),
        store.advanceClock(t.tenantId, start + 5 * DAY),
        store.advanceClock(t.tenantId, { seconds: 2 * 86_400 }),
        store.advanceClock(t.tenantId, start + 8 * DAY),
      ]);
      const expired = results.reduce((n, r) => n + okv(r).expiredGrants, 0);
      assert.equal(expired, gs.length, "each grant expired by exactly one of the advances");
      // The relative advance counts from the reading it started at, which a concurrent advance
      // may already have moved: the clock ends at the furthest target, whichever that was.
      const relative = okv(results[2]!);
      assert.equal(relative.to, relative.from + 2 * DAY);
      assert.deepEqual(await store.clockOf(t.tenantId), {
        now: Math.max(start + 10 * DAY, relative.to),
        testClock: true,
      });
      for (const g of gs) assert.deepEqual(await statusOf(t.tenantId, g), ["expired", 0n, g.expiresAt]);
      assert.deepEqual(
        (await expiries(t.tenantId)).map((e) => e.at),
        gs.map((g) => g.expiresAt),
        "in time order",
      );
      await assertReconciles();
    });

    // Needs concurrent connections: PostgreSQL only (PGlite has one).
    if (backend.name === "postgres")
      test("two Store instances on one PostgreSQL database, running at once: each grant expires exactly once", async () => {
        const many = await tenant("live", 25);
        const other = await tenant("test", 5);
        const start = now;
        const due: { tenantId: string; g: GrantRecord }[] = [];
        for (const x of [many, other]) {
          for (const [i, w] of x.wallets.entries()) {
            for (const walletId of [w.pool, w.member, w.pool]) {
              due.push({
                tenantId: x.tenantId,
                g: await grant(x.tenantId, walletId, 1 + (i % 5), start + HOUR),
              });
            }
          }
        }
        now = start + 2 * HOUR;
        // Two instances (each with its own caches), several runs each, all at once.
        const a = database.store(() => now);
        const b = database.store(() => now);
        const counts = await Promise.all([a.runDue(), b.runDue(), a.runDue(null, 7), b.runDue(null, 5)]);
        assert.equal(
          counts.reduce((x, y) => x + y, 0),
          due.length,
          `each grant counted by one run: ${counts}`,
        );
        for (const { tenantId, g } of due)
          assert.deepEqual(await statusOf(tenantId, g), ["expired", 0n, now]);
        for (const x of [many, other]) {
          const per = await breakagesPerGrant(x.tenantId);
          const mine = due.filter((d) => d.tenantId === x.tenantId).map((d) => d.g.id);
          assert.deepEqual([...per.keys()].sort(), [...mine].sort());
          assert.ok(
            [...per.values()].every((n) => n === 1),
            "one breakage entry per grant",
          );
          // A wallet's due grants expire together (a member's run takes the pool's too): at most
          // two expire transactions per customer, never one without a grant.
          const txs = await expiries(x.tenantId);
          assert.ok(txs.length >= x.wallets.length && txs.length <= x.wallets.length * 2, `${txs.length}`);
          assert.ok(txs.every((t) => t.grants.length > 0));
        }
        assert.deepEqual(await Promise.all([a.runDue(), b.runDue()]), [0, 0]);
        await assertReconciles();
      });
  });
}
