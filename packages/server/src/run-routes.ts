import {
  formatAmount,
  formatTimestamp,
  HOLD_LIMITS,
  RUN_ID_PATTERN,
  RUN_LIMITS,
  type RunStatus,
} from "@drawdown/core";
import type { ApiKey, RunRecord, Runs, SqlExecutor, StepRecord, StepResult, Store } from "@drawdown/storage";
import { Type } from "@sinclair/typebox";
import { ApiError } from "./errors.js";
import {
  AuthorizeBody,
  checkSettleBody,
  HoldView,
  holdView,
  parseEstimate,
  quantities,
  SettleEventWire,
  settleEvents,
} from "./hold-routes.js";
import { MONEY_JOIN, MONEY_PRESENT, MONEY_SUMS, MoneyFields, moneyView } from "./money.js";
import {
  amount,
  created,
  customerInPath,
  must,
  notFound,
  okReply,
  page,
  type Route,
  route,
  visible,
  walletInPath,
} from "./routes.js";
import * as S from "./schemas.js";
import { listView } from "./views.js";

/**
 * Durable runs: an agent workflow's steps, each authorized with a hold and settled under its
 * own key, so a retry or a resume never charges a step twice. A step denied for lack of
 * credits or by a spend cap suspends the run (`run.suspended`); when the step can be paid again
 * (a grant, credits given back, the cap's next period, a raised or deleted cap) that is
 * announced (`run.resumable`); retrying the step (or resuming the run) continues it.
 */

const RunId = Type.String({
  minLength: 1,
  maxLength: RUN_LIMITS.idMax,
  pattern: RUN_ID_PATTERN,
  description: 'Your id for the run, the run_id its events carry: letters, digits and "_ . : -".',
});
const StepKey = Type.String({
  minLength: 1,
  maxLength: RUN_LIMITS.keyMax,
  pattern: RUN_ID_PATTERN,
  description:
    'The step\'s own key, unique in its run: letters, digits and "_ . : -". A retry or a resume sends the same key and body.',
});
/** A run id in a path: any id events may name (GET), or a started run's. */
const RunParam = Type.Object(
  { id: Type.String({ minLength: 1, maxLength: RUN_LIMITS.idMax, description: "The run's id." }) },
  S.strict,
);

const RUN_STATUSES = ["running", "suspended", "completed", "canceled"] as const;
const STEP_STATUSES = ["held", "denied", "settled", "voided", "expired"] as const;

export const RunStart = Type.Object(
  {
    id: Type.Optional(RunId),
    customer_id: S.Id("cus", "The customer who pays."),
    subject_id: Type.Optional(
      S.Id("sub", "The member, agent or workflow: a member with a wallet pays from it, then the pool."),
    ),
    metadata: Type.Optional(S.Metadata),
  },
  { ...S.strict, title: "RunStart" },
);

const Estimate = AuthorizeBody.properties.estimate;

export const StepBody = Type.Object(
  {
    key: StepKey,
    action: AuthorizeBody.properties.action,
    estimate: Estimate,
    hold_timeout_seconds: Type.Optional(
      Type.Integer({
        minimum: HOLD_LIMITS.timeoutMinSeconds,
        maximum: HOLD_LIMITS.timeoutMaxSeconds,
        description: `When the step's hold expires if not settled or voided (default ${HOLD_LIMITS.timeoutDefaultSeconds}).`,
      }),
    ),
  },
  { ...S.strict, title: "RunStepRequest" },
);

export const StepSettleBody = Type.Object(
  {
    key: StepKey,
    events: Type.Optional(
      Type.Array(SettleEventWire, {
        minItems: 1,
        maxItems: HOLD_LIMITS.maxSettleEvents,
        description:
          "The step's actual usage, as events (their run_id is the run's; action defaults to the step's).",
      }),
    ),
    quantities: Type.Optional(
      Type.Record(
        Type.String({ pattern: "^[a-z][a-z0-9_]{0,63}$" }),
        Type.Union([Type.String({ maxLength: 40 }), Type.Integer({ minimum: 0 })]),
        {
          additionalProperties: false,
          minProperties: 1,
          maxProperties: 20,
          description: "Quantities of the step's action.",
        },
      ),
    ),
    dimensions: Type.Optional(
      Type.Record(
        Type.String({ pattern: "^[a-z][a-z0-9_]{0,63}$" }),
        Type.String({ minLength: 1, maxLength: 200 }),
        {
          additionalProperties: false,
          maxProperties: 20,
        },
      ),
    ),
    status: Type.Optional(Type.Union([Type.Literal("succeeded"), Type.Literal("failed")])),
  },
  { ...S.strict, title: "RunStepSettle" },
);

export const StepVoidBody = Type.Object({ key: StepKey }, { ...S.strict, title: "RunStepVoid" });

export const RunSettingsBody = Type.Object(
  {
    run_start_minimum: Type.Union([
      S.Amount("Credits available needed to start a run; null: no minimum."),
      Type.Null(),
    ]),
  },
  { ...S.strict, title: "RunSettingsUpdate" },
);

export const RunStepView = Type.Object(
  {
    key: Type.String(),
    action: Type.String(),
    status: Type.Union(
      STEP_STATUSES.map((s) => Type.Literal(s)),
      {
        description:
          "held (authorized, its hold pending), denied (a retry authorizes again), settled, voided, or expired (its hold timed out; a retry authorizes again).",
      },
    ),
    estimate: Type.Record(Type.String(), Type.Unknown(), { description: "The estimate as given." }),
    estimate_credits: S.Amount("The estimate in credits."),
    decision: Type.Union([Type.Literal("allow"), Type.Literal("deny"), Type.Literal("throttle")]),
    reason: Type.String({ description: "The last authorization's reason." }),
    available: S.Amount("What the wallet chain could pay at the last authorization."),
    hold_id: Type.Union([Type.String(), Type.Null()]),
    charged: S.Amount("Credits its settlement posted."),
    unpaid: S.Amount("Usage of its settlement charged to nobody."),
    attempts: Type.Integer({
      description: "Authorizations: a retry of a denied or expired step is another.",
    }),
    created_at: Type.String(),
    updated_at: Type.String(),
  },
  { title: "RunStep" },
);

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

export const RunView = Type.Object(
  {
    object: Type.Literal("run"),
    id: Type.String(),
    customer_id: Type.Union([Type.String(), Type.Null()]),
    subject_id: Type.Union([Type.String(), Type.Null()]),
    wallet_id: Type.Union([Type.String(), Type.Null()], { description: "The wallet its steps pay from." }),
    status: Type.Union([...RUN_STATUSES.map((s) => Type.Literal(s)), Type.Null()], {
      description:
        "running, suspended (a step was denied for lack of credits or by a spend cap), completed or canceled; null for a run known only from its events' run_id.",
    }),
    metadata: Type.Record(Type.String(), Type.String()),
    suspended_step: Nullable(Type.String({ description: "The step the run is suspended at." })),
    resumable: Type.Boolean({
      description:
        "Suspended, and the suspended step can be paid again (credits came back, or a spend cap has room: its next period, a raised limit, deleted), as announced by run.resumable.",
    }),
    created_at: Nullable(Type.String()),
    finished_at: Nullable(Type.String({ description: "When it was completed or canceled." })),
    step_count: Type.Integer(),
    steps: Type.Array(RunStepView, {
      description: `Its steps in order (the first ${RUN_LIMITS.viewSteps}).`,
    }),
    events: Type.Integer({ description: "Usage events naming the run." }),
    failed_events: Type.Integer(),
    credits: S.Amount("Credits its events were charged."),
    unpaid: S.Amount(),
    ...MoneyFields,
    started_at: Nullable(Type.String({ description: "The earliest event time (null: no events yet)." })),
    ended_at: Nullable(Type.String({ description: "The latest event time (null: no events yet)." })),
  },
  { title: "Run" },
);

export const RunStepResultView = Type.Object(
  {
    object: Type.Literal("run_step"),
    run_id: Type.String(),
    run_status: Type.Union(RUN_STATUSES.map((s) => Type.Literal(s))),
    step: RunStepView,
    hold: Type.Union([HoldView, Type.Null()]),
    replayed: Type.Boolean({
      description: "True: the step was already done; nothing changed, nothing was charged.",
    }),
  },
  { title: "RunStepResult" },
);

export const RunSettingsView = Type.Object(
  {
    object: Type.Literal("run_settings"),
    wallet_id: Type.String(),
    run_start_minimum: Type.Union([S.Amount(), Type.Null()]),
  },
  { title: "RunSettings" },
);

const time = (t: number | null) => (t === null ? null : formatTimestamp(t));

const stepView = (s: StepRecord) => ({
  key: s.key,
  action: s.action,
  status: s.status,
  estimate: s.estimate,
  estimate_credits: formatAmount(s.estimateCredits),
  decision: s.decision,
  reason: s.reason,
  available: formatAmount(s.available),
  hold_id: s.holdId,
  charged: formatAmount(s.charged),
  unpaid: formatAmount(s.unpaid),
  attempts: s.attempts,
  created_at: formatTimestamp(s.createdAt),
  updated_at: formatTimestamp(s.updatedAt),
});

const stepResultView = (r: StepResult) => ({
  object: "run_step" as const,
  run_id: r.run.id,
  run_status: r.run.status,
  step: stepView(r.step),
  hold: r.hold ? holdView(r.hold) : null,
  replayed: r.replayed,
});

/** A run as the API shows it: the run (when started through the API), its steps, and its events' totals. */
async function runView(
  store: Store,
  runs: Runs,
  tenantId: string,
  key: ApiKey,
  id: string,
  ex: SqlExecutor = store.db,
) {
  const run = await runs.getRun(tenantId, id, ex);
  if (run) visible(key, run.customerId, "run", id);
  // A run belongs to one customer; a restricted key sees only its customer's events.
  const where = "e.tenant_id = $1 AND e.run_id = $2 AND ($3::text IS NULL OR e.customer_id = $3)";
  const params = [tenantId, id, run ? run.customerId : key.customerId];
  const [{ rows }, money] = await Promise.all([
    ex.query(
      `SELECT CASE WHEN count(DISTINCT e.customer_id) = 1 THEN min(e.customer_id) END AS customer_id, count(*)::int AS events,
         count(*) FILTER (WHERE e.detail::json->>'status' = 'failed')::int AS failed,
         coalesce(sum(e.charged), 0)::text AS credits, coalesce(sum(e.unpaid), 0)::text AS unpaid,
         min(e.time) AS started, max(e.time) AS ended
       FROM usage_events e WHERE ${where}`,
      params,
    ),
    ex.query(
      `SELECT ${MONEY_SUMS} FROM usage_events e ${MONEY_JOIN} WHERE ${where} AND ${MONEY_PRESENT} GROUP BY 1`,
      params,
    ),
  ]);
  const r = rows[0]!;
  if (!run && Number(r.events) === 0) throw notFound("run", id);
  const steps = run ? await runs.listSteps(tenantId, id, RUN_LIMITS.viewSteps, ex) : [];
  return {
    object: "run" as const,
    id,
    customer_id: run ? run.customerId : (r.customer_id as string | null),
    subject_id: run?.subjectId ?? null,
    wallet_id: run?.walletId ?? null,
    status: run?.status ?? null,
    metadata: run?.metadata ?? {},
    suspended_step: run?.suspendedStep ?? null,
    resumable: run !== null && run.status === "suspended" && run.resumableAt !== null,
    created_at: run ? formatTimestamp(run.createdAt) : null,
    finished_at: time(run?.endedAt ?? null),
    step_count: run
      ? steps.length < RUN_LIMITS.viewSteps
        ? steps.length
        : await runs.countSteps(tenantId, id, ex)
      : 0,
    steps: steps.map(stepView),
    events: Number(r.events),
    failed_events: Number(r.failed),
    credits: formatAmount(BigInt(String(r.credits))),
    unpaid: formatAmount(BigInt(String(r.unpaid))),
    ...moneyView(money.rows),
    started_at: r.started === null ? null : new Date(r.started as string).toISOString(),
    ended_at: r.ended === null ? null : new Date(r.ended as string).toISOString(),
  };
}

const RUN_CURSOR = /^r[1-9][0-9]{0,18}$/;

/** A started run this key may see, or `not_found` either way. */
async function startedRun(
  runs: Runs,
  tenantId: string,
  key: ApiKey,
  id: string,
  ex: SqlExecutor,
): Promise<RunRecord> {
  const run = await runs.getRun(tenantId, id, ex);
  if (!run) throw notFound("run", id);
  visible(key, run.customerId, "run", id);
  return run;
}

const STEP_ERRORS = ["not_found", "run_not_running", "run_suspended", "step_key_reused"] as const;

export const RUN_ROUTES: readonly Route[] = [
  route({
    method: "POST",
    url: "/v1/runs",
    operationId: "createRun",
    tag: "Runs",
    summary: "Start a run",
    description:
      "Starts a durable run of an agent workflow for a customer (and optionally a subject, whose member wallet pays first). Its id is yours or generated (`run_…`); its usage events carry it as `run_id`. When a wallet of the paying chain has a `run_start_minimum` and less than that is available, the run is refused with `run_start_below_minimum` (runs already started continue down to the wallet's floor).",
    access: "secret",
    body: RunStart,
    response: RunView,
    status: 201,
    errors: ["not_found", "already_exists", "run_start_below_minimum"],
    handle: async ({ store, runs, tx, tenantId, key, body, topUps }) => {
      const run = must(
        await runs.start(
          tx,
          tenantId,
          {
            id: body.id ?? null,
            customerId: body.customer_id,
            subjectId: body.subject_id ?? null,
            metadata: body.metadata ?? {},
          },
          topUps,
        ),
      );
      return created(await runView(store, runs, tenantId, key, run.id, tx));
    },
  }),
  route({
    method: "GET",
    url: "/v1/runs/:id",
    operationId: "getRun",
    tag: "Runs",
    summary: "Get a run: its status, steps and totals",
    description:
      "A run's status and steps (when started through `POST /v1/runs`), and the totals of every usage event naming it as `run_id`: events, credits, unpaid, revenue, cost and margin. A run known only from its events answers with its totals and a null status. A restricted key reads its own customer's runs.",
    access: "read",
    params: RunParam,
    response: RunView,
    errors: ["not_found"],
    handle: async ({ store, runs, tenantId, key, params }) =>
      okReply(await runView(store, runs, tenantId, key, params.id)),
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/runs",
    operationId: "listRuns",
    tag: "Runs",
    summary: "List a customer's runs",
    description:
      "Runs started through the API, oldest first, optionally by status. Each with its steps and totals.",
    access: "read",
    params: S.IdParam("cus", "customer"),
    query: S.withPage({
      status: Type.Optional(Type.Union(RUN_STATUSES.map((s) => Type.Literal(s)))),
    }),
    response: S.ListOf(RunView),
    errors: ["not_found", "invalid_cursor"],
    handle: async ({ store, runs, tenantId, key, params, query }) => {
      await customerInPath(store, tenantId, key, params.id);
      const p = page(query, RUN_CURSOR);
      const r = await runs.listRuns(
        tenantId,
        { customerId: params.id, status: (query.status ?? null) as RunStatus | null },
        { limit: p.limit, after: p.after === null ? null : p.after.slice(1) },
      );
      const views = [];
      for (const run of r.items) views.push(await runView(store, runs, tenantId, key, run.id));
      return okReply(listView(views, r.next === null ? null : `r${r.next}`));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/steps",
    operationId: "authorizeRunStep",
    tag: "Runs",
    summary: "Authorize a step of a run, holding its estimate",
    description:
      "Authorizes one step under its `key` and, when allowed, holds the estimate (as `POST /v1/authorize` with `hold: true`). The same key with the same body returns the stored step and changes nothing, so a retry or a resume never holds or charges a step twice; the same key with another body is `step_key_reused`. A step denied for lack of credits or by a spend cap (`reason` `insufficient_credits` or `spend_cap_reached`) is an answer (200, step `denied`): the run becomes `suspended` and `run.suspended` is emitted (with `cap_id` and `cap_period_end` for a cap). Retrying that step (same key and body) once `run.resumable` says it can be paid (a top-up; the cap's next period, a raised limit or a deleted cap) authorizes it again and the run continues. A throttle denial does not suspend. While suspended, other new steps are refused (`run_suspended`).",
    access: "secret",
    params: RunParam,
    body: StepBody,
    response: RunStepResultView,
    errors: [...STEP_ERRORS, "invalid_amount", "invalid_argument", "unknown_action", "no_rate_card"],
    handle: async ({ runs, tx, tenantId, key, params, body, topUps }) => {
      await startedRun(runs, tenantId, key, params.id, tx);
      const estimate = parseEstimate(body.estimate);
      const r = must(
        await runs.step(
          tx,
          tenantId,
          params.id,
          {
            key: body.key,
            action: body.action,
            estimate,
            holdTimeoutSeconds: body.hold_timeout_seconds ?? HOLD_LIMITS.timeoutDefaultSeconds,
          },
          topUps,
        ),
      );
      return okReply(stepResultView(r));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/settle_step",
    operationId: "settleRunStep",
    tag: "Runs",
    summary: "Settle a step with its actual usage",
    description:
      "Settles the held step `key` with its usage, as `events` (each with its own id) or `quantities` of the step's action, through its hold (see `POST /v1/holds/:id/settle`); every event carries the run's id as `run_id`. The same settle again returns the step and charges nothing; a different settle (or a void) of a resolved step is `step_key_reused`; a denied or expired step is `step_not_held`.",
    access: "secret",
    params: RunParam,
    body: StepSettleBody,
    response: RunStepResultView,
    errors: [
      "not_found",
      "step_key_reused",
      "step_not_held",
      "hold_expired",
      "invalid_argument",
      "invalid_event",
      "invalid_amount",
      "event_id_reused",
      "unknown_action",
      "no_rate_card",
      "event_too_old",
      "event_in_future",
    ],
    handle: async ({ store, runs, tx, tenantId, key, params, body }) => {
      const run = await startedRun(runs, tenantId, key, params.id, tx);
      checkSettleBody(body);
      const step = await runs.getStep(tenantId, run.id, body.key, tx);
      if (!step) throw new ApiError("not_found", `Run ${run.id} has no step "${body.key}".`);
      if (body.quantities !== undefined) {
        const settled = must(
          await runs.settleStep(tx, tenantId, run.id, body.key, {
            quantities: quantities(body.quantities, "quantities"),
            ...(body.dimensions ? { dimensions: body.dimensions } : {}),
            ...(body.status ? { status: body.status } : {}),
          }),
        );
        return okReply(stepResultView(settled));
      }
      const events = settleEvents(body.events!, run.customerId, step.action, store.now(tenantId));
      return okReply(stepResultView(must(await runs.settleStep(tx, tenantId, run.id, body.key, { events }))));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/void_step",
    operationId: "voidRunStep",
    tag: "Runs",
    summary: "Void a step: release its hold, charge nothing",
    description:
      "Releases the held step's hold: a failed step costs nothing. Again: the same answer, nothing changes. A step already settled is `step_key_reused`; a denied or expired one `step_not_held`.",
    access: "secret",
    params: RunParam,
    body: StepVoidBody,
    response: RunStepResultView,
    errors: ["not_found", "step_key_reused", "step_not_held", "hold_expired"],
    handle: async ({ runs, tx, tenantId, key, params, body }) => {
      await startedRun(runs, tenantId, key, params.id, tx);
      return okReply(stepResultView(must(await runs.voidStep(tx, tenantId, params.id, body.key))));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/resume",
    operationId: "resumeRun",
    tag: "Runs",
    summary: "Resume a suspended run",
    description:
      "Authorizes the step the run is suspended at again, with the body it was sent with (as retrying it would). When allowed, the run is `running` again and the step `held`; when still not covered, it stays `suspended`. A running run is returned as it is; a finished one is `run_not_running`.",
    access: "secret",
    params: RunParam,
    body: Type.Object({}, { ...S.strict, title: "RunResume" }),
    response: RunView,
    // The suspended step is rated again: a rate card changed since can refuse it.
    errors: ["not_found", "run_not_running", "unknown_action", "no_rate_card"],
    handle: async ({ store, runs, tx, tenantId, key, params, topUps }) => {
      await startedRun(runs, tenantId, key, params.id, tx);
      must(await runs.resume(tx, tenantId, params.id, topUps));
      return okReply(await runView(store, runs, tenantId, key, params.id, tx));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/complete",
    operationId: "completeRun",
    tag: "Runs",
    summary: "Complete a run",
    description:
      "Marks the run completed. Refused while a step still holds credits (`run_steps_pending`): settle or void it first. A finished run is `run_not_running`.",
    access: "secret",
    params: RunParam,
    body: Type.Object({}, { ...S.strict, title: "RunComplete" }),
    response: RunView,
    errors: ["not_found", "run_not_running", "run_steps_pending"],
    handle: async ({ store, runs, tx, tenantId, key, params }) => {
      await startedRun(runs, tenantId, key, params.id, tx);
      must(await runs.complete(tx, tenantId, params.id));
      return okReply(await runView(store, runs, tenantId, key, params.id, tx));
    },
  }),
  route({
    method: "POST",
    url: "/v1/runs/:id/cancel",
    operationId: "cancelRun",
    tag: "Runs",
    summary: "Cancel a run",
    description:
      "Cancels the run (running or suspended): every step still holding credits is voided, so it costs nothing more. A finished run is `run_not_running`.",
    access: "secret",
    params: RunParam,
    body: Type.Object({}, { ...S.strict, title: "RunCancel" }),
    response: RunView,
    errors: ["not_found", "run_not_running"],
    handle: async ({ store, runs, tx, tenantId, key, params }) => {
      await startedRun(runs, tenantId, key, params.id, tx);
      must(await runs.cancel(tx, tenantId, params.id));
      return okReply(await runView(store, runs, tenantId, key, params.id, tx));
    },
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id/run_settings",
    operationId: "getRunSettings",
    tag: "Runs",
    summary: "Get a wallet's run settings",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: RunSettingsView,
    errors: ["not_found"],
    handle: async ({ store, runs, tenantId, key, params }) => {
      await walletInPath(store, tenantId, key, params.id);
      const s = (await runs.getSettings(tenantId, params.id))!;
      return okReply(settingsView(s.walletId, s.runStartMinimum));
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/run_settings",
    operationId: "setRunSettings",
    tag: "Runs",
    summary: "Set a wallet's run start minimum",
    description:
      "The low-balance soft cap on new runs: starting a run whose paying chain (a member's wallet, then the pool) has a wallet with a `run_start_minimum` needs at least that many credits available (the largest minimum of the chain applies). Steps of runs already started are not affected: they continue down to the wallet's normal floor. null clears it.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: RunSettingsBody,
    response: RunSettingsView,
    errors: ["not_found", "invalid_amount"],
    handle: async ({ runs, tx, tenantId, params, body }) => {
      const min =
        body.run_start_minimum === null ? null : amount(body.run_start_minimum, "run_start_minimum", true);
      const s = must(await runs.setSettings(tx, tenantId, params.id, min));
      return okReply(settingsView(s.walletId, s.runStartMinimum));
    },
  }),
];

const settingsView = (walletId: string, min: bigint | null) => ({
  object: "run_settings" as const,
  wallet_id: walletId,
  run_start_minimum: min === null ? null : formatAmount(min),
});
