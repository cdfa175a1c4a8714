import type { TSchema } from "@sinclair/typebox";
import { ERRORS } from "./errors.js";
import type { Route } from "./routes.js";
import { ProblemView } from "./schemas.js";

/** JSON Schema without TypeBox's symbol keys, as OpenAPI 3.1 embeds it. */
const plain = (schema: TSchema): Record<string, unknown> => JSON.parse(JSON.stringify(schema));

/**
 * Builds the OpenAPI 3.1 document from the route table: the same schemas Fastify validates
 * requests with, so the document and the checks cannot disagree.
 */
export function buildOpenApi(routes: readonly Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([a-z_]+)/g, "{$1}");
    const parameters: unknown[] = [];
    for (const [where, schema] of [
      ["path", r.params],
      ["query", r.query],
    ] as const) {
      if (!schema) continue;
      const props = (schema as unknown as { properties: Record<string, TSchema> }).properties;
      const required = new Set((schema as unknown as { required?: string[] }).required ?? []);
      for (const [name, prop] of Object.entries(props)) {
        const { description, ...rest } = plain(prop);
        parameters.push({
          name,
          in: where,
          required: where === "path" || required.has(name),
          description,
          schema: rest,
        });
      }
    }
    const errorStatuses = new Set([401, ...r.errors.map((c) => ERRORS[c].status)]);
    if (r.body || r.params || r.query) errorStatuses.add(400);
    if (r.access === "secret") errorStatuses.add(403);
    const responses: Record<string, unknown> = {
      [String(r.status ?? 200)]: {
        description: "Success.",
        content: { "application/json": { schema: plain(r.response) } },
      },
      ...(r.duplicateStatus
        ? {
            [String(r.duplicateStatus)]: {
              description: "A duplicate: the first result, again.",
              content: { "application/json": { schema: plain(r.response) } },
            },
          }
        : {}),
    };
    for (const status of [...errorStatuses].sort()) {
      const codes = Object.entries(ERRORS)
        .filter(
          ([code, e]) =>
            e.status === status &&
            (r.errors.includes(code as never) ||
              ["validation_failed", "malformed_json", "unauthorized", "forbidden"].includes(code)),
        )
        .map(([code]) => code);
      responses[String(status)] = {
        description: `Problem: ${codes.join(", ") || "see codes"}.`,
        content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
      };
    }
    const operation: Record<string, unknown> = {
      operationId: r.operationId,
      tags: [r.tag],
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      ...(parameters.length ? { parameters } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: r.method === "POST" && r.operationId !== "voidGrant",
              content: { "application/json": { schema: plain(r.body) } },
            },
          }
        : {}),
      responses,
      "x-access":
        r.access === "read"
          ? "secret or restricted key (restricted: its customer only)"
          : r.access === "customer"
            ? "secret key, or a restricted key for its own customer (see the description)"
            : "secret key",
      "x-error-codes": r.errors,
    };
    if (r.method === "POST") {
      operation.parameters = [
        ...parameters,
        {
          name: "Idempotency-Key",
          in: "header",
          required: false,
          description:
            "Makes the POST safe to retry: the same key with the same body returns the first result; with another body, 409 idempotency_key_reused.",
          schema: { type: "string", maxLength: 255 },
        },
      ];
    }
    paths[path] = { ...(paths[path] ?? {}), [r.method.toLowerCase()]: operation };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Drawdown API",
      version: "0.1.0",
      description:
        "Credit ledger and metering for AI products. Amounts are decimal strings (never JSON numbers) with up to 9 decimals; times are RFC 3339; errors are RFC 9457 problem+json with a stable `code`; lists page with `cursor`.",
    },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: "An API key: dd_<env>_sk_… (secret) or dd_<env>_rk_… (restricted).",
        },
      },
      schemas: { Problem: plain(ProblemView) },
      "x-error-codes": Object.fromEntries(
        Object.entries(ERRORS).map(([code, e]) => [code, { status: e.status, title: e.title }]),
      ),
    },
    paths,
  };
}
