/**
 * Shared helpers for the core's tests: a deterministic id generator, a grant factory,
 * bigint-aware serialization and deep freezing. Not a test file itself.
 */
import type { Context, Grant, IdGenerator, IdPrefix } from "../src/index.js";

/** Counter ids padded to six digits, so string order equals creation order: `grt_000001`. */
export function counterIds(): IdGenerator {
  let n = 0;
  return (prefix: IdPrefix) => `${prefix}_${String(++n).padStart(6, "0")}`;
}

/** A context at `now` with its own counter id generator. */
export const ctxAt = (now: number, newId: IdGenerator = counterIds()): Context => ({ now, newId });

/** A plain active grant with sensible defaults; override any field. */
export function makeGrant(overrides: Partial<Grant> & { id: string }): Grant {
  const amount = overrides.amount ?? 100n;
  return {
    walletId: "wal_a",
    amount,
    remaining: amount,
    source: "plan",
    costBasis: 0n,
    currency: null,
    effectiveAt: 0,
    expiresAt: null,
    priority: 50,
    scope: null,
    metadata: {},
    status: "active",
    createdAt: 0,
    ...overrides,
  };
}

/** JSON with bigints written as `"123n"`, so two snapshots compare exactly. */
export const serialize = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? `${v.toString()}n` : v));

/** Freezes an object graph, so any later mutation throws (test modules are strict). */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as Record<string, unknown>)) deepFreeze(child);
  }
  return value;
}

/** Sign of a comparator result, as -1, 0 or 1. */
export const sign = (n: number): number => (n < 0 ? -1 : n > 0 ? 1 : 0);
