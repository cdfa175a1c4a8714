import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  CapBook,
  type CapPeriod,
  capCounterKey,
  capPeriodEnd,
  capPeriodStart,
  checkSuspension,
  credits,
  type Grant,
  type HoldState,
  type OveragePolicy,
  planAuthorize,
  planSettleRequest,
  planStepRequest,
  type RunState,
  type RunStatus,
  type SpendCap,
  type StepState,
  type StepStatus,
  stepOutcome,
  validateOveragePolicy,
} from "../src/index.js";

/** A free, never-expiring grant of `balance` whole credits in `walletId`. */
const topUp = (walletId: string, balance: number): Grant => ({
  id: "grt_1",
  walletId,
  amount: credits(BigInt(balance)),
  remaining: credits(BigInt(balance)),
  source: "top_up",
  costBasis: 0n,
  currency: null,
  effectiveAt: 0,
  expiresAt: null,
  priority: 0,
  scope: null,
  metadata: {},
  status: "active",
  createdAt: 0,
});

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
  test("a denial for lack of credits or by a spend cap suspends, announced once per suspension; allowing the suspended step resumes", () => {
    fc.assert(
      fc.property(
        runArb,
        fc.constantFrom("a", "b"),
        fc.constantFrom("allow", "deny", "throttle") as fc.Arbitrary<"allow" | "deny" | "throttle">,
        fc.constantFrom(
          "sufficient_credits",
          "insufficient_credits",
          "spend_cap_reached",
          "below_throttle_level",
        ),
        (run, key, decision, reason) => {
          const o = stepOutcome(run, key, decision, reason);
          if (decision === "allow") {
            assert.equal(o.suspended, false);
            assert.equal(o.resumed, run.status === "suspended" && run.suspendedStep === key);
            if (o.resumed) assert.deepEqual([o.status, o.suspendedStep], ["running", null]);
          } else if (reason === "insufficient_credits" || reason === "spend_cap_reached") {
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

describe("a suspended step's check", () => {
  const POOL = "wal_p";
  const HARD_CAP = { mode: "hard_cap", floor: 0n, price: null, throttle: null } as const;
  const capArb = fc.record({
    period: fc.constantFrom<CapPeriod>("day", "month"),
    limit: fc.nat(12),
    used: fc.nat(12),
  });

  test("payable exactly when credits and every cap's room cover the estimate; a new period of the short caps makes it payable", () => {
    fc.assert(
      fc.property(
        fc.nat(12),
        fc.array(capArb, { maxLength: 3 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 400 * 86_400_000 }),
        (balance, specs, est, offset) => {
          const now = Date.UTC(2026, 0, 1) + offset;
          const caps: SpendCap[] = specs.map((c, i) => ({
            id: `cap_${i}`,
            customerId: "cus_1",
            targetKind: "wallet",
            targetId: POOL,
            period: c.period,
            limit: credits(BigInt(c.limit)),
            setBy: "vendor",
          }));
          const counters = new Map(
            specs.map((c, i) => [
              capCounterKey(`cap_${i}`, capPeriodStart(c.period, now)),
              { spent: credits(BigInt(c.used)), held: 0n },
            ]),
          );
          const state = (at: Map<string, { spent: bigint; held: bigint }>): HoldState => ({
            sources: [
              {
                walletId: POOL,
                grants: [topUp(POOL, balance)],
              },
            ],
            poolWalletId: POOL,
            overdraft: 0n,
            policy: HARD_CAP,
            caps: { caps, counters: at },
          });
          const estimate = credits(BigInt(est));
          const step = { subjectId: null, action: "agent.step", estimate };
          const c = checkSuspension(state(counters), step, now);
          // Independently: the rooms, the tightest, and what a new period would do.
          const rooms = specs.map((x) => {
            const room = credits(BigInt(x.limit - x.used));
            return room > 0n ? room : 0n;
          });
          const wallet = credits(BigInt(balance));
          const available = rooms.reduce((m, r) => (r < m ? r : m), wallet);
          assert.equal(c.available, available);
          assert.equal(c.payable, estimate <= available);
          const tightest = new CapBook({ caps, counters }).room([POOL], null, now);
          assert.equal(c.capId, tightest && tightest.room < estimate ? tightest.cap.id : null);
          assert.equal(
            c.capPeriodEnd,
            c.capId === null
              ? null
              : capPeriodEnd(tightest!.cap.period, capPeriodStart(tightest!.cap.period, now)),
          );
          const short = specs.filter((_, i) => rooms[i]! < estimate);
          const helps =
            !c.payable && wallet >= estimate && short.every((x) => credits(BigInt(x.limit)) >= estimate);
          assert.equal(c.retryAt !== null, helps);
          if (c.retryAt !== null) {
            assert.ok(c.retryAt > now);
            // At retryAt every short cap is in a new period; with nothing counted there yet, the step is payable.
            const fresh = new Map(
              specs.flatMap((x, i) =>
                rooms[i]! < estimate
                  ? []
                  : [
                      [
                        capCounterKey(`cap_${i}`, capPeriodStart(x.period, c.retryAt!)),
                        counters.get(capCounterKey(`cap_${i}`, capPeriodStart(x.period, now)))!,
                      ] as const,
                    ],
              ),
            );
            assert.equal(checkSuspension(state(fresh), step, c.retryAt).payable, true);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  test("a suspended step is payable exactly when authorizing it now would allow it (throttle, soft cap and caps included)", () => {
    const POOL = "wal_pool";
    const now = Date.UTC(2026, 4, 5, 6);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 50 }),
        fc.constantFrom("hard_cap", "soft_cap", "throttle", "fair_use") as fc.Arbitrary<
          OveragePolicy["mode"]
        >,
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 0, max: 20 }),
        fc.option(
          fc.record({ limit: fc.integer({ min: 0, max: 60 }), used: fc.integer({ min: 0, max: 60 }) }),
          {
            nil: null,
          },
        ),
        fc.constantFrom("agent.step", "cheap.lookup", "cheap.mini"),
        fc.integer({ min: 0, max: 60 }),
        (balance, mode, depth, level, cap, action, est) => {
          const policy = validateOveragePolicy({
            mode,
            ...(mode === "soft_cap" ? { floor: -credits(BigInt(depth)) } : {}),
            ...(mode === "throttle"
              ? {
                  throttle: {
                    level: credits(BigInt(level)),
                    allowedActions: ["cheap.lookup"],
                    fallbackAction: "cheap.mini",
                  },
                }
              : {}),
          });
          assert.ok(policy.ok);
          const caps: SpendCap[] =
            cap === null
              ? []
              : [
                  {
                    id: "cap_1",
                    customerId: "cus_1",
                    targetKind: "wallet",
                    targetId: POOL,
                    period: "day",
                    limit: credits(BigInt(cap.limit)),
                    setBy: "vendor",
                  },
                ];
          const counters = new Map(
            cap === null
              ? []
              : [
                  [
                    capCounterKey("cap_1", capPeriodStart("day", now)),
                    { spent: credits(BigInt(cap.used)), held: 0n },
                  ],
                ],
          );
          const state: HoldState = {
            sources: [
              {
                walletId: POOL,
                grants: balance === 0 ? [] : [topUp(POOL, balance)],
              },
            ],
            poolWalletId: POOL,
            overdraft: 0n,
            policy: policy.value,
            caps: { caps, counters },
          };
          const estimate = credits(BigInt(est));
          const check = checkSuspension(state, { subjectId: null, action, estimate }, now);
          const asked = planAuthorize({ now, newId: () => "hld_1" }, state, {
            customerId: "cus_1",
            walletId: POOL,
            subjectId: null,
            action,
            estimate,
            holdTimeoutSeconds: null,
          });
          assert.ok(asked.ok);
          assert.equal(check.payable, asked.value.authorization.decision === "allow");
          // A throttled step waits for credits, not for a cap's next period.
          if (asked.value.authorization.decision === "throttle") assert.equal(check.retryAt, null);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
