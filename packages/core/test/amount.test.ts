import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  credits,
  formatAmount,
  inRange,
  MAX_AMOUNT,
  MAX_INTEGER_DIGITS,
  minAmount,
  parseAmount,
  SCALE,
  UNIT,
} from "../src/index.js";

const ANY = { allowNegative: true, allowZero: true } as const;

function parsed(text: string, rules = {}): bigint {
  const r = parseAmount(text, rules);
  assert.ok(r.ok, `expected "${text}" to parse, got ${r.ok ? "" : r.error.message}`);
  return r.value;
}

function rejected(text: string, rules = {}): string {
  const r = parseAmount(text, rules);
  assert.equal(r.ok, false, `expected "${text}" to be rejected`);
  if (r.ok) throw new Error("unreachable");
  assert.equal(r.error.code, "invalid_amount");
  assert.ok(r.error.message.length > 0);
  return r.error.message;
}

describe("amount constants", () => {
  test("scale is nine decimals and MAX_AMOUNT is 18 nines then 9 nines", () => {
    assert.equal(SCALE, 9);
    assert.equal(UNIT, 1_000_000_000n);
    assert.equal(MAX_INTEGER_DIGITS, 18);
    assert.equal(MAX_AMOUNT, 999_999_999_999_999_999_999_999_999n);
    assert.equal(credits(25n), 25_000_000_000n);
    assert.equal(minAmount(3n, 2n), 2n);
    assert.equal(minAmount(-3n, 2n), -3n);
    assert.ok(inRange(MAX_AMOUNT) && inRange(-MAX_AMOUNT) && inRange(0n));
    assert.ok(!inRange(MAX_AMOUNT + 1n) && !inRange(-MAX_AMOUNT - 1n));
  });
});

describe("parseAmount: accepted forms", () => {
  const cases: [string, bigint][] = [
    ["1", 1_000_000_000n],
    ["12.5", 12_500_000_000n],
    ["0.000000001", 1n],
    ["0.1", 100_000_000n],
    ["1.50", 1_500_000_000n],
    ["10", 10_000_000_000n],
    ["123456789.123456789", 123_456_789_123_456_789n],
    ["999999999999999999.999999999", MAX_AMOUNT],
    ["999999999999999999", MAX_AMOUNT - 999_999_999n],
  ];
  for (const [text, units] of cases) {
    test(`"${text}" is ${units} units`, () => assert.equal(parsed(text), units));
  }

  test("negative amounts only when allowed", () => {
    assert.equal(parsed("-12.5", { allowNegative: true }), -12_500_000_000n);
    assert.equal(parsed("-0.000000001", { allowNegative: true }), -1n);
    assert.equal(parsed("-999999999999999999.999999999", { allowNegative: true }), -MAX_AMOUNT);
    assert.match(rejected("-1"), /negative/);
    assert.match(rejected("-0.5", { allowZero: true }), /negative/);
  });

  test("zero only when allowed, and never as -0", () => {
    assert.equal(parsed("0", { allowZero: true }), 0n);
    assert.equal(parsed("0.000", { allowZero: true }), 0n);
    assert.match(rejected("0"), /greater than zero/);
    assert.match(rejected("0.0"), /greater than zero/);
    assert.match(rejected("0", { allowNegative: true }), /greater than zero/);
    rejected("-0", ANY);
    rejected("-0.000", ANY);
  });
});

describe("parseAmount: rejections", () => {
  const groups: Record<string, string[]> = {
    exponent: ["1e3", "1E3", "1.5e2", "1e-9", "Infinity", "NaN"],
    "leading +": ["+1", "+0.5", "+0"],
    "leading zeros": ["01", "00", "00.5", "-01", "007.1"],
    whitespace: [" 1", "1 ", "1 000", "\t1", "1\n", "- 1", "1. 5"],
    "trailing or bare dot": ["1.", "0.", ".5", ".", "-.5"],
    "other junk": ["", "-", "abc", "1,5", "1_000", "0x10", "1.2.3", "１", "1n", "--1", "½"],
  };
  for (const [name, inputs] of Object.entries(groups)) {
    test(name, () => {
      for (const text of inputs) rejected(text, ANY);
    });
  }

  test("too many decimals is rejected, never rounded", () => {
    assert.match(rejected("0.0000000001", ANY), /10 decimals/);
    assert.match(rejected("1.1234567891"), /at most 9/);
    rejected("1.0000000000", ANY);
  });

  test("too many integer digits", () => {
    assert.match(rejected("1000000000000000000"), /out of range/);
    assert.match(rejected("-1000000000000000000", ANY), /out of range/);
    rejected("1000000000000000000.5", ANY);
  });

  test("non-string input is rejected, not thrown", () => {
    for (const value of [1, 1n, null, undefined, {}]) {
      const r = parseAmount(value as unknown as string, ANY);
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.error.code, "invalid_amount");
    }
  });

  test("a long input is quoted only in part", () => {
    assert.ok(rejected("x".repeat(10_000)).length < 200);
  });
});

describe("formatAmount", () => {
  const cases: [bigint, string][] = [
    [0n, "0"],
    [1n, "0.000000001"],
    [-1n, "-0.000000001"],
    [12_500_000_000n, "12.5"],
    [1_000_000_000n, "1"],
    [-1_000_000_000n, "-1"],
    [100_000_000n, "0.1"],
    [1_000_000_010n, "1.00000001"],
    [MAX_AMOUNT, "999999999999999999.999999999"],
    [-MAX_AMOUNT, "-999999999999999999.999999999"],
  ];
  for (const [units, text] of cases) {
    test(`${units} units is "${text}"`, () => assert.equal(formatAmount(units), text));
  }
});

describe("amount properties", () => {
  const inRangeAmount = fc.oneof(
    fc.bigInt({ min: -MAX_AMOUNT, max: MAX_AMOUNT }),
    fc.bigInt({ min: -10n * UNIT, max: 10n * UNIT }),
    fc.constantFrom(0n, 1n, -1n, MAX_AMOUNT, -MAX_AMOUNT, UNIT, -UNIT),
  );

  test("format then parse gives the same bigint", () => {
    fc.assert(
      fc.property(inRangeAmount, (units) => {
        const text = formatAmount(units);
        const back = parseAmount(text, ANY);
        assert.ok(back.ok, text);
        assert.equal(back.value, units);
      }),
      { numRuns: 2000 },
    );
  });

  test("the formatted string is canonical: no trailing zeros, no trailing dot, no leading zeros", () => {
    fc.assert(
      fc.property(inRangeAmount, (units) => {
        const text = formatAmount(units);
        assert.match(text, /^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$/);
        assert.notEqual(text, "-0");
      }),
      { numRuns: 1000 },
    );
  });

  test("parse matches digit arithmetic for any well-formed decimal", () => {
    const digits = (min: number, max: number) =>
      fc.array(fc.constantFrom(..."0123456789"), { minLength: min, maxLength: max }).map((d) => d.join(""));
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(..."123456789"),
        digits(0, MAX_INTEGER_DIGITS - 1),
        fc.option(digits(1, SCALE), { nil: undefined }),
        (negative, lead, rest, fraction) => {
          const whole = lead + rest;
          const text = (negative ? "-" : "") + whole + (fraction === undefined ? "" : "." + fraction);
          const expected = BigInt(whole + (fraction ?? "").padEnd(SCALE, "0")) * (negative ? -1n : 1n);
          assert.equal(parsed(text, ANY), expected);
          if (negative) rejected(text);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("parse never throws, and anything it accepts is in range and canonicalizes to itself", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.stringMatching(/^[-+ .0-9e]{0,30}$/)),
        fc.boolean(),
        fc.boolean(),
        (text, allowNegative, allowZero) => {
          const r = parseAmount(text, { allowNegative, allowZero });
          if (!r.ok) {
            assert.equal(r.error.code, "invalid_amount");
            return;
          }
          assert.ok(inRange(r.value));
          if (!allowNegative) assert.ok(r.value >= 0n);
          if (!allowZero) assert.notEqual(r.value, 0n);
          assert.equal(parsed(formatAmount(r.value), ANY), r.value);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
