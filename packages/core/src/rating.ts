import { divRound, formatDecimal, minAmount, parseDecimal, pow10, SCALE } from "./amount.js";
import { SCOPE_PATTERN, scopeAdmits } from "./burndown.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Rating: a versioned rate card turns a usage event into credits, exactly.
 *
 * Every line's charge is kept as an exact fraction; the event's total is rounded once, half
 * away from zero, to the amount scale (invariant 8). A cost table turns the same event into
 * money with the same arithmetic.
 *
 * Arithmetic: a quantity Q is at {@link QUANTITY_SCALE} decimals, a rate R at
 * {@link RATE_SCALE} decimals per `per` (= 10^k) units, a multiplier F at
 * {@link FACTOR_SCALE} decimals. The charge in amount units is Q·R·F / (10^18 · 10^k), so each
 * term is held as the numerator Q·R·F·10^(9−k) over the common denominator 10^27.
 */

/** Quantities (tokens, seconds, calls…) carry 9 decimals, like amounts. */
export const QUANTITY_SCALE = 9;
/** Rates (credits or money per `per` units) carry 12 decimals. */
export const RATE_SCALE = 12;
/** Multiplier factors carry 6 decimals ("1.5", "6"). */
export const FACTOR_SCALE = 6;
/** The largest `per`: a rate may be stated per 10^0 … 10^9 units. */
export const MAX_PER_EXPONENT = 9;

/** Decimals of an exact line charge in amount units, with one multiplier factor: 27. */
const EXACT_SCALE = QUANTITY_SCALE + RATE_SCALE + FACTOR_SCALE + MAX_PER_EXPONENT - SCALE;
const ONE_FACTOR = 10n ** BigInt(FACTOR_SCALE);

/** A volume tier: `rate` applies to the period's cumulative quantity up to `upTo` (null: no end). */
export interface Tier {
  readonly upTo: bigint | null;
  readonly rate: bigint;
}

/** One priced line: an action (or `prefix.*`), dimension filters and a quantity. */
export interface RateLine {
  readonly id: string;
  readonly action: string;
  readonly match: Readonly<Record<string, string>>;
  readonly quantity: string;
  /** Credits per `per` units at {@link RATE_SCALE}; with tiers, the first tier's rate. */
  readonly rate: bigint;
  /** The exponent k of `per` = 10^k. */
  readonly perExponent: number;
  /** Graduated tiers by the customer's cumulative quantity in the period; null: flat rate. */
  readonly tiers: readonly Tier[] | null;
  /** The least this line charges an event that has its quantity, in amount units; 0: none. */
  readonly minimum: bigint;
  /** A free action: rated and recorded at zero. */
  readonly free: boolean;
}

/** Multiplies every line of an event whose dimension has this value (turbo mode at 6x). */
export interface Multiplier {
  readonly dimension: string;
  readonly value: string;
  readonly factor: bigint;
}

/** Events that match are recorded at zero with the reason (invariant 9). */
export interface NonBillableRule {
  readonly action: string;
  readonly match: Readonly<Record<string, string>>;
  readonly reason: string;
}

/** The content of a rate card version. */
export interface RateCardContent {
  readonly lines: readonly RateLine[];
  readonly multipliers: readonly Multiplier[];
  readonly nonBillable: readonly NonBillableRule[];
}

/** An event as rating sees it. Quantities are at {@link QUANTITY_SCALE}. */
export interface RatableEvent {
  readonly action: string;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly quantities: Readonly<Record<string, bigint>>;
  readonly status: "succeeded" | "failed";
}

/** One tier piece of a line's charge. */
export interface Piece {
  readonly quantity: bigint;
  readonly rate: bigint;
}

/** Why one line charged what it did. */
export interface LineCharge {
  readonly lineId: string;
  readonly quantity: string;
  readonly amount: bigint;
  readonly perExponent: number;
  readonly pieces: readonly Piece[];
  /** Exact charge before rounding: amount units × 10^exactScale (see {@link Rating.exactScale}). */
  readonly exact: bigint;
  readonly minimumApplied: boolean;
  readonly free: boolean;
  /** True when the line came from the customer's contract overrides. */
  readonly override: boolean;
}

/** The rating of one event. */
export interface Rating {
  /** Amount units, rounded once. */
  readonly credits: bigint;
  readonly billable: boolean;
  /** Why the charge is zero: `failed`, `non_billable: …`, or `free`; null otherwise. */
  readonly reason: string | null;
  /** The product of matching multipliers, exact, at `multiplierScale` decimals. */
  readonly multiplier: bigint;
  readonly multiplierScale: number;
  /** Decimals of each line's `exact`, in amount units (27, plus 6 per extra multiplier). */
  readonly exactScale: number;
  readonly lines: readonly LineCharge[];
}

/** Usage in the period so far, per line id, in quantity units: what tiers are counted on. */
export type PeriodUsage = (lineId: string) => bigint;

const NAME = /^[a-z][a-z0-9_]{0,63}$/;

const matches = (
  match: Readonly<Record<string, string>>,
  dimensions: Readonly<Record<string, string>>,
): boolean => {
  for (const key in match) if (dimensions[key] !== match[key]) return false;
  return true;
};

/** Specificity of a line: more filters, then an exact action, then a longer wildcard prefix. */
const specificity = (action: string, match: Readonly<Record<string, string>>): [number, number, number] => [
  Object.keys(match).length,
  action.endsWith(".*") ? 0 : 1,
  action.length,
];

const compareSpecificity = (a: [number, number, number], b: [number, number, number]): number =>
  a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

/** Whether some event could match both action patterns. */
function actionsOverlap(a: string, b: string): boolean {
  const wa = a.endsWith(".*");
  const wb = b.endsWith(".*");
  if (!wa && !wb) return a === b;
  if (wa && !wb) return scopeAdmits([a], b);
  if (!wa && wb) return scopeAdmits([b], a);
  const pa = a.slice(0, -1);
  const pb = b.slice(0, -1);
  return pa.startsWith(pb) || pb.startsWith(pa);
}

/** Whether some event could satisfy both filter sets: no dimension asked with two values. */
function filtersCompatible(
  a: Readonly<Record<string, string>>,
  b: Readonly<Record<string, string>>,
): boolean {
  for (const key in a) if (key in b && a[key] !== b[key]) return false;
  return true;
}

/**
 * Finds the line pricing `quantity` for an event: the most specific matching line.
 * Validation guarantees at most one line of the highest specificity can match.
 */
export function selectLine(
  lines: readonly RateLine[],
  event: RatableEvent,
  quantity: string,
): RateLine | null {
  let best: RateLine | null = null;
  let bestSpec: [number, number, number] | null = null;
  for (const line of lines) {
    if (
      line.quantity !== quantity ||
      !scopeAdmits([line.action], event.action) ||
      !matches(line.match, event.dimensions)
    )
      continue;
    const spec = specificity(line.action, line.match);
    if (bestSpec === null || compareSpecificity(spec, bestSpec) > 0) {
      best = line;
      bestSpec = spec;
    }
  }
  return best;
}

/** Splits a quantity over graduated tiers, given the usage already counted in the period. */
export function tierPieces(tiers: readonly Tier[], before: bigint, quantity: bigint): Piece[] {
  const pieces: Piece[] = [];
  let at = before;
  let left = quantity;
  for (const tier of tiers) {
    if (left === 0n) break;
    if (tier.upTo !== null && at >= tier.upTo) continue;
    const take = tier.upTo === null ? left : minAmount(tier.upTo - at, left);
    pieces.push({ quantity: take, rate: tier.rate });
    at += take;
    left -= take;
  }
  return pieces;
}

/** Whether an action is priced or ruled on by a card (otherwise an event for it is rejected). */
export function knowsAction(
  content: RateCardContent,
  overrides: readonly RateLine[],
  action: string,
): boolean {
  return (
    content.lines.some((l) => scopeAdmits([l.action], action)) ||
    overrides.some((l) => scopeAdmits([l.action], action)) ||
    content.nonBillable.some((r) => scopeAdmits([r.action], action))
  );
}

/**
 * Rates one event against a card version and the customer's contract overrides (lines that
 * take precedence over the card's). Failed events and non-billable matches rate at zero with
 * a reason. Returns `unknown_action` when neither the card nor the overrides know the action.
 */
export function rateEvent(
  content: RateCardContent,
  overrides: readonly RateLine[],
  event: RatableEvent,
  usage: PeriodUsage,
): Result<Rating> {
  if (!knowsAction(content, overrides, event.action)) {
    return fail("unknown_action", `The rate card has no line for action "${event.action}".`, {
      action: event.action,
    });
  }
  const zero = (reason: string): Rating => ({
    credits: 0n,
    billable: false,
    reason,
    multiplier: ONE_FACTOR,
    multiplierScale: FACTOR_SCALE,
    exactScale: EXACT_SCALE,
    lines: [],
  });
  if (event.status === "failed") return ok(zero("failed"));
  for (const rule of content.nonBillable) {
    if (scopeAdmits([rule.action], event.action) && matches(rule.match, event.dimensions)) {
      return ok(zero(`non_billable: ${rule.reason}`));
    }
  }
  // Factors multiply exactly: each adds FACTOR_SCALE decimals instead of being rounded.
  let multiplier = ONE_FACTOR;
  let multiplierScale = FACTOR_SCALE;
  for (const m of content.multipliers) {
    if (event.dimensions[m.dimension] === m.value) {
      multiplier *= m.factor;
      multiplierScale += FACTOR_SCALE;
    }
  }
  const exactScale = EXACT_SCALE + multiplierScale - FACTOR_SCALE;
  const denominator = pow10(exactScale);
  const lines: LineCharge[] = [];
  let total = 0n;
  let allFree = true;
  for (const quantity of Object.keys(event.quantities).sort()) {
    const amount = event.quantities[quantity]!;
    const override = selectLine(overrides, event, quantity);
    const line = override ?? selectLine(content.lines, event, quantity);
    if (!line) continue;
    const pieces = line.tiers
      ? tierPieces(line.tiers, usage(line.id), amount)
      : [{ quantity: amount, rate: line.rate }];
    let exact = 0n;
    if (!line.free) {
      const shift = pow10(MAX_PER_EXPONENT - line.perExponent);
      for (const p of pieces) exact += p.quantity * p.rate * multiplier * shift;
    }
    // A minimum applies to an event that used the line's quantity; zero usage costs nothing.
    const floor = amount > 0n ? line.minimum * denominator : 0n;
    const minimumApplied = !line.free && exact < floor;
    if (minimumApplied) exact = floor;
    if (!line.free) allFree = false;
    total += exact;
    lines.push({
      lineId: line.id,
      quantity,
      amount,
      perExponent: line.perExponent,
      pieces,
      exact,
      minimumApplied,
      free: line.free,
      override: override !== null,
    });
  }
  const free = lines.length > 0 && allFree;
  return ok({
    credits: divRound(total, denominator),
    billable: true,
    reason: free ? "free" : null,
    multiplier,
    multiplierScale,
    exactScale,
    lines,
  });
}

/** A line's exact charge as a decimal string of credits (trailing zeros cut). */
export const formatExact = (exact: bigint, exactScale: number): string =>
  formatDecimal(exact, exactScale + SCALE);

// ------------------------------------------------------------------ validation of the wire form

/** A rate card line as sent over the wire: decimals as strings. */
export interface RateLineInput {
  readonly id: string;
  readonly action: string;
  readonly match?: Readonly<Record<string, string>>;
  readonly quantity: string;
  readonly rate?: string;
  readonly per?: string;
  readonly tiers?: readonly { readonly up_to: string | null; readonly rate: string }[];
  readonly minimum?: string;
  readonly free?: boolean;
}

/** A rate card version's content as sent over the wire. */
export interface RateCardInput {
  readonly lines: readonly RateLineInput[];
  readonly multipliers?: readonly {
    readonly dimension: string;
    readonly value: string;
    readonly factor: string;
  }[];
  readonly non_billable?: readonly {
    readonly action: string;
    readonly match?: Readonly<Record<string, string>>;
    readonly reason: string;
  }[];
}

const bad = (message: string) => fail("invalid_rate_card", message);

function parsePer(per: string | undefined, where: string): Result<number> {
  if (per === undefined) return ok(0);
  const m = /^1(0{0,9})$/.exec(per);
  if (!m) return bad(`${where}: per must be a power of ten from "1" to "1000000000", not "${per}".`);
  return ok(m[1]!.length);
}

function parseMatch(
  match: Readonly<Record<string, string>> | undefined,
  where: string,
): Result<Readonly<Record<string, string>>> {
  const m = match ?? {};
  for (const [k, v] of Object.entries(m)) {
    if (!NAME.test(k) || typeof v !== "string" || v.length === 0 || v.length > 100) {
      return bad(`${where}: match "${k}" must name a dimension (lowercase) with a non-empty value.`);
    }
  }
  return ok(m);
}

/** Parses a line given on the wire (rates, tiers, minimum) and checks each field. */
export function parseRateLine(input: RateLineInput, where: string): Result<RateLine> {
  if (!NAME.test(input.id.replace(/[-.]/g, "_")))
    return bad(`${where}: id "${input.id}" must be a short lowercase name.`);
  if (!SCOPE_PATTERN.test(input.action))
    return bad(`${where}: "${input.action}" is not an action or "prefix.*" pattern.`);
  if (!NAME.test(input.quantity))
    return bad(`${where}: quantity "${input.quantity}" must be a lowercase name like "output_tokens".`);
  const match = parseMatch(input.match, where);
  if (!match.ok) return match;
  const per = parsePer(input.per, where);
  if (!per.ok) return per;
  let tiers: Tier[] | null = null;
  let rate = 0n;
  if (input.tiers !== undefined) {
    if (input.rate !== undefined) return bad(`${where}: give rate or tiers, not both.`);
    if (input.tiers.length === 0 || input.tiers.length > 20)
      return bad(`${where}: tiers lists 1 to 20 tiers.`);
    tiers = [];
    let previous = 0n;
    for (const [i, t] of input.tiers.entries()) {
      const r = parseDecimal(t.rate, RATE_SCALE, { allowZero: true });
      if (!r.ok) return bad(`${where}: tier ${i + 1} rate: ${r.error.message}`);
      const last = i === input.tiers.length - 1;
      if ((t.up_to === null) !== last)
        return bad(`${where}: only the last tier, and it alone, has up_to null.`);
      let upTo: bigint | null = null;
      if (t.up_to !== null) {
        const u = parseDecimal(t.up_to, QUANTITY_SCALE);
        if (!u.ok) return bad(`${where}: tier ${i + 1} up_to: ${u.error.message}`);
        if (u.value <= previous) return bad(`${where}: tier up_to values must increase.`);
        upTo = u.value;
        previous = u.value;
      }
      tiers.push({ upTo, rate: r.value });
    }
    rate = tiers[0]!.rate;
  } else if (input.rate !== undefined) {
    const r = parseDecimal(input.rate, RATE_SCALE, { allowZero: true });
    if (!r.ok) return bad(`${where}: rate: ${r.error.message}`);
    rate = r.value;
  } else if (!input.free) {
    return bad(`${where}: a line needs a rate, tiers, or free: true.`);
  }
  let minimum = 0n;
  if (input.minimum !== undefined) {
    const m = parseDecimal(input.minimum, SCALE, { allowZero: true });
    if (!m.ok) return bad(`${where}: minimum: ${m.error.message}`);
    minimum = m.value;
  }
  return ok({
    id: input.id,
    action: input.action,
    match: match.value,
    quantity: input.quantity,
    rate,
    perExponent: per.value,
    tiers,
    minimum,
    free: input.free === true,
  });
}

/**
 * Checks that no event could match two lines of equal specificity for the same quantity:
 * such lines are ambiguous and the card is refused.
 */
export function findAmbiguity(lines: readonly RateLine[]): string | null {
  for (let i = 0; i < lines.length; i++) {
    for (let j = i + 1; j < lines.length; j++) {
      const a = lines[i]!;
      const b = lines[j]!;
      if (a.quantity !== b.quantity) continue;
      if (compareSpecificity(specificity(a.action, a.match), specificity(b.action, b.match)) !== 0) continue;
      if (actionsOverlap(a.action, b.action) && filtersCompatible(a.match, b.match)) {
        return `lines "${a.id}" and "${b.id}" can both price ${a.quantity} of the same event; make one more specific.`;
      }
    }
  }
  return null;
}

/** Parses and validates a whole rate card version (or a contract's override lines). */
export function parseRateCard(input: RateCardInput): Result<RateCardContent> {
  if (input.lines.length > 1000) return bad("A rate card has at most 1,000 lines.");
  const lines: RateLine[] = [];
  const ids = new Set<string>();
  for (const [i, l] of input.lines.entries()) {
    const line = parseRateLine(l, `lines[${i}]`);
    if (!line.ok) return line;
    if (ids.has(line.value.id)) return bad(`lines[${i}]: id "${line.value.id}" is used twice.`);
    ids.add(line.value.id);
    lines.push(line.value);
  }
  const ambiguity = findAmbiguity(lines);
  if (ambiguity) return bad(ambiguity);
  const multipliers: Multiplier[] = [];
  for (const [i, m] of (input.multipliers ?? []).entries()) {
    if (!NAME.test(m.dimension) || m.value.length === 0)
      return bad(`multipliers[${i}]: name a dimension and a value.`);
    const f = parseDecimal(m.factor, FACTOR_SCALE);
    if (!f.ok) return bad(`multipliers[${i}] factor: ${f.error.message}`);
    multipliers.push({ dimension: m.dimension, value: m.value, factor: f.value });
  }
  const nonBillable: NonBillableRule[] = [];
  for (const [i, r] of (input.non_billable ?? []).entries()) {
    if (!SCOPE_PATTERN.test(r.action))
      return bad(`non_billable[${i}]: "${r.action}" is not an action pattern.`);
    const match = parseMatch(r.match, `non_billable[${i}]`);
    if (!match.ok) return match;
    if (r.reason.length === 0 || r.reason.length > 200)
      return bad(`non_billable[${i}]: give a reason (up to 200 characters).`);
    nonBillable.push({ action: r.action, match: match.value, reason: r.reason });
  }
  return ok({ lines, multipliers, nonBillable });
}

/** Versions effective at `time`: the latest whose effective time is at or before it. */
export function versionAt<T extends { readonly effectiveAt: number }>(
  versions: readonly T[],
  time: number,
): T | null {
  let best: T | null = null;
  for (const v of versions)
    if (v.effectiveAt <= time && (best === null || v.effectiveAt > best.effectiveAt)) best = v;
  return best;
}
