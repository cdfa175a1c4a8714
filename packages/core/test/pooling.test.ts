import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  credits,
  type Interval,
  type LedgerErrorCode,
  LIFECYCLE_METADATA,
  MAX_AMOUNT,
  memberRolloverBase,
  type Plan,
  type PlanInput,
  periodAt,
  planMemberAddition,
  planMemberRenewal,
  planPlanChange,
  planRenewal,
  prorate,
  type Result,
  splitAllocation,
  UNIT,
  validateAllocation,
  validatePlan,
} from "../src/index.js";
import { ctxAt, deepFreeze } from "./support.js";

/**
 * Per-member allocations and pooling in the core: the split of an allocation between a
 * member and the pool (exact, the remainder personal), a period's renewal to every member with
 * one summed pool grant, a joining member's prorated allocation, and plan validation.
 */

const MONTHLY: Interval = { unit: "month", count: 1 };
const START = Date.UTC(2027, 0, 1);
const P0 = periodAt(START, MONTHLY, 0); // January 2027: 31 days

function okValue<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function expectFail<T>(r: Result<T>, code: LedgerErrorCode, field?: string) {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
  if (field !== undefined) assert.equal(r.error.details?.field, field, r.error.message);
}

const planInput = (overrides: Partial<PlanInput> = {}): PlanInput => ({
  id: "pln_team",
  name: "Team",
  baseFee: { amount: 20n * UNIT, currency: "USD" },
  interval: MONTHLY,
  allotment: credits(25n),
  allocation: { mode: "per_member", poolSharePercent: 20 },
  ...overrides,
});
const makePlan = (overrides: Partial<PlanInput> = {}): Plan => okValue(validatePlan(planInput(overrides)));

const amountArb = fc.bigInt({ min: 0n, max: MAX_AMOUNT });
const percentArb = fc.integer({ min: 0, max: 100 });

describe("splitAllocation", () => {
  test("examples: 25 at 20% is 20 + 5; the remainder unit stays personal", () => {
    assert.deepEqual(splitAllocation(credits(25n), 20), { personal: credits(20n), pool: credits(5n) });
    assert.deepEqual(splitAllocation(7n, 50), { personal: 4n, pool: 3n });
    assert.deepEqual(splitAllocation(1n, 99), { personal: 1n, pool: 0n });
    assert.deepEqual(splitAllocation(credits(25n), 0), { personal: credits(25n), pool: 0n });
    assert.deepEqual(splitAllocation(credits(25n), 100), { personal: 0n, pool: credits(25n) });
  });

  test("personal + pool is exactly the allocation; the pool part is the floor of its share", () => {
    fc.assert(
      fc.property(amountArb, percentArb, (amount, percent) => {
        const { personal, pool } = splitAllocation(amount, percent);
        assert.ok(personal >= 0n && pool >= 0n);
        assert.equal(personal + pool, amount, "never more, never less");
        // pool ≤ amount × p / 100 < pool + 1: rounds down, by less than a unit.
        assert.ok(pool * 100n <= amount * BigInt(percent));
        assert.ok(amount * BigInt(percent) < (pool + 1n) * 100n);
      }),
    );
  });

  test("exact shares when the allocation divides evenly", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_AMOUNT / 100n }), percentArb, (hundredth, percent) => {
        const amount = hundredth * 100n;
        const { personal, pool } = splitAllocation(amount, percent);
        assert.equal(pool, hundredth * BigInt(percent));
        assert.equal(personal, hundredth * BigInt(100 - percent));
      }),
    );
  });

  test("a prorated allocation split never exceeds the allotment", () => {
    fc.assert(
      fc.property(
        amountArb,
        percentArb,
        fc.integer({ min: 0, max: P0.to - P0.from }),
        (allotment, percent, offset) => {
          const amount = prorate(allotment, P0, P0.from + offset);
          const { personal, pool } = splitAllocation(amount, percent);
          assert.ok(personal + pool <= allotment);
        },
      ),
    );
  });

  test("bad input is a bug of the caller: RangeError", () => {
    assert.throws(() => splitAllocation(-1n, 10), RangeError);
    assert.throws(() => splitAllocation(1n, 101), RangeError);
    assert.throws(() => splitAllocation(1n, 2.5), RangeError);
  });
});

describe("allocation on plans", () => {
  test("default customer; per_member keeps its share", () => {
    const { allocation: _drop, ...rest } = planInput();
    assert.deepEqual(okValue(validatePlan(rest)).allocation, { mode: "customer" });
    assert.deepEqual(makePlan().allocation, { mode: "per_member", poolSharePercent: 20 });
    assert.deepEqual(okValue(validateAllocation({ mode: "per_member", poolSharePercent: 0 })), {
      mode: "per_member",
      poolSharePercent: 0,
    });
  });

  test("refuses a share outside 0..100, an unknown mode, and per_member with per_seat", () => {
    for (const [allocation, field] of [
      [{ mode: "per_member", poolSharePercent: 101 }, "allocation.poolSharePercent"],
      [{ mode: "per_member", poolSharePercent: -1 }, "allocation.poolSharePercent"],
      [{ mode: "per_member", poolSharePercent: 12.5 }, "allocation.poolSharePercent"],
      [{ mode: "per_member" }, "allocation.poolSharePercent"],
      [{ mode: "seats" }, "allocation.mode"],
      [null, "allocation"],
    ] as const) {
      expectFail(validatePlan(planInput({ allocation: allocation as never })), "invalid_argument", field);
    }
    expectFail(validatePlan(planInput({ perSeat: true })), "invalid_argument", "allocation");
  });
});

describe("planMemberRenewal", () => {
  const input = deepFreeze({
    subscriptionId: "sbs_1",
    plan: makePlan(),
    period: P0,
    customerId: "cus_1",
    poolWalletId: "wal_pool",
    memberWalletIds: ["wal_m2", "wal_m1", "wal_m3"],
  });

  test("each member its personal part, one pool grant for all the shares, keyed by period", () => {
    const r = okValue(planMemberRenewal(ctxAt(P0.from), input));
    assert.equal(r.key, "renewal:sbs_1:0");
    assert.equal(r.lapsed, false);
    assert.deepEqual(
      r.members.map((m) => [m.walletId, m.personal, m.pool]),
      [
        ["wal_m1", credits(20n), credits(5n)],
        ["wal_m2", credits(20n), credits(5n)],
        ["wal_m3", credits(20n), credits(5n)],
      ],
    );
    assert.deepEqual(r.members[0]!.grant, {
      walletId: "wal_m1",
      amount: credits(20n),
      source: "plan",
      costBasis: 0n,
      currency: null,
      effectiveAt: P0.from,
      expiresAt: P0.to,
      metadata: {
        subscription_id: "sbs_1",
        plan_id: "pln_team",
        period_index: "0",
        lifecycle: "renewal",
        allocation: "personal",
        member_wallet_id: "wal_m1",
      },
    });
    assert.equal(r.pool, credits(15n));
    assert.equal(r.poolGrant?.walletId, "wal_pool");
    assert.equal(r.poolGrant?.amount, credits(15n));
    assert.equal(r.poolGrant?.metadata?.[LIFECYCLE_METADATA.allocation], "pool_share");
    assert.equal(r.poolGrant?.metadata?.[LIFECYCLE_METADATA.members], "3");
  });

  test("conservation: personal parts plus the pool grant are the allotment times the members", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: MAX_AMOUNT / 1000n }),
        percentArb,
        fc.integer({ min: 0, max: 50 }),
        (allotment, percent, n) => {
          const plan = makePlan({ allotment, allocation: { mode: "per_member", poolSharePercent: percent } });
          const ids = Array.from({ length: n }, (_, i) => `wal_${String(i).padStart(3, "0")}`);
          const r = okValue(planMemberRenewal(ctxAt(P0.from), { ...input, plan, memberWalletIds: ids }));
          const personal = r.members.reduce((a, m) => a + (m.grant?.amount ?? 0n), 0n);
          assert.equal(personal + (r.poolGrant?.amount ?? 0n), allotment * BigInt(n));
          assert.equal(r.members.length, n);
          if (n === 0) assert.equal(r.poolGrant, null, "no members: nothing granted, not even to the pool");
        },
      ),
    );
  });

  test("no pool grant at 0%, no personal grants at 100%; a period already over is lapsed", () => {
    const none = okValue(
      planMemberRenewal(ctxAt(P0.from), {
        ...input,
        plan: makePlan({ allocation: { mode: "per_member", poolSharePercent: 0 } }),
      }),
    );
    assert.equal(none.poolGrant, null);
    const all = okValue(
      planMemberRenewal(ctxAt(P0.from), {
        ...input,
        plan: makePlan({ allocation: { mode: "per_member", poolSharePercent: 100 } }),
      }),
    );
    assert.ok(all.members.every((m) => m.grant === null));
    assert.equal(all.poolGrant?.amount, credits(75n));
    assert.equal(okValue(planMemberRenewal(ctxAt(P0.to), input)).lapsed, true);
  });

  test("refuses a customer plan, a wallet listed twice or the pool as a member", () => {
    expectFail(
      planMemberRenewal(ctxAt(P0.from), { ...input, plan: makePlan({ allocation: { mode: "customer" } }) }),
      "invalid_argument",
      "plan.allocation",
    );
    expectFail(
      planMemberRenewal(ctxAt(P0.from), { ...input, memberWalletIds: ["wal_a", "wal_a"] }),
      "invalid_argument",
      "memberWalletIds",
    );
    expectFail(
      planMemberRenewal(ctxAt(P0.from), { ...input, memberWalletIds: ["wal_pool"] }),
      "invalid_argument",
      "memberWalletIds",
    );
    // And planRenewal refuses a per-member plan: it would put every credit in the pool.
    expectFail(
      planRenewal(ctxAt(P0.from), {
        subscriptionId: "sbs_1",
        plan: makePlan(),
        seats: 1,
        period: P0,
        walletId: "wal_pool",
        customerId: "cus_1",
      }),
      "invalid_argument",
      "plan.allocation",
    );
  });
});

describe("planMemberAddition", () => {
  const input = deepFreeze({
    subscriptionId: "sbs_1",
    plan: makePlan({ allotment: credits(31n) }),
    period: P0,
    poolWalletId: "wal_pool",
    memberWalletId: "wal_new",
  });

  test("the rest of the period, prorated, then split; both grants name the member", () => {
    const at = Date.UTC(2027, 0, 17); // 15 of January's 31 days left
    const r = okValue(planMemberAddition(ctxAt(at), input));
    assert.deepEqual([r.amount, r.personal, r.pool], [credits(15n), credits(12n), credits(3n)]);
    for (const g of [r.personalGrant!, r.poolGrant!]) {
      assert.equal(g.effectiveAt, at);
      assert.equal(g.expiresAt, P0.to);
      assert.equal(g.metadata?.lifecycle, "member_added");
      assert.equal(g.metadata?.member_wallet_id, "wal_new");
    }
    assert.deepEqual([r.personalGrant!.walletId, r.poolGrant!.walletId], ["wal_new", "wal_pool"]);
    // At the start: the whole allotment.
    assert.equal(okValue(planMemberAddition(ctxAt(P0.from), input)).amount, credits(31n));
  });

  test("never more than the allotment, and parts sum to the prorated amount", () => {
    fc.assert(
      fc.property(fc.integer({ min: P0.from, max: P0.to - 1 }), percentArb, (at, percent) => {
        const plan = makePlan({
          allotment: credits(31n),
          allocation: { mode: "per_member", poolSharePercent: percent },
        });
        const r = okValue(planMemberAddition(ctxAt(at), { ...input, plan }));
        assert.equal(r.personal + r.pool, r.amount);
        assert.ok(r.amount <= credits(31n));
      }),
    );
  });

  test("outside the period, on a customer plan, or with the pool as member: invalid_argument", () => {
    expectFail(planMemberAddition(ctxAt(P0.to), input), "invalid_argument", "period");
    expectFail(
      planMemberAddition(ctxAt(P0.from), { ...input, plan: makePlan({ allocation: { mode: "customer" } }) }),
      "invalid_argument",
      "plan.allocation",
    );
    expectFail(
      planMemberAddition(ctxAt(P0.from), { ...input, memberWalletId: "wal_pool" }),
      "invalid_argument",
      "memberWalletId",
    );
  });
});

describe("rollover bases and plan changes", () => {
  test("each wallet's cap base is its own period allotment", () => {
    const plan = makePlan();
    assert.equal(memberRolloverBase(plan, "member", 4), credits(20n));
    assert.equal(memberRolloverBase(plan, "pool", 4), credits(20n));
    assert.equal(memberRolloverBase(plan, "pool", 0), 0n);
  });

  test("a change to or from a per-member plan waits for the period end, whatever the allotments", () => {
    const customer = makePlan({ id: "pln_small", allocation: { mode: "customer" }, allotment: credits(10n) });
    const perMember = makePlan({ id: "pln_team", allotment: credits(100n) });
    const base = { subscriptionId: "sbs_1", grantedSeats: 1, period: P0, walletId: "wal_pool" };
    const up = okValue(planPlanChange(ctxAt(P0.from + 1000), { ...base, from: customer, to: perMember }));
    assert.deepEqual([up.kind, up.effectiveAt, up.grant], ["downgrade", P0.to, null]);
    const down = okValue(planPlanChange(ctxAt(P0.from + 1000), { ...base, from: perMember, to: customer }));
    assert.deepEqual([down.kind, down.grant], ["downgrade", null]);
  });
});
