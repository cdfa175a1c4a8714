import { formatAmount, type InstallmentSchedule, listValueOf, type RateLineInput } from "@drawdown/core";
import type {
  ContractRecord,
  ContractStatement,
  Contracts,
  GrantUsage,
  PocRecord,
  SqlExecutor,
  Store,
} from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import { ExpiryWire, expiryFrom, IntervalWire } from "./lifecycle-routes.js";
import { RateLineWire } from "./metering-routes.js";
import {
  amount,
  created,
  customerInPath,
  must,
  notFound,
  okReply,
  type Route,
  route,
  timestamp,
  visible,
} from "./routes.js";
import * as S from "./schemas.js";
import { grantStatus } from "./views.js";

/**
 * Enterprise contracts: committed credits over a term (upfront or in installments) at a
 * negotiated credit price, rolling 12-month expiry by default, rate card terms (pinned at
 * signing or following newer versions, with override lines); and proof-of-concept
 * allocations, free and time-bounded, carrying the list value they stand for.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const MoneyWire = (description: string) =>
  Type.Object(
    {
      amount: S.Amount("Money, in `currency`."),
      currency: Type.String({ pattern: "^[A-Z]{3}$", description: "ISO 4217, e.g. USD." }),
    },
    { ...S.strict, description },
  );

const MoneyView = Type.Object({ amount: Type.String(), currency: Type.String() });

export const ScheduleWire = Type.Object(
  {
    kind: Type.Union([Type.Literal("upfront"), Type.Literal("installments")]),
    interval: Type.Optional(IntervalWire),
  },
  {
    ...S.strict,
    title: "InstallmentSchedule",
    description:
      "upfront: all committed credits at the term's start. installments: one installment at the start of every interval (required) of the term; the commitment is split evenly, the first installments taking one unit (1e-9 credit) more when it does not divide.",
  },
);

export const ContractCreate = Type.Object(
  {
    customer_id: S.Id("cus", "The customer."),
    starts_at: Type.Optional(S.Timestamp("When the term starts: now (default) or later, never in the past.")),
    ends_at: S.Timestamp("When the term ends (exclusive); at most 120 months after it starts."),
    commitment: S.Amount("Credits committed over the term; 0 for a pricing-only contract."),
    schedule: Type.Optional(ScheduleWire),
    credit_price: MoneyWire(
      "The negotiated price of one credit: the cost basis and currency of every contract grant.",
    ),
    expiry: Type.Optional(ExpiryWire),
    allow_rate_card_upgrades: Type.Optional(
      Type.Boolean({
        description:
          "Whether the vendor may move the customer to newer rate card versions. false pins the version in force at signing; true (default) follows the version in force.",
      }),
    ),
    rate_card_id: Type.Optional(
      Nullable(
        S.Id("rcd", "The card the customer follows from the term's start; null or absent: the default."),
      ),
    ),
    overrides: Type.Optional(
      Type.Array(RateLineWire, {
        maxItems: 200,
        description:
          "Override lines that take precedence over the card's, for this customer's events timed inside the term.",
      }),
    ),
  },
  { ...S.strict, title: "ContractCreate" },
);

export const ContractTerminate = Type.Object(
  {
    credits: Type.Optional(
      Type.Union([Type.Literal("keep"), Type.Literal("forfeit")], {
        description:
          "What becomes of the credits already issued: keep (default: they last to their own expiry) or forfeit (voided now).",
      }),
    ),
  },
  { ...S.strict, title: "ContractTerminate" },
);

const UsageFields = {
  used: S.Amount("Drawn by usage and debits, net of reversals."),
  expired: S.Amount("Moved to breakage at expiry."),
  voided: S.Amount("Voided (a forfeiting termination)."),
};

export const InstallmentView = Type.Object(
  {
    index: Type.Integer(),
    at: Type.String({ description: "When it is (or was) granted." }),
    until: Type.String({ description: "The end of its period." }),
    amount: S.Amount("Credits of this installment."),
    status: Type.Union(
      ["issued", "scheduled", "canceled", "lapsed"].map((s) => Type.Literal(s)),
      {
        description:
          "issued; scheduled (not due yet); canceled (at or after an early termination); lapsed (caught up after its credits would already have expired).",
      },
    ),
    grant_id: Nullable(Type.String()),
    expires_at: Nullable(Type.String()),
    remaining: S.Amount("What its grant still holds."),
    ...UsageFields,
  },
  { title: "Installment" },
);

export const ContractView = Type.Object(
  {
    object: Type.Literal("contract"),
    id: Type.String(),
    customer_id: Type.String(),
    status: Type.Union(
      ["scheduled", "active", "ended", "terminated"].map((s) => Type.Literal(s)),
      { description: "scheduled (before its start), active, ended (after its term), terminated (early)." },
    ),
    starts_at: Type.String(),
    ends_at: Type.String(),
    commitment: S.Amount("Credits committed over the term."),
    schedule: ScheduleWire,
    credit_price: MoneyView,
    expiry: ExpiryWire,
    allow_rate_card_upgrades: Type.Boolean(),
    rate_card_id: Nullable(Type.String({ description: "null: the tenant's default card." })),
    pinned_version_id: Nullable(
      Type.String({ description: "The version in force at signing, pinned when upgrades are not allowed." }),
    ),
    overrides: Type.Array(RateLineWire),
    terminated_at: Nullable(Type.String()),
    on_terminate: Nullable(Type.String()),
    next_installment_at: Nullable(Type.String()),
    installments: Type.Array(InstallmentView, {
      description: "The whole schedule, with what became of each.",
    }),
    totals: Type.Object({
      committed: S.Amount(),
      issued: S.Amount("Granted so far."),
      remaining: S.Amount("What the issued grants still hold."),
      forgone: S.Amount("Committed credits never to be granted (canceled or lapsed)."),
      ...UsageFields,
    }),
    created_at: Type.String(),
  },
  { title: "Contract" },
);

export const PocCreate = Type.Object(
  {
    customer_id: S.Id("cus", "The customer."),
    amount: S.Amount("Free credits; positive."),
    list_value: MoneyWire("What these credits would cost at list price, shown on statements."),
    starts_at: Type.Optional(S.Timestamp("When the credits become usable: now (default) or later.")),
    ends_at: S.Timestamp("When the credits expire; at most 366 days after the start."),
    scope: Type.Optional(
      Nullable(
        Type.Array(Type.String({ maxLength: 100 }), {
          minItems: 1,
          maxItems: 50,
          description: 'Actions the credits may pay for ("docs.*"); null or absent: all.',
        }),
      ),
    ),
  },
  { ...S.strict, title: "PocAllocationCreate" },
);

export const PocView = Type.Object(
  {
    object: Type.Literal("poc_allocation"),
    id: Type.String(),
    customer_id: Type.String(),
    status: Type.Union(["scheduled", "active", "ended"].map((s) => Type.Literal(s))),
    amount: S.Amount("Free credits allocated."),
    list_value: MoneyView,
    starts_at: Type.String(),
    ends_at: Type.String(),
    scope: Nullable(Type.Array(Type.String())),
    grant_id: Type.String(),
    remaining: S.Amount(),
    ...UsageFields,
    used_list_value: Type.Object(
      { amount: Type.String(), currency: Type.String() },
      { description: "The list value of the credits used: used × list_value / amount, rounded down." },
    ),
    created_at: Type.String(),
  },
  { title: "PocAllocation" },
);

const time = (t: number | null) => (t === null ? null : new Date(t).toISOString());

const scheduleView = (s: InstallmentSchedule): Static<typeof ScheduleWire> =>
  s.kind === "upfront"
    ? { kind: "upfront" }
    : { kind: "installments", interval: { unit: s.interval.unit, count: s.interval.count } };

const usageView = (u: GrantUsage) => ({
  used: formatAmount(u.used),
  expired: formatAmount(u.expired),
  voided: formatAmount(u.voided),
});

export const contractView = (c: ContractRecord, s: ContractStatement, now: number) => ({
  object: "contract" as const,
  id: c.id,
  customer_id: c.customerId,
  status:
    c.status === "terminated"
      ? ("terminated" as const)
      : now < c.startsAt
        ? ("scheduled" as const)
        : now >= c.endsAt
          ? ("ended" as const)
          : ("active" as const),
  starts_at: new Date(c.startsAt).toISOString(),
  ends_at: new Date(c.endsAt).toISOString(),
  commitment: formatAmount(c.commitment),
  schedule: scheduleView(c.schedule),
  credit_price: { amount: formatAmount(c.creditPrice.amount), currency: c.creditPrice.currency },
  expiry:
    c.expiry.kind === "rolling" ? { kind: c.expiry.kind, months: c.expiry.months } : { kind: c.expiry.kind },
  allow_rate_card_upgrades: c.allowRateCardUpgrades,
  rate_card_id: c.rateCardId,
  pinned_version_id: c.pinnedVersionId,
  overrides: [...c.overrides],
  terminated_at: time(c.terminatedAt),
  on_terminate: c.onTerminate,
  next_installment_at: time(c.nextInstallmentAt),
  installments: s.installments.map((i) => ({
    index: i.index,
    at: new Date(i.at).toISOString(),
    until: new Date(i.until).toISOString(),
    amount: formatAmount(i.amount),
    status: i.status,
    grant_id: i.grant?.id ?? null,
    expires_at: time(i.grant?.expiresAt ?? null),
    remaining: formatAmount(i.grant?.remaining ?? 0n),
    ...usageView(i.usage),
  })),
  totals: {
    committed: formatAmount(s.totals.committed),
    issued: formatAmount(s.totals.issued),
    remaining: formatAmount(s.totals.remaining),
    forgone: formatAmount(s.totals.forgone),
    ...usageView(s.totals),
  },
  created_at: new Date(c.createdAt).toISOString(),
});

/** Terms to a contract's wire view: the record and its statement, read after the write. */
async function contractReply(
  ctx: { contracts: Contracts; store: Store },
  tenantId: string,
  c: ContractRecord,
) {
  return contractView(c, await ctx.contracts.statement(tenantId, c, ctx.store.db), ctx.store.now(tenantId));
}

const scheduleFrom = (w: Static<typeof ScheduleWire> | undefined): InstallmentSchedule | undefined => {
  if (w === undefined) return undefined;
  if (w.kind === "upfront") return { kind: "upfront" };
  if (!w.interval)
    throw new ApiError("invalid_argument", "schedule.interval is required for installments.", {
      details: { field: "schedule.interval" },
    });
  return { kind: "installments", interval: w.interval };
};

/** The contract endpoints, appended to the others. */
export const CONTRACT_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/contracts",
    operationId: "createContract",
    tag: "Contracts",
    summary: "Sign a contract",
    description:
      "Committed credits over a term, granted into the customer's pool wallet upfront or in installments (each exactly once, at its time, by the scheduler or the test clock), at the negotiated credit price (each grant's cost basis), expiring by the expiry policy (default: rolling 12 months from each grant). When the term starts the contract's rate card terms become the customer's pricing over the term: the card, the version in force at signing pinned when allow_rate_card_upgrades is false (no_rate_card when none is), and the override lines, which together rate the events whose own time is inside the term, late ones included, even after a renewal changed the card or pin; the card and pin also become the customer's base pricing, which prices events after the term (without the override lines). Refused, changing nothing, when the term overlaps another contract of the customer (already_exists), starts in the past, ends before it starts, or the installment interval is longer than the term (invalid_argument).",
    access: "secret",
    body: ContractCreate,
    response: ContractView,
    status: 201,
    errors: [
      "not_found",
      "invalid_argument",
      "invalid_amount",
      "already_exists",
      "invalid_rate_card",
      "no_rate_card",
    ],
    handle: async ({ contracts, store, tx, tenantId, body }) => {
      const c = must(
        await contracts.create(tx, tenantId, {
          customerId: body.customer_id,
          startsAt:
            body.starts_at === undefined ? store.now(tenantId) : timestamp(body.starts_at, "starts_at"),
          endsAt: timestamp(body.ends_at, "ends_at"),
          commitment: amount(body.commitment, "commitment", true),
          ...(body.schedule ? { schedule: scheduleFrom(body.schedule)! } : {}),
          creditPrice: {
            amount: amount(body.credit_price.amount, "credit_price.amount", true),
            currency: body.credit_price.currency,
          },
          ...(body.expiry ? { expiry: expiryFrom(body.expiry)! } : {}),
          ...(body.allow_rate_card_upgrades === undefined
            ? {}
            : { allowRateCardUpgrades: body.allow_rate_card_upgrades }),
          rateCardId: body.rate_card_id ?? null,
          overrides: (body.overrides ?? []) as RateLineInput[],
        }),
      );
      return created(contractView(c, await contracts.statement(tenantId, c, tx), store.now(tenantId)));
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/contracts",
    operationId: "listContracts",
    tag: "Contracts",
    summary: "List a customer's contracts",
    description: "Oldest first, each with its installments and what became of their credits.",
    access: "read",
    params: S.IdParam("cus", "customer"),
    response: S.ListOf(ContractView),
    errors: ["not_found"],
    handle: async (ctx) => {
      const { contracts, store, tenantId, key, params } = ctx;
      await customerInPath(store, tenantId, key, params.id);
      const data = [];
      for (const c of await contracts.list(tenantId, params.id))
        data.push(await contractReply(ctx, tenantId, c));
      return okReply({ object: "list", data, next_cursor: null });
    },
  }),
  route({
    method: "GET",
    url: "/v1/contracts/:id",
    operationId: "getContract",
    tag: "Contracts",
    summary: "Get a contract and its statement",
    description:
      "The terms and every installment: when it is granted, its amount and status, its grant, and how much of it was used, expired or voided; with totals.",
    access: "read",
    params: S.IdParam("ctr", "contract"),
    response: ContractView,
    errors: ["not_found"],
    handle: async (ctx) => {
      const c = await ctx.contracts.get(ctx.tenantId, ctx.params.id);
      if (!c) throw notFound("contract", ctx.params.id);
      visible(ctx.key, c.customerId, "contract", ctx.params.id);
      return okReply(await contractReply(ctx, ctx.tenantId, c));
    },
  }),
  route({
    method: "POST",
    url: "/v1/contracts/:id/terminate",
    operationId: "terminateContract",
    tag: "Contracts",
    summary: "Terminate a contract early",
    description:
      "No installment due from now on is granted (installments already due are granted first). The credits already issued are kept to their own expiry (credits: keep, the default) or voided now (forfeit). The customer's base card and pinned version are left as they are; the contract's terms stop rating events timed from now on, which the base prices. invalid_argument once terminated or after the term's end.",
    access: "secret",
    params: S.IdParam("ctr", "contract"),
    body: ContractTerminate,
    response: ContractView,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ contracts, store, tx, tenantId, params, body }) => {
      const c = must(await contracts.terminate(tx, tenantId, params.id, body.credits ?? "keep"));
      return okReply(contractView(c, await contracts.statement(tenantId, c, tx), store.now(tenantId)));
    },
  }),
  route({
    method: "POST",
    url: "/v1/poc_allocations",
    operationId: "createPocAllocation",
    tag: "Contracts",
    summary: "Allocate proof-of-concept credits",
    description:
      "Free credits (source contract, cost basis 0) into the customer's pool wallet, usable from starts_at (now by default, never in the past) and expiring at ends_at (at most 366 days later), carrying the list value they stand for; its views show what was used and its list value. Standalone per customer: before a contract, during one, or without any.",
    access: "secret",
    body: PocCreate,
    response: PocView,
    status: 201,
    errors: ["not_found", "invalid_argument", "invalid_amount"],
    handle: async ({ contracts, store, tx, tenantId, body }) => {
      const p = must(
        await contracts.createPoc(tx, tenantId, {
          customerId: body.customer_id,
          amount: amount(body.amount, "amount"),
          listValue: {
            amount: amount(body.list_value.amount, "list_value.amount", true),
            currency: body.list_value.currency,
          },
          startsAt: body.starts_at === undefined ? null : timestamp(body.starts_at, "starts_at"),
          endsAt: timestamp(body.ends_at, "ends_at"),
          scope: body.scope ?? null,
        }),
      );
      return created(await pocReply({ contracts, store }, tenantId, p, tx));
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/poc_allocations",
    operationId: "listPocAllocations",
    tag: "Contracts",
    summary: "List a customer's proof-of-concept allocations",
    description:
      "Oldest first, each with what was used of it and the list value of that use: a statement's lines.",
    access: "read",
    params: S.IdParam("cus", "customer"),
    response: S.ListOf(PocView),
    errors: ["not_found"],
    handle: async (ctx) => {
      const { contracts, store, tenantId, key, params } = ctx;
      await customerInPath(store, tenantId, key, params.id);
      const data = [];
      for (const p of await contracts.listPocs(tenantId, params.id))
        data.push(await pocReply(ctx, tenantId, p));
      return okReply({ object: "list", data, next_cursor: null });
    },
  }),
  route({
    method: "GET",
    url: "/v1/poc_allocations/:id",
    operationId: "getPocAllocation",
    tag: "Contracts",
    summary: "Get a proof-of-concept allocation",
    access: "read",
    params: S.IdParam("poc", "proof-of-concept allocation"),
    response: PocView,
    errors: ["not_found"],
    handle: async (ctx) => {
      const p = await ctx.contracts.getPoc(ctx.tenantId, ctx.params.id);
      if (!p) throw notFound("proof-of-concept allocation", ctx.params.id);
      visible(ctx.key, p.customerId, "proof-of-concept allocation", ctx.params.id);
      return okReply(await pocReply(ctx, ctx.tenantId, p));
    },
  }),
];

async function pocReply(
  ctx: { contracts: Contracts; store: Store },
  tenantId: string,
  p: PocRecord,
  ex: SqlExecutor = ctx.store.db,
) {
  const now = ctx.store.now(tenantId);
  const grant = await ctx.store.getGrant(tenantId, p.grantId, ex);
  const u = (await ctx.contracts.usage(tenantId, [p.grantId], ex)).get(p.grantId) ?? {
    used: 0n,
    expired: 0n,
    voided: 0n,
  };
  const used = listValueOf(p, u.used < 0n ? 0n : u.used > p.amount ? p.amount : u.used);
  return {
    object: "poc_allocation" as const,
    id: p.id,
    customer_id: p.customerId,
    status:
      now < p.startsAt ? ("scheduled" as const) : now >= p.endsAt ? ("ended" as const) : ("active" as const),
    amount: formatAmount(p.amount),
    list_value: { amount: formatAmount(p.listValue.amount), currency: p.listValue.currency },
    starts_at: new Date(p.startsAt).toISOString(),
    ends_at: new Date(p.endsAt).toISOString(),
    scope: p.scope === null ? null : [...p.scope],
    grant_id: p.grantId,
    remaining: formatAmount(grant && grantStatus(grant, now) !== "expired" ? grant.remaining : 0n),
    ...usageView(u),
    used_list_value: { amount: formatAmount(used.amount), currency: used.currency },
    created_at: new Date(p.createdAt).toISOString(),
  };
}
