import {
  type AutoTopUpConfig,
  COMMERCE_LIMITS,
  type ExpiryPolicy,
  formatAmount,
  type PriceBookInput,
} from "@drawdown/core";
import type {
  AutoTopUpRecord,
  CommitmentRecord,
  PriceBookRecord,
  PurchaseRecord,
  TopUpRun,
} from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import {
  amount,
  committed,
  created,
  customerInPath,
  ID_CURSOR,
  must,
  okReply,
  page,
  type Route,
  route,
  timestamp,
  visible,
  walletInPath,
} from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Top-ups and the price book: what credits cost to buy per currency (packs, graduated tiers,
 * committed-use discounts), purchases paid through a payment provider (pending until
 * confirmed, then a grant with its cost basis), and each wallet's auto top-up.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const Currency = (description: string) =>
  Type.String({ pattern: "^[A-Z]{3}$", description: `${description} An ISO 4217 code such as "USD".` });

const Money = (description: string) => S.Amount(`${description} Money, in the currency's units:`);

const PurchaseExpiry = Type.Object(
  {
    kind: Type.Union([Type.Literal("never"), Type.Literal("rolling")]),
    months: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 120, description: "For rolling: months after the payment." }),
    ),
  },
  { ...S.strict, title: "PurchaseExpiry" },
);

const PackId = Type.String({
  pattern: COMMERCE_LIMITS.packIdPattern.source,
  description: "A pack id: 1 to 64 lowercase letters, digits, '-' or '_'.",
});

export const PriceBookCreate = Type.Object(
  {
    currency: Currency("The currency this book prices credits in."),
    decimals: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 9,
        description: "Decimals the currency charges in; every price rounds to them (default 2).",
      }),
    ),
    packs: Type.Optional(
      Type.Array(
        Type.Object(
          {
            id: PackId,
            name: Type.String({ minLength: 1, maxLength: 200 }),
            credits: S.Amount("Credits in the pack."),
            price: Money("The pack's price."),
            expiry: Type.Optional(PurchaseExpiry),
          },
          S.strict,
        ),
        { maxItems: COMMERCE_LIMITS.packsMax },
      ),
    ),
    tiers: Type.Optional(
      Type.Array(
        Type.Object(
          {
            up_to: Nullable(S.Amount("Where the band ends (exclusive); null for the last band.")),
            unit_price: Money("The price of each credit in the band."),
          },
          S.strict,
        ),
        {
          maxItems: COMMERCE_LIMITS.tiersMax,
          description:
            "Graduated bands for custom amounts: each credit is priced by the band it falls in; the last band has no end.",
        },
      ),
    ),
    custom_expiry: Type.Optional(PurchaseExpiry),
    commitment_discounts: Type.Optional(
      Type.Array(
        Type.Object(
          {
            min_committed: S.Amount("Committed credits from which the discount applies."),
            percent_off: Type.Integer({ minimum: 1, maximum: 99 }),
          },
          S.strict,
        ),
        { maxItems: COMMERCE_LIMITS.commitmentDiscountsMax },
      ),
    ),
  },
  { ...S.strict, title: "PriceBookCreate" },
);

const ExpiryView = Type.Object({ kind: Type.String(), months: Type.Optional(Type.Integer()) });

export const PriceBookView = Type.Object(
  {
    object: Type.Literal("price_book"),
    id: Type.String(),
    currency: Type.String(),
    version: Type.Integer(),
    decimals: Type.Integer(),
    packs: Type.Array(
      Type.Object({
        id: Type.String(),
        name: Type.String(),
        credits: S.Amount(),
        price: Type.String(),
        expiry: ExpiryView,
      }),
    ),
    tiers: Type.Array(Type.Object({ up_to: Nullable(Type.String()), unit_price: Type.String() })),
    custom_expiry: ExpiryView,
    commitment_discounts: Type.Array(
      Type.Object({ min_committed: Type.String(), percent_off: Type.Integer() }),
    ),
    created_at: Type.String(),
  },
  { title: "PriceBook" },
);

export const CommitmentCreate = Type.Object(
  {
    currency: Currency("The currency of the purchases it discounts."),
    credits: S.Amount("Credits committed over the term."),
    starts_at: Type.Optional(S.Timestamp("When the commitment starts; default now.")),
    ends_at: S.Timestamp("When it ends (exclusive)."),
  },
  { ...S.strict, title: "CommitmentCreate" },
);

export const CommitmentView = Type.Object(
  {
    object: Type.Literal("commitment"),
    id: Type.String(),
    customer_id: Type.String(),
    currency: Type.String(),
    credits: S.Amount(),
    starts_at: Type.String(),
    ends_at: Type.String(),
    created_at: Type.String(),
  },
  { title: "Commitment" },
);

const Provider = Type.String({
  minLength: 1,
  maxLength: 40,
  description:
    '"manual" (an invoice: pending until confirmed or failed through the API) or "test" (test tenants: payment_method pm_test_ok pays, pm_test_declined is declined, pm_test_pending waits).',
});

const PaymentMethod = Type.String({
  minLength: 1,
  maxLength: 200,
  description: "The provider's token for how to pay (a card, a mandate); none for an invoice.",
});

export const PurchaseCreate = Type.Object(
  {
    wallet_id: S.Id("wal", "The wallet the credits go to."),
    currency: Currency("The price book to buy from."),
    pack_id: Type.Optional(PackId),
    credits: Type.Optional(S.Amount("A custom amount of credits, priced by the book's tiers.")),
    provider: Provider,
    payment_method: Type.Optional(PaymentMethod),
  },
  { ...S.strict, title: "PurchaseCreate", description: "Exactly one of `pack_id` and `credits`." },
);

export const PurchaseView = Type.Object(
  {
    object: Type.Literal("purchase"),
    id: Type.String(),
    customer_id: Type.String(),
    wallet_id: Type.String(),
    status: Type.Union([
      Type.Literal("pending"),
      Type.Literal("confirmed"),
      Type.Literal("failed"),
      Type.Literal("canceled"),
    ]),
    origin: Type.Union([Type.Literal("api"), Type.Literal("auto_top_up")]),
    currency: Type.String(),
    credits: S.Amount(),
    pack_id: Nullable(Type.String()),
    list_price: Type.String({ description: "The price before the committed-use discount." }),
    discount_percent: Type.Integer(),
    price: Type.String({ description: "What the customer pays, rounded once to the book's decimals." }),
    cost_basis: Type.String({ description: "Money per credit: price ÷ credits, rounded down." }),
    price_book_id: Type.String(),
    expiry: ExpiryView,
    provider: Type.String(),
    payment_method: Nullable(Type.String()),
    provider_reference: Nullable(Type.String()),
    failure_reason: Nullable(Type.String()),
    grant_id: Nullable(Type.String({ description: "The grant its payment made; set once confirmed." })),
    awaiting_charge: Type.Boolean({
      description:
        "True for a pending auto top-up whose provider has not answered yet (written before its charge; a crash or a lost connection). The scheduler charges it again with the same idempotency key; confirming, failing or canceling it by hand ends the wait.",
    }),
    created_at: Type.String(),
    resolved_at: Nullable(Type.String()),
  },
  { title: "Purchase" },
);

export const PurchaseConfirm = Type.Object(
  {
    reference: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: "The payment's reference (a wire, a receipt).",
      }),
    ),
  },
  { ...S.strict, title: "PurchaseConfirm" },
);

export const PurchaseUnpaid = Type.Object(
  {
    reason: Type.Optional(
      Type.String({ minLength: 1, maxLength: 500, description: "Why, kept with the purchase." }),
    ),
  },
  { ...S.strict, title: "PurchaseUnpaid" },
);

export const AutoTopUpSet = Type.Object(
  {
    threshold: S.Amount("A top-up is due when the wallet's balance is below this many credits."),
    amount: Type.Optional(S.Amount("Buy this many credits (priced by the tiers).")),
    target_balance: Type.Optional(
      S.Amount("Buy enough credits to bring the balance to this (priced by the tiers)."),
    ),
    pack_id: Type.Optional(PackId),
    currency: Currency("The price book to buy from."),
    monthly_cap: Money(
      "The most auto top-up may spend per calendar month (UTC), pending and paid purchases counted.",
    ),
    provider: Provider,
    payment_method: Type.Optional(PaymentMethod),
    enabled: Type.Optional(Type.Boolean({ description: "Default true." })),
  },
  {
    ...S.strict,
    title: "AutoTopUpSet",
    description: "Exactly one of `amount`, `target_balance` and `pack_id`.",
  },
);

export const AutoTopUpView = Type.Object(
  {
    object: Type.Literal("auto_top_up"),
    wallet_id: Type.String(),
    enabled: Type.Boolean(),
    disabled_reason: Nullable(Type.String({ description: "Why it turned itself off (a failed payment)." })),
    threshold: S.Amount(),
    amount: Nullable(Type.String()),
    target_balance: Nullable(Type.String()),
    pack_id: Nullable(Type.String()),
    currency: Type.String(),
    monthly_cap: Type.String(),
    provider: Type.String(),
    payment_method: Nullable(Type.String()),
    capped_until: Nullable(
      Type.String({ description: "The cap stopped a top-up: none is tried before this." }),
    ),
    updated_at: Type.String(),
  },
  { title: "AutoTopUp" },
);

export const AutoTopUpRunView = Type.Object(
  {
    object: Type.Literal("auto_top_up_run"),
    outcome: Type.Union([Type.Literal("purchased"), Type.Literal("not_needed"), Type.Literal("pending")]),
    purchase: Nullable(PurchaseView),
    auto_top_up: AutoTopUpView,
  },
  { title: "AutoTopUpRun" },
);

const time = (t: number | null) => (t === null ? null : new Date(t).toISOString());
const expiryView = (e: ExpiryPolicy) =>
  e.kind === "rolling" ? { kind: e.kind, months: e.months } : { kind: e.kind };

const expiryFrom = (
  w: Static<typeof PurchaseExpiry> | undefined,
  field: string,
): ExpiryPolicy | undefined => {
  if (w === undefined) return undefined;
  if (w.kind === "rolling") {
    if (w.months === undefined)
      throw new ApiError("invalid_argument", `${field}.months is required for a rolling expiry.`, {
        errors: [{ path: `${field}/months`, message: "required for a rolling expiry" }],
      });
    return { kind: "rolling", months: w.months };
  }
  if (w.months !== undefined)
    throw new ApiError("invalid_argument", `${field}.months is for a rolling expiry only.`, {
      errors: [{ path: `${field}/months`, message: "for a rolling expiry only" }],
    });
  return { kind: "never" };
};

const bookView = (b: PriceBookRecord) => ({
  object: "price_book" as const,
  id: b.id,
  currency: b.currency,
  version: b.version,
  decimals: b.decimals,
  packs: b.packs.map((p) => ({
    id: p.id,
    name: p.name,
    credits: formatAmount(p.credits),
    price: formatAmount(p.price),
    expiry: expiryView(p.expiry),
  })),
  tiers: b.tiers.map((t) => ({
    up_to: t.upTo === null ? null : formatAmount(t.upTo),
    unit_price: formatAmount(t.unitPrice),
  })),
  custom_expiry: expiryView(b.customExpiry),
  commitment_discounts: b.commitmentDiscounts.map((d) => ({
    min_committed: formatAmount(d.minCommitted),
    percent_off: d.percentOff,
  })),
  created_at: new Date(b.createdAt).toISOString(),
});

const commitmentView = (c: CommitmentRecord) => ({
  object: "commitment" as const,
  id: c.id,
  customer_id: c.customerId,
  currency: c.currency,
  credits: formatAmount(c.credits),
  starts_at: new Date(c.startsAt).toISOString(),
  ends_at: new Date(c.endsAt).toISOString(),
  created_at: new Date(c.createdAt).toISOString(),
});

export const purchaseView = (p: PurchaseRecord) => ({
  object: "purchase" as const,
  id: p.id,
  customer_id: p.customerId,
  wallet_id: p.walletId,
  status: p.status,
  origin: p.origin,
  currency: p.currency,
  credits: formatAmount(p.credits),
  pack_id: p.packId,
  list_price: formatAmount(p.listPrice),
  discount_percent: p.discountPercent,
  price: formatAmount(p.price),
  cost_basis: formatAmount(p.costBasis),
  price_book_id: p.priceBookId,
  expiry: expiryView(p.expiry),
  provider: p.provider,
  payment_method: p.paymentMethod,
  provider_reference: p.providerReference,
  failure_reason: p.failureReason,
  grant_id: p.grantId,
  awaiting_charge: p.awaitingCharge,
  created_at: new Date(p.createdAt).toISOString(),
  resolved_at: time(p.resolvedAt),
});

const autoTopUpView = (a: AutoTopUpRecord) => ({
  object: "auto_top_up" as const,
  wallet_id: a.walletId,
  enabled: a.enabled,
  disabled_reason: a.disabledReason,
  threshold: formatAmount(a.threshold),
  amount: a.buy.kind === "amount" ? formatAmount(a.buy.credits) : null,
  target_balance: a.buy.kind === "target" ? formatAmount(a.buy.balance) : null,
  pack_id: a.buy.kind === "pack" ? a.buy.packId : null,
  currency: a.currency,
  monthly_cap: formatAmount(a.monthlyCap),
  provider: a.provider,
  payment_method: a.paymentMethod,
  capped_until: time(a.cappedUntil),
  updated_at: new Date(a.updatedAt).toISOString(),
});

const runView = (r: TopUpRun) => ({
  object: "auto_top_up_run" as const,
  outcome: r.outcome,
  purchase: r.purchase === null ? null : purchaseView(r.purchase),
  auto_top_up: autoTopUpView(r.autoTopUp),
});

/** Exactly one of the named optional fields, or an `invalid_argument` naming them. */
function exactlyOne(body: Record<string, unknown>, fields: readonly string[]): string {
  const given = fields.filter((f) => body[f] !== undefined);
  if (given.length !== 1)
    throw new ApiError("invalid_argument", `Give exactly one of ${fields.join(", ")}.`, {
      errors: [{ path: `body/${fields[0]}`, message: `exactly one of ${fields.join(", ")}` }],
    });
  return given[0]!;
}

const PurchaseIdParam = S.IdParam("pur", "purchase");

/** The commerce endpoints, appended to the others. */
export const COMMERCE_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/price_books",
    operationId: "publishPriceBook",
    tag: "Top-ups and the price book",
    summary: "Publish a price book",
    description:
      "What credits cost to buy in one currency: packs (credits at a price, with their expiry), graduated tiers for custom amounts, committed-use discounts. Each publication is the currency's next version, in force for every purchase priced from now on.",
    access: "secret",
    body: PriceBookCreate,
    response: PriceBookView,
    status: 201,
    errors: ["invalid_argument", "invalid_amount", "already_exists"],
    handle: async ({ commerce, tx, tenantId, body }) => {
      const input: PriceBookInput = {
        currency: body.currency,
        ...(body.decimals === undefined ? {} : { decimals: body.decimals }),
        packs: (body.packs ?? []).map((p, i) => ({
          id: p.id,
          name: p.name,
          credits: amount(p.credits, `packs/${i}/credits`),
          price: amount(p.price, `packs/${i}/price`, true),
          expiry: expiryFrom(p.expiry, `packs/${i}/expiry`) ?? { kind: "never" },
        })),
        tiers: (body.tiers ?? []).map((t, i) => ({
          upTo: t.up_to === null ? null : amount(t.up_to, `tiers/${i}/up_to`),
          unitPrice: amount(t.unit_price, `tiers/${i}/unit_price`, true),
        })),
        ...(body.custom_expiry ? { customExpiry: expiryFrom(body.custom_expiry, "custom_expiry")! } : {}),
        commitmentDiscounts: (body.commitment_discounts ?? []).map((d, i) => ({
          minCommitted: amount(d.min_committed, `commitment_discounts/${i}/min_committed`),
          percentOff: d.percent_off,
        })),
      };
      return created(bookView(must(await commerce.publishPriceBook(tx, tenantId, input))));
    },
  }),
  route({
    method: "GET",
    url: "/v1/price_books",
    operationId: "listPriceBooks",
    tag: "Top-ups and the price book",
    summary: "List the price books in force",
    description: "The latest version of each currency's price book.",
    access: "secret",
    response: S.ListOf(PriceBookView),
    errors: [],
    handle: async ({ commerce, tenantId }) =>
      okReply(listView((await commerce.listPriceBooks(tenantId)).map(bookView), null)),
  }),
  route({
    method: "POST",
    url: "/v1/customers/:id/commitments",
    operationId: "createCommitment",
    tag: "Top-ups and the price book",
    summary: "Record a customer's committed use",
    description:
      "Credits the customer commits to over a term, in one currency. While in force, the price book's committed-use discount for the customer's total commitment applies to all its purchases in that currency.",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    body: CommitmentCreate,
    response: CommitmentView,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument"],
    handle: async ({ commerce, tx, tenantId, params, body }) =>
      created(
        commitmentView(
          must(
            await commerce.addCommitment(tx, tenantId, params.id, {
              currency: body.currency,
              credits: amount(body.credits, "credits"),
              startsAt: body.starts_at === undefined ? null : timestamp(body.starts_at, "starts_at"),
              endsAt: timestamp(body.ends_at, "ends_at"),
            }),
          ),
        ),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/commitments",
    operationId: "listCommitments",
    tag: "Top-ups and the price book",
    summary: "List a customer's commitments",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    response: S.ListOf(CommitmentView),
    errors: ["not_found"],
    handle: async ({ commerce, store, tenantId, key, params }) => {
      await customerInPath(store, tenantId, key, params.id);
      return okReply(
        listView((await commerce.listCommitments(tenantId, params.id)).map(commitmentView), null),
      );
    },
  }),
  route({
    method: "POST",
    url: "/v1/purchases",
    operationId: "createPurchase",
    tag: "Top-ups and the price book",
    summary: "Buy credits",
    description:
      "Prices a pack or a custom amount by the currency's book in force (with the customer's committed-use discount) and charges the provider. Paid at once: `confirmed`, with its grant (source purchase, the price's cost basis, the pack's expiry). An invoice: `pending`, no credits until confirmed. Declined: `failed`, no credits. Send an `Idempotency-Key`: the provider's own key is derived from it, so a retry after a failure (even one after the provider charged) is charged once.",
    access: "secret",
    body: PurchaseCreate,
    response: PurchaseView,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument", "no_price_book"],
    handle: async ({ commerce, tx, tenantId, body, idempotency }) => {
      const credits = body.credits === undefined ? undefined : amount(body.credits, "credits");
      const which = exactlyOne(body, ["pack_id", "credits"]);
      const item = which === "pack_id" ? { packId: body.pack_id! } : { credits: credits! };
      return created(
        purchaseView(
          must(
            await commerce.createPurchase(tx, tenantId, {
              walletId: body.wallet_id,
              currency: body.currency,
              item,
              provider: body.provider,
              paymentMethod: body.payment_method ?? null,
              requestKey: idempotency?.key ?? null,
            }),
          ),
        ),
      );
    },
  }),
  route({
    method: "GET",
    url: "/v1/purchases",
    operationId: "listPurchases",
    tag: "Top-ups and the price book",
    summary: "List purchases",
    description: "A restricted key lists its own customer's purchases only.",
    access: "read",
    query: S.withPage({
      customer_id: Type.Optional(S.Id("cus", "Only this customer's purchases.")),
      wallet_id: Type.Optional(S.Id("wal", "Only this wallet's purchases.")),
      status: Type.Optional(
        Type.Union([
          Type.Literal("pending"),
          Type.Literal("confirmed"),
          Type.Literal("failed"),
          Type.Literal("canceled"),
        ]),
      ),
    }),
    response: S.ListOf(PurchaseView),
    errors: ["invalid_cursor"],
    handle: async ({ commerce, tenantId, key, query }) => {
      if (key.customerId !== null && query.customer_id !== undefined && query.customer_id !== key.customerId)
        return okReply(listView([], null));
      const r = await commerce.listPurchases(
        tenantId,
        { customerId: key.customerId ?? query.customer_id, walletId: query.wallet_id, status: query.status },
        page(query, ID_CURSOR),
      );
      return okReply(listView(r.items.map(purchaseView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/purchases/:id",
    operationId: "getPurchase",
    tag: "Top-ups and the price book",
    summary: "Get a purchase",
    access: "read",
    params: PurchaseIdParam,
    response: PurchaseView,
    errors: ["not_found"],
    handle: async ({ commerce, tenantId, key, params }) => {
      const p = await commerce.getPurchase(tenantId, params.id);
      if (!p) throw new ApiError("not_found", `No purchase ${params.id}.`);
      visible(key, p.customerId, "purchase", params.id);
      return okReply(purchaseView(p));
    },
  }),
  route({
    method: "POST",
    url: "/v1/purchases/:id/confirm",
    operationId: "confirmPurchase",
    tag: "Top-ups and the price book",
    summary: "Confirm a purchase's payment",
    description:
      "The payment of a pending purchase arrived (an invoice paid): its grant is written in the same transaction as the status change. Exactly once: a purchase that is not pending answers `purchase_not_pending` and nothing changes.",
    access: "secret",
    params: PurchaseIdParam,
    body: PurchaseConfirm,
    response: PurchaseView,
    errors: ["not_found", "purchase_not_pending", "invalid_amount"],
    handle: async ({ commerce, tx, tenantId, params, body }) =>
      okReply(
        purchaseView(must(await commerce.confirmPurchase(tx, tenantId, params.id, body.reference ?? null))),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/purchases/:id/fail",
    operationId: "failPurchase",
    tag: "Top-ups and the price book",
    summary: "Record that a purchase's payment failed",
    description:
      "A pending purchase will not be paid: `failed`, no credits. A failed auto top-up payment turns the wallet's auto top-up off. `purchase_not_pending` when it is not pending.",
    access: "secret",
    params: PurchaseIdParam,
    body: PurchaseUnpaid,
    response: PurchaseView,
    errors: ["not_found", "purchase_not_pending"],
    handle: async ({ commerce, tx, tenantId, params, body }) =>
      okReply(
        purchaseView(
          must(await commerce.resolveUnpaid(tx, tenantId, params.id, "failed", body.reason ?? null)),
        ),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/purchases/:id/cancel",
    operationId: "cancelPurchase",
    tag: "Top-ups and the price book",
    summary: "Cancel a pending purchase",
    description:
      "Withdraws a pending purchase: `canceled`, no credits. `purchase_not_pending` when it is not pending.",
    access: "secret",
    params: PurchaseIdParam,
    body: PurchaseUnpaid,
    response: PurchaseView,
    errors: ["not_found", "purchase_not_pending"],
    handle: async ({ commerce, tx, tenantId, params, body }) =>
      okReply(
        purchaseView(
          must(await commerce.resolveUnpaid(tx, tenantId, params.id, "canceled", body.reason ?? null)),
        ),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/auto_top_up",
    operationId: "setAutoTopUp",
    tag: "Top-ups and the price book",
    summary: "Set a wallet's auto top-up",
    description:
      "When the balance is below the threshold, buy an amount, up to a target balance, or a pack, through the provider, spending at most monthly_cap per calendar month (UTC). The scheduler checks (and the test clock's advance); a declined payment turns it off with the reason. Setting it again replaces it and turns it back on.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: AutoTopUpSet,
    response: AutoTopUpView,
    errors: ["not_found", "invalid_amount", "invalid_argument", "no_price_book"],
    handle: async ({ commerce, tx, tenantId, params, body }) => {
      const threshold = amount(body.threshold, "threshold", true);
      const monthlyCap = amount(body.monthly_cap, "monthly_cap");
      const credits = body.amount === undefined ? undefined : amount(body.amount, "amount");
      const target =
        body.target_balance === undefined ? undefined : amount(body.target_balance, "target_balance");
      const which = exactlyOne(body, ["amount", "target_balance", "pack_id"]);
      const buy: AutoTopUpConfig["buy"] =
        which === "amount"
          ? { kind: "amount", credits: credits! }
          : which === "target_balance"
            ? { kind: "target", balance: target! }
            : { kind: "pack", packId: body.pack_id! };
      return okReply(
        autoTopUpView(
          must(
            await commerce.setAutoTopUp(tx, tenantId, params.id, {
              threshold,
              buy,
              currency: body.currency,
              monthlyCap,
              provider: body.provider,
              paymentMethod: body.payment_method ?? null,
              ...(body.enabled === undefined ? {} : { enabled: body.enabled }),
            }),
          ),
        ),
      );
    },
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id/auto_top_up",
    operationId: "getAutoTopUp",
    tag: "Top-ups and the price book",
    summary: "Get a wallet's auto top-up",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: AutoTopUpView,
    errors: ["not_found"],
    handle: async ({ store, commerce, tenantId, key, params }) => {
      await walletInPath(store, tenantId, key, params.id);
      const a = await commerce.getAutoTopUp(tenantId, params.id);
      if (!a) throw new ApiError("not_found", `Wallet ${params.id} has no auto top-up.`);
      return okReply(autoTopUpView(a));
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/auto_top_up/disable",
    operationId: "disableAutoTopUp",
    tag: "Top-ups and the price book",
    summary: "Turn a wallet's auto top-up off",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: S.Empty,
    response: AutoTopUpView,
    errors: ["not_found"],
    handle: async ({ commerce, tx, tenantId, params }) =>
      okReply(autoTopUpView(must(await commerce.disableAutoTopUp(tx, tenantId, params.id)))),
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/auto_top_up/run",
    operationId: "runAutoTopUp",
    tag: "Top-ups and the price book",
    summary: "Check a wallet's auto top-up now",
    description:
      "Buys now if the balance is below the threshold (as the scheduler would), and charges a purchase left awaiting its charge (a crash, a provider that did not answer). Refused, changing nothing, with `auto_top_up_disabled` when it is off and `auto_top_up_cap_reached` when the next top-up does not fit in what is left of this month's cap. Each purchase is written before its provider is charged, and no transaction is open during the charge. With an `Idempotency-Key`, a retry answers the first outcome and checks nothing.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: S.Empty,
    response: AutoTopUpRunView,
    errors: ["not_found", "auto_top_up_disabled", "auto_top_up_cap_reached", "no_price_book"],
    // Its own transactions, none open during a charge; the key is recorded after (runAutoTopUp).
    groupCommit: true,
    handle: async (ctx) =>
      committed(
        ctx,
        (claim) => ctx.commerce.runAutoTopUp(ctx.tenantId, ctx.params.id, claim),
        (run) => okReply(runView(run)),
      ),
  }),
];
