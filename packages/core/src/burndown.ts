import { minAmount } from "./amount.js";
import type { Grant } from "./model.js";

/**
 * The burn-down order, written once and used everywhere (DESIGN.md, "Burn-down order").
 *
 * A debit draws from eligible grants: active, effective (effectiveAt ≤ now), not expired
 * (now < expiresAt), remaining above zero, and whose scope admits the action. Among them:
 *
 * 1. lower priority number first;
 * 2. scoped grants before unscoped ones;
 * 3. soonest expiry first, never-expiring last;
 * 4. lower cost basis first (free before paid);
 * 5. earliest effectiveAt first;
 * 6. then grant id, compared as strings (code-unit order).
 *
 * The order is total, so a plan is reproducible from the same grants.
 */
export function compareBurnOrder(a: Grant, b: Grant): number {
  if (a.priority !== b.priority) return a.priority - b.priority;
  const aScoped = a.scope !== null;
  const bScoped = b.scope !== null;
  if (aScoped !== bScoped) return aScoped ? -1 : 1;
  if (a.expiresAt !== b.expiresAt) {
    if (a.expiresAt === null) return 1;
    if (b.expiresAt === null) return -1;
    return a.expiresAt - b.expiresAt;
  }
  if (a.costBasis !== b.costBasis) return a.costBasis < b.costBasis ? -1 : 1;
  if (a.effectiveAt !== b.effectiveAt) return a.effectiveAt - b.effectiveAt;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** An action pattern: an action name, or a prefix ending in `.*` (`image.*` admits `image.upscale`). */
export const SCOPE_PATTERN = /^[a-z0-9][a-z0-9_:-]*(?:\.[a-z0-9_:-]+)*(?:\.\*)?$/;

/** Whether a grant's scope admits an action. No scope admits all; a scoped grant needs an action. */
export function scopeAdmits(scope: readonly string[] | null, action: string | null): boolean {
  if (scope === null) return true;
  if (action === null) return false;
  for (const pattern of scope) {
    if (pattern.endsWith(".*")) {
      if (action.startsWith(pattern.slice(0, -1))) return true;
    } else if (pattern === action) return true;
  }
  return false;
}

/** True when a grant holds credits usable at `now` for some action: active, effective, unexpired. */
export function isDrawableNow(grant: Grant, now: number): boolean {
  return (
    grant.status === "active" &&
    grant.remaining > 0n &&
    grant.effectiveAt <= now &&
    (grant.expiresAt === null || now < grant.expiresAt)
  );
}

/** True when a grant can be drawn at `now` for `action`. */
export function isEligible(grant: Grant, action: string | null, now: number): boolean {
  return isDrawableNow(grant, now) && scopeAdmits(grant.scope, action);
}

/** True when a grant is active but its expiry has passed: it awaits breakage. */
export const isDueToExpire = (grant: Grant, now: number): boolean =>
  grant.status === "active" && grant.expiresAt !== null && grant.expiresAt <= now;

/** Grants of one wallet, in the order wallets are drawn (a member's own, then the pool's). */
export interface DrawSource {
  readonly walletId: string;
  readonly grants: readonly Grant[];
}

/** One grant's part of a debit. */
export interface Draw {
  readonly grantId: string;
  readonly walletId: string;
  readonly amount: bigint;
}

/** A debit plan: what to take from which grant, and what could not be covered. */
export interface DrawPlan {
  readonly draws: readonly Draw[];
  /** The part of the amount no eligible grant covers; 0 when fully covered. */
  readonly shortfall: bigint;
}

/** Sum of what can be drawn for `action` at `now` across the sources. */
export function drawable(sources: readonly DrawSource[], action: string | null, now: number): bigint {
  let total = 0n;
  for (const source of sources)
    for (const g of source.grants) if (isEligible(g, action, now)) total += g.remaining;
  return total;
}

/**
 * Plans a debit of `amount` units: each source in turn, its eligible grants in
 * {@link compareBurnOrder}, each drawn down to zero before the next.
 */
export function planDraws(
  sources: readonly DrawSource[],
  amount: bigint,
  action: string | null,
  now: number,
): DrawPlan {
  const draws: Draw[] = [];
  let left = amount;
  for (const source of sources) {
    if (left === 0n) break;
    const eligible = source.grants.filter((g) => isEligible(g, action, now)).sort(compareBurnOrder);
    for (const grant of eligible) {
      if (left === 0n) break;
      const take = minAmount(grant.remaining, left);
      draws.push({ grantId: grant.id, walletId: source.walletId, amount: take });
      left -= take;
    }
  }
  return { draws, shortfall: left };
}
