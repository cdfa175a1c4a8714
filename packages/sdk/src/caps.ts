import { wireAmount } from "./amounts.js";
import type { ApiPromise } from "./http.js";
import { pageQuery, paginate, Resource, seg } from "./resources.js";
import type { AmountInput, List, PageParams, PostOptions, RequestOptions } from "./types.js";

/** A spend cap: what a wallet (its chain), a member or an agent may be charged per UTC day or month. */
export interface SpendCap {
  object: "spend_cap";
  id: string;
  customer_id: string;
  target_kind: "wallet" | "subject";
  target_id: string;
  period: "day" | "month";
  /** Credits per period. */
  limit: string;
  /** vendor: set with a secret key; customer: with the customer's restricted key. */
  set_by: "vendor" | "customer";
  /** The current period's counters. */
  current_period: {
    start: string;
    end: string;
    /** Charged in the period. */
    spent: string;
    /** Reserved by pending holds placed in the period. */
    held: string;
    /** limit − spent − held, never below zero. */
    remaining: string;
  };
  /** True only in the answer of its deletion. */
  deleted: boolean;
  created_at: string;
  updated_at: string;
}

export interface SpendCapCreateParams {
  /** A wallet of the customer, or a member or agent of it. */
  target_id: string;
  period: "day" | "month";
  /** Credits per period; zero or more. */
  limit: AmountInput;
}

/**
 * Spend caps, set by the vendor (secret key) or by the customer (its restricted key); the
 * tighter binds, and a restricted key never changes a vendor's cap (`forbidden`). Enforced in
 * the same atomic step as every debit: events beyond a cap are recorded unpaid with reason
 * `spend_cap_reached`, authorizations are denied with that reason.
 */
export class SpendCaps extends Resource {
  /**
   * Sets a cap on a wallet, member or agent of the customer.
   *
   * @example
   * const cap = await dd.spendCaps.create(acme.id, { target_id: agent.id, period: "day", limit: "50" });
   */
  create(customerId: string, params: SpendCapCreateParams, options?: PostOptions): ApiPromise<SpendCap> {
    return this.postJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/spend_caps`,
      body: { target_id: params.target_id, period: params.period, limit: wireAmount(params.limit, "limit") },
    }));
  }

  /** A customer's caps with their current period's spent, held and remaining. */
  list(customerId: string, params?: PageParams, options?: RequestOptions): ApiPromise<List<SpendCap>> {
    return this.fetchJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/spend_caps`,
      query: pageQuery(params),
    }));
  }

  /** Every cap of a customer, page after page. */
  listAll(
    customerId: string,
    params?: Omit<PageParams, "cursor">,
  ): AsyncGenerator<SpendCap, void, undefined> {
    return paginate((cursor) => this.list(customerId, { ...params, cursor }));
  }

  /** A cap with its current period's counters. */
  get(id: string, options?: RequestOptions): ApiPromise<SpendCap> {
    return this.fetchJson(options, () => ({ path: `/v1/spend_caps/${seg(id)}` }));
  }

  /**
   * Changes a cap's limit, from now on.
   *
   * @example
   * await dd.spendCaps.update(cap.id, { limit: "80" });
   */
  update(id: string, params: { limit: AmountInput }, options?: PostOptions): ApiPromise<SpendCap> {
    return this.postJson(options, () => ({
      path: `/v1/spend_caps/${seg(id)}`,
      body: { limit: wireAmount(params.limit, "limit") },
    }));
  }

  /** Deletes a cap; answers it as it was, with `deleted: true`. */
  delete(id: string, options?: PostOptions): ApiPromise<SpendCap> {
    return this.postJson(options, () => ({ path: `/v1/spend_caps/${seg(id)}/delete`, body: {} }));
  }
}
