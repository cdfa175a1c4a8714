import { CAP_PERIODS, type CapSetter, formatAmount } from "@drawdown/core";
import { type ApiKey, type SpendCapView as CapRecord, SpendCaps, type SqlExecutor } from "@drawdown/storage";
import { Type } from "@sinclair/typebox";
import {
  amount,
  created,
  customerInPath,
  ID_CURSOR,
  must,
  notFound,
  okReply,
  page,
  type Route,
  route,
  visible,
} from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Spend caps (issue 5 point 4): a limit per UTC day or month on what a wallet (its chain), a
 * member or an agent may be charged. The vendor sets caps with a secret key; the customer
 * sets its own with its restricted key. Both kinds coexist and the tighter binds; a restricted
 * key never changes nor removes a vendor's cap. Enforced in the same atomic step as every
 * debit (events, holds, direct debits).
 */

const Period = Type.Union(
  CAP_PERIODS.map((p) => Type.Literal(p)),
  { description: "The UTC calendar period the cap resets on: day or month." },
);

export const SpendCapCreate = Type.Object(
  {
    target_id: Type.String({
      description:
        "What is capped: a wallet of the customer (its chain: a pool's cap counts the whole customer), or a member or agent of it (`sub_…`).",
      minLength: 1,
      maxLength: 64,
      examples: ["wal_01jd0s7k2mqx3v8r9t5w6y7z8a", "sub_01jd0s7k2mqx3v8r9t5w6y7z8a"],
    }),
    period: Period,
    limit: S.Amount("Credits the target may be charged per period; zero or more."),
  },
  { ...S.strict, title: "SpendCapCreate" },
);

export const SpendCapUpdate = Type.Object(
  { limit: S.Amount("The new limit per period; zero or more. Applies from now on.") },
  { ...S.strict, title: "SpendCapUpdate" },
);

export const SpendCapView = Type.Object(
  {
    object: Type.Literal("spend_cap"),
    id: Type.String(),
    customer_id: Type.String(),
    target_kind: Type.Union([Type.Literal("wallet"), Type.Literal("subject")]),
    target_id: Type.String(),
    period: Period,
    limit: S.Amount("Credits per period."),
    set_by: Type.Union([Type.Literal("vendor"), Type.Literal("customer")], {
      description: "vendor: set with a secret key; customer: with the customer's restricted key.",
    }),
    current_period: Type.Object({
      start: S.Timestamp("The current period's start."),
      end: S.Timestamp("Its end (exclusive)."),
      spent: S.Amount("Charged in the period."),
      held: S.Amount("Reserved by pending holds placed in the period."),
      remaining: S.Amount("What may still be charged or held: limit − spent − held, never below zero."),
    }),
    deleted: Type.Boolean({ description: "True only in the answer of its deletion." }),
    created_at: S.Timestamp("Created."),
    updated_at: S.Timestamp("Last changed."),
  },
  { title: "SpendCap" },
);

const iso = (t: number) => new Date(t).toISOString();

const capView = (c: CapRecord, deleted = false) => ({
  object: "spend_cap" as const,
  id: c.id,
  customer_id: c.customerId,
  target_kind: c.targetKind,
  target_id: c.targetId,
  period: c.period,
  limit: formatAmount(c.limit),
  set_by: c.setBy,
  current_period: {
    start: iso(c.status.periodStart),
    end: iso(c.status.periodEnd),
    spent: formatAmount(c.status.spent),
    held: formatAmount(c.status.held),
    remaining: formatAmount(c.status.remaining),
  },
  deleted,
  created_at: iso(c.createdAt),
  updated_at: iso(c.updatedAt),
});

/** Who a key sets caps as. */
const setterOf = (key: ApiKey): CapSetter => (key.kind === "secret" ? "vendor" : "customer");

/** A cap this key may see, or `not_found` (another customer's cap looks like a missing one). */
async function visibleCap(
  caps: SpendCaps,
  tenantId: string,
  key: ApiKey,
  id: string,
  ex?: SqlExecutor,
): Promise<CapRecord> {
  const c = await caps.get(tenantId, id, ex);
  if (!c) throw notFound("spend cap", id);
  visible(key, c.customerId, "spend cap", id);
  return c;
}

const CAP_DESCRIPTION =
  "A secret key sets and changes vendor caps (and may change or delete the customer's); a restricted key sets, changes and deletes only its own customer's caps, and gets `forbidden` on a vendor cap.";

export const CAP_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/customers/:id/spend_caps",
    operationId: "createSpendCap",
    tag: "Spend caps",
    summary: "Set a spend cap",
    description: `Caps what a wallet of the customer (its chain), or a member or agent of it, may be charged per UTC day or month. One cap per target, period and setter: the vendor's and the customer's coexist, and the tighter binds. Enforced in the same atomic step as every debit: an event beyond it is recorded at zero paid with reason spend_cap_reached, an authorization is denied with that reason, a direct debit fails with it. ${CAP_DESCRIPTION}`,
    access: "customer",
    params: S.IdParam("cus", "customer"),
    body: SpendCapCreate,
    response: SpendCapView,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument", "already_exists"],
    handle: async ({ store, tx, tenantId, key, params, body }) => {
      visible(key, params.id, "customer", params.id);
      const limit = amount(body.limit, "limit", true);
      const cap = must(
        await new SpendCaps(store).create(tx, tenantId, {
          customerId: params.id,
          targetId: body.target_id,
          period: body.period,
          limit,
          setBy: setterOf(key),
        }),
      );
      return created(capView(cap));
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/spend_caps",
    operationId: "listSpendCaps",
    tag: "Spend caps",
    summary: "List a customer's spend caps",
    description:
      "Every cap of the customer, the vendor's and its own, each with the current period's spent, held and remaining.",
    access: "read",
    params: S.IdParam("cus", "customer"),
    query: S.Page,
    response: S.ListOf(SpendCapView),
    errors: ["not_found", "invalid_cursor"],
    handle: async ({ store, tenantId, key, params, query }) => {
      await customerInPath(store, tenantId, key, params.id);
      const r = await new SpendCaps(store).list(tenantId, params.id, page(query, ID_CURSOR));
      return okReply(
        listView(
          r.items.map((c) => capView(c)),
          r.next,
        ),
      );
    },
  }),
  route({
    method: "GET",
    url: "/v1/spend_caps/:id",
    operationId: "getSpendCap",
    tag: "Spend caps",
    summary: "Get a spend cap",
    description: "The cap with the current period's spent, held and remaining.",
    access: "read",
    params: S.IdParam("cap", "spend cap"),
    response: SpendCapView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) =>
      okReply(capView(await visibleCap(new SpendCaps(store), tenantId, key, params.id))),
  }),
  route({
    method: "POST",
    url: "/v1/spend_caps/:id",
    operationId: "updateSpendCap",
    tag: "Spend caps",
    summary: "Change a spend cap's limit",
    description: `The new limit applies from now on, atomically with every charge; what was charged stays. Lowering it does not revoke pending holds. ${CAP_DESCRIPTION}`,
    access: "customer",
    params: S.IdParam("cap", "spend cap"),
    body: SpendCapUpdate,
    response: SpendCapView,
    errors: ["not_found", "invalid_amount", "forbidden"],
    handle: async ({ store, tx, tenantId, key, params, body }) => {
      const caps = new SpendCaps(store);
      await visibleCap(caps, tenantId, key, params.id, tx);
      const limit = amount(body.limit, "limit", true);
      return okReply(capView(must(await caps.update(tx, tenantId, params.id, limit, setterOf(key)))));
    },
  }),
  route({
    method: "POST",
    url: "/v1/spend_caps/:id/delete",
    operationId: "deleteSpendCap",
    tag: "Spend caps",
    summary: "Delete a spend cap",
    description: `Removes the cap, its counters and the room pending holds reserved on it. ${CAP_DESCRIPTION}`,
    access: "customer",
    params: S.IdParam("cap", "spend cap"),
    body: S.Empty,
    response: SpendCapView,
    errors: ["not_found", "forbidden"],
    handle: async ({ store, tx, tenantId, key, params }) => {
      const caps = new SpendCaps(store);
      await visibleCap(caps, tenantId, key, params.id, tx);
      return okReply(capView(must(await caps.delete(tx, tenantId, params.id, setterOf(key))), true));
    },
  }),
];
