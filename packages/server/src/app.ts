import { createHash } from "node:crypto";
import {
  Alerts,
  type ApiKey,
  Commerce,
  Contracts,
  Gifts,
  Holds,
  HoldWriter,
  IngestWriter,
  Metering,
  Runs,
  randomHex,
  type Store,
  Subscriptions,
  TopUpsTried,
  Webhooks,
  withTopUpsFirst,
} from "@drawdown/storage";
import { Type } from "@sinclair/typebox";
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from "fastify";
import { ALERT_ROUTES } from "./alert-routes.js";
import { CAP_ROUTES } from "./cap-routes.js";
import { COMMERCE_ROUTES } from "./commerce-routes.js";
import type { Config } from "./config.js";
import { CONTRACT_ROUTES } from "./contract-routes.js";
import { ApiError, type ApiErrorCode, type Problem, problem } from "./errors.js";
import { EXPIRY_ROUTES } from "./expiry-routes.js";
import { GIFT_ROUTES } from "./gift-routes.js";
import { HOLD_ROUTES } from "./hold-routes.js";
import { LIFECYCLE_ROUTES } from "./lifecycle-routes.js";
import { METERING_ROUTES, publicRateCard } from "./metering-routes.js";
import { buildOpenApi } from "./openapi.js";
import { OVERAGE_ROUTES } from "./overage-routes.js";
import { renderReference } from "./reference.js";
import { type Reply, ROUTES, type Route } from "./routes.js";
import { RUN_ROUTES } from "./run-routes.js";
import { WEBHOOK_ROUTES } from "./webhook-routes.js";

/** Every route of the API, from each area's table: what the app registers and OpenAPI lists. */
export const API_ROUTES: readonly Route[] = [
  ...ROUTES,
  ...METERING_ROUTES,
  ...OVERAGE_ROUTES,
  ...LIFECYCLE_ROUTES,
  ...GIFT_ROUTES,
  ...EXPIRY_ROUTES,
  ...CONTRACT_ROUTES,
  ...COMMERCE_ROUTES,
  ...HOLD_ROUTES,
  ...RUN_ROUTES,
  ...CAP_ROUTES,
  ...WEBHOOK_ROUTES,
  ...ALERT_ROUTES,
];

declare module "fastify" {
  interface FastifyRequest {
    auth?: { key: ApiKey; tenantId: string };
  }
}

/** What the app needs: the store, and the parts of the configuration the HTTP layer uses. */
export interface AppOptions {
  readonly store: Store;
  /** Rate cards and pricing; built over the store when absent. */
  readonly metering?: Metering;
  /** The ingest writer; built over the store when absent. */
  readonly writer?: IngestWriter;
  /** Plans and subscriptions (a scheduler job of the store); built over the store when absent. */
  readonly subscriptions?: Subscriptions;
  /** Contracts (their installments are a scheduler job of the store); built over the store when absent. */
  readonly contracts?: Contracts;
  /** Price books, purchases and auto top-up (a scheduler job of the store); built over the store when absent. */
  readonly commerce?: Commerce;
  /** Authorize and holds (their timeouts a scheduler job of the store); built over the store when absent. */
  readonly holds?: Holds;
  /** Webhook endpoints and the deliverer (a scheduler job of the store); built over the store when absent. */
  readonly webhooks?: Webhooks;
  /** `webhookPrivateNetworks` is required: each caller says whether webhooks may reach private networks. */
  readonly config: Pick<Config, "bodyLimit" | "logRequests" | "webhookPrivateNetworks"> &
    Partial<Pick<Config, "writerLanes" | "webhookTimeoutMs">>;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The query schema of a route that takes none: an unknown parameter is an error, not ignored. */
const NO_QUERY = Type.Object({}, { additionalProperties: false });

/**
 * The path of the first string (value or key) holding a NUL character, which PostgreSQL
 * cannot store in text or jsonb. Iterative, so no input nests deep enough to overflow.
 */
function nulPath(root: unknown, rootPath: string): string | null {
  // Paths are spelled only for the value found: a batch of events has thousands of values.
  type At = { readonly value: unknown; readonly parent: At | null; readonly key: string | number };
  const spell = (at: At): string => {
    const keys: (string | number)[] = [];
    for (let a: At | null = at; a !== null && a.parent !== null; a = a.parent) keys.push(a.key);
    return [rootPath, ...keys.reverse()].join("/");
  };
  const stack: At[] = [{ value: root, parent: null, key: "" }];
  while (stack.length > 0) {
    const at = stack.pop()!;
    const value = at.value;
    if (typeof value === "string") {
      if (value.includes("\u0000")) return spell(at);
    } else if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push({ value: value[i], parent: at, key: i });
    } else if (value !== null && typeof value === "object") {
      for (const k of Object.keys(value)) {
        if (k.includes("\u0000")) return `${spell(at)}/${k}`;
        stack.push({ value: (value as Record<string, unknown>)[k], parent: at, key: k });
      }
    }
  }
  return null;
}

/** A stable fingerprint of a POST: method, path and canonical JSON body. */
function fingerprint(method: string, path: string, body: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(
        Object.keys(v as object)
          .sort()
          .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return createHash("sha256")
    .update(`${method} ${path}\n${JSON.stringify(canonical(body ?? null))}`)
    .digest("hex");
}

function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type("application/problem+json").send(p);
}

/** Fastify's own errors, mapped to our codes. */
function codeOf(error: FastifyError): { code: ApiErrorCode; detail: string } {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { code: "payload_too_large", detail: "The request body is larger than this server accepts." };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return { code: "unsupported_media_type", detail: "Send JSON with Content-Type: application/json." };
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { code: "malformed_json", detail: "The body is empty; send a JSON object." };
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { code: "malformed_json", detail: "Content-Length does not match the body." };
    default:
      if (error instanceof SyntaxError || error.code === "FST_ERR_CTP_INVALID_JSON_BODY") {
        return { code: "malformed_json", detail: `The body is not valid JSON: ${error.message}` };
      }
      if ((error.statusCode ?? 500) === 400 && /JSON|prototype|constructor/i.test(error.message)) {
        return { code: "malformed_json", detail: error.message };
      }
      return {
        code: "internal_error",
        detail: "Something went wrong on our side; the request id helps us find it.",
      };
  }
}

/** Turns Ajv's messages into ones a person can act on, with the field's path. */
function validationErrors(error: FastifyError): { path: string; message: string }[] {
  return (error.validation ?? []).map((v) => {
    const where = (error.validationContext ?? "body") + (v.instancePath || "");
    const params = v.params as Record<string, unknown>;
    if (v.keyword === "additionalProperties") {
      return {
        path: `${where}/${String(params.additionalProperty)}`,
        message: `unknown field "${String(params.additionalProperty)}"`,
      };
    }
    if (v.keyword === "required") {
      return {
        path: `${where}/${String(params.missingProperty)}`,
        message: `"${String(params.missingProperty)}" is required`,
      };
    }
    return { path: where, message: v.message ?? "is invalid" };
  });
}

/**
 * Builds the HTTP app: authentication, validation, idempotency and the problem+json
 * mapping around the route table. The handlers know nothing of HTTP beyond their reply.
 */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { store, config } = options;
  const app = Fastify({
    bodyLimit: config.bodyLimit,
    logger: config.logRequests ? { level: "info" } : false,
    // 12 random bytes from a pooled buffer: randomBytes(12) made a system call per request.
    genReqId: () => `req_${randomHex(12)}`,
    requestIdHeader: false,
    ajv: {
      // Strict: no silent coercion, no silently dropped fields, no defaults filled in.
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: true },
    },
    return503OnClosing: true,
    // Path parameters as long as any schema admits reach validation, which answers for them.
    routerOptions: { maxParamLength: 1000 },
    // Errors found before routing (a malformed percent-escape, an overlong path): problems too.
    frameworkErrors: (error, req, reply) => {
      reply.header("request-id", req.id);
      if (error.code === "FST_ERR_BAD_URL" || error.code === "FST_ERR_MAX_PARAM_LENGTH") {
        const detail =
          error.code === "FST_ERR_BAD_URL"
            ? "The URL is not valid: a percent-escape is malformed."
            : "A path parameter is longer than any this API takes.";
        return sendProblem(reply, problem("validation_failed", detail, req.id));
      }
      return sendProblem(reply, problem("internal_error", "Something went wrong on our side.", req.id));
    },
  });
  // JSON only: Fastify would otherwise take text/plain bodies as strings.
  app.removeContentTypeParser("text/plain");

  app.addHook("onRequest", async (req, reply) => {
    reply.header("request-id", req.id);
  });

  app.setNotFoundHandler((req, reply) =>
    sendProblem(
      reply,
      problem("route_not_found", `No route ${req.method} ${req.url.split("?")[0]}; see /reference.`, req.id),
    ),
  );

  app.setErrorHandler((error: FastifyError, req, reply) => {
    if (error instanceof ApiError)
      return sendProblem(reply, problem(error.code, error.message, req.id, error.extra));
    if (error.validation) {
      const errors = validationErrors(error);
      return sendProblem(
        reply,
        problem("validation_failed", errors.map((e) => `${e.path}: ${e.message}`).join("; "), req.id, {
          errors,
        }),
      );
    }
    const { code, detail } = codeOf(error);
    if (code === "internal_error") req.log.error(error);
    if (code === "internal_error" && !config.logRequests) console.error(error);
    return sendProblem(reply, problem(code, detail, req.id));
  });

  const metering = options.metering ?? new Metering((tenantId) => store.now(tenantId), store.newId);
  // Authorize tries the wallet's auto top-up before denying (overage policies): holds need commerce.
  const commerce = options.commerce ?? new Commerce(store);
  const holds = options.holds ?? new Holds(store, metering, commerce);
  const services: Services = {
    store,
    metering,
    writer: options.writer ?? new IngestWriter(store, metering, { lanes: config.writerLanes ?? 2, commerce }),
    subscriptions: options.subscriptions ?? new Subscriptions(store),
    gifts: new Gifts(store),
    contracts: options.contracts ?? new Contracts(store, metering),
    commerce,
    holds,
    runs: new Runs(store, holds),
    holdWriter: new HoldWriter(store, holds, metering),
    webhooks:
      options.webhooks ??
      new Webhooks(store, {
        timeoutMs: config.webhookTimeoutMs ?? 10_000,
        privateNetworks: config.webhookPrivateNetworks,
      }),
    alerts: new Alerts(store),
  };
  // The machine-readable and the human-readable reference, both public.
  const openapi = buildOpenApi(API_ROUTES);
  (openapi.paths as Record<string, unknown>)["/v1/public/{tenant_id}/rate_card"] = {
    get: {
      operationId: "getPublicRateCard",
      tags: ["Rate cards"],
      summary: "A tenant's published rate card (public)",
      description:
        "No key needed: the current and the next version of the tenant's default card, its rates by action, model and quantity, as customers should be able to see them.",
      security: [],
      parameters: [
        { name: "tenant_id", in: "path", required: true, schema: { type: "string", maxLength: 64 } },
      ],
      responses: {
        "200": {
          description: "The published rates.",
          content: { "application/json": { schema: { type: "object" } } },
        },
        "404": {
          description: "Problem: not_found (no such tenant, or nothing published).",
          content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
        },
      },
    },
  };
  const referenceHtml = renderReference(openapi);
  app.get("/v1/openapi.json", async () => openapi);
  app.get("/reference", async (_req, reply) => reply.type("text/html; charset=utf-8").send(referenceHtml));
  app.get("/health", async () => ({ ok: true }));
  // Public and read-only: a tenant's current consumption rates, as its customers should see them.
  app.get<{ Params: { tenant_id: string } }>("/v1/public/:tenant_id/rate_card", async (req, reply) => {
    const tenantId = req.params.tenant_id;
    const card = /^ten_[0-9a-z]{1,60}$/.test(tenantId)
      ? (await metering.catalog(store.db, tenantId)).cards.get(
          (await metering.catalog(store.db, tenantId)).defaultCardId ?? "",
        )
      : undefined;
    const body = publicRateCard(card, store.now(tenantId));
    if (!body)
      return sendProblem(
        reply,
        problem("not_found", `No published rate card for ${tenantId.slice(0, 64)}.`, req.id),
      );
    return body;
  });

  // CloudEvents content types carry JSON too.
  app.addContentTypeParser(
    ["application/cloudevents+json", "application/cloudevents-batch+json"],
    { parseAs: "string" },
    app.getDefaultJsonParser("error", "error"),
  );
  for (const r of API_ROUTES) register(app, services, r);
  return app;
}

async function authenticate(store: Store, req: FastifyRequest): Promise<{ key: ApiKey; tenantId: string }> {
  const header = req.headers.authorization;
  const match = typeof header === "string" ? /^Bearer (\S+)$/.exec(header) : null;
  if (!match) throw new ApiError("unauthorized", "Send your API key as 'Authorization: Bearer <key>'.");
  const secret = match[1]!;
  if (secret.length > 200) throw new ApiError("unauthorized", "This API key is not valid, or was revoked.");
  const found = await store.authenticate(secret);
  if (!found) throw new ApiError("unauthorized", "This API key is not valid, or was revoked.");
  return { key: found.key, tenantId: found.tenant.id };
}

/** What the handlers run on. */
interface Services {
  readonly store: Store;
  readonly metering: Metering;
  readonly writer: IngestWriter;
  readonly subscriptions: Subscriptions;
  readonly gifts: Gifts;
  readonly contracts: Contracts;
  readonly commerce: Commerce;
  readonly holds: Holds;
  readonly runs: Runs;
  readonly holdWriter: HoldWriter;
  readonly webhooks: Webhooks;
  readonly alerts: Alerts;
}

function register(app: FastifyInstance, services: Services, r: Route): void {
  const { store } = services;
  app.route({
    method: r.method,
    url: r.url,
    ...(r.bodyLimit ? { bodyLimit: r.bodyLimit } : {}),
    schema: {
      ...(r.params ? { params: r.params } : {}),
      querystring: r.query ?? NO_QUERY,
      ...(r.body ? { body: r.body } : {}),
    },
    // Authenticate before validating, so an anonymous caller learns nothing about the schema.
    onRequest: async (req) => {
      req.auth = await authenticate(store, req);
      if (r.access === "secret" && req.auth.key.kind !== "secret") {
        throw new ApiError("forbidden", "This needs a secret key; restricted keys only read their customer.");
      }
    },
    preValidation: async (req) => {
      // A POST without a body is an empty object (void, revoke, reconcile need none).
      if (r.method === "POST" && req.body === undefined) req.body = {};
      if (r.method === "GET" && req.query === undefined) (req as { query: unknown }).query = {};
    },
    // After validation (so the input has the schema's bounded shape), before any query runs.
    preHandler: async (req) => {
      const path =
        nulPath(req.params, "params") ?? nulPath(req.query, "querystring") ?? nulPath(req.body, "body");
      if (path !== null) {
        throw new ApiError("validation_failed", `${path}: must not contain the NUL character (\\u0000).`, {
          errors: [{ path, message: "must not contain the NUL character (\\u0000)" }],
        });
      }
    },
    handler: async (req, reply) => {
      const auth = req.auth!;
      const base = {
        tenantId: auth.tenantId,
        key: auth.key,
        requestId: req.id,
        params: req.params as never,
        query: (req.query ?? {}) as never,
        body: req.body as never,
        ...services,
        // Routes outside an Idempotency-Key transaction are not run again: they try no top-up.
        topUps: TopUpsTried.none(),
      };
      let out: Reply;
      if (r.method === "GET" || r.idempotencyKey === false) {
        out = await r.handle({ ...base, tx: store.db });
      } else {
        const header = req.headers["idempotency-key"];
        const key = typeof header === "string" ? header : null;
        if (header !== undefined && (key === null || !IDEMPOTENCY_KEY.test(key))) {
          throw new ApiError(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
          );
        }
        const path = req.url.split("?")[0]!;
        // Only a keyed request is compared with an earlier one: no hash of the body without a key.
        const print = key === null ? "" : fingerprint(r.method, path, req.body);
        if (r.groupCommit) {
          out = await groupCommitted(r, { ...base, tx: store.db }, key, print, req.id);
          if (out.conflict) throw keyReused();
          if (out.replayed) reply.header("idempotent-replayed", "true");
          if (out.problem) return sendProblem(reply, out.body as Problem);
          return reply.code(out.status).send(out.body);
        }
        // What this request answers now; the idempotency record may keep less (no secrets).
        let answer: Reply | undefined;
        const idempotency = key === null ? null : { key, fingerprint: print };
        const result = await withTopUpsFirst(services.commerce, auth.tenantId, (topUps) =>
          store.idempotent(auth.tenantId, key, print, async (tx) => {
            try {
              answer = await r.handle({ ...base, tx, idempotency, topUps });
              return r.stored ? { ...answer, body: r.stored(answer.body) } : answer;
            } catch (error) {
              // A business failure is this request's result too: stored, and replayed on retry.
              if (error instanceof ApiError) {
                const p = problem(error.code, error.message, req.id, error.extra);
                return { status: p.status, body: p, problem: true } satisfies Reply;
              }
              throw error;
            }
          }),
        );
        if (result.kind === "conflict") throw keyReused();
        if (result.kind === "replayed") reply.header("idempotent-replayed", "true");
        out = result.kind === "fresh" && answer ? answer : result.outcome;
      }
      if (out.problem) return sendProblem(reply, out.body as Problem);
      return reply.code(out.status).send(out.body);
    },
  });
}

const keyReused = () =>
  new ApiError(
    "idempotency_key_reused",
    "This Idempotency-Key was used with a different request; use a new key for a new request.",
  );

/**
 * Runs a `groupCommit` route: its writer claims the Idempotency-Key in the batch's transaction.
 * A business failure raised before the writer (a missing hold, a bad event) is the request's
 * result too: stored under the key in a transaction of its own, and replayed on retry.
 */
async function groupCommitted(
  r: Route,
  ctx: Parameters<Route["handle"]>[0],
  key: string | null,
  print: string,
  requestId: string,
): Promise<Reply> {
  try {
    return await r.handle({ ...ctx, idempotency: key === null ? null : { key, fingerprint: print } });
  } catch (error) {
    if (!(error instanceof ApiError) || key === null) throw error;
    const p = problem(error.code, error.message, requestId, error.extra);
    const failed: Reply = { status: p.status, body: p, problem: true };
    const stored = await ctx.store.idempotent(ctx.tenantId, key, print, async () => failed);
    if (stored.kind === "conflict") return { status: 409, body: null, conflict: true };
    return stored.kind === "replayed" ? { ...stored.outcome, replayed: true } : failed;
  }
}
