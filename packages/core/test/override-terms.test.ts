import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  checkTermsWindow,
  credits,
  cutTerms,
  inOverrideWindow,
  isValidHistory,
  LATE_GRACE_MS,
  type OverrideTerms,
  overridesAt,
  parseRateCard,
  planUsage,
  type RateCardContent,
  type RateLine,
  spliceTerms,
  type TermsWindow,
  termsAt,
  type UsageEvent,
  type UsageState,
} from "../src/index.js";
import { counterIds } from "./support.js";

/**
 * A customer's override history (override-terms.ts): effective-dated, non-overlapping windows.
 * Rating picks, per event, the one entry whose window contains the event's own time, or none;
 * setting new terms replaces exactly the part of the history they cover; a termination cuts
 * its contract's entries at its time.
 */

const DAY = 86_400_000;
const NOW = Date.UTC(2027, 3, 10, 12);

const lines = (rate: string): readonly RateLine[] => {
  const r = parseRateCard({ lines: [{ id: `deal-${rate}`, action: "call", quantity: "calls", rate }] });
  if (!r.ok) assert.fail(r.error.message);
  return r.value.lines;
};
/** Every source gets its own rate, so an entry's lines tell which source priced an event. */
const RATES = ["1", "2", "3", "4"] as const;
const SOURCES = ["ctr_a", "ctr_b", "ctr_c", "manual"] as const;
const LINES = new Map(SOURCES.map((s, i) => [s as string, lines(RATES[i]!)]));
const entry = (source: string, w: TermsWindow): OverrideTerms => ({
  lines: LINES.get(source)!,
  source,
  from: w.from,
  until: w.until,
});

/** Times around NOW, on a coarse grid so boundaries often coincide. */
const arbTime = fc.integer({ min: -20, max: 20 }).map((k) => NOW + k * DAY);

/** A window inside the grid, a bound possibly open. */
const arbWindow: fc.Arbitrary<TermsWindow> = fc
  .tuple(fc.option(arbTime, { nil: null }), fc.option(arbTime, { nil: null }))
  .filter(([a, b]) => a === null || b === null || a !== b)
  .map(([a, b]) => (a !== null && b !== null && a > b ? { from: b, until: a } : { from: a, until: b }));

/** A well-formed history: cut points in order, each span an entry or a gap, the ends maybe open. */
const arbHistory: fc.Arbitrary<OverrideTerms[]> = fc
  .record({
    points: fc.uniqueArray(arbTime, { minLength: 1, maxLength: 8 }),
    spans: fc.array(fc.option(fc.constantFrom(...SOURCES), { nil: null }), { minLength: 9, maxLength: 9 }),
  })
  .map(({ points, spans }) => {
    const cuts = [null, ...points.sort((a, b) => a - b), null];
    const out: OverrideTerms[] = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const source = spans[i];
      if (source) out.push(entry(source, { from: cuts[i]!, until: cuts[i + 1]! }));
    }
    return out;
  });

/** Brute force: every entry whose window contains t. */
const containing = (history: readonly OverrideTerms[], t: number) =>
  history.filter((e) => inOverrideWindow(e, t));

const probeTimes = fc.array(
  fc.oneof(
    arbTime,
    arbTime.map((t) => t - 1),
    fc.integer({ min: NOW - 30 * DAY, max: NOW + 30 * DAY }),
  ),
  { minLength: 1, maxLength: 30 },
);

describe("override history", () => {
  test("property: termsAt over a history picks the unique window containing the time, or none", () => {
    fc.assert(
      fc.property(arbHistory, probeTimes, (history, times) => {
        assert.ok(isValidHistory(history));
        for (const t of times) {
          const all = containing(history, t);
          assert.ok(all.length <= 1, "windows do not overlap");
          const picked = termsAt(history, t);
          assert.equal(picked, all[0] ?? null, `time ${t}`);
          assert.equal(overridesAt(history, t), all[0]?.lines ?? overridesAt([], t));
        }
      }),
      { numRuns: 1000 },
    );
  });

  test("property: setting terms replaces exactly the part of the history they cover; the rest is untouched", () => {
    const arbOp = fc.record({
      replace: arbWindow,
      source: fc.constantFrom(...SOURCES),
      // A contract replaces from its start for ever while its lines end with its term.
      contractLike: fc.boolean(),
      empty: fc.boolean(),
    });
    fc.assert(
      fc.property(
        arbHistory,
        fc.array(arbOp, { minLength: 1, maxLength: 6 }),
        probeTimes,
        (start, ops, times) => {
          let history = start;
          for (const op of ops) {
            const replace: TermsWindow =
              op.contractLike && op.replace.from !== null
                ? { from: op.replace.from, until: null }
                : op.replace;
            const e = op.empty
              ? { ...entry(op.source, op.replace), lines: [] }
              : entry(op.source, op.replace);
            const next = spliceTerms(history, replace, e);
            assert.ok(isValidHistory(next), JSON.stringify(next.map((x) => [x.from, x.until])));
            assert.ok(
              next.every((x) => x.lines.length > 0),
              "an entry without lines is a gap, not an entry",
            );
            for (const t of times) {
              const now = termsAt(next, t);
              if (inOverrideWindow(replace, t)) {
                const expected = !op.empty && inOverrideWindow(op.replace, t) ? op.source : null;
                assert.equal(now?.source ?? null, expected, `inside the replaced window at ${t}`);
              } else {
                const was = termsAt(history, t);
                assert.deepEqual(
                  now && [now.source, now.lines],
                  was && [was.source, was.lines],
                  `outside at ${t}`,
                );
              }
            }
            history = next;
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  test("property: a termination cuts its contract's entries at its time and nothing else", () => {
    fc.assert(
      fc.property(
        arbHistory,
        fc.constantFrom(...SOURCES),
        arbTime,
        probeTimes,
        (history, source, at, times) => {
          const next = cutTerms(history, source, at);
          assert.ok(isValidHistory(next));
          for (const t of times) {
            const was = termsAt(history, t);
            const now = termsAt(next, t);
            if (t >= at && was?.source === source) assert.equal(now, null, `cut at ${at}, probed ${t}`);
            else assert.deepEqual(now && [now.source, now.lines], was && [was.source, was.lines]);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  test("splice examples: a window inside an entry splits it; an open one replaces the whole history", () => {
    const all = [entry("ctr_a", { from: null, until: null })];
    const split = spliceTerms(
      all,
      { from: NOW, until: NOW + DAY },
      entry("manual", { from: NOW, until: NOW + DAY }),
    );
    assert.deepEqual(
      split.map((e) => [e.source, e.from, e.until]),
      [
        ["ctr_a", null, NOW],
        ["manual", NOW, NOW + DAY],
        ["ctr_a", NOW + DAY, null],
      ],
    );
    const whole = spliceTerms(
      split,
      { from: null, until: null },
      entry("manual", { from: null, until: null }),
    );
    assert.deepEqual(
      whole.map((e) => [e.source, e.from, e.until]),
      [["manual", null, null]],
    );
    assert.throws(
      () => spliceTerms(all, { from: NOW, until: NOW + DAY }, entry("manual", { from: null, until: null })),
      /within the window they replace/,
    );
  });

  test("checkTermsWindow: from must come before until; open bounds are fine", () => {
    const code = (w: TermsWindow) => {
      const r = checkTermsWindow(w);
      return r.ok ? "ok" : r.error.code;
    };
    assert.equal(code({ from: NOW, until: NOW + 1 }), "ok");
    assert.equal(code({ from: null, until: NOW }), "ok");
    assert.equal(code({ from: NOW, until: null }), "ok");
    assert.equal(code({ from: null, until: null }), "ok");
    assert.equal(code({ from: NOW, until: NOW }), "invalid_argument");
    assert.equal(code({ from: NOW + 1, until: NOW }), "invalid_argument");
    assert.equal(code({ from: 1.5, until: null }), "invalid_argument");
  });

  test("property: a batch rates each event by the entry in force at its own time and names its source", () => {
    const parsed = parseRateCard({ lines: [{ id: "list", action: "call", quantity: "calls", rate: "5" }] });
    if (!parsed.ok) assert.fail(parsed.error.message);
    const CARD: RateCardContent = parsed.value;
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
    fc.assert(
      fc.property(
        arbHistory,
        fc.array(fc.integer({ min: NOW - LATE_GRACE_MS, max: NOW }), { minLength: 1, maxLength: 20 }),
        (history, times) => {
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
            // What storage does: the history loaded once, the entry picked per event.
            pricingAt: (_c, time) => {
              const terms = termsAt(history, time);
              return {
                versionId: "rcv_1",
                content: CARD,
                overrides: terms?.lines ?? [],
                overridesSource: terms?.source ?? null,
              };
            },
            costAt: () => null,
            usage: new Map(),
          };
          const plan = planUsage(
            { now: NOW, newId: counterIds() },
            state,
            times.map((t, i) => event(i, t)),
          );
          for (const [i, o] of plan.outcomes.entries()) {
            if (o.kind !== "accepted") assert.fail(`event ${i} was rejected`);
            const inForce = containing(history, times[i]!)[0];
            const rate = inForce ? RATES[SOURCES.indexOf(inForce.source as (typeof SOURCES)[number])]! : "5";
            assert.equal(o.rating.credits, credits(BigInt(rate)));
            assert.equal(o.rating.lines[0]?.override, inForce !== undefined);
            assert.equal(o.overrideSource, inForce?.source ?? null);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
