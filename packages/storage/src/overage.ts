import {
  type Context,
  DEFAULT_OVERAGE,
  fail,
  fitFloor,
  formatAmount,
  type Grant,
  type JournalTransaction,
  type OverageBill,
  type OveragePolicy,
  type OveragePolicyInput,
  type OverageSource,
  ok,
  type Plan,
  planDeficitRepay,
  planOverageBill,
  type Result,
  settledOwed,
  type ThrottleRule,
  validateOveragePolicy,
} from "@drawdown/core";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/**
 * Overage policies on the store (core/overage.ts decides; this loads and writes): a pool
 * wallet's policy and where it came from, the plan's policy applied to its subscribers, the
 * billing of a priced soft cap (on demand and at each period renewal) with its invoices, and
 * the carried deficit repaid from a renewal's grant.
 *
 * Precedence: a policy set on the wallet through the API (`source: "wallet"`) wins over its
 * plan's; a plan's (`source: "plan"`) is applied at subscribe and plan change to wallets that
 * set none; otherwise the default hard cap. Removing the wallet's own policy falls back to the
 * active subscription's plan's, else the default.
 */

/** The columns every loader of a wallet's overage state selects (wallets row). */
export const OVERAGE_COLUMNS =
  "overdraft::text AS overdraft, overage_mode, overage_floor::text AS overage_floor, overage_price::text AS overage_price, overage_currency, overage_throttle";

/** {@link OVERAGE_COLUMNS} of a joined wallets table named `alias`. */
export const overageColumnsOf = (alias: string): string => OVERAGE_COLUMNS.replace(/(^|, )/g, `$1${alias}.`);

const json = (v: unknown): unknown => (typeof v === "string" ? JSON.parse(v) : v);
const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());

/** A wallet row's policy (selected with {@link OVERAGE_COLUMNS}). */
export function overagePolicyFrom(r: Row): OveragePolicy {
  const t = r.overage_throttle === null || r.overage_throttle === undefined ? null : json(r.overage_throttle);
  const throttle: ThrottleRule | null =
    t === null
      ? null
      : {
          level: BigInt(String((t as { level: string }).level)),
          allowedActions: (t as { allowed_actions: string[] }).allowed_actions,
          fallbackAction: (t as { fallback_action: string | null }).fallback_action,
        };
  return {
    mode: r.overage_mode as OveragePolicy["mode"],
    floor: BigInt(String(r.overage_floor)),
    price:
      r.overage_price === null || r.overage_price === undefined
        ? null
        : { amount: BigInt(String(r.overage_price)), currency: String(r.overage_currency) },
    throttle,
  };
}

const throttleJson = (t: ThrottleRule | null | undefined): string | null =>
  t
    ? JSON.stringify({
        level: t.level.toString(),
        allowed_actions: t.allowedActions,
        fallback_action: t.fallbackAction,
      })
    : null;

/** A pool wallet's overage state. */
export interface OverageState {
  readonly walletId: string;
  readonly customerId: string;
  readonly policy: OveragePolicy;
  readonly source: OverageSource;
  /** Credits owed now (the overdraft), including what pending holds took from the room. */
  readonly owed: bigint;
  /** What is owed for good: the overdraft minus what pending holds took from it (billable, repayable). */
  readonly settled: bigint;
}

/** An overage invoice: a wallet's debt billed at its price. */
export interface OverageInvoiceRecord {
  readonly id: string;
  readonly customerId: string;
  readonly walletId: string;
  readonly credits: bigint;
  /** Money per credit, at 9 decimals. */
  readonly price: bigint;
  readonly currency: string;
  /** credits × price, rounded once. */
  readonly amount: bigint;
  readonly reason: "renewal" | "on_demand";
  /** The previous invoice's end for this wallet; null for its first. */
  readonly periodStart: number | null;
  readonly periodEnd: number;
  readonly transactionId: string;
  readonly createdAt: number;
}

const invoiceFrom = (r: Row): OverageInvoiceRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  walletId: String(r.wallet_id),
  credits: BigInt(String(r.credits)),
  price: BigInt(String(r.price)),
  currency: String(r.currency),
  amount: BigInt(String(r.amount)),
  reason: r.reason as OverageInvoiceRecord["reason"],
  periodStart: r.period_start === null ? null : ms(r.period_start),
  periodEnd: ms(r.period_end),
  transactionId: String(r.transaction_id),
  createdAt: ms(r.created_at),
});

/** Credits a customer's pending holds took from its pool's overdraft room (they go back on release). */
export async function heldFromOverdraft(
  ex: SqlExecutor,
  tenantId: string,
  customerId: string,
): Promise<bigint> {
  const { rows } = await ex.query(
    "SELECT draws FROM holds WHERE tenant_id = $1 AND customer_id = $2 AND status = 'pending'",
    [tenantId, customerId],
  );
  let held = 0n;
  for (const r of rows)
    for (const d of JSON.parse(String(r.draws)) as { grant_id: string | null; amount: string }[])
      if (d.grant_id === null) held += BigInt(d.amount);
  return held;
}

/** A wallet's overage state; `not_found` for no wallet, `invalid_argument` for a member's. */
export async function getOverage(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
): Promise<Result<OverageState>> {
  const { rows } = await ex.query(
    `SELECT id, customer_id, member_id, overage_source, ${OVERAGE_COLUMNS} FROM wallets WHERE tenant_id = $1 AND id = $2`,
    [tenantId, walletId],
  );
  const w = rows[0];
  if (!w) return fail("not_found", `No wallet ${walletId}.`);
  if (w.member_id !== null)
    return fail("invalid_argument", "Overage policies apply to a customer's pool wallet, not a member's.");
  const owed = BigInt(String(w.overdraft));
  const customerId = String(w.customer_id);
  return ok({
    walletId,
    customerId,
    policy: overagePolicyFrom(w),
    source: w.overage_source as OverageSource,
    owed,
    settled: settledOwed(owed, await heldFromOverdraft(ex, tenantId, customerId)),
  });
}

async function writePolicy(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
  policy: OveragePolicy,
  source: OverageSource,
): Promise<void> {
  await ex.query(
    `UPDATE wallets SET overage_mode = $3, overage_floor = $4, overage_price = $5, overage_currency = $6,
       overage_throttle = $7, overage_source = $8 WHERE tenant_id = $1 AND id = $2`,
    [
      tenantId,
      walletId,
      policy.mode,
      policy.floor.toString(),
      policy.price?.amount.toString() ?? null,
      policy.price?.currency ?? null,
      throttleJson(policy.throttle),
      source,
    ],
  );
}

async function lockPool(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
): Promise<Result<{ customerId: string; owed: bigint }>> {
  const { rows } = await ex.query(
    "SELECT customer_id, member_id, overdraft::text AS overdraft FROM wallets WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    [tenantId, walletId],
  );
  const w = rows[0];
  if (!w) return fail("not_found", `No wallet ${walletId}.`);
  if (w.member_id !== null)
    return fail("invalid_argument", "Overage policies apply to a customer's pool wallet, not a member's.");
  return ok({ customerId: String(w.customer_id), owed: BigInt(String(w.overdraft)) });
}

/**
 * Sets a pool wallet's own policy (it then overrides its plan's). What the wallet owes must
 * fit the new floor: bill it (a priced soft cap) or let a renewal repay it first.
 */
export async function setWalletOverage(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
  input: OveragePolicyInput,
): Promise<Result<OverageState>> {
  const policy = validateOveragePolicy(input);
  if (!policy.ok) return policy;
  const w = await lockPool(ex, tenantId, walletId);
  if (!w.ok) return w;
  if (w.value.owed > -policy.value.floor)
    return fail(
      "invalid_argument",
      "The wallet already owes more (its overdraft) than this floor allows; bill or repay it first.",
      { field: "floor", owed: w.value.owed.toString() },
    );
  await writePolicy(ex, tenantId, walletId, policy.value, "wallet");
  return getOverage(ex, tenantId, walletId);
}

/** The overage policy of the plan of the customer's active subscription, if any. */
async function activePlanPolicy(
  ex: SqlExecutor,
  tenantId: string,
  customerId: string,
): Promise<OveragePolicy | null> {
  const { rows } = await ex.query(
    `SELECT p.definition FROM subscriptions s JOIN plans p ON p.tenant_id = s.tenant_id AND p.id = s.plan_id
     WHERE s.tenant_id = $1 AND s.customer_id = $2 AND s.status = 'active' ORDER BY s.created_at DESC LIMIT 1`,
    [tenantId, customerId],
  );
  if (!rows[0]) return null;
  const plan = JSON.parse(String(rows[0].definition), (_k, v) =>
    v !== null && typeof v === "object" && "$bigint" in v ? BigInt(v.$bigint) : v,
  ) as Plan;
  return plan.overage ?? null;
}

/**
 * Removes a wallet's own policy: it takes its active plan's again, else the default hard cap.
 * The floor is lowered to what the wallet owes if needed ({@link fitFloor}).
 */
export async function clearWalletOverage(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
): Promise<Result<OverageState>> {
  const w = await lockPool(ex, tenantId, walletId);
  if (!w.ok) return w;
  const plan = await activePlanPolicy(ex, tenantId, w.value.customerId);
  await writePolicy(
    ex,
    tenantId,
    walletId,
    fitFloor(plan ?? DEFAULT_OVERAGE, w.value.owed),
    plan ? "plan" : "default",
  );
  return getOverage(ex, tenantId, walletId);
}

/**
 * Applies a plan's policy to a subscriber's pool wallet (at subscribe and at a plan change in
 * force), unless the wallet set its own. A plan without one puts a wallet that had its previous
 * plan's back on the default. The floor never cuts below what is owed ({@link fitFloor}).
 */
export async function applyPlanOverage(
  ex: SqlExecutor,
  tenantId: string,
  poolWalletId: string,
  plan: Pick<Plan, "overage">,
): Promise<void> {
  const { rows } = await ex.query(
    "SELECT overage_source, overdraft::text AS overdraft FROM wallets WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    [tenantId, poolWalletId],
  );
  const w = rows[0];
  if (!w || w.overage_source === "wallet") return;
  const policy = plan.overage ?? null;
  if (policy === null && w.overage_source === "default") return;
  await writePolicy(
    ex,
    tenantId,
    poolWalletId,
    fitFloor(policy ?? DEFAULT_OVERAGE, BigInt(String(w.overdraft))),
    policy ? "plan" : "default",
  );
}

/** An invoice planned inside a write, inserted once the write is done. */
export interface PlannedInvoice {
  readonly bill: OverageBill;
  readonly customerId: string;
  readonly walletId: string;
  readonly reason: OverageInvoiceRecord["reason"];
  readonly periodEnd: number;
  readonly renewalKey: string | null;
}

/** Inserts a planned invoice (its transaction is written); its start is the wallet's last invoice's end. */
export async function insertInvoice(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  p: PlannedInvoice,
): Promise<OverageInvoiceRecord> {
  const last = await ex.query(
    "SELECT max(period_end) AS at FROM overage_invoices WHERE tenant_id = $1 AND wallet_id = $2",
    [tenantId, p.walletId],
  );
  const start = last.rows[0]?.at ?? null;
  const id = store.newId("ovi");
  const now = store.now(tenantId);
  const { rows } = await ex.query(
    `INSERT INTO overage_invoices (tenant_id, id, customer_id, wallet_id, credits, price, currency, amount, reason,
       period_start, period_end, renewal_key, transaction_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *`,
    [
      tenantId,
      id,
      p.customerId,
      p.walletId,
      p.bill.credits.toString(),
      p.bill.price.amount.toString(),
      p.bill.price.currency,
      p.bill.amount.toString(),
      p.reason,
      start === null ? null : iso(ms(start)),
      iso(p.periodEnd),
      p.renewalKey,
      p.bill.transaction.id,
      iso(now),
    ],
  );
  const invoice = invoiceFrom(rows[0]!);
  await store.emit(ex, tenantId, "overage.invoiced", {
    invoice_id: invoice.id,
    wallet_id: invoice.walletId,
    customer_id: invoice.customerId,
    credits: formatAmount(invoice.credits),
    price: formatAmount(invoice.price),
    currency: invoice.currency,
    amount: formatAmount(invoice.amount),
    reason: invoice.reason,
    period_start: invoice.periodStart === null ? null : iso(invoice.periodStart),
    period_end: iso(invoice.periodEnd),
    transaction_id: invoice.transactionId,
  });
  return invoice;
}

/**
 * Bills what a pool wallet owes now, on demand, at its soft cap's price: the overdraft moves
 * to `overage_receivable` in one balanced transaction, and an invoice is recorded. Credits its
 * pending holds took from the overdraft are not billed yet (they go back on release). Null
 * when nothing is owed. `invalid_argument` when the wallet's policy has no price.
 */
export async function billOverage(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  walletId: string,
): Promise<Result<OverageInvoiceRecord | null>> {
  const found = await getOverage(ex, tenantId, walletId);
  if (!found.ok) return found;
  if (found.value.policy.mode !== "soft_cap" || !found.value.policy.price)
    return fail(
      "invalid_argument",
      "This wallet's overage has no price: only a soft_cap policy with a price is billed.",
      { field: "price" },
    );
  let planned: PlannedInvoice | null = null;
  const r = await store.mutate(ex, tenantId, walletId, [], async (ctx) => {
    // Read again under the wallet's lock: the first read may predate a concurrent charge.
    const state = await getOverage(ex, tenantId, walletId);
    if (!state.ok) return state;
    const bill = planOverageBill(ctx, {
      customerId: state.value.customerId,
      walletId,
      owed: state.value.settled,
      policy: state.value.policy,
      reason: "overage billed on demand",
    });
    if (!bill) return ok(EMPTY);
    planned = {
      bill,
      customerId: state.value.customerId,
      walletId,
      reason: "on_demand",
      periodEnd: ctx.now,
      renewalKey: null,
    };
    return ok({ ...EMPTY, transactions: [bill.transaction] });
  });
  if (!r.ok) return r;
  const p = planned as PlannedInvoice | null;
  return ok(p ? await insertInvoice(ex, store, tenantId, p) : null);
}

/**
 * A renewal's overage work, planned inside its write (the caller holds the wallets' locks):
 * a priced soft cap bills what the closing period left owed (`closing` periods only); carry
 * deficit repays what is owed from the new period's grants (`newGrants`, the pool's first).
 */
export async function planRenewalOverage(
  ex: SqlExecutor,
  ctx: Context,
  input: {
    tenantId: string;
    poolWalletId: string;
    closesPeriod: boolean;
    periodEnd: number;
    renewalKey: string;
    newGrants: readonly Grant[];
  },
): Promise<Result<{ transactions: JournalTransaction[]; invoice: PlannedInvoice | null }>> {
  const state = await getOverage(ex, input.tenantId, input.poolWalletId);
  if (!state.ok) return state;
  const { policy, settled, customerId } = state.value;
  const transactions: JournalTransaction[] = [];
  let invoice: PlannedInvoice | null = null;
  if (input.closesPeriod) {
    const bill = planOverageBill(ctx, {
      customerId,
      walletId: input.poolWalletId,
      owed: settled,
      policy,
      reason: "overage billed at the period renewal",
    });
    if (bill) {
      transactions.push(bill.transaction);
      invoice = {
        bill,
        customerId,
        walletId: input.poolWalletId,
        reason: "renewal",
        periodEnd: input.periodEnd,
        renewalKey: input.renewalKey,
      };
    }
  }
  const pool = input.newGrants.filter((g) => g.walletId === input.poolWalletId);
  const others = input.newGrants.filter((g) => g.walletId !== input.poolWalletId);
  const repay = planDeficitRepay(ctx, {
    customerId,
    poolWalletId: input.poolWalletId,
    owed: settled,
    policy,
    newGrants: [...pool, ...others],
  });
  if (repay) transactions.push(repay.transaction);
  return ok({ transactions, invoice });
}

/** Overage invoices, newest id last, by wallet or customer. */
export async function listOverageInvoices(
  ex: SqlExecutor,
  tenantId: string,
  filter: { walletId?: string | null; customerId?: string | null },
  page: { after?: string | null; limit: number },
): Promise<Page<OverageInvoiceRecord>> {
  const { rows } = await ex.query(
    `SELECT * FROM overage_invoices WHERE tenant_id = $1 AND ($2::text IS NULL OR wallet_id = $2)
     AND ($3::text IS NULL OR customer_id = $3) AND ($4::text IS NULL OR id > $4) ORDER BY id LIMIT $5`,
    [tenantId, filter.walletId ?? null, filter.customerId ?? null, page.after ?? null, page.limit + 1],
  );
  return paginate(rows.map(invoiceFrom), page.limit, (x) => x.id);
}

const EMPTY = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };
