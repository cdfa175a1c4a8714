import {
  type Accepted,
  type CurrencyAmount,
  type Effect,
  formatAmount,
  formatDecimal,
  formatExact,
  type Grant,
  invariant,
  periodStart,
  planUsage,
  QUANTITY_SCALE,
  RATE_SCALE,
  type UsageEvent,
  type UsageOutcome,
  type UsageWallet,
  usageKey,
} from "@drawdown/core";
import { loadCapCounters, loadCaps, writeCapEffect } from "./caps.js";
import { type Commerce, TopUpFirst, type TopUpNeed, TopUpsTried } from "./commerce.js";
import { Gates, gateKey } from "./gates.js";
import { CATALOG_STAMP_COLUMN, type Catalog, type CustomerPricing, Metering, stampOf } from "./metering.js";
import { OVERAGE_COLUMNS, overagePolicyFrom } from "./overage.js";
import { readDrawableGrants, toGrant } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/** An event handed to the writer, with the fingerprint of its normalized body. */
export interface IngestEvent {
  readonly event: UsageEvent;
  readonly fingerprint: string;
}

/** What was recorded for an event: its first result, returned again for duplicates. */
export interface ChargeRecord {
  readonly outcome: "charged" | "zero" | "unpaid";
  readonly credits: bigint;
  readonly drawn: bigint;
  readonly overdraft: bigint;
  readonly unpaid: bigint;
  readonly reason: string | null;
  readonly walletId: string;
  readonly rateCardVersionId: string;
  readonly transactionId: string | null;
}

/** The writer's answer for one event. */
export type IngestResult =
  | { readonly status: "accepted" | "duplicate"; readonly id: string; readonly charge: ChargeRecord }
  | { readonly status: "rejected"; readonly id: string; readonly code: string; readonly message: string };

/** Tuning of the group-commit writer. */
export interface WriterOptions {
  /** Most events in one database transaction. Default 5,000. */
  readonly maxBatchEvents?: number;
  /**
   * Lanes: customers are split among them by a hash of their id, and each lane commits one
   * batch at a time, so two lanes never wait on each other's wallet locks. Default 2 on
   * PostgreSQL; always 1 on PGlite (one connection).
   */
  readonly lanes?: number;
  /** Tries a wallet's auto top-up before charges are recorded unpaid for lack of credits (overage). */
  readonly commerce?: Commerce;
}

/** One event of a batch, with its place among the batch's events. */
interface Entry {
  readonly item: IngestEvent;
  readonly at: number;
}

/**
 * The answers to a batch's parts, filled event by event (some commit later, behind a gate):
 * each part resolves once all its events have results, or rejects with the first failure.
 */
class Answers {
  readonly #results: (IngestResult | undefined)[];
  readonly #left: number[];
  readonly #partOf: number[];
  readonly #start: number[];
  readonly #done: boolean[];

  constructor(private readonly parts: readonly Pending[]) {
    this.#partOf = parts.flatMap((p, k) => p.events.map(() => k));
    this.#results = this.#partOf.map(() => undefined);
    this.#left = parts.map((p) => p.events.length);
    this.#done = parts.map(() => false);
    let at = 0;
    this.#start = parts.map((p) => {
      const start = at;
      at += p.events.length;
      return start;
    });
  }

  set(at: number, result: IngestResult): void {
    const k = this.#partOf[at]!;
    invariant(this.#results[at] === undefined, "an event is answered once");
    this.#results[at] = result;
    if (--this.#left[k]! === 0 && !this.#done[k]) {
      this.#done[k] = true;
      const start = this.#start[k]!;
      this.parts[k]!.resolve(
        this.#results.slice(start, start + this.parts[k]!.events.length) as IngestResult[],
      );
    }
  }

  fail(at: number, error: unknown): void {
    const k = this.#partOf[at]!;
    if (this.#done[k]) return;
    this.#done[k] = true;
    this.parts[k]!.reject(error);
  }
}

/** Part of one caller's events, for one lane. */
interface Pending {
  readonly tenantId: string;
  readonly events: readonly IngestEvent[];
  readonly resolve: (results: IngestResult[]) => void;
  readonly reject: (error: unknown) => void;
}

const RETRYABLE = new Set(["23505", "40001", "40P01"]);

/** A small, stable string hash (FNV-1a) that picks a customer's lane. */
function laneOf(customerId: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < customerId.length; i++) h = Math.imul(h ^ customerId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

/**
 * The group-commit writer of DESIGN.md: requests join a queue; the writer takes what is
 * waiting (up to a maximum), and in ONE transaction locks the affected wallets in id order,
 * drops duplicates, lets the pure core rate and draw every event in arrival order, writes
 * with set-based SQL, commits, and only then answers each caller. A thousand events on one
 * wallet cost one row lock per batch. No timer: while one batch commits, the next gathers.
 */
export class IngestWriter {
  readonly #queues: Pending[][];
  readonly #busy: boolean[];
  readonly #maxBatch: number;
  readonly #commerce: Commerce | null;
  /** Customers whose auto top-up is being bought, and their events waiting for it. */
  readonly #gates = new Gates();

  constructor(
    private readonly store: Store,
    private readonly metering: Metering,
    options: WriterOptions = {},
  ) {
    this.#maxBatch = options.maxBatchEvents ?? 5000;
    this.#commerce = options.commerce ?? null;
    const lanes = store.db.kind === "pglite" ? 1 : Math.max(1, options.lanes ?? 2);
    this.#queues = Array.from({ length: lanes }, () => []);
    this.#busy = this.#queues.map(() => false);
  }

  /**
   * Queues events of one tenant; resolves with one result per event, in order, once every
   * part is durable. Events of one customer always share a lane, so their order holds.
   */
  submit(tenantId: string, events: readonly IngestEvent[]): Promise<IngestResult[]> {
    const lanes = this.#queues.length;
    if (lanes === 1)
      return new Promise((resolve, reject) => this.#enqueue(0, { tenantId, events, resolve, reject }));
    const parts = this.#queues.map(() => ({ events: [] as IngestEvent[], at: [] as number[] }));
    events.forEach((e, i) => {
      const part = parts[laneOf(e.event.customerId, lanes)]!;
      part.events.push(e);
      part.at.push(i);
    });
    return new Promise((resolve, reject) => {
      const results: IngestResult[] = new Array(events.length);
      let left = parts.filter((p) => p.events.length > 0).length;
      let failed = false;
      parts.forEach((part, lane) => {
        if (part.events.length === 0) return;
        this.#enqueue(lane, {
          tenantId,
          events: part.events,
          resolve: (r) => {
            r.forEach((result, k) => {
              results[part.at[k]!] = result;
            });
            if (--left === 0 && !failed) resolve(results);
          },
          reject: (error) => {
            // Other parts may have committed: events are idempotent by id, so a retry is safe.
            if (!failed) reject(error);
            failed = true;
          },
        });
      });
    });
  }

  #enqueue(lane: number, pending: Pending): void {
    this.#queues[lane]!.push(pending);
    this.#kick(lane);
  }

  #kick(lane: number): void {
    const queue = this.#queues[lane]!;
    if (this.#busy[lane] || queue.length === 0) return;
    const batch: Pending[] = [];
    let size = 0;
    while (queue.length > 0 && (batch.length === 0 || size + queue[0]!.events.length <= this.#maxBatch)) {
      const next = queue.shift()!;
      batch.push(next);
      size += next.events.length;
    }
    this.#busy[lane] = true;
    void this.#run(batch).finally(() => {
      this.#busy[lane] = false;
      this.#kick(lane);
    });
  }

  /** Commits a batch: one transaction per tenant, so one tenant's failure is not another's. */
  async #run(batch: Pending[]): Promise<void> {
    for (const tenantId of [...new Set(batch.map((p) => p.tenantId))].sort()) {
      await this.#runTenant(
        tenantId,
        batch.filter((p) => p.tenantId === tenantId),
      );
    }
  }

  async #runTenant(tenantId: string, parts: Pending[]): Promise<void> {
    const answers = new Answers(parts);
    await this.#commit(
      tenantId,
      parts.flatMap((p) => p.events).map((item, at) => ({ item, at })),
      answers,
      null,
      null,
    );
  }

  /**
   * Commits events in one transaction (retried on a stored id or a deadlock) and answers them.
   *
   * Auto top-ups before unpaid charges are bought off the lane: the transaction that wants one
   * (TopUpFirst) rolls back, the events of the customers it names wait behind their customer's
   * gate, which buys with no transaction open and then commits them, and the rest commit at
   * once. While a customer's gate is open, its new events queue behind it in arrival order, so
   * they see the credits bought instead of being recorded unpaid meanwhile. `holder`: the gate
   * this call runs under (its customer's events are not deferred again); `tried`: the top-ups
   * its gate bought.
   */
  async #commit(
    tenantId: string,
    entries: readonly Entry[],
    answers: Answers,
    holder: string | null,
    tried: TopUpsTried | null,
  ): Promise<void> {
    let now = this.#deferGated(tenantId, entries, answers, holder);
    for (let attempt = 1; now.length > 0; attempt++) {
      const items = now.map((e) => e.item);
      try {
        const results = await this.store.db.transaction((tx) =>
          this.#process(tx, tenantId, items, attempt > 1, tried ?? new TopUpsTried()),
        );
        results.forEach((r, k) => {
          answers.set(now[k]!.at, r);
        });
        return;
      } catch (error) {
        if (error instanceof TopUpFirst && this.#commerce && tried === null) {
          const commerce = this.#commerce;
          for (const need of error.needs) {
            const key = gateKey(tenantId, need.customerId);
            const waiting = now.filter((e) => e.item.event.customerId === need.customerId);
            this.#gates.after(key, async () => {
              // What the gate bought is this run's answer: it tries nothing more itself.
              const bought = new TopUpsTried();
              try {
                bought.record(need, await commerce.topUpOutside(tenantId, need));
                bought.finish();
              } catch (failure) {
                for (const e of waiting) answers.fail(e.at, failure);
                return;
              }
              await this.#commit(tenantId, waiting, answers, key, bought);
            });
          }
          const named = new Set(error.needs.map((n) => n.customerId));
          now = now.filter((e) => !named.has(e.item.event.customerId));
          attempt = 0;
          continue;
        }
        const code = (error as { code?: string }).code;
        // An id already stored (a retry, or a concurrent writer), or a deadlock: retry, looking ids up.
        if (code !== undefined && RETRYABLE.has(code) && attempt < 5) continue;
        for (const e of now) answers.fail(e.at, error);
        return;
      }
    }
  }

  /** Queues the events of customers whose gate is open behind it; returns the others. */
  #deferGated(tenantId: string, entries: readonly Entry[], answers: Answers, holder: string | null): Entry[] {
    if (this.#gates.size === 0) return [...entries];
    const now: Entry[] = [];
    const later = new Map<string, Entry[]>();
    for (const e of entries) {
      const key = gateKey(tenantId, e.item.event.customerId);
      if (key === holder || !this.#gates.has(key)) now.push(e);
      else {
        const group = later.get(key);
        if (group) group.push(e);
        else later.set(key, [e]);
      }
    }
    for (const [key, waiting] of later)
      this.#gates.after(key, () => this.#commit(tenantId, waiting, answers, key, null));
    return now;
  }

  /**
   * One tenant's events in one transaction; returns a result per event, in order.
   *
   * Optimistic about duplicates: a first attempt does not look events up, and the primary key
   * refuses any id already stored (the transaction then rolls back, nothing is acknowledged, and
   * the retry looks every id up). Retries are rare; a lookup per batch would not be.
   */
  async #process(
    ex: SqlExecutor,
    tenantId: string,
    items: readonly IngestEvent[],
    lookUp: boolean,
    tried: TopUpsTried,
  ): Promise<IngestResult[]> {
    const results: (IngestResult | null)[] = items.map(() => null);
    // Duplicates inside the batch: the first occurrence is processed, later ones echo it.
    const first = new Map<string, number>();
    const echoes: number[] = [];
    items.forEach((item, i) => {
      if (first.has(item.event.id)) echoes.push(i);
      else first.set(item.event.id, i);
    });

    const customerIds = [...new Set(items.map((i) => i.event.customerId))].sort();
    const subjectIds = [
      ...new Set(items.flatMap((i) => (i.event.subjectId === null ? [] : [i.event.subjectId]))),
    ].sort();
    // Round 1, pipelined (SqlExecutor): every wallet the batch may draw from is locked in id
    // order (the order every writer uses); the reads sent with it run once it is granted.
    const walletScope =
      "tenant_id = $1 AND customer_id = ANY($2::text[]) AND (member_id IS NULL OR member_id = ANY($3::text[]))";
    const lockedQ = ex.query(
      `SELECT id, customer_id, member_id, ${OVERAGE_COLUMNS}, ${CATALOG_STAMP_COLUMN}
       FROM wallets WHERE ${walletScope} ORDER BY id FOR UPDATE`,
      [tenantId, customerIds, subjectIds],
    );
    const storedQ = lookUp ? storedEvents(ex, tenantId, [...first.keys()]) : null;
    const subjectsQ =
      subjectIds.length > 0
        ? ex.query(
            "SELECT id, customer_id, kind FROM subjects WHERE tenant_id = $1 AND id = ANY($2::text[])",
            [tenantId, subjectIds],
          )
        : null;
    const now = this.store.now(tenantId);
    const grantsQ = readDrawableGrants(ex, walletScope, [tenantId, customerIds, subjectIds], now);
    const pricingQ = this.metering.customerPricing(ex, tenantId, customerIds, now);
    const capsQ = loadCaps(ex, tenantId, customerIds);
    const [locked, stored, subjectRows, grantRows, pricing, capList] = await Promise.all([
      lockedQ,
      storedQ ?? new Map<string, Record<string, unknown>>(),
      subjectsQ,
      grantsQ,
      pricingQ,
      capsQ,
    ]);
    const lockedIds = new Set(locked.rows.map((r) => String(r.id)));
    // A wallet created after the lock statement's snapshot is not locked: its grants are not ours.
    const grantsOf = (rows: readonly Row[]) =>
      new Map<string, Grant>(
        rows.flatMap((r) =>
          lockedIds.has(String(r.wallet_id)) ? [[String(r.id), toGrant(r)] as const] : [],
        ),
      );
    const grants = grantsOf(grantRows.rows);
    const fresh: number[] = [];
    for (const i of first.values()) {
      const item = items[i]!;
      const row = stored.get(item.event.id);
      if (!row) fresh.push(i);
      else if (row.fingerprint !== item.fingerprint) results[i] = reused(item.event.id);
      else results[i] = { status: "duplicate", id: item.event.id, charge: chargeFromRow(row) };
    }

    if (fresh.length > 0) {
      const wallets = new Map<string, UsageWallet>();
      const poolWallet = new Map<string, string>();
      const memberWallet = new Map<string, string>();
      for (const r of locked.rows) {
        const w: UsageWallet = {
          id: String(r.id),
          customerId: String(r.customer_id),
          memberId: r.member_id === null ? null : String(r.member_id),
          overdraft: BigInt(String(r.overdraft)),
          policy: overagePolicyFrom(r),
        };
        wallets.set(w.id, w);
        if (w.memberId === null) poolWallet.set(w.customerId, w.id);
        else memberWallet.set(w.memberId, w.id);
      }
      const subjects = new Map<string, { customerId: string; kind: string }>();
      for (const r of subjectRows?.rows ?? [])
        subjects.set(String(r.id), { customerId: String(r.customer_id), kind: String(r.kind) });

      // Round 2, only when needed: the catalog when something was published, the period usage
      // of tiered lines, the caps' counters (spend caps, read under the pool locks; caps.ts).
      const catalog = await this.metering.catalog(ex, tenantId, stampOf(locked.rows));
      const usage = new Map<string, bigint>();
      const usageQ =
        tieredLineIds(catalog, pricing).size > 0
          ? ex.query(
              `SELECT customer_id, period, line_id, quantity::text AS quantity FROM usage_counters
               WHERE tenant_id = $1 AND customer_id = ANY($2::text[]) AND period = ANY($3::timestamptz[])`,
              [
                tenantId,
                customerIds,
                [...new Set(fresh.map((i) => new Date(periodStart(items[i]!.event.time)).toISOString()))],
              ],
            )
          : null;
      const capsStateQ = capList.length > 0 ? loadCapCounters(ex, tenantId, capList, [now]) : null;
      const [u, caps] = await Promise.all([usageQ, capsStateQ]);
      for (const r of u?.rows ?? []) {
        const period = r.period instanceof Date ? r.period.getTime() : Date.parse(String(r.period));
        usage.set(usageKey(String(r.customer_id), period, String(r.line_id)), BigInt(String(r.quantity)));
      }
      const planBatch = (loaded: Map<string, Grant>) =>
        planUsage(
          { now, newId: this.store.newId },
          {
            wallets,
            grants: loaded,
            poolWallet,
            memberWallet,
            subjects,
            pricingAt: (customerId, time) => Metering.pricingAt(catalog, pricing.get(customerId), time),
            costAt: (time) => Metering.costAt(catalog, time),
            usage,
            ...(caps ? { caps } : {}),
          },
          fresh.map((i) => items[i]!.event),
        );
      const plan = planBatch(grants);
      // Overage: an auto top-up is tried before charges are recorded unpaid for lack of credits
      // (TopUpFirst: the batch runs again after buying, with the credits bought).
      if (this.#commerce) await topUpUnpaid(ex, this.#commerce, tenantId, plan.outcomes, poolWallet, tried);
      const accepted: { outcome: Accepted; fingerprint: string }[] = [];
      const refused: number[] = [];
      plan.outcomes.forEach((o, k) => {
        const i = fresh[k]!;
        results[i] = resultOf(o);
        if (o.kind === "accepted") accepted.push({ outcome: o, fingerprint: items[i]!.fingerprint });
        else refused.push(i);
      });
      // A refused event may be a late retry of one already recorded (say, past the grace
      // window): its answer is still its first result.
      if (!lookUp && refused.length > 0) {
        const found = await storedEvents(
          ex,
          tenantId,
          refused.map((i) => items[i]!.event.id),
        );
        for (const i of refused) {
          const row = found.get(items[i]!.event.id);
          if (!row) continue;
          results[i] =
            row.fingerprint === items[i]!.fingerprint
              ? { status: "duplicate", id: items[i]!.event.id, charge: chargeFromRow(row) }
              : reused(items[i]!.event.id);
        }
      }
      const effect: Effect = {
        transactions: plan.transactions,
        newGrants: [],
        statusChanges: plan.expired.map((grantId) => ({ grantId, status: "expired" as const })),
        grantChanges: [],
      };
      // The writes go out together (pipelined), the journal first.
      await Promise.all([
        this.store.writeEffect(ex, tenantId, "", effect),
        insertEvents(ex, tenantId, accepted, now),
        writeUsageCounters(ex, tenantId, plan.usageDeltas, catalog, pricing),
        writeCapEffect(ex, this.store, tenantId, plan.caps),
      ]);
    }

    for (const i of echoes) {
      const item = items[i]!;
      const origin = results[first.get(item.event.id)!];
      invariant(origin, "the first occurrence of an event has a result");
      if (items[first.get(item.event.id)!]!.fingerprint !== item.fingerprint)
        results[i] = reused(item.event.id);
      else
        results[i] =
          origin.status === "rejected"
            ? origin
            : { status: "duplicate", id: item.event.id, charge: origin.charge };
    }
    return results.map((r) => {
      invariant(r, "every event has a result");
      return r;
    });
  }
}

/**
 * The auto top-up tried before usage charges are recorded unpaid for lack of credits: per
 * customer, the paying wallets then the pool, for what the unpaid charges need. Throws
 * {@link TopUpFirst} with every chain a purchase could cover (see {@link withTopUpsFirst}).
 */
async function topUpUnpaid(
  ex: SqlExecutor,
  commerce: Commerce,
  tenantId: string,
  outcomes: readonly UsageOutcome[],
  poolWallet: ReadonlyMap<string, string>,
  tried: TopUpsTried,
): Promise<void> {
  const needs = new Map<string, { customerId: string; payers: Set<string>; need: bigint }>();
  for (const o of outcomes) {
    if (o.kind !== "accepted" || o.unpaid === 0n || o.reason !== "insufficient_credits") continue;
    const pool = poolWallet.get(o.event.customerId)!;
    const n = needs.get(pool) ?? { customerId: o.event.customerId, payers: new Set<string>(), need: 0n };
    n.payers.add(o.walletId);
    n.need += o.unpaid;
    needs.set(pool, n);
  }
  if (needs.size === 0) return;
  // Customers out of credits keep sending events: one query finds the few chains with an
  // auto top-up, instead of a lookup per wallet for every such customer in every batch.
  const chains: TopUpNeed[] = [...needs].map(([pool, n]) => ({
    customerId: n.customerId,
    // The pool last: it names the chain (TopUpsTried).
    chain: [...[...n.payers].filter((w) => w !== pool), pool],
    need: n.need,
  }));
  const enabled = await commerce.enabledAutoTopUps(
    ex,
    tenantId,
    chains.flatMap((c) => c.chain),
  );
  const charge: TopUpNeed[] = [];
  for (const need of chains.sort((a, b) => (a.chain.at(-1)! < b.chain.at(-1)! ? -1 : 1))) {
    if (!need.chain.some((w) => enabled.has(w))) continue;
    if ((await commerce.topUpBeforeDeny(ex, tenantId, need, tried)) === "charge") charge.push(need);
  }
  if (charge.length > 0) throw new TopUpFirst(charge);
}

/** The stored rows of these event ids (what a duplicate answers with), by event id. */
async function storedEvents(
  ex: SqlExecutor,
  tenantId: string,
  eventIds: readonly string[],
): Promise<Map<string, Record<string, unknown>>> {
  const { rows } = await ex.query(
    `SELECT event_id, fingerprint, outcome, credits::text AS credits, unpaid::text AS unpaid, detail
     FROM usage_events WHERE tenant_id = $1 AND event_id = ANY($2::text[])`,
    [tenantId, [...eventIds]],
  );
  return new Map(rows.map((r) => [String(r.event_id), r]));
}

const reused = (id: string): IngestResult => ({
  status: "rejected",
  id,
  code: "event_id_reused",
  message: `Event id "${id}" was already used with a different body; a new event needs a new id.`,
});

function outcomeKind(o: Accepted): ChargeRecord["outcome"] {
  if (o.unpaid > 0n) return "unpaid";
  return o.rating.credits === 0n ? "zero" : "charged";
}

function resultOf(o: UsageOutcome): IngestResult {
  if (o.kind === "rejected") return { status: "rejected", id: o.event.id, code: o.code, message: o.message };
  return {
    status: "accepted",
    id: o.event.id,
    charge: {
      outcome: outcomeKind(o),
      credits: o.rating.credits,
      drawn: o.drawn,
      overdraft: o.overdraft,
      unpaid: o.unpaid,
      reason: o.reason,
      walletId: o.walletId,
      rateCardVersionId: o.versionId,
      transactionId: o.transactionId,
    },
  };
}

function chargeFromRow(r: Record<string, unknown>): ChargeRecord {
  const d = (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as EventDetail;
  return {
    outcome: r.outcome as ChargeRecord["outcome"],
    credits: BigInt(String(r.credits)),
    drawn: BigInt(d.drawn),
    overdraft: BigInt(d.overdraft),
    unpaid: BigInt(String(r.unpaid)),
    reason: d.reason,
    walletId: d.wallet_id,
    rateCardVersionId: d.rate_card_version_id,
    transactionId: d.transaction_id,
  };
}

/** What an event row keeps besides its reporting columns (amounts in units, as text). */
export interface EventDetail {
  readonly subject_id: string | null;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly quantities: Readonly<Record<string, string>>;
  readonly status: "succeeded" | "failed";
  readonly reason: string | null;
  readonly wallet_id: string;
  readonly rate_card_version_id: string;
  readonly transaction_id: string | null;
  readonly drawn: string;
  readonly overdraft: string;
  readonly explanation: Record<string, unknown>;
  readonly cost_currency: string | null;
  readonly cost_version_id: string | null;
  readonly reported_cost: boolean;
  readonly revenue_currency: string | null;
  readonly received_at: string;
}

/** What an accepted event's row keeps in `detail`; stored as {@link eventDetailJson}. */
export function eventDetail(o: Accepted, receivedAt: string): EventDetail {
  const e = o.event;
  // fromEntries defines own properties, so any name (even "__proto__") is kept as a key.
  const quantities: Record<string, string> = Object.fromEntries(
    Object.entries(e.quantities).map(([k, v]) => [k, formatDecimal(v, QUANTITY_SCALE)]),
  );
  return {
    subject_id: e.subjectId,
    dimensions: e.dimensions,
    quantities,
    status: e.status,
    reason: o.reason,
    wallet_id: o.walletId,
    rate_card_version_id: o.versionId,
    transaction_id: o.transactionId,
    drawn: o.drawn.toString(),
    overdraft: o.overdraft.toString(),
    explanation: explain(o),
    cost_currency: o.costCurrency,
    cost_version_id: o.costVersionId,
    reported_cost: e.reportedCost !== null,
    revenue_currency: o.revenueCurrency,
    received_at: receivedAt,
  };
}

/** A string JSON.stringify writes as it is, between quotes. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what JSON escapes.
const PLAIN_JSON = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;
const jsonString = (s: string): string => (PLAIN_JSON.test(s) ? `"${s}"` : JSON.stringify(s));
const jsonStringOrNull = (s: string | null): string => (s === null ? "null" : jsonString(s));

/**
 * `JSON.stringify(eventDetail(o, receivedAt))`, character for character (a property test
 * holds them equal), written without building the object and its explanation: on the ingest
 * path that was a tenth of the writer's CPU. Parts are joined once, so the text is flat.
 */
export function eventDetailJson(o: Accepted, receivedAt: string): string {
  const e = o.event;
  const r = o.rating;
  const parts: string[] = ['{"subject_id":', jsonStringOrNull(e.subjectId), ',"dimensions":{'];
  let first = true;
  for (const k of Object.keys(e.dimensions)) {
    parts.push(first ? "" : ",", jsonString(k), ":", jsonString(e.dimensions[k]!));
    first = false;
  }
  parts.push('},"quantities":{');
  first = true;
  for (const k of Object.keys(e.quantities)) {
    parts.push(first ? "" : ",", jsonString(k), ':"', formatDecimal(e.quantities[k]!, QUANTITY_SCALE), '"');
    first = false;
  }
  parts.push(
    '},"status":',
    jsonString(e.status),
    ',"reason":',
    jsonStringOrNull(o.reason),
    ',"wallet_id":',
    jsonString(o.walletId),
    ',"rate_card_version_id":',
    jsonString(o.versionId),
    ',"transaction_id":',
    jsonStringOrNull(o.transactionId),
    ',"drawn":"',
    o.drawn.toString(),
    '","overdraft":"',
    o.overdraft.toString(),
    '","explanation":{"multiplier":"',
    formatDecimal(r.multiplier, r.multiplierScale),
    '","lines":[',
  );
  for (let i = 0; i < r.lines.length; i++) {
    const l = r.lines[i]!;
    parts.push(
      i > 0 ? ',{"line_id":' : '{"line_id":',
      jsonString(l.lineId),
      ',"quantity":',
      jsonString(l.quantity),
      ',"amount":"',
      formatDecimal(l.amount, QUANTITY_SCALE),
      '","per":"',
      perText(l.perExponent),
      '","pieces":[',
    );
    for (let j = 0; j < l.pieces.length; j++) {
      const p = l.pieces[j]!;
      parts.push(
        j > 0 ? ',{"quantity":"' : '{"quantity":"',
        formatDecimal(p.quantity, QUANTITY_SCALE),
        '","rate":"',
        formatDecimal(p.rate, RATE_SCALE),
        '"}',
      );
    }
    parts.push(
      '],"credits":"',
      formatExact(l.exact, r.exactScale),
      '","minimum_applied":',
      String(l.minimumApplied),
      ',"free":',
      String(l.free),
      ',"override":',
      String(l.override),
      "}",
    );
  }
  parts.push(
    '],"override_source":',
    jsonStringOrNull(o.overrideSource),
    ',"rounded":"',
    formatAmount(r.credits),
    '","draws":[',
  );
  for (let i = 0; i < o.draws.length; i++) {
    const d = o.draws[i]!;
    parts.push(
      i > 0 ? ',{"grant_id":' : '{"grant_id":',
      jsonString(d.grantId),
      ',"wallet_id":',
      jsonString(d.walletId),
      ',"credits":"',
      formatAmount(d.amount),
      '"}',
    );
  }
  parts.push(
    ']},"cost_currency":',
    jsonStringOrNull(o.costCurrency),
    ',"cost_version_id":',
    jsonStringOrNull(o.costVersionId),
    ',"reported_cost":',
    String(e.reportedCost !== null),
    ',"revenue_currency":',
    jsonStringOrNull(o.revenueCurrency),
    ',"received_at":',
    jsonString(receivedAt),
    "}",
  );
  return parts.join("");
}

/** `per` as text ("1000" for 3): the same few exponents on every event, computed once each. */
const PER_TEXT: string[] = [];
function perText(exponent: number): string {
  let t = PER_TEXT[exponent];
  if (t === undefined) {
    t = (10n ** BigInt(exponent)).toString();
    PER_TEXT[exponent] = t;
  }
  return t;
}

/** The stored explanation of a charge: every line with its quantity, rates, multiplier and exact credits, and the draws. */
export function explain(o: Accepted): Record<string, unknown> {
  const r = o.rating;
  return {
    multiplier: formatDecimal(r.multiplier, r.multiplierScale),
    lines: r.lines.map((l) => ({
      line_id: l.lineId,
      quantity: l.quantity,
      amount: formatDecimal(l.amount, QUANTITY_SCALE),
      per: perText(l.perExponent),
      pieces: l.pieces.map((p) => ({
        quantity: formatDecimal(p.quantity, QUANTITY_SCALE),
        rate: formatDecimal(p.rate, RATE_SCALE),
      })),
      credits: formatExact(l.exact, r.exactScale),
      minimum_applied: l.minimumApplied,
      free: l.free,
      override: l.override,
    })),
    override_source: o.overrideSource,
    rounded: formatAmount(r.credits),
    draws: o.draws.map((d) => ({
      grant_id: d.grantId,
      wallet_id: d.walletId,
      credits: formatAmount(d.amount),
    })),
  };
}

/** The ids of the tiered lines: the catalog's, and the batch customers' tiered overrides (any loaded window's). */
export function tieredLineIds(
  catalog: Catalog,
  pricing: ReadonlyMap<string, CustomerPricing>,
): ReadonlySet<string> {
  let ids: Set<string> | null = null;
  for (const p of pricing.values())
    for (const t of p.overrideHistory)
      for (const l of t.lines)
        if (l.tiers && !catalog.tieredLines.has(l.id)) {
          ids ??= new Set(catalog.tieredLines);
          ids.add(l.id);
        }
  return ids ?? catalog.tieredLines;
}

/**
 * Adds period usage of tiered lines (what volume tiers count on) to the counters; usage of
 * flat lines is not counted. The tiered ids are gathered once: a batch has a delta per
 * customer and line, and a pricing per customer.
 */
export async function writeUsageCounters(
  ex: SqlExecutor,
  tenantId: string,
  usageDeltas: ReadonlyMap<string, bigint>,
  catalog: Catalog,
  pricing: ReadonlyMap<string, CustomerPricing>,
): Promise<void> {
  const tieredIds = tieredLineIds(catalog, pricing);
  if (tieredIds.size === 0) return;
  const tiered = [...usageDeltas].filter(([key]) => tieredIds.has(key.slice(key.lastIndexOf("|") + 1)));
  if (tiered.length === 0) return;
  const parts = tiered.map(([key, delta]) => ({ key: key.split("|"), delta }));
  await ex.query(
    `INSERT INTO usage_counters (tenant_id, customer_id, period, line_id, quantity)
     SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::numeric[])
     ON CONFLICT (tenant_id, customer_id, period, line_id) DO UPDATE SET quantity = usage_counters.quantity + EXCLUDED.quantity`,
    [
      tenantId,
      parts.map((p) => p.key[0]!),
      parts.map((p) => new Date(Number(p.key[1])).toISOString()),
      parts.map((p) => p.key[2]!),
      parts.map((p) => p.delta.toString()),
    ],
  );
}

const EVENT_COLUMNS = [
  "tenant_id",
  "event_id",
  "fingerprint",
  "customer_id",
  "action",
  "model",
  "time",
  "run_id",
  "outcome",
  "credits",
  "charged",
  "unpaid",
  "cost",
  "revenue",
  "detail",
  "hold_id",
  "revenue_currency",
  "cost_currency",
  "revenue_extra",
] as const;

/**
 * An event row's revenue currency as a report sums it (the row aliased `e`): the column, or the
 * detail of a row recorded before migration 22; null when it brought no revenue.
 */
export const EVENT_REVENUE_CURRENCY =
  "CASE WHEN e.revenue = 0 THEN NULL ELSE coalesce(e.revenue_currency, e.detail::json->>'revenue_currency') END";
/** The same for the event's cost: null when unknown or zero. */
export const EVENT_COST_CURRENCY =
  "CASE WHEN coalesce(e.cost, 0) = 0 THEN NULL ELSE coalesce(e.cost_currency, e.detail::json->>'cost_currency') END";

/**
 * Writes the accepted events with COPY: one round trip, no per-row statement. Events posted
 * by settling a hold name it (`holdId`, or each item's own when several holds settle at once).
 */
export async function insertEvents(
  ex: SqlExecutor,
  tenantId: string,
  accepted: readonly { outcome: Accepted; fingerprint: string; holdId?: string }[],
  now: number,
  holdId: string | null = null,
): Promise<void> {
  if (accepted.length === 0) return;
  const receivedAt = new Date(now).toISOString();
  // Events of a batch mostly share their time (sent without one, they take the clock's).
  let lastTime = Number.NaN;
  let lastIso = "";
  const timeIso = (time: number): string => {
    if (time !== lastTime) {
      lastTime = time;
      lastIso = new Date(time).toISOString();
    }
    return lastIso;
  };
  const rows = accepted.map(({ outcome: o, fingerprint, holdId: own }) => {
    const e = o.event;
    return [
      tenantId,
      e.id,
      fingerprint,
      e.customerId,
      e.action,
      e.dimensions.model ?? null,
      timeIso(e.time),
      e.runId,
      outcomeKind(o),
      o.rating.credits.toString(),
      (o.drawn + o.overdraft).toString(),
      o.unpaid.toString(),
      o.cost === null ? null : o.cost.toString(),
      o.revenue.toString(),
      eventDetailJson(o, receivedAt),
      own ?? holdId,
      o.revenueCurrency,
      o.costCurrency,
      o.extraRevenue.length === 0 ? null : extraRevenueJson(o.extraRevenue),
    ];
  });
  if (rows.length > SMALL_INSERT_ROWS) {
    await ex.copyFrom("usage_events", EVENT_COLUMNS, rows);
    return;
  }
  // A few rows (a settlement, a small writer batch): one INSERT is one round trip; COPY takes two.
  await ex.query(
    `INSERT INTO usage_events (${EVENT_COLUMNS.join(", ")})
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
       $8::text[], $9::text[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[], $14::numeric[],
       $15::text[], $16::text[], $17::text[], $18::text[], $19::text[])`,
    EVENT_COLUMNS.map((_, c) => rows.map((r) => r[c] ?? null)),
  );
}

/** An event's revenue in currencies after its first, as the `revenue_extra` column keeps it. */
export const extraRevenueJson = (extra: readonly CurrencyAmount[]): string =>
  JSON.stringify(extra.map((m) => ({ currency: m.currency, amount: m.amount.toString() })));

/** The `revenue_extra` column read back (null or JSON). */
export function extraRevenueFrom(v: unknown): CurrencyAmount[] {
  if (v === null || v === undefined) return [];
  return (JSON.parse(String(v)) as { currency: string; amount: string }[]).map((m) => ({
    currency: m.currency,
    amount: BigInt(m.amount),
  }));
}

/** Event rows up to this many are inserted with one statement, more with COPY. */
const SMALL_INSERT_ROWS = 64;
