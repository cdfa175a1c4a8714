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
  /**
   * When the remainder expires to breakage; `null`: never; absent: by the tenant's expiry
   * policy for the grant's source (never, unless one is set with `grants.setExpiryPolicy`).
   */
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

/**
 * Body of `testClock.advance`: exactly one of `to` (where the clock moves to; a retry of the
 * same `to` is harmless) and `seconds` (how far it moves, 1 to 31,622,400; relative, so a
 * retry moves it again).
 */
export type TestClockAdvanceParams =
  | {
      /** Where the clock moves to: now or later. */
      to: TimeInput;
      seconds?: never;
    }
  | {
      /** How far the clock moves, in whole seconds: 1 to 31,622,400 (366 days). */
      seconds: number;
      to?: never;
    };

// ------------------------------------------------------------------ metering requests

/**
 * A quantity of an event (tokens, calls, seconds, documents) as the SDK accepts it. Never a
 * fractional JS number.
 *
 * - a `bigint`: a whole count, e.g. `1200n` tokens;
 * - a `number`: a whole count that is a safe integer, e.g. `1200` (anything else throws a
 *   `TypeError`: send fractions as strings);
 * - a `string`: a decimal with up to 9 decimals, e.g. `"1.25"` GPU seconds.
 */
export type QuantityInput = bigint | number | string;

/** What an event was: `{ model: "gpt-4o", tier: "turbo" }`. Lowercase names, string values. */
export type Dimensions = Record<string, string>;

/** Fields a usage event carries in both shapes (in a CloudEvent, inside `data`). */
interface UsageEventData {
  /** The customer who pays. */
  customer_id: string;
  /** The member, agent or workflow of the customer that used it (a member's own wallet pays first). */
  subject_id?: string;
  /** What the event was; rate card lines and multipliers match on these. */
  dimensions?: Dimensions;
  /** How much, by quantity name: `{ input_tokens: 1200, output_tokens: 350n, gpu_seconds: "1.25" }`. */
  quantities: Record<string, QuantityInput>;
  /** `failed` events are recorded at zero and never reduce a balance (default `succeeded`). */
  status?: "succeeded" | "failed";
  /** The agent run or workflow the event belongs to (see `runs.get`). */
  run_id?: string;
  /**
   * A cost you measured yourself, in the cost table's currency (money at 9 decimals: a decimal
   * string, or a bigint of units where 1 = 10^-9); it replaces the cost table for this event.
   */
  reported_cost?: AmountInput;
}

/** A usage event in the native shape. */
export interface UsageEventInput extends UsageEventData {
  /** Your id for the event: deduplicated per tenant, forever (a retry answers the first result). */
  id: string;
  /** What was done, e.g. `"chat.completion"`; the rate card must know it. */
  action: string;
  /** When it happened; default when received. Up to 7 days late, at most 5 minutes ahead. */
  time?: TimeInput;
}

/**
 * A usage event in the CloudEvents 1.0 JSON shape: `type` is the action and `data` carries the
 * rest. Extension attributes are allowed (and ignored).
 */
export interface CloudEventInput {
  specversion: "1.0";
  /** Your id for the event, deduplicated per tenant forever. */
  id: string;
  /** Who sent it, e.g. `"/agents/summarizer"`. */
  source: string;
  /** The action, e.g. `"chat.completion"`. */
  type: string;
  /** When it happened (RFC 3339); default when received. */
  time?: TimeInput;
  /** The subject id, when `data.subject_id` is absent. */
  subject?: string;
  datacontenttype?: string;
  data: UsageEventData;
  [extension: string]: unknown;
}

/** Either event shape. */
export type EventInput = UsageEventInput | CloudEventInput;

/** A graduated volume tier: `rate` applies to the customer's monthly quantity up to `up_to`. */
export interface RateTierInput {
  /** Cumulative quantity in the calendar month (UTC) where the tier ends; `null` on the last tier only. */
  up_to: QuantityInput | null;
  /** Credits per `per` units, a decimal string with up to 12 decimals, e.g. `"0.000015"`. */
  rate: string;
}

/** A rate card (or cost table) line: an action, dimension filters and the quantity it prices. */
export interface RateLineInput {
  /** Names the line; volume tiers count per line id. */
  id: string;
  /** An action, or `"prefix.*"` for every action under a prefix. */
  action: string;
  /** Dimension filters: every one must equal the event's dimension (the most specific line wins). */
  match?: Dimensions;
  /** The quantity priced, e.g. `"output_tokens"`. */
  quantity: string;
  /**
   * Credits (money, in a cost table) per `per` units: a decimal string with up to 12
   * decimals, e.g. `"0.000015"`. Give `rate` or `tiers`, or `free: true`.
   */
  rate?: string;
  /** A power of ten the rate is stated per: `"1"` (default), `"1000"`, `1_000_000`… up to 10^9. */
  per?: string | bigint | number;
  /** Graduated tiers by the customer's volume in the month (instead of `rate`). */
  tiers?: RateTierInput[];
  /** The least the line charges an event that has its quantity, in credits (string or bigint units). */
  minimum?: AmountInput;
  /** A free action: rated and recorded at zero. */
  free?: boolean;
}

/** A multiplier: every line of an event whose `dimension` equals `value` is multiplied by `factor`. */
export interface RateMultiplierInput {
  dimension: string;
  value: string;
  /** A decimal with up to 6 decimals, e.g. `"6"` or `"1.5"`. */
  factor: string;
}

/** Events that match are recorded at zero with the reason (they never reduce a balance). */
export interface NonBillableRuleInput {
  /** An action or `"prefix.*"`. */
  action: string;
  match?: Dimensions;
  reason: string;
}

/** Body of `rateCards.create`. */
export interface RateCardCreateParams {
  /** Unique per tenant. The tenant's first card becomes its default. */
  name: string;
}

/** Body of `rateCards.publishVersion`: a new immutable version's content and start. */
export interface RateCardVersionParams {
  /** When it takes effect: now (default) or later, never backdated; after the latest version. */
  effective_at?: TimeInput;
  lines: RateLineInput[];
  multipliers?: RateMultiplierInput[];
  non_billable?: NonBillableRuleInput[];
}

/** Body of `customers.setPricing`. */
export interface CustomerPricingParams {
  /** The card that prices the window's events; `null` or absent: the tenant's default card. */
  rate_card_id?: string | null;
  /** A version to use whatever the event's time; `null` or absent: the version in force at the event's time. */
  pinned_version_id?: string | null;
  /** Contract lines that take precedence over the card's, for events timed in their window. */
  overrides?: RateLineInput[];
  /**
   * The first instant the card, pin and overrides rate events (by each event's own time);
   * absent or null: since always. With `overrides_until`, the window replaces exactly that part
   * of the customer's pricing history and leaves the base; with neither, the whole history, and
   * the terms become the base.
   */
  overrides_from?: TimeInput | null;
  /** The first instant they no longer do, after `overrides_from`; absent or null: for ever. */
  overrides_until?: TimeInput | null;
}

/** Body of `costTables.publish`. */
export interface CostTableParams {
  /** When it takes effect: now (default) or later. */
  effective_at?: TimeInput;
  /** ISO 4217, e.g. `"USD"`. */
  currency: string;
  /** Money per `per` units of each quantity, priced like rate card lines. */
  lines: RateLineInput[];
}

/** The overage modes (see docs/concepts.md, "Overage policies"). */
export type OverageMode = "hard_cap" | "soft_cap" | "throttle" | "carry_deficit" | "fair_use";

/** Body of `wallets.setOverage`, and a plan's `overage`. */
export interface OveragePolicyParams {
  /**
   * `hard_cap`: never below zero. `soft_cap`: down to `floor`, billed at `price` when set.
   * `throttle`: below `throttle.level`, only the listed actions proceed. `carry_deficit`: down
   * to `floor`, repaid by the next period's plan credits. `fair_use`: never denied.
   */
  mode: OverageMode;
  /** The lowest balance, zero or negative (string or bigint units), e.g. `"-100"`; default 0. */
  floor?: AmountInput;
  /** soft_cap only: money per credit the overage is billed at. */
  price?: { amount: AmountInput; currency: string };
  /** throttle only (required there). */
  throttle?: {
    /** Credits available (after the estimate) under which the throttle applies. */
    level: AmountInput;
    /** Actions (or `prefix.*`) still allowed below the level. */
    allowed_actions?: string[];
    /** The cheaper action to suggest. */
    fallback_action?: string;
  };
}

/** An overage invoice: a wallet's overage billed at its price. */
export interface OverageInvoice {
  object: "overage_invoice";
  id: string;
  customer_id: string;
  wallet_id: string;
  /** Credits billed. */
  credits: string;
  /** Money per credit. */
  price: string;
  currency: string;
  /** Money: credits × price, rounded once. */
  amount: string;
  /** `renewal` or `on_demand`. */
  reason: string;
  period_start: string | null;
  period_end: string;
  /** The `overage.bill` transaction. */
  transaction_id: string;
  created_at: string;
}

/** What `wallets.billOverage` answers: the invoice, or null when nothing was owed. */
export interface OverageBill {
  object: "overage_bill";
  wallet_id: string;
  invoice: OverageInvoice | null;
}

/** Query of `overageInvoices.list`. */
export interface OverageInvoiceListParams extends PageParams {
  wallet_id?: string;
  customer_id?: string;
}

/** Query of `reports.margin`. */
export interface MarginReportParams {
  /** One row per day (UTC) and per customer, action, model or run. */
  group_by: "customer" | "action" | "model" | "run";
  /** Events at or after. */
  from?: TimeInput;
  /** Events before. */
  to?: TimeInput;
  /** Only this customer's events. */
  customer_id?: string;
}

// ------------------------------------------------------------------ plans and subscriptions: requests

/** How long a plan's period lasts: `{ unit: "month", count: 1 }` is monthly. */
export interface PlanInterval {
  unit: "day" | "week" | "month" | "year";
  /** How many units a period lasts, 1 to 1000. */
  count: number;
}

/**
 * What a plan's rollover cap is: exactly one of an absolute amount, a percent of the period's
 * allotment, or a multiple of it.
 */
export interface RolloverCapInput {
  /** At most this many credits carried (string or bigint units). */
  absolute?: AmountInput;
  /** At most this percent (0 to 100) of the period's allotment. */
  percent_of_allotment?: number;
  /** At most this multiple of the period's allotment, e.g. `"3"` (string or bigint units). */
  multiple_of_allotment?: AmountInput;
}

/**
 * What happens to a period's unused credits at its end: `none` (they expire), `full`, `capped`
 * (with `cap`), or `declining` (with `schedule`, such as `[100, 50, 0]`). `full` and `capped`
 * may carry a credit at most `max_periods` times. Rollover needs an expiry at period end.
 */
export interface RolloverPolicyInput {
  kind: "none" | "full" | "capped" | "declining";
  /** For `capped`: exactly one of its three fields. */
  cap?: RolloverCapInput;
  /** A credit is carried at most this many times (1 to 120). */
  max_periods?: number;
  /** For `declining`: the percent carried at each successive period end, e.g. `[100, 50, 0]`. */
  schedule?: number[];
}

/** When a plan's credits expire: at the period end (default), never, or `months` after the grant. */
export interface ExpiryPolicyInput {
  kind: "period_end" | "never" | "rolling";
  /** For `rolling`: months after the grant (1 to 120). */
  months?: number;
}

/**
 * Who receives a plan's credits: `customer` (the default) puts the period's allotment in the
 * customer's pool wallet; `per_member` gives every member wallet the allotment each period,
 * `pool_share_percent` (0 to 100, required) of it paid into the customer's pool, shared by all
 * members, and the rest kept in the member's own wallet. The pool part rounds down; the
 * remainder stays personal. A `per_member` plan cannot be `per_seat`.
 */
export interface Allocation {
  mode: "customer" | "per_member";
  pool_share_percent?: number;
}

/** Body of `plans.create`. */
export interface PlanCreateParams {
  /** Unique per tenant. */
  name: string;
  /** The fee per period, in money: `{ amount: "20", currency: "USD" }`. */
  base_fee: { amount: AmountInput; currency: string };
  interval: PlanInterval;
  /** Credits included per period (per seat when `per_seat`), string or bigint units. */
  allotment: AmountInput;
  /** The allotment is per seat; default false. */
  per_seat?: boolean;
  /** Default `{ kind: "none" }`. */
  rollover?: RolloverPolicyInput;
  /** Default `{ kind: "period_end" }`. */
  expiry?: ExpiryPolicyInput;
  /** What a cancel does to the credits: void them now (`forfeit`) or let them last to the period end (default). */
  on_cancel?: "forfeit" | "keep_until_period_end" | "keep";
  /** Default `{ mode: "customer" }`; `{ mode: "per_member", pool_share_percent: 20 }` for 20% partial pooling. */
  allocation?: Allocation;
  /** The overage policy subscribers' pool wallets take, unless a wallet sets its own. */
  overage?: OveragePolicyParams;
}

/** Body of `subscriptions.create`. */
export interface SubscriptionCreateParams {
  customer_id: string;
  plan_id: string;
  /** Seats (per-seat plans), 0 to 1,000,000; default 1. */
  seats?: number;
  /** When the first period starts: now (default) or later, never in the past. */
  start_at?: TimeInput;
}

/** Body of `subscriptions.changeSeats`. */
export interface SeatChangeParams {
  /** The new seat count, 0 to 1,000,000. */
  seats: number;
}

/** Body of `subscriptions.changePlan`. */
export interface PlanChangeParams {
  /** The plan to change to; it must renew on the same interval. */
  plan_id: string;
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
  kind: "expiry_extended" | "expiry_shortened";
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
  /** The wallet's balance: its grants' remaining credits plus what pending holds reserve, minus what it owes. */
  total: string;
  /** Spendable now: effective, unexpired grants (pending holds are already out of it). */
  available: string;
  /** In grants not yet effective. */
  upcoming: string;
  /** Reserved by pending holds until they are settled, voided or expire. */
  held: string;
  /** In grants past expiry awaiting breakage. */
  expired: string;
  /** When the balance was read. */
  as_of: string;
  /** Grants holding credits, in burn-down order. */
  grants: BalanceGrant[];
  /** Available credits per scope. */
  scopes: ScopeBalance[];
  /**
   * For a member's wallet: the customer's pool, which a debit draws after the member's own
   * grants, and what it has available now (shared with every member). Null for a pool wallet.
   */
  pool: { wallet_id: string; available: string } | null;
  /** What a debit on this wallet can draw now: `available`, plus the pool's for a member's wallet. */
  spendable: string;
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

/** A tenant's time, as `testClock.get` answers it. */
export interface TestClock {
  object: "test_clock";
  /** The tenant's time: its test clock when frozen, else real time. */
  now: string;
  /** True once the clock was advanced: the tenant's time stands still until the next advance. */
  frozen: boolean;
  /** Only test tenants have a test clock. */
  environment: "test" | "live";
}

/** What `testClock.advance` answers. */
export interface TestClockAdvanced {
  object: "test_clock";
  /** The tenant's time before. */
  from: string;
  /** Where the clock was moved to. */
  to: string;
  /** The tenant's time after: `to`, frozen there. */
  now: string;
  /** Grants expired on the way, each at its own expiry time, in time order. */
  expired_grants: number;
}

// ------------------------------------------------------------------ metering responses

/** What an event was charged: recorded once, and answered again for every duplicate. */
export interface Charge {
  /** `charged`: credits moved; `zero`: failed, non-billable or free; `unpaid`: refused by a cap. */
  outcome: "charged" | "zero" | "unpaid";
  /** The rated charge, rounded once. */
  credits: string;
  /** Drawn from grants. */
  drawn: string;
  /** Put on the pool's overdraft under a soft cap. */
  overdraft: string;
  /** Refused by the hard cap or the floor: recorded, charged to nobody. */
  unpaid: string;
  /** `failed`, `non_billable: …`, `free`, `insufficient_credits`; null for a paid charge. */
  reason: string | null;
  /** The wallet the subject pays from (a member's own, or the pool). */
  wallet_id: string;
  rate_card_version_id: string;
  /** The `usage` journal transaction; null when nothing moved. */
  transaction_id: string | null;
}

/** One event's answer: accepted (with its charge), a duplicate (the first charge), or rejected. */
export interface EventResult {
  id: string;
  status: "accepted" | "duplicate" | "rejected";
  /** For accepted and duplicate events. */
  charge?: Charge;
  /** For a rejected event: a stable code such as `unknown_action` or `event_id_reused`. */
  code?: string;
  message?: string;
}

/** What `events.ingestBatch` returns: one result per event, in order. */
export interface EventBatchResult {
  object: "event_batch";
  accepted: number;
  duplicates: number;
  rejected: number;
  /** Credits charged by the accepted events (drawn plus overdraft; unpaid excluded). */
  credits: string;
  results: EventResult[];
}

/** One line of an event's explanation. */
export interface ExplainedLine {
  line_id: string;
  /** The quantity name priced, e.g. `"output_tokens"`. */
  quantity: string;
  /** How much of it the event had (decimal string). */
  amount: string;
  /** The power of ten the rates are per. */
  per: string;
  /** Tier pieces (one for a flat rate): quantity and its rate. */
  pieces: { quantity: string; rate: string }[];
  /** The line's exact credits before the one rounding (may have more than 9 decimals). */
  credits: string;
  minimum_applied: boolean;
  free: boolean;
  /** True when the line came from the customer's contract overrides. */
  override: boolean;
}

/** Why an event cost what it did. */
export interface Explanation {
  /** The product of the matching multipliers, e.g. `"6"`. */
  multiplier: string;
  lines: ExplainedLine[];
  /**
   * Where the override lines that priced the event came from (the contract's id, or
   * `"manual"`): the override terms in force at the event's own time. Null when the card priced
   * every line, and for events recorded before explanations named it.
   */
  override_source: string | null;
  /** The event's credits, rounded once (half away from zero) to 9 decimals. */
  rounded: string;
  /** The grants drawn, in burn-down order. */
  draws: { grant_id: string; wallet_id: string; credits: string }[];
}

/** What `events.get` returns: the event as recorded, its charge and the explanation. */
export interface UsageEvent {
  object: "event";
  id: string;
  customer_id: string;
  subject_id: string | null;
  action: string;
  dimensions: Dimensions;
  /** Quantities as decimal strings. */
  quantities: Record<string, string>;
  time: string;
  status: "succeeded" | "failed";
  run_id: string | null;
  received_at: string;
  charge: Charge;
  explanation: Explanation;
  /** Cost of goods sold: reported by you, or from the cost table in force; null when unknown. */
  cost: {
    amount: string;
    currency: string | null;
    reported: boolean;
    cost_table_version_id: string | null;
  } | null;
  /**
   * The money the drawn credits were bought for (their cost basis), in the currency of the
   * first paid grant drawn; paid grants drawn in other currencies are in `amounts`.
   */
  revenue: { amount: string; currency: string | null };
  /** revenue − cost; null when the cost is unknown or the money is in several currencies. */
  margin: string | null;
  /** Revenue, cost and margin per currency, by currency; never added across currencies. */
  amounts: { currency: string | null; revenue: string; cost: string; margin: string }[];
}

/** A rate line as stored (the wire form it was published with). */
export interface RateLine {
  id: string;
  action: string;
  match?: Dimensions;
  quantity: string;
  rate?: string;
  per?: string;
  tiers?: { up_to: string | null; rate: string }[];
  minimum?: string;
  free?: boolean;
}

/** An immutable, effective-dated version of a rate card. */
export interface RateCardVersion {
  object: "rate_card_version";
  id: string;
  rate_card_id: string;
  version: number;
  effective_at: string;
  created_at: string;
  lines: RateLine[];
  multipliers?: { dimension: string; value: string; factor: string }[];
  non_billable?: { action: string; match?: Dimensions; reason: string }[];
}

export interface RateCard {
  object: "rate_card";
  id: string;
  name: string;
  /** Customers without their own pricing follow the default card. */
  is_default: boolean;
  created_at: string;
  /** The version in force now; null before the first takes effect. */
  current_version_id: string | null;
  /** Every version, oldest first. */
  versions: RateCardVersion[];
}

/** One window of a customer's pricing history: the card, pin and override lines in force over it. */
export interface OverrideTerms {
  /** The contract that set these terms (its id), or `"manual"`. */
  source: string;
  /** The first instant they rate events; null: since always. */
  overrides_from: string | null;
  /** The first instant they no longer do; null: for ever. */
  overrides_until: string | null;
  /** The card that prices events of this window; null: the tenant's default card. */
  rate_card_id: string | null;
  /** The version of that card pinned for this window; null: the version in force at each event's time. */
  pinned_version_id: string | null;
  /** The window's override lines; may be none. */
  overrides: RateLine[];
}

/** What prices a customer's events timed outside every window of its pricing history. */
export interface BasePricing {
  /** Null: the tenant's default card. */
  rate_card_id: string | null;
  /** Null: the version in force at each event's time. */
  pinned_version_id: string | null;
}

/** A customer's contract pricing. */
export interface CustomerPricing {
  object: "customer_pricing";
  customer_id: string;
  /** The card just set, as set (for its window). */
  rate_card_id: string | null;
  /** The version just pinned, as set (for its window). */
  pinned_version_id: string | null;
  /** The override lines just set, as sent. */
  overrides: RateLine[];
  /** Their window, as set; null bounds open. */
  overrides_from: string | null;
  overrides_until: string | null;
  /** The base pricing after the change (a window set by hand leaves it as it was). */
  base: BasePricing;
  /** The customer's pricing history, oldest first; windows never overlap. */
  override_history: OverrideTerms[];
}

/** A published cost table version. */
export interface CostTableVersion {
  object: "cost_table_version";
  id: string;
  version: number;
  effective_at: string;
  currency: string;
  lines: RateLine[];
}

/** An overage policy's fields, as the API shows them (on a wallet and on a plan). */
export interface OveragePolicyFields {
  mode: string;
  /** The lowest balance (≤ 0). */
  floor: string;
  price: { amount: string; currency: string } | null;
  throttle: { level: string; allowed_actions: string[]; fallback_action: string | null } | null;
}

/** A pool wallet's overage policy, where it came from, and what the wallet owes. */
export interface OveragePolicy extends OveragePolicyFields {
  object: "overage_policy";
  wallet_id: string;
  /** `wallet` (set on the wallet: overrides the plan's), `plan` or `default`. */
  source: string;
  /** Credits owed now (the overdraft). */
  owed: string;
}

/** One row of the margin report. */
export interface MarginRow extends MoneyTotals {
  /** The day (UTC), `YYYY-MM-DD`. */
  day: string;
  /** The customer, action, model or run id; null for events without one (e.g. no model). */
  key: string | null;
  events: number;
  /** Credits charged (drawn plus overdraft). */
  credits: string;
  /** Charges refused by a cap, recorded unpaid. */
  unpaid: string;
}

/**
 * Revenue, cost and margin of usage events. Money is never added across currencies: `amounts`
 * has one entry per currency, and the single figures are filled only when there is at most one.
 */
export interface MoneyTotals {
  /** The one currency of `revenue` and `cost`; null when there is none (free credits, no cost table) or several. */
  currency: string | null;
  /** Money the consumed credits were bought for (their cost basis), in `currency`; null with several currencies. */
  revenue: string | null;
  /** Cost of goods sold (unknown costs count as 0), in `currency`; null with several currencies. */
  cost: string | null;
  /** revenue − cost; null with several currencies. */
  margin: string | null;
  /** Per currency, by currency (`currency` null: a reported cost with no cost table in force). */
  amounts: { currency: string | null; revenue: string; cost: string; margin: string }[];
}

export interface MarginReport {
  object: "margin_report";
  group_by: string;
  rows: MarginRow[];
}

/** A run's totals over its events: the run as `runs.get` answers (kept under its first name). */
export type RunSummary = import("./runs.js").Run;

/** One public rate. */
export interface PublicRate {
  action: string;
  /** The `model` filter, when the line has one. */
  model: string | null;
  match: Dimensions;
  quantity: string;
  rate: string | null;
  per: string;
  tiers: { up_to: string | null; rate: string }[] | null;
  minimum: string | null;
  free: boolean;
}

/** A version as the public sees it. */
export interface PublicRateCardVersion {
  version: number;
  effective_at: string;
  rates: PublicRate[];
  multipliers: { dimension: string; value: string; factor: string }[];
}

/** A tenant's default rate card, as its customers may see it (no key needed). */
export interface PublicRateCard {
  object: "public_rate_card";
  name: string;
  /** The version in force now. */
  current: PublicRateCardVersion | null;
  /** The next scheduled version, if any. */
  upcoming: PublicRateCardVersion | null;
}

// ------------------------------------------------------------------ plans and subscriptions: responses

/** A plan's rollover policy as stored (amounts as decimal strings). */
export interface RolloverPolicy {
  kind: "none" | "full" | "capped" | "declining";
  cap?: { absolute?: string; percent_of_allotment?: number; multiple_of_allotment?: string };
  max_periods?: number;
  schedule?: number[];
}

/** Grant sources whose default expiry a tenant sets; plan and rollover credits follow their plan. */
export type PolicySource = "purchase" | "top_up" | "gift" | "promo" | "contract" | "adjustment";

/** A source's default expiry: never, or `months` after the grant becomes effective. */
export interface SourceExpiryPolicy {
  kind: "never" | "rolling";
  months?: number;
}

/** Every configurable source's default expiry. */
export interface ExpiryPolicies {
  object: "expiry_policies";
  policies: Record<PolicySource, SourceExpiryPolicy>;
}

/** Body of `grants.setExpiryPolicy`. */
export interface ExpiryPolicySetParams {
  source: PolicySource;
  expiry: SourceExpiryPolicy;
}

/** A plan's expiry policy as stored. */
export interface ExpiryPolicy {
  kind: "period_end" | "never" | "rolling";
  months?: number;
}

/** A plan: a base fee plus included credits per period, with its rollover, expiry and cancel rules. */
export interface Plan {
  object: "plan";
  id: string;
  name: string;
  /** The fee per period, in money. */
  base_fee: { amount: string; currency: string };
  interval: PlanInterval;
  /** Credits included per period (per seat when `per_seat`). */
  allotment: string;
  per_seat: boolean;
  rollover: RolloverPolicy;
  expiry: ExpiryPolicy;
  /** `forfeit`, `keep_until_period_end` or `keep`. */
  on_cancel: string;
  /** Who receives the credits: the customer's pool, or each member with a pooled share. */
  allocation: Allocation;
  /** The overage policy its subscribers take; null: none. */
  overage: OveragePolicyFields | null;
  created_at: string;
}

/** A customer's subscription to a plan. */
export interface Subscription {
  object: "subscription";
  id: string;
  customer_id: string;
  plan_id: string;
  /** The plan a downgrade switches to at the next renewal; null when none waits. */
  pending_plan_id: string | null;
  seats: number;
  status: "active" | "canceled";
  started_at: string;
  canceled_at: string | null;
  /** The index of the last period renewed (0 is the first). */
  current_period: number;
  /** When the next period starts and renews; null once ended. */
  next_renewal_at: string | null;
  created_at: string;
}

/**
 * One member wallet of a customer with its allocation for the current period (what
 * `subscriptions.memberAllocations` lists). Amounts are decimal strings.
 */
export interface MemberAllocation {
  object: "member_allocation";
  /** The member's wallet. */
  wallet_id: string;
  /** The member (a subject of the customer). */
  member_id: string;
  /** The subscription whose period is current; null when none is (no subscription, or its last period ended). */
  subscription_id: string | null;
  /** The current period `[starts_at, ends_at)`; null with no subscription. */
  period: { index: number; starts_at: string; ends_at: string } | null;
  /** The plan's pool share; null when the plan does not allocate per member. */
  pool_share_percent: number | null;
  /** The member's whole allocation this period (`personal + pool_share`); `"0"` when none. */
  allocated: string;
  /** The part granted into the member's own wallet. */
  personal: string;
  /** The part paid into the customer's pool, which every member draws after their own. */
  pool_share: string;
  /** What is left of the personal part (`"0"` once used up, expired or voided). */
  remaining: string;
  /** `renewal` (with the period), `member_added` (prorated, wallet created mid-period); null: none this period. */
  reason: "renewal" | "member_added" | null;
  allocated_at: string | null;
  personal_grant_id: string | null;
  /** The pool grant holding the share (a renewal's is one grant for every member). */
  pool_grant_id: string | null;
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

// ------------------------------------------------------------------ gifts and referrals

/** Body of `gifts.createCode`. */
export interface GiftCodeCreateParams {
  /** What customers type: 4 to 64 letters, digits, "-" or "_". Default: 12 random characters. */
  code?: string;
  /** Credits each claim grants; positive. A decimal string of credits, or bigint units. */
  amount: AmountInput;
  /** Actions the gifted credits may pay for; null or absent: all. */
  scope?: string[] | null;
  /** The claimed credits expire this many days after the claim (1 to 3650); null or absent: never. */
  expires_in_days?: number | null;
  /** How many customers may claim it, each once; default 1. */
  max_uses?: number;
  /** No claim at or after this time; null or absent: no end. */
  ends_at?: TimeInput | null;
}

/** A claimable gift code. */
export interface GiftCode {
  object: "gift_code";
  id: string;
  code: string;
  amount: string;
  scope: string[] | null;
  expires_in_days: number | null;
  max_uses: number;
  /** Claims so far. */
  uses: number;
  ends_at: string | null;
  created_at: string;
}

/** Body of `gifts.claim`. */
export interface GiftCodeClaimParams {
  code: string;
  customer_id: string;
}

/** What a claim made: the customer's new gift grant. */
export interface GiftClaim {
  object: "gift_claim";
  gift_code_id: string;
  customer_id: string;
  grant: Grant;
  transaction_id: string;
  claimed_at: string;
}

/** Body of `gifts.give`. */
export interface GiftCreateParams {
  /** Credits to give; positive. */
  amount: AmountInput;
  /** Actions the gifted credits may pay for; null or absent: all. */
  scope?: string[] | null;
  /** When the gifted credits expire; null: never; absent: the gift expiry policy. */
  expires_at?: TimeInput | null;
  /** Why, kept in the journal. */
  reason?: string;
}

/** Body of `gifts.refer`. */
export interface ReferralCreateParams {
  /** The customer who referred this one. */
  referrer_customer_id: string;
  /** Credits for the referred customer; positive. */
  amount: AmountInput;
  /** Credits for the referrer too; absent: none. */
  referrer_amount?: AmountInput;
  scope?: string[] | null;
  expires_at?: TimeInput | null;
}

/** Referral credits: the referred customer's grant, and the referrer's when given. */
export interface Referral {
  object: "referral";
  customer_id: string;
  referrer_customer_id: string;
  grant: Grant;
  referrer_grant: Grant | null;
  created_at: string;
}

/** Query of `reports.gifts`. */
export interface GiftReportParams {
  /** Only this customer. */
  customer_id?: string;
}

/** One customer's gifts: given, used, and whether it bought credits afterwards. */
export interface GiftReportRow {
  customer_id: string;
  /** Gift grants received. */
  gifts: number;
  given: string;
  /** Credits drawn from the gift grants (debits and usage, net of reversals). */
  used: string;
  first_gift_at: string;
  /** A purchase or top-up grant followed the first gift. */
  bought_after: boolean;
}

/** What `reports.gifts` returns. */
export interface GiftReport {
  object: "gift_report";
  rows: GiftReportRow[];
  totals: { customers: number; given: string; used: string; bought_after: number };
}

// ------------------------------------------------------------------ contracts

/** A sum of money: a decimal string (or bigint units at scale 9) and its ISO 4217 currency. */
export interface MoneyInput {
  amount: AmountInput;
  currency: string;
}

/** Money as the API answers it. */
export interface Money {
  amount: string;
  currency: string;
}

/**
 * How committed credits are granted: `upfront` (all at the term's start) or `installments`
 * (one at the start of every `interval`; the commitment split evenly, the first installments
 * taking one unit more when it does not divide).
 */
export interface InstallmentScheduleInput {
  kind: "upfront" | "installments";
  /** Required for `installments`; not longer than the term. */
  interval?: PlanInterval;
}

/** Body of `contracts.create`. */
export interface ContractCreateParams {
  customer_id: string;
  /** When the term starts: now (default) or later, never in the past. */
  starts_at?: TimeInput;
  /** When the term ends (exclusive); at most 120 months after the start. */
  ends_at: TimeInput;
  /** Credits committed over the term; `"0"` for a pricing-only contract. */
  commitment: AmountInput;
  /** Default `{ kind: "upfront" }`. */
  schedule?: InstallmentScheduleInput;
  /** The negotiated price of one credit: each contract grant's cost basis and currency. */
  credit_price: MoneyInput;
  /** When contract credits expire. Default: `{ kind: "rolling", months: 12 }` from each grant. */
  expiry?: ExpiryPolicyInput;
  /** May the vendor move the customer to newer rate card versions? false pins the version in force at signing. Default true. */
  allow_rate_card_upgrades?: boolean;
  /** The card the customer follows from the term's start; null or absent: the default card. */
  rate_card_id?: string | null;
  /**
   * Override lines that take precedence over the card's, for this customer's events timed
   * inside the term (`[starts_at, ends_at)`, cut short by an early termination).
   */
  overrides?: RateLineInput[];
}

/** Body of `contracts.terminate`. */
export interface ContractTerminateParams {
  /** What becomes of the credits already issued: `keep` (default) or `forfeit` (voided now). */
  credits?: "keep" | "forfeit";
}

/** One installment of a contract, with what became of its credits. */
export interface ContractInstallment {
  index: number;
  /** When it is (or was) granted. */
  at: string;
  /** The end of its period. */
  until: string;
  amount: string;
  /** issued; scheduled (not due yet); canceled (at or after an early termination); lapsed (caught up after its credits would have expired). */
  status: "issued" | "scheduled" | "canceled" | "lapsed";
  grant_id: string | null;
  expires_at: string | null;
  /** What its grant still holds. */
  remaining: string;
  /** Drawn by usage and debits, net of reversals. */
  used: string;
  /** Moved to breakage at expiry. */
  expired: string;
  voided: string;
}

/** A contract: its terms and its statement (every installment, with totals). */
export interface Contract {
  object: "contract";
  id: string;
  customer_id: string;
  /** scheduled (before its start), active, ended (after its term), terminated (early). */
  status: "scheduled" | "active" | "ended" | "terminated";
  starts_at: string;
  ends_at: string;
  commitment: string;
  schedule: { kind: "upfront" | "installments"; interval?: PlanInterval };
  credit_price: Money;
  expiry: ExpiryPolicy;
  allow_rate_card_upgrades: boolean;
  /** null: the tenant's default card. */
  rate_card_id: string | null;
  /** The version in force at signing, pinned when upgrades are not allowed. */
  pinned_version_id: string | null;
  overrides: RateLine[];
  terminated_at: string | null;
  on_terminate: "keep" | "forfeit" | null;
  next_installment_at: string | null;
  installments: ContractInstallment[];
  totals: {
    committed: string;
    /** Granted so far. */
    issued: string;
    /** What the issued grants still hold. */
    remaining: string;
    /** Committed credits never to be granted (canceled or lapsed). */
    forgone: string;
    used: string;
    expired: string;
    voided: string;
  };
  created_at: string;
}

/** Body of `pocAllocations.create`. */
export interface PocAllocationCreateParams {
  customer_id: string;
  /** Free credits; positive. */
  amount: AmountInput;
  /** What these credits would cost at list price, shown on statements. */
  list_value: MoneyInput;
  /** When the credits become usable: now (default) or later. */
  starts_at?: TimeInput;
  /** When the credits expire; at most 366 days after the start. */
  ends_at: TimeInput;
  /** Actions the credits may pay for; null or absent: all. */
  scope?: string[] | null;
}

/** A proof-of-concept allocation: free, time-bounded credits and the list value they stand for. */
export interface PocAllocation {
  object: "poc_allocation";
  id: string;
  customer_id: string;
  status: "scheduled" | "active" | "ended";
  amount: string;
  list_value: Money;
  starts_at: string;
  ends_at: string;
  scope: string[] | null;
  grant_id: string;
  remaining: string;
  used: string;
  expired: string;
  voided: string;
  /** The list value of the credits used: used × list_value / amount, rounded down. */
  used_list_value: Money;
  created_at: string;
}

// ------------------------------------------------------------------ top-ups and the price book

/** When purchased credits expire: never, or (`rolling`) `months` after the payment is confirmed. */
export interface PurchaseExpiry {
  kind: "never" | "rolling";
  /** For rolling: 1 to 120. */
  months?: number;
}

/** Body of `priceBooks.publish`. Money amounts are decimal strings (or bigint units at scale 9) of the currency. */
export interface PriceBookParams {
  /** ISO 4217, e.g. "USD". */
  currency: string;
  /** Decimals the currency charges in (0 to 9); every price rounds to them once. Default 2. */
  decimals?: number;
  packs?: {
    /** 1 to 64 lowercase letters, digits, "-" or "_". */
    id: string;
    name: string;
    credits: AmountInput;
    price: AmountInput;
    /** Default never. */
    expiry?: PurchaseExpiry;
  }[];
  /** Graduated bands for custom amounts: each credit priced by its band; the last band has `up_to: null`. */
  tiers?: { up_to: AmountInput | null; unit_price: AmountInput }[];
  /** When credits bought as a custom amount expire; default never. */
  custom_expiry?: PurchaseExpiry;
  /** A customer committed to at least `min_committed` credits gets `percent_off` (1 to 99) off every purchase. */
  commitment_discounts?: { min_committed: AmountInput; percent_off: number }[];
}

/** A published price book: one currency's version in force. */
export interface PriceBook {
  object: "price_book";
  id: string;
  currency: string;
  version: number;
  decimals: number;
  packs: { id: string; name: string; credits: string; price: string; expiry: PurchaseExpiry }[];
  tiers: { up_to: string | null; unit_price: string }[];
  custom_expiry: PurchaseExpiry;
  commitment_discounts: { min_committed: string; percent_off: number }[];
  created_at: string;
}

/** Body of `commitments.create`. */
export interface CommitmentCreateParams {
  currency: string;
  /** Credits committed over the term. */
  credits: AmountInput;
  /** Default now. */
  starts_at?: TimeInput;
  ends_at: TimeInput;
}

/** A customer's committed use in one currency over a term. */
export interface Commitment {
  object: "commitment";
  id: string;
  customer_id: string;
  currency: string;
  credits: string;
  starts_at: string;
  ends_at: string;
  created_at: string;
}

/** Body of `purchases.create`: exactly one of `pack_id` and `credits`. */
export interface PurchaseCreateParams {
  wallet_id: string;
  /** The price book to buy from. */
  currency: string;
  pack_id?: string;
  /** A custom amount, priced by the book's tiers. */
  credits?: AmountInput;
  /** "manual" (an invoice, confirmed through the API) or "test" (test tenants). */
  provider: string;
  /** For the test provider: pm_test_ok, pm_test_declined or pm_test_pending. */
  payment_method?: string;
}

/** A purchase of credits: pending until paid, then confirmed with its grant. */
export interface Purchase {
  object: "purchase";
  id: string;
  customer_id: string;
  wallet_id: string;
  status: "pending" | "confirmed" | "failed" | "canceled";
  origin: "api" | "auto_top_up";
  currency: string;
  credits: string;
  pack_id: string | null;
  /** Before the committed-use discount. */
  list_price: string;
  discount_percent: number;
  /** What the customer pays, rounded once to the book's decimals. */
  price: string;
  /** Money per credit: price ÷ credits, rounded down. */
  cost_basis: string;
  price_book_id: string;
  expiry: PurchaseExpiry;
  provider: string;
  payment_method: string | null;
  provider_reference: string | null;
  failure_reason: string | null;
  /** The grant its payment made, once confirmed. */
  grant_id: string | null;
  /**
   * A pending auto top-up whose provider has not answered yet: the scheduler charges it again
   * with the same idempotency key.
   */
  awaiting_charge: boolean;
  created_at: string;
  resolved_at: string | null;
}

/** Query of `purchases.list`. */
export interface PurchaseListParams extends PageParams {
  customer_id?: string;
  wallet_id?: string;
  status?: Purchase["status"];
}

/** Body of `purchases.confirm`. */
export interface PurchaseConfirmParams {
  /** The payment's reference (a wire, a receipt). */
  reference?: string;
}

/** Body of `purchases.fail` and `purchases.cancel`. */
export interface PurchaseUnpaidParams {
  reason?: string;
}

/** Body of `autoTopUps.set`: exactly one of `amount`, `target_balance` and `pack_id`. */
export interface AutoTopUpParams {
  /** A top-up is due when the balance is below this. */
  threshold: AmountInput;
  amount?: AmountInput;
  target_balance?: AmountInput;
  pack_id?: string;
  currency: string;
  /** The most money auto top-up may spend per calendar month (UTC). */
  monthly_cap: AmountInput;
  provider: string;
  payment_method?: string;
  /** Default true. */
  enabled?: boolean;
}

/** A wallet's auto top-up. */
export interface AutoTopUp {
  object: "auto_top_up";
  wallet_id: string;
  enabled: boolean;
  /** Why it turned itself off (a failed payment), or null. */
  disabled_reason: string | null;
  threshold: string;
  amount: string | null;
  target_balance: string | null;
  pack_id: string | null;
  currency: string;
  monthly_cap: string;
  provider: string;
  payment_method: string | null;
  /** The month's cap stopped a top-up: none is tried before this. */
  capped_until: string | null;
  updated_at: string;
}

/** What `autoTopUps.run` did. */
export interface AutoTopUpRun {
  object: "auto_top_up_run";
  outcome: "purchased" | "not_needed" | "pending";
  purchase: Purchase | null;
  auto_top_up: AutoTopUp;
}

// ------------------------------------------------------------------ webhooks and alerts

/** A webhook endpoint. `secret` is in the answers to `create` and `rotateSecret` only. */
export interface WebhookEndpoint {
  object: "webhook_endpoint";
  id: string;
  url: string;
  description: string | null;
  /** `"*"`, exact types (`"grant.created"`) or a resource's types (`"grant.*"`). */
  event_types: string[];
  enabled: boolean;
  /** After a rotation, until when the previous secret signs too; else null. */
  previous_secret_expires_at: string | null;
  /** The signing secret (`whsec_…`): shown once, keep it. */
  secret?: string;
  created_at: string;
  updated_at: string;
}

/** Body of `webhooks.create`. */
export interface WebhookEndpointCreateParams {
  /**
   * An absolute http(s) URL; `invalid_webhook_url` otherwise. `webhook_url_not_allowed` (422)
   * when its host is a private, loopback or link-local address or `localhost` and the server
   * refuses private networks (its default).
   */
  url: string;
  /** What it receives: `"*"`, types such as `"grant.created"`, or `"grant.*"`. */
  event_types: string[];
  description?: string | null;
  /** Default true. */
  enabled?: boolean;
}

/** Body of `webhooks.update`: what to change. */
export interface WebhookEndpointUpdateParams {
  url?: string;
  event_types?: string[];
  description?: string | null;
  /** false: no new events; pending deliveries wait until it is enabled again. */
  enabled?: boolean;
}

/** One event to one endpoint. */
export interface WebhookDelivery {
  object: "webhook_delivery";
  id: string;
  endpoint_id: string;
  /** The event's id: the `webhook-id` header of every attempt (dedupe by it). */
  event_id: string;
  event_type: string;
  status: "pending" | "succeeded" | "failed";
  attempts: number;
  /** When the next attempt is due; null once succeeded or failed. */
  next_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
}

/** One attempt of a delivery. */
export interface WebhookAttempt {
  n: number;
  attempted_at: string;
  /** The receiver's HTTP status; null without an answer (refused, timed out). */
  status_code: number | null;
  error: string | null;
  duration_ms: number;
  /** The start of the receiver's answer. */
  response: string | null;
  next_attempt_at: string | null;
}

/** A delivery with the event it carries and every attempt. */
export interface WebhookDeliveryDetail extends WebhookDelivery {
  event: { id: string; type: string; timestamp: string; data: Record<string, unknown> };
  attempt_log: WebhookAttempt[];
}

/** Query of `webhooks.deliveries`. */
export interface WebhookDeliveryListParams extends PageParams {
  status?: "pending" | "succeeded" | "failed";
}

/** An alert rule as the API answers it. */
export type AlertRule =
  | { kind: "percent_remaining"; percent: number }
  | { kind: "amount_remaining"; amount: string }
  | { kind: "exhausted" }
  | { kind: "expiring_soon"; days: number };

/** An alert rule as `alerts.setRules` takes it (amounts as strings or bigint units). */
export type AlertRuleInput =
  | { kind: "percent_remaining"; percent: number }
  | { kind: "amount_remaining"; amount: AmountInput }
  | { kind: "exhausted" }
  | { kind: "expiring_soon"; days: number };

/** A wallet's alert rules. */
export interface AlertRules {
  object: "alert_rules";
  wallet_id: string;
  /** True while the wallet has not set rules of its own. */
  defaults: boolean;
  rules: AlertRule[];
}

/** Body of `alerts.setRules`: the new list (empty: no alerts), or null for the defaults. */
export interface AlertRulesSetParams {
  rules: AlertRuleInput[] | null;
}

/** Every kind of alert. */
export type AlertKind =
  | "percent_remaining"
  | "amount_remaining"
  | "exhausted"
  | "expiring_soon"
  | "spend_cap_reached"
  | "auto_top_up_failed";

/** A fired alert (also delivered as an `alert.triggered` webhook). */
export interface Alert {
  object: "alert";
  id: string;
  wallet_id: string;
  customer_id: string;
  kind: AlertKind;
  rule_key: string | null;
  /** Balance rules: rule, available, reference, percent_remaining; expiring soon: grant_id, expires_at, remaining. */
  details: Record<string, unknown>;
  /** The `alert.triggered` event that delivers it. */
  event_id: string;
  fired_at: string;
}

/** Query of `alerts.list`. */
export interface AlertListParams extends PageParams {
  wallet_id?: string;
  customer_id?: string;
  kind?: AlertKind;
}
