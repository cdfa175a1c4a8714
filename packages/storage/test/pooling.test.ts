/**
 * Per-member allocations and pooling in storage, on PGlite and (when DATABASE_URL is set)
 * PostgreSQL: each member wallet receives its allocation once per period, split between its
 * own wallet and the customer's pool; a member joining mid-period receives the rest of the
 * period, prorated, once; rollover is planned wallet by wallet; several instances renewing at
 * once allocate each period once (PostgreSQL only: it needs concurrent connections).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Allocation, credits, formatAmount, type Result, type RolloverPolicy } from "@drawdown/core";
import { type Store, Subscriptions } from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const DAY = 86_400_000;
const T0 = Date.UTC(2027, 0, 1);
const FEB = Date.UTC(2027, 1, 1);
const MAR = Date.UTC(2027, 2, 1);

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

for (const backend of backends()) {
  describe(`pooling and per-member allocations (${backend.name})`, () => {
    let database: TestDatabase;
    let now = T0;
    let store: Store;
    let subs: Subscriptions;
    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
      subs = new Subscriptions(store);
    });
    after(async () => {
      await database?.close();
    });

    /** A tenant (test: with a test clock at T0; live: on the store's clock) and one organization. */
    async function setup(environment: "test" | "live" = "test", s: Store = store) {
      const tenant = await s.createTenant("Pooling", environment);
      if (environment === "test") okv(await s.advanceClock(tenant.id, T0));
      const customer = okv(
        await s.db.transaction((tx) => s.createCustomer(tx, tenant.id, { kind: "organization" })),
      );
      return { tenantId: tenant.id, customer, pool: customer.walletId };
    }

    async function addMember(tenantId: string, customerId: string, s: Store = store): Promise<string> {
      const subject = okv(
        await s.db.transaction((tx) => s.createSubject(tx, tenantId, { customerId, kind: "member" })),
      );
      return okv(await s.db.transaction((tx) => s.createMemberWallet(tx, tenantId, customerId, subject.id)))
        .id;
    }

    async function plan(
      tenantId: string,
      name: string,
      allocation: Allocation,
      rollover: RolloverPolicy = { kind: "none" },
      allotment = 25n,
    ) {
      return okv(
        await store.db.transaction((tx) =>
          subs.createPlan(tx, tenantId, {
            name,
            baseFee: { amount: 0n, currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: credits(allotment),
            rollover,
            allocation,
          }),
        ),
      );
    }

    const subscribe = (tenantId: string, customerId: string, planId: string) =>
      store.db.transaction((tx) => subs.subscribe(tx, tenantId, { customerId, planId }));

    const available = async (tenantId: string, walletId: string) =>
      formatAmount((await store.balance(tenantId, walletId))!.available);

    const debit = (tenantId: string, walletId: string, amount: bigint) =>
      store.db.transaction((tx) =>
        store.debitWallet(tx, tenantId, walletId, {
          amount: credits(amount),
          action: null,
          kind: "adjustment.debit",
          reason: "use",
        }),
      );

    async function clean(tenantId: string) {
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    }

    test("plans refuse a pool share outside 0..100 and per_member with per_seat, and keep the default", async () => {
      const { tenantId } = await setup();
      for (const [allocation, field] of [
        [{ mode: "per_member", poolSharePercent: 101 }, "allocation.poolSharePercent"],
        [{ mode: "per_member", poolSharePercent: -1 }, "allocation.poolSharePercent"],
        [{ mode: "per_member", poolSharePercent: 2.5 }, "allocation.poolSharePercent"],
        [{ mode: "team" }, "allocation.mode"],
      ] as const) {
        const r = await store.db.transaction((tx) =>
          subs.createPlan(tx, tenantId, {
            name: "Bad",
            baseFee: { amount: 0n, currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: credits(25n),
            allocation: allocation as Allocation,
          }),
        );
        assert.ok(!r.ok && r.error.code === "invalid_argument" && r.error.details?.field === field);
      }
      const seats = await store.db.transaction((tx) =>
        subs.createPlan(tx, tenantId, {
          name: "Bad",
          baseFee: { amount: 0n, currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: credits(25n),
          perSeat: true,
          allocation: { mode: "per_member", poolSharePercent: 0 },
        }),
      );
      assert.ok(!seats.ok && seats.error.details?.field === "allocation");
      assert.deepEqual(await subs.listPlans(tenantId), [], "nothing was created");
      const p = await plan(tenantId, "Default", { mode: "customer" });
      assert.deepEqual((await subs.getPlan(tenantId, p.id))!.allocation, { mode: "customer" });
    });

    test("25 credits per member per month that reset: personal, no pool; renewal resets each member", async () => {
      const { tenantId, customer, pool } = await setup();
      const [a, b] = [await addMember(tenantId, customer.id), await addMember(tenantId, customer.id)];
      const p = await plan(tenantId, "Per member", { mode: "per_member", poolSharePercent: 0 });
      const s = okv(await subscribe(tenantId, customer.id, p.id));
      assert.deepEqual(
        [await available(tenantId, a), await available(tenantId, b), await available(tenantId, pool)],
        ["25", "25", "0"],
      );
      // A member's 25 does not cover 30: nothing in the pool to draw after its own.
      const refused = await debit(tenantId, a, 30n);
      assert.ok(!refused.ok && refused.error.code === "insufficient_credits");
      assert.equal(await available(tenantId, a), "25", "the refused debit changed nothing");
      okv(await debit(tenantId, a, 10n));
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.deepEqual([await available(tenantId, a), await available(tenantId, b)], ["25", "25"]);
      const allocations = await subs.listMemberAllocations(tenantId, s.id);
      assert.deepEqual(
        allocations.map((x) => [
          x.periodIndex,
          x.walletId,
          x.reason,
          formatAmount(x.personal),
          formatAmount(x.pool),
        ]),
        [
          [0, a, "renewal", "25", "0"],
          [0, b, "renewal", "25", "0"],
          [1, a, "renewal", "25", "0"],
          [1, b, "renewal", "25", "0"],
        ].sort((x, y) => (`${x[0]}${x[1]}` < `${y[0]}${y[1]}` ? -1 : 1)),
      );
      assert.ok(allocations.every((x) => x.personalGrantId !== null && x.poolGrantId === null));
      await clean(tenantId);
    });

    test("20% partial pooling: 20 personal per member, their 5s summed into one pool grant; a member draws own then pool", async () => {
      const { tenantId, customer, pool } = await setup();
      const members = [
        await addMember(tenantId, customer.id),
        await addMember(tenantId, customer.id),
        await addMember(tenantId, customer.id),
      ];
      const p = await plan(tenantId, "Team 20%", { mode: "per_member", poolSharePercent: 20 });
      const s = okv(await subscribe(tenantId, customer.id, p.id));
      for (const m of members) assert.equal(await available(tenantId, m), "20");
      assert.equal(await available(tenantId, pool), "15");
      const poolGrants = (await store.listGrants(tenantId, { walletId: pool }, { limit: 10 })).items;
      assert.equal(poolGrants.length, 1);
      assert.deepEqual(
        [
          poolGrants[0]!.metadata.allocation,
          poolGrants[0]!.metadata.member_count,
          poolGrants[0]!.metadata.lifecycle,
        ],
        ["pool_share", "3", "renewal"],
      );
      const personal = (await store.listGrants(tenantId, { walletId: members[0]! }, { limit: 10 })).items;
      assert.deepEqual(
        [personal[0]!.metadata.allocation, personal[0]!.metadata.member_wallet_id, personal[0]!.source],
        ["personal", members[0]!, "plan"],
      );
      // 30: own 20, then 10 of the pool.
      const tx = okv(await debit(tenantId, members[0]!, 30n));
      assert.deepEqual(
        tx.entries
          .filter((e) => e.account.kind === "grant")
          .map((e) => [e.account.kind === "grant" ? e.account.walletId : "", formatAmount(e.amount)])
          .sort(),
        [
          [members[0]!, "-20"],
          [pool, "-10"],
        ].sort(),
      );
      assert.deepEqual([await available(tenantId, members[0]!), await available(tenantId, pool)], ["0", "5"]);
      const b = (await store.balance(tenantId, members[1]!))!;
      assert.deepEqual(
        [formatAmount(b.available), b.pool?.walletId, formatAmount(b.pool!.available)],
        ["20", pool, "5"],
      );
      assert.equal((await store.balance(tenantId, pool))!.pool, null);
      // The next month: everything resets (no rollover).
      okv(await store.advanceClock(tenantId, FEB + 1000));
      for (const m of members) assert.equal(await available(tenantId, m), "20");
      assert.equal(await available(tenantId, pool), "15");
      const allocations = await subs.listMemberAllocations(tenantId, s.id);
      assert.equal(allocations.length, 6);
      assert.ok(allocations.every((x) => x.poolGrantId !== null && formatAmount(x.pool) === "5"));
      await clean(tenantId);
    });

    test("rounding: a split never creates a unit; the remainder stays personal", async () => {
      const { tenantId, customer, pool } = await setup();
      const m = await addMember(tenantId, customer.id);
      // 1 unit short of 10 credits at 33%: pool floor(9.999999999 × 0.33), the rest personal.
      const p = okv(
        await store.db.transaction((tx) =>
          subs.createPlan(tx, tenantId, {
            name: "Odd",
            baseFee: { amount: 0n, currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: credits(10n) - 1n,
            allocation: { mode: "per_member", poolSharePercent: 33 },
          }),
        ),
      );
      okv(await subscribe(tenantId, customer.id, p.id));
      const personal = (await store.balance(tenantId, m))!.available;
      const pooled = (await store.balance(tenantId, pool))!.available;
      assert.equal(pooled, ((credits(10n) - 1n) * 33n) / 100n);
      assert.equal(personal + pooled, credits(10n) - 1n);
      await clean(tenantId);
    });

    test("a member joining mid-period receives the rest of the period prorated, once; the next renewal includes it", async () => {
      const { tenantId, customer, pool } = await setup();
      const first = await addMember(tenantId, customer.id);
      const p = await plan(
        tenantId,
        "Join",
        { mode: "per_member", poolSharePercent: 20 },
        { kind: "none" },
        31n,
      );
      const s = okv(await subscribe(tenantId, customer.id, p.id));
      // January has 31 days: on the 17th at 00:00, 15 of 31 days are left: 15 credits, 12 + 3.
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 0, 17)));
      const late = await addMember(tenantId, customer.id);
      assert.equal(await available(tenantId, late), "12");
      assert.equal(await available(tenantId, pool), "9.2");
      const added = (await subs.listMemberAllocations(tenantId, s.id)).find((x) => x.walletId === late)!;
      assert.deepEqual(
        [added.reason, formatAmount(added.personal), formatAmount(added.pool), added.periodIndex],
        ["member_added", "12", "3", 0],
      );
      const poolGrant = (await store.getGrant(tenantId, added.poolGrantId!))!;
      assert.deepEqual(
        [poolGrant.metadata.lifecycle, poolGrant.metadata.member_wallet_id],
        ["member_added", late],
      );
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.deepEqual(
        [await available(tenantId, first), await available(tenantId, late), await available(tenantId, pool)],
        ["24.8", "24.8", "12.4"],
      );
      const rows = await subs.listMemberAllocations(tenantId, s.id);
      assert.deepEqual(
        rows.map((x) => [x.periodIndex, x.reason]).sort(),
        [
          [0, "member_added"],
          [0, "renewal"],
          [1, "renewal"],
          [1, "renewal"],
        ].sort(),
      );
      await clean(tenantId);
    });

    test("a member wallet made before the first period starts waits for it; a customer plan allocates nothing per member", async () => {
      const { tenantId, customer, pool } = await setup();
      const p = await plan(tenantId, "Later", { mode: "per_member", poolSharePercent: 50 });
      okv(
        await store.db.transaction((tx) =>
          subs.subscribe(tx, tenantId, { customerId: customer.id, planId: p.id, startAt: FEB }),
        ),
      );
      const m = await addMember(tenantId, customer.id);
      assert.deepEqual([await available(tenantId, m), await available(tenantId, pool)], ["0", "0"]);
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.deepEqual([await available(tenantId, m), await available(tenantId, pool)], ["12.5", "12.5"]);

      const other = await setup();
      const c = await plan(other.tenantId, "Customer", { mode: "customer" });
      okv(await subscribe(other.tenantId, other.customer.id, c.id));
      const om = await addMember(other.tenantId, other.customer.id);
      assert.deepEqual(
        [await available(other.tenantId, om), await available(other.tenantId, other.pool)],
        ["0", "25"],
      );
      await clean(tenantId);
      await clean(other.tenantId);
    });

    test("with no member wallet a renewal grants nothing, and the period still renews once", async () => {
      const { tenantId, customer, pool } = await setup();
      const p = await plan(tenantId, "Empty", { mode: "per_member", poolSharePercent: 20 });
      const s = okv(await subscribe(tenantId, customer.id, p.id));
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.equal(await available(tenantId, pool), "0");
      const { rows } = await store.db.query(
        "SELECT period_index, grant_id FROM subscription_renewals WHERE tenant_id = $1 ORDER BY period_index",
        [tenantId],
      );
      assert.deepEqual(
        rows.map((r) => [Number(r.period_index), r.grant_id]),
        [
          [0, null],
          [1, null],
        ],
      );
      assert.equal((await subs.getSubscription(tenantId, s.id))!.renewedThrough, 1);
      assert.deepEqual(await subs.listMemberAllocations(tenantId, s.id), []);
      await clean(tenantId);
    });

    test("rollover is planned per wallet, each capped at its own period allotment", async () => {
      const { tenantId, customer, pool } = await setup();
      const [a, b] = [await addMember(tenantId, customer.id), await addMember(tenantId, customer.id)];
      const p = await plan(
        tenantId,
        "Rolling team",
        { mode: "per_member", poolSharePercent: 20 },
        { kind: "capped", cap: { percentOfAllotment: 50 } },
      );
      okv(await subscribe(tenantId, customer.id, p.id));
      // a spends 15 of its 20 (5 left, under its cap of 10); b spends nothing (20 left, capped at 10);
      // the pool holds 10 of which a's base is 5 × 2 = 10, cap 5.
      okv(await debit(tenantId, a, 15n));
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.deepEqual(
        [await available(tenantId, a), await available(tenantId, b), await available(tenantId, pool)],
        ["25", "30", "15"],
      );
      const rolled = (
        await store.listGrants(tenantId, { customerId: customer.id, status: "active" }, { limit: 50 })
      ).items
        .filter((g) => g.source === "rollover")
        .map((g) => [g.walletId, formatAmount(g.amount)])
        .sort();
      assert.deepEqual(
        rolled,
        [
          [a, "5"],
          [b, "10"],
          [pool, "5"],
        ].sort(),
      );
      // The next period end: rollover credits are expired by the renewal, once, and the cap holds.
      okv(await store.advanceClock(tenantId, MAR + 1000));
      assert.deepEqual(
        [await available(tenantId, a), await available(tenantId, b), await available(tenantId, pool)],
        ["30", "30", "15"],
      );
      await clean(tenantId);
    });

    test("cancel with forfeit voids the members' credits too; a change to or from per_member waits for the period end", async () => {
      const { tenantId, customer, pool } = await setup();
      const m = await addMember(tenantId, customer.id);
      const perMember = await plan(tenantId, "PM", { mode: "per_member", poolSharePercent: 20 });
      const big = await plan(tenantId, "Big customer", { mode: "customer" }, { kind: "none" }, 100n);
      const s = okv(await subscribe(tenantId, customer.id, perMember.id));
      const changed = okv(await store.db.transaction((tx) => subs.changePlan(tx, tenantId, s.id, big.id)));
      assert.deepEqual([changed.planId, changed.pendingPlanId], [perMember.id, big.id]);
      assert.deepEqual([await available(tenantId, m), await available(tenantId, pool)], ["20", "5"]);
      okv(await store.advanceClock(tenantId, FEB + 1000));
      assert.deepEqual([await available(tenantId, m), await available(tenantId, pool)], ["0", "100"]);

      const other = await setup();
      const om = await addMember(other.tenantId, other.customer.id);
      const forfeit = okv(
        await store.db.transaction((tx) =>
          subs.createPlan(tx, other.tenantId, {
            name: "Forfeit",
            baseFee: { amount: 0n, currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: credits(25n),
            cancel: { onCancel: "forfeit" },
            allocation: { mode: "per_member", poolSharePercent: 20 },
          }),
        ),
      );
      const os = okv(await subscribe(other.tenantId, other.customer.id, forfeit.id));
      okv(await store.db.transaction((tx) => subs.cancel(tx, other.tenantId, os.id)));
      assert.deepEqual(
        [await available(other.tenantId, om), await available(other.tenantId, other.pool)],
        ["0", "0"],
      );
      await clean(tenantId);
      await clean(other.tenantId);
    });

    // Needs concurrent connections: PostgreSQL only (PGlite has one).
    if (backend.name === "postgres")
      test("two Store instances renewing per-member subscriptions at once, while members join: each period and member allocated once", async () => {
        now = T0;
        const a = database.store(() => now);
        const b = database.store(() => now);
        const subsA = new Subscriptions(a);
        new Subscriptions(b);
        const customers: { tenantId: string; pool: string; members: string[]; customerId: string }[] = [];
        const t = await a.createTenant("Race", "live");
        const p = okv(
          await a.db.transaction((tx) =>
            subsA.createPlan(tx, t.id, {
              name: "Race 20%",
              baseFee: { amount: 0n, currency: "USD" },
              interval: { unit: "day", count: 1 },
              allotment: credits(25n),
              rollover: { kind: "full" },
              allocation: { mode: "per_member", poolSharePercent: 20 },
            }),
          ),
        );
        for (let i = 0; i < 6; i++) {
          const customer = okv(
            await a.db.transaction((tx) => a.createCustomer(tx, t.id, { kind: "organization" })),
          );
          const members = [await addMember(t.id, customer.id, a), await addMember(t.id, customer.id, a)];
          okv(
            await a.db.transaction((tx) =>
              subsA.subscribe(tx, t.id, { customerId: customer.id, planId: p.id }),
            ),
          );
          customers.push({ tenantId: t.id, pool: customer.walletId, members, customerId: customer.id });
        }
        // Three days pass; both instances renew while a member joins each customer.
        now = T0 + 3 * DAY + 1000;
        const joins = customers.map((c, i) => addMember(t.id, c.customerId, i % 2 === 0 ? a : b));
        const [joined] = await Promise.all([
          Promise.all(joins),
          a.runDue(),
          b.runDue(),
          a.runDue(),
          b.runDue(),
        ]);
        const { rows } = await a.db.query<{ subscription_id: string; period_index: number; n: number }>(
          `SELECT subscription_id, period_index, count(*)::int AS n FROM subscription_renewals WHERE tenant_id = $1
           GROUP BY 1, 2 HAVING count(*) > 1`,
          [t.id],
        );
        assert.deepEqual(rows, [], "no period renewed twice");
        const allocations = await a.db.query<{ subscription_id: string; period_index: number; n: number }>(
          "SELECT subscription_id, period_index, count(*)::int AS n FROM member_allocations WHERE tenant_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
          [t.id],
        );
        // Periods 0..3 for each subscription: 2 members each, plus the joiner in period 3 (by renewal or on joining).
        assert.equal(allocations.rows.length, customers.length * 4);
        for (const r of allocations.rows) assert.equal(Number(r.n), Number(r.period_index) === 3 ? 3 : 2);
        // Each personal plan grant is in one allocation only; every member of period 3 got exactly one.
        const grants = await a.db.query<{ wallet_id: string; period: string; n: number }>(
          `SELECT wallet_id, metadata->>'period_index' AS period, count(*)::int AS n FROM grants
           WHERE tenant_id = $1 AND source = 'plan' AND metadata->>'allocation' = 'personal' GROUP BY 1, 2 HAVING count(*) > 1`,
          [t.id],
        );
        assert.deepEqual(grants.rows, [], "one personal grant per member and period");
        // Every joiner holds its period-3 allocation: a full renewal's or a prorated joining one.
        for (const w of joined) assert.ok((await a.balance(t.id, w))!.available > 0n);
        assert.deepEqual((await a.reconcile(t.id)).differences, []);
      });
  });
}
