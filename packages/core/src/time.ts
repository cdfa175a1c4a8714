import { fail, ok, type Result } from "./result.js";

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-](\d{2}):(\d{2}))$/;

/** Days in a month of the proleptic Gregorian calendar; `month` is 1–12. */
export const daysInMonth = (year: number, month: number): number =>
  month === 2
    ? year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
      ? 29
      : 28
    : [4, 6, 9, 11].includes(month)
      ? 30
      : 31;

/** Parses an RFC 3339 timestamp (with a zone) to epoch milliseconds; sub-millisecond digits are cut. */
export function parseTimestamp(text: string): Result<number> {
  const match = typeof text === "string" ? RFC3339.exec(text) : null;
  if (!match) {
    return fail(
      "invalid_argument",
      `"${String(text).slice(0, 40)}" is not an RFC 3339 timestamp like "2026-01-31T12:00:00Z".`,
    );
  }
  // Date.parse rolls impossible dates over ("2026-02-30" becomes March 2) and takes hour 24,
  // so every field is range-checked here first.
  const [year, month, day, hour, minute, second, , , offsetHour, offsetMinute] = match
    .slice(1)
    .map((part) => Number(part ?? "0"));
  if (
    month === undefined ||
    month < 1 ||
    month > 12 ||
    day === undefined ||
    day < 1 ||
    day > daysInMonth(year ?? 0, month) ||
    (hour ?? 0) > 23 ||
    (minute ?? 0) > 59 ||
    (second ?? 0) > 59 ||
    (offsetHour ?? 0) > 23 ||
    (offsetMinute ?? 0) > 59
  ) {
    return fail("invalid_argument", `"${text}" is not a valid date.`);
  }
  const ms = Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
  if (Number.isNaN(ms)) return fail("invalid_argument", `"${text}" is not a valid date.`);
  return ok(ms);
}

/** Formats epoch milliseconds as RFC 3339 in UTC, e.g. "2026-01-31T12:00:00.000Z". */
export const formatTimestamp = (ms: number): string => new Date(ms).toISOString();
