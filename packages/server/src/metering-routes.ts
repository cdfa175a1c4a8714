import { checkTermsWindow, formatAmount, type RateCardInput } from "@drawdown/core";
import {
  type ChargeRecord,
  type CustomerPricing,
  type EventDetail,
  extraRevenueFrom,
  type IngestResult,
  type RateCard,
  type RateCardVersion,
  type Row,
} from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import { MAX_BATCH_EVENTS, parseEvent } from "./events.js";
import { MONEY_JOIN, MONEY_PRESENT, MONEY_SUMS, MoneyFields, moneyView } from "./money.js";
import { must, okReply, optionalTimestamp, type Route, route, timestamp } from "./routes.js";
import * as S from "./schemas.js";

/**
 * Metering and rating endpoints: usage events (single and batch, native or CloudEvents),
 * price explanations, rate cards and their versions, customer pricing, cost tables, and the
 * margin reports. (Overage policies: overage-routes.ts.)
 */

const Match = Type.Record(
  Type.String({ pattern: "^[a-z][a-z0-9_]{0,63}$" }),
  Type.String({ minLength: 1, maxLength: 100 }),
  {
    // A Record checks only the keys that match its pattern; this refuses the others.
    additionalProperties: false,
    maxProperties: 10,
    description: "Dimension filters: every one must equal the event's dimension.",
  },
);
const Decimal = (description: string) => Type.String({ maxLength: 40, description });

export const RateLineWire = Type.Object(
  {
    id: Type.String({
      minLength: 1,
      maxLength: 64,
      description: "Names the line; volume tiers count per line id.",
    }),
    action: Type.String({ maxLength: 100, description: 'An action or "prefix.*".' }),
    match: Type.Optional(Match),
    quantity: Type.String({ maxLength: 64, description: 'The quantity priced, e.g. "output_tokens".' }),
    rate: Type.Optional(Decimal("Credits (or money, in a cost table) per `per` units; up to 12 decimals.")),
    per: Type.Optional(
      Type.String({ maxLength: 10, description: 'A power of ten: "1" (default), "1000", "1000000".' }),
    ),
    tiers: Type.Optional(
      Type.Array(
        Type.Object(
          {
            up_to: Type.Union([Decimal("Cumulative quantity in the period"), Type.Null()]),
            rate: Decimal("Rate"),
          },
          S.strict,
        ),
        {
          maxItems: 20,
          description:
            "Graduated by the customer's volume in the calendar month; the last tier has up_to null.",
        },
      ),
    ),
    minimum: Type.Optional(
      Decimal("The least this line charges an event that has its quantity, in credits."),
    ),
    free: Type.Optional(Type.Boolean({ description: "A free action: rated and recorded at zero." })),
  },
  { ...S.strict, title: "RateLine" },
);

const RateCardContentWire = {
  lines: Type.Array(RateLineWire, { maxItems: 1000 }),
  multipliers: Type.Optional(
    Type.Array(
      Type.Object(
        {
          dimension: Type.String({ maxLength: 64 }),
          value: Type.String({ maxLength: 100 }),
          factor: Decimal('e.g. "6" or "1.5"'),
        },
        S.strict,
      ),
      {
        maxItems: 50,
        description: "Each matching dimension value multiplies the event's charge.",
      },
    ),
  ),
  non_billable: Type.Optional(
    Type.Array(
      Type.Object(
        {
          action: Type.String({ maxLength: 100 }),
          match: Type.Optional(Match),
          reason: Type.String({ minLength: 1, maxLength: 200 }),
        },
        S.strict,
      ),
      {
        maxItems: 100,
        description: "Events that match are recorded at zero with the reason.",
      },
    ),
  ),
};

export const RateCardVersionCreate = Type.Object(
  {
    effective_at: Type.Optional(S.Timestamp("When it takes effect: now (default) or later.")),
    ...RateCardContentWire,
  },
  { ...S.strict, title: "RateCardVersionCreate" },
);

export const ChargeView = Type.Object(
  {
    outcome: Type.Union([Type.Literal("charged"), Type.Literal("zero"), Type.Literal("unpaid")]),
    credits: S.Amount("The rated charge, rounded once."),
    drawn: S.Amount("Drawn from grants."),
    overdraft: S.Amount("Owed under a soft cap."),
    unpaid: S.Amount("Refused by the hard cap or the floor; recorded, charged to nobody."),
    reason: Type.Union([Type.String(), Type.Null()], {
      description: "failed, non_billable: …, free, insufficient_credits.",
    }),
    wallet_id: Type.String(),
    rate_card_version_id: Type.String(),
    transaction_id: Type.Union([Type.String(), Type.Null()]),
  },
  { title: "Charge" },
);

export const EventResult = Type.Object(
  {
    id: Type.String(),
    status: Type.Union([Type.Literal("accepted"), Type.Literal("duplicate"), Type.Literal("rejected")]),
    charge: Type.Optional(ChargeView),
    code: Type.Optional(Type.String()),
    message: Type.Optional(Type.String()),
  },
  { title: "EventResult" },
);

const chargeView = (c: ChargeRecord) => ({
  outcome: c.outcome,
  credits: formatAmount(c.credits),
  drawn: formatAmount(c.drawn),
  overdraft: formatAmount(c.overdraft),
  unpaid: formatAmount(c.unpaid),
  reason: c.reason,
  wallet_id: c.walletId,
  rate_card_version_id: c.rateCardVersionId,
  transaction_id: c.transactionId,
});

const resultView = (r: IngestResult) =>
  r.status === "rejected"
    ? { id: r.id, status: r.status, code: r.code, message: r.message }
    : { id: r.id, status: r.status, charge: chargeView(r.charge) };

const versionView = (v: RateCardVersion) => ({
  object: "rate_card_version" as const,
  id: v.id,
  rate_card_id: v.rateCardId,
  version: v.version,
  effective_at: new Date(v.effectiveAt).toISOString(),
  created_at: new Date(v.createdAt).toISOString(),
  ...v.input,
});

const cardView = (c: RateCard, now: number) => {
  const current = [...c.versions].reverse().find((v) => v.effectiveAt <= now) ?? null;
  return {
    object: "rate_card" as const,
    id: c.id,
    name: c.name,
    is_default: c.isDefault,
    created_at: new Date(c.createdAt).toISOString(),
    current_version_id: current?.id ?? null,
    versions: c.versions.map(versionView),
  };
};

export const VersionView = Type.Object(
  {
    object: Type.Literal("rate_card_version"),
    id: Type.String(),
    rate_card_id: Type.String(),
    version: Type.Integer(),
    effective_at: Type.String(),
    created_at: Type.String(),
    ...RateCardContentWire,
  },
  { title: "RateCardVersion" },
);
export const CardView = Type.Object(
  {
    object: Type.Literal("rate_card"),
    id: Type.String(),
    name: Type.String(),
    is_default: Type.Boolean(),
    created_at: Type.String(),
    current_version_id: Type.Union([Type.String(), Type.Null()]),
    versions: Type.Array(VersionView),
  },
  { title: "RateCard" },
);

const timestampOrNull = (text: string | undefined, field: string): number | null =>
  text === undefined ? null : timestamp(text, field);

export const CustomerPricingSet = Type.Object(
  {
    rate_card_id: Type.Optional(Type.Union([S.Id("rcd", "The card that prices the window."), Type.Null()])),
    pinned_version_id: Type.Optional(Type.Union([S.Id("rcv", "A version to pin."), Type.Null()])),
    overrides: Type.Optional(Type.Array(RateLineWire, { maxItems: 200 })),
    overrides_from: Type.Optional(
      Type.Union([
        S.Timestamp(
          "The first instant the card, pin and override lines rate events (by each event's own time); absent or null: since always.",
        ),
        Type.Null(),
      ]),
    ),
    overrides_until: Type.Optional(
      Type.Union([
        S.Timestamp("The first instant they no longer do, after overrides_from; absent or null: for ever."),
        Type.Null(),
      ]),
    ),
  },
  { ...S.strict, title: "CustomerPricing" },
);

const isoOrNull = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());
const NullableTime = (description: string) => Type.Union([Type.String({ description }), Type.Null()]);

const NullableId = (description: string) => Type.Union([Type.String({ description }), Type.Null()]);

/** One entry of a customer's pricing history on the wire. */
export const OverrideTermsView = Type.Object(
  {
    source: Type.String({ description: 'The contract that set these terms (its id), or "manual".' }),
    overrides_from: NullableTime("The first instant they rate events; null: since always."),
    overrides_until: NullableTime("The first instant they no longer do; null: for ever."),
    rate_card_id: NullableId("The card that prices events of this window; null: the tenant's default card."),
    pinned_version_id: NullableId(
      "The version of that card pinned for this window; null: the version in force at each event's time.",
    ),
    overrides: Type.Array(RateLineWire, { description: "The window's override lines; may be none." }),
  },
  { title: "OverrideTerms" },
);

/** What prices events timed outside every window of the history. */
export const BasePricingView = Type.Object(
  {
    rate_card_id: NullableId("The card; null: the tenant's default card."),
    pinned_version_id: NullableId("A pinned version of it; null: the version in force at each event's time."),
  },
  { title: "BasePricing" },
);

export const CustomerPricingView = Type.Object(
  {
    object: Type.Literal("customer_pricing"),
    customer_id: Type.String(),
    rate_card_id: NullableId("The card just set, as set; null: the default card."),
    pinned_version_id: NullableId("The version just pinned, as set; null: following."),
    overrides: Type.Array(RateLineWire, { description: "The override lines just set, as sent." }),
    overrides_from: NullableTime("Their window's start, as set; null: open."),
    overrides_until: NullableTime("Their window's end, as set; null: open."),
    base: BasePricingView,
    override_history: Type.Array(OverrideTermsView, {
      description:
        "The customer's pricing history, oldest first: every window's card, pin and override lines; windows never overlap.",
    }),
  },
  { title: "CustomerPricingView" },
);

/** The terms a request set, echoed as set. */
interface PricingSet {
  readonly rateCardId: string | null;
  readonly pinnedVersionId: string | null;
  readonly overrides: readonly unknown[];
  readonly from: number | null;
  readonly until: number | null;
}

function customerPricingView(p: CustomerPricing, set: PricingSet): Static<typeof CustomerPricingView> {
  return {
    object: "customer_pricing",
    customer_id: p.customerId,
    rate_card_id: set.rateCardId,
    pinned_version_id: set.pinnedVersionId,
    overrides: set.overrides as Static<typeof RateLineWire>[],
    overrides_from: isoOrNull(set.from),
    overrides_until: isoOrNull(set.until),
    base: { rate_card_id: p.rateCardId, pinned_version_id: p.pinnedVersionId },
    override_history: p.overrideHistory.map((t) => ({
      source: t.source,
      overrides_from: isoOrNull(t.from),
      overrides_until: isoOrNull(t.until),
      rate_card_id: t.rateCardId,
      pinned_version_id: t.pinnedVersionId,
      overrides: t.input as Static<typeof RateLineWire>[],
    })),
  };
}

export const MarginRow = Type.Object({
  day: Type.String(),
  key: Type.Union([Type.String(), Type.Null()]),
  events: Type.Integer(),
  credits: S.Amount("Credits charged (drawn plus overdraft)."),
  unpaid: S.Amount("Charges refused by a cap, recorded unpaid."),
  ...MoneyFields,
});

/** The metering endpoints, appended to the ledger's. */
export const METERING_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/events",
    operationId: "ingestEvent",
    tag: "Usage",
    summary: "Record one usage event",
    description:
      "Rates the event by the rate card version in force at its time and draws its charge from the subject's wallet (a member's own, then the pool) in the same transaction. Deduplicated forever by id: a retry answers 200 with the first result. Accepts the native shape or CloudEvents 1.0 JSON. Late events are accepted for 7 days; events more than 5 minutes in the future are refused.",
    access: "secret",
    idempotencyKey: false,
    body: Type.Unknown({
      description:
        "A UsageEvent, or a CloudEvent whose type is the action and whose data holds customer_id and quantities.",
    }),
    response: EventResult,
    status: 201,
    duplicateStatus: 200,
    errors: [
      "invalid_event",
      "invalid_amount",
      "not_found",
      "unknown_action",
      "event_too_old",
      "event_in_future",
      "event_id_reused",
      "no_rate_card",
    ],
    handle: async ({ writer, store, tenantId, body }) => {
      const parsed = parseEvent(body, store.now(tenantId));
      if (!parsed.ok) throw new ApiError(parsed.error.code, parsed.error.message);
      const [result] = await writer.submit(tenantId, [parsed.value]);
      if (!result) throw new Error("the writer answered no result");
      if (result.status === "rejected")
        throw new ApiError(result.code as never, result.message, { details: { event_id: result.id } });
      return { status: result.status === "duplicate" ? 200 : 201, body: resultView(result) };
    },
  }),
  route({
    method: "POST",
    url: "/v1/events/batch",
    operationId: "ingestEvents",
    tag: "Usage",
    summary: "Record a batch of usage events",
    description: `Up to ${MAX_BATCH_EVENTS.toLocaleString("en")} events (8 MiB), native or CloudEvents, each answered on its own: accepted (with its charge), duplicate (the first result) or rejected (a code and a message). One bad event does not sink the batch. Send {"events": [...]}, or a bare CloudEvents batch array.`,
    access: "secret",
    idempotencyKey: false,
    bodyLimit: 8 * 1024 * 1024,
    body: Type.Unknown({
      description:
        '{"events": [UsageEvent | CloudEvent, ...]} or a JSON array (application/cloudevents-batch+json).',
    }),
    response: Type.Object({
      object: Type.Literal("event_batch"),
      accepted: Type.Integer(),
      duplicates: Type.Integer(),
      rejected: Type.Integer(),
      credits: S.Amount(
        "Credits charged by the accepted events (drawn plus overdraft; unpaid charges excluded).",
      ),
      results: Type.Array(EventResult),
    }),
    errors: ["invalid_event"],
    handle: async ({ writer, store, tenantId, body }) => {
      const list = Array.isArray(body)
        ? body
        : body !== null && typeof body === "object" && "events" in body
          ? (body as { events: unknown }).events
          : null;
      if (!Array.isArray(list))
        throw new ApiError("validation_failed", 'Send {"events": [...]} or a JSON array of events.');
      const unknown = Array.isArray(body) ? [] : Object.keys(body as object).filter((k) => k !== "events");
      if (unknown.length > 0)
        throw new ApiError("validation_failed", `body/${unknown[0]}: unknown field "${unknown[0]}"`, {
          errors: unknown.map((k) => ({ path: `body/${k}`, message: `unknown field "${k}"` })),
        });
      if (list.length === 0 || list.length > MAX_BATCH_EVENTS) {
        throw new ApiError(
          "validation_failed",
          `A batch holds 1 to ${MAX_BATCH_EVENTS} events; this one has ${list.length}.`,
        );
      }
      const now = store.now(tenantId);
      const results: (ReturnType<typeof resultView> | null)[] = [];
      const valid: { index: number; event: ReturnType<typeof parseEvent> & { ok: true } }[] = [];
      list.forEach((raw, index) => {
        const p = parseEvent(raw, now);
        if (p.ok) {
          valid.push({ index, event: p });
          results.push(null);
        } else {
          const id =
            raw !== null && typeof raw === "object" && typeof (raw as { id?: unknown }).id === "string"
              ? (raw as { id: string }).id
              : "";
          results.push({ id, status: "rejected", code: p.error.code, message: p.error.message });
        }
      });
      const written =
        valid.length > 0
          ? await writer.submit(
              tenantId,
              valid.map((v) => v.event.value),
            )
          : [];
      let credits = 0n;
      written.forEach((r, k) => {
        results[valid[k]!.index] = resultView(r);
        if (r.status === "accepted") credits += r.charge.drawn + r.charge.overdraft;
      });
      const final = results.map((r) => r!);
      return okReply({
        object: "event_batch",
        accepted: final.filter((r) => r.status === "accepted").length,
        duplicates: final.filter((r) => r.status === "duplicate").length,
        rejected: final.filter((r) => r.status === "rejected").length,
        credits: formatAmount(credits),
        results: final,
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/events/:id",
    operationId: "getEvent",
    tag: "Usage",
    summary: "Explain an event's charge",
    description:
      "The event as recorded and why it cost what it cost: the rate card version, each line with its quantity, tier pieces and rates, the multiplier, exact credits before the one rounding, the grants drawn, its cost and the revenue value of the credits.",
    access: "read",
    params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) }, S.strict),
    response: Type.Object(
      { object: Type.Literal("event") },
      { additionalProperties: true, title: "EventExplanation" },
    ),
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const { rows } = await store.db.query(
        "SELECT * FROM usage_events WHERE tenant_id = $1 AND event_id = $2",
        [tenantId, params.id],
      );
      const r = rows[0];
      if (!r || (key.customerId !== null && key.customerId !== r.customer_id))
        throw new ApiError("not_found", `No event ${params.id}.`);
      const d = (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as EventDetail;
      const units = (v: unknown) => formatAmount(BigInt(String(v)));
      // Revenue in each currency drawn (the first in `revenue`), cost in its own; never added across them.
      const revenue = BigInt(String(r.revenue));
      const cost = r.cost === null ? null : BigInt(String(r.cost));
      return okReply({
        object: "event",
        id: r.event_id,
        customer_id: r.customer_id,
        subject_id: d.subject_id,
        action: r.action,
        dimensions: d.dimensions,
        quantities: d.quantities,
        time: new Date(r.time as string).toISOString(),
        status: d.status,
        run_id: r.run_id,
        received_at: d.received_at,
        charge: {
          outcome: r.outcome,
          credits: units(r.credits),
          drawn: units(d.drawn),
          overdraft: units(d.overdraft),
          unpaid: units(r.unpaid),
          reason: d.reason,
          wallet_id: d.wallet_id,
          rate_card_version_id: d.rate_card_version_id,
          transaction_id: d.transaction_id,
        },
        // Events recorded before explanations named the overrides' source have none: null.
        explanation: { ...d.explanation, override_source: d.explanation.override_source ?? null },
        cost:
          cost === null
            ? null
            : {
                amount: formatAmount(cost),
                currency: d.cost_currency,
                reported: d.reported_cost,
                cost_table_version_id: d.cost_version_id,
              },
        revenue: { amount: formatAmount(revenue), currency: d.revenue_currency },
        ...eventMoney(r, d, revenue, cost),
      });
    },
  }),
  route({
    method: "POST",
    url: "/v1/rate_cards",
    operationId: "createRateCard",
    tag: "Rate cards",
    summary: "Create a rate card",
    description: "The tenant's first card is its default: customers without their own pricing follow it.",
    access: "secret",
    body: Type.Object(
      { name: Type.String({ minLength: 1, maxLength: 100 }) },
      { ...S.strict, title: "RateCardCreate" },
    ),
    response: CardView,
    status: 201,
    errors: ["already_exists"],
    handle: async ({ metering, tx, tenantId, body, store }) => ({
      status: 201,
      body: cardView(must(await metering.createRateCard(tx, tenantId, body.name)), store.now(tenantId)),
    }),
  }),
  route({
    method: "GET",
    url: "/v1/rate_cards",
    operationId: "listRateCards",
    tag: "Rate cards",
    summary: "List rate cards with their versions",
    access: "secret",
    response: S.ListOf(CardView),
    errors: [],
    handle: async ({ metering, store, tenantId }) => {
      const catalog = await metering.catalog(store.db, tenantId);
      return okReply({
        object: "list",
        data: [...catalog.cards.values()].map((c) => cardView(c, store.now(tenantId))),
        next_cursor: null,
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/rate_cards/:id",
    operationId: "getRateCard",
    tag: "Rate cards",
    summary: "Get a rate card with its versions",
    access: "secret",
    params: S.IdParam("rcd", "rate card"),
    response: CardView,
    errors: ["not_found"],
    handle: async ({ metering, store, tenantId, params }) => {
      const card = (await metering.catalog(store.db, tenantId)).cards.get(params.id);
      if (!card) throw new ApiError("not_found", `No rate card ${params.id}.`);
      return okReply(cardView(card, store.now(tenantId)));
    },
  }),
  route({
    method: "POST",
    url: "/v1/rate_cards/:id/versions",
    operationId: "publishRateCardVersion",
    tag: "Rate cards",
    summary: "Publish a rate card version",
    description:
      "A new, immutable version in force from effective_at (now or later, never backdated) until the next one: a price change without a deploy. Refused when it would not start after the latest version (rate_card_overlap) or when two lines could price the same quantity of one event with equal specificity (invalid_rate_card).",
    access: "secret",
    params: S.IdParam("rcd", "rate card"),
    body: RateCardVersionCreate,
    response: VersionView,
    status: 201,
    errors: ["not_found", "invalid_rate_card", "rate_card_overlap"],
    handle: async ({ metering, tx, tenantId, params, body }) => {
      const { effective_at, ...content } = body;
      const v = must(
        await metering.publishRateCardVersion(
          tx,
          tenantId,
          params.id,
          timestampOrNull(effective_at, "effective_at"),
          content as RateCardInput,
        ),
      );
      return { status: 201, body: versionView(v) };
    },
  }),
  route({
    method: "POST",
    url: "/v1/customers/:id/pricing",
    operationId: "setCustomerPricing",
    tag: "Rate cards",
    summary: "Set a customer's contract pricing",
    description:
      "The customer's pricing for events whose own time is in [overrides_from, overrides_until) (absent or null bounds: open): which card prices them (default: the tenant's default card), a pinned version of it (used whatever the event's time) or null to follow the version in force, and override lines that take precedence over the card's. The customer's pricing history keeps every other window: the new terms replace exactly the part of it their window covers (an entry straddling it is cut short or split around it); without a window they replace it whole and also become the base, which prices events outside every window. Each event is rated by the card, pin and lines of the entry whose window holds its own time, else by the base. A window that does not end after it starts, or a bound that is not RFC 3339, is invalid_argument; an unknown card, or a version not of the card, is not_found; either way nothing changes.",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    body: CustomerPricingSet,
    response: CustomerPricingView,
    errors: ["not_found", "invalid_rate_card", "invalid_argument"],
    handle: async ({ metering, tx, tenantId, params, body }) => {
      const window = {
        from: optionalTimestamp(body.overrides_from, "overrides_from") ?? null,
        until: optionalTimestamp(body.overrides_until, "overrides_until") ?? null,
      };
      const checked = checkTermsWindow(window);
      if (!checked.ok) {
        const path = String(checked.error.details?.field ?? "overrides_until");
        throw new ApiError("invalid_argument", checked.error.message, {
          errors: [{ path, message: checked.error.message }],
        });
      }
      const set = {
        rateCardId: body.rate_card_id ?? null,
        pinnedVersionId: body.pinned_version_id ?? null,
        overrides: (body.overrides ?? []) as never,
      };
      const p = must(await metering.setCustomerPricing(tx, tenantId, params.id, { ...set, window }));
      return okReply(customerPricingView(p, { ...set, ...window }));
    },
  }),
  route({
    method: "POST",
    url: "/v1/cost_tables",
    operationId: "publishCostTable",
    tag: "Cost and margin",
    summary: "Publish a cost table version",
    description:
      "Cost of goods sold per unit of each quantity, by action and dimensions (input and output tokens per model, tool calls, vector reads, orchestration), in one currency, effective-dated like rate cards.",
    access: "secret",
    body: Type.Object(
      {
        effective_at: Type.Optional(S.Timestamp("When it takes effect: now (default) or later.")),
        currency: Type.String({ pattern: "^[A-Z]{3}$" }),
        lines: Type.Array(RateLineWire, { maxItems: 1000 }),
      },
      { ...S.strict, title: "CostTableCreate" },
    ),
    response: Type.Object({ object: Type.Literal("cost_table_version") }, { additionalProperties: true }),
    status: 201,
    errors: ["invalid_rate_card", "rate_card_overlap"],
    handle: async ({ metering, tx, tenantId, body }) => {
      const v = must(
        await metering.publishCostTable(
          tx,
          tenantId,
          timestampOrNull(body.effective_at, "effective_at"),
          body.currency,
          { lines: body.lines as never },
        ),
      );
      return {
        status: 201,
        body: {
          object: "cost_table_version",
          id: v.id,
          version: v.version,
          effective_at: new Date(v.effectiveAt).toISOString(),
          currency: v.currency,
          lines: v.input.lines,
        },
      };
    },
  }),
  route({
    method: "GET",
    url: "/v1/reports/margin",
    operationId: "marginReport",
    tag: "Cost and margin",
    summary: "Margin by day",
    description:
      "Per day (UTC) and per customer, action, model or run: events, credits charged, revenue (the cost basis of the credits consumed), cost and margin, per currency (`amounts`), and as single figures when there is one currency.",
    access: "secret",
    query: Type.Object(
      {
        group_by: Type.Union(["customer", "action", "model", "run"].map((g) => Type.Literal(g))),
        from: Type.Optional(S.Timestamp("Events at or after.")),
        to: Type.Optional(S.Timestamp("Events before.")),
        customer_id: Type.Optional(S.Id("cus", "Only this customer.")),
      },
      S.strict,
    ),
    response: Type.Object({
      object: Type.Literal("margin_report"),
      group_by: Type.String(),
      rows: Type.Array(MarginRow),
    }),
    errors: ["invalid_argument"],
    handle: async ({ store, tenantId, query }) => {
      const column = {
        customer: "customer_id",
        action: "action",
        model: "model",
        run: "run_id",
      }[query.group_by as "customer" | "action" | "model" | "run"];
      const day = "to_char(date_trunc('day', e.time AT TIME ZONE 'UTC'), 'YYYY-MM-DD')";
      const where = `e.tenant_id = $1 AND ($2::timestamptz IS NULL OR e.time >= $2) AND ($3::timestamptz IS NULL OR e.time < $3)
           AND ($4::text IS NULL OR e.customer_id = $4)`;
      const params = [
        tenantId,
        query.from === undefined ? null : new Date(timestampOrNull(query.from, "from")!).toISOString(),
        query.to === undefined ? null : new Date(timestampOrNull(query.to, "to")!).toISOString(),
        query.customer_id ?? null,
      ];
      const [counts, money] = await Promise.all([
        store.db.query(
          `SELECT ${day} AS day, e.${column} AS key, count(*)::int AS events,
             sum(e.charged)::text AS credits, sum(e.unpaid)::text AS unpaid
           FROM usage_events e WHERE ${where} GROUP BY 1, 2 ORDER BY 1, 2`,
          params,
        ),
        store.db.query(
          `SELECT ${day} AS day, e.${column} AS key, ${MONEY_SUMS}
           FROM usage_events e ${MONEY_JOIN} WHERE ${where} AND ${MONEY_PRESENT} GROUP BY 1, 2, 3`,
          params,
        ),
      ]);
      const moneyOf = new Map<string, Row[]>();
      for (const r of money.rows) {
        const k = `${r.day}\n${r.key ?? "\u0000"}`;
        moneyOf.set(k, [...(moneyOf.get(k) ?? []), r]);
      }
      return okReply({
        object: "margin_report",
        group_by: query.group_by,
        rows: counts.rows.map((r) => ({
          day: String(r.day),
          key: r.key === null ? null : String(r.key),
          events: Number(r.events),
          credits: formatAmount(BigInt(String(r.credits))),
          unpaid: formatAmount(BigInt(String(r.unpaid))),
          ...moneyView(moneyOf.get(`${r.day}\n${r.key ?? "\u0000"}`) ?? []),
        })),
      });
    },
  }),
];

/** The public view of a tenant's default rate card: consumption rates by action and model, as customers should see them. */
export function publicRateCard(card: RateCard | undefined, now: number) {
  if (!card) return null;
  const current = [...card.versions].reverse().find((v) => v.effectiveAt <= now) ?? null;
  const next = card.versions.find((v) => v.effectiveAt > now) ?? null;
  const describe = (v: RateCardVersion) => ({
    version: v.version,
    effective_at: new Date(v.effectiveAt).toISOString(),
    rates: v.input.lines.map((l) => ({
      action: l.action,
      model: l.match?.model ?? null,
      match: l.match ?? {},
      quantity: l.quantity,
      rate: l.rate ?? null,
      per: l.per ?? "1",
      tiers: l.tiers ?? null,
      minimum: l.minimum ?? null,
      free: l.free ?? false,
    })),
    multipliers: v.input.multipliers ?? [],
  });
  return {
    object: "public_rate_card",
    name: card.name,
    current: current ? describe(current) : null,
    upcoming: next ? describe(next) : null,
  };
}

/**
 * An explained event's money per currency: revenue in each currency of the paid grants drawn,
 * cost in its table's; `margin` (revenue − cost) only when the cost is known and everything is
 * in one currency, else null and `amounts` says it per currency.
 */
function eventMoney(r: Row, d: EventDetail, revenue: bigint, cost: bigint | null) {
  const money = new Map<string | null, { revenue: bigint; cost: bigint }>();
  const add = (currency: string | null, m: { revenue?: bigint; cost?: bigint }) => {
    const now = money.get(currency) ?? { revenue: 0n, cost: 0n };
    money.set(currency, { revenue: now.revenue + (m.revenue ?? 0n), cost: now.cost + (m.cost ?? 0n) });
  };
  if (revenue !== 0n) add(d.revenue_currency, { revenue });
  for (const m of extraRevenueFrom(r.revenue_extra)) add(m.currency, { revenue: m.amount });
  if (cost !== null && cost !== 0n) add(d.cost_currency, { cost });
  const rows = [...money].map(([currency, m]) => ({ currency, revenue: m.revenue, cost: m.cost }));
  const view = moneyView(rows);
  return {
    margin: cost === null || view.margin === null ? null : view.margin,
    amounts: view.amounts,
  };
}
