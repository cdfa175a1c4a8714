import { divRound, inRange, minAmount, SCALE } from "./amount.js";
import { type Draw, type DrawSource, drawable, planDraws } from "./burndown.js";
import {
  CapBook,
  type CapEffect,
  type CapReservation,
  type CapState,
  NO_CAP_EFFECT,
  narrowByCap,
} from "./caps.js";
import { entry, grantAccount } from "./journal.js";
import { type Context, makeTx } from "./ledger.js";
import type { Entry, Grant, JournalTransaction } from "./model.js";
import { type OveragePolicy, overageRoom, overrunAllowed, throttleCheck } from "./overage.js";
import { rateEvent } from "./rating.js";
import { fail, invariant, ok, type Result } from "./result.js";
import {
  type Accepted,
  type CostTableAt,
  checkEventTime,
  costOf,
  type PricingAt,
  periodStart,
  revenueOf,
  sourceOfOverrides,
  type UsageEvent,
  usageKey,
} from "./usage.js";

/**
 * Authorize and holds (DESIGN.md, "Enforcement"; invariants 4 and 6), as pure functions.
 *
 * How a hold is journaled: placing it MOVES the estimate out of the wallet's grants (in
 * burn-down order, then the soft cap's overdraft room) into the wallet's own hold account, in
 * one balanced `hold` transaction. The hold account belongs to the wallet, so the wallet's
 * balance does not change (the credits are still the customer's) while its available amount
 * (what its grants can pay now) drops at once. Settling moves what was used from the hold
 * account to `consumption` and gives the rest back to the grants it came from (`hold.settle`);
 * voiding or expiring gives everything back (`hold.release`). A credit given back to a grant
 * that expired or was voided meanwhile goes where that grant's remainder went (breakage or
 * voided).
 *
 * Why a movement and not a reservation counted beside the grants: the held credits are then
 * exactly the ones that will pay, so no later draw, scoped grant or grant expiry can take
 * them (a reservation would need every later draw to prove every pending hold still fundable,
 * across scopes and expiries). Invariants 1–3 and reconcile stay exact: every grant's
 * remaining is its journal, and the wallet's balance is its grants plus its hold account minus
 * its overdraft, each a sum of entries.
 */

/** Where a hold is in its life: pending, then exactly one of the others (invariant 6). */
export type HoldStatus = "pending" | "posted" | "voided" | "expired";

/** Bounds of a hold, shared with the API's validation. */
export const HOLD_LIMITS = {
  /** When a hold expires if the caller names no timeout: 10 minutes. */
  timeoutDefaultSeconds: 600,
  timeoutMinSeconds: 1,
  /** At most 7 days: a hold is for a run in progress, not a standing reservation. */
  timeoutMaxSeconds: 7 * 86_400,
  /** The most events one settle may carry. */
  maxSettleEvents: 1000,
} as const;

/** One part of a hold: credits taken from a grant, or (grantId null) from the pool's overdraft room. */
export interface HoldDraw {
  readonly walletId: string;
  readonly grantId: string | null;
  readonly amount: bigint;
}

/** A hold (reservation) for an estimate, until it is settled, voided or expires. */
export interface Hold {
  readonly id: string;
  readonly customerId: string;
  /** The wallet that pays: the subject's member wallet, or the customer's pool. */
  readonly walletId: string;
  readonly subjectId: string | null;
  readonly action: string;
  /** Credits held, in units; ≥ 0. */
  readonly amount: bigint;
  /** Where the held credits came from, in burn-down order. Sums to `amount`. */
  readonly draws: readonly HoldDraw[];
  readonly status: HoldStatus;
  readonly createdAt: number;
  /** A pending hold past this time can no longer be posted; the scheduler expires it. */
  readonly expiresAt: number;
  readonly resolvedAt: number | null;
  /** Credits posted by its settlement (from the hold and any overrun). */
  readonly posted: bigint;
  /** Credits given back by its settlement, void or expiry. */
  readonly released: bigint;
  /** Credits of its settlement charged to nobody (beyond the hold, no overrun allowed, or past the floor). */
  readonly unpaid: bigint;
}

/** allow, deny, or throttle (the throttle overage policy: below its level only listed cheaper actions proceed). */
export type Decision = "allow" | "deny" | "throttle";

/**
 * The closed list of reasons: enough credits; enough with the overage policy's overdraft; not
 * enough; throttled; a spend cap's room is too small.
 */
export const DECISION_REASONS = [
  "sufficient_credits",
  "within_overdraft",
  "insufficient_credits",
  "below_throttle_level",
  "spend_cap_reached",
] as const;
export type DecisionReason = (typeof DECISION_REASONS)[number];

/** What authorize answers. */
export interface Authorization {
  readonly decision: Decision;
  readonly reason: DecisionReason;
  /**
   * What the wallet chain could pay for this action before this request: its grants plus
   * overdraft room, narrowed by the room of the spend caps that apply.
   */
  readonly available: bigint;
  readonly estimate: bigint;
  /** The hold placed, when asked for and allowed. */
  readonly hold: Hold | null;
  /** On `throttle`: the actions still allowed below the level (patterns as set); null otherwise. */
  readonly allowedActions: readonly string[] | null;
  /** On `throttle`: the cheaper action suggested instead; null otherwise or when none is set. */
  readonly fallbackAction: string | null;
}

/** A wallet chain as a hold sees it, locked: grants (the member's own, then the pool's) and the pool's policy. */
export interface HoldState {
  readonly sources: readonly DrawSource[];
  readonly poolWalletId: string;
  /** What the pool owes now under a soft cap (≥ 0). */
  readonly overdraft: bigint;
  readonly policy: OveragePolicy;
  /** The customer's spend caps and their counters (caps.ts); none when absent. */
  readonly caps?: CapState;
}

/** How much further the pool's overage policy lets it owe (see overage.ts): its floor's depth minus what it owes. */
export const overdraftRoom = (state: Pick<HoldState, "overdraft" | "policy">): bigint =>
  overageRoom(state.policy, state.overdraft);

/** What the chain can pay for `action` now: eligible grants plus overdraft room. */
export const availableFor = (state: HoldState, action: string, now: number): bigint =>
  drawable(state.sources, action, now) + overdraftRoom(state);

/** What authorize is asked. */
export interface AuthorizeInput {
  readonly customerId: string;
  readonly walletId: string;
  readonly subjectId: string | null;
  readonly action: string;
  /** The estimate in credits (already rated, when given as quantities). */
  readonly estimate: bigint;
  /** Place a hold for the estimate, expiring after this many seconds; null: only answer. */
  readonly holdTimeoutSeconds: number | null;
}

/**
 * Decides allow or deny for an estimate against the locked chain and, when asked and allowed,
 * places the hold: the estimate moves from grants (burn-down order) and overdraft room into
 * the wallets' hold accounts. Asserts invariant 4: what remains available stays ≥ the floor.
 * Bad input (a negative or out-of-range estimate, a timeout out of bounds) fails and plans
 * nothing. Spend caps narrow `available` before the decision (a deny then says
 * `spend_cap_reached`), and a hold reserves its estimate of cap room (`capReservations`).
 */
export function planAuthorize(
  ctx: Context,
  state: HoldState,
  input: AuthorizeInput,
): Result<{
  authorization: Authorization;
  transaction: JournalTransaction | null;
  caps: CapEffect;
  capReservations: readonly CapReservation[];
}> {
  if (input.estimate < 0n || !inRange(input.estimate))
    return fail("invalid_amount", "The estimate must be zero or more credits, within the amount range.");
  const timeout = input.holdTimeoutSeconds;
  if (
    timeout !== null &&
    (!Number.isInteger(timeout) ||
      timeout < HOLD_LIMITS.timeoutMinSeconds ||
      timeout > HOLD_LIMITS.timeoutMaxSeconds)
  ) {
    return fail(
      "invalid_argument",
      `hold_timeout_seconds must be a whole number from ${HOLD_LIMITS.timeoutMinSeconds} to ${HOLD_LIMITS.timeoutMaxSeconds} (7 days).`,
    );
  }
  const fromGrants = drawable(state.sources, input.action, ctx.now);
  const room = overdraftRoom(state);
  // Spend caps (caps.ts) narrow what may be spent; the chain's wallets and the subject pick them.
  const capBook = new CapBook(state.caps);
  const chain = state.sources.map((s) => s.walletId);
  const capRoom = capBook.roomFor(chain, input.subjectId, ctx.now);
  const walletLevel = fromGrants + room;
  const available = narrowByCap(walletLevel, capRoom);
  const allowed = input.estimate <= available;
  const base = {
    available,
    estimate: input.estimate,
    allowedActions: null,
    fallbackAction: null,
  };
  // The throttle overage policy: below its level (the wallet's, not a cap's), an action it does
  // not list is throttled.
  const throttled = throttleCheck(state.policy, input.action, walletLevel, input.estimate);
  if (throttled) {
    return ok({
      authorization: {
        ...base,
        decision: "throttle",
        reason: "below_throttle_level",
        hold: null,
        allowedActions: throttled.allowedActions,
        fallbackAction: throttled.fallbackAction,
      },
      transaction: null,
      caps: NO_CAP_EFFECT,
      capReservations: [],
    });
  }
  if (!allowed) {
    const capped = capRoom !== null && input.estimate > capRoom;
    if (capped) capBook.refuse(chain, input.subjectId, ctx.now);
    return ok({
      authorization: {
        ...base,
        decision: "deny",
        reason: capped ? "spend_cap_reached" : "insufficient_credits",
        hold: null,
      },
      transaction: null,
      caps: capBook.effect(),
      capReservations: [],
    });
  }
  const reason: DecisionReason = input.estimate <= fromGrants ? "sufficient_credits" : "within_overdraft";
  if (timeout === null)
    return ok({
      authorization: { ...base, decision: "allow", reason, hold: null },
      transaction: null,
      caps: NO_CAP_EFFECT,
      capReservations: [],
    });

  const plan = planDraws(state.sources, input.estimate, input.action, ctx.now);
  const draws: HoldDraw[] = plan.draws.map((d) => ({ ...d }));
  // Invariant 4: the part no grant covers fits the soft cap's room, so available stays ≥ floor.
  invariant(plan.shortfall <= room, "a hold would take the wallet below its floor");
  if (plan.shortfall > 0n)
    draws.push({ walletId: state.poolWalletId, grantId: null, amount: plan.shortfall });
  const hold: Hold = {
    id: ctx.newId("hld"),
    customerId: input.customerId,
    walletId: input.walletId,
    subjectId: input.subjectId,
    action: input.action,
    amount: input.estimate,
    draws,
    status: "pending",
    createdAt: ctx.now,
    expiresAt: ctx.now + timeout * 1000,
    resolvedAt: null,
    posted: 0n,
    released: 0n,
    unpaid: 0n,
  };
  const entries: Entry[] = draws.map((d) =>
    entry(
      d.grantId === null ? { kind: "overdraft", walletId: d.walletId } : grantAccount(d.grantId, d.walletId),
      -d.amount,
    ),
  );
  for (const [walletId, amount] of perWallet(draws)) entries.push(entry({ kind: "hold", walletId }, amount));
  const transaction =
    input.estimate > 0n ? makeTx(ctx, "hold", input.customerId, entries, { action: input.action }) : null;
  // While pending, the hold reserves its estimate of every applicable cap's room.
  const capReservations = capBook.reserve(chain, input.subjectId, ctx.now, input.estimate);
  return ok({
    authorization: { ...base, decision: "allow", reason, hold },
    transaction,
    caps: capBook.effect(),
    capReservations,
  });
}

/** Sums of draws per wallet, in first-seen order. */
function perWallet(draws: readonly HoldDraw[]): Map<string, bigint> {
  const sums = new Map<string, bigint>();
  for (const d of draws) sums.set(d.walletId, (sums.get(d.walletId) ?? 0n) + d.amount);
  return sums;
}

/** Checks that a hold can still be resolved by a caller at `now`: pending and before its timeout. */
export function checkPending(hold: Hold, now: number): Result<null> {
  if (hold.status === "expired" || (hold.status === "pending" && now >= hold.expiresAt)) {
    return fail(
      "hold_expired",
      `Hold ${hold.id} expired at ${new Date(hold.expiresAt).toISOString()}; its credits are released, and an expired hold cannot be posted. Authorize again.`,
      { hold_id: hold.id, status: "expired", expires_at: new Date(hold.expiresAt).toISOString() },
    );
  }
  if (hold.status !== "pending") {
    return fail("hold_not_pending", `Hold ${hold.id} is already ${hold.status}; a hold resolves once.`, {
      hold_id: hold.id,
      status: hold.status,
    });
  }
  return ok(null);
}

/**
 * Entries giving held credits back: to the grant they came from while it is drawable-or-later
 * (active and unexpired), else where its remainder went (breakage for an expired grant, voided
 * for a voided one); to the overdraft they came from (owing less).
 */
function releaseEntries(
  parts: readonly HoldDraw[],
  grants: ReadonlyMap<string, Grant>,
  now: number,
): Entry[] {
  const out: Entry[] = [];
  for (const p of parts) {
    if (p.amount === 0n) continue;
    if (p.grantId === null) {
      out.push(entry({ kind: "overdraft", walletId: p.walletId }, p.amount));
      continue;
    }
    const g = grants.get(p.grantId);
    invariant(g, `grant ${p.grantId} of a hold was not loaded`);
    const alive = g.status === "active" && (g.expiresAt === null || now < g.expiresAt);
    if (alive) out.push(entry(grantAccount(g.id, g.walletId), p.amount));
    else out.push(entry({ kind: "system", name: g.status === "voided" ? "voided" : "breakage" }, p.amount));
  }
  return out;
}

/** Splits a hold's draws into the first `amount` (in order) and the rest. */
function splitDraws(draws: readonly HoldDraw[], amount: bigint): { head: HoldDraw[]; tail: HoldDraw[] } {
  const head: HoldDraw[] = [];
  const tail: HoldDraw[] = [];
  let left = amount;
  for (const d of draws) {
    const take = minAmount(d.amount, left);
    if (take > 0n) head.push({ ...d, amount: take });
    if (d.amount - take > 0n) tail.push({ ...d, amount: d.amount - take });
    left -= take;
  }
  return { head, tail };
}

/**
 * Voids (a failed run costs nothing) or expires (its timeout passed) a pending hold: every held
 * credit goes back in one `hold.release` transaction (null for a zero hold). A void after the
 * timeout fails with `hold_expired`; an expiry before it is a bug.
 */
export function planRelease(
  ctx: Context,
  hold: Hold,
  grants: ReadonlyMap<string, Grant>,
  status: "voided" | "expired",
): Result<{ hold: Hold; transaction: JournalTransaction | null }> {
  if (status === "voided") {
    const pending = checkPending(hold, ctx.now);
    if (!pending.ok) return pending;
  } else {
    invariant(hold.status === "pending" && ctx.now >= hold.expiresAt, `hold ${hold.id} is not due to expire`);
  }
  const entries = releaseEntries(hold.draws, grants, ctx.now);
  for (const [walletId, amount] of perWallet(hold.draws))
    if (amount > 0n) entries.push(entry({ kind: "hold", walletId }, -amount));
  const transaction =
    entries.length > 0
      ? makeTx(ctx, "hold.release", hold.customerId, entries, { action: hold.action })
      : null;
  return ok({
    hold: { ...hold, status, resolvedAt: ctx.now, released: hold.amount },
    transaction,
  });
}

/** What settling needs besides the hold: the locked chain (for an overrun), the hold's grants, and pricing. */
export interface SettleState extends HoldState {
  /** Every grant the hold drew from (whatever its status now), and the chain's drawable grants. */
  readonly grants: ReadonlyMap<string, Grant>;
  readonly pricingAt: (customerId: string, time: number) => PricingAt | null;
  readonly costAt: (time: number) => CostTableAt | null;
  /** Period usage per {@link usageKey}, for volume tiers. */
  readonly usage: ReadonlyMap<string, bigint>;
  /** The cap room the hold reserved when placed (freed now; what is posted counts as spent). */
  readonly capReservations?: readonly CapReservation[];
}

/** A settlement, planned: the hold as resolved, each event's charge, the journal, tier counters. */
export interface SettlePlan {
  readonly hold: Hold;
  readonly outcomes: readonly Accepted[];
  readonly transaction: JournalTransaction | null;
  readonly usageDeltas: ReadonlyMap<string, bigint>;
  /** Spend cap counters: the reservation freed, what was posted spent (in the hold's period). */
  readonly caps: CapEffect;
}

/**
 * Settles a pending hold with the actual usage events (all of the hold's customer). Each event
 * is rated by the rate card in force at its time; together they draw the hold first, in the
 * hold's burn-down order. What exceeds the hold is drawn from the chain by the burn-down order
 * when {@link overrunAllowed}, down to the floor, and recorded unpaid otherwise. What the events
 * did not use goes back. Failed and non-billable events rate at zero (invariant 9). Fails, and
 * plans nothing, on an event the rate card cannot rate or a time out of the accepted window.
 */
export function planSettle(
  ctx: Context,
  hold: Hold,
  state: SettleState,
  events: readonly UsageEvent[],
): Result<SettlePlan> {
  const pending = checkPending(hold, ctx.now);
  if (!pending.ok) return pending;
  const usage = new Map(state.usage);
  const usageDeltas = new Map<string, bigint>();
  const rated: {
    event: UsageEvent;
    versionId: string;
    rating: Accepted["rating"];
    overrideSource: string | null;
  }[] = [];
  for (const [i, event] of events.entries()) {
    const time = checkEventTime(event.time, ctx.now);
    if (!time.ok) return fail(time.error.code, `events[${i}]: ${time.error.message}`, { index: String(i) });
    const pricing = state.pricingAt(event.customerId, event.time);
    if (!pricing)
      return fail("no_rate_card", `events[${i}]: no rate card version is in force at the event's time.`);
    const period = periodStart(event.time);
    const r = rateEvent(
      pricing.content,
      pricing.overrides,
      event,
      (lineId) => usage.get(usageKey(event.customerId, period, lineId)) ?? 0n,
    );
    if (!r.ok) return fail(r.error.code, `events[${i}]: ${r.error.message}`, { index: String(i) });
    for (const line of r.value.lines) {
      const key = usageKey(event.customerId, period, line.lineId);
      usage.set(key, (usage.get(key) ?? 0n) + line.amount);
      usageDeltas.set(key, (usageDeltas.get(key) ?? 0n) + line.amount);
    }
    rated.push({
      event,
      versionId: pricing.versionId,
      rating: r.value,
      overrideSource: sourceOfOverrides(pricing, r.value),
    });
  }
  const total = rated.reduce((s, r) => s + r.rating.credits, 0n);
  if (!inRange(total)) return fail("invalid_amount", "The events' charges add up beyond the amount range.");
  const fromHold = minAmount(total, hold.amount);
  const beyond = total - fromHold;
  // Spend caps: the reservation becomes spending, counted in the period the hold was placed in.
  const capBook = new CapBook(state.caps);
  const chain = state.sources.map((s) => s.walletId);
  capBook.release(state.capReservations ?? []);
  capBook.charge(chain, hold.subjectId, hold.createdAt, fromHold);
  let capLimited = false;
  // An overrun draws the chain by the burn-down order, then overdraft room, never past the floor
  // nor past a spend cap's room.
  let overrun: HoldDraw[] = [];
  if (beyond > 0n && overrunAllowed(state.policy)) {
    const capped = narrowByCap(beyond, capBook.roomFor(chain, hold.subjectId, hold.createdAt));
    capLimited = capped < beyond;
    if (capLimited) capBook.refuse(chain, hold.subjectId, hold.createdAt);
    const plan = planDraws(state.sources, capped, hold.action, ctx.now);
    overrun = plan.draws.map((d) => ({ ...d }));
    // What grants cannot cover goes on the overdraft as far as the room goes; the floor refuses the rest.
    const owe = minAmount(plan.shortfall, overdraftRoom(state));
    if (owe > 0n) overrun.push({ walletId: state.poolWalletId, grantId: null, amount: owe });
  }
  const { head: consumed, tail: released } = splitDraws(hold.draws, fromHold);
  const paying = [...consumed, ...overrun];
  const paid = paying.reduce((s, d) => s + d.amount, 0n);
  const unpaid = total - paid;
  invariant(unpaid >= 0n, "a settlement pays no more than its events cost");
  capBook.charge(chain, hold.subjectId, hold.createdAt, paid - fromHold);

  // Each event, in order, takes its charge from the paying draws; what is left is unpaid.
  let queue = paying;
  const outcomes: Accepted[] = [];
  for (const r of rated) {
    const split = splitDraws(queue, r.rating.credits);
    queue = split.tail;
    const drawn = split.head.filter((d) => d.grantId !== null).reduce((s, d) => s + d.amount, 0n);
    const owed = split.head.filter((d) => d.grantId === null).reduce((s, d) => s + d.amount, 0n);
    const short = r.rating.credits - drawn - owed;
    const money = revenueOf(
      split.head.flatMap((d) => (d.grantId === null ? [] : [{ grantId: d.grantId, amount: d.amount }])),
      (id) => {
        const g = state.grants.get(id);
        invariant(g, `grant ${id} of a settlement was not loaded`);
        return g;
      },
    );
    const cost = costOf(state, r.event);
    outcomes.push({
      kind: "accepted",
      event: r.event,
      versionId: r.versionId,
      rating: r.rating,
      walletId: hold.walletId,
      drawn,
      overdraft: owed,
      unpaid: short,
      draws: split.head.flatMap((d): Draw[] =>
        d.grantId === null ? [] : [{ grantId: d.grantId, walletId: d.walletId, amount: d.amount }],
      ),
      revenue: money.revenue,
      revenueCurrency: money.revenueCurrency,
      extraRevenue: money.extraRevenue,
      cost: cost?.amount ?? null,
      costCurrency: cost?.currency ?? null,
      costVersionId: cost?.versionId ?? null,
      reason:
        r.rating.credits === 0n
          ? r.rating.reason
          : short > 0n
            ? capLimited
              ? "spend_cap_reached"
              : overrunAllowed(state.policy)
                ? "insufficient_credits"
                : "hold_exceeded"
            : null,
      transactionId: null,
      overrideSource: r.overrideSource,
    });
  }

  const entries: Entry[] = [];
  for (const [walletId, amount] of perWallet(hold.draws))
    if (amount > 0n) entries.push(entry({ kind: "hold", walletId }, -amount));
  for (const d of overrun)
    entries.push(
      entry(
        d.grantId === null
          ? { kind: "overdraft", walletId: d.walletId }
          : grantAccount(d.grantId, d.walletId),
        -d.amount,
      ),
    );
  if (paid > 0n) entries.push(entry({ kind: "system", name: "consumption" }, paid));
  entries.push(...releaseEntries(released, state.grants, ctx.now));
  const transaction =
    entries.length > 0 ? makeTx(ctx, "hold.settle", hold.customerId, entries, { action: hold.action }) : null;
  const releasedTotal = released.reduce((s, d) => s + d.amount, 0n);
  // Invariant 4 for the overrun: the grants it drew were eligible and its overdraft fit the room.
  invariant(
    overrun.filter((d) => d.grantId === null).reduce((s, d) => s + d.amount, 0n) <= overdraftRoom(state),
    "an overrun would take the wallet below its floor",
  );
  return ok({
    hold: {
      ...hold,
      status: "posted",
      resolvedAt: ctx.now,
      posted: paid,
      released: releasedTotal,
      unpaid,
    },
    outcomes: outcomes.map((o) => ({
      ...o,
      transactionId: o.drawn + o.overdraft > 0n ? (transaction?.id ?? null) : null,
    })),
    transaction,
    usageDeltas,
    caps: capBook.effect(),
  });
}

/** Each wallet's change of its hold account in these entries (positive: more held). */
export function heldDeltas(entries: readonly Entry[]): Map<string, bigint> {
  const deltas = new Map<string, bigint>();
  for (const e of entries)
    if (e.account.kind === "hold")
      deltas.set(e.account.walletId, (deltas.get(e.account.walletId) ?? 0n) + e.amount);
  return deltas;
}
