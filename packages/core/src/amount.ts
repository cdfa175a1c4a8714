import { fail, ok, type Result } from "./result.js";

/**
 * Credits are integers of the smallest unit, a nanocredit: 1 credit = 10^9 units.
 *
 * Nine decimals are fine enough to price a single token exactly: at 1 credit = $0.01,
 * a model at $0.15 per million tokens costs 0.000015 credits a token, and even at
 * 1 credit = $1 it costs 0.00000015, both exact. Amounts are `bigint` everywhere and
 * `numeric(38,0)` in the database, so no floating point touches them (invariant 8).
 */
export const SCALE = 9;

/** Units in one credit (10^9). */
export const UNIT = 10n ** BigInt(SCALE);

/** The largest integer part accepted on the wire: 18 digits (just under 10^18 credits). */
export const MAX_INTEGER_DIGITS = 18;

/** The largest magnitude of a single amount, in units. */
export const MAX_AMOUNT = 10n ** BigInt(MAX_INTEGER_DIGITS + SCALE) - 1n;

const DECIMAL = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?$/;

/** What a parsed amount may be. */
export interface AmountRules {
  /** Accept negative amounts. Default: false. */
  readonly allowNegative?: boolean;
  /** Accept zero. Default: false (most amounts must be positive). */
  readonly allowZero?: boolean;
}

/**
 * Parses a decimal string such as `"12.5"` or `"0.000000001"` into units.
 *
 * Strict: no exponent, no leading `+`, no leading zeros, no whitespace, no trailing dot,
 * at most {@link SCALE} decimals (never rounded: rounding happens in rating only),
 * at most {@link MAX_INTEGER_DIGITS} integer digits.
 *
 * @example
 * parseAmount("12.5")  // { ok: true, value: 12_500_000_000n }
 * parseAmount("1e3")   // { ok: false, error: { code: "invalid_amount", ... } }
 */
export function parseAmount(text: string, rules: AmountRules = {}): Result<bigint> {
  return parseDecimal(text, SCALE, rules);
}

/**
 * Parses a decimal string into an integer at `scale` decimals, with the rules of
 * {@link parseAmount} (which is `parseDecimal(text, SCALE)`). Rates use a finer scale.
 *
 * @example
 * parseDecimal("0.000000125", 12) // { ok: true, value: 125_000n }
 */
export function parseDecimal(text: string, scale: number, rules: AmountRules = {}): Result<bigint> {
  if (typeof text !== "string") return fail("invalid_amount", "An amount must be a decimal string.");
  const match = DECIMAL.exec(text);
  if (!match) {
    return fail(
      "invalid_amount",
      `"${text.slice(0, 40)}" is not a decimal amount; write it like "12.5" (no exponent, sign only for negatives).`,
    );
  }
  const [, sign = "", whole = "0", fraction = ""] = match;
  if (fraction.length > scale) {
    return fail("invalid_amount", `"${text}" has ${fraction.length} decimals; at most ${scale} are allowed.`);
  }
  if (whole.length > MAX_INTEGER_DIGITS) {
    return fail("invalid_amount", `"${text}" is out of range; at most ${MAX_INTEGER_DIGITS} integer digits.`);
  }
  const magnitude = BigInt(whole) * pow10(scale) + BigInt(fraction.padEnd(scale, "0") || "0");
  const value = sign === "-" ? -magnitude : magnitude;
  if (value === 0n) {
    if (sign === "-") return fail("invalid_amount", `"${text}": write zero as "0".`);
    if (!rules.allowZero) return fail("invalid_amount", "The amount must be greater than zero.");
  }
  if (value < 0n && !rules.allowNegative) return fail("invalid_amount", "The amount must not be negative.");
  return ok(value);
}

const POWERS_OF_TEN: bigint[] = [];

/**
 * 10 to the power `exponent` (a small non-negative integer), computed once per exponent:
 * rating and parsing use the same few powers on every event.
 */
export function pow10(exponent: number): bigint {
  let p = POWERS_OF_TEN[exponent];
  if (p === undefined) {
    p = 10n ** BigInt(exponent);
    if (exponent <= 128) POWERS_OF_TEN[exponent] = p;
  }
  return p;
}

/**
 * Formats units as the canonical decimal string: no trailing zeros, no trailing dot.
 *
 * @example
 * formatAmount(12_500_000_000n) // "12.5"
 * formatAmount(-1n)             // "-0.000000001"
 */
export function formatAmount(units: bigint): string {
  return formatDecimal(units, SCALE);
}

/** Formats an integer at `scale` decimals canonically, e.g. `formatDecimal(125_000n, 12)` is "0.000000125". */
export function formatDecimal(value: bigint, scale: number): string {
  const negative = value < 0n;
  const magnitude = negative ? -value : value;
  // One conversion to a string and slicing, not a division: this runs several times per event.
  const digits = magnitude.toString();
  let whole: string;
  let fraction: string;
  if (digits.length > scale) {
    whole = digits.slice(0, digits.length - scale);
    fraction = digits.slice(digits.length - scale);
  } else {
    whole = "0";
    fraction = digits.padStart(scale, "0");
  }
  let end = fraction.length;
  while (end > 0 && fraction.charCodeAt(end - 1) === 48) end--;
  return (negative ? "-" : "") + whole + (end > 0 ? `.${fraction.slice(0, end)}` : "");
}

/**
 * Divides and rounds half away from zero: the one rounding rule of Drawdown (invariant 8).
 *
 * @example
 * divRound(5n, 2n)  // 3n
 * divRound(-5n, 2n) // -3n
 */
export function divRound(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new RangeError("divRound needs a positive denominator");
  const negative = numerator < 0n;
  const magnitude = negative ? -numerator : numerator;
  const q = (magnitude * 2n + denominator) / (denominator * 2n);
  return negative ? -q : q;
}

/** Converts whole credits to units, e.g. `credits(25n)` is 25 credits. */
export const credits = (whole: bigint): bigint => whole * UNIT;

/** Returns the smaller of two amounts. */
export const minAmount = (a: bigint, b: bigint): bigint => (a < b ? a : b);

/** True when `units` fits the range every stored amount must respect. */
export const inRange = (units: bigint): boolean => units >= -MAX_AMOUNT && units <= MAX_AMOUNT;
