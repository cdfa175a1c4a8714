import assert from "node:assert/strict";
import type { Result } from "@drawdown/core";
import { type AuthorizeRequest, type Holds, type Store, withTopUpsFirst } from "../../src/index.js";

/** The value of a result that must be ok; its code and message otherwise. */
export function okv<T>(r: Result<T>): T {
  assert.ok(r.ok, r.ok ? "" : `${r.error.code}: ${r.error.message}`);
  return r.value;
}

/**
 * Authorize alone, as the server runs it: in a transaction of its own, the auto top-up it asks
 * for bought first with no transaction open (`withTopUpsFirst`).
 */
export function authorizeAlone(store: Store, holds: Holds, tenantId: string, request: AuthorizeRequest) {
  return withTopUpsFirst(holds.commerce, tenantId, (tried) =>
    store.db.transaction((tx) => holds.authorize(tx, tenantId, request, tried)),
  );
}
