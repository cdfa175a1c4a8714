import { fail, ok, type Result } from "./result.js";

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/** Parses an RFC 3339 timestamp (with a zone) to epoch milliseconds; sub-millisecond digits are cut. */
export function parseTimestamp(text: string): Result<number> {
  if (typeof text !== "string" || !RFC3339.test(text)) {
    return fail(
      "invalid_argument",
      `"${String(text).slice(0, 40)}" is not an RFC 3339 timestamp like "2026-01-31T12:00:00Z".`,
    );
  }
  const ms = Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
  if (Number.isNaN(ms)) return fail("invalid_argument", `"${text}" is not a valid date.`);
  return ok(ms);
}

/** Formats epoch milliseconds as RFC 3339 in UTC, e.g. "2026-01-31T12:00:00.000Z". */
export const formatTimestamp = (ms: number): string => new Date(ms).toISOString();
