import type { LedgerError, LedgerErrorCode } from "@drawdown/core";

/**
 * Every error code the API can answer with: the core's business failures plus the
 * transport's own. A closed list; clients may switch on it.
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
 * The one mapping from error code to HTTP status, with the title each problem carries.
 * 400: the request itself is wrong. 402: not enough credits. 404: no such thing for this key.
 * 409: the request conflicts with the current state. 422: well formed, but refused by the
 * server's policy (a webhook URL to a private network). 5xx: our fault.
 */
export const ERRORS: Readonly<Record<ApiErrorCode, { status: number; title: string }>> = {
  invalid_amount: { status: 400, title: "Invalid amount" },
  invalid_argument: { status: 400, title: "Invalid argument" },
  validation_failed: { status: 400, title: "Validation failed" },
  malformed_json: { status: 400, title: "Malformed JSON" },
  invalid_cursor: { status: 400, title: "Invalid cursor" },
  invalid_idempotency_key: { status: 400, title: "Invalid idempotency key" },
  invalid_webhook_url: { status: 400, title: "Invalid webhook URL" },
  wallet_mismatch: { status: 400, title: "Grant not in wallet" },
  unknown_action: { status: 400, title: "Unknown action" },
  invalid_rate_card: { status: 400, title: "Invalid rate card" },
  invalid_event: { status: 400, title: "Invalid event" },
  event_too_old: { status: 400, title: "Event too old" },
  event_in_future: { status: 400, title: "Event in the future" },
  no_rate_card: { status: 409, title: "No rate card in force" },
  rate_card_overlap: { status: 409, title: "Rate card versions overlap" },
  event_id_reused: { status: 409, title: "Event id reused" },
  unauthorized: { status: 401, title: "Unauthorized" },
  insufficient_credits: { status: 402, title: "Insufficient credits" },
  run_start_below_minimum: { status: 402, title: "Below the run start minimum" },
  spend_cap_reached: { status: 402, title: "Spend cap reached" },
  forbidden: { status: 403, title: "Forbidden" },
  not_found: { status: 404, title: "Not found" },
  route_not_found: { status: 404, title: "No such route" },
  already_exists: { status: 409, title: "Already exists" },
  grant_inactive: { status: 409, title: "Grant inactive" },
  grant_expired: { status: 409, title: "Grant expired" },
  expiry_not_extendable: { status: 409, title: "Expiry not extendable" },
  transaction_not_reversible: { status: 409, title: "Transaction not reversible" },
  transaction_already_reversed: { status: 409, title: "Transaction already reversed" },
  gift_code_exhausted: { status: 409, title: "Gift code used up" },
  gift_code_ended: { status: 409, title: "Gift code ended" },
  no_price_book: { status: 409, title: "No price book" },
  purchase_not_pending: { status: 409, title: "Purchase not pending" },
  auto_top_up_disabled: { status: 409, title: "Auto top-up disabled" },
  auto_top_up_cap_reached: { status: 409, title: "Auto top-up cap reached" },
  hold_not_pending: { status: 409, title: "Hold already resolved" },
  hold_expired: { status: 409, title: "Hold expired" },
  step_key_reused: { status: 409, title: "Step key reused" },
  step_not_held: { status: 409, title: "Step holds nothing" },
  run_not_running: { status: 409, title: "Run finished" },
  run_suspended: { status: 409, title: "Run suspended" },
  run_steps_pending: { status: 409, title: "Run has steps pending" },
  idempotency_key_reused: { status: 409, title: "Idempotency key reused" },
  payload_too_large: { status: 413, title: "Payload too large" },
  webhook_url_not_allowed: { status: 422, title: "Webhook URL not allowed" },
  unsupported_media_type: { status: 415, title: "Unsupported media type" },
  internal_error: { status: 500, title: "Internal error" },
};

/** An RFC 9457 problem document, as every error response carries it. */
export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly code: ApiErrorCode;
  readonly detail: string;
  readonly request_id: string;
  readonly errors?: readonly { readonly path: string; readonly message: string }[];
  readonly details?: Readonly<Record<string, string>>;
}

/** Builds the problem document for a code. */
export function problem(
  code: ApiErrorCode,
  detail: string,
  requestId: string,
  extra: { errors?: Problem["errors"]; details?: Problem["details"] } = {},
): Problem {
  const { status, title } = ERRORS[code];
  return {
    type: `https://drawdown.dev/errors/${code}`,
    title,
    status,
    code,
    detail,
    request_id: requestId,
    ...(extra.errors ? { errors: extra.errors } : {}),
    ...(extra.details ? { details: extra.details } : {}),
  };
}

/** A problem raised inside a handler; the error handler turns it into the response. */
export class ApiError extends Error {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly extra: { errors?: Problem["errors"]; details?: Problem["details"] } = {},
  ) {
    super(message);
  }

  /** Wraps a core failure. */
  static from(error: LedgerError): ApiError {
    return new ApiError(error.code, error.message, error.details ? { details: error.details } : {});
  }
}
