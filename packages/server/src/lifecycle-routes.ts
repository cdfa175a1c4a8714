import {
  type Allocation,
  type ExpiryPolicy,
  formatAmount,
  type RolloverCap,
  type RolloverPolicy,
} from "@drawdown/core";
import type { MemberAllocationLine, PlanRecord, SubscriptionRecord } from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import {
  OveragePolicyFields,
  OveragePolicyWire,
  overageFrom,
  overagePolicyFields,
} from "./overage-routes.js";
import {
  amount,
  customerInPath,
  ID_CURSOR,
  must,
  notFound,
  okReply,
  page,
  type Route,
  route,
  timestamp,
} from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Plans and subscriptions: hybrid pricing (a base fee plus credits per period, per customer or
 * per seat), renewed each period exactly once, with rollover and expiry policies.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

export const IntervalWire = Type.Object(
  {
    unit: Type.Union([
      Type.Literal("day"),
      Type.Literal("week"),
      Type.Literal("month"),
      Type.Literal("year"),
    ]),
    count: Type.Integer({
      minimum: 1,
      maximum: 1000,
      description: "How many units a period lasts (1 month, 3 months…).",
    }),
  },
  { ...S.strict, title: "Interval" },
);

export const RolloverWire = Type.Object(
  {
    kind: Type.Union([
      Type.Literal("none"),
      Type.Literal("full"),
      Type.Literal("capped"),
      Type.Literal("declining"),
    ]),
    cap: Type.Optional(
      Type.Object(
        {
          absolute: Type.Optional(S.Amount("At most this many credits carried.")),
          percent_of_allotment: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
          multiple_of_allotment: Type.Optional(
            S.Amount('At most this multiple of the period\'s allotment, e.g. "3".'),
          ),
        },
        { ...S.strict, description: "For capped: exactly one of the three." },
      ),
    ),
    max_periods: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 120, description: "A credit is carried at most this many times." }),
    ),
    schedule: Type.Optional(
      Type.Array(Type.Integer({ minimum: 0, maximum: 100 }), {
        minItems: 1,
        maxItems: 24,
        description: "For declining: the percent carried at each successive period end, e.g. [100, 50, 0].",
      }),
    ),
  },
  { ...S.strict, title: "RolloverPolicy" },
);

export const ExpiryWire = Type.Object(
  {
    kind: Type.Union([Type.Literal("period_end"), Type.Literal("never"), Type.Literal("rolling")]),
    months: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 120, description: "For rolling: months after the grant." }),
    ),
  },
  { ...S.strict, title: "ExpiryPolicy" },
);

export const AllocationWire = Type.Object(
  {
    mode: Type.Union([Type.Literal("customer"), Type.Literal("per_member")], {
      description:
        "customer (default): the allotment goes to the customer's pool wallet. per_member: every member wallet receives the allotment each period, pool_share_percent of it paid into the shared pool.",
    }),
    pool_share_percent: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100,
        description:
          "For per_member (required): the percent of each member's allocation that goes to the customer's pool; the rest stays in the member's wallet. Rounds down; the remainder stays personal.",
      }),
    ),
  },
  { ...S.strict, title: "Allocation" },
);

export const PlanCreate = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    base_fee: Type.Object(
      { amount: S.Amount("The fee per period, in money."), currency: Type.String({ pattern: "^[A-Z]{3}$" }) },
      S.strict,
    ),
    interval: IntervalWire,
    allotment: S.Amount("Credits included per period (per seat when per_seat)."),
    per_seat: Type.Optional(Type.Boolean()),
    rollover: Type.Optional(RolloverWire),
    expiry: Type.Optional(ExpiryWire),
    on_cancel: Type.Optional(
      Type.Union([Type.Literal("forfeit"), Type.Literal("keep_until_period_end"), Type.Literal("keep")], {
        description:
          "What a cancel does to the credits: void them now, or let them last to the period end (default).",
      }),
    ),
    allocation: Type.Optional(AllocationWire),
    overage: Type.Optional(OveragePolicyWire),
  },
  { ...S.strict, title: "PlanCreate" },
);

export const PlanView = Type.Object(
  {
    object: Type.Literal("plan"),
    id: Type.String(),
    name: Type.String(),
    base_fee: Type.Object({ amount: Type.String(), currency: Type.String() }),
    interval: IntervalWire,
    allotment: S.Amount(),
    per_seat: Type.Boolean(),
    rollover: RolloverWire,
    expiry: ExpiryWire,
    on_cancel: Type.String(),
    allocation: AllocationWire,
    overage: Type.Union([Type.Object(OveragePolicyFields), Type.Null()], {
      description:
        "The overage policy its subscribers' pool wallets take at subscribe and plan change, unless a wallet set its own; null: none.",
    }),
    created_at: Type.String(),
  },
  { title: "Plan" },
);

export const SubscriptionView = Type.Object(
  {
    object: Type.Literal("subscription"),
    id: Type.String(),
    customer_id: Type.String(),
    plan_id: Type.String(),
    pending_plan_id: Nullable(
      Type.String({
        description: "The plan a downgrade switches to at the next renewal; null when none waits.",
      }),
    ),
    seats: Type.Integer(),
    status: Type.Union([Type.Literal("active"), Type.Literal("canceled")]),
    started_at: Type.String(),
    canceled_at: Nullable(Type.String()),
    current_period: Type.Integer({ description: "The index of the last period renewed (0 is the first)." }),
    next_renewal_at: Nullable(
      Type.String({ description: "When the next period starts and renews; null once ended." }),
    ),
    created_at: Type.String(),
  },
  { title: "Subscription" },
);

export const MemberAllocationView = Type.Object(
  {
    object: Type.Literal("member_allocation"),
    wallet_id: Type.String({ description: "The member's wallet." }),
    member_id: Type.String({ description: "The member (a subject of the customer)." }),
    subscription_id: Nullable(
      Type.String({
        description:
          "The subscription whose period is current; null when none is (no subscription, or its last period ended).",
      }),
    ),
    period: Nullable(
      Type.Object(
        {
          index: Type.Integer({ description: "0 is the subscription's first period." }),
          starts_at: Type.String(),
          ends_at: Type.String(),
        },
        { description: "The current period [starts_at, ends_at); null with no subscription." },
      ),
    ),
    pool_share_percent: Nullable(
      Type.Integer({
        description: "The plan's pool share; null when the plan does not allocate per member.",
      }),
    ),
    allocated: S.Amount("The member's whole allocation this period (personal + pool_share); 0 when none."),
    personal: S.Amount("The part granted into the member's own wallet."),
    pool_share: S.Amount("The part paid into the customer's pool, which every member draws after their own."),
    remaining: S.Amount("What is left of the personal part (0 once used up, expired or voided)."),
    reason: Nullable(
      Type.Union([Type.Literal("renewal"), Type.Literal("member_added")], {
        description:
          "renewal: allocated with the period; member_added: prorated when the wallet was created mid-period; null: no allocation this period.",
      }),
    ),
    allocated_at: Nullable(Type.String()),
    personal_grant_id: Nullable(Type.String()),
    pool_grant_id: Nullable(
      Type.String({
        description: "The pool grant holding the share (a renewal's is one grant for every member).",
      }),
    ),
  },
  { title: "MemberAllocation" },
);

export const SubscriptionCreate = Type.Object(
  {
    customer_id: S.Id("cus", "The customer."),
    plan_id: S.Id("pln", "The plan."),
    seats: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1_000_000, description: "Seats (per-seat plans); default 1." }),
    ),
    start_at: Type.Optional(S.Timestamp("When the first period starts; default now.")),
  },
  { ...S.strict, title: "SubscriptionCreate" },
);

export const SeatChange = Type.Object(
  { seats: Type.Integer({ minimum: 0, maximum: 1_000_000 }) },
  { ...S.strict, title: "SeatChange" },
);

export const PlanChange = Type.Object(
  { plan_id: S.Id("pln", "The plan to change to (same interval).") },
  { ...S.strict, title: "PlanChange" },
);

function rolloverFrom(w: Static<typeof RolloverWire> | undefined): RolloverPolicy | undefined {
  if (w === undefined) return undefined;
  const maxPeriods = w.max_periods === undefined ? {} : { maxPeriods: w.max_periods };
  switch (w.kind) {
    case "none":
      return { kind: "none" };
    case "full":
      return { kind: "full", ...maxPeriods };
    case "declining":
      if (!w.schedule)
        throw new ApiError("invalid_argument", "rollover.schedule is required for a declining rollover.");
      return { kind: "declining", schedule: w.schedule };
    case "capped": {
      const c = w.cap ?? {};
      const given = [c.absolute, c.percent_of_allotment, c.multiple_of_allotment].filter(
        (x) => x !== undefined,
      );
      if (given.length !== 1)
        throw new ApiError(
          "invalid_argument",
          "rollover.cap gives exactly one of absolute, percent_of_allotment, multiple_of_allotment.",
        );
      let cap: RolloverCap;
      if (c.absolute !== undefined) cap = { absolute: amount(c.absolute, "rollover.cap.absolute", true) };
      else if (c.percent_of_allotment !== undefined) cap = { percentOfAllotment: c.percent_of_allotment };
      else
        cap = {
          multipleOfAllotment: amount(c.multiple_of_allotment!, "rollover.cap.multiple_of_allotment", true),
        };
      return { kind: "capped", cap, ...maxPeriods };
    }
  }
}

function rolloverView(p: RolloverPolicy): Static<typeof RolloverWire> {
  if (p.kind === "declining") return { kind: p.kind, schedule: [...p.schedule] };
  if (p.kind === "none") return { kind: "none" };
  const max = p.maxPeriods === undefined ? {} : { max_periods: p.maxPeriods };
  if (p.kind === "full") return { kind: "full", ...max };
  const c = p.cap;
  const cap =
    "absolute" in c
      ? { absolute: formatAmount(c.absolute) }
      : "percentOfAllotment" in c
        ? { percent_of_allotment: c.percentOfAllotment }
        : { multiple_of_allotment: formatAmount(c.multipleOfAllotment) };
  return { kind: "capped", cap, ...max };
}

export const expiryFrom = (w: Static<typeof ExpiryWire> | undefined): ExpiryPolicy | undefined => {
  if (w === undefined) return undefined;
  if (w.kind === "rolling") {
    if (w.months === undefined)
      throw new ApiError("invalid_argument", "expiry.months is required for a rolling expiry.");
    return { kind: "rolling", months: w.months };
  }
  return { kind: w.kind };
};

function allocationFrom(w: Static<typeof AllocationWire> | undefined): Allocation | undefined {
  if (w === undefined) return undefined;
  if (w.mode === "customer") {
    if (w.pool_share_percent !== undefined)
      throw new ApiError(
        "invalid_argument",
        "allocation.pool_share_percent applies to a per_member allocation only.",
        { details: { field: "allocation.pool_share_percent" } },
      );
    return { mode: "customer" };
  }
  if (w.pool_share_percent === undefined)
    throw new ApiError(
      "invalid_argument",
      "allocation.pool_share_percent is required for a per_member allocation (0 keeps every credit personal).",
      { details: { field: "allocation.pool_share_percent" } },
    );
  return { mode: "per_member", poolSharePercent: w.pool_share_percent };
}

const allocationView = (a: Allocation): Static<typeof AllocationWire> =>
  a.mode === "per_member" ? { mode: a.mode, pool_share_percent: a.poolSharePercent } : { mode: a.mode };

const planView = (p: PlanRecord) => ({
  object: "plan" as const,
  id: p.id,
  name: p.name,
  base_fee: { amount: formatAmount(p.baseFee.amount), currency: p.baseFee.currency },
  interval: { unit: p.interval.unit, count: p.interval.count },
  allotment: formatAmount(p.allotment),
  per_seat: p.perSeat,
  rollover: rolloverView(p.rollover),
  expiry:
    p.expiry.kind === "rolling" ? { kind: p.expiry.kind, months: p.expiry.months } : { kind: p.expiry.kind },
  on_cancel: p.cancel.onCancel,
  allocation: allocationView(p.allocation),
  overage: p.overage ? overagePolicyFields(p.overage) : null,
  created_at: new Date(p.createdAt).toISOString(),
});

const subscriptionView = (s: SubscriptionRecord) => ({
  object: "subscription" as const,
  id: s.id,
  customer_id: s.customerId,
  plan_id: s.planId,
  pending_plan_id: s.pendingPlanId,
  seats: s.seats,
  status: s.status,
  started_at: new Date(s.startedAt).toISOString(),
  canceled_at: s.canceledAt === null ? null : new Date(s.canceledAt).toISOString(),
  current_period: s.renewedThrough,
  next_renewal_at: s.nextRenewalAt === null ? null : new Date(s.nextRenewalAt).toISOString(),
  created_at: new Date(s.createdAt).toISOString(),
});

const iso = (t: number) => new Date(t).toISOString();

const memberAllocationView = (a: MemberAllocationLine): Static<typeof MemberAllocationView> => ({
  object: "member_allocation",
  wallet_id: a.walletId,
  member_id: a.memberId,
  subscription_id: a.subscriptionId,
  period: a.period && { index: a.period.index, starts_at: iso(a.period.from), ends_at: iso(a.period.to) },
  pool_share_percent: a.poolSharePercent,
  allocated: formatAmount(a.allocated),
  personal: formatAmount(a.personal),
  pool_share: formatAmount(a.poolShare),
  remaining: formatAmount(a.remaining),
  reason: a.reason,
  allocated_at: a.allocatedAt === null ? null : iso(a.allocatedAt),
  personal_grant_id: a.personalGrantId,
  pool_grant_id: a.poolGrantId,
});

/** The lifecycle endpoints, appended to the others. */
export const LIFECYCLE_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/plans",
    operationId: "createPlan",
    tag: "Plans and subscriptions",
    summary: "Create a plan",
    description:
      "A base fee per period plus included credits (per customer, per seat, or per member with a share pooled), with a rollover policy (none, full, capped by an absolute amount, a percent or a multiple of the allotment, at most N periods, or declining like 100/50/0), an expiry policy for its credits (period end, never, rolling N months) and a cancel rule. Rollover needs expiry at period end. A per_member allocation cannot be per_seat.",
    access: "secret",
    body: PlanCreate,
    response: PlanView,
    status: 201,
    errors: ["invalid_argument", "invalid_amount", "already_exists"],
    handle: async ({ subscriptions, tx, tenantId, body }) => {
      const plan = must(
        await subscriptions.createPlan(tx, tenantId, {
          name: body.name,
          baseFee: {
            amount: amount(body.base_fee.amount, "base_fee.amount", true),
            currency: body.base_fee.currency,
          },
          interval: body.interval,
          allotment: amount(body.allotment, "allotment", true),
          perSeat: body.per_seat ?? false,
          ...(body.rollover ? { rollover: rolloverFrom(body.rollover)! } : {}),
          ...(body.expiry ? { expiry: expiryFrom(body.expiry)! } : {}),
          ...(body.on_cancel ? { cancel: { onCancel: body.on_cancel } } : {}),
          ...(body.allocation ? { allocation: allocationFrom(body.allocation)! } : {}),
          ...(body.overage ? { overage: overageFrom(body.overage, "overage.") } : {}),
        }),
      );
      return { status: 201, body: planView(plan) };
    },
  }),
  route({
    method: "GET",
    url: "/v1/plans",
    operationId: "listPlans",
    tag: "Plans and subscriptions",
    summary: "List plans",
    access: "secret",
    response: S.ListOf(PlanView),
    errors: [],
    handle: async ({ subscriptions, tenantId }) =>
      okReply({
        object: "list",
        data: (await subscriptions.listPlans(tenantId)).map(planView),
        next_cursor: null,
      }),
  }),
  route({
    method: "GET",
    url: "/v1/plans/:id",
    operationId: "getPlan",
    tag: "Plans and subscriptions",
    summary: "Get a plan",
    access: "secret",
    params: S.IdParam("pln", "plan"),
    response: PlanView,
    errors: ["not_found"],
    handle: async ({ subscriptions, tenantId, params }) => {
      const p = await subscriptions.getPlan(tenantId, params.id);
      if (!p) throw notFound("plan", params.id);
      return okReply(planView(p));
    },
  }),
  route({
    method: "POST",
    url: "/v1/subscriptions",
    operationId: "createSubscription",
    tag: "Plans and subscriptions",
    summary: "Subscribe a customer to a plan",
    description:
      "Starts now (or at start_at, never in the past) and grants the first period's credits into the customer's pool wallet (or, for a per_member plan, to every member wallet and the pool's share). Each later period renews exactly once, in order, with the closing period's rollover. A customer has one active subscription at a time.",
    access: "secret",
    body: SubscriptionCreate,
    response: SubscriptionView,
    status: 201,
    errors: ["not_found", "invalid_argument", "already_exists"],
    handle: async ({ subscriptions, tx, tenantId, body }) => {
      let startAt: number | null = null;
      if (body.start_at !== undefined) {
        startAt = timestamp(body.start_at, "start_at");
      }
      const s = must(
        await subscriptions.subscribe(tx, tenantId, {
          customerId: body.customer_id,
          planId: body.plan_id,
          ...(body.seats !== undefined ? { seats: body.seats } : {}),
          startAt,
        }),
      );
      return { status: 201, body: subscriptionView(s) };
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/subscriptions",
    operationId: "listSubscriptions",
    tag: "Plans and subscriptions",
    summary: "List a customer's subscriptions",
    access: "read",
    params: S.IdParam("cus", "customer"),
    response: S.ListOf(SubscriptionView),
    errors: ["not_found"],
    handle: async ({ subscriptions, store, tenantId, key, params }) => {
      await customerInPath(store, tenantId, key, params.id);
      return okReply({
        object: "list",
        data: (await subscriptions.listSubscriptions(tenantId, params.id)).map(subscriptionView),
        next_cursor: null,
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/member_allocations",
    operationId: "listMemberAllocations",
    tag: "Plans and subscriptions",
    summary: "List a customer's member allocations",
    description:
      "Every member wallet of the customer, in wallet id order, with its allocation for the current period of the customer's subscription (the active one; a canceled one until its last period ends): what a per_member plan allocated to it, the part in its own wallet and what remains of it, and its share paid into the pool. A member without an allocation this period (its plan allots to the customer, or no subscription is current) answers zeros.",
    access: "read",
    params: S.IdParam("cus", "customer"),
    query: S.Page,
    response: S.ListOf(MemberAllocationView),
    errors: ["not_found", "invalid_cursor"],
    handle: async ({ subscriptions, store, tenantId, key, params, query }) => {
      await customerInPath(store, tenantId, key, params.id);
      const r = await subscriptions.memberAllocations(tenantId, params.id, page(query, ID_CURSOR));
      return okReply(listView(r.items.map(memberAllocationView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/subscriptions/:id",
    operationId: "getSubscription",
    tag: "Plans and subscriptions",
    summary: "Get a subscription",
    access: "read",
    params: S.IdParam("sbs", "subscription"),
    response: SubscriptionView,
    errors: ["not_found"],
    handle: async ({ subscriptions, tenantId, key, params }) => {
      const s = await subscriptions.getSubscription(tenantId, params.id);
      if (!s || (key.customerId !== null && key.customerId !== s.customerId))
        throw notFound("subscription", params.id);
      return okReply(subscriptionView(s));
    },
  }),
  route({
    method: "POST",
    url: "/v1/subscriptions/:id/seats",
    operationId: "changeSeats",
    tag: "Plans and subscriptions",
    summary: "Change the seat count",
    description:
      "Seats above the period's high-water mark are granted now, prorated to the rest of the period (rounded down); removing seats takes nothing back, and re-adding them in the same period grants nothing.",
    access: "secret",
    params: S.IdParam("sbs", "subscription"),
    body: SeatChange,
    response: SubscriptionView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ subscriptions, tx, tenantId, params, body }) =>
      okReply(subscriptionView(must(await subscriptions.changeSeats(tx, tenantId, params.id, body.seats)))),
  }),
  route({
    method: "POST",
    url: "/v1/subscriptions/:id/plan",
    operationId: "changePlan",
    tag: "Plans and subscriptions",
    summary: "Upgrade or downgrade to another plan",
    description:
      "Both plans must renew on the same interval. An upgrade (a higher period allotment at the period's high-water seats) is in force now: plan_id switches and the difference is granted prorated to the rest of the period (rounded down). Anything else is a downgrade: it waits in pending_plan_id until the period end, which closes the period under the current plan (its rollover) and renews under the new one; nothing is granted or taken back now. Changing back to the current plan withdraws a waiting downgrade.",
    access: "secret",
    params: S.IdParam("sbs", "subscription"),
    body: PlanChange,
    response: SubscriptionView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ subscriptions, tx, tenantId, params, body }) =>
      okReply(subscriptionView(must(await subscriptions.changePlan(tx, tenantId, params.id, body.plan_id)))),
  }),
  route({
    method: "POST",
    url: "/v1/subscriptions/:id/cancel",
    operationId: "cancelSubscription",
    tag: "Plans and subscriptions",
    summary: "Cancel a subscription",
    description:
      "No period renews after this. By the plan's cancel rule the credits are voided now (forfeit) or last to the period end, when they expire without rollover.",
    access: "secret",
    params: S.IdParam("sbs", "subscription"),
    body: S.Empty,
    response: SubscriptionView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ subscriptions, tx, tenantId, params }) =>
      okReply(subscriptionView(must(await subscriptions.cancel(tx, tenantId, params.id)))),
  }),
];
