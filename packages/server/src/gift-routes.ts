import { formatAmount, GRANT_LIMITS } from "@drawdown/core";
import type { GiftCodeRecord } from "@drawdown/storage";
import { Type } from "@sinclair/typebox";
import { amount, created, must, okReply, optionalTimestamp, type Route, route } from "./routes.js";
import * as S from "./schemas.js";
import { grantView } from "./views.js";

/**
 * Gifts and referrals: credits given to a customer directly, through a claimable code (one
 * use or N, an end date), or for a referral. Gifted credits carry zero cost basis.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const Scope = Type.Optional(
  Nullable(
    Type.Array(Type.String({ maxLength: 100 }), {
      minItems: 1,
      maxItems: GRANT_LIMITS.scopeMaxItems,
      description:
        'Actions the gifted credits may pay for ("image.*" admits every image action); null or absent: all.',
    }),
  ),
);

export const GiftCodeCreate = Type.Object(
  {
    code: Type.Optional(
      Type.String({
        pattern: "^[A-Za-z0-9_-]{4,64}$",
        description:
          "What customers type: 4 to 64 letters, digits, '-' or '_'. Default: 12 random characters.",
      }),
    ),
    amount: S.Amount("Credits each claim grants; positive."),
    scope: Scope,
    expires_in_days: Type.Optional(
      Nullable(
        Type.Integer({
          minimum: 1,
          maximum: 3650,
          description: "The claimed credits expire this many days after the claim; null or absent: never.",
        }),
      ),
    ),
    max_uses: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000,
        description: "How many customers may claim it (each once); default 1.",
      }),
    ),
    ends_at: Type.Optional(Nullable(S.Timestamp("No claim at or after this time; null or absent: no end."))),
  },
  { ...S.strict, title: "GiftCodeCreate" },
);

export const GiftCodeView = Type.Object(
  {
    object: Type.Literal("gift_code"),
    id: Type.String(),
    code: Type.String(),
    amount: S.Amount(),
    scope: Nullable(Type.Array(Type.String())),
    expires_in_days: Nullable(Type.Integer()),
    max_uses: Type.Integer(),
    uses: Type.Integer({ description: "Claims so far." }),
    ends_at: Nullable(Type.String()),
    created_at: Type.String(),
  },
  { title: "GiftCode" },
);

export const GiftCodeClaim = Type.Object(
  {
    code: Type.String({ minLength: 1, maxLength: 64, description: "The gift code." }),
    customer_id: S.Id("cus", "The customer claiming it."),
  },
  { ...S.strict, title: "GiftCodeClaim" },
);

export const GiftClaimView = Type.Object(
  {
    object: Type.Literal("gift_claim"),
    gift_code_id: Type.String(),
    customer_id: Type.String(),
    grant: S.GrantView,
    transaction_id: Type.String(),
    claimed_at: Type.String(),
  },
  { title: "GiftClaim" },
);

export const GiftCreate = Type.Object(
  {
    amount: S.Amount("Credits to give; positive."),
    scope: Scope,
    expires_at: Type.Optional(
      Nullable(S.Timestamp("When the gifted credits expire; null: never; absent: the gift expiry policy.")),
    ),
    reason: Type.Optional(
      Type.String({
        minLength: 0,
        maxLength: GRANT_LIMITS.reasonMax,
        description: "Why, kept in the journal.",
      }),
    ),
  },
  { ...S.strict, title: "GiftCreate" },
);

export const ReferralCreate = Type.Object(
  {
    referrer_customer_id: S.Id("cus", "The customer who referred this one."),
    amount: S.Amount("Credits for the referred customer; positive."),
    referrer_amount: Type.Optional(S.Amount("Credits for the referrer too; positive. Absent: none.")),
    scope: Scope,
    expires_at: Type.Optional(
      Nullable(
        S.Timestamp("When the referral credits expire; null: never; absent: the promo expiry policy."),
      ),
    ),
  },
  { ...S.strict, title: "ReferralCreate" },
);

export const ReferralView = Type.Object(
  {
    object: Type.Literal("referral"),
    customer_id: Type.String(),
    referrer_customer_id: Type.String(),
    grant: S.GrantView,
    referrer_grant: Nullable(S.GrantView),
    created_at: Type.String(),
  },
  { title: "Referral" },
);

export const GiftReportRow = Type.Object(
  {
    customer_id: Type.String(),
    gifts: Type.Integer({ description: "Gift grants received." }),
    given: S.Amount("Credits given."),
    used: S.Amount("Credits drawn from the gift grants (debits and usage, net of reversals)."),
    first_gift_at: Type.String(),
    bought_after: Type.Boolean({ description: "A purchase or top-up grant followed the first gift." }),
  },
  { title: "GiftReportRow" },
);

export const GiftReport = Type.Object(
  {
    object: Type.Literal("gift_report"),
    rows: Type.Array(GiftReportRow),
    totals: Type.Object({
      customers: Type.Integer(),
      given: S.Amount(),
      used: S.Amount(),
      bought_after: Type.Integer({ description: "Customers who bought credits after a gift." }),
    }),
  },
  { title: "GiftReport" },
);

const time = (t: number | null) => (t === null ? null : new Date(t).toISOString());

const codeView = (c: GiftCodeRecord) => ({
  object: "gift_code" as const,
  id: c.id,
  code: c.code,
  amount: formatAmount(c.amount),
  scope: c.scope === null ? null : [...c.scope],
  expires_in_days: c.expiresInDays,
  max_uses: c.maxUses,
  uses: c.uses,
  ends_at: time(c.endsAt),
  created_at: new Date(c.createdAt).toISOString(),
});

/** The gift endpoints, appended to the others. */
export const GIFT_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/gift_codes",
    operationId: "createGiftCode",
    tag: "Gifts",
    summary: "Create a gift code",
    description:
      "A code customers claim for credits (source gift, zero cost basis): each customer once, at most max_uses customers, until ends_at; the claimed credits are scoped like the code and expire expires_in_days after the claim.",
    access: "secret",
    body: GiftCodeCreate,
    response: GiftCodeView,
    status: 201,
    errors: ["invalid_amount", "invalid_argument", "already_exists"],
    handle: async ({ gifts, tx, tenantId, body }) =>
      created(
        codeView(
          must(
            await gifts.createCode(tx, tenantId, {
              ...(body.code === undefined ? {} : { code: body.code }),
              amount: amount(body.amount, "amount"),
              scope: body.scope ?? null,
              expiresInDays: body.expires_in_days ?? null,
              ...(body.max_uses === undefined ? {} : { maxUses: body.max_uses }),
              endsAt: optionalTimestamp(body.ends_at, "ends_at") ?? null,
            }),
          ),
        ),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/gift_codes",
    operationId: "listGiftCodes",
    tag: "Gifts",
    summary: "List gift codes",
    access: "secret",
    response: S.ListOf(GiftCodeView),
    errors: [],
    handle: async ({ gifts, tenantId }) =>
      okReply({ object: "list", data: (await gifts.listCodes(tenantId)).map(codeView), next_cursor: null }),
  }),
  route({
    method: "POST",
    url: "/v1/gift_codes/claim",
    operationId: "claimGiftCode",
    tag: "Gifts",
    summary: "Claim a gift code for a customer",
    description:
      "Grants the code's credits into the customer's pool wallet. Refused, changing nothing, when the customer claimed it already (`already_exists`), every use is taken (`gift_code_exhausted`) or the code has ended (`gift_code_ended`).",
    access: "secret",
    body: GiftCodeClaim,
    response: GiftClaimView,
    status: 201,
    errors: ["not_found", "already_exists", "gift_code_exhausted", "gift_code_ended", "invalid_amount"],
    handle: async ({ gifts, store, tx, tenantId, body }) => {
      const c = must(await gifts.claim(tx, tenantId, body.code, body.customer_id));
      return created({
        object: "gift_claim",
        gift_code_id: c.codeId,
        customer_id: c.customerId,
        grant: grantView(c.grant, store.now(tenantId)),
        transaction_id: c.transactionId,
        claimed_at: new Date(c.claimedAt).toISOString(),
      });
    },
  }),
  route({
    method: "POST",
    url: "/v1/customers/:id/gifts",
    operationId: "giveGift",
    tag: "Gifts",
    summary: "Gift credits to a customer",
    description:
      "A grant of source gift with zero cost basis into the customer's pool wallet, scoped and expiring as given, recorded with its reason.",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    body: GiftCreate,
    response: S.GrantCreated,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument"],
    handle: async ({ gifts, store, tx, tenantId, params, body }) => {
      const r = must(
        await gifts.give(tx, tenantId, params.id, {
          amount: amount(body.amount, "amount"),
          scope: body.scope ?? null,
          expiresAt: optionalTimestamp(body.expires_at, "expires_at"),
          reason: body.reason ?? null,
        }),
      );
      return created({
        object: "grant",
        grant: grantView(r.grant, store.now(tenantId)),
        transaction_id: r.transactionId,
      });
    },
  }),
  route({
    method: "POST",
    url: "/v1/customers/:id/referral",
    operationId: "createReferral",
    tag: "Gifts",
    summary: "Grant referral credits",
    description:
      "Credits of source promo with zero cost basis for a referred customer and, with referrer_amount, for the referrer: once per referred customer (`already_exists` after), both grants or neither.",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    body: ReferralCreate,
    response: ReferralView,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument", "already_exists"],
    handle: async ({ gifts, store, tx, tenantId, params, body }) => {
      const r = must(
        await gifts.refer(tx, tenantId, {
          customerId: params.id,
          referrerCustomerId: body.referrer_customer_id,
          amount: amount(body.amount, "amount"),
          referrerAmount:
            body.referrer_amount === undefined ? null : amount(body.referrer_amount, "referrer_amount"),
          scope: body.scope ?? null,
          expiresAt: optionalTimestamp(body.expires_at, "expires_at"),
        }),
      );
      const now = store.now(tenantId);
      return created({
        object: "referral",
        customer_id: r.customerId,
        referrer_customer_id: r.referrerCustomerId,
        grant: grantView(r.grant, now),
        referrer_grant: r.referrerGrant === null ? null : grantView(r.referrerGrant, now),
        created_at: new Date(r.createdAt).toISOString(),
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/reports/gifts",
    operationId: "giftReport",
    tag: "Gifts",
    summary: "Gifts given, used, and purchases after",
    description:
      "Per customer: gift grants received, credits given, credits used from them (debits and usage drawn from those grants, net of reversals), and whether a purchase or top-up grant followed the first gift.",
    access: "secret",
    query: Type.Object({ customer_id: Type.Optional(S.Id("cus", "Only this customer.")) }, S.strict),
    response: GiftReport,
    errors: [],
    handle: async ({ gifts, tenantId, query }) => {
      const rows = await gifts.report(tenantId, query.customer_id ?? null);
      return okReply({
        object: "gift_report",
        rows: rows.map((r) => ({
          customer_id: r.customerId,
          gifts: r.gifts,
          given: formatAmount(r.given),
          used: formatAmount(r.used),
          first_gift_at: new Date(r.firstGiftAt).toISOString(),
          bought_after: r.boughtAfter,
        })),
        totals: {
          customers: rows.length,
          given: formatAmount(rows.reduce((s, r) => s + r.given, 0n)),
          used: formatAmount(rows.reduce((s, r) => s + r.used, 0n)),
          bought_after: rows.filter((r) => r.boughtAfter).length,
        },
      });
    },
  }),
];
