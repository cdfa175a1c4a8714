import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  credits,
  DECISION_REASONS,
  divRound,
  effectiveOverage,
  FAIR_USE_FLOOR,
  fitFloor,
  type Grant,
  isBalanced,
  MAX_AMOUNT,
  OVERAGE_MODES,
  type OveragePolicy,
  overageAmount,
  overageRoom,
  overrunAllowed,
  parseRateCard,
  planAuthorize,
  planDeficitRepay,
  planOverageBill,
  planUsage,
  UNIT,
  type UsageEvent,
  type UsageState,
  validateOveragePolicy,
} from "../src/index.js";
import { counterIds, ctxAt, makeGrant } from "./support.js";

/**
 * Overage policies (core/overage.ts), per mode: invariant 4 (available never below the floor)
 * under random usage and authorizations; fair use never denies; throttle allows only listed
 * actions below its level; a deficit is repaid exactly once from a renewal's grant; billing
 * moves exactly what is owed.
 */

const NOW = Date.UTC(2026, 2, 3, 12);
const cr = (n: number | bigint): bigint => credits(BigInt(n));

const policyOf = (mode: OveragePolicy["mode"], floor: bigint): OveragePolicy => {
  const v = validateOveragePolicy({
    mode,
    ...(mode === "soft_cap" || mode === "carry_deficit" ? { floor } : {}),
    ...(mode === "throttle"
      ? { throttle: { level: cr(10), allowedActions: ["cheap.*"], fallbackAction: "cheap.mini" } }
      : {}),
  });
  assert.ok(v.ok, v.ok ? "" : v.error.message);
  return v.value;
};

const CARD = (() => {
  const r = parseRateCard({
    lines: [
      { id: "unit", action: "unit", quantity: "calls", rate: "1" },
      { id: "cheap", action: "cheap.*", quantity: "calls", rate: "1" },
    ],
  });
  assert.ok(r.ok);
  return r.value;
})();

function usageState(policy: OveragePolicy, owed: bigint, grants: Grant[]): UsageState {
  return {
    wallets: new Map([
      ["wal_a", { id: "wal_a", customerId: "cus_a", memberId: null, overdraft: owed, policy }],
    ]),
    grants: new Map(grants.map((g) => [g.id, g])),
    poolWallet: new Map([["cus_a", "wal_a"]]),
    memberWallet: new Map(),
    subjects: new Map(),
    pricingAt: () => ({ versionId: "rcv_1", content: CARD, overrides: [] }),
    costAt: () => null,
    usage: new Map(),
  };
}

const event = (i: number, calls: bigint, action = "unit"): UsageEvent => ({
  id: `e${i}`,
  customerId: "cus_a",
  subjectId: null,
  action,
  dimensions: {},
  quantities: { calls },
  time: NOW,
  status: "succeeded",
  runId: null,
  reportedCost: null,
});

const arbMode = fc.constantFrom(...OVERAGE_MODES);

describe("policies", () => {
  test("validation: each mode's floor, price and throttle rule", () => {
    assert.equal(validateOveragePolicy({ mode: "fair_use" }).ok && FAIR_USE_FLOOR, -MAX_AMOUNT);
    const bad: Parameters<typeof validateOveragePolicy>[0][] = [
      { mode: "hard_cap", floor: -1n },
      { mode: "throttle", floor: -1n },
      { mode: "fair_use", floor: -1n },
      { mode: "soft_cap", floor: 1n },
      { mode: "hard_cap", price: { amount: 1n, currency: "USD" } },
      { mode: "soft_cap", price: { amount: 0n, currency: "USD" } },
      { mode: "soft_cap", price: { amount: 1n, currency: "usd" } },
      { mode: "throttle" },
      { mode: "throttle", throttle: { level: -1n, allowedActions: ["a"], fallbackAction: null } },
      { mode: "throttle", throttle: { level: 1n, allowedActions: [], fallbackAction: null } },
      { mode: "throttle", throttle: { level: 1n, allowedActions: ["Bad"], fallbackAction: null } },
      { mode: "throttle", throttle: { level: 1n, allowedActions: [], fallbackAction: "a.*" } },
      { mode: "soft_cap", throttle: { level: 1n, allowedActions: ["a"], fallbackAction: null } },
      { mode: "lenient" as OveragePolicy["mode"] },
    ];
    for (const input of bad)
      assert.equal(
        validateOveragePolicy(input).ok,
        false,
        JSON.stringify(input, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
      );
    const soft = validateOveragePolicy({
      mode: "soft_cap",
      floor: -cr(5),
      price: { amount: UNIT / 50n, currency: "USD" },
    });
    assert.ok(soft.ok);
    assert.deepEqual(soft.value.price, { amount: UNIT / 50n, currency: "USD" });
  });

  test("precedence: the wallet's own policy, then its plan's, then the default hard cap", () => {
    const wallet = policyOf("soft_cap", -cr(5));
    const plan = policyOf("fair_use", 0n);
    assert.deepEqual(effectiveOverage(wallet, plan), { policy: wallet, source: "wallet" });
    assert.deepEqual(effectiveOverage(null, plan), { policy: plan, source: "plan" });
    assert.equal(effectiveOverage(null, null).source, "default");
    assert.equal(effectiveOverage(null, null).policy.mode, "hard_cap");
  });

  test("a policy applied to a wallet that owes keeps the floor at or below what it owes", () => {
    fc.assert(
      fc.property(
        arbMode,
        fc.bigInt({ min: 0n, max: cr(1000) }),
        fc.bigInt({ min: 0n, max: cr(1000) }),
        (mode, owed, depth) => {
          const p = fitFloor(policyOf(mode, -depth), owed);
          assert.ok(owed <= -p.floor);
          assert.equal(p.mode, mode);
        },
      ),
    );
  });

  test("the closed list of decision reasons", () => {
    assert.deepEqual(
      [...DECISION_REASONS],
      [
        "sufficient_credits",
        "within_overdraft",
        "insufficient_credits",
        "below_throttle_level",
        "spend_cap_reached",
      ],
    );
  });
});

describe("usage per mode (invariant 4)", () => {
  test("every mode: what the pool owes never passes its floor, and only owing modes owe", () => {
    fc.assert(
      fc.property(
        arbMode,
        fc.bigInt({ min: 0n, max: 50n }),
        fc.bigInt({ min: 0n, max: 30n }),
        fc.array(fc.bigInt({ min: 1n, max: 40n }), { minLength: 1, maxLength: 12 }),
        (mode, grant, depth, calls) => {
          const policy = policyOf(mode, -cr(depth));
          const grants = grant > 0n ? [makeGrant({ id: "grt_1", amount: cr(grant) })] : [];
          let owed = 0n;
          let state = usageState(policy, owed, grants);
          for (const [i, c] of calls.entries()) {
            const plan = planUsage({ now: NOW, newId: counterIds() }, state, [event(i, c * UNIT)]);
            for (const tx of plan.transactions) assert.ok(isBalanced(tx.entries));
            const o = plan.outcomes[0]!;
            assert.equal(o.kind, "accepted");
            if (o.kind !== "accepted") continue;
            if (mode === "fair_use") assert.equal(o.unpaid, 0n, "fair use never refuses a charge");
            if (!overrunAllowed(policy)) assert.equal(o.overdraft, 0n, `${mode} never owes`);
            owed += plan.overdraftDeltas.get("wal_a") ?? 0n;
            assert.ok(owed <= -policy.floor, "invariant 4: owed within the floor");
            const left = new Map(state.grants);
            for (const d of o.draws) {
              const g = left.get(d.grantId)!;
              left.set(d.grantId, { ...g, remaining: g.remaining - d.amount });
            }
            for (const g of left.values()) assert.ok(g.remaining >= 0n);
            state = { ...usageState(policy, owed, [...left.values()]) };
          }
        },
      ),
    );
  });
});

describe("authorize per mode", () => {
  const holdState = (policy: OveragePolicy, balance: bigint, owed = 0n) => ({
    sources: [
      { walletId: "wal_a", grants: balance > 0n ? [makeGrant({ id: "grt_1", amount: balance })] : [] },
    ],
    poolWalletId: "wal_a",
    overdraft: owed,
    policy,
  });
  const ask = (action: string, estimate: bigint, hold = true) => ({
    customerId: "cus_a",
    walletId: "wal_a",
    subjectId: null,
    action,
    estimate,
    holdTimeoutSeconds: hold ? 60 : null,
  });

  test("every mode: an allowed hold never takes available below the floor; fair use never denies", () => {
    fc.assert(
      fc.property(
        arbMode,
        fc.bigInt({ min: 0n, max: cr(100) }),
        fc.bigInt({ min: 0n, max: 50n }),
        fc.bigInt({ min: 0n, max: cr(200) }),
        fc.constantFrom("unit", "cheap.mini", "cheap.x"),
        (mode, balance, depth, estimate, action) => {
          const policy = policyOf(mode, -cr(depth));
          const r = planAuthorize(ctxAt(NOW), holdState(policy, balance), ask(action, estimate));
          assert.ok(r.ok);
          const a = r.value.authorization;
          assert.ok((DECISION_REASONS as readonly string[]).includes(a.reason));
          if (mode === "fair_use") assert.equal(a.decision, "allow");
          if (a.decision === "allow") {
            assert.ok(estimate <= balance + overageRoom(policy, 0n));
            // What stays: the grants minus the estimate, never below the floor.
            assert.ok(balance - estimate >= policy.floor);
            if (r.value.transaction) assert.ok(isBalanced(r.value.transaction.entries));
          } else assert.equal(a.hold, null);
        },
      ),
    );
  });

  test("throttle: below the level only listed actions and the fallback proceed; others get throttle with what is allowed", () => {
    const policy = policyOf("throttle", 0n);
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: cr(40) }),
        fc.bigInt({ min: 0n, max: cr(40) }),
        fc.constantFrom("unit", "cheap.mini", "cheap.large", "other.thing"),
        (balance, estimate, action) => {
          const r = planAuthorize(ctxAt(NOW), holdState(policy, balance), ask(action, estimate, false));
          assert.ok(r.ok);
          const a = r.value.authorization;
          const listed = action.startsWith("cheap.");
          const below = balance - estimate < cr(10);
          if (below && !listed) {
            assert.equal(a.decision, "throttle");
            assert.equal(a.reason, "below_throttle_level");
            assert.deepEqual(a.allowedActions, ["cheap.*"]);
            assert.equal(a.fallbackAction, "cheap.mini");
          } else {
            // Listed (or above the level): hard cap rules, never throttle.
            assert.equal(a.decision, estimate <= balance ? "allow" : "deny");
            assert.equal(a.allowedActions, null);
          }
        },
      ),
    );
  });
});

describe("deficit and billing", () => {
  test("a renewal's grant repays the deficit once: exactly min(owed, grant), balanced, the rest stays owed", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: cr(100) }),
        fc.array(fc.bigInt({ min: 1n, max: cr(60) }), { minLength: 1, maxLength: 3 }),
        (owed, amounts) => {
          const policy = policyOf("carry_deficit", -cr(100));
          const grants = amounts.map((amount, i) =>
            makeGrant({ id: `grt_${i}`, amount, remaining: amount, walletId: i === 0 ? "wal_a" : "wal_m" }),
          );
          const ctx = ctxAt(NOW);
          const input = { customerId: "cus_a", poolWalletId: "wal_a", owed, policy, newGrants: grants };
          const r = planDeficitRepay(ctx, input);
          const total = amounts.reduce((s, a) => s + a, 0n);
          const expected = owed < total ? owed : total;
          if (expected === 0n) {
            assert.equal(r, null);
            return;
          }
          assert.ok(r);
          assert.equal(r.repaid, expected);
          assert.ok(isBalanced(r.transaction.entries));
          const toOverdraft = r.transaction.entries
            .filter((e) => e.account.kind === "overdraft")
            .reduce((s, e) => s + e.amount, 0n);
          assert.equal(toOverdraft, expected);
          for (const g of grants) assert.ok((r.perGrant.get(g.id) ?? 0n) <= g.amount);
          // Once: with the deficit paid, a second pass has nothing (or only the rest) to repay.
          const again = planDeficitRepay(ctx, { ...input, owed: owed - r.repaid });
          if (owed - r.repaid === 0n) assert.equal(again, null);
          // Other modes never repay.
          assert.equal(planDeficitRepay(ctx, { ...input, policy: policyOf("soft_cap", -cr(100)) }), null);
        },
      ),
    );
  });

  test("billing moves exactly what is owed to overage_receivable, priced with one rounding", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: cr(10_000) }),
        fc.bigInt({ min: 1n, max: 1000n * UNIT }),
        (owed, price) => {
          const policy = validateOveragePolicy({
            mode: "soft_cap",
            floor: -cr(10_000),
            price: { amount: price, currency: "EUR" },
          });
          assert.ok(policy.ok);
          const bill = planOverageBill(ctxAt(NOW), {
            customerId: "cus_a",
            walletId: "wal_a",
            owed,
            policy: policy.value,
            reason: "test",
          });
          if (owed === 0n) {
            assert.equal(bill, null);
            return;
          }
          assert.ok(bill);
          assert.ok(isBalanced(bill.transaction.entries));
          assert.equal(bill.transaction.kind, "overage.bill");
          const byAccount = new Map(
            bill.transaction.entries.map((e) => [
              e.account.kind === "system" ? e.account.name : e.account.kind,
              e.amount,
            ]),
          );
          assert.equal(byAccount.get("overdraft"), owed, "the wallet owes that much less");
          assert.equal(byAccount.get("overage_receivable"), -owed);
          assert.equal(bill.credits, owed);
          assert.equal(bill.amount, divRound(owed * price, UNIT));
          assert.equal(bill.amount, overageAmount(owed, { amount: price, currency: "EUR" }));
        },
      ),
    );
    // No price, or another mode: nothing to bill.
    assert.equal(
      planOverageBill(ctxAt(NOW), {
        customerId: "cus_a",
        walletId: "wal_a",
        owed: cr(5),
        policy: policyOf("soft_cap", -cr(10)),
        reason: "x",
      }),
      null,
    );
  });
});
