import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  addInterval,
  applyEffect,
  type CancelMode,
  credits,
  daysInMonth,
  expiryFor,
  expiryForSource,
  type Grant,
  type GrantInput,
  type Interval,
  issueGrant,
  type LedgerErrorCode,
  LIFECYCLE_METADATA,
  MAX_AMOUNT,
  type Period,
  type Plan,
  type PlanInput,
  periodAllotment,
  periodAt,
  periodIndexAt,
  periodsBetween,
  planCancel,
  planPlanChange,
  planRenewal,
  planRollover,
  planSeatChange,
  prorate,
  type Result,
  type RolloverCandidate,
  type RolloverPlan,
  type RolloverPolicy,
  renewalKey,
  rolloverCandidate,
  rolloverCap,
  UNIT,
  validateExpiryPolicy,
  validateInterval,
  validatePlan,
  validateRolloverPolicy,
  validateSourceExpiry,
} from "../src/index.js";
import { ctxAt, deepFreeze, makeGrant } from "./support.js";

const DAY = 86_400_000;
const utc = (y: number, m: number, d: number, h = 0): number => Date.UTC(y, m - 1, d, h);
const timeOfDay = (t: number): number => ((t % DAY) + DAY) % DAY;
const MONTHLY: Interval = { unit: "month", count: 1 };

function okValue<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function expectFail<T>(r: Result<T>, code: LedgerErrorCode, field?: string) {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
  assert.ok(r.error.message.length > 0);
  if (field !== undefined) assert.equal(r.error.details?.field, field, r.error.message);
  return r.error;
}

const planInput = (overrides: Partial<PlanInput> = {}): PlanInput => ({
  id: "pln_pro",
  name: "Pro",
  baseFee: { amount: 20n * UNIT, currency: "USD" },
  interval: MONTHLY,
  allotment: credits(1000n),
  ...overrides,
});

const makePlan = (overrides: Partial<PlanInput> = {}): Plan => okValue(validatePlan(planInput(overrides)));

/** Issues a planned grant input at `now` and returns the stored grant, as the storage would. */
function issue(input: GrantInput, now: number, newId = ctxAt(now).newId): Grant {
  const effect = okValue(issueGrant(ctxAt(now, newId), "cus_1", input));
  const grant = applyEffect(new Map(), effect).get(effect.newGrants[0]!.id);
  assert.ok(grant);
  return { ...grant, remaining: grant.amount };
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const MIN_T = utc(1900, 1, 1);
const MAX_T = utc(2200, 1, 1);

/** Starts anywhere, and often on a month's last days (where clamping happens). */
const startArb = fc.oneof(
  fc.integer({ min: MIN_T, max: MAX_T }),
  fc
    .record({
      year: fc.integer({ min: 1900, max: 2200 }),
      month: fc.integer({ min: 1, max: 12 }),
      day: fc.integer({ min: 28, max: 31 }),
      time: fc.integer({ min: 0, max: DAY - 1 }),
    })
    .map(({ year, month, day, time }) => utc(year, month, Math.min(day, daysInMonth(year, month))) + time),
);

const intervalArb: fc.Arbitrary<Interval> = fc.record({
  unit: fc.constantFrom("day", "week", "month", "year"),
  count: fc.integer({ min: 1, max: 18 }),
});

const calendarIntervalArb: fc.Arbitrary<Interval> = fc.record({
  unit: fc.constantFrom("month", "year"),
  count: fc.integer({ min: 1, max: 18 }),
});

const monthsOf = (i: Interval): number => (i.unit === "year" ? 12 * i.count : i.count);
const msOf = (i: Interval): number => i.count * DAY * (i.unit === "week" ? 7 : 1);

/** Brute force: every period whose start lies in (t0, t1], walking from index 0. */
function referenceBetween(start: number, interval: Interval, t0: number, t1: number): Period[] {
  const out: Period[] = [];
  for (let i = 0; ; i++) {
    const p = periodAt(start, interval, i);
    if (p.from > t1) return out;
    if (p.from > t0) out.push(p);
  }
}

// ---------------------------------------------------------------------------------------------
// Periods
// ---------------------------------------------------------------------------------------------

describe("addInterval", () => {
  test("month ends clamp, and the anchor brings the schedule back to its day", () => {
    assert.equal(addInterval(utc(2024, 1, 31), MONTHLY), utc(2024, 2, 29));
    assert.equal(addInterval(utc(2023, 1, 31), MONTHLY), utc(2023, 2, 28));
    assert.equal(addInterval(utc(2024, 2, 29), MONTHLY, 31), utc(2024, 3, 31));
    assert.equal(addInterval(utc(2024, 2, 29), MONTHLY), utc(2024, 3, 29), "default anchor: t's own day");
    assert.equal(addInterval(utc(2024, 3, 31), MONTHLY, 31), utc(2024, 4, 30));
    assert.equal(addInterval(utc(2024, 2, 29), { unit: "year", count: 1 }), utc(2025, 2, 28));
    assert.equal(addInterval(utc(2027, 2, 28), { unit: "year", count: 1 }, 29), utc(2028, 2, 29));
    assert.equal(addInterval(utc(2024, 11, 30), { unit: "month", count: 3 }), utc(2025, 2, 28));
    assert.equal(addInterval(utc(2024, 12, 15), { unit: "month", count: 13 }), utc(2026, 1, 15));
  });

  test("keeps the time of day; days and weeks are fixed lengths", () => {
    assert.equal(addInterval(utc(2024, 1, 31, 17) + 1234, MONTHLY), utc(2024, 2, 29, 17) + 1234);
    assert.equal(addInterval(utc(2024, 3, 9, 23), { unit: "day", count: 1 }), utc(2024, 3, 10, 23));
    assert.equal(addInterval(1000, { unit: "week", count: 2 }), 1000 + 14 * DAY);
    // Before 1970, and in years Date.UTC would misread (0–99).
    assert.equal(addInterval(utc(1960, 1, 31), MONTHLY), utc(1960, 2, 29));
    const year50 = new Date(0);
    year50.setUTCFullYear(50, 0, 31);
    const next = new Date(addInterval(year50.getTime(), MONTHLY));
    assert.deepEqual([next.getUTCFullYear(), next.getUTCMonth(), next.getUTCDate()], [50, 1, 28]);
  });

  test("bad input is a bug of the caller: RangeError", () => {
    assert.throws(() => addInterval(0, { unit: "month", count: 0 }), RangeError);
    assert.throws(() => addInterval(0, { unit: "month", count: 1.5 }), RangeError);
    assert.throws(() => addInterval(0, { unit: "hour" as "day", count: 1 }), RangeError);
    assert.throws(() => addInterval(Number.NaN, MONTHLY), RangeError);
    assert.throws(() => addInterval(0.5, MONTHLY), RangeError);
    assert.throws(() => addInterval(0, MONTHLY, 32), RangeError);
    assert.throws(() => addInterval(0, MONTHLY, 0), RangeError);
    assert.throws(() => addInterval(8.64e15, { unit: "day", count: 1 }), RangeError);
    assert.throws(() => periodAt(0, MONTHLY, -1), RangeError);
    assert.throws(() => periodsBetween(0, MONTHLY, 0, 10, -1), RangeError);
  });

  test("validateInterval answers invalid_argument with the field", () => {
    expectFail(validateInterval({ unit: "month", count: 0 }), "invalid_argument", "interval.count");
    expectFail(validateInterval({ unit: "month", count: 1001 }), "invalid_argument", "interval.count");
    expectFail(
      validateInterval({ unit: "fortnight" as "week", count: 1 }),
      "invalid_argument",
      "interval.unit",
    );
    assert.deepEqual(okValue(validateInterval({ unit: "year", count: 1000 })), { unit: "year", count: 1000 });
  });
});

describe("periodAt", () => {
  test("monthly from Jan 31: Feb 29, then back to the 31st", () => {
    const froms = [0, 1, 2, 3, 4, 12, 13].map((i) => periodAt(utc(2024, 1, 31), MONTHLY, i).from);
    assert.deepEqual(froms, [
      utc(2024, 1, 31),
      utc(2024, 2, 29),
      utc(2024, 3, 31),
      utc(2024, 4, 30),
      utc(2024, 5, 31),
      utc(2025, 1, 31),
      utc(2025, 2, 28),
    ]);
    assert.deepEqual(periodAt(utc(2024, 1, 31), MONTHLY, 1), {
      index: 1,
      from: utc(2024, 2, 29),
      to: utc(2024, 3, 31),
    });
  });

  test("periods are contiguous, non-empty and strictly increasing", () => {
    fc.assert(
      fc.property(startArb, intervalArb, fc.integer({ min: 0, max: 300 }), (start, interval, index) => {
        const p = periodAt(start, interval, index);
        const q = periodAt(start, interval, index + 1);
        assert.equal(p.index, index);
        assert.ok(p.from < p.to);
        assert.equal(p.to, q.from, "no gap, no overlap");
        if (index === 0) assert.equal(p.from, start);
      }),
      { numRuns: 1000 },
    );
  });

  test("calendar boundaries fall on the start's day (clamped), at its time of day", () => {
    fc.assert(
      fc.property(
        startArb,
        calendarIntervalArb,
        fc.integer({ min: 0, max: 200 }),
        (start, interval, index) => {
          const s = new Date(start);
          const b = new Date(periodAt(start, interval, index).from);
          const months = (b.getUTCFullYear() - s.getUTCFullYear()) * 12 + b.getUTCMonth() - s.getUTCMonth();
          assert.equal(months, index * monthsOf(interval));
          const dim = daysInMonth(b.getUTCFullYear(), b.getUTCMonth() + 1);
          assert.equal(
            b.getUTCDate(),
            Math.min(s.getUTCDate(), dim),
            "the anchor is kept after a short month",
          );
          assert.equal(timeOfDay(b.getTime()), timeOfDay(start));
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("fixed-length boundaries are exact multiples", () => {
    fc.assert(
      fc.property(
        startArb,
        fc.record({ unit: fc.constantFrom("day", "week"), count: fc.integer({ min: 1, max: 1000 }) }),
        fc.integer({ min: 0, max: 500 }),
        (start, interval, index) => {
          assert.equal(
            periodAt(start, interval as Interval, index).from,
            start + index * msOf(interval as Interval),
          );
        },
      ),
    );
  });

  test("addInterval chained with the start's anchor walks the same boundaries", () => {
    fc.assert(
      fc.property(startArb, intervalArb, fc.integer({ min: 1, max: 40 }), (start, interval, steps) => {
        const anchor = new Date(start).getUTCDate();
        let t = start;
        for (let i = 1; i <= steps; i++) {
          t = addInterval(t, interval, anchor);
          assert.equal(t, periodAt(start, interval, i).from);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("periodIndexAt and periodsBetween", () => {
  test("periodIndexAt finds the period holding t; -1 before the start", () => {
    fc.assert(
      fc.property(
        startArb,
        intervalArb,
        fc.integer({ min: -10 * DAY, max: 20 * 366 * DAY }),
        (start, interval, offset) => {
          const t = start + offset;
          const i = periodIndexAt(start, interval, t);
          if (t < start) return assert.equal(i, -1);
          const p = periodAt(start, interval, i);
          assert.ok(p.from <= t && t < p.to, `${t} not in period ${i}`);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("examples: boundaries crossed, period 0 included when the start is crossed", () => {
    const start = utc(2024, 1, 31);
    assert.deepEqual(
      periodsBetween(start, MONTHLY, start - 1, utc(2024, 3, 31)).map((p) => p.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      periodsBetween(start, MONTHLY, start, utc(2024, 3, 30)).map((p) => p.from),
      [utc(2024, 2, 29)],
    );
    assert.deepEqual(periodsBetween(start, MONTHLY, utc(2024, 2, 29), utc(2024, 3, 30)), []);
    assert.deepEqual(periodsBetween(start, MONTHLY, utc(2024, 5, 1), utc(2024, 4, 1)), []);
  });

  test("each boundary once and in order, whether the clock advances in steps or at once", () => {
    fc.assert(
      fc.property(
        startArb,
        intervalArb,
        fc.integer({ min: -400 * DAY, max: 8 * 366 * DAY }),
        fc.integer({ min: 0, max: 4 * 366 * DAY }),
        fc.array(fc.integer({ min: 0, max: 4 * 366 * DAY }), { maxLength: 8 }),
        (start, interval, offset, span, cutOffsets) => {
          const t0 = start + offset;
          const t1 = t0 + span;
          const cuts = [t0, ...cutOffsets.map((c) => t0 + (c % (span + 1))).sort((a, b) => a - b), t1];
          const stepped: Period[] = [];
          for (let k = 1; k < cuts.length; k++) {
            stepped.push(...periodsBetween(start, interval, cuts[k - 1]!, cuts[k]!));
          }
          const whole = periodsBetween(start, interval, t0, t1);
          assert.deepEqual(stepped, whole);
          assert.deepEqual(whole, referenceBetween(start, interval, t0, t1));
          for (let k = 0; k < whole.length; k++) {
            const p = whole[k]!;
            assert.ok(t0 < p.from && p.from <= t1);
            if (k > 0) {
              assert.equal(p.index, whole[k - 1]!.index + 1);
              assert.equal(p.from, whole[k - 1]!.to);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test("limit lists the first periods; resuming from the last one lists the rest", () => {
    fc.assert(
      fc.property(
        startArb,
        intervalArb,
        fc.integer({ min: 0, max: 3 * 366 * DAY }),
        fc.integer({ min: 1, max: 5 }),
        (start, interval, span, limit) => {
          const t1 = start + span;
          const all = periodsBetween(start, interval, start - 1, t1);
          const got: Period[] = [];
          let t0 = start - 1;
          for (;;) {
            const chunk = periodsBetween(start, interval, t0, t1, limit);
            assert.ok(chunk.length <= limit);
            got.push(...chunk);
            if (chunk.length < limit) break;
            t0 = chunk[chunk.length - 1]!.from;
          }
          assert.deepEqual(got, all);
        },
      ),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Policies and plans
// ---------------------------------------------------------------------------------------------

describe("expiry policies", () => {
  test("expiryFor: period end, never, rolling months (clamped)", () => {
    const granted = utc(2024, 1, 31, 9);
    const end = utc(2024, 2, 29);
    assert.equal(expiryFor({ kind: "period_end" }, granted, end), end);
    assert.equal(expiryFor({ kind: "never" }, granted, end), null);
    assert.equal(expiryFor({ kind: "rolling", months: 1 }, granted, end), utc(2024, 2, 29, 9));
    assert.equal(expiryFor({ kind: "rolling", months: 12 }, granted, end), utc(2025, 1, 31, 9));
  });

  test("validation", () => {
    expectFail(validateExpiryPolicy({ kind: "rolling", months: 0 }), "invalid_argument", "expiry.months");
    expectFail(validateExpiryPolicy({ kind: "rolling", months: 121 }), "invalid_argument", "expiry.months");
    expectFail(validateExpiryPolicy({ kind: "soon" } as never), "invalid_argument", "expiry.kind");
    assert.deepEqual(okValue(validateExpiryPolicy({ kind: "rolling", months: 3 })), {
      kind: "rolling",
      months: 3,
    });
  });

  test("per source: never or rolling, for sources outside plans only", () => {
    expectFail(validateSourceExpiry("plan", { kind: "never" }), "invalid_argument", "source");
    expectFail(validateSourceExpiry("rollover", { kind: "never" }), "invalid_argument", "source");
    expectFail(validateSourceExpiry("contract", { kind: "period_end" }), "invalid_argument", "expiry.kind");
    expectFail(
      validateSourceExpiry("contract", { kind: "rolling", months: 0 }),
      "invalid_argument",
      "expiry.months",
    );
    assert.deepEqual(okValue(validateSourceExpiry("contract", { kind: "rolling", months: 12 })), {
      source: "contract",
      policy: { kind: "rolling", months: 12 },
    });
    assert.equal(expiryForSource({ kind: "never" }, utc(2024, 1, 31)), null);
    assert.equal(expiryForSource({ kind: "rolling", months: 12 }, utc(2024, 2, 29, 9)), utc(2025, 2, 28, 9));
  });

  test("property: a rolling source expiry is always after the grant, and agrees with expiryFor", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: utc(1990, 1, 1), max: utc(2100, 1, 1) }),
        fc.integer({ min: 1, max: 120 }),
        (at, months) => {
          const end = expiryForSource({ kind: "rolling", months }, at)!;
          assert.ok(end > at);
          assert.equal(end, expiryFor({ kind: "rolling", months }, at, at));
        },
      ),
    );
  });
});

describe("validatePlan", () => {
  test("fills the defaults", () => {
    const input = deepFreeze(planInput());
    assert.deepEqual(okValue(validatePlan(input)), {
      ...input,
      perSeat: false,
      rollover: { kind: "none" },
      expiry: { kind: "period_end" },
      cancel: { onCancel: "keep_until_period_end" },
      allocation: { mode: "customer" },
    });
  });

  test("accepts every policy shape", () => {
    const policies: RolloverPolicy[] = [
      { kind: "none" },
      { kind: "full" },
      { kind: "full", maxPeriods: 3 },
      { kind: "capped", cap: { absolute: 0n } },
      { kind: "capped", cap: { percentOfAllotment: 100 }, maxPeriods: 1 },
      { kind: "capped", cap: { multipleOfAllotment: 1_500_000_000n } },
      { kind: "declining", schedule: [100, 50, 0] },
      { kind: "declining", schedule: [30] },
    ];
    for (const rollover of policies) assert.deepEqual(makePlan({ rollover }).rollover, rollover);
  });

  test("validateRolloverPolicy returns a clean copy", () => {
    const schedule = [100, 50];
    const checked = okValue(validateRolloverPolicy({ kind: "declining", schedule }));
    schedule[0] = 0;
    assert.deepEqual(checked, { kind: "declining", schedule: [100, 50] });
    const extra = { kind: "full", maxPeriods: undefined, note: "x" } as RolloverPolicy;
    assert.deepEqual(okValue(validateRolloverPolicy(extra)), { kind: "full" });
  });

  test("refuses each bad field, naming it", () => {
    const cases: [Partial<PlanInput>, LedgerErrorCode, string][] = [
      [{ id: "" }, "invalid_argument", "id"],
      [{ name: " " }, "invalid_argument", "name"],
      [{ baseFee: { amount: -1n, currency: "USD" } }, "invalid_amount", "baseFee.amount"],
      [{ baseFee: { amount: 1n, currency: "usd" } }, "invalid_argument", "baseFee.currency"],
      [{ interval: { unit: "month", count: 0 } }, "invalid_argument", "interval.count"],
      [{ allotment: -1n }, "invalid_amount", "allotment"],
      [{ allotment: MAX_AMOUNT + 1n }, "invalid_amount", "allotment"],
      [{ perSeat: "yes" as unknown as boolean }, "invalid_argument", "perSeat"],
      [{ rollover: { kind: "full", maxPeriods: 0 } }, "invalid_argument", "rollover.maxPeriods"],
      [{ rollover: { kind: "full", maxPeriods: 2.5 } }, "invalid_argument", "rollover.maxPeriods"],
      [
        { rollover: { kind: "capped", cap: { percentOfAllotment: 101 } } },
        "invalid_argument",
        "rollover.cap.percentOfAllotment",
      ],
      [
        { rollover: { kind: "capped", cap: { percentOfAllotment: 12.5 } } },
        "invalid_argument",
        "rollover.cap.percentOfAllotment",
      ],
      [{ rollover: { kind: "capped", cap: { absolute: -1n } } }, "invalid_argument", "rollover.cap.absolute"],
      [
        { rollover: { kind: "capped", cap: { multipleOfAllotment: -1n } } },
        "invalid_argument",
        "rollover.cap.multipleOfAllotment",
      ],
      [
        { rollover: { kind: "capped", cap: { absolute: 1n, percentOfAllotment: 5 } as never } },
        "invalid_argument",
        "rollover.cap",
      ],
      [{ rollover: { kind: "capped", cap: {} as never } }, "invalid_argument", "rollover.cap"],
      [{ rollover: { kind: "declining", schedule: [] } }, "invalid_argument", "rollover.schedule"],
      [{ rollover: { kind: "declining", schedule: [50, 100] } }, "invalid_argument", "rollover.schedule"],
      [{ rollover: { kind: "declining", schedule: [100, -1] } }, "invalid_argument", "rollover.schedule"],
      [{ rollover: { kind: "sometimes" } as never }, "invalid_argument", "rollover.kind"],
      [{ expiry: { kind: "rolling", months: 0 } }, "invalid_argument", "expiry.months"],
      [{ rollover: { kind: "full" }, expiry: { kind: "never" } }, "invalid_argument", "rollover"],
      [
        { rollover: { kind: "full" }, expiry: { kind: "rolling", months: 2 } },
        "invalid_argument",
        "rollover",
      ],
      [{ cancel: { onCancel: "refund" as CancelMode } }, "invalid_argument", "cancel.onCancel"],
    ];
    for (const [overrides, code, field] of cases) expectFail(validatePlan(planInput(overrides)), code, field);
  });
});

// ---------------------------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------------------------

const START = utc(2024, 1, 31);
const p1 = periodAt(START, MONTHLY, 1); // [Feb 29, Mar 31)

describe("planRenewal", () => {
  test("per seat: allotment × seats, effective at the start, expiring at the end, keyed by period", () => {
    const plan = makePlan({ perSeat: true, allotment: credits(300n) });
    const input = deepFreeze({
      subscriptionId: "sub_1",
      plan,
      seats: 3,
      period: p1,
      walletId: "wal_a",
      customerId: "cus_1",
    });
    const r = okValue(planRenewal(ctxAt(p1.from), input));
    assert.equal(r.key, "renewal:sub_1:1");
    assert.equal(r.amount, credits(900n));
    assert.equal(r.lapsed, false);
    assert.deepEqual(r.grant, {
      walletId: "wal_a",
      amount: credits(900n),
      source: "plan",
      costBasis: 0n,
      currency: null,
      effectiveAt: p1.from,
      expiresAt: p1.to,
      metadata: { subscription_id: "sub_1", plan_id: "pln_pro", period_index: "1", lifecycle: "renewal" },
    });
    const grant = issue(r.grant!, p1.from);
    assert.equal(grant.remaining, credits(900n));
    // Not per seat: the seats do not matter.
    const flat = okValue(planRenewal(ctxAt(p1.from), { ...input, plan: makePlan() }));
    assert.equal(flat.amount, credits(1000n));
  });

  test("expiry by the plan's policy; zero allotment grants nothing; a past period is lapsed", () => {
    const base = { subscriptionId: "sub_1", seats: 1, period: p1, walletId: "wal_a", customerId: "cus_1" };
    const rolling = okValue(
      planRenewal(ctxAt(p1.from), { ...base, plan: makePlan({ expiry: { kind: "rolling", months: 3 } }) }),
    );
    assert.equal(rolling.grant?.expiresAt, utc(2024, 5, 29));
    const never = okValue(
      planRenewal(ctxAt(p1.from), { ...base, plan: makePlan({ expiry: { kind: "never" } }) }),
    );
    assert.equal(never.grant?.expiresAt, null);
    assert.equal(never.lapsed, false);
    const feeOnly = okValue(planRenewal(ctxAt(p1.from), { ...base, plan: makePlan({ allotment: 0n }) }));
    assert.equal(feeOnly.grant, null);
    assert.equal(feeOnly.key, "renewal:sub_1:1");
    const late = okValue(planRenewal(ctxAt(p1.to), { ...base, plan: makePlan() }));
    assert.equal(late.lapsed, true, "issueGrant would refuse it");
    expectFail(issueGrant(ctxAt(p1.to), "cus_1", late.grant!), "invalid_argument");
  });

  test("amounts are exact and keys distinct per subscription and period", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: credits(10n ** 9n) }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 10_000 }),
        fc.stringMatching(/^sub_[a-z0-9:]{1,12}$/),
        (allotment, seats, perSeat, index, sub) => {
          const plan = makePlan({ allotment, perSeat });
          const period = periodAt(START, MONTHLY, index);
          const r = okValue(
            planRenewal(ctxAt(period.from), {
              subscriptionId: sub,
              plan,
              seats,
              period,
              walletId: "wal_a",
              customerId: "cus_1",
            }),
          );
          const expected = perSeat ? allotment * BigInt(seats) : allotment;
          assert.equal(r.amount, expected);
          assert.equal(r.amount, periodAllotment(plan, seats));
          assert.equal(r.grant?.amount ?? 0n, expected);
          assert.equal(r.key, renewalKey(sub, index));
          const cut = r.key.lastIndexOf(":");
          assert.deepEqual([r.key.slice("renewal:".length, cut), Number(r.key.slice(cut + 1))], [sub, index]);
          if (r.grant) okValue(issueGrant(ctxAt(period.from), "cus_1", r.grant));
        },
      ),
      { numRuns: 300 },
    );
  });

  test("refusals", () => {
    const base = {
      subscriptionId: "sub_1",
      plan: makePlan(),
      seats: 1,
      period: p1,
      walletId: "wal_a",
      customerId: "cus_1",
    };
    const c = ctxAt(p1.from);
    expectFail(planRenewal(c, { ...base, seats: -1 }), "invalid_argument", "seats");
    expectFail(planRenewal(c, { ...base, seats: 1.5 }), "invalid_argument", "seats");
    expectFail(planRenewal(c, { ...base, subscriptionId: "" }), "invalid_argument", "subscriptionId");
    expectFail(planRenewal(c, { ...base, customerId: "" }), "invalid_argument", "customerId");
    expectFail(
      planRenewal(c, { ...base, period: { index: 1, from: 5, to: 5 } }),
      "invalid_argument",
      "period",
    );
    expectFail(
      planRenewal(c, { ...base, period: { index: -1, from: 0, to: 5 } }),
      "invalid_argument",
      "period",
    );
    expectFail(
      planRenewal(c, { ...base, plan: { ...base.plan, allotment: -1n } }),
      "invalid_amount",
      "plan.allotment",
    );
    const huge = makePlan({ perSeat: true, allotment: MAX_AMOUNT });
    expectFail(planRenewal(c, { ...base, plan: huge, seats: 2 }), "invalid_amount", "seats");
  });
});

// ---------------------------------------------------------------------------------------------
// Rollover
// ---------------------------------------------------------------------------------------------

const END = p1.to;
const NEXT_END = periodAt(START, MONTHLY, 2).to;

function candidate(
  id: string,
  remaining: bigint,
  generation = 0,
  overrides: Partial<Grant> = {},
): RolloverCandidate {
  const grant = makeGrant({
    id,
    amount: remaining + 10n,
    remaining,
    source: generation === 0 ? "plan" : "rollover",
    effectiveAt: p1.from,
    expiresAt: END,
    ...overrides,
  });
  return { grant, generation, originGrantId: generation === 0 ? id : `${id}_origin` };
}

const rollover = (
  policy: RolloverPolicy,
  expiringGrants: RolloverCandidate[],
  extra: { allotment?: bigint; seats?: number; now?: number } = {},
) =>
  planRollover(ctxAt(extra.now ?? END), {
    policy,
    allotment: extra.allotment ?? 1000n,
    seats: extra.seats ?? 1,
    periodEnd: END,
    nextPeriodEnd: NEXT_END,
    expiringGrants,
  });

describe("planRollover", () => {
  test("none: everything to breakage", () => {
    const r = okValue(rollover({ kind: "none" }, [candidate("grt_a", 400n)]));
    assert.deepEqual([r.remaining, r.carried, r.breakage, r.cap], [400n, 0n, 400n, null]);
    assert.equal(r.lines[0]?.rollover, null);
  });

  test("full: a linked rollover grant, effective at period end, expiring at the next one", () => {
    const source = candidate("grt_a", 400n, 0, {
      costBasis: 3n,
      currency: "EUR",
      priority: 10,
      scope: ["chat"],
      metadata: { subscription_id: "sub_1", plan_id: "pln_pro", period_index: "1", lifecycle: "renewal" },
    });
    const r = okValue(rollover({ kind: "full" }, [deepFreeze(source)]));
    assert.equal(r.carried, 400n);
    assert.equal(r.lapsed, false);
    assert.deepEqual(r.lines[0], {
      grantId: "grt_a",
      walletId: "wal_a",
      generation: 0,
      remaining: 400n,
      carried: 400n,
      breakage: 0n,
      rollover: {
        walletId: "wal_a",
        amount: 400n,
        source: "rollover",
        costBasis: 3n,
        currency: "EUR",
        effectiveAt: END,
        expiresAt: NEXT_END,
        priority: 10,
        scope: ["chat"],
        metadata: {
          subscription_id: "sub_1",
          plan_id: "pln_pro",
          source_grant_id: "grt_a",
          origin_grant_id: "grt_a",
          rollover_generation: "1",
        },
      },
    });
    const issued = issue(r.lines[0]!.rollover!, END);
    assert.deepEqual(okValue(rolloverCandidate(issued)), {
      grant: issued,
      generation: 1,
      originGrantId: "grt_a",
    });
    // Nothing left to carry: no grant.
    assert.equal(okValue(rollover({ kind: "full" }, [candidate("grt_b", 0n)])).lines[0]?.rollover, null);
  });

  test("maxPeriods: carried at most N times", () => {
    const grants = [candidate("grt_a", 100n, 0), candidate("grt_b", 100n, 1), candidate("grt_c", 100n, 2)];
    const r = okValue(rollover({ kind: "full", maxPeriods: 2 }, grants));
    assert.deepEqual(
      r.lines.map((l) => [l.grantId, l.carried, l.breakage]),
      [
        ["grt_a", 100n, 0n],
        ["grt_b", 100n, 0n],
        ["grt_c", 0n, 100n],
      ],
    );
  });

  test("full without maxPeriods carries forever, whatever the generation", () => {
    const r = okValue(rollover({ kind: "full" }, [candidate("grt_a", 100n, 500)]));
    assert.equal(r.carried, 100n);
    assert.equal(r.lines[0]?.rollover?.metadata?.rollover_generation, "501");
  });

  test("caps: absolute, percent and multiple of the period's allotment; filled freshest first", () => {
    const grants = [candidate("grt_old", 500n, 1), candidate("grt_z", 300n, 0), candidate("grt_a", 300n, 0)];
    const abs = okValue(rollover({ kind: "capped", cap: { absolute: 700n } }, grants));
    assert.deepEqual(
      abs.lines.map((l) => [l.grantId, l.carried, l.breakage]),
      [
        ["grt_a", 300n, 0n],
        ["grt_z", 300n, 0n],
        ["grt_old", 100n, 400n],
      ],
    );
    assert.deepEqual([abs.cap, abs.carried, abs.breakage], [700n, 700n, 400n]);
    const pct = okValue(
      rollover({ kind: "capped", cap: { percentOfAllotment: 25 } }, grants, { allotment: 1000n, seats: 2 }),
    );
    assert.deepEqual([pct.cap, pct.carried], [500n, 500n]);
    const mult = okValue(
      rollover({ kind: "capped", cap: { multipleOfAllotment: 333_333_333n } }, grants, {
        allotment: 1000n,
        seats: 1,
      }),
    );
    assert.deepEqual([mult.cap, mult.carried], [333n, 333n], "a third of 1000 rounds down");
    const roomy = okValue(rollover({ kind: "capped", cap: { multipleOfAllotment: 2n * UNIT } }, grants));
    assert.deepEqual([roomy.cap, roomy.carried, roomy.breakage], [2000n, 1100n, 0n]);
  });

  test("declining [100, 50, 0]: whole, then half (rounded down), then nothing", () => {
    const policy: RolloverPolicy = { kind: "declining", schedule: [100, 50, 0] };
    const r = okValue(
      rollover(policy, [
        candidate("grt_a", 7n, 0),
        candidate("grt_b", 7n, 1),
        candidate("grt_c", 7n, 2),
        candidate("grt_d", 7n, 3),
      ]),
    );
    assert.deepEqual(
      r.lines.map((l) => [l.carried, l.breakage]),
      [
        [7n, 0n],
        [3n, 4n],
        [0n, 7n],
        [0n, 7n],
      ],
    );
  });

  test("a chain of period ends follows the declining schedule, lineage and all", () => {
    const ids = ctxAt(0).newId;
    const policy: RolloverPolicy = { kind: "declining", schedule: [100, 50, 25] };
    const period = (i: number) => periodAt(START, MONTHLY, i);
    let grant: Grant = issue(
      {
        walletId: "wal_a",
        amount: 1000n,
        source: "plan",
        effectiveAt: period(0).from,
        expiresAt: period(0).to,
      },
      period(0).from,
      ids,
    );
    const origin = grant.id;
    const carried: bigint[] = [];
    for (let i = 0; i < 4; i++) {
      const c: RolloverCandidate = okValue(rolloverCandidate(grant));
      assert.equal(c.generation, i);
      assert.equal(c.originGrantId, origin);
      const r: RolloverPlan = okValue(
        planRollover(ctxAt(period(i).to), {
          policy,
          allotment: 1000n,
          seats: 1,
          periodEnd: period(i).to,
          nextPeriodEnd: period(i + 1).to,
          expiringGrants: [c],
        }),
      );
      carried.push(r.carried);
      const next = r.lines[0]?.rollover;
      if (!next) break;
      assert.equal(next.metadata?.[LIFECYCLE_METADATA.source], grant.id);
      grant = issue(next, period(i).to, ids);
    }
    assert.deepEqual(carried, [1000n, 500n, 125n, 0n]);
  });

  test("refusals", () => {
    const ok1 = candidate("grt_a", 10n);
    expectFail(rollover({ kind: "full" }, [ok1], { now: END - 1 }), "invalid_argument", "periodEnd");
    expectFail(rollover({ kind: "full", maxPeriods: 0 }, [ok1]), "invalid_argument", "rollover.maxPeriods");
    expectFail(rollover({ kind: "full" }, [ok1], { allotment: -1n }), "invalid_amount", "allotment");
    expectFail(rollover({ kind: "full" }, [ok1], { seats: -1 }), "invalid_argument", "seats");
    const bad: [RolloverCandidate, RegExp][] = [
      [candidate("grt_b", 10n, 0, { expiresAt: END + 1 }), /period end/],
      [candidate("grt_b", 10n, 0, { status: "voided" }), /voided/],
      [candidate("grt_b", 10n, 0, { source: "purchase" }), /purchase/],
      [candidate("grt_b", 10n, 1, { source: "plan" }), /generation/],
      [candidate("grt_b", 10n, 0, { source: "rollover" }), /generation/],
      [candidate("grt_b", 10n, 0, { remaining: 11n, amount: 10n }), /remaining/],
      [{ ...candidate("grt_b", 10n, 1), originGrantId: "" }, /origin/],
      [ok1, /twice/],
    ];
    for (const [c, message] of bad) {
      const error = expectFail(rollover({ kind: "full" }, [ok1, c]), "invalid_argument");
      assert.match(error.message, message);
    }
    const r = planRollover(ctxAt(END), {
      policy: { kind: "full" },
      allotment: 1n,
      seats: 1,
      periodEnd: END,
      nextPeriodEnd: NEXT_END,
      expiresAt: END,
      expiringGrants: [],
    });
    expectFail(r, "invalid_argument", "expiresAt");
  });

  test("rolloverCandidate reads lineage; refuses other sources and missing metadata", () => {
    const plan = makeGrant({ id: "grt_p" });
    assert.deepEqual(okValue(rolloverCandidate(plan)), {
      grant: plan,
      generation: 0,
      originGrantId: "grt_p",
    });
    expectFail(rolloverCandidate(makeGrant({ id: "grt_x", source: "purchase" })), "invalid_argument");
    expectFail(rolloverCandidate(makeGrant({ id: "grt_r", source: "rollover" })), "invalid_argument");
    const bad = makeGrant({
      id: "grt_r",
      source: "rollover",
      metadata: { rollover_generation: "0", origin_grant_id: "x" },
    });
    expectFail(rolloverCandidate(bad), "invalid_argument");
  });
});

const capArb = fc.oneof(
  fc.bigInt({ min: 0n, max: 5000n }).map((absolute) => ({ absolute })),
  fc.integer({ min: 0, max: 100 }).map((percentOfAllotment) => ({ percentOfAllotment })),
  fc.bigInt({ min: 0n, max: 3n * UNIT }).map((multipleOfAllotment) => ({ multipleOfAllotment })),
);
const maxPeriodsArb = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined });
const withMax = <T extends object>(p: T, maxPeriods: number | undefined) =>
  maxPeriods === undefined ? p : { ...p, maxPeriods };

const policyArb: fc.Arbitrary<RolloverPolicy> = fc.oneof(
  fc.constant({ kind: "none" as const }),
  maxPeriodsArb.map((m) => withMax({ kind: "full" as const }, m)),
  fc.tuple(capArb, maxPeriodsArb).map(([cap, m]) => withMax({ kind: "capped" as const, cap }, m)),
  fc
    .array(fc.integer({ min: 0, max: 100 }), { minLength: 1, maxLength: 5 })
    .map((s) => ({ kind: "declining" as const, schedule: [...s].sort((a, b) => b - a) })),
);

const candidatesArb = fc
  .array(
    fc.record({
      remaining: fc.oneof(fc.bigInt({ min: 0n, max: 2000n }), fc.bigInt({ min: 0n, max: MAX_AMOUNT })),
      generation: fc.integer({ min: 0, max: 6 }),
    }),
    { maxLength: 8 },
  )
  .map((items) =>
    items.map((x, i) =>
      candidate(`grt_${String(i).padStart(2, "0")}`, x.remaining, x.generation, { amount: x.remaining }),
    ),
  );

/** What a policy allows a credit of a generation, computed independently of the module. */
function allowed(policy: RolloverPolicy, remaining: bigint, generation: number): bigint {
  if (policy.kind === "none") return 0n;
  if (policy.kind === "declining") {
    const pct = policy.schedule[generation] ?? 0;
    return (remaining * BigInt(pct)) / 100n;
  }
  return policy.maxPeriods !== undefined && generation >= policy.maxPeriods ? 0n : remaining;
}

describe("rollover properties", () => {
  test("conservation: carried + breakage = remaining, per grant and in total; never negative", () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.bigInt({ min: 0n, max: 10_000n }),
        fc.integer({ min: 0, max: 50 }),
        candidatesArb,
        (policy, allotment, seats, candidates) => {
          deepFreeze(candidates);
          const r = okValue(rollover(policy, candidates, { allotment, seats }));
          assert.equal(r.lines.length, candidates.length);
          let remaining = 0n;
          let carried = 0n;
          for (const l of r.lines) {
            assert.ok(l.carried >= 0n && l.breakage >= 0n);
            assert.equal(l.carried + l.breakage, l.remaining);
            assert.equal(l.rollover?.amount ?? 0n, l.carried);
            assert.equal(l.rollover === null, l.carried === 0n);
            remaining += l.remaining;
            carried += l.carried;
          }
          assert.equal(
            remaining,
            candidates.reduce((s, c) => s + c.grant.remaining, 0n),
          );
          assert.deepEqual([r.remaining, r.carried, r.breakage], [remaining, carried, remaining - carried]);
          assert.deepEqual(r.lines.map((l) => l.grantId).sort(), candidates.map((c) => c.grant.id).sort());
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("policies respected: none, full, maxPeriods, declining per generation, caps on the total", () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.bigInt({ min: 0n, max: 10_000n }),
        fc.integer({ min: 0, max: 50 }),
        candidatesArb,
        (policy, allotment, seats, candidates) => {
          const r = okValue(rollover(policy, candidates, { allotment, seats }));
          const totalAllowed = r.lines.reduce((s, l) => s + allowed(policy, l.remaining, l.generation), 0n);
          for (const l of r.lines) {
            const max = allowed(policy, l.remaining, l.generation);
            assert.ok(l.carried <= max, "never more than the policy allows");
            if (policy.kind === "declining") {
              const pct = BigInt(policy.schedule[l.generation] ?? 0);
              assert.ok(l.carried * 100n <= l.remaining * pct, "never rounded up");
              assert.ok((l.carried + 1n) * 100n > l.remaining * pct, "rounded down by less than a unit");
            }
            if (policy.kind !== "capped") assert.equal(l.carried, max);
            if ((policy.kind === "full" || policy.kind === "capped") && policy.maxPeriods !== undefined) {
              if (l.generation >= policy.maxPeriods) assert.equal(l.carried, 0n);
            }
          }
          if (policy.kind === "none") assert.equal(r.carried, 0n);
          if (policy.kind === "full" && policy.maxPeriods === undefined) assert.equal(r.carried, r.remaining);
          if (policy.kind === "capped") {
            const cap = rolloverCap(policy, allotment, seats);
            assert.equal(r.cap, cap);
            assert.ok(cap !== null && r.carried <= cap);
            assert.equal(
              r.carried,
              totalAllowed < cap ? totalAllowed : cap,
              "the cap is filled as far as allowed",
            );
            const base = allotment * BigInt(seats);
            const c = policy.cap;
            if ("percentOfAllotment" in c) assert.ok(cap * 100n <= base * BigInt(c.percentOfAllotment));
            if ("multipleOfAllotment" in c) assert.ok(cap * UNIT <= base * c.multipleOfAllotment);
          } else {
            assert.equal(r.cap, null);
          }
          // The cap is filled in order: generation, then id.
          for (let k = 1; k < r.lines.length; k++) {
            const a = r.lines[k - 1]!;
            const b = r.lines[k]!;
            assert.ok(
              a.generation < b.generation || (a.generation === b.generation && a.grantId < b.grantId),
            );
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("over many periods, credits are conserved and none outlives the policy", () => {
    const periodArb = fc.record({ spend: fc.array(fc.bigInt({ min: 0n, max: 1500n }), { maxLength: 3 }) });
    fc.assert(
      fc.property(
        policyArb,
        fc.bigInt({ min: 1n, max: 1000n }),
        fc.array(periodArb, { minLength: 1, maxLength: 8 }),
        (policy, allotment, periods) => {
          const ids = ctxAt(0).newId;
          const plan = makePlan({ allotment, rollover: policy });
          let live: Grant[] = [];
          let issued = 0n;
          let spent = 0n;
          let breakage = 0n;
          const longest =
            policy.kind === "declining"
              ? policy.schedule.length
              : policy.kind === "none"
                ? 0
                : (policy.maxPeriods ?? Number.POSITIVE_INFINITY);
          for (let i = 0; i < periods.length; i++) {
            const p = periodAt(START, MONTHLY, i);
            const renewal = okValue(
              planRenewal(ctxAt(p.from), {
                subscriptionId: "sub_1",
                plan,
                seats: 1,
                period: p,
                walletId: "wal_a",
                customerId: "cus_1",
              }),
            );
            live.push(issue(renewal.grant!, p.from, ids));
            issued += renewal.amount;
            // Spend from the oldest credits first, as burn-down would (soonest expiry: all equal here).
            for (const want of periods[i]!.spend) {
              let left = want;
              live = live.map((g) => {
                const take = g.remaining < left ? g.remaining : left;
                left -= take;
                spent += take;
                return { ...g, remaining: g.remaining - take };
              });
            }
            const r = okValue(
              planRollover(ctxAt(p.to), {
                policy,
                allotment,
                seats: 1,
                periodEnd: p.to,
                nextPeriodEnd: periodAt(START, MONTHLY, i + 1).to,
                expiringGrants: live.map((g) => okValue(rolloverCandidate(g))),
              }),
            );
            breakage += r.breakage;
            live = r.lines.flatMap((l) => (l.rollover ? [issue(l.rollover, p.to, ids)] : []));
            for (const g of live) {
              const c = okValue(rolloverCandidate(g));
              assert.ok(c.generation <= longest, `carried ${c.generation} times`);
            }
            const held = live.reduce((s, g) => s + g.remaining, 0n);
            assert.equal(issued, spent + breakage + held, "nothing created, nothing lost");
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

describe("planCancel", () => {
  const NOW = p1.from + 10 * DAY;
  const grants = () => [
    makeGrant({ id: "grt_plan", effectiveAt: p1.from, expiresAt: END }),
    makeGrant({ id: "grt_roll", source: "rollover", effectiveAt: p1.from, expiresAt: END }),
    makeGrant({ id: "grt_never", effectiveAt: p1.from, expiresAt: null }),
    makeGrant({ id: "grt_soon", effectiveAt: p1.from, expiresAt: NOW - 1 }),
    makeGrant({ id: "grt_mid", effectiveAt: p1.from, expiresAt: NOW + DAY }),
    makeGrant({ id: "grt_future", effectiveAt: NOW + DAY, expiresAt: NEXT_END }),
    makeGrant({ id: "grt_next", effectiveAt: END, expiresAt: NEXT_END }),
    makeGrant({ id: "grt_void", status: "voided", effectiveAt: p1.from, expiresAt: END }),
  ];

  test("forfeit: everything ends now; grants not yet effective are voided", () => {
    const r = okValue(
      planCancel(ctxAt(NOW), {
        policy: { onCancel: "forfeit" },
        periodEnd: END,
        grants: deepFreeze(grants()),
      }),
    );
    assert.equal(r.endsAt, NOW);
    assert.deepEqual(
      r.expiries.map((e) => [e.grantId, e.from, e.to]),
      [
        ["grt_mid", NOW + DAY, NOW],
        ["grt_never", null, NOW],
        ["grt_plan", END, NOW],
        ["grt_roll", END, NOW],
      ],
    );
    assert.deepEqual(r.voids, ["grt_future", "grt_next"]);
  });

  test("keep_until_period_end: nothing lasts past the period end; keep: nothing changes", () => {
    const r = okValue(
      planCancel(ctxAt(NOW), {
        policy: { onCancel: "keep_until_period_end" },
        periodEnd: END,
        grants: grants(),
      }),
    );
    assert.equal(r.endsAt, END);
    assert.deepEqual(r.expiries, [
      { grantId: "grt_future", walletId: "wal_a", from: NEXT_END, to: END },
      { grantId: "grt_never", walletId: "wal_a", from: null, to: END },
    ]);
    assert.deepEqual(r.voids, ["grt_next"]);
    const keep = okValue(
      planCancel(ctxAt(NOW), { policy: { onCancel: "keep" }, periodEnd: END, grants: grants() }),
    );
    assert.deepEqual(keep, { endsAt: END, expiries: [], voids: [] });
  });

  test("refusals", () => {
    const c = ctxAt(NOW);
    const purchase = makeGrant({ id: "grt_buy", source: "purchase" });
    expectFail(
      planCancel(c, { policy: { onCancel: "forfeit" }, periodEnd: END, grants: [purchase] }),
      "invalid_argument",
    );
    const g = makeGrant({ id: "grt_a" });
    expectFail(
      planCancel(c, { policy: { onCancel: "forfeit" }, periodEnd: END, grants: [g, g] }),
      "invalid_argument",
    );
    expectFail(
      planCancel(c, { policy: { onCancel: "forfeit" }, periodEnd: NOW, grants: [] }),
      "invalid_argument",
      "periodEnd",
    );
    expectFail(
      planCancel(c, { policy: { onCancel: "later" as CancelMode }, periodEnd: END, grants: [] }),
      "invalid_argument",
      "policy.onCancel",
    );
  });

  test("expiries only move earlier, and no credit outlives the end", () => {
    const grantArb = fc.record({
      effective: fc.integer({ min: -40, max: 40 }),
      expires: fc.option(fc.integer({ min: 1, max: 80 }), { nil: null }),
      source: fc.constantFrom("plan" as const, "rollover" as const),
      active: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.constantFrom<CancelMode>("forfeit", "keep_until_period_end", "keep"),
        fc.array(grantArb, { maxLength: 8 }),
        (mode, specs) => {
          const now = 1_000_000;
          const periodEnd = now + 20 * DAY;
          const gs = specs.map((s, i) =>
            makeGrant({
              id: `grt_${i}`,
              source: s.source,
              effectiveAt: now + s.effective * DAY,
              expiresAt: s.expires === null ? null : now + (s.effective + s.expires) * DAY,
              status: s.active ? "active" : "expired",
            }),
          );
          const r = okValue(planCancel(ctxAt(now), { policy: { onCancel: mode }, periodEnd, grants: gs }));
          const changed = new Map(r.expiries.map((e) => [e.grantId, e.to]));
          for (const e of r.expiries) {
            assert.ok(e.from === null || e.to < e.from, "never extended");
            assert.ok(e.to >= now);
          }
          for (const g of gs) {
            const listed = changed.has(g.id) || r.voids.includes(g.id);
            if (g.status !== "active" || mode === "keep") {
              assert.ok(!listed);
              continue;
            }
            const end = changed.get(g.id) ?? g.expiresAt;
            if (!r.voids.includes(g.id)) {
              assert.ok(end !== null && end <= r.endsAt, `${g.id} outlives the subscription`);
              assert.ok(end > g.effectiveAt, "expires after it takes effect");
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Seat and plan changes
// ---------------------------------------------------------------------------------------------

/** A 30-day period, so fractions read easily. */
const P30: Period = { index: 4, from: utc(2024, 6, 1), to: utc(2024, 7, 1) };

describe("planSeatChange", () => {
  const plan = makePlan({ perSeat: true, allotment: credits(300n), interval: { unit: "day", count: 30 } });
  const base = { subscriptionId: "sub_1", plan, period: P30, walletId: "wal_a" };

  test("adding seats grants allotment × added × time left, effective now", () => {
    const now = P30.from + 10 * DAY;
    const r = okValue(planSeatChange(ctxAt(now), { ...base, grantedSeats: 3, seats: 5 }));
    assert.equal(r.amount, credits(400n));
    assert.equal(r.grantedSeats, 5);
    assert.deepEqual(r.grant, {
      walletId: "wal_a",
      amount: credits(400n),
      source: "plan",
      costBasis: 0n,
      currency: null,
      effectiveAt: now,
      expiresAt: P30.to,
      metadata: { subscription_id: "sub_1", plan_id: "pln_pro", period_index: "4", lifecycle: "seats_added" },
    });
    issue(r.grant!, now);
    const atStart = okValue(planSeatChange(ctxAt(P30.from), { ...base, grantedSeats: 3, seats: 4 }));
    assert.equal(atStart.amount, credits(300n), "a whole period at its start");
  });

  test("removing grants nothing; re-adding up to the high-water mark grants nothing", () => {
    const now = P30.from + DAY;
    const down = okValue(planSeatChange(ctxAt(now), { ...base, grantedSeats: 5, seats: 2 }));
    assert.deepEqual([down.amount, down.grant, down.seats, down.grantedSeats], [0n, null, 2, 5]);
    const back = okValue(planSeatChange(ctxAt(now), { ...base, grantedSeats: 5, seats: 5 }));
    assert.equal(back.amount, 0n);
    const above = okValue(planSeatChange(ctxAt(P30.from + 15 * DAY), { ...base, grantedSeats: 5, seats: 6 }));
    assert.equal(above.amount, credits(150n), "only the seat above the mark, for half the period");
  });

  test("a plan not priced per seat grants nothing; refusals", () => {
    const flat = okValue(
      planSeatChange(ctxAt(P30.from), { ...base, plan: makePlan(), grantedSeats: 1, seats: 9 }),
    );
    assert.deepEqual([flat.amount, flat.grant, flat.grantedSeats], [0n, null, 9]);
    expectFail(
      planSeatChange(ctxAt(P30.to), { ...base, grantedSeats: 1, seats: 2 }),
      "invalid_argument",
      "period",
    );
    expectFail(
      planSeatChange(ctxAt(P30.from - 1), { ...base, grantedSeats: 1, seats: 2 }),
      "invalid_argument",
      "period",
    );
    expectFail(
      planSeatChange(ctxAt(P30.from), { ...base, grantedSeats: 1, seats: -2 }),
      "invalid_argument",
      "seats",
    );
    expectFail(
      planSeatChange(ctxAt(P30.from), { ...base, grantedSeats: 0.5, seats: 2 }),
      "invalid_argument",
      "grantedSeats",
    );
  });

  test("prorate: whole at the start, nothing at the end, RangeError outside the period", () => {
    assert.equal(prorate(300n, P30, P30.from), 300n);
    assert.equal(prorate(300n, P30, P30.to), 0n);
    assert.equal(prorate(300n, P30, P30.to - 1), 0n, "rounded down");
    assert.throws(() => prorate(300n, P30, P30.to + 1), RangeError);
    assert.throws(() => prorate(300n, P30, P30.from - 1), RangeError);
  });

  test("prorating is exact, rounds down, and never over-grants whatever the sequence", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: credits(10_000n) }),
        fc.integer({ min: 1, max: 400 * DAY }),
        fc.integer({ min: 0, max: 50 }),
        fc.array(
          fc.record({
            at: fc.double({ min: 0, max: 1, noNaN: true }),
            seats: fc.integer({ min: 0, max: 80 }),
          }),
          {
            maxLength: 8,
          },
        ),
        (allotment, length, initial, steps) => {
          const period: Period = { index: 0, from: 1_700_000_000_000, to: 1_700_000_000_000 + length };
          const p = makePlan({ perSeat: true, allotment });
          const times = steps
            .map((s) => period.from + Math.min(length - 1, Math.floor(s.at * length)))
            .sort((a, b) => a - b);
          let granted = initial;
          let total = 0n;
          for (let k = 0; k < steps.length; k++) {
            const now = times[k]!;
            const seats = steps[k]!.seats;
            const r = okValue(
              planSeatChange(ctxAt(now), { ...base, plan: p, period, grantedSeats: granted, seats }),
            );
            const added = BigInt(Math.max(0, seats - granted));
            const full = allotment * added * BigInt(period.to - now);
            // amount = floor(full / length): amount × length ≤ full < (amount + 1) × length.
            assert.ok(r.amount * BigInt(length) <= full);
            assert.ok((r.amount + 1n) * BigInt(length) > full);
            assert.ok(r.amount <= allotment * added);
            assert.equal(r.amount, prorate(allotment * added, period, now));
            assert.equal(r.grantedSeats, Math.max(granted, seats));
            granted = r.grantedSeats;
            total += r.amount;
          }
          // Never more than adding the most seats reached, at once, at the first change.
          const peak = BigInt(granted - initial);
          const first = times[0];
          if (first === undefined) return;
          assert.ok(total <= prorate(allotment * peak, period, first));
          assert.ok(total <= allotment * peak);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("planPlanChange", () => {
  const basic = makePlan({ id: "pln_basic", allotment: credits(1000n) });
  const pro = makePlan({ id: "pln_pro", allotment: credits(3000n), rollover: { kind: "full" } });
  const base = { subscriptionId: "sub_1", grantedSeats: 1, period: P30, walletId: "wal_a" };

  test("upgrade: in force now, the difference prorated, under the new plan", () => {
    const now = P30.from + 15 * DAY;
    const r = okValue(planPlanChange(ctxAt(now), { ...base, from: basic, to: pro }));
    assert.equal(r.kind, "upgrade");
    assert.equal(r.effectiveAt, now);
    assert.equal(r.amount, credits(1000n));
    assert.equal(r.grant?.metadata?.plan_id, "pln_pro");
    assert.equal(r.grant?.metadata?.lifecycle, "upgrade");
    assert.equal(r.grant?.expiresAt, P30.to);
    issue(r.grant!, now);
  });

  test("per seat: measured at the high-water seats", () => {
    const seatBasic = makePlan({ id: "pln_sb", perSeat: true, allotment: credits(100n) });
    const seatPro = makePlan({ id: "pln_sp", perSeat: true, allotment: credits(250n) });
    const r = okValue(
      planPlanChange(ctxAt(P30.from), { ...base, grantedSeats: 4, from: seatBasic, to: seatPro }),
    );
    assert.equal(r.amount, credits(600n));
    // A flat plan with more credits than 4 seats of the per-seat one is an upgrade too.
    const flat = makePlan({ id: "pln_flat", allotment: credits(1000n) });
    const toFlat = okValue(
      planPlanChange(ctxAt(P30.from), { ...base, grantedSeats: 4, from: seatPro, to: flat }),
    );
    assert.equal(toFlat.kind, "downgrade");
  });

  test("downgrade (or the same allotment): at period end, nothing granted or taken back", () => {
    const now = P30.from + DAY;
    const down = okValue(planPlanChange(ctxAt(now), { ...base, from: pro, to: basic }));
    assert.deepEqual(down, { kind: "downgrade", effectiveAt: P30.to, amount: 0n, grant: null });
    const lateral = makePlan({ id: "pln_lateral", allotment: credits(1000n), rollover: { kind: "full" } });
    assert.equal(
      okValue(planPlanChange(ctxAt(now), { ...base, from: basic, to: lateral })).kind,
      "downgrade",
    );
  });

  test("refusals", () => {
    const c = ctxAt(P30.from);
    const yearly = makePlan({
      id: "pln_year",
      allotment: credits(9000n),
      interval: { unit: "year", count: 1 },
    });
    expectFail(planPlanChange(c, { ...base, from: basic, to: yearly }), "invalid_argument", "to.interval");
    expectFail(planPlanChange(c, { ...base, from: basic, to: basic }), "invalid_argument", "to");
    expectFail(
      planPlanChange(ctxAt(P30.to), { ...base, from: basic, to: pro }),
      "invalid_argument",
      "period",
    );
    expectFail(
      planPlanChange(c, { ...base, from: basic, to: { ...pro, allotment: -1n } }),
      "invalid_amount",
      "to.allotment",
    );
  });

  test("a string of changes never grants more than one upgrade to the highest plan reached", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: credits(5000n) }),
        fc.array(
          fc.record({
            at: fc.integer({ min: 0, max: 30 * DAY - 1 }),
            allotment: fc.bigInt({ min: 0n, max: credits(5000n) }),
          }),
          {
            maxLength: 8,
          },
        ),
        (initial, steps) => {
          let current = makePlan({ id: "pln_0", allotment: initial });
          const ordered = [...steps].sort((a, b) => a.at - b.at);
          let total = 0n;
          let highest = initial;
          for (let k = 0; k < ordered.length; k++) {
            const step = ordered[k]!;
            const now = P30.from + step.at;
            const to = makePlan({ id: `pln_${k + 1}`, allotment: step.allotment });
            const r = okValue(planPlanChange(ctxAt(now), { ...base, from: current, to }));
            if (step.allotment > current.allotment) {
              assert.equal(r.kind, "upgrade");
              assert.equal(r.amount, prorate(step.allotment - current.allotment, P30, now));
              current = to;
              if (step.allotment > highest) highest = step.allotment;
            } else {
              assert.deepEqual([r.kind, r.amount, r.effectiveAt], ["downgrade", 0n, P30.to]);
            }
            total += r.amount;
          }
          const first = ordered[0];
          if (first === undefined) return;
          assert.ok(total <= prorate(highest - initial, P30, P30.from + first.at));
        },
      ),
      { numRuns: 500 },
    );
  });
});
