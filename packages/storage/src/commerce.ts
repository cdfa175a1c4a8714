import { createHash } from "node:crypto";
import {
  type AutoTopUpConfig,
  decideShortfallTopUp,
  decideTopUp,
  type ExpiryPolicy,
  fail,
  inRange,
  invariant,
  monthStart,
  nextMonthStart,
  ok,
  type PriceBook,
  type PriceBookInput,
  priceCredits,
  pricePack,
  purchaseExpiry,
  type Quote,
  type Result,
  type TopUpQuantity,
  validateAutoTopUp,
  validatePriceBook,
} from "@drawdown/core";
import { fireAlert, rearmAlert } from "./alerts.js";
import type { IdempotencyClaim, WriterAnswer } from "./hold-writer.js";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

// ---------------------------------------------------------------------------------------------
// Payment providers
// ---------------------------------------------------------------------------------------------

/** What a provider is asked to charge. */
export interface PaymentRequest {
  readonly tenantId: string;
  readonly purchaseId: string;
  readonly customerId: string;
  /** Money, in units at scale 9 (a whole number of the price book's smallest step). */
  readonly amount: bigint;
  readonly currency: string;
  /** The provider's token for how to pay (a card, a mandate); null for an invoice. */
  readonly paymentMethod: string | null;
  /**
   * The same for every retry of one charge: a provider passes it on (as Stripe's
   * Idempotency-Key), so a charge retried after a crash is made once.
   */
  readonly idempotencyKey: string;
}

/** What a charge came to. */
export interface PaymentResult {
  /** `succeeded`: paid now; `pending`: confirmed or failed later (an invoice); `failed`: declined. */
  readonly status: "succeeded" | "pending" | "failed";
  /** The provider's reference (a charge or invoice id), when it has one. */
  readonly reference: string | null;
  readonly failureReason?: string;
}

/**
 * A way to pay for credits: a card provider (Stripe, Adyen) is one more implementation of this
 * interface. `charge` gets an idempotency key that is the same on every retry (of an auto top-up
 * attempt; of an API purchase sent with an `Idempotency-Key`). An auto top-up's charge is made
 * with no transaction open (its purchase is written first, awaiting the charge, and the answer
 * is recorded after), so a slow provider never holds a wallet's lock; an API purchase's charge
 * is made in the request's transaction, which holds no wallet lock.
 */
export interface PaymentProvider {
  readonly id: string;
  /** Usable by test tenants only (a provider that moves no real money). */
  readonly testOnly: boolean;
  /**
   * Answers a charge at once (paid or declined): only such a provider is tried by an auto
   * top-up before a denial, while the request waits (with no transaction open). Absent: false.
   */
  readonly synchronous?: boolean;
  /** Checks a payment method before anything is written; a message says what is wrong, null when fine. */
  checkPaymentMethod(paymentMethod: string | null): string | null;
  charge(request: PaymentRequest): Promise<PaymentResult>;
}

/**
 * Invoices: every charge is pending, and the vendor confirms (paid) or fails (not paid) the
 * purchase through the API when the money arrives or does not.
 */
export const manualProvider: PaymentProvider = {
  id: "manual",
  testOnly: false,
  checkPaymentMethod: () => null,
  charge: async () => ({ status: "pending", reference: null }),
};

/** The payment methods of the {@link testProvider}, and what each does. */
export const TEST_PAYMENT_METHODS = {
  pm_test_ok: "succeeded",
  pm_test_declined: "failed",
  pm_test_pending: "pending",
} as const;

/**
 * A deterministic card for test tenants: `pm_test_ok` pays at once, `pm_test_declined` is
 * declined, `pm_test_pending` waits for a confirmation through the API.
 */
export const testProvider: PaymentProvider = {
  id: "test",
  testOnly: true,
  synchronous: true,
  checkPaymentMethod: (pm) =>
    pm !== null && pm in TEST_PAYMENT_METHODS
      ? null
      : `The test provider takes payment_method ${Object.keys(TEST_PAYMENT_METHODS).join(", ")}.`,
  charge: async (r) => {
    const outcome = TEST_PAYMENT_METHODS[r.paymentMethod as keyof typeof TEST_PAYMENT_METHODS];
    const reference = `test_${r.idempotencyKey}`;
    return outcome === "failed"
      ? { status: "failed", reference, failureReason: "card_declined: the test card was declined" }
      : { status: outcome, reference };
  },
};

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/** A published price book: one version for one currency. */
export interface PriceBookRecord extends PriceBook {
  readonly id: string;
  readonly version: number;
  readonly createdAt: number;
}

/** A customer's committed use in one currency over a term. */
export interface CommitmentRecord {
  readonly id: string;
  readonly customerId: string;
  readonly currency: string;
  readonly credits: bigint;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly createdAt: number;
}

export type PurchaseStatus = "pending" | "confirmed" | "failed" | "canceled";

/** A purchase of credits, priced by a price book version, paid through a provider. */
export interface PurchaseRecord {
  readonly id: string;
  readonly customerId: string;
  readonly walletId: string;
  readonly currency: string;
  readonly credits: bigint;
  readonly packId: string | null;
  readonly listPrice: bigint;
  readonly discountPercent: number;
  readonly price: bigint;
  readonly costBasis: bigint;
  readonly priceBookId: string;
  readonly expiry: ExpiryPolicy;
  readonly provider: string;
  readonly paymentMethod: string | null;
  readonly providerReference: string | null;
  readonly status: PurchaseStatus;
  readonly failureReason: string | null;
  /** `api`: bought through POST /v1/purchases; `auto_top_up`: bought by the wallet's auto top-up. */
  readonly origin: "api" | "auto_top_up";
  /** The grant its payment made; set exactly when confirmed. */
  readonly grantId: string | null;
  /**
   * An auto top-up written before its charge, whose provider has not answered yet (a pending
   * purchase either way). The scheduler charges again, with the same key, one left so.
   */
  readonly awaitingCharge: boolean;
  /** The idempotency key its provider is asked with (null on purchases made before it was kept). */
  readonly providerKey: string | null;
  readonly createdAt: number;
  readonly resolvedAt: number | null;
}

/** A wallet's auto top-up. */
export interface AutoTopUpRecord extends AutoTopUpConfig {
  readonly walletId: string;
  readonly provider: string;
  readonly paymentMethod: string | null;
  readonly enabled: boolean;
  /** Why it turned itself off (a failed payment), or null. */
  readonly disabledReason: string | null;
  readonly disabledAt: number | null;
  /** No top-up is tried before this time (the cap stopped one this month); null: none waiting. */
  readonly cappedUntil: number | null;
  readonly attempts: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** What a check of a wallet's auto top-up did. */
export interface TopUpRun {
  /** `purchased`: a purchase was made (see its status); `not_needed`: at or above the threshold; `pending`: a purchase awaits its payment. */
  readonly outcome: "purchased" | "not_needed" | "pending";
  readonly purchase: PurchaseRecord | null;
  readonly autoTopUp: AutoTopUpRecord;
}

/** A shortfall an auto top-up may cover: the paying chain (the payers, then their pool, last) and the credits it needs. */
export interface TopUpNeed {
  /** The customer whose wallets the chain is. */
  readonly customerId: string;
  readonly chain: readonly string[];
  readonly need: bigint;
}

/** What the auto top-up tried before a denial did (see {@link Commerce.topUpBeforeDeny}). */
export interface TopUpTry {
  /** `covered`: the purchases paid for the need; `failed`: `auto_top_up_failed` fired; `none`: nothing bought now. */
  readonly outcome: "covered" | "failed" | "none";
  readonly purchases: readonly PurchaseRecord[];
  readonly reason: string | null;
}

const NO_TOP_UP: TopUpTry = { outcome: "none", purchases: [], reason: null };

/**
 * Thrown in an operation's transaction when an auto top-up is to be tried before a denial: the
 * transaction rolls back, and {@link withTopUpsFirst} buys with no transaction open, then runs
 * the operation again. A provider's charge never runs under a wallet's lock.
 */
export class TopUpFirst extends Error {
  override name = "TopUpFirst";
  constructor(readonly needs: readonly TopUpNeed[]) {
    super("auto top-ups are to be tried before this operation is run again");
  }
}

/** The auto top-ups one operation tried, by paying chain (its pool, the chain's last wallet). */
export class TopUpsTried {
  readonly #byPool = new Map<string, TopUpTry>();
  #final = false;

  /** For an operation that is not run again: it tries no auto top-up. */
  static none(): TopUpsTried {
    const t = new TopUpsTried();
    t.finish();
    return t;
  }

  /** What was tried for this chain, if anything. */
  get(need: TopUpNeed): TopUpTry | undefined {
    return this.forPool(need.chain.at(-1)!);
  }

  /** What was tried for the chain ending at this pool wallet, if anything. */
  forPool(poolWalletId: string): TopUpTry | undefined {
    return this.#byPool.get(poolWalletId);
  }

  /** The operation's last run: a chain not tried yet is not tried now (a bound on the reruns). */
  get final(): boolean {
    return this.#final;
  }

  /** What the top-ups bought for a chain, with no transaction open ({@link withTopUpsFirst}, the writers' gates). */
  record(need: TopUpNeed, t: TopUpTry): void {
    this.#byPool.set(need.chain.at(-1)!, t);
  }

  /** Makes this the last run: chains not tried yet are answered `none`, never `charge`. */
  finish(): void {
    this.#final = true;
  }
}

/**
 * Runs an operation that opens its own transactions (`run` gets what was tried so far), trying
 * first the auto top-ups it asks for: when it throws {@link TopUpFirst}, its transaction has
 * rolled back; the top-ups run with no transaction open ({@link Commerce.topUpOutside}), and
 * the operation runs again, seeing what they bought. Three runs at most: the last one tries
 * nothing new. Without commerce, the operation runs once.
 *
 *     const r = await withTopUpsFirst(commerce, tenantId, (tried) =>
 *       store.db.transaction((tx) => holds.authorize(tx, tenantId, request, tried)));
 */
export async function withTopUpsFirst<T>(
  commerce: Commerce | null | undefined,
  tenantId: string,
  run: (tried: TopUpsTried) => Promise<T>,
): Promise<T> {
  const tried = new TopUpsTried();
  for (let round = 1; ; round++) {
    if (round === 3 || !commerce) tried.finish();
    try {
      return await run(tried);
    } catch (error) {
      if (!(error instanceof TopUpFirst) || !commerce || tried.final) throw error;
      for (const need of error.needs) tried.record(need, await commerce.topUpOutside(tenantId, need));
    }
  }
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const msOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : ms(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const big = (v: unknown): bigint => BigInt(String(v));

const bookJson = (b: PriceBook): string =>
  JSON.stringify(b, (_k, v) => (typeof v === "bigint" ? { $bigint: v.toString() } : v));

const bookFrom = (r: Row): PriceBookRecord => ({
  ...(JSON.parse(String(r.definition), (_k, v) =>
    v !== null && typeof v === "object" && "$bigint" in v ? BigInt(v.$bigint) : v,
  ) as PriceBook),
  id: String(r.id),
  version: Number(r.version),
  createdAt: ms(r.created_at),
});

const commitmentFrom = (r: Row): CommitmentRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  currency: String(r.currency),
  credits: big(r.credits),
  startsAt: ms(r.starts_at),
  endsAt: ms(r.ends_at),
  createdAt: ms(r.created_at),
});

const purchaseFrom = (r: Row): PurchaseRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  walletId: String(r.wallet_id),
  currency: String(r.currency),
  credits: big(r.credits),
  packId: strOrNull(r.pack_id),
  listPrice: big(r.list_price),
  discountPercent: Number(r.discount_percent),
  price: big(r.price),
  costBasis: big(r.cost_basis),
  priceBookId: String(r.price_book_id),
  expiry: JSON.parse(String(r.expiry)) as ExpiryPolicy,
  provider: String(r.provider),
  paymentMethod: strOrNull(r.payment_method),
  providerReference: strOrNull(r.provider_reference),
  status: r.status as PurchaseStatus,
  failureReason: strOrNull(r.failure_reason),
  origin: r.origin as PurchaseRecord["origin"],
  grantId: strOrNull(r.grant_id),
  awaitingCharge: r.awaiting_charge === true,
  providerKey: strOrNull(r.provider_key),
  createdAt: ms(r.created_at),
  resolvedAt: msOrNull(r.resolved_at),
});

const autoTopUpFrom = (r: Row): AutoTopUpRecord => {
  const kind = String(r.buy_kind) as TopUpQuantity["kind"];
  const buy: TopUpQuantity =
    kind === "pack"
      ? { kind, packId: String(r.pack_id) }
      : kind === "target"
        ? { kind, balance: big(r.buy_credits) }
        : { kind, credits: big(r.buy_credits) };
  return {
    walletId: String(r.wallet_id),
    threshold: big(r.threshold),
    buy,
    currency: String(r.currency),
    monthlyCap: big(r.monthly_cap),
    provider: String(r.provider),
    paymentMethod: strOrNull(r.payment_method),
    enabled: Boolean(r.enabled),
    disabledReason: strOrNull(r.disabled_reason),
    disabledAt: msOrNull(r.disabled_at),
    cappedUntil: msOrNull(r.capped_until),
    attempts: Number(r.attempts),
    createdAt: ms(r.created_at),
    updatedAt: ms(r.updated_at),
  };
};

/** Metadata key on a purchased grant naming its purchase. */
export const PURCHASE_METADATA_KEY = "purchase_id";

/** The key `auto_top_up_failed` alerts fire under: once per crossing, re-armed by a paid top-up or a new setting. */
export const AUTO_TOP_UP_FAILED_KEY = "auto_top_up_failed";

/**
 * How long the scheduler leaves a purchase awaiting its charge before charging it itself: the
 * request that wrote it is charging it meanwhile (charging twice would be harmless, the key being
 * the same, but is a needless call).
 */
export const AWAITING_CHARGE_GRACE_MS = 60_000;

/** How many purchases one check of a wallet makes at most (several when one is not enough). */
const TOP_UPS_PER_CHECK = 20;

/** What a provider is asked to charge for a purchase, but its idempotency key. */
const paymentRequest = (
  tenantId: string,
  p: Pick<PurchaseRecord, "id" | "customerId" | "price" | "currency" | "paymentMethod">,
): Omit<PaymentRequest, "idempotencyKey"> => ({
  tenantId,
  purchaseId: p.id,
  customerId: p.customerId,
  amount: p.price,
  currency: p.currency,
  paymentMethod: p.paymentMethod,
});

/** A purchase about to be written: priced, with its provider and the key the provider is asked with. */
interface PurchaseToMake {
  readonly id: string;
  readonly walletId: string;
  readonly customerId: string;
  readonly quote: Quote;
  readonly bookId: string;
  readonly provider: PaymentProvider;
  readonly paymentMethod: string | null;
  readonly origin: PurchaseRecord["origin"];
  readonly idempotencyKey: string;
}

/** What a purchase buys: a pack, or a custom amount of credits. */
export type PurchaseItem = { readonly packId: string } | { readonly credits: bigint };

/**
 * Top-ups and the price book: price books per currency (versioned), customers' commitments,
 * purchases paid through a {@link PaymentProvider}, and auto top-up, a scheduler job.
 *
 * A purchase is pending until its payment is confirmed; its confirmation writes the grant
 * (source `purchase`, or `top_up` for auto top-ups, with the cost basis and currency of the
 * price) in the same transaction as the status change, under the purchase's row lock, so a
 * purchase is confirmed at most once (a second confirmation fails with `purchase_not_pending`
 * and writes nothing). Pending credits do not exist yet: nothing can draw them. An auto
 * top-up's purchase is written before its provider is charged, and the charge runs with no
 * transaction open (see {@link withTopUpsFirst}).
 */
export class Commerce implements DueJob {
  readonly #providers = new Map<string, PaymentProvider>();

  constructor(
    private readonly store: Store,
    providers: readonly PaymentProvider[] = [manualProvider, testProvider],
  ) {
    for (const p of providers) this.#providers.set(p.id, p);
    store.addDueJob(this);
  }

  /** The ids of the payment providers this instance knows. */
  get providers(): string[] {
    return [...this.#providers.keys()];
  }

  // ------------------------------------------------------------------ price books

  /**
   * Publishes a price book for its currency: the next version, in force for every purchase
   * priced from now on (pending purchases keep the price they were made at).
   */
  async publishPriceBook(
    ex: SqlExecutor,
    tenantId: string,
    input: PriceBookInput,
  ): Promise<Result<PriceBookRecord>> {
    const book = validatePriceBook(input);
    if (!book.ok) return book;
    const id = this.store.newId("pbk");
    const now = this.store.now(tenantId);
    const { rows, rowCount } = await ex.query(
      `INSERT INTO price_books (tenant_id, id, currency, version, definition, created_at)
       SELECT $1, $2, $3, coalesce(max(version), 0) + 1, $4, $5 FROM price_books WHERE tenant_id = $1 AND currency = $3
       ON CONFLICT DO NOTHING RETURNING *`,
      [tenantId, id, book.value.currency, bookJson(book.value), iso(now)],
    );
    if (rowCount === 0)
      return fail(
        "already_exists",
        `Another ${book.value.currency} price book was published at the same moment; publish again.`,
      );
    return ok(bookFrom(rows[0]!));
  }

  /** The price book in force for a currency (its latest version), or null. */
  async currentPriceBook(
    tenantId: string,
    currency: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<PriceBookRecord | null> {
    const { rows } = await ex.query(
      "SELECT * FROM price_books WHERE tenant_id = $1 AND currency = $2 ORDER BY version DESC LIMIT 1",
      [tenantId, currency],
    );
    return rows[0] ? bookFrom(rows[0]) : null;
  }

  /** The price books in force, one per currency, in currency order. */
  async listPriceBooks(tenantId: string): Promise<PriceBookRecord[]> {
    const { rows } = await this.store.db.query(
      `SELECT DISTINCT ON (currency) * FROM price_books WHERE tenant_id = $1 ORDER BY currency, version DESC`,
      [tenantId],
    );
    return rows.map(bookFrom);
  }

  // ------------------------------------------------------------------ commitments

  /**
   * Records a customer's commitment to `credits` credits in `currency` over `[startsAt, endsAt)`
   * (start: now by default). While it is in force, the price book's committed-use discount for
   * the customer's total commitment applies to every purchase in that currency.
   */
  async addCommitment(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    input: { currency: string; credits: bigint; startsAt?: number | null; endsAt: number },
  ): Promise<Result<CommitmentRecord>> {
    const customer = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      customerId,
    ]);
    if (customer.rowCount === 0) return fail("not_found", `No customer ${customerId}.`);
    if (!/^[A-Z]{3}$/.test(input.currency))
      return fail("invalid_argument", 'The currency is an ISO 4217 code such as "USD".', {
        field: "currency",
      });
    if (input.credits <= 0n || !inRange(input.credits))
      return fail("invalid_amount", "The committed credits are positive.", { field: "credits" });
    const now = this.store.now(tenantId);
    const startsAt = input.startsAt ?? now;
    if (input.endsAt <= startsAt || input.endsAt <= now)
      return fail("invalid_argument", "ends_at must be after starts_at and in the future.", {
        field: "ends_at",
      });
    const { rows } = await ex.query(
      `INSERT INTO commitments (tenant_id, id, customer_id, currency, credits, starts_at, ends_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
      [
        tenantId,
        this.store.newId("cmt"),
        customerId,
        input.currency,
        input.credits.toString(),
        iso(startsAt),
        iso(input.endsAt),
        iso(now),
      ],
    );
    return ok(commitmentFrom(rows[0]!));
  }

  async listCommitments(tenantId: string, customerId: string): Promise<CommitmentRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM commitments WHERE tenant_id = $1 AND customer_id = $2 ORDER BY starts_at, id",
      [tenantId, customerId],
    );
    return rows.map(commitmentFrom);
  }

  /**
   * Which of these wallets have an auto top-up enabled, in one query: a writer's batch asks
   * this before trying {@link topUpBeforeDeny} wallet by wallet.
   */
  async enabledAutoTopUps(
    ex: SqlExecutor,
    tenantId: string,
    walletIds: readonly string[],
  ): Promise<ReadonlySet<string>> {
    if (walletIds.length === 0) return new Set();
    const { rows } = await ex.query(
      "SELECT wallet_id FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = ANY($2::text[]) AND enabled",
      [tenantId, [...walletIds]],
    );
    return new Set(rows.map((r) => String(r.wallet_id)));
  }

  /** What a wallet's auto top-ups spent (pending or confirmed) in a currency this calendar month. */
  async #autoTopUpSpent(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    currency: string,
    now: number,
  ): Promise<bigint> {
    const { rows } = await ex.query<{ total: string }>(
      `SELECT coalesce(sum(price), 0)::text AS total FROM purchases WHERE tenant_id = $1 AND wallet_id = $2
         AND origin = 'auto_top_up' AND currency = $3 AND status IN ('pending', 'confirmed') AND created_at >= $4`,
      [tenantId, walletId, currency, iso(monthStart(now))],
    );
    return BigInt(rows[0]!.total);
  }

  /** A customer's committed credits in a currency in force at `at`. */
  async committedAt(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    currency: string,
    at: number,
  ): Promise<bigint> {
    const { rows } = await ex.query<{ total: string }>(
      `SELECT coalesce(sum(credits), 0)::text AS total FROM commitments
       WHERE tenant_id = $1 AND customer_id = $2 AND currency = $3 AND starts_at <= $4 AND ends_at > $4`,
      [tenantId, customerId, currency, iso(at)],
    );
    return BigInt(rows[0]!.total);
  }

  // ------------------------------------------------------------------ purchases

  /** Prices a purchase for a customer now, without buying: the book in force and any commitment discount. */
  async quote(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    currency: string,
    item: PurchaseItem,
  ): Promise<Result<{ quote: Quote; book: PriceBookRecord }>> {
    const book = await this.currentPriceBook(tenantId, currency, ex);
    if (!book)
      return fail("no_price_book", `No ${currency} price book is published; publish one first.`, {
        currency,
      });
    const committed = await this.committedAt(ex, tenantId, customerId, currency, this.store.now(tenantId));
    const q =
      "packId" in item
        ? pricePack(book, item.packId, committed)
        : priceCredits(book, item.credits, committed);
    if (!q.ok) return q;
    return ok({ quote: q.value, book });
  }

  #provider(
    tenantEnvironment: "live" | "test",
    id: string,
    paymentMethod: string | null,
  ): Result<PaymentProvider> {
    const provider = this.#providers.get(id);
    if (!provider)
      return fail(
        "invalid_argument",
        `No payment provider "${id}"; this server has ${this.providers.join(", ")}.`,
        {
          field: "provider",
        },
      );
    if (provider.testOnly && tenantEnvironment !== "test")
      return fail("invalid_argument", `The "${id}" provider moves no money: test tenants only.`, {
        field: "provider",
      });
    const problem = provider.checkPaymentMethod(paymentMethod);
    if (problem !== null) return fail("invalid_argument", problem, { field: "payment_method" });
    return ok(provider);
  }

  /**
   * Buys credits for a wallet: prices the item by the currency's book in force (with the
   * customer's commitment discount), charges the provider, and records the purchase. Paid at
   * once: confirmed, its grant written now. Pending (an invoice): no credits until confirmed.
   * Declined: failed, no credits. Refusals (bad input, no book) write nothing.
   */
  async createPurchase(
    ex: SqlExecutor,
    tenantId: string,
    input: {
      walletId: string;
      currency: string;
      item: PurchaseItem;
      provider: string;
      paymentMethod?: string | null;
      /**
       * The request's own idempotency key (the HTTP `Idempotency-Key`), when it has one: the
       * provider's key is derived from it, so a retry of a request whose transaction rolled back
       * after the provider was charged (a crash, a lost connection) asks the provider with the
       * same key and is charged once. Without it, every call is a new purchase.
       */
      requestKey?: string | null;
    },
  ): Promise<Result<PurchaseRecord>> {
    const wallet = await this.store.getWallet(tenantId, input.walletId, ex);
    if (!wallet) return fail("not_found", `No wallet ${input.walletId}.`);
    const tenant = await this.store.getTenant(tenantId, ex);
    const provider = this.#provider(tenant!.environment, input.provider, input.paymentMethod ?? null);
    if (!provider.ok) return provider;
    const priced = await this.quote(ex, tenantId, wallet.customerId, input.currency, input.item);
    if (!priced.ok) return priced;
    const id = this.store.newId("pur");
    return this.#buy(ex, tenantId, {
      id,
      walletId: wallet.id,
      customerId: wallet.customerId,
      quote: priced.value.quote,
      bookId: priced.value.book.id,
      provider: provider.value,
      paymentMethod: input.paymentMethod ?? null,
      origin: "api",
      idempotencyKey: input.requestKey
        ? `purchase:${createHash("sha256").update(`${tenantId}\n${input.requestKey}`).digest("hex")}`
        : `purchase:${id}`,
    });
  }

  /** Charges a purchase in the caller's transaction, records it, and confirms it when paid (API purchases). */
  async #buy(ex: SqlExecutor, tenantId: string, p: PurchaseToMake): Promise<Result<PurchaseRecord>> {
    const fits = await this.#fits(ex, tenantId, p);
    if (!fits.ok) return fits;
    const request = paymentRequest(tenantId, { ...p, price: p.quote.price, currency: p.quote.currency });
    return this.#record(
      ex,
      tenantId,
      p,
      await p.provider.charge({ ...request, idempotencyKey: p.idempotencyKey }),
    );
  }

  /**
   * Writes an auto top-up's purchase before its charge (pending, awaiting the charge, with the
   * provider's key), for {@link #chargeAwaiting} to charge once this transaction has committed.
   */
  async #intend(ex: SqlExecutor, tenantId: string, p: PurchaseToMake): Promise<Result<PurchaseRecord>> {
    const fits = await this.#fits(ex, tenantId, p);
    if (!fits.ok) return fits;
    return this.#record(ex, tenantId, p, null);
  }

  /** A grant that would take the wallet past the largest balance is refused before anything is written. */
  async #fits(ex: SqlExecutor, tenantId: string, p: PurchaseToMake): Promise<Result<true>> {
    const wallet = await this.store.getWallet(tenantId, p.walletId, ex);
    if (!wallet || !inRange(wallet.balance + p.quote.credits))
      return fail("invalid_amount", "This purchase would take the wallet beyond the largest balance.");
    return ok(true);
  }

  /** Inserts a purchase with its charge's answer (null: not charged yet), and confirms it when paid. */
  async #record(
    ex: SqlExecutor,
    tenantId: string,
    p: PurchaseToMake,
    result: PaymentResult | null,
  ): Promise<Result<PurchaseRecord>> {
    const now = this.store.now(tenantId);
    const q = p.quote;
    const status = result?.status === "failed" ? "failed" : "pending";
    await ex.query(
      `INSERT INTO purchases (tenant_id, id, customer_id, wallet_id, currency, credits, pack_id, list_price,
         discount_percent, price, cost_basis, price_book_id, expiry, provider, payment_method, provider_reference,
         status, failure_reason, origin, created_at, resolved_at, awaiting_charge, provider_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`,
      [
        tenantId,
        p.id,
        p.customerId,
        p.walletId,
        q.currency,
        q.credits.toString(),
        q.packId,
        q.listPrice.toString(),
        q.discountPercent,
        q.price.toString(),
        q.costBasis.toString(),
        p.bookId,
        JSON.stringify(q.expiry),
        p.provider.id,
        p.paymentMethod,
        result?.reference ?? null,
        status,
        status === "failed" ? (result?.failureReason ?? "payment failed") : null,
        p.origin,
        iso(now),
        status === "failed" ? iso(now) : null,
        result === null,
        p.idempotencyKey,
      ],
    );
    if (result?.status === "succeeded") {
      const confirmed = await this.#confirm(ex, tenantId, p.id, result.reference);
      if (!confirmed.ok) throw new Error(`a paid purchase could not be granted: ${confirmed.error.message}`);
      return confirmed;
    }
    return ok((await this.getPurchase(tenantId, p.id, ex))!);
  }

  /**
   * Charges an auto top-up's purchase written by {@link #intend}, with no transaction open, and
   * records the answer in a transaction of its own under the purchase's row lock: paid, it is
   * confirmed (its grant); declined, it fails and the auto top-up turns off with
   * `auto_top_up_failed`; pending, it waits for a confirmation. A provider that throws (a lost
   * connection) leaves it awaiting its charge: the scheduler asks again with the same key, so
   * the provider charges once. Recording twice (the scheduler and the request at once) is
   * harmless: the second finds it recorded and returns it.
   */
  async #chargeAwaiting(tenantId: string, purchase: PurchaseRecord): Promise<PurchaseRecord> {
    if (!purchase.awaitingCharge) return purchase;
    const provider = this.#providers.get(purchase.provider);
    let result: PaymentResult;
    if (!provider) {
      result = {
        status: "failed",
        reference: null,
        failureReason: `no_provider: this server has no payment provider "${purchase.provider}"`,
      };
    } else {
      invariant(purchase.providerKey !== null, "a purchase awaiting its charge keeps its provider's key");
      try {
        result = await provider.charge({
          ...paymentRequest(tenantId, purchase),
          idempotencyKey: purchase.providerKey,
        });
      } catch {
        return (await this.getPurchase(tenantId, purchase.id))!;
      }
    }
    return this.store.db.transaction(async (tx) => {
      const p = await this.#lockPurchase(tx, tenantId, purchase.id);
      invariant(p, "a purchase awaiting its charge exists");
      if (!p.awaitingCharge) return p;
      const now = iso(this.store.now(tenantId));
      if (result.status === "failed") {
        const why = result.failureReason ?? "declined";
        await tx.query(
          `UPDATE purchases SET status = 'failed', awaiting_charge = false, failure_reason = $3, resolved_at = $4,
             provider_reference = $5 WHERE tenant_id = $1 AND id = $2`,
          [tenantId, p.id, why, now, result.reference],
        );
        await this.#turnOff(tx, tenantId, p.walletId, "payment_failed", why, p.id);
        return (await this.getPurchase(tenantId, p.id, tx))!;
      }
      await tx.query(
        "UPDATE purchases SET awaiting_charge = false, provider_reference = $3 WHERE tenant_id = $1 AND id = $2",
        [tenantId, p.id, result.reference],
      );
      if (result.status === "pending") return (await this.getPurchase(tenantId, p.id, tx))!;
      const confirmed = await this.#confirm(tx, tenantId, p.id, result.reference);
      if (!confirmed.ok) throw new Error(`a paid purchase could not be granted: ${confirmed.error.message}`);
      return confirmed.value;
    });
  }

  async getPurchase(
    tenantId: string,
    id: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<PurchaseRecord | null> {
    const { rows } = await ex.query("SELECT * FROM purchases WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    return rows[0] ? purchaseFrom(rows[0]) : null;
  }

  /** Purchases, newest id last, filtered by customer, wallet and status. */
  async listPurchases(
    tenantId: string,
    filter: { customerId?: string | null; walletId?: string | null; status?: string | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<PurchaseRecord>> {
    const { rows } = await this.store.db.query(
      `SELECT * FROM purchases WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2)
       AND ($3::text IS NULL OR wallet_id = $3) AND ($4::text IS NULL OR status = $4)
       AND ($5::text IS NULL OR id > $5) ORDER BY id LIMIT $6`,
      [
        tenantId,
        filter.customerId ?? null,
        filter.walletId ?? null,
        filter.status ?? null,
        page.after ?? null,
        page.limit + 1,
      ],
    );
    return paginate(rows.map(purchaseFrom), page.limit, (x) => x.id);
  }

  async #lockPurchase(ex: SqlExecutor, tenantId: string, id: string): Promise<PurchaseRecord | null> {
    const { rows } = await ex.query("SELECT * FROM purchases WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      id,
    ]);
    return rows[0] ? purchaseFrom(rows[0]) : null;
  }

  static #notPending(p: PurchaseRecord) {
    return fail(
      "purchase_not_pending",
      `Purchase ${p.id} is ${p.status}${p.resolvedAt === null ? "" : ` since ${iso(p.resolvedAt)}`}; only a pending purchase can be confirmed, failed or canceled.`,
      { purchase_id: p.id, status: p.status },
    );
  }

  /**
   * Confirms a pending purchase's payment: its grant (source `purchase`, or `top_up`; the
   * price's cost basis and currency; expiring by the pack's policy from now) and the status
   * change are one write. Under the purchase's row lock, so of two confirmations at once, one
   * grants and the other fails with `purchase_not_pending`, writing nothing.
   */
  async confirmPurchase(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    reference: string | null = null,
  ): Promise<Result<PurchaseRecord>> {
    return this.#confirm(ex, tenantId, id, reference);
  }

  async #confirm(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    reference: string | null,
  ): Promise<Result<PurchaseRecord>> {
    const p = await this.#lockPurchase(ex, tenantId, id);
    if (!p) return fail("not_found", `No purchase ${id}.`);
    if (p.status !== "pending") return Commerce.#notPending(p);
    const now = this.store.now(tenantId);
    const granted = await this.store.createGrant(ex, tenantId, {
      walletId: p.walletId,
      amount: p.credits,
      source: p.origin === "auto_top_up" ? "top_up" : "purchase",
      costBasis: p.costBasis,
      currency: p.currency,
      effectiveAt: now,
      expiresAt: purchaseExpiry(p.expiry, now),
      metadata: { [PURCHASE_METADATA_KEY]: p.id, ...(p.packId === null ? {} : { pack_id: p.packId }) },
    });
    if (!granted.ok) return granted;
    await ex.query(
      // Resolved by hand while awaiting its charge: the scheduler no longer charges it.
      `UPDATE purchases SET status = 'confirmed', grant_id = $3, resolved_at = $4, awaiting_charge = false,
         provider_reference = coalesce($5, provider_reference)
       WHERE tenant_id = $1 AND id = $2 AND status = 'pending'`,
      [tenantId, id, granted.value.grant.id, iso(now), reference],
    );
    // A paid auto top-up: the next failure is a new crossing of `auto_top_up_failed`.
    if (p.origin === "auto_top_up") await rearmAlert(ex, tenantId, p.walletId, AUTO_TOP_UP_FAILED_KEY);
    return ok((await this.getPurchase(tenantId, id, ex))!);
  }

  /**
   * Records that a pending purchase's payment failed (`failed`) or that it was withdrawn
   * (`canceled`): no credits, ever. A failed auto top-up payment turns the wallet's auto
   * top-up off, with the reason.
   */
  async resolveUnpaid(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    status: "failed" | "canceled",
    reason: string | null,
  ): Promise<Result<PurchaseRecord>> {
    const p = await this.#lockPurchase(ex, tenantId, id);
    if (!p) return fail("not_found", `No purchase ${id}.`);
    if (p.status !== "pending") return Commerce.#notPending(p);
    const now = this.store.now(tenantId);
    const why = reason ?? (status === "failed" ? "payment failed" : "canceled");
    await ex.query(
      `UPDATE purchases SET status = $3, failure_reason = $4, resolved_at = $5, awaiting_charge = false
       WHERE tenant_id = $1 AND id = $2`,
      [tenantId, id, status, why, iso(now)],
    );
    if (status === "failed" && p.origin === "auto_top_up") {
      await this.#turnOff(ex, tenantId, p.walletId, "payment_failed", why, p.id);
    }
    return ok((await this.getPurchase(tenantId, id, ex))!);
  }

  // ------------------------------------------------------------------ auto top-up

  /**
   * Sets (or replaces) a wallet's auto top-up, enabled unless told otherwise; replacing it
   * clears a recorded failure and a waiting cap. The pack, book and provider are checked now.
   */
  async setAutoTopUp(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    input: AutoTopUpConfig & { provider: string; paymentMethod?: string | null; enabled?: boolean },
  ): Promise<Result<AutoTopUpRecord>> {
    const wallet = await this.store.getWallet(tenantId, walletId, ex);
    if (!wallet) return fail("not_found", `No wallet ${walletId}.`);
    const config = validateAutoTopUp(input);
    if (!config.ok) return config;
    const tenant = await this.store.getTenant(tenantId, ex);
    const provider = this.#provider(tenant!.environment, input.provider, input.paymentMethod ?? null);
    if (!provider.ok) return provider;
    const book = await this.currentPriceBook(tenantId, input.currency, ex);
    if (!book)
      return fail("no_price_book", `No ${input.currency} price book is published; publish one first.`, {
        currency: input.currency,
      });
    const buy = input.buy;
    if (buy.kind === "pack" && !book.packs.some((p) => p.id === buy.packId))
      return fail("not_found", `The ${input.currency} price book has no pack "${buy.packId}".`, {
        field: "pack_id",
      });
    if (buy.kind !== "pack" && book.tiers.length === 0)
      return fail("invalid_argument", `The ${input.currency} price book sells packs only; name a pack_id.`, {
        field: buy.kind === "amount" ? "amount" : "target_balance",
      });
    const now = iso(this.store.now(tenantId));
    const enabled = input.enabled ?? true;
    await ex.query(
      `INSERT INTO auto_top_ups (tenant_id, wallet_id, threshold, buy_kind, buy_credits, pack_id, currency, monthly_cap,
         provider, payment_method, enabled, disabled_reason, disabled_at, capped_until, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, $12, $12)
       ON CONFLICT (tenant_id, wallet_id) DO UPDATE SET threshold = $3, buy_kind = $4, buy_credits = $5, pack_id = $6,
         currency = $7, monthly_cap = $8, provider = $9, payment_method = $10, enabled = $11, disabled_reason = NULL,
         disabled_at = NULL, capped_until = NULL, updated_at = $12`,
      [
        tenantId,
        walletId,
        input.threshold.toString(),
        buy.kind,
        buy.kind === "amount"
          ? buy.credits.toString()
          : buy.kind === "target"
            ? buy.balance.toString()
            : null,
        buy.kind === "pack" ? buy.packId : null,
        input.currency,
        input.monthlyCap.toString(),
        input.provider,
        input.paymentMethod ?? null,
        enabled,
        now,
      ],
    );
    await rearmAlert(ex, tenantId, walletId, AUTO_TOP_UP_FAILED_KEY);
    return ok((await this.getAutoTopUp(tenantId, walletId, ex))!);
  }

  async getAutoTopUp(
    tenantId: string,
    walletId: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<AutoTopUpRecord | null> {
    const { rows } = await ex.query("SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = $2", [
      tenantId,
      walletId,
    ]);
    return rows[0] ? autoTopUpFrom(rows[0]) : null;
  }

  /** Turns a wallet's auto top-up off (by hand: no reason recorded). Turning it off twice is harmless. */
  async disableAutoTopUp(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
  ): Promise<Result<AutoTopUpRecord>> {
    const found = await this.getAutoTopUp(tenantId, walletId, ex);
    if (!found) return fail("not_found", `Wallet ${walletId} has no auto top-up.`);
    if (found.enabled)
      await ex.query(
        "UPDATE auto_top_ups SET enabled = false, disabled_at = $3, updated_at = $3 WHERE tenant_id = $1 AND wallet_id = $2",
        [tenantId, walletId, iso(this.store.now(tenantId))],
      );
    return ok((await this.getAutoTopUp(tenantId, walletId, ex))!);
  }

  /** Fires `auto_top_up_failed` for the wallet, once per crossing (re-armed by a paid top-up or a new setting). */
  async #failed(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    code: string,
    message: string,
    purchaseId: string | null,
  ): Promise<void> {
    await fireAlert(ex, this.store, {
      tenantId,
      walletId,
      kind: "auto_top_up_failed",
      key: AUTO_TOP_UP_FAILED_KEY,
      details: { code, reason: message, purchase_id: purchaseId },
    });
  }

  /** Turns the auto top-up off with the reason `code: message`, and fires `auto_top_up_failed`. */
  async #turnOff(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    code: string,
    message: string,
    purchaseId: string | null,
  ): Promise<void> {
    await this.#disable(ex, tenantId, walletId, `${code}: ${message}`);
    await this.#failed(ex, tenantId, walletId, code, message, purchaseId);
  }

  async #disable(ex: SqlExecutor, tenantId: string, walletId: string, reason: string): Promise<void> {
    const now = iso(this.store.now(tenantId));
    await ex.query(
      `UPDATE auto_top_ups SET enabled = false, disabled_reason = $3, disabled_at = $4, updated_at = $4
       WHERE tenant_id = $1 AND wallet_id = $2`,
      [tenantId, walletId, reason, now],
    );
  }

  /**
   * Checks a wallet's auto top-up now and buys while its balance is below the threshold
   * (several purchases when one is not enough, each counted against the cap). Each purchase is
   * decided and written under the auto top-up's row lock, so two instances never buy for the
   * same shortfall, then charged with no transaction open (see {@link PaymentProvider}).
   *
   * Asked through the API (`scheduled` false), it refuses with `auto_top_up_disabled` or
   * `auto_top_up_cap_reached` and writes nothing, and charges a purchase left awaiting its
   * charge. Run by the scheduler, a spent cap is recorded (`capped_until`: nothing is tried
   * again before the next month) and a top-up that cannot be priced any more (the book lost its
   * pack) turns the auto top-up off with the reason, so a due check never stays due forever. A
   * declined payment turns it off either way.
   */
  async checkAutoTopUp(tenantId: string, walletId: string, scheduled = false): Promise<Result<TopUpRun>> {
    let last: PurchaseRecord | null = null;
    for (let i = 0; i < TOP_UPS_PER_CHECK; i++) {
      const before = last;
      const step = await this.store.db.transaction((tx) =>
        this.#checkStep(tx, tenantId, walletId, scheduled, before),
      );
      if (!step.ok) return step;
      if (step.value.kind === "done") return ok(step.value.run);
      last = await this.#chargeAwaiting(tenantId, step.value.purchase);
      if (last.status !== "confirmed") break;
    }
    return ok({
      outcome: "purchased",
      purchase: last,
      autoTopUp: (await this.getAutoTopUp(tenantId, walletId))!,
    });
  }

  /**
   * {@link checkAutoTopUp} under a request's Idempotency-Key (`POST .../auto_top_up/run`): a key
   * already recorded answers its first outcome (or conflicts) and checks nothing; otherwise the
   * check runs (its own transactions, none open during a charge) and its outcome is recorded
   * under the key. Two requests with one key at once may both check; a check is safe to repeat
   * (the second finds the first's purchase, pending or paid), and the key keeps one outcome.
   */
  async runAutoTopUp(
    tenantId: string,
    walletId: string,
    claim: IdempotencyClaim | null,
  ): Promise<WriterAnswer<TopUpRun>> {
    if (claim) {
      const first = await this.store.recordedOutcome(this.store.db, tenantId, claim.key, claim.fingerprint);
      if (first) return first;
    }
    const result = await this.checkAutoTopUp(tenantId, walletId);
    if (!claim) return { kind: "fresh", result };
    const stored = await this.store.idempotent(tenantId, claim.key, claim.fingerprint, async () =>
      claim.outcome(result),
    );
    if (stored.kind === "fresh") return { kind: "fresh", result };
    return stored.kind === "conflict" ? { kind: "conflict" } : { kind: "replayed", outcome: stored.outcome };
  }

  /**
   * One purchase of a check, in its own transaction: what the check answers now (`done`), or
   * the purchase written awaiting its charge (`charge`). `last`: the check's previous purchase.
   */
  async #checkStep(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    scheduled: boolean,
    last: PurchaseRecord | null,
  ): Promise<Result<{ kind: "done"; run: TopUpRun } | { kind: "charge"; purchase: PurchaseRecord }>> {
    const done = (run: TopUpRun) => ok({ kind: "done" as const, run });
    // Wallets before the auto top-up's row: the order authorize takes them in (no deadlock).
    await this.#lockChain(ex, tenantId, walletId);
    const { rows } = await ex.query(
      "SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = $2 FOR UPDATE",
      [tenantId, walletId],
    );
    if (!rows[0]) return fail("not_found", `Wallet ${walletId} has no auto top-up.`);
    const config = autoTopUpFrom(rows[0]);
    const outcome =
      last === null ? null : ({ outcome: "purchased", purchase: last, autoTopUp: config } as const);
    const stop = async (r: Omit<TopUpRun, "autoTopUp"> & { autoTopUp?: AutoTopUpRecord }) =>
      done(outcome ?? { autoTopUp: r.autoTopUp ?? (await this.getAutoTopUp(tenantId, walletId, ex))!, ...r });
    if (!config.enabled) {
      if (outcome) return done(outcome);
      return fail(
        "auto_top_up_disabled",
        `Wallet ${walletId}'s auto top-up is off${config.disabledReason ? ` (${config.disabledReason})` : ""}; set it again to turn it on.`,
        config.disabledReason ? { reason: config.disabledReason } : {},
      );
    }
    const now = this.store.now(tenantId);
    const pending = await ex.query(
      `SELECT * FROM purchases WHERE tenant_id = $1 AND wallet_id = $2 AND origin = 'auto_top_up' AND status = 'pending'`,
      [tenantId, walletId],
    );
    if (pending.rows[0]) {
      const p = purchaseFrom(pending.rows[0]);
      // Asked by hand, a purchase left awaiting its charge (a crash, a provider that did not answer) is charged now.
      if (!scheduled && p.awaitingCharge) return ok({ kind: "charge" as const, purchase: p });
      return stop({ outcome: "pending", purchase: p, autoTopUp: config });
    }
    const wallet = (await this.store.getWallet(tenantId, walletId, ex))!;
    if (wallet.balance >= config.threshold)
      return stop({ outcome: "not_needed", purchase: null, autoTopUp: config });
    if (scheduled && config.cappedUntil !== null && config.cappedUntil > now)
      return stop({ outcome: "not_needed", purchase: null, autoTopUp: config });
    const book = await this.currentPriceBook(tenantId, config.currency, ex);
    const spent = await this.#autoTopUpSpent(ex, tenantId, walletId, config.currency, now);
    const decided = book
      ? decideTopUp({
          config,
          book,
          balance: wallet.balance,
          spent,
          committed: await this.committedAt(ex, tenantId, wallet.customerId, config.currency, now),
        })
      : fail("no_price_book", `No ${config.currency} price book is published.`, {
          currency: config.currency,
        });
    if (!decided.ok) {
      if (!scheduled) return outcome ? done(outcome) : decided;
      if (decided.error.code === "auto_top_up_cap_reached") {
        await ex.query("UPDATE auto_top_ups SET capped_until = $3 WHERE tenant_id = $1 AND wallet_id = $2", [
          tenantId,
          walletId,
          iso(nextMonthStart(now)),
        ]);
      } else {
        await this.#disable(ex, tenantId, walletId, `${decided.error.code}: ${decided.error.message}`);
      }
      await this.#failed(ex, tenantId, walletId, decided.error.code, decided.error.message, null);
      return stop({ outcome: "not_needed", purchase: null });
    }
    if (decided.value.kind === "not_needed")
      return stop({ outcome: "not_needed", purchase: null, autoTopUp: config });
    const provider = this.#providers.get(config.provider);
    if (!provider) {
      await this.#disable(
        ex,
        tenantId,
        walletId,
        `no_provider: this server has no payment provider "${config.provider}"`,
      );
      await this.#failed(
        ex,
        tenantId,
        walletId,
        "no_provider",
        `No payment provider "${config.provider}".`,
        null,
      );
      return stop({ outcome: "not_needed", purchase: null });
    }
    const intended = await this.#intendTopUp(
      ex,
      tenantId,
      config,
      wallet.customerId,
      decided.value.quote,
      book!,
      provider,
    );
    if (!intended.ok) {
      if (!scheduled) return outcome ? done(outcome) : intended;
      await this.#turnOff(ex, tenantId, walletId, intended.error.code, intended.error.message, null);
      return stop({ outcome: "not_needed", purchase: null });
    }
    return ok({ kind: "charge" as const, purchase: intended.value });
  }

  /** Writes an auto top-up's next purchase awaiting its charge, and counts the attempt (its provider key). */
  async #intendTopUp(
    ex: SqlExecutor,
    tenantId: string,
    config: AutoTopUpRecord,
    customerId: string,
    quote: Quote,
    book: PriceBookRecord,
    provider: PaymentProvider,
  ): Promise<Result<PurchaseRecord>> {
    const attempt = config.attempts + 1;
    const intended = await this.#intend(ex, tenantId, {
      id: this.store.newId("pur"),
      walletId: config.walletId,
      customerId,
      quote,
      bookId: book.id,
      provider,
      paymentMethod: config.paymentMethod,
      origin: "auto_top_up",
      idempotencyKey: `auto_top_up:${config.walletId}:${attempt}`,
    });
    if (intended.ok)
      await ex.query(
        "UPDATE auto_top_ups SET attempts = $3, capped_until = NULL WHERE tenant_id = $1 AND wallet_id = $2",
        [tenantId, config.walletId, attempt],
      );
    return intended;
  }

  /** Locks a wallet and (for a member's) its pool, in id order: what the store's write pipeline locks. */
  async #lockChain(ex: SqlExecutor, tenantId: string, walletId: string): Promise<void> {
    await ex.query(
      `SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = (SELECT customer_id FROM wallets WHERE tenant_id = $1 AND id = $2)
       AND (id = $2 OR member_id IS NULL) ORDER BY id FOR UPDATE`,
      [tenantId, walletId],
    );
  }

  /**
   * The auto top-up tried before a denial (overage policies, core/overage.ts), asked in the
   * operation's transaction, which holds the wallets' locks: `need.need` more credits would let
   * it through. The first wallet of the chain (the payer, then its pool) with an enabled auto
   * top-up would buy per its configuration until the need is covered, within its monthly cap,
   * through a synchronous provider only (an invoice cannot pay now).
   *
   * No provider is called here. What the operation's earlier run tried for this chain is
   * answered from `tried`; a purchase that could be made is answered `charge`, and the caller
   * throws {@link TopUpFirst} so that {@link withTopUpsFirst} buys with no transaction open and
   * runs the operation again. A top-up that cannot be made (cap reached, no price book) fires
   * `auto_top_up_failed` here and answers `failed`; `none`: no enabled auto top-up, a provider
   * that does not answer at once, or a purchase already pending.
   */
  async topUpBeforeDeny(
    ex: SqlExecutor,
    tenantId: string,
    need: TopUpNeed,
    tried: TopUpsTried,
  ): Promise<TopUpTry | "charge"> {
    const before = tried.get(need);
    if (before) return before;
    if (need.need <= 0n || tried.final) return NO_TOP_UP;
    const q = await this.#shortfallQuote(ex, tenantId, need, false);
    if (q.kind === "none") return NO_TOP_UP;
    if (q.kind === "quote") return "charge";
    await this.#failed(ex, tenantId, q.walletId, q.code, q.message, null);
    return { outcome: "failed", purchases: [], reason: `${q.code}: ${q.message}` };
  }

  /**
   * Buys for a shortfall with no transaction open (see {@link topUpBeforeDeny}): each purchase
   * is decided and written under the auto top-up's row lock, charged, then recorded, until the
   * need is covered. `covered`: run the operation again; `failed` (declined, cap reached, no
   * price book): `auto_top_up_failed` fired; `none`: nothing bought now.
   */
  async topUpOutside(tenantId: string, need: TopUpNeed): Promise<TopUpTry> {
    const purchases: PurchaseRecord[] = [];
    let bought = 0n;
    for (let i = 0; i < TOP_UPS_PER_CHECK && bought < need.need; i++) {
      const rest = { ...need, need: need.need - bought };
      const step = await this.store.db.transaction(async (tx): Promise<PurchaseRecord | TopUpTry> => {
        const q = await this.#shortfallQuote(tx, tenantId, rest, true);
        if (q.kind === "none") return { outcome: "none", purchases, reason: null };
        let failure: { code: string; message: string };
        if (q.kind === "quote") {
          const r = await this.#intendTopUp(
            tx,
            tenantId,
            q.config,
            q.customerId,
            q.quote,
            q.book,
            q.provider,
          );
          if (r.ok) return r.value;
          failure = r.error;
        } else failure = q;
        await this.#failed(tx, tenantId, q.walletId, failure.code, failure.message, null);
        return { outcome: "failed", purchases, reason: `${failure.code}: ${failure.message}` };
      });
      if ("outcome" in step) return step;
      const p = await this.#chargeAwaiting(tenantId, step);
      purchases.push(p);
      if (p.status === "failed")
        return { outcome: "failed", purchases, reason: `payment_failed: ${p.failureReason ?? "declined"}` };
      // Pending (or its provider did not answer): no credits until it is paid; nothing failed.
      if (p.status !== "confirmed") return { outcome: "none", purchases, reason: null };
      bought += p.credits;
    }
    return { outcome: bought >= need.need ? "covered" : "none", purchases, reason: null };
  }

  /**
   * What the auto top-up of a chain would buy next for a shortfall; `lock`: under the locks of
   * its wallet, its pool and its row (to write the purchase), taken for a moment, never during a
   * charge.
   */
  async #shortfallQuote(
    ex: SqlExecutor,
    tenantId: string,
    need: TopUpNeed,
    lock: boolean,
  ): Promise<
    | { kind: "none" }
    | { kind: "failed"; walletId: string; code: string; message: string }
    | {
        kind: "quote";
        walletId: string;
        config: AutoTopUpRecord;
        customerId: string;
        quote: Quote;
        book: PriceBookRecord;
        provider: PaymentProvider;
      }
  > {
    const { rows } = await ex.query(
      "SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = ANY($2::text[]) AND enabled",
      [tenantId, [...need.chain]],
    );
    let row = need.chain.map((w) => rows.find((r) => r.wallet_id === w)).find((r) => r !== undefined);
    if (row && lock) {
      // The wallets, then the auto top-up's row: the order every check takes them in (no deadlock).
      await this.#lockChain(ex, tenantId, String(row.wallet_id));
      const locked = await ex.query(
        "SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = $2 AND enabled FOR UPDATE",
        [tenantId, row.wallet_id],
      );
      row = locked.rows[0];
    }
    if (!row) return { kind: "none" };
    const config = autoTopUpFrom(row);
    const walletId = config.walletId;
    const provider = this.#providers.get(config.provider);
    if (!provider?.synchronous) return { kind: "none" };
    const pending = await ex.query(
      "SELECT 1 FROM purchases WHERE tenant_id = $1 AND wallet_id = $2 AND origin = 'auto_top_up' AND status = 'pending'",
      [tenantId, walletId],
    );
    if (pending.rowCount > 0) return { kind: "none" };
    const now = this.store.now(tenantId);
    const book = await this.currentPriceBook(tenantId, config.currency, ex);
    if (!book)
      return {
        kind: "failed",
        walletId,
        code: "no_price_book",
        message: `No ${config.currency} price book is published.`,
      };
    const wallet = (await this.store.getWallet(tenantId, walletId, ex))!;
    const quote = decideShortfallTopUp({
      config,
      book,
      balance: wallet.balance,
      need: need.need,
      spent: await this.#autoTopUpSpent(ex, tenantId, walletId, config.currency, now),
      committed: await this.committedAt(ex, tenantId, wallet.customerId, config.currency, now),
    });
    if (!quote.ok) return { kind: "failed", walletId, code: quote.error.code, message: quote.error.message };
    return {
      kind: "quote",
      walletId,
      config,
      customerId: wallet.customerId,
      quote: quote.value,
      book,
      provider,
    };
  }

  // ------------------------------------------------------------------ the scheduler's job

  static readonly #DUE =
    `FROM auto_top_ups a JOIN wallets w ON w.tenant_id = a.tenant_id AND w.id = a.wallet_id
    WHERE a.enabled AND w.balance < a.threshold
      AND NOT EXISTS (SELECT 1 FROM purchases p WHERE p.tenant_id = a.tenant_id AND p.wallet_id = a.wallet_id
                      AND p.origin = 'auto_top_up' AND p.status = 'pending')`;

  /**
   * A wallet below its threshold is due now; one the cap stopped is due when its month ends; a
   * purchase left awaiting its charge (a crash between its write and its charge, a provider
   * that did not answer) is due {@link AWAITING_CHARGE_GRACE_MS} after it was written. Only what
   * a check would act on is due, so the test clock never waits on one in vain.
   */
  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const now = this.store.now(tenantId);
    const { rows } = await this.store.db.query<{ at: unknown }>(
      `SELECT least(
         (SELECT min(greatest($2::timestamptz, coalesce(a.capped_until, $2::timestamptz))) ${Commerce.#DUE}
            AND a.tenant_id = $1 AND coalesce(a.capped_until, $2::timestamptz) <= $3),
         (SELECT min(greatest($2::timestamptz, created_at + $4 * interval '1 millisecond')) FROM purchases
            WHERE tenant_id = $1 AND awaiting_charge AND created_at + $4 * interval '1 millisecond' <= $3)) AS at`,
      [tenantId, iso(now), iso(upTo), AWAITING_CHARGE_GRACE_MS],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /**
   * Charges the purchases left awaiting their charge past the grace (each tenant by its own
   * clock), then checks every due wallet, each in transactions of its own.
   */
  async run(tenantId: string | null): Promise<number> {
    let purchases = 0;
    const awaiting = await this.store.db.query(
      `SELECT p.* FROM purchases p WHERE p.awaiting_charge AND ($2::text IS NULL OR p.tenant_id = $2)
         AND p.created_at + $3 * interval '1 millisecond'
             <= (SELECT coalesce(t.clock_at, $1::timestamptz) FROM tenants t WHERE t.id = p.tenant_id)
       ORDER BY p.tenant_id, p.id LIMIT 100`,
      [iso(this.store.now()), tenantId, AWAITING_CHARGE_GRACE_MS],
    );
    for (const r of awaiting.rows) {
      await this.store.clockOf(String(r.tenant_id));
      const p = await this.#chargeAwaiting(String(r.tenant_id), purchaseFrom(r));
      if (p.status === "confirmed") purchases++;
    }
    const seen = new Set<string>();
    for (;;) {
      const { rows } = await this.store.db.query<{ tenant_id: string; wallet_id: string }>(
        `SELECT a.tenant_id, a.wallet_id ${Commerce.#DUE}
           AND ($2::text IS NULL OR a.tenant_id = $2)
           AND coalesce(a.capped_until, '-infinity') <= (SELECT coalesce(t.clock_at, $1::timestamptz) FROM tenants t WHERE t.id = a.tenant_id)
         ORDER BY a.tenant_id, a.wallet_id LIMIT 100`,
        [iso(this.store.now()), tenantId],
      );
      const fresh = rows.filter((r) => !seen.has(`${r.tenant_id}/${r.wallet_id}`));
      for (const r of fresh) {
        seen.add(`${r.tenant_id}/${r.wallet_id}`);
        await this.store.clockOf(r.tenant_id);
        const done = await this.checkAutoTopUp(r.tenant_id, r.wallet_id, true);
        if (done.ok && done.value.outcome === "purchased") purchases++;
      }
      // Each wallet once per run: one that stays due (a pending payment it just made) waits for the next.
      if (rows.length < 100 || fresh.length === 0) return purchases;
    }
  }
}
