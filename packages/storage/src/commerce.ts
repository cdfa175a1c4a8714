import { createHash } from "node:crypto";
import {
  type AutoTopUpConfig,
  decideShortfallTopUp,
  decideTopUp,
  type ExpiryPolicy,
  fail,
  inRange,
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
 * A way to pay for credits. The store calls `charge` inside the purchase's transaction, with
 * an idempotency key that is the same on every retry (of an auto top-up attempt; of an API
 * purchase sent with an `Idempotency-Key`), and records the outcome with the purchase: a card
 * provider (Stripe, Adyen) is one more implementation of this interface.
 */
export interface PaymentProvider {
  readonly id: string;
  /** Usable by test tenants only (a provider that moves no real money). */
  readonly testOnly: boolean;
  /**
   * Answers a charge at once (paid or declined): only such a provider is tried by an auto
   * top-up before a denial, inside the request. Absent: false.
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

/** How many purchases one check of a wallet makes at most (several when one is not enough). */
const TOP_UPS_PER_CHECK = 20;

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
 * and writes nothing). Pending credits do not exist yet: nothing can draw them.
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

  /** Records a purchase, charges it, and confirms it when paid (storage-internal). */
  async #buy(
    ex: SqlExecutor,
    tenantId: string,
    p: {
      id: string;
      walletId: string;
      customerId: string;
      quote: Quote;
      bookId: string;
      provider: PaymentProvider;
      paymentMethod: string | null;
      origin: PurchaseRecord["origin"];
      idempotencyKey: string;
    },
  ): Promise<Result<PurchaseRecord>> {
    const now = this.store.now(tenantId);
    const q = p.quote;
    // A grant that would take the wallet past the largest balance is refused before anything is written.
    const wallet = await this.store.getWallet(tenantId, p.walletId, ex);
    if (!wallet || !inRange(wallet.balance + q.credits))
      return fail("invalid_amount", "This purchase would take the wallet beyond the largest balance.");
    const result = await p.provider.charge({
      tenantId,
      purchaseId: p.id,
      customerId: p.customerId,
      amount: q.price,
      currency: q.currency,
      paymentMethod: p.paymentMethod,
      idempotencyKey: p.idempotencyKey,
    });
    const status = result.status === "failed" ? "failed" : "pending";
    await ex.query(
      `INSERT INTO purchases (tenant_id, id, customer_id, wallet_id, currency, credits, pack_id, list_price,
         discount_percent, price, cost_basis, price_book_id, expiry, provider, payment_method, provider_reference,
         status, failure_reason, origin, created_at, resolved_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
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
        result.reference,
        status,
        status === "failed" ? (result.failureReason ?? "payment failed") : null,
        p.origin,
        iso(now),
        status === "failed" ? iso(now) : null,
      ],
    );
    if (result.status === "succeeded") {
      const confirmed = await this.#confirm(ex, tenantId, p.id, result.reference);
      if (!confirmed.ok) throw new Error(`a paid purchase could not be granted: ${confirmed.error.message}`);
      return confirmed;
    }
    return ok((await this.getPurchase(tenantId, p.id, ex))!);
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
      `UPDATE purchases SET status = 'confirmed', grant_id = $3, resolved_at = $4,
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
      "UPDATE purchases SET status = $3, failure_reason = $4, resolved_at = $5 WHERE tenant_id = $1 AND id = $2",
      [tenantId, id, status, why, iso(now)],
    );
    if (status === "failed" && p.origin === "auto_top_up") {
      await this.#disable(ex, tenantId, p.walletId, `payment_failed: ${why}`);
      await this.#failed(ex, tenantId, p.walletId, "payment_failed", why, p.id);
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
   * (several purchases when one is not enough, each counted against the cap), under the
   * auto top-up's row lock, so two instances never buy for the same shortfall.
   *
   * Asked through the API (`scheduled` false), it refuses with `auto_top_up_disabled` or
   * `auto_top_up_cap_reached` and writes nothing. Run by the scheduler, a spent cap is recorded
   * (`capped_until`: nothing is tried again before the next month) and a top-up that cannot be
   * priced any more (the book lost its pack) turns the auto top-up off with the reason, so a
   * due check never stays due forever. A declined payment turns it off either way.
   */
  async checkAutoTopUp(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    scheduled = false,
  ): Promise<Result<TopUpRun>> {
    // Wallets before the auto top-up's row: the order authorize takes them in (no deadlock).
    await this.#lockChain(ex, tenantId, walletId);
    const { rows } = await ex.query(
      "SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = $2 FOR UPDATE",
      [tenantId, walletId],
    );
    if (!rows[0]) return fail("not_found", `Wallet ${walletId} has no auto top-up.`);
    let config = autoTopUpFrom(rows[0]);
    let last: PurchaseRecord | null = null;
    for (let i = 0; i < TOP_UPS_PER_CHECK; i++) {
      const outcome =
        last === null ? null : ({ outcome: "purchased", purchase: last, autoTopUp: config } as const);
      if (!config.enabled) {
        if (outcome) return ok(outcome);
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
      if (pending.rows[0])
        return ok(
          outcome ?? { outcome: "pending", purchase: purchaseFrom(pending.rows[0]), autoTopUp: config },
        );
      const wallet = (await this.store.getWallet(tenantId, walletId, ex))!;
      if (wallet.balance >= config.threshold)
        return ok(outcome ?? { outcome: "not_needed", purchase: null, autoTopUp: config });
      if (scheduled && config.cappedUntil !== null && config.cappedUntil > now)
        return ok(outcome ?? { outcome: "not_needed", purchase: null, autoTopUp: config });
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
        if (!scheduled) return outcome ? ok(outcome) : decided;
        if (decided.error.code === "auto_top_up_cap_reached") {
          await ex.query(
            "UPDATE auto_top_ups SET capped_until = $3 WHERE tenant_id = $1 AND wallet_id = $2",
            [tenantId, walletId, iso(nextMonthStart(now))],
          );
        } else {
          await this.#disable(ex, tenantId, walletId, `${decided.error.code}: ${decided.error.message}`);
        }
        await this.#failed(ex, tenantId, walletId, decided.error.code, decided.error.message, null);
        return ok(
          outcome ?? {
            outcome: "not_needed",
            purchase: null,
            autoTopUp: (await this.getAutoTopUp(tenantId, walletId, ex))!,
          },
        );
      }
      if (decided.value.kind === "not_needed")
        return ok(outcome ?? { outcome: "not_needed", purchase: null, autoTopUp: config });
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
        return ok(
          outcome ?? {
            outcome: "not_needed",
            purchase: null,
            autoTopUp: (await this.getAutoTopUp(tenantId, walletId, ex))!,
          },
        );
      }
      const attempt = config.attempts + 1;
      const bought = await this.#buy(ex, tenantId, {
        id: this.store.newId("pur"),
        walletId,
        customerId: wallet.customerId,
        quote: decided.value.quote,
        bookId: book!.id,
        provider,
        paymentMethod: config.paymentMethod,
        origin: "auto_top_up",
        idempotencyKey: `auto_top_up:${walletId}:${attempt}`,
      });
      if (!bought.ok) {
        if (!scheduled) return outcome ? ok(outcome) : bought;
        await this.#disable(ex, tenantId, walletId, `${bought.error.code}: ${bought.error.message}`);
        await this.#failed(ex, tenantId, walletId, bought.error.code, bought.error.message, null);
        return ok(
          outcome ?? {
            outcome: "not_needed",
            purchase: null,
            autoTopUp: (await this.getAutoTopUp(tenantId, walletId, ex))!,
          },
        );
      }
      await ex.query(
        "UPDATE auto_top_ups SET attempts = $3, capped_until = NULL WHERE tenant_id = $1 AND wallet_id = $2",
        [tenantId, walletId, attempt],
      );
      last = bought.value;
      if (last.status === "failed") {
        await this.#disable(ex, tenantId, walletId, `payment_failed: ${last.failureReason ?? "declined"}`);
        await this.#failed(
          ex,
          tenantId,
          walletId,
          "payment_failed",
          last.failureReason ?? "declined",
          last.id,
        );
      }
      config = (await this.getAutoTopUp(tenantId, walletId, ex))!;
      if (last.status !== "confirmed") return ok({ outcome: "purchased", purchase: last, autoTopUp: config });
    }
    return ok({ outcome: "purchased", purchase: last, autoTopUp: config });
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
   * The auto top-up tried before a denial (overage policies, core/overage.ts): `need` more
   * credits would let a request through. In the caller's transaction, which already holds the
   * wallets' locks: the first wallet of `walletIds` (the payer, then its pool) with an enabled
   * auto top-up buys per its configuration until `need` is covered, within its monthly cap,
   * through a synchronous provider only (an invoice cannot pay now). `covered`: decide again.
   * `failed` (declined, cap reached, no price book): `auto_top_up_failed` fired. `none`: no
   * enabled auto top-up, a provider that does not answer at once, or a payment still pending.
   */
  async topUpBeforeDeny(
    ex: SqlExecutor,
    tenantId: string,
    walletIds: readonly string[],
    need: bigint,
  ): Promise<{ outcome: "covered" | "failed" | "none"; purchases: PurchaseRecord[]; reason: string | null }> {
    const none = { outcome: "none" as const, purchases: [], reason: null };
    if (need <= 0n) return none;
    let config: AutoTopUpRecord | null = null;
    for (const walletId of walletIds) {
      const { rows } = await ex.query(
        "SELECT * FROM auto_top_ups WHERE tenant_id = $1 AND wallet_id = $2 AND enabled FOR UPDATE",
        [tenantId, walletId],
      );
      if (rows[0]) {
        config = autoTopUpFrom(rows[0]);
        break;
      }
    }
    if (!config) return none;
    const walletId = config.walletId;
    const provider = this.#providers.get(config.provider);
    if (!provider?.synchronous) return none;
    const pending = await ex.query(
      "SELECT 1 FROM purchases WHERE tenant_id = $1 AND wallet_id = $2 AND origin = 'auto_top_up' AND status = 'pending'",
      [tenantId, walletId],
    );
    if (pending.rowCount > 0) return none;
    const purchases: PurchaseRecord[] = [];
    const failed = async (code: string, message: string, purchaseId: string | null) => {
      await this.#failed(ex, tenantId, walletId, code, message, purchaseId);
      return { outcome: "failed" as const, purchases, reason: `${code}: ${message}` };
    };
    let bought = 0n;
    let attempts = config.attempts;
    for (let i = 0; i < TOP_UPS_PER_CHECK && bought < need; i++) {
      const now = this.store.now(tenantId);
      const book = await this.currentPriceBook(tenantId, config.currency, ex);
      if (!book) return failed("no_price_book", `No ${config.currency} price book is published.`, null);
      const wallet = (await this.store.getWallet(tenantId, walletId, ex))!;
      const spent = await this.#autoTopUpSpent(ex, tenantId, walletId, config.currency, now);
      const quote = decideShortfallTopUp({
        config,
        book,
        balance: wallet.balance,
        need: need - bought,
        spent,
        committed: await this.committedAt(ex, tenantId, wallet.customerId, config.currency, now),
      });
      if (!quote.ok) return failed(quote.error.code, quote.error.message, null);
      attempts++;
      const r = await this.#buy(ex, tenantId, {
        id: this.store.newId("pur"),
        walletId,
        customerId: wallet.customerId,
        quote: quote.value,
        bookId: book.id,
        provider,
        paymentMethod: config.paymentMethod,
        origin: "auto_top_up",
        idempotencyKey: `auto_top_up:${walletId}:${attempts}`,
      });
      await ex.query("UPDATE auto_top_ups SET attempts = $3 WHERE tenant_id = $1 AND wallet_id = $2", [
        tenantId,
        walletId,
        attempts,
      ]);
      if (!r.ok) return failed(r.error.code, r.error.message, null);
      purchases.push(r.value);
      if (r.value.status === "failed") {
        const why = r.value.failureReason ?? "declined";
        await this.#disable(ex, tenantId, walletId, `payment_failed: ${why}`);
        return failed("payment_failed", why, r.value.id);
      }
      // Pending: no credits until it is paid; the request is denied, nothing failed.
      if (r.value.status !== "confirmed") return { outcome: "none", purchases, reason: null };
      bought += r.value.credits;
    }
    return bought >= need
      ? { outcome: "covered", purchases, reason: null }
      : { outcome: "none", purchases, reason: null };
  }

  // ------------------------------------------------------------------ the scheduler's job

  static readonly #DUE =
    `FROM auto_top_ups a JOIN wallets w ON w.tenant_id = a.tenant_id AND w.id = a.wallet_id
    WHERE a.enabled AND w.balance < a.threshold
      AND NOT EXISTS (SELECT 1 FROM purchases p WHERE p.tenant_id = a.tenant_id AND p.wallet_id = a.wallet_id
                      AND p.origin = 'auto_top_up' AND p.status = 'pending')`;

  /**
   * A wallet below its threshold is due now; one the cap stopped is due when its month ends.
   * Only wallets a check would act on are due, so the test clock never waits on one in vain.
   */
  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const now = this.store.now(tenantId);
    const { rows } = await this.store.db.query<{ at: unknown }>(
      `SELECT min(greatest($2::timestamptz, coalesce(a.capped_until, $2::timestamptz))) AS at ${Commerce.#DUE}
         AND a.tenant_id = $1 AND coalesce(a.capped_until, $2::timestamptz) <= $3`,
      [tenantId, iso(now), iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /** Checks every due wallet (each tenant by its own clock), each in its own transaction. */
  async run(tenantId: string | null): Promise<number> {
    let purchases = 0;
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
        const done = await this.store.db.transaction((tx) =>
          this.checkAutoTopUp(tx, r.tenant_id, r.wallet_id, true),
        );
        if (done.ok && done.value.outcome === "purchased") purchases++;
      }
      // Each wallet once per run: one that stays due (a pending payment it just made) waits for the next.
      if (rows.length < 100 || fresh.length === 0) return purchases;
    }
  }
}
