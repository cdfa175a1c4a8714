import { createHash } from "node:crypto";
import {
  type Authorization,
  fail,
  formatAmount,
  invariant,
  ok,
  planSettleRequest,
  planStepRequest,
  type Result,
  type RunState,
  type RunStatus,
  type StepStatus,
  stepOutcome,
} from "@drawdown/core";
import { TopUpsTried } from "./commerce.js";
import type { Estimate, HoldRecord, Holds, SettleEvent, SettleInput } from "./holds.js";
import { type Page, paginate } from "./records.js";
import { assessSuspension, CapPeriodResumes } from "./run-resume.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/**
 * Durable runs on the store, built on the holds API: a step authorizes through
 * {@link Holds.authorize} (with a hold) and settles or voids through {@link Holds.settle} and
 * {@link Holds.void}; this module only keeps the run and its steps, and decides with the core
 * (core/runs.ts) what a request does. Every write first locks the run's row, so the steps of
 * one run are serialized; the wallet locks the holds API takes come after it.
 *
 * A step denied for lack of credits or by a spend cap suspends the run in the same
 * transaction, writes one suspension row per wallet of the paying chain (the member's wallet and
 * the pool) and emits `run.suspended`. run-resume.ts emits `run.resumable` when the step can be
 * paid again: credits came back, cap room grew, or a cap's period rolled over (a scheduler job
 * registered here). Resuming is retrying the step (or {@link Runs.resume}).
 */

/** A run as stored. */
export interface RunRecord {
  readonly id: string;
  readonly seq: string;
  readonly customerId: string;
  readonly subjectId: string | null;
  /** The wallet that pays its steps (the subject's member wallet, or the pool). */
  readonly walletId: string;
  readonly poolWalletId: string;
  readonly status: RunStatus;
  readonly suspendedStep: string | null;
  /** When the current suspension began (null unless suspended). */
  readonly suspendedAt: number | null;
  /** When `run.resumable` was emitted for the current suspension (null: not yet, or not suspended). */
  readonly resumableAt: number | null;
  readonly metadata: Readonly<Record<string, string>>;
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly endedAt: number | null;
}

/** A step as stored, with its hold's outcome. */
export interface StepRecord {
  readonly runId: string;
  readonly key: string;
  readonly seq: number;
  readonly action: string;
  /** The estimate as given (credits, or quantities with dimensions; decimal strings). */
  readonly estimate: Readonly<Record<string, unknown>>;
  readonly holdTimeoutSeconds: number;
  /** Its status; a `held` step whose hold was resolved elsewhere shows the hold's outcome. */
  readonly status: StepStatus;
  readonly holdId: string | null;
  /** The last authorization's answer. */
  readonly decision: Authorization["decision"];
  readonly reason: string;
  readonly available: bigint;
  readonly estimateCredits: bigint;
  /** How many times it was authorized (a retry of a denied or expired step is another attempt). */
  readonly attempts: number;
  /** Credits its settlement posted, and charged to nobody. */
  readonly charged: bigint;
  readonly unpaid: bigint;
  readonly fingerprint: string;
  readonly settleFingerprint: string | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** What starting a run takes. */
export interface RunStart {
  /** Your id for the run (the run_id of its events); generated (`run_…`) when null. */
  readonly id: string | null;
  readonly customerId: string;
  readonly subjectId: string | null;
  readonly metadata: Readonly<Record<string, string>>;
}

/** What a step asks: authorize `estimate` for `action`, holding it for `holdTimeoutSeconds`. */
export interface StepRequest {
  readonly key: string;
  readonly action: string;
  readonly estimate: Estimate;
  readonly holdTimeoutSeconds: number;
}

/** What settling a step posts: events (their run_id is the run's), or quantities of the step's action. */
export type StepSettle = SettleInput;

/** A step's answer: the step, its run after it, its hold, and whether it was replayed. */
export interface StepResult {
  readonly step: StepRecord;
  readonly run: RunRecord;
  readonly hold: HoldRecord | null;
  /** True when the request found the step already done and changed nothing. */
  readonly replayed: boolean;
}

/** The low-balance soft cap on new runs of a wallet. */
export interface RunSettings {
  readonly walletId: string;
  /** Starting a run needs at least this available; null: no minimum. */
  readonly runStartMinimum: bigint | null;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const msOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : ms(v));

/** JSON with sorted keys and bigints as strings: what a fingerprint hashes. */
function canonical(v: unknown): unknown {
  if (typeof v === "bigint") return v.toString();
  if (Array.isArray(v)) return v.map(canonical);
  if (v !== null && typeof v === "object")
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  return v;
}

const fingerprintOf = (v: unknown): string =>
  createHash("sha256")
    .update(JSON.stringify(canonical(v)))
    .digest("hex");

const estimateJson = (e: Estimate): Record<string, unknown> =>
  canonical(
    "credits" in e ? { credits: e.credits } : { quantities: e.quantities, dimensions: e.dimensions },
  ) as Record<string, unknown>;

function toRun(r: Row): RunRecord {
  return {
    id: String(r.id),
    seq: String(r.seq),
    customerId: String(r.customer_id),
    subjectId: r.subject_id === null ? null : String(r.subject_id),
    walletId: String(r.wallet_id),
    poolWalletId: String(r.pool_wallet_id),
    status: String(r.status) as RunStatus,
    suspendedStep: r.suspended_step === null ? null : String(r.suspended_step),
    suspendedAt: msOrNull(r.suspended_at),
    resumableAt: msOrNull(r.resumable_at),
    metadata: (typeof r.metadata === "string" ? JSON.parse(r.metadata) : r.metadata) as Record<
      string,
      string
    >,
    createdAt: ms(r.created_at),
    updatedAt: ms(r.updated_at),
    endedAt: msOrNull(r.ended_at),
  };
}

function toStep(r: Row, now: number): StepRecord {
  const stored = String(r.status) as StepStatus;
  const raw = r.hold_status === null || r.hold_status === undefined ? null : String(r.hold_status);
  // A pending hold past its timeout can no longer be posted: expired, whether or not the scheduler released it yet.
  const hold = raw === "pending" && ms(r.hold_expires_at) <= now ? "expired" : raw;
  // A held step whose hold was resolved another way (its timeout, or the holds API) shows that outcome.
  const status: StepStatus =
    stored !== "held" || hold === null || hold === "pending"
      ? stored
      : hold === "posted"
        ? "settled"
        : hold === "voided"
          ? "voided"
          : "expired";
  const posted = r.posted === null || r.posted === undefined ? 0n : BigInt(String(r.posted));
  return {
    runId: String(r.run_id),
    key: String(r.key),
    seq: Number(r.seq),
    action: String(r.action),
    estimate: (typeof r.estimate === "string" ? JSON.parse(r.estimate) : r.estimate) as Record<
      string,
      unknown
    >,
    holdTimeoutSeconds: Number(r.hold_timeout_seconds),
    status,
    holdId: r.hold_id === null ? null : String(r.hold_id),
    decision: String(r.decision) as Authorization["decision"],
    reason: String(r.reason),
    available: BigInt(String(r.available)),
    estimateCredits: BigInt(String(r.estimate_credits)),
    attempts: Number(r.attempts),
    charged: hold === "posted" ? posted : 0n,
    unpaid: hold === "posted" && r.unpaid !== null ? BigInt(String(r.unpaid)) : 0n,
    fingerprint: String(r.fingerprint),
    settleFingerprint: r.settle_fingerprint === null ? null : String(r.settle_fingerprint),
    createdAt: ms(r.created_at),
    updatedAt: ms(r.updated_at),
  };
}

const RUN_SELECT = `SELECT r.*, s.suspended_at, s.resumable_at FROM runs r
  LEFT JOIN LATERAL (SELECT min(suspended_at) AS suspended_at, min(resumable_at) AS resumable_at FROM run_suspensions x
    WHERE x.tenant_id = r.tenant_id AND x.run_id = r.id) s ON true`;

const STEP_SELECT = `SELECT s.*, h.status AS hold_status, h.expires_at AS hold_expires_at, h.posted::text AS posted,
  h.unpaid::text AS unpaid FROM run_steps s
  LEFT JOIN holds h ON h.tenant_id = s.tenant_id AND h.id = s.hold_id`;

/** The action whose availability a run's start is checked for (unscoped grants and the soft cap's room count). */
export const RUN_START_ACTION = "run.start";

/** Durable runs: start, steps (authorize, settle, void), resume, complete, cancel, and the start minimum. */
export class Runs {
  constructor(
    private readonly store: Store,
    private readonly holds: Holds,
  ) {
    // Suspensions by a spend cap are checked again when its period rolls over.
    new CapPeriodResumes(store);
  }

  /**
   * Starts a run. Refused with `run_start_below_minimum` when a wallet of its paying chain has
   * a run start minimum and what the chain has available is below it (the low-balance soft
   * cap: started runs keep going down to the normal floor). `already_exists` for an id in use.
   */
  async start(
    ex: SqlExecutor,
    tenantId: string,
    input: RunStart,
    tried: TopUpsTried = new TopUpsTried(),
  ): Promise<Result<RunRecord>> {
    const chain = await this.holds.payingChain(ex, tenantId, input.customerId, input.subjectId);
    if (!chain.ok) return chain;
    const id = input.id ?? this.store.newId("run");
    const taken = await ex.query("SELECT 1 FROM runs WHERE tenant_id = $1 AND id = $2", [tenantId, id]);
    if (taken.rows[0]) return fail("already_exists", `A run ${id} exists; a new run needs a new id.`);
    const minimum = await ex.query<{ m: string | null }>(
      "SELECT max(run_start_minimum)::text AS m FROM run_settings WHERE tenant_id = $1 AND wallet_id = ANY($2::text[])",
      [tenantId, [chain.value.walletId, chain.value.poolWalletId]],
    );
    const min = minimum.rows[0]?.m ?? null;
    if (min !== null) {
      const need = BigInt(min);
      // Asked through authorize (no hold): the same "available" a step would see, under the wallet lock.
      const a = await this.holds.authorize(
        ex,
        tenantId,
        {
          customerId: input.customerId,
          subjectId: input.subjectId,
          action: RUN_START_ACTION,
          estimate: { credits: need },
          holdTimeoutSeconds: null,
        },
        tried,
      );
      if (!a.ok) return a;
      if (a.value.authorization.available < need)
        return fail(
          "run_start_below_minimum",
          `Starting a run needs ${formatAmount(need)} credits available; ${formatAmount(a.value.authorization.available)} are. Runs already started continue.`,
          { available: formatAmount(a.value.authorization.available), run_start_minimum: formatAmount(need) },
        );
    }
    const now = this.store.now(tenantId);
    await ex.query(
      `INSERT INTO runs (tenant_id, id, customer_id, subject_id, wallet_id, pool_wallet_id, status, metadata, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $8)`,
      [
        tenantId,
        id,
        input.customerId,
        input.subjectId,
        chain.value.walletId,
        chain.value.poolWalletId,
        JSON.stringify(input.metadata),
        iso(now),
      ],
    );
    return ok((await this.getRun(tenantId, id, ex))!);
  }

  async getRun(tenantId: string, id: string, ex: SqlExecutor = this.store.db): Promise<RunRecord | null> {
    const { rows } = await ex.query(`${RUN_SELECT} WHERE r.tenant_id = $1 AND r.id = $2`, [tenantId, id]);
    return rows[0] ? toRun(rows[0]) : null;
  }

  /** Locks a run's row for this transaction: one writer per run at a time. */
  async #lockRun(ex: SqlExecutor, tenantId: string, id: string): Promise<RunRecord | null> {
    const locked = await ex.query("SELECT 1 FROM runs WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      id,
    ]);
    return locked.rows[0] ? this.getRun(tenantId, id, ex) : null;
  }

  /** A run's steps in the order they were first asked, at most `limit`. */
  async listSteps(
    tenantId: string,
    runId: string,
    limit: number,
    ex: SqlExecutor = this.store.db,
  ): Promise<StepRecord[]> {
    const { rows } = await ex.query(
      `${STEP_SELECT} WHERE s.tenant_id = $1 AND s.run_id = $2 ORDER BY s.seq LIMIT $3`,
      [tenantId, runId, limit],
    );
    const now = this.store.now(tenantId);
    return rows.map((r) => toStep(r, now));
  }

  async getStep(
    tenantId: string,
    runId: string,
    key: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<StepRecord | null> {
    const { rows } = await ex.query(
      `${STEP_SELECT} WHERE s.tenant_id = $1 AND s.run_id = $2 AND s.key = $3`,
      [tenantId, runId, key],
    );
    return rows[0] ? toStep(rows[0], this.store.now(tenantId)) : null;
  }

  /** How many steps a run has. */
  async countSteps(tenantId: string, runId: string, ex: SqlExecutor = this.store.db): Promise<number> {
    const { rows } = await ex.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM run_steps WHERE tenant_id = $1 AND run_id = $2",
      [tenantId, runId],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** A customer's runs, oldest first, optionally by status; the cursor is the last run's position. */
  async listRuns(
    tenantId: string,
    filter: { customerId: string; status?: RunStatus | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<RunRecord>> {
    const { rows } = await this.store.db.query(
      `${RUN_SELECT} WHERE r.tenant_id = $1 AND r.customer_id = $2 AND ($3::text IS NULL OR r.status = $3)
       AND ($4::bigint IS NULL OR r.seq > $4::bigint) ORDER BY r.seq LIMIT $5`,
      [tenantId, filter.customerId, filter.status ?? null, page.after ?? null, page.limit + 1],
    );
    return paginate(rows.map(toRun), page.limit, (x) => x.seq);
  }

  /**
   * Authorizes a step with a hold, under its key. The same key and body again returns the
   * stored step and changes nothing (a held, settled or voided step is never authorized twice);
   * a denied or expired step is authorized again (the resume). A denial for lack of credits or
   * by a spend cap suspends the run and emits `run.suspended`, in this transaction; allowing the
   * step the run is suspended at resumes it. Before denying for lack of credits, the chain's
   * auto top-up is tried (see {@link Holds.authorize}: run it under `withTopUpsFirst`).
   */
  async step(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    request: StepRequest,
    tried: TopUpsTried = new TopUpsTried(),
  ): Promise<Result<StepResult>> {
    const run = await this.#lockRun(ex, tenantId, runId);
    if (!run) return fail("not_found", `No run ${runId}.`);
    const fingerprint = fingerprintOf({
      action: request.action,
      estimate: estimateJson(request.estimate),
      hold_timeout_seconds: request.holdTimeoutSeconds,
    });
    const existing = await this.getStep(tenantId, runId, request.key, ex);
    const plan = planStepRequest(runState(run), existing, request.key, fingerprint);
    if (!plan.ok) return plan;
    if (plan.value === "replay") return ok(await this.#result(ex, tenantId, runId, request.key, true));
    return this.#authorize(ex, tenantId, run, request, fingerprint, existing, tried);
  }

  async #authorize(
    ex: SqlExecutor,
    tenantId: string,
    run: RunRecord,
    request: StepRequest,
    fingerprint: string,
    existing: StepRecord | null,
    tried: TopUpsTried,
  ): Promise<Result<StepResult>> {
    const r = await this.holds.authorize(
      ex,
      tenantId,
      {
        customerId: run.customerId,
        subjectId: run.subjectId,
        action: request.action,
        estimate: request.estimate,
        holdTimeoutSeconds: request.holdTimeoutSeconds,
      },
      tried,
    );
    if (!r.ok) return r;
    const a = r.value.authorization;
    const now = iso(this.store.now(tenantId));
    const status: StepStatus = a.decision === "allow" ? "held" : "denied";
    const values = [
      tenantId,
      run.id,
      request.key,
      status,
      r.value.hold?.id ?? null,
      a.decision,
      a.reason,
      a.available.toString(),
      a.estimate.toString(),
      now,
    ];
    if (existing === null) {
      await ex.query(
        `INSERT INTO run_steps (tenant_id, run_id, key, status, hold_id, decision, reason, available, estimate_credits,
           created_at, updated_at, seq, fingerprint, action, estimate, hold_timeout_seconds, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10,
           (SELECT count(*) + 1 FROM run_steps WHERE tenant_id = $1 AND run_id = $2), $11, $12, $13, $14, 1)`,
        [
          ...values,
          fingerprint,
          request.action,
          JSON.stringify(estimateJson(request.estimate)),
          request.holdTimeoutSeconds,
        ],
      );
    } else {
      await ex.query(
        `UPDATE run_steps SET status = $4, hold_id = $5, decision = $6, reason = $7, available = $8, estimate_credits = $9,
           updated_at = $10, attempts = attempts + 1 WHERE tenant_id = $1 AND run_id = $2 AND key = $3`,
        values,
      );
    }
    // Read the suspension again: the wallet locks authorize took order it after any grant's hook.
    const current = (await this.getRun(tenantId, run.id, ex))!;
    const outcome = stepOutcome(runState(current), request.key, a.decision, a.reason);
    if (outcome.status !== current.status || outcome.suspendedStep !== current.suspendedStep)
      await ex.query(
        "UPDATE runs SET status = $3, suspended_step = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
        [tenantId, run.id, outcome.status, outcome.suspendedStep, now],
      );
    if (outcome.resumed)
      await ex.query("DELETE FROM run_suspensions WHERE tenant_id = $1 AND run_id = $2", [tenantId, run.id]);
    if (outcome.suspended) {
      // Under the wallet locks authorize took: which cap refuses the step, and when a new
      // period of the caps short of room may let it through (the scheduler looks again then).
      const check = await assessSuspension(ex, this.store, tenantId, run, {
        action: request.action,
        estimate: a.estimate,
      });
      const capEnd = check.capPeriodEnd === null ? null : iso(check.capPeriodEnd);
      await ex.query("DELETE FROM run_suspensions WHERE tenant_id = $1 AND run_id = $2", [tenantId, run.id]);
      await ex.query(
        `INSERT INTO run_suspensions (tenant_id, run_id, wallet_id, step_key, action, estimate, suspended_at, retry_at)
         SELECT $1, $2, w, $4, $5, $6, $7, $8 FROM unnest($3::text[]) AS w`,
        [
          tenantId,
          run.id,
          [...new Set([run.walletId, run.poolWalletId])],
          request.key,
          request.action,
          a.estimate.toString(),
          now,
          check.retryAt === null ? null : iso(check.retryAt),
        ],
      );
      await this.store.emit(ex, tenantId, "run.suspended", {
        run_id: run.id,
        customer_id: run.customerId,
        subject_id: run.subjectId,
        wallet_id: run.walletId,
        step: request.key,
        action: request.action,
        estimate: formatAmount(a.estimate),
        available: formatAmount(a.available),
        reason: a.reason,
        // On `spend_cap_reached`: the cap that refuses it, and when its period ends (it starts fresh then).
        cap_id: check.capId,
        cap_period_end: capEnd,
        suspended_at: now,
      });
    }
    return ok(await this.#result(ex, tenantId, run.id, request.key, false));
  }

  async #result(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    key: string,
    replayed: boolean,
  ): Promise<StepResult> {
    const step = await this.getStep(tenantId, runId, key, ex);
    invariant(step, `step ${key} of run ${runId} exists`);
    const run = (await this.getRun(tenantId, runId, ex))!;
    const hold = step.holdId === null ? null : await this.holds.getHold(tenantId, step.holdId, ex);
    return { step, run, hold, replayed };
  }

  /**
   * Resumes a suspended run: authorizes its suspended step again with the body it was sent
   * with (as a retry of that step would). A running run is returned as it is.
   */
  async resume(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    tried: TopUpsTried = new TopUpsTried(),
  ): Promise<Result<StepResult | RunRecord>> {
    const run = await this.#lockRun(ex, tenantId, runId);
    if (!run) return fail("not_found", `No run ${runId}.`);
    if (run.status === "completed" || run.status === "canceled")
      return fail("run_not_running", `Run ${runId} is ${run.status}; there is nothing to resume.`, {
        status: run.status,
      });
    if (run.status === "running" || run.suspendedStep === null) return ok(run);
    const step = await this.getStep(tenantId, runId, run.suspendedStep, ex);
    invariant(step, `the suspended step of run ${runId} exists`);
    const e = step.estimate as {
      credits?: string;
      quantities?: Record<string, string>;
      dimensions?: Record<string, string>;
    };
    const estimate: Estimate =
      e.credits !== undefined
        ? { credits: BigInt(e.credits) }
        : {
            quantities: Object.fromEntries(
              Object.entries(e.quantities ?? {}).map(([k, v]) => [k, BigInt(v)]),
            ),
            dimensions: e.dimensions ?? {},
          };
    return this.#authorize(
      ex,
      tenantId,
      run,
      { key: step.key, action: step.action, estimate, holdTimeoutSeconds: step.holdTimeoutSeconds },
      step.fingerprint,
      step,
      tried,
    );
  }

  /**
   * Settles a held step with its usage through the holds API; every event carries the run's
   * id. The same settle again returns the step and charges nothing; another settle (or a void)
   * of a resolved step is `step_key_reused`.
   */
  async settleStep(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    key: string,
    input: StepSettle,
  ): Promise<Result<StepResult>> {
    const fingerprint = fingerprintOf({ settle: input });
    return this.#resolveStep(ex, tenantId, runId, key, fingerprint, "settled", async (holdId) => {
      const events: SettleEvent[] =
        "events" in input
          ? input.events.map((e) => ({ ...e, runId }))
          : [
              {
                id: `${holdId}.settle`,
                action: null,
                dimensions: input.dimensions ?? {},
                quantities: input.quantities,
                time: null,
                status: input.status ?? "succeeded",
                runId,
                reportedCost: null,
                fingerprint: `${holdId}.settle`,
              },
            ];
      if ("events" in input) {
        const other = input.events.find((e) => e.runId !== null && e.runId !== runId);
        if (other)
          return fail(
            "invalid_argument",
            `Event "${other.id}" names run ${other.runId}; a step's events belong to its run.`,
            {
              event_id: other.id,
            },
          );
      }
      return this.holds.settle(ex, tenantId, holdId, { events });
    });
  }

  /** Voids a held step: its hold is released, it costs nothing. Again: the same answer, nothing changes. */
  async voidStep(ex: SqlExecutor, tenantId: string, runId: string, key: string): Promise<Result<StepResult>> {
    return this.#resolveStep(ex, tenantId, runId, key, "void", "voided", (holdId) =>
      this.holds.void(ex, tenantId, holdId),
    );
  }

  async #resolveStep(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    key: string,
    fingerprint: string,
    status: "settled" | "voided",
    resolve: (holdId: string) => Promise<Result<HoldRecord>>,
  ): Promise<Result<StepResult>> {
    const run = await this.#lockRun(ex, tenantId, runId);
    if (!run) return fail("not_found", `No run ${runId}.`);
    const step = await this.getStep(tenantId, runId, key, ex);
    if (!step) return fail("not_found", `Run ${runId} has no step "${key}".`);
    const plan = planSettleRequest(runId, step, fingerprint);
    if (!plan.ok) return plan;
    if (plan.value === "replay") return ok(await this.#result(ex, tenantId, runId, key, true));
    invariant(step.holdId, `held step ${key} has a hold`);
    const r = await resolve(step.holdId);
    if (!r.ok) return r;
    await ex.query(
      `UPDATE run_steps SET status = $4, settle_fingerprint = $5, updated_at = $6
       WHERE tenant_id = $1 AND run_id = $2 AND key = $3 AND status = 'held'`,
      [tenantId, runId, key, status, fingerprint, iso(this.store.now(tenantId))],
    );
    return ok(await this.#result(ex, tenantId, runId, key, false));
  }

  /** Completes a run. Refused while a step still holds credits (`run_steps_pending`): settle or void it first. */
  async complete(ex: SqlExecutor, tenantId: string, runId: string): Promise<Result<RunRecord>> {
    const run = await this.#lockRun(ex, tenantId, runId);
    if (!run) return fail("not_found", `No run ${runId}.`);
    if (run.status === "completed" || run.status === "canceled")
      return fail("run_not_running", `Run ${runId} is already ${run.status}.`, { status: run.status });
    // A hold past its timeout is released by the scheduler; only live holds keep a run open.
    const pending = (await this.#pendingSteps(ex, tenantId, runId))
      .filter((s) => s.status === "held")
      .map((s) => s.key);
    if (pending.length > 0)
      return fail(
        "run_steps_pending",
        `Run ${runId} has steps still holding credits (${pending.slice(0, 5).join(", ")}); settle or void them first, or cancel the run.`,
        { steps: pending.slice(0, 20).join(",") },
      );
    return ok(await this.#end(ex, tenantId, runId, "completed"));
  }

  /** Cancels a run: every step still holding credits is voided (a failed run costs nothing more). */
  async cancel(ex: SqlExecutor, tenantId: string, runId: string): Promise<Result<RunRecord>> {
    const run = await this.#lockRun(ex, tenantId, runId);
    if (!run) return fail("not_found", `No run ${runId}.`);
    if (run.status === "completed" || run.status === "canceled")
      return fail("run_not_running", `Run ${runId} is already ${run.status}.`, { status: run.status });
    const now = iso(this.store.now(tenantId));
    for (const s of await this.#pendingSteps(ex, tenantId, runId)) {
      const v = await this.holds.void(ex, tenantId, s.holdId!);
      // A hold past its timeout is no longer voidable: the scheduler expires it, releasing it all the same.
      if (!v.ok && v.error.code !== "hold_expired") return v;
      if (v.ok)
        await ex.query(
          `UPDATE run_steps SET status = 'voided', settle_fingerprint = 'cancel', updated_at = $4
           WHERE tenant_id = $1 AND run_id = $2 AND key = $3`,
          [tenantId, runId, s.key, now],
        );
    }
    return ok(await this.#end(ex, tenantId, runId, "canceled"));
  }

  /** Steps whose hold is still pending (`held`, or `expired` while the scheduler has not released it). */
  async #pendingSteps(ex: SqlExecutor, tenantId: string, runId: string): Promise<StepRecord[]> {
    const { rows } = await ex.query(
      `${STEP_SELECT} WHERE s.tenant_id = $1 AND s.run_id = $2 AND s.status = 'held' AND h.status = 'pending' ORDER BY s.seq`,
      [tenantId, runId],
    );
    const now = this.store.now(tenantId);
    return rows.map((r) => toStep(r, now));
  }

  async #end(
    ex: SqlExecutor,
    tenantId: string,
    runId: string,
    status: "completed" | "canceled",
  ): Promise<RunRecord> {
    const now = iso(this.store.now(tenantId));
    await ex.query("DELETE FROM run_suspensions WHERE tenant_id = $1 AND run_id = $2", [tenantId, runId]);
    await ex.query(
      "UPDATE runs SET status = $3, suspended_step = NULL, updated_at = $4, ended_at = $4 WHERE tenant_id = $1 AND id = $2",
      [tenantId, runId, status, now],
    );
    const ended = (await this.getRun(tenantId, runId, ex))!;
    // In the transaction that ends the run, so a receiver learns of every ended run exactly once.
    await this.store.emit(ex, tenantId, status === "completed" ? "run.completed" : "run.canceled", {
      run_id: ended.id,
      customer_id: ended.customerId,
      subject_id: ended.subjectId,
      wallet_id: ended.walletId,
      metadata: ended.metadata,
      ended_at: now,
    });
    return ended;
  }

  // ---------------------------------------------------------------- the start minimum

  /** A wallet's run settings (null: no such wallet). */
  async getSettings(
    tenantId: string,
    walletId: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<RunSettings | null> {
    const w = await this.store.getWallet(tenantId, walletId, ex);
    if (!w) return null;
    const { rows } = await ex.query(
      "SELECT run_start_minimum::text AS m FROM run_settings WHERE tenant_id = $1 AND wallet_id = $2",
      [tenantId, walletId],
    );
    return { walletId, runStartMinimum: rows[0] ? BigInt(String(rows[0].m)) : null };
  }

  /** Sets (or, with null, clears) a wallet's run start minimum. */
  async setSettings(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    runStartMinimum: bigint | null,
  ): Promise<Result<RunSettings>> {
    const w = await this.store.getWallet(tenantId, walletId, ex);
    if (!w) return fail("not_found", `No wallet ${walletId}.`);
    if (runStartMinimum !== null && runStartMinimum < 0n)
      return fail("invalid_amount", "run_start_minimum must be zero or more credits.");
    if (runStartMinimum === null)
      await ex.query("DELETE FROM run_settings WHERE tenant_id = $1 AND wallet_id = $2", [
        tenantId,
        walletId,
      ]);
    else
      await ex.query(
        `INSERT INTO run_settings (tenant_id, wallet_id, run_start_minimum, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, wallet_id) DO UPDATE SET run_start_minimum = $3, updated_at = $4`,
        [tenantId, walletId, runStartMinimum.toString(), iso(this.store.now(tenantId))],
      );
    return ok({ walletId, runStartMinimum });
  }
}

/** What the core's decisions see of a run. */
const runState = (run: RunRecord): RunState => ({
  id: run.id,
  status: run.status,
  suspendedStep: run.suspendedStep,
  resumableAt: run.resumableAt,
});
