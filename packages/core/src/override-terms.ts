import type { RateLine } from "./rating.js";
import { fail, invariant, ok, type Result } from "./result.js";

/**
 * A customer's pricing history: effective-dated terms, each the whole pricing in force over its
 * own window (the card, a pinned version, the override lines), from its source (a contract, or
 * pricing set by hand). Windows never overlap, so at any time at most one entry is in force; an
 * event is rated by the entry whose window contains its own time (like card versions), not the
 * one current at its arrival, and by the customer's base pricing when no window does. Storage
 * loads the history once per batch; {@link pricingTermsAt} decides per event, with no query.
 */

/** Where terms come from when no contract set them. */
export const MANUAL_SOURCE = "manual";

/** A window `[from, until)`; a null bound is open. */
export interface TermsWindow {
  /** The first instant inside; null: since always. */
  readonly from: number | null;
  /** The first instant no longer inside; null: for ever. */
  readonly until: number | null;
}

/** A customer's whole pricing: which card, which version of it, which override lines. */
export interface PricingTerms {
  /** The card followed; null: the tenant's default card. */
  readonly rateCardId: string | null;
  /** A version of that card used whatever the event's time; null: the version in force at it. */
  readonly pinnedVersionId: string | null;
  /** Lines that take precedence over the card's; may be none. */
  readonly lines: readonly RateLine[];
}

/** One entry of a customer's pricing history: its pricing in force over `[from, until)`. */
export interface OverrideTerms extends TermsWindow, PricingTerms {
  /** The contract that set them, or {@link MANUAL_SOURCE}. */
  readonly source: string;
}

/** The pricing in force at a time: an entry's, or the base's (source null). */
export interface TermsInForce extends PricingTerms {
  /** The entry's source; null for the base pricing. */
  readonly source: string | null;
}

const NO_LINES: readonly RateLine[] = [];

/**
 * The base pricing as terms in force: the card and pin the customer's pricing names now, no
 * override lines (lines in force at every time are an entry with open bounds).
 */
export const baseTerms = (rateCardId: string | null, pinnedVersionId: string | null): TermsInForce => ({
  rateCardId,
  pinnedVersionId,
  lines: NO_LINES,
  source: null,
});

/** Whether `time` falls in the window `[from, until)` (null bounds open). */
export const inOverrideWindow = (w: TermsWindow, time: number): boolean =>
  (w.from === null || time >= w.from) && (w.until === null || time < w.until);

/** Refuses a window that is empty or backwards: `from` must come before `until`. */
export function checkTermsWindow(w: TermsWindow): Result<null> {
  for (const [field, t] of [
    ["overrides_from", w.from],
    ["overrides_until", w.until],
  ] as const) {
    if (t !== null && !Number.isSafeInteger(t))
      return fail("invalid_argument", `${field} must be whole epoch milliseconds.`, { field });
  }
  if (w.from !== null && w.until !== null && w.from >= w.until) {
    return fail("invalid_argument", "overrides_until must be later than overrides_from.", {
      field: "overrides_until",
    });
  }
  return ok(null);
}

/**
 * The entry in force at `time`: the one whose window contains it, or null (the base pricing
 * prices the event). Looks from the latest entry back, since most events are recent; a history
 * has a handful of entries.
 */
export function termsAt<T extends OverrideTerms>(history: readonly T[] | undefined, time: number): T | null {
  if (!history) return null;
  for (let i = history.length - 1; i >= 0; i--) {
    const t = history[i]!;
    if (inOverrideWindow(t, time)) return t;
  }
  return null;
}

/**
 * The whole pricing that rates an event at `time`: the entry whose window holds it, else
 * `base` (see {@link baseTerms}). Card, pin and lines always come from one place.
 */
export function pricingTermsAt(
  history: readonly OverrideTerms[] | undefined,
  base: TermsInForce,
  time: number,
): TermsInForce {
  return termsAt(history, time) ?? base;
}

/** The override lines that rate an event at `time`: those of the entry in force, else none. */
export function overridesAt(
  history: readonly OverrideTerms[] | undefined,
  time: number,
): readonly RateLine[] {
  return termsAt(history, time)?.lines ?? NO_LINES;
}

const before = (a: number | null, b: number | null): boolean =>
  // null as a `from` is -∞ and as an `until` is +∞; callers compare an until with a from.
  a !== null && b !== null && a <= b;

/** Whether window `inner` lies within window `outer`. */
const within = (inner: TermsWindow, outer: TermsWindow): boolean =>
  (outer.from === null || (inner.from !== null && inner.from >= outer.from)) &&
  (outer.until === null || (inner.until !== null && inner.until <= outer.until));

/** Orders entries by their start, an open start first. */
const byFrom = (a: TermsWindow, b: TermsWindow): number =>
  a.from === b.from ? 0 : a.from === null ? -1 : b.from === null ? 1 : a.from - b.from;

/**
 * Whether a history is well formed: every window non-empty, oldest first, none overlapping
 * the next (an entry may end exactly where the next starts).
 */
export function isValidHistory(history: readonly TermsWindow[]): boolean {
  for (let i = 0; i < history.length; i++) {
    const e = history[i]!;
    if (e.from !== null && e.until !== null && e.from >= e.until) return false;
    const next = history[i + 1];
    if (next && !before(e.until, next.from)) return false;
  }
  return true;
}

/**
 * The history after new terms are set over `replace`: every other entry loses what it had
 * inside `replace` (cut short, started later, split in two around it, or dropped when wholly
 * inside), then `entry` goes in, with or without lines (its window must lie within `replace`;
 * null leaves a gap, where the base pricing prices events). Deterministic: the
 * newest terms win over the part they cover, and nothing outside `replace` changes. Pieces of
 * a split entry are copies with their other fields kept.
 */
export function spliceTerms<T extends OverrideTerms>(
  history: readonly T[],
  replace: TermsWindow,
  entry: T | null,
): T[] {
  invariant(entry === null || within(entry, replace), "new terms lie within the window they replace");
  const out: T[] = [];
  for (const e of history) {
    // The part before `replace`: [e.from, min(e.until, replace.from)).
    if (replace.from !== null && (e.from === null || e.from < replace.from)) {
      const until = e.until === null || e.until > replace.from ? replace.from : e.until;
      out.push(until === e.until ? e : { ...e, until });
    }
    // The part after it: [max(e.from, replace.until), e.until).
    if (replace.until !== null && (e.until === null || e.until > replace.until)) {
      const from = e.from === null || e.from < replace.until ? replace.until : e.from;
      out.push(from === e.from ? e : { ...e, from });
    }
  }
  if (entry) out.push(entry);
  return out.sort(byFrom);
}

/**
 * The history after the entries of `source` end at `at` (an early termination): an entry of
 * that source still in force at `at` ends there; one starting at or after `at` is dropped.
 * Other sources' entries are untouched.
 */
export function cutTerms<T extends OverrideTerms>(history: readonly T[], source: string, at: number): T[] {
  const out: T[] = [];
  for (const e of history) {
    if (e.source !== source) out.push(e);
    else if (e.from !== null && e.from >= at) continue;
    else if (e.until === null || e.until > at) out.push({ ...e, until: at });
    else out.push(e);
  }
  return out;
}

/**
 * The history with the parts of `window` that no entry covers filled by entries `make` builds
 * (one per uncovered stretch, in order); the rest untouched. Storage calls it before pricing
 * that moves the customer's base (a contract's start): the uncovered past keeps the base it had.
 */
export function fillGaps<T extends OverrideTerms>(
  history: readonly T[],
  window: TermsWindow,
  make: (gap: TermsWindow) => T,
): T[] {
  const out: T[] = [...history];
  if (window.from !== null && window.until !== null && window.from >= window.until) return out;
  // Walk the entries overlapping the window in order; `cursor` is the start of what is left.
  let cursor = window.from;
  let open = true; // false once the window is covered to its end
  for (const e of [...history].sort(byFrom)) {
    if (!open) break;
    const overlaps =
      (window.until === null || e.from === null || e.from < window.until) &&
      (cursor === null || e.until === null || e.until > cursor);
    if (!overlaps) continue;
    if (e.from !== null && (cursor === null || e.from > cursor))
      out.push(make({ from: cursor, until: e.from }));
    if (e.until === null) open = false;
    else cursor = cursor === null || e.until > cursor ? e.until : cursor;
  }
  if (open && (cursor === null || window.until === null || cursor < window.until))
    out.push(make({ from: cursor, until: window.until }));
  return out.sort(byFrom);
}
