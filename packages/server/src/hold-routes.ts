import {
  DECISION_REASONS,
  formatAmount,
  formatTimestamp,
  HOLD_LIMITS,
  type HoldStatus,
  parseDecimal,
  QUANTITY_SCALE,
} from "@drawdown/core";
import type { Estimate, HoldRecord, SettleEvent } from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import { parseEvent } from "./events.js";
import {
  amount,
  committed,
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
 * Authorize and holds: ask before expensive work (allow, deny or throttle, with the reason and
 * the available amount), optionally holding the estimate; then settle the hold with the actual
 * usage, void it, or let it expire. Plus `GET /v1/ping`, the bare endpoint benchmarks compare with.
 */

const Name = /^[a-z][a-z0-9_]{0,63}$/.source;

const Quantities = Type.Record(
  Type.String({ pattern: Name }),
  Type.Union([Type.String({ maxLength: 40 }), Type.Integer({ minimum: 0 })]),
  {
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 20,
    description: 'How much: {"output_tokens": 4000}. Non-negative; up to 9 decimals as strings.',
  },
);
const Dimensions = Type.Record(
  Type.String({ pattern: Name }),
  Type.String({ minLength: 1, maxLength: 200 }),
  {
    additionalProperties: false,
    maxProperties: 20,
    description: 'What it is: {"model": "gpt-4o"}; rate card lines match on these.',
  },
);
const ActionName = Type.String({
  pattern: "^[a-z0-9][a-z0-9_:.-]*$",
  maxLength: 100,
  description: 'What is about to be done: "agent.run".',
});

export const AuthorizeBody = Type.Object(
  {
    customer_id: S.Id("cus", "The customer who pays."),
    subject_id: Type.Optional(
      S.Id("sub", "The member, agent or workflow: a member with a wallet pays from it, then the pool."),
    ),
    action: ActionName,
    estimate: Type.Object(
      {
        credits: Type.Optional(S.Amount("The estimate in credits.")),
        quantities: Type.Optional(Quantities),
        dimensions: Type.Optional(Dimensions),
      },
      {
        ...S.strict,
        description:
          "Credits, or quantities (with dimensions) rated by the customer's rate card as an event of the action now would be.",
      },
    ),
    hold: Type.Optional(
      Type.Boolean({ description: "Place a hold for the estimate when allowed (default false)." }),
    ),
    hold_timeout_seconds: Type.Optional(
      Type.Integer({
        minimum: HOLD_LIMITS.timeoutMinSeconds,
        maximum: HOLD_LIMITS.timeoutMaxSeconds,
        description: `When the hold expires if not settled or voided (default ${HOLD_LIMITS.timeoutDefaultSeconds}).`,
      }),
    ),
  },
  { ...S.strict, title: "AuthorizeRequest" },
);

export const HoldView = Type.Object(
  {
    object: Type.Literal("hold"),
    id: Type.String(),
    customer_id: Type.String(),
    wallet_id: Type.String({ description: "The wallet that pays (a member's, or the customer's pool)." }),
    subject_id: Type.Union([Type.String(), Type.Null()]),
    action: Type.String(),
    amount: S.Amount("Credits held."),
    status: Type.Union(
      ["pending", "posted", "voided", "expired"].map((s) => Type.Literal(s)),
      { description: "pending, then exactly one of posted, voided or expired." },
    ),
    estimate: Type.Record(Type.String(), Type.Unknown(), {
      description: "The estimate as given, with its credits.",
    }),
    draws: Type.Array(
      Type.Object({
        wallet_id: Type.String(),
        grant_id: Type.Union([Type.String(), Type.Null()], {
          description: "The grant the credits came from; null: the soft cap's overdraft.",
        }),
        amount: S.Amount(),
      }),
      { description: "Where the held credits came from, in burn-down order." },
    ),
    created_at: Type.String(),
    expires_at: Type.String(),
    resolved_at: Type.Union([Type.String(), Type.Null()]),
    posted: S.Amount("Credits its settlement posted."),
    released: S.Amount("Credits given back by settle, void or expiry."),
    unpaid: S.Amount(
      "Usage beyond the hold that was charged to nobody (no overrun allowed, or past the floor).",
    ),
    transaction_id: Type.Union([Type.String(), Type.Null()], { description: "The `hold` transaction." }),
    resolve_transaction_id: Type.Union([Type.String(), Type.Null()], {
      description: "The `hold.settle` or `hold.release` transaction.",
    }),
  },
  { title: "Hold" },
);

export const AuthorizationView = Type.Object(
  {
    object: Type.Literal("authorization"),
    decision: Type.Union([Type.Literal("allow"), Type.Literal("deny"), Type.Literal("throttle")]),
    reason: Type.String({
      description: `${DECISION_REASONS.join(", ")} (below_throttle_level: the throttle overage policy; spend_cap_reached: a spend cap's room).`,
    }),
    available: S.Amount("What the wallet chain could pay for this action before this request."),
    estimate: S.Amount("The estimate in credits."),
    hold: Type.Union([HoldView, Type.Null()]),
    allowed_actions: Type.Union([Type.Array(Type.String()), Type.Null()], {
      description: "On throttle: the actions (or patterns) still allowed below the level; null otherwise.",
    }),
    fallback_action: Type.Union([Type.String(), Type.Null()], {
      description: "On throttle: the cheaper action to use instead, when the policy names one.",
    }),
    auto_top_up: Type.Union(
      [
        Type.Object({
          outcome: Type.String({
            description:
              "covered (bought, decided again), failed (declined, cap reached: auto_top_up_failed alert), none (nothing bought now).",
          }),
          purchase_ids: Type.Array(Type.String()),
          reason: Type.Union([Type.String(), Type.Null()]),
        }),
        Type.Null(),
      ],
      { description: "The auto top-up tried before a denial for lack of credits; null when none was tried." },
    ),
  },
  { title: "Authorization" },
);

export const SettleEventWire = Type.Object(
  {
    id: Type.String({
      minLength: 1,
      maxLength: 200,
      description: "Your id for the event; unique per tenant.",
    }),
    action: Type.Optional(ActionName),
    dimensions: Type.Optional(Dimensions),
    quantities: Quantities,
    status: Type.Optional(Type.Union([Type.Literal("succeeded"), Type.Literal("failed")])),
    time: Type.Optional(Type.String({ maxLength: 40 })),
    run_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    reported_cost: Type.Optional(Type.String({ maxLength: 40 })),
  },
  { ...S.strict, title: "SettleEvent" },
);

const SettleBody = Type.Object(
  {
    events: Type.Optional(
      Type.Array(SettleEventWire, {
        minItems: 1,
        maxItems: HOLD_LIMITS.maxSettleEvents,
        description:
          "The actual usage, as events of the hold's customer and subject (action defaults to the hold's).",
      }),
    ),
    quantities: Type.Optional(Quantities),
    dimensions: Type.Optional(Dimensions),
    status: Type.Optional(Type.Union([Type.Literal("succeeded"), Type.Literal("failed")])),
  },
  { ...S.strict, title: "SettleRequest" },
);

/**
 * An estimate as given (credits, or quantities with dimensions) parsed for authorize and run
 * steps: exactly one of the two forms, dimensions only with quantities.
 */
export function parseEstimate(e: Static<typeof AuthorizeBody>["estimate"]): Estimate {
  if ((e.credits === undefined) === (e.quantities === undefined))
    throw new ApiError(
      "invalid_argument",
      "estimate takes credits or quantities (with dimensions), one of them.",
      {
        errors: [{ path: "estimate", message: "credits or quantities" }],
      },
    );
  if (e.credits !== undefined && e.dimensions !== undefined)
    throw new ApiError("invalid_argument", "estimate.dimensions go with quantities, not with credits.", {
      errors: [{ path: "estimate.dimensions", message: "only with quantities" }],
    });
  return e.credits !== undefined
    ? { credits: amount(e.credits, "estimate.credits", true) }
    : { quantities: quantities(e.quantities!, "estimate.quantities"), dimensions: e.dimensions ?? {} };
}

/** The settle fields both settle routes share (a hold's, a run step's). */
interface SettleFields {
  readonly events?: readonly Static<typeof SettleEventWire>[];
  readonly quantities?: unknown;
  readonly dimensions?: unknown;
  readonly status?: unknown;
}

/** Refuses a settle with both or neither of events and quantities, or dimensions or status beside events. */
export function checkSettleBody(body: SettleFields): void {
  if ((body.events === undefined) === (body.quantities === undefined))
    throw new ApiError("invalid_argument", "Settle with events or with quantities, one of them.", {
      errors: [{ path: "events", message: "events or quantities" }],
    });
  if (body.events !== undefined && (body.dimensions !== undefined || body.status !== undefined))
    throw new ApiError(
      "invalid_argument",
      "dimensions and status go with quantities; events carry their own.",
      {
        errors: [{ path: "dimensions", message: "only with quantities" }],
      },
    );
}

/**
 * A settle's events parsed as usage events of `customerId` (an event without an action takes
 * `action`, the hold's or the step's); the first bad one fails the request with its index.
 */
export function settleEvents(
  raw: readonly Static<typeof SettleEventWire>[],
  customerId: string,
  action: string,
  now: number,
): SettleEvent[] {
  return raw.map((e, i) => {
    const parsed = parseEvent({ ...e, customer_id: customerId, action: e.action ?? action }, now);
    if (!parsed.ok)
      throw new ApiError(parsed.error.code, `events[${i}]: ${parsed.error.message}`, {
        errors: [{ path: `events/${i}`, message: parsed.error.message }],
      });
    const p = parsed.value.event;
    return {
      id: p.id,
      action: p.action,
      dimensions: p.dimensions,
      quantities: p.quantities,
      time: e.time === undefined ? null : p.time,
      status: p.status,
      runId: p.runId,
      reportedCost: p.reportedCost,
      fingerprint: parsed.value.fingerprint,
    };
  });
}

const ListQuery = S.withPage({
  wallet_id: Type.Optional(S.Id("wal", "Holds paid by this wallet.")),
  customer_id: Type.Optional(S.Id("cus", "Holds of this customer.")),
  status: Type.Optional(Type.Union(["pending", "posted", "voided", "expired"].map((s) => Type.Literal(s)))),
});

const time = (t: number | null) => (t === null ? null : formatTimestamp(t));

/** A hold as the API shows it. */
export const holdView = (h: HoldRecord) => ({
  object: "hold" as const,
  id: h.id,
  customer_id: h.customerId,
  wallet_id: h.walletId,
  subject_id: h.subjectId,
  action: h.action,
  amount: formatAmount(h.amount),
  status: h.status,
  estimate: Object.fromEntries(
    Object.entries(h.estimate).map(([k, v]) => [k, k === "credits" ? formatAmount(BigInt(String(v))) : v]),
  ),
  draws: h.draws.map((d) => ({ wallet_id: d.walletId, grant_id: d.grantId, amount: formatAmount(d.amount) })),
  created_at: formatTimestamp(h.createdAt),
  expires_at: formatTimestamp(h.expiresAt),
  resolved_at: time(h.resolvedAt),
  posted: formatAmount(h.posted),
  released: formatAmount(h.released),
  unpaid: formatAmount(h.unpaid),
  transaction_id: h.transactionId,
  resolve_transaction_id: h.resolveTransactionId,
});

/** Quantities from the wire (integers or decimal strings) as units; `field` names them in errors. */
export function quantities(
  raw: Readonly<Record<string, string | number>>,
  field: string,
): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const [name, q] of Object.entries(raw)) {
    const path = `${field}.${name}`;
    if (typeof q === "number" && !Number.isSafeInteger(q))
      throw new ApiError("invalid_amount", `${path}: send large or fractional quantities as strings.`, {
        errors: [{ path, message: "send as a string" }],
      });
    const r = parseDecimal(String(q), QUANTITY_SCALE, { allowZero: true });
    if (!r.ok)
      throw new ApiError("invalid_amount", `${path}: ${r.error.message}`, {
        errors: [{ path, message: r.error.message }],
      });
    out[name] = r.value;
  }
  return out;
}

export const HOLD_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/authorize",
    operationId: "authorize",
    tag: "Holds",
    summary: "Authorize usage, optionally holding the estimate",
    description:
      "Asks before expensive work whether the customer (or subject) may proceed: `allow`, `deny` or `throttle`, with the reason and the available amount. The estimate is in credits, or in quantities rated by the customer's rate card. With `hold: true`, an allowed estimate is held at once, in the same atomic step as the check: it leaves `available` until the hold is settled, voided, or expires after `hold_timeout_seconds`. A denial is an answer (200), not an error. The pool's overage policy decides: a soft cap or carried deficit allows down to its floor, fair use always allows, a throttle answers `throttle` (with `allowed_actions` and `fallback_action`) for unlisted actions below its level; before denying for lack of credits, an enabled auto top-up with a synchronous provider is tried (`auto_top_up`).",
    access: "secret",
    body: AuthorizeBody,
    response: AuthorizationView,
    errors: ["not_found", "invalid_amount", "invalid_argument", "unknown_action", "no_rate_card"],
    // Batched with other authorizations and settlements: one transaction, wallets locked once.
    groupCommit: true,
    handle: async (ctx) => {
      const { holdWriter, tenantId, body } = ctx;
      if (body.hold !== true && body.hold_timeout_seconds !== undefined)
        throw new ApiError("invalid_argument", "hold_timeout_seconds needs hold: true.", {
          errors: [{ path: "hold_timeout_seconds", message: "only with hold: true" }],
        });
      const estimate = parseEstimate(body.estimate);
      const request = {
        customerId: body.customer_id,
        subjectId: body.subject_id ?? null,
        action: body.action,
        estimate,
        holdTimeoutSeconds: body.hold
          ? (body.hold_timeout_seconds ?? HOLD_LIMITS.timeoutDefaultSeconds)
          : null,
      };
      return committed(
        ctx,
        (claim) => holdWriter.authorize(tenantId, request, claim),
        (r) => {
          const a = r.authorization;
          return okReply({
            object: "authorization",
            decision: a.decision,
            reason: a.reason,
            available: formatAmount(a.available),
            estimate: formatAmount(a.estimate),
            hold: r.hold ? holdView(r.hold) : null,
            allowed_actions: a.allowedActions === null ? null : [...a.allowedActions],
            fallback_action: a.fallbackAction,
            auto_top_up: r.autoTopUp
              ? {
                  outcome: r.autoTopUp.outcome,
                  purchase_ids: [...r.autoTopUp.purchaseIds],
                  reason: r.autoTopUp.reason,
                }
              : null,
          });
        },
      );
    },
  }),
  route({
    method: "GET",
    url: "/v1/holds",
    operationId: "listHolds",
    tag: "Holds",
    summary: "List holds",
    description:
      "Holds of a wallet or a customer (or all), in id order (by creation time to the millisecond), optionally by status.",
    access: "read",
    query: ListQuery,
    response: S.ListOf(HoldView),
    errors: ["invalid_cursor"],
    handle: async ({ holds, tenantId, key, query }) => {
      const p = page(query, ID_CURSOR);
      // A restricted key lists its own customer's holds only.
      if (key.customerId !== null && query.customer_id !== undefined && query.customer_id !== key.customerId)
        return okReply(listView([], null));
      const r = await holds.listHolds(
        tenantId,
        {
          walletId: query.wallet_id ?? null,
          customerId: key.customerId ?? query.customer_id ?? null,
          status: (query.status ?? null) as HoldStatus | null,
        },
        p,
      );
      return okReply(listView(r.items.map(holdView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/holds/:id",
    operationId: "getHold",
    tag: "Holds",
    summary: "Get a hold",
    access: "read",
    params: S.IdParam("hld", "hold"),
    response: HoldView,
    errors: ["not_found"],
    handle: async ({ holds, tenantId, key, params }) => {
      const h = await holds.getHold(tenantId, params.id);
      if (!h) throw notFound("hold", params.id);
      visible(key, h.customerId, "hold", params.id);
      return okReply(holdView(h));
    },
  }),
  route({
    method: "POST",
    url: "/v1/holds/:id/settle",
    operationId: "settleHold",
    tag: "Holds",
    summary: "Settle a hold with the actual usage",
    description:
      "Posts the actual usage against a pending hold, as `events` (each with its own id, recorded like ingested events and naming the hold) or as `quantities` of the hold's action. The usage draws the hold first; under a hard cap at most the hold is posted and the excess is recorded unpaid, under a soft cap it may overrun down to the floor. The rest of the hold is released. A hold resolves once: settling a posted or voided hold is `hold_not_pending`, an expired one `hold_expired`.",
    access: "secret",
    params: S.IdParam("hld", "hold"),
    body: SettleBody,
    response: HoldView,
    errors: [
      "not_found",
      "hold_not_pending",
      "hold_expired",
      "invalid_argument",
      "invalid_event",
      "invalid_amount",
      "event_id_reused",
      "unknown_action",
      "no_rate_card",
      "event_too_old",
      "event_in_future",
    ],
    groupCommit: true,
    handle: async (ctx) => {
      const { holds, holdWriter, store, tenantId, params, body } = ctx;
      checkSettleBody(body);
      // Its customer and wallet, which never change; the writer reads it again under the wallet's lock.
      const hold = holdWriter.known(tenantId, params.id) ?? (await holds.getHold(tenantId, params.id));
      if (!hold) throw notFound("hold", params.id);
      const raw =
        body.events ??
        ([
          {
            id: `${hold.id}.settle`,
            quantities: body.quantities!,
            ...(body.dimensions ? { dimensions: body.dimensions } : {}),
            ...(body.status ? { status: body.status } : {}),
          },
        ] as NonNullable<typeof body.events>);
      const events = settleEvents(raw, hold.customerId, hold.action, store.now(tenantId));
      return committed(
        ctx,
        (claim) => holdWriter.settle(tenantId, hold, { events }, claim),
        (h) => okReply(holdView(h)),
      );
    },
  }),
  route({
    method: "POST",
    url: "/v1/holds/:id/void",
    operationId: "voidHold",
    tag: "Holds",
    summary: "Void a hold",
    description:
      "Releases every held credit: a failed run costs nothing. Voiding a posted or voided hold is `hold_not_pending`; an expired one, `hold_expired`.",
    access: "secret",
    params: S.IdParam("hld", "hold"),
    body: Type.Object({}, { ...S.strict, title: "VoidHold" }),
    response: HoldView,
    errors: ["not_found", "hold_not_pending", "hold_expired"],
    handle: async ({ holds, tx, tenantId, params }) =>
      okReply(holdView(must(await holds.void(tx, tenantId, params.id)))),
  }),
  route({
    method: "GET",
    url: "/v1/ping",
    operationId: "ping",
    tag: "Holds",
    summary: "Check a key, doing nothing else",
    description:
      "Authenticates the key and answers at once, touching no data: the bare endpoint the benchmark compares authorize with (same server, same authentication, no work).",
    access: "read",
    response: Type.Object({ object: Type.Literal("pong") }, { title: "Pong" }),
    errors: [],
    handle: async () => okReply({ object: "pong" }),
  }),
];
