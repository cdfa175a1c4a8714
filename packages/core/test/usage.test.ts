import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  type Accepted,
  type CostTableAt,
  checkEventTime,
  credits,
  divRound,
  FUTURE_SKEW_MS,
  type Grant,
  grantDeltas,
  isBalanced,
  LATE_GRACE_MS,
  type OveragePolicy,
  overdraftDeltas,
  type PricingAt,
  parseRateCard,
  periodStart,
  planUsage,
  type RateCardContent,
  type RateCardInput,
  type Rejected,
  SCALE,
  type UsageEvent,
  type UsageOutcome,
  type UsagePlan,
  type UsageState,
  type UsageWallet,
  usageKey,
  versionAt,
} from "../src/index.js";
import { counterIds, makeGrant } from "./support.js";

// ------------------------------------------------------------------------------------ fixtures

/** 3 March 2026, noon UTC: three days back is February, so periods can differ within the grace. */
const NOW = Date.UTC(2026, 2, 3, 12);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Whole credits as units. */
const cr = (n: number | bigint): bigint => credits(BigInt(n));
/** Whole quantity (tokens, images…) at 9 decimals. */
const qn = (n: number | bigint): bigint => BigInt(n) * 10n ** 9n;

function card(input: RateCardInput): RateCardContent {
  const r = parseRateCard(input);
  assert.ok(r.ok, r.ok ? "" : r.error.message);
  return r.value;
}

const cardWith = (chatRate: string): RateCardContent =>
  card({
    lines: [
      { id: "chat", action: "chat", quantity: "tokens", rate: chatRate },
      { id: "image", action: "image.*", quantity: "images", rate: "10" },
      {
        id: "embed",
        action: "embed",
        quantity: "tokens",
        tiers: [
          { up_to: "100", rate: "1" },
          { up_to: null, rate: "0.5" },
        ],
      },
      { id: "ping", action: "ping", quantity: "calls", free: true },
    ],
    multipliers: [{ dimension: "mode", value: "turbo", factor: "2" }],
    non_billable: [{ action: "chat", match: { env: "test" }, reason: "test traffic" }],
  });

/** v1 (chat at 3 a token) from six days back, v2 (chat at 1) from two days back. */
const VERSIONS = [
  { versionId: "rcv_1", effectiveAt: NOW - 6 * DAY, content: cardWith("3") },
  { versionId: "rcv_2", effectiveAt: NOW - 2 * DAY, content: cardWith("1") },
];
const pricingAt = (_customerId: string, time: number): PricingAt | null => {
  const v = versionAt(VERSIONS, time);
  return v ? { versionId: v.versionId, content: v.content, overrides: [] } : null;
};

const COST: CostTableAt = {
  versionId: "ctv_1",
  currency: "USD",
  lines: card({ lines: [{ id: "chat_cost", action: "chat", quantity: "tokens", rate: "0.0001" }] }).lines,
};

const HARD: OveragePolicy = { mode: "hard_cap", floor: 0n };
const soft = (floor: bigint): OveragePolicy => ({ mode: "soft_cap", floor: -floor });

const wallet = (
  id: string,
  customerId: string,
  memberId: string | null = null,
  policy: OveragePolicy = HARD,
  overdraft = 0n,
): UsageWallet => ({ id, customerId, memberId, policy, overdraft });

interface Setup {
  readonly wallets?: readonly UsageWallet[];
  readonly grants?: readonly Grant[];
  readonly subjects?: readonly (readonly [string, string, string])[];
  readonly usage?: ReadonlyMap<string, bigint>;
  readonly pricingAt?: UsageState["pricingAt"];
  readonly costAt?: UsageState["costAt"];
}

/** cus_a: pool wal_pool, member sub_m (wallet wal_m), agent sub_agent; cus_b: pool wal_pool_b. */
const DEFAULT_WALLETS = [
  wallet("wal_pool", "cus_a"),
  wallet("wal_m", "cus_a", "sub_m"),
  wallet("wal_pool_b", "cus_b"),
];
const DEFAULT_SUBJECTS: [string, string, string][] = [
  ["sub_m", "cus_a", "member"],
  ["sub_agent", "cus_a", "agent"],
  ["sub_b", "cus_b", "member"],
];

function makeState(setup: Setup = {}): UsageState {
  const wallets = setup.wallets ?? DEFAULT_WALLETS;
  const poolWallet = new Map<string, string>();
  const memberWallet = new Map<string, string>();
  for (const w of wallets) {
    if (w.memberId === null) poolWallet.set(w.customerId, w.id);
    else memberWallet.set(w.memberId, w.id);
  }
  return {
    wallets: new Map(wallets.map((w) => [w.id, w])),
    grants: new Map((setup.grants ?? []).map((g) => [g.id, g])),
    poolWallet,
    memberWallet,
    subjects: new Map(
      (setup.subjects ?? DEFAULT_SUBJECTS).map(([id, customerId, kind]) => [id, { customerId, kind }]),
    ),
    pricingAt: setup.pricingAt ?? pricingAt,
    costAt: setup.costAt ?? (() => COST),
    usage: setup.usage ?? new Map(),
  };
}

let eventCounter = 0;
function event(overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id: `evt_${++eventCounter}`,
    customerId: "cus_a",
    subjectId: null,
    action: "chat",
    dimensions: {},
    quantities: { tokens: qn(5) },
    time: NOW,
    status: "succeeded",
    runId: null,
    reportedCost: null,
    ...overrides,
  };
}

const plan = (state: UsageState, events: readonly UsageEvent[], now = NOW): UsagePlan =>
  planUsage({ now, newId: counterIds() }, state, events);

function accepted(o: UsageOutcome | undefined): Accepted {
  assert.ok(o && o.kind === "accepted", `expected accepted, got ${JSON.stringify(o?.kind)}`);
  return o;
}

function rejected(o: UsageOutcome | undefined, code: Rejected["code"]): Rejected {
  assert.ok(o && o.kind === "rejected", "expected a rejection");
  assert.equal(o.code, code);
  assert.ok(o.message.length > 0);
  return o;
}

/** The state a writer would hold after committing the plan: entries applied to grants, counters bumped. */
function applyPlan(state: UsageState, p: UsagePlan): UsageState {
  const grants = new Map(state.grants);
  for (const id of p.expired) grants.set(id, { ...grants.get(id)!, status: "expired" });
  for (const tx of p.transactions) {
    for (const [id, delta] of grantDeltas(tx.entries)) {
      const g = grants.get(id)!;
      grants.set(id, { ...g, remaining: g.remaining + delta });
    }
  }
  const wallets = new Map(state.wallets);
  for (const [id, delta] of p.overdraftDeltas) {
    const w = wallets.get(id)!;
    wallets.set(id, { ...w, overdraft: w.overdraft + delta });
  }
  const usage = new Map(state.usage);
  for (const [key, delta] of p.usageDeltas) usage.set(key, (usage.get(key) ?? 0n) + delta);
  return { ...state, grants, wallets, usage };
}

/** The parts of a state that change, as sorted arrays (compare with deepEqual). */
const stateSnapshot = (s: UsageState) => ({
  grants: [...s.grants.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
  wallets: [...s.wallets.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
  usage: [...s.usage.entries()].filter(([, v]) => v !== 0n).sort(([a], [b]) => (a < b ? -1 : 1)),
});

const remaining = (s: UsageState, id: string): bigint => s.grants.get(id)!.remaining;

// ----------------------------------------------------------------------------- checkEventTime

describe("checkEventTime: 7 days late, 5 minutes ahead", () => {
  test("the window's edges are inclusive", () => {
    assert.equal(LATE_GRACE_MS, 7 * DAY);
    assert.equal(FUTURE_SKEW_MS, 5 * 60_000);
    assert.ok(checkEventTime(NOW, NOW).ok);
    assert.ok(checkEventTime(NOW - LATE_GRACE_MS, NOW).ok);
    assert.ok(checkEventTime(NOW + FUTURE_SKEW_MS, NOW).ok);
    const old = checkEventTime(NOW - LATE_GRACE_MS - 1, NOW);
    assert.ok(!old.ok && old.error.code === "event_too_old");
    const future = checkEventTime(NOW + FUTURE_SKEW_MS + 1, NOW);
    assert.ok(!future.ok && future.error.code === "event_in_future");
  });

  test("periods are UTC calendar months", () => {
    assert.equal(periodStart(NOW), Date.UTC(2026, 2, 1));
    assert.equal(periodStart(Date.UTC(2026, 2, 1) - 1), Date.UTC(2026, 1, 1));
    assert.equal(periodStart(Date.UTC(2026, 2, 1)), Date.UTC(2026, 2, 1));
    assert.equal(usageKey("cus_a", 5, "chat"), "cus_a|5|chat");
  });
});

// ------------------------------------------------------------------------------- planUsage units

describe("planUsage: accepted events", () => {
  test("an event is rated by the version in force and drawn from the pool in one usage transaction", () => {
    const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(10) })] });
    const p = plan(state, [event({ id: "e1" })]);
    const o = accepted(p.outcomes[0]);
    assert.equal(o.versionId, "rcv_2");
    assert.equal(o.rating.credits, cr(5));
    assert.equal(o.walletId, "wal_pool");
    assert.equal(o.drawn, cr(5));
    assert.equal(o.overdraft, 0n);
    assert.equal(o.unpaid, 0n);
    assert.equal(o.reason, null);
    assert.deepEqual(o.draws, [{ grantId: "grt_1", walletId: "wal_pool", amount: cr(5) }]);
    assert.equal(p.transactions.length, 1);
    const tx = p.transactions[0]!;
    assert.equal(tx.kind, "usage");
    assert.equal(tx.customerId, "cus_a");
    assert.equal(tx.postedAt, NOW);
    assert.equal(o.transactionId, tx.id);
    assert.deepEqual(
      tx.entries.map((e) => [e.account.kind, e.amount]),
      [
        ["grant", -cr(5)],
        ["system", cr(5)],
      ],
    );
    assert.ok(isBalanced(tx.entries));
    assert.equal(remaining(applyPlan(state, p), "grt_1"), cr(5));
    assert.deepEqual(p.expired, []);
    assert.deepEqual([...p.overdraftDeltas], []);
  });

  test("an older event uses the version in force at its own time", () => {
    const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(100) })] });
    const p = plan(state, [event({ time: NOW - 3 * DAY }), event({ time: NOW - 2 * DAY }), event()]);
    assert.deepEqual(
      p.outcomes.map((o) => [accepted(o).versionId, accepted(o).rating.credits]),
      [
        ["rcv_1", cr(15)],
        ["rcv_2", cr(5)],
        ["rcv_2", cr(5)],
      ],
    );
  });

  test("a member's event draws its own wallet, then falls through to the pool", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_m", walletId: "wal_m", amount: cr(3) }),
        makeGrant({ id: "grt_m_img", walletId: "wal_m", amount: cr(50), scope: ["image.*"] }),
        makeGrant({ id: "grt_p", walletId: "wal_pool", amount: cr(10) }),
      ],
    });
    const p = plan(state, [event({ subjectId: "sub_m" })]);
    const o = accepted(p.outcomes[0]);
    assert.equal(o.walletId, "wal_m");
    assert.deepEqual(o.draws, [
      { grantId: "grt_m", walletId: "wal_m", amount: cr(3) },
      { grantId: "grt_p", walletId: "wal_pool", amount: cr(2) },
    ]);
    const after = applyPlan(state, p);
    assert.equal(remaining(after, "grt_m"), 0n);
    assert.equal(remaining(after, "grt_m_img"), cr(50), "a scope that does not admit chat is not drawn");
    assert.equal(remaining(after, "grt_p"), cr(8));
  });

  test("a subject without its own wallet pays from the pool", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_m", walletId: "wal_m", amount: cr(3) }),
        makeGrant({ id: "grt_p", walletId: "wal_pool", amount: cr(10) }),
      ],
    });
    const o = accepted(plan(state, [event({ subjectId: "sub_agent" })]).outcomes[0]);
    assert.equal(o.walletId, "wal_pool");
    assert.deepEqual(
      o.draws.map((d) => d.grantId),
      ["grt_p"],
    );
  });

  test("hard cap: a charge the grants cannot cover is recorded unpaid in full and draws nothing", () => {
    const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(3) })] });
    const p = plan(state, [
      event({ quantities: { tokens: qn(5) } }),
      event({ quantities: { tokens: qn(2) } }),
    ]);
    const refused = accepted(p.outcomes[0]);
    assert.equal(refused.unpaid, cr(5));
    assert.equal(refused.drawn, 0n);
    assert.equal(refused.overdraft, 0n);
    assert.deepEqual(refused.draws, []);
    assert.equal(refused.revenue, 0n);
    assert.equal(refused.reason, "insufficient_credits");
    assert.equal(refused.transactionId, null);
    // The next event still finds the 3 credits.
    const paid = accepted(p.outcomes[1]);
    assert.equal(paid.drawn, cr(2));
    assert.equal(p.transactions.length, 1);
    assert.deepEqual(
      p.transactions[0]!.entries.map((e) => e.amount),
      [-cr(2), cr(2)],
    );
    assert.equal(remaining(applyPlan(state, p), "grt_1"), cr(1));
    assert.deepEqual([...p.overdraftDeltas], []);
  });

  test("soft cap: the shortfall goes on the pool's overdraft down to the floor, then charges are unpaid", () => {
    const state = makeState({
      wallets: [wallet("wal_pool", "cus_a", null, soft(cr(10))), wallet("wal_m", "cus_a", "sub_m")],
      grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(3) })],
    });
    const p = plan(state, [
      event({ quantities: { tokens: qn(5) } }), // 3 drawn, 2 overdraft
      event({ quantities: { tokens: qn(8) } }), // 8 overdraft: owed 10 = the floor
      event({ quantities: { tokens: qn(1) } }), // no room: unpaid
    ]);
    const [a, b, c] = p.outcomes.map(accepted);
    assert.deepEqual([a!.drawn, a!.overdraft, a!.unpaid], [cr(3), cr(2), 0n]);
    assert.deepEqual([b!.drawn, b!.overdraft, b!.unpaid], [0n, cr(8), 0n]);
    assert.deepEqual([c!.drawn, c!.overdraft, c!.unpaid], [0n, 0n, cr(1)]);
    assert.equal(c!.reason, "insufficient_credits");
    assert.equal(c!.transactionId, null);
    assert.equal(a!.transactionId, b!.transactionId);
    assert.deepEqual([...p.overdraftDeltas], [["wal_pool", cr(10)]]);
    const tx = p.transactions[0]!;
    assert.deepEqual(
      tx.entries.map((e) => [e.account.kind, e.amount]),
      [
        ["grant", -cr(3)],
        ["overdraft", -cr(10)],
        ["system", cr(13)],
      ],
    );
    assert.deepEqual(overdraftDeltas(tx.entries), new Map([["wal_pool", -cr(10)]]));
    const after = applyPlan(state, p);
    assert.equal(remaining(after, "grt_1") - after.wallets.get("wal_pool")!.overdraft, -cr(10));
  });

  test("soft cap: a shortfall larger than the room left is unpaid in full, nothing drawn", () => {
    const state = makeState({
      wallets: [wallet("wal_pool", "cus_a", null, soft(cr(10)), cr(8))],
      grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(1) })],
    });
    const p = plan(state, [
      event({ quantities: { tokens: qn(4) } }),
      event({ quantities: { tokens: qn(3) } }),
    ]);
    const [big, fits] = p.outcomes.map(accepted);
    // 4 credits: 1 from the grant, 3 short, but only 2 of room (owed 8 of 10).
    assert.deepEqual([big!.drawn, big!.overdraft, big!.unpaid], [0n, 0n, cr(4)]);
    // 3 credits: 1 from the grant, 2 short, exactly the room.
    assert.deepEqual([fits!.drawn, fits!.overdraft, fits!.unpaid], [cr(1), cr(2), 0n]);
    assert.deepEqual([...p.overdraftDeltas], [["wal_pool", cr(2)]]);
  });

  test("the pool's policy decides overage, even for a member's event", () => {
    const state = makeState({
      wallets: [wallet("wal_pool", "cus_a", null, HARD), wallet("wal_m", "cus_a", "sub_m", soft(cr(100)))],
      grants: [makeGrant({ id: "grt_m", walletId: "wal_m", amount: cr(1) })],
    });
    const o = accepted(plan(state, [event({ subjectId: "sub_m" })]).outcomes[0]);
    assert.equal(o.unpaid, cr(5));
  });

  test("grants due to expire are expired first, with breakage, and never drawn", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_old", walletId: "wal_pool", amount: cr(5), expiresAt: NOW - 1, priority: 0 }),
        makeGrant({ id: "grt_now", walletId: "wal_pool", amount: cr(4), expiresAt: NOW, priority: 0 }),
        makeGrant({
          id: "grt_empty",
          walletId: "wal_pool",
          amount: cr(4),
          remaining: 0n,
          expiresAt: NOW - 5,
        }),
        makeGrant({ id: "grt_soon", walletId: "wal_pool", amount: cr(2), expiresAt: NOW + 1 }),
        makeGrant({ id: "grt_ok", walletId: "wal_pool", amount: cr(10) }),
        makeGrant({ id: "grt_b_old", walletId: "wal_pool_b", amount: cr(7), expiresAt: NOW - DAY }),
      ],
    });
    const p = plan(state, [event()]);
    assert.deepEqual(p.expired, ["grt_empty", "grt_now", "grt_old", "grt_b_old"]);
    assert.deepEqual(
      p.transactions.map((t) => [t.kind, t.customerId]),
      [
        ["expire", "cus_a"],
        ["expire", "cus_b"],
        ["usage", "cus_a"],
      ],
    );
    const expireA = p.transactions[0]!;
    assert.deepEqual(
      expireA.entries.map((e) => [e.account.kind === "grant" ? e.account.grantId : e.account.kind, e.amount]),
      [
        ["grt_now", -cr(4)],
        ["grt_old", -cr(5)],
        ["system", cr(9)],
      ],
    );
    assert.equal(
      expireA.entries[2]!.account.kind === "system" && expireA.entries[2]!.account.name,
      "breakage",
    );
    const o = accepted(p.outcomes[0]);
    assert.deepEqual(
      o.draws.map((d) => [d.grantId, d.amount]),
      [
        ["grt_soon", cr(2)],
        ["grt_ok", cr(3)],
      ],
    );
    const after = applyPlan(state, p);
    for (const id of ["grt_old", "grt_now", "grt_empty", "grt_b_old"]) {
      assert.equal(after.grants.get(id)!.status, "expired");
      assert.equal(remaining(after, id), 0n);
    }
    // Planning again at the same time finds nothing more to expire.
    const again = plan(after, []);
    assert.deepEqual(again.expired, []);
    assert.deepEqual(again.transactions, []);
  });

  test("revenue is the drawn credits times their cost basis, rounded once", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_free", walletId: "wal_pool", amount: cr(1) }),
        makeGrant({
          id: "grt_paid",
          walletId: "wal_pool",
          amount: cr(10),
          costBasis: 10_000_000n,
          currency: "USD",
        }),
      ],
    });
    const o = accepted(plan(state, [event({ quantities: { tokens: qn(3) } })]).outcomes[0]);
    assert.deepEqual(
      o.draws.map((d) => [d.grantId, d.amount]),
      [
        ["grt_free", cr(1)],
        ["grt_paid", cr(2)],
      ],
    );
    assert.equal(o.revenue, 20_000_000n, "2 credits at 0.01 USD");
    assert.equal(o.revenueCurrency, "USD");
    assert.deepEqual(o.extraRevenue, []);
    // Paid grants in two currencies: each currency's revenue apart, never added together.
    const mixed = makeState({
      grants: [
        makeGrant({
          id: "grt_eur",
          walletId: "wal_pool",
          amount: cr(2),
          costBasis: 100_000_000n,
          currency: "EUR",
        }),
        makeGrant({
          id: "grt_usd",
          walletId: "wal_pool",
          amount: cr(10),
          costBasis: 200_000_000n,
          currency: "USD",
        }),
      ],
    });
    const m = accepted(plan(mixed, [event({ quantities: { tokens: qn(4) } })]).outcomes[0]);
    assert.deepEqual(
      [m.revenue, m.revenueCurrency, m.extraRevenue],
      [cr(2) / 10n, "EUR", [{ currency: "USD", amount: (cr(2) * 2n) / 10n }]],
      "2 credits at 0.1 EUR, then 2 at 0.2 USD",
    );
    // Free credits only: no revenue, no currency.
    const free = makeState({ grants: [makeGrant({ id: "grt_free", walletId: "wal_pool", amount: cr(9) })] });
    const f = accepted(plan(free, [event()]).outcomes[0]);
    assert.equal(f.revenue, 0n);
    assert.equal(f.revenueCurrency, null);
    // Two draws of one unit at 0.5 per credit: 0.5 + 0.5 money units = 1, not 1 + 1.
    const halves = makeState({
      grants: [
        makeGrant({
          id: "grt_1",
          walletId: "wal_pool",
          amount: 1n,
          costBasis: 500_000_000n,
          currency: "USD",
        }),
        makeGrant({
          id: "grt_2",
          walletId: "wal_pool",
          amount: 1n,
          costBasis: 500_000_000n,
          currency: "USD",
        }),
      ],
    });
    const h = accepted(plan(halves, [event({ quantities: { tokens: 2n } })]).outcomes[0]);
    assert.equal(h.drawn, 2n);
    assert.equal(h.draws.length, 2);
    assert.equal(h.revenue, 1n);
    assert.equal(
      h.draws.reduce((s, d) => s + divRound(d.amount * 500_000_000n, 10n ** 9n), 0n),
      2n,
    );
  });

  test("cost comes from the reported cost, else the cost table in force, else is unknown", () => {
    const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(100) })] });
    const p = plan(state, [
      event(),
      event({ reportedCost: 123n }),
      event({ action: "image.gen", quantities: { images: qn(1) } }),
    ]);
    const [table, reported, uncosted] = p.outcomes.map(accepted);
    assert.deepEqual([table!.cost, table!.costCurrency, table!.costVersionId], [500_000n, "USD", "ctv_1"]);
    assert.deepEqual([reported!.cost, reported!.costCurrency, reported!.costVersionId], [123n, "USD", null]);
    // The cost table has no line for images: the action's cost is unknown, not zero.
    assert.deepEqual([uncosted!.cost, uncosted!.costVersionId], [null, null]);
    const noTable = makeState({
      costAt: () => null,
      grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(100) })],
    });
    const n = accepted(plan(noTable, [event()]).outcomes[0]);
    assert.deepEqual([n.cost, n.costCurrency, n.costVersionId], [null, null, null]);
  });

  test("tiers count the customer's period usage across the batch, per UTC month", () => {
    const state = makeState({
      grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(1000) })],
      usage: new Map([[usageKey("cus_a", periodStart(NOW), "embed"), qn(10)]]),
    });
    const embed = (tokens: number, time = NOW) =>
      event({ action: "embed", quantities: { tokens: qn(tokens) }, time });
    const p = plan(state, [embed(80), embed(40), embed(40, NOW - 3 * DAY)]);
    const [a, b, feb] = p.outcomes.map(accepted);
    assert.equal(a!.rating.credits, cr(80));
    assert.equal(b!.rating.credits, cr(10) + cr(15), "10 at 1, then 30 at 0.5");
    assert.equal(feb!.rating.credits, cr(40), "February has its own counter");
    assert.deepEqual([...p.usageDeltas].sort(), [
      [usageKey("cus_a", Date.UTC(2026, 1, 1), "embed"), qn(40)],
      [usageKey("cus_a", Date.UTC(2026, 2, 1), "embed"), qn(120)],
    ]);
  });

  test("failed, non-billable and free events are accepted at zero with a reason and move nothing", () => {
    const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(10) })] });
    const p = plan(state, [
      event({ status: "failed" }),
      event({ dimensions: { env: "test" } }),
      event({ action: "ping", quantities: { calls: qn(3) } }),
    ]);
    assert.deepEqual(
      p.outcomes.map((o) => {
        const a = accepted(o);
        return [a.rating.credits, a.drawn, a.overdraft, a.unpaid, a.draws.length, a.reason, a.transactionId];
      }),
      [
        [0n, 0n, 0n, 0n, 0, "failed", null],
        [0n, 0n, 0n, 0n, 0, "non_billable: test traffic", null],
        [0n, 0n, 0n, 0n, 0, "free", null],
      ],
    );
    assert.deepEqual(p.transactions, []);
    // A free line still counts usage; failed and non-billable events count none.
    assert.deepEqual([...p.usageDeltas], [[usageKey("cus_a", periodStart(NOW), "ping"), qn(3)]]);
  });

  test("each customer gets one usage transaction for all its charges in the batch", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_a", walletId: "wal_pool", amount: cr(100) }),
        makeGrant({ id: "grt_m", walletId: "wal_m", amount: cr(100) }),
        makeGrant({ id: "grt_b", walletId: "wal_pool_b", amount: cr(100) }),
      ],
    });
    const p = plan(state, [
      event({ customerId: "cus_b" }),
      event(),
      event({ subjectId: "sub_m", quantities: { tokens: qn(2) } }),
      event({ customerId: "cus_b", subjectId: "sub_b", action: "image.x", quantities: { images: qn(1) } }),
      event({ dimensions: { mode: "turbo" } }),
    ]);
    assert.deepEqual(
      p.transactions.map((t) => [t.kind, t.customerId, t.id]),
      [
        ["usage", "cus_a", "txn_000001"],
        ["usage", "cus_b", "txn_000002"],
      ],
    );
    assert.deepEqual(
      p.outcomes.map((o) => accepted(o).transactionId),
      ["txn_000002", "txn_000001", "txn_000001", "txn_000002", "txn_000001"],
    );
    const consumption = (i: number) =>
      p.transactions[i]!.entries.find((e) => e.account.kind === "system")!.amount;
    assert.equal(consumption(0), cr(5) + cr(2) + cr(10));
    assert.equal(consumption(1), cr(5) + cr(10));
  });

  test("the plan does not mutate its inputs", () => {
    const state = makeState({
      grants: [
        makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(3), expiresAt: NOW - 1 }),
        makeGrant({ id: "grt_2", walletId: "wal_pool", amount: cr(3) }),
      ],
      usage: new Map([[usageKey("cus_a", periodStart(NOW), "embed"), qn(10)]]),
      wallets: [wallet("wal_pool", "cus_a", null, soft(cr(50)))],
    });
    const before = JSON.stringify(stateSnapshot(state), (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
    const events = [event(), event({ action: "embed", quantities: { tokens: qn(200) } })];
    const eventsBefore = JSON.stringify(events, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
    plan(state, events);
    assert.equal(
      JSON.stringify(stateSnapshot(state), (_k, v) => (typeof v === "bigint" ? `${v}n` : v)),
      before,
    );
    assert.equal(
      JSON.stringify(events, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)),
      eventsBefore,
    );
  });
});

describe("planUsage: rejected events record nothing", () => {
  const state = makeState({ grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(100) })] });

  test("each rejection code", () => {
    const p = plan(state, [
      event({ time: NOW - LATE_GRACE_MS - 1 }),
      event({ time: NOW + FUTURE_SKEW_MS + 1 }),
      event({ customerId: "cus_nobody" }),
      event({ subjectId: "sub_nobody" }),
      event({ subjectId: "sub_b" }), // a subject of another customer
      event({ time: NOW - 6 * DAY - 1 }), // before the first rate card version
      event({ action: "video.gen" }),
      event({ action: "video.gen", status: "failed" }),
    ]);
    rejected(p.outcomes[0], "event_too_old");
    rejected(p.outcomes[1], "event_in_future");
    rejected(p.outcomes[2], "not_found");
    rejected(p.outcomes[3], "not_found");
    rejected(p.outcomes[4], "not_found");
    rejected(p.outcomes[5], "no_rate_card");
    rejected(p.outcomes[6], "unknown_action");
    rejected(p.outcomes[7], "unknown_action");
    assert.deepEqual(p.transactions, []);
    assert.deepEqual([...p.usageDeltas], []);
    assert.deepEqual([...p.overdraftDeltas], []);
  });

  test("the window edges are accepted", () => {
    const always = makeState({
      grants: [makeGrant({ id: "grt_1", walletId: "wal_pool", amount: cr(100) })],
      pricingAt: () => ({ versionId: "rcv_x", content: cardWith("1"), overrides: [] }),
    });
    const p = plan(always, [event({ time: NOW - LATE_GRACE_MS }), event({ time: NOW + FUTURE_SKEW_MS })]);
    assert.deepEqual(
      p.outcomes.map((o) => o.kind),
      ["accepted", "accepted"],
    );
  });

  test("a time check comes before the customer check", () => {
    rejected(
      plan(state, [event({ customerId: "cus_nobody", time: NOW + DAY })]).outcomes[0],
      "event_in_future",
    );
  });
});

// ----------------------------------------------------------------------------------- properties

interface Scenario {
  readonly state: UsageState;
  readonly events: readonly UsageEvent[];
}

const ACTIONS = [
  ["chat", "tokens"],
  ["image.gen", "images"],
  ["embed", "tokens"],
  ["ping", "calls"],
  ["video.gen", "seconds"],
] as const;

const TIME_OFFSETS = [
  0,
  0,
  0,
  0,
  0,
  -HOUR,
  -HOUR,
  -3 * DAY,
  -3 * DAY,
  4 * 60_000,
  -6 * DAY - HOUR,
  -8 * DAY,
  6 * 60_000,
];

const grantSpecArb = fc.record({
  wallet: fc.nat(20),
  amount: fc.oneof(fc.bigInt({ min: 1n, max: cr(100) }), fc.integer({ min: 1, max: 100 }).map(cr)),
  usedPct: fc.constantFrom(0, 0, 50, 100, 37),
  costBasis: fc.constantFrom(0n, 0n, 10_000_000n, 333_333_333n, 500_000_000n),
  expiresAt: fc.constantFrom(null, null, null, NOW - DAY, NOW, NOW + 1, NOW + DAY),
  effectiveAt: fc.constantFrom(NOW - 30 * DAY, NOW - 30 * DAY, NOW - 30 * DAY, NOW + HOUR),
  priority: fc.integer({ min: 0, max: 3 }),
  scope: fc.constantFrom(null, null, null, null, ["chat"], ["image.*"], ["embed"]),
});

const eventSpecArb = fc.record({
  customer: fc.nat(15),
  subject: fc.constantFrom(
    "none",
    "none",
    "none",
    "none",
    "member0",
    "member0",
    "member0",
    "member1",
    "member1",
    "agent",
    "stranger",
    "other",
  ),
  action: fc.constantFrom(0, 0, 0, 1, 2, 2, 3, 4),
  quantity: fc.oneof(
    fc.bigInt({ min: 0n, max: qn(25) }),
    fc.integer({ min: 0, max: 8 }).map(qn),
    fc.bigInt({ min: 0n, max: 10n }),
  ),
  time: fc.constantFrom(...TIME_OFFSETS),
  failed: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  env: fc.constantFrom(undefined, undefined, "test"),
  turbo: fc.boolean(),
  reportedCost: fc.option(fc.bigInt({ min: 0n, max: 10n ** 10n }), { nil: null, freq: 4 }),
});

const scenarioArb: fc.Arbitrary<Scenario> = fc
  .record({
    customers: fc.integer({ min: 1, max: 3 }),
    members: fc.array(fc.constantFrom(0, 1, 1, 2), { minLength: 3, maxLength: 3 }),
    policies: fc.array(
      fc.record({
        soft: fc.boolean(),
        floor: fc.oneof(fc.integer({ min: 0, max: 40 }).map(cr), fc.bigInt({ min: 0n, max: cr(40) })),
        owedPct: fc.constantFrom(0, 0, 50, 100),
      }),
      { minLength: 3, maxLength: 3 },
    ),
    grants: fc.array(grantSpecArb, { maxLength: 20 }),
    events: fc.array(eventSpecArb, { maxLength: 14 }),
    priorEmbed: fc.constantFrom(0n, qn(90), qn(99), qn(150)),
  })
  .map(({ customers, members, policies, grants, events, priorEmbed }) => {
    const wallets: UsageWallet[] = [];
    const subjects: [string, string, string][] = [];
    for (let c = 0; c < customers; c++) {
      const p = policies[c]!;
      wallets.push(
        wallet(
          `wal_c${c}`,
          `cus_${c}`,
          null,
          p.soft ? soft(p.floor) : HARD,
          p.soft ? (p.floor * BigInt(p.owedPct)) / 100n : 0n,
        ),
      );
      for (let m = 0; m < members[c]!; m++) {
        wallets.push(wallet(`wal_c${c}_m${m}`, `cus_${c}`, `sub_c${c}_m${m}`));
        subjects.push([`sub_c${c}_m${m}`, `cus_${c}`, "member"]);
      }
      subjects.push([`sub_c${c}_agent`, `cus_${c}`, "agent"]);
    }
    const grantList = grants.map((g, i) => {
      const w = wallets[g.wallet % wallets.length]!;
      const expiresAt = g.expiresAt !== null && g.expiresAt <= g.effectiveAt ? null : g.expiresAt;
      return makeGrant({
        id: `grt_${String(i).padStart(3, "0")}`,
        walletId: w.id,
        amount: g.amount,
        remaining: g.amount - (g.amount * BigInt(g.usedPct)) / 100n,
        costBasis: g.costBasis,
        // Two currencies, so that one event can draw paid credits in both.
        currency: g.costBasis > 0n ? (i % 3 === 0 ? "EUR" : "USD") : null,
        expiresAt,
        effectiveAt: g.effectiveAt,
        priority: g.priority,
        scope: g.scope,
      });
    });
    const usage = new Map<string, bigint>();
    for (let c = 0; c < customers; c++)
      usage.set(usageKey(`cus_${c}`, periodStart(NOW), "embed"), priorEmbed);
    const eventList = events.map((e, i): UsageEvent => {
      // Mostly a known customer; one draw in sixteen is an unknown one.
      const c = e.customer === 15 ? 9 : e.customer % customers;
      const subjectId =
        e.subject === "none"
          ? null
          : e.subject === "agent"
            ? `sub_c${c}_agent`
            : e.subject === "stranger"
              ? "sub_nobody"
              : e.subject === "other"
                ? `sub_c${(c + 1) % 3}_m0`
                : `sub_c${c}_m${e.subject === "member1" && members[c]! > 1 ? 1 : 0}`;
      const [action, quantity] = ACTIONS[e.action]!;
      return {
        id: `evt_${i}`,
        customerId: `cus_${c}`,
        subjectId,
        action,
        dimensions: { ...(e.env ? { env: e.env } : {}), ...(e.turbo ? { mode: "turbo" } : {}) },
        quantities: { [quantity]: quantity === "images" ? e.quantity / 5n : e.quantity },
        time: NOW + e.time,
        status: e.failed ? "failed" : "succeeded",
        runId: null,
        reportedCost: e.reportedCost,
      };
    });
    return {
      state: makeState({ wallets, grants: grantList, subjects, usage }),
      events: eventList,
    };
  });

const withoutTx = (o: UsageOutcome) => (o.kind === "accepted" ? { ...o, transactionId: null } : o);

/** The customer of an outcome's wallet. */
const customerOfTx = (p: UsagePlan, id: string | null) => p.transactions.find((t) => t.id === id)?.customerId;

/** Invariant 4 on a state: no grant below zero or above its amount, no wallet below its floor. */
function assertFloors(s: UsageState): void {
  for (const g of s.grants.values()) {
    assert.ok(g.remaining >= 0n, `grant ${g.id} went below zero`);
    assert.ok(g.remaining <= g.amount, `grant ${g.id} above its amount`);
  }
  for (const w of s.wallets.values()) {
    const grants = [...s.grants.values()]
      .filter((g) => g.walletId === w.id && g.status === "active")
      .reduce((sum, g) => sum + g.remaining, 0n);
    assert.ok(w.overdraft >= 0n, `wallet ${w.id} overdraft negative`);
    const floor = w.policy.mode === "soft_cap" ? w.policy.floor : 0n;
    assert.ok(grants - w.overdraft >= floor, `wallet ${w.id} below its floor`);
    if (w.memberId !== null) assert.equal(w.overdraft, 0n, "only a pool is overdrawn");
  }
}

const RUNS = 500;

describe("planUsage properties", () => {
  test("(a) every transaction balances; at most one usage transaction per customer; ids unique", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        const p = plan(state, events);
        for (const tx of p.transactions) {
          assert.ok(isBalanced(tx.entries), `${tx.kind} ${tx.id} does not balance`);
          assert.equal(tx.postedAt, NOW);
        }
        const usage = p.transactions.filter((t) => t.kind === "usage").map((t) => t.customerId);
        assert.equal(new Set(usage).size, usage.length);
        const ids = p.transactions.map((t) => t.id);
        assert.equal(new Set(ids).size, ids.length);
        const expiries = p.transactions.filter((t) => t.kind === "expire").map((t) => t.customerId);
        assert.equal(new Set(expiries).size, expiries.length);
        // Expiry is journaled before any usage.
        const firstUsage = p.transactions.findIndex((t) => t.kind === "usage");
        if (firstUsage >= 0) assert.ok(p.transactions.slice(firstUsage).every((t) => t.kind === "usage"));
        assert.equal(p.outcomes.length, events.length);
        for (const [i, o] of p.outcomes.entries()) assert.equal(o.event, events[i]);
      }),
      { numRuns: RUNS },
    );
  });

  test("(b) charges add up: per event, per draw, per customer transaction", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        const p = plan(state, events);
        const perTx = new Map<
          string,
          { total: bigint; drawn: bigint; overdraft: bigint; customer: string }
        >();
        for (const o of p.outcomes) {
          if (o.kind !== "accepted") continue;
          const credits = o.rating.credits;
          assert.ok(o.drawn >= 0n && o.overdraft >= 0n && o.unpaid >= 0n);
          assert.equal(
            o.draws.reduce((s, d) => s + d.amount, 0n),
            o.drawn,
          );
          assert.ok(o.draws.every((d) => d.amount > 0n));
          if (o.unpaid > 0n) {
            assert.equal(o.unpaid, credits, "unpaid is the whole charge");
            assert.equal(o.drawn + o.overdraft, 0n);
            assert.equal(o.reason, "insufficient_credits");
          } else {
            assert.equal(o.drawn + o.overdraft, credits);
          }
          // Revenue is the drawn credits times their cost basis, per currency (never added across
          // currencies), rounded once per currency; the first paid currency drawn is `revenue`.
          const basis = new Map<string, bigint>();
          for (const d of o.draws) {
            const g = state.grants.get(d.grantId)!;
            if (g.costBasis > 0n)
              basis.set(g.currency!, (basis.get(g.currency!) ?? 0n) + d.amount * g.costBasis);
          }
          const revenue = new Map([
            ...(o.revenueCurrency === null ? [] : [[o.revenueCurrency, o.revenue] as const]),
            ...o.extraRevenue.map((m) => [m.currency, m.amount] as const),
          ]);
          assert.deepEqual(
            revenue,
            new Map([...basis].map(([c, v]) => [c, divRound(v, 10n ** BigInt(SCALE))])),
          );
          assert.equal(revenue.size, 1 + o.extraRevenue.length - (o.revenueCurrency === null ? 1 : 0));
          if (o.revenueCurrency === null) assert.equal(o.revenue, 0n);
          const firstPaid = o.draws.find((d) => state.grants.get(d.grantId)!.costBasis > 0n);
          assert.equal(o.revenueCurrency, firstPaid ? state.grants.get(firstPaid.grantId)!.currency : null);
          // Draws come from the payer's chain: its own wallet, then its customer's pool.
          const pool = state.poolWallet.get(o.event.customerId)!;
          for (const d of o.draws) {
            assert.ok(d.walletId === o.walletId || d.walletId === pool);
            assert.equal(state.grants.get(d.grantId)!.walletId, d.walletId);
          }
          if (o.drawn + o.overdraft > 0n) {
            assert.notEqual(o.transactionId, null);
            assert.equal(customerOfTx(p, o.transactionId), o.event.customerId);
            const t = perTx.get(o.transactionId!) ?? {
              total: 0n,
              drawn: 0n,
              overdraft: 0n,
              customer: o.event.customerId,
            };
            perTx.set(o.transactionId!, {
              ...t,
              total: t.total + credits,
              drawn: t.drawn + o.drawn,
              overdraft: t.overdraft + o.overdraft,
            });
          } else {
            assert.equal(o.transactionId, null);
          }
        }
        const usageTxs = p.transactions.filter((t) => t.kind === "usage");
        assert.equal(usageTxs.length, perTx.size);
        for (const tx of usageTxs) {
          const sums = perTx.get(tx.id)!;
          let consumption = 0n;
          let grants = 0n;
          let over = 0n;
          for (const e of tx.entries) {
            if (e.account.kind === "system") {
              assert.equal(e.account.name, "consumption");
              consumption += e.amount;
            } else if (e.account.kind === "grant") grants += e.amount;
            else over += e.amount;
          }
          assert.equal(consumption, sums.total, "the consumption entry is the customer's total charge");
          assert.equal(-grants, sums.drawn);
          assert.equal(-over, sums.overdraft);
        }
        // The overdraft deltas are what the journal put on the overdraft accounts.
        const journalOverdraft = new Map<string, bigint>();
        for (const tx of usageTxs)
          for (const [w, d] of overdraftDeltas(tx.entries))
            journalOverdraft.set(w, (journalOverdraft.get(w) ?? 0n) - d);
        assert.deepEqual(new Map([...p.overdraftDeltas].filter(([, d]) => d !== 0n)), journalOverdraft);
      }),
      { numRuns: RUNS },
    );
  });

  test("(c) no grant goes below zero and no wallet below its floor (invariant 4)", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        assertFloors(state);
        const after = applyPlan(state, plan(state, events));
        assertFloors(after);
        // Expired grants hold nothing.
        for (const g of after.grants.values()) if (g.status === "expired") assert.equal(g.remaining, 0n);
        // A grant due to expire was not drawn: its only movement is the breakage.
        for (const g of state.grants.values()) {
          if (g.expiresAt !== null && g.expiresAt <= NOW)
            assert.equal(after.grants.get(g.id)!.status, "expired");
        }
      }),
      { numRuns: RUNS },
    );
  });

  test("(d) batching does not change charges: one plan equals event-by-event plans", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        const whole = plan(state, events);
        let s = state;
        const outcomes: UsageOutcome[] = [];
        // A first empty call expires what is due, as the whole batch does before drawing.
        const ids = counterIds();
        const first = planUsage({ now: NOW, newId: ids }, s, []);
        s = applyPlan(s, first);
        for (const e of events) {
          const one = planUsage({ now: NOW, newId: ids }, s, [e]);
          assert.deepEqual(one.expired, []);
          outcomes.push(...one.outcomes);
          s = applyPlan(s, one);
        }
        assert.deepEqual(outcomes.map(withoutTx), whole.outcomes.map(withoutTx));
        assert.deepEqual(stateSnapshot(s), stateSnapshot(applyPlan(state, whole)));
        // And without the separate expiry call, the first event's plan expires the same grants.
        const direct = events.length > 0 ? plan(state, events.slice(0, 1)) : plan(state, []);
        assert.deepEqual(direct.expired, whole.expired);
      }),
      { numRuns: RUNS },
    );
  });

  test("(e) failed or non-billable events never change a balance (invariant 9)", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        const p = plan(state, events);
        const zeroed = (o: UsageOutcome) =>
          o.kind === "accepted" && (o.reason === "failed" || (o.reason ?? "").startsWith("non_billable: "));
        const keep: UsageEvent[] = [];
        const keptOutcomes: UsageOutcome[] = [];
        p.outcomes.forEach((o, i) => {
          if (o.kind === "accepted" && o.event.status === "failed") assert.equal(o.reason, "failed");
          else if (o.kind === "accepted" && o.event.action === "chat" && o.event.dimensions.env === "test")
            assert.equal(o.reason, "non_billable: test traffic");
          if (zeroed(o)) {
            const a = o as Accepted;
            assert.equal(a.rating.credits, 0n);
            assert.equal(a.rating.billable, false);
            assert.deepEqual([a.drawn, a.overdraft, a.unpaid, a.revenue], [0n, 0n, 0n, 0n]);
            assert.deepEqual(a.draws, []);
            assert.equal(a.transactionId, null);
            assert.deepEqual(a.rating.lines, []);
          } else {
            keep.push(events[i]!);
            keptOutcomes.push(o);
          }
        });
        // Removing them changes nothing else: same outcomes, journal and counters.
        const q = plan(state, keep);
        assert.deepEqual(q.outcomes, keptOutcomes);
        assert.deepEqual(q.transactions, p.transactions);
        assert.deepEqual(q.expired, p.expired);
        assert.deepEqual([...q.overdraftDeltas], [...p.overdraftDeltas]);
        assert.deepEqual([...q.usageDeltas].sort(), [...p.usageDeltas].sort());
      }),
      { numRuns: RUNS },
    );
  });

  test("(f) determinism: same state, events, clock and ids give the identical plan; inputs untouched", () => {
    fc.assert(
      fc.property(scenarioArb, ({ state, events }) => {
        const before = stateSnapshot(state);
        const a = plan(state, events);
        const b = plan(state, events);
        assert.deepEqual(a, b);
        assert.deepEqual([...a.usageDeltas], [...b.usageDeltas], "maps in the same order too");
        assert.deepEqual([...a.overdraftDeltas], [...b.overdraftDeltas]);
        assert.deepEqual(stateSnapshot(state), before);
      }),
      { numRuns: RUNS },
    );
  });
});
