import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  divRound,
  FACTOR_SCALE,
  findAmbiguity,
  formatDecimal,
  formatExact,
  MAX_PER_EXPONENT,
  parseDecimal,
  parseRateCard,
  QUANTITY_SCALE,
  RATE_SCALE,
  type RatableEvent,
  type RateCardContent,
  type RateCardInput,
  type RateLine,
  type RateLineInput,
  type Rating,
  rateEvent,
  SCALE,
  selectLine,
  type Tier,
  tierPieces,
  versionAt,
} from "../src/index.js";

// ------------------------------------------------------------------------------------ helpers

/** A quantity given as a decimal string, at QUANTITY_SCALE. */
function qty(text: string): bigint {
  const r = parseDecimal(text, QUANTITY_SCALE, { allowZero: true });
  assert.ok(r.ok, `bad quantity ${text}`);
  return r.value;
}

/** A credit amount given as a decimal string, in amount units. */
function units(text: string): bigint {
  const r = parseDecimal(text, SCALE, { allowZero: true });
  assert.ok(r.ok, `bad amount ${text}`);
  return r.value;
}

function card(input: RateCardInput): RateCardContent {
  const r = parseRateCard(input);
  assert.ok(r.ok, `expected the card to parse, got ${r.ok ? "" : r.error.message}`);
  return r.value;
}

/** Asserts the card is refused with `invalid_rate_card`, and the message mentions `fragment`. */
function refused(input: RateCardInput, fragment: string | RegExp): void {
  const r = parseRateCard(input);
  assert.equal(r.ok, false, "expected the card to be refused");
  if (r.ok) return;
  assert.equal(r.error.code, "invalid_rate_card");
  if (typeof fragment === "string") assert.ok(r.error.message.includes(fragment), r.error.message);
  else assert.match(r.error.message, fragment);
}

function ev(
  action: string,
  quantities: Record<string, bigint>,
  dimensions: Record<string, string> = {},
  status: "succeeded" | "failed" = "succeeded",
): RatableEvent {
  return { action, quantities, dimensions, status };
}

const noUsage = (): bigint => 0n;

function rated(
  content: RateCardContent,
  event: RatableEvent,
  usage: (lineId: string) => bigint = noUsage,
  overrides: readonly RateLine[] = [],
): Rating {
  const r = rateEvent(content, overrides, event, usage);
  assert.ok(r.ok, `expected the event to rate, got ${r.ok ? "" : r.error.message}`);
  return r.value;
}

/** One-line card: `action`/`quantity` at `rate` per `per`. */
const oneLine = (extra: Partial<RateLineInput> = {}): RateCardInput => ({
  lines: [{ id: "l1", action: "chat", quantity: "tokens", rate: "1", ...extra }],
});

const pow10 = (k: number): bigint => 10n ** BigInt(k);

/** Half away from zero, written independently of divRound: truncate, then look at the remainder. */
function refRound(n: bigint, d: bigint): bigint {
  const q = n / d; // truncates toward zero
  const r = n % d; // has the sign of n
  const twice = (r < 0n ? -r : r) * 2n;
  if (twice >= d) return n < 0n ? q - 1n : q + 1n;
  return q;
}

// ------------------------------------------------------------------------------ parseRateCard

describe("parseRateCard: accepted content", () => {
  test("parses rates, per, tiers, minimum, free, multipliers and non-billable rules", () => {
    const c = card({
      lines: [
        { id: "chat-in", action: "chat", quantity: "input_tokens", rate: "0.15", per: "1000000" },
        {
          id: "chat.out",
          action: "chat",
          match: { model: "big" },
          quantity: "output_tokens",
          tiers: [
            { up_to: "1000", rate: "2" },
            { up_to: "5000.5", rate: "1.5" },
            { up_to: null, rate: "0" },
          ],
          minimum: "0.25",
        },
        { id: "img", action: "image.*", quantity: "images", rate: "10", per: "1" },
        { id: "ping", action: "ping", quantity: "calls", free: true },
      ],
      multipliers: [{ dimension: "mode", value: "turbo", factor: "6" }],
      non_billable: [{ action: "chat", match: { env: "test" }, reason: "test traffic" }],
    });
    assert.equal(c.lines.length, 4);
    const [a, b, img, ping] = c.lines;
    assert.deepEqual(a, {
      id: "chat-in",
      action: "chat",
      match: {},
      quantity: "input_tokens",
      rate: 150_000_000_000n,
      perExponent: 6,
      tiers: null,
      minimum: 0n,
      free: false,
    });
    assert.deepEqual(b?.tiers, [
      { upTo: 1_000_000_000_000n, rate: 2_000_000_000_000n },
      { upTo: 5_000_500_000_000n, rate: 1_500_000_000_000n },
      { upTo: null, rate: 0n },
    ]);
    assert.equal(b?.rate, 2_000_000_000_000n, "a tiered line's rate is its first tier's");
    assert.equal(b?.minimum, 250_000_000n);
    assert.deepEqual(b?.match, { model: "big" });
    assert.equal(img?.perExponent, 0);
    assert.equal(ping?.free, true);
    assert.equal(ping?.rate, 0n);
    assert.deepEqual(c.multipliers, [{ dimension: "mode", value: "turbo", factor: 6_000_000n }]);
    assert.deepEqual(c.nonBillable, [{ action: "chat", match: { env: "test" }, reason: "test traffic" }]);
  });

  test("every power of ten from 1 to 10^9 is a valid per", () => {
    for (let k = 0; k <= MAX_PER_EXPONENT; k++) {
      const c = card(oneLine({ per: "1" + "0".repeat(k) }));
      assert.equal(c.lines[0]?.perExponent, k);
    }
  });

  test("zero rates are allowed; multipliers and non-billable rules are optional", () => {
    const c = card(oneLine({ rate: "0" }));
    assert.equal(c.lines[0]?.rate, 0n);
    assert.deepEqual(c.multipliers, []);
    assert.deepEqual(c.nonBillable, []);
    assert.deepEqual(card({ lines: [] }).lines, []);
  });

  test("the finest rate and quantity boundaries are exact", () => {
    const c = card(oneLine({ rate: "0.000000000001", tiers: undefined }));
    assert.equal(c.lines[0]?.rate, 1n);
    const t = card(
      oneLine({
        rate: undefined,
        tiers: [
          { up_to: "0.000000001", rate: "1" },
          { up_to: null, rate: "2" },
        ],
      }),
    );
    assert.equal(t.lines[0]?.tiers?.[0]?.upTo, 1n);
  });
});

describe("parseRateCard: every rejection is invalid_rate_card", () => {
  const line = (extra: Partial<RateLineInput>): RateCardInput => ({
    lines: [{ id: "l1", action: "chat", quantity: "tokens", rate: "1", ...extra }],
  });
  const cases: [string, RateCardInput, string | RegExp][] = [
    [
      "more than 1,000 lines",
      {
        lines: Array.from({ length: 1001 }, (_, i) => ({
          id: `l${i}`,
          action: `a${i}`,
          quantity: "tokens",
          rate: "1",
        })),
      },
      "at most 1,000 lines",
    ],
    ["an id with upper case", line({ id: "Line1" }), 'id "Line1"'],
    ["an id starting with a digit", line({ id: "1line" }), 'id "1line"'],
    ["an empty id", line({ id: "" }), "short lowercase name"],
    ["an id longer than 64", line({ id: "l" + "x".repeat(64) }), "short lowercase name"],
    ["an action with spaces", line({ action: "chat now" }), "is not an action"],
    ["a bare wildcard action", line({ action: "*" }), "is not an action"],
    ["a wildcard not at the end", line({ action: "image.*.hd" }), "is not an action"],
    ["an action with upper case", line({ action: "Chat" }), "is not an action"],
    ["a quantity with upper case", line({ quantity: "Tokens" }), 'quantity "Tokens"'],
    ["a quantity with a dot", line({ quantity: "out.tokens" }), "lowercase name"],
    ["a match on a bad dimension name", line({ match: { Model: "a" } }), 'match "Model"'],
    ["a match with an empty value", line({ match: { model: "" } }), "non-empty value"],
    ["a match value over 100 characters", line({ match: { model: "x".repeat(101) } }), "non-empty value"],
    ["per of 2", line({ per: "2" }), "power of ten"],
    ["per of 0", line({ per: "0" }), "power of ten"],
    ["per of 10^10", line({ per: "10000000000" }), "power of ten"],
    ["per with decimals", line({ per: "10.0" }), "power of ten"],
    ["per of 0.1", line({ per: "0.1" }), "power of ten"],
    ["per with a leading zero", line({ per: "010" }), "power of ten"],
    ["a negative rate", line({ rate: "-1" }), "rate:"],
    ["a rate with 13 decimals", line({ rate: "0.0000000000001" }), "rate:"],
    ["a rate in exponent form", line({ rate: "1e3" }), "rate:"],
    ["both rate and tiers", line({ tiers: [{ up_to: null, rate: "1" }] }), "rate or tiers, not both"],
    ["no rate, no tiers, not free", line({ rate: undefined }), "needs a rate, tiers, or free"],
    ["free: false without a rate", line({ rate: undefined, free: false }), "needs a rate"],
    ["an empty tier list", line({ rate: undefined, tiers: [] }), "1 to 20 tiers"],
    [
      "21 tiers",
      line({
        rate: undefined,
        tiers: [
          ...Array.from({ length: 20 }, (_, i) => ({ up_to: String(i + 1), rate: "1" })),
          { up_to: null, rate: "1" },
        ],
      }),
      "1 to 20 tiers",
    ],
    [
      "a last tier with an up_to",
      line({ rate: undefined, tiers: [{ up_to: "10", rate: "1" }] }),
      "up_to null",
    ],
    [
      "a middle tier with up_to null",
      line({
        rate: undefined,
        tiers: [
          { up_to: null, rate: "1" },
          { up_to: null, rate: "1" },
        ],
      }),
      "up_to null",
    ],
    [
      "tier bounds that repeat",
      line({
        rate: undefined,
        tiers: [
          { up_to: "10", rate: "1" },
          { up_to: "10", rate: "1" },
          { up_to: null, rate: "1" },
        ],
      }),
      "must increase",
    ],
    [
      "tier bounds that decrease",
      line({
        rate: undefined,
        tiers: [
          { up_to: "10", rate: "1" },
          { up_to: "5", rate: "1" },
          { up_to: null, rate: "1" },
        ],
      }),
      "must increase",
    ],
    [
      "a zero tier bound",
      line({
        rate: undefined,
        tiers: [
          { up_to: "0", rate: "1" },
          { up_to: null, rate: "1" },
        ],
      }),
      "tier 1 up_to",
    ],
    [
      "a tier bound with 10 decimals",
      line({
        rate: undefined,
        tiers: [
          { up_to: "1.0000000001", rate: "1" },
          { up_to: null, rate: "1" },
        ],
      }),
      "tier 1 up_to",
    ],
    [
      "a negative tier rate",
      line({
        rate: undefined,
        tiers: [
          { up_to: "10", rate: "1" },
          { up_to: null, rate: "-1" },
        ],
      }),
      "tier 2 rate",
    ],
    ["a negative minimum", line({ minimum: "-0.5" }), "minimum:"],
    ["a minimum with 10 decimals", line({ minimum: "0.0000000001" }), "minimum:"],
    [
      "an id used twice",
      {
        lines: [
          { id: "dup", action: "chat", quantity: "input_tokens", rate: "1" },
          { id: "dup", action: "chat", quantity: "output_tokens", rate: "1" },
        ],
      },
      'id "dup" is used twice',
    ],
    [
      "a multiplier on a bad dimension name",
      { ...line({}), multipliers: [{ dimension: "Mode", value: "turbo", factor: "2" }] },
      "multipliers[0]",
    ],
    [
      "a multiplier with an empty value",
      { ...line({}), multipliers: [{ dimension: "mode", value: "", factor: "2" }] },
      "multipliers[0]",
    ],
    [
      "a zero multiplier",
      { ...line({}), multipliers: [{ dimension: "mode", value: "turbo", factor: "0" }] },
      "multipliers[0] factor",
    ],
    [
      "a negative multiplier",
      { ...line({}), multipliers: [{ dimension: "mode", value: "turbo", factor: "-2" }] },
      "multipliers[0] factor",
    ],
    [
      "a multiplier with 7 decimals",
      {
        ...line({}),
        multipliers: [
          { dimension: "mode", value: "fast", factor: "2" },
          { dimension: "mode", value: "turbo", factor: "1.0000001" },
        ],
      },
      "multipliers[1] factor",
    ],
    [
      "a non-billable rule with a bad action",
      { ...line({}), non_billable: [{ action: "Chat!", reason: "x" }] },
      "non_billable[0]",
    ],
    [
      "a non-billable rule with a bad match",
      { ...line({}), non_billable: [{ action: "chat", match: { env: "" }, reason: "x" }] },
      "non_billable[0]",
    ],
    [
      "a non-billable rule without a reason",
      { ...line({}), non_billable: [{ action: "chat", reason: "" }] },
      "give a reason",
    ],
    [
      "a non-billable reason over 200 characters",
      { ...line({}), non_billable: [{ action: "chat", reason: "x".repeat(201) }] },
      "give a reason",
    ],
  ];
  for (const [name, input, fragment] of cases) test(name, () => refused(input, fragment));

  test("the error names the offending line index", () => {
    refused(
      {
        lines: [
          { id: "ok", action: "chat", quantity: "tokens", rate: "1" },
          { id: "bad", action: "chat", quantity: "images", rate: "1", per: "3" },
        ],
      },
      /^lines\[1\]: /,
    );
  });
});

describe("findAmbiguity and ambiguous cards", () => {
  const ln = (id: string, action: string, match: Record<string, string> = {}, quantity = "tokens") => ({
    id,
    action,
    match,
    quantity,
    rate: "1",
  });

  test("two lines with the same action, quantity and filters are ambiguous", () => {
    refused({ lines: [ln("a", "chat"), ln("b", "chat")] }, /lines "a" and "b" can both price tokens/);
    refused(
      { lines: [ln("a", "chat", { model: "x" }), ln("b", "chat", { model: "x" })] },
      "make one more specific",
    );
    refused({ lines: [ln("a", "image.*"), ln("b", "image.*")] }, 'lines "a" and "b"');
  });

  test("{model:a} and {tier:b} on the same action and quantity are ambiguous", () => {
    refused(
      { lines: [ln("a", "chat", { model: "a" }), ln("b", "chat", { tier: "b" })] },
      'lines "a" and "b"',
    );
    refused(
      { lines: [ln("a", "image.*", { model: "a" }), ln("b", "image.*", { tier: "b" })] },
      'lines "a" and "b"',
    );
  });

  test("{model:a} and {model:b} are not ambiguous: no event has both", () => {
    const c = card({ lines: [ln("a", "chat", { model: "a" }), ln("b", "chat", { model: "b" })] });
    assert.equal(findAmbiguity(c.lines), null);
  });

  test("an exact action and a wildcard are not ambiguous: the exact one wins", () => {
    const c = card({ lines: [ln("w", "image.*"), ln("e", "image.gen")] });
    assert.equal(selectLine(c.lines, ev("image.gen", { tokens: 1n }), "tokens")?.id, "e");
    assert.equal(selectLine(c.lines, ev("image.edit", { tokens: 1n }), "tokens")?.id, "w");
  });

  test('"image.*" and "image.gen.*" are not ambiguous: the longer prefix wins', () => {
    const c = card({ lines: [ln("short", "image.*"), ln("long", "image.gen.*")] });
    assert.equal(selectLine(c.lines, ev("image.gen.hd", {}), "tokens")?.id, "long");
    assert.equal(selectLine(c.lines, ev("image.edit", {}), "tokens")?.id, "short");
  });

  test("different quantities, disjoint actions, or different filter counts are not ambiguous", () => {
    card({ lines: [ln("a", "chat", {}, "input_tokens"), ln("b", "chat", {}, "output_tokens")] });
    card({ lines: [ln("a", "chat"), ln("b", "embed")] });
    card({ lines: [ln("a", "image.*"), ln("b", "video.*")] });
    card({
      lines: [ln("a", "chat"), ln("b", "chat", { model: "a" }), ln("c", "chat", { model: "a", tier: "x" })],
    });
    // Overlapping wildcards of equal length are identical, so only the same pattern can clash.
    card({ lines: [ln("a", "aa.*"), ln("b", "ab.*")] });
  });

  test("findAmbiguity reports the first ambiguous pair by position", () => {
    const lines = card({ lines: [ln("x", "chat"), ln("y", "embed")] }).lines;
    const dup = [...lines, { ...lines[0]!, id: "z" }];
    assert.match(findAmbiguity(dup) ?? "", /lines "x" and "z"/);
  });
});

// --------------------------------------------------------------------------------- selectLine

describe("selectLine: the most specific line", () => {
  const c = card({
    lines: [
      { id: "any_image", action: "image.*", quantity: "images", rate: "1" },
      { id: "gen_any", action: "image.gen.*", quantity: "images", rate: "2" },
      { id: "gen", action: "image.gen", quantity: "images", rate: "3" },
      { id: "image_big", action: "image.*", match: { model: "big" }, quantity: "images", rate: "4" },
      {
        id: "image_big_hd",
        action: "image.*",
        match: { model: "big", quality: "hd" },
        quantity: "images",
        rate: "5",
      },
      { id: "chat", action: "chat", quantity: "tokens", rate: "6" },
    ],
  });
  const pick = (action: string, dims: Record<string, string> = {}, quantity = "images") =>
    selectLine(c.lines, ev(action, {}, dims), quantity)?.id ?? null;

  test("more dimension filters beat an exact action", () => {
    assert.equal(pick("image.gen", { model: "big" }), "image_big");
    assert.equal(pick("image.gen", { model: "big", quality: "hd" }), "image_big_hd");
  });

  test("then an exact action beats a wildcard", () => {
    assert.equal(pick("image.gen"), "gen");
    assert.equal(pick("image.gen", { model: "small" }), "gen");
  });

  test("then a longer wildcard prefix beats a shorter one", () => {
    assert.equal(pick("image.gen.hd"), "gen_any");
    assert.equal(pick("image.upscale"), "any_image");
  });

  test("a line whose filter does not match is passed over", () => {
    assert.equal(pick("image.upscale", { model: "small", quality: "hd" }), "any_image");
    assert.equal(pick("image.upscale", { quality: "hd" }), "any_image");
  });

  test("no line: wrong quantity or unknown action", () => {
    assert.equal(pick("image.gen", {}, "tokens"), null);
    assert.equal(pick("chat", {}, "images"), null);
    assert.equal(pick("video.gen"), null);
    assert.equal(pick("image"), null, '"image.*" does not admit "image" itself');
    assert.equal(pick("chat", {}, "tokens"), "chat");
  });

  test("the choice does not depend on the order of the lines", () => {
    const reversed = [...c.lines].reverse();
    for (const action of ["image.gen", "image.gen.hd", "image.upscale", "chat"]) {
      for (const dims of [{}, { model: "big" }, { model: "big", quality: "hd" }, { quality: "hd" }] as Record<
        string,
        string
      >[]) {
        for (const q of ["images", "tokens"]) {
          assert.equal(
            selectLine(reversed, ev(action, {}, dims), q)?.id,
            selectLine(c.lines, ev(action, {}, dims), q)?.id,
          );
        }
      }
    }
  });
});

// --------------------------------------------------------------------------------- tierPieces

describe("tierPieces: graduated tiers by period usage", () => {
  const tiers: Tier[] = [
    { upTo: 100n, rate: 30n },
    { upTo: 1000n, rate: 20n },
    { upTo: null, rate: 10n },
  ];

  test("a quantity inside the first tier is one piece", () => {
    assert.deepEqual(tierPieces(tiers, 0n, 40n), [{ quantity: 40n, rate: 30n }]);
  });

  test("a quantity crossing tiers is split at the bounds, counting the usage before it", () => {
    assert.deepEqual(tierPieces(tiers, 50n, 100n), [
      { quantity: 50n, rate: 30n },
      { quantity: 50n, rate: 20n },
    ]);
    assert.deepEqual(tierPieces(tiers, 0n, 2000n), [
      { quantity: 100n, rate: 30n },
      { quantity: 900n, rate: 20n },
      { quantity: 1000n, rate: 10n },
    ]);
  });

  test("usage at or past a bound starts in the next tier", () => {
    assert.deepEqual(tierPieces(tiers, 100n, 5n), [{ quantity: 5n, rate: 20n }]);
    assert.deepEqual(tierPieces(tiers, 5000n, 5n), [{ quantity: 5n, rate: 10n }]);
  });

  test("zero quantity has no pieces", () => {
    assert.deepEqual(tierPieces(tiers, 10n, 0n), []);
  });
});

// ---------------------------------------------------------------------------------- rateEvent

describe("rateEvent: rules", () => {
  const base = card({
    lines: [
      { id: "chat_in", action: "chat", quantity: "input_tokens", rate: "0.15", per: "1000000" },
      { id: "chat_out", action: "chat", quantity: "output_tokens", rate: "0.6", per: "1000000" },
      {
        id: "chat_out_big",
        action: "chat",
        match: { model: "big" },
        quantity: "output_tokens",
        rate: "6",
        per: "1000000",
      },
      { id: "img", action: "image.*", quantity: "images", rate: "10", minimum: "25" },
      { id: "ping", action: "ping", quantity: "calls", free: true },
      { id: "search", action: "search", quantity: "calls", rate: "0.5" },
      {
        id: "embed",
        action: "embed",
        quantity: "tokens",
        tiers: [
          { up_to: "1000", rate: "0.01" },
          { up_to: null, rate: "0.001" },
        ],
      },
    ],
    multipliers: [
      { dimension: "mode", value: "turbo", factor: "6" },
      { dimension: "region", value: "eu", factor: "1.5" },
    ],
    non_billable: [
      { action: "chat", match: { env: "test" }, reason: "test traffic" },
      { action: "internal", reason: "internal tool" },
    ],
  });

  test("a flat line: quantity × rate / per, in amount units", () => {
    const r = rated(base, ev("chat", { input_tokens: qty("1000000") }));
    assert.equal(r.credits, units("0.15"));
    assert.equal(r.billable, true);
    assert.equal(r.reason, null);
    assert.equal(r.exactScale, 27);
    assert.equal(r.multiplier, 10n ** BigInt(FACTOR_SCALE));
    assert.equal(r.multiplierScale, FACTOR_SCALE);
    assert.equal(r.lines.length, 1);
    const line = r.lines[0]!;
    assert.equal(line.lineId, "chat_in");
    assert.equal(line.amount, qty("1000000"));
    assert.equal(line.perExponent, 6);
    assert.equal(formatExact(line.exact, r.exactScale), "0.15");
    assert.equal(line.minimumApplied, false);
    assert.equal(line.override, false);
  });

  test("every quantity is priced by its own line, in quantity-name order, and summed", () => {
    const r = rated(base, ev("chat", { output_tokens: qty("1000"), input_tokens: qty("2000") }));
    assert.deepEqual(
      r.lines.map((l) => l.lineId),
      ["chat_in", "chat_out"],
    );
    // 2000 × 0.15e-6 + 1000 × 0.6e-6 = 0.0003 + 0.0006
    assert.equal(r.credits, units("0.0009"));
  });

  test("a dimension filter picks the specific line", () => {
    const r = rated(base, ev("chat", { output_tokens: qty("1000000") }, { model: "big" }));
    assert.equal(r.lines[0]?.lineId, "chat_out_big");
    assert.equal(r.credits, units("6"));
  });

  test("quantities without a line are ignored", () => {
    const r = rated(base, ev("chat", { input_tokens: qty("1000000"), images: qty("3") }));
    assert.equal(r.lines.length, 1);
    assert.equal(r.credits, units("0.15"));
  });

  test("multipliers multiply exactly and stack", () => {
    const one = rated(base, ev("search", { calls: qty("3") }, { mode: "turbo" }));
    assert.equal(one.credits, units("9"));
    assert.equal(one.multiplier, 6_000_000n * 1_000_000n);
    assert.equal(one.multiplierScale, 2 * FACTOR_SCALE);
    assert.equal(one.exactScale, 27 + FACTOR_SCALE);
    const two = rated(base, ev("search", { calls: qty("3") }, { mode: "turbo", region: "eu" }));
    assert.equal(two.credits, units("13.5"));
    assert.equal(two.multiplierScale, 3 * FACTOR_SCALE);
    assert.equal(formatExact(two.lines[0]!.exact, two.exactScale), "13.5");
    const none = rated(base, ev("search", { calls: qty("3") }, { mode: "slow" }));
    assert.equal(none.credits, units("1.5"));
  });

  test("a multiplier of 1.5 on an odd number of units keeps the half until the single rounding", () => {
    // 1 unit × 1.5 = 1.5 units → rounded once, half away from zero → 2 units.
    const c = card({
      lines: [{ id: "l", action: "x", quantity: "n", rate: "0.000000001" }],
      multipliers: [{ dimension: "region", value: "eu", factor: "1.5" }],
    });
    const r = rated(c, ev("x", { n: qty("1") }, { region: "eu" }));
    assert.equal(r.credits, 2n);
    assert.equal(formatExact(r.lines[0]!.exact, r.exactScale), "0.0000000015");
  });

  test("a minimum lifts a small charge, and is applied after multipliers", () => {
    const small = rated(base, ev("image.gen", { images: qty("1") }));
    assert.equal(small.credits, units("25"));
    assert.equal(small.lines[0]?.minimumApplied, true);
    const big = rated(base, ev("image.gen", { images: qty("3") }));
    assert.equal(big.credits, units("30"));
    assert.equal(big.lines[0]?.minimumApplied, false);
    const turbo = rated(base, ev("image.gen", { images: qty("1") }, { mode: "turbo" }));
    assert.equal(turbo.credits, units("60"));
    assert.equal(turbo.lines[0]?.minimumApplied, false);
    const exactlyMin = rated(base, ev("image.gen", { images: qty("2.5") }));
    assert.equal(exactlyMin.credits, units("25"));
    assert.equal(exactlyMin.lines[0]?.minimumApplied, false);
  });

  test("failed events rate zero with reason failed, before any other rule", () => {
    for (const e of [
      ev("chat", { input_tokens: qty("5") }, {}, "failed"),
      ev("chat", { input_tokens: qty("5") }, { env: "test" }, "failed"),
      ev("image.gen", { images: qty("1") }, {}, "failed"),
      ev("internal", {}, {}, "failed"),
    ]) {
      const r = rated(base, e);
      assert.equal(r.credits, 0n);
      assert.equal(r.billable, false);
      assert.equal(r.reason, "failed");
      assert.deepEqual(r.lines, []);
    }
  });

  test("non-billable matches rate zero with their reason", () => {
    const r = rated(base, ev("chat", { input_tokens: qty("5000000") }, { env: "test" }));
    assert.equal(r.credits, 0n);
    assert.equal(r.billable, false);
    assert.equal(r.reason, "non_billable: test traffic");
    assert.deepEqual(r.lines, []);
    // The rule's filter must match: production traffic is billed.
    assert.equal(
      rated(base, ev("chat", { input_tokens: qty("1000000") }, { env: "prod" })).credits,
      units("0.15"),
    );
    // An action only a non-billable rule knows is rated (at zero), not rejected.
    assert.equal(rated(base, ev("internal", { calls: qty("9") })).reason, "non_billable: internal tool");
  });

  test("a free line is rated and recorded at zero with reason free; the minimum does not apply", () => {
    const c = card({
      lines: [
        { id: "ping", action: "ping", quantity: "calls", free: true, minimum: "5" },
        { id: "ping_bytes", action: "ping", quantity: "bytes", rate: "1" },
      ],
    });
    const r = rated(c, ev("ping", { calls: qty("100") }));
    assert.equal(r.credits, 0n);
    assert.equal(r.billable, true);
    assert.equal(r.reason, "free");
    assert.equal(r.lines[0]?.free, true);
    assert.equal(r.lines[0]?.exact, 0n);
    assert.equal(r.lines[0]?.minimumApplied, false);
    const mixed = rated(c, ev("ping", { calls: qty("100"), bytes: qty("2") }));
    assert.equal(mixed.reason, null, "one paid line makes the event not free");
    assert.equal(mixed.credits, units("2"));
  });

  test("an action no line or rule knows is unknown_action, even for a failed event", () => {
    for (const status of ["succeeded", "failed"] as const) {
      const r = rateEvent(base, [], ev("video.gen", { seconds: qty("1") }, {}, status), noUsage);
      assert.equal(r.ok, false);
      if (r.ok) continue;
      assert.equal(r.error.code, "unknown_action");
      assert.deepEqual(r.error.details, { action: "video.gen" });
    }
  });

  test("contract overrides take precedence over card lines and make an action known", () => {
    const overrides = card({
      lines: [
        { id: "deal_search", action: "search", quantity: "calls", rate: "0.1" },
        { id: "deal_video", action: "video.*", quantity: "seconds", rate: "2" },
      ],
    }).lines;
    const r = rated(base, ev("search", { calls: qty("10") }), noUsage, overrides);
    assert.equal(r.credits, units("1"));
    assert.equal(r.lines[0]?.lineId, "deal_search");
    assert.equal(r.lines[0]?.override, true);
    assert.equal(rated(base, ev("video.gen", { seconds: qty("3") }), noUsage, overrides).credits, units("6"));
    // The card still prices the quantities the overrides do not.
    const img = rated(base, ev("image.gen", { images: qty("3") }), noUsage, overrides);
    assert.equal(img.lines[0]?.override, false);
  });

  test("tiers count the period usage before the event", () => {
    const usage = (id: string) => (id === "embed" ? qty("900") : 0n);
    const r = rated(base, ev("embed", { tokens: qty("300") }), usage);
    // 100 tokens at 0.01 + 200 at 0.001
    assert.equal(r.credits, units("1.2"));
    assert.deepEqual(
      r.lines[0]?.pieces.map((p) => p.quantity),
      [qty("100"), qty("200")],
    );
    assert.equal(rated(base, ev("embed", { tokens: qty("300") })).credits, units("3"));
  });

  test("the total is rounded once, not per line (concrete counterexamples to per-line rounding)", () => {
    // Two lines each worth exactly 0.5 units: per line each rounds to 1 (total 2), the exact
    // total is 1 unit.
    const halves = card({
      lines: [
        { id: "a", action: "x", quantity: "a", rate: "0.0000000005" },
        { id: "b", action: "x", quantity: "b", rate: "0.0000000005" },
      ],
    });
    const r = rated(halves, ev("x", { a: qty("1"), b: qty("1") }));
    const perLine = r.lines.reduce((s, l) => s + divRound(l.exact, pow10(r.exactScale)), 0n);
    assert.equal(perLine, 2n);
    assert.equal(r.credits, 1n);
    // Three lines of 0.4 units: per line 0 each, exact total 1.2 → 1 unit.
    const fifths = card({
      lines: ["a", "b", "c"].map((q) => ({ id: q, action: "x", quantity: q, rate: "0.0000000004" })),
    });
    const f = rated(fifths, ev("x", { a: qty("1"), b: qty("1"), c: qty("1") }));
    assert.equal(
      f.lines.reduce((s, l) => s + divRound(l.exact, pow10(f.exactScale)), 0n),
      0n,
    );
    assert.equal(f.credits, 1n);
    // Half a unit alone rounds away from zero.
    assert.equal(rated(halves, ev("x", { a: qty("1") })).credits, 1n);
    assert.equal(rated(halves, ev("x", { a: qty("0.999999999") })).credits, 0n);
    assert.equal(rated(halves, ev("x", { a: qty("5") })).credits, 3n);
  });

  test("a token priced per million is exact at the nanocredit", () => {
    // 0.15 credits per million tokens: 1 token is 0.00000015 credits = 150 units.
    const c = card(oneLine({ rate: "0.15", per: "1000000" }));
    assert.equal(rated(c, ev("chat", { tokens: qty("1") })).credits, 150n);
    assert.equal(rated(c, ev("chat", { tokens: qty("0.001") })).credits, 0n);
    assert.equal(rated(c, ev("chat", { tokens: qty("0.004") })).credits, 1n, "0.6 units rounds to 1");
  });
});

describe("versionAt and formatExact", () => {
  const versions = [
    { id: "v2", effectiveAt: 200 },
    { id: "v1", effectiveAt: 100 },
    { id: "v3", effectiveAt: 300 },
  ];

  test("the latest version effective at or before the time", () => {
    assert.equal(versionAt(versions, 99), null);
    assert.equal(versionAt(versions, 100)?.id, "v1");
    assert.equal(versionAt(versions, 199)?.id, "v1");
    assert.equal(versionAt(versions, 200)?.id, "v2");
    assert.equal(versionAt(versions, 10_000)?.id, "v3");
    assert.equal(versionAt([], 10_000), null);
  });

  test("formatExact writes credits with trailing zeros cut", () => {
    assert.equal(formatExact(5n * 10n ** 26n, 27), "0.0000000005");
    assert.equal(formatExact(15n * 10n ** 35n, 27), "1.5");
    assert.equal(formatExact(0n, 27), "0");
    assert.equal(formatExact(10n ** 42n, 33), "1");
  });
});

// ----------------------------------------------------------------------------- divRound, decimals

describe("divRound and decimals: examples", () => {
  test("half away from zero", () => {
    const cases: [bigint, bigint, bigint][] = [
      [5n, 2n, 3n],
      [-5n, 2n, -3n],
      [4n, 3n, 1n],
      [-4n, 3n, -1n],
      [5n, 3n, 2n],
      [-5n, 3n, -2n],
      [0n, 7n, 0n],
      [1n, 2n, 1n],
      [-1n, 2n, -1n],
      [1n, 3n, 0n],
      [7n, 1n, 7n],
      [25n, 10n, 3n],
      [-25n, 10n, -3n],
      [24n, 10n, 2n],
    ];
    for (const [n, d, q] of cases) assert.equal(divRound(n, d), q, `${n}/${d}`);
  });

  test("a zero or negative denominator throws RangeError", () => {
    assert.throws(() => divRound(1n, 0n), RangeError);
    assert.throws(() => divRound(1n, -2n), RangeError);
  });

  test("parseDecimal and formatDecimal at other scales", () => {
    assert.deepEqual(parseDecimal("0.000000125", 12), { ok: true, value: 125_000n });
    assert.equal(formatDecimal(125_000n, 12), "0.000000125");
    assert.deepEqual(parseDecimal("7", 0), { ok: true, value: 7n });
    assert.equal(parseDecimal("7.5", 0).ok, false);
    assert.equal(formatDecimal(-7n, 0), "-7");
    assert.equal(formatDecimal(-1n, 15), "-0.000000000000001");
  });
});

// ---------------------------------------------------------------------------------- properties

/** A flat line spec for the exactness property. */
interface FlatSpec {
  readonly rate: bigint;
  readonly per: number;
  readonly quantity: bigint;
}

const flatSpecArb: fc.Arbitrary<FlatSpec> = fc.record({
  rate: fc.oneof(fc.bigInt({ min: 0n, max: 10n ** 6n }), fc.bigInt({ min: 0n, max: 10n ** 16n })),
  per: fc.integer({ min: 0, max: MAX_PER_EXPONENT }),
  quantity: fc.oneof(fc.bigInt({ min: 0n, max: 10n ** 4n }), fc.bigInt({ min: 0n, max: 10n ** 18n })),
});

const multiplierArb = fc.record({
  dimension: fc.constantFrom("mode", "region", "tier"),
  value: fc.constantFrom("a", "b"),
  factor: fc.oneof(fc.bigInt({ min: 1n, max: 10n ** 7n }), fc.bigInt({ min: 1n, max: 10n ** 3n })),
});

const flatCardInput = (
  specs: readonly FlatSpec[],
  multipliers: readonly { dimension: string; value: string; factor: string }[] = [],
): RateCardInput => ({
  lines: specs.map((s, i) => ({
    id: `l${i}`,
    action: "x",
    quantity: `q${i}`,
    rate: formatDecimal(s.rate, RATE_SCALE),
    per: "1" + "0".repeat(s.per),
  })),
  multipliers,
});

/** Any card for monotonicity and failure properties: flat or tiered lines, minimums, multipliers. */
const tieredLineArb = fc
  .record({
    bounds: fc.uniqueArray(fc.bigInt({ min: 1n, max: 10n ** 12n }), { maxLength: 4 }),
    rates: fc.array(fc.bigInt({ min: 0n, max: 10n ** 13n }), { minLength: 5, maxLength: 5 }),
    per: fc.integer({ min: 0, max: MAX_PER_EXPONENT }),
    minimum: fc.option(fc.bigInt({ min: 0n, max: 10n ** 10n }), { nil: undefined }),
    tiered: fc.boolean(),
  })
  .map(({ bounds, rates, per, minimum, tiered }) => {
    const sorted = [...bounds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const tiers = [...sorted, null].map((b, i) => ({
      up_to: b === null ? null : formatDecimal(b, QUANTITY_SCALE),
      rate: formatDecimal(rates[i]!, RATE_SCALE),
    }));
    return {
      per: "1" + "0".repeat(per),
      ...(tiered ? { tiers } : { rate: formatDecimal(rates[0]!, RATE_SCALE) }),
      ...(minimum === undefined ? {} : { minimum: formatDecimal(minimum, SCALE) }),
    };
  });

const anyCardArb = fc
  .record({
    lines: fc.array(tieredLineArb, { minLength: 1, maxLength: 3 }),
    multipliers: fc.array(
      multiplierArb.map((m) => ({ ...m, factor: formatDecimal(m.factor, FACTOR_SCALE) })),
      { maxLength: 2 },
    ),
    nonBillable: fc.boolean(),
  })
  .map(({ lines, multipliers, nonBillable }) =>
    card({
      lines: lines.map((l, i) => ({ id: `l${i}`, action: "x", quantity: `q${i}`, ...l })),
      multipliers,
      non_billable: nonBillable ? [{ action: "x", match: { env: "test" }, reason: "tests" }] : [],
    }),
  );

const dimsArb = fc.record(
  {
    mode: fc.constantFrom("a", "b"),
    region: fc.constantFrom("a", "b"),
    env: fc.constantFrom("test", "prod"),
  },
  { requiredKeys: [] },
);

const sumExact = (r: Rating): bigint => r.lines.reduce((s, l) => s + l.exact, 0n);

describe("rating properties", () => {
  test("(a) exactness: credits equal a bigint-rational reference rounded once", () => {
    fc.assert(
      fc.property(
        fc.array(flatSpecArb, { minLength: 1, maxLength: 4 }),
        fc.array(multiplierArb, { maxLength: 3 }),
        dimsArb,
        (specs, multipliers, dims) => {
          const c = card(
            flatCardInput(
              specs,
              multipliers.map((m) => ({ ...m, factor: formatDecimal(m.factor, FACTOR_SCALE) })),
            ),
          );
          const quantities = Object.fromEntries(specs.map((s, i) => [`q${i}`, s.quantity]));
          const r = rated(c, ev("x", quantities, dims as Record<string, string>));
          // Reference: units = q·r·Πf / 10^(12 + k + 6m), all over the common 10^(21 + 6m).
          const matching = multipliers.filter(
            (m) => (dims as Record<string, string>)[m.dimension] === m.value,
          );
          const factor = matching.reduce((p, m) => p * m.factor, 1n);
          const denominator = pow10(21 + 6 * matching.length);
          const terms = specs.map((s) => s.quantity * s.rate * factor * pow10(MAX_PER_EXPONENT - s.per));
          const numerator = terms.reduce((a, b) => a + b, 0n);
          assert.equal(r.credits, refRound(numerator, denominator));
          // Each line's exact numerator is the same fraction, whatever scale it is kept at.
          assert.equal(r.lines.length, specs.length);
          for (const [i, line] of r.lines.entries()) {
            assert.equal(line.exact * denominator, terms[i]! * pow10(r.exactScale));
          }
          // And the single rounding is what makes the difference when per-line rounding disagrees.
          const perLine = r.lines.reduce((s, l) => s + divRound(l.exact, pow10(r.exactScale)), 0n);
          const diff = perLine - r.credits;
          assert.ok(diff >= -BigInt(specs.length) && diff <= BigInt(specs.length));
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("(a') lines of k + ½ units: one rounding gives Σk + ⌈n/2⌉, per-line rounding Σk + n", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 10n ** 9n }), { minLength: 2, maxLength: 6 }), (ks) => {
        // rate (2k+1)/2 units per 1 quantity unit, quantity 1: exactly k + ½ units.
        const c = card({
          lines: ks.map((k, i) => ({
            id: `l${i}`,
            action: "x",
            quantity: `q${i}`,
            rate: formatDecimal((2n * k + 1n) * 500n, RATE_SCALE),
          })),
        });
        const r = rated(c, ev("x", Object.fromEntries(ks.map((_, i) => [`q${i}`, qty("1")]))));
        const sum = ks.reduce((a, b) => a + b, 0n);
        const n = BigInt(ks.length);
        assert.equal(r.credits, sum + (n + 1n) / 2n);
        const perLine = r.lines.reduce((s, l) => s + divRound(l.exact, pow10(r.exactScale)), 0n);
        assert.equal(perLine, sum + n);
        assert.notEqual(perLine, r.credits);
      }),
      { numRuns: 300 },
    );
  });

  const tiersArb = fc
    .record({
      bounds: fc.uniqueArray(fc.bigInt({ min: 1n, max: 10n ** 6n }), { maxLength: 5 }),
      rates: fc.array(fc.bigInt({ min: 0n, max: 10n ** 9n }), { minLength: 6, maxLength: 6 }),
    })
    .map(({ bounds, rates }) =>
      [...[...bounds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), null].map(
        (upTo, i): Tier => ({ upTo, rate: rates[i]! }),
      ),
    );
  const q = fc.bigInt({ min: 0n, max: 2n * 10n ** 6n });
  const pieceSum = (pieces: readonly { quantity: bigint; rate: bigint }[]) =>
    pieces.reduce((s, p) => s + p.quantity * p.rate, 0n);

  test("(b) tiers are volume-consistent: one event equals two with the usage carried", () => {
    fc.assert(
      fc.property(tiersArb, q, q, q, (tiers, before, q1, q2) => {
        const whole = tierPieces(tiers, before, q1 + q2);
        const first = tierPieces(tiers, before, q1);
        const second = tierPieces(tiers, before + q1, q2);
        assert.equal(pieceSum(first) + pieceSum(second), pieceSum(whole));
        assert.equal(
          whole.reduce((s, p) => s + p.quantity, 0n),
          q1 + q2,
        );
        assert.ok(whole.every((p) => p.quantity > 0n));
        // The same through rateEvent, with usage carried between the two events.
        const c: RateCardContent = {
          lines: [
            {
              id: "t",
              action: "x",
              match: {},
              quantity: "n",
              rate: tiers[0]!.rate,
              perExponent: 3,
              tiers,
              minimum: 0n,
              free: false,
            },
          ],
          multipliers: [],
          nonBillable: [],
        };
        const one = rated(c, ev("x", { n: q1 + q2 }), () => before);
        const a = rated(c, ev("x", { n: q1 }), () => before);
        const b = rated(c, ev("x", { n: q2 }), () => before + q1);
        assert.equal(sumExact(a) + sumExact(b), sumExact(one));
      }),
      { numRuns: 1000 },
    );
  });

  test("(c) monotonicity: more quantity never costs less, whatever the tiers, minimums, multipliers", () => {
    fc.assert(
      fc.property(
        anyCardArb,
        fc.array(fc.bigInt({ min: 0n, max: 10n ** 13n }), { minLength: 3, maxLength: 3 }),
        fc.array(fc.bigInt({ min: 0n, max: 10n ** 13n }), { minLength: 3, maxLength: 3 }),
        fc.bigInt({ min: 0n, max: 10n ** 13n }),
        dimsArb,
        (c, base, extra, before, dims) => {
          const event = (qs: readonly bigint[]) =>
            ev("x", Object.fromEntries(c.lines.map((_, i) => [`q${i}`, qs[i]!])), {
              ...(dims as Record<string, string>),
              env: "prod",
            });
          const small = rated(c, event(base), () => before);
          const large = rated(c, event(base.map((b, i) => b + extra[i]!)), () => before);
          assert.equal(small.exactScale, large.exactScale);
          assert.ok(sumExact(small) <= sumExact(large));
          assert.ok(small.credits <= large.credits);
          for (const [i, line] of small.lines.entries()) assert.ok(line.exact <= large.lines[i]!.exact);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("(d) failed events always rate 0 with reason failed (invariant 9)", () => {
    fc.assert(
      fc.property(
        anyCardArb,
        fc.array(fc.bigInt({ min: 0n, max: 10n ** 15n }), { minLength: 3, maxLength: 3 }),
        dimsArb,
        fc.bigInt({ min: 0n, max: 10n ** 15n }),
        (c, qs, dims, before) => {
          const quantities = Object.fromEntries(qs.map((v, i) => [`q${i}`, v]));
          const r = rated(c, ev("x", quantities, dims as Record<string, string>, "failed"), () => before);
          assert.equal(r.credits, 0n);
          assert.equal(r.billable, false);
          assert.equal(r.reason, "failed");
          assert.deepEqual(r.lines, []);
          // The same event succeeded is never negative, and non-billable only under its rule.
          const ok = rated(c, ev("x", quantities, dims as Record<string, string>), () => before);
          assert.ok(ok.credits >= 0n);
          if (ok.reason?.startsWith("non_billable: ")) assert.equal(ok.credits, 0n);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("(e) divRound equals the reference, is odd-symmetric and within half a denominator", () => {
    const big = fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n });
    const small = fc.bigInt({ min: -50n, max: 50n });
    fc.assert(
      fc.property(
        fc.oneof(small, big),
        fc.oneof(fc.bigInt({ min: 1n, max: 12n }), fc.bigInt({ min: 1n, max: 10n ** 30n })),
        (n, d) => {
          const r = divRound(n, d);
          assert.equal(r, refRound(n, d));
          assert.equal(divRound(-n, d), -r);
          const err = n - r * d;
          assert.ok(2n * (err < 0n ? -err : err) <= d);
          // Exactly halfway rounds away from zero.
          assert.equal(divRound(2n * n + (n < 0n ? -1n : 1n), 2n), n + (n < 0n ? -1n : 1n));
        },
      ),
      { numRuns: 3000 },
    );
  });

  test("(e) parseDecimal and formatDecimal round-trip at scales 0..15", () => {
    const ANY = { allowNegative: true, allowZero: true } as const;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 15 }),
        fc.oneof(
          fc.bigInt({ min: -1000n, max: 1000n }),
          fc.bigInt({ min: -(10n ** 33n) + 1n, max: 10n ** 33n - 1n }),
        ),
        (scale, raw) => {
          const limit = 10n ** BigInt(18 + scale);
          const value = raw % limit;
          const text = formatDecimal(value, scale);
          assert.deepEqual(parseDecimal(text, scale, ANY), { ok: true, value });
          assert.doesNotMatch(text, /\.$|\.\d*0$|^-0$|e/);
          // Canonical text survives the other way round too.
          const back = parseDecimal(text, scale, ANY);
          assert.ok(back.ok);
          assert.equal(formatDecimal(back.value, scale), text);
          // One decimal too many is refused, never rounded.
          assert.equal(
            parseDecimal(`${text.includes(".") ? text : text + "."}${"0".repeat(scale)}1`, scale, ANY).ok,
            false,
          );
        },
      ),
      { numRuns: 2000 },
    );
  });
});

// ------------------------------------------------------------- ambiguity: sound and complete

const VOCAB_ACTIONS = ["chat", "image.*", "image.gen", "image.gen.*", "image.gen.hd", "image.x"] as const;
const EVENT_ACTIONS = ["chat", "image.gen", "image.gen.hd", "image.x", "image.y"] as const;
const EVENT_DIMS: Record<string, string>[] = [];
for (const model of [undefined, "a", "b"])
  for (const tier of [undefined, "x", "y"])
    EVENT_DIMS.push({ ...(model ? { model } : {}), ...(tier ? { tier } : {}) });

const vocabLineArb = fc.record({
  action: fc.constantFrom(...VOCAB_ACTIONS),
  model: fc.constantFrom(undefined, "a", "b"),
  tier: fc.constantFrom(undefined, "x", "y"),
  quantity: fc.constantFrom("tokens", "images"),
});

const admits = (pattern: string, action: string) =>
  pattern.endsWith(".*") ? action.startsWith(pattern.slice(0, -1)) : pattern === action;
const specOf = (l: RateLine) =>
  `${Object.keys(l.match).length}|${l.action.endsWith(".*") ? 0 : 1}|${l.action.length}`;

describe("ambiguity property", () => {
  test("a card is refused as ambiguous exactly when some event matches two equally specific lines; otherwise selection ignores order", () => {
    fc.assert(
      fc.property(fc.array(vocabLineArb, { maxLength: 6 }), (specs) => {
        const input: RateCardInput = {
          lines: specs.map((s, i) => ({
            id: `l${i}`,
            action: s.action,
            quantity: s.quantity,
            rate: String(i + 1),
            match: { ...(s.model ? { model: s.model } : {}), ...(s.tier ? { tier: s.tier } : {}) },
          })),
        };
        const parsedLines = input.lines.map((l) => {
          const r = parseRateCard({ lines: [l] });
          assert.ok(r.ok);
          return r.value.lines[0]!;
        });
        // Brute force over every event the vocabulary can tell apart.
        let clash = false;
        for (const action of EVENT_ACTIONS) {
          for (const dims of EVENT_DIMS) {
            for (const quantity of ["tokens", "images"]) {
              const hits = parsedLines.filter(
                (l) =>
                  l.quantity === quantity &&
                  admits(l.action, action) &&
                  Object.entries(l.match).every(([k, v]) => dims[k] === v),
              );
              const specs = hits.map(specOf);
              if (new Set(specs).size !== specs.length) clash = true;
            }
          }
        }
        assert.equal(findAmbiguity(parsedLines) !== null, clash);
        const r = parseRateCard(input);
        assert.equal(r.ok, !clash);
        if (!r.ok) {
          assert.equal(r.error.code, "invalid_rate_card");
          return;
        }
        const reversed = [...r.value.lines].reverse();
        for (const action of EVENT_ACTIONS) {
          for (const dims of EVENT_DIMS) {
            for (const quantity of ["tokens", "images"]) {
              const e = ev(action, {}, dims);
              const chosen = selectLine(r.value.lines, e, quantity);
              assert.equal(selectLine(reversed, e, quantity)?.id, chosen?.id);
              if (chosen) {
                // Nothing that matches is more specific than the chosen line.
                for (const l of r.value.lines) {
                  if (
                    l.quantity === quantity &&
                    admits(l.action, action) &&
                    Object.entries(l.match).every(([k, v]) => dims[k] === v)
                  ) {
                    const [a0, a1, a2] = specOf(l).split("|").map(Number);
                    const [b0, b1, b2] = specOf(chosen).split("|").map(Number);
                    assert.ok(a0! < b0! || (a0 === b0 && (a1! < b1! || (a1 === b1 && a2! <= b2!))));
                  }
                }
              }
            }
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
