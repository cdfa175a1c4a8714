import {
  formatAmount,
  formatTimestamp,
  OVERAGE_MODES,
  type OveragePolicy,
  type OveragePolicyInput,
  parseDecimal,
} from "@drawdown/core";
import {
  billOverage,
  clearWalletOverage,
  getOverage,
  listOverageInvoices,
  type OverageInvoiceRecord,
  type OverageState,
  setWalletOverage,
} from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import { ID_CURSOR, must, okReply, page, type Route, route, walletInPath } from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Overage policies (core/overage.ts): a pool wallet's policy (hard cap, soft cap with a floor
 * and a price, throttle, carry deficit, fair use) and where it came from, the billing of a
 * priced soft cap's overage, and the overage invoices. A plan carries the same policy shape
 * (lifecycle-routes.ts); a wallet's own policy overrides its plan's.
 */

const Decimal = (description: string) => Type.String({ maxLength: 40, description });

/** A policy as the API takes it (on a wallet and on a plan). */
export const OveragePolicyWire = Type.Object(
  {
    mode: Type.Union(
      OVERAGE_MODES.map((m) => Type.Literal(m)),
      {
        description:
          "hard_cap (default): never below 0. soft_cap: down to floor, billed at price when set. throttle: below throttle.level only the listed actions (and the fallback) proceed. carry_deficit: down to floor, repaid by the next period's plan credits. fair_use: never denied, alerts only.",
      },
    ),
    floor: Type.Optional(
      Decimal('The lowest balance, ≤ 0, e.g. "-100" (soft_cap, carry_deficit). Default 0.'),
    ),
    price: Type.Optional(
      Type.Object(
        {
          amount: Decimal('Money per credit, above 0, up to 9 decimals, e.g. "0.02".'),
          currency: Type.String({ pattern: "^[A-Z]{3}$", description: "ISO 4217." }),
        },
        { ...S.strict, description: "soft_cap only: the price the overage is billed at." },
      ),
    ),
    throttle: Type.Optional(
      Type.Object(
        {
          level: Decimal("Credits available (after the estimate) under which the throttle applies; ≥ 0."),
          allowed_actions: Type.Optional(
            Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
              maxItems: 50,
              description: 'Actions (or "prefix.*") still allowed below the level.',
            }),
          ),
          fallback_action: Type.Optional(
            Type.String({ minLength: 1, maxLength: 100, description: "The cheaper action to suggest." }),
          ),
        },
        { ...S.strict, description: "throttle only (required there)." },
      ),
    ),
  },
  { ...S.strict, title: "OveragePolicy" },
);

const money = (text: string, field: string, allowNegative: boolean): bigint => {
  const r = parseDecimal(text, 9, { allowNegative, allowZero: true });
  if (!r.ok)
    throw new ApiError("invalid_amount", `${field}: ${r.error.message}`, {
      errors: [{ path: field, message: r.error.message }],
    });
  return r.value;
};

/** The wire policy, parsed (validated by the core where it is used). */
export function overageFrom(w: Static<typeof OveragePolicyWire>, prefix = ""): OveragePolicyInput {
  return {
    mode: w.mode as OveragePolicy["mode"],
    ...(w.floor === undefined ? {} : { floor: money(w.floor, `${prefix}floor`, true) }),
    price:
      w.price === undefined
        ? null
        : { amount: money(w.price.amount, `${prefix}price.amount`, false), currency: w.price.currency },
    throttle:
      w.throttle === undefined
        ? null
        : {
            level: money(w.throttle.level, `${prefix}throttle.level`, false),
            allowedActions: w.throttle.allowed_actions ?? [],
            fallbackAction: w.throttle.fallback_action ?? null,
          },
  };
}

/** A policy's fields as the API shows them. */
export const overagePolicyFields = (p: OveragePolicy) => ({
  mode: p.mode,
  floor: formatAmount(p.floor),
  price: p.price ? { amount: formatAmount(p.price.amount), currency: p.price.currency } : null,
  throttle: p.throttle
    ? {
        level: formatAmount(p.throttle.level),
        allowed_actions: [...p.throttle.allowedActions],
        fallback_action: p.throttle.fallbackAction,
      }
    : null,
});

export const OveragePolicyFields = {
  mode: Type.String({ description: OVERAGE_MODES.join(", ") }),
  floor: S.Amount("The lowest balance (≤ 0); fair_use's is the end of the amount range."),
  price: Type.Union([
    Type.Object({ amount: S.Amount("Money per credit."), currency: Type.String() }),
    Type.Null(),
  ]),
  throttle: Type.Union([
    Type.Object({
      level: S.Amount(),
      allowed_actions: Type.Array(Type.String()),
      fallback_action: Type.Union([Type.String(), Type.Null()]),
    }),
    Type.Null(),
  ]),
};

export const OverageView = Type.Object(
  {
    object: Type.Literal("overage_policy"),
    wallet_id: Type.String(),
    ...OveragePolicyFields,
    source: Type.String({
      description:
        "wallet (set on the wallet, overrides its plan's), plan (its subscription's plan's) or default.",
    }),
    owed: S.Amount("Credits the wallet owes now (its overdraft)."),
  },
  { title: "OveragePolicyState" },
);

const overageView = (s: OverageState) => ({
  object: "overage_policy" as const,
  wallet_id: s.walletId,
  ...overagePolicyFields(s.policy),
  source: s.source,
  owed: formatAmount(s.owed),
});

export const OverageInvoiceView = Type.Object(
  {
    object: Type.Literal("overage_invoice"),
    id: Type.String(),
    customer_id: Type.String(),
    wallet_id: Type.String(),
    credits: S.Amount("Credits billed (what the wallet owed)."),
    price: S.Amount("Money per credit."),
    currency: Type.String(),
    amount: S.Amount("Money: credits × price, rounded once (half away from zero)."),
    reason: Type.String({ description: "renewal (at the period renewal) or on_demand." }),
    period_start: Type.Union([Type.String(), Type.Null()], {
      description: "The previous invoice's end for this wallet; null for its first.",
    }),
    period_end: Type.String(),
    transaction_id: Type.String({
      description: "The `overage.bill` transaction (overdraft to overage_receivable).",
    }),
    created_at: Type.String(),
  },
  { title: "OverageInvoice" },
);

const invoiceView = (i: OverageInvoiceRecord) => ({
  object: "overage_invoice" as const,
  id: i.id,
  customer_id: i.customerId,
  wallet_id: i.walletId,
  credits: formatAmount(i.credits),
  price: formatAmount(i.price),
  currency: i.currency,
  amount: formatAmount(i.amount),
  reason: i.reason,
  period_start: i.periodStart === null ? null : formatTimestamp(i.periodStart),
  period_end: formatTimestamp(i.periodEnd),
  transaction_id: i.transactionId,
  created_at: formatTimestamp(i.createdAt),
});

export const OVERAGE_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/wallets/:id/overage",
    operationId: "setOveragePolicy",
    tag: "Wallets",
    summary: "Set a pool wallet's overage policy",
    description:
      "The wallet's own policy: it overrides the policy of the customer's plan (precedence: wallet, then plan, then the default hard_cap). What the wallet owes must fit the new floor. hard_cap: a charge the credits cannot cover is denied or recorded unpaid. soft_cap: the balance may go down to floor (≤ 0); with a price, what is owed is billed at each period renewal and on demand. throttle: below throttle.level, authorize answers `throttle` for actions not listed. carry_deficit: down to floor; the next period's plan credits repay it first. fair_use: never denied; alerts only. Whatever the mode, an enabled auto top-up (synchronous provider) is tried before authorize denies.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: OveragePolicyWire,
    response: OverageView,
    errors: ["not_found", "invalid_argument", "invalid_amount"],
    handle: async ({ tx, tenantId, params, body }) =>
      okReply(overageView(must(await setWalletOverage(tx, tenantId, params.id, overageFrom(body))))),
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id/overage",
    operationId: "getOveragePolicy",
    tag: "Wallets",
    summary: "Get a pool wallet's overage policy",
    description:
      "The policy in force, where it came from (wallet, plan or default), and what the wallet owes.",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: OverageView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ store, tenantId, key, params }) => {
      await walletInPath(store, tenantId, key, params.id);
      return okReply(overageView(must(await getOverage(store.db, tenantId, params.id))));
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/overage/clear",
    operationId: "clearOveragePolicy",
    tag: "Wallets",
    summary: "Remove a pool wallet's own overage policy",
    description:
      "The wallet takes its active subscription's plan's policy again, else the default hard_cap. Its floor never cuts below what it owes.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: Type.Object({}, { ...S.strict, title: "ClearOveragePolicy" }),
    response: OverageView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ tx, tenantId, params }) =>
      okReply(overageView(must(await clearWalletOverage(tx, tenantId, params.id)))),
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/overage/bill",
    operationId: "billOverage",
    tag: "Wallets",
    summary: "Bill a wallet's overage now",
    description:
      "Under a soft_cap with a price: what the wallet owes moves to overage_receivable in one balanced `overage.bill` transaction and an overage invoice is recorded (credits, price, money amount, currency); the wallet owes nothing more. Credits its pending holds took from the overdraft are billed once settled. `invoice` is null when nothing is owed. Renewals bill the same way at each period's end.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: Type.Object({}, { ...S.strict, title: "BillOverage" }),
    response: Type.Object({
      object: Type.Literal("overage_bill"),
      wallet_id: Type.String(),
      invoice: Type.Union([OverageInvoiceView, Type.Null()]),
    }),
    errors: ["not_found", "invalid_argument"],
    handle: async ({ store, tx, tenantId, params }) => {
      const invoice = must(await billOverage(tx, store, tenantId, params.id));
      return okReply({
        object: "overage_bill",
        wallet_id: params.id,
        invoice: invoice ? invoiceView(invoice) : null,
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/overage_invoices",
    operationId: "listOverageInvoices",
    tag: "Wallets",
    summary: "List overage invoices",
    description: "Overage billed (at renewals and on demand), oldest first, by wallet or customer.",
    access: "read",
    query: S.withPage({
      wallet_id: Type.Optional(S.Id("wal", "Invoices of this wallet.")),
      customer_id: Type.Optional(S.Id("cus", "Invoices of this customer.")),
    }),
    response: S.ListOf(OverageInvoiceView),
    errors: ["invalid_cursor"],
    handle: async ({ store, tenantId, key, query }) => {
      const p = page(query, ID_CURSOR);
      // A restricted key lists its own customer's invoices only.
      if (key.customerId !== null && query.customer_id !== undefined && query.customer_id !== key.customerId)
        return okReply(listView([], null));
      const r = await listOverageInvoices(
        store.db,
        tenantId,
        { walletId: query.wallet_id ?? null, customerId: key.customerId ?? query.customer_id ?? null },
        p,
      );
      return okReply(listView(r.items.map(invoiceView), r.next));
    },
  }),
];
