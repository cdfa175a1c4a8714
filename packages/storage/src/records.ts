import type {
  Entry,
  Grant,
  GrantSource,
  GrantStatus,
  JournalTransaction,
  SystemAccount,
} from "@drawdown/core";
import type { Row, SqlExecutor } from "./sql.js";

/** A tenant: one vendor environment (live or test). */
export interface Tenant {
  readonly id: string;
  readonly name: string;
  readonly environment: "live" | "test";
  readonly createdAt: number;
}

/** An API key as stored: never its secret. */
export interface ApiKey {
  readonly id: string;
  readonly tenantId: string;
  readonly kind: "secret" | "restricted";
  /** Restricted keys read one customer only. */
  readonly customerId: string | null;
  readonly name: string;
  readonly prefix: string;
  readonly createdAt: number;
  readonly revokedAt: number | null;
}

export type Metadata = Readonly<Record<string, string>>;

export interface Customer {
  readonly id: string;
  readonly externalId: string | null;
  readonly kind: "individual" | "organization";
  readonly name: string | null;
  readonly metadata: Metadata;
  /** The customer's own wallet (its pool), created with it. */
  readonly walletId: string;
  readonly createdAt: number;
}

export interface Subject {
  readonly id: string;
  readonly customerId: string;
  readonly kind: "member" | "agent" | "workflow";
  readonly externalId: string | null;
  readonly name: string | null;
  readonly metadata: Metadata;
  readonly createdAt: number;
}

export interface WalletRecord {
  readonly id: string;
  readonly customerId: string;
  readonly memberId: string | null;
  readonly balance: bigint;
  /** Credits its pending holds reserve (its hold account). */
  readonly held: bigint;
  readonly createdAt: number;
}

/** A grant with what storage adds: its customer and when its status last changed. */
export interface GrantRecord extends Grant {
  readonly customerId: string;
  readonly statusAt: number | null;
}

/** A journal transaction as stored, with its position in the tenant's journal. */
export interface TransactionRecord extends JournalTransaction {
  readonly seq: string;
}

/** A page of results and the cursor of the next one (null on the last page). */
export interface Page<T> {
  readonly items: T[];
  readonly next: string | null;
}

/** A page of a list read with `LIMIT limit + 1`: the first `limit` rows, and a cursor when more follow. */
export function paginate<T>(rows: T[], limit: number, cursorOf: (item: T) => string): Page<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, next: rows.length > limit && last !== undefined ? cursorOf(last) : null };
}

const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const msOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : ms(v));
const str = (v: unknown): string => String(v);
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const big = (v: unknown): bigint => BigInt(String(v));
const json = (v: unknown): Metadata => (typeof v === "string" ? JSON.parse(v) : (v as Metadata)) ?? {};

export const toTenant = (r: Row): Tenant => ({
  id: str(r.id),
  name: str(r.name),
  environment: r.environment as Tenant["environment"],
  createdAt: ms(r.created_at),
});

export const toApiKey = (r: Row): ApiKey => ({
  id: str(r.id),
  tenantId: str(r.tenant_id),
  kind: r.kind as ApiKey["kind"],
  customerId: strOrNull(r.customer_id),
  name: str(r.name),
  prefix: str(r.prefix),
  createdAt: ms(r.created_at),
  revokedAt: msOrNull(r.revoked_at),
});

export const toCustomer = (r: Row): Customer => ({
  id: str(r.id),
  externalId: strOrNull(r.external_id),
  kind: r.kind as Customer["kind"],
  name: strOrNull(r.name),
  metadata: json(r.metadata),
  walletId: str(r.wallet_id),
  createdAt: ms(r.created_at),
});

export const toSubject = (r: Row): Subject => ({
  id: str(r.id),
  customerId: str(r.customer_id),
  kind: r.kind as Subject["kind"],
  externalId: strOrNull(r.external_id),
  name: strOrNull(r.name),
  metadata: json(r.metadata),
  createdAt: ms(r.created_at),
});

export const toWallet = (r: Row): WalletRecord => ({
  id: str(r.id),
  customerId: str(r.customer_id),
  memberId: strOrNull(r.member_id),
  balance: big(r.balance),
  held: r.held === undefined ? 0n : big(r.held),
  createdAt: ms(r.created_at),
});

/** A grant's columns by name, not `*`: a statement with fixed columns can be prepared (see sql.ts). */
export const GRANT_COLUMNS =
  "id, wallet_id, customer_id, amount, remaining, source, cost_basis, currency, effective_at, expires_at, priority, scope, metadata, status, status_at, created_at";

/**
 * The grants a batch writer draws from, read in the same pipelined round as its wallet lock:
 * the active grants with something left, and those due to expire at `now`, of the wallets
 * `walletScope` selects (a predicate over `wallets` whose parameters are `params`, `$1` the
 * tenant). `ARRAY(…)` keeps the plan an index scan per wallet, as with a list of ids. The lock
 * statement's snapshot may miss a wallet created since: keep only the rows of wallets the lock
 * returned.
 */
export const readDrawableGrants = (
  ex: SqlExecutor,
  walletScope: string,
  params: readonly unknown[],
  now: number,
) =>
  ex.query(
    `SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1
       AND wallet_id = ANY(ARRAY(SELECT id FROM wallets WHERE ${walletScope}))
       AND status = 'active' AND (remaining > 0 OR expires_at <= $${params.length + 1})`,
    [...params, new Date(now).toISOString()],
  );

export const toGrant = (r: Row): GrantRecord => ({
  id: str(r.id),
  walletId: str(r.wallet_id),
  customerId: str(r.customer_id),
  amount: big(r.amount),
  remaining: big(r.remaining),
  source: r.source as GrantSource,
  costBasis: big(r.cost_basis),
  currency: strOrNull(r.currency),
  effectiveAt: ms(r.effective_at),
  expiresAt: msOrNull(r.expires_at),
  priority: Number(r.priority),
  scope: (r.scope as string[] | null) ?? null,
  metadata: json(r.metadata),
  status: r.status as GrantStatus,
  statusAt: msOrNull(r.status_at),
  createdAt: ms(r.created_at),
});

export const toEntry = (r: Row): Entry => ({
  account:
    r.account === "grant"
      ? { kind: "grant", grantId: str(r.grant_id), walletId: str(r.wallet_id) }
      : r.account === "overdraft" || r.account === "hold"
        ? { kind: r.account, walletId: str(r.wallet_id) }
        : { kind: "system", name: r.account as SystemAccount },
  amount: big(r.amount),
  unit: "credit",
});

export const toTransaction = (r: Row, entries: Entry[]): TransactionRecord => ({
  id: str(r.id),
  seq: str(r.seq),
  kind: r.kind as JournalTransaction["kind"],
  customerId: str(r.customer_id),
  postedAt: ms(r.posted_at),
  reason: strOrNull(r.reason),
  reversesId: strOrNull(r.reverses_id),
  action: strOrNull(r.action),
  entries,
});
