import { wireAmount, wireTime } from "./amounts.js";
import type { ApiPromise, Transport } from "./http.js";
import type {
  ApiKey,
  ApiKeyCreateParams,
  Balance,
  CreditAdjustmentParams,
  Customer,
  CustomerCreateParams,
  CustomerListParams,
  DebitAdjustmentParams,
  Grant,
  GrantCreated,
  GrantCreateParams,
  GrantExtendParams,
  GrantListParams,
  GrantVoidParams,
  List,
  PageParams,
  PostOptions,
  RequestOptions,
  ReversalParams,
  Subject,
  SubjectCreateParams,
  Transaction,
  TransactionListParams,
  Wallet,
  WalletCreateParams,
} from "./types.js";

/** An id in a path, escaped. */
const seg = (id: string): string => {
  if (typeof id !== "string" || id === "") throw new TypeError("An id must be a non-empty string.");
  return encodeURIComponent(id);
};

/** Paging parameters for the query string. */
const pageQuery = (p: PageParams | undefined) => ({
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

/** Base of every resource group. */
abstract class Resource {
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
   * A wallet's balance: total, available now, pending (not yet effective) and expired
   * awaiting breakage; its grants in burn-down order; available credits per scope.
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
