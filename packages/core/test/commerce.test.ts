import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  type AutoTopUpConfig,
  costBasisOf,
  credits,
  decideTopUp,
  graduatedCost,
  monthStart,
  nextMonthStart,
  type PriceBook,
  type PriceBookInput,
  priceCredits,
  pricePack,
  purchaseExpiry,
  UNIT,
  validateAutoTopUp,
  validatePriceBook,
} from "../src/index.js";

const usd = (text: string): bigint => {
  const [whole, fraction = ""] = text.split(".");
  return BigInt(whole!) * UNIT + BigInt(fraction.padEnd(9, "0"));
};

const BOOK: PriceBookInput = {
  currency: "USD",
  packs: [
    { id: "starter", name: "Starter", credits: credits(1000n), price: usd("100"), expiry: { kind: "never" } },
    {
      id: "annual",
      name: "Annual",
      credits: credits(12_000n),
      price: usd("1000"),
      expiry: { kind: "rolling", months: 12 },
    },
  ],
  tiers: [
    { upTo: credits(1000n), unitPrice: usd("0.12") },
    { upTo: credits(10_000n), unitPrice: usd("0.10") },
    { upTo: null, unitPrice: usd("0.08") },
  ],
  commitmentDiscounts: [
    { minCommitted: credits(10_000n), percentOff: 10 },
    { minCommitted: credits(100_000n), percentOff: 20 },
  ],
};

const book = (input: PriceBookInput = BOOK): PriceBook => {
  const r = validatePriceBook(input);
  assert.ok(r.ok, r.ok ? "" : r.error.message);
  return r.value;
};

/** Random valid price books: 1 to 5 graduated tiers, 0 to 3 commitment bands, 0 to 9 decimals. */
const bookArb = fc
  .record({
    decimals: fc.integer({ min: 0, max: 9 }),
    ends: fc.uniqueArray(fc.bigInt({ min: 1n, max: 10n ** 15n }), { maxLength: 4 }),
    prices: fc.array(fc.bigInt({ min: 0n, max: 10n ** 10n }), { minLength: 5, maxLength: 5 }),
    bands: fc.uniqueArray(fc.bigInt({ min: 1n, max: 10n ** 15n }), { maxLength: 3 }),
    percents: fc.array(fc.integer({ min: 1, max: 99 }), { minLength: 3, maxLength: 3 }),
  })
  .map(({ decimals, ends, prices, bands, percents }) => {
    const sortedEnds = [...ends].sort((a, b) => (a < b ? -1 : 1));
    const sortedBands = [...bands].sort((a, b) => (a < b ? -1 : 1));
    const sortedPercents = [...percents].sort((a, b) => a - b);
    return book({
      currency: "EUR",
      decimals,
      tiers: [
        ...sortedEnds.map((upTo, i) => ({ upTo, unitPrice: prices[i]! })),
        { upTo: null, unitPrice: prices[4]! },
      ],
      commitmentDiscounts: sortedBands.map((minCommitted, i) => ({
        minCommitted,
        percentOff: sortedPercents[i]!,
      })),
    });
  });

const amountArb = fc.bigInt({ min: 1n, max: 10n ** 17n });

describe("price book validation", () => {
  test("a valid book fills its defaults", () => {
    const b = book({ currency: "USD", tiers: [{ upTo: null, unitPrice: usd("0.01") }] });
    assert.equal(b.decimals, 2);
    assert.deepEqual(b.customExpiry, { kind: "never" });
    assert.deepEqual(b.packs, []);
    assert.deepEqual(b.commitmentDiscounts, []);
  });

  const bad: [string, PriceBookInput, string][] = [
    ["a lowercase currency", { ...BOOK, currency: "usd" }, "currency"],
    ["decimals 10", { ...BOOK, decimals: 10 }, "decimals"],
    ["nothing to sell", { currency: "USD" }, "packs"],
    [
      "a pack price finer than the decimals",
      {
        ...BOOK,
        packs: [{ id: "p", name: "P", credits: UNIT, price: usd("1.001"), expiry: { kind: "never" } }],
      },
      "packs/0/price",
    ],
    [
      "a pack id twice",
      {
        ...BOOK,
        packs: [
          { id: "p", name: "P", credits: UNIT, price: UNIT, expiry: { kind: "never" } },
          { id: "p", name: "Q", credits: UNIT, price: UNIT, expiry: { kind: "never" } },
        ],
      },
      "packs/1/id",
    ],
    [
      "a pack expiring at period end",
      {
        ...BOOK,
        packs: [{ id: "p", name: "P", credits: UNIT, price: UNIT, expiry: { kind: "period_end" } }],
      },
      "packs/0/expiry",
    ],
    [
      "a pack of zero credits",
      { ...BOOK, packs: [{ id: "p", name: "P", credits: 0n, price: UNIT, expiry: { kind: "never" } }] },
      "packs/0/credits",
    ],
    [
      "tier ends that fall",
      {
        ...BOOK,
        tiers: [
          { upTo: credits(10n), unitPrice: UNIT },
          { upTo: credits(5n), unitPrice: UNIT },
          { upTo: null, unitPrice: UNIT },
        ],
      },
      "tiers/1/up_to",
    ],
    ["a bounded last tier", { ...BOOK, tiers: [{ upTo: credits(10n), unitPrice: UNIT }] }, "tiers/0/up_to"],
    [
      "an unbounded middle tier",
      {
        ...BOOK,
        tiers: [
          { upTo: null, unitPrice: UNIT },
          { upTo: null, unitPrice: UNIT },
        ],
      },
      "tiers/0/up_to",
    ],
    ["a negative unit price", { ...BOOK, tiers: [{ upTo: null, unitPrice: -1n }] }, "tiers/0/unit_price"],
    [
      "a discount that falls as the commitment grows",
      {
        ...BOOK,
        commitmentDiscounts: [
          { minCommitted: credits(10n), percentOff: 20 },
          { minCommitted: credits(20n), percentOff: 10 },
        ],
      },
      "commitment_discounts/1/percent_off",
    ],
    [
      "a discount of 100%",
      { ...BOOK, commitmentDiscounts: [{ minCommitted: credits(10n), percentOff: 100 }] },
      "commitment_discounts/0/percent_off",
    ],
    ["a custom expiry at period end", { ...BOOK, customExpiry: { kind: "period_end" } }, "custom_expiry"],
  ];
  for (const [name, input, field] of bad) {
    test(`refused: ${name}`, () => {
      const r = validatePriceBook(input);
      assert.ok(!r.ok);
      assert.equal(r.error.details?.field, field, r.error.message);
    });
  }
});

describe("pricing", () => {
  test("packs sell at their price, with the cost basis per credit", () => {
    const q = pricePack(book(), "starter");
    assert.ok(q.ok);
    assert.equal(q.value.price, usd("100"));
    assert.equal(q.value.costBasis, usd("0.1"));
    assert.equal(q.value.discountPercent, 0);
    assert.ok(!pricePack(book(), "nope").ok);
  });

  test("custom amounts are graduated: each credit at its band's price", () => {
    // 1000 at 0.12, 1500 at 0.10: 120 + 150.
    const q = priceCredits(book(), credits(2500n));
    assert.ok(q.ok);
    assert.equal(q.value.price, usd("270"));
    assert.equal(q.value.listPrice, usd("270"));
    assert.equal(q.value.costBasis, usd("0.108"));
  });

  test("committed-use discounts take the largest band reached, off packs and custom amounts", () => {
    const below = pricePack(book(), "starter", credits(9_999n));
    assert.ok(below.ok);
    assert.equal(below.value.discountPercent, 0);
    const ten = pricePack(book(), "starter", credits(10_000n));
    assert.ok(ten.ok);
    assert.equal(ten.value.discountPercent, 10);
    assert.equal(ten.value.price, usd("90"));
    assert.equal(ten.value.listPrice, usd("100"));
    const twenty = priceCredits(book(), credits(2500n), credits(250_000n));
    assert.ok(twenty.ok);
    assert.equal(twenty.value.price, usd("216"));
  });

  test("the price rounds once to the book's decimals, half away from zero", () => {
    // 1 credit at 0.125: 0.125 rounds to 0.13; with 10% off, 0.1125 rounds to 0.11.
    const b = book({
      currency: "USD",
      tiers: [{ upTo: null, unitPrice: usd("0.125") }],
      commitmentDiscounts: [{ minCommitted: UNIT, percentOff: 10 }],
    });
    const q = priceCredits(b, UNIT);
    assert.ok(q.ok);
    assert.equal(q.value.price, usd("0.13"));
    const d = priceCredits(b, UNIT, UNIT);
    assert.ok(d.ok);
    assert.equal(d.value.price, usd("0.11"));
    // 3 credits for 1.00 in a pack: 0.333333333 each, rounded down.
    assert.equal(costBasisOf(usd("1"), credits(3n)), 333_333_333n);
  });

  test("a packs-only book refuses custom amounts; a tiers-only book has no packs", () => {
    const packsOnly = book({ currency: "USD", packs: BOOK.packs! });
    const r = priceCredits(packsOnly, UNIT);
    assert.ok(!r.ok);
    assert.equal(r.error.code, "invalid_argument");
  });

  test("purchase expiry: never, or rolling months from the payment", () => {
    const paid = Date.UTC(2026, 0, 31);
    assert.equal(purchaseExpiry({ kind: "never" }, paid), null);
    assert.equal(purchaseExpiry({ kind: "rolling", months: 12 }, paid), Date.UTC(2027, 0, 31));
    assert.equal(purchaseExpiry({ kind: "rolling", months: 1 }, paid), Date.UTC(2026, 1, 28));
  });

  test("property: buying more never costs less (graduated tiers are monotone)", () => {
    fc.assert(
      fc.property(
        bookArb,
        amountArb,
        amountArb,
        fc.bigInt({ min: 0n, max: 10n ** 16n }),
        (b, x, y, committed) => {
          const [lo, hi] = x <= y ? [x, y] : [y, x];
          assert.ok(graduatedCost(b.tiers, lo) <= graduatedCost(b.tiers, hi));
          const a = priceCredits(b, lo, committed);
          const c = priceCredits(b, hi, committed);
          assert.ok(a.ok && c.ok);
          assert.ok(a.value.price <= c.value.price);
        },
      ),
    );
  });

  test("property: a discount never raises the price, and more commitment never costs more", () => {
    fc.assert(
      fc.property(
        bookArb,
        amountArb,
        fc.bigInt({ min: 0n, max: 10n ** 16n }),
        fc.bigInt({ min: 0n, max: 10n ** 16n }),
        (b, q, c1, c2) => {
          const [lo, hi] = c1 <= c2 ? [c1, c2] : [c2, c1];
          const none = priceCredits(b, q, 0n);
          const less = priceCredits(b, q, lo);
          const more = priceCredits(b, q, hi);
          assert.ok(none.ok && less.ok && more.ok);
          assert.ok(less.value.price <= none.value.price);
          assert.ok(more.value.price <= less.value.price);
          assert.ok(less.value.price <= less.value.listPrice);
          assert.equal(none.value.price, none.value.listPrice);
        },
      ),
    );
  });

  test("property: the price is the exact cost rounded once to the book's step; the cost basis never overstates it", () => {
    fc.assert(
      fc.property(bookArb, amountArb, fc.bigInt({ min: 0n, max: 10n ** 16n }), (b, q, committed) => {
        const r = priceCredits(b, q, committed);
        assert.ok(r.ok);
        const { price, costBasis, discountPercent } = r.value;
        const step = 10n ** BigInt(9 - b.decimals);
        assert.equal(price % step, 0n);
        // |price − exact| ≤ step / 2, with exact = cost × (100 − pct) / (100 × UNIT).
        const exact2 = graduatedCost(b.tiers, q) * BigInt(100 - discountPercent) * 2n;
        const den = 100n * UNIT;
        const diff = price * den * 2n - exact2;
        assert.ok((diff < 0n ? -diff : diff) <= step * den, "rounded to the nearest step");
        // Revenue recognized from the credits never exceeds the price, and falls short by less than one unit per credit.
        assert.ok(costBasis * q <= price * UNIT);
        assert.ok((costBasis + 1n) * q > price * UNIT);
      }),
    );
  });
});

describe("auto top-up decisions", () => {
  const config = (over: Partial<AutoTopUpConfig> = {}): AutoTopUpConfig => ({
    threshold: credits(200n),
    buy: { kind: "amount", credits: credits(500n) },
    currency: "USD",
    monthlyCap: usd("100"),
    ...over,
  });

  test("validation: a target above the threshold, a positive cap", () => {
    assert.ok(validateAutoTopUp(config()).ok);
    const target = validateAutoTopUp(config({ buy: { kind: "target", balance: credits(200n) } }));
    assert.ok(!target.ok);
    assert.equal(target.error.details?.field, "target_balance");
    const cap = validateAutoTopUp(config({ monthlyCap: 0n }));
    assert.ok(!cap.ok);
    assert.equal(cap.error.details?.field, "monthly_cap");
    assert.ok(!validateAutoTopUp(config({ buy: { kind: "pack", packId: "Bad Id" } })).ok);
  });

  test("nothing to buy at or above the threshold", () => {
    const d = decideTopUp({
      config: config(),
      book: book(),
      balance: credits(200n),
      spent: 0n,
      committed: 0n,
    });
    assert.ok(d.ok);
    assert.equal(d.value.kind, "not_needed");
  });

  test("an amount, a target balance, or a pack", () => {
    const amount = decideTopUp({
      config: config(),
      book: book(),
      balance: credits(150n),
      spent: 0n,
      committed: 0n,
    });
    assert.ok(amount.ok && amount.value.kind === "buy");
    assert.equal(amount.value.quote.credits, credits(500n));
    assert.equal(amount.value.quote.price, usd("60"));
    const target = decideTopUp({
      config: config({ buy: { kind: "target", balance: credits(800n) } }),
      book: book(),
      balance: credits(150n),
      spent: 0n,
      committed: 0n,
    });
    assert.ok(target.ok && target.value.kind === "buy");
    assert.equal(target.value.quote.credits, credits(650n));
    assert.equal(target.value.quote.price, usd("78"));
    const pack = decideTopUp({
      config: config({ buy: { kind: "pack", packId: "starter" } }),
      book: book(),
      balance: 0n,
      spent: 0n,
      committed: 0n,
    });
    assert.ok(pack.ok && pack.value.kind === "buy");
    assert.equal(pack.value.quote.packId, "starter");
  });

  test("a top-up that does not fit what is left of the cap is refused whole", () => {
    const d = decideTopUp({ config: config(), book: book(), balance: 0n, spent: usd("60"), committed: 0n });
    assert.ok(!d.ok);
    assert.equal(d.error.code, "auto_top_up_cap_reached");
    assert.equal(d.error.details?.cap_left, "40");
    assert.equal(d.error.details?.price, "60");
  });

  test("property: whatever the balance and the spending, a bought top-up never exceeds the cap", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 12n), max: 10n ** 13n }),
        fc.bigInt({ min: 0n, max: 10n ** 12n }),
        fc.bigInt({ min: 1n, max: 10n ** 12n }),
        (balance, spent, cap) => {
          const d = decideTopUp({
            config: config({ monthlyCap: cap, buy: { kind: "target", balance: credits(1000n) } }),
            book: book(),
            balance,
            spent,
            committed: 0n,
          });
          if (d.ok && d.value.kind === "buy") {
            assert.ok(spent + d.value.quote.price <= cap);
            assert.equal(balance + d.value.quote.credits, credits(1000n));
          }
          if (balance >= credits(200n)) assert.ok(d.ok && d.value.kind === "not_needed");
        },
      ),
    );
  });

  test("calendar months in UTC", () => {
    const t = Date.UTC(2026, 11, 31, 23, 59, 59, 999);
    assert.equal(monthStart(t), Date.UTC(2026, 11, 1));
    assert.equal(nextMonthStart(t), Date.UTC(2027, 0, 1));
    assert.equal(monthStart(Date.UTC(2026, 1, 1)), Date.UTC(2026, 1, 1));
  });
});
