import { formatAmount, parseAmount, SCALE } from "@drawdown/core";
import type { AmountInput, QuantityInput, TimeInput } from "./types.js";

/**
 * Amounts in the SDK are never JS numbers. On the wire they are decimal strings of credits;
 * in code you may hold them as `bigint` units at scale 9 (1 credit = 10^9 units), the same
 * integers the ledger computes with, so sums and comparisons are exact.
 */

/** Units in one credit: 1_000_000_000n (scale 9). */
export const UNITS_PER_CREDIT: bigint = 10n ** BigInt(SCALE);

/**
 * Converts a decimal string of credits to units (scale 9). Accepts what the API sends,
 * negative amounts and zero included; throws a `RangeError` on anything else (an exponent,
 * more than 9 decimals, spaces, a leading `+`).
 *
 * @example
 * toUnits("12.5")         // 12_500_000_000n
 * toUnits("-0.000000001") // -1n
 * toUnits(balance.available) > toUnits("10") // exact comparison
 */
export function toUnits(credits: string): bigint {
  if (typeof credits !== "string") {
    throw new TypeError(`toUnits expects a decimal string such as "12.5", not ${describe(credits)}.`);
  }
  const r = parseAmount(credits, { allowNegative: true, allowZero: true });
  if (!r.ok) throw new RangeError(r.error.message);
  return r.value;
}

/**
 * Converts units (scale 9) to the canonical decimal string of credits, the form the API
 * sends and accepts: no exponent, no trailing zeros.
 *
 * @example
 * toCredits(12_500_000_000n) // "12.5"
 * toCredits(1n)              // "0.000000001"
 */
export function toCredits(units: bigint): string {
  if (typeof units !== "bigint") {
    throw new TypeError(`toCredits expects a bigint of units, not ${describe(units)}.`);
  }
  return formatAmount(units);
}

function describe(value: unknown): string {
  if (typeof value === "number") return `the number ${value}`;
  if (value === null) return "null";
  return `a value of type ${typeof value}`;
}

/**
 * An amount for the wire: a string goes as it is (the API validates it and answers
 * `invalid_amount` with the reason); a bigint of units is formatted. Anything else, and
 * above all a JS number, is a `TypeError`: floating point must never carry an amount.
 * @internal
 */
export function wireAmount(value: AmountInput, field: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "bigint") return formatAmount(value);
  if (typeof value === "number") {
    throw new TypeError(
      `${field}: amounts are never JS numbers (got ${value}); pass a decimal string of credits such as "12.5", or a bigint of units (1 credit = 1_000_000_000n).`,
    );
  }
  throw new TypeError(
    `${field}: an amount is a decimal string or a bigint of units, not ${describe(value)}.`,
  );
}

/**
 * A quantity for the wire, as a decimal string: a bigint or a safe integer is a whole count; a
 * string goes as it is (the API validates it). A fractional, negative or unsafe number is a
 * `TypeError`: floating point must not carry a quantity either. @internal
 */
export function wireQuantity(value: QuantityInput, field: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "bigint") {
    if (value < 0n) throw new RangeError(`${field}: a quantity is never negative (got ${value}).`);
    return value.toString();
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new TypeError(
        `${field}: a number quantity must be a non-negative safe integer (got ${value}); pass fractions and large values as decimal strings such as "1.25", or a bigint.`,
      );
    }
    return String(value);
  }
  throw new TypeError(
    `${field}: a quantity is a bigint, a whole number or a decimal string, not ${describe(value)}.`,
  );
}

/** A power of ten for a rate's `per`, as the wire's string. @internal */
export function wirePer(value: string | bigint | number, field: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "bigint" || (typeof value === "number" && Number.isSafeInteger(value)))
    return String(value);
  throw new TypeError(`${field}: per is a power of ten such as "1000" or 1_000_000, not ${describe(value)}.`);
}

/** A time for the wire: a string goes as it is; a Date becomes its ISO string. @internal */
export function wireTime(value: TimeInput, field: string): string {
  if (typeof value === "string") return value;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new RangeError(`${field}: the Date is invalid.`);
    return value.toISOString();
  }
  throw new TypeError(`${field}: a time is an RFC 3339 string or a Date, not ${describe(value)}.`);
}
