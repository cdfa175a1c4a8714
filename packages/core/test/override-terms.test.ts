import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  baseTerms,
  checkTermsWindow,
  credits,
  cutTerms,
  fillGaps,
  inOverrideWindow,
  isValidHistory,
  LATE_GRACE_MS,
  type OverrideTerms,
  overridesAt,
  parseRateCard,
  planUsage,
  pricingTermsAt,
  type RateCardContent,
  type RateLine,
  spliceTerms,
  type TermsInForce,
  type TermsWindow,
  termsAt,
  type UsageEvent,
  type UsageState,
} from "../src/index.js";
import { counterIds } from "./support.js";

/**
 * A customer's pricing history (override-terms.ts): effective-dated, non-overlapping windows,
 * each with its card, pinned version and override lines. Rating picks, per event, the one entry
 * whose window contains the event's own time, or the base pricing; setting new terms replaces
 * exactly the part of the history they cover; a termination cuts its contract's entries at its
 * time; filling gaps covers exactly the uncovered part of a window.
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
/** Every source's card and pin differ too: two pins of one card, another card followed, the default. */
const CARDS = new Map<string, { rateCardId: string | null; pinnedVersionId: string | null }>([
  ["ctr_a", { rateCardId: "rcd_x", pinnedVersionId: "rcv_x1" }],
  ["ctr_b", { rateCardId: "rcd_x", pinnedVersionId: "rcv_x2" }],
  ["ctr_c", { rateCardId: "rcd_y", pinnedVersionId: null }],
  ["manual", { rateCardId: null, pinnedVersionId: null }],
]);
const entry = (source: string, w: TermsWindow): OverrideTerms => ({
  ...CARDS.get(source)!,
  lines: LINES.get(source)!,
  source,
  from: w.from,
  until: w.until,
});
/** The customer's base pricing: any card and pin, no lines. */
const arbBase: fc.Arbitrary<TermsInForce> = fc
  .constantFrom<[string | null, string | null]>(
    [null, null],
    ["rcd_x", null],
    ["rcd_x", "rcv_x1"],
    ["rcd_x", "rcv_x3"],
    ["rcd_y", "rcv_y1"],
  )
  .map(([card, pin]) => baseTerms(card, pin));

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

  test("property: the pricing picked for any time is the unique window's card, pin and overrides, or the base", () => {
    // Some entries keep no lines: their card and pin alone still price their window.
    const arbMixed = fc
      .tuple(arbHistory, fc.array(fc.boolean(), { minLength: 9, maxLength: 9 }))
      .map(([history, strip]) => history.map((e, i) => (strip[i] ? { ...e, lines: [] } : e)));
    fc.assert(
      fc.property(arbMixed, arbBase, probeTimes, (history, base, times) => {
        for (const t of times) {
          const all = containing(history, t);
          const picked = pricingTermsAt(history, base, t);
          if (all.length === 1) {
            const e = all[0]!;
            assert.equal(picked, e, `the window's entry at ${t}`);
            assert.deepEqual(
              [picked.rateCardId, picked.pinnedVersionId, picked.lines, picked.source],
              [e.rateCardId, e.pinnedVersionId, e.lines, e.source],
            );
          } else {
            assert.equal(all.length, 0, "windows do not overlap");
            assert.deepEqual(
              [picked.rateCardId, picked.pinnedVersionId, picked.lines.length, picked.source],
              [base.rateCardId, base.pinnedVersionId, 0, null],
              `the base at ${t}`,
            );
          }
        }
        assert.equal(pricingTermsAt(undefined, base, NOW), base);
        assert.equal(pricingTermsAt([], base, NOW), base);
      }),
      { numRuns: 1000 },
    );
  });

  test("property: filling gaps covers exactly the uncovered part of a window and changes nothing else", () => {
    fc.assert(
      fc.property(arbHistory, arbWindow, probeTimes, (history, window, times) => {
        const made: OverrideTerms[] = [];
        const next = fillGaps(history, window, (gap) => {
          const e = { ...entry("manual", gap), lines: [], source: "base" };
          made.push(e);
          return e;
        });
        assert.ok(isValidHistory(next), JSON.stringify(next.map((x) => [x.from, x.until])));
        assert.equal(next.length, history.length + made.length);
        for (const m of made) {
          assert.ok(m.from === null || m.until === null || m.from < m.until, "no empty gap");
          // Every filled stretch lies within the window.
          assert.ok(window.from === null || (m.from !== null && m.from >= window.from));
          assert.ok(window.until === null || (m.until !== null && m.until <= window.until));
        }
        for (const t of [...times, ...made.flatMap((m) => [m.from, m.until]).filter((x) => x !== null)]) {
          const was = termsAt(history, t);
          const now = termsAt(next, t);
          if (was !== null) assert.equal(now, was, `covered at ${t}`);
          else if (inOverrideWindow(window, t))
            assert.ok(now !== null && made.includes(now), `filled at ${t}`);
          else assert.equal(now, null, `outside the window at ${t}`);
        }
      }),
      { numRuns: 1000 },
    );
    // An empty history and an open window: one entry for all time.
    const all = fillGaps([], { from: null, until: null }, (gap) => entry("manual", gap));
    assert.deepEqual(
      all.map((e) => [e.from, e.until]),
      [[null, null]],
    );
  });

  test("property: setting terms replaces exactly the part of the history they cover; the rest is untouched", () => {
    const arbOp = fc.record({
      replace: arbWindow,
      source: fc.constantFrom(...SOURCES),
      // A contract replaces from its start for ever while its lines end with its term.
      contractLike: fc.boolean(),
      // An entry with lines, one without (its card and pin still price the window), or a gap.
      kind: fc.constantFrom("lines", "no-lines", "gap"),
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
            const e =
              op.kind === "gap"
                ? null
                : op.kind === "no-lines"
                  ? { ...entry(op.source, op.replace), lines: [] }
                  : entry(op.source, op.replace);
            const next = spliceTerms(history, replace, e);
            assert.ok(isValidHistory(next), JSON.stringify(next.map((x) => [x.from, x.until])));
            for (const t of times) {
              const now = termsAt(next, t);
              if (inOverrideWindow(replace, t)) {
                const expected = e !== null && inOverrideWindow(op.replace, t) ? e : null;
                assert.equal(now, expected, `inside the replaced window at ${t}`);
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

  test("property: a batch rates each event by the card, pin and lines in force at its own time, or the base's", () => {
    const card = (rate: string): RateCardContent => {
      const parsed = parseRateCard({ lines: [{ id: "list", action: "call", quantity: "calls", rate }] });
      if (!parsed.ok) assert.fail(parsed.error.message);
      return parsed.value;
    };
    // What a catalog resolves: a pinned version is itself; a followed card, its version in force.
    const VERSIONS = new Map<string, { versionId: string; rate: string }>([
      ["null|null", { versionId: "rcv_default", rate: "5" }],
      ["rcd_x|null", { versionId: "rcv_x_now", rate: "12" }],
      ["rcd_x|rcv_x1", { versionId: "rcv_x1", rate: "10" }],
      ["rcd_x|rcv_x2", { versionId: "rcv_x2", rate: "11" }],
      ["rcd_x|rcv_x3", { versionId: "rcv_x3", rate: "13" }],
      ["rcd_y|null", { versionId: "rcv_y_now", rate: "14" }],
      ["rcd_y|rcv_y1", { versionId: "rcv_y1", rate: "15" }],
    ]);
    const CONTENT = new Map([...VERSIONS.values()].map((v) => [v.versionId, card(v.rate)]));
    const versionOf = (t: { rateCardId: string | null; pinnedVersionId: string | null }) =>
      VERSIONS.get(`${t.rateCardId}|${t.pinnedVersionId}`)!;
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
    const arbMixed = fc
      .tuple(arbHistory, fc.array(fc.boolean(), { minLength: 9, maxLength: 9 }))
      .map(([history, strip]) => history.map((e, i) => (strip[i] ? { ...e, lines: [] } : e)));
    fc.assert(
      fc.property(
        arbMixed,
        arbBase,
        fc.array(fc.integer({ min: NOW - LATE_GRACE_MS, max: NOW }), { minLength: 1, maxLength: 20 }),
        (history, base, times) => {
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
            // What storage does: the history loaded once, the terms picked per event, then the version.
            pricingAt: (_c, time) => {
              const terms = pricingTermsAt(history, base, time);
              const v = versionOf(terms);
              return {
                versionId: v.versionId,
                content: CONTENT.get(v.versionId)!,
                overrides: terms.lines,
                overridesSource: terms.source,
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
            const v = versionOf(inForce ?? base);
            const overridden = inForce !== undefined && inForce.lines.length > 0;
            const rate = overridden
              ? RATES[SOURCES.indexOf(inForce.source as (typeof SOURCES)[number])]!
              : v.rate;
            assert.equal(o.versionId, v.versionId, "the version of the terms in force");
            assert.equal(o.rating.credits, credits(BigInt(rate)));
            assert.equal(o.rating.lines[0]?.override, overridden);
            assert.equal(o.overrideSource, overridden ? inForce.source : null);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
