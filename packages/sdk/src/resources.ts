import { wireAmount, wirePer, wireQuantity, wireTime } from "./amounts.js";
import type { ApiPromise, Transport } from "./http.js";
import type {
  Alert,
  AlertListParams,
  AlertRules,
  AlertRulesSetParams,
  ApiKey,
  ApiKeyCreateParams,
  AutoTopUp,
  AutoTopUpParams,
  AutoTopUpRun,
  Balance,
  CloudEventInput,
  Commitment,
  CommitmentCreateParams,
  Contract,
  ContractCreateParams,
  ContractTerminateParams,
  CostTableParams,
  CostTableVersion,
  CreditAdjustmentParams,
  Customer,
  CustomerCreateParams,
  CustomerListParams,
  CustomerPricing,
  CustomerPricingParams,
  DebitAdjustmentParams,
  EventBatchResult,
  EventInput,
  EventResult,
  ExpiryPolicies,
  ExpiryPolicySetParams,
  GiftClaim,
  GiftCode,
  GiftCodeClaimParams,
  GiftCodeCreateParams,
  GiftCreateParams,
  GiftReport,
  GiftReportParams,
  Grant,
  GrantCreated,
  GrantCreateParams,
  GrantExtendParams,
  GrantListParams,
  GrantVoidParams,
  List,
  MarginReport,
  MarginReportParams,
  MemberAllocation,
  OverageBill,
  OverageInvoice,
  OverageInvoiceListParams,
  OveragePolicy,
  OveragePolicyParams,
  PageParams,
  Plan,
  PlanChangeParams,
  PlanCreateParams,
  PocAllocation,
  PocAllocationCreateParams,
  PostOptions,
  PriceBook,
  PriceBookParams,
  Purchase,
  PurchaseConfirmParams,
  PurchaseCreateParams,
  PurchaseListParams,
  PurchaseUnpaidParams,
  RateCard,
  RateCardCreateParams,
  RateCardVersion,
  RateCardVersionParams,
  RateLineInput,
  Referral,
  ReferralCreateParams,
  RequestOptions,
  ReversalParams,
  SeatChangeParams,
  Subject,
  SubjectCreateParams,
  Subscription,
  SubscriptionCreateParams,
  TestClock,
  TestClockAdvanced,
  TestClockAdvanceParams,
  Transaction,
  TransactionListParams,
  UsageEvent,
  Wallet,
  WalletCreateParams,
  WebhookDelivery,
  WebhookDeliveryDetail,
  WebhookDeliveryListParams,
  WebhookEndpoint,
  WebhookEndpointCreateParams,
  WebhookEndpointUpdateParams,
} from "./types.js";

/** An id in a path, escaped. @internal */
export const seg = (id: string): string => {
  if (typeof id !== "string" || id === "") throw new TypeError("An id must be a non-empty string.");
  return encodeURIComponent(id);
};

/** Paging parameters for the query string. @internal */
export const pageQuery = (p: PageParams | undefined) => ({
  limit: p?.limit === undefined ? undefined : String(p.limit),
  cursor: p?.cursor,
});

/** Copies the defined fields of an object (an explicit `undefined` is not sent). */
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** An optional nullable time: absent stays absent, null stays null. */
const maybeTime = (v: string | Date | null | undefined, field: string) =>
  v === undefined ? undefined : v === null ? null : wireTime(v, field);

/**
 * Follows `next_cursor` from page to page and yields every item. Pages are fetched lazily,
 * one at a time, as the loop asks for more.
 */
export async function* paginate<T>(
  fetchPage: (cursor: string | undefined) => Promise<List<T>>,
  cursor?: string,
): AsyncGenerator<T, void, undefined> {
  let next: string | undefined = cursor;
  do {
    const page = await fetchPage(next);
    yield* page.data;
    next = page.next_cursor ?? undefined;
  } while (next !== undefined);
}

/** Base of every resource group. @internal */
export abstract class Resource {
  constructor(protected readonly transport: Transport) {}

  /** A GET. `build` runs inside the returned promise, so a bad argument rejects the call. */
  protected fetchJson<T>(
    o: RequestOptions | undefined,
    build: () => { path: string; query?: Record<string, string | undefined> },
  ): ApiPromise<T> {
    return this.transport.request<T>(() => ({ method: "GET", ...build(), signal: o?.signal }));
  }

  /** A POST with an idempotency key. `build` runs inside the returned promise. */
  protected postJson<T>(
    o: PostOptions | undefined,
    build: () => { path: string; body: object },
  ): ApiPromise<T> {
    return this.transport.request<T>(() => {
      const { path, body } = build();
      return {
        method: "POST",
        path,
        body: defined(body),
        idempotencyKey: o?.idempotencyKey,
        signal: o?.signal,
      };
    });
  }
}

/**
 * Customers: B2C individuals or B2B organizations. Each comes with its own wallet (its pool,
 * shared by its members): `customer.wallet_id`.
 */
export class Customers extends Resource {
  /**
   * Creates a customer and its pool wallet. Fails with `already_exists` when the
   * `external_id` is taken.
   *
   * @example
   * const acme = await dd.customers.create({ kind: "organization", name: "Acme", external_id: "acct_42" });
   * await dd.grants.create({ wallet_id: acme.wallet_id, amount: "1000", source: "plan" });
   */
  create(params: CustomerCreateParams, options?: PostOptions): ApiPromise<Customer> {
    return this.postJson(options, () => ({ path: "/v1/customers", body: { ...params } }));
  }

  /**
   * One page of customers, in id order. A restricted key sees its own customer only.
   *
   * @example
   * const { data, next_cursor } = await dd.customers.list({ limit: 100 });
   * const [acme] = (await dd.customers.list({ external_id: "acct_42" })).data;
   */
  list(params?: CustomerListParams, options?: RequestOptions): ApiPromise<List<Customer>> {
    return this.fetchJson(options, () => ({
      path: "/v1/customers",
      query: { ...pageQuery(params), external_id: params?.external_id },
    }));
  }

  /**
   * Every customer, following the cursors page by page (`limit` sets the page size).
   *
   * @example
   * for await (const c of dd.customers.listAll()) console.log(c.id, c.name);
   */
  listAll(params?: CustomerListParams, options?: RequestOptions): AsyncGenerator<Customer, void, undefined> {
    return paginate((cursor) => this.list({ ...params, cursor }, options), params?.cursor);
  }

  /**
   * A customer by id. `not_found` when there is none (or a restricted key may not see it).
   *
   * @example
   * const c = await dd.customers.get("cus_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(id: string, options?: RequestOptions): ApiPromise<Customer> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(id)}` }));
  }

  /**
   * Sets a customer's contract pricing for events whose own time is in
   * `[overrides_from, overrides_until)` (absent or null bounds: open): the card (absent or null:
   * the tenant's default), a pinned version (used whatever the event's time; null: the version
   * in force at each event's time), and override lines that take precedence over the card's.
   * The customer's pricing history keeps its other windows: the new terms replace the part
   * their window covers. Without a window they replace all of it and become the base, which
   * prices events outside every window. `not_found` for an unknown card or a version of another
   * card; `invalid_argument` for a window that does not end after it starts.
   *
   * @example
   * await dd.customers.setPricing(acme.id, {
   *   rate_card_id: card.id,
   *   pinned_version_id: v1.id,
   *   overrides: [{ id: "enterprise-gpt4o", action: "chat.completion", match: { model: "gpt-4o" },
   *                 quantity: "output_tokens", rate: "0.00001" }],
   * });
   * // A discount for March only; before and after it, the pricing already set still applies.
   * // Inside the window the call's card and pin price too (absent: the default card), so give them.
   * const p = await dd.customers.setPricing(acme.id, {
   *   rate_card_id: card.id,
   *   pinned_version_id: v1.id,
   *   overrides: [{ id: "march-promo", action: "chat.completion", quantity: "output_tokens", rate: "0.000005" }],
   *   overrides_from: "2026-03-01T00:00:00Z",
   *   overrides_until: "2026-04-01T00:00:00Z",
   * });
   * console.log(p.override_history.map((t) => [t.source, t.overrides_from, t.overrides_until]));
   */
  setPricing(
    customerId: string,
    params: CustomerPricingParams,
    options?: PostOptions,
  ): ApiPromise<CustomerPricing> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/pricing`,
      body: {
        ...params,
        overrides: params.overrides?.map((l, i) => wireLine(l, `overrides[${i}]`)),
        overrides_from: maybeTime(params.overrides_from, "overrides_from"),
        overrides_until: maybeTime(params.overrides_until, "overrides_until"),
      },
    }));
  }
}

/** Subjects: who or what uses credits inside a customer (members, agents, workflows). */
export class Subjects extends Resource {
  /**
   * Adds a member, agent or workflow to a customer. Members can hold wallets of their own
   * (see {@link Wallets.create}).
   *
   * @example
   * const ann = await dd.subjects.create(acme.id, { kind: "member", name: "Ann", external_id: "u_7" });
   */
  create(customerId: string, params: SubjectCreateParams, options?: PostOptions): ApiPromise<Subject> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/subjects`,
      body: { ...params },
    }));
  }

  /**
   * One page of a customer's subjects, in id order.
   *
   * @example
   * const { data } = await dd.subjects.list(acme.id, { limit: 20 });
   */
  list(customerId: string, params?: PageParams, options?: RequestOptions): ApiPromise<List<Subject>> {
    return this.fetchJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/subjects`,
      query: pageQuery(params),
    }));
  }

  /**
   * Every subject of a customer, following the cursors.
   *
   * @example
   * for await (const s of dd.subjects.listAll(acme.id)) console.log(s.kind, s.name);
   */
  listAll(
    customerId: string,
    params?: PageParams,
    options?: RequestOptions,
  ): AsyncGenerator<Subject, void, undefined> {
    return paginate((cursor) => this.list(customerId, { ...params, cursor }, options), params?.cursor);
  }

  /**
   * A subject by id.
   *
   * @example
   * const s = await dd.subjects.get("sub_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(id: string, options?: RequestOptions): ApiPromise<Subject> {
    return this.fetchJson(options, () => ({ path: `/v1/subjects/${seg(id)}` }));
  }
}

/**
 * Wallets hold grants. Every customer has one from the start (its pool); a member may have
 * one of their own, which draws the member's grants first, then the pool.
 */
export class Wallets extends Resource {
  /**
   * Creates a member's wallet.
   *
   * @example
   * const annWallet = await dd.wallets.create({ customer_id: acme.id, member_id: ann.id });
   */
  create(params: WalletCreateParams, options?: PostOptions): ApiPromise<Wallet> {
    return this.postJson(options, () => ({ path: "/v1/wallets", body: { ...params } }));
  }

  /**
   * A customer's wallets: the pool first, then members' (one page holds them all).
   *
   * @example
   * const { data: wallets } = await dd.wallets.list(acme.id);
   */
  list(customerId: string, options?: RequestOptions): ApiPromise<List<Wallet>> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(customerId)}/wallets` }));
  }

  /**
   * A wallet by id, with its balance (the sum of its grants' remaining credits).
   *
   * @example
   * const w = await dd.wallets.get(acme.wallet_id);
   * console.log(w.balance); // "1000"
   */
  get(id: string, options?: RequestOptions): ApiPromise<Wallet> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(id)}` }));
  }

  /**
   * A wallet's balance: total, available now, upcoming (not yet effective), held by pending
   * holds, and expired awaiting breakage; its grants in burn-down order; available credits per
   * scope. For a member's wallet, `pool` is the customer's pool it draws after its own grants,
   * and `spendable` what a debit can draw now (own plus pool).
   * All amounts are decimal strings (convert with `toUnits` for arithmetic).
   *
   * @example
   * const b = await dd.wallets.balance(acme.wallet_id);
   * if (toUnits(b.available) < toUnits("10")) console.log("running low");
   * for (const g of b.grants) console.log(g.id, g.remaining, g.expires_at);
   */
  balance(id: string, options?: RequestOptions): ApiPromise<Balance> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(id)}/balance` }));
  }

  /**
   * Sets a customer's pool wallet's own overage policy (it overrides the plan's): what happens
   * when credits do not cover a charge. `hard_cap` (the default): denied, or recorded unpaid.
   * `soft_cap`: the balance may go down to `floor`; with a `price`, what is owed is billed at
   * each renewal and on demand. `throttle`: below `throttle.level`, authorize answers
   * `throttle` for actions not listed. `carry_deficit`: down to `floor`, repaid from the next
   * period's plan credits. `fair_use`: never denied. `invalid_argument` for a member's wallet,
   * or when the wallet already owes more than the new floor allows.
   *
   * @example
   * await dd.wallets.setOverage(acme.wallet_id, { mode: "soft_cap", floor: "-100", price: { amount: "0.02", currency: "USD" } });
   * await dd.wallets.setOverage(acme.wallet_id, { mode: "throttle", throttle: { level: "50", allowed_actions: ["chat.mini"], fallback_action: "chat.mini" } });
   */
  setOverage(
    walletId: string,
    params: OveragePolicyParams,
    options?: PostOptions,
  ): ApiPromise<OveragePolicy> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/overage`,
      body: wireOverage(params),
    }));
  }

  /** A pool wallet's overage policy, where it came from (`wallet`, `plan`, `default`), and what it owes. */
  getOverage(walletId: string, options?: RequestOptions): ApiPromise<OveragePolicy> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/overage` }));
  }

  /** Removes a wallet's own overage policy: it takes its plan's again, else the default hard cap. */
  clearOverage(walletId: string, options?: PostOptions): ApiPromise<OveragePolicy> {
    return this.postJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/overage/clear`, body: {} }));
  }

  /**
   * Bills what a wallet owes now at its soft cap's price: the overdraft moves to
   * `overage_receivable` and an overage invoice is recorded (`invoice` null when nothing is owed).
   *
   * @example
   * const { invoice } = await dd.wallets.billOverage(acme.wallet_id);
   * if (invoice) console.log(invoice.credits, "credits,", invoice.amount, invoice.currency);
   */
  billOverage(walletId: string, options?: PostOptions): ApiPromise<OverageBill> {
    return this.postJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/overage/bill`, body: {} }));
  }
}

/** Overage invoices: what priced soft caps billed, at renewals and on demand. */
export class OverageInvoices extends Resource {
  /**
   * Overage invoices, oldest first, by wallet or customer.
   *
   * @example
   * const { data } = await dd.overageInvoices.list({ wallet_id: acme.wallet_id });
   */
  list(params?: OverageInvoiceListParams, options?: RequestOptions): ApiPromise<List<OverageInvoice>> {
    return this.fetchJson(options, () => ({
      path: "/v1/overage_invoices",
      query: { ...pageQuery(params), wallet_id: params?.wallet_id, customer_id: params?.customer_id },
    }));
  }
}

/** An overage policy on the wire: amounts as decimal strings. */
function wireOverage(p: OveragePolicyParams): object {
  if (p === null || typeof p !== "object") throw new TypeError("overage: an object.");
  return defined({
    ...p,
    floor: p.floor === undefined ? undefined : wireAmount(p.floor, "floor"),
    price: p.price && { ...p.price, amount: wireAmount(p.price.amount, "price.amount") },
    throttle: p.throttle && { ...p.throttle, level: wireAmount(p.throttle.level, "throttle.level") },
  });
}

/** Manual corrections, each with a required reason kept in the journal. */
export class Adjustments extends Resource {
  /**
   * Adds credits to a wallet by hand: a new grant of source `adjustment`, recorded as an
   * `adjustment.credit` transaction. Amounts: a decimal string of credits, or bigint units.
   *
   * @example
   * const { grant, transaction_id } = await dd.adjustments.credit(wallet.id, {
   *   amount: "25",
   *   reason: "goodwill after outage #123",
   *   expires_at: new Date("2026-12-31T23:59:59Z"),
   * });
   */
  credit(walletId: string, params: CreditAdjustmentParams, options?: PostOptions): ApiPromise<GrantCreated> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/credits`,
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        expires_at: maybeTime(params.expires_at, "expires_at"),
      },
    }));
  }

  /**
   * Takes credits from a wallet by hand, in burn-down order (a member's wallet falls through
   * to the pool), or from one grant with `grant_id`. Fails with `insufficient_credits`
   * (HTTP 402) and changes nothing when the wallet cannot cover it.
   *
   * @example
   * const txn = await dd.adjustments.debit(wallet.id, { amount: 1_500_000_000n, reason: "double charge fix" });
   * // 1_500_000_000n units = "1.5" credits
   */
  debit(walletId: string, params: DebitAdjustmentParams, options?: PostOptions): ApiPromise<Transaction> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/debits`,
      body: { ...params, amount: wireAmount(params.amount, "amount") },
    }));
  }
}

/**
 * Grants: credit blocks in a wallet, with a source, cost basis, effective and expiry times,
 * priority, scope and metadata.
 */
export class Grants extends Resource {
  /**
   * Issues a grant into a wallet.
   *
   * @example
   * const { grant } = await dd.grants.create({
   *   wallet_id: acme.wallet_id,
   *   amount: "500",            // or 500_000_000_000n units
   *   source: "purchase",
   *   cost_basis: "0.01",       // money per credit
   *   currency: "USD",
   *   expires_at: "2026-12-31T23:59:59Z",
   *   scope: ["image.*"],
   *   priority: 10,
   * }, { idempotencyKey: "order-9912" });
   */
  create(params: GrantCreateParams, options?: PostOptions): ApiPromise<GrantCreated> {
    return this.postJson(options, () => ({
      path: "/v1/grants",
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        cost_basis: params.cost_basis === undefined ? undefined : wireAmount(params.cost_basis, "cost_basis"),
        effective_at: maybeTime(params.effective_at, "effective_at"),
        expires_at: maybeTime(params.expires_at, "expires_at"),
      },
    }));
  }

  /**
   * One page of grants, in id order, filtered by wallet, customer or stored status.
   *
   * @example
   * const { data, next_cursor } = await dd.grants.list({ wallet_id: acme.wallet_id, status: "active" });
   */
  list(params?: GrantListParams, options?: RequestOptions): ApiPromise<List<Grant>> {
    return this.fetchJson(options, () => ({
      path: "/v1/grants",
      query: {
        ...pageQuery(params),
        wallet_id: params?.wallet_id,
        customer_id: params?.customer_id,
        status: params?.status,
      },
    }));
  }

  /**
   * Every grant matching the filters, following the cursors.
   *
   * @example
   * for await (const g of dd.grants.listAll({ wallet_id: acme.wallet_id })) console.log(g.id, g.remaining);
   */
  listAll(params?: GrantListParams, options?: RequestOptions): AsyncGenerator<Grant, void, undefined> {
    return paginate((cursor) => this.list({ ...params, cursor }, options), params?.cursor);
  }

  /**
   * A grant with its recorded changes (`changes`, e.g. expiry extensions, oldest first).
   *
   * @example
   * const g = await dd.grants.get("grt_01jd0s7k2mqx3v8r9t5w6y7z8a");
   * console.log(g.status, g.remaining, g.changes);
   */
  get(id: string, options?: RequestOptions): ApiPromise<Grant> {
    return this.fetchJson(options, () => ({ path: `/v1/grants/${seg(id)}` }));
  }

  /**
   * Voids a grant: its remaining credits leave the wallet (to the `voided` account) and it is
   * never drawn again. `grant_inactive` when already voided.
   *
   * @example
   * await dd.grants.void(grant.id, { reason: "refunded order 9912" });
   */
  void(id: string, params?: GrantVoidParams, options?: PostOptions): ApiPromise<Grant> {
    return this.postJson(options, () => ({ path: `/v1/grants/${seg(id)}/void`, body: { ...params } }));
  }

  /**
   * Moves a grant's expiry later (or removes it with `null`), recorded with its reason;
   * expiries are never shortened (`expiry_not_extendable`).
   *
   * @example
   * await dd.grants.extend(grant.id, { expires_at: "2027-03-31T23:59:59Z", reason: "support ticket 77" });
   */
  extend(id: string, params: GrantExtendParams, options?: PostOptions): ApiPromise<Grant> {
    return this.postJson(options, () => ({
      path: `/v1/grants/${seg(id)}/extend`,
      body: { ...params, expires_at: maybeTime(params.expires_at, "expires_at") },
    }));
  }

  /**
   * The default expiry of each source's grants that name none (`never` unless set).
   *
   * @example
   * const { policies } = await dd.grants.expiryPolicies();
   * console.log(policies.contract); // { kind: "rolling", months: 12 }
   */
  expiryPolicies(options?: RequestOptions): ApiPromise<ExpiryPolicies> {
    return this.fetchJson(options, () => ({ path: "/v1/expiry_policies" }));
  }

  /**
   * Sets one source's default expiry, for grants issued from now on: purchased packs never
   * expire, enterprise credits 12 months after they are granted, and so on.
   *
   * @example
   * await dd.grants.setExpiryPolicy({ source: "contract", expiry: { kind: "rolling", months: 12 } });
   */
  setExpiryPolicy(params: ExpiryPolicySetParams, options?: PostOptions): ApiPromise<ExpiryPolicies> {
    return this.postJson(options, () => ({ path: "/v1/expiry_policies", body: { ...params } }));
  }
}

/** The journal: immutable transactions whose entries sum to zero per unit. */
export class Transactions extends Resource {
  /**
   * One page of the journal, oldest first, filtered by wallet, customer and time
   * (`from` inclusive, `to` exclusive).
   *
   * @example
   * const { data } = await dd.transactions.list({ customer_id: acme.id, from: "2026-01-01T00:00:00Z", limit: 100 });
   */
  list(params?: TransactionListParams, options?: RequestOptions): ApiPromise<List<Transaction>> {
    return this.fetchJson(options, () => ({
      path: "/v1/transactions",
      query: {
        ...pageQuery(params),
        wallet_id: params?.wallet_id,
        customer_id: params?.customer_id,
        from: params?.from === undefined ? undefined : wireTime(params.from, "from"),
        to: params?.to === undefined ? undefined : wireTime(params.to, "to"),
      },
    }));
  }

  /**
   * Every transaction matching the filters, oldest first, following the cursors.
   *
   * @example
   * for await (const t of dd.transactions.listAll({ wallet_id: wallet.id })) console.log(t.kind, t.entries);
   */
  listAll(
    params?: TransactionListParams,
    options?: RequestOptions,
  ): AsyncGenerator<Transaction, void, undefined> {
    return paginate((cursor) => this.list({ ...params, cursor }, options), params?.cursor);
  }

  /**
   * A transaction with its entries.
   *
   * @example
   * const t = await dd.transactions.get("txn_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(id: string, options?: RequestOptions): ApiPromise<Transaction> {
    return this.fetchJson(options, () => ({ path: `/v1/transactions/${seg(id)}` }));
  }

  /**
   * Reverses a debit with a new transaction of negated entries (the original stays); the
   * credits return to the same grants. Once only: `transaction_already_reversed` after.
   *
   * @example
   * const reversal = await dd.transactions.reverse(txn.id, { reason: "charged in error" });
   * reversal.reverses_id === txn.id; // true
   */
  reverse(id: string, params: ReversalParams, options?: PostOptions): ApiPromise<Transaction> {
    return this.postJson(options, () => ({
      path: `/v1/transactions/${seg(id)}/reverse`,
      body: { ...params },
    }));
  }
}

/** API keys of your tenant. Needs a secret key. */
export class ApiKeys extends Resource {
  /**
   * Creates a key. Its `secret` is returned this once; only a hash is stored. A restricted
   * key reads one customer (for a customer-facing page) and cannot write. A replay of the
   * same idempotency key (including the SDK's own retry after a lost response) answers the
   * key without its secret: if `secret` is absent, revoke that key and create another.
   *
   * @example
   * const key = await dd.apiKeys.create({ kind: "restricted", name: "Acme portal", customer_id: acme.id });
   * const portal = new Drawdown({ apiKey: key.secret!, baseUrl });
   */
  create(params: ApiKeyCreateParams, options?: PostOptions): ApiPromise<ApiKey> {
    return this.postJson(options, () => ({ path: "/v1/api_keys", body: { ...params } }));
  }

  /**
   * Every key of the tenant (without secrets), revoked ones included.
   *
   * @example
   * const { data: keys } = await dd.apiKeys.list();
   */
  list(options?: RequestOptions): ApiPromise<List<ApiKey>> {
    return this.fetchJson(options, () => ({ path: "/v1/api_keys" }));
  }

  /**
   * Revokes a key: it stops working at once (`unauthorized`).
   *
   * @example
   * await dd.apiKeys.revoke("key_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  revoke(id: string, options?: PostOptions): ApiPromise<ApiKey> {
    return this.postJson(options, () => ({ path: `/v1/api_keys/${seg(id)}/revoke`, body: {} }));
  }
}

/**
 * The test clock of a test tenant (as Stripe's test clocks): move the tenant's time forward
 * and every scheduled effect due in between (grant expiries) happens, in time order, each at
 * its own time. Scenario tests use it instead of sleeping. Needs a secret key.
 */
export class TestClocks extends Resource {
  /**
   * The tenant's time: real time until the clock is first advanced, then `frozen` where the
   * last advance left it. Answers for live tenants too (never frozen).
   *
   * @example
   * const clock = await dd.testClock.get();
   * console.log(clock.now, clock.frozen); // "2026-03-01T00:00:00.000Z" false
   */
  get(options?: RequestOptions): ApiPromise<TestClock> {
    return this.fetchJson(options, () => ({ path: "/v1/test_clock" }));
  }

  /**
   * Moves a test tenant's clock forward, to `to` or by `seconds`, running every effect due on
   * the way: the clock stops at each grant's expiry, the grant expires there (its remainder to
   * breakage, posted at that time), and it moves on. The clock then stands still at `to`.
   * `invalid_argument` to move it back, with both or neither of `to` and `seconds`, or for a
   * live tenant. Sent without an idempotency key: prefer `to`, which a retry cannot overshoot
   * (`seconds` is relative, so a retry after a lost response would move the clock again).
   *
   * @example
   * const { expired_grants } = await dd.testClock.advance({ to: "2026-04-01T00:00:00Z" });
   * await dd.testClock.advance({ seconds: 86_400 }); // one more day
   * const b = await dd.wallets.balance(acme.wallet_id); // as of the new time
   */
  advance(params: TestClockAdvanceParams, options?: RequestOptions): ApiPromise<TestClockAdvanced> {
    return this.transport.request(() => {
      if (params === null || typeof params !== "object")
        throw new TypeError("testClock.advance: give { to } or { seconds }.");
      const to = params.to === undefined ? undefined : wireTime(params.to, "to");
      return {
        method: "POST",
        path: "/v1/test_clock/advance",
        body: defined({ to, seconds: params.seconds }),
        idempotent: false,
        signal: options?.signal,
      };
    });
  }
}

// ------------------------------------------------------------------ metering

const isCloudEvent = (e: EventInput): e is CloudEventInput =>
  e !== null && typeof e === "object" && "specversion" in e;

/** Quantities for the wire: decimal strings. @internal */
export function wireQuantities(q: Record<string, unknown>, where: string): Record<string, string> {
  if (q === null || typeof q !== "object") throw new TypeError(`${where}: quantities is an object.`);
  return Object.fromEntries(
    Object.entries(q).map(([k, v]) => [k, wireQuantity(v as never, `${where}.${k}`)]),
  );
}

/** One event for the wire, in the shape it was given. @internal */
function wireEvent(e: EventInput, where: string): object {
  if (e === null || typeof e !== "object") throw new TypeError(`${where}: an event is an object.`);
  const time = e.time === undefined ? undefined : wireTime(e.time, `${where}.time`);
  const data = isCloudEvent(e) ? e.data : e;
  if (data === null || typeof data !== "object") throw new TypeError(`${where}.data: an object.`);
  const fields = {
    ...data,
    quantities: wireQuantities(data.quantities, `${where}${isCloudEvent(e) ? ".data" : ""}.quantities`),
    reported_cost:
      data.reported_cost === undefined ? undefined : wireAmount(data.reported_cost, `${where}.reported_cost`),
  };
  return defined(isCloudEvent(e) ? { ...e, time, data: defined(fields) } : { ...fields, time });
}

/** A rate line for the wire. @internal */
function wireLine(l: RateLineInput, where: string): object {
  return defined({
    ...l,
    per: l.per === undefined ? undefined : wirePer(l.per, `${where}.per`),
    tiers: l.tiers?.map((t, i) => ({
      up_to: t.up_to === null ? null : wireQuantity(t.up_to, `${where}.tiers[${i}].up_to`),
      rate: t.rate,
    })),
    minimum: l.minimum === undefined ? undefined : wireAmount(l.minimum, `${where}.minimum`),
  });
}

/**
 * Usage events: rated by the rate card version in force at each event's time and drawn down
 * from the subject's wallet in the same transaction. Events are deduplicated by their `id`,
 * per tenant, forever: sending one again (a retry) answers its first result and changes
 * nothing, so these calls need no idempotency key. Both the native shape and CloudEvents 1.0
 * are accepted.
 */
export class Events extends Resource {
  /**
   * Records one event and answers its charge: 201 `accepted`, or 200 `duplicate` with the
   * first result. A rejected event throws {@link DrawdownError} with its code (`unknown_action`,
   * `not_found`, `event_too_old`, `event_in_future`, `event_id_reused`, `no_rate_card`,
   * `invalid_event`) and `details.event_id`. A CloudEvent is sent as
   * `application/cloudevents+json`.
   *
   * @example
   * const r = await dd.events.ingest({
   *   id: "evt_8f2c",                       // your id: retries are deduplicated by it
   *   customer_id: acme.id,
   *   subject_id: ann.id,
   *   action: "chat.completion",
   *   dimensions: { model: "gpt-4o" },
   *   quantities: { input_tokens: 1200, output_tokens: 350n },
   *   run_id: "run_42",
   * });
   * console.log(r.status, r.charge?.credits); // "accepted" "0.0143"
   *
   * // The same event as a CloudEvent:
   * await dd.events.ingest({
   *   specversion: "1.0", id: "evt_8f2d", source: "/agents/summarizer", type: "chat.completion",
   *   data: { customer_id: acme.id, quantities: { output_tokens: "350" } },
   * });
   */
  ingest(event: EventInput, options?: RequestOptions): ApiPromise<EventResult> {
    return this.transport.request(() => ({
      method: "POST",
      path: "/v1/events",
      body: wireEvent(event, "event"),
      contentType: isCloudEvent(event) ? "application/cloudevents+json" : "application/json",
      idempotent: false,
      signal: options?.signal,
    }));
  }

  /**
   * Records up to 10,000 events at once; each is answered on its own, in order (one bad event
   * does not sink the batch): `accepted` with its charge, `duplicate` with the first charge, or
   * `rejected` with a code and a message. Native events and CloudEvents may be mixed; a batch of
   * CloudEvents only is sent as a bare array (`application/cloudevents-batch+json`).
   *
   * @example
   * const batch = await dd.events.ingestBatch(
   *   steps.map((s) => ({
   *     id: s.id, customer_id: acme.id, action: "tool.call", quantities: { calls: 1 }, run_id: s.runId,
   *   })),
   * );
   * console.log(batch.accepted, batch.credits);
   * for (const r of batch.results) if (r.status === "rejected") console.warn(r.id, r.code, r.message);
   */
  ingestBatch(events: readonly EventInput[], options?: RequestOptions): ApiPromise<EventBatchResult> {
    return this.transport.request(() => {
      if (!Array.isArray(events)) throw new TypeError("events: an array of events.");
      const wire = events.map((e, i) => wireEvent(e, `events[${i}]`));
      const cloud = events.length > 0 && events.every(isCloudEvent);
      return {
        method: "POST",
        path: "/v1/events/batch",
        body: cloud ? wire : { events: wire },
        contentType: cloud ? "application/cloudevents-batch+json" : "application/json",
        idempotent: false,
        signal: options?.signal,
      };
    });
  }

  /**
   * An event as recorded, with why it cost what it did: the rate card version, each line with
   * its quantity, tier pieces and rates, the multiplier, the exact credits before the one
   * rounding, the grants drawn, its cost and the revenue value of the credits. A restricted
   * key reads its own customer's events only.
   *
   * @example
   * const e = await dd.events.get("evt_8f2c");
   * console.log(e.charge.rate_card_version_id, e.explanation.multiplier);
   * for (const l of e.explanation.lines) console.log(l.line_id, l.amount, l.pieces, l.credits);
   */
  get(id: string, options?: RequestOptions): ApiPromise<UsageEvent> {
    return this.fetchJson(options, () => ({ path: `/v1/events/${seg(id)}` }));
  }
}

/**
 * Rate cards: what each action costs in credits, as immutable effective-dated versions, so a
 * price change needs no deploy. Needs a secret key.
 */
export class RateCards extends Resource {
  /**
   * Creates a card (without versions yet). The tenant's first card is its default, followed
   * by every customer without pricing of its own. `already_exists` when the name is taken.
   *
   * @example
   * const card = await dd.rateCards.create({ name: "Standard" });
   */
  create(params: RateCardCreateParams, options?: PostOptions): ApiPromise<RateCard> {
    return this.postJson(options, () => ({ path: "/v1/rate_cards", body: { ...params } }));
  }

  /**
   * Every rate card with its versions.
   *
   * @example
   * const { data: cards } = await dd.rateCards.list();
   */
  list(options?: RequestOptions): ApiPromise<List<RateCard>> {
    return this.fetchJson(options, () => ({ path: "/v1/rate_cards" }));
  }

  /**
   * A rate card with its versions (oldest first) and the one in force now.
   *
   * @example
   * const card = await dd.rateCards.get("rcd_01jd0s7k2mqx3v8r9t5w6y7z8a");
   * console.log(card.current_version_id);
   */
  get(id: string, options?: RequestOptions): ApiPromise<RateCard> {
    return this.fetchJson(options, () => ({ path: `/v1/rate_cards/${seg(id)}` }));
  }

  /**
   * Publishes a new, immutable version, in force from `effective_at` (now by default, or
   * later; never backdated) until the next one. `rate_card_overlap` when it would not start
   * after the latest version; `invalid_rate_card` when a line is malformed or two lines could
   * price the same quantity of one event with equal specificity.
   *
   * @example
   * const v1 = await dd.rateCards.publishVersion(card.id, {
   *   lines: [
   *     { id: "chat-out", action: "chat.completion", quantity: "output_tokens", rate: "0.015", per: "1000" },
   *     { id: "chat-out-mini", action: "chat.completion", match: { model: "gpt-4o-mini" },
   *       quantity: "output_tokens", rate: "0.0006", per: 1000 },
   *     { id: "docs", action: "document.parse", quantity: "pages",
   *       tiers: [{ up_to: 1000, rate: "0.1" }, { up_to: null, rate: "0.05" }] },
   *     { id: "search", action: "tool.search", quantity: "calls", rate: "0.2", minimum: "0.2" },
   *   ],
   *   multipliers: [{ dimension: "tier", value: "turbo", factor: "6" }],
   *   non_billable: [{ action: "chat.*", match: { feature: "retry" }, reason: "our retries are free" }],
   * });
   * await dd.rateCards.publishVersion(card.id, { effective_at: "2026-07-01T00:00:00Z", lines: [...] });
   */
  publishVersion(
    rateCardId: string,
    params: RateCardVersionParams,
    options?: PostOptions,
  ): ApiPromise<RateCardVersion> {
    return this.postJson(options, () => ({
      path: `/v1/rate_cards/${seg(rateCardId)}/versions`,
      body: {
        ...params,
        effective_at:
          params.effective_at === undefined ? undefined : wireTime(params.effective_at, "effective_at"),
        lines: params.lines.map((l, i) => wireLine(l, `lines[${i}]`)),
      },
    }));
  }
}

/** Cost tables: cost of goods sold per unit, effective-dated like rate cards. Needs a secret key. */
export class CostTables extends Resource {
  /**
   * Publishes a cost table version: money per `per` units of each quantity, by action and
   * dimensions, in one currency, from `effective_at` (now or later). Events get their cost from
   * the version in force at their time, unless they report their own `reported_cost`.
   *
   * @example
   * await dd.costTables.publish({
   *   currency: "USD",
   *   lines: [
   *     { id: "gpt4o-in", action: "chat.completion", match: { model: "gpt-4o" }, quantity: "input_tokens", rate: "2.5", per: 1_000_000 },
   *     { id: "gpt4o-out", action: "chat.completion", match: { model: "gpt-4o" }, quantity: "output_tokens", rate: "10", per: 1_000_000 },
   *   ],
   * });
   */
  publish(params: CostTableParams, options?: PostOptions): ApiPromise<CostTableVersion> {
    return this.postJson(options, () => ({
      path: "/v1/cost_tables",
      body: {
        ...params,
        effective_at:
          params.effective_at === undefined ? undefined : wireTime(params.effective_at, "effective_at"),
        lines: params.lines.map((l, i) => wireLine(l, `lines[${i}]`)),
      },
    }));
  }
}

/** Reports over recorded usage. Needs a secret key. */
export class Reports extends Resource {
  /**
   * Margin per day (UTC) and per customer, action, model or run: events, credits charged,
   * unpaid charges, revenue (the cost basis of the credits consumed), cost and margin, per
   * currency in `amounts` (the single `revenue`, `cost` and `margin` are null when a row has
   * several currencies).
   *
   * @example
   * const { rows } = await dd.reports.margin({ group_by: "model", from: "2026-03-01T00:00:00Z" });
   * for (const r of rows)
   *   for (const m of r.amounts) console.log(r.day, r.key, m.currency, m.revenue, m.cost, m.margin);
   */
  margin(params: MarginReportParams, options?: RequestOptions): ApiPromise<MarginReport> {
    return this.fetchJson(options, () => ({
      path: "/v1/reports/margin",
      query: {
        group_by: params.group_by,
        from: params.from === undefined ? undefined : wireTime(params.from, "from"),
        to: params.to === undefined ? undefined : wireTime(params.to, "to"),
        customer_id: params.customer_id,
      },
    }));
  }

  /**
   * Gifts per customer: credits given, credits used from them, and whether the customer bought
   * credits (a purchase or top-up grant) after its first gift.
   *
   * @example
   * const { rows, totals } = await dd.reports.gifts();
   * console.log(totals.given, totals.used, totals.bought_after);
   */
  gifts(params: GiftReportParams = {}, options?: RequestOptions): ApiPromise<GiftReport> {
    return this.fetchJson(options, () => ({
      path: "/v1/reports/gifts",
      query: { customer_id: params.customer_id },
    }));
  }
}

// ------------------------------------------------------------------ plans and subscriptions

/** A plan's body for the wire: amounts as decimal strings. @internal */
function wirePlan(p: PlanCreateParams): object {
  if (p === null || typeof p !== "object") throw new TypeError("plan: an object.");
  const cap = p.rollover?.cap;
  return {
    ...p,
    base_fee: p.base_fee && {
      ...p.base_fee,
      amount: wireAmount(p.base_fee.amount, "base_fee.amount"),
    },
    allotment: wireAmount(p.allotment, "allotment"),
    overage: p.overage && wireOverage(p.overage),
    rollover:
      p.rollover &&
      defined({
        ...p.rollover,
        cap:
          cap &&
          defined({
            ...cap,
            absolute:
              cap.absolute === undefined ? undefined : wireAmount(cap.absolute, "rollover.cap.absolute"),
            multiple_of_allotment:
              cap.multiple_of_allotment === undefined
                ? undefined
                : wireAmount(cap.multiple_of_allotment, "rollover.cap.multiple_of_allotment"),
          }),
      }),
  };
}

/**
 * Plans: hybrid pricing, a base fee plus credits included per period (per customer or per
 * seat), with a rollover policy, an expiry policy and a cancel rule. Needs a secret key.
 */
export class Plans extends Resource {
  /**
   * Creates a plan. `already_exists` when the name is taken; `invalid_argument` when a policy
   * is incomplete or contradictory (a capped rollover without exactly one cap, a declining one
   * without a schedule, a rollover whose credits do not expire at period end…).
   *
   * @example
   * // $20 a month including 25 credits; unused credits roll over, up to 3 times the allotment.
   * const pro = await dd.plans.create({
   *   name: "Pro",
   *   base_fee: { amount: "20", currency: "USD" },
   *   interval: { unit: "month", count: 1 },
   *   allotment: "25",
   *   rollover: { kind: "capped", cap: { multiple_of_allotment: "3" }, max_periods: 2 },
   * });
   * // Per seat, with a declining rollover: 100% after the first period, 50% after the second, then none.
   * await dd.plans.create({
   *   name: "Team", base_fee: { amount: "10", currency: "USD" }, interval: { unit: "month", count: 1 },
   *   allotment: 100_000_000_000n, per_seat: true, rollover: { kind: "declining", schedule: [100, 50, 0] },
   * });
   * // 25 credits per member per month: 20 stay in each member's wallet, 5 go to the team's pool.
   * await dd.plans.create({
   *   name: "Team pooled", base_fee: { amount: "99", currency: "USD" }, interval: { unit: "month", count: 1 },
   *   allotment: "25", allocation: { mode: "per_member", pool_share_percent: 20 },
   * });
   */
  create(params: PlanCreateParams, options?: PostOptions): ApiPromise<Plan> {
    return this.postJson(options, () => ({ path: "/v1/plans", body: wirePlan(params) }));
  }

  /**
   * Every plan of the tenant, oldest first.
   *
   * @example
   * const { data: plans } = await dd.plans.list();
   */
  list(options?: RequestOptions): ApiPromise<List<Plan>> {
    return this.fetchJson(options, () => ({ path: "/v1/plans" }));
  }

  /**
   * A plan by id. `not_found` when there is none.
   *
   * @example
   * const plan = await dd.plans.get("pln_01jd0s7k2mqx3v8r9t5w6y7z8a");
   * console.log(plan.allotment, plan.rollover.kind);
   */
  get(id: string, options?: RequestOptions): ApiPromise<Plan> {
    return this.fetchJson(options, () => ({ path: `/v1/plans/${seg(id)}` }));
  }
}

/**
 * Subscriptions: a customer on a plan. Each period renews exactly once, in order, granting
 * the period's credits into the customer's pool wallet with the closing period's rollover;
 * the scheduler (or, on a test tenant, `testClock.advance`) runs renewals as they fall due.
 */
export class Subscriptions extends Resource {
  /**
   * Subscribes a customer to a plan, now (or at `start_at`, never in the past), and grants the
   * first period's credits. `not_found` for an unknown customer or plan; `already_exists` when
   * the customer already has an active subscription.
   *
   * @example
   * const sub = await dd.subscriptions.create({ customer_id: acme.id, plan_id: pro.id });
   * const team = await dd.subscriptions.create({ customer_id: beta.id, plan_id: teamPlan.id, seats: 5 });
   * console.log(sub.current_period, sub.next_renewal_at); // 0 "2026-04-01T00:00:00.000Z"
   */
  create(params: SubscriptionCreateParams, options?: PostOptions): ApiPromise<Subscription> {
    return this.postJson(options, () => ({
      path: "/v1/subscriptions",
      body: {
        ...params,
        start_at: params.start_at === undefined ? undefined : wireTime(params.start_at, "start_at"),
      },
    }));
  }

  /**
   * A customer's subscriptions, oldest first (canceled ones included). A restricted key reads
   * its own customer's only.
   *
   * @example
   * const { data } = await dd.subscriptions.list(acme.id);
   * const active = data.find((s) => s.status === "active");
   */
  list(customerId: string, options?: RequestOptions): ApiPromise<List<Subscription>> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(customerId)}/subscriptions` }));
  }

  /**
   * One page of a customer's member wallets, in wallet id order, each with its allocation for
   * the current period of a `per_member` plan: `allocated` (personal + pool share), `personal`,
   * what `remaining` of it, and the `pool_share` paid into the pool. A restricted key reads its
   * own customer's only; another customer's id answers `not_found`.
   *
   * @example
   * const { data } = await dd.subscriptions.memberAllocations(acme.id, { limit: 50 });
   * for (const m of data) console.log(m.member_id, m.allocated, m.remaining, m.pool_share);
   */
  memberAllocations(
    customerId: string,
    params?: PageParams,
    options?: RequestOptions,
  ): ApiPromise<List<MemberAllocation>> {
    return this.fetchJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/member_allocations`,
      query: pageQuery(params),
    }));
  }

  /**
   * Every member allocation of a customer, following the cursors.
   *
   * @example
   * for await (const m of dd.subscriptions.memberAllocationsAll(acme.id)) console.log(m.wallet_id, m.remaining);
   */
  memberAllocationsAll(
    customerId: string,
    params?: PageParams,
    options?: RequestOptions,
  ): AsyncGenerator<MemberAllocation, void, undefined> {
    return paginate(
      (cursor) => this.memberAllocations(customerId, { ...params, cursor }, options),
      params?.cursor,
    );
  }

  /**
   * A subscription by id. `not_found` when there is none (or a restricted key may not see it).
   *
   * @example
   * const sub = await dd.subscriptions.get("sbs_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(id: string, options?: RequestOptions): ApiPromise<Subscription> {
    return this.fetchJson(options, () => ({ path: `/v1/subscriptions/${seg(id)}` }));
  }

  /**
   * Changes the seat count. Seats above the period's high-water mark are granted now, prorated
   * to the rest of the period (rounded down); removing seats takes nothing back. The next
   * period grants for the new count. `invalid_argument` on a canceled subscription.
   *
   * @example
   * await dd.subscriptions.changeSeats(team.id, { seats: 8 });
   */
  changeSeats(
    subscriptionId: string,
    params: SeatChangeParams,
    options?: PostOptions,
  ): ApiPromise<Subscription> {
    return this.postJson(options, () => ({
      path: `/v1/subscriptions/${seg(subscriptionId)}/seats`,
      body: { ...params },
    }));
  }

  /**
   * Changes the plan; both must renew on the same interval. An upgrade (a higher period
   * allotment) is in force now and grants the difference prorated to the rest of the period
   * (rounded down). Anything else is a downgrade: it waits in `pending_plan_id` until the period
   * end and takes nothing back; changing back to the current plan withdraws it. `not_found` for
   * an unknown plan; `invalid_argument` on a canceled subscription, the same plan or another
   * interval.
   *
   * @example
   * const up = await dd.subscriptions.changePlan(sub.id, { plan_id: business.id });
   * const down = await dd.subscriptions.changePlan(sub.id, { plan_id: starter.id });
   * console.log(down.plan_id, down.pending_plan_id); // business.id, starter.id until the period end
   */
  changePlan(
    subscriptionId: string,
    params: PlanChangeParams,
    options?: PostOptions,
  ): ApiPromise<Subscription> {
    return this.postJson(options, () => ({
      path: `/v1/subscriptions/${seg(subscriptionId)}/plan`,
      body: { ...params },
    }));
  }

  /**
   * Cancels: no period renews after this. By the plan's `on_cancel` the credits are voided now
   * (`forfeit`) or last to the period end, when they expire without rollover.
   * `invalid_argument` when it is already canceled.
   *
   * @example
   * const ended = await dd.subscriptions.cancel(sub.id); // ended.status === "canceled"
   */
  cancel(subscriptionId: string, options?: PostOptions): ApiPromise<Subscription> {
    return this.postJson(options, () => ({
      path: `/v1/subscriptions/${seg(subscriptionId)}/cancel`,
      body: {},
    }));
  }
}

/**
 * Gifts and referrals: credits given to a customer directly, through a claimable code, or for
 * a referral. Gifted credits carry zero cost basis.
 */
export class Gifts extends Resource {
  /**
   * Creates a claimable code: each customer claims it once, at most `max_uses` customers, until
   * `ends_at`. `already_exists` when the code is taken.
   *
   * @example
   * const welcome = await dd.gifts.createCode({ code: "WELCOME25", amount: "25", max_uses: 100, expires_in_days: 30 });
   */
  createCode(params: GiftCodeCreateParams, options?: PostOptions): ApiPromise<GiftCode> {
    return this.postJson(options, () => ({
      path: "/v1/gift_codes",
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        ends_at: maybeTime(params.ends_at, "ends_at"),
      },
    }));
  }

  /**
   * Every gift code of the tenant, oldest first, with its uses.
   *
   * @example
   * const { data: codes } = await dd.gifts.listCodes();
   */
  listCodes(options?: RequestOptions): ApiPromise<List<GiftCode>> {
    return this.fetchJson(options, () => ({ path: "/v1/gift_codes" }));
  }

  /**
   * Claims a code for a customer: its credits go to the customer's pool wallet. Refused, changing
   * nothing, with `already_exists` (claimed before), `gift_code_exhausted` or `gift_code_ended`.
   *
   * @example
   * const { grant } = await dd.gifts.claim({ code: "WELCOME25", customer_id: acme.id });
   */
  claim(params: GiftCodeClaimParams, options?: PostOptions): ApiPromise<GiftClaim> {
    return this.postJson(options, () => ({ path: "/v1/gift_codes/claim", body: { ...params } }));
  }

  /**
   * Gives credits to a customer: a grant of source gift, zero cost basis, scoped and expiring as given.
   *
   * @example
   * await dd.gifts.give(acme.id, { amount: "10", scope: ["image.*"], expires_at: "2026-12-31T00:00:00Z", reason: "beta tester" });
   */
  give(customerId: string, params: GiftCreateParams, options?: PostOptions): ApiPromise<GrantCreated> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/gifts`,
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        expires_at: maybeTime(params.expires_at, "expires_at"),
      },
    }));
  }

  /**
   * Grants referral credits (source promo) to a newly referred customer and, with
   * `referrer_amount`, to the referrer: once per referred customer.
   *
   * @example
   * await dd.gifts.refer(newcomer.id, { referrer_customer_id: acme.id, amount: "5", referrer_amount: "5" });
   */
  refer(customerId: string, params: ReferralCreateParams, options?: PostOptions): ApiPromise<Referral> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/referral`,
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        referrer_amount:
          params.referrer_amount === undefined
            ? undefined
            : wireAmount(params.referrer_amount, "referrer_amount"),
        expires_at: maybeTime(params.expires_at, "expires_at"),
      },
    }));
  }
}

/** Money on the wire: its amount as a decimal string. */
const wireMoney = (m: { amount: string | bigint; currency: string }, field: string) => {
  if (m === null || typeof m !== "object") throw new TypeError(`${field}: { amount, currency }.`);
  return { amount: wireAmount(m.amount, `${field}.amount`), currency: m.currency };
};

/**
 * Enterprise contracts: committed credits over a term, granted upfront or in installments (each
 * exactly once, at its time) at a negotiated credit price, expiring 12 months after each grant
 * by default; and the rate card terms (a version pinned at signing, or following newer ones,
 * with override lines) that become the customer's pricing when the term starts. The override
 * lines rate only events timed inside the term; outside it the card prices them.
 */
export class Contracts extends Resource {
  /**
   * Signs a contract. `already_exists` when the term overlaps another contract of the customer;
   * `invalid_argument` for a start in the past, an end before the start, or an installment
   * interval longer than the term; `no_rate_card` when a version must be pinned and none is in
   * force.
   *
   * @example
   * // 120,000 credits over a year, a quarter each quarter, at $0.008 a credit, on the rate card
   * // version in force today, with an enterprise rate for one model.
   * const c = await dd.contracts.create({
   *   customer_id: acme.id,
   *   ends_at: "2028-01-01T00:00:00Z",
   *   commitment: "120000",
   *   schedule: { kind: "installments", interval: { unit: "month", count: 3 } },
   *   credit_price: { amount: "0.008", currency: "USD" },
   *   allow_rate_card_upgrades: false,
   *   overrides: [{ id: "ent", action: "chat.completion", quantity: "output_tokens", rate: "0.5", per: 1000 }],
   * });
   * console.log(c.installments.map((i) => [i.at, i.amount, i.status]));
   */
  create(params: ContractCreateParams, options?: PostOptions): ApiPromise<Contract> {
    return this.postJson(options, () => ({
      path: "/v1/contracts",
      body: {
        ...params,
        starts_at: params.starts_at === undefined ? undefined : wireTime(params.starts_at, "starts_at"),
        ends_at: wireTime(params.ends_at, "ends_at"),
        commitment: wireAmount(params.commitment, "commitment"),
        credit_price: wireMoney(params.credit_price, "credit_price"),
        overrides: params.overrides?.map((l, i) => wireLine(l, `overrides[${i}]`)),
      },
    }));
  }

  /**
   * A customer's contracts, oldest first, each with its statement. A restricted key reads its
   * own customer's only.
   *
   * @example
   * const { data } = await dd.contracts.list(acme.id);
   */
  list(customerId: string, options?: RequestOptions): ApiPromise<List<Contract>> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(customerId)}/contracts` }));
  }

  /**
   * A contract and its statement: every installment, its grant, what was used, expired or
   * voided of it, and the totals.
   *
   * @example
   * const c = await dd.contracts.get("ctr_01jd0s7k2mqx3v8r9t5w6y7z8a");
   * console.log(c.totals.issued, c.totals.used);
   */
  get(id: string, options?: RequestOptions): ApiPromise<Contract> {
    return this.fetchJson(options, () => ({ path: `/v1/contracts/${seg(id)}` }));
  }

  /**
   * Terminates a contract early: no installment due from now on is granted. Issued credits are
   * kept to their own expiry, or voided now with `{ credits: "forfeit" }`. `invalid_argument`
   * once terminated or after the term.
   *
   * @example
   * const ended = await dd.contracts.terminate(c.id); // ended.status === "terminated"
   */
  terminate(id: string, params: ContractTerminateParams = {}, options?: PostOptions): ApiPromise<Contract> {
    return this.postJson(options, () => ({
      path: `/v1/contracts/${seg(id)}/terminate`,
      body: { ...params },
    }));
  }
}

/**
 * Proof-of-concept allocations: free credits for a window (before a contract, during one, or
 * without), expiring at its end, carrying the list value they stand for, shown with what was used.
 */
export class PocAllocations extends Resource {
  /**
   * Allocates free credits to a customer for a window (at most 366 days, starting now or later).
   *
   * @example
   * const poc = await dd.pocAllocations.create({
   *   customer_id: acme.id, amount: "5000", list_value: { amount: "40", currency: "USD" },
   *   ends_at: "2027-02-01T00:00:00Z",
   * });
   */
  create(params: PocAllocationCreateParams, options?: PostOptions): ApiPromise<PocAllocation> {
    return this.postJson(options, () => ({
      path: "/v1/poc_allocations",
      body: {
        ...params,
        amount: wireAmount(params.amount, "amount"),
        list_value: wireMoney(params.list_value, "list_value"),
        starts_at: params.starts_at === undefined ? undefined : wireTime(params.starts_at, "starts_at"),
        ends_at: wireTime(params.ends_at, "ends_at"),
      },
    }));
  }

  /**
   * A customer's allocations, oldest first, each with what was used and its list value.
   *
   * @example
   * const { data } = await dd.pocAllocations.list(acme.id);
   * for (const p of data) console.log(p.used, "credits used, worth", p.used_list_value.amount, p.used_list_value.currency);
   */
  list(customerId: string, options?: RequestOptions): ApiPromise<List<PocAllocation>> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(customerId)}/poc_allocations` }));
  }

  /**
   * An allocation by id.
   *
   * @example
   * const poc = await dd.pocAllocations.get("poc_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(id: string, options?: RequestOptions): ApiPromise<PocAllocation> {
    return this.fetchJson(options, () => ({ path: `/v1/poc_allocations/${seg(id)}` }));
  }
}

/**
 * The price book: what credits cost to buy per currency (packs, graduated tiers, committed-use
 * discounts), and customers' commitments. Kept apart from rate cards (what actions cost in credits).
 */
export class PriceBooks extends Resource {
  /**
   * Publishes a currency's price book: its next version, in force for every purchase priced from now on.
   *
   * @example
   * await dd.priceBooks.publish({
   *   currency: "USD",
   *   packs: [{ id: "annual", name: "1,000 credits", credits: "1000", price: "100", expiry: { kind: "rolling", months: 12 } }],
   *   tiers: [{ up_to: "1000", unit_price: "0.12" }, { up_to: null, unit_price: "0.10" }],
   *   commitment_discounts: [{ min_committed: "10000", percent_off: 10 }],
   * });
   */
  publish(params: PriceBookParams, options?: PostOptions): ApiPromise<PriceBook> {
    return this.postJson(options, () => ({
      path: "/v1/price_books",
      body: {
        ...params,
        packs: params.packs?.map((p, i) => ({
          ...p,
          credits: wireAmount(p.credits, `packs[${i}].credits`),
          price: wireAmount(p.price, `packs[${i}].price`),
        })),
        tiers: params.tiers?.map((t, i) => ({
          up_to: t.up_to === null ? null : wireAmount(t.up_to, `tiers[${i}].up_to`),
          unit_price: wireAmount(t.unit_price, `tiers[${i}].unit_price`),
        })),
        commitment_discounts: params.commitment_discounts?.map((d, i) => ({
          ...d,
          min_committed: wireAmount(d.min_committed, `commitment_discounts[${i}].min_committed`),
        })),
      },
    }));
  }

  /**
   * The price books in force, one per currency.
   *
   * @example
   * const { data: books } = await dd.priceBooks.list();
   */
  list(options?: RequestOptions): ApiPromise<List<PriceBook>> {
    return this.fetchJson(options, () => ({ path: "/v1/price_books" }));
  }

  /**
   * Records a customer's commitment to buy credits over a term: while in force, the book's
   * committed-use discount for its total applies to every purchase in that currency.
   *
   * @example
   * await dd.priceBooks.commit(acme.id, { currency: "USD", credits: "12000", ends_at: "2027-12-31T00:00:00Z" });
   */
  commit(customerId: string, params: CommitmentCreateParams, options?: PostOptions): ApiPromise<Commitment> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/commitments`,
      body: {
        ...params,
        credits: wireAmount(params.credits, "credits"),
        starts_at: maybeTime(params.starts_at, "starts_at"),
        ends_at: wireTime(params.ends_at, "ends_at"),
      },
    }));
  }

  /**
   * A customer's commitments, oldest first.
   *
   * @example
   * const { data } = await dd.priceBooks.commitments(acme.id);
   */
  commitments(customerId: string, options?: RequestOptions): ApiPromise<List<Commitment>> {
    return this.fetchJson(options, () => ({ path: `/v1/customers/${seg(customerId)}/commitments` }));
  }
}

/**
 * Purchases of credits through a payment provider: pending until paid, then a grant with its
 * cost basis (exactly once).
 */
export class Purchases extends Resource {
  /**
   * Buys a pack or a custom amount for a wallet. Paid at once (`confirmed`, with `grant_id`), an
   * invoice (`pending`: no credits until confirmed), or declined (`failed`).
   *
   * @example
   * const invoice = await dd.purchases.create({ wallet_id: acme.wallet_id, currency: "USD", pack_id: "annual", provider: "manual" });
   */
  create(params: PurchaseCreateParams, options?: PostOptions): ApiPromise<Purchase> {
    return this.postJson(options, () => ({
      path: "/v1/purchases",
      body: {
        ...params,
        credits: params.credits === undefined ? undefined : wireAmount(params.credits, "credits"),
      },
    }));
  }

  /**
   * Purchases in id order, filtered by customer, wallet, status.
   *
   * @example
   * const { data: pending } = await dd.purchases.list({ status: "pending" });
   */
  list(params?: PurchaseListParams, options?: RequestOptions): ApiPromise<List<Purchase>> {
    return this.fetchJson(options, () => ({
      path: "/v1/purchases",
      query: {
        ...pageQuery(params),
        customer_id: params?.customer_id,
        wallet_id: params?.wallet_id,
        status: params?.status,
      },
    }));
  }

  /**
   * One purchase.
   *
   * @example
   * const p = await dd.purchases.get(invoice.id);
   */
  get(id: string, options?: RequestOptions): ApiPromise<Purchase> {
    return this.fetchJson(options, () => ({ path: `/v1/purchases/${seg(id)}` }));
  }

  /**
   * Confirms a pending purchase's payment: its credits are granted now, once. A purchase that is
   * not pending throws `purchase_not_pending` and nothing changes.
   *
   * @example
   * const paid = await dd.purchases.confirm(invoice.id, { reference: "wire-2027-001" });
   */
  confirm(id: string, params: PurchaseConfirmParams = {}, options?: PostOptions): ApiPromise<Purchase> {
    return this.postJson(options, () => ({ path: `/v1/purchases/${seg(id)}/confirm`, body: { ...params } }));
  }

  /**
   * Records that a pending purchase will not be paid: no credits; an auto top-up's failed payment turns it off.
   *
   * @example
   * await dd.purchases.fail(invoice.id, { reason: "invoice unpaid after 30 days" });
   */
  fail(id: string, params: PurchaseUnpaidParams = {}, options?: PostOptions): ApiPromise<Purchase> {
    return this.postJson(options, () => ({ path: `/v1/purchases/${seg(id)}/fail`, body: { ...params } }));
  }

  /**
   * Withdraws a pending purchase: no credits.
   *
   * @example
   * await dd.purchases.cancel(invoice.id, { reason: "ordered twice" });
   */
  cancel(id: string, params: PurchaseUnpaidParams = {}, options?: PostOptions): ApiPromise<Purchase> {
    return this.postJson(options, () => ({ path: `/v1/purchases/${seg(id)}/cancel`, body: { ...params } }));
  }
}

/**
 * Auto top-up per wallet: below a threshold, buy an amount, up to a target, or a pack, within a
 * monthly cap; it turns itself off after a failed payment.
 */
export class AutoTopUps extends Resource {
  /**
   * Sets (or replaces, turning it back on) a wallet's auto top-up.
   *
   * @example
   * await dd.autoTopUps.set(acme.wallet_id, {
   *   threshold: "200", amount: "500", currency: "USD", monthly_cap: "100", provider: "test", payment_method: "pm_test_ok",
   * });
   */
  set(walletId: string, params: AutoTopUpParams, options?: PostOptions): ApiPromise<AutoTopUp> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/auto_top_up`,
      body: {
        ...params,
        threshold: wireAmount(params.threshold, "threshold"),
        amount: params.amount === undefined ? undefined : wireAmount(params.amount, "amount"),
        target_balance:
          params.target_balance === undefined
            ? undefined
            : wireAmount(params.target_balance, "target_balance"),
        monthly_cap: wireAmount(params.monthly_cap, "monthly_cap"),
      },
    }));
  }

  /**
   * A wallet's auto top-up, with `disabled_reason` when it turned itself off.
   *
   * @example
   * const { enabled, disabled_reason } = await dd.autoTopUps.get(acme.wallet_id);
   */
  get(walletId: string, options?: RequestOptions): ApiPromise<AutoTopUp> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/auto_top_up` }));
  }

  /**
   * Turns a wallet's auto top-up off.
   *
   * @example
   * await dd.autoTopUps.disable(acme.wallet_id);
   */
  disable(walletId: string, options?: PostOptions): ApiPromise<AutoTopUp> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/auto_top_up/disable`,
      body: {},
    }));
  }

  /**
   * Checks a wallet's auto top-up now (the scheduler does it on its own). Throws
   * `auto_top_up_disabled` or `auto_top_up_cap_reached`, changing nothing.
   *
   * @example
   * const { outcome, purchase } = await dd.autoTopUps.run(acme.wallet_id);
   */
  run(walletId: string, options?: PostOptions): ApiPromise<AutoTopUpRun> {
    return this.postJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/auto_top_up/run`, body: {} }));
  }
}

/**
 * Webhooks: endpoints that receive events (grant.created, alert.triggered, …) signed per the
 * Standard Webhooks spec, and their delivery log. Verify each with the endpoint's secret
 * (any Standard Webhooks library) and dedupe by the `webhook-id` header: delivery is at least once.
 */
export class Webhooks extends Resource {
  /**
   * Creates an endpoint. The answer carries its `secret`, the only time it is shown.
   *
   * @example
   * const ep = await dd.webhooks.create({ url: "https://example.com/hooks", event_types: ["alert.triggered", "grant.*"] });
   * saveSecret(ep.secret!);
   */
  create(params: WebhookEndpointCreateParams, options?: PostOptions): ApiPromise<WebhookEndpoint> {
    return this.postJson(options, () => ({ path: "/v1/webhook_endpoints", body: { ...params } }));
  }

  /** Every endpoint of the tenant (never their secrets). */
  list(options?: RequestOptions): ApiPromise<List<WebhookEndpoint>> {
    return this.fetchJson(options, () => ({ path: "/v1/webhook_endpoints" }));
  }

  /** One endpoint. */
  get(id: string, options?: RequestOptions): ApiPromise<WebhookEndpoint> {
    return this.fetchJson(options, () => ({ path: `/v1/webhook_endpoints/${seg(id)}` }));
  }

  /**
   * Changes an endpoint's URL, event types, description or enabled state.
   *
   * @example
   * await dd.webhooks.update(ep.id, { enabled: false });
   */
  update(
    id: string,
    params: WebhookEndpointUpdateParams,
    options?: PostOptions,
  ): ApiPromise<WebhookEndpoint> {
    return this.postJson(options, () => ({ path: `/v1/webhook_endpoints/${seg(id)}`, body: { ...params } }));
  }

  /** Deletes an endpoint: nothing more is sent to it; its pending deliveries fail. */
  delete(id: string, options?: PostOptions): ApiPromise<WebhookEndpoint> {
    return this.postJson(options, () => ({ path: `/v1/webhook_endpoints/${seg(id)}/delete`, body: {} }));
  }

  /**
   * A new secret (in the answer only); the previous one signs too for 24 hours.
   *
   * @example
   * const { secret } = await dd.webhooks.rotateSecret(ep.id);
   */
  rotateSecret(id: string, options?: PostOptions): ApiPromise<WebhookEndpoint> {
    return this.postJson(options, () => ({
      path: `/v1/webhook_endpoints/${seg(id)}/rotate_secret`,
      body: {},
    }));
  }

  /**
   * Sends a `webhook.test` event to the endpoint now and answers the delivery with the attempt.
   *
   * @example
   * const d = await dd.webhooks.test(ep.id);
   * console.log(d.status, d.attempt_log[0]?.status_code);
   */
  test(id: string, options?: RequestOptions): ApiPromise<WebhookDeliveryDetail> {
    return this.transport.request(() => ({
      method: "POST",
      path: `/v1/webhook_endpoints/${seg(id)}/test`,
      body: {},
      signal: options?.signal,
    }));
  }

  /** An endpoint's deliveries, newest first. */
  deliveries(
    endpointId: string,
    params?: WebhookDeliveryListParams,
    options?: RequestOptions,
  ): ApiPromise<List<WebhookDelivery>> {
    return this.fetchJson(options, () => ({
      path: `/v1/webhook_endpoints/${seg(endpointId)}/deliveries`,
      query: { ...pageQuery(params), status: params?.status },
    }));
  }

  /** A delivery, its event and every attempt (status code, error, duration, next attempt). */
  delivery(id: string, options?: RequestOptions): ApiPromise<WebhookDeliveryDetail> {
    return this.fetchJson(options, () => ({ path: `/v1/webhook_deliveries/${seg(id)}` }));
  }

  /**
   * Attempts a delivery again now (a failed one gets one more attempt), with the same webhook-id.
   *
   * @example
   * const again = await dd.webhooks.redeliver(delivery.id);
   */
  redeliver(id: string, options?: RequestOptions): ApiPromise<WebhookDeliveryDetail> {
    return this.transport.request(() => ({
      method: "POST",
      path: `/v1/webhook_deliveries/${seg(id)}/retry`,
      body: {},
      signal: options?.signal,
    }));
  }
}

/**
 * Alerts: rules per wallet (20% and 10% remaining and exhausted by default) that fire once per
 * crossing and re-arm after recovery, delivered as `alert.triggered` webhooks.
 */
export class Alerts extends Resource {
  /**
   * Fired alerts, newest first.
   *
   * @example
   * const { data } = await dd.alerts.list({ wallet_id: acme.wallet_id, kind: "percent_remaining" });
   */
  list(params?: AlertListParams, options?: RequestOptions): ApiPromise<List<Alert>> {
    return this.fetchJson(options, () => ({
      path: "/v1/alerts",
      query: {
        ...pageQuery(params),
        wallet_id: params?.wallet_id,
        customer_id: params?.customer_id,
        kind: params?.kind,
      },
    }));
  }

  /** A wallet's rules (the defaults while it has set none). */
  rules(walletId: string, options?: RequestOptions): ApiPromise<AlertRules> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/alert_rules` }));
  }

  /**
   * Replaces a wallet's rules (empty: no alerts; null: the defaults again).
   *
   * @example
   * await dd.alerts.setRules(acme.wallet_id, {
   *   rules: [{ kind: "percent_remaining", percent: 25 }, { kind: "amount_remaining", amount: "50" }, { kind: "expiring_soon", days: 7 }],
   * });
   */
  setRules(walletId: string, params: AlertRulesSetParams, options?: PostOptions): ApiPromise<AlertRules> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/alert_rules`,
      body: {
        rules:
          params.rules === null
            ? null
            : params.rules.map((r, i) =>
                r.kind === "amount_remaining"
                  ? { ...r, amount: wireAmount(r.amount, `rules[${i}].amount`) }
                  : r,
              ),
      },
    }));
  }
}
