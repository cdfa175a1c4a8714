import { ALERT_KINDS, ALERT_RULE_LIMITS, type AlertRule, alertRuleWire } from "@drawdown/core";
import type { AlertRecord, WalletAlertRules } from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { amount, ID_CURSOR, must, okReply, page, type Route, route, walletInPath } from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Alerts: rules per wallet (20% and 10% remaining and exhausted by default), each firing once
 * per crossing and re-arming after recovery, delivered as `alert.triggered` webhooks and
 * listed here.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

export const AlertRuleWire = Type.Union(
  [
    Type.Object(
      {
        kind: Type.Literal("percent_remaining"),
        percent: Type.Integer({
          minimum: 1,
          maximum: 99,
          description: "Fires when available falls to this percent of the reference or below.",
        }),
      },
      S.strict,
    ),
    Type.Object(
      {
        kind: Type.Literal("amount_remaining"),
        amount: S.Amount("Fires when available falls to this many credits or below."),
      },
      S.strict,
    ),
    Type.Object({ kind: Type.Literal("exhausted") }, S.strict),
    Type.Object(
      {
        kind: Type.Literal("expiring_soon"),
        days: Type.Integer({
          minimum: 1,
          maximum: ALERT_RULE_LIMITS.maxDays,
          description: "Fires once per grant holding credits when its expiry is this many days away.",
        }),
      },
      S.strict,
    ),
  ],
  { title: "AlertRule" },
);

export const AlertRulesSet = Type.Object(
  {
    rules: Nullable(
      Type.Array(AlertRuleWire, {
        maxItems: ALERT_RULE_LIMITS.maxRules,
        description: "The wallet's rules, replacing its list (empty: no alerts); null: back to the defaults.",
      }),
    ),
  },
  { ...S.strict, title: "AlertRulesSet" },
);

export const AlertRulesView = Type.Object(
  {
    object: Type.Literal("alert_rules"),
    wallet_id: Type.String(),
    defaults: Type.Boolean({ description: "True while the wallet has not set rules of its own." }),
    rules: Type.Array(AlertRuleWire),
  },
  { title: "AlertRules" },
);

export const AlertView = Type.Object(
  {
    object: Type.Literal("alert"),
    id: Type.String(),
    wallet_id: Type.String(),
    customer_id: Type.String(),
    kind: Type.Union(ALERT_KINDS.map((k) => Type.Literal(k))),
    rule_key: Nullable(Type.String({ description: "The rule (or the firing feature's key) it fired for." })),
    details: Type.Record(Type.String(), Type.Unknown(), {
      description:
        "Balance rules: rule, available, reference, percent_remaining. Expiring soon: rule, grant_id, expires_at, remaining. Others: their feature's details.",
    }),
    event_id: Type.String({ description: "The alert.triggered event that delivers it." }),
    fired_at: Type.String(),
  },
  { title: "Alert" },
);

const rulesView = (r: WalletAlertRules) => ({
  object: "alert_rules" as const,
  wallet_id: r.walletId,
  defaults: r.defaults,
  rules: r.rules.map(alertRuleWire),
});

const alertView = (a: AlertRecord) => ({
  object: "alert" as const,
  id: a.id,
  wallet_id: a.walletId,
  customer_id: a.customerId,
  kind: a.kind,
  rule_key: a.ruleKey,
  details: a.details,
  event_id: a.eventId,
  fired_at: new Date(a.firedAt).toISOString(),
});

const ruleFrom = (r: Static<typeof AlertRuleWire>, i: number): AlertRule =>
  r.kind === "amount_remaining" ? { kind: r.kind, amount: amount(r.amount, `rules/${i}/amount`) } : r;

export const ALERT_ROUTES: readonly Route[] = [
  route({
    method: "GET",
    url: "/v1/alerts",
    operationId: "listAlerts",
    tag: "Alerts",
    summary: "List fired alerts",
    description:
      "Alerts that fired, newest first, by wallet, customer and kind. Each was also delivered as an `alert.triggered` webhook.",
    access: "read",
    query: S.withPage({
      wallet_id: Type.Optional(S.Id("wal", "Only this wallet's alerts.")),
      customer_id: Type.Optional(S.Id("cus", "Only this customer's alerts.")),
      kind: Type.Optional(Type.Union(ALERT_KINDS.map((k) => Type.Literal(k)))),
    }),
    response: S.ListOf(AlertView),
    errors: ["invalid_cursor"],
    handle: async ({ alerts, tenantId, key, query }) => {
      const p = page(query, ID_CURSOR);
      if (key.customerId !== null && query.customer_id !== undefined && query.customer_id !== key.customerId)
        return okReply(listView([], null));
      const r = await alerts.list(
        tenantId,
        { walletId: query.wallet_id, customerId: key.customerId ?? query.customer_id, kind: query.kind },
        p,
      );
      return okReply(listView(r.items.map(alertView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id/alert_rules",
    operationId: "getAlertRules",
    tag: "Alerts",
    summary: "A wallet's alert rules",
    description: "Its own rules, or the defaults (20% and 10% remaining, exhausted) while it has set none.",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: AlertRulesView,
    errors: ["not_found"],
    handle: async ({ alerts, store, tenantId, key, params }) => {
      await walletInPath(store, tenantId, key, params.id);
      return okReply(rulesView((await alerts.rules(tenantId, params.id))!));
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/alert_rules",
    operationId: "setAlertRules",
    tag: "Alerts",
    summary: "Set a wallet's alert rules",
    description:
      "Replaces the wallet's rules (an empty list turns its alerts off; null goes back to the defaults). A rule kept keeps its armed state. Rules are checked at the next balance change.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: AlertRulesSet,
    response: AlertRulesView,
    errors: ["not_found", "invalid_argument", "invalid_amount"],
    handle: async ({ alerts, tx, tenantId, params, body }) =>
      okReply(
        rulesView(
          must(
            await alerts.setRules(
              tx,
              tenantId,
              params.id,
              body.rules === null ? null : body.rules.map(ruleFrom),
            ),
          ),
        ),
      ),
  }),
];
