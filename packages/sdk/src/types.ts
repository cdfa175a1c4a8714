import type { GrantSource, SystemAccount, TransactionKind } from "@drawdown/core";

/**
 * The wire types of the Drawdown API, written here (the SDK never imports the server).
 * Field names are exactly the wire's: snake_case. Every amount in a response is a decimal
 * string of credits such as `"12.5"`; convert with {@link toUnits} when you need arithmetic.
 * Every time is an RFC 3339 string such as `"2026-12-31T23:59:59.000Z"`.
 *
 * The server's end-to-end tests check that these types have exactly the fields of the
 * documented response schemas, and every response body against those schemas.
 */

export type { GrantSource, SystemAccount, TransactionKind };

// ------------------------------------------------------------------ inputs

/**
 * An amount of credits as the SDK accepts it. Never a JS `number` (floating point cannot
 * hold every amount exactly; passing one throws a `TypeError`).
 *
 * - a `string`: decimal credits, e.g. `"12.5"` or `"0.000015"` (at most 9 decimals);
 * - a `bigint`: **units** at scale 9, where 1 credit = 1_000_000_000n units, so
 *   `12_500_000_000n` is 12.5 credits. Use {@link toUnits} to get units from a string.
 */
export type AmountInput = string | bigint;

/** A time as the SDK accepts it: an RFC 3339 string, or a `Date` (sent as its ISO string). */
export type TimeInput = string | Date;

/** Your own key-value pairs: up to 50 keys of 40 characters, string values up to 500. */
export type Metadata = Record<string, string>;

/** Options every call accepts. */
export interface RequestOptions {
  /** Aborts the call (and its retries). */
  signal?: AbortSignal;
}

/** Options every POST accepts. */
export interface PostOptions extends RequestOptions {
  /**
   * The `Idempotency-Key` header: the same key with the same request returns the first result
   * and changes nothing; with a different request it fails with `idempotency_key_reused`.
   * 1 to 255 visible ASCII characters. When absent the SDK generates one (a random UUID)
   * for the call, so its own retries never apply a change twice.
   */
  idempotencyKey?: string;
}

/** Paging parameters of list endpoints. */
export interface PageParams {
  /** Items per page, 1 to 200; default 50. */
  limit?: number;
  /** `next_cursor` of the previous page, unchanged. */
  cursor?: string;
}

// ------------------------------------------------------------------ requests

/** Body of `customers.create`. */
export interface CustomerCreateParams {
  /** A B2C individual or a B2B organization. */
  kind: "individual" | "organization";
  /** Your id for the customer; unique per tenant. */
  external_id?: string;
  name?: string;
  metadata?: Metadata;
}

/** Query of `customers.list`. */
export interface CustomerListParams extends PageParams {
  /** Only the customer with this external id. */
  external_id?: string;
}

/** Body of `subjects.create`. */
export interface SubjectCreateParams {
  /** A member (a person; may hold a wallet), an agent or a workflow. */
  kind: "member" | "agent" | "workflow";
  external_id?: string;
  name?: string;
  metadata?: Metadata;
}

/** Body of `wallets.create`. */
export interface WalletCreateParams {
  /** The customer. */
  customer_id: string;
  /** The member (a subject of kind `member`) who will hold the wallet. */
  member_id: string;
}

/** Fields shared by grants and credit adjustments. */
interface GrantFields {
  /** When the remainder expires to breakage; `null` (or absent): never. */
  expires_at?: TimeInput | null;
  /** Lower is drawn first; 0 to 100, default 50. */
  priority?: number;
  /** Actions the grant may pay for (`"image.*"` admits every image action); null or absent: all. */
  scope?: string[] | null;
  metadata?: Metadata;
}

/** Body of `grants.create`. */
export interface GrantCreateParams extends GrantFields {
  /** The wallet that holds the grant. */
  wallet_id: string;
  /** Credits granted; positive. A decimal string of credits, or a bigint of units (scale 9). */
  amount: AmountInput;
  /** Where the credits came from. */
  source: GrantSource;
  /** Money paid per credit, in `currency`; 0 (the default) for free credits. String or units. */
  cost_basis?: AmountInput;
  /** ISO 4217 code such as "USD"; required with a cost basis above zero. */
  currency?: string | null;
  /** When the credits become usable; default now. */
  effective_at?: TimeInput;
}

/** Body of `adjustments.credit`. */
export interface CreditAdjustmentParams extends GrantFields {
  /** Credits to add; positive. A decimal string of credits, or a bigint of units (scale 9). */
  amount: AmountInput;
  /** Why: required, kept in the journal. */
  reason: string;
}

/** Body of `adjustments.debit`. */
export interface DebitAdjustmentParams {
  /** Credits to take; positive. A decimal string of credits, or a bigint of units (scale 9). */
  amount: AmountInput;
  /** Why: required, kept in the journal. */
  reason: string;
  /** The action paid for; scoped grants admit only matching actions. Absent: unscoped grants only. */
  action?: string;
  /** Take from this grant only. */
  grant_id?: string;
}

/** Query of `grants.list`. */
export interface GrantListParams extends PageParams {
  wallet_id?: string;
  customer_id?: string;
  /** Stored status. */
  status?: "active" | "voided" | "expired";
}

/** Body of `grants.void`. */
export interface GrantVoidParams {
  /** Why, kept in the journal. */
  reason?: string;
}

/** Body of `grants.extend`. */
export interface GrantExtendParams {
  /** The new, later expiry; `null`: never expires. */
  expires_at: TimeInput | null;
  /** Why: required, recorded with the change. */
  reason: string;
}

/** Query of `transactions.list`. */
export interface TransactionListParams extends PageParams {
  /** Transactions touching this wallet's grants. */
  wallet_id?: string;
  /** This customer's transactions. */
  customer_id?: string;
  /** Posted at or after. */
  from?: TimeInput;
  /** Posted before. */
  to?: TimeInput;
}

/** Body of `transactions.reverse`. */
export interface ReversalParams {
  /** Why: required, kept in the journal. */
  reason: string;
}

/** Body of `apiKeys.create`. */
export interface ApiKeyCreateParams {
  /** `secret`: everything (your backend). `restricted`: reads one customer (a customer-facing page). */
  kind: "secret" | "restricted";
  name: string;
  /** For a restricted key (required then): the one customer it may read. */
  customer_id?: string;
}

// ------------------------------------------------------------------ responses

/** A page of a list. Pass `next_cursor` as `cursor` for the next page; null on the last. */
export interface List<T> {
  object: "list";
  data: T[];
  next_cursor: string | null;
}

export interface Customer {
  object: "customer";
  id: string;
  external_id: string | null;
  kind: "individual" | "organization";
  name: string | null;
  metadata: Metadata;
  /** The customer's own wallet: the pool its members share. */
  wallet_id: string;
  created_at: string;
}

export interface Subject {
  object: "subject";
  id: string;
  customer_id: string;
  kind: "member" | "agent" | "workflow";
  external_id: string | null;
  name: string | null;
  metadata: Metadata;
  created_at: string;
}

export interface Wallet {
  object: "wallet";
  id: string;
  customer_id: string;
  /** Null for the customer's pool wallet. */
  member_id: string | null;
  /** Sum of the grants' remaining credits (decimal string). */
  balance: string;
  created_at: string;
}

/** A grant's status as a reader sees it. */
export type GrantStatus = "active" | "pending" | "depleted" | "expired" | "voided";

/** A recorded change to a grant (GET of one grant lists them, oldest first). */
export interface GrantChange {
  kind: "expiry_extended";
  /** The expiry before; null: never. */
  from: string | null;
  /** The expiry after; null: never. */
  to: string | null;
  reason: string;
  at: string;
}

export interface Grant {
  object: "grant";
  id: string;
  wallet_id: string;
  customer_id: string;
  /** Credits granted (decimal string). */
  amount: string;
  /** Credits left (decimal string). */
  remaining: string;
  source: GrantSource;
  /** Money per credit (decimal string); "0" for free credits. */
  cost_basis: string;
  currency: string | null;
  effective_at: string;
  expires_at: string | null;
  priority: number;
  scope: string[] | null;
  metadata: Metadata;
  /** active; pending (not yet effective); depleted (nothing left); expired; voided. */
  status: GrantStatus;
  /** When it was voided or expired. */
  status_changed_at: string | null;
  created_at: string;
  /** Recorded changes, oldest first: present on `grants.get` only. */
  changes?: GrantChange[];
}

/** What `grants.create` and `adjustments.credit` return: the grant and its journal transaction. */
export interface GrantCreated {
  object: "grant";
  grant: Grant;
  transaction_id: string;
}

/** One line of a transaction. Positive adds to the account, negative takes from it. */
export interface Entry {
  /** `grant`, `overdraft` (a wallet's credits owed), or a system account: issuance, consumption, adjustments, breakage, voided. */
  account: "grant" | "overdraft" | SystemAccount;
  wallet_id: string | null;
  grant_id: string | null;
  unit: "credit";
  /** Signed decimal string. */
  amount: string;
}

/** An immutable journal transaction; its entries sum to zero per unit. */
export interface Transaction {
  object: "transaction";
  id: string;
  kind: TransactionKind;
  customer_id: string;
  posted_at: string;
  reason: string | null;
  action: string | null;
  /** Set on a reversal: the transaction it undoes. */
  reverses_id: string | null;
  entries: Entry[];
}

/** One grant holding credits, as a balance lists it (in burn-down order). */
export interface BalanceGrant {
  id: string;
  source: GrantSource;
  remaining: string;
  priority: number;
  scope: string[] | null;
  effective_at: string;
  expires_at: string | null;
  status: GrantStatus;
}

/** Available credits of one scope; a null scope pays for every action. */
export interface ScopeBalance {
  scope: string[] | null;
  available: string;
}

export interface Balance {
  object: "balance";
  wallet_id: string;
  customer_id: string;
  member_id: string | null;
  /** Sum of the grants' remaining credits. */
  total: string;
  /** Usable now: effective, unexpired grants. */
  available: string;
  /** In grants not yet effective. */
  pending: string;
  /** In grants past expiry awaiting breakage. */
  expired: string;
  /** When the balance was read. */
  as_of: string;
  /** Grants holding credits, in burn-down order. */
  grants: BalanceGrant[];
  /** Available credits per scope. */
  scopes: ScopeBalance[];
}

/** One difference between the materialized balances and the journal. */
export interface ReconcileDifference {
  kind: string;
  id: string;
  message: string;
}

export interface ReconcileReport {
  object: "reconcile_report";
  /** True when there is no difference. */
  ok: boolean;
  wallets: number;
  grants: number;
  transactions: number;
  differences: ReconcileDifference[];
}

export interface ApiKey {
  object: "api_key";
  id: string;
  kind: "secret" | "restricted";
  /** For a restricted key: the one customer it may read. */
  customer_id: string | null;
  name: string;
  /** The first characters of the key, to recognize it. */
  prefix: string;
  created_at: string;
  revoked_at: string | null;
  /** The key itself: returned once, by `apiKeys.create`. */
  secret?: string;
}

/** An RFC 9457 problem document, as every error response carries it. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  code: string;
  detail: string;
  request_id: string;
  errors?: { path: string; message: string }[];
  details?: Record<string, string>;
}
