import * as crypto from "node:crypto";
import { ok, parseDecimal, parseTimestamp, pow10, QUANTITY_SCALE, type Result } from "@drawdown/core";
import type { IngestEvent } from "@drawdown/storage";
import { type Static, Type } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";

/** One unit of quantity at its scale. */
const QUANTITY_UNIT = pow10(QUANTITY_SCALE);

/**
 * SHA-256 of a text, base64url. The one-shot `crypto.hash` (Node 20.12 and later) makes no
 * Hash object: this runs once per ingested event.
 */
const sha256: (text: string) => string =
  typeof crypto.hash === "function"
    ? (text) => crypto.hash("sha256", text, "base64url")
    : (text) => crypto.createHash("sha256").update(text).digest("base64url");

/**
 * Usage events on the wire, in the native shape or as CloudEvents 1.0 JSON, checked one by
 * one so that one bad event in a batch is rejected alone.
 */

/** The most events one batch request may carry. */
export const MAX_BATCH_EVENTS = 10_000;

const Name = (description: string) => Type.String({ minLength: 1, maxLength: 100, description });
const Dimensions = Type.Record(
  Type.String({ pattern: "^[a-z][a-z0-9_]{0,63}$" }),
  Type.String({ minLength: 1, maxLength: 200 }),
  {
    // A Record checks only the keys that match its pattern; this refuses the others.
    additionalProperties: false,
    maxProperties: 20,
    description: 'What the event was: {"model": "gpt-4o", "tier": "turbo", "feature": "summaries"}.',
  },
);
const Quantities = Type.Record(
  Type.String({ pattern: "^[a-z][a-z0-9_]{0,63}$" }),
  Type.Union([Type.String({ maxLength: 40 }), Type.Integer({ minimum: 0 })]),
  {
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 20,
    description:
      'How much: {"input_tokens": 1200, "output_tokens": "350", "gpu_seconds": "1.25"}. Non-negative; up to 9 decimals as strings.',
  },
);
const eventData = {
  subject_id: Type.Optional(Name("The member, agent or workflow of the customer that used it.")),
  dimensions: Type.Optional(Dimensions),
  quantities: Quantities,
  status: Type.Optional(
    Type.Union([Type.Literal("succeeded"), Type.Literal("failed")], {
      description: "failed events are recorded at zero (default succeeded).",
    }),
  ),
  run_id: Type.Optional(
    Type.String({ minLength: 1, maxLength: 200, description: "The agent run or workflow it belongs to." }),
  ),
  reported_cost: Type.Optional(
    Type.String({
      maxLength: 40,
      description: "Cost you measured, in the cost table's currency; replaces the cost table.",
    }),
  ),
};

/** The native event shape. */
export const NativeEvent = Type.Object(
  {
    id: Type.String({
      minLength: 1,
      maxLength: 200,
      description: "Your id for the event; deduplicated per tenant, forever.",
    }),
    customer_id: Name("The customer who pays."),
    action: Type.String({
      pattern: "^[a-z0-9][a-z0-9_:.-]*$",
      maxLength: 100,
      description: 'What was done: "chat.completion".',
    }),
    time: Type.Optional(
      Type.String({ maxLength: 40, description: "When it happened (RFC 3339); default: when received." }),
    ),
    ...eventData,
  },
  { additionalProperties: false, title: "UsageEvent" },
);

/** The CloudEvents 1.0 JSON shape: `type` is the action, `data` carries the rest. */
export const CloudEvent = Type.Object(
  {
    specversion: Type.Literal("1.0"),
    id: Type.String({ minLength: 1, maxLength: 200 }),
    source: Type.String({ minLength: 1, maxLength: 500 }),
    type: Type.String({ pattern: "^[a-z0-9][a-z0-9_:.-]*$", maxLength: 100 }),
    time: Type.Optional(Type.String({ maxLength: 40 })),
    subject: Type.Optional(Name("The subject, when data has no subject_id.")),
    datacontenttype: Type.Optional(Type.String({ maxLength: 100 })),
    data: Type.Object(
      { customer_id: Name("The customer who pays."), ...eventData },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: true, title: "CloudEvent" },
);

const nativeCheck = TypeCompiler.Compile(NativeEvent);
const cloudCheck = TypeCompiler.Compile(CloudEvent);

/** A rejected event's problem: a stable code and a message. */
export interface EventProblem {
  readonly code: "invalid_event" | "invalid_amount";
  readonly message: string;
}

function firstError(check: typeof nativeCheck | typeof cloudCheck, value: unknown): string {
  const e = check.Errors(value).First();
  if (!e) return "is not a valid event";
  if (/\/quantities\/[^/]+$/.test(e.path)) {
    return `${e.path}: a quantity is a non-negative integer or a decimal string like "1.25".`;
  }
  return `${e.path || "/"}: ${e.message}`;
}

/**
 * Parses one event of either shape into what the writer needs, with the fingerprint of its
 * normalized body (a time left out stays out of the fingerprint, so a retry matches).
 */
export function parseEvent(raw: unknown, now: number): Result<IngestEvent, EventProblem> {
  let n: Static<typeof NativeEvent>;
  if (raw !== null && typeof raw === "object" && "specversion" in raw) {
    if (!cloudCheck.Check(raw))
      return { ok: false, error: { code: "invalid_event", message: firstError(cloudCheck, raw) } };
    const c = raw as Static<typeof CloudEvent>;
    n = {
      ...c.data,
      id: c.id,
      action: c.type,
      ...(c.time !== undefined ? { time: c.time } : {}),
      ...(c.data.subject_id === undefined && c.subject !== undefined ? { subject_id: c.subject } : {}),
    };
  } else {
    if (!nativeCheck.Check(raw))
      return { ok: false, error: { code: "invalid_event", message: firstError(nativeCheck, raw) } };
    n = raw;
  }
  const quantities: Record<string, bigint> = {};
  for (const [name, q] of Object.entries(n.quantities)) {
    if (typeof q === "number" && !Number.isSafeInteger(q)) {
      return {
        ok: false,
        error: {
          code: "invalid_event",
          message: `quantities.${name}: send large or fractional quantities as strings.`,
        },
      };
    }
    // A whole number (the usual token count) needs no text parsing: it is always in range.
    if (typeof q === "number" && q >= 0) {
      quantities[name] = BigInt(q) * QUANTITY_UNIT;
      continue;
    }
    const parsed = parseDecimal(String(q), QUANTITY_SCALE, { allowZero: true });
    if (!parsed.ok)
      return {
        ok: false,
        error: { code: "invalid_event", message: `quantities.${name}: ${parsed.error.message}` },
      };
    quantities[name] = parsed.value;
  }
  let time = now;
  if (n.time !== undefined) {
    const t = parseTimestamp(n.time);
    if (!t.ok) return { ok: false, error: { code: "invalid_event", message: `time: ${t.error.message}` } };
    time = t.value;
  }
  let reportedCost: bigint | null = null;
  if (n.reported_cost !== undefined) {
    const c = parseDecimal(n.reported_cost, 9, { allowZero: true });
    if (!c.ok)
      return { ok: false, error: { code: "invalid_amount", message: `reported_cost: ${c.error.message}` } };
    reportedCost = c.value;
  }
  const dimensions = n.dimensions ?? {};
  const normalized = JSON.stringify([
    n.customer_id,
    n.subject_id ?? null,
    n.action,
    Object.entries(dimensions).sort(([a], [b]) => (a < b ? -1 : 1)),
    Object.entries(quantities)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [k, v.toString()]),
    n.time === undefined ? null : time,
    n.status ?? "succeeded",
    n.run_id ?? null,
    reportedCost?.toString() ?? null,
  ]);
  return ok({
    event: {
      id: n.id,
      customerId: n.customer_id,
      subjectId: n.subject_id ?? null,
      action: n.action,
      dimensions,
      quantities,
      time,
      status: n.status ?? "succeeded",
      runId: n.run_id ?? null,
      reportedCost,
    },
    fingerprint: sha256(normalized),
  });
}
