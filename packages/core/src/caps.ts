import { formatAmount, inRange, minAmount } from "./amount.js";
import { monthStart, nextMonthStart } from "./commerce.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Spend caps (issue 5 point 4; DESIGN.md "Policies: meanings"): a limit on what a wallet, a
 * member or an agent may be charged per UTC day or calendar month, set by the vendor (secret
 * key) or by the customer (its restricted key). Both may exist for one target; the tighter
 * binds. The check is part of the same plan as the debit (planUsage, planAuthorize,
 * planSettle, and the storage's direct debit), under the same wallet locks, so a cap is never
 * read, decided on, then written.
 *
 * What a cap counts, per period: `spent` (credits charged: drawn from grants or put on the
 * overdraft; never what was refused) and `held` (pending holds' estimates, which reserve cap
 * room until they resolve). A cap's room is `limit - spent - held`, never below zero.
 *
 * Which charges a cap applies to: a wallet cap, every charge its wallet chain pays (a member
 * wallet's chain is [member wallet, pool]; a pool's cap therefore counts the whole customer);
 * a subject cap, every charge attributed to that member or agent. A hold and its settlement
 * count in the period the hold was placed in. A cap counts from its creation on. Reversing a
 * direct debit gives back what it counted, in the period it counted in (never below zero).
 */

/** The calendar periods a cap resets on (UTC). */
export const CAP_PERIODS = ["day", "month"] as const;
export type CapPeriod = (typeof CAP_PERIODS)[number];

/** Who set a cap: the vendor (secret key) or the customer (restricted key). */
export type CapSetter = "vendor" | "customer";

/** A spend cap. */
export interface SpendCap {
  readonly id: string;
  readonly customerId: string;
  readonly targetKind: "wallet" | "subject";
  readonly targetId: string;
  readonly period: CapPeriod;
  /** Credits per period, in units; ≥ 0. */
  readonly limit: bigint;
  readonly setBy: CapSetter;
}

/** A cap's counters in one period. */
export interface CapCounter {
  readonly spent: bigint;
  readonly held: bigint;
}

/** The caps of a customer and their counters (by {@link capCounterKey}), loaded under the pool's lock. */
export interface CapState {
  readonly caps: readonly SpendCap[];
  readonly counters: ReadonlyMap<string, CapCounter>;
}

/** Cap room a pending hold reserves, in the period it was placed in. */
export interface CapReservation {
  readonly capId: string;
  readonly periodStart: number;
  readonly amount: bigint;
}

/**
 * What one charge counted on one cap, in the period it counted in (a direct debit keeps these,
 * so reversing it gives exactly that room back).
 */
export interface CapCharge {
  readonly capId: string;
  readonly periodStart: number;
  readonly amount: bigint;
}

/** A cap that became fully spent, or refused a charge, in a period: its alert fires once. */
export interface CapReached {
  readonly cap: SpendCap;
  readonly periodStart: number;
  /** The wallet the alert is filed under: the cap's wallet, or the wallet that paid for the subject. */
  readonly walletId: string;
}

/** What a plan changes in cap counters: deltas per {@link capCounterKey}, and the caps reached. */
export interface CapEffect {
  readonly deltas: ReadonlyMap<string, CapCounter>;
  readonly reached: readonly CapReached[];
}

/** No caps, no change. */
export const NO_CAP_EFFECT: CapEffect = { deltas: new Map(), reached: [] };

/** The first millisecond of the UTC day or month `time` falls in. */
export function capPeriodStart(period: CapPeriod, time: number): number {
  if (period === "month") return monthStart(time);
  const d = new Date(time);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

/** The first millisecond after the period starting at `start`. */
export function capPeriodEnd(period: CapPeriod, start: number): number {
  if (period === "month") return nextMonthStart(start);
  const d = new Date(start);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
}

/** The key of a cap's counters in a period. */
export const capCounterKey = (capId: string, periodStart: number): string => `${capId}|${periodStart}`;

/** Checks a cap's limit: zero or more credits, within the amount range (`invalid_amount` otherwise). */
export function checkCapLimit(limit: bigint): Result<bigint> {
  if (limit < 0n || !inRange(limit))
    return fail(
      "invalid_amount",
      "A spend cap's limit must be zero or more credits, within the amount range.",
    );
  return ok(limit);
}

/** Whether a cap applies to a charge paid by `chain` (paying wallet first, then its pool) for `subjectId`. */
export const capApplies = (cap: SpendCap, chain: readonly string[], subjectId: string | null): boolean =>
  cap.targetKind === "wallet" ? chain.includes(cap.targetId) : cap.targetId === subjectId;

/** A cap's room given its counters: `limit - spent - held`, never below zero. */
export const capRoom = (cap: SpendCap, c: CapCounter | undefined): bigint => {
  const room = cap.limit - (c?.spent ?? 0n) - (c?.held ?? 0n);
  return room > 0n ? room : 0n;
};

/**
 * The working copy of cap counters a plan runs against: it answers the room for a charge,
 * records charges, reservations and refusals in order, and yields the {@link CapEffect} to
 * write. Without caps every answer is "no limit" and the effect is empty.
 */
export class CapBook {
  readonly #caps: readonly SpendCap[];
  readonly #counters: Map<string, CapCounter>;
  readonly #deltas = new Map<string, CapCounter>();
  readonly #reached = new Map<string, CapReached>();

  constructor(state: CapState | null | undefined) {
    this.#caps = state?.caps ?? [];
    this.#counters = new Map(state?.counters ?? []);
  }

  /** True when no cap is loaded (the common case costs nothing). */
  get empty(): boolean {
    return this.#caps.length === 0;
  }

  /** The caps that apply to a charge. */
  applicable(chain: readonly string[], subjectId: string | null): SpendCap[] {
    return this.#caps.filter((c) => capApplies(c, chain, subjectId));
  }

  /** Each applicable cap's room at `at`, in the order the caps were loaded. */
  rooms(chain: readonly string[], subjectId: string | null, at: number): { room: bigint; cap: SpendCap }[] {
    return this.applicable(chain, subjectId).map((cap) => ({
      cap,
      room: capRoom(cap, this.#counters.get(capCounterKey(cap.id, capPeriodStart(cap.period, at)))),
    }));
  }

  /** The tightest applicable cap's room at `at`, with that cap; null when no cap applies. */
  room(
    chain: readonly string[],
    subjectId: string | null,
    at: number,
  ): { room: bigint; cap: SpendCap } | null {
    let best: { room: bigint; cap: SpendCap } | null = null;
    for (const r of this.rooms(chain, subjectId, at)) if (best === null || r.room < best.room) best = r;
    return best;
  }

  /** The room left for `amount` more (min over the caps), or null: no cap applies. */
  roomFor(chain: readonly string[], subjectId: string | null, at: number): bigint | null {
    return this.room(chain, subjectId, at)?.room ?? null;
  }

  #add(cap: SpendCap, at: number, spent: bigint, held: bigint, chain: readonly string[]): void {
    const start = capPeriodStart(cap.period, at);
    const key = capCounterKey(cap.id, start);
    const c = this.#counters.get(key) ?? { spent: 0n, held: 0n };
    const next = { spent: c.spent + spent, held: c.held + held };
    this.#counters.set(key, next);
    const d = this.#deltas.get(key) ?? { spent: 0n, held: 0n };
    this.#deltas.set(key, { spent: d.spent + spent, held: d.held + held });
    if ((spent > 0n || held > 0n) && capRoom(cap, next) === 0n) this.#reach(cap, start, chain);
  }

  #reach(cap: SpendCap, periodStart: number, chain: readonly string[]): void {
    const key = capCounterKey(cap.id, periodStart);
    if (!this.#reached.has(key))
      this.#reached.set(key, {
        cap,
        periodStart,
        walletId: cap.targetKind === "wallet" ? cap.targetId : chain[0]!,
      });
  }

  /** Records a charge of `amount` on every applicable cap; returns what it counted where. */
  charge(chain: readonly string[], subjectId: string | null, at: number, amount: bigint): CapCharge[] {
    if (amount === 0n) return [];
    return this.applicable(chain, subjectId).map((cap) => {
      this.#add(cap, at, amount, 0n, chain);
      return { capId: cap.id, periodStart: capPeriodStart(cap.period, at), amount };
    });
  }

  /**
   * Gives back what charges counted (a reversed debit), each in the period it counted in, never
   * taking `spent` below zero; charges of caps deleted since are skipped.
   */
  refund(charges: readonly CapCharge[]): void {
    for (const c of charges) {
      const cap = this.#caps.find((x) => x.id === c.capId);
      if (!cap) continue;
      const spent = this.#counters.get(capCounterKey(cap.id, c.periodStart))?.spent ?? 0n;
      const back = minAmount(c.amount, spent);
      if (back > 0n) this.#add(cap, c.periodStart, -back, 0n, []);
    }
  }

  /** Reserves `amount` of room on every applicable cap for a pending hold; returns the reservations. */
  reserve(chain: readonly string[], subjectId: string | null, at: number, amount: bigint): CapReservation[] {
    if (amount === 0n) return [];
    return this.applicable(chain, subjectId).map((cap) => {
      this.#add(cap, at, 0n, amount, chain);
      return { capId: cap.id, periodStart: capPeriodStart(cap.period, at), amount };
    });
  }

  /** Frees reserved room (a hold resolved); reservations of caps deleted since are skipped. */
  release(reservations: readonly CapReservation[]): void {
    for (const r of reservations) {
      const cap = this.#caps.find((c) => c.id === r.capId);
      if (!cap) continue;
      this.#add(cap, r.periodStart, 0n, -r.amount, []);
    }
  }

  /** Records that the tightest applicable cap refused a charge at `at` (its alert fires). */
  refuse(chain: readonly string[], subjectId: string | null, at: number): void {
    const bound = this.room(chain, subjectId, at);
    if (bound) this.#reach(bound.cap, capPeriodStart(bound.cap.period, at), chain);
  }

  /** What to write: the counter deltas and the caps reached. */
  effect(): CapEffect {
    const deltas = new Map([...this.#deltas].filter(([, d]) => d.spent !== 0n || d.held !== 0n));
    return { deltas, reached: [...this.#reached.values()] };
  }
}

/** A cap's counters in the current period, as the API shows them. */
export interface CapStatus {
  readonly periodStart: number;
  readonly periodEnd: number;
  readonly spent: bigint;
  readonly held: bigint;
  readonly remaining: bigint;
}

/** A cap's status at `now` from its counters (missing counters: nothing spent yet this period). */
export function capStatus(cap: SpendCap, counters: ReadonlyMap<string, CapCounter>, now: number): CapStatus {
  const start = capPeriodStart(cap.period, now);
  const c = counters.get(capCounterKey(cap.id, start));
  return {
    periodStart: start,
    periodEnd: capPeriodEnd(cap.period, start),
    spent: c?.spent ?? 0n,
    held: c?.held ?? 0n,
    remaining: capRoom(cap, c),
  };
}

/** The details a `spend_cap_reached` alert carries (amounts as decimal strings). */
export function capAlertDetails(r: CapReached): Record<string, string> {
  return {
    cap_id: r.cap.id,
    target_kind: r.cap.targetKind,
    target_id: r.cap.targetId,
    period: r.cap.period,
    period_start: new Date(r.periodStart).toISOString(),
    limit: formatAmount(r.cap.limit),
    set_by: r.cap.setBy,
  };
}

/** The smaller of a room and an optional cap room (null: no cap). */
export const narrowByCap = (room: bigint, capRoomLeft: bigint | null): bigint =>
  capRoomLeft === null ? room : minAmount(room, capRoomLeft);

/**
 * The cap state after a plan's effect: its counter deltas added. A batch of plans (the
 * group-commit writer) threads the state through them, so each sees what the earlier ones spent
 * and reserved, as it would one transaction later.
 */
export function withCapEffect(state: CapState, effect: CapEffect): CapState {
  if (effect.deltas.size === 0) return state;
  const counters = new Map(state.counters);
  for (const [key, d] of effect.deltas) {
    const c = counters.get(key) ?? { spent: 0n, held: 0n };
    counters.set(key, { spent: c.spent + d.spent, held: c.held + d.held });
  }
  return { caps: state.caps, counters };
}

/** Several plans' cap effects as one (deltas summed, caps reached in order), written together. */
export function combineCapEffects(effects: readonly CapEffect[]): CapEffect {
  const deltas = new Map<string, CapCounter>();
  for (const e of effects)
    for (const [key, d] of e.deltas) {
      const c = deltas.get(key) ?? { spent: 0n, held: 0n };
      deltas.set(key, { spent: c.spent + d.spent, held: c.held + d.held });
    }
  return {
    deltas: new Map([...deltas].filter(([, d]) => d.spent !== 0n || d.held !== 0n)),
    reached: effects.flatMap((e) => e.reached),
  };
}
