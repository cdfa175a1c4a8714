import { type EventType, isEventType, matchesEventFilters } from "@drawdown/core";
import type { SqlExecutor } from "./sql.js";

/**
 * The outbox: events written in the same transaction as the change that causes them, so an
 * event exists exactly when its cause committed. Each event gets one delivery per endpoint
 * subscribed to its type at that moment; the webhook dispatcher delivers them.
 */

/** An event's data: plain JSON (amounts as decimal strings, times as RFC 3339). */
export type EventPayload = Readonly<Record<string, unknown>>;

/** A stored event. */
export interface OutboxEvent {
  readonly id: string;
  readonly type: string;
  readonly payload: EventPayload;
  readonly createdAt: number;
}

/** What {@link insertEvent} needs besides the event: ids and the tenant's time. */
export interface EmitContext {
  readonly newId: (prefix: "evt" | "whd") => string;
  readonly now: number;
}

const iso = (t: number): string => new Date(t).toISOString();

/**
 * Writes an event and its deliveries in the caller's transaction: one delivery, due now, per
 * enabled endpoint of the tenant whose filters match `type` (or, with `endpointId`, to that
 * endpoint only: a test-send). Returns the event id (the `webhook-id` of every delivery).
 * Storage-internal: callers use `Store.emit`.
 */
export async function insertEvent(
  ex: SqlExecutor,
  ctx: EmitContext,
  tenantId: string,
  type: EventType,
  payload: EventPayload,
  endpointId: string | null = null,
): Promise<{ eventId: string; deliveryIds: string[] }> {
  if (!isEventType(type)) throw new TypeError(`Unknown event type ${String(type)}; add it to EVENT_TYPES.`);
  const eventId = ctx.newId("evt");
  const { rows } = await ex.query<{ id: string; event_types: string[] }>(
    `SELECT id, event_types FROM webhook_endpoints
     WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NOT NULL OR enabled) AND ($2::text IS NULL OR id = $2)`,
    [tenantId, endpointId],
  );
  const targets = rows
    .filter((e) => endpointId !== null || matchesEventFilters(e.event_types, type))
    .map((e) => e.id);
  const deliveryIds = targets.map(() => ctx.newId("whd"));
  const at = iso(ctx.now);
  // One round trip: the event, and its deliveries when there are any.
  await ex.query(
    `WITH event AS (
       INSERT INTO outbox_events (tenant_id, id, type, payload, created_at) VALUES ($1, $2, $3, $4, $5)
     )
     INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at, updated_at)
     SELECT $1, d.id, d.endpoint_id, $2, $3, 'pending', 0, $5, $5, $5
     FROM unnest($6::text[], $7::text[]) AS d(id, endpoint_id)`,
    [tenantId, eventId, type, JSON.stringify(payload), at, deliveryIds, targets],
  );
  return { eventId, deliveryIds };
}

/** The body a delivery carries, per the Standard Webhooks spec: type, timestamp, data. */
export function eventBody(event: OutboxEvent): string {
  return JSON.stringify({ type: event.type, timestamp: iso(event.createdAt), data: event.payload });
}
