import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  planSettleRequest,
  planStepRequest,
  type RunState,
  type RunStatus,
  type StepState,
  type StepStatus,
  stepOutcome,
} from "../src/index.js";

const RUN_STATUSES: RunStatus[] = ["running", "suspended", "completed", "canceled"];
const STEP_STATUSES: StepStatus[] = ["held", "denied", "settled", "voided", "expired"];

const runArb = fc.record({
  id: fc.constant("r"),
  status: fc.constantFrom(...RUN_STATUSES),
  suspendedStep: fc.option(fc.constantFrom("a", "b"), { nil: null }),
  resumableAt: fc.option(fc.integer({ min: 0, max: 10 }), { nil: null }),
}) as fc.Arbitrary<RunState>;
const stepArb = fc.record({
  key: fc.constantFrom("a", "b"),
  fingerprint: fc.constantFrom("f1", "f2"),
  status: fc.constantFrom(...STEP_STATUSES),
  settleFingerprint: fc.option(fc.constantFrom("s1", "s2"), { nil: null }),
}) as fc.Arbitrary<StepState>;

describe("a step request", () => {
  test("a key reused with another body is always refused; a held, settled or voided step always replays", () => {
    fc.assert(
      fc.property(runArb, stepArb, fc.constantFrom("f1", "f2"), (run, step, fingerprint) => {
        const r = planStepRequest(run, step, step.key, fingerprint);
        if (fingerprint !== step.fingerprint) {
          assert.ok(!r.ok);
          assert.equal(r.error.code, "step_key_reused");
        } else if (step.status === "held" || step.status === "settled" || step.status === "voided") {
          assert.deepEqual(r, { ok: true, value: "replay" });
        } else {
          // Denied or expired: authorized again, unless the run is finished or suspended elsewhere.
          assert.ok(!r.ok || r.value === "authorize");
        }
      }),
    );
  });

  test("a finished run takes no new step; a suspended run only its suspended one", () => {
    const run = (status: RunStatus, suspendedStep: string | null = null): RunState => ({
      id: "r",
      status,
      suspendedStep,
      resumableAt: null,
    });
    const code = (r: ReturnType<typeof planStepRequest>) => (r.ok ? r.value : r.error.code);
    assert.equal(code(planStepRequest(run("running"), null, "a", "f")), "authorize");
    assert.equal(code(planStepRequest(run("completed"), null, "a", "f")), "run_not_running");
    assert.equal(code(planStepRequest(run("canceled"), null, "a", "f")), "run_not_running");
    assert.equal(code(planStepRequest(run("suspended", "a"), null, "b", "f")), "run_suspended");
    const denied: StepState = { key: "a", fingerprint: "f", status: "denied", settleFingerprint: null };
    assert.equal(code(planStepRequest(run("suspended", "a"), denied, "a", "f")), "authorize");
  });
});

describe("a step's outcome on its run", () => {
  test("a denial for lack of credits suspends, announced once per suspension; allowing the suspended step resumes", () => {
    fc.assert(
      fc.property(
        runArb,
        fc.constantFrom("a", "b"),
        fc.constantFrom("allow", "deny", "throttle") as fc.Arbitrary<"allow" | "deny" | "throttle">,
        fc.constantFrom("sufficient_credits", "insufficient_credits", "spend_cap"),
        (run, key, decision, reason) => {
          const o = stepOutcome(run, key, decision, reason);
          if (decision === "allow") {
            assert.equal(o.suspended, false);
            assert.equal(o.resumed, run.status === "suspended" && run.suspendedStep === key);
            if (o.resumed) assert.deepEqual([o.status, o.suspendedStep], ["running", null]);
          } else if (reason === "insufficient_credits") {
            assert.deepEqual([o.status, o.suspendedStep], ["suspended", key]);
            // A new suspension: from running, or after the last one was announced resumable.
            assert.equal(o.suspended, run.status === "running" || run.resumableAt !== null);
          } else {
            assert.deepEqual(
              [o.status, o.suspendedStep, o.suspended],
              [run.status, run.suspendedStep, false],
            );
          }
        },
      ),
    );
  });
});

describe("a settle request", () => {
  test("the same settle replays, another is refused, only a held step settles", () => {
    fc.assert(
      fc.property(stepArb, fc.constantFrom("s1", "s2"), (step, fingerprint) => {
        const r = planSettleRequest("r", step, fingerprint);
        if (step.settleFingerprint === fingerprint) assert.deepEqual(r, { ok: true, value: "replay" });
        else if (step.settleFingerprint !== null) assert.equal(!r.ok && r.error.code, "step_key_reused");
        else if (step.status === "expired") assert.equal(!r.ok && r.error.code, "hold_expired");
        else if (step.status !== "held") assert.equal(!r.ok && r.error.code, "step_not_held");
        else assert.deepEqual(r, { ok: true, value: "settle" });
      }),
    );
  });
});
