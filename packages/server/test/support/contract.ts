import { Drawdown } from "@drawdown/sdk";
import { Value } from "@sinclair/typebox/value";
import { API_ROUTES } from "../../src/app.js";
import type { ApiErrorCode } from "../../src/errors.js";
import type { Route } from "../../src/routes.js";
import { ProblemView } from "../../src/schemas.js";

/**
 * Checks every response a test receives against the documentation: a success body against
 * its route's `response` schema (and its documented status), an error body against the
 * problem schema, with a code the route documents or one any route may answer with.
 * So the OpenAPI document, which is generated from the same schemas, cannot drift from
 * what the server sends.
 */

/** Codes any route may answer with, whatever its own `errors` list says. */
const ANY_ROUTE: ReadonlySet<ApiErrorCode> = new Set<ApiErrorCode>([
  "unauthorized",
  "forbidden",
  "validation_failed",
  "malformed_json",
  "payload_too_large",
  "unsupported_media_type",
  "invalid_idempotency_key",
  "idempotency_key_reused",
  "internal_error",
]);

/** Every route of the API (the app's one table). */
export const ALL_ROUTES: readonly Route[] = API_ROUTES;

const matchers = ALL_ROUTES.map((route) => ({
  route,
  pattern: new RegExp(`^${route.url.replace(/:[a-z_]+/g, "[^/]+")}$`),
}));

/** Finds the route a request went to. */
export function routeOf(method: string, pathname: string): Route | undefined {
  return matchers.find((m) => m.route.method === method && m.pattern.test(pathname))?.route;
}

/** What a contract-checking fetch saw. */
export interface ContractLog {
  /** Statuses seen per operationId. */
  readonly seen: Map<string, number[]>;
  /** Every mismatch between a response and the documentation (should stay empty). */
  readonly violations: string[];
}

export function newContractLog(): ContractLog {
  return { seen: new Map(), violations: [] };
}

/** A fetch (for the SDK) that checks each response against the route table and records it in `log`. */
export function contractFetch(log: ContractLog): typeof globalThis.fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init?.method ?? "GET";
    // Public pages (the public rate card) are outside the route table; their tests check them.
    if (url.pathname.startsWith("/v1/public/")) return response;
    const route = routeOf(method, url.pathname);
    const where = `${method} ${url.pathname} → ${response.status}`;
    if (!route) {
      log.violations.push(`${where}: no route in the route table`);
      return response;
    }
    const statuses = log.seen.get(route.operationId) ?? [];
    statuses.push(response.status);
    log.seen.set(route.operationId, statuses);
    const text = await response.clone().text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      log.violations.push(`${where}: body is not JSON: ${text.slice(0, 100)}`);
      return response;
    }
    const type = response.headers.get("content-type") ?? "";
    if (response.ok) {
      if (response.status !== (route.status ?? 200) && response.status !== route.duplicateStatus)
        log.violations.push(`${where}: documented status is ${route.status ?? 200}`);
      if (!type.startsWith("application/json")) log.violations.push(`${where}: content-type ${type}`);
      if (!Value.Check(route.response, body)) {
        const errors = [...Value.Errors(route.response, body)].slice(0, 5);
        log.violations.push(
          `${where}: body does not match ${route.operationId}'s schema: ${errors
            .map((e) => `${e.path} ${e.message}`)
            .join("; ")}`,
        );
      }
    } else {
      if (!type.startsWith("application/problem+json")) log.violations.push(`${where}: content-type ${type}`);
      if (!Value.Check(ProblemView, body)) {
        log.violations.push(`${where}: not a problem document: ${text.slice(0, 200)}`);
      } else {
        const p = body as { code: ApiErrorCode; status: number; request_id: string };
        if (!route.errors.includes(p.code) && !ANY_ROUTE.has(p.code))
          log.violations.push(`${where}: code ${p.code} is not in ${route.operationId}'s documented errors`);
        if (p.status !== response.status) log.violations.push(`${where}: problem status ${p.status}`);
        // A replay answers the first result as it was, with the first request's id in it.
        const replayed = response.headers.get("idempotent-replayed") === "true";
        if (!replayed && p.request_id !== response.headers.get("request-id"))
          log.violations.push(`${where}: request_id differs from the request-id header`);
      }
    }
    return response;
  };
}

/** An SDK client for `baseUrl` whose every response is checked against the route table into `log` (no retries). */
export function contractClient(baseUrl: string, apiKey: string, log: ContractLog): Drawdown {
  return new Drawdown({ apiKey, baseUrl, fetch: contractFetch(log), maxRetries: 0 });
}
