import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, formatAmount, UNIT } from "@drawdown/core";
import { type Store, Subscriptions } from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const DAY = 86_400_000;
/** A month-end anchor: Jan 31 renews on Feb 28, Mar 31, Apr 30 (clamped, anchor kept). */
const T0 = Date.UTC(2027, 0, 31, 12);
const PERIOD_ENDS = [
  Date.UTC(2027, 1, 28, 12),
  Date.UTC(2027, 2, 31, 12),
  Date.UTC(2027, 3, 30, 12),
  Date.UTC(2027, 4, 31, 12),
];

for (const backend of backends()) {
  describe(`subscriptions (${backend.name})`, () => {
    let database: TestDatabase;
    let store: Store;
    let subs: Subscriptions;
    before(async () => {
      database = await backend.open();
      store = database.store(() => T0);
      subs = new Subscriptions(store);
    });
    after(async () => {
      await database.close();
    });

    /** A test tenant at T0 with one customer. */
    async function setup() {
      const tenant = await store.createTenant("Subs", "test");
      assert.ok((await store.advanceClock(tenant.id, T0)).ok);
      const c = await store.db.transaction((tx) =>
        store.createCustomer(tx, tenant.id, { kind: "organization" }),
      );
      assert.ok(c.ok);
      return { tenantId: tenant.id, customer: c.value };
    }

    const balance = async (tenantId: string, walletId: string) => {
      const b = await store.balance(tenantId, walletId);
      return formatAmount(b!.available);
    };

    test("each period renews once, in order, with month-end anchors, and reconcile stays clean", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Monthly 25",
          baseFee: { amount: 20n * UNIT, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(25n),
        }),
      );
      assert.ok(plan.ok);
      const s = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
      );
      assert.ok(s.ok, s.ok ? "" : s.error.message);
      assert.equal(await balance(tenantId, customer.walletId), "25");
      // Advance in small steps and in one big one: the same renewals, once each.
      for (const day of [10, 20, 28, 29, 40])
        assert.ok((await store.advanceClock(tenantId, T0 + day * DAY)).ok);
      assert.ok((await store.advanceClock(tenantId, Date.UTC(2027, 4, 15))).ok);
      const { rows } = await store.db.query<{ period_index: number }>(
        "SELECT period_index FROM subscription_renewals WHERE tenant_id = $1 ORDER BY period_index",
        [tenantId],
      );
      assert.deepEqual(
        rows.map((r) => Number(r.period_index)),
        [0, 1, 2, 3],
      );
      const sub = await subs.getSubscription(tenantId, s.value.id);
      assert.equal(new Date(sub!.nextRenewalAt!).toISOString(), "2027-05-31T12:00:00.000Z");
      // No rollover: only the current period's credits are available.
      assert.equal(await balance(tenantId, customer.walletId), "25");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("rollover capped at 3x the allotment and carried at most 2 periods conserves every credit", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Rolling",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(25n),
          rollover: { kind: "capped", cap: { multipleOfAllotment: 3n * UNIT }, maxPeriods: 2 },
        }),
      );
      assert.ok(plan.ok);
      const s = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
      );
      assert.ok(s.ok);
      await store.db.transaction((tx) =>
        store.debitWallet(tx, tenantId, customer.walletId, {
          amount: credits(5n),
          action: null,
          kind: "adjustment.debit",
          reason: "use",
        }),
      );
      const seen: string[] = [];
      for (const end of PERIOD_ENDS) {
        assert.ok((await store.advanceClock(tenantId, end + 3_600_000)).ok);
        seen.push(await balance(tenantId, customer.walletId));
      }
      // 20 carried + 25; 20 + 25 carried + 25; the first 20 is past 2 periods; capped at 75.
      assert.deepEqual(seen, ["45", "70", "75", "75"]);
      // Conservation: everything issued is held, used or broken.
      const sums = await store.db.query<{ account: string; total: string }>(
        `SELECT account, sum(amount)::text AS total FROM journal_entries WHERE tenant_id = $1 GROUP BY account ORDER BY account`,
        [tenantId],
      );
      const total = sums.rows.reduce((acc, r) => acc + BigInt(r.total), 0n);
      assert.equal(total, 0n);
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a plan credit under a rollover policy, extended past its period end, expires once at its new time instead of rolling over", async () => {
      // Found by the random timelines (timeline.test.ts): the extended grant was left to the
      // rollover, which only takes credits ending at a period end, so it never expired.
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Full rollover",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(10n),
          rollover: { kind: "full", maxPeriods: 1 },
        }),
      );
      assert.ok(plan.ok);
      assert.ok(
        (
          await store.db.transaction((tx) =>
            subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
          )
        ).ok,
      );
      const first = (await store.listGrants(tenantId, { walletId: customer.walletId }, { limit: 10 }))
        .items[0]!;
      assert.equal(first.expiresAt, PERIOD_ENDS[0]);
      const extendedTo = PERIOD_ENDS[0]! + 5 * DAY;
      const extended = await store.db.transaction((tx) =>
        store.extendGrantExpiry(tx, tenantId, first.id, extendedTo, "goodwill"),
      );
      assert.ok(extended.ok);
      assert.equal(extended.value.metadata.drawdown_expiry, undefined, "no longer the rollover's to expire");
      assert.ok((await store.advanceClock(tenantId, PERIOD_ENDS[2]! + DAY)).ok);
      const after = (await store.getGrant(tenantId, first.id))!;
      assert.deepEqual([after.status, after.remaining, after.statusAt], ["expired", 0n, extendedTo]);
      const { rows } = await store.db.query<{ kind: string }>(
        `SELECT t.kind FROM journal_entries e JOIN journal_transactions t ON t.tenant_id = e.tenant_id AND t.id = e.tx_id
         WHERE e.tenant_id = $1 AND e.grant_id = $2 AND e.amount < 0`,
        [tenantId, first.id],
      );
      assert.deepEqual(
        rows.map((r) => r.kind),
        ["expire"],
        "its 10 credits went to breakage once, at the new expiry",
      );
      const rolled = await store.db.query(
        "SELECT 1 FROM grants WHERE tenant_id = $1 AND metadata->>'source_grant_id' = $2",
        [tenantId, first.id],
      );
      assert.equal(rolled.rowCount, 0, "not carried: it did not end with its period");
      // The later periods' credits roll as before: period 1's 10 carried into period 2.
      assert.equal(await balance(tenantId, customer.walletId), "20");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a declining 100/50/0 rollover", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Declining",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(100n),
          rollover: { kind: "declining", schedule: [100, 50, 0] },
        }),
      );
      assert.ok(plan.ok);
      assert.ok(
        (
          await store.db.transaction((tx) =>
            subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
          )
        ).ok,
      );
      const seen: string[] = [];
      for (const end of PERIOD_ENDS.slice(0, 3)) {
        assert.ok((await store.advanceClock(tenantId, end + 3_600_000)).ok);
        seen.push(await balance(tenantId, customer.walletId));
      }
      // Nothing used: 100 + 100 carried; then 100 + 100 + 50; then 100 + 100 + 50 + 0.
      assert.deepEqual(seen, ["200", "250", "250"]);
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a customer has one active subscription; canceling ends renewals and expires the credits at period end", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Cancelable",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(10n),
          rollover: { kind: "full" },
        }),
      );
      assert.ok(plan.ok);
      const s = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
      );
      assert.ok(s.ok);
      const again = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
      );
      assert.ok(!again.ok && again.error.code === "already_exists");
      assert.ok((await store.db.transaction((tx) => subs.cancel(tx, tenantId, s.value.id))).ok);
      assert.equal(await balance(tenantId, customer.walletId), "10");
      assert.ok((await store.advanceClock(tenantId, Date.UTC(2027, 3, 1))).ok);
      assert.equal(await balance(tenantId, customer.walletId), "0");
      const after = await subs.getSubscription(tenantId, s.value.id);
      assert.equal(after!.nextRenewalAt, null);
      const { rows } = await store.db.query("SELECT 1 FROM subscription_renewals WHERE tenant_id = $1", [
        tenantId,
      ]);
      assert.equal(rows.length, 2, "the first period, then the close: nothing renewed after the cancel");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a cancel cuts credits that would outlive the period to its end (keep_until_period_end), not with keep", async () => {
      const { tenantId } = await setup();
      const run = async (onCancel: "keep_until_period_end" | "keep") => {
        const c = await store.db.transaction((tx) =>
          store.createCustomer(tx, tenantId, { kind: "individual" }),
        );
        assert.ok(c.ok);
        const plan = await store.db.transaction((tx) =>
          subs.createPlan(tx, tenantId, {
            name: `Never expiring (${onCancel})`,
            baseFee: { amount: 0n, currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: credits(10n),
            expiry: { kind: "never" },
            cancel: { onCancel },
          }),
        );
        assert.ok(plan.ok);
        const s = await store.db.transaction((tx) =>
          subs.subscribe(tx, tenantId, { customerId: c.value.id, planId: plan.value.id }),
        );
        assert.ok(s.ok);
        assert.ok((await store.db.transaction((tx) => subs.cancel(tx, tenantId, s.value.id))).ok);
        const [grant] = (await store.listGrants(tenantId, { walletId: c.value.walletId }, { limit: 10 }))
          .items;
        return { grant: grant!, periodEnd: s.value.nextRenewalAt!, walletId: c.value.walletId };
      };
      const cut = await run("keep_until_period_end");
      assert.equal(cut.grant.expiresAt, cut.periodEnd);
      const history = await store.grantHistory(tenantId, cut.grant.id);
      assert.deepEqual(
        history.map((h) => [h.kind, h.from, h.to]),
        [["expiry_shortened", null, cut.periodEnd]],
      );
      const kept = await run("keep");
      assert.equal(kept.grant.expiresAt, null, "keep: the credits keep their own expiry");
      assert.ok((await store.advanceClock(tenantId, cut.periodEnd + 1000)).ok);
      assert.equal(await balance(tenantId, cut.walletId), "0");
      assert.equal(await balance(tenantId, kept.walletId), "10");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("adding seats mid-period grants the added seats prorated; removing and re-adding grants nothing", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Per seat",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "day", count: 10 },
          allotment: credits(10n),
          perSeat: true,
        }),
      );
      assert.ok(plan.ok);
      const s = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id, seats: 2 }),
      );
      assert.ok(s.ok);
      assert.equal(await balance(tenantId, customer.walletId), "20");
      assert.ok((await store.advanceClock(tenantId, T0 + 5 * DAY)).ok);
      assert.ok((await store.db.transaction((tx) => subs.changeSeats(tx, tenantId, s.value.id, 3))).ok);
      assert.equal(await balance(tenantId, customer.walletId), "25", "one seat for half the period");
      assert.ok((await store.db.transaction((tx) => subs.changeSeats(tx, tenantId, s.value.id, 1))).ok);
      assert.ok((await store.db.transaction((tx) => subs.changeSeats(tx, tenantId, s.value.id, 3))).ok);
      assert.equal(await balance(tenantId, customer.walletId), "25");
      assert.ok((await store.advanceClock(tenantId, T0 + 11 * DAY)).ok);
      assert.equal(
        await balance(tenantId, customer.walletId),
        "30",
        "the next period grants the current 3 seats",
      );
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a forfeit cancel voids the subscription's credits, fully drawn ones too", async () => {
      const { tenantId, customer } = await setup();
      const plan = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Forfeit 10",
          baseFee: { amount: 10n * UNIT, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(10n),
          cancel: { onCancel: "forfeit" },
        }),
      );
      assert.ok(plan.ok);
      const s = await store.db.transaction((tx) =>
        subs.subscribe(tx, tenantId, { customerId: customer.id, planId: plan.value.id }),
      );
      assert.ok(s.ok);
      const debit = await store.db.transaction((tx) =>
        store.debitWallet(tx, tenantId, customer.walletId, {
          amount: credits(10n),
          action: null,
          kind: "adjustment.debit",
          reason: "use it all",
        }),
      );
      assert.ok(debit.ok);
      assert.ok((await store.db.transaction((tx) => subs.cancel(tx, tenantId, s.value.id))).ok);
      const { rows } = await store.db.query(
        "SELECT status FROM grants WHERE tenant_id = $1 AND metadata->>'subscription_id' = $2",
        [tenantId, s.value.id],
      );
      assert.deepEqual(
        rows.map((r) => r.status),
        ["voided"],
      );
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });
  });
}
