/**
 * Random timelines over the credit lifecycle, on PGlite and (when DATABASE_URL is set)
 * PostgreSQL: plans with random rollover, expiry and cancel rules; customers (some with a
 * member's wallet) subscribing, changing seats and plans, canceling; grants with random
 * expiries, scopes and priorities; debits, reversals, voids, extensions, gifts and code claims;
 * test-clock advances from an hour to two months; retries of a write under its idempotency
 * key, writes that crash before their commit; and restarts: the Store and everything built on
 * it are dropped and rebuilt on a database really closed and reopened (PGlite on a data folder;
 * a new PostgreSQL pool), cleanly, in the middle of a clock advance, or after a downtime with
 * due work pending that the new instance's scheduler catches up on.
 *
 * After every step the ledger is checked against invariants 1 to 4 and 7 (DESIGN.md) and
 * against a small reference model of the subscriptions: every transaction balances (1); no
 * journal row ever changes (2); balances equal grants and the journal (3); nothing goes below
 * zero (4); each period renews once, with the credits the model expects, each grant leaves
 * `active` once, rolls over once, by the policy as the model computes it (7); and every credit
 * is accounted for: a grant's amount is what remains plus what was consumed, expired, voided
 * or rolled, each by a journal transaction whose kind says why.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  addInterval,
  credits,
  type ExpiryPolicy,
  type Interval,
  periodAt,
  type Result,
  type RolloverPolicy,
  UNIT,
} from "@drawdown/core";
import fc from "fast-check";
import {
  createIdGenerator,
  Gifts,
  type PlanRecord,
  type Row,
  type SqlExecutor,
  Store,
  Subscriptions,
} from "../src/index.js";
import { backends, type RestartableDatabase, restartableDatabase } from "./support/backends.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** A month-end start: monthly periods clamp to Feb 28, Apr 30... and come back to the 31st. */
const T0 = Date.UTC(2027, 0, 31, 12);
/**
 * Timelines per backend. Each is a database scenario of up to 19 steps, each step checked in
 * full, so few runs cover a lot; a failure is reported unshrunk (shrinking timelines on a
 * database takes many minutes), with the seed and path that replay it.
 */
const RUNS = 16;

const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const msOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : ms(v));
const big = (v: unknown): bigint => BigInt(String(v));
const json = (v: unknown): string =>
  JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x)) ?? "null";

// ------------------------------------------------------------------------------------ scenarios

interface PlanSpec {
  readonly allotment: bigint;
  readonly perSeat: boolean;
  readonly rollover: RolloverPolicy;
  readonly expiry: ExpiryPolicy;
  readonly cancel: "forfeit" | "keep_until_period_end" | "keep";
}

type Op =
  | { kind: "advance"; hours: number }
  | { kind: "tick" }
  | { kind: "restart"; mode: "clean" | "mid-advance" | "downtime"; hours: number }
  | { kind: "retry" }
  | ({ abort: boolean } & (
      | { kind: "subscribe"; customer: number; plan: number; seats: number; startInHours: number }
      | { kind: "seats"; customer: number; seats: number }
      | { kind: "changePlan"; customer: number; plan: number }
      | { kind: "cancel"; customer: number }
      | {
          kind: "grant";
          customer: number;
          member: boolean;
          amount: bigint;
          expiresInHours: number | null;
          scope: number;
          priority: number;
          source: number;
        }
      | { kind: "debit"; customer: number; member: boolean; amount: bigint; action: number }
      | { kind: "reverse"; pick: number }
      | { kind: "void"; pick: number }
      | { kind: "extend"; pick: number; hours: number }
      | { kind: "gift"; customer: number; amount: bigint; expiresInHours: number | null }
      | { kind: "claim"; customer: number; code: number }
    ));

interface Scenario {
  readonly interval: Interval;
  readonly plans: PlanSpec[];
  /** Per customer: whether it has a member with a wallet of their own. */
  readonly members: boolean[];
  readonly ops: Op[];
}

const SCOPES: (readonly string[] | null)[] = [null, null, ["chat"], ["image.*"]];
const ACTIONS: (string | null)[] = [null, "chat", "image.gen"];
const SOURCES = [
  { source: "promo", costBasis: 0n, currency: null },
  { source: "purchase", costBasis: 2n * UNIT, currency: "USD" },
  { source: "top_up", costBasis: UNIT / 2n, currency: "USD" },
] as const;

/** Amounts in whole credits with an odd fraction now and then, so rounding is exercised. */
const amountArb = (max: number) =>
  fc
    .tuple(fc.integer({ min: 1, max }), fc.constantFrom(0n, 0n, 0n, 1n, 333_333_333n))
    .map(([n, frac]) => credits(BigInt(n)) + frac);

const rolloverArb: fc.Arbitrary<RolloverPolicy> = fc.oneof(
  fc.constant<RolloverPolicy>({ kind: "none" }),
  fc.constant<RolloverPolicy>({ kind: "full" }),
  fc.integer({ min: 1, max: 3 }).map((n): RolloverPolicy => ({ kind: "full", maxPeriods: n })),
  fc
    .tuple(
      fc.oneof(
        fc.integer({ min: 0, max: 60 }).map((n) => ({ absolute: credits(BigInt(n)) })),
        fc.integer({ min: 0, max: 100 }).map((n) => ({ percentOfAllotment: n })),
        fc.integer({ min: 0, max: 6 }).map((n) => ({ multipleOfAllotment: (BigInt(n) * UNIT) / 2n })),
      ),
      fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
    )
    .map(
      ([cap, maxPeriods]): RolloverPolicy =>
        maxPeriods === undefined ? { kind: "capped", cap } : { kind: "capped", cap, maxPeriods },
    ),
  fc
    .array(fc.integer({ min: 0, max: 100 }), { minLength: 1, maxLength: 4 })
    .map((s): RolloverPolicy => ({ kind: "declining", schedule: [...s].sort((a, b) => b - a) })),
);

const planArb: fc.Arbitrary<PlanSpec> = fc
  .record({
    allotment: fc.oneof(fc.constant(0n), amountArb(60), amountArb(60)),
    perSeat: fc.boolean(),
    rollover: rolloverArb,
    expiry: fc.oneof(
      fc.constant<ExpiryPolicy>({ kind: "period_end" }),
      fc.constant<ExpiryPolicy>({ kind: "period_end" }),
      fc.constant<ExpiryPolicy>({ kind: "never" }),
      fc.integer({ min: 1, max: 2 }).map((months): ExpiryPolicy => ({ kind: "rolling", months })),
    ),
    cancel: fc.constantFrom("forfeit" as const, "keep_until_period_end" as const, "keep" as const),
  })
  // Rollover works on credits that end with their period (validatePlan refuses the rest).
  .map((p) => (p.rollover.kind === "none" ? p : { ...p, expiry: { kind: "period_end" } }));

const abortArb = fc.integer({ min: 0, max: 11 }).map((n) => n === 0);
/** Customer 0 always subscribes first: it gets most of the traffic. */
const customerArb = fc.constantFrom(0, 0, 1, 2);
const hoursArb = fc.oneof(
  fc.integer({ min: 1, max: 48 }),
  fc.integer({ min: 2, max: 35 }).map((d) => d * 24 + 7),
  fc.integer({ min: 28, max: 62 }).map((d) => d * 24),
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: hoursArb.map((hours): Op => ({ kind: "advance", hours })) },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: "tick" }) },
  {
    weight: 2,
    arbitrary: fc
      .record({
        mode: fc.constantFrom("clean" as const, "mid-advance" as const, "downtime" as const),
        hours: hoursArb,
      })
      .map((r): Op => ({ kind: "restart", ...r })),
  },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: "retry" }) },
  {
    weight: 2,
    arbitrary: fc
      .record({
        customer: customerArb,
        plan: fc.integer({ min: 0, max: 2 }),
        seats: fc.integer({ min: 0, max: 4 }),
        startInHours: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 1, max: 72 })),
        abort: abortArb,
      })
      .map((r): Op => ({ kind: "subscribe", ...r })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ customer: customerArb, seats: fc.integer({ min: 0, max: 6 }), abort: abortArb })
      .map((r): Op => ({ kind: "seats", ...r })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ customer: customerArb, plan: fc.integer({ min: 0, max: 2 }), abort: abortArb })
      .map((r): Op => ({ kind: "changePlan", ...r })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ customer: customerArb, abort: abortArb })
      .map((r): Op => ({ kind: "cancel", ...r })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record({
        customer: customerArb,
        member: fc.boolean(),
        amount: amountArb(50),
        expiresInHours: fc.option(fc.integer({ min: 1, max: 60 * 24 }), { nil: null }),
        scope: fc.integer({ min: 0, max: SCOPES.length - 1 }),
        priority: fc.constantFrom(10, 50, 50, 90),
        source: fc.integer({ min: 0, max: SOURCES.length - 1 }),
        abort: abortArb,
      })
      .map((r): Op => ({ kind: "grant", ...r })),
  },
  {
    weight: 5,
    arbitrary: fc
      .record({
        customer: customerArb,
        member: fc.boolean(),
        amount: amountArb(15),
        action: fc.integer({ min: 0, max: ACTIONS.length - 1 }),
        abort: abortArb,
      })
      .map((r): Op => ({ kind: "debit", ...r })),
  },
  {
    weight: 1,
    arbitrary: fc.record({ pick: fc.nat(), abort: abortArb }).map((r): Op => ({ kind: "reverse", ...r })),
  },
  {
    weight: 1,
    arbitrary: fc.record({ pick: fc.nat(), abort: abortArb }).map((r): Op => ({ kind: "void", ...r })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ pick: fc.nat(), hours: fc.integer({ min: 1, max: 40 * 24 }), abort: abortArb })
      .map((r): Op => ({ kind: "extend", ...r })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({
        customer: customerArb,
        amount: amountArb(30),
        expiresInHours: fc.option(fc.integer({ min: 1, max: 30 * 24 }), { nil: null }),
        abort: abortArb,
      })
      .map((r): Op => ({ kind: "gift", ...r })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ customer: customerArb, code: fc.integer({ min: 0, max: 1 }), abort: abortArb })
      .map((r): Op => ({ kind: "claim", ...r })),
  },
);

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  interval: fc.constantFrom<Interval>(
    { unit: "month", count: 1 },
    { unit: "month", count: 1 },
    { unit: "week", count: 2 },
    { unit: "day", count: 10 },
  ),
  plans: fc.array(planArb, { minLength: 3, maxLength: 3 }),
  members: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
  // Every timeline starts with a subscription, so there is always something to renew.
  ops: fc
    .tuple(
      fc.record({ plan: fc.integer({ min: 0, max: 2 }), seats: fc.integer({ min: 1, max: 3 }) }),
      fc.array(opArb, { minLength: 8, maxLength: 18 }),
    )
    .map(([first, rest]): Op[] => [
      { kind: "subscribe", customer: 0, plan: first.plan, seats: first.seats, startInHours: 0, abort: false },
      ...rest,
    ]),
});

// ------------------------------------------------------------------------------------ the model

/** What the model expects of one renewal key. */
interface ExpectedRenewal {
  readonly index: number;
  readonly renewedAt: number;
  readonly closing: boolean;
  readonly planId: string;
  readonly amount: bigint;
  readonly grant: boolean;
}

/** What governs the rollover at one period end. */
interface ClosingContext {
  readonly plan: PlanRecord;
  readonly grantedSeats: number;
  readonly closing: boolean;
  readonly renewedAt: number;
  readonly nextPeriodEnd: number;
}

interface ModelSub {
  readonly id: string;
  readonly customer: number;
  readonly startedAt: number;
  plan: PlanRecord;
  pending: PlanRecord | null;
  seats: number;
  grantedSeats: number;
  status: "active" | "canceled";
  renewedThrough: number;
  nextRenewalAt: number | null;
  readonly expected: Map<string, ExpectedRenewal>;
  /** By period end. */
  readonly closings: Map<number, ClosingContext>;
}

const periodAllotment = (plan: PlanRecord, seats: number): bigint =>
  plan.perSeat ? plan.allotment * BigInt(seats) : plan.allotment;

/** When a plan's credits granted at `from` for a period ending at `to` expire. */
function expiryOf(policy: ExpiryPolicy, from: number, to: number): number | null {
  if (policy.kind === "period_end") return to;
  if (policy.kind === "never") return null;
  return addInterval(from, { unit: "month", count: policy.months });
}

/** The share of `amount` the rest of the period deserves, rounded down. */
const prorate = (amount: bigint, from: number, to: number, at: number): bigint =>
  (amount * BigInt(to - at)) / BigInt(to - from);

/**
 * Renews what is due by `until` as the store must: each period once, in order; a pending
 * downgrade takes effect at the first; a canceled subscription closes at its period end.
 * `at` is when the renewals happen: each at its own time under the test clock, or all at the
 * end of a downtime.
 */
function renewModel(sub: ModelSub, interval: Interval, until: number, at: "due" | number): void {
  while (sub.nextRenewalAt !== null && sub.nextRenewalAt <= until) {
    const renewedAt = at === "due" ? sub.nextRenewalAt : at;
    const index = sub.renewedThrough + 1;
    const period = periodAt(sub.startedAt, interval, index);
    assert.equal(period.from, sub.nextRenewalAt, "the model's next renewal is its period's start");
    const closing = sub.status === "canceled";
    if (index > 0) {
      sub.closings.set(period.from, {
        plan: sub.plan,
        grantedSeats: sub.grantedSeats,
        closing,
        renewedAt,
        nextPeriodEnd: period.to,
      });
    }
    if (closing) {
      sub.expected.set(`close:${sub.id}`, {
        index,
        renewedAt,
        closing,
        planId: sub.plan.id,
        amount: 0n,
        grant: false,
      });
      sub.nextRenewalAt = null;
      return;
    }
    const next = sub.pending ?? sub.plan;
    const amount = periodAllotment(next, sub.seats);
    const expiresAt = expiryOf(next.expiry, period.from, period.to);
    sub.expected.set(`renewal:${sub.id}:${index}`, {
      index,
      renewedAt,
      closing,
      planId: next.id,
      amount,
      grant: amount > 0n && !(expiresAt !== null && expiresAt <= renewedAt),
    });
    sub.renewedThrough = index;
    sub.grantedSeats = sub.seats;
    sub.plan = next;
    sub.pending = null;
    sub.nextRenewalAt = period.to;
  }
}

/**
 * The reference rollover (DESIGN.md, "Rollover"): per candidate (generation, then id), what its
 * policy lets it carry, bounded in total by the cap; nothing when closing or when the carried
 * credits would expire on arrival.
 */
function expectedCarry(
  policy: RolloverPolicy,
  base: bigint,
  candidates: { id: string; generation: number; remaining: bigint }[],
  dropAll: boolean,
): Map<string, bigint> {
  const out = new Map<string, bigint>();
  let capLeft: bigint | null = null;
  if (policy.kind === "capped") {
    const cap = policy.cap;
    capLeft =
      "absolute" in cap
        ? cap.absolute
        : "percentOfAllotment" in cap
          ? (base * BigInt(cap.percentOfAllotment)) / 100n
          : (base * cap.multipleOfAllotment) / UNIT;
  }
  const sorted = [...candidates].sort((a, b) =>
    a.generation !== b.generation ? a.generation - b.generation : a.id < b.id ? -1 : 1,
  );
  for (const c of sorted) {
    let carry = 0n;
    if (policy.kind === "full" || policy.kind === "capped")
      carry = policy.maxPeriods !== undefined && c.generation >= policy.maxPeriods ? 0n : c.remaining;
    else if (policy.kind === "declining")
      carry = (c.remaining * BigInt(policy.schedule[c.generation] ?? 0)) / 100n;
    if (capLeft !== null) {
      if (carry > capLeft) carry = capLeft;
      capLeft -= carry;
    }
    out.set(c.id, dropAll ? 0n : carry);
  }
  return out;
}

// ------------------------------------------------------------------------------------ the run

/** One "process": a store and everything built on it. */
interface Instance {
  readonly store: Store;
  readonly subs: Subscriptions;
  readonly gifts: Gifts;
}

/**
 * The processes' own clock, for ids and live tenants (the timelines' test tenant has its test
 * clock). It ticks a millisecond per reading, across restarts, so ids sort by creation as
 * they do in production (two changes of one grant at the same tenant time order by id).
 */
let processClock = Date.UTC(2026, 0, 1);
const clock = () => processClock++;

function instance(database: RestartableDatabase): Instance {
  const store = new Store(database.db, { clock, newId: createIdGenerator(clock) });
  return { store, subs: new Subscriptions(store), gifts: new Gifts(store) };
}

class OpFailed extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}
class Crashed extends Error {}

type Outcome<T> = { kind: "ok"; value: T } | { kind: "failed"; code: string } | { kind: "crashed" };

interface GrantRow {
  id: string;
  walletId: string;
  amount: bigint;
  remaining: bigint;
  source: string;
  effectiveAt: number;
  expiresAt: number | null;
  status: string;
  statusAt: number | null;
  priority: number;
  scope: string[] | null;
  metadata: Record<string, string>;
}

const toGrantRow = (r: Row): GrantRow => ({
  id: String(r.id),
  walletId: String(r.wallet_id),
  amount: big(r.amount),
  remaining: big(r.remaining),
  source: String(r.source),
  effectiveAt: ms(r.effective_at),
  expiresAt: msOrNull(r.expires_at),
  status: String(r.status),
  statusAt: msOrNull(r.status_at),
  priority: Number(r.priority),
  scope: (r.scope as string[] | null) ?? null,
  metadata: (typeof r.metadata === "string" ? JSON.parse(r.metadata) : r.metadata) as Record<string, string>,
});

const admits = (scope: string[] | null, action: string | null): boolean =>
  scope === null ||
  (action !== null &&
    scope.some((p) => (p.endsWith(".*") ? action.startsWith(p.slice(0, -1)) : p === action)));

/** One timeline on one tenant of a database that restarts. */
class Timeline {
  inst: Instance;
  tenantId = "";
  secret = "";
  now = T0;
  plans: PlanRecord[] = [];
  customers: { id: string; pool: string; member: string | null }[] = [];
  codes: { code: string; maxUses: number; endsAt: number | null; claimed: Set<number> }[] = [];
  subs: ModelSub[] = [];
  /** Windows `(from, to]` in which due effects happened late, at `to` (after a downtime). */
  catchUps: [number, number][] = [];
  /** Every transaction seen so far, as text: invariant 2 says it never changes. */
  readonly journal = new Map<string, string>();
  maxSeq = -1n;
  readonly changes = new Map<string, string>();
  /** A grant that left `active` stays as it left. */
  readonly exits = new Map<string, string>();
  readonly checkedRollovers = new Set<string>();
  lastWrite: { key: string; fingerprint: string; outcome: unknown } | null = null;
  writes = 0;

  constructor(
    readonly database: RestartableDatabase,
    readonly scenario: Scenario,
  ) {
    this.inst = instance(database);
  }

  get store(): Store {
    return this.inst.store;
  }

  async setup(): Promise<void> {
    const { store } = this;
    const tenant = await store.createTenant("Timeline", "test");
    this.tenantId = tenant.id;
    const key = await store.createApiKey(tenant.id, { kind: "secret", name: "timeline" });
    assert.ok(key.ok);
    this.secret = key.value.secret;
    assert.ok((await store.advanceClock(tenant.id, T0)).ok);
    for (const [i, spec] of this.scenario.plans.entries()) {
      const plan = await store.db.transaction((tx) =>
        this.inst.subs.createPlan(tx, this.tenantId, {
          name: `plan ${i}`,
          baseFee: { amount: 20n * UNIT, currency: "USD" },
          interval: this.scenario.interval,
          allotment: spec.allotment,
          perSeat: spec.perSeat,
          rollover: spec.rollover,
          expiry: spec.expiry,
          cancel: { onCancel: spec.cancel },
        }),
      );
      assert.ok(plan.ok, plan.ok ? "" : plan.error.message);
      this.plans.push(plan.value);
    }
    for (const member of this.scenario.members) {
      const c = await store.db.transaction((tx) =>
        store.createCustomer(tx, this.tenantId, { kind: "organization" }),
      );
      assert.ok(c.ok);
      let memberWallet: string | null = null;
      if (member) {
        const s = await store.db.transaction((tx) =>
          store.createSubject(tx, this.tenantId, { customerId: c.value.id, kind: "member" }),
        );
        assert.ok(s.ok);
        const w = await store.db.transaction((tx) =>
          store.createMemberWallet(tx, this.tenantId, c.value.id, s.value.id),
        );
        assert.ok(w.ok);
        memberWallet = w.value.id;
      }
      this.customers.push({ id: c.value.id, pool: c.value.walletId, member: memberWallet });
    }
    for (const spec of [
      { code: "ONCE-ONLY", maxUses: 1, endsAt: null, scope: null, expiresInDays: null },
      { code: "TWO-USES", maxUses: 2, endsAt: T0 + 20 * DAY, scope: ["chat"], expiresInDays: 10 },
    ]) {
      const created = await store.db.transaction((tx) =>
        this.inst.gifts.createCode(tx, this.tenantId, { ...spec, amount: credits(7n) }),
      );
      assert.ok(created.ok);
      this.codes.push({ code: spec.code, maxUses: spec.maxUses, endsAt: spec.endsAt, claimed: new Set() });
    }
    await this.check(true);
  }

  /**
   * A write as the server makes one: one transaction under an idempotency key, rolled back on
   * a business failure (or, for `crash`, after the work and before the commit).
   */
  async write<T>(
    fingerprint: string,
    crash: boolean,
    fn: (tx: SqlExecutor) => Promise<Result<T>>,
  ): Promise<Outcome<T>> {
    const key = `w${this.writes++}`;
    let value: T | undefined;
    try {
      const r = await this.store.idempotent(this.tenantId, key, fingerprint, async (tx) => {
        const result = await fn(tx);
        if (!result.ok) throw new OpFailed(result.error.code);
        if (crash) throw new Crashed();
        value = result.value;
        return JSON.parse(json(result.value)) as unknown;
      });
      if (r.kind !== "fresh") assert.fail(`a new key runs its write, got ${r.kind}`);
      this.lastWrite = { key, fingerprint, outcome: r.outcome };
      return { kind: "ok", value: value as T };
    } catch (error) {
      if (error instanceof OpFailed) return { kind: "failed", code: error.code };
      if (error instanceof Crashed) return { kind: "crashed" };
      throw error;
    }
  }

  async grants(): Promise<GrantRow[]> {
    const { rows } = await this.store.db.query("SELECT * FROM grants WHERE tenant_id = $1 ORDER BY id", [
      this.tenantId,
    ]);
    return rows.map(toGrantRow);
  }

  /** Everything of the tenant, as text (one query), to prove a step changed nothing. */
  async snapshot(): Promise<string> {
    const list = (columns: string, table: string, order: string, tenantColumn = "tenant_id") =>
      `(SELECT json_agg(json_build_array(${columns}) ORDER BY ${order}) FROM ${table} WHERE ${tenantColumn} = $1)`;
    const { rows } = await this.store.db.query<{ s: string }>(
      `SELECT json_build_array(
         ${list("id, balance::text, overdraft::text", "wallets", "id")},
         ${list("id, amount::text, remaining::text, status, status_at, expires_at, metadata", "grants", "id")},
         ${list("id, seq::text", "journal_transactions", "seq")},
         (SELECT count(*) FROM journal_entries WHERE tenant_id = $1),
         ${list("id", "grant_changes", "id")},
         ${list("id, plan_id, pending_plan_id, seats, granted_seats, status, renewed_through, next_renewal_at", "subscriptions", "id")},
         ${list("key", "subscription_renewals", "key")},
         ${list("id, uses", "gift_codes", "id")},
         ${list("code_id, customer_id", "gift_claims", "code_id, customer_id")},
         ${list("key, outcome", "idempotency_keys", "key")},
         ${list("clock_at", "tenants", "id", "id")})::text AS s`,
      [this.tenantId],
    );
    return rows[0]!.s;
  }

  activeSub(customer: number): ModelSub | undefined {
    return this.subs.find((s) => s.customer === customer && s.status === "active");
  }

  // ---------------------------------------------------------------------------- steps

  async step(op: Op): Promise<void> {
    switch (op.kind) {
      case "advance": {
        const to = this.now + op.hours * HOUR;
        const r = await this.store.advanceClock(this.tenantId, to);
        assert.ok(r.ok);
        this.advanceModel(to, "due");
        return this.check(true);
      }
      case "tick": {
        // The scheduler of a live process: nothing is due that the test clock has not run.
        const before = await this.snapshot();
        await this.store.runDue(null);
        assert.equal(await this.snapshot(), before, "a scheduler tick finds nothing due");
        return this.check(true);
      }
      case "retry":
        return this.retry();
      case "restart":
        return this.restart(op.mode, op.hours);
      default:
        return this.writeStep(op);
    }
  }

  advanceModel(to: number, at: "due" | number): void {
    for (const sub of this.subs) renewModel(sub, this.scenario.interval, to, at);
    this.now = to;
  }

  /** The same key again: the first outcome, nothing run; another request under it: a conflict. */
  async retry(): Promise<void> {
    const last = this.lastWrite;
    if (!last) return;
    const before = await this.snapshot();
    const again = await this.store.idempotent(this.tenantId, last.key, last.fingerprint, async () =>
      assert.fail("a replay runs nothing"),
    );
    assert.deepEqual(again, { kind: "replayed", outcome: last.outcome });
    const other = await this.store.idempotent(this.tenantId, last.key, `${last.fingerprint}!`, async () =>
      assert.fail("a conflict runs nothing"),
    );
    assert.deepEqual(other, { kind: "conflict" });
    assert.equal(await this.snapshot(), before, "a retry changes nothing");
  }

  /**
   * Drops this process and starts another on the same data. `mid-advance`: the clock had
   * reached the next due time when the process died, before that time's effects ran; the new
   * process retries the advance. `downtime`: time moved on while nothing ran; the new
   * process's scheduler catches up.
   */
  async restart(mode: "clean" | "mid-advance" | "downtime", hours: number): Promise<void> {
    const to = this.now + hours * HOUR;
    if (mode === "mid-advance") {
      const { rows } = await this.store.db.query<{ at: unknown }>(
        `SELECT least(
           (SELECT min(expires_at) FROM grants WHERE tenant_id = $1 AND status = 'active' AND expires_at <= $2
              AND (metadata->>'drawdown_expiry') IS DISTINCT FROM 'rollover'),
           (SELECT min(next_renewal_at) FROM subscriptions WHERE tenant_id = $1 AND next_renewal_at <= $2)) AS at`,
        [this.tenantId, new Date(to).toISOString()],
      );
      const at = msOrNull(rows[0]?.at);
      if (at !== null)
        await this.store.db.query("UPDATE tenants SET clock_at = $2 WHERE id = $1", [
          this.tenantId,
          new Date(at).toISOString(),
        ]);
    } else if (mode === "downtime") {
      await this.store.db.query("UPDATE tenants SET clock_at = $2 WHERE id = $1", [
        this.tenantId,
        new Date(to).toISOString(),
      ]);
    }
    const before = await this.snapshot();
    await this.database.restart();
    this.inst = instance(this.database);
    assert.equal(await this.snapshot(), before, "a restart loses nothing");
    // The first request of the tenant authenticates its key, which tells the instance its clock.
    assert.ok(await this.store.authenticate(this.secret));
    if (mode === "clean") return this.check(true);
    // Due work is pending: everything else still holds.
    await this.check(false);
    if (mode === "mid-advance") {
      assert.ok((await this.store.advanceClock(this.tenantId, to)).ok);
      this.advanceModel(to, "due");
    } else {
      await this.store.runDue(null);
      this.catchUps.push([this.now, to]);
      this.advanceModel(to, to);
    }
    return this.check(true);
  }

  async writeStep(op: Extract<Op, { abort: boolean }>): Promise<void> {
    const before = await this.snapshot();
    const grantsBefore = await this.grants();
    const { store } = this;
    const { subs, gifts } = this.inst;
    const t = this.tenantId;
    const customer = "customer" in op ? this.customers[op.customer]! : null;
    /** "ok" or the failure codes allowed, from the state before the step. */
    let expect: "ok" | string[] = "ok";
    let outcome: Outcome<unknown>;
    let after: (value: unknown) => Promise<void> = async () => undefined;
    const fp = json(op);

    switch (op.kind) {
      case "subscribe": {
        const startAt = this.now + op.startInHours * HOUR;
        const plan = this.plans[op.plan]!;
        if (this.activeSub(op.customer)) expect = ["already_exists"];
        outcome = await this.write(fp, op.abort, (tx) =>
          subs.subscribe(tx, t, { customerId: customer!.id, planId: plan.id, seats: op.seats, startAt }),
        );
        after = async (value) => {
          const sub: ModelSub = {
            id: (value as { id: string }).id,
            customer: op.customer,
            startedAt: startAt,
            plan,
            pending: null,
            seats: op.seats,
            grantedSeats: 0,
            status: "active",
            renewedThrough: -1,
            nextRenewalAt: startAt,
            expected: new Map(),
            closings: new Map(),
          };
          this.subs.push(sub);
          renewModel(sub, this.scenario.interval, this.now, this.now);
        };
        break;
      }
      case "seats": {
        const sub = this.activeSub(op.customer);
        if (!sub) return;
        const started = sub.renewedThrough >= 0;
        if (!started) expect = ["invalid_argument"];
        outcome = await this.write(fp, op.abort, (tx) => subs.changeSeats(tx, t, sub.id, op.seats));
        after = async () => {
          const period = periodAt(sub.startedAt, this.scenario.interval, sub.renewedThrough);
          const added = Math.max(0, op.seats - sub.grantedSeats);
          const amount = sub.plan.perSeat
            ? prorate(sub.plan.allotment * BigInt(added), period.from, period.to, this.now)
            : 0n;
          await this.expectNewPlanGrant(grantsBefore, sub, "seats_added", amount, period.to);
          sub.seats = op.seats;
          sub.grantedSeats = Math.max(sub.grantedSeats, op.seats);
        };
        break;
      }
      case "changePlan": {
        const sub = this.activeSub(op.customer);
        if (!sub) return;
        const to = this.plans[op.plan]!;
        const started = sub.renewedThrough >= 0;
        const withdraw = to.id === sub.plan.id && sub.pending !== null;
        if (to.id === sub.plan.id && !withdraw) expect = ["invalid_argument"];
        const upgrade =
          started &&
          !withdraw &&
          to.id !== sub.plan.id &&
          periodAllotment(to, sub.grantedSeats) > periodAllotment(sub.plan, sub.grantedSeats);
        outcome = await this.write(fp, op.abort, (tx) => subs.changePlan(tx, t, sub.id, to.id));
        after = async () => {
          if (upgrade) {
            const period = periodAt(sub.startedAt, this.scenario.interval, sub.renewedThrough);
            const amount = prorate(
              periodAllotment(to, sub.grantedSeats) - periodAllotment(sub.plan, sub.grantedSeats),
              period.from,
              period.to,
              this.now,
            );
            await this.expectNewPlanGrant(grantsBefore, sub, "upgrade", amount, period.to, to);
          } else await this.expectNewPlanGrant(grantsBefore, sub, "upgrade", 0n, 0);
          if (withdraw) sub.pending = null;
          else if (!started || upgrade) {
            sub.plan = to;
            sub.pending = null;
          } else sub.pending = to;
        };
        break;
      }
      case "cancel": {
        const sub = this.activeSub(op.customer);
        if (!sub) return;
        outcome = await this.write(fp, op.abort, (tx) => subs.cancel(tx, t, sub.id));
        after = async () => {
          sub.status = "canceled";
          sub.pending = null;
          const own = (await this.grants()).filter((g) => g.metadata.subscription_id === sub.id);
          const ownBefore = new Map(grantsBefore.map((g) => [g.id, g]));
          for (const g of own) {
            const was = ownBefore.get(g.id)!;
            if (was.status !== "active") continue;
            if (sub.plan.cancel.onCancel === "forfeit") assert.equal(g.status, "voided", "forfeit voids");
            else if (sub.plan.cancel.onCancel === "keep_until_period_end" && sub.renewedThrough >= 0) {
              const end: number = sub.nextRenewalAt!;
              assert.equal(g.expiresAt, was.expiresAt === null || was.expiresAt > end ? end : was.expiresAt);
            } else assert.equal(g.expiresAt, was.expiresAt, "keep leaves expiries");
          }
        };
        break;
      }
      case "grant": {
        const walletId = op.member && customer!.member ? customer!.member : customer!.pool;
        const src = SOURCES[op.source]!;
        outcome = await this.write(fp, op.abort, (tx) =>
          store.createGrant(tx, t, {
            walletId,
            amount: op.amount,
            source: src.source,
            costBasis: src.costBasis,
            currency: src.currency,
            expiresAt: op.expiresInHours === null ? null : this.now + op.expiresInHours * HOUR,
            priority: op.priority,
            scope: SCOPES[op.scope] ?? null,
          }),
        );
        break;
      }
      case "debit": {
        const member = op.member && customer!.member ? customer!.member : null;
        const wallets = member ? [member, customer!.pool] : [customer!.pool];
        const action = ACTIONS[op.action] ?? null;
        const eligible = grantsBefore.filter(
          (g) =>
            wallets.includes(g.walletId) &&
            g.status === "active" &&
            g.remaining > 0n &&
            g.effectiveAt <= this.now &&
            (g.expiresAt === null || this.now < g.expiresAt) &&
            admits(g.scope, action),
        );
        const available = eligible.reduce((a, g) => a + g.remaining, 0n);
        // The floor is zero (invariant 4): what the eligible grants cannot cover is refused.
        if (op.amount > available) expect = ["insufficient_credits"];
        outcome = await this.write(fp, op.abort, (tx) =>
          store.debitWallet(tx, t, wallets[0]!, { amount: op.amount, action, kind: "debit" }),
        );
        after = async (value) => {
          const tx = value as { entries: { account: { kind: string; grantId?: string }; amount: bigint }[] };
          let drawn = 0n;
          for (const e of tx.entries) {
            if (e.account.kind !== "grant") continue;
            const g = eligible.find((x) => x.id === e.account.grantId);
            assert.ok(g, "a debit draws eligible grants only");
            assert.ok(-e.amount > 0n && -e.amount <= g.remaining);
            drawn -= e.amount;
          }
          assert.equal(drawn, op.amount);
        };
        break;
      }
      case "reverse": {
        const { rows } = await store.db.query(
          `SELECT t.id, EXISTS (SELECT 1 FROM journal_transactions r WHERE r.tenant_id = t.tenant_id AND r.reverses_id = t.id) AS reversed
           FROM journal_transactions t WHERE t.tenant_id = $1 AND t.kind = 'debit' ORDER BY t.seq`,
          [t],
        );
        if (rows.length === 0) return;
        const target = rows[op.pick % rows.length]!;
        const { rows: drawn } = await store.db.query<{ grant_id: string }>(
          "SELECT grant_id FROM journal_entries WHERE tenant_id = $1 AND tx_id = $2 AND grant_id IS NOT NULL",
          [t, target.id],
        );
        const usable = drawn.every((d) => {
          const g = grantsBefore.find((x) => x.id === d.grant_id)!;
          return g.status === "active" && (g.expiresAt === null || g.expiresAt > this.now);
        });
        if (target.reversed === true) expect = ["transaction_already_reversed"];
        else if (!usable) expect = ["grant_expired", "grant_inactive"];
        outcome = await this.write(fp, op.abort, (tx) =>
          store.reverseTransaction(tx, t, String(target.id), "customer complaint"),
        );
        break;
      }
      case "void":
      case "extend": {
        if (grantsBefore.length === 0) return;
        const g = grantsBefore[op.pick % grantsBefore.length]!;
        const active = g.status === "active" && (g.expiresAt === null || g.expiresAt > this.now);
        if (!active) expect = ["grant_expired", "grant_inactive"];
        if (op.kind === "void") {
          outcome = await this.write(fp, op.abort, (tx) => store.voidGrant(tx, t, g.id, "timeline void"));
        } else {
          if (active && g.expiresAt === null) expect = ["expiry_not_extendable"];
          const to = (g.expiresAt ?? this.now) + op.hours * HOUR;
          outcome = await this.write(fp, op.abort, (tx) =>
            store.extendGrantExpiry(tx, t, g.id, to, "goodwill"),
          );
        }
        break;
      }
      case "gift": {
        outcome = await this.write(fp, op.abort, (tx) =>
          gifts.give(tx, t, customer!.id, {
            amount: op.amount,
            expiresAt: op.expiresInHours === null ? null : this.now + op.expiresInHours * HOUR,
            reason: "timeline gift",
          }),
        );
        break;
      }
      case "claim": {
        const code = this.codes[op.code]!;
        if (code.endsAt !== null && this.now >= code.endsAt) expect = ["gift_code_ended"];
        else if (code.claimed.has(op.customer)) expect = ["already_exists"];
        else if (code.claimed.size >= code.maxUses) expect = ["gift_code_exhausted"];
        outcome = await this.write(fp, op.abort, (tx) => gifts.claim(tx, t, code.code, customer!.id));
        after = async () => {
          code.claimed.add(op.customer);
        };
        break;
      }
    }

    const label = `${op.kind} at ${new Date(this.now).toISOString()}`;
    if (outcome.kind === "ok") {
      assert.equal(expect, "ok", `${label}: expected a failure (${String(expect)}), it succeeded`);
      await after(outcome.value);
    } else {
      if (outcome.kind === "failed") {
        assert.ok(
          expect !== "ok" && expect.includes(outcome.code),
          `${label}: failed with ${outcome.code}, expected ${String(expect)}`,
        );
      }
      // A refused write, or one that crashed before its commit, leaves everything as it was.
      assert.equal(await this.snapshot(), before, `${label}: ${outcome.kind} changed something`);
    }
    await this.check(true);
  }

  /** The plan grant a seat change or an upgrade made: one, of the prorated amount, or none. */
  async expectNewPlanGrant(
    before: GrantRow[],
    sub: ModelSub,
    reason: "seats_added" | "upgrade",
    amount: bigint,
    periodEnd: number,
    plan: PlanRecord = sub.plan,
  ): Promise<void> {
    const known = new Set(before.map((g) => g.id));
    const fresh = (await this.grants()).filter((g) => !known.has(g.id));
    if (amount === 0n) {
      assert.deepEqual(fresh, [], `${reason}: nothing to grant`);
      return;
    }
    assert.equal(fresh.length, 1, `${reason}: one grant`);
    const g = fresh[0]!;
    assert.equal(g.amount, amount, `${reason}: prorated amount`);
    assert.equal(g.source, "plan");
    assert.equal(g.metadata.lifecycle, reason);
    assert.equal(g.metadata.subscription_id, sub.id);
    assert.equal(g.metadata.plan_id, plan.id);
    assert.equal(g.effectiveAt, this.now);
    assert.equal(g.expiresAt, expiryOf(plan.expiry, this.now, periodEnd));
  }

  // ---------------------------------------------------------------------------- the checks

  /**
   * Invariants 1 to 4 and 7 and the conservation of credits, on the tenant's rows; with
   * `inSync`, also the model's renewals and that nothing due is left undone.
   */
  async check(inSync: boolean): Promise<void> {
    const { store } = this;
    const t = this.tenantId;
    const q = async (sql: string) => (await store.db.query(sql, [t])).rows;
    const txRows = await q(
      "SELECT id, seq::text AS seq, kind, customer_id, reason, action, reverses_id, posted_at FROM journal_transactions WHERE tenant_id = $1 ORDER BY seq",
    );
    const entryRows = await q(
      "SELECT tx_id, idx, account, wallet_id, grant_id, unit, amount::text AS amount FROM journal_entries WHERE tenant_id = $1 ORDER BY tx_id, idx",
    );
    const grants = await this.grants();
    const grantById = new Map(grants.map((g) => [g.id, g]));
    const wallets = await q(
      "SELECT id, balance::text AS balance, overdraft::text AS overdraft FROM wallets WHERE tenant_id = $1",
    );

    // Reconcile first: it is the product's own proof (invariants 1 and 3).
    assert.deepEqual((await store.reconcile(t)).differences, [], "reconcile finds no difference");

    type E = {
      account: string;
      walletId: string | null;
      grantId: string | null;
      unit: string;
      amount: bigint;
    };
    const entries = new Map<string, E[]>();
    for (const e of entryRows) {
      const list = entries.get(String(e.tx_id)) ?? [];
      list.push({
        account: String(e.account),
        walletId: e.wallet_id === null ? null : String(e.wallet_id),
        grantId: e.grant_id === null ? null : String(e.grant_id),
        unit: String(e.unit),
        amount: big(e.amount),
      });
      entries.set(String(e.tx_id), list);
    }
    const txs = txRows.map((r) => ({
      id: String(r.id),
      seq: BigInt(String(r.seq)),
      kind: String(r.kind),
      reason: r.reason === null ? null : String(r.reason),
      reversesId: r.reverses_id === null ? null : String(r.reverses_id),
      postedAt: ms(r.posted_at),
      entries: entries.get(String(r.id)) ?? [],
      text: json({ ...r, posted_at: ms(r.posted_at), entries: entries.get(String(r.id)) ?? [] }),
    }));
    const txById = new Map(txs.map((x) => [x.id, x]));

    // Invariant 2: every transaction seen before is still there, unchanged; new ones come after.
    for (const [id, text] of this.journal)
      assert.equal(txById.get(id)?.text, text, `transaction ${id} changed`);
    let maxSeq = this.maxSeq;
    for (const x of txs) {
      if (this.journal.has(x.id)) continue;
      assert.ok(x.seq > this.maxSeq, `new transaction ${x.id} is appended after the earlier ones`);
      this.journal.set(x.id, x.text);
      if (x.seq > maxSeq) maxSeq = x.seq;
    }
    this.maxSeq = maxSeq;
    const changes = await q(
      "SELECT id, grant_id, kind, from_expires_at, to_expires_at, reason, at FROM grant_changes WHERE tenant_id = $1 ORDER BY at, id",
    );
    const changeText = new Map(changes.map((c) => [String(c.id), json(c)]));
    for (const [id, text] of this.changes)
      assert.equal(changeText.get(id), text, `grant change ${id} changed`);
    for (const [id, text] of changeText) this.changes.set(id, text);

    // Per grant: how its credits came and went, by the kind of transaction that moved them.
    const flow = new Map(
      grants.map((g) => [
        g.id,
        { created: [] as string[], consumed: 0n, expired: 0n, voided: 0n, rolled: 0n, exits: [] as string[] },
      ]),
    );
    const system = new Map<string, bigint>();
    for (const x of txs) {
      // Invariant 1: at least two entries, summing to zero per unit.
      assert.ok(x.entries.length >= 2, `${x.id} has two entries or more`);
      const sums = new Map<string, bigint>();
      for (const e of x.entries) sums.set(e.unit, (sums.get(e.unit) ?? 0n) + e.amount);
      for (const [unit, s] of sums) assert.equal(s, 0n, `${x.kind} ${x.id} balances in ${unit}`);
      const accounts = new Set(x.entries.filter((e) => e.account !== "grant").map((e) => e.account));
      const allowed: Record<string, string[]> = {
        grant: ["issuance"],
        debit: ["consumption"],
        void: ["voided"],
        expire: ["breakage"],
        rollover: ["breakage"],
        reversal: ["consumption"],
      };
      assert.ok(allowed[x.kind], `a ${x.kind} transaction is none this timeline makes`);
      for (const a of accounts) assert.ok(allowed[x.kind]!.includes(a), `${x.kind} moves credits to ${a}`);
      for (const a of accounts)
        system.set(
          a,
          (system.get(a) ?? 0n) + x.entries.filter((e) => e.account === a).reduce((s, e) => s + e.amount, 0n),
        );
      if (["void", "rollover", "reversal"].includes(x.kind)) assert.ok(x.reason, `a ${x.kind} says why`);
      if (x.kind === "reversal") {
        const original = txById.get(x.reversesId ?? "");
        assert.ok(original && original.kind === "debit", "a reversal undoes a debit");
        assert.deepEqual(
          x.entries.map((e) => ({ ...e, amount: -e.amount })),
          original.entries,
          "a reversal negates its debit",
        );
      }
      for (const e of x.entries) {
        if (e.account !== "grant") continue;
        const f = flow.get(e.grantId!);
        assert.ok(f, `entry on unknown grant ${e.grantId}`);
        if (e.amount > 0n && x.kind !== "reversal") {
          f.created.push(x.kind);
          assert.equal(e.amount, grantById.get(e.grantId!)!.amount, "a grant is created with its amount");
          continue;
        }
        switch (x.kind) {
          case "debit":
          case "reversal":
            f.consumed -= e.amount;
            break;
          case "expire":
            f.expired -= e.amount;
            f.exits.push(x.kind);
            break;
          case "void":
            f.voided -= e.amount;
            f.exits.push(x.kind);
            break;
          case "rollover":
            f.rolled -= e.amount;
            f.exits.push(x.kind);
            break;
          default:
            assert.fail(`${x.kind} takes from grant ${e.grantId}`);
        }
      }
    }

    const now = this.now;
    for (const g of grants) {
      const f = flow.get(g.id)!;
      // Created once, by a grant transaction (or, for carried credits, by a rollover).
      assert.deepEqual(
        f.created,
        [g.source === "rollover" ? "rollover" : "grant"],
        `grant ${g.id} created once`,
      );
      // Invariant 4.
      assert.ok(g.remaining >= 0n && g.remaining <= g.amount, `grant ${g.id} remaining within [0, amount]`);
      // No credit created or lost: the amount is what remains plus what each kind took away.
      for (const part of [f.consumed, f.expired, f.voided, f.rolled]) assert.ok(part >= 0n);
      assert.equal(
        g.amount,
        g.remaining + f.consumed + f.expired + f.voided + f.rolled,
        `grant ${g.id}: amount = remaining + consumed + expired + voided + rolled`,
      );
      // Invariant 7: a grant leaves once, and only by the way its status says.
      assert.ok(f.exits.length <= 1, `grant ${g.id} left ${f.exits.length} times`);
      if (g.status === "active") assert.deepEqual(f.exits, []);
      else {
        assert.equal(g.remaining, 0n, `a ${g.status} grant holds nothing`);
        assert.ok(g.statusAt !== null);
        if (g.status === "voided")
          assert.deepEqual(
            f.exits.filter((k) => k !== "void"),
            [],
          );
        else {
          assert.deepEqual(
            f.exits.filter((k) => k === "void"),
            [],
          );
          // Never early; exactly on time under the test clock, at the catch-up after a downtime.
          assert.ok(g.expiresAt !== null && g.expiresAt <= g.statusAt);
          const window = this.catchUps.find(([a, b]) => g.expiresAt! > a && g.expiresAt! <= b);
          assert.equal(g.statusAt, window ? window[1] : g.expiresAt, `grant ${g.id} expired on time`);
        }
        const text = json([g.status, g.statusAt]);
        assert.equal(this.exits.get(g.id) ?? text, text, `grant ${g.id} left active once`);
        this.exits.set(g.id, text);
      }
      if (this.exits.has(g.id)) assert.notEqual(g.status, "active", `grant ${g.id} came back`);
      // Nothing due is left undone.
      if (inSync && g.status === "active")
        assert.ok(
          g.expiresAt === null || g.expiresAt > now,
          `grant ${g.id} is past its expiry and still active`,
        );
    }

    // Expiry changes are recorded, never silent: each grant's changes chain to its expiry.
    const byGrant = new Map<string, Row[]>();
    for (const c of changes) byGrant.set(String(c.grant_id), [...(byGrant.get(String(c.grant_id)) ?? []), c]);
    for (const [grantId, list] of byGrant) {
      for (let i = 1; i < list.length; i++)
        assert.equal(msOrNull(list[i]!.from_expires_at), msOrNull(list[i - 1]!.to_expires_at));
      assert.equal(grantById.get(grantId)!.expiresAt, msOrNull(list[list.length - 1]!.to_expires_at));
    }

    // Invariant 3 (independently of reconcile) and 4: balances, grants and journal agree, none below zero.
    let balances = 0n;
    for (const w of wallets) {
      const id = String(w.id);
      const balance = big(w.balance);
      const held = grants.filter((g) => g.walletId === id).reduce((a, g) => a + g.remaining, 0n);
      const journal = [...entries.values()]
        .flat()
        .filter((e) => e.walletId === id)
        .reduce((a, e) => a + e.amount, 0n);
      assert.equal(balance, held, `wallet ${id}: balance = grants`);
      assert.equal(balance, journal, `wallet ${id}: balance = journal`);
      assert.equal(big(w.overdraft), 0n);
      assert.ok(balance >= 0n);
      balances += balance;
    }
    // The balance as the API reads it: what can be drawn never goes below zero.
    const b = await store.balance(t, this.customers[0]!.member ?? this.customers[0]!.pool);
    assert.ok(b && b.available >= 0n && b.available + b.upcoming + b.held + b.expired === b.total);
    // Everything issued is held, consumed, broken or voided: nothing else makes or loses a credit.
    const s = (a: string) => system.get(a) ?? 0n;
    assert.equal(
      -s("issuance") - s("consumption") - s("breakage") - s("voided"),
      balances,
      "credits are conserved",
    );

    await this.checkRenewals(grants, grantById, txs, inSync);
  }

  async checkRenewals(
    grants: GrantRow[],
    grantById: Map<string, GrantRow>,
    txs: {
      id: string;
      kind: string;
      reason: string | null;
      postedAt: number;
      entries: { grantId: string | null; amount: bigint }[];
    }[],
    inSync: boolean,
  ): Promise<void> {
    const t = this.tenantId;
    const renewals = (
      await this.store.db.query("SELECT * FROM subscription_renewals WHERE tenant_id = $1", [t])
    ).rows.map((r) => ({
      key: String(r.key),
      subscriptionId: String(r.subscription_id),
      index: Number(r.period_index),
      grantId: r.grant_id === null ? null : String(r.grant_id),
      renewedAt: ms(r.renewed_at),
    }));
    const rows = (await this.store.db.query("SELECT * FROM subscriptions WHERE tenant_id = $1", [t])).rows;
    // Invariant 7: per subscription, the periods renewed are 0..renewed_through, each once.
    for (const r of rows) {
      const id = String(r.id);
      const mine = renewals.filter((x) => x.subscriptionId === id);
      const periods = mine.filter((x) => x.key.startsWith("renewal:"));
      const through = Number(r.renewed_through);
      assert.deepEqual(
        periods.map((x) => x.index).sort((a, b) => a - b),
        Array.from({ length: through + 1 }, (_, i) => i),
        `subscription ${id} renewed each period once`,
      );
      for (const x of periods) assert.equal(x.key, `renewal:${id}:${x.index}`);
      const closed = mine.filter((x) => x.key === `close:${id}`);
      assert.equal(closed.length, r.status === "canceled" && r.next_renewal_at === null ? 1 : 0);
    }
    // One renewal grant per subscription and period, the one its renewal names.
    const renewalGrants = new Map<string, string>();
    for (const g of grants) {
      if (g.metadata.lifecycle !== "renewal") continue;
      const key = `renewal:${g.metadata.subscription_id}:${g.metadata.period_index}`;
      assert.ok(!renewalGrants.has(key), `${key} granted twice`);
      renewalGrants.set(key, g.id);
    }
    for (const x of renewals)
      if (x.key.startsWith("renewal:")) assert.equal(x.grantId, renewalGrants.get(x.key) ?? null);
    assert.equal(renewalGrants.size, renewals.filter((x) => x.grantId !== null).length);
    // A grant rolls over at most once.
    const sources = new Set<string>();
    for (const g of grants) {
      if (g.source !== "rollover") continue;
      const from = g.metadata.source_grant_id!;
      assert.ok(!sources.has(from), `grant ${from} rolled over twice`);
      sources.add(from);
    }
    if (!inSync) return;

    // The model: which periods renewed, when, under which plan, with how many credits.
    for (const sub of this.subs) {
      const row = rows.find((r) => String(r.id) === sub.id)!;
      assert.equal(Number(row.renewed_through), sub.renewedThrough, `${sub.id} renewed through`);
      assert.equal(msOrNull(row.next_renewal_at), sub.nextRenewalAt, `${sub.id} next renewal`);
      assert.equal(String(row.plan_id), sub.plan.id, `${sub.id} plan`);
      assert.equal(
        row.pending_plan_id === null ? null : String(row.pending_plan_id),
        sub.pending?.id ?? null,
      );
      assert.equal(Number(row.seats), sub.seats);
      assert.equal(Number(row.granted_seats), sub.grantedSeats);
      assert.equal(String(row.status), sub.status);
      const mine = renewals.filter((x) => x.subscriptionId === sub.id);
      assert.deepEqual(mine.map((x) => x.key).sort(), [...sub.expected.keys()].sort(), `${sub.id} renewals`);
      for (const x of mine) {
        const e = sub.expected.get(x.key)!;
        assert.equal(x.renewedAt, e.renewedAt, `${x.key} renewed at`);
        assert.equal(x.grantId !== null, e.grant, `${x.key} granted or not`);
        if (x.grantId === null) continue;
        const g = grantById.get(x.grantId)!;
        const period = periodAt(sub.startedAt, this.scenario.interval, x.index);
        const plan = this.plans.find((p) => p.id === e.planId)!;
        assert.equal(g.amount, e.amount, `${x.key} amount`);
        assert.equal(g.metadata.plan_id, e.planId);
        assert.equal(g.effectiveAt, period.from);
        assert.equal(
          g.expiresAt === null ? null : g.expiresAt,
          this.changedExpiry(g.id, expiryOf(plan.expiry, period.from, period.to)),
          `${x.key} expiry`,
        );
      }
    }

    // Rollovers, against the reference: once per period end, carrying what the policy says.
    for (const x of txs) {
      if (x.kind !== "rollover" || this.checkedRollovers.has(x.id)) continue;
      this.checkedRollovers.add(x.id);
      const leaving = x.entries
        .filter((e) => e.grantId !== null && e.amount < 0n)
        .map((e) => grantById.get(e.grantId!)!);
      const created = grants.filter(
        (g) => g.source === "rollover" && x.entries.some((e) => e.grantId === g.id && e.amount > 0n),
      );
      assert.ok(leaving.length > 0);
      const subId = leaving[0]!.metadata.subscription_id!;
      const sub = this.subs.find((s) => s.id === subId)!;
      const periodEnd = leaving[0]!.expiresAt!;
      for (const g of leaving) {
        assert.equal(g.metadata.subscription_id, subId);
        assert.equal(g.expiresAt, periodEnd);
        assert.equal(g.metadata.drawdown_expiry, "rollover");
      }
      const ctx = sub.closings.get(periodEnd);
      assert.ok(ctx, `a rollover at a period end the model knows (${new Date(periodEnd).toISOString()})`);
      assert.equal(x.postedAt, ctx.renewedAt);
      assert.equal(x.reason, ctx.closing ? "subscription ended" : `rollover: ${ctx.plan.rollover.kind}`);
      const candidates = leaving.map((g) => ({
        id: g.id,
        generation: g.source === "plan" ? 0 : Number(g.metadata.rollover_generation),
        remaining: -x.entries.find((e) => e.grantId === g.id)!.amount,
      }));
      const carry = expectedCarry(
        ctx.closing ? { kind: "none" } : ctx.plan.rollover,
        ctx.plan.allotment * BigInt(ctx.plan.perSeat ? ctx.grantedSeats : 1),
        candidates,
        ctx.nextPeriodEnd <= ctx.renewedAt,
      );
      for (const c of candidates) {
        const into = created.filter((g) => g.metadata.source_grant_id === c.id);
        const want = carry.get(c.id)!;
        assert.equal(into.length, want > 0n ? 1 : 0, `grant ${c.id} carried once or not at all`);
        const r = into[0];
        if (!r) continue;
        const source = grantById.get(c.id)!;
        assert.equal(r.amount, want, `grant ${c.id} carries what the policy allows`);
        assert.equal(r.metadata.rollover_generation, String(c.generation + 1));
        assert.equal(
          r.metadata.origin_grant_id,
          source.source === "plan" ? source.id : source.metadata.origin_grant_id,
        );
        assert.equal(r.effectiveAt, periodEnd);
        assert.equal(r.expiresAt === null ? null : r.expiresAt, this.changedExpiry(r.id, ctx.nextPeriodEnd));
        assert.equal(r.priority, source.priority);
      }
      assert.equal(created.length, [...carry.values()].filter((v) => v > 0n).length);
    }
  }

  /** A grant's expiry: as its last recorded change (an extension, a cancellation) set it, else `original`. */
  changedExpiry(grantId: string, original: number | null): number | null {
    const mine = [...this.changes.values()]
      .map((t) => JSON.parse(t) as Row)
      .filter((c) => c.grant_id === grantId);
    const last = mine[mine.length - 1];
    return last ? msOrNull(last.to_expires_at) : original;
  }
}

for (const backend of backends()) {
  describe(`random timelines on ${backend.name}`, () => {
    let database: RestartableDatabase;
    before(async () => {
      database = await restartableDatabase(backend.name);
    });
    after(async () => {
      await database?.close();
    });

    test("invariants 1-4 and 7 hold over grants, usage, renewals, clock advances, crashes and restarts", async () => {
      await fc
        .assert(
          fc.asyncProperty(scenarioArb, async (scenario) => {
            const timeline = new Timeline(database, scenario);
            await timeline.setup();
            for (const op of scenario.ops) await timeline.step(op);
          }),
          { numRuns: RUNS, endOnFailure: true },
        )
        .catch((error: Error) => {
          // The runner prints the message only: put the failed assertion in it.
          if (error.cause instanceof Error) error.message += `\n${error.cause.stack}`;
          throw error;
        });
    });
  });
}
