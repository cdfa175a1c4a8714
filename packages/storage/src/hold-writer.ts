import {
  type Accepted,
  type Authorization,
  applyEffect,
  type CapEffect,
  type CapReservation,
  type CapState,
  checkPending,
  combine,
  combineCapEffects,
  type Effect,
  expireDue,
  fail,
  type Grant,
  type Hold,
  type JournalTransaction,
  type OveragePolicy,
  ok,
  overdraftDeltas,
  type Result,
  type UsageEvent,
  withCapEffect,
} from "@drawdown/core";
import {
  capReservationsOfHolds,
  dropSettledReservations,
  loadCapCounters,
  loadCaps,
  writeCapEffect,
  writeCapReservations,
} from "./caps.js";
import { withTopUpsFirst } from "./commerce.js";
import { Gates, gateKey } from "./gates.js";
import {
  type AuthorizeRequest,
  type AutoTopUpAttempt,
  drawsJson,
  estimateJson,
  HOLD_COLUMNS,
  type HoldRecord,
  type Holds,
  placedHold,
  planAuthorizeRequest,
  planSettleRequest,
  poolStateFrom,
  rateEstimateWith,
  type SettleEvent,
  type SettleInput,
  settlementEvents,
  tierUsage,
  toHold,
  wantsTopUp,
} from "./holds.js";
import { insertEvents, writeUsageCounters } from "./ingest.js";
import { CATALOG_STAMP_COLUMN, Metering, stampOf } from "./metering.js";
import { OVERAGE_COLUMNS } from "./overage.js";
import { GRANT_COLUMNS, readDrawableGrants, toGrant } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/**
 * An `Idempotency-Key` claimed in the batch's transaction: the key, the request's fingerprint,
 * and how a result is recorded (the reply the HTTP layer would send), so the key and the effect
 * commit together (invariant 5).
 */
export interface IdempotencyClaim {
  readonly key: string;
  readonly fingerprint: string;
  readonly outcome: (result: Result<unknown>) => unknown;
}

/** What the writer answers: a fresh result, the first outcome of a replayed key, or a key reused with another request. */
export type WriterAnswer<T> =
  | { readonly kind: "fresh"; readonly result: Result<T> }
  | { readonly kind: "replayed"; readonly outcome: unknown }
  | { readonly kind: "conflict" };

/** What authorize answers. */
export interface AuthorizeOutcome {
  readonly authorization: Authorization;
  readonly hold: HoldRecord | null;
  /** The auto top-up tried before a denial for lack of credits (see {@link Holds.authorize}). */
  readonly autoTopUp: AutoTopUpAttempt | null;
}

interface OpBase {
  readonly tenantId: string;
  /** The customer: picks the lane, so one customer's requests keep their order. */
  readonly customerId: string;
  readonly idem: IdempotencyClaim | null;
  readonly resolve: (answer: WriterAnswer<unknown>) => void;
  readonly reject: (error: unknown) => void;
}
interface AuthorizeOp extends OpBase {
  readonly kind: "authorize";
  readonly request: AuthorizeRequest;
}
interface SettleOp extends OpBase {
  readonly kind: "settle";
  readonly holdId: string;
  /** The hold's wallet (a hold never changes wallet): what to lock. */
  readonly walletId: string;
  readonly input: SettleInput;
}
type Op = AuthorizeOp | SettleOp;

/** The immutable facts of a hold. */
export type KnownHold = Pick<HoldRecord, "id" | "customerId" | "walletId" | "subjectId" | "action">;

/** Holds remembered by {@link HoldWriter.known}, oldest forgotten first. */
const MAX_KNOWN = 100_000;

/** Tuning of the authorize/settle writer. */
export interface HoldWriterOptions {
  /** Most requests in one transaction. Default 256. */
  readonly maxBatch?: number;
  /**
   * Lanes (customers split by a hash of their id), each committing one batch at a time. Default 1:
   * on two cores one lane made larger batches than four (0.16 against 0.42 commits per cycle) and
   * cost about half the PostgreSQL CPU per request at the same throughput (docs/benchmarks.md).
   * Always 1 on PGlite.
   */
  readonly lanes?: number;
  /**
   * False: every request runs alone through {@link Holds.authorize} / {@link Holds.settle} in a
   * transaction of its own with its key (the one-request path, as before group commit). For a
   * feature the batch planner does not carry yet; default true.
   */
  readonly batch?: boolean;
}

const RETRYABLE = new Set(["23505", "40001", "40P01"]);
/** A request the batch leaves to the one-request path, run after the batch commits (an auto top-up to try). */
const DEFERRED = Symbol("deferred");
const EMPTY: Effect = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };
const iso = (t: number): string => new Date(t).toISOString();

function laneOf(customerId: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < customerId.length; i++) h = Math.imul(h ^ customerId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

/** A statement over `ids` (`$1` the tenant, `$2` the ids), or none when there are no ids. */
const whereIds = (ex: SqlExecutor, text: string, tenantId: string, ids: readonly string[]) =>
  ids.length > 0 ? ex.query(text, [tenantId, ids]) : null;

/**
 * Group commit for authorize and settle (DESIGN.md, Architecture): requests join a queue; a
 * lane's writer takes what is waiting and runs ONE transaction for it: claims the idempotency
 * keys, locks every wallet the batch touches (and their pools) in id order in one statement,
 * loads their grants, holds, pricing and used event ids once, lets the core plan each request
 * in arrival order on the state the earlier ones left (so the check and the debit stay one
 * atomic step, invariant 4, and a hold resolves once, invariant 6), writes everything with
 * set-based SQL, records each key's outcome, commits, and only then answers each caller.
 *
 * Semantics are those of {@link Holds.authorize} and {@link Holds.settle} run one after the
 * other in arrival order; a batch that fails as a whole (a deadlock, a concurrent writer's
 * event id) is retried, then each request runs alone through those methods. Whatever those
 * methods load under the wallet lock is loaded here too (the state below), and each request is
 * planned by the same step they take (`planAuthorizeRequest`, `planSettleRequest`: overage
 * policy, throttle, spend caps threaded through the batch). A denial an auto top-up may cover
 * (a purchase) is left, with its customer's requests after it, to {@link Holds.authorize} once
 * the batch commits: behind the customer's gate, off the lane, the purchase charged with no
 * transaction open.
 */
export class HoldWriter {
  readonly #queues: Op[][];
  readonly #busy: boolean[];
  readonly #maxBatch: number;
  readonly #batch: boolean;
  /** What never changes about the holds this writer placed (customer, wallet, subject, action): see {@link known}. */
  readonly #placed = new Map<string, KnownHold>();
  /** Customers whose auto top-up is being bought, and their requests waiting for it. */
  readonly #gates = new Gates();

  constructor(
    private readonly store: Store,
    private readonly holds: Holds,
    private readonly metering: Metering,
    options: HoldWriterOptions = {},
  ) {
    this.#maxBatch = Math.max(1, options.maxBatch ?? 256);
    this.#batch = options.batch ?? true;
    const lanes = store.db.kind === "pglite" ? 1 : Math.max(1, options.lanes ?? 1);
    this.#queues = Array.from({ length: lanes }, () => []);
    this.#busy = this.#queues.map(() => false);
  }

  /** Authorizes (and maybe holds) as {@link Holds.authorize} does, in the next batch. */
  authorize(
    tenantId: string,
    request: AuthorizeRequest,
    idem: IdempotencyClaim | null,
  ): Promise<WriterAnswer<AuthorizeOutcome>> {
    return new Promise((resolve, reject) =>
      this.#enqueue({
        kind: "authorize",
        tenantId,
        customerId: request.customerId,
        request,
        idem,
        resolve: resolve as (a: WriterAnswer<unknown>) => void,
        reject,
      }),
    );
  }

  /**
   * Settles a hold as {@link Holds.settle} does, in the next batch. `hold` is the hold as the
   * caller found it (its customer and wallet); it is read again under the lock.
   */
  settle(
    tenantId: string,
    hold: Pick<HoldRecord, "id" | "customerId" | "walletId">,
    input: SettleInput,
    idem: IdempotencyClaim | null,
  ): Promise<WriterAnswer<HoldRecord>> {
    return new Promise((resolve, reject) =>
      this.#enqueue({
        kind: "settle",
        tenantId,
        customerId: hold.customerId,
        holdId: hold.id,
        walletId: hold.walletId,
        input,
        idem,
        resolve: resolve as (a: WriterAnswer<unknown>) => void,
        reject,
      }),
    );
  }

  /**
   * The customer, wallet, subject and action of a hold this instance placed: none of them ever
   * changes, so settling it needs no read before joining the queue (a hold placed elsewhere,
   * or forgotten, is read). Its state is always read under the wallet's lock.
   */
  known(tenantId: string, holdId: string): KnownHold | null {
    return this.#placed.get(`${tenantId}\n${holdId}`) ?? null;
  }

  #remember(tenantId: string, hold: KnownHold): void {
    if (this.#placed.size >= MAX_KNOWN) this.#placed.delete(this.#placed.keys().next().value!);
    this.#placed.set(`${tenantId}\n${hold.id}`, {
      id: hold.id,
      customerId: hold.customerId,
      walletId: hold.walletId,
      subjectId: hold.subjectId,
      action: hold.action,
    });
  }

  #enqueue(op: Op): void {
    const lane = laneOf(op.customerId, this.#queues.length);
    this.#queues[lane]!.push(op);
    this.#kick(lane);
  }

  #kick(lane: number): void {
    const queue = this.#queues[lane]!;
    if (this.#busy[lane] || queue.length === 0) return;
    // Take what waits, in order; a key already in this batch waits for the next (it replays then).
    const batch: Op[] = [];
    const keys = new Set<string>();
    const rest: Op[] = [];
    for (const op of queue) {
      const k = op.idem ? `${op.tenantId}\n${op.idem.key}` : null;
      if (batch.length >= this.#maxBatch || (k !== null && keys.has(k))) rest.push(op);
      else {
        batch.push(op);
        if (k !== null) keys.add(k);
      }
    }
    queue.length = 0;
    queue.push(...rest);
    this.#busy[lane] = true;
    void this.#run(batch).finally(() => {
      this.#busy[lane] = false;
      this.#kick(lane);
    });
  }

  /** One transaction per tenant (a tenant's failure is not another's). */
  async #run(batch: Op[]): Promise<void> {
    for (const tenantId of [...new Set(batch.map((op) => op.tenantId))].sort()) {
      await this.#runTenant(
        tenantId,
        batch.filter((op) => op.tenantId === tenantId),
      );
    }
  }

  async #runTenant(tenantId: string, all: Op[]): Promise<void> {
    // A customer whose auto top-up is being bought: its requests wait behind it, in order.
    const gated = (op: Op) => this.#gates.has(gateKey(tenantId, op.customerId));
    const ops = this.#gates.size === 0 ? all : all.filter((op) => !gated(op));
    if (ops.length < all.length) this.#behindGates(tenantId, all.filter(gated));
    if (ops.length === 0) return;
    for (let attempt = 1; this.#batch && attempt <= 3; attempt++) {
      try {
        const answers = await this.store.db.transaction((tx) => this.#process(tx, tenantId, ops));
        const deferred: Op[] = [];
        ops.forEach((op, i) => {
          const a = answers[i]!;
          if (a === DEFERRED) {
            deferred.push(op);
            return;
          }
          if (op.kind === "authorize" && a.kind === "fresh" && a.result.ok) {
            const hold = (a.result.value as AuthorizeOutcome).hold;
            if (hold) this.#remember(tenantId, hold);
          }
          op.resolve(a);
        });
        // Left out of the batch (an auto top-up to try first, and its customer's requests after
        // it): behind the customer's gate, off this lane, each alone with its key, in order.
        this.#behindGates(tenantId, deferred);
        return;
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code === undefined || !RETRYABLE.has(code)) break;
      }
    }
    // The batch as a whole keeps failing (or batching is off): each request alone, through the one-request path.
    for (const op of ops) {
      try {
        op.resolve(await this.#alone(tenantId, op));
      } catch (error) {
        op.reject(error);
      }
    }
  }

  /** One request through the one-request path, its auto top-up (if any) tried with no transaction open. */
  /** Runs requests alone behind their customers' gates, each customer's in order, off the lane. */
  #behindGates(tenantId: string, ops: readonly Op[]): void {
    const byCustomer = new Map<string, Op[]>();
    for (const op of ops) {
      const group = byCustomer.get(op.customerId);
      if (group) group.push(op);
      else byCustomer.set(op.customerId, [op]);
    }
    for (const [customerId, group] of byCustomer)
      this.#gates.after(gateKey(tenantId, customerId), async () => {
        for (const op of group) {
          try {
            op.resolve(await this.#alone(tenantId, op));
          } catch (error) {
            op.reject(error);
          }
        }
      });
  }

  async #alone(tenantId: string, op: Op): Promise<WriterAnswer<unknown>> {
    return withTopUpsFirst(this.holds.commerce, tenantId, async (tried) => {
      const run = (tx: SqlExecutor): Promise<Result<unknown>> =>
        op.kind === "authorize"
          ? this.holds.authorize(tx, tenantId, op.request, tried)
          : this.holds.settle(tx, tenantId, op.holdId, op.input);
      const idem = op.idem;
      if (idem === null) return { kind: "fresh", result: await this.store.db.transaction(run) };
      let result: Result<unknown> | null = null;
      const r = await this.store.idempotent(tenantId, idem.key, idem.fingerprint, async (tx) => {
        result = await run(tx);
        return idem.outcome(result);
      });
      if (r.kind === "fresh") return { kind: "fresh", result: result! };
      return r.kind === "conflict" ? { kind: "conflict" } : { kind: "replayed", outcome: r.outcome };
    });
  }

  /**
   * One tenant's batch in one transaction; an answer per request, in order, or {@link DEFERRED}
   * for a request left to the one-request path after the batch commits.
   */
  async #process(
    ex: SqlExecutor,
    tenantId: string,
    ops: readonly Op[],
  ): Promise<(WriterAnswer<unknown> | typeof DEFERRED)[]> {
    const now = this.store.now(tenantId);
    const ctx = { now, newId: this.store.newId };
    const answers: (WriterAnswer<unknown> | null)[] = ops.map(() => null);
    const results: (Result<unknown> | typeof DEFERRED | null)[] = ops.map(() => null);

    // The reads go out in two pipelined rounds (SqlExecutor): what the requests name, sent with
    // the lock statement and read after it; then what depends on those rows. Each statement
    // still runs after the lock is granted, so it sees what the lock orders.
    const authorizeAll = ops.flatMap((op, i) => (op.kind === "authorize" ? [i] : []));
    const settleAll = ops.flatMap((op, i) => (op.kind === "settle" ? [i] : []));
    const subjectIds = [
      ...new Set(
        authorizeAll.flatMap((i) => {
          const id = (ops[i] as AuthorizeOp).request.subjectId;
          return id === null ? [] : [id];
        }),
      ),
    ];
    const settleWallets = [...new Set(settleAll.map((i) => (ops[i] as SettleOp).walletId))];
    // Every request's customer: a replayed key's too (its lock costs nothing it would not).
    const customerIds = [...new Set(ops.map((op) => op.customerId))].sort();
    const holdIds = [...new Set(settleAll.map((i) => (ops[i] as SettleOp).holdId))];
    const walletScope = `tenant_id = $1 AND (id = ANY($2::text[])
      OR (customer_id = ANY($3::text[]) AND (member_id IS NULL OR member_id = ANY($4::text[]))))`;
    const walletParams = [tenantId, settleWallets, customerIds, subjectIds];

    // Round 1. The idempotency keys are claimed in this transaction; every wallet the batch may
    // pay from is locked in one statement, in id order (the settled holds' wallets, and each
    // customer's pool and named members' wallets); then the subjects, the settled holds, the
    // locked wallets' drawable grants and those due to expire, the pricing and the caps.
    const keyed = ops.flatMap((op, i) => (op.idem ? [{ i, idem: op.idem }] : []));
    const claimedQ =
      keyed.length > 0
        ? ex.query(
            `INSERT INTO idempotency_keys (tenant_id, key, fingerprint)
             SELECT $1, k, f FROM unnest($2::text[], $3::text[]) AS x(k, f) ON CONFLICT DO NOTHING RETURNING key`,
            [tenantId, keyed.map((k) => k.idem.key), keyed.map((k) => k.idem.fingerprint)],
          )
        : null;
    const lockedQ = ex.query(
      `SELECT id, customer_id, member_id, ${OVERAGE_COLUMNS}, ${CATALOG_STAMP_COLUMN}
       FROM wallets WHERE ${walletScope} ORDER BY id FOR UPDATE`,
      walletParams,
    );
    const subjectsQ = whereIds(
      ex,
      "SELECT id, customer_id FROM subjects WHERE tenant_id = $1 AND id = ANY($2::text[])",
      tenantId,
      subjectIds,
    );
    const holdsQ = whereIds(
      ex,
      `SELECT ${HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = ANY($2::text[])`,
      tenantId,
      holdIds,
    );
    const grantsQ = readDrawableGrants(ex, walletScope, walletParams, now);
    const pricingQ = this.metering.customerPricing(ex, tenantId, customerIds, now);
    const capsQ = loadCaps(ex, tenantId, customerIds);
    const [claimed, locked, subjectRows, holdRowsRead, grantRows, pricing, caps] = await Promise.all([
      claimedQ,
      lockedQ,
      subjectsQ,
      holdsQ,
      grantsQ,
      pricingQ,
      capsQ,
    ]);

    const claimedKeys = new Set((claimed?.rows ?? []).map((r) => String(r.key)));
    const taken = keyed.filter((k) => !claimedKeys.has(k.idem.key));
    const subjects = new Map<string, string>();
    for (const r of subjectRows?.rows ?? []) subjects.set(String(r.id), String(r.customer_id));
    const holdRows = new Map<string, HoldRecord>();
    for (const r of holdRowsRead?.rows ?? []) holdRows.set(String(r.id), toHold(r));
    const wallets = new Map(
      locked.rows.map((r) => [
        String(r.id),
        { customerId: String(r.customer_id), memberId: r.member_id === null ? null : String(r.member_id) },
      ]),
    );
    const loadedGrants = new Map<string, Grant>();
    const grantCustomer = new Map<string, string>();
    const keepGrant = (r: Row) => {
      loadedGrants.set(String(r.id), toGrant(r));
      grantCustomer.set(String(r.id), wallets.get(String(r.wallet_id))?.customerId ?? String(r.customer_id));
    };
    // A wallet created after the lock statement's snapshot is not locked: its grants are not ours.
    for (const r of grantRows.rows) if (wallets.has(String(r.wallet_id))) keepGrant(r);
    // The settled holds' grants that are no longer drawable (depleted, expired) are read in round 2.
    const missing = [
      ...new Set(
        [...holdRows.values()].flatMap((h) =>
          h.draws.flatMap((d) => (d.grantId === null || loadedGrants.has(d.grantId) ? [] : [d.grantId])),
        ),
      ),
    ];

    // Round 2: first outcomes of keys already taken, those grants, the catalog when something
    // was published, tier usage, the settlements' used event ids, the caps' counters and the
    // settled holds' reservations.
    const catalogQ = this.metering.catalog(ex, tenantId, stampOf(locked.rows));
    const firstQ = whereIds(
      ex,
      "SELECT key, fingerprint, outcome FROM idempotency_keys WHERE tenant_id = $1 AND key = ANY($2::text[])",
      tenantId,
      taken.map((k) => k.idem.key),
    );
    const missingQ = whereIds(
      ex,
      `SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND id = ANY($2::text[])`,
      tenantId,
      missing,
    );
    const settleEvents = new Map<number, { events: UsageEvent[]; given: SettleEvent[] } | null>();
    const builtFails = new Map<number, Result<unknown>>();
    for (const i of settleAll) {
      const op = ops[i] as SettleOp;
      const hold = holdRows.get(op.holdId);
      if (!hold) {
        builtFails.set(i, fail("not_found", `No hold ${op.holdId}.`));
        continue;
      }
      const built = settlementEvents(hold, op.input, now);
      if (!built.ok) builtFails.set(i, built);
      else settleEvents.set(i, built.value);
    }
    const eventIds = [...settleEvents.values()].flatMap((s) => (s ? s.events.map((e) => e.id) : []));
    const usedQ = whereIds(
      ex,
      "SELECT event_id FROM usage_events WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
      tenantId,
      eventIds,
    );
    // Counters of now's periods and of the settled holds' periods; the settled holds' reservations.
    const countersQ =
      caps.length > 0
        ? loadCapCounters(ex, tenantId, caps, [now, ...[...holdRows.values()].map((h) => h.createdAt)])
        : null;
    const reservationsQ = caps.length > 0 ? capReservationsOfHolds(ex, tenantId, [...holdRows.keys()]) : null;
    const catalog = await catalogQ;
    const usageQ = tierUsage(
      ex,
      tenantId,
      customerIds,
      [now, ...[...settleEvents.values()].flatMap((s) => (s ? s.events.map((e) => e.time) : []))],
      catalog,
      pricing,
    );
    const [first, missingRows, usedRows, counters, reservationsRead, usage] = await Promise.all([
      firstQ,
      missingQ,
      usedQ,
      countersQ,
      reservationsQ,
      usageQ,
    ]);

    if (first !== null) {
      const byKey = new Map(first.rows.map((r) => [String(r.key), r]));
      for (const { i, idem } of taken) {
        const row = byKey.get(idem.key);
        if (!row || row.outcome === null) throw new Error("a committed idempotency key has an outcome");
        answers[i] =
          row.fingerprint !== idem.fingerprint
            ? { kind: "conflict" }
            : { kind: "replayed", outcome: JSON.parse(String(row.outcome)) };
      }
    }
    for (const r of missingRows?.rows ?? []) keepGrant(r);
    const live = ops.flatMap((_op, i) => (answers[i] === null ? [i] : []));
    const settle = (r: Result<unknown> | typeof DEFERRED, i: number) => {
      results[i] = r;
    };
    const authorizeAt = live.filter((i) => ops[i]!.kind === "authorize");
    for (const [i, failed] of builtFails) if (answers[i] === null) settle(failed, i);
    const liveCustomers = [...new Set(live.map((i) => ops[i]!.customerId))].sort();

    const pools = new Map<string, string>();
    const overdraft = new Map<string, bigint>();
    const policy = new Map<string, OveragePolicy>();
    for (const r of locked.rows) {
      if (r.member_id !== null) continue;
      pools.set(String(r.customer_id), String(r.id));
      // The pool's overdraft and full overage policy, as Holds reads them (throttle, floor, mode).
      const pool = poolStateFrom(r);
      overdraft.set(String(r.id), pool.overdraft);
      policy.set(String(r.id), pool.policy);
    }
    // The paying wallet of each authorization (as Holds#payer finds it).
    const payers = new Map<number, string>();
    for (const i of authorizeAt) {
      const req = (ops[i] as AuthorizeOp).request;
      const pool = pools.get(req.customerId);
      if (pool === undefined) settle(fail("not_found", `No customer ${req.customerId}.`), i);
      else if (req.subjectId !== null && subjects.get(req.subjectId) !== req.customerId)
        settle(fail("not_found", `Customer ${req.customerId} has no subject ${req.subjectId}.`), i);
      else {
        const own = [...wallets].find(
          ([, w]) => w.customerId === req.customerId && w.memberId === req.subjectId,
        );
        payers.set(i, own ? own[0] : pool);
      }
    }

    // Due expiries first, per customer, as the write pipeline does before any plan.
    const loaded = new Map<string, Grant[]>();
    for (const g of loadedGrants.values()) {
      const customerId = grantCustomer.get(g.id)!;
      const list = loaded.get(customerId) ?? [];
      list.push(g);
      loaded.set(customerId, list);
    }
    const grants = new Map<string, Map<string, Grant>>();
    const effects: Effect[] = [];
    for (const customerId of liveCustomers) {
      const list = loaded.get(customerId) ?? [];
      const expiry = expireDue(ctx, customerId, list);
      effects.push(expiry);
      grants.set(customerId, applyEffect(new Map(list.map((g) => [g.id, g])), expiry));
    }
    const pricingAt = (customerId: string, time: number) =>
      Metering.pricingAt(catalog, pricing.get(customerId), time);
    const costAt = (time: number) => Metering.costAt(catalog, time);
    const used = new Set<string>((usedRows?.rows ?? []).map((r) => String(r.event_id)));
    let capState: CapState | null = counters;
    const reservations = reservationsRead ?? new Map<string, readonly CapReservation[]>();
    const capEffects: CapEffect[] = [];
    // Wallets with an auto top-up (read at the first denial for lack of credits that could use one).
    let topUps: ReadonlySet<string> | null = null;
    // Once a request is left out, every later one of its customer is too: they run after it, in
    // order, as they would one transaction each (its purchase or hold may change their answers).
    // Other customers' requests share nothing with it (wallets, caps, tiers) and stay.
    const deferring = new Set<string>();

    // Then plan each request in arrival order, on the state the earlier ones left.
    const txs: JournalTransaction[] = [];
    const newHolds: {
      hold: Hold;
      request: AuthorizeRequest;
      transactionId: string | null;
      capReservations: readonly CapReservation[];
    }[] = [];
    const resolved: { hold: Hold; transactionId: string | null }[] = [];
    const outcomes: { outcome: Accepted; fingerprint: string; holdId: string }[] = [];
    const usageDeltas = new Map<string, bigint>();
    const apply = (customerId: string, tx: JournalTransaction | null) => {
      if (tx === null) return;
      txs.push(tx);
      grants.set(customerId, applyEffect(grants.get(customerId)!, { ...EMPTY, transactions: [tx] }));
      for (const [walletId, delta] of overdraftDeltas(tx.entries))
        overdraft.set(walletId, (overdraft.get(walletId) ?? 0n) - delta);
    };
    const stateOf = (customerId: string, walletId: string) => {
      const poolWalletId = pools.get(customerId)!;
      const ids = walletId === poolWalletId ? [walletId] : [walletId, poolWalletId];
      const all = [...grants.get(customerId)!.values()];
      return {
        sources: ids.map((id) => ({ walletId: id, grants: all.filter((g) => g.walletId === id) })),
        poolWalletId,
        overdraft: overdraft.get(poolWalletId)!,
        policy: policy.get(poolWalletId)!,
      };
    };
    for (const i of live) {
      if (results[i] !== null) continue;
      const op = ops[i]!;
      if (deferring.has(op.customerId)) {
        settle(DEFERRED, i);
        continue;
      }
      if (op.kind === "authorize") {
        const req = op.request;
        const estimate = rateEstimateWith(req, now, pricingAt, usage);
        if (!estimate.ok) {
          settle(estimate, i);
          continue;
        }
        const payer = payers.get(i)!;
        const state = stateOf(req.customerId, payer);
        const planned = planAuthorizeRequest(ctx, state, capState, req, payer, estimate.value);
        if (!planned.ok) {
          settle(planned, i);
          continue;
        }
        if (wantsTopUp(planned.value.authorization)) {
          topUps ??= await this.holds.autoTopUpWallets(ex, tenantId, [...wallets.keys()]);
          if (topUps.has(payer) || topUps.has(state.poolWalletId)) {
            // Holds.authorize tries the auto top-up (a purchase) first: it runs after this batch.
            deferring.add(op.customerId);
            settle(DEFERRED, i);
            continue;
          }
        }
        const tx = planned.value.transaction;
        apply(req.customerId, tx);
        if (capState !== null) capState = withCapEffect(capState, planned.value.caps);
        capEffects.push(planned.value.caps);
        const hold = planned.value.authorization.hold;
        const transactionId = tx?.id ?? null;
        if (hold !== null) {
          newHolds.push({
            hold,
            request: req,
            transactionId,
            capReservations: planned.value.capReservations,
          });
          reservations.set(hold.id, planned.value.capReservations);
        }
        settle(
          ok({
            authorization: planned.value.authorization,
            hold: hold === null ? null : placedHold(hold, transactionId, req.estimate),
            autoTopUp: null,
          } satisfies AuthorizeOutcome),
          i,
        );
      } else {
        const hold = holdRows.get(op.holdId)!;
        const built = settleEvents.get(i)!;
        const { events } = built;
        const pending = checkPending(hold, now);
        if (!pending.ok) {
          settle(pending, i);
          continue;
        }
        const reused = events.find((e) => used.has(e.id));
        if (reused) {
          settle(
            fail(
              "event_id_reused",
              `Event id "${reused.id}" is already recorded; each event of a settlement needs a new id.`,
              { event_id: reused.id },
            ),
            i,
          );
          continue;
        }
        const plan = planSettleRequest(
          ctx,
          hold,
          {
            ...stateOf(hold.customerId, hold.walletId),
            grants: grants.get(hold.customerId)!,
            pricingAt,
            costAt,
            usage,
          },
          capState,
          reservations.get(hold.id) ?? [],
          built,
        );
        if (!plan.ok) {
          settle(plan, i);
          continue;
        }
        const tx = plan.value.transaction;
        apply(hold.customerId, tx);
        if (capState !== null) capState = withCapEffect(capState, plan.value.caps);
        capEffects.push(plan.value.caps);
        reservations.delete(hold.id);
        const transactionId = tx?.id ?? null;
        resolved.push({ hold: plan.value.hold, transactionId });
        for (const e of events) used.add(e.id);
        for (const o of plan.value.outcomes) outcomes.push({ ...o, holdId: hold.id });
        for (const [key, delta] of plan.value.usageDeltas) {
          usage.set(key, (usage.get(key) ?? 0n) + delta);
          usageDeltas.set(key, (usageDeltas.get(key) ?? 0n) + delta);
        }
        const record: HoldRecord = { ...hold, ...plan.value.hold, resolveTransactionId: transactionId };
        // A second settlement of the same hold in this batch finds it resolved.
        holdRows.set(hold.id, record);
        settle(ok(record), i);
      }
    }

    // Last, write everything with set-based SQL: the journal and balances, the holds, the events,
    // the keys' outcomes. The statements go out together (pipelined), the journal first: the holds
    // name its transactions. Every first statement below is issued in this tick, so it runs before
    // what writeEffect sends after its journal answered (alerts, the resumable-runs check): that
    // check sees the cap counters and reservations this batch wrote (hold-writer.test.ts, "a run's
    // resumable check after a batch").
    const writes: Promise<unknown>[] = [];
    writes.push(
      this.store.writeEffect(ex, tenantId, "", combine(...effects, { ...EMPTY, transactions: txs })),
    );
    if (newHolds.length > 0) {
      writes.push(
        ex.query(
          `INSERT INTO holds (tenant_id, id, customer_id, wallet_id, subject_id, action, amount, draws, estimate, status,
           created_at, expires_at, transaction_id)
         SELECT $1, x.id, x.customer_id, x.wallet_id, x.subject_id, x.action, x.amount, x.draws, x.estimate,
           'pending', x.created_at, x.expires_at, x.transaction_id
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::text[], $9::text[],
           $10::timestamptz[], $11::timestamptz[], $12::text[])
           AS x(id, customer_id, wallet_id, subject_id, action, amount, draws, estimate, created_at, expires_at, transaction_id)`,
          [
            tenantId,
            newHolds.map((n) => n.hold.id),
            newHolds.map((n) => n.hold.customerId),
            newHolds.map((n) => n.hold.walletId),
            newHolds.map((n) => n.hold.subjectId),
            newHolds.map((n) => n.hold.action),
            newHolds.map((n) => n.hold.amount.toString()),
            newHolds.map((n) => drawsJson(n.hold.draws)),
            newHolds.map((n) => estimateJson(n.request.estimate, n.hold.amount)),
            newHolds.map((n) => iso(n.hold.createdAt)),
            newHolds.map((n) => iso(n.hold.expiresAt)),
            newHolds.map((n) => n.transactionId),
          ],
        ),
      );
    }
    if (resolved.length > 0) {
      // Guarded as in Holds#resolve: each pending hold leaves `pending` exactly once (invariant 6).
      const update = ex.query(
        `UPDATE holds h SET status = x.status, resolved_at = x.resolved_at, posted = x.posted, released = x.released,
           unpaid = x.unpaid, resolve_transaction_id = x.transaction_id
         FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::numeric[], $6::numeric[], $7::numeric[], $8::text[])
           AS x(id, status, resolved_at, posted, released, unpaid, transaction_id)
         WHERE h.tenant_id = $1 AND h.id = x.id AND h.status = 'pending'`,
        [
          tenantId,
          resolved.map((r) => r.hold.id),
          resolved.map((r) => r.hold.status),
          resolved.map((r) => iso(r.hold.resolvedAt!)),
          resolved.map((r) => r.hold.posted.toString()),
          resolved.map((r) => r.hold.released.toString()),
          resolved.map((r) => r.hold.unpaid.toString()),
          resolved.map((r) => r.transactionId),
        ],
      );
      writes.push(
        update.then(({ rowCount }) => {
          if (rowCount !== resolved.length) throw new Error("a hold was resolved twice");
        }),
      );
    }
    // Spend caps, as the one-request path writes them: new holds' reservations, then the settled
    // holds' reservations dropped (their plans moved the counters), then counters and alerts.
    for (const n of newHolds) writes.push(writeCapReservations(ex, tenantId, n.hold.id, n.capReservations));
    if (capState !== null)
      writes.push(
        dropSettledReservations(
          ex,
          tenantId,
          resolved.map((r) => r.hold.id),
        ),
      );
    writes.push(writeCapEffect(ex, this.store, tenantId, combineCapEffects(capEffects)));
    writes.push(insertEvents(ex, tenantId, outcomes, now));
    writes.push(writeUsageCounters(ex, tenantId, usageDeltas, catalog, pricing));
    const finished = this.#finish(ex, tenantId, ops, answers, results);
    await Promise.all(writes);
    return finished;
  }

  /** Records the claimed keys' outcomes in the transaction, and gives every request its answer. */
  async #finish(
    ex: SqlExecutor,
    tenantId: string,
    ops: readonly Op[],
    answers: (WriterAnswer<unknown> | null)[],
    results: (Result<unknown> | typeof DEFERRED | null)[],
  ): Promise<(WriterAnswer<unknown> | typeof DEFERRED)[]> {
    const keys: string[] = [];
    const outcomes: string[] = [];
    const released: string[] = [];
    const out = ops.map((op, i): WriterAnswer<unknown> | typeof DEFERRED => {
      const answer = answers[i];
      if (answer) return answer;
      const result = results[i];
      if (!result) throw new Error("every request of a batch has a result");
      if (result === DEFERRED) {
        // Its key was claimed here: give it back, the one-request path claims it again.
        if (op.idem) released.push(op.idem.key);
        return DEFERRED;
      }
      if (op.idem) {
        keys.push(op.idem.key);
        // JSON has no `undefined`: store it as null, so a committed key always has an outcome.
        outcomes.push(JSON.stringify(op.idem.outcome(result)) ?? "null");
      }
      return { kind: "fresh", result };
    });
    await Promise.all([
      keys.length > 0
        ? ex.query(
            `UPDATE idempotency_keys k SET outcome = x.outcome FROM unnest($2::text[], $3::text[]) AS x(key, outcome)
             WHERE k.tenant_id = $1 AND k.key = x.key`,
            [tenantId, keys, outcomes],
          )
        : null,
      released.length > 0
        ? ex.query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = ANY($2::text[])", [
            tenantId,
            released,
          ])
        : null,
    ]);
    return out;
  }
}
