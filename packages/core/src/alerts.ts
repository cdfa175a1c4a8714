import { formatAmount, MAX_AMOUNT } from "./amount.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Alerts on a wallet's balance. Pure: which rules fire and which re-arm, given a wallet's
 * level and the rules already fired. The storage layer evaluates them in the transaction that
 * changes the balance, and delivers what fires as `alert.triggered` webhooks.
 *
 * The level of a wallet (both in units):
 * - `available`: what it can draw now: the remaining credits of its own active grants that
 *   are effective and not expired, minus what it owes (its overdraft under a soft cap).
 * - `reference`, the 100% of "percent remaining": the wallet's available right after it last
 *   received a grant (any source: a plan period, a rollover, a purchase or top-up, a gift, an
 *   adjustment). Debits, expiries, voids and reversals move available and leave the reference:
 *   a 100-credit plan grant with 15 left is at 15%; a 100-credit top-up then makes 115 the new
 *   100%. (A wallet that received its last grant before alerts existed takes the amount of its
 *   grants that still hold credits.)
 */

/** A rule of a wallet. */
export type AlertRule =
  /** Fires when available falls to `percent`% of the reference or below (1 to 99). */
  | { readonly kind: "percent_remaining"; readonly percent: number }
  /** Fires when available falls to `amount` units or below. */
  | { readonly kind: "amount_remaining"; readonly amount: bigint }
  /** Fires when nothing is available (zero, or owed under a soft cap). */
  | { readonly kind: "exhausted" }
  /** Fires once per grant holding credits when its expiry comes within `days` days (a scheduled check). */
  | { readonly kind: "expiring_soon"; readonly days: number };

/**
 * Every kind of alert, a closed list: the rule kinds above, and two that other features fire
 * through the storage layer's `fireAlert` (`spend_cap_reached`, `auto_top_up_failed`).
 */
export const ALERT_KINDS = [
  "percent_remaining",
  "amount_remaining",
  "exhausted",
  "expiring_soon",
  "spend_cap_reached",
  "auto_top_up_failed",
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

/** Rule kinds evaluated on every balance change (expiring soon is scheduled). */
export const BALANCE_ALERT_KINDS = ["percent_remaining", "amount_remaining", "exhausted"] as const;

/** The rules of every wallet that has not set its own: 20% and 10% remaining, and exhausted. */
export const DEFAULT_ALERT_RULES: readonly AlertRule[] = [
  { kind: "percent_remaining", percent: 20 },
  { kind: "percent_remaining", percent: 10 },
  { kind: "exhausted" },
];

/** Limits of a wallet's rule list. */
export const ALERT_RULE_LIMITS = { maxRules: 20, maxDays: 365 } as const;

/** A wallet's level, as alerts see it (see the module's doc). */
export interface AlertLevel {
  readonly available: bigint;
  readonly reference: bigint;
}

/** A rule's stable key: its armed state is kept under it, so an unchanged rule keeps its state. */
export function alertRuleKey(rule: AlertRule): string {
  switch (rule.kind) {
    case "percent_remaining":
      return `percent_remaining:${rule.percent}`;
    case "amount_remaining":
      return `amount_remaining:${rule.amount}`;
    case "exhausted":
      return "exhausted";
    case "expiring_soon":
      return `expiring_soon:${rule.days}`;
  }
}

/**
 * Checks a wallet's rules: at most 20, no two alike, at most one `expiring_soon`; a percent
 * from 1 to 99, an amount above zero, days from 1 to 365.
 */
export function validateAlertRules(rules: readonly AlertRule[]): Result<AlertRule[]> {
  if (rules.length > ALERT_RULE_LIMITS.maxRules)
    return fail("invalid_argument", `A wallet takes at most ${ALERT_RULE_LIMITS.maxRules} alert rules.`, {
      field: "rules",
    });
  const keys = new Set<string>();
  let expiring = 0;
  for (const [i, r] of rules.entries()) {
    const field = `rules/${i}`;
    if (r.kind === "percent_remaining" && (!Number.isInteger(r.percent) || r.percent < 1 || r.percent > 99))
      return fail("invalid_argument", `${field}: percent is a whole number from 1 to 99.`, { field });
    if (r.kind === "amount_remaining" && (r.amount <= 0n || r.amount > MAX_AMOUNT))
      return fail("invalid_amount", `${field}: amount must be above zero.`, { field });
    if (r.kind === "expiring_soon") {
      if (!Number.isInteger(r.days) || r.days < 1 || r.days > ALERT_RULE_LIMITS.maxDays)
        return fail("invalid_argument", `${field}: days is a whole number from 1 to 365.`, { field });
      if (++expiring > 1)
        return fail("invalid_argument", `${field}: a wallet takes one expiring_soon rule.`, { field });
    }
    const key = alertRuleKey(r);
    if (keys.has(key)) return fail("invalid_argument", `${field}: the same rule twice (${key}).`, { field });
    keys.add(key);
  }
  return ok([...rules]);
}

/**
 * Whether a balance rule's condition holds at `level` ("crossed"): available at or below the
 * threshold. A wallet with no reference (nothing available in any grant) is at 0%.
 */
export function alertConditionHolds(rule: AlertRule, level: AlertLevel): boolean {
  switch (rule.kind) {
    case "percent_remaining":
      return level.available * 100n <= BigInt(rule.percent) * level.reference;
    case "amount_remaining":
      return level.available <= rule.amount;
    case "exhausted":
      return level.available <= 0n;
    case "expiring_soon":
      return false;
  }
}

/** What a balance change does to a wallet's alerts. */
export interface AlertDecision {
  /** Rules that fire now: their condition holds and they were armed. */
  readonly fire: readonly AlertRule[];
  /** Keys of fired rules that re-arm: their condition no longer holds, or the rule is gone. */
  readonly rearm: readonly string[];
}

/**
 * Evaluates a wallet's balance rules after a change: each fires once per crossing (when its
 * condition holds and it is armed) and re-arms when the condition no longer holds. `fired`
 * holds the keys of balance rules fired and not re-armed; keys of rules no longer in the list
 * re-arm (their state is dropped).
 */
export function evaluateAlerts(
  rules: readonly AlertRule[],
  fired: ReadonlySet<string>,
  level: AlertLevel,
): AlertDecision {
  const fire: AlertRule[] = [];
  const rearm: string[] = [];
  const live = new Set<string>();
  for (const rule of rules) {
    if (rule.kind === "expiring_soon") continue;
    const key = alertRuleKey(rule);
    live.add(key);
    const holds = alertConditionHolds(rule, level);
    if (holds && !fired.has(key)) fire.push(rule);
    else if (!holds && fired.has(key)) rearm.push(key);
  }
  for (const key of fired) if (!live.has(key)) rearm.push(key);
  return { fire, rearm };
}

/**
 * Percent remaining as a decimal string with two places ("19.50"), rounded down; "0.00"
 * when nothing is available or there is no reference.
 */
export function percentRemaining(level: AlertLevel): string {
  if (level.available <= 0n || level.reference <= 0n) return "0.00";
  const hundredths = (level.available * 10_000n) / level.reference;
  const whole = hundredths / 100n;
  const frac = (hundredths % 100n).toString().padStart(2, "0");
  return `${whole}.${frac}`;
}

/** A rule on the wire: amounts as decimal strings. */
export function alertRuleWire(rule: AlertRule): Record<string, string | number> {
  switch (rule.kind) {
    case "percent_remaining":
      return { kind: rule.kind, percent: rule.percent };
    case "amount_remaining":
      return { kind: rule.kind, amount: formatAmount(rule.amount) };
    case "exhausted":
      return { kind: rule.kind };
    case "expiring_soon":
      return { kind: rule.kind, days: rule.days };
  }
}
