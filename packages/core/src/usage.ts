import { divRound, SCALE } from "./amount.js";
import { type Draw, isDueToExpire, planDraws } from "./burndown.js";
import { CapBook, type CapEffect, type CapState } from "./caps.js";
import { monthStart } from "./commerce.js";
import { entry, grantAccount } from "./journal.js";
import { expireDueEntries, makeTx } from "./ledger.js";
import type { Entry, Grant, IdGenerator, JournalTransaction } from "./model.js";
import { type OveragePolicy, overageRoom } from "./overage.js";
import { type RateCardContent, type RateLine, type Rating, rateEvent } from "./rating.js";
import { fail, invariant, ok, type Result } from "./result.js";

/**
 * Metering's pure core: a batch of usage events, in arrival order, is rated and drawn down
 * against the locked state of the wallets it touches. The storage writer loads the state,
 * calls {@link planUsage} once per batch, and writes the plan in one transaction.
 */

/** How long after its own time an event is still accepted: 7 days. */
export const LATE_GRACE_MS = 7 * 86_400_000;
/** How far ahead of the server's clock an event's time may be: 5 minutes of clock skew. */
export const FUTURE_SKEW_MS = 5 * 60_000;

// The overage policy (its modes and rules) lives in overage.ts; re-exported for older imports.
export type { OverageMode, OveragePolicy } from "./overage.js";

/** A usage event, parsed: quantities at 9 decimals, time in epoch milliseconds. */
export interface UsageEvent {
  readonly id: string;
  readonly customerId: string;
  readonly subjectId: string | null;
  readonly action: string;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly quantities: Readonly<Record<string, bigint>>;
  readonly time: number;
  readonly status: "succeeded" | "failed";
  readonly runId: string | null;
  /** A cost the caller measured itself, in money units at 9 decimals; used instead of the cost table. */
  readonly reportedCost: bigint | null;
}

/** A locked wallet as usage sees it. */
export interface UsageWallet {
  readonly id: string;
  readonly customerId: string;
  readonly memberId: string | null;
  /** Credits owed beyond the grants (soft cap), ≥ 0. The balance is grants minus this. */
  readonly overdraft: bigint;
  readonly policy: OveragePolicy;
}

/** The rate card in force for a customer at a time, with its contract overrides. */
export interface PricingAt {
  readonly versionId: string;
  readonly content: RateCardContent;
  /** The override lines in force at the time (see override-terms.ts); none outside every window. */
  readonly overrides: readonly RateLine[];
  /** Where those lines come from: a contract id or `manual`; null or absent when none are in force. */
  readonly overridesSource?: string | null;
}

/** A cost table version: money per unit, priced like rate lines. */
export interface CostTableAt {
  readonly versionId: string;
  readonly currency: string;
  readonly lines: readonly RateLine[];
}

/** Everything a batch is planned against. */
export interface UsageState {
  readonly wallets: ReadonlyMap<string, UsageWallet>;
  readonly grants: ReadonlyMap<string, Grant>;
  readonly poolWallet: ReadonlyMap<string, string>;
  readonly memberWallet: ReadonlyMap<string, string>;
  readonly subjects: ReadonlyMap<string, { readonly customerId: string; readonly kind: string }>;
  readonly pricingAt: (customerId: string, time: number) => PricingAt | null;
  readonly costAt: (time: number) => CostTableAt | null;
  /** Period usage per {@link usageKey}, in quantity units. */
  readonly usage: ReadonlyMap<string, bigint>;
  /** The spend caps of the batch's customers and their counters (see caps.ts); none when absent. */
  readonly caps?: CapState;
}

/** The calendar month (UTC) an event's time falls in, as its first millisecond: tiers count per period. */
export const periodStart: (time: number) => number = monthStart; // one month rule for tiers, caps and top-ups

/** The key of a customer's period usage of one line. */
export const usageKey = (customerId: string, period: number, lineId: string): string =>
  `${customerId}|${period}|${lineId}`;

/** An accepted event's outcome. */
export interface Accepted {
  readonly kind: "accepted";
  readonly event: UsageEvent;
  readonly versionId: string;
  readonly rating: Rating;
  /** The wallet the subject pays from (its member wallet, or the customer's pool). */
  readonly walletId: string;
  /** Credits drawn from grants. */
  readonly drawn: bigint;
  /** Credits put on the overdraft under a soft cap. */
  readonly overdraft: bigint;
  /** Credits the hard cap or the floor refused: charged to nobody, recorded. */
  readonly unpaid: bigint;
  readonly draws: readonly Draw[];
  /**
   * The money the drawn credits were bought for (their cost basis), at 9 decimals, in the
   * currency of the first paid grant drawn (`revenueCurrency`, null when nothing paid was drawn).
   */
  readonly revenue: bigint;
  readonly revenueCurrency: string | null;
  /**
   * The revenue of paid grants drawn in other currencies, one entry per currency in the order
   * first drawn; empty (the usual case) when every paid grant drawn had one currency. Money is
   * never added across currencies; each currency's sum is rounded once.
   */
  readonly extraRevenue: readonly CurrencyAmount[];
  /** Cost of goods sold, at 9 decimals, from the report or the cost table; null when unknown. */
  readonly cost: bigint | null;
  readonly costCurrency: string | null;
  readonly costVersionId: string | null;
  /** Why the charge is zero or unpaid; null for a paid charge. */
  readonly reason: string | null;
  /** The transaction the charge is journaled in; null when nothing moved. */
  readonly transactionId: string | null;
  /** The source (contract id or `manual`) of the override terms that priced a line; null when none did. */
  readonly overrideSource: string | null;
}

/** A rejected event: nothing recorded. */
export interface Rejected {
  readonly kind: "rejected";
  readonly event: UsageEvent;
  readonly code: "not_found" | "unknown_action" | "event_too_old" | "event_in_future" | "no_rate_card";
  readonly message: string;
}

export type UsageOutcome = Accepted | Rejected;

/** An accepted outcome while its batch is planned: its transaction id is set at the end. */
type MutableAccepted = Omit<Accepted, "transactionId"> & { transactionId: string | null };

/** One credit in units (10^SCALE), to turn revenue at double scale back into units. */
const ONE = 10n ** BigInt(SCALE);

/** Money in one currency, at 9 decimals. */
export interface CurrencyAmount {
  readonly currency: string;
  readonly amount: bigint;
}

/** Revenue of an event's draws (see {@link Accepted.revenue}). */
export interface EventRevenue {
  readonly revenue: bigint;
  readonly revenueCurrency: string | null;
  readonly extraRevenue: readonly CurrencyAmount[];
}

const NO_REVENUE: EventRevenue = { revenue: 0n, revenueCurrency: null, extraRevenue: [] };

/**
 * What drawn credits were bought for: each draw's credits times its grant's cost basis, summed
 * per currency at double scale and rounded once per currency. The first paid currency drawn is
 * the event's `revenue`; the others are `extraRevenue`. Free grants (cost basis 0) add nothing.
 *
 *     revenueOf([{ grantId: "g1", amount: 2n * UNIT }], (id) => grants.get(id)!)
 *     // g1 bought at 0.1 EUR a credit: { revenue: 0.2 EUR in units, revenueCurrency: "EUR", extraRevenue: [] }
 */
export function revenueOf(
  draws: Iterable<{ readonly grantId: string; readonly amount: bigint }>,
  grantOf: (id: string) => Pick<Grant, "costBasis" | "currency">,
): EventRevenue {
  let first: string | null = null;
  let sum = 0n;
  let others: Map<string, bigint> | null = null;
  for (const d of draws) {
    const g = grantOf(d.grantId);
    if (g.costBasis === 0n) continue;
    const currency = g.currency;
    invariant(currency !== null, "a grant with a cost basis has a currency");
    const money = d.amount * g.costBasis;
    first ??= currency;
    if (currency === first) sum += money;
    else {
      others ??= new Map();
      others.set(currency, (others.get(currency) ?? 0n) + money);
    }
  }
  if (first === null) return NO_REVENUE;
  return {
    revenue: divRound(sum, ONE),
    revenueCurrency: first,
    extraRevenue:
      others === null
        ? []
        : [...others].map(([currency, amount]) => ({ currency, amount: divRound(amount, ONE) })),
  };
}

/** A batch's plan: outcomes in order, the journal, and the counters to bump. */
export interface UsagePlan {
  readonly outcomes: readonly UsageOutcome[];
  readonly transactions: readonly JournalTransaction[];
  /** Grants that expired before the batch drew (their breakage is in `transactions`). */
  readonly expired: readonly string[];
  readonly overdraftDeltas: ReadonlyMap<string, bigint>;
  readonly usageDeltas: ReadonlyMap<string, bigint>;
  /** Spend cap counters to bump, and the caps reached. */
  readonly caps: CapEffect;
}

/** Checks an event's time against the clock: not beyond the skew ahead, not beyond the grace behind. */
export function checkEventTime(time: number, now: number): Result<null> {
  if (time > now + FUTURE_SKEW_MS) {
    return fail(
      "event_in_future",
      "The event's time is more than 5 minutes in the future; check the sender's clock.",
    );
  }
  if (time < now - LATE_GRACE_MS) {
    return fail("event_too_old", "The event is older than the 7-day grace window for late events.");
  }
  return ok(null);
}

const reject = (event: UsageEvent, code: Rejected["code"], message: string): Rejected => ({
  kind: "rejected",
  event,
  code,
  message,
});

/**
 * Plans a batch of new (already deduplicated) events in arrival order. Each event is rated by
 * the version in force at its own time, then drawn from its wallet chain by the burn-down
 * order; what grants cannot cover follows the pool's overage policy. Each customer's charges
 * become one balanced `usage` transaction; the plan never mutates its inputs.
 */
export function planUsage(
  ctx: { now: number; newId: IdGenerator },
  state: UsageState,
  events: readonly UsageEvent[],
): UsagePlan {
  const grants = new Map(state.grants);
  // Grant ids per wallet, so drawing does not scan every loaded grant for each event.
  const walletGrants = new Map<string, string[]>();
  for (const g of grants.values()) {
    const ids = walletGrants.get(g.walletId);
    if (ids) ids.push(g.id);
    else walletGrants.set(g.walletId, [g.id]);
  }
  const overdraft = new Map<string, bigint>();
  const usage = new Map(state.usage);
  const usageDeltas = new Map<string, bigint>();
  const transactions: JournalTransaction[] = [];
  const expired: string[] = [];
  const caps = new CapBook(state.caps);

  // Expire what is due first, per customer, so no expired credit is drawn. Only grants due
  // are grouped (expireDueEntries keeps no other): a batch touches a thousand customers.
  const byCustomer = new Map<string, Grant[]>();
  for (const g of grants.values()) {
    if (!isDueToExpire(g, ctx.now)) continue;
    const w = state.wallets.get(g.walletId);
    if (!w) continue;
    const list = byCustomer.get(w.customerId);
    if (list) list.push(g);
    else byCustomer.set(w.customerId, [g]);
  }
  for (const [customerId, list] of [...byCustomer.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const due = expireDueEntries(list, ctx.now);
    if (due.grantIds.length === 0) continue;
    for (const id of due.grantIds) {
      const g = grants.get(id)!;
      grants.set(id, { ...g, remaining: 0n, status: "expired" });
      expired.push(id);
    }
    if (due.entries.length > 0) transactions.push(makeTx(ctx, "expire", customerId, due.entries));
  }

  type Charges = {
    grant: Map<string, bigint>;
    /** Made when the customer's first charge goes on an overdraft (rare). */
    overdraft: Map<string, bigint> | null;
    total: bigint;
    outcomes: MutableAccepted[];
  };
  const charges = new Map<string, Charges>();
  const outcomes: UsageOutcome[] = [];
  // A batch's events mostly share their time, so their period is computed once.
  let lastTime = Number.NaN;
  let period = 0;
  for (const event of events) {
    const time = checkEventTime(event.time, ctx.now);
    if (!time.ok) {
      outcomes.push(reject(event, time.error.code as Rejected["code"], time.error.message));
      continue;
    }
    const pool = state.poolWallet.get(event.customerId);
    if (pool === undefined) {
      outcomes.push(reject(event, "not_found", `No customer ${event.customerId}.`));
      continue;
    }
    let walletChain = [pool];
    if (event.subjectId !== null) {
      const subject = state.subjects.get(event.subjectId);
      if (!subject || subject.customerId !== event.customerId) {
        outcomes.push(
          reject(event, "not_found", `Customer ${event.customerId} has no subject ${event.subjectId}.`),
        );
        continue;
      }
      const own = state.memberWallet.get(event.subjectId);
      if (own !== undefined) walletChain = [own, pool];
    }
    const pricing = state.pricingAt(event.customerId, event.time);
    if (!pricing) {
      outcomes.push(reject(event, "no_rate_card", "No rate card version is in force at the event's time."));
      continue;
    }
    if (event.time !== lastTime) {
      lastTime = event.time;
      period = periodStart(event.time);
    }
    // usageKey(customer, period, line) is this prefix and the line id: built once per event.
    const keyPrefix = usageKey(event.customerId, period, "");
    const rated = rateEvent(
      pricing.content,
      pricing.overrides,
      event,
      (lineId) => usage.get(keyPrefix + lineId) ?? 0n,
    );
    if (!rated.ok) {
      outcomes.push(reject(event, "unknown_action", rated.error.message));
      continue;
    }
    const rating = rated.value;
    // Volume tiers count what was used and paid for (or free): an unpaid charge does not count.
    const countUsage = () => {
      for (const line of rating.lines) {
        const key = keyPrefix + line.lineId;
        usage.set(key, (usage.get(key) ?? 0n) + line.amount);
        usageDeltas.set(key, (usageDeltas.get(key) ?? 0n) + line.amount);
      }
    };
    const cost = costOf(state, event);
    const overrideSource = sourceOfOverrides(pricing, rating);
    // Outcomes are built by one literal (no object spread): this runs once per event.
    const accept = (
      drawn: bigint,
      overdraft: bigint,
      unpaid: bigint,
      draws: readonly Draw[],
      money: EventRevenue,
      reason: string | null,
    ): MutableAccepted => ({
      kind: "accepted",
      event,
      versionId: pricing.versionId,
      rating,
      walletId: walletChain[0]!,
      cost: cost?.amount ?? null,
      costCurrency: cost?.currency ?? null,
      costVersionId: cost?.versionId ?? null,
      drawn,
      overdraft,
      unpaid,
      draws,
      revenue: money.revenue,
      revenueCurrency: money.revenueCurrency,
      extraRevenue: money.extraRevenue,
      reason,
      transactionId: null,
      overrideSource,
    });
    if (rating.credits === 0n) {
      countUsage();
      outcomes.push(accept(0n, 0n, 0n, [], NO_REVENUE, rating.reason));
      continue;
    }
    // Spend caps (caps.ts): a charge beyond the tightest applicable cap's room is refused whole.
    const capRoom = caps.roomFor(walletChain, event.subjectId, ctx.now);
    if (capRoom !== null && rating.credits > capRoom) {
      caps.refuse(walletChain, event.subjectId, ctx.now);
      outcomes.push(accept(0n, 0n, rating.credits, [], NO_REVENUE, "spend_cap_reached"));
      continue;
    }
    const sources = walletChain.map((walletId) => ({
      walletId,
      grants: (walletGrants.get(walletId) ?? []).map((id) => grants.get(id)!),
    }));
    const plan = planDraws(sources, rating.credits, event.action, ctx.now);
    const poolState = state.wallets.get(pool)!;
    const owed = overdraft.get(pool) ?? poolState.overdraft;
    let unpaid = 0n;
    let toOverdraft = 0n;
    if (plan.shortfall > 0n) {
      // The overage policy decides how far the pool may owe (overage.ts); throttle owes nothing.
      const room = overageRoom(poolState.policy, owed);
      if (room >= plan.shortfall) toOverdraft = plan.shortfall;
      else unpaid = rating.credits;
      // Invariant 4: what the pool owes never goes past its floor.
      invariant(
        owed + toOverdraft <= -poolState.policy.floor || toOverdraft === 0n,
        "usage would pass the floor",
      );
    }
    if (unpaid > 0n) {
      outcomes.push(accept(0n, 0n, unpaid, [], NO_REVENUE, "insufficient_credits"));
      continue;
    }
    countUsage();
    caps.charge(walletChain, event.subjectId, ctx.now, rating.credits);
    // Before the draws below take the grants' remaining: only cost basis and currency are read.
    const money = revenueOf(plan.draws, (id) => grants.get(id)!);
    const c: Charges = charges.get(event.customerId) ?? {
      grant: new Map(),
      overdraft: null,
      total: 0n,
      outcomes: [],
    };
    for (const d of plan.draws) {
      const g = grants.get(d.grantId)!;
      grants.set(d.grantId, withRemaining(g, g.remaining - d.amount));
      c.grant.set(d.grantId, (c.grant.get(d.grantId) ?? 0n) + d.amount);
    }
    if (toOverdraft > 0n) {
      overdraft.set(pool, owed + toOverdraft);
      c.overdraft ??= new Map();
      c.overdraft.set(pool, (c.overdraft.get(pool) ?? 0n) + toOverdraft);
    }
    c.total += rating.credits;
    const outcome = accept(rating.credits - toOverdraft, toOverdraft, 0n, plan.draws, money, null);
    c.outcomes.push(outcome);
    charges.set(event.customerId, c);
    outcomes.push(outcome);
  }

  // One balanced transaction per customer carries its charges in this batch.
  for (const [customerId, c] of [...charges.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const entries: Entry[] = [];
    for (const [grantId, amount] of c.grant)
      entries.push(entry(grantAccount(grantId, grants.get(grantId)!.walletId), -amount));
    if (c.overdraft)
      for (const [walletId, amount] of c.overdraft)
        entries.push(entry({ kind: "overdraft", walletId }, -amount));
    entries.push(entry({ kind: "system", name: "consumption" }, c.total));
    const tx = makeTx(ctx, "usage", customerId, entries);
    transactions.push(tx);
    // These outcomes were made by this call and are not yet seen by anyone: set in place.
    for (const o of c.outcomes) o.transactionId = tx.id;
  }

  const overdraftDeltas = new Map<string, bigint>();
  for (const [walletId, owed] of overdraft)
    overdraftDeltas.set(walletId, owed - state.wallets.get(walletId)!.overdraft);
  return { outcomes, transactions, expired, overdraftDeltas, usageDeltas, caps: caps.effect() };
}

/**
 * The source of the override terms that priced at least one line of a rating, for its
 * explanation; null when the card priced every line (or no terms were in force).
 */
export function sourceOfOverrides(pricing: PricingAt, rating: Rating): string | null {
  const source = pricing.overridesSource ?? null;
  if (source === null) return null;
  for (const l of rating.lines) if (l.override) return source;
  return null;
}

/** A copy of a grant with another remainder: one literal, not a spread (once per draw). */
function withRemaining(g: Grant, remaining: bigint): Grant {
  return {
    id: g.id,
    walletId: g.walletId,
    amount: g.amount,
    remaining,
    source: g.source,
    costBasis: g.costBasis,
    currency: g.currency,
    effectiveAt: g.effectiveAt,
    expiresAt: g.expiresAt,
    priority: g.priority,
    scope: g.scope,
    metadata: g.metadata,
    status: g.status,
    createdAt: g.createdAt,
  };
}

/** An event's cost: what it reported, else the cost table in force at its time. */
export function costOf(
  state: Pick<UsageState, "costAt">,
  event: UsageEvent,
): { amount: bigint; currency: string; versionId: string | null } | null {
  const table = state.costAt(event.time);
  if (event.reportedCost !== null)
    return { amount: event.reportedCost, currency: table?.currency ?? "USD", versionId: null };
  if (!table) return null;
  const rated = rateEvent(
    { lines: table.lines, multipliers: [], nonBillable: [] },
    [],
    { ...event, status: "succeeded" },
    () => 0n,
  );
  // An action the cost table does not price has an unknown cost, not a zero one.
  if (!rated.ok) return null;
  return { amount: rated.value.credits, currency: table.currency, versionId: table.versionId };
}
