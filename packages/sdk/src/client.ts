import { type ApiPromise, Transport } from "./http.js";
import { Adjustments, ApiKeys, Customers, Grants, Subjects, Transactions, Wallets } from "./resources.js";
import type { PostOptions, ReconcileReport } from "./types.js";

/** Options of {@link Drawdown}. */
export interface DrawdownOptions {
  /** A secret key (`dd_test_sk_…`, `dd_live_sk_…`) for your backend, or a restricted key (reads one customer). */
  apiKey: string;
  /** Where the server listens, without `/v1`, e.g. `"http://127.0.0.1:4020"`. */
  baseUrl: string;
  /** The fetch to use; default the global one (Node 18+, browsers, Deno, Bun). */
  fetch?: typeof globalThis.fetch;
  /**
   * Retries after a network error, a timeout, a 5xx or a 429, with exponential backoff and
   * the same idempotency key. Default 2 (so at most 3 attempts); 0 disables retries.
   */
  maxRetries?: number;
  /** The first retry's delay in ms, doubled for each next one (capped at 8 s, with jitter); default 500. */
  retryBaseDelayMs?: number;
  /** How long one attempt may take before it is abandoned (and retried); default 60 000 ms. */
  timeoutMs?: number;
}

const VERSION = "0.1.0";

/**
 * The Drawdown API client.
 *
 * Amounts are never JS numbers: pass a decimal string of credits (`"12.5"`) or a `bigint` of
 * units at scale 9 (`12_500_000_000n` is 12.5 credits); responses carry decimal strings
 * (convert with {@link toUnits} / {@link toCredits}). Every POST is sent with an
 * `Idempotency-Key` (yours, or a random one) so retries never apply a change twice. Failures
 * throw {@link DrawdownError} with the API's stable `code`.
 *
 * @example
 * import { Drawdown, DrawdownError, toUnits } from "@drawdown/sdk";
 *
 * const dd = new Drawdown({ apiKey: process.env.DRAWDOWN_KEY!, baseUrl: "http://127.0.0.1:4020" });
 * const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
 * await dd.grants.create({ wallet_id: acme.wallet_id, amount: "100", source: "plan" });
 * try {
 *   await dd.adjustments.debit(acme.wallet_id, { amount: "12.5", reason: "manual correction" });
 * } catch (e) {
 *   if (e instanceof DrawdownError && e.code === "insufficient_credits") console.log(e.details);
 * }
 * const balance = await dd.wallets.balance(acme.wallet_id); // balance.available === "87.5"
 * for await (const txn of dd.transactions.listAll({ customer_id: acme.id })) console.log(txn.kind);
 */
export class Drawdown {
  /** Customers (each with its pool wallet): create, list, listAll, get. */
  readonly customers: Customers;
  /** Members, agents and workflows of a customer: create, list, listAll, get. */
  readonly subjects: Subjects;
  /** Wallets: create (a member's), list, get, balance. */
  readonly wallets: Wallets;
  /** Manual credit and debit adjustments on a wallet. */
  readonly adjustments: Adjustments;
  /** Credit grants: create, list, listAll, get, void, extend. */
  readonly grants: Grants;
  /** The journal: list, listAll, get, reverse. */
  readonly transactions: Transactions;
  /** API keys: create, list, revoke. */
  readonly apiKeys: ApiKeys;
  readonly #transport: Transport;

  constructor(options: DrawdownOptions) {
    if (!options || typeof options.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("Drawdown: apiKey is required (your secret or restricted key).");
    }
    if (typeof options.baseUrl !== "string" || !/^https?:\/\//.test(options.baseUrl)) {
      throw new TypeError('Drawdown: baseUrl is required, e.g. "http://127.0.0.1:4020".');
    }
    const maxRetries = options.maxRetries ?? 2;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw new RangeError("Drawdown: maxRetries must be a whole number, 0 or more.");
    }
    const fetchFn = options.fetch ?? globalThis.fetch;
    if (typeof fetchFn !== "function") {
      throw new TypeError("Drawdown: no global fetch here; pass options.fetch.");
    }
    this.#transport = new Transport({
      apiKey: options.apiKey,
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      // Called unbound: some fetch implementations need their global as `this`.
      fetch: (input, init) => fetchFn(input, init),
      maxRetries,
      retryBaseDelayMs: options.retryBaseDelayMs ?? 500,
      timeoutMs: options.timeoutMs ?? 60_000,
      userAgent: `drawdown-sdk-typescript/${VERSION}`,
    });
    this.customers = new Customers(this.#transport);
    this.subjects = new Subjects(this.#transport);
    this.wallets = new Wallets(this.#transport);
    this.adjustments = new Adjustments(this.#transport);
    this.grants = new Grants(this.#transport);
    this.transactions = new Transactions(this.#transport);
    this.apiKeys = new ApiKeys(this.#transport);
  }

  /**
   * Recomputes every wallet and grant of your tenant from the journal and reports each
   * difference with the materialized balances; `ok` is true when there is none.
   *
   * @example
   * const report = await dd.reconcile();
   * if (!report.ok) console.error(report.differences);
   */
  reconcile(options?: PostOptions): ApiPromise<ReconcileReport> {
    return this.#transport.request(() => ({
      method: "POST",
      path: "/v1/reconcile",
      body: {},
      idempotencyKey: options?.idempotencyKey,
      signal: options?.signal,
    }));
  }
}
