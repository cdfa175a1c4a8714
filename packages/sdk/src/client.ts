import { SpendCaps } from "./caps.js";
import { Holds } from "./holds.js";
import { type ApiPromise, Transport } from "./http.js";
import {
  Adjustments,
  Alerts,
  ApiKeys,
  AutoTopUps,
  Contracts,
  CostTables,
  Customers,
  Events,
  Gifts,
  Grants,
  OverageInvoices,
  Plans,
  PocAllocations,
  PriceBooks,
  Purchases,
  RateCards,
  Reports,
  Subjects,
  Subscriptions,
  TestClocks,
  Transactions,
  Wallets,
  Webhooks,
} from "./resources.js";
import { Runs } from "./runs.js";
import type { PostOptions, PublicRateCard, ReconcileReport, RequestOptions } from "./types.js";

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
 *
 * // Metering: publish prices, send usage, read why it cost what it did.
 * const card = await dd.rateCards.create({ name: "Standard" });
 * await dd.rateCards.publishVersion(card.id, {
 *   lines: [{ id: "out", action: "chat.completion", quantity: "output_tokens", rate: "0.015", per: 1000 }],
 * });
 * const r = await dd.events.ingest({
 *   id: "evt_1", customer_id: acme.id, action: "chat.completion", quantities: { output_tokens: 350 },
 * });
 * const why = await dd.events.get("evt_1"); // why.explanation.lines, why.explanation.draws
 *
 * // Plans and subscriptions: $20 a month including 25 credits, renewed each period.
 * const pro = await dd.plans.create({
 *   name: "Pro", base_fee: { amount: "20", currency: "USD" }, interval: { unit: "month", count: 1 }, allotment: "25",
 * });
 * const sub = await dd.subscriptions.create({ customer_id: acme.id, plan_id: pro.id });
 *
 * // A test tenant's clock: move time forward; every expiry due on the way happens, in order.
 * await dd.testClock.advance({ to: "2026-04-01T00:00:00Z" });
 */
export class Drawdown {
  /** Customers (each with its pool wallet): create, list, listAll, get, setPricing. */
  readonly customers: Customers;
  /** Members, agents and workflows of a customer: create, list, listAll, get. */
  readonly subjects: Subjects;
  /** Wallets: create (a member's), list, get, balance, setOverage, getOverage, clearOverage, billOverage. */
  readonly wallets: Wallets;
  /** Manual credit and debit adjustments on a wallet. */
  readonly adjustments: Adjustments;
  /** Credit grants: create, list, listAll, get, void, extend, and the expiry policies per source. */
  readonly grants: Grants;
  /** The journal: list, listAll, get, reverse. */
  readonly transactions: Transactions;
  /** API keys: create, list, revoke. */
  readonly apiKeys: ApiKeys;
  /** Usage events: ingest, ingestBatch (native or CloudEvents), get (the price explanation). */
  readonly events: Events;
  /** Rate cards and their versions: create, list, get, publishVersion. */
  readonly rateCards: RateCards;
  /** Cost tables (cost of goods sold): publish. */
  readonly costTables: CostTables;
  /** Reports: margin. */
  readonly reports: Reports;
  /** Durable agent runs: start, step (authorize with a hold), settle or void a step, resume, complete, cancel, get, list, and the run start minimum. */
  readonly runs: Runs;
  /** Plans (a base fee plus credits per period, with rollover): create, list, get. */
  readonly plans: Plans;
  /** Customers' subscriptions to plans: create, list, get, changeSeats, changePlan, cancel. */
  readonly subscriptions: Subscriptions;
  /** Gifts: claimable codes, direct gifts, referrals. */
  readonly gifts: Gifts;
  /** Enterprise contracts (committed credits, negotiated price, rate card terms): create, list, get, terminate. */
  readonly contracts: Contracts;
  /** Proof-of-concept allocations (free, time-bounded credits with a list value): create, list, get. */
  readonly pocAllocations: PocAllocations;
  /** A test tenant's clock: get, advance (every expiry due on the way happens, in order). */
  readonly testClock: TestClocks;
  /** The price book (packs, tiers, committed-use discounts) and customers' commitments. */
  readonly priceBooks: PriceBooks;
  /** Purchases of credits: create, list, get, confirm, fail, cancel. */
  readonly purchases: Purchases;
  /** Wallets' auto top-up: set, get, disable, run. */
  readonly autoTopUps: AutoTopUps;
  /** Authorize and holds: authorize (optionally holding the estimate), settle, void, get, list, ping. */
  readonly holds: Holds;
  /** Webhook endpoints (create, list, get, update, delete, rotateSecret, test) and their delivery log. */
  readonly webhooks: Webhooks;
  /** Alerts: list the fired ones; a wallet's rules (rules, setRules). */
  readonly alerts: Alerts;
  /** Overage invoices (priced soft caps billed at renewals and on demand): list. */
  readonly overageInvoices: OverageInvoices;
  /** Spend caps per wallet, member or agent, per day or month: create, list, listAll, get, update, delete. */
  readonly spendCaps: SpendCaps;
  readonly #transport: Transport;

  constructor(options: DrawdownOptions) {
    if (!options || typeof options.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("Drawdown: apiKey is required (your secret or restricted key).");
    }
    this.#transport = transport(options);
    this.customers = new Customers(this.#transport);
    this.subjects = new Subjects(this.#transport);
    this.wallets = new Wallets(this.#transport);
    this.adjustments = new Adjustments(this.#transport);
    this.grants = new Grants(this.#transport);
    this.transactions = new Transactions(this.#transport);
    this.apiKeys = new ApiKeys(this.#transport);
    this.events = new Events(this.#transport);
    this.rateCards = new RateCards(this.#transport);
    this.costTables = new CostTables(this.#transport);
    this.reports = new Reports(this.#transport);
    this.runs = new Runs(this.#transport);
    this.plans = new Plans(this.#transport);
    this.subscriptions = new Subscriptions(this.#transport);
    this.gifts = new Gifts(this.#transport);
    this.contracts = new Contracts(this.#transport);
    this.pocAllocations = new PocAllocations(this.#transport);
    this.priceBooks = new PriceBooks(this.#transport);
    this.purchases = new Purchases(this.#transport);
    this.autoTopUps = new AutoTopUps(this.#transport);
    this.testClock = new TestClocks(this.#transport);
    this.holds = new Holds(this.#transport);
    this.webhooks = new Webhooks(this.#transport);
    this.alerts = new Alerts(this.#transport);
    this.overageInvoices = new OverageInvoices(this.#transport);
    this.spendCaps = new SpendCaps(this.#transport);
  }

  /**
   * A tenant's default rate card as its customers may see it: the version in force and the
   * next scheduled one, with every rate. Public: sent without the API key (see
   * {@link publicRateCard} to call it with no key at all). `not_found` when the tenant has
   * published none.
   *
   * @example
   * const card = await dd.publicRateCard("ten_01jd0s7k2mqx3v8r9t5w6y7z8a");
   * for (const r of card.current?.rates ?? []) console.log(r.action, r.model, r.rate, "per", r.per, r.quantity);
   */
  publicRateCard(tenantId: string, options?: RequestOptions): ApiPromise<PublicRateCard> {
    return publicRateCardVia(this.#transport, tenantId, options);
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

/** Builds the transport from the client's options, checking them. */
function transport(options: DrawdownOptions): Transport {
  if (!options || typeof options.baseUrl !== "string" || !/^https?:\/\//.test(options.baseUrl)) {
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
  return new Transport({
    apiKey: options.apiKey,
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    // Called unbound: some fetch implementations need their global as `this`.
    fetch: (input, init) => fetchFn(input, init),
    maxRetries,
    retryBaseDelayMs: options.retryBaseDelayMs ?? 500,
    timeoutMs: options.timeoutMs ?? 60_000,
    userAgent: `drawdown-sdk-typescript/${VERSION}`,
  });
}

function publicRateCardVia(
  t: Transport,
  tenantId: string,
  options: RequestOptions | undefined,
): ApiPromise<PublicRateCard> {
  return t.request(() => {
    if (typeof tenantId !== "string" || tenantId === "")
      throw new TypeError("publicRateCard: tenantId must be a non-empty string.");
    return {
      method: "GET",
      path: `/v1/public/${encodeURIComponent(tenantId)}/rate_card`,
      authenticate: false,
      signal: options?.signal,
    };
  });
}

/**
 * A tenant's public rate card, with no API key at all: for a pricing page or a customer's
 * browser. Takes the client's options but the key.
 *
 * @example
 * import { publicRateCard } from "@drawdown/sdk";
 * const card = await publicRateCard("ten_01jd0s7k2mqx3v8r9t5w6y7z8a", { baseUrl: "https://billing.example.com" });
 * console.log(card.name, card.current?.rates, card.upcoming?.effective_at);
 */
export function publicRateCard(
  tenantId: string,
  options: Omit<DrawdownOptions, "apiKey"> & RequestOptions,
): ApiPromise<PublicRateCard> {
  return publicRateCardVia(transport({ ...options, apiKey: "" }), tenantId, options);
}
