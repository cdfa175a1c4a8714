import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { formatTimestamp, parseTimestamp } from "../src/index.js";

function ms(text: string): number {
  const r = parseTimestamp(text);
  assert.ok(r.ok, `expected "${text}" to parse, got ${r.ok ? "" : r.error.message}`);
  return r.value;
}

function rejected(text: string): void {
  const r = parseTimestamp(text);
  assert.equal(r.ok, false, `expected "${text}" to be rejected, got ${r.ok ? r.value : ""}`);
  if (!r.ok) assert.equal(r.error.code, "invalid_argument");
}

describe("parseTimestamp: accepted", () => {
  test("UTC with Z", () => {
    assert.equal(ms("2026-01-31T12:00:00Z"), Date.UTC(2026, 0, 31, 12, 0, 0));
    assert.equal(ms("1970-01-01T00:00:00Z"), 0);
  });

  test("fractional seconds, sub-millisecond digits cut (not rounded)", () => {
    assert.equal(ms("2026-01-31T12:00:00.5Z"), Date.UTC(2026, 0, 31, 12, 0, 0, 500));
    assert.equal(ms("2026-01-31T12:00:00.123Z"), Date.UTC(2026, 0, 31, 12, 0, 0, 123));
    assert.equal(ms("2026-01-31T12:00:00.123999Z"), Date.UTC(2026, 0, 31, 12, 0, 0, 123));
    assert.equal(ms("2026-01-31T12:00:00.999999999Z"), Date.UTC(2026, 0, 31, 12, 0, 0, 999));
  });

  test("numeric offsets", () => {
    const utc = Date.UTC(2026, 0, 31, 12, 0, 0);
    assert.equal(ms("2026-01-31T14:00:00+02:00"), utc);
    assert.equal(ms("2026-01-31T06:30:00-05:30"), utc);
    assert.equal(ms("2026-01-31T12:00:00+00:00"), utc);
    assert.equal(ms("2026-01-31T12:00:00-00:00"), utc);
    assert.equal(ms("2026-02-01T01:00:00+13:00"), utc);
  });

  test("leap days in leap years", () => {
    assert.equal(ms("2024-02-29T00:00:00Z"), Date.UTC(2024, 1, 29));
    assert.equal(ms("2000-02-29T00:00:00Z"), Date.UTC(2000, 1, 29));
    assert.equal(ms("2026-12-31T23:59:59Z"), Date.UTC(2026, 11, 31, 23, 59, 59));
  });
});

describe("parseTimestamp: rejected", () => {
  test("dates and times without a zone", () => {
    for (const text of ["2026-01-31T12:00:00", "2026-01-31T12:00:00.000", "2026-01-31", "2026-01-31T12:00"])
      rejected(text);
  });

  test("junk and near misses", () => {
    for (const text of [
      "",
      "now",
      "yesterday",
      "1769860800000",
      "2026-01-31 12:00:00Z",
      "2026-1-31T12:00:00Z",
      "26-01-31T12:00:00Z",
      "2026-01-31T12:00Z",
      "2026-01-31T12:00:00.Z",
      "2026-01-31T12:00:00.1234567890Z",
      "2026-01-31T12:00:00+0200",
      "2026-01-31T12:00:00+02",
      "2026-01-31T12:00:00 Z",
      " 2026-01-31T12:00:00Z",
      "2026-01-31T12:00:00Z ",
      "2026-01-31T12:00:00ZZ",
      "Sat, 31 Jan 2026 12:00:00 GMT",
      "+002026-01-31T12:00:00Z",
    ])
      rejected(text);
  });

  test("out-of-range fields", () => {
    for (const text of [
      "2026-13-01T00:00:00Z",
      "2026-00-01T00:00:00Z",
      "2026-01-00T00:00:00Z",
      "2026-01-32T00:00:00Z",
      "2026-01-31T25:00:00Z",
      "2026-01-31T12:60:00Z",
      "2026-01-31T12:00:61Z",
      "2026-01-31T12:00:00+24:00",
      "2026-01-31T12:00:00+01:60",
    ])
      rejected(text);
  });

  test("days that do not exist in their month are rejected, not rolled over", () => {
    for (const text of [
      "2026-02-29T00:00:00Z",
      "2026-02-30T00:00:00Z",
      "2026-02-31T00:00:00Z",
      "2026-04-31T00:00:00Z",
      "2026-06-31T00:00:00Z",
      "2026-09-31T00:00:00Z",
      "2026-11-31T00:00:00Z",
      "1900-02-29T00:00:00Z",
    ])
      rejected(text);
  });

  test("hour 24 is not RFC 3339", () => {
    rejected("2026-01-31T24:00:00Z");
  });

  test("non-string input is rejected, not thrown", () => {
    for (const value of [0, null, undefined, new Date(0)]) rejected(value as unknown as string);
  });
});

describe("timestamp properties", () => {
  test("formatTimestamp then parseTimestamp gives the same milliseconds", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) }), (t) => {
        assert.equal(ms(formatTimestamp(t)), t);
      }),
      { numRuns: 1000 },
    );
  });

  test("an offset shifts the instant by exactly that offset", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) }),
        fc.integer({ min: -23 * 60 - 59, max: 23 * 60 + 59 }),
        (t, offsetMinutes) => {
          const local = new Date(t + offsetMinutes * 60_000).toISOString().slice(0, 23);
          const abs = Math.abs(offsetMinutes);
          const zone =
            (offsetMinutes < 0 ? "-" : "+") +
            String(Math.floor(abs / 60)).padStart(2, "0") +
            ":" +
            String(abs % 60).padStart(2, "0");
          if (Number(local.slice(0, 4)) > 9999) return;
          assert.equal(ms(local + zone), t);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("parse never throws on arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const r = parseTimestamp(text);
        if (!r.ok) assert.equal(r.error.code, "invalid_argument");
        else assert.ok(Number.isFinite(r.value));
      }),
      { numRuns: 1000 },
    );
  });
});
