import { wireAmount } from "./amounts.js";
import { type EstimateInput, type Hold, type SettleEventInput, wireEstimate, wireSettle } from "./holds.js";
import type { ApiPromise } from "./http.js";
import { pageQuery, Resource, seg } from "./resources.js";
import type {
  AmountInput,
  List,
  MoneyTotals,
  PageParams,
  PostOptions,
  QuantityInput,
  RequestOptions,
} from "./types.js";

/** Where a run is: running; suspended (a step was denied for lack of credits or by a spend cap); completed or canceled. */
export type RunStatus = "running" | "suspended" | "completed" | "canceled";

/** Where a step is: held (its hold pending), denied, settled, voided, or expired (its hold timed out). */
export type RunStepStatus = "held" | "denied" | "settled" | "voided" | "expired";

/** One step of a run. */
export interface RunStep {
  key: string;
  action: string;
  status: RunStepStatus;
  /** The estimate as given. */
  estimate: Record<string, unknown>;
  estimate_credits: string;
  /** The last authorization's answer. */
  decision: "allow" | "deny" | "throttle";
  reason: string;
  available: string;
  hold_id: string | null;
  /** Credits its settlement posted. */
  charged: string;
  unpaid: string;
  /** Authorizations: a retry of a denied or expired step is another. */
  attempts: number;
  created_at: string;
  updated_at: string;
}

/** A run: its status and steps (when started through the API), and the totals of its events. */
export interface Run extends MoneyTotals {
  object: "run";
  id: string;
  customer_id: string | null;
  subject_id: string | null;
  /** The wallet its steps pay from. */
  wallet_id: string | null;
  /** null for a run known only from its events' run_id. */
  status: RunStatus | null;
  metadata: Record<string, string>;
  /** The step the run is suspended at. */
  suspended_step: string | null;
  /** Suspended, and the suspended step can be paid again (credits came back, or a spend cap has room), as `run.resumable` announced. */
  resumable: boolean;
  created_at: string | null;
  /** When it was completed or canceled. */
  finished_at: string | null;
  step_count: number;
  steps: RunStep[];
  events: number;
  failed_events: number;
  credits: string;
  unpaid: string;
  /** The earliest and latest event time (null: no events yet). */
  started_at: string | null;
  ended_at: string | null;
}

/** What a step request, settle or void answers. */
export interface RunStepResult {
  object: "run_step";
  run_id: string;
  run_status: RunStatus;
  step: RunStep;
  hold: Hold | null;
  /** True: the step was already done; nothing changed, nothing was charged. */
  replayed: boolean;
}

/** A wallet's run settings: the low-balance soft cap on new runs. */
export interface RunSettings {
  object: "run_settings";
  wallet_id: string;
  run_start_minimum: string | null;
}

export interface RunStartParams {
  /** Your id (the run_id its events carry); generated when left out. */
  id?: string;
  customer_id: string;
  /** A member with a wallet pays from it, then the pool. */
  subject_id?: string;
  metadata?: Record<string, string>;
}

export interface RunStepParams {
  /** The step's own key, unique in its run. A retry or a resume sends the same key and body. */
  key: string;
  action: string;
  estimate: EstimateInput;
  /** When the step's hold expires if not settled or voided (default 600). */
  hold_timeout_seconds?: number;
}

/** Settle a step with events (their run_id is the run's), or quantities of its action. */
export type RunStepSettleParams =
  | {
      key: string;
      events: SettleEventInput[];
      quantities?: undefined;
      dimensions?: undefined;
      status?: undefined;
    }
  | {
      key: string;
      events?: undefined;
      quantities: Record<string, QuantityInput>;
      dimensions?: Record<string, string>;
      status?: "succeeded" | "failed";
    };

export interface RunListParams extends PageParams {
  status?: RunStatus;
}

/**
 * Durable runs of agent workflows: start a run, then authorize each step with a hold and
 * settle (or void) it under the step's own key. A retry or a resume with the same key never
 * charges a step twice. A step denied for lack of credits or by a spend cap suspends the run
 * (`run.suspended` webhook); once it can be paid again (`run.resumable`: a top-up, the cap's next
 * period, a raised or deleted cap), retry the step or `resume` the run.
 */
export class Runs extends Resource {
  /**
   * Starts a run. Fails with `run_start_below_minimum` when the paying wallets have a run start
   * minimum and less is available.
   *
   * @example
   * const run = await dd.runs.start({ id: "research-42", customer_id: acme.id });
   */
  start(params: RunStartParams, options?: PostOptions): ApiPromise<Run> {
    return this.postJson(options, () => ({ path: "/v1/runs", body: { ...params } }));
  }

  /**
   * A run: status, steps and the totals of its events (events, credits, unpaid, revenue, cost,
   * margin). Works for any run_id events carry, started through the API or not.
   *
   * @example
   * const run = await dd.runs.get("research-42");
   * console.log(run.status, run.credits, run.steps.map((s) => s.status));
   */
  get(id: string, options?: RequestOptions): ApiPromise<Run> {
    return this.fetchJson(options, () => ({ path: `/v1/runs/${seg(id)}` }));
  }

  /**
   * A customer's runs, oldest first, optionally by status.
   *
   * @example
   * const { data } = await dd.runs.list(acme.id, { status: "suspended" });
   */
  list(customerId: string, params?: RunListParams, options?: RequestOptions): ApiPromise<List<Run>> {
    return this.fetchJson(options, () => ({
      path: `/v1/customers/${seg(customerId)}/runs`,
      query: { ...pageQuery(params), status: params?.status },
    }));
  }

  /**
   * Authorizes a step, holding its estimate. A denial for lack of credits or by a spend cap is
   * an answer (`step.status` "denied", `run_status` "suspended"), not an error; retry the same
   * call after `run.resumable` (a top-up, or the cap has room again).
   *
   * @example
   * const r = await dd.runs.step(run.id, { key: "search-1", action: "tool.call", estimate: { credits: "5" } });
   * if (r.step.status !== "held") console.log("suspended until a top-up");
   */
  step(runId: string, params: RunStepParams, options?: PostOptions): ApiPromise<RunStepResult> {
    return this.postJson(options, () => ({
      path: `/v1/runs/${seg(runId)}/steps`,
      body: { ...params, estimate: wireEstimate(params.estimate) },
    }));
  }

  /**
   * Settles a held step with its usage; the same settle again charges nothing.
   *
   * @example
   * await dd.runs.settleStep(run.id, { key: "search-1", quantities: { calls: 1 } });
   */
  settleStep(runId: string, params: RunStepSettleParams, options?: PostOptions): ApiPromise<RunStepResult> {
    return this.postJson(options, () => ({
      path: `/v1/runs/${seg(runId)}/settle_step`,
      body: wireSettle(params),
    }));
  }

  /**
   * Voids a held step: its hold is released and it costs nothing.
   *
   * @example
   * await dd.runs.voidStep(run.id, "search-1");
   */
  voidStep(runId: string, key: string, options?: PostOptions): ApiPromise<RunStepResult> {
    return this.postJson(options, () => ({ path: `/v1/runs/${seg(runId)}/void_step`, body: { key } }));
  }

  /**
   * Resumes a suspended run: its suspended step is authorized again as sent.
   *
   * @example
   * const run = await dd.runs.resume("research-42"); // run.status: "running" when covered
   */
  resume(runId: string, options?: PostOptions): ApiPromise<Run> {
    return this.postJson(options, () => ({ path: `/v1/runs/${seg(runId)}/resume`, body: {} }));
  }

  /**
   * Completes a run (every step settled or voided first).
   *
   * @example
   * await dd.runs.complete("research-42");
   */
  complete(runId: string, options?: PostOptions): ApiPromise<Run> {
    return this.postJson(options, () => ({ path: `/v1/runs/${seg(runId)}/complete`, body: {} }));
  }

  /**
   * Cancels a run: steps still holding credits are voided.
   *
   * @example
   * await dd.runs.cancel("research-42");
   */
  cancel(runId: string, options?: PostOptions): ApiPromise<Run> {
    return this.postJson(options, () => ({ path: `/v1/runs/${seg(runId)}/cancel`, body: {} }));
  }

  /**
   * A wallet's run settings.
   *
   * @example
   * const s = await dd.runs.settings(acme.wallet_id);
   */
  settings(walletId: string, options?: RequestOptions): ApiPromise<RunSettings> {
    return this.fetchJson(options, () => ({ path: `/v1/wallets/${seg(walletId)}/run_settings` }));
  }

  /**
   * Sets a wallet's run start minimum (null clears it): new runs need that much available.
   *
   * @example
   * await dd.runs.setSettings(acme.wallet_id, { run_start_minimum: "20" });
   */
  setSettings(
    walletId: string,
    params: { run_start_minimum: AmountInput | null },
    options?: PostOptions,
  ): ApiPromise<RunSettings> {
    return this.postJson(options, () => ({
      path: `/v1/wallets/${seg(walletId)}/run_settings`,
      body: {
        run_start_minimum:
          params.run_start_minimum === null
            ? null
            : wireAmount(params.run_start_minimum, "run_start_minimum"),
      },
    }));
  }
}
