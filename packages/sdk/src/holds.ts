import { wireAmount, wireTime } from "./amounts.js";
import type { ApiPromise } from "./http.js";
import { pageQuery, Resource, seg, wireQuantities } from "./resources.js";
import type {
  AmountInput,
  List,
  PageParams,
  PostOptions,
  QuantityInput,
  RequestOptions,
  TimeInput,
} from "./types.js";

/** Where a hold is: pending, then exactly one of posted, voided or expired. */
export type HoldStatus = "pending" | "posted" | "voided" | "expired";

/** A hold: credits reserved for an estimate until settled, voided or expired. */
export interface Hold {
  object: "hold";
  id: string;
  customer_id: string;
  /** The wallet that pays (a member's, or the customer's pool). */
  wallet_id: string;
  subject_id: string | null;
  action: string;
  /** Credits held. */
  amount: string;
  status: HoldStatus;
  /** The estimate as given, with its credits. */
  estimate: Record<string, unknown>;
  /** Where the held credits came from, in burn-down order (grant_id null: the soft cap's overdraft). */
  draws: { wallet_id: string; grant_id: string | null; amount: string }[];
  created_at: string;
  expires_at: string;
  resolved_at: string | null;
  /** Credits its settlement posted. */
  posted: string;
  /** Credits given back by settle, void or expiry. */
  released: string;
  /** Usage beyond the hold charged to nobody (no overrun allowed, or past the floor). */
  unpaid: string;
  /** The `hold` transaction. */
  transaction_id: string | null;
  /** The `hold.settle` or `hold.release` transaction. */
  resolve_transaction_id: string | null;
}

/** What authorize answers. A denial is an answer, not an error. */
export interface Authorization {
  object: "authorization";
  decision: "allow" | "deny" | "throttle";
  /** sufficient_credits, within_overdraft, insufficient_credits, below_throttle_level or spend_cap_reached. */
  reason: string;
  /** What the wallet chain could pay for this action before this request. */
  available: string;
  /** The estimate in credits. */
  estimate: string;
  /** The hold placed, when asked for and allowed. */
  hold: Hold | null;
  /** On `throttle`: the actions still allowed below the level; null otherwise. */
  allowed_actions: string[] | null;
  /** On `throttle`: the cheaper action to use instead, when the policy names one. */
  fallback_action: string | null;
  /** The auto top-up tried before a denial for lack of credits; null when none was tried. */
  auto_top_up: {
    /** `covered` (bought, decided again), `failed` (alert fired), `none` (nothing bought now). */
    outcome: string;
    purchase_ids: string[];
    reason: string | null;
  } | null;
}

/** The estimate: credits, or quantities (with dimensions) rated by the customer's rate card. */
export type EstimateInput =
  | { credits: AmountInput; quantities?: undefined; dimensions?: undefined }
  | {
      credits?: undefined;
      quantities: Record<string, QuantityInput>;
      dimensions?: Record<string, string>;
    };

/** An estimate on the wire: amounts and quantities as decimal strings. */
export function wireEstimate(e: EstimateInput): Record<string, unknown> {
  if (e === null || typeof e !== "object")
    throw new TypeError("estimate: an object with credits or quantities.");
  return e.credits !== undefined
    ? { credits: wireAmount(e.credits, "estimate.credits") }
    : {
        quantities: wireQuantities(e.quantities, "estimate.quantities"),
        ...(e.dimensions !== undefined ? { dimensions: e.dimensions } : {}),
      };
}

/** A settle body (a hold's or a run step's) on the wire: quantities, times and costs as strings. */
export function wireSettle<P extends SettleParams>(params: P): Record<string, unknown> {
  return {
    ...params,
    quantities: params.quantities === undefined ? undefined : wireQuantities(params.quantities, "quantities"),
    events: params.events?.map((e, i) => ({
      ...e,
      quantities: wireQuantities(e.quantities, `events[${i}].quantities`),
      time: e.time === undefined ? undefined : wireTime(e.time, `events[${i}].time`),
      reported_cost:
        e.reported_cost === undefined ? undefined : wireAmount(e.reported_cost, `events[${i}].reported_cost`),
    })),
  };
}

export interface AuthorizeParams {
  customer_id: string;
  /** A member with a wallet pays from it, then the pool. */
  subject_id?: string;
  action: string;
  estimate: EstimateInput;
  /** Place a hold for the estimate when allowed (default false). */
  hold?: boolean;
  /** When the hold expires if not settled or voided (default 600; at most 7 days). */
  hold_timeout_seconds?: number;
}

/** A usage event posted against a hold: the hold's customer and subject; action defaults to the hold's. */
export interface SettleEventInput {
  id: string;
  action?: string;
  dimensions?: Record<string, string>;
  quantities: Record<string, QuantityInput>;
  status?: "succeeded" | "failed";
  time?: TimeInput;
  run_id?: string;
  reported_cost?: AmountInput;
}

/** Settle with events, or with quantities of the hold's action (one of them). */
export type SettleParams =
  | { events: SettleEventInput[]; quantities?: undefined; dimensions?: undefined; status?: undefined }
  | {
      events?: undefined;
      quantities: Record<string, QuantityInput>;
      dimensions?: Record<string, string>;
      status?: "succeeded" | "failed";
    };

export interface HoldListParams extends PageParams {
  wallet_id?: string;
  customer_id?: string;
  status?: HoldStatus;
}

/**
 * Authorize and holds: ask before expensive work, hold the estimate, then settle with the
 * actual usage, void (a failed run costs nothing), or let the hold expire.
 */
export class Holds extends Resource {
  /**
   * Asks whether the customer (or subject) may spend an estimate on an action: `allow`, `deny`
   * or `throttle`, with the reason and the available amount. With `hold: true` an allowed
   * estimate is held at once, in the same atomic step as the check.
   *
   * @example
   * const a = await dd.holds.authorize({
   *   customer_id: acme.id, action: "agent.run",
   *   estimate: { quantities: { output_tokens: 4000 }, dimensions: { model: "gpt-4o" } },
   *   hold: true, hold_timeout_seconds: 300,
   * });
   * if (a.decision !== "allow") throw new Error(`not now: ${a.reason}, ${a.available} available`);
   */
  authorize(params: AuthorizeParams, options?: PostOptions): ApiPromise<Authorization> {
    return this.postJson(options, () => ({
      path: "/v1/authorize",
      body: { ...params, estimate: wireEstimate(params.estimate) },
    }));
  }

  /**
   * Settles a pending hold with the actual usage: it draws the hold first, posts at most the
   * hold under a hard cap (the excess is recorded unpaid), and releases the rest. Fails with
   * `hold_not_pending` (posted or voided) or `hold_expired`, changing nothing.
   *
   * @example
   * await dd.holds.settle(a.hold!.id, {
   *   events: [{ id: "run-42-step-1", quantities: { output_tokens: 3100 }, dimensions: { model: "gpt-4o" } }],
   * });
   */
  settle(holdId: string, params: SettleParams, options?: PostOptions): ApiPromise<Hold> {
    return this.postJson(options, () => ({
      path: `/v1/holds/${seg(holdId)}/settle`,
      body: wireSettle(params),
    }));
  }

  /**
   * Voids a pending hold: every held credit goes back (a failed run costs nothing).
   *
   * @example
   * await dd.holds.void(a.hold!.id);
   */
  void(holdId: string, options?: PostOptions): ApiPromise<Hold> {
    return this.postJson(options, () => ({ path: `/v1/holds/${seg(holdId)}/void`, body: {} }));
  }

  /**
   * A hold, with its status and what it posted and released.
   *
   * @example
   * const h = await dd.holds.get("hld_01jd0s7k2mqx3v8r9t5w6y7z8a");
   */
  get(holdId: string, options?: RequestOptions): ApiPromise<Hold> {
    return this.fetchJson(options, () => ({ path: `/v1/holds/${seg(holdId)}` }));
  }

  /**
   * Holds of a wallet or a customer, in id order (by creation time to the millisecond), optionally by status.
   *
   * @example
   * const { data: pending } = await dd.holds.list({ wallet_id: acme.wallet_id, status: "pending" });
   */
  list(params?: HoldListParams, options?: RequestOptions): ApiPromise<List<Hold>> {
    return this.fetchJson(options, () => ({
      path: "/v1/holds",
      query: {
        ...pageQuery(params),
        wallet_id: params?.wallet_id,
        customer_id: params?.customer_id,
        status: params?.status,
      },
    }));
  }

  /**
   * Checks the key and does nothing else (the bare endpoint benchmarks compare with).
   *
   * @example
   * await dd.holds.ping(); // { object: "pong" }
   */
  ping(options?: RequestOptions): ApiPromise<{ object: "pong" }> {
    return this.fetchJson(options, () => ({ path: "/v1/ping" }));
  }
}
