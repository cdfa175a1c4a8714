import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  addInterval,
  CONTRACT_LIMITS,
  type Contract,
  type ContractInput,
  contractInstallments,
  credits,
  dueInstallments,
  type Interval,
  inOverrideWindow,
  installmentKey,
  issueGrant,
  LATE_GRACE_MS,
  type LedgerErrorCode,
  listValueOf,
  nextInstallmentAt,
  type OverrideTerms,
  overridesAt,
  parseRateCard,
  planInstallment,
  planTermination,
  planUsage,
  pocGrant,
  type RateCardContent,
  type Result,
  splitCommitment,
  UNIT,
  type UsageEvent,
  type UsageState,
  validateContract,
  validatePoc,
} from "../src/index.js";
import { counterIds, ctxAt } from "./support.js";

const DAY = 86_400_000;
const T0 = Date.UTC(2027, 0, 31, 12);
const QUARTERLY: Interval = { unit: "month", count: 3 };

function okValue<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function expectFail<T>(r: Result<T>, code: LedgerErrorCode, field?: string) {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
  if (field !== undefined) assert.equal(r.error.details?.field, field, r.error.message);
}

const base = (over: Partial<ContractInput> = {}): ContractInput => ({
  id: "ctr_1",
  customerId: "cus_1",
  startsAt: T0,
  endsAt: addInterval(T0, { unit: "year", count: 1 }),
  commitment: credits(120_000n),
  schedule: { kind: "installments", interval: QUARTERLY },
  creditPrice: { amount: 8_000_000n, currency: "USD" }, // $0.008 a credit
  ...over,
});

const contract = (over: Partial<ContractInput> = {}): Contract =>
  okValue(validateContract(ctxAt(T0), base(over)));

describe("validateContract", () => {
  test("fills the defaults: upfront, rolling 12-month expiry, following rate card upgrades", () => {
    const c = okValue(validateContract(ctxAt(T0), { ...base(), schedule: undefined } as ContractInput));
    assert.deepEqual(c.schedule, { kind: "upfront" });
    assert.deepEqual(c.expiry, { kind: "rolling", months: 12 });
    assert.equal(c.allowRateCardUpgrades, true);
  });

  test("refuses bad terms with a clear code and field", () => {
    const ctx = ctxAt(T0);
    expectFail(validateContract(ctx, base({ endsAt: T0 })), "invalid_argument", "endsAt");
    expectFail(validateContract(ctx, base({ endsAt: T0 - DAY })), "invalid_argument", "endsAt");
    expectFail(validateContract(ctx, base({ commitment: -1n })), "invalid_amount", "commitment");
    expectFail(
      validateContract(ctx, base({ creditPrice: { amount: 1n, currency: "" } })),
      "invalid_argument",
      "creditPrice.currency",
    );
    expectFail(
      validateContract(ctx, base({ creditPrice: { amount: -1n, currency: "USD" } })),
      "invalid_amount",
      "creditPrice.amount",
    );
    expectFail(
      validateContract(
        ctx,
        base({ schedule: { kind: "installments", interval: { unit: "year", count: 2 } } }),
      ),
      "invalid_argument",
      "schedule.interval",
    );
    expectFail(
      validateContract(
        ctx,
        base({ schedule: { kind: "installments", interval: { unit: "day", count: 0 } } }),
      ),
      "invalid_argument",
      "schedule.interval.count",
    );
    // A start in the past beyond the tolerance: history is not rewritten.
    expectFail(
      validateContract(ctx, base({ startsAt: T0 - CONTRACT_LIMITS.pastToleranceMs - 1 })),
      "invalid_argument",
      "startsAt",
    );
    okValue(validateContract(ctx, base({ startsAt: T0 - CONTRACT_LIMITS.pastToleranceMs })));
    expectFail(
      validateContract(ctx, base({ endsAt: addInterval(T0, { unit: "month", count: 121 }) })),
      "invalid_argument",
      "endsAt",
    );
    expectFail(
      validateContract(
        ctx,
        base({
          endsAt: addInterval(T0, { unit: "year", count: 10 }),
          schedule: { kind: "installments", interval: { unit: "day", count: 1 } },
        }),
      ),
      "invalid_argument",
      "schedule.interval",
    );
    expectFail(validateContract(ctx, base({ expiry: { kind: "rolling", months: 0 } })), "invalid_argument");
  });
});

describe("installments", () => {
  test("quarterly over a year: four installments on the anchor day, each a quarter of the commitment", () => {
    const c = contract();
    const list = contractInstallments(c);
    assert.deepEqual(
      list.map((i) => new Date(i.at).toISOString()),
      [
        "2027-01-31T12:00:00.000Z",
        "2027-04-30T12:00:00.000Z",
        "2027-07-31T12:00:00.000Z",
        "2027-10-31T12:00:00.000Z",
      ],
    );
    assert.deepEqual(
      list.map((i) => i.amount),
      [30_000n, 30_000n, 30_000n, 30_000n].map((n) => credits(n)),
    );
    assert.equal(list[3]!.until, c.endsAt);
  });

  test("the remainder goes one unit each to the earliest installments", () => {
    assert.deepEqual(splitCommitment(10n, 3), [4n, 3n, 3n]);
    assert.deepEqual(splitCommitment(2n, 4), [1n, 1n, 0n, 0n]);
    assert.deepEqual(splitCommitment(0n, 2), [0n, 0n]);
    const c = contract({ commitment: 100n * UNIT });
    assert.deepEqual(
      contractInstallments({
        ...c,
        schedule: { kind: "installments", interval: { unit: "month", count: 4 } },
      }).map((i) => i.amount),
      [33_333_333_334n, 33_333_333_333n, 33_333_333_333n],
    );
  });

  test("a term that is not a whole number of intervals: the last period is short, its share equal", () => {
    const c = contract({ endsAt: addInterval(T0, { unit: "month", count: 7 }), commitment: 9n });
    const list = contractInstallments(c);
    assert.equal(list.length, 3);
    assert.deepEqual(
      list.map((i) => i.amount),
      [3n, 3n, 3n],
    );
    assert.equal(list[2]!.until, c.endsAt);
  });

  test("an installment plan: the negotiated price as cost basis, rolling 12 months from its own grant", () => {
    const c = contract();
    const ctx = ctxAt(T0 + 200 * DAY);
    const p = okValue(planInstallment(ctx, { contract: c, index: 2, walletId: "wal_1" }));
    assert.equal(p.key, installmentKey(c.id, 2));
    assert.equal(p.lapsed, false);
    const g = p.grant!;
    assert.equal(g.source, "contract");
    assert.equal(g.costBasis, 8_000_000n);
    assert.equal(g.currency, "USD");
    assert.equal(g.effectiveAt, Date.UTC(2027, 6, 31, 12));
    assert.equal(g.expiresAt, Date.UTC(2028, 6, 31, 12));
    assert.deepEqual(g.metadata, { contract_id: c.id, installment_index: "2" });
    okValue(issueGrant(ctx, "cus_1", g));
    // period_end: at the end of the installment's quarter; never: no expiry.
    const pe = contract({ expiry: { kind: "period_end" } });
    assert.equal(
      okValue(planInstallment(ctx, { contract: pe, index: 2, walletId: "wal_1" })).grant!.expiresAt,
      Date.UTC(2027, 9, 31, 12),
    );
    const never = contract({ expiry: { kind: "never" } });
    assert.equal(
      okValue(planInstallment(ctx, { contract: never, index: 0, walletId: "w" })).grant!.expiresAt,
      null,
    );
    // Caught up after downtime longer than the credits live: lapsed, not issued.
    const late = okValue(planInstallment(ctxAt(T0 + 400 * DAY), { contract: c, index: 0, walletId: "w" }));
    assert.equal(late.lapsed, true);
    expectFail(planInstallment(ctx, { contract: c, index: 4, walletId: "w" }), "invalid_argument");
    // A pricing-only contract grants nothing.
    assert.equal(
      okValue(planInstallment(ctx, { contract: contract({ commitment: 0n }), index: 0, walletId: "w" }))
        .grant,
      null,
    );
  });

  test("termination: nothing due at or after it; twice, or after the term, is refused", () => {
    const c = contract();
    const at = Date.UTC(2027, 5, 1);
    const t = okValue(planTermination(ctxAt(at), c, null));
    assert.deepEqual(
      t.canceled.map((i) => i.index),
      [2, 3],
    );
    assert.deepEqual(
      dueInstallments(c, -1, c.endsAt + DAY, t.terminatedAt).map((i) => i.index),
      [0, 1],
    );
    assert.equal(nextInstallmentAt(c, 1, t.terminatedAt), null);
    assert.equal(nextInstallmentAt(c, 0, t.terminatedAt), Date.UTC(2027, 3, 30, 12));
    expectFail(planTermination(ctxAt(at), c, at), "invalid_argument");
    expectFail(planTermination(ctxAt(c.endsAt), c, null), "invalid_argument");
  });
});

/** Arbitrary valid contracts: any start, a term of 1 day to 10 years, any interval fitting it. */
const arbContract = fc
  .record({
    start: fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2090, 0, 1) }),
    termDays: fc.integer({ min: 1, max: 3650 }),
    unit: fc.constantFrom("day", "week", "month", "year") as fc.Arbitrary<Interval["unit"]>,
    count: fc.integer({ min: 1, max: 24 }),
    commitment: fc.bigInt({ min: 0n, max: 10n ** 20n }),
    upfront: fc.boolean(),
  })
  .map(({ start, termDays, unit, count, commitment, upfront }) =>
    validateContract(ctxAt(start), {
      id: "ctr_p",
      customerId: "cus_p",
      startsAt: start,
      endsAt: start + termDays * DAY,
      commitment,
      schedule: upfront ? { kind: "upfront" } : { kind: "installments", interval: { unit, count } },
      creditPrice: { amount: 1n, currency: "EUR" },
    }),
  )
  .filter((r): r is { ok: true; value: Contract } => r.ok)
  .map((r) => r.value);

describe("properties", () => {
  test("installments sum to the commitment exactly, differ by at most a unit, all within the term", () => {
    fc.assert(
      fc.property(arbContract, (c) => {
        const list = contractInstallments(c);
        assert.ok(list.length >= 1 && list.length <= CONTRACT_LIMITS.installmentsMax);
        assert.equal(
          list.reduce((s, i) => s + i.amount, 0n),
          c.commitment,
        );
        const amounts = list.map((i) => i.amount);
        const min = amounts.reduce((a, b) => (a < b ? a : b));
        const max = amounts.reduce((a, b) => (a > b ? a : b));
        assert.ok(max - min <= 1n);
        assert.equal(list[0]!.at, c.startsAt);
        for (const [k, i] of list.entries()) {
          assert.equal(i.index, k);
          assert.ok(i.at >= c.startsAt && i.at < c.endsAt, "nothing at or after the term's end");
          assert.ok(i.until > i.at && i.until <= c.endsAt);
          if (k > 0) assert.equal(list[k - 1]!.until, i.at, "periods meet exactly");
        }
        // Keys are distinct: each installment can be granted once.
        assert.equal(new Set(list.map((i) => installmentKey(c.id, i.index))).size, list.length);
      }),
      { numRuns: 300 },
    );
  });

  test("a clock moving in any steps finds every installment once, in order, none after a termination", () => {
    fc.assert(
      fc.property(
        arbContract,
        fc.array(fc.integer({ min: 0, max: 400 * DAY }), { minLength: 1, maxLength: 12 }),
        fc.option(fc.integer({ min: 0, max: 3650 * DAY })),
        (c, steps, cut) => {
          const terminatedAt = cut === null ? null : c.startsAt + cut;
          let now = c.startsAt - DAY;
          let issued = -1;
          const seen: number[] = [];
          for (const step of [...steps, 4000 * DAY]) {
            now += step;
            const due = dueInstallments(c, issued, now, terminatedAt);
            for (const i of due) {
              assert.equal(i.index, issued + 1, "in order, none skipped");
              seen.push(i.index);
              issued = i.index;
            }
            const next = nextInstallmentAt(c, issued, terminatedAt);
            if (next !== null) assert.ok(next > now, "what is due now was issued now");
          }
          const expected = contractInstallments(c)
            .filter((i) => terminatedAt === null || i.at < terminatedAt)
            .map((i) => i.index);
          assert.deepEqual(seen, expected);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("proof-of-concept allocations", () => {
  const poc = {
    id: "poc_1",
    customerId: "cus_1",
    amount: credits(5_000n),
    listValue: { amount: 40n * UNIT, currency: "USD" },
    startsAt: T0,
    endsAt: T0 + 30 * DAY,
  };

  test("a free grant for the window, carrying its list value", () => {
    const p = okValue(validatePoc(ctxAt(T0), poc));
    const g = pocGrant(p, "wal_1");
    assert.equal(g.source, "contract");
    assert.equal(g.costBasis, 0n);
    assert.equal(g.effectiveAt, T0);
    assert.equal(g.expiresAt, T0 + 30 * DAY);
    assert.deepEqual(g.metadata, {
      poc_id: "poc_1",
      list_value_units: String(40n * UNIT),
      list_value_currency: "USD",
    });
    assert.deepEqual(listValueOf(p, credits(1_250n)), { amount: 10n * UNIT, currency: "USD" });
    assert.deepEqual(listValueOf(p, 1n), { amount: 0n, currency: "USD" });
  });

  test("refuses a window in the past, backwards or too long, a zero amount, a list value without currency", () => {
    const ctx = ctxAt(T0);
    expectFail(validatePoc(ctx, { ...poc, startsAt: T0 - DAY }), "invalid_argument", "startsAt");
    expectFail(validatePoc(ctx, { ...poc, endsAt: T0 }), "invalid_argument", "endsAt");
    expectFail(validatePoc(ctx, { ...poc, endsAt: T0 + 367 * DAY }), "invalid_argument", "endsAt");
    expectFail(validatePoc(ctx, { ...poc, amount: 0n }), "invalid_amount", "amount");
    expectFail(
      validatePoc(ctx, { ...poc, listValue: { amount: 1n, currency: "usd" } }),
      "invalid_argument",
      "listValue.currency",
    );
  });

  test("the list value of what was used never exceeds the whole and rounds down", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: 10n ** 20n }),
        fc.bigInt({ min: 0n, max: 10n ** 15n }),
        fc.bigInt({ min: 0n, max: 10n ** 20n }),
        (amount, list, usedRaw) => {
          const used = usedRaw % (amount + 1n);
          const p = { amount, listValue: { amount: list, currency: "USD" } };
          const v = listValueOf(p, used).amount;
          assert.ok(v >= 0n && v <= list);
          assert.ok(v * amount <= used * list && used * list < (v + 1n) * amount);
          assert.equal(listValueOf(p, amount).amount, list);
        },
      ),
    );
  });
});

describe("contract overrides are in force over the term only", () => {
  const parsed = (lines: Parameters<typeof parseRateCard>[0]["lines"]): RateCardContent => {
    const r = parseRateCard({ lines });
    if (!r.ok) assert.fail(r.error.message);
    return r.value;
  };
  // The card prices a call at 5 credits; the contract's override at 2.
  const CARD = parsed([{ id: "list", action: "call", quantity: "calls", rate: "5" }]);
  const DEAL = parsed([{ id: "deal", action: "call", quantity: "calls", rate: "2" }]).lines;
  const NOW = Date.UTC(2027, 5, 10, 12);
  const SPAN = LATE_GRACE_MS; // events are accepted from NOW - 7 days to NOW
  // The window's card and pin: the default card, following (these tests are about the lines).
  const NO_CARD = { rateCardId: null, pinnedVersionId: null };

  const arbWindow = fc
    .record({
      from: fc.option(fc.integer({ min: NOW - SPAN - DAY, max: NOW + DAY }), { nil: null }),
      length: fc.integer({ min: 1, max: 2 * SPAN }),
      open: fc.boolean(),
    })
    .map(({ from, length, open }): OverrideTerms => {
      const start = from ?? NOW - SPAN;
      return { ...NO_CARD, lines: DEAL, from, until: open ? null : start + length, source: "ctr_a" };
    });

  const event = (i: number, time: number): UsageEvent => ({
    id: `e${i}`,
    customerId: "cus_a",
    subjectId: null,
    action: "call",
    dimensions: {},
    quantities: { calls: 1_000_000_000n },
    time,
    status: "succeeded",
    runId: null,
    reportedCost: null,
  });

  test("overridesAt: the lines inside [from, until), none outside; null bounds open", () => {
    const terms: OverrideTerms[] = [{ ...NO_CARD, lines: DEAL, from: T0, until: T0 + DAY, source: "ctr_a" }];
    assert.equal(overridesAt(terms, T0 - 1).length, 0);
    assert.equal(overridesAt(terms, T0), DEAL);
    assert.equal(overridesAt(terms, T0 + DAY - 1), DEAL);
    assert.equal(overridesAt(terms, T0 + DAY).length, 0, "the end is exclusive, like the term's");
    assert.equal(
      overridesAt([{ ...NO_CARD, lines: DEAL, from: null, until: null, source: "manual" }], -8.64e15),
      DEAL,
    );
    assert.equal(overridesAt(undefined, T0).length, 0);
    assert.equal(overridesAt([], T0).length, 0);
  });

  test("property: a batch rates each event by the override exactly when its own time is inside the window", () => {
    fc.assert(
      fc.property(
        arbWindow,
        fc.array(fc.integer({ min: NOW - SPAN, max: NOW }), { minLength: 1, maxLength: 20 }),
        (terms, times) => {
          // The pricing the storage writer loads once per batch: the card and the windowed overrides.
          const state: UsageState = {
            wallets: new Map([
              [
                "wal_a",
                {
                  id: "wal_a",
                  customerId: "cus_a",
                  memberId: null,
                  overdraft: 0n,
                  policy: { mode: "hard_cap", floor: 0n },
                },
              ],
            ]),
            grants: new Map(),
            poolWallet: new Map([["cus_a", "wal_a"]]),
            memberWallet: new Map(),
            subjects: new Map(),
            pricingAt: (_c, time) => ({
              versionId: "rcv_1",
              content: CARD,
              overrides: overridesAt([terms], time),
            }),
            costAt: () => null,
            usage: new Map(),
          };
          const plan = planUsage(
            { now: NOW, newId: counterIds() },
            state,
            times.map((t, i) => event(i, t)),
          );
          assert.equal(plan.outcomes.length, times.length);
          for (const [i, o] of plan.outcomes.entries()) {
            if (o.kind !== "accepted") assert.fail(`event ${i} was rejected`);
            const t = times[i]!;
            const inside =
              (terms.from === null || t >= terms.from) && (terms.until === null || t < terms.until);
            assert.equal(inOverrideWindow(terms, t), inside);
            assert.equal(
              o.rating.lines[0]?.override,
              inside,
              `event at ${t}, window ${terms.from}..${terms.until}`,
            );
            assert.equal(o.rating.lines[0]?.lineId, inside ? "deal" : "list");
            assert.equal(o.rating.credits, credits(inside ? 2n : 5n));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
