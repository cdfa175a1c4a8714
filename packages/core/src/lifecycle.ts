import { inRange, UNIT } from "./amount.js";
import type { Context, GrantInput } from "./ledger.js";
import type { Grant } from "./model.js";
import { type OveragePolicy, type OveragePolicyInput, validateOveragePolicy } from "./overage.js";
import { fail, ok, type Result } from "./result.js";
import { daysInMonth } from "./time.js";

/**
 * Credit lifecycle's pure core: billing periods, plans, expiry and rollover policies,
 * renewals, seat and plan changes, cancellation (DESIGN.md, "Policies: meanings").
 *
 * Everything here plans; nothing writes. The storage layer loads a subscription and its
 * grants under lock, calls one of these functions with the clock, and writes the plan in one
 * transaction. Amounts are units (see {@link ./amount.ts}); times are epoch milliseconds in
 * UTC. Every division rounds down (toward zero, as amounts are never negative here): a
 * lifecycle operation may leave a unit behind, never create one.
 *
 * Exactly-once (invariant 7) is the storage layer's, on keys this module makes: a renewal
 * carries {@link renewalKey}, which a unique constraint admits once; a rollover replaces the
 * expiry of its source grants, whose status flips to `expired` once.
 */

// ---------------------------------------------------------------------------------------------
// Periods
// ---------------------------------------------------------------------------------------------

/** A billing period's length: `count` days, weeks, calendar months or calendar years. */
export interface Interval {
  readonly unit: "day" | "week" | "month" | "year";
  readonly count: number;
}

/** The n-th period of a schedule: `[from, to)` in epoch milliseconds; index 0 starts the schedule. */
export interface Period {
  readonly index: number;
  readonly from: number;
  readonly to: number;
}

/** Bounds on lifecycle inputs, shared with the API's validation. */
export const LIFECYCLE_LIMITS = {
  /** An interval counts 1 to 1,000 units. */
  intervalCountMax: 1000,
  /** A rolling expiry lasts 1 to 120 months. */
  rollingMonthsMax: 120,
  /** `maxPeriods` and a declining schedule cover at most 120 periods. */
  rolloverPeriodsMax: 120,
  /** Seats on one subscription: 0 to 1,000,000. */
  seatsMax: 1_000_000,
  /** Ids (plan, subscription, wallet, customer) are 1 to 100 characters. */
  idMax: 100,
  /** A plan's name is 1 to 200 characters. */
  nameMax: 200,
} as const;

const DAY_MS = 86_400_000;
/** The latest and earliest instants a JavaScript Date can hold (±100,000,000 days). */
const TIME_MAX = 8.64e15;

const isEpochMs = (t: unknown): t is number =>
  typeof t === "number" && Number.isSafeInteger(t) && Math.abs(t) <= TIME_MAX;

/** Checks an interval, as data from outside: `count` is a whole number from 1 to 1,000. */
export function validateInterval(interval: Interval): Result<Interval> {
  if (
    typeof interval !== "object" ||
    interval === null ||
    !["day", "week", "month", "year"].includes(interval.unit)
  ) {
    return fail("invalid_argument", 'An interval\'s unit is "day", "week", "month" or "year".', {
      field: "interval.unit",
    });
  }
  if (
    !Number.isInteger(interval.count) ||
    interval.count < 1 ||
    interval.count > LIFECYCLE_LIMITS.intervalCountMax
  ) {
    return fail(
      "invalid_argument",
      `An interval's count is a whole number from 1 to ${LIFECYCLE_LIMITS.intervalCountMax}.`,
      { field: "interval.count" },
    );
  }
  return ok({ unit: interval.unit, count: interval.count });
}

/**
 * The arithmetic below takes validated input: an invalid interval or time there is a bug of
 * the caller, so it throws a RangeError (like {@link divRound}) instead of returning a value.
 */
function assertInterval(interval: Interval): void {
  const checked = validateInterval(interval);
  if (!checked.ok) throw new RangeError(checked.error.message);
}

function assertTime(t: number, name: string): void {
  if (!isEpochMs(t)) throw new RangeError(`${name} must be whole epoch milliseconds within the Date range.`);
}

function checkedTime(t: number): number {
  if (!isEpochMs(t)) throw new RangeError("The period boundary falls outside the Date range.");
  return t;
}

/** Midnight UTC of a calendar day; `month` is 0–11. Date.UTC would map years 0–99 to 1900–1999. */
function utcMidnight(year: number, month: number, day: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, day);
  return d.getTime();
}

/** Milliseconds since midnight UTC; exact for negative times too, as UTC days are all 86,400,000 ms. */
const timeOfDay = (t: number): number => ((t % DAY_MS) + DAY_MS) % DAY_MS;

/** The calendar months one interval spans, or null for the fixed-length units. */
const intervalMonths = (interval: Interval): number | null =>
  interval.unit === "month" ? interval.count : interval.unit === "year" ? 12 * interval.count : null;

/** The milliseconds one interval spans, for the fixed-length units (UTC days have no DST). */
const intervalMs = (interval: Interval): number =>
  interval.count * DAY_MS * (interval.unit === "week" ? 7 : 1);

/**
 * Moves `t` by `months` calendar months in UTC, to day `anchorDay` of the target month, or its
 * last day when the month is shorter; the time of day is kept.
 */
function shiftMonths(t: number, months: number, anchorDay: number): number {
  const d = new Date(t);
  const total = d.getUTCMonth() + months;
  const year = d.getUTCFullYear() + Math.floor(total / 12);
  const month = total - 12 * Math.floor(total / 12);
  const day = Math.min(anchorDay, daysInMonth(year, month + 1));
  return checkedTime(utcMidnight(year, month, day) + timeOfDay(t));
}

/**
 * Adds one interval to `t`, in UTC. Days and weeks are fixed lengths (86,400,000 ms a day).
 * Months and years are calendar arithmetic: the result falls on day `anchorDay` of the target
 * month, clamped to the month's last day, at the same time of day.
 *
 * `anchorDay` (1–31, default: the day of `t`) is what keeps a schedule on its day after a
 * short month: from Jan 31 one month is Feb 29 (or 28), and from that Feb 29 with anchor 31 it
 * is Mar 31, where a plain Feb 29 + 1 month would drift to Mar 29. {@link periodAt} needs no
 * anchor: it counts every boundary from the schedule's start.
 *
 * @example
 * addInterval(Date.UTC(2024, 0, 31), { unit: "month", count: 1 })      // 2024-02-29
 * addInterval(Date.UTC(2024, 1, 29), { unit: "month", count: 1 }, 31)  // 2024-03-31
 * addInterval(Date.UTC(2024, 1, 29), { unit: "year", count: 1 })       // 2025-02-28
 */
export function addInterval(t: number, interval: Interval, anchorDay?: number): number {
  assertTime(t, "t");
  assertInterval(interval);
  const months = intervalMonths(interval);
  if (months === null) return checkedTime(t + intervalMs(interval));
  const anchor = anchorDay ?? new Date(t).getUTCDate();
  if (!Number.isInteger(anchor) || anchor < 1 || anchor > 31) {
    throw new RangeError("anchorDay is a day of the month, 1 to 31.");
  }
  return shiftMonths(t, months, anchor);
}

/** Where period `index` of a schedule begins: `start` moved by `index` intervals, anchored on start's day. */
function boundary(start: number, interval: Interval, index: number): number {
  const months = intervalMonths(interval);
  if (months === null) return checkedTime(start + index * intervalMs(interval));
  return shiftMonths(start, index * months, new Date(start).getUTCDate());
}

function assertIndex(index: number): void {
  if (!Number.isSafeInteger(index) || index < 0)
    throw new RangeError("A period index is a whole number ≥ 0.");
}

/**
 * Period `index` of the schedule that starts at `start`: `[from, to)`, where `from` is `start`
 * moved by `index` intervals and `to` is the next period's `from`. Consecutive periods meet
 * exactly (no gap, no overlap), and every boundary is computed from `start`, so a monthly
 * schedule started on the 31st comes back to the 31st in every month that has one.
 *
 * @example
 * periodAt(Date.UTC(2024, 0, 31), { unit: "month", count: 1 }, 1)
 * // { index: 1, from: 2024-02-29, to: 2024-03-31 }
 */
export function periodAt(start: number, interval: Interval, index: number): Period {
  assertTime(start, "start");
  assertInterval(interval);
  assertIndex(index);
  return { index, from: boundary(start, interval, index), to: boundary(start, interval, index + 1) };
}

/**
 * The index of the period holding `t` (`from ≤ t < to`), or -1 before `start`.
 * Exact: the calendar estimate is corrected against the boundaries themselves.
 */
export function periodIndexAt(start: number, interval: Interval, t: number): number {
  assertTime(start, "start");
  assertTime(t, "t");
  assertInterval(interval);
  if (t < start) return -1;
  const months = intervalMonths(interval);
  let n: number;
  if (months === null) {
    n = Math.floor((t - start) / intervalMs(interval));
  } else {
    const s = new Date(start);
    const e = new Date(t);
    const between = (e.getUTCFullYear() - s.getUTCFullYear()) * 12 + e.getUTCMonth() - s.getUTCMonth();
    n = Math.max(0, Math.floor(between / months));
  }
  // The estimate is off by at most one (a clamped month end, a time of day earlier than start's).
  while (n > 0 && boundary(start, interval, n) > t) n--;
  while (boundary(start, interval, n + 1) <= t) n++;
  return n;
}

/**
 * The periods whose start lies in `(t0, t1]`, in order: the boundaries a clock crosses when
 * it moves from `t0` to `t1`. Period 0 is listed when `start` itself is crossed; for every
 * other one, the period before it (index − 1) ended at its `from`.
 *
 * This is how the scheduler renews each period exactly once and in order after downtime: it
 * remembers the time it last ran and asks for `(last, now]`. The windows `(a, b]` and
 * `(b, c]` list, together, exactly what `(a, c]` lists, so advancing the clock in steps or at
 * once finds the same boundaries, none twice and none skipped.
 *
 * `limit` (default: no limit) caps the list to its first periods, for a scheduler that works
 * through a long downtime in chunks: it resumes with `t0` set to the last listed `from`.
 */
export function periodsBetween(
  start: number,
  interval: Interval,
  t0: number,
  t1: number,
  limit: number = Number.POSITIVE_INFINITY,
): Period[] {
  assertTime(start, "start");
  assertTime(t0, "t0");
  assertTime(t1, "t1");
  assertInterval(interval);
  if (!(limit >= 0)) throw new RangeError("limit must not be negative.");
  const periods: Period[] = [];
  if (t1 <= t0) return periods;
  // The first period starting after t0 follows the one holding t0 (or is period 0).
  let index = periodIndexAt(start, interval, t0) + 1;
  let from = boundary(start, interval, index);
  while (from <= t1 && periods.length < limit) {
    const to = boundary(start, interval, index + 1);
    periods.push({ index, from, to });
    index += 1;
    from = to;
  }
  return periods;
}

function checkPeriod(period: Period): Result<Period> {
  if (
    typeof period !== "object" ||
    period === null ||
    !Number.isSafeInteger(period.index) ||
    period.index < 0 ||
    !isEpochMs(period.from) ||
    !isEpochMs(period.to) ||
    period.from >= period.to
  ) {
    return fail(
      "invalid_argument",
      "A period has a whole index ≥ 0 and whole epoch milliseconds from < to.",
      { field: "period" },
    );
  }
  return ok(period);
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/**
 * When credits a plan grants expire:
 * - `period_end`: at the end of the period they were granted for (the usual "use it or lose
 *   it"; the only expiry a rollover policy works with, since rollover happens at period end);
 * - `never`;
 * - `rolling`: `months` calendar months after they were granted (clamped to the month's end
 *   like {@link addInterval}), whatever the period.
 */
export type ExpiryPolicy =
  | { readonly kind: "period_end" }
  | { readonly kind: "never" }
  | { readonly kind: "rolling"; readonly months: number };

/** Checks an expiry policy: a known kind; rolling months a whole number from 1 to 120. */
export function validateExpiryPolicy(policy: ExpiryPolicy): Result<ExpiryPolicy> {
  if (typeof policy !== "object" || policy === null) {
    return fail("invalid_argument", "An expiry policy is an object with a kind.", { field: "expiry" });
  }
  switch (policy.kind) {
    case "period_end":
    case "never":
      return ok({ kind: policy.kind });
    case "rolling":
      if (
        !Number.isInteger(policy.months) ||
        policy.months < 1 ||
        policy.months > LIFECYCLE_LIMITS.rollingMonthsMax
      ) {
        return fail(
          "invalid_argument",
          `A rolling expiry lasts a whole number of months from 1 to ${LIFECYCLE_LIMITS.rollingMonthsMax}.`,
          { field: "expiry.months" },
        );
      }
      return ok({ kind: "rolling", months: policy.months });
    default:
      return fail("invalid_argument", 'An expiry policy\'s kind is "period_end", "never" or "rolling".', {
        field: "expiry.kind",
      });
  }
}

/**
 * When credits granted at `grantedAt` for a period ending at `periodEnd` expire, under
 * `policy`: `periodEnd`, never (`null`), or `grantedAt` plus the rolling months.
 */
export function expiryFor(policy: ExpiryPolicy, grantedAt: number, periodEnd: number): number | null {
  switch (policy.kind) {
    case "period_end":
      return periodEnd;
    case "never":
      return null;
    case "rolling":
      return addInterval(grantedAt, { unit: "month", count: policy.months });
  }
}

/**
 * Grant sources whose default expiry a tenant sets ("expiry policies per source"). Plan and
 * rollover credits are absent: their expiry follows their plan.
 */
export const POLICY_SOURCES = ["purchase", "top_up", "gift", "promo", "contract", "adjustment"] as const;
export type PolicySource = (typeof POLICY_SOURCES)[number];

/**
 * The default expiry of grants from one source that name none: `never`, or `rolling` months
 * after the grant becomes effective (say 12 for enterprise credits). `period_end` has no
 * meaning outside a plan, so it is refused here.
 */
export type SourceExpiryPolicy =
  | { readonly kind: "never" }
  | { readonly kind: "rolling"; readonly months: number };

/** Checks a per-source expiry policy: a configurable source and a `never` or `rolling` policy. */
export function validateSourceExpiry(
  source: string,
  policy: ExpiryPolicy,
): Result<{ source: PolicySource; policy: SourceExpiryPolicy }> {
  if (!(POLICY_SOURCES as readonly string[]).includes(source)) {
    return fail(
      "invalid_argument",
      `Expiry policies are set per source: ${POLICY_SOURCES.join(", ")}. Plan and rollover credits follow their plan.`,
      { field: "source" },
    );
  }
  const checked = validateExpiryPolicy(policy);
  if (!checked.ok) return checked;
  if (checked.value.kind === "period_end") {
    return fail("invalid_argument", 'Only plan credits expire at period end; use "never" or "rolling".', {
      field: "expiry.kind",
    });
  }
  return ok({ source: source as PolicySource, policy: checked.value });
}

/** When a grant from a source with `policy`, effective at `effectiveAt`, expires; null: never. */
export const expiryForSource = (policy: SourceExpiryPolicy, effectiveAt: number): number | null =>
  policy.kind === "never" ? null : addInterval(effectiveAt, { unit: "month", count: policy.months });

/**
 * The most a rollover may carry in total at one period end. The base of the relative caps is
 * the period's allotment (the plan's allotment times the seats, for a per-seat plan):
 * - `absolute`: units, ≥ 0;
 * - `percentOfAllotment`: a whole percent, 0–100 (finer shares: use a multiple);
 * - `multipleOfAllotment`: a multiple at scale 9, ≥ 0 (1.5 times is `1_500_000_000n`).
 * Relative caps round down to the unit.
 */
export type RolloverCap =
  | { readonly absolute: bigint }
  | { readonly percentOfAllotment: number }
  | { readonly multipleOfAllotment: bigint };

/**
 * What happens, at period end, to the credits of that period's plan grants and of earlier
 * rollovers still unspent (DESIGN.md, "Rollover"):
 * - `none`: all of it goes to breakage;
 * - `full`: all of it is carried into the next period;
 * - `capped`: carried up to {@link RolloverCap} in total, the rest to breakage;
 * - `declining`: `schedule[g]` percent (whole, 0–100, never increasing) of what a credit still
 *   holds is carried at its g-th period end: `[100, 50, 0]` carries plan credits whole into
 *   the next period, half of what is left of them into the one after, then none. Beyond the
 *   schedule's end, nothing is carried.
 *
 * `maxPeriods` (with `full` and `capped`; 1–120) carries a credit at most that many times:
 * plan credits at most until the end of period `n + maxPeriods`.
 */
export type RolloverPolicy =
  | { readonly kind: "none" }
  | { readonly kind: "full"; readonly maxPeriods?: number }
  | { readonly kind: "capped"; readonly cap: RolloverCap; readonly maxPeriods?: number }
  | { readonly kind: "declining"; readonly schedule: readonly number[] };

const isPercent = (n: unknown): n is number =>
  Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 100;

function checkMaxPeriods(maxPeriods: number | undefined): Result<null> {
  if (
    maxPeriods !== undefined &&
    (!Number.isInteger(maxPeriods) || maxPeriods < 1 || maxPeriods > LIFECYCLE_LIMITS.rolloverPeriodsMax)
  ) {
    return fail(
      "invalid_argument",
      `maxPeriods is a whole number from 1 to ${LIFECYCLE_LIMITS.rolloverPeriodsMax} (for no rollover, use kind "none").`,
      { field: "rollover.maxPeriods" },
    );
  }
  return ok(null);
}

function checkCap(cap: RolloverCap): Result<RolloverCap> {
  const keys = typeof cap === "object" && cap !== null ? Object.keys(cap) : [];
  const bad = (message: string, field = "rollover.cap") => fail("invalid_argument", message, { field });
  if (keys.length !== 1) {
    return bad("A cap has exactly one of absolute, percentOfAllotment or multipleOfAllotment.");
  }
  if ("absolute" in cap) {
    if (typeof cap.absolute !== "bigint" || cap.absolute < 0n || !inRange(cap.absolute)) {
      return bad("An absolute cap is an amount ≥ 0.", "rollover.cap.absolute");
    }
    return ok({ absolute: cap.absolute });
  }
  if ("percentOfAllotment" in cap) {
    if (!isPercent(cap.percentOfAllotment)) {
      return bad("percentOfAllotment is a whole percent from 0 to 100.", "rollover.cap.percentOfAllotment");
    }
    return ok({ percentOfAllotment: cap.percentOfAllotment });
  }
  if ("multipleOfAllotment" in cap) {
    const m = cap.multipleOfAllotment;
    if (typeof m !== "bigint" || m < 0n || !inRange(m)) {
      return bad(
        "multipleOfAllotment is a multiple ≥ 0 at scale 9 (1.5 times is 1500000000).",
        "rollover.cap.multipleOfAllotment",
      );
    }
    return ok({ multipleOfAllotment: m });
  }
  return bad("A cap has exactly one of absolute, percentOfAllotment or multipleOfAllotment.");
}

/** Checks a rollover policy; see {@link RolloverPolicy} for the rules. */
export function validateRolloverPolicy(policy: RolloverPolicy): Result<RolloverPolicy> {
  if (typeof policy !== "object" || policy === null) {
    return fail("invalid_argument", "A rollover policy is an object with a kind.", { field: "rollover" });
  }
  switch (policy.kind) {
    case "none":
      return ok({ kind: "none" });
    case "full": {
      const max = checkMaxPeriods(policy.maxPeriods);
      if (!max.ok) return max;
      return ok(
        policy.maxPeriods === undefined ? { kind: "full" } : { kind: "full", maxPeriods: policy.maxPeriods },
      );
    }
    case "capped": {
      const max = checkMaxPeriods(policy.maxPeriods);
      if (!max.ok) return max;
      const cap = checkCap(policy.cap);
      if (!cap.ok) return cap;
      return ok(
        policy.maxPeriods === undefined
          ? { kind: "capped", cap: cap.value }
          : { kind: "capped", cap: cap.value, maxPeriods: policy.maxPeriods },
      );
    }
    case "declining": {
      const s = policy.schedule;
      if (
        !Array.isArray(s) ||
        s.length < 1 ||
        s.length > LIFECYCLE_LIMITS.rolloverPeriodsMax ||
        !s.every(isPercent) ||
        s.some((p, i) => i > 0 && p > (s[i - 1] as number))
      ) {
        return fail(
          "invalid_argument",
          `A declining schedule lists 1 to ${LIFECYCLE_LIMITS.rolloverPeriodsMax} whole percents (0–100), never increasing, like [100, 50, 0].`,
          { field: "rollover.schedule" },
        );
      }
      return ok({ kind: "declining", schedule: [...s] });
    }
    default:
      return fail(
        "invalid_argument",
        'A rollover policy\'s kind is "none", "full", "capped" or "declining".',
        {
          field: "rollover.kind",
        },
      );
  }
}

/**
 * What happens to a subscription's credits (its plan and rollover grants) when it is
 * cancelled; other grants of the wallet are never touched:
 * - `forfeit`: they expire at once; what remains goes to breakage;
 * - `keep_until_period_end`: usable until the current period ends, then expire;
 * - `keep`: they keep their own expiry.
 * In every case nothing is renewed or rolled over after the subscription ends.
 */
export type CancelMode = "forfeit" | "keep_until_period_end" | "keep";

/** A plan's cancellation rule. */
export interface CancelPolicy {
  readonly onCancel: CancelMode;
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

/** A sum of money: units at the same scale as amounts (9 decimals), and its ISO 4217 currency. */
export interface Money {
  readonly amount: bigint;
  readonly currency: string;
}

/**
 * Who a plan's credits are allotted to (DESIGN.md, "Pooling"):
 * - `customer` (the default): the period's allotment (times the seats, for a per-seat plan)
 *   goes to the customer's pool wallet, which every member draws after their own grants;
 * - `per_member`: the allotment is per member. At each renewal every member wallet of the
 *   customer receives it, split by {@link splitAllocation}: `poolSharePercent` percent goes to
 *   the customer's pool wallet (shared by all members), the rest stays in the member's own
 *   wallet. 0 keeps every credit personal; 100 pools them all. A customer without member
 *   wallets receives nothing. Not combinable with `perSeat`: the members are the seats.
 */
export type Allocation =
  | { readonly mode: "customer" }
  | { readonly mode: "per_member"; readonly poolSharePercent: number };

/** Checks an allocation: a known mode; a pool share a whole percent from 0 to 100. */
export function validateAllocation(allocation: Allocation): Result<Allocation> {
  if (typeof allocation !== "object" || allocation === null) {
    return fail("invalid_argument", "An allocation is an object with a mode.", { field: "allocation" });
  }
  switch (allocation.mode) {
    case "customer":
      return ok({ mode: "customer" });
    case "per_member":
      if (!isPercent(allocation.poolSharePercent)) {
        return fail(
          "invalid_argument",
          "poolSharePercent is a whole percent from 0 to 100: the share of each member's allocation that goes to the shared pool.",
          { field: "allocation.poolSharePercent" },
        );
      }
      return ok({ mode: "per_member", poolSharePercent: allocation.poolSharePercent });
    default:
      return fail("invalid_argument", 'An allocation\'s mode is "customer" or "per_member".', {
        field: "allocation.mode",
      });
  }
}

/**
 * A plan: a base fee per period plus included credits (DESIGN.md, "Plan, subscription").
 * Data only; a subscription follows one plan and renews it every {@link Interval}.
 */
export interface Plan {
  readonly id: string;
  readonly name: string;
  /** Charged per period; Drawdown records it, invoicing is the caller's. */
  readonly baseFee: Money;
  readonly interval: Interval;
  /** Credits included per period, in units (per seat when `perSeat`); 0 for a fee-only plan. */
  readonly allotment: bigint;
  readonly perSeat: boolean;
  readonly rollover: RolloverPolicy;
  /** When the plan's credits expire. */
  readonly expiry: ExpiryPolicy;
  readonly cancel: CancelPolicy;
  /** Who receives the allotment: the customer's pool, or each member (with a pool share). */
  readonly allocation: Allocation;
  /**
   * The overage policy its subscribers' pool wallets take (at subscribe and plan change),
   * unless a wallet set its own; null (or absent, for plans stored before): none.
   */
  readonly overage?: OveragePolicy | null;
}

/** A plan as a caller writes it: the policies default to no rollover, expiry at period end, credits kept until period end. */
export interface PlanInput {
  readonly id: string;
  readonly name: string;
  readonly baseFee: Money;
  readonly interval: Interval;
  readonly allotment: bigint;
  /** Default: false. */
  readonly perSeat?: boolean;
  /** Default: `{ kind: "none" }`. */
  readonly rollover?: RolloverPolicy;
  /** Default: `{ kind: "period_end" }`. */
  readonly expiry?: ExpiryPolicy;
  /** Default: `{ onCancel: "keep_until_period_end" }`. */
  readonly cancel?: CancelPolicy;
  /** Default: `{ mode: "customer" }`. */
  readonly allocation?: Allocation;
  /** Default: none (subscribers keep their wallet's policy). */
  readonly overage?: OveragePolicyInput | null;
}

const CANCEL_MODES: readonly CancelMode[] = ["forfeit", "keep_until_period_end", "keep"];

function checkId(id: unknown, field: string): Result<string> {
  if (typeof id !== "string" || id.length === 0 || id.length > LIFECYCLE_LIMITS.idMax) {
    return fail("invalid_argument", `${field} is a string of 1 to ${LIFECYCLE_LIMITS.idMax} characters.`, {
      field,
    });
  }
  return ok(id);
}

function checkSeats(seats: unknown, field: string): Result<number> {
  if (!Number.isInteger(seats) || (seats as number) < 0 || (seats as number) > LIFECYCLE_LIMITS.seatsMax) {
    return fail("invalid_argument", `${field} is a whole number from 0 to ${LIFECYCLE_LIMITS.seatsMax}.`, {
      field,
    });
  }
  return ok(seats as number);
}

/**
 * Validates a plan and fills its defaults. Fails with `invalid_argument` (its `details.field`
 * names the field) or `invalid_amount`. Beyond each field's own rules: a rollover policy other
 * than `none` needs expiry `period_end`, because rollover happens when credits end with their
 * period; credits that outlive it (`never`, `rolling`) have nothing to roll. A `per_member`
 * allocation cannot be per seat.
 */
export function validatePlan(input: PlanInput): Result<Plan> {
  const id = checkId(input.id, "id");
  if (!id.ok) return id;
  if (
    typeof input.name !== "string" ||
    input.name.trim() === "" ||
    input.name.length > LIFECYCLE_LIMITS.nameMax
  ) {
    return fail("invalid_argument", `A plan's name is 1 to ${LIFECYCLE_LIMITS.nameMax} characters.`, {
      field: "name",
    });
  }
  const fee = input.baseFee;
  if (
    typeof fee !== "object" ||
    fee === null ||
    typeof fee.amount !== "bigint" ||
    fee.amount < 0n ||
    !inRange(fee.amount)
  ) {
    return fail("invalid_amount", "The base fee is an amount ≥ 0.", { field: "baseFee.amount" });
  }
  if (typeof fee.currency !== "string" || !/^[A-Z]{3}$/.test(fee.currency)) {
    return fail("invalid_argument", 'The base fee\'s currency is an ISO 4217 code such as "USD".', {
      field: "baseFee.currency",
    });
  }
  const interval = validateInterval(input.interval);
  if (!interval.ok) return interval;
  if (typeof input.allotment !== "bigint" || input.allotment < 0n || !inRange(input.allotment)) {
    return fail("invalid_amount", "The allotment is an amount ≥ 0 (credits per period, in units).", {
      field: "allotment",
    });
  }
  const perSeat = input.perSeat ?? false;
  if (typeof perSeat !== "boolean") {
    return fail("invalid_argument", "perSeat is true or false.", { field: "perSeat" });
  }
  const rollover = validateRolloverPolicy(input.rollover ?? { kind: "none" });
  if (!rollover.ok) return rollover;
  const expiry = validateExpiryPolicy(input.expiry ?? { kind: "period_end" });
  if (!expiry.ok) return expiry;
  if (rollover.value.kind !== "none" && expiry.value.kind !== "period_end") {
    return fail(
      "invalid_argument",
      'Rollover works on credits that expire at period end; with this expiry they outlive the period. Use expiry "period_end" or rollover "none".',
      { field: "rollover" },
    );
  }
  const cancel = input.cancel ?? { onCancel: "keep_until_period_end" };
  if (typeof cancel !== "object" || cancel === null || !CANCEL_MODES.includes(cancel.onCancel)) {
    return fail("invalid_argument", 'onCancel is "forfeit", "keep_until_period_end" or "keep".', {
      field: "cancel.onCancel",
    });
  }
  const allocation = validateAllocation(
    input.allocation === undefined ? { mode: "customer" } : input.allocation,
  );
  if (!allocation.ok) return allocation;
  if (allocation.value.mode === "per_member" && perSeat) {
    return fail(
      "invalid_argument",
      "A per_member allocation is already per member wallet; it cannot also be per seat. Use per_seat false.",
      { field: "allocation" },
    );
  }
  let overage: OveragePolicy | null = null;
  if (input.overage !== undefined && input.overage !== null) {
    const v = validateOveragePolicy(input.overage);
    if (!v.ok) {
      const field = v.error.details?.field ? `overage.${v.error.details.field}` : "overage";
      return fail(v.error.code, `${field}: ${v.error.message}`, { field });
    }
    overage = v.value;
  }
  return ok({
    id: id.value,
    name: input.name,
    baseFee: { amount: fee.amount, currency: fee.currency },
    interval: interval.value,
    allotment: input.allotment,
    perSeat,
    rollover: rollover.value,
    expiry: expiry.value,
    cancel: { onCancel: cancel.onCancel },
    allocation: allocation.value,
    ...(overage ? { overage } : {}),
  });
}

/** A period's allotment for `seats` seats: the plan's allotment, times the seats for a per-seat plan. */
export const periodAllotment = (plan: Plan, seats: number): bigint =>
  plan.perSeat ? plan.allotment * BigInt(seats) : plan.allotment;

// ---------------------------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------------------------

/** Metadata keys the lifecycle writes on the grants it plans. */
export const LIFECYCLE_METADATA = {
  subscription: "subscription_id",
  plan: "plan_id",
  period: "period_index",
  /** Why a plan grant was issued: `renewal`, `seats_added`, `upgrade` or `member_added`. */
  reason: "lifecycle",
  /** On a per-member plan's grants: `personal` (a member's own part) or `pool_share` (the pooled part). */
  allocation: "allocation",
  /** On a per-member plan's grants: the member wallet the allocation is for (a renewal's summed pool grant has none). */
  member: "member_wallet_id",
  /** On a renewal's summed pool grant: how many members' shares it holds. */
  members: "member_count",
  /** On a rollover grant: the grant it was carried from. */
  source: "source_grant_id",
  /** On a rollover grant: the plan grant its credits were first granted in. */
  origin: "origin_grant_id",
  /** On a rollover grant: how many period ends its credits have been carried across (≥ 1). */
  generation: "rollover_generation",
} as const;

/**
 * The idempotency key of a period's renewal: `renewal:<subscriptionId>:<periodIndex>`. The
 * storage layer stores it under a unique constraint, so a period renews once whatever the
 * retries, crashes or instances (invariant 7). The index is last and all digits, so the key
 * reads back unambiguously from its last colon.
 */
export const renewalKey = (subscriptionId: string, periodIndex: number): string =>
  `renewal:${subscriptionId}:${periodIndex}`;

/** What a period's renewal needs. `seats` is ignored unless the plan is per seat. */
export interface RenewalInput {
  readonly subscriptionId: string;
  readonly plan: Plan;
  readonly seats: number;
  readonly period: Period;
  readonly walletId: string;
  readonly customerId: string;
}

/** A period's renewal, planned. */
export interface RenewalPlan {
  /** {@link renewalKey}: write the grant only if this key is new. */
  readonly key: string;
  readonly customerId: string;
  readonly period: Period;
  /** The period's allotment: plan allotment × seats for a per-seat plan, else the allotment. */
  readonly amount: bigint;
  /** The grant to issue (with {@link issueGrant}); null when the amount is zero. */
  readonly grant: GrantInput | null;
  /**
   * True when the grant's expiry is already past at `ctx.now` (a renewal caught up after
   * downtime longer than the credits live): issueGrant refuses a grant expired on arrival.
   * The key is still to be recorded; the storage layer decides what the lost credits become.
   */
  readonly lapsed: boolean;
}

/** Why the lifecycle issued a plan grant (its `lifecycle` metadata). */
export type PlanGrantReason = "renewal" | "seats_added" | "upgrade" | "member_added";

const renewalMetadata = (
  subscriptionId: string,
  plan: Plan,
  period: Period,
  reason: PlanGrantReason,
): Record<string, string> => ({
  [LIFECYCLE_METADATA.subscription]: subscriptionId,
  [LIFECYCLE_METADATA.plan]: plan.id,
  [LIFECYCLE_METADATA.period]: String(period.index),
  [LIFECYCLE_METADATA.reason]: reason,
});

/** A plan grant for `period`: source `plan`, free (cost basis 0), effective at `grantedAt`. */
function planGrant(
  subscriptionId: string,
  walletId: string,
  plan: Plan,
  period: Period,
  amount: bigint,
  grantedAt: number,
  reason: PlanGrantReason,
  extra: Readonly<Record<string, string>> = {},
): GrantInput {
  return {
    walletId,
    amount,
    source: "plan",
    costBasis: 0n,
    currency: null,
    effectiveAt: grantedAt,
    expiresAt: expiryFor(plan.expiry, grantedAt, period.to),
    metadata: { ...renewalMetadata(subscriptionId, plan, period, reason), ...extra },
  };
}

function checkSubscription(
  input: { subscriptionId: string; walletId: string; plan: Plan },
  field = "plan",
): Result<Plan> {
  const sub = checkId(input.subscriptionId, "subscriptionId");
  if (!sub.ok) return sub;
  const wallet = checkId(input.walletId, "walletId");
  if (!wallet.ok) return wallet;
  const plan = validatePlan(input.plan);
  if (!plan.ok) {
    const inner = plan.error.details?.field;
    return fail(plan.error.code, plan.error.message, { field: inner ? `${field}.${inner}` : field });
  }
  return plan;
}

/**
 * Plans the renewal of one period: a grant of the period's allotment, effective at the
 * period's start and expiring by the plan's expiry policy, keyed by {@link renewalKey}.
 *
 * Plan credits are free (cost basis 0): the base fee pays for the subscription, and
 * Drawdown does not spread it over the credits, so their breakage is not revenue of its own.
 * The scheduler finds the periods to renew with {@link periodsBetween}; one renewed early
 * (before `from`) is simply not effective yet.
 */
export function planRenewal(ctx: Context, input: RenewalInput): Result<RenewalPlan> {
  const plan = checkSubscription(input);
  if (!plan.ok) return plan;
  const customer = checkId(input.customerId, "customerId");
  if (!customer.ok) return customer;
  const seats = checkSeats(input.seats, "seats");
  if (!seats.ok) return seats;
  const period = checkPeriod(input.period);
  if (!period.ok) return period;
  if (plan.value.allocation.mode !== "customer") {
    return fail("invalid_argument", "A per-member plan renews with planMemberRenewal.", {
      field: "plan.allocation",
    });
  }
  const amount = periodAllotment(plan.value, seats.value);
  if (!inRange(amount)) {
    return fail("invalid_amount", "The period's allotment (allotment × seats) is out of range.", {
      field: "seats",
    });
  }
  const { from, to } = period.value;
  const grant =
    amount > 0n
      ? planGrant(input.subscriptionId, input.walletId, plan.value, period.value, amount, from, "renewal")
      : null;
  const expiresAt = grant?.expiresAt ?? null;
  return ok({
    key: renewalKey(input.subscriptionId, period.value.index),
    customerId: input.customerId,
    period: { index: period.value.index, from, to },
    amount,
    grant,
    lapsed: expiresAt !== null && expiresAt <= ctx.now,
  });
}

// ---------------------------------------------------------------------------------------------
// Per-member allocations and pooling
// ---------------------------------------------------------------------------------------------

/** A member's allocation split in two: what stays in the member's wallet and what goes to the pool. */
export interface AllocationSplit {
  readonly personal: bigint;
  readonly pool: bigint;
}

/**
 * Splits a member's allocation: the pool receives `amount × poolSharePercent / 100`, rounded
 * down, and the member keeps the rest. So `personal + pool = amount` exactly, always: the
 * split never creates or loses a unit, and a remainder unit of the division stays personal.
 *
 * @example
 * splitAllocation(credits(25n), 20) // { personal: 20 credits, pool: 5 credits }
 * splitAllocation(7n, 50)           // { personal: 4n, pool: 3n }
 */
export function splitAllocation(amount: bigint, poolSharePercent: number): AllocationSplit {
  if (typeof amount !== "bigint" || amount < 0n) throw new RangeError("amount is a bigint ≥ 0.");
  if (!isPercent(poolSharePercent)) throw new RangeError("poolSharePercent is a whole percent, 0 to 100.");
  const pool = (amount * BigInt(poolSharePercent)) / 100n;
  return { personal: amount - pool, pool };
}

/** The pool share of a per-member plan; fails for a plan allotted to the customer. */
function poolShareOf(plan: Plan): Result<number> {
  if (plan.allocation.mode !== "per_member") {
    return fail("invalid_argument", "The plan allots its credits to the customer, not per member.", {
      field: "plan.allocation",
    });
  }
  return ok(plan.allocation.poolSharePercent);
}

/** What a per-member plan's period renewal needs. */
export interface MemberRenewalInput {
  readonly subscriptionId: string;
  /** A plan with a `per_member` allocation. */
  readonly plan: Plan;
  readonly period: Period;
  readonly customerId: string;
  /** The customer's pool wallet: it receives the members' pool shares. */
  readonly poolWalletId: string;
  /** The member wallets to allocate to (each at most once). */
  readonly memberWalletIds: readonly string[];
}

/** One member's part of a renewal. */
export interface MemberAllocation {
  readonly walletId: string;
  /** The member's own part: a plan grant in its wallet (null when zero). */
  readonly personal: bigint;
  /** The member's share paid into the pool (summed into the renewal's pool grant). */
  readonly pool: bigint;
  readonly grant: GrantInput | null;
}

/** A per-member plan's period renewal, planned. */
export interface MemberRenewalPlan {
  /** {@link renewalKey}: the period renews once, members and pool together. */
  readonly key: string;
  readonly period: Period;
  /** One line per member wallet, in wallet id order. */
  readonly members: readonly MemberAllocation[];
  /** The sum of the members' pool shares. */
  readonly pool: bigint;
  /** One pool grant holding every member's share (null when zero). */
  readonly poolGrant: GrantInput | null;
  /** As {@link RenewalPlan.lapsed}: the credits' expiry is already past; issue nothing. */
  readonly lapsed: boolean;
}

/**
 * Plans the renewal of one period of a `per_member` plan: every member wallet receives the
 * allotment, split by {@link splitAllocation} into its own plan grant (`allocation: personal`,
 * naming the member wallet) and a share for the pool; the members' shares are summed into one
 * plan grant of the pool wallet (`allocation: pool_share`, with `member_count`), so a pool
 * holds one grant per period however many members it has. Grants are effective at the
 * period's start and expire by the plan's expiry policy, like {@link planRenewal}'s.
 *
 * Exact: Σ personal + pool = allotment × members. With no member wallet nothing is granted.
 */
export function planMemberRenewal(ctx: Context, input: MemberRenewalInput): Result<MemberRenewalPlan> {
  const plan = checkSubscription({ ...input, walletId: input.poolWalletId });
  if (!plan.ok) return plan;
  const share = poolShareOf(plan.value);
  if (!share.ok) return share;
  const customer = checkId(input.customerId, "customerId");
  if (!customer.ok) return customer;
  const period = checkPeriod(input.period);
  if (!period.ok) return period;
  const ids = [...input.memberWalletIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [i, id] of ids.entries()) {
    const checked = checkId(id, "memberWalletIds");
    if (!checked.ok) return checked;
    if (id === input.poolWalletId || (i > 0 && ids[i - 1] === id)) {
      return fail("invalid_argument", `Member wallet ${id} is listed twice or is the pool.`, {
        field: "memberWalletIds",
      });
    }
  }
  const split = splitAllocation(plan.value.allotment, share.value);
  const pool = split.pool * BigInt(ids.length);
  if (!inRange(pool)) {
    return fail("invalid_amount", "The pool's allotment (pool share × members) is out of range.", {
      field: "memberWalletIds",
    });
  }
  const { from } = period.value;
  const members = ids.map((walletId) => ({
    walletId,
    personal: split.personal,
    pool: split.pool,
    grant:
      split.personal > 0n
        ? planGrant(
            input.subscriptionId,
            walletId,
            plan.value,
            period.value,
            split.personal,
            from,
            "renewal",
            {
              [LIFECYCLE_METADATA.allocation]: "personal",
              [LIFECYCLE_METADATA.member]: walletId,
            },
          )
        : null,
  }));
  const poolGrant =
    pool > 0n
      ? planGrant(input.subscriptionId, input.poolWalletId, plan.value, period.value, pool, from, "renewal", {
          [LIFECYCLE_METADATA.allocation]: "pool_share",
          [LIFECYCLE_METADATA.members]: String(ids.length),
        })
      : null;
  const expiresAt = expiryFor(plan.value.expiry, from, period.value.to);
  return ok({
    key: renewalKey(input.subscriptionId, period.value.index),
    period: period.value,
    members,
    pool,
    poolGrant,
    lapsed: expiresAt !== null && expiresAt <= ctx.now,
  });
}

/** What a member joining during a period of a per-member plan needs. */
export interface MemberAdditionInput {
  readonly subscriptionId: string;
  readonly plan: Plan;
  /** The current period; `ctx.now` must fall within it. */
  readonly period: Period;
  readonly poolWalletId: string;
  readonly memberWalletId: string;
}

/** A joining member's allocation, planned. */
export interface MemberAdditionPlan {
  /** The allotment prorated to the rest of the period (rounded down), before the split. */
  readonly amount: bigint;
  readonly personal: bigint;
  readonly pool: bigint;
  /** Into the member's wallet; null when zero. */
  readonly personalGrant: GrantInput | null;
  /** Into the pool wallet, naming the member; null when zero. */
  readonly poolGrant: GrantInput | null;
}

/**
 * Plans the allocation of a member wallet created during a period of a `per_member` plan:
 * the allotment prorated to the rest of the period like {@link planSeatChange} (rounded down),
 * then split by {@link splitAllocation}. Both grants are effective now, expire by the plan's
 * expiry policy and carry `lifecycle: member_added` and the member wallet. Prorating, not the
 * full allotment, so creating members late in a period cannot mint whole allocations.
 * The storage layer keys it per member and period, so it is granted once.
 */
export function planMemberAddition(ctx: Context, input: MemberAdditionInput): Result<MemberAdditionPlan> {
  const plan = checkSubscription({ ...input, walletId: input.poolWalletId });
  if (!plan.ok) return plan;
  const share = poolShareOf(plan.value);
  if (!share.ok) return share;
  const member = checkId(input.memberWalletId, "memberWalletId");
  if (!member.ok) return member;
  if (input.memberWalletId === input.poolWalletId) {
    return fail("invalid_argument", "The member wallet is the pool.", { field: "memberWalletId" });
  }
  const period = checkWithinPeriod(ctx.now, input.period);
  if (!period.ok) return period;
  const amount = prorate(plan.value.allotment, period.value, ctx.now);
  const split = splitAllocation(amount, share.value);
  const grant = (walletId: string, part: bigint, allocation: "personal" | "pool_share") =>
    part > 0n
      ? planGrant(input.subscriptionId, walletId, plan.value, period.value, part, ctx.now, "member_added", {
          [LIFECYCLE_METADATA.allocation]: allocation,
          [LIFECYCLE_METADATA.member]: input.memberWalletId,
        })
      : null;
  return ok({
    amount,
    personal: split.personal,
    pool: split.pool,
    personalGrant: grant(input.memberWalletId, split.personal, "personal"),
    poolGrant: grant(input.poolWalletId, split.pool, "pool_share"),
  });
}

/**
 * The base of a per-member plan's relative rollover caps, per wallet: rollover is planned
 * wallet by wallet, each capped against its own period allotment, so one member's unused
 * credits never use up another's cap. A member wallet's base is its personal part of the
 * allotment; the pool's is the pool share times the members allocated in the period.
 */
export function memberRolloverBase(plan: Plan, wallet: "member" | "pool", members: number): bigint {
  const share = plan.allocation.mode === "per_member" ? plan.allocation.poolSharePercent : 0;
  const split = splitAllocation(plan.allotment, share);
  return wallet === "member" ? split.personal : split.pool * BigInt(members);
}

// ---------------------------------------------------------------------------------------------
// Rollover
// ---------------------------------------------------------------------------------------------

/** A grant that ends with the period, with its lineage: what a rollover decides about. */
export interface RolloverCandidate {
  /** An active `plan` or `rollover` grant expiring exactly at the period end. */
  readonly grant: Grant;
  /** Period ends its credits have already been carried across: 0 for a plan grant, ≥ 1 for a rollover grant. */
  readonly generation: number;
  /** The plan grant its credits were first granted in (the grant itself at generation 0). */
  readonly originGrantId: string;
}

/**
 * Reads a grant's lineage from the metadata the lifecycle wrote ({@link LIFECYCLE_METADATA}):
 * a plan grant is generation 0 and its own origin; a rollover grant carries both.
 */
export function rolloverCandidate(grant: Grant): Result<RolloverCandidate> {
  if (grant.source === "plan") return ok({ grant, generation: 0, originGrantId: grant.id });
  if (grant.source !== "rollover") {
    return fail(
      "invalid_argument",
      `Grant ${grant.id} is a ${grant.source} grant; only plan credits roll over.`,
      {
        grant_id: grant.id,
      },
    );
  }
  const generation = Number(grant.metadata[LIFECYCLE_METADATA.generation]);
  const origin = grant.metadata[LIFECYCLE_METADATA.origin];
  if (!Number.isSafeInteger(generation) || generation < 1 || origin === undefined || origin === "") {
    return fail("invalid_argument", `Rollover grant ${grant.id} lacks its lineage metadata.`, {
      grant_id: grant.id,
    });
  }
  return ok({ grant, generation, originGrantId: origin });
}

/** What a period end's rollover needs. */
export interface RolloverInput {
  readonly policy: RolloverPolicy;
  /** The plan's allotment per period (per seat for a per-seat plan): the base of relative caps. */
  readonly allotment: bigint;
  /** The seats the period was granted for; 1 for a plan not priced per seat. */
  readonly seats: number;
  /** The end of the closing period: when the candidates expire and the rollover grants begin. */
  readonly periodEnd: number;
  /** The end of the next period: when the rollover grants expire, unless `expiresAt` says otherwise. */
  readonly nextPeriodEnd: number;
  /** The rollover grants' expiry; default `nextPeriodEnd`. Null: never (they will not roll again). */
  readonly expiresAt?: number | null;
  /** The period's plan grants and the earlier rollover grants, all expiring at `periodEnd`. */
  readonly expiringGrants: readonly RolloverCandidate[];
}

/** One candidate's outcome. `carried + breakage = remaining`, exactly. */
export interface RolloverLine {
  readonly grantId: string;
  readonly walletId: string;
  readonly generation: number;
  readonly remaining: bigint;
  readonly carried: bigint;
  readonly breakage: bigint;
  /** The new rollover grant holding `carried`; null when nothing is carried. */
  readonly rollover: GrantInput | null;
}

/** A period end's rollover, planned. */
export interface RolloverPlan {
  /** One line per candidate, in the order the cap is filled: generation, then grant id. */
  readonly lines: readonly RolloverLine[];
  readonly remaining: bigint;
  readonly carried: bigint;
  readonly breakage: bigint;
  /** The cap on the total carried, for a capped policy; null otherwise. */
  readonly cap: bigint | null;
  /** True when the rollover grants' expiry is already past at `ctx.now` (see {@link RenewalPlan.lapsed}). */
  readonly lapsed: boolean;
}

/** The most of `remaining` a policy lets a credit of `generation` carry, before any cap. Floors. */
function eligibleToCarry(policy: RolloverPolicy, remaining: bigint, generation: number): bigint {
  switch (policy.kind) {
    case "none":
      return 0n;
    case "full":
    case "capped":
      return policy.maxPeriods !== undefined && generation >= policy.maxPeriods ? 0n : remaining;
    case "declining":
      return (remaining * BigInt(policy.schedule[generation] ?? 0)) / 100n;
  }
}

/** The cap on a rollover's total, or null when uncapped. Relative caps floor. */
export function rolloverCap(policy: RolloverPolicy, allotment: bigint, seats: number): bigint | null {
  if (policy.kind !== "capped") return null;
  const base = allotment * BigInt(seats);
  const cap = policy.cap;
  if ("absolute" in cap) return cap.absolute;
  if ("percentOfAllotment" in cap) return (base * BigInt(cap.percentOfAllotment)) / 100n;
  return (base * cap.multipleOfAllotment) / UNIT;
}

/**
 * Plans the rollover at a period end: for each grant ending with the period, how much of what
 * it still holds is carried into a new rollover grant and how much goes to breakage.
 *
 * Exact and conservative: per grant, `carried + breakage = remaining`, both ≥ 0. Each
 * candidate first gets what its policy allows for its generation ({@link RolloverPolicy};
 * a declining percent rounds down to the unit, so rounding never creates a credit). A cap
 * then bounds the total carried: it is filled in candidate order, lowest generation first
 * (the freshest credits, which can still be carried the longest), then by grant id; the
 * total carried is exactly `min(cap, sum allowed)`.
 *
 * Each carried amount becomes its own rollover grant, linked to its source by metadata
 * ({@link LIFECYCLE_METADATA}: source, origin, generation + 1), effective at `periodEnd`,
 * expiring at `nextPeriodEnd` by default, and keeping the source's wallet, cost basis (paid
 * credits stay paid, so their later breakage is still revenue), priority and scope.
 *
 * The journal movement is the storage layer's: per candidate, its remaining leaves it, the
 * carried part into its rollover grant and the breakage to the breakage account, in one
 * balanced transaction, and its status becomes `expired`. This replaces the candidates'
 * ordinary expiry, so it must be planned in the write that would expire them (expiry on
 * touch included); a grant already expired has had its remainder moved to breakage.
 *
 * Fails with `invalid_argument` before the period has ended (`ctx.now < periodEnd`), or when
 * a candidate is not an active plan or rollover grant expiring at `periodEnd`, appears twice,
 * or has a generation that does not match its source.
 */
export function planRollover(ctx: Context, input: RolloverInput): Result<RolloverPlan> {
  const policy = validateRolloverPolicy(input.policy);
  if (!policy.ok) return policy;
  if (typeof input.allotment !== "bigint" || input.allotment < 0n || !inRange(input.allotment)) {
    return fail("invalid_amount", "The allotment is an amount ≥ 0.", { field: "allotment" });
  }
  const seats = checkSeats(input.seats, "seats");
  if (!seats.ok) return seats;
  const { periodEnd, nextPeriodEnd } = input;
  if (!isEpochMs(periodEnd) || !isEpochMs(nextPeriodEnd) || nextPeriodEnd <= periodEnd) {
    return fail("invalid_argument", "periodEnd and nextPeriodEnd are epoch milliseconds, periodEnd first.", {
      field: "periodEnd",
    });
  }
  if (ctx.now < periodEnd) {
    return fail(
      "invalid_argument",
      "The period has not ended; its rollover is planned at or after its end.",
      {
        field: "periodEnd",
      },
    );
  }
  const expiresAt = input.expiresAt === undefined ? nextPeriodEnd : input.expiresAt;
  if (expiresAt !== null && (!isEpochMs(expiresAt) || expiresAt <= periodEnd)) {
    return fail("invalid_argument", "The rollover grants' expiry must be after the period end.", {
      field: "expiresAt",
    });
  }
  const seen = new Set<string>();
  for (const c of input.expiringGrants) {
    const problem = candidateProblem(c, periodEnd, seen);
    if (problem !== null) {
      return fail("invalid_argument", `Grant ${c.grant.id} ${problem}.`, { grant_id: c.grant.id });
    }
    seen.add(c.grant.id);
  }

  const ordered = [...input.expiringGrants].sort(compareCandidates);
  const cap = rolloverCap(policy.value, input.allotment, seats.value);
  let capLeft = cap;
  let remaining = 0n;
  let carried = 0n;
  const lines: RolloverLine[] = [];
  for (const c of ordered) {
    const g = c.grant;
    let carry = eligibleToCarry(policy.value, g.remaining, c.generation);
    if (capLeft !== null) {
      if (carry > capLeft) carry = capLeft;
      capLeft -= carry;
    }
    remaining += g.remaining;
    carried += carry;
    lines.push({
      grantId: g.id,
      walletId: g.walletId,
      generation: c.generation,
      remaining: g.remaining,
      carried: carry,
      breakage: g.remaining - carry,
      rollover: carry > 0n ? rolloverGrant(c, carry, periodEnd, expiresAt) : null,
    });
  }
  return ok({
    lines,
    remaining,
    carried,
    breakage: remaining - carried,
    cap,
    lapsed: expiresAt !== null && expiresAt <= ctx.now,
  });
}

/** The order a cap is filled in: lower generation first, then grant id (code-unit order). */
function compareCandidates(a: RolloverCandidate, b: RolloverCandidate): number {
  if (a.generation !== b.generation) return a.generation - b.generation;
  return a.grant.id < b.grant.id ? -1 : a.grant.id > b.grant.id ? 1 : 0;
}

/** Why a candidate cannot be rolled over, or null when it can. */
function candidateProblem(c: RolloverCandidate, periodEnd: number, seen: ReadonlySet<string>): string | null {
  const g = c.grant;
  if (seen.has(g.id)) return "is listed twice";
  if (g.status !== "active") return `is ${g.status}`;
  if (g.source !== "plan" && g.source !== "rollover")
    return `is a ${g.source} grant; only plan credits roll over`;
  if (g.expiresAt !== periodEnd) return "does not expire at the period end";
  if (g.remaining < 0n || g.remaining > g.amount) return "has a remaining outside [0, amount]";
  // No upper bound: under a full rollover without maxPeriods a credit may be carried forever.
  const generationOk =
    Number.isSafeInteger(c.generation) && (g.source === "plan" ? c.generation === 0 : c.generation >= 1);
  if (!generationOk)
    return "has a generation that does not match its source (0 for plan, 1 or more for rollover)";
  if (typeof c.originGrantId !== "string" || c.originGrantId === "") return "has no origin grant id";
  return null;
}

/** The rollover grant for `amount` carried from a candidate: linked to its source and origin. */
function rolloverGrant(
  c: RolloverCandidate,
  amount: bigint,
  periodEnd: number,
  expiresAt: number | null,
): GrantInput {
  const g = c.grant;
  const metadata: Record<string, string> = {};
  // The subscription and plan travel along, so a rollover grant is found like its plan grant.
  for (const key of [LIFECYCLE_METADATA.subscription, LIFECYCLE_METADATA.plan]) {
    const value = g.metadata[key];
    if (value !== undefined) metadata[key] = value;
  }
  metadata[LIFECYCLE_METADATA.source] = g.id;
  metadata[LIFECYCLE_METADATA.origin] = c.originGrantId;
  metadata[LIFECYCLE_METADATA.generation] = String(c.generation + 1);
  return {
    walletId: g.walletId,
    amount,
    source: "rollover",
    costBasis: g.costBasis,
    currency: g.currency,
    effectiveAt: periodEnd,
    expiresAt,
    priority: g.priority,
    scope: g.scope,
    metadata,
  };
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

/** What a cancellation needs: the rule, the current period's end and the subscription's grants. */
export interface CancelInput {
  readonly policy: CancelPolicy;
  /** The end of the period the cancellation falls in; `ctx.now` must be before it. */
  readonly periodEnd: number;
  /** The subscription's plan and rollover grants; inactive ones are skipped. */
  readonly grants: readonly Grant[];
}

/** A grant's expiry brought forward by a cancellation. */
export interface ExpiryChange {
  readonly grantId: string;
  readonly walletId: string;
  readonly from: number | null;
  readonly to: number;
}

/** A cancellation, planned. */
export interface CancelPlan {
  /** When the subscription ends: `ctx.now` for `forfeit`, else the period end. Nothing renews or rolls over from then on. */
  readonly endsAt: number;
  /**
   * Expiries brought forward, never pushed back. A grant moved to `ctx.now` is due at once:
   * its remainder goes to breakage by the ordinary expiry, in the same write.
   */
  readonly expiries: readonly ExpiryChange[];
  /** Grants not yet effective when their credits would end: voided (never usable, so not breakage). */
  readonly voids: readonly string[];
}

/**
 * Plans what a cancellation at `ctx.now` does to the subscription's credits, by its rule
 * ({@link CancelMode}). It moves expiries only earlier: a grant already expiring before the
 * new end keeps its expiry. It returns times, not amounts: credits stay usable until their
 * expiry, so what goes to breakage is what remains then.
 *
 * Note for the storage layer: shortening an expiry is a recorded change like an extension.
 */
export function planCancel(ctx: Context, input: CancelInput): Result<CancelPlan> {
  const mode = input.policy?.onCancel;
  if (!CANCEL_MODES.includes(mode)) {
    return fail("invalid_argument", 'onCancel is "forfeit", "keep_until_period_end" or "keep".', {
      field: "policy.onCancel",
    });
  }
  if (!isEpochMs(input.periodEnd) || input.periodEnd <= ctx.now) {
    return fail("invalid_argument", "The period end must be after now; close the ended period first.", {
      field: "periodEnd",
    });
  }
  const seen = new Set<string>();
  for (const g of input.grants) {
    if (g.source !== "plan" && g.source !== "rollover") {
      return fail(
        "invalid_argument",
        `Grant ${g.id} is a ${g.source} grant; a cancellation affects plan credits only.`,
        {
          grant_id: g.id,
        },
      );
    }
    if (seen.has(g.id)) return fail("invalid_argument", `Grant ${g.id} is listed twice.`, { grant_id: g.id });
    seen.add(g.id);
  }
  const endsAt = mode === "forfeit" ? ctx.now : input.periodEnd;
  const expiries: ExpiryChange[] = [];
  const voids: string[] = [];
  if (mode !== "keep") {
    const ordered = input.grants
      .filter((g) => g.status === "active")
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const g of ordered) {
      if (g.expiresAt !== null && g.expiresAt <= endsAt) continue;
      // A grant expires strictly after it takes effect; one that would end before it starts is voided.
      if (g.effectiveAt >= endsAt) voids.push(g.id);
      else expiries.push({ grantId: g.id, walletId: g.walletId, from: g.expiresAt, to: endsAt });
    }
  }
  return ok({ endsAt, expiries, voids });
}

// ---------------------------------------------------------------------------------------------
// Seat and plan changes
// ---------------------------------------------------------------------------------------------

/**
 * `amount` × (time left in the period) / (period length), rounded down: the share of a
 * period's worth of credits that the rest of the period deserves. Never above `amount`.
 */
export function prorate(amount: bigint, period: Period, at: number): bigint {
  if (!(period.from < period.to && period.from <= at && at <= period.to)) {
    throw new RangeError("prorate needs a non-empty period and a time within it.");
  }
  const left = BigInt(period.to - at);
  return (amount * left) / BigInt(period.to - period.from);
}

function checkWithinPeriod(now: number, period: Period): Result<Period> {
  const checked = checkPeriod(period);
  if (!checked.ok) return checked;
  if (now < period.from || now >= period.to) {
    return fail("invalid_argument", "The change must fall within the current period [from, to).", {
      field: "period",
    });
  }
  return checked;
}

/** What a seat change needs. */
export interface SeatChangeInput {
  readonly subscriptionId: string;
  readonly plan: Plan;
  readonly period: Period;
  /**
   * The most seats this period's allotment has been granted for: the seats at renewal, raised
   * by every addition since. The storage layer keeps it on the subscription and resets it to
   * the seat count at each renewal.
   */
  readonly grantedSeats: number;
  /** The new seat count. */
  readonly seats: number;
  readonly walletId: string;
}

/** A seat change, planned. */
export interface SeatChangePlan {
  readonly seats: number;
  /** The new high-water mark: max(grantedSeats, seats). Store it. */
  readonly grantedSeats: number;
  readonly amount: bigint;
  /** The prorated grant for seats above the high-water mark; null when nothing is granted. */
  readonly grant: GrantInput | null;
}

/**
 * Plans a seat change at `ctx.now`, inside the current period, on a per-seat plan.
 *
 * Adding seats above the period's high-water mark (`grantedSeats`) grants
 * `allotment × added × (to − now) / (to − from)`, rounded down, effective now and expiring by
 * the plan's expiry policy. Removing seats grants nothing and takes nothing back; adding them
 * again in the same period grants nothing either, since the period already had them: so
 * removing and re-adding seats can never mint credits, and adding seats in several steps never
 * grants more than adding them at once. The next renewal grants for the seats then held.
 * A plan not priced per seat grants nothing on a seat change.
 */
export function planSeatChange(ctx: Context, input: SeatChangeInput): Result<SeatChangePlan> {
  const plan = checkSubscription(input);
  if (!plan.ok) return plan;
  const seats = checkSeats(input.seats, "seats");
  if (!seats.ok) return seats;
  const granted = checkSeats(input.grantedSeats, "grantedSeats");
  if (!granted.ok) return granted;
  const period = checkWithinPeriod(ctx.now, input.period);
  if (!period.ok) return period;
  const added = seats.value > granted.value ? seats.value - granted.value : 0;
  const amount = plan.value.perSeat
    ? prorate(plan.value.allotment * BigInt(added), period.value, ctx.now)
    : 0n;
  if (!inRange(amount))
    return fail("invalid_amount", "The seats' allotment is out of range.", { field: "seats" });
  return ok({
    seats: seats.value,
    grantedSeats: Math.max(seats.value, granted.value),
    amount,
    grant:
      amount > 0n
        ? planGrant(
            input.subscriptionId,
            input.walletId,
            plan.value,
            period.value,
            amount,
            ctx.now,
            "seats_added",
          )
        : null,
  });
}

/** What a plan change needs. */
export interface PlanChangeInput {
  readonly subscriptionId: string;
  /** The plan in force now. */
  readonly from: Plan;
  readonly to: Plan;
  /** The period's seat high-water mark (see {@link SeatChangeInput.grantedSeats}). */
  readonly grantedSeats: number;
  readonly period: Period;
  readonly walletId: string;
}

/** A plan change, planned. */
export interface PlanChangePlan {
  /** `upgrade`: in force now. `downgrade` (also a change that keeps the allotment): in force from the period end. */
  readonly kind: "upgrade" | "downgrade";
  readonly effectiveAt: number;
  readonly amount: bigint;
  /** The prorated difference, for an upgrade; null otherwise. */
  readonly grant: GrantInput | null;
}

/**
 * Plans a change of plan at `ctx.now`, inside the current period. Both plans must renew on
 * the same interval (the schedule's periods stay the same; to change the interval, cancel and
 * subscribe anew).
 *
 * An upgrade raises the period's allotment, measured at the high-water seats
 * (`periodAllotment(to, grantedSeats) > periodAllotment(from, grantedSeats)`). It is in force
 * at once and grants the difference prorated over the time left, rounded down, under the new
 * plan's expiry; its policies (rollover included) apply from now on. Anything else (a lower
 * or equal allotment) is a downgrade: in force from the period end, so the period closes
 * under the current plan (its rollover) and the next renewal follows the new one; nothing is
 * granted or taken back. Since an allotment only rises within a period, a string of changes
 * never grants more than a single upgrade to the highest plan reached.
 *
 * A change to or from a plan with a `per_member` allocation is always planned like a
 * downgrade (in force from the period end, nothing granted now): the members' allocations of
 * the current period stay as they are, and the next renewal allocates under the new plan.
 */
export function planPlanChange(ctx: Context, input: PlanChangeInput): Result<PlanChangePlan> {
  const from = checkSubscription({ ...input, plan: input.from }, "from");
  if (!from.ok) return from;
  const to = checkSubscription({ ...input, plan: input.to }, "to");
  if (!to.ok) return to;
  if (from.value.id === to.value.id) {
    return fail("invalid_argument", `The subscription is already on plan ${to.value.id}.`, { field: "to" });
  }
  if (
    from.value.interval.unit !== to.value.interval.unit ||
    from.value.interval.count !== to.value.interval.count
  ) {
    return fail(
      "invalid_argument",
      "Both plans must renew on the same interval; to change it, cancel and subscribe to the new plan.",
      { field: "to.interval" },
    );
  }
  const granted = checkSeats(input.grantedSeats, "grantedSeats");
  if (!granted.ok) return granted;
  const period = checkWithinPeriod(ctx.now, input.period);
  if (!period.ok) return period;
  const before = periodAllotment(from.value, granted.value);
  const after = periodAllotment(to.value, granted.value);
  // Who receives the credits changes with a per-member plan: that takes effect at a period boundary.
  const perMember = from.value.allocation.mode === "per_member" || to.value.allocation.mode === "per_member";
  if (perMember || after <= before) {
    return ok({ kind: "downgrade", effectiveAt: period.value.to, amount: 0n, grant: null });
  }
  const amount = prorate(after - before, period.value, ctx.now);
  if (!inRange(amount))
    return fail("invalid_amount", "The upgrade's allotment is out of range.", { field: "to" });
  return ok({
    kind: "upgrade",
    effectiveAt: ctx.now,
    amount,
    grant:
      amount > 0n
        ? planGrant(input.subscriptionId, input.walletId, to.value, period.value, amount, ctx.now, "upgrade")
        : null,
  });
}
