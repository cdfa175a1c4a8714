import { divRound, formatAmount, inRange, MAX_AMOUNT, minAmount, UNIT } from "./amount.js";
import { SCOPE_PATTERN, scopeAdmits } from "./burndown.js";
import { entry, grantAccount } from "./journal.js";
import { type Context, makeTx } from "./ledger.js";
import type { Entry, Grant, JournalTransaction } from "./model.js";
import { fail, invariant, ok, type Result } from "./result.js";

/**
 * Overage policies (DESIGN.md, "Policies: meanings"): what happens when credits do not cover
 * a debit, as pure functions that usage (planUsage), authorize and settle (holds.ts), period
 * renewal and billing call. A policy lives on a customer's pool wallet; a plan may carry one
 * that its subscribers' pools take, unless the wallet set its own (see {@link effectiveOverage}).
 *
 * - `hard_cap`: never below zero; what credits cannot cover is denied (authorize) or recorded
 *   unpaid (usage).
 * - `soft_cap`: down to a negative floor; what is owed (the wallet's overdraft) may carry a
 *   price per credit, and is then billed (moved to `overage_receivable` with an invoice) at
 *   each period renewal and on demand.
 * - `throttle`: below a level of available credits, authorize answers `throttle` for actions
 *   not listed as allowed (naming the allowed ones and a fallback); the floor is zero, so usage
 *   that already happened follows hard cap rules.
 * - `carry_deficit`: down to a negative floor like a soft cap; at the next period renewal the
 *   new plan credits first repay what is owed, so the period starts with the grant minus the
 *   deficit.
 * - `fair_use`: never denied; the floor is the amount range's end. Only alerts say it ran out.
 *
 * Auto top-up is not a mode: whatever the mode, a wallet with auto top-up enabled tries a
 * purchase before authorize denies for lack of credits (storage does it; see commerce).
 */

/** The closed list of overage modes. */
export const OVERAGE_MODES = ["hard_cap", "soft_cap", "throttle", "carry_deficit", "fair_use"] as const;
export type OverageMode = (typeof OVERAGE_MODES)[number];

/** Money per credit, at 9 decimals, in a currency. */
export interface OveragePrice {
  /** Money per whole credit, in units at scale 9 (> 0). */
  readonly amount: bigint;
  readonly currency: string;
}

/** Throttle's rule: below `level` available credits only the listed actions (and the fallback) proceed. */
export interface ThrottleRule {
  /** Credits available (after the estimate) under which the throttle applies; ≥ 0. */
  readonly level: bigint;
  /** Actions (or `prefix.*` patterns) still allowed below the level. */
  readonly allowedActions: readonly string[];
  /** The cheaper action to suggest instead; allowed below the level too. Null: none. */
  readonly fallbackAction: string | null;
}

/**
 * A wallet's overage policy. `floor` (≤ 0) is how low the balance may go: 0 for hard cap and
 * throttle, the policy's for soft cap and carry deficit, `-MAX_AMOUNT` for fair use. `price`
 * only on a soft cap; `throttle` only (and always) on throttle. Older callers build
 * `{ mode, floor }` only: the optional fields then mean none.
 */
export interface OveragePolicy {
  readonly mode: OverageMode;
  readonly floor: bigint;
  readonly price?: OveragePrice | null;
  readonly throttle?: ThrottleRule | null;
}

/** The policy of a wallet that set none and whose plan carries none. */
export const DEFAULT_OVERAGE: OveragePolicy = { mode: "hard_cap", floor: 0n, price: null, throttle: null };

/** Bounds of a policy, shared with the API's validation. */
export const OVERAGE_LIMITS = { maxAllowedActions: 50, maxPricePerCredit: 1_000_000n * UNIT } as const;

/** Fair use's floor: the end of the amount range, so nothing is ever denied for credits. */
export const FAIR_USE_FLOOR = -MAX_AMOUNT;

/** A policy as a caller writes it: the floor may be left out (0), fair use's is set here. */
export interface OveragePolicyInput {
  readonly mode: OverageMode;
  readonly floor?: bigint;
  readonly price?: OveragePrice | null;
  readonly throttle?: ThrottleRule | null;
}

const invalid = (message: string, field: string) => fail("invalid_argument", message, { field });

/**
 * Validates a policy and fills its floor. Fails with `invalid_argument` (`details.field` names
 * the field) or `invalid_amount`: a floor above 0, or below 0 for a mode without one; a price
 * on a mode other than soft cap, not above 0 or without an ISO 4217 currency; a throttle rule
 * missing on throttle or present elsewhere, with a negative level, or allowing nothing.
 */
export function validateOveragePolicy(input: OveragePolicyInput): Result<OveragePolicy> {
  if (!(OVERAGE_MODES as readonly string[]).includes(input.mode))
    return invalid(`mode is one of ${OVERAGE_MODES.join(", ")}.`, "mode");
  const mode = input.mode;
  const floorGiven = input.floor ?? 0n;
  if (!inRange(floorGiven))
    return fail("invalid_amount", "floor is out of the amount range.", { field: "floor" });
  if (floorGiven > 0n)
    return invalid("floor is at most 0: the lowest balance the wallet may reach.", "floor");
  const negativeFloor = mode === "soft_cap" || mode === "carry_deficit";
  if (!negativeFloor && floorGiven !== 0n)
    return invalid(
      `A ${mode} policy has no floor to set (hard_cap and throttle stop at 0; fair_use has none).`,
      "floor",
    );
  const floor = mode === "fair_use" ? FAIR_USE_FLOOR : floorGiven;
  const price = input.price ?? null;
  if (price !== null) {
    if (mode !== "soft_cap") return invalid("price applies to a soft_cap policy only.", "price");
    if (price.amount <= 0n || price.amount > OVERAGE_LIMITS.maxPricePerCredit)
      return fail("invalid_amount", "price.amount is money per credit, above 0 and at most 1,000,000.", {
        field: "price.amount",
      });
    if (!/^[A-Z]{3}$/.test(price.currency))
      return invalid('price.currency is an ISO 4217 code such as "USD".', "price.currency");
  }
  const throttle = input.throttle ?? null;
  if (mode === "throttle") {
    if (throttle === null) return invalid("A throttle policy needs its throttle rule.", "throttle");
    if (throttle.level < 0n || !inRange(throttle.level))
      return fail("invalid_amount", "throttle.level is an amount ≥ 0 of available credits.", {
        field: "throttle.level",
      });
    if (throttle.allowedActions.length > OVERAGE_LIMITS.maxAllowedActions)
      return invalid(
        `throttle.allowed_actions has at most ${OVERAGE_LIMITS.maxAllowedActions} actions.`,
        "throttle.allowed_actions",
      );
    for (const a of throttle.allowedActions)
      if (!SCOPE_PATTERN.test(a))
        return invalid(
          `throttle.allowed_actions: "${a}" is not an action or a "prefix.*" pattern.`,
          "throttle.allowed_actions",
        );
    const fb = throttle.fallbackAction;
    if (fb !== null && (!SCOPE_PATTERN.test(fb) || fb.endsWith(".*")))
      return invalid(
        "throttle.fallback_action is one action name, not a pattern.",
        "throttle.fallback_action",
      );
    if (throttle.allowedActions.length === 0 && fb === null)
      return invalid(
        "A throttle allows some cheaper actions or names a fallback action (or both).",
        "throttle.allowed_actions",
      );
  } else if (throttle !== null) {
    return invalid("throttle applies to a throttle policy only.", "throttle");
  }
  return ok({
    mode,
    floor,
    price,
    throttle: mode === "throttle" ? { ...throttle!, allowedActions: [...throttle!.allowedActions] } : null,
  });
}

/** Where a wallet's policy came from: set on the wallet, taken from its plan, or the default. */
export type OverageSource = "wallet" | "plan" | "default";

/**
 * The precedence of policies: a policy set on the wallet (through the API) wins; else the
 * customer's plan's; else the default hard cap.
 */
export function effectiveOverage(
  wallet: OveragePolicy | null,
  plan: OveragePolicy | null,
): { policy: OveragePolicy; source: OverageSource } {
  if (wallet) return { policy: wallet, source: "wallet" };
  if (plan) return { policy: plan, source: "plan" };
  return { policy: DEFAULT_OVERAGE, source: "default" };
}

/**
 * A policy applied to a wallet that already owes `owed`: its floor is lowered to what is owed
 * when it would be above it, so a plan change never makes a wallet's existing debt illegal
 * (what it owes stays owed; nothing more can be added until it is paid down).
 */
export function fitFloor(policy: OveragePolicy, owed: bigint): OveragePolicy {
  return -owed < policy.floor ? { ...policy, floor: -owed } : policy;
}

/**
 * How much further the policy lets the pool owe, given what it owes now: its floor's depth
 * minus what it owes for the modes with a negative floor (soft cap, carry deficit, fair use);
 * 0 for hard cap and throttle.
 */
export function overageRoom(policy: OveragePolicy, owed: bigint): bigint {
  if (policy.mode === "hard_cap" || policy.mode === "throttle") return 0n;
  const room = -policy.floor - owed;
  return room > 0n ? room : 0n;
}

/** Whether settling may post more than the hold: the modes that may owe (the floor bounds it). */
export const overrunAllowed = (policy: OveragePolicy): boolean =>
  policy.mode === "soft_cap" || policy.mode === "carry_deficit" || policy.mode === "fair_use";

/** What a throttle answers instead of allow: the actions still allowed and the fallback. */
export interface Throttled {
  readonly allowedActions: readonly string[];
  readonly fallbackAction: string | null;
}

/**
 * The throttle check of authorize: under a throttle policy, when what stays available after
 * the estimate is below the level and the action is neither allowed nor the fallback, the
 * answer is `throttle` with what is allowed. Null: the action proceeds (by hard cap rules).
 */
export function throttleCheck(
  policy: OveragePolicy,
  action: string,
  available: bigint,
  estimate: bigint,
): Throttled | null {
  const rule = policy.mode === "throttle" ? policy.throttle : null;
  if (!rule) return null;
  if (available - estimate >= rule.level) return null;
  if (scopeAdmits(rule.allowedActions, action) || action === rule.fallbackAction) return null;
  return { allowedActions: rule.allowedActions, fallbackAction: rule.fallbackAction };
}

/** Whether an action would be throttled at `available` (after its estimate): for property tests and docs. */
export const isThrottled = (policy: OveragePolicy, action: string, available: bigint, estimate: bigint) =>
  throttleCheck(policy, action, available, estimate) !== null;

/**
 * What of a wallet's overdraft is settled debt, not credits its pending holds took from the
 * overdraft room (those go back to the overdraft when the hold is released, so they can be
 * neither billed nor repaid yet).
 */
export function settledOwed(overdraft: bigint, heldFromOverdraft: bigint): bigint {
  invariant(heldFromOverdraft >= 0n && heldFromOverdraft <= overdraft, "holds took more than is owed");
  return overdraft - heldFromOverdraft;
}

/** The money for `credits` at a price per credit, rounded once (half away from zero). */
export const overageAmount = (credits: bigint, price: OveragePrice): bigint =>
  divRound(credits * price.amount, UNIT);

/** A planned overage bill: its journal and the invoice's figures. */
export interface OverageBill {
  readonly transaction: JournalTransaction;
  readonly credits: bigint;
  readonly amount: bigint;
  readonly price: OveragePrice;
}

/**
 * Bills what a wallet owes (its settled overdraft) at the policy's price: one balanced
 * `overage.bill` transaction moves it from the wallet's overdraft to `overage_receivable` (the
 * wallet owes nothing more; the customer owes the money on the invoice). Null when nothing is
 * owed or the policy has no price: nothing to bill.
 */
export function planOverageBill(
  ctx: Context,
  input: { customerId: string; walletId: string; owed: bigint; policy: OveragePolicy; reason: string },
): OverageBill | null {
  const price = input.policy.mode === "soft_cap" ? (input.policy.price ?? null) : null;
  if (price === null || input.owed <= 0n) return null;
  const entries: Entry[] = [
    entry({ kind: "overdraft", walletId: input.walletId }, input.owed),
    entry({ kind: "system", name: "overage_receivable" }, -input.owed),
  ];
  const transaction = makeTx(ctx, "overage.bill", input.customerId, entries, { reason: input.reason });
  return { transaction, credits: input.owed, amount: overageAmount(input.owed, price), price };
}

/**
 * At a renewal under carry deficit, the new period's plan credits repay what the pool owes
 * first: one balanced `overage.repay` transaction takes from the new grants (in the order
 * given: the pool's first) what is owed, at most what they hold, and gives it to the pool's
 * overdraft. Null when nothing is owed, the policy is another, or no credits were granted.
 */
export function planDeficitRepay(
  ctx: Context,
  input: {
    customerId: string;
    poolWalletId: string;
    owed: bigint;
    policy: OveragePolicy;
    newGrants: readonly Grant[];
  },
): { transaction: JournalTransaction; repaid: bigint; perGrant: Map<string, bigint> } | null {
  if (input.policy.mode !== "carry_deficit" || input.owed <= 0n) return null;
  let left = input.owed;
  const perGrant = new Map<string, bigint>();
  const entries: Entry[] = [];
  for (const g of input.newGrants) {
    if (left === 0n) break;
    const take = minAmount(g.amount, left);
    if (take <= 0n) continue;
    perGrant.set(g.id, take);
    entries.push(entry(grantAccount(g.id, g.walletId), -take));
    left -= take;
  }
  const repaid = input.owed - left;
  if (repaid === 0n) return null;
  entries.push(entry({ kind: "overdraft", walletId: input.poolWalletId }, repaid));
  const transaction = makeTx(ctx, "overage.repay", input.customerId, entries, {
    reason: `deficit of ${formatAmount(repaid)} credits repaid from the new period's grant`,
  });
  return { transaction, repaid, perGrant };
}
