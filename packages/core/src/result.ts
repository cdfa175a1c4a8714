/**
 * Business failures are values, never exceptions. Every failure carries a stable
 * machine `code` from {@link LedgerErrorCode}; the server maps each code to an HTTP
 * status in exactly one place.
 */

/** The closed list of failure codes the ledger core can return. */
export type LedgerErrorCode =
  | "invalid_amount"
  | "invalid_argument"
  | "insufficient_credits"
  | "grant_inactive"
  | "grant_expired"
  | "expiry_not_extendable"
  | "transaction_not_reversible"
  | "transaction_already_reversed"
  | "wallet_mismatch"
  | "not_found"
  | "already_exists"
  | "unknown_action"
  | "invalid_rate_card"
  | "rate_card_overlap"
  | "no_rate_card"
  | "event_id_reused"
  | "event_too_old"
  | "event_in_future"
  | "invalid_event"
  | "gift_code_exhausted"
  | "gift_code_ended"
  | "no_price_book"
  | "purchase_not_pending"
  | "auto_top_up_disabled"
  | "auto_top_up_cap_reached"
  | "hold_not_pending"
  | "hold_expired"
  | "invalid_webhook_url"
  | "webhook_url_not_allowed"
  | "step_key_reused"
  | "step_not_held"
  | "run_not_running"
  | "run_suspended"
  | "run_steps_pending"
  | "run_start_below_minimum"
  | "spend_cap_reached"
  | "forbidden";

/** A business failure: a stable code, a message a person can act on, optional details. */
export interface LedgerError {
  readonly code: LedgerErrorCode;
  readonly message: string;
  readonly details?: Readonly<Record<string, string>>;
}

/** Either a value or a {@link LedgerError}. */
export type Result<T, E = LedgerError> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: E };

/** Wraps a value in a successful {@link Result}. */
export const ok = <T>(value: T): Result<T, never> => ({ ok: true, value });

/** Builds a failed {@link Result}. */
export const fail = (
  code: LedgerErrorCode,
  message: string,
  details?: Record<string, string>,
): { readonly ok: false; readonly error: LedgerError } => ({
  ok: false,
  error: details ? { code, message, details } : { code, message },
});

/**
 * Thrown only when an internal invariant is broken (a bug, never bad input).
 * Like TigerBeetle's assertions: crash loudly rather than write a wrong ledger.
 */
export class InvariantViolation extends Error {
  override name = "InvariantViolation";
}

/** Asserts an internal invariant; throws {@link InvariantViolation} when it does not hold. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(message);
}
