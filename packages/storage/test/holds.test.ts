import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type Result, UNIT } from "@drawdown/core";
import fc from "fast-check";
import {
  type HoldRecord,
  Holds,
  IngestWriter,
  Metering,
  type SqlExecutor,
  type Store,
} from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";

const T0 = Date.UTC(2027, 2, 1, 12);

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

/** What every test here builds on: a store, its metering, holds and ingest writer. */
function harness(database: TestDatabase, clock: () => number = () => T0) {
  const store = database.store(clock);
  const metering = new Metering((t) => store.now(t), store.newId);
  const holds = new Holds(store, metering);
  const writer = new IngestWriter(store, metering);
  const tx = <T>(fn: (ex: SqlExecutor) => Promise<T>) => store.db.transaction(fn);

  /** A test tenant at T0, a customer with `amount` credits, and a rate card: `units` cost 1 credit each. */
  async function setup(amount: bigint, grant: { expiresAt?: number | null } = {}) {
    const tenant = await store.createTenant("Holds", "test");
    okv(await store.advanceClock(tenant.id, T0));
    const tenantId = tenant.id;
    const customer = okv(await tx((ex) => store.createCustomer(ex, tenantId, { kind: "organization" })));
    if (amount > 0n)
      okv(
        await tx((ex) =>
          store.createGrant(ex, tenantId, {
            walletId: customer.walletId,
            amount,
            source: "promo",
            expiresAt: grant.expiresAt ?? null,
          }),
        ),
      );
    const card = okv(await tx((ex) => metering.createRateCard(ex, tenantId, "Standard")));
    okv(
      await tx((ex) =>
        metering.publishRateCardVersion(ex, tenantId, card.id, null, {
          lines: [{ id: "run", action: "agent.run", quantity: "units", rate: "1" }],
        }),
      ),
    );
    return { tenantId, customerId: customer.id, walletId: customer.walletId };
  }

  const authorize = (tenantId: string, customerId: string, estimate: bigint, hold: number | null = 60) =>
    tx((ex) =>
      holds.authorize(ex, tenantId, {
        customerId,
        subjectId: null,
        action: "agent.run",
        estimate: { credits: estimate },
        holdTimeoutSeconds: hold,
      }),
    );
  // A settled or voided hold is answered as derived from the plan, not read back: it must equal the stored row.
  const asStored = async (tenantId: string, r: Result<HoldRecord>) => {
    if (r.ok) assert.deepEqual(r.value, await holds.getHold(tenantId, r.value.id));
    return r;
  };
  const settle = async (tenantId: string, holdId: string, units: bigint) =>
    asStored(
      tenantId,
      await tx((ex) => holds.settle(ex, tenantId, holdId, { quantities: { units: units * UNIT } })),
    );
  const voidHold = async (tenantId: string, holdId: string) =>
    asStored(tenantId, await tx((ex) => holds.void(ex, tenantId, holdId)));
  const balance = async (tenantId: string, walletId: string) => (await store.balance(tenantId, walletId))!;
  const clean = async (tenantId: string) => {
    const report = await store.reconcile(tenantId);
    assert.deepEqual(report.differences, []);
  };
  return { store, metering, holds, writer, tx, setup, authorize, settle, voidHold, balance, clean };
}

for (const backend of backends()) {
  describe(`holds (${backend.name})`, () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await backend.open();
      h = harness(database);
    });
    after(async () => {
      await database.close();
    });

    test("authorize answers allow or deny with the available amount; without a hold it changes nothing", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const allow = okv(await h.authorize(tenantId, customerId, credits(10n), null));
      assert.equal(allow.authorization.decision, "allow");
      assert.equal(allow.authorization.reason, "sufficient_credits");
      assert.equal(allow.authorization.available, credits(10n));
      assert.equal(allow.hold, null);
      const deny = okv(await h.authorize(tenantId, customerId, credits(11n), 60));
      assert.equal(deny.authorization.decision, "deny");
      assert.equal(deny.authorization.reason, "insufficient_credits");
      assert.equal(deny.hold, null);
      const b = await h.balance(tenantId, walletId);
      assert.equal(b.available, credits(10n));
      assert.equal(b.held, 0n);
      const journal = await h.store.listJournal(tenantId, { walletId }, { limit: 50 });
      assert.equal(journal.items.length, 1, "only the grant's issue");
    });

    test("a hold takes its estimate out of available at once, and settling posts the usage and releases the rest", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const { hold } = okv(await h.authorize(tenantId, customerId, credits(6n)));
      assert.ok(hold);
      let b = await h.balance(tenantId, walletId);
      assert.equal(b.available, credits(4n));
      assert.equal(b.held, credits(6n));
      assert.equal(b.total, credits(10n), "held credits are still the customer's");
      await h.clean(tenantId);
      // A second authorization sees only what is left.
      const second = okv(await h.authorize(tenantId, customerId, credits(5n)));
      assert.equal(second.authorization.decision, "deny");
      assert.equal(second.authorization.available, credits(4n));

      const settled = okv(await h.settle(tenantId, hold.id, 4n));
      assert.equal(settled.status, "posted");
      assert.equal(settled.posted, credits(4n));
      assert.equal(settled.released, credits(2n));
      b = await h.balance(tenantId, walletId);
      assert.equal(b.available, credits(6n));
      assert.equal(b.held, 0n);
      assert.equal(b.total, credits(6n));
      const events = await h.store.db.query(
        "SELECT event_id, credits::text AS credits, hold_id FROM usage_events WHERE tenant_id = $1",
        [tenantId],
      );
      assert.deepEqual(
        events.rows.map((r) => [r.event_id, r.credits, r.hold_id]),
        [[`${hold.id}.settle`, credits(4n).toString(), hold.id]],
      );
      await h.clean(tenantId);
    });

    test("a hold resolves once: settling or voiding again fails with the status and changes nothing", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const { hold } = okv(await h.authorize(tenantId, customerId, credits(3n)));
      assert.ok(hold);
      okv(await h.voidHold(tenantId, hold.id));
      const before = await h.balance(tenantId, walletId);
      assert.equal(before.available, credits(10n));
      for (const r of [await h.settle(tenantId, hold.id, 1n), await h.voidHold(tenantId, hold.id)]) {
        assert.equal(r.ok, false);
        if (!r.ok) {
          assert.equal(r.error.code, "hold_not_pending");
          assert.equal(r.error.details?.status, "voided");
        }
      }
      assert.deepEqual(await h.balance(tenantId, walletId), before);
      const other = okv(await h.authorize(tenantId, customerId, credits(2n)));
      okv(await h.settle(tenantId, other.hold!.id, 2n));
      const again = await h.settle(tenantId, other.hold!.id, 2n);
      assert.equal(!again.ok && again.error.code, "hold_not_pending");
      assert.equal(!again.ok && again.error.details?.status, "posted");
      await h.clean(tenantId);
    });

    test("under a hard cap a settlement posts at most the hold; the excess is recorded unpaid", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const { hold } = okv(await h.authorize(tenantId, customerId, credits(3n)));
      const settled = okv(await h.settle(tenantId, hold!.id, 5n));
      assert.equal(settled.posted, credits(3n));
      assert.equal(settled.unpaid, credits(2n));
      assert.equal((await h.balance(tenantId, walletId)).available, credits(7n));
      const row = await h.store.db.query(
        "SELECT outcome, unpaid::text AS unpaid, detail FROM usage_events WHERE tenant_id = $1",
        [tenantId],
      );
      assert.equal(row.rows[0]!.outcome, "unpaid");
      assert.equal(JSON.parse(String(row.rows[0]!.detail)).reason, "hold_exceeded");
      await h.clean(tenantId);
    });

    test("under a soft cap a settlement may overrun the hold, drawn from grants then down to the floor", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      okv(
        await h.tx((ex) =>
          h.metering.setOveragePolicy(ex, tenantId, walletId, { mode: "soft_cap", floor: -credits(5n) }),
        ),
      );
      const { hold, authorization } = okv(await h.authorize(tenantId, customerId, credits(12n)));
      assert.equal(authorization.reason, "within_overdraft");
      assert.equal(authorization.available, credits(15n));
      const settled = okv(await h.settle(tenantId, hold!.id, 14n));
      assert.equal(settled.posted, credits(14n));
      assert.equal(settled.unpaid, 0n);
      const w = await h.store.db.query(
        "SELECT overdraft::text AS o, balance::text AS b FROM wallets WHERE id = $1",
        [walletId],
      );
      assert.equal(w.rows[0]!.o, credits(4n).toString());
      assert.equal(w.rows[0]!.b, (-credits(4n)).toString());
      await h.clean(tenantId);
    });

    test("holds expire at their timeout, once; an expired hold cannot be posted; a grant expired meanwhile takes its credits to breakage", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n), { expiresAt: T0 + 30_000 });
      const { hold } = okv(await h.authorize(tenantId, customerId, credits(4n), 60));
      assert.ok(hold);
      // Past the timeout but before the scheduler ran: settle and void refuse, nothing changes.
      okv(await h.store.advanceClock(tenantId, { seconds: 0 }));
      h.store.rememberClock(tenantId, T0 + 61_000);
      const late = await h.settle(tenantId, hold.id, 1n);
      assert.equal(!late.ok && late.error.code, "hold_expired");
      assert.equal((await h.holds.getHold(tenantId, hold.id))!.status, "pending");
      h.store.rememberClock(tenantId, T0);
      const to = okv(await h.store.advanceClock(tenantId, { seconds: 120 }));
      assert.equal(to.to, T0 + 120_000);
      const expired = (await h.holds.getHold(tenantId, hold.id))!;
      assert.equal(expired.status, "expired");
      assert.equal(expired.resolvedAt, T0 + 60_000, "expired at its timeout, by the test clock");
      assert.equal(await h.holds.run(tenantId), 0, "a second run finds nothing");
      const b = await h.balance(tenantId, walletId);
      assert.equal(b.held, 0n);
      assert.equal(b.available, 0n);
      assert.equal(b.total, 0n, "the grant expired at T0+30s, so the held credits lapse too");
      const again = await h.settle(tenantId, hold.id, 1n);
      assert.equal(!again.ok && again.error.code, "hold_expired");
      await h.clean(tenantId);
    });

    test("a settlement with a reused event id, or an action the card cannot rate, fails and changes nothing", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      okv(
        await h.writer
          .submit(tenantId, [
            {
              event: {
                id: "evt-used",
                customerId,
                subjectId: null,
                action: "agent.run",
                dimensions: {},
                quantities: { units: UNIT },
                time: T0,
                status: "succeeded",
                runId: null,
                reportedCost: null,
              },
              fingerprint: "x",
            },
          ])
          .then((r) => ({ ok: true as const, value: r })),
      );
      const { hold } = okv(await h.authorize(tenantId, customerId, credits(3n)));
      const before = await h.balance(tenantId, walletId);
      const event = (id: string, action: string | null) => ({
        id,
        action,
        dimensions: {},
        quantities: { units: UNIT },
        time: null,
        status: "succeeded" as const,
        runId: null,
        reportedCost: null,
        fingerprint: id,
      });
      const reused = await h.tx((ex) =>
        h.holds.settle(ex, tenantId, hold!.id, { events: [event("evt-used", null)] }),
      );
      assert.equal(!reused.ok && reused.error.code, "event_id_reused");
      const unknown = await h.tx((ex) =>
        h.holds.settle(ex, tenantId, hold!.id, { events: [event("evt-new", "image.render")] }),
      );
      assert.equal(!unknown.ok && unknown.error.code, "unknown_action");
      assert.deepEqual(await h.balance(tenantId, walletId), before);
      assert.equal((await h.holds.getHold(tenantId, hold!.id))!.status, "pending");
      await h.clean(tenantId);
    });

    test("property: holds resolve exactly once; available never drops below the floor under any interleaving", async () => {
      const op = fc.oneof(
        fc.record({
          kind: fc.constant("authorize" as const),
          amount: fc.bigInt(0n, 12n),
          hold: fc.boolean(),
        }),
        fc.record({ kind: fc.constant("settle" as const), pick: fc.nat(20), units: fc.bigInt(0n, 8n) }),
        fc.record({ kind: fc.constant("void" as const), pick: fc.nat(20) }),
        fc.record({ kind: fc.constant("advance" as const), seconds: fc.integer({ min: 1, max: 90 }) }),
        fc.record({ kind: fc.constant("usage" as const), units: fc.bigInt(1n, 6n) }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), async (ops) => {
          const { tenantId, customerId, walletId } = await h.setup(credits(20n));
          // The reference model: available credits and each hold's amount, status and timeout.
          let available = credits(20n);
          let now = T0;
          const model: { id: string; amount: bigint; status: string; expiresAt: number }[] = [];
          let eventNo = 0;
          for (const o of ops) {
            if (o.kind === "authorize") {
              const r = okv(await h.authorize(tenantId, customerId, credits(o.amount), o.hold ? 30 : null));
              const allowed = credits(o.amount) <= available;
              assert.equal(r.authorization.decision, allowed ? "allow" : "deny");
              assert.equal(r.authorization.available, available);
              if (allowed && o.hold) {
                available -= credits(o.amount);
                model.push({
                  id: r.hold!.id,
                  amount: credits(o.amount),
                  status: "pending",
                  expiresAt: now + 30_000,
                });
              }
            } else if (o.kind === "settle" || o.kind === "void") {
              const m = model[o.pick % Math.max(1, model.length)];
              if (!m) continue;
              const r =
                o.kind === "settle"
                  ? await h.settle(tenantId, m.id, o.units)
                  : await h.voidHold(tenantId, m.id);
              if (m.status !== "pending") {
                assert.equal(r.ok, false);
                assert.equal(
                  !r.ok && r.error.code,
                  m.status === "expired" ? "hold_expired" : "hold_not_pending",
                );
              } else {
                okv(r);
                const paid =
                  o.kind === "settle" ? (credits(o.units) < m.amount ? credits(o.units) : m.amount) : 0n;
                available += m.amount - paid;
                m.status = o.kind === "settle" ? "posted" : "voided";
              }
            } else if (o.kind === "advance") {
              now += o.seconds * 1000;
              okv(await h.store.advanceClock(tenantId, now));
              for (const m of model)
                if (m.status === "pending" && m.expiresAt <= now) {
                  m.status = "expired";
                  available += m.amount;
                }
            } else {
              const [r] = await h.writer.submit(tenantId, [
                {
                  event: {
                    id: `direct-${eventNo++}`,
                    customerId,
                    subjectId: null,
                    action: "agent.run",
                    dimensions: {},
                    quantities: { units: o.units * UNIT },
                    time: now,
                    status: "succeeded",
                    runId: null,
                    reportedCost: null,
                  },
                  fingerprint: `f${eventNo}`,
                },
              ]);
              assert.equal(r?.status, "accepted");
              if (credits(o.units) <= available) available -= credits(o.units);
            }
            const b = await h.balance(tenantId, walletId);
            assert.ok(b.available >= 0n, "available never below the floor");
            assert.equal(b.available, available);
            assert.equal(
              b.held,
              model.filter((m) => m.status === "pending").reduce((s, m) => s + m.amount, 0n),
            );
            for (const m of model) assert.equal((await h.holds.getHold(tenantId, m.id))!.status, m.status);
          }
          await h.clean(tenantId);
        }),
        { numRuns: backend.name === "pglite" ? 25 : 15 },
      );
    });
  });
}

// Registered on PostgreSQL only: PGlite is one connection and cannot race.
if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("holds under concurrency (postgres)", () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    let store: Store;
    before(async () => {
      database = await postgresDatabase(url, { max: 20 });
      h = harness(database, Date.now);
      store = h.store;
    });
    after(async () => {
      await database.close();
    });

    test("200 concurrent authorizations against a wallet with room for exactly 100 allow exactly 100", async () => {
      const tenant = await store.createTenant("Race", "live");
      const customer = okv(await h.tx((ex) => store.createCustomer(ex, tenant.id, { kind: "organization" })));
      okv(
        await h.tx((ex) =>
          store.createGrant(ex, tenant.id, {
            walletId: customer.walletId,
            amount: credits(100n),
            source: "promo",
          }),
        ),
      );
      const results = await Promise.all(
        Array.from({ length: 200 }, () =>
          h.tx((ex) =>
            h.holds.authorize(ex, tenant.id, {
              customerId: customer.id,
              subjectId: null,
              action: "agent.run",
              estimate: { credits: credits(1n) },
              holdTimeoutSeconds: 300,
            }),
          ),
        ),
      );
      const decisions = results.map((r) => okv(r).authorization.decision);
      assert.equal(decisions.filter((d) => d === "allow").length, 100);
      assert.equal(decisions.filter((d) => d === "deny").length, 100);
      const b = (await store.balance(tenant.id, customer.walletId))!;
      assert.equal(b.available, 0n);
      assert.equal(b.held, credits(100n));
      assert.deepEqual((await store.reconcile(tenant.id)).differences, []);
    });
  });
}
