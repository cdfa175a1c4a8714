import { EVENT_FILTER_LIMITS, EVENT_TYPE_NAMES, WEBHOOK_URL_MAX } from "@drawdown/core";
import type { WebhookDeliveryDetail, WebhookDeliveryRecord, WebhookEndpointRecord } from "@drawdown/storage";
import { Type } from "@sinclair/typebox";
import { created, ID_CURSOR, must, notFound, okReply, page, type Route, route } from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Webhooks: endpoints per tenant with the event types they want, and the delivery log.
 * Events come from the outbox (written with their cause); deliveries are signed per the
 * Standard Webhooks spec and retried with exponential backoff.
 */

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);
const time = (t: number | null) => (t === null ? null : new Date(t).toISOString());

const Url = Type.String({
  minLength: 1,
  maxLength: WEBHOOK_URL_MAX,
  description:
    "Where events are POSTed: an absolute http or https URL, without user name, password or fragment.",
});

const EventTypes = Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
  minItems: 1,
  maxItems: EVENT_FILTER_LIMITS.maxItems,
  description: `The event types the endpoint receives: "*" (all), a type, or a resource's types ("grant.*"). Types: ${EVENT_TYPE_NAMES.filter((t) => t !== "webhook.test").join(", ")}.`,
});

const Description = Nullable(
  Type.String({ maxLength: 500, description: "Your note on what the endpoint is for." }),
);

export const WebhookEndpointCreate = Type.Object(
  {
    url: Url,
    event_types: EventTypes,
    description: Type.Optional(Description),
    enabled: Type.Optional(Type.Boolean({ description: "Default true." })),
  },
  { ...S.strict, title: "WebhookEndpointCreate" },
);

export const WebhookEndpointUpdate = Type.Object(
  {
    url: Type.Optional(Url),
    event_types: Type.Optional(EventTypes),
    description: Type.Optional(Description),
    enabled: Type.Optional(
      Type.Boolean({
        description:
          "false: no new events are sent to it; deliveries already pending wait until it is enabled again.",
      }),
    ),
  },
  { ...S.strict, title: "WebhookEndpointUpdate" },
);

export const WebhookEndpointView = Type.Object(
  {
    object: Type.Literal("webhook_endpoint"),
    id: Type.String(),
    url: Type.String(),
    description: Nullable(Type.String()),
    event_types: Type.Array(Type.String()),
    enabled: Type.Boolean(),
    previous_secret_expires_at: Nullable(
      Type.String({ description: "After a rotation, until when the previous secret signs too; else null." }),
    ),
    secret: Type.Optional(
      Type.String({
        description:
          "The signing secret (whsec_ and base64), in the answer to create and rotate_secret only: keep it then.",
      }),
    ),
    created_at: Type.String(),
    updated_at: Type.String(),
  },
  { title: "WebhookEndpoint" },
);

const DeliveryStatus = Type.Union([
  Type.Literal("pending"),
  Type.Literal("succeeded"),
  Type.Literal("failed"),
]);

export const WebhookDeliveryView = Type.Object(
  {
    object: Type.Literal("webhook_delivery"),
    id: Type.String(),
    endpoint_id: Type.String(),
    event_id: Type.String({ description: "The event's id: the webhook-id header of every attempt." }),
    event_type: Type.String(),
    status: DeliveryStatus,
    attempts: Type.Integer(),
    next_attempt_at: Nullable(Type.String({ description: "When the next attempt is due (tenant time)." })),
    last_status_code: Nullable(Type.Integer()),
    last_error: Nullable(Type.String()),
    created_at: Type.String(),
    updated_at: Type.String(),
  },
  { title: "WebhookDelivery" },
);

export const WebhookAttemptView = Type.Object(
  {
    n: Type.Integer({ description: "1 for the first attempt." }),
    attempted_at: Type.String(),
    status_code: Nullable(
      Type.Integer({ description: "The receiver's HTTP status; null without an answer." }),
    ),
    error: Nullable(Type.String({ description: "Why it failed; null when it succeeded." })),
    duration_ms: Type.Integer(),
    response: Nullable(Type.String({ description: "The start of the receiver's answer." })),
    next_attempt_at: Nullable(Type.String()),
  },
  { title: "WebhookAttempt" },
);

export const WebhookDeliveryDetailView = Type.Object(
  {
    ...WebhookDeliveryView.properties,
    event: Type.Object({
      id: Type.String(),
      type: Type.String(),
      timestamp: Type.String(),
      data: Type.Record(Type.String(), Type.Unknown()),
    }),
    attempt_log: Type.Array(WebhookAttemptView),
  },
  { title: "WebhookDeliveryDetail" },
);

const endpointView = (e: WebhookEndpointRecord, secret?: string) => ({
  object: "webhook_endpoint" as const,
  id: e.id,
  url: e.url,
  description: e.description,
  event_types: [...e.eventTypes],
  enabled: e.enabled,
  previous_secret_expires_at: time(e.previousSecretUntil),
  ...(secret === undefined ? {} : { secret }),
  created_at: new Date(e.createdAt).toISOString(),
  updated_at: new Date(e.updatedAt).toISOString(),
});

const deliveryView = (d: WebhookDeliveryRecord) => ({
  object: "webhook_delivery" as const,
  id: d.id,
  endpoint_id: d.endpointId,
  event_id: d.eventId,
  event_type: d.eventType,
  status: d.status,
  attempts: d.attempts,
  next_attempt_at: time(d.nextAttemptAt),
  last_status_code: d.lastStatusCode,
  last_error: d.lastError,
  created_at: new Date(d.createdAt).toISOString(),
  updated_at: new Date(d.updatedAt).toISOString(),
});

const detailView = (d: WebhookDeliveryDetail) => ({
  ...deliveryView(d),
  event: {
    id: d.event.id,
    type: d.event.type,
    timestamp: new Date(d.event.createdAt).toISOString(),
    data: d.event.payload,
  },
  attempt_log: d.attemptLog.map((a) => ({
    n: a.n,
    attempted_at: new Date(a.attemptedAt).toISOString(),
    status_code: a.statusCode,
    error: a.error,
    duration_ms: a.durationMs,
    response: a.response,
    next_attempt_at: time(a.nextAttemptAt),
  })),
});

/** What an idempotency record keeps of an answer with a secret: all but the secret. */
const withoutSecret = (body: unknown) => ({ ...(body as object), secret: undefined });

export const WEBHOOK_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/webhook_endpoints",
    operationId: "createWebhookEndpoint",
    tag: "Webhooks",
    summary: "Create a webhook endpoint",
    description:
      "Events of the types it asks for are POSTed to it from now on, signed per the Standard Webhooks spec with its secret, which this answer shows once (a retry with the same Idempotency-Key answers without it). `invalid_webhook_url` for a URL that is not http(s); `webhook_url_not_allowed` (422) for one whose host is a private, loopback or link-local address or `localhost`, unless the server allows private networks.",
    access: "secret",
    body: WebhookEndpointCreate,
    response: WebhookEndpointView,
    status: 201,
    errors: ["invalid_webhook_url", "webhook_url_not_allowed", "invalid_argument"],
    handle: async ({ webhooks, tx, tenantId, body }) => {
      const r = must(
        await webhooks.createEndpoint(tx, tenantId, {
          url: body.url,
          eventTypes: body.event_types,
          description: body.description ?? null,
          ...(body.enabled === undefined ? {} : { enabled: body.enabled }),
        }),
      );
      return created(endpointView(r.endpoint, r.secret));
    },
    stored: withoutSecret,
  }),
  route({
    method: "GET",
    url: "/v1/webhook_endpoints",
    operationId: "listWebhookEndpoints",
    tag: "Webhooks",
    summary: "List webhook endpoints",
    access: "secret",
    response: S.ListOf(WebhookEndpointView),
    errors: [],
    handle: async ({ webhooks, tenantId }) =>
      okReply(
        listView(
          (await webhooks.listEndpoints(tenantId)).map((e) => endpointView(e)),
          null,
        ),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/webhook_endpoints/:id",
    operationId: "getWebhookEndpoint",
    tag: "Webhooks",
    summary: "Get a webhook endpoint",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    response: WebhookEndpointView,
    errors: ["not_found"],
    handle: async ({ webhooks, tenantId, params }) => {
      const e = await webhooks.getEndpoint(tenantId, params.id);
      if (!e) throw notFound("webhook endpoint", params.id);
      return okReply(endpointView(e));
    },
  }),
  route({
    method: "POST",
    url: "/v1/webhook_endpoints/:id",
    operationId: "updateWebhookEndpoint",
    tag: "Webhooks",
    summary: "Update a webhook endpoint",
    description:
      "Changes what is given: URL (checked as on create), event types, description, enabled. A disabled endpoint gets no new events; its pending deliveries wait until it is enabled.",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    body: WebhookEndpointUpdate,
    response: WebhookEndpointView,
    errors: ["not_found", "invalid_webhook_url", "webhook_url_not_allowed", "invalid_argument"],
    handle: async ({ webhooks, tx, tenantId, params, body }) =>
      okReply(
        endpointView(
          must(
            await webhooks.updateEndpoint(tx, tenantId, params.id, {
              ...(body.url === undefined ? {} : { url: body.url }),
              ...(body.event_types === undefined ? {} : { eventTypes: body.event_types }),
              ...(body.description === undefined ? {} : { description: body.description }),
              ...(body.enabled === undefined ? {} : { enabled: body.enabled }),
            }),
          ),
        ),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/webhook_endpoints/:id/delete",
    operationId: "deleteWebhookEndpoint",
    tag: "Webhooks",
    summary: "Delete a webhook endpoint",
    description:
      "It gets nothing more; its pending deliveries are marked failed. Answers the endpoint as it was left.",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    body: S.Empty,
    response: WebhookEndpointView,
    errors: ["not_found"],
    handle: async ({ webhooks, tx, tenantId, params }) =>
      okReply(endpointView(must(await webhooks.deleteEndpoint(tx, tenantId, params.id)))),
  }),
  route({
    method: "POST",
    url: "/v1/webhook_endpoints/:id/rotate_secret",
    operationId: "rotateWebhookSecret",
    tag: "Webhooks",
    summary: "Rotate a webhook endpoint's secret",
    description:
      "A new secret, shown in this answer only. For 24 hours the previous secret signs too (two signatures in webhook-signature), so receivers switch without missing a webhook.",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    body: S.Empty,
    response: WebhookEndpointView,
    errors: ["not_found"],
    handle: async ({ webhooks, tx, tenantId, params }) => {
      const r = must(await webhooks.rotateSecret(tx, tenantId, params.id));
      return okReply(endpointView(r.endpoint, r.secret));
    },
    stored: withoutSecret,
  }),
  route({
    method: "POST",
    url: "/v1/webhook_endpoints/:id/test",
    operationId: "testWebhookEndpoint",
    tag: "Webhooks",
    summary: "Send a test event",
    description:
      "POSTs a `webhook.test` event to the endpoint now (even disabled, whatever its event types) and answers the delivery with the attempt's result; a failed one (a destination refused as a private address included: `refused: ...`, nothing connected to) is retried like any other. Not keyed by Idempotency-Key: each call sends a new test event.",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    body: S.Empty,
    response: WebhookDeliveryDetailView,
    errors: ["not_found"],
    idempotencyKey: false,
    handle: async ({ webhooks, tenantId, params }) =>
      okReply(detailView(must(await webhooks.sendTest(tenantId, params.id)))),
  }),
  route({
    method: "GET",
    url: "/v1/webhook_endpoints/:id/deliveries",
    operationId: "listWebhookDeliveries",
    tag: "Webhooks",
    summary: "An endpoint's delivery log",
    description: "Its deliveries, newest first, each with its attempts so far, last status and next attempt.",
    access: "secret",
    params: S.IdParam("whe", "webhook endpoint"),
    query: S.withPage({ status: Type.Optional(DeliveryStatus) }),
    response: S.ListOf(WebhookDeliveryView),
    errors: ["not_found", "invalid_cursor"],
    handle: async ({ webhooks, tenantId, params, query }) => {
      const p = page(query, ID_CURSOR);
      if (!(await webhooks.getEndpoint(tenantId, params.id))) throw notFound("webhook endpoint", params.id);
      const r = await webhooks.listDeliveries(tenantId, params.id, { status: query.status ?? null }, p);
      return okReply(listView(r.items.map(deliveryView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/webhook_deliveries/:id",
    operationId: "getWebhookDelivery",
    tag: "Webhooks",
    summary: "Get a delivery with its attempts",
    description:
      "The delivery, the event it carries, and every attempt: status code, error, duration, next attempt.",
    access: "secret",
    params: S.IdParam("whd", "webhook delivery"),
    response: WebhookDeliveryDetailView,
    errors: ["not_found"],
    handle: async ({ webhooks, tenantId, params }) => {
      const d = await webhooks.getDelivery(tenantId, params.id);
      if (!d) throw notFound("webhook delivery", params.id);
      return okReply(detailView(d));
    },
  }),
  route({
    method: "POST",
    url: "/v1/webhook_deliveries/:id/retry",
    operationId: "retryWebhookDelivery",
    tag: "Webhooks",
    summary: "Redeliver now",
    description:
      "Attempts the delivery now, whatever its state, with the same webhook-id (receivers dedupe by it), and answers it with the attempt logged. A failed delivery gets one more attempt. Not keyed by Idempotency-Key: each call is an attempt.",
    access: "secret",
    params: S.IdParam("whd", "webhook delivery"),
    body: S.Empty,
    response: WebhookDeliveryDetailView,
    errors: ["not_found"],
    idempotencyKey: false,
    handle: async ({ webhooks, tenantId, params }) =>
      okReply(detailView(must(await webhooks.redeliver(tenantId, params.id)))),
  }),
];
