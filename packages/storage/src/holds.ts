import {
  type Accepted,
  type Authorization,
  type CapEffect,
  type CapReservation,
  type CapState,
  type Context,
  checkPending,
  type Effect,
  fail,
  type Grant,
  type Hold,
  type HoldDraw,
  type HoldState,
  type HoldStatus,
  invariant,
  type JournalTransaction,
  type OveragePolicy,
  ok,
  periodStart,
  planAuthorize,
  planRelease,
  planSettle,
  type RateCardContent,
  type Result,
  rateEvent,
  type SettleState,
  type UsageEvent,
  usageKey,
} from "@drawdown/core";
import {
  capReservationsOf,
  dropCapReservations,
  loadCapState,
  writeCapEffect,
  writeCapReservations,
} from "./caps.js";
import { type Commerce, TopUpFirst, type TopUpNeed, TopUpsTried, type TopUpTry } from "./commerce.js";
import { insertEvents, writeUsageCounters } from "./ingest.js";
import { type Catalog, type CustomerPricing, Metering } from "./metering.js";
import { OVERAGE_COLUMNS, overagePolicyFrom } from "./overage.js";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

/**
 * Authorize and holds on the store (core/holds.ts plans; this locks, loads and writes).
 *
 * Every step that changes a hold (authorize with a hold, settle, void, expire) runs through
 * {@link Store.mutate}: the paying wallet and its pool are locked in id order, due grant
 * expiries happen first, the core plans, the effect is written, and the hold row changes by a
 * guarded update (`WHERE status = 'pending'`), asserted to hit exactly one row. The wallet lock
 * serializes everything on one wallet, so the check and the debit are one atomic step and a
 * hold resolves exactly once, whatever the number of instances (invariant 6).
 *
 * Spend caps (caps.ts) are loaded in the plan callbacks, under the same locks (the chain always
 * includes the pool, which every charge of the customer locks): authorize narrows the decision
 * and reserves cap room, settle turns the reservation into spending, void and expiry free it.
 * An outbox row written on the same `ex` commits with the hold.
 */

/** The estimate an authorization was asked for, as given. */
export type Estimate =
  | { readonly credits: bigint }
  | {
      readonly quantities: Readonly<Record<string, bigint>>;
      readonly dimensions: Readonly<Record<string, string>>;
    };

/** An auto top-up tried before a denial: covered (decided again), failed (alert fired), or none bought. */
export interface AutoTopUpAttempt {
  readonly outcome: "covered" | "failed" | "none";
  readonly purchaseIds: readonly string[];
  /** Why it failed (`code: message`); null otherwise. */
  readonly reason: string | null;
}

/**
 * An authorization planned under the wallet locks, before anything is written: the answer, its
 * journal, and its spend-cap changes. {@link Holds.authorize} and the group-commit writer
 * (hold-writer.ts) both plan with {@link planAuthorizeRequest} and write what this says.
 */
export interface PlannedAuthorization {
  readonly authorization: Authorization;
  readonly transaction: JournalTransaction | null;
  readonly poolWalletId: string;
  readonly caps: CapEffect;
  readonly capReservations: readonly CapReservation[];
}

/** What a caller asks authorize. */
export interface AuthorizeRequest {
  readonly customerId: string;
  readonly subjectId: string | null;
  readonly action: string;
  readonly estimate: Estimate;
  /** Seconds until the hold expires; null: only answer, place no hold. */
  readonly holdTimeoutSeconds: number | null;
}

/** A hold as stored: the core's hold plus its journal links and the estimate as given. */
export interface HoldRecord extends Hold {
  readonly transactionId: string | null;
  readonly resolveTransactionId: string | null;
  /** The estimate as given: credits, or quantities with dimensions (decimal strings). */
  readonly estimate: Readonly<Record<string, unknown>>;
}

/** What settling posts: an event per usage, or quantities of the hold's action. */
export type SettleInput =
  | { readonly events: readonly SettleEvent[] }
  | {
      readonly quantities: Readonly<Record<string, bigint>>;
      readonly dimensions?: Readonly<Record<string, string>>;
      readonly status?: "succeeded" | "failed";
    };

/** A usage event posted against a hold: customer and subject are the hold's. */
export interface SettleEvent {
  readonly id: string;
  readonly action: string | null;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly quantities: Readonly<Record<string, bigint>>;
  readonly time: number | null;
  readonly status: "succeeded" | "failed";
  readonly runId: string | null;
  readonly reportedCost: bigint | null;
  /** The fingerprint of the event's body, stored like an ingested event's. */
  readonly fingerprint: string;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const EMPTY: Effect = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };

/** A hold row's columns, named, not `*`: a statement with fixed columns can be prepared (see sql.ts). */
export const HOLD_COLUMNS =
  "id, customer_id, wallet_id, subject_id, action, amount, draws, estimate, status, created_at, expires_at, resolved_at, posted, released, unpaid, transaction_id, resolve_transaction_id";

/** A hold row as read from the database (shared with the group-commit writer). */
export function toHold(r: Row): HoldRecord {
  const draws = (
    JSON.parse(String(r.draws)) as { wallet_id: string; grant_id: string | null; amount: string }[]
  ).map((d): HoldDraw => ({ walletId: d.wallet_id, grantId: d.grant_id, amount: BigInt(d.amount) }));
  return {
    id: String(r.id),
    customerId: String(r.customer_id),
    walletId: String(r.wallet_id),
    subjectId: r.subject_id === null ? null : String(r.subject_id),
    action: String(r.action),
    amount: BigInt(String(r.amount)),
    draws,
    status: String(r.status) as HoldStatus,
    createdAt: ms(r.created_at),
    expiresAt: ms(r.expires_at),
    resolvedAt: r.resolved_at === null ? null : ms(r.resolved_at),
    posted: BigInt(String(r.posted)),
    released: BigInt(String(r.released)),
    unpaid: BigInt(String(r.unpaid)),
    transactionId: r.transaction_id === null ? null : String(r.transaction_id),
    resolveTransactionId: r.resolve_transaction_id === null ? null : String(r.resolve_transaction_id),
    estimate: JSON.parse(String(r.estimate)) as Record<string, unknown>,
  };
}

/** A hold's draws as stored (JSON, amounts in units). */
export const drawsJson = (draws: readonly HoldDraw[]): string =>
  JSON.stringify(
    draws.map((d) => ({ wallet_id: d.walletId, grant_id: d.grantId, amount: d.amount.toString() })),
  );

/** The estimate as stored on a hold: as given, with its credits. */
export const estimateJson = (e: Estimate, credits: bigint): string =>
  JSON.stringify(
    "credits" in e
      ? { credits: credits.toString() }
      : {
          credits: credits.toString(),
          quantities: Object.fromEntries(Object.entries(e.quantities).map(([k, v]) => [k, v.toString()])),
          dimensions: e.dimensions,
        },
  );

/** A pool wallet's overdraft and overage policy, from a wallets row selected with {@link OVERAGE_COLUMNS}. */
export const poolStateFrom = (r: Row): { overdraft: bigint; policy: OveragePolicy } => ({
  overdraft: BigInt(String(r.overdraft)),
  policy: overagePolicyFrom(r),
});

/**
 * Plans one authorization on the locked chain (`state`, with the pool's overdraft and policy)
 * and the customer's spend caps (null: none). The one step both the one-request path and the
 * group-commit writer take: the throttle answer, cap narrowing and reservations come from here.
 */
export function planAuthorizeRequest(
  ctx: Context,
  state: HoldState,
  caps: CapState | null,
  request: AuthorizeRequest,
  payer: string,
  estimate: bigint,
): Result<PlannedAuthorization> {
  const planned = planAuthorize(ctx, caps ? { ...state, caps } : state, {
    customerId: request.customerId,
    walletId: payer,
    subjectId: request.subjectId,
    action: request.action,
    estimate,
    holdTimeoutSeconds: request.holdTimeoutSeconds,
  });
  if (!planned.ok) return planned;
  return ok({
    authorization: planned.value.authorization,
    transaction: planned.value.transaction,
    poolWalletId: state.poolWalletId,
    caps: planned.value.caps,
    capReservations: planned.value.capReservations,
  });
}

/**
 * Whether authorize tries an auto top-up before answering this (a denial for lack of credits).
 * The group-commit writer leaves such requests to {@link Holds.authorize} when the chain has one.
 */
export const wantsTopUp = (a: Authorization): boolean =>
  a.decision === "deny" && a.reason === "insufficient_credits";

/** The hold authorize answers with, as it is stored. */
export const placedHold = (hold: Hold, transactionId: string | null, estimate: Estimate): HoldRecord => ({
  ...hold,
  transactionId,
  resolveTransactionId: null,
  estimate: JSON.parse(estimateJson(estimate, hold.amount)) as Record<string, unknown>,
});

/** A settlement's usage events: the hold's customer and subject, its action by default (both paths). */
export function settlementEvents(
  hold: Pick<HoldRecord, "id" | "customerId" | "subjectId" | "action">,
  input: SettleInput,
  now: number,
): Result<{ events: UsageEvent[]; given: SettleEvent[] }> {
  const given: SettleEvent[] =
    "events" in input
      ? [...input.events]
      : [
          {
            id: `${hold.id}.settle`,
            action: null,
            dimensions: input.dimensions ?? {},
            quantities: input.quantities,
            time: null,
            status: input.status ?? "succeeded",
            runId: null,
            reportedCost: null,
            fingerprint: `${hold.id}.settle`,
          },
        ];
  const ids = new Set<string>();
  for (const e of given) {
    if (ids.has(e.id))
      return fail("invalid_argument", `Event id "${e.id}" appears twice in this settlement.`, {
        event_id: e.id,
      });
    ids.add(e.id);
  }
  const events = given.map(
    (e): UsageEvent => ({
      id: e.id,
      customerId: hold.customerId,
      subjectId: hold.subjectId,
      action: e.action ?? hold.action,
      dimensions: e.dimensions,
      quantities: e.quantities,
      time: e.time ?? now,
      status: e.status,
      runId: e.runId,
      reportedCost: e.reportedCost,
    }),
  );
  return ok({ events, given });
}

/** The estimate in credits: as given, or rated as an event of the action now would be (both paths). */
export function rateEstimateWith(
  req: Pick<AuthorizeRequest, "customerId" | "action" | "estimate">,
  now: number,
  pricingAt: (customerId: string, time: number) => ReturnType<typeof Metering.pricingAt>,
  usage: ReadonlyMap<string, bigint>,
): Result<bigint> {
  const e = req.estimate;
  if ("credits" in e) return ok(e.credits);
  const at = pricingAt(req.customerId, now);
  if (!at) return fail("no_rate_card", "No rate card version is in force now to rate the estimate.");
  const period = periodStart(now);
  const r = rateEvent(
    at.content as RateCardContent,
    at.overrides,
    { action: req.action, dimensions: e.dimensions, quantities: e.quantities, status: "succeeded" },
    (lineId) => usage.get(usageKey(req.customerId, period, lineId)) ?? 0n,
  );
  return r.ok ? ok(r.value.credits) : r;
}

/**
 * Period usage of these customers' tiered lines at these times (what volume tiers count on);
 * empty when no line is tiered. One query for both paths (one request, or a writer's batch).
 */
export async function tierUsage(
  ex: SqlExecutor,
  tenantId: string,
  customerIds: readonly string[],
  times: readonly number[],
  catalog: Catalog,
  pricing: ReadonlyMap<string, CustomerPricing>,
): Promise<Map<string, bigint>> {
  const usage = new Map<string, bigint>();
  const tiered =
    catalog.tieredLines.size > 0 ||
    [...pricing.values()].some((p) => p.overrideHistory.some((t) => t.lines.some((l) => l.tiers)));
  if (!tiered) return usage;
  const periods = [...new Set(times.map((t) => iso(periodStart(t))))];
  const u = await ex.query(
    `SELECT customer_id, period, line_id, quantity::text AS quantity FROM usage_counters
     WHERE tenant_id = $1 AND customer_id = ANY($2::text[]) AND period = ANY($3::timestamptz[])`,
    [tenantId, [...customerIds], periods],
  );
  for (const r of u.rows)
    usage.set(usageKey(String(r.customer_id), ms(r.period), String(r.line_id)), BigInt(String(r.quantity)));
  return usage;
}

/** A settlement planned under the wallet locks, before anything is written (both paths write this). */
export interface PlannedSettlement {
  readonly hold: Hold;
  readonly outcomes: readonly { outcome: Accepted; fingerprint: string }[];
  readonly usageDeltas: ReadonlyMap<string, bigint>;
  readonly transaction: JournalTransaction | null;
  readonly caps: CapEffect;
}

/**
 * Plans one settlement on the locked chain, the customer's spend caps (null: none; loaded for
 * the hold's period) and the cap room the hold reserved: the one step both paths take.
 */
export function planSettleRequest(
  ctx: Context,
  hold: Hold,
  state: Omit<SettleState, "caps" | "capReservations">,
  caps: CapState | null,
  capReservations: readonly CapReservation[],
  settlement: { readonly events: readonly UsageEvent[]; readonly given: readonly SettleEvent[] },
): Result<PlannedSettlement> {
  const plan = planSettle(
    ctx,
    hold,
    { ...state, ...(caps ? { caps } : {}), capReservations },
    settlement.events,
  );
  if (!plan.ok) return plan;
  return ok({
    hold: plan.value.hold,
    outcomes: plan.value.outcomes.map((outcome, i) => ({
      outcome,
      fingerprint: settlement.given[i]!.fingerprint,
    })),
    usageDeltas: plan.value.usageDeltas,
    transaction: plan.value.transaction,
    caps: plan.value.caps,
  });
}

/** What an answer says of the auto top-up tried: nothing when none was made nor failed. */
const attemptOf = (t: TopUpTry): AutoTopUpAttempt | null =>
  t.outcome === "none" && t.purchases.length === 0
    ? null
    : { outcome: t.outcome, purchaseIds: t.purchases.map((p) => p.id), reason: t.reason };

/** Authorize, holds and their timeouts (a scheduler job of the store). */
export class Holds implements DueJob {
  constructor(
    private readonly store: Store,
    private readonly metering: Metering,
    /** Tries a wallet's auto top-up before denying for lack of credits; null: never tried. */
    readonly commerce: Commerce | null = null,
  ) {
    store.addDueJob(this);
  }

  /**
   * The paying chain of a customer's subject: the wallet that pays first (the subject's member
   * wallet, else the pool) and the customer's pool. `not_found` for an unknown customer, or a
   * subject of another customer.
   */
  async payingChain(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    subjectId: string | null,
  ): Promise<Result<{ walletId: string; poolWalletId: string }>> {
    const { rows } = await ex.query(
      `SELECT w.id, w.member_id, (SELECT s.customer_id FROM subjects s WHERE s.tenant_id = $1 AND s.id = $3) AS subject_customer
       FROM wallets w WHERE w.tenant_id = $1 AND w.customer_id = $2 AND (w.member_id IS NULL OR w.member_id = $3)`,
      [tenantId, customerId, subjectId],
    );
    const pool = rows.find((r) => r.member_id === null);
    if (!pool) return fail("not_found", `No customer ${customerId}.`);
    if (subjectId !== null && String(pool.subject_customer) !== customerId)
      return fail("not_found", `Customer ${customerId} has no subject ${subjectId}.`);
    const own = rows.find((r) => r.member_id !== null);
    return ok({ walletId: String((own ?? pool).id), poolWalletId: String(pool.id) });
  }

  /** The pool's overdraft and policy, read under the lock. */
  async #poolState(
    ex: SqlExecutor,
    tenantId: string,
    poolId: string,
  ): Promise<{ overdraft: bigint; policy: OveragePolicy }> {
    const { rows } = await ex.query(
      `SELECT ${OVERAGE_COLUMNS} FROM wallets WHERE tenant_id = $1 AND id = $2`,
      [tenantId, poolId],
    );
    return poolStateFrom(rows[0]!);
  }

  /**
   * Which of these wallets have an enabled auto top-up that authorize would try before denying
   * for lack of credits (none without commerce). The group-commit writer asks, to leave those
   * requests to {@link authorize}.
   */
  async autoTopUpWallets(
    ex: SqlExecutor,
    tenantId: string,
    walletIds: readonly string[],
  ): Promise<ReadonlySet<string>> {
    return this.commerce ? this.commerce.enabledAutoTopUps(ex, tenantId, walletIds) : new Set();
  }

  async #pricing(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
  ): Promise<{ catalog: Catalog; pricing: Map<string, CustomerPricing> }> {
    const catalog = await this.metering.catalog(ex, tenantId);
    const pricing = await this.metering.customerPricing(ex, tenantId, [customerId], this.store.now(tenantId));
    return { catalog, pricing };
  }

  /** Rates an estimate given in quantities, as an event of the action now would be rated. */
  async #rateEstimate(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    action: string,
    estimate: Estimate,
  ): Promise<Result<bigint>> {
    if ("credits" in estimate) return ok(estimate.credits);
    const now = this.store.now(tenantId);
    const { catalog, pricing } = await this.#pricing(ex, tenantId, customerId);
    const usage = await tierUsage(ex, tenantId, [customerId], [now], catalog, pricing);
    return rateEstimateWith(
      { customerId, action, estimate },
      now,
      (c, t) => Metering.pricingAt(catalog, pricing.get(c), t),
      usage,
    );
  }

  /**
   * Answers allow or deny for an estimate and, when `holdTimeoutSeconds` is given and the answer
   * is allow, places the hold, in the caller's transaction, under the wallet lock: the check
   * and the reservation are one atomic step (never read, decide, then write).
   *
   * Before denying for lack of credits, the chain's auto top-up is tried: this throws
   * {@link TopUpFirst} when a purchase could cover the need, so run it under
   * {@link withTopUpsFirst}, which buys with no transaction open and runs it again with `tried`.
   */
  async authorize(
    ex: SqlExecutor,
    tenantId: string,
    request: AuthorizeRequest,
    tried: TopUpsTried = new TopUpsTried(),
  ): Promise<
    Result<{ authorization: Authorization; hold: HoldRecord | null; autoTopUp: AutoTopUpAttempt | null }>
  > {
    const chain = await this.payingChain(ex, tenantId, request.customerId, request.subjectId);
    if (!chain.ok) return chain;
    const payer = chain.value.walletId;
    const estimate = await this.#rateEstimate(
      ex,
      tenantId,
      request.customerId,
      request.action,
      request.estimate,
    );
    if (!estimate.ok) return estimate;
    const decided = await this.#decide(ex, tenantId, request, payer, estimate.value);
    if (!decided.ok) return decided;
    const a = decided.value;
    // Overage policies: an auto top-up is tried before denying for lack of credits. A purchase
    // is made with no transaction open (TopUpFirst); this run then sees what it bought.
    let autoTopUp: AutoTopUpAttempt | null = null;
    if (this.commerce && wantsTopUp(a.authorization)) {
      const need: TopUpNeed = {
        customerId: request.customerId,
        chain: [payer, ...(a.poolWalletId === payer ? [] : [a.poolWalletId])],
        need: a.authorization.estimate - a.authorization.available,
      };
      const t = await this.commerce.topUpBeforeDeny(ex, tenantId, need, tried);
      if (t === "charge") throw new TopUpFirst([need]);
      autoTopUp = attemptOf(t);
    } else {
      // Allowed after a top-up this operation made: the answer says what it bought.
      const t = tried.forPool(a.poolWalletId);
      if (t) autoTopUp = attemptOf(t);
    }
    await writeCapEffect(ex, this.store, tenantId, a.caps);
    const hold = a.authorization.hold;
    if (hold === null) return ok({ authorization: a.authorization, hold: null, autoTopUp });
    const transactionId = a.transaction?.id ?? null;
    await writeCapReservations(ex, tenantId, hold.id, a.capReservations);
    await ex.query(
      `INSERT INTO holds (tenant_id, id, customer_id, wallet_id, subject_id, action, amount, draws, estimate, status,
         created_at, expires_at, transaction_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12)`,
      [
        tenantId,
        hold.id,
        hold.customerId,
        hold.walletId,
        hold.subjectId,
        hold.action,
        hold.amount.toString(),
        drawsJson(hold.draws),
        estimateJson(request.estimate, hold.amount),
        iso(hold.createdAt),
        iso(hold.expiresAt),
        transactionId,
      ],
    );
    return ok({
      authorization: a.authorization,
      hold: placedHold(hold, transactionId, request.estimate),
      autoTopUp,
    });
  }

  /** One authorization planned under the locks (one decision, and hold when allowed and asked) through the store's write pipeline. */
  async #decide(
    ex: SqlExecutor,
    tenantId: string,
    request: AuthorizeRequest,
    payer: string,
    estimate: bigint,
  ): Promise<Result<PlannedAuthorization>> {
    let answer = null as PlannedAuthorization | null;
    const r = await this.store.mutate(ex, tenantId, payer, [], async (ctx, s) => {
      const state = await this.#holdState(ex, tenantId, s);
      // Spend caps and their counters, read under the pool's lock (caps.ts).
      const caps = await loadCapState(ex, tenantId, [request.customerId], [ctx.now]);
      const planned = planAuthorizeRequest(ctx, state, caps, request, payer, estimate);
      if (!planned.ok) return planned;
      answer = planned.value;
      return ok({ ...EMPTY, transactions: planned.value.transaction ? [planned.value.transaction] : [] });
    });
    if (!r.ok) return r;
    const a = answer;
    invariant(a, "an authorization that succeeded was planned");
    return ok(a);
  }

  async #holdState(
    ex: SqlExecutor,
    tenantId: string,
    s: { wallet: { customerId: string; memberId: string | null; id: string }; sources: HoldState["sources"] },
  ): Promise<HoldState> {
    const poolWalletId = s.sources[s.sources.length - 1]!.walletId;
    const pool = await this.#poolState(ex, tenantId, poolWalletId);
    return { sources: s.sources, poolWalletId, ...pool };
  }

  async #lockedHold(ex: SqlExecutor, tenantId: string, holdId: string): Promise<HoldRecord> {
    const hold = await this.getHold(tenantId, holdId, ex);
    invariant(hold, `hold ${holdId} exists`);
    return hold;
  }

  /**
   * Marks a pending hold resolved: the guarded update hits exactly one row (invariant 6). Returns
   * the row as written (the locked row with the plan's resolution), as the group-commit writer
   * answers, so it is not read back.
   */
  async #resolve(
    ex: SqlExecutor,
    tenantId: string,
    locked: HoldRecord,
    hold: Hold,
    transactionId: string | null,
  ): Promise<HoldRecord> {
    const { rowCount } = await ex.query(
      `UPDATE holds SET status = $3, resolved_at = $4, posted = $5, released = $6, unpaid = $7, resolve_transaction_id = $8
       WHERE tenant_id = $1 AND id = $2 AND status = 'pending'`,
      [
        tenantId,
        hold.id,
        hold.status,
        iso(hold.resolvedAt!),
        hold.posted.toString(),
        hold.released.toString(),
        hold.unpaid.toString(),
        transactionId,
      ],
    );
    invariant(rowCount === 1, `hold ${hold.id} resolved twice`);
    return { ...locked, ...hold, resolveTransactionId: transactionId };
  }

  /**
   * Settles a pending hold with the actual usage: the events draw the hold first, an overrun
   * follows the wallet's policy, the rest is released; the events are recorded like ingested
   * ones, naming the hold. Fails, changing nothing, on a hold that is not pending or has timed
   * out, an event id already used, or an event the rate card cannot rate.
   */
  async settle(
    ex: SqlExecutor,
    tenantId: string,
    holdId: string,
    input: SettleInput,
  ): Promise<Result<HoldRecord>> {
    const found = await this.getHold(tenantId, holdId, ex);
    if (!found) return fail("not_found", `No hold ${holdId}.`);
    const now = this.store.now(tenantId);
    const built = settlementEvents(found, input, now);
    if (!built.ok) return built;
    const { events } = built.value;
    const ids = new Set(events.map((e) => e.id));
    const { catalog, pricing } = await this.#pricing(ex, tenantId, found.customerId);
    let settled = null as { plan: PlannedSettlement; hold: HoldRecord } | null;
    const grantIds = found.draws.flatMap((d) => (d.grantId === null ? [] : [d.grantId]));
    const r = await this.store.mutate(ex, tenantId, found.walletId, grantIds, async (ctx, s) => {
      // Read again under the lock: the first read may predate a concurrent resolution.
      const hold = await this.#lockedHold(ex, tenantId, holdId);
      const pending = checkPending(hold, ctx.now);
      if (!pending.ok) return pending;
      const used = await ex.query(
        "SELECT event_id FROM usage_events WHERE tenant_id = $1 AND event_id = ANY($2::text[]) LIMIT 1",
        [tenantId, [...ids]],
      );
      if (used.rows[0])
        return fail(
          "event_id_reused",
          `Event id "${String(used.rows[0].event_id)}" is already recorded; each event of a settlement needs a new id.`,
          { event_id: String(used.rows[0].event_id) },
        );
      const state = await this.#holdState(ex, tenantId, s);
      // Tier usage under the pool's lock, as the writer reads it: a concurrent charge's counters are seen.
      const usage = await tierUsage(
        ex,
        tenantId,
        [hold.customerId],
        events.map((e) => e.time),
        catalog,
        pricing,
      );
      // Caps count a hold's settlement in the period it was placed in (caps.ts).
      const caps = await loadCapState(ex, tenantId, [hold.customerId], [hold.createdAt]);
      const capReservations = caps ? await capReservationsOf(ex, tenantId, hold.id) : [];
      const plan = planSettleRequest(
        ctx,
        hold,
        {
          ...state,
          grants: s.grants as ReadonlyMap<string, Grant>,
          pricingAt: (customerId, time) => Metering.pricingAt(catalog, pricing.get(customerId), time),
          costAt: (time) => Metering.costAt(catalog, time),
          usage,
        },
        caps,
        capReservations,
        built.value,
      );
      if (!plan.ok) return plan;
      settled = { plan: plan.value, hold };
      return ok({ ...EMPTY, transactions: plan.value.transaction ? [plan.value.transaction] : [] });
    });
    if (!r.ok) return r;
    const done = settled;
    invariant(done, "a settlement that succeeded was planned");
    const record = await this.#resolve(
      ex,
      tenantId,
      done.hold,
      done.plan.hold,
      done.plan.transaction?.id ?? null,
    );
    await insertEvents(ex, tenantId, done.plan.outcomes, this.store.now(tenantId), holdId);
    await writeUsageCounters(ex, tenantId, done.plan.usageDeltas, catalog, pricing);
    await dropCapReservations(ex, this.store, tenantId, holdId, false);
    await writeCapEffect(ex, this.store, tenantId, done.plan.caps);
    return ok(record);
  }

  /** Voids a pending hold: every held credit goes back; a failed run costs nothing. */
  async void(ex: SqlExecutor, tenantId: string, holdId: string): Promise<Result<HoldRecord>> {
    const found = await this.getHold(tenantId, holdId, ex);
    if (!found) return fail("not_found", `No hold ${holdId}.`);
    const r = await this.#release(ex, tenantId, found, "voided");
    if (!r.ok) return r;
    invariant(r.value !== null, "a void that succeeded resolved the hold");
    return ok(r.value);
  }

  /** Releases a hold (void or expiry) under its wallet's lock: the hold as resolved, or null when an expiry finds it already resolved or not yet due. */
  async #release(
    ex: SqlExecutor,
    tenantId: string,
    found: HoldRecord,
    status: "voided" | "expired",
  ): Promise<Result<HoldRecord | null>> {
    let released = null as { locked: HoldRecord; hold: Hold; transactionId: string | null } | null;
    const grantIds = found.draws.flatMap((d) => (d.grantId === null ? [] : [d.grantId]));
    const r = await this.store.mutate(ex, tenantId, found.walletId, grantIds, async (ctx, s) => {
      const hold = await this.#lockedHold(ex, tenantId, found.id);
      if (status === "expired" && (hold.status !== "pending" || ctx.now < hold.expiresAt)) return ok(EMPTY);
      if (status === "voided") {
        const pending = checkPending(hold, ctx.now);
        if (!pending.ok) return pending;
      }
      const plan = planRelease(ctx, hold, s.grants as ReadonlyMap<string, Grant>, status);
      if (!plan.ok) return plan;
      released = { locked: hold, hold: plan.value.hold, transactionId: plan.value.transaction?.id ?? null };
      return ok({ ...EMPTY, transactions: plan.value.transaction ? [plan.value.transaction] : [] });
    });
    if (!r.ok) return r;
    const done = released;
    if (done === null) return ok(null);
    const record = await this.#resolve(ex, tenantId, done.locked, done.hold, done.transactionId);
    // The hold's reserved cap room is free again (caps.ts).
    await dropCapReservations(ex, this.store, tenantId, found.id, true);
    return ok(record);
  }

  async getHold(tenantId: string, id: string, ex: SqlExecutor = this.store.db): Promise<HoldRecord | null> {
    const { rows } = await ex.query(`SELECT ${HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = $2`, [
      tenantId,
      id,
    ]);
    return rows[0] ? toHold(rows[0]) : null;
  }

  /** Holds of a wallet or a customer, newest id last, filtered by status. */
  async listHolds(
    tenantId: string,
    filter: { walletId?: string | null; customerId?: string | null; status?: HoldStatus | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<HoldRecord>> {
    const { rows } = await this.store.db.query(
      `SELECT * FROM holds WHERE tenant_id = $1 AND ($2::text IS NULL OR wallet_id = $2)
       AND ($3::text IS NULL OR customer_id = $3) AND ($4::text IS NULL OR status = $4)
       AND ($5::text IS NULL OR id > $5) ORDER BY id LIMIT $6`,
      [
        tenantId,
        filter.walletId ?? null,
        filter.customerId ?? null,
        filter.status ?? null,
        page.after ?? null,
        page.limit + 1,
      ],
    );
    return paginate(rows.map(toHold), page.limit, (x) => x.id);
  }

  // ---------------------------------------------------------------- the timeout job

  /** The earliest pending hold timeout at or before `upTo` (the test clock stops there). */
  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const { rows } = await this.store.db.query<{ at: unknown }>(
      "SELECT min(expires_at) AS at FROM holds WHERE tenant_id = $1 AND status = 'pending' AND expires_at <= $2",
      [tenantId, iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /**
   * Expires every pending hold past its timeout (each tenant by its own clock), one per
   * transaction under its wallet's lock: exactly once with several instances, and whatever
   * came due while no instance ran is caught up. Returns the holds expired.
   */
  async run(tenantId: string | null): Promise<number> {
    let expired = 0;
    for (;;) {
      const { rows } = await this.store.db.query(
        `SELECT h.* FROM holds h JOIN tenants t ON t.id = h.tenant_id
         WHERE h.status = 'pending' AND h.expires_at <= coalesce(t.clock_at, $1::timestamptz)
           AND ($2::text IS NULL OR h.tenant_id = $2)
         ORDER BY h.expires_at, h.id LIMIT 100`,
        [iso(this.store.now()), tenantId],
      );
      const before = expired;
      for (const row of rows) {
        const hold = toHold(row);
        const tenant = String(row.tenant_id);
        await this.store.clockOf(tenant);
        const r = await this.store.db.transaction((tx) => this.#release(tx, tenant, hold, "expired"));
        if (r.ok && r.value !== null) expired++;
      }
      // Stop at the last page, or when nothing moved (another instance took them, or one is stuck).
      if (rows.length < 100 || expired === before) return expired;
    }
  }
}
