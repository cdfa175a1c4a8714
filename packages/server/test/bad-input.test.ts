import assert from "node:assert/strict";
import { test } from "node:test";
import {
  API_ROUTES,
  casesOf,
  describeBadInput,
  requiredCategories,
  routeKey,
  SPECS,
} from "./support/bad-input.js";

/**
 * Bad input, for every route of the API: authentication and access, path ids (unknown,
 * another tenant's, malformed), query parameters, the body as a whole (malformed, not an
 * object, wrong content type, over the size limit), the Idempotency-Key (invalid, reused with
 * another request), and the body's fields (missing, unknown, wrong types, amounts, timestamps,
 * ids), plus each route's business failures. Every case answers a clear 4xx problem with its
 * exact code and changes nothing in the database. The cases live in
 * support/bad-input-specs.ts (per route) and support/bad-input.ts (generated from schemas).
 */

test("every route has a spec, and every spec a route", () => {
  const routes = new Set(API_ROUTES.map(routeKey));
  const missing = [...routes].filter((k) => !SPECS[k]);
  assert.deepEqual(
    missing,
    [],
    "routes without bad-input cases: add them to SPECS in support/bad-input-specs.ts",
  );
  const stale = Object.keys(SPECS).filter((k) => !routes.has(k));
  assert.deepEqual(stale, [], "specs for routes that no longer exist");
});

test("every route has cases in each category that applies to it", () => {
  for (const r of API_ROUTES) {
    const have = new Set(casesOf(r).map((c) => c.category));
    const lacking = requiredCategories(r).filter((c) => !have.has(c));
    assert.deepEqual(lacking, [], `${routeKey(r)} lacks cases`);
  }
});

describeBadInput("bad input");
