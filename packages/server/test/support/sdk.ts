import assert from "node:assert/strict";
import { DrawdownError, type DrawdownErrorCode, toCredits, toUnits } from "@drawdown/sdk";

/**
 * Awaits an SDK call that must fail with `code` (and `status`), returning the error. An error
 * the API answered carries its request id.
 */
export async function fails(
  call: Promise<unknown>,
  code: DrawdownErrorCode,
  status?: number,
): Promise<DrawdownError> {
  const outcome = await call.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!("error" in outcome)) assert.fail(`expected ${code}, got ${JSON.stringify(outcome.value)}`);
  const e = outcome.error;
  assert.ok(e instanceof DrawdownError, `expected a DrawdownError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  if (status !== undefined) assert.equal(e.status, status);
  if (e.code !== "connection_error" && e.code !== "invalid_response")
    assert.match(e.requestId ?? "", /^req_/);
  return e;
}

/** Sums decimal-string amounts exactly. */
export const sum = (amounts: readonly string[]): string =>
  toCredits(amounts.reduce((a, s) => a + toUnits(s), 0n));
