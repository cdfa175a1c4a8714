import { CapBook, capPeriodEnd, capPeriodStart, narrowByCap, type SpendCap } from "./caps.js";
import { availableFor, type HoldState } from "./holds.js";
import { throttleCheck } from "./overage.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Durable runs (DESIGN.md, "Run"): an agent workflow whose steps each authorize (with a hold)
 * and settle under their own key. Pure decisions only: what a step request, a settle and a
 * denial do to a step and its run. The storage layer locks the run, asks these, and calls the
 * holds API.
 *
 * Why a step key and not the request's Idempotency-Key: a run is resumed later, maybe by
 * another process, and the step is the unit that must never be charged twice. The key is
 * stored with a fingerprint of the step's body, so a retry or a resume with the same body gets
 * the first result, and a different body under a used key is refused (`step_key_reused`).
 */

/**
 * Where a run is: running; suspended (a step was denied for lack of credits or by a spend cap);
 * then completed or canceled.
 */
export type RunStatus = "running" | "suspended" | "completed" | "canceled";

/**
 * Where a step is: `held` (authorized, its hold pending), `denied` (not authorized; a retry
 * authorizes again), `settled` (its usage posted against the hold), `voided` (its hold
 * released, nothing charged), `expired` (its hold timed out unsettled; a retry authorizes again).
 */
export type StepStatus = "held" | "denied" | "settled" | "voided" | "expired";

/** Bounds of runs and steps, shared with the API's validation. */
export const RUN_LIMITS = {
  /** Longest client-given run id and step key. */
  idMax: 200,
  keyMax: 200,
  /** The most steps a run's view lists (a run may have more; the count says how many). */
  viewSteps: 1000,
} as const;

/** A client-given run id or step key: starts with a letter or digit, then letters, digits, `_ . : -`. */
export const RUN_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$";

/** What the run looks like to a step decision. */
export interface RunState {
  readonly id: string;
  readonly status: RunStatus;
  /** The key of the step the run is suspended at (null unless suspended). */
  readonly suspendedStep: string | null;
  /** When the run.resumable webhook of the current suspension was emitted (null: not yet). */
  readonly resumableAt: number | null;
}

/** What a step looks like to a decision. */
export interface StepState {
  readonly key: string;
  readonly fingerprint: string;
  readonly status: StepStatus;
  /** The fingerprint of its settle or void, once one happened. */
  readonly settleFingerprint: string | null;
}

/**
 * What to do with a step request (authorize under `key` with a body of `fingerprint`):
 * `replay` the stored step (same key, same body, already authorized or resolved: nothing
 * changes, nothing is charged again), or `authorize` (a new key, or a retry of a denied or
 * expired step: the resume). Fails, changing nothing, on a key reused with another body, a new
 * step of a finished run, or a new step of a run suspended at another step.
 */
export function planStepRequest(
  run: RunState,
  step: StepState | null,
  key: string,
  fingerprint: string,
): Result<"authorize" | "replay"> {
  if (step !== null && step.fingerprint !== fingerprint)
    return fail(
      "step_key_reused",
      `Step "${key}" of run ${run.id} was sent with a different body; a retry must send the same body, a new step needs a new key.`,
      { step: key },
    );
  const retryable = step === null || step.status === "denied" || step.status === "expired";
  if (!retryable) return ok("replay");
  if (run.status === "completed" || run.status === "canceled")
    return fail("run_not_running", `Run ${run.id} is ${run.status}; it takes no more steps.`, {
      status: run.status,
    });
  if (run.status === "suspended" && run.suspendedStep !== key)
    return fail(
      "run_suspended",
      `Run ${run.id} is suspended at step "${run.suspendedStep}" (denied for lack of credits or by a spend cap); retry that step (or resume the run) once it can be paid: run.resumable announces it.`,
      { step: run.suspendedStep ?? "" },
    );
  return ok("authorize");
}

/** What an authorization of a step does to its run. */
export interface StepOutcome {
  readonly status: RunStatus;
  readonly suspendedStep: string | null;
  /** A new suspension begins: emit `run.suspended` (once per suspension). */
  readonly suspended: boolean;
  /** The run leaves its suspension (its suspended step was allowed). */
  readonly resumed: boolean;
}

/**
 * Denial reasons that suspend a run: the agent cannot go on until credits return or a spend
 * cap has room again (its period rolls over, its limit is raised, it is deleted), and each of
 * those is announced (`run.resumable`). A throttle is not among them: it names the cheaper
 * actions still allowed, so the client decides.
 */
export const SUSPENDING_REASONS: readonly string[] = ["insufficient_credits", "spend_cap_reached"];

/**
 * The run after a step's authorization. A denial for lack of credits or by a spend cap
 * ({@link SUSPENDING_REASONS}) suspends the run at that step; a new suspension starts (and is
 * announced) when the run was running, or when the suspension was already announced resumable
 * and the retry is denied again (someone spent the credits or the cap room first). Allowing the
 * suspended step resumes the run. A throttle leaves the run as it is: the client decides.
 */
export function stepOutcome(
  run: RunState,
  key: string,
  decision: "allow" | "deny" | "throttle",
  reason: string,
): StepOutcome {
  if (decision === "allow") {
    const resumed = run.status === "suspended" && run.suspendedStep === key;
    return {
      status: resumed ? "running" : run.status,
      suspendedStep: resumed ? null : run.suspendedStep,
      suspended: false,
      resumed,
    };
  }
  if (!SUSPENDING_REASONS.includes(reason))
    return { status: run.status, suspendedStep: run.suspendedStep, suspended: false, resumed: false };
  const fresh = run.status === "running" || run.resumableAt !== null;
  return { status: "suspended", suspendedStep: key, suspended: fresh, resumed: false };
}

/** Whether a suspended step could be paid now, and when to look again. */
export interface SuspensionCheck {
  /**
   * What the chain could pay for the step's action now, as authorize computes it: eligible
   * grants plus overdraft room, narrowed by the room of the spend caps that apply.
   */
  readonly available: bigint;
  /**
   * Authorizing the step now would allow it: `available` covers the estimate, and the throttle
   * overage policy would not refuse its action (the level is the wallet's, as in authorize).
   */
  readonly payable: boolean;
  /** The tightest applicable cap, when its room is short of the estimate; null otherwise. */
  readonly capId: string | null;
  /** When that cap's current period ends (it starts fresh then); null with no `capId`. */
  readonly capPeriodEnd: number | null;
  /**
   * When every cap short of room has started a new period, so the step may be payable then
   * (the scheduler looks again). Null when it is payable, when credits are short too or the
   * step would be throttled (a grant announces it), or when a short cap's limit is below the
   * estimate (a new period never helps; raising or deleting the cap does, and announces it).
   */
  readonly retryAt: number | null;
}

/**
 * Checks a suspended step (its action and estimate, charged to `subjectId` on the locked
 * chain) against what the chain and the spend caps allow now. Pure; the storage layer asks it
 * whenever credits come back or cap room grows, and when a short cap's period rolls over.
 */
export function checkSuspension(
  state: HoldState,
  step: { readonly subjectId: string | null; readonly action: string; readonly estimate: bigint },
  now: number,
): SuspensionCheck {
  const book = new CapBook(state.caps);
  const chain = state.sources.map((s) => s.walletId);
  const credits = availableFor(state, step.action, now);
  const rooms = book.rooms(chain, step.subjectId, now);
  const tightest = book.room(chain, step.subjectId, now);
  const available = narrowByCap(credits, tightest?.room ?? null);
  // Authorize throttles before it allows: a step the throttle refuses is not payable, however
  // much room the caps have (only more credits lift the wallet above the level).
  const throttled = throttleCheck(state.policy, step.action, credits, step.estimate) !== null;
  const payable = step.estimate <= available && !throttled;
  const refusing = tightest !== null && tightest.room < step.estimate ? tightest.cap : null;
  const periodEnd = (cap: SpendCap) => capPeriodEnd(cap.period, capPeriodStart(cap.period, now));
  const short = rooms.filter((r) => r.room < step.estimate);
  let retryAt: number | null = null;
  if (!payable && !throttled && credits >= step.estimate && short.every((r) => r.cap.limit >= step.estimate))
    for (const { cap } of short) {
      const end = periodEnd(cap);
      if (retryAt === null || end > retryAt) retryAt = end;
    }
  return {
    available,
    payable,
    capId: refusing?.id ?? null,
    capPeriodEnd: refusing === null ? null : periodEnd(refusing),
    retryAt,
  };
}

/**
 * What to do with a settle (or void) of a step: `replay` (the same settle again: nothing
 * changes), or `settle`. Fails on a different settle of a resolved step (`step_key_reused`), on a
 * step whose hold timed out (`hold_expired`) and on a step that holds nothing (`step_not_held`).
 */
export function planSettleRequest(
  runId: string,
  step: StepState,
  fingerprint: string,
): Result<"settle" | "replay"> {
  if (step.settleFingerprint !== null) {
    if (step.settleFingerprint === fingerprint) return ok("replay");
    return fail(
      "step_key_reused",
      `Step "${step.key}" of run ${runId} was already ${step.status} with a different request; it resolves once.`,
      { step: step.key },
    );
  }
  if (step.status === "expired")
    return fail(
      "hold_expired",
      `Step "${step.key}" of run ${runId}: its hold timed out unsettled. Retry the step (same key and body) to authorize it again.`,
      { step: step.key, status: step.status },
    );
  if (step.status !== "held")
    return fail(
      "step_not_held",
      `Step "${step.key}" of run ${runId} is ${step.status}: it holds nothing to settle or void.`,
      { step: step.key, status: step.status },
    );
  return ok("settle");
}
