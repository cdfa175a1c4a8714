import { createHmac, randomBytes, randomUUID } from "node:crypto";
import {
  fail,
  ok,
  type PrivateNetworkPolicy,
  type Result,
  type RetryPolicy,
  retryDelay,
  validateEventFilters,
  validateWebhookUrl,
  WEBHOOK_RETRY,
} from "@drawdown/core";
import { eventBody, insertEvent, type OutboxEvent } from "./outbox.js";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";
import { DestinationRefused, type Resolver, WebhookHttp } from "./webhook-http.js";

/**
 * Webhook endpoints and delivery: each outbox event is POSTed to every endpoint subscribed to
 * its type, signed per the Standard Webhooks spec, retried with exponential backoff and
 * jitter until it succeeds or its attempts run out, with every attempt logged.
 *
 * Delivery is at least once. A deliverer claims due deliveries with `FOR UPDATE SKIP LOCKED`
 * and a lease (a deadline on real time), POSTs outside any transaction, then records the
 * answer if it still holds the lease; so several instances never send the same delivery at
 * once, and a deliverer that dies mid-way is replaced when its lease runs out (the one case
 * where a receiver may see a webhook twice: dedupe by `webhook-id`). Due times follow the
 * tenant's clock, so a test clock drives retries.
 *
 * Under the `deny` private-network policy (the default), endpoint URLs whose host is a
 * non-public address or `localhost` are refused when set, and every delivery checks the
 * addresses it connects to (see webhook-http.ts): a refused one is a failed attempt, retried.
 */

// ------------------------------------------------------------------ signing (Standard Webhooks)

/** The prefix of a Standard Webhooks secret. */
export const WEBHOOK_SECRET_PREFIX = "whsec_";

/** A new endpoint secret: `whsec_` and 32 random bytes in base64 (the spec's form). */
export function newWebhookSecret(): string {
  return WEBHOOK_SECRET_PREFIX + randomBytes(32).toString("base64");
}

/**
 * The Standard Webhooks signature of a message: `v1,` and the base64 HMAC-SHA256 of
 * `id.timestamp.body` keyed by the secret's base64-decoded bytes (after `whsec_`).
 * `timestamp` is in whole seconds since the epoch.
 */
export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.startsWith(WEBHOOK_SECRET_PREFIX) ? secret.slice(6) : secret, "base64");
  return `v1,${createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64")}`;
}

/**
 * The headers of a delivery: `webhook-id` (the event id, the same on every attempt),
 * `webhook-timestamp` (seconds), and `webhook-signature` with one signature per secret,
 * space-separated (during a rotation, the new secret's and the previous one's).
 */
export function webhookHeaders(
  secrets: readonly string[],
  id: string,
  timestamp: number,
  body: string,
): Record<string, string> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": secrets.map((s) => signWebhook(s, id, timestamp, body)).join(" "),
  };
}

// ------------------------------------------------------------------ records

/** An endpoint as the API shows it (never its secret). */
export interface WebhookEndpointRecord {
  readonly id: string;
  readonly url: string;
  readonly description: string | null;
  readonly eventTypes: readonly string[];
  readonly enabled: boolean;
  /** Until when the previous secret still signs too (after a rotation); null when none. */
  readonly previousSecretUntil: number | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** One event to one endpoint. */
export interface WebhookDeliveryRecord {
  readonly id: string;
  readonly endpointId: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly status: "pending" | "succeeded" | "failed";
  readonly attempts: number;
  /** When the next attempt is due (tenant time); null once succeeded or failed. */
  readonly nextAttemptAt: number | null;
  readonly lastStatusCode: number | null;
  readonly lastError: string | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** One attempt of a delivery, as logged. */
export interface WebhookAttemptRecord {
  readonly n: number;
  /** When it was made (tenant time). */
  readonly attemptedAt: number;
  /** The receiver's HTTP status; null when there was no answer. */
  readonly statusCode: number | null;
  /** Why it failed (a non-2xx status, a refused connection, a timeout); null on success. */
  readonly error: string | null;
  readonly durationMs: number;
  /** The start of the receiver's answer (at most 1,000 characters). */
  readonly response: string | null;
  /** When the next attempt was scheduled; null when none (succeeded, or out of attempts). */
  readonly nextAttemptAt: number | null;
}

/** A delivery with its event and its attempts. */
export interface WebhookDeliveryDetail extends WebhookDeliveryRecord {
  readonly event: OutboxEvent;
  readonly attemptLog: readonly WebhookAttemptRecord[];
}

/** Options of the deliverer. */
export interface WebhookOptions {
  /** How long one POST may take, answer included; default 10 s. */
  readonly timeoutMs?: number;
  /** The retry schedule; default {@link WEBHOOK_RETRY}. */
  readonly retry?: RetryPolicy;
  /** Uniform in [0, 1): the jitter's source (injected in tests). */
  readonly random?: () => number;
  /** Deliveries POSTed at once by one deliverer; default 16. */
  readonly concurrency?: number;
  /**
   * Whether endpoints may be on private, loopback, link-local and other non-public addresses;
   * default `deny`, checked when a URL is set and again on every connection.
   */
  readonly privateNetworks?: PrivateNetworkPolicy;
  /** How host names are resolved for delivery; default the system's (`dns.lookup`). */
  readonly resolve?: Resolver;
}

const RESPONSE_MAX = 1000;
const DESCRIPTION_MAX = 500;
/** How long the previous secret keeps signing after a rotation. */
export const SECRET_OVERLAP_MS = 24 * 3_600_000;

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const msOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : ms(v));

const toEndpoint = (r: Row): WebhookEndpointRecord => ({
  id: String(r.id),
  url: String(r.url),
  description: r.description === null ? null : String(r.description),
  eventTypes: r.event_types as string[],
  enabled: Boolean(r.enabled),
  previousSecretUntil: msOrNull(r.previous_secret_until),
  createdAt: ms(r.created_at),
  updatedAt: ms(r.updated_at),
});

const toDelivery = (r: Row): WebhookDeliveryRecord => ({
  id: String(r.id),
  endpointId: String(r.endpoint_id),
  eventId: String(r.event_id),
  eventType: String(r.event_type),
  status: r.status as WebhookDeliveryRecord["status"],
  attempts: Number(r.attempts),
  nextAttemptAt: r.status === "pending" ? msOrNull(r.next_attempt_at) : null,
  lastStatusCode: r.last_status_code === null ? null : Number(r.last_status_code),
  lastError: r.last_error === null ? null : String(r.last_error),
  createdAt: ms(r.created_at),
  updatedAt: ms(r.updated_at),
});

const toAttempt = (r: Row): WebhookAttemptRecord => ({
  n: Number(r.n),
  attemptedAt: ms(r.attempted_at),
  statusCode: r.status_code === null ? null : Number(r.status_code),
  error: r.error === null ? null : String(r.error),
  durationMs: Number(r.duration_ms),
  response: r.response === null ? null : String(r.response),
  nextAttemptAt: msOrNull(r.next_attempt_at),
});

/** A claimed delivery, with what its POST needs. */
interface Claimed {
  readonly tenantId: string;
  readonly id: string;
  readonly attempts: number;
  readonly lease: string;
  readonly url: string;
  readonly secrets: string[];
  readonly event: OutboxEvent;
}

/** What one POST gave. */
interface Outcome {
  readonly statusCode: number | null;
  readonly error: string | null;
  readonly response: string | null;
  readonly durationMs: number;
}

/**
 * Webhook endpoints, their deliveries and the deliverer (a job of the store's scheduler and
 * test clock; the server also runs it on its own short interval).
 */
export class Webhooks implements DueJob {
  readonly #timeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #random: () => number;
  readonly #concurrency: number;
  readonly #privateNetworks: PrivateNetworkPolicy;
  readonly #http: WebhookHttp;

  constructor(
    private readonly store: Store,
    options: WebhookOptions = {},
  ) {
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#retry = options.retry ?? WEBHOOK_RETRY;
    this.#random = options.random ?? Math.random;
    this.#concurrency = Math.max(1, options.concurrency ?? 16);
    this.#privateNetworks = options.privateNetworks ?? "deny";
    this.#http = new WebhookHttp(this.#privateNetworks, options.resolve);
    store.addDueJob(this);
  }

  // ---------------------------------------------------------------- endpoints

  /** Creates an endpoint; returns it with its secret, the only time the secret is shown. */
  async createEndpoint(
    ex: SqlExecutor,
    tenantId: string,
    input: { url: string; eventTypes: readonly string[]; description?: string | null; enabled?: boolean },
  ): Promise<Result<{ endpoint: WebhookEndpointRecord; secret: string }>> {
    const url = validateWebhookUrl(input.url, this.#privateNetworks);
    if (!url.ok) return url;
    const types = validateEventFilters(input.eventTypes);
    if (!types.ok) return types;
    const description = checkDescription(input.description);
    if (!description.ok) return description;
    const secret = newWebhookSecret();
    const now = iso(this.store.now(tenantId));
    const { rows } = await ex.query(
      `INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, secret, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING *`,
      [
        tenantId,
        this.store.newId("whe"),
        url.value,
        description.value,
        types.value,
        input.enabled ?? true,
        secret,
        now,
      ],
    );
    return ok({ endpoint: toEndpoint(rows[0]!), secret });
  }

  async getEndpoint(
    tenantId: string,
    id: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<WebhookEndpointRecord | null> {
    const { rows } = await ex.query(
      "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
      [tenantId, id],
    );
    return rows[0] ? toEndpoint(rows[0]) : null;
  }

  /** The tenant's endpoints (not deleted), oldest first. */
  async listEndpoints(tenantId: string): Promise<WebhookEndpointRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
      [tenantId],
    );
    return rows.map(toEndpoint);
  }

  /**
   * Changes an endpoint's URL, description, filters or enabled state (what is given). A
   * disabled endpoint gets no new events; deliveries already pending wait until it is enabled.
   */
  async updateEndpoint(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    patch: { url?: string; eventTypes?: readonly string[]; description?: string | null; enabled?: boolean },
  ): Promise<Result<WebhookEndpointRecord>> {
    const current = await this.#lock(ex, tenantId, id);
    if (!current) return fail("not_found", `No webhook endpoint ${id}.`);
    let url = current.url;
    if (patch.url !== undefined) {
      const checked = validateWebhookUrl(patch.url, this.#privateNetworks);
      if (!checked.ok) return checked;
      url = checked.value;
    }
    let types = current.eventTypes;
    if (patch.eventTypes !== undefined) {
      const checked = validateEventFilters(patch.eventTypes);
      if (!checked.ok) return checked;
      types = checked.value;
    }
    let description = current.description;
    if (patch.description !== undefined) {
      const checked = checkDescription(patch.description);
      if (!checked.ok) return checked;
      description = checked.value;
    }
    const { rows } = await ex.query(
      `UPDATE webhook_endpoints SET url = $3, event_types = $4, description = $5, enabled = $6, updated_at = $7
       WHERE tenant_id = $1 AND id = $2 RETURNING *`,
      [
        tenantId,
        id,
        url,
        types,
        description,
        patch.enabled ?? current.enabled,
        iso(this.store.now(tenantId)),
      ],
    );
    return ok(toEndpoint(rows[0]!));
  }

  /** Deletes an endpoint: it gets nothing more, and its pending deliveries fail. */
  async deleteEndpoint(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
  ): Promise<Result<WebhookEndpointRecord>> {
    const current = await this.#lock(ex, tenantId, id);
    if (!current) return fail("not_found", `No webhook endpoint ${id}.`);
    const now = iso(this.store.now(tenantId));
    const { rows } = await ex.query(
      `UPDATE webhook_endpoints SET deleted_at = $3, enabled = false, updated_at = $3 WHERE tenant_id = $1 AND id = $2
       RETURNING *`,
      [tenantId, id, now],
    );
    await ex.query(
      `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted', updated_at = $3
       WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending'`,
      [tenantId, id, now],
    );
    return ok(toEndpoint(rows[0]!));
  }

  /**
   * Replaces an endpoint's secret and returns the new one (shown this once). The previous
   * secret keeps signing too, alongside, for 24 hours, so receivers can switch without a gap.
   */
  async rotateSecret(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
  ): Promise<Result<{ endpoint: WebhookEndpointRecord; secret: string }>> {
    const current = await this.#lock(ex, tenantId, id);
    if (!current) return fail("not_found", `No webhook endpoint ${id}.`);
    const secret = newWebhookSecret();
    const now = this.store.now(tenantId);
    const { rows } = await ex.query(
      `UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $4, secret = $3, updated_at = $5
       WHERE tenant_id = $1 AND id = $2 RETURNING *`,
      [tenantId, id, secret, iso(now + SECRET_OVERLAP_MS), iso(now)],
    );
    return ok({ endpoint: toEndpoint(rows[0]!), secret });
  }

  async #lock(ex: SqlExecutor, tenantId: string, id: string): Promise<WebhookEndpointRecord | null> {
    const { rows } = await ex.query(
      "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE",
      [tenantId, id],
    );
    return rows[0] ? toEndpoint(rows[0]) : null;
  }

  // ---------------------------------------------------------------- the delivery log

  /** An endpoint's deliveries, newest first, optionally of one status. */
  async listDeliveries(
    tenantId: string,
    endpointId: string,
    filter: { status?: string | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<WebhookDeliveryRecord>> {
    const { rows } = await this.store.db.query(
      `SELECT * FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::text IS NULL OR status = $3)
       AND ($4::text IS NULL OR id < $4) ORDER BY id DESC LIMIT $5`,
      [tenantId, endpointId, filter.status ?? null, page.after ?? null, page.limit + 1],
    );
    return paginate(rows.map(toDelivery), page.limit, (x) => x.id);
  }

  /** A delivery with its event and every attempt; null when unknown (or its endpoint deleted). */
  async getDelivery(
    tenantId: string,
    id: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<WebhookDeliveryDetail | null> {
    const { rows } = await ex.query(
      `SELECT d.*, v.payload, v.created_at AS event_created_at FROM webhook_deliveries d
       JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.deleted_at IS NULL
       JOIN outbox_events v ON v.tenant_id = d.tenant_id AND v.id = d.event_id
       WHERE d.tenant_id = $1 AND d.id = $2`,
      [tenantId, id],
    );
    const r = rows[0];
    if (!r) return null;
    const attempts = await ex.query(
      "SELECT * FROM webhook_attempts WHERE tenant_id = $1 AND delivery_id = $2 ORDER BY n",
      [tenantId, id],
    );
    return {
      ...toDelivery(r),
      event: {
        id: String(r.event_id),
        type: String(r.event_type),
        payload: (typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload) as Record<
          string,
          unknown
        >,
        createdAt: ms(r.event_created_at),
      },
      attemptLog: attempts.rows.map(toAttempt),
    };
  }

  /**
   * Attempts a delivery now, whatever its state (a failed one gets one more attempt; a
   * succeeded one is sent again, with the same `webhook-id`), and returns it with the attempt
   * logged. A delivery another deliverer is sending right now is left to it.
   */
  async redeliver(tenantId: string, id: string): Promise<Result<WebhookDeliveryDetail>> {
    const found = await this.getDelivery(tenantId, id);
    if (!found) return fail("not_found", `No webhook delivery ${id}.`);
    await this.store.db.query(
      `UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, updated_at = $3
       WHERE tenant_id = $1 AND id = $2 AND (leased_until IS NULL OR leased_until < $4)`,
      [tenantId, id, iso(this.store.now(tenantId)), iso(this.store.now())],
    );
    await this.#deliver(await this.#claim({ tenantId, id, limit: 1 }));
    return ok((await this.getDelivery(tenantId, id))!);
  }

  /**
   * Sends a `webhook.test` event to one endpoint now (enabled or not, whatever its filters)
   * and returns its delivery, with the attempt logged. Failed, it is retried like any other.
   */
  async sendTest(tenantId: string, endpointId: string): Promise<Result<WebhookDeliveryDetail>> {
    const created = await this.store.db.transaction(async (tx) => {
      const endpoint = await this.#lock(tx, tenantId, endpointId);
      if (!endpoint) return null;
      const now = this.store.now(tenantId);
      const r = await insertEvent(
        tx,
        { newId: this.store.newId, now },
        tenantId,
        "webhook.test",
        { endpoint_id: endpointId, message: "A test event from Drawdown.", sent_at: iso(now) },
        endpointId,
      );
      return r.deliveryIds[0]!;
    });
    if (created === null) return fail("not_found", `No webhook endpoint ${endpointId}.`);
    await this.#deliver(await this.#claim({ tenantId, id: created, limit: 1 }));
    return ok((await this.getDelivery(tenantId, created))!);
  }

  // ---------------------------------------------------------------- the deliverer

  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    // A delivery another deliverer is sending is not due here: the test clock would wait on it.
    const { rows } = await this.store.db.query(
      `SELECT min(d.next_attempt_at) AS at FROM webhook_deliveries d
       JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
       WHERE d.tenant_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2 AND e.enabled AND e.deleted_at IS NULL
         AND (d.leased_until IS NULL OR d.leased_until < $3)`,
      [tenantId, iso(upTo), iso(this.store.now())],
    );
    return msOrNull(rows[0]?.at);
  }

  /** Delivers everything due (each tenant by its own clock), batch by batch; returns the attempts made. */
  async run(tenantId: string | null): Promise<number> {
    let attempts = 0;
    for (;;) {
      const batch = await this.#claim({ tenantId, id: null, limit: 50 });
      if (batch.length === 0) return attempts;
      attempts += await this.#deliver(batch);
      if (batch.length < 50) return attempts;
    }
  }

  /**
   * Claims due deliveries: locks them with SKIP LOCKED (another deliverer's are passed over)
   * and leases them on real time, in one short transaction. With `id`, that delivery only,
   * even if its endpoint is disabled (a test-send or a redelivery).
   */
  async #claim(q: { tenantId: string | null; id: string | null; limit: number }): Promise<Claimed[]> {
    const wallNow = this.store.now();
    const lease = randomUUID();
    const claimed = await this.store.db.transaction(async (tx) => {
      const { rows } = await tx.query(
        `WITH due AS (
           SELECT d.tenant_id, d.id FROM webhook_deliveries d
           JOIN tenants t ON t.id = d.tenant_id
           JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
           WHERE d.status = 'pending' AND d.next_attempt_at <= coalesce(t.clock_at, $1::timestamptz)
             AND (d.leased_until IS NULL OR d.leased_until < $1::timestamptz)
             AND e.deleted_at IS NULL AND ($4::text IS NOT NULL OR e.enabled)
             AND ($2::text IS NULL OR d.tenant_id = $2) AND ($4::text IS NULL OR d.id = $4)
           ORDER BY d.next_attempt_at, d.id LIMIT $3
           FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE webhook_deliveries d SET leased_until = $5, lease = $6
         FROM due WHERE d.tenant_id = due.tenant_id AND d.id = due.id
         RETURNING d.tenant_id, d.id, d.endpoint_id, d.event_id, d.event_type, d.attempts`,
        [iso(wallNow), q.tenantId, q.limit, q.id, iso(wallNow + this.#timeoutMs + 60_000), lease],
      );
      if (rows.length === 0) return [];
      const details = await tx.query(
        `SELECT d.tenant_id, d.id, e.url, e.secret, e.previous_secret, e.previous_secret_until, v.type, v.payload, v.created_at
         FROM webhook_deliveries d
         JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
         JOIN outbox_events v ON v.tenant_id = d.tenant_id AND v.id = d.event_id
         WHERE d.lease = $1`,
        [lease],
      );
      const byId = new Map(details.rows.map((r) => [`${r.tenant_id}|${r.id}`, r]));
      return rows.map((r): Claimed => {
        const d = byId.get(`${r.tenant_id}|${r.id}`)!;
        const tenantNow = this.store.now(String(r.tenant_id));
        const previousValid =
          d.previous_secret !== null &&
          d.previous_secret_until !== null &&
          ms(d.previous_secret_until) > tenantNow;
        return {
          tenantId: String(r.tenant_id),
          id: String(r.id),
          attempts: Number(r.attempts),
          lease,
          url: String(d.url),
          secrets: previousValid ? [String(d.secret), String(d.previous_secret)] : [String(d.secret)],
          event: {
            id: String(r.event_id),
            type: String(d.type),
            payload: (typeof d.payload === "string" ? JSON.parse(d.payload) : d.payload) as Record<
              string,
              unknown
            >,
            createdAt: ms(d.created_at),
          },
        };
      });
    });
    // Each tenant's time as the database holds it (a test clock moved by another instance).
    for (const t of new Set(claimed.map((c) => c.tenantId))) await this.store.clockOf(t);
    return claimed;
  }

  /** POSTs claimed deliveries, a few at a time, and records each answer. */
  async #deliver(claimed: readonly Claimed[]): Promise<number> {
    let next = 0;
    const worker = async () => {
      while (next < claimed.length) {
        const c = claimed[next++]!;
        await this.#record(c, await this.#post(c));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, claimed.length) }, worker));
    return claimed.length;
  }

  async #post(c: Claimed): Promise<Outcome> {
    const body = eventBody(c.event);
    // Real time, never a test clock: receivers check it against their own clock.
    const timestamp = Math.floor(this.store.now() / 1000);
    const started = performance.now();
    try {
      // Redirects are not followed: a 3xx is a failure like any other non-2xx.
      const res = await this.#http.post(
        c.url,
        {
          "content-type": "application/json",
          "user-agent": "Drawdown-Webhooks/0.1",
          ...webhookHeaders(c.secrets, c.event.id, timestamp, body),
        },
        body,
        { timeoutMs: this.#timeoutMs, maxChars: RESPONSE_MAX },
      );
      const durationMs = Math.round(performance.now() - started);
      const ok2xx = res.status >= 200 && res.status < 300;
      return {
        statusCode: res.status,
        error: ok2xx ? null : `HTTP ${res.status}`,
        response: res.body,
        durationMs,
      };
    } catch (error) {
      const durationMs = Math.round(performance.now() - started);
      return { statusCode: null, error: describeFailure(error, this.#timeoutMs), response: null, durationMs };
    }
  }

  /** Records an attempt, if the lease still holds: the delivery's new state and its log line. */
  async #record(c: Claimed, o: Outcome): Promise<void> {
    const n = c.attempts + 1;
    const now = this.store.now(c.tenantId);
    const succeeded = o.error === null;
    const delay = succeeded ? null : retryDelay(n, this.#random(), this.#retry);
    const status = succeeded ? "succeeded" : delay === null ? "failed" : "pending";
    const nextAt = delay === null ? null : now + delay;
    await this.store.db.transaction(async (tx) => {
      const { rowCount } = await tx.query(
        `UPDATE webhook_deliveries SET attempts = $4, status = $5, next_attempt_at = $6, leased_until = NULL, lease = NULL,
           last_status_code = $7, last_error = $8, updated_at = $9
         WHERE tenant_id = $1 AND id = $2 AND lease = $3`,
        [c.tenantId, c.id, c.lease, n, status, iso(nextAt), o.statusCode, o.error, iso(now)],
      );
      // The lease ran out and another deliverer took over: its record is the one that counts.
      if (rowCount === 0) return;
      await tx.query(
        `INSERT INTO webhook_attempts (tenant_id, delivery_id, n, attempted_at, status_code, error, duration_ms, response, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
        [c.tenantId, c.id, n, iso(now), o.statusCode, o.error, o.durationMs, o.response, iso(nextAt)],
      );
    });
  }
}

function checkDescription(text: string | null | undefined): Result<string | null> {
  if (text === undefined || text === null) return ok(null);
  if (text.length > DESCRIPTION_MAX)
    return fail("invalid_argument", `description: at most ${DESCRIPTION_MAX} characters.`, {
      field: "description",
    });
  return ok(text);
}

/**
 * A failed POST in words: a destination the private-network policy refused (`refused: ...`,
 * nothing was connected to), a timeout, a refused connection or a name that does not resolve
 * (`no answer: ECONNREFUSED`).
 */
function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof DestinationRefused) return `refused: ${error.message}`.slice(0, 500);
  const e = error as { name?: string; message?: string; code?: string };
  if (e?.name === "TimeoutError" || e?.name === "AbortError") return `timed out after ${timeoutMs} ms`;
  const text = e?.code ?? e?.message ?? String(error);
  return `no answer: ${text}`.slice(0, 500);
}
