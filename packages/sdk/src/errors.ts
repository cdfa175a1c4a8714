import type { LedgerErrorCode } from "@drawdown/core";

/**
 * Every error code the API answers with (a closed list; switch on it): the ledger core's
 * business failures plus the HTTP layer's own. Copied from the server's `ApiErrorCode`;
 * the server's tests check the two lists stay equal.
 */
export type ApiErrorCode =
  | LedgerErrorCode
  | "unauthorized"
  | "forbidden"
  | "route_not_found"
  | "validation_failed"
  | "malformed_json"
  | "payload_too_large"
  | "unsupported_media_type"
  | "invalid_cursor"
  | "invalid_idempotency_key"
  | "idempotency_key_reused"
  | "internal_error";

/**
 * The codes a {@link DrawdownError} can carry: the API's, plus two of the SDK's own:
 * `connection_error` (no response after every retry: see {@link DrawdownConnectionError})
 * and `invalid_response` (a response that is not the JSON the API sends, e.g. from a proxy).
 */
export type DrawdownErrorCode = ApiErrorCode | "connection_error" | "invalid_response";

/**
 * Each API error code with its HTTP status, as the server maps them. Typed as a record over
 * {@link ApiErrorCode}, so a code added to the core's list fails to compile until it is here.
 */
export const API_ERROR_STATUS: Readonly<Record<ApiErrorCode, number>> = {
  invalid_amount: 400,
  invalid_argument: 400,
  validation_failed: 400,
  malformed_json: 400,
  invalid_cursor: 400,
  invalid_idempotency_key: 400,
  invalid_webhook_url: 400,
  webhook_url_not_allowed: 422,
  wallet_mismatch: 400,
  unknown_action: 400,
  invalid_rate_card: 400,
  invalid_event: 400,
  event_too_old: 400,
  event_in_future: 400,
  no_rate_card: 409,
  rate_card_overlap: 409,
  event_id_reused: 409,
  unauthorized: 401,
  insufficient_credits: 402,
  spend_cap_reached: 402,
  forbidden: 403,
  not_found: 404,
  route_not_found: 404,
  already_exists: 409,
  grant_inactive: 409,
  grant_expired: 409,
  expiry_not_extendable: 409,
  transaction_not_reversible: 409,
  transaction_already_reversed: 409,
  gift_code_exhausted: 409,
  gift_code_ended: 409,
  no_price_book: 409,
  purchase_not_pending: 409,
  auto_top_up_disabled: 409,
  auto_top_up_cap_reached: 409,
  hold_not_pending: 409,
  hold_expired: 409,
  step_key_reused: 409,
  step_not_held: 409,
  run_not_running: 409,
  run_suspended: 409,
  run_steps_pending: 409,
  run_start_below_minimum: 402,
  idempotency_key_reused: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  internal_error: 500,
};

/** The API's error codes at runtime. */
export const API_ERROR_CODES: readonly ApiErrorCode[] = Object.keys(API_ERROR_STATUS) as ApiErrorCode[];

/** A field-level problem in a request, e.g. `{ path: "body/amount", message: "..." }`. */
export interface FieldError {
  path: string;
  message: string;
}

/**
 * What every failed call throws: the API's RFC 9457 problem document, unpacked.
 *
 * @example
 * try {
 *   await dd.adjustments.debit(walletId, { amount: "500", reason: "refund" });
 * } catch (e) {
 *   if (e instanceof DrawdownError && e.code === "insufficient_credits") {
 *     console.log(e.details?.available); // what the wallet could cover, e.g. "120.5"
 *   } else throw e;
 * }
 */
export class DrawdownError extends Error {
  override name = "DrawdownError";
  /** HTTP status; 0 when no response arrived. */
  readonly status: number;
  /** Stable machine code; see {@link DrawdownErrorCode}. */
  readonly code: DrawdownErrorCode;
  /** A message a person can act on. */
  readonly detail: string;
  /** The request id (also the `request-id` header): quote it when you report a problem. */
  readonly requestId: string | null;
  /** Field-level problems, for `validation_failed` and `invalid_amount`. */
  readonly errors: readonly FieldError[] | undefined;
  /** Machine-readable details, e.g. `{ requested, available }` for `insufficient_credits`. */
  readonly details: Readonly<Record<string, string>> | undefined;
  /** The problem type URI, e.g. `https://drawdown.dev/errors/not_found`. */
  readonly type: string | undefined;
  /** The problem title, e.g. "Not found". */
  readonly title: string | undefined;

  constructor(init: {
    status: number;
    code: DrawdownErrorCode;
    detail: string;
    requestId?: string | null;
    errors?: readonly FieldError[];
    details?: Readonly<Record<string, string>>;
    type?: string;
    title?: string;
    cause?: unknown;
  }) {
    super(`${init.code}: ${init.detail}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.detail = init.detail;
    this.requestId = init.requestId ?? null;
    this.errors = init.errors;
    this.details = init.details;
    this.type = init.type;
    this.title = init.title;
  }
}

/**
 * No response arrived (network failure, timeout) after every retry. A POST may or may not
 * have been applied: call again with the same `idempotencyKey` to find out safely.
 */
export class DrawdownConnectionError extends DrawdownError {
  override name = "DrawdownConnectionError";
  /** The idempotency key the POST was sent with, to retry it safely; null for a GET. */
  readonly idempotencyKey: string | null;

  constructor(detail: string, idempotencyKey: string | null, cause: unknown) {
    super({ status: 0, code: "connection_error", detail, cause });
    this.idempotencyKey = idempotencyKey;
  }
}
