import {
  CapBook,
  type CapCharge,
  type CapCounter,
  type CapEffect,
  type CapPeriod,
  type CapReservation,
  type CapSetter,
  type CapState,
  type CapStatus,
  capAlertDetails,
  capCounterKey,
  capPeriodStart,
  capStatus,
  checkCapLimit,
  fail,
  ok,
  type Result,
  type SpendCap,
} from "@drawdown/core";
import { fireAlert } from "./alerts.js";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/**
 * Spend caps on the store (core/caps.ts decides). Caps and their counters are read and written
 * only under the lock of the customer's pool wallet: every charge of a customer holds it
 * (ingest locks the pool with the members' wallets, `Store.mutate` locks a member's wallet
 * with its pool), and so do the cap's own changes here. Counters of a cap are therefore
 * serialized with every charge they count, and a limit changed takes effect atomically.
 */

/** A cap as stored, with its creation and last change. */
export interface SpendCapRecord extends SpendCap {
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** A cap with its counters in the current period. */
export interface SpendCapView extends SpendCapRecord {
  readonly status: CapStatus;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());

const CAP_COLUMNS =
  "id, customer_id, target_kind, target_id, period, limit_amount::text AS limit_amount, set_by, created_at, updated_at";

const toCap = (r: Row): SpendCapRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  targetKind: r.target_kind as SpendCap["targetKind"],
  targetId: String(r.target_id),
  period: r.period as CapPeriod,
  limit: BigInt(String(r.limit_amount)),
  setBy: r.set_by as CapSetter,
  createdAt: ms(r.created_at),
  updatedAt: ms(r.updated_at),
});

/** Locks the customer's pool wallet (the lock every charge of the customer holds); returns its id. */
async function lockPool(ex: SqlExecutor, tenantId: string, customerId: string): Promise<string> {
  const { rows } = await ex.query(
    "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL FOR UPDATE",
    [tenantId, customerId],
  );
  return String(rows[0]!.id);
}

/**
 * Cap room grew (a hold resolved below its reservation, a reversal, a limit changed): the
 * suspended runs of these caps' customers may be payable again, so they are checked now
 * (run-resume.ts), in the caller's transaction, which holds the customers' pool locks. Every
 * suspension has a row for its pool wallet, so the pools find them all.
 */
async function announceCapRoom(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  capIds: readonly string[],
): Promise<void> {
  if (capIds.length === 0) return;
  const { rows } = await ex.query(
    `SELECT DISTINCT w.id FROM spend_caps c JOIN wallets w
       ON w.tenant_id = c.tenant_id AND w.customer_id = c.customer_id AND w.member_id IS NULL
     WHERE c.tenant_id = $1 AND c.id = ANY($2::text[])`,
    [tenantId, [...new Set(capIds)]],
  );
  if (rows.length > 0)
    await store.announceResumableRuns(
      ex,
      tenantId,
      rows.map((r) => String(r.id)),
    );
}

/**
 * Loads the caps of these customers and their counters in the periods `times` fall in, in
 * the caller's transaction (which holds the customers' pool locks). Null when there are no
 * caps: the common case costs one indexed query.
 */
export async function loadCapState(
  ex: SqlExecutor,
  tenantId: string,
  customerIds: readonly string[],
  times: readonly number[],
): Promise<CapState | null> {
  const caps = await loadCaps(ex, tenantId, customerIds);
  return caps.length === 0 ? null : loadCapCounters(ex, tenantId, caps, times);
}

/**
 * The caps of these customers (the first half of {@link loadCapState}, for a writer that sends
 * it with its other reads, after its lock statement).
 */
export async function loadCaps(
  ex: SqlExecutor,
  tenantId: string,
  customerIds: readonly string[],
): Promise<SpendCap[]> {
  const { rows } = await ex.query(
    `SELECT ${CAP_COLUMNS} FROM spend_caps WHERE tenant_id = $1 AND customer_id = ANY($2::text[])`,
    [tenantId, [...customerIds]],
  );
  return rows.map(toCap);
}

/** The counters of `caps` in the periods `times` fall in (the second half of {@link loadCapState}). */
export async function loadCapCounters(
  ex: SqlExecutor,
  tenantId: string,
  caps: readonly SpendCap[],
  times: readonly number[],
): Promise<CapState> {
  const ids: string[] = [];
  const starts: string[] = [];
  for (const cap of caps)
    for (const t of new Set(times.map((t) => capPeriodStart(cap.period, t)))) {
      ids.push(cap.id);
      starts.push(iso(t));
    }
  const counters = new Map<string, CapCounter>();
  const c = await ex.query(
    `SELECT c.cap_id, c.period_start, c.spent::text AS spent, c.held::text AS held
     FROM spend_cap_counters c JOIN unnest($2::text[], $3::timestamptz[]) AS k (cap_id, period_start)
       ON c.cap_id = k.cap_id AND c.period_start = k.period_start
     WHERE c.tenant_id = $1`,
    [tenantId, ids, starts],
  );
  for (const r of c.rows)
    counters.set(capCounterKey(String(r.cap_id), ms(r.period_start)), {
      spent: BigInt(String(r.spent)),
      held: BigInt(String(r.held)),
    });
  return { caps: [...caps], counters };
}

/**
 * Writes a plan's cap effect in the caller's transaction: counter deltas (set-based), then a
 * `spend_cap_reached` alert for each cap reached, once per cap and period. When a counter went
 * down (room given back), the customers' suspended runs are checked again.
 */
export async function writeCapEffect(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  effect: CapEffect,
): Promise<void> {
  if (effect.deltas.size > 0) {
    const entries = [...effect.deltas].map(([key, d]) => {
      const at = key.lastIndexOf("|");
      return { capId: key.slice(0, at), start: iso(Number(key.slice(at + 1))), d };
    });
    await ex.query(
      `INSERT INTO spend_cap_counters (tenant_id, cap_id, period_start, spent, held)
       SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::numeric[], $5::numeric[])
       ON CONFLICT (tenant_id, cap_id, period_start) DO UPDATE
         SET spent = spend_cap_counters.spent + EXCLUDED.spent, held = spend_cap_counters.held + EXCLUDED.held`,
      [
        tenantId,
        entries.map((e) => e.capId),
        entries.map((e) => e.start),
        entries.map((e) => e.d.spent.toString()),
        entries.map((e) => e.d.held.toString()),
      ],
    );
    const freed = entries.filter((e) => e.d.spent + e.d.held < 0n).map((e) => e.capId);
    await announceCapRoom(ex, store, tenantId, freed);
  }
  for (const r of effect.reached) {
    await fireAlert(ex, store, {
      tenantId,
      walletId: r.walletId,
      kind: "spend_cap_reached",
      key: `spend_cap:${r.cap.id}:${iso(r.periodStart)}`,
      details: capAlertDetails(r),
    });
  }
}

/**
 * Records amounts per cap and period owned by one hold (`spend_cap_holds`, what it reserved) or
 * one direct debit (`spend_cap_debits`, what it counted), in one statement.
 */
async function writeCapAmounts(
  ex: SqlExecutor,
  into:
    | { readonly table: "spend_cap_holds"; readonly owner: "hold_id" }
    | { readonly table: "spend_cap_debits"; readonly owner: "transaction_id" },
  tenantId: string,
  ownerId: string,
  amounts: readonly (CapReservation | CapCharge)[],
): Promise<void> {
  if (amounts.length === 0) return;
  await ex.query(
    `INSERT INTO ${into.table} (tenant_id, ${into.owner}, cap_id, period_start, amount)
     SELECT $1, $2, * FROM unnest($3::text[], $4::timestamptz[], $5::numeric[])`,
    [
      tenantId,
      ownerId,
      amounts.map((r) => r.capId),
      amounts.map((r) => iso(r.periodStart)),
      amounts.map((r) => r.amount.toString()),
    ],
  );
}

/** Records the cap room a new hold reserved. */
export const writeCapReservations = (
  ex: SqlExecutor,
  tenantId: string,
  holdId: string,
  reservations: readonly CapReservation[],
): Promise<void> =>
  writeCapAmounts(ex, { table: "spend_cap_holds", owner: "hold_id" }, tenantId, holdId, reservations);

/** The cap room a hold reserved (empty when no cap applied, or it resolved). */
export async function capReservationsOf(
  ex: SqlExecutor,
  tenantId: string,
  holdId: string,
): Promise<CapReservation[]> {
  return (await capReservationsOfHolds(ex, tenantId, [holdId])).get(holdId) ?? [];
}

/** The cap room each of these holds reserved, by hold id (holds without a reservation are absent). */
export async function capReservationsOfHolds(
  ex: SqlExecutor,
  tenantId: string,
  holdIds: readonly string[],
): Promise<Map<string, CapReservation[]>> {
  const out = new Map<string, CapReservation[]>();
  if (holdIds.length === 0) return out;
  const { rows } = await ex.query(
    "SELECT hold_id, cap_id, period_start, amount::text AS amount FROM spend_cap_holds WHERE tenant_id = $1 AND hold_id = ANY($2::text[])",
    [tenantId, [...holdIds]],
  );
  for (const r of rows) {
    const list = out.get(String(r.hold_id)) ?? [];
    list.push({ capId: String(r.cap_id), periodStart: ms(r.period_start), amount: BigInt(String(r.amount)) });
    out.set(String(r.hold_id), list);
  }
  return out;
}

/** Drops the reservation rows of settled holds (their plans already moved the counters), in one statement. */
export async function dropSettledReservations(
  ex: SqlExecutor,
  tenantId: string,
  holdIds: readonly string[],
): Promise<void> {
  if (holdIds.length === 0) return;
  await ex.query("DELETE FROM spend_cap_holds WHERE tenant_id = $1 AND hold_id = ANY($2::text[])", [
    tenantId,
    [...holdIds],
  ]);
}

/**
 * Frees the cap room of a hold that resolved (void, expiry; a settlement frees it through its
 * plan): the counters lose the reservation, and the reservation rows go; the customer's
 * suspended runs are checked against the room freed. `release` false only drops the rows (the
 * settlement's plan already moved the counters).
 */
export async function dropCapReservations(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  holdId: string,
  release: boolean,
): Promise<void> {
  const { rows } = await ex.query(
    "DELETE FROM spend_cap_holds WHERE tenant_id = $1 AND hold_id = $2 RETURNING cap_id, period_start, amount::text AS amount",
    [tenantId, holdId],
  );
  if (!release || rows.length === 0) return;
  await ex.query(
    `UPDATE spend_cap_counters c SET held = c.held - k.amount
     FROM unnest($2::text[], $3::timestamptz[], $4::numeric[]) AS k (cap_id, period_start, amount)
     WHERE c.tenant_id = $1 AND c.cap_id = k.cap_id AND c.period_start = k.period_start`,
    [
      tenantId,
      rows.map((r) => String(r.cap_id)),
      rows.map((r) => iso(ms(r.period_start))),
      rows.map((r) => String(r.amount)),
    ],
  );
  await announceCapRoom(
    ex,
    store,
    tenantId,
    rows.map((r) => String(r.cap_id)),
  );
}

/** Records what a direct debit (transaction `txId`) counted on each cap, so a reversal gives it back. */
export const writeCapDebits = (
  ex: SqlExecutor,
  tenantId: string,
  txId: string,
  charges: readonly CapCharge[],
): Promise<void> =>
  writeCapAmounts(ex, { table: "spend_cap_debits", owner: "transaction_id" }, tenantId, txId, charges);

/**
 * Gives back the cap room a reversed debit counted: each cap's `spent`, in the period the debit
 * counted in (never below zero), in the reversal's transaction, under the pool lock it holds.
 * Its records go, so this happens once. Debits of caps deleted since give nothing back; so do
 * debits recorded before caps kept these records (migration 19).
 */
export async function refundCapDebit(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  customerId: string,
  txId: string,
): Promise<void> {
  const { rows } = await ex.query(
    `DELETE FROM spend_cap_debits WHERE tenant_id = $1 AND transaction_id = $2
     RETURNING cap_id, period_start, amount::text AS amount`,
    [tenantId, txId],
  );
  if (rows.length === 0) return;
  const charges: CapCharge[] = rows.map((r) => ({
    capId: String(r.cap_id),
    periodStart: ms(r.period_start),
    amount: BigInt(String(r.amount)),
  }));
  const state = await loadCapState(
    ex,
    tenantId,
    [customerId],
    charges.map((c) => c.periodStart),
  );
  const book = new CapBook(state);
  book.refund(charges);
  await writeCapEffect(ex, store, tenantId, book.effect());
}

/** What a cap is set on, and by whom. */
export interface SpendCapInput {
  readonly customerId: string;
  /** A wallet of the customer (`wal_…`), or a member or agent of it (`sub_…`). */
  readonly targetId: string;
  readonly period: CapPeriod;
  readonly limit: bigint;
  readonly setBy: CapSetter;
}

/** Creating, changing, deleting and reading spend caps. */
export class SpendCaps {
  constructor(private readonly store: Store) {}

  /** A cap's status now (its counters in the current period). */
  async #view(ex: SqlExecutor, tenantId: string, caps: readonly SpendCapRecord[]): Promise<SpendCapView[]> {
    if (caps.length === 0) return [];
    const now = this.store.now(tenantId);
    const { rows } = await ex.query(
      `SELECT cap_id, period_start, spent::text AS spent, held::text AS held FROM spend_cap_counters
       WHERE tenant_id = $1 AND (cap_id, period_start) IN (SELECT * FROM unnest($2::text[], $3::timestamptz[]))`,
      [tenantId, caps.map((c) => c.id), caps.map((c) => iso(capPeriodStart(c.period, now)))],
    );
    const counters = new Map<string, CapCounter>(
      rows.map((r) => [
        capCounterKey(String(r.cap_id), ms(r.period_start)),
        { spent: BigInt(String(r.spent)), held: BigInt(String(r.held)) },
      ]),
    );
    return caps.map((c) => ({ ...c, status: capStatus(c, counters, now) }));
  }

  /**
   * Sets a cap. Fails, changing nothing, on a negative limit (`invalid_amount`), an unknown
   * customer or target (`not_found`), a target of another customer or a workflow
   * (`invalid_argument`), or a cap of the same setter already on that target and period
   * (`already_exists`: change its limit instead).
   */
  async create(ex: SqlExecutor, tenantId: string, input: SpendCapInput): Promise<Result<SpendCapView>> {
    const limit = checkCapLimit(input.limit);
    if (!limit.ok) return limit;
    const customer = await ex.query("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      input.customerId,
    ]);
    if (!customer.rows[0]) return fail("not_found", `No customer ${input.customerId}.`);
    const targetKind = input.targetId.startsWith("wal_") ? "wallet" : "subject";
    const target = await ex.query(
      targetKind === "wallet"
        ? "SELECT customer_id, NULL AS kind FROM wallets WHERE tenant_id = $1 AND id = $2"
        : "SELECT customer_id, kind FROM subjects WHERE tenant_id = $1 AND id = $2",
      [tenantId, input.targetId],
    );
    const t = target.rows[0];
    if (!t)
      return fail("not_found", `No wallet or subject ${input.targetId}.`, { target_id: input.targetId });
    if (String(t.customer_id) !== input.customerId)
      return fail(
        "invalid_argument",
        `${input.targetId} belongs to another customer; a cap's target is a wallet, member or agent of customer ${input.customerId}.`,
        { target_id: input.targetId },
      );
    if (targetKind === "subject" && t.kind !== "member" && t.kind !== "agent")
      return fail(
        "invalid_argument",
        `A spend cap's subject is a member or an agent, not a ${String(t.kind)}.`,
        {
          target_id: input.targetId,
        },
      );
    await lockPool(ex, tenantId, input.customerId);
    const now = this.store.now(tenantId);
    const id = this.store.newId("cap");
    const { rows } = await ex.query(
      `INSERT INTO spend_caps (tenant_id, id, customer_id, target_kind, target_id, period, limit_amount, set_by, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT DO NOTHING RETURNING ${CAP_COLUMNS}`,
      [
        tenantId,
        id,
        input.customerId,
        targetKind,
        input.targetId,
        input.period,
        limit.value.toString(),
        input.setBy,
        iso(now),
      ],
    );
    if (!rows[0])
      return fail(
        "already_exists",
        `${input.targetId} already has a ${input.period} cap set by the ${input.setBy}; change its limit instead.`,
        { target_id: input.targetId },
      );
    return ok((await this.#view(ex, tenantId, [toCap(rows[0])]))[0]!);
  }

  /** A cap and its current period's counters; null when there is none. */
  async get(tenantId: string, id: string, ex: SqlExecutor = this.store.db): Promise<SpendCapView | null> {
    const { rows } = await ex.query(
      `SELECT ${CAP_COLUMNS} FROM spend_caps WHERE tenant_id = $1 AND id = $2`,
      [tenantId, id],
    );
    return rows[0] ? (await this.#view(ex, tenantId, [toCap(rows[0])]))[0]! : null;
  }

  /** A customer's caps, oldest id first. */
  async list(
    tenantId: string,
    customerId: string,
    page: { after?: string | null; limit: number },
  ): Promise<Page<SpendCapView>> {
    const { rows } = await this.store.db.query(
      `SELECT ${CAP_COLUMNS} FROM spend_caps WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR id > $3)
       ORDER BY id LIMIT $4`,
      [tenantId, customerId, page.after ?? null, page.limit + 1],
    );
    const listed = paginate(rows.map(toCap), page.limit, (c) => c.id);
    return { ...listed, items: await this.#view(this.store.db, tenantId, listed.items) };
  }

  /** A cap, locked with its customer's pool (its id returned too); `forbidden` when `actor` may not change it. */
  async #forChange(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    actor: CapSetter,
  ): Promise<Result<{ cap: SpendCapRecord; poolWalletId: string }>> {
    const found = await this.get(tenantId, id, ex);
    if (!found) return fail("not_found", `No spend cap ${id}.`);
    if (actor === "customer" && found.setBy === "vendor")
      return fail(
        "forbidden",
        `Spend cap ${id} was set by the vendor; a restricted key may add a tighter cap of its own but never change or remove the vendor's.`,
        { cap_id: id },
      );
    const poolWalletId = await lockPool(ex, tenantId, found.customerId);
    return ok({ cap: found, poolWalletId });
  }

  /**
   * Changes a cap's limit (from now on; what was charged stays). The customer's suspended runs
   * are checked against the new limit in this transaction: a raise may announce them resumable.
   */
  async update(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    limit: bigint,
    actor: CapSetter,
  ): Promise<Result<SpendCapView>> {
    const checked = checkCapLimit(limit);
    if (!checked.ok) return checked;
    const found = await this.#forChange(ex, tenantId, id, actor);
    if (!found.ok) return found;
    await ex.query(
      "UPDATE spend_caps SET limit_amount = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
      [tenantId, id, checked.value.toString(), iso(this.store.now(tenantId))],
    );
    await this.store.announceResumableRuns(ex, tenantId, [found.value.poolWalletId]);
    return ok((await this.get(tenantId, id, ex))!);
  }

  /**
   * Deletes a cap with its counters, reservations and debit records; returns it as it was. The
   * customer's suspended runs are checked without it in this transaction.
   */
  async delete(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    actor: CapSetter,
  ): Promise<Result<SpendCapView>> {
    const found = await this.#forChange(ex, tenantId, id, actor);
    if (!found.ok) return found;
    const before = (await this.get(tenantId, id, ex))!;
    await ex.query("DELETE FROM spend_cap_holds WHERE tenant_id = $1 AND cap_id = $2", [tenantId, id]);
    await ex.query("DELETE FROM spend_cap_counters WHERE tenant_id = $1 AND cap_id = $2", [tenantId, id]);
    await ex.query("DELETE FROM spend_cap_debits WHERE tenant_id = $1 AND cap_id = $2", [tenantId, id]);
    await ex.query("DELETE FROM spend_caps WHERE tenant_id = $1 AND id = $2", [tenantId, id]);
    await this.store.announceResumableRuns(ex, tenantId, [found.value.poolWalletId]);
    return ok(before);
  }
}

/**
 * The spend cap check of a direct debit (usage or a manual debit: both charge the wallet), in
 * the debit's plan under its wallet locks: the charge beyond the tightest applicable cap's room
 * is refused with `spend_cap_reached`. Returns the effect to write either way (a refusal
 * fires the cap's alert), and what an allowed debit counted where (for {@link writeCapDebits}).
 */
export async function capDebit(
  ex: SqlExecutor,
  tenantId: string,
  customerId: string,
  chain: readonly string[],
  at: number,
  amount: bigint,
): Promise<{ ok: boolean; effect: CapEffect; room: bigint | null; charges: CapCharge[] }> {
  const state = await loadCapState(ex, tenantId, [customerId], [at]);
  const book = new CapBook(state);
  if (book.empty) return { ok: true, effect: book.effect(), room: null, charges: [] };
  const room = book.roomFor(chain, null, at);
  if (room !== null && amount > room) {
    book.refuse(chain, null, at);
    return { ok: false, effect: book.effect(), room, charges: [] };
  }
  const charges = book.charge(chain, null, at, amount);
  return { ok: true, effect: book.effect(), room, charges };
}
