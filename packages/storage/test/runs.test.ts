import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type Result, UNIT } from "@drawdown/core";
import fc from "fast-check";
import {
  Holds,
  Metering,
  Runs,
  SpendCaps,
  type SqlExecutor,
  type StepResult,
  setWalletOverage,
} from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";

const T0 = Date.UTC(2027, 2, 1, 12);

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function code<T>(r: Result<T>): string {
  assert.ok(!r.ok, "expected a failure");
  return r.error.code;
}

/** A store with holds and runs; each setup is a test tenant with a customer and a card (1 unit = 1 credit). */
function harness(database: TestDatabase) {
  const store = database.store(() => T0);
  const metering = new Metering((t) => store.now(t), store.newId);
  const holds = new Holds(store, metering);
  const runs = new Runs(store, holds);
  const caps = new SpendCaps(store);
  const tx = <T>(fn: (ex: SqlExecutor) => Promise<T>) => store.db.transaction(fn);

  async function setup(amount: bigint) {
    const tenant = await store.createTenant("Runs", "test");
    okv(await store.advanceClock(tenant.id, T0));
    const tenantId = tenant.id;
    const customer = okv(await tx((ex) => store.createCustomer(ex, tenantId, { kind: "organization" })));
    if (amount > 0n) await grant(tenantId, customer.walletId, amount);
    const card = okv(await tx((ex) => metering.createRateCard(ex, tenantId, "Standard")));
    okv(
      await tx((ex) =>
        metering.publishRateCardVersion(ex, tenantId, card.id, null, {
          lines: [{ id: "step", action: "agent.step", quantity: "units", rate: "1" }],
        }),
      ),
    );
    return { tenantId, customerId: customer.id, walletId: customer.walletId };
  }
  const grant = async (tenantId: string, walletId: string, amount: bigint) =>
    okv(await tx((ex) => store.createGrant(ex, tenantId, { walletId, amount, source: "top_up" })));
  const start = (tenantId: string, customerId: string, id: string | null = null) =>
    tx((ex) => runs.start(ex, tenantId, { id, customerId, subjectId: null, metadata: {} }));
  const step = (tenantId: string, runId: string, key: string, estimate: bigint) =>
    tx((ex) =>
      runs.step(ex, tenantId, runId, {
        key,
        action: "agent.step",
        estimate: { credits: estimate },
        holdTimeoutSeconds: 3600,
      }),
    );
  const settle = (tenantId: string, runId: string, key: string, units: bigint) =>
    tx((ex) => runs.settleStep(ex, tenantId, runId, key, { quantities: { units: units * UNIT } }));
  const voidStep = (tenantId: string, runId: string, key: string) =>
    tx((ex) => runs.voidStep(ex, tenantId, runId, key));
  const resume = (tenantId: string, runId: string) => tx((ex) => runs.resume(ex, tenantId, runId));
  /** A vendor's spend cap on a wallet of the customer. */
  const capOn = (
    tenantId: string,
    customerId: string,
    targetId: string,
    period: "day" | "month",
    limit: bigint,
  ) => tx((ex) => caps.create(ex, tenantId, { customerId, targetId, period, limit, setBy: "vendor" }));
  const setCap = (tenantId: string, capId: string, limit: bigint) =>
    tx((ex) => caps.update(ex, tenantId, capId, limit, "vendor"));
  /** When the scheduler looks at a suspended run again (null: it does not), per suspension row. */
  const retryAt = async (tenantId: string, runId: string) =>
    (
      await store.db.query<{ retry_at: unknown }>(
        "SELECT retry_at FROM run_suspensions WHERE tenant_id = $1 AND run_id = $2 ORDER BY wallet_id",
        [tenantId, runId],
      )
    ).rows.map((r) => (r.retry_at === null ? null : new Date(r.retry_at as string).toISOString()));
  const outbox = async (tenantId: string, type: string) =>
    (
      await store.db.query<{ payload: unknown }>(
        "SELECT payload FROM outbox_events WHERE tenant_id = $1 AND type = $2 ORDER BY created_at, id",
        [tenantId, type],
      )
    ).rows.map(
      (r) => (typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload) as Record<string, string>,
    );
  /** What a run's events charged, and how many there are (the run's total, as GET /v1/runs/:id sums it). */
  const runTotal = async (tenantId: string, runId: string) => {
    const { rows } = await store.db.query<{ n: number; charged: string }>(
      "SELECT count(*)::int AS n, coalesce(sum(charged), 0)::text AS charged FROM usage_events WHERE tenant_id = $1 AND run_id = $2",
      [tenantId, runId],
    );
    return { events: Number(rows[0]!.n), charged: BigInt(rows[0]!.charged) };
  };
  const snapshot = async () => {
    const out: Record<string, unknown> = {};
    for (const t of [
      "runs",
      "run_steps",
      "run_suspensions",
      "holds",
      "journal_transactions",
      "outbox_events",
    ]) {
      out[t] = (await store.db.query(`SELECT * FROM ${t} ORDER BY 1, 2`)).rows;
    }
    return JSON.stringify(out);
  };
  return {
    store,
    holds,
    runs,
    tx,
    setup,
    grant,
    start,
    step,
    settle,
    voidStep,
    resume,
    caps,
    capOn,
    setCap,
    retryAt,
    outbox,
    runTotal,
    snapshot,
  };
}

for (const backend of backends()) {
  describe(`durable runs (${backend.name})`, () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await backend.open();
      h = harness(database);
    });
    after(async () => {
      await database.close();
    });

    test("a step holds once; the same key and body replays, another body is refused; settling charges once", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const run = okv(await h.start(tenantId, customerId, "r1"));
      assert.equal(run.status, "running");
      const first = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      assert.equal(first.step.status, "held");
      assert.equal(first.replayed, false);
      const before = await h.snapshot();
      const again = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      assert.equal(again.replayed, true);
      assert.equal(again.hold?.id, first.hold?.id);
      assert.equal(code(await h.step(tenantId, run.id, "a", credits(5n))), "step_key_reused");
      assert.equal(await h.snapshot(), before, "a replay and a conflict change nothing");
      okv(await h.settle(tenantId, run.id, "a", 3n));
      const settledOnce = await h.snapshot();
      assert.equal(okv(await h.settle(tenantId, run.id, "a", 3n)).replayed, true);
      assert.equal(code(await h.settle(tenantId, run.id, "a", 2n)), "step_key_reused");
      assert.equal(code(await h.voidStep(tenantId, run.id, "a")), "step_key_reused");
      assert.equal(okv(await h.step(tenantId, run.id, "a", credits(4n))).replayed, true);
      assert.equal(await h.snapshot(), settledOnce);
      assert.deepEqual(await h.runTotal(tenantId, run.id), { events: 1, charged: credits(3n) });
      assert.equal((await h.store.balance(tenantId, walletId))!.available, credits(7n));
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("a denial for lack of credits suspends the run and emits run.suspended in its transaction", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(5n));
      const run = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, run.id, "a", credits(3n)));
      const denied = okv(await h.step(tenantId, run.id, "b", credits(3n)));
      assert.equal(denied.step.status, "denied");
      assert.equal(denied.run.status, "suspended");
      assert.equal(denied.run.suspendedStep, "b");
      const events = await h.outbox(tenantId, "run.suspended");
      assert.equal(events.length, 1);
      assert.equal(events[0]!.run_id, run.id);
      assert.equal(events[0]!.available, "2");
      // Still short: no new suspension. Another step must wait for the suspended one.
      okv(await h.step(tenantId, run.id, "b", credits(3n)));
      assert.equal((await h.outbox(tenantId, "run.suspended")).length, 1);
      assert.equal(code(await h.step(tenantId, run.id, "c", credits(1n))), "run_suspended");
      // The held step of the suspended run can still settle: it gives back 2 of its 3 credits,
      // which covers step b (2 + 2 ≥ 3), so the run is announced resumable, once.
      okv(await h.settle(tenantId, run.id, "a", 1n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
      await h.grant(tenantId, walletId, credits(1n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
      assert.notEqual((await h.runs.getRun(tenantId, run.id))!.resumableAt, null);
      const resumed = okv(await h.resume(tenantId, run.id));
      assert.ok("step" in resumed);
      assert.equal((resumed as StepResult).run.status, "running");
      assert.equal((resumed as StepResult).step.status, "held");
      // Suspended again after being announced: a new suspension, announced again.
      await h.store.db.transaction((ex) =>
        h.store.debitWallet(ex, tenantId, walletId, {
          amount: credits(2n),
          action: null,
          kind: "debit",
          reason: "other use",
        }),
      );
      assert.equal(okv(await h.step(tenantId, run.id, "c", credits(5n))).run.status, "suspended");
      assert.equal((await h.outbox(tenantId, "run.suspended")).length, 2);
      await h.grant(tenantId, walletId, credits(10n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 2);
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("credits given back by a voided or expired hold make a suspended run resumable, once", async () => {
      for (const giveBack of ["void", "expiry"] as const) {
        const { tenantId, customerId } = await h.setup(credits(10n));
        const busy = okv(await h.start(tenantId, customerId));
        okv(await h.step(tenantId, busy.id, "a", credits(8n)));
        const waiting = okv(await h.start(tenantId, customerId));
        assert.equal(okv(await h.step(tenantId, waiting.id, "x", credits(5n))).run.status, "suspended");
        assert.equal((await h.outbox(tenantId, "run.resumable")).length, 0);
        if (giveBack === "void") okv(await h.voidStep(tenantId, busy.id, "a"));
        else okv(await h.store.advanceClock(tenantId, T0 + 2 * 3_600_000));
        const announced = await h.outbox(tenantId, "run.resumable");
        assert.equal(announced.length, 1, giveBack);
        assert.equal(announced[0]!.run_id, waiting.id);
        assert.equal(announced[0]!.available, "10");
        const resumed = okv(await h.resume(tenantId, waiting.id)) as StepResult;
        assert.equal(resumed.step.status, "held");
        assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
        assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
      }
    });

    test("under a throttle policy, credits that leave the step throttled announce nothing; enough to clear the level do, once", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(2n));
      const run = okv(await h.start(tenantId, customerId));
      assert.equal(okv(await h.step(tenantId, run.id, "a", credits(5n))).run.status, "suspended");
      // The vendor moves the wallet to throttling while the run waits.
      okv(
        await h.tx((ex) =>
          setWalletOverage(ex, tenantId, walletId, {
            mode: "throttle",
            throttle: { level: credits(10n), allowedActions: ["cheap.*"], fallbackAction: "cheap.mini" },
          }),
        ),
      );
      // 2 + 8 = 10 covers the estimate, but 10 - 5 is below the level: authorize would throttle.
      await h.grant(tenantId, walletId, credits(8n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 0);
      assert.equal(okv(await h.step(tenantId, run.id, "a", credits(5n))).step.decision, "throttle");
      // 15 - 5 = 10 clears it: announced once, and the retry is allowed.
      await h.grant(tenantId, walletId, credits(5n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
      assert.equal(okv(await h.step(tenantId, run.id, "a", credits(5n))).step.status, "held");
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("a step whose hold timed out cannot settle; retrying it holds again, and it is charged once", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const run = okv(await h.start(tenantId, customerId));
      const first = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      okv(await h.store.advanceClock(tenantId, T0 + 2 * 3_600_000));
      assert.equal((await h.holds.getHold(tenantId, first.hold!.id))!.status, "expired");
      assert.equal((await h.runs.getStep(tenantId, run.id, "a"))!.status, "expired");
      assert.equal(code(await h.settle(tenantId, run.id, "a", 1n)), "hold_expired");
      const again = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      assert.equal(again.step.status, "held");
      assert.equal(again.step.attempts, 2);
      assert.notEqual(again.hold!.id, first.hold!.id);
      okv(await h.settle(tenantId, run.id, "a", 3n));
      assert.deepEqual(await h.runTotal(tenantId, run.id), { events: 1, charged: credits(3n) });
      assert.equal((await h.store.balance(tenantId, walletId))!.total, credits(7n));
    });

    test("past its timeout, before the scheduler releases it, a step is expired already and a retry holds again", async () => {
      const { tenantId, customerId } = await h.setup(credits(10n));
      const run = okv(await h.start(tenantId, customerId));
      const first = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      h.store.rememberClock(tenantId, T0 + 2 * 3_600_000); // time moves; no job has run
      assert.equal((await h.holds.getHold(tenantId, first.hold!.id))!.status, "pending");
      assert.equal((await h.runs.getStep(tenantId, run.id, "a"))!.status, "expired");
      assert.equal(code(await h.settle(tenantId, run.id, "a", 1n)), "hold_expired");
      const again = okv(await h.step(tenantId, run.id, "a", credits(4n)));
      assert.equal(again.step.status, "held");
      okv(await h.tx((ex) => h.runs.cancel(ex, tenantId, run.id)));
      assert.equal((await h.runs.getStep(tenantId, run.id, "a"))!.status, "voided");
    });

    test("cancel voids what steps hold; complete waits for them; finished runs take no steps", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const run = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, run.id, "a", credits(4n)));
      assert.equal(code(await h.tx((ex) => h.runs.complete(ex, tenantId, run.id))), "run_steps_pending");
      const canceled = okv(await h.tx((ex) => h.runs.cancel(ex, tenantId, run.id)));
      assert.equal(canceled.status, "canceled");
      assert.equal((await h.store.balance(tenantId, walletId))!.available, credits(10n));
      assert.equal((await h.runs.getStep(tenantId, run.id, "a"))!.status, "voided");
      assert.equal(code(await h.step(tenantId, run.id, "b", credits(1n))), "run_not_running");
      assert.equal(code(await h.tx((ex) => h.runs.cancel(ex, tenantId, run.id))), "run_not_running");
      // Ending a run is announced once, in its transaction; a refused end announces nothing.
      const ended = await h.outbox(tenantId, "run.canceled");
      assert.equal(ended.length, 1);
      assert.equal((ended[0] as { run_id: string }).run_id, run.id);
      const done = okv(await h.start(tenantId, customerId));
      okv(await h.tx((ex) => h.runs.complete(ex, tenantId, done.id)));
      assert.equal(code(await h.tx((ex) => h.runs.complete(ex, tenantId, done.id))), "run_not_running");
      const completed = await h.outbox(tenantId, "run.completed");
      assert.deepEqual(
        completed.map((p) => (p as { run_id: string }).run_id),
        [done.id],
      );
    });

    test("the run start minimum refuses new runs below it; started runs go on to the floor", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      okv(await h.tx((ex) => h.runs.setSettings(ex, tenantId, walletId, credits(4n))));
      const run = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, run.id, "a", credits(7n)));
      const before = await h.snapshot();
      assert.equal(code(await h.start(tenantId, customerId)), "run_start_below_minimum");
      assert.equal(await h.snapshot(), before);
      assert.equal(okv(await h.step(tenantId, run.id, "b", credits(3n))).step.status, "held");
      assert.equal((await h.store.balance(tenantId, walletId))!.available, 0n);
      okv(await h.tx((ex) => h.runs.setSettings(ex, tenantId, walletId, null)));
      okv(await h.start(tenantId, customerId));
    });

    test("a step refused by a spend cap suspends the run; the cap's next period announces it once; resuming charges no step twice", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(100n));
      const cap = okv(await h.capOn(tenantId, customerId, walletId, "day", credits(5n)));
      const run = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, run.id, "a", credits(3n)));
      okv(await h.settle(tenantId, run.id, "a", 3n));
      const denied = okv(await h.step(tenantId, run.id, "b", credits(4n)));
      assert.deepEqual(
        [denied.step.status, denied.step.reason, denied.run.status, denied.run.suspendedStep],
        ["denied", "spend_cap_reached", "suspended", "b"],
      );
      const suspended = await h.outbox(tenantId, "run.suspended");
      assert.equal(suspended.length, 1);
      const e = suspended[0]!;
      assert.deepEqual(
        [e.reason, e.cap_id, e.cap_period_end, e.available, e.estimate],
        ["spend_cap_reached", cap.id, "2027-03-02T00:00:00.000Z", "2", "4"],
      );
      assert.deepEqual(await h.retryAt(tenantId, run.id), ["2027-03-02T00:00:00.000Z"]);
      assert.equal(code(await h.step(tenantId, run.id, "c", credits(1n))), "run_suspended");
      // Retried while the cap is still full: still suspended, nothing new announced.
      assert.equal(okv(await h.step(tenantId, run.id, "b", credits(4n))).run.status, "suspended");
      assert.equal((await h.outbox(tenantId, "run.suspended")).length, 1);
      // Credits are not what is short: a grant announces nothing; nor does time within the day.
      await h.grant(tenantId, walletId, credits(5n));
      okv(await h.store.advanceClock(tenantId, T0 + 6 * 3_600_000));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 0);
      // The next day: announced once, whatever the number of scheduler passes.
      okv(await h.store.advanceClock(tenantId, Date.UTC(2027, 2, 2, 0, 30)));
      await h.store.runDue(tenantId);
      await h.store.runDue();
      const resumable = await h.outbox(tenantId, "run.resumable");
      assert.equal(resumable.length, 1);
      assert.deepEqual(
        [resumable[0]!.run_id, resumable[0]!.step, resumable[0]!.available],
        [run.id, "b", "5"],
      );
      assert.notEqual((await h.runs.getRun(tenantId, run.id))!.resumableAt, null);
      const resumed = okv(await h.resume(tenantId, run.id)) as StepResult;
      assert.deepEqual([resumed.run.status, resumed.step.status], ["running", "held"]);
      okv(await h.settle(tenantId, run.id, "b", 4n));
      // A resumed agent replays its plan: nothing is held or charged again.
      assert.equal(okv(await h.step(tenantId, run.id, "a", credits(3n))).replayed, true);
      assert.equal(okv(await h.step(tenantId, run.id, "b", credits(4n))).replayed, true);
      assert.deepEqual(await h.runTotal(tenantId, run.id), { events: 2, charged: credits(7n) });
      assert.equal((await h.store.balance(tenantId, walletId))!.total, credits(98n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("raising a cap's limit, or deleting the cap, announces the runs it suspended once; lowering it, or a new period that cannot help, does not", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(100n));
      const cap = okv(await h.capOn(tenantId, customerId, walletId, "day", credits(5n)));
      const busy = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, busy.id, "a", credits(5n)));
      const run = okv(await h.start(tenantId, customerId));
      assert.equal(okv(await h.step(tenantId, run.id, "x", credits(1n))).step.reason, "spend_cap_reached");
      const announced = async (id: string) =>
        (await h.outbox(tenantId, "run.resumable")).filter((e) => e.run_id === id).length;
      okv(await h.setCap(tenantId, cap.id, credits(4n)));
      okv(await h.setCap(tenantId, cap.id, credits(5n) + 500_000_000n)); // 5.5: room 0.5 < 1
      assert.equal(await announced(run.id), 0);
      okv(await h.setCap(tenantId, cap.id, credits(6n)));
      assert.equal(await announced(run.id), 1);
      assert.equal((await h.outbox(tenantId, "run.resumable"))[0]!.available, "1");
      okv(await h.setCap(tenantId, cap.id, credits(10n)));
      assert.equal(await announced(run.id), 1, "once per suspension");
      assert.equal((okv(await h.resume(tenantId, run.id)) as StepResult).step.status, "held");
      // A step beyond the limit itself: no new period can help (no retry_at); deleting the cap does.
      const big = okv(await h.start(tenantId, customerId));
      assert.equal(okv(await h.step(tenantId, big.id, "y", credits(20n))).run.status, "suspended");
      assert.deepEqual(await h.retryAt(tenantId, big.id), [null]);
      okv(await h.store.advanceClock(tenantId, Date.UTC(2027, 2, 3)));
      assert.equal(await announced(big.id), 0);
      okv(await h.tx((ex) => h.caps.delete(ex, tenantId, cap.id, "vendor")));
      assert.equal(await announced(big.id), 1);
      assert.equal((okv(await h.resume(tenantId, big.id)) as StepResult).step.status, "held");
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("cap room given back by a voided step, a settlement below its estimate or a reversed debit announces a run the cap suspended", async () => {
      for (const giveBack of ["void", "settle", "reverse"] as const) {
        const { tenantId, customerId, walletId } = await h.setup(credits(100n));
        okv(await h.capOn(tenantId, customerId, walletId, "day", credits(6n)));
        const busy = okv(await h.start(tenantId, customerId));
        // 5 of the cap's 6 are taken: by a held step, or by a direct debit.
        let debitId = "";
        if (giveBack !== "reverse") okv(await h.step(tenantId, busy.id, "a", credits(5n)));
        else
          debitId = okv(
            await h.tx((ex) =>
              h.store.debitWallet(ex, tenantId, walletId, {
                amount: credits(5n),
                action: null,
                kind: "debit",
              }),
            ),
          ).id;
        const waiting = okv(await h.start(tenantId, customerId));
        const denied = okv(await h.step(tenantId, waiting.id, "x", credits(3n)));
        assert.deepEqual(
          [denied.step.reason, denied.run.status],
          ["spend_cap_reached", "suspended"],
          giveBack,
        );
        assert.equal((await h.outbox(tenantId, "run.resumable")).length, 0);
        if (giveBack === "void") okv(await h.voidStep(tenantId, busy.id, "a"));
        else if (giveBack === "settle") okv(await h.settle(tenantId, busy.id, "a", 2n));
        else okv(await h.tx((ex) => h.store.reverseTransaction(ex, tenantId, debitId, "charged in error")));
        const announced = await h.outbox(tenantId, "run.resumable");
        assert.equal(announced.length, 1, giveBack);
        assert.equal(announced[0]!.available, giveBack === "settle" ? "4" : "6", giveBack);
        assert.equal((okv(await h.resume(tenantId, waiting.id)) as StepResult).step.status, "held");
        assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
      }
    });

    test("credits back while the cap is still full announce nothing until the cap's next period; credits and cap both short wait for both", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(2n));
      okv(await h.capOn(tenantId, customerId, walletId, "day", credits(3n)));
      const run = okv(await h.start(tenantId, customerId));
      okv(await h.step(tenantId, run.id, "a", credits(2n)));
      okv(await h.settle(tenantId, run.id, "a", 2n));
      // Both short (0 credits, cap room 1): suspended by the cap, but a new period alone cannot help.
      const denied = okv(await h.step(tenantId, run.id, "b", credits(3n)));
      assert.deepEqual([denied.step.reason, denied.run.status], ["spend_cap_reached", "suspended"]);
      assert.deepEqual(await h.retryAt(tenantId, run.id), [null]);
      // Credits come back; the cap is still short: not announced, the next period is noted.
      await h.grant(tenantId, walletId, credits(10n));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 0);
      assert.deepEqual(await h.retryAt(tenantId, run.id), ["2027-03-02T00:00:00.000Z"]);
      okv(await h.store.advanceClock(tenantId, Date.UTC(2027, 2, 2, 8)));
      assert.equal((await h.outbox(tenantId, "run.resumable")).length, 1);
      assert.deepEqual(await h.retryAt(tenantId, run.id), [null]);
      assert.equal((okv(await h.resume(tenantId, run.id)) as StepResult).step.status, "held");
      assert.deepEqual(await h.retryAt(tenantId, run.id), []);
    });

    test("property: random steps, retries, denials, top-ups and resumes charge each settled step exactly once", async () => {
      const Op = fc.oneof(
        fc.record({
          kind: fc.constant("step" as const),
          key: fc.integer({ min: 0, max: 4 }),
          est: fc.integer({ min: 1, max: 5 }),
        }),
        fc.record({
          kind: fc.constant("settle" as const),
          key: fc.integer({ min: 0, max: 4 }),
          units: fc.integer({ min: 0, max: 6 }),
        }),
        fc.record({ kind: fc.constant("void" as const), key: fc.integer({ min: 0, max: 4 }) }),
        fc.record({ kind: fc.constant("topup" as const), amount: fc.integer({ min: 1, max: 6 }) }),
        fc.record({ kind: fc.constant("resume" as const) }),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 8 }),
          fc.array(Op, { minLength: 1, maxLength: 25 }),
          async (c0, ops) => {
            const { tenantId, customerId, walletId } = await h.setup(credits(BigInt(c0)));
            const run = okv(await h.start(tenantId, customerId));
            let granted = credits(BigInt(c0));
            /** What each step was first asked with, and what its settle charged (fixed once settled). */
            const body = new Map<number, number>();
            const charged = new Map<number, bigint>();
            const resolved = new Map<number, string>();
            for (const op of ops) {
              if (op.kind === "topup") {
                await h.grant(tenantId, walletId, credits(BigInt(op.amount)));
                granted += credits(BigInt(op.amount));
              } else if (op.kind === "resume") {
                okv(await h.resume(tenantId, run.id));
              } else if (op.kind === "step") {
                const r = await h.step(tenantId, run.id, `k${op.key}`, credits(BigInt(op.est)));
                const first = body.get(op.key);
                if (first !== undefined && first !== op.est) assert.equal(code(r), "step_key_reused");
                else if (!r.ok) assert.equal(r.error.code, "run_suspended");
                else {
                  body.set(op.key, op.est);
                  if (r.value.step.status === "denied") assert.equal(r.value.run.status, "suspended");
                }
              } else {
                const key = `k${op.key}`;
                const step = await h.runs.getStep(tenantId, run.id, key);
                const fingerprintBefore = resolved.get(op.key);
                const r =
                  op.kind === "settle"
                    ? await h.settle(tenantId, run.id, key, BigInt(op.units))
                    : await h.voidStep(tenantId, run.id, key);
                const id = op.kind === "settle" ? `settle:${op.units}` : "void";
                if (!step) assert.equal(code(r), "not_found");
                else if (fingerprintBefore !== undefined) {
                  if (fingerprintBefore === id) assert.equal(okv(r).replayed, true);
                  else assert.equal(code(r), "step_key_reused");
                } else if (step.status !== "held") assert.equal(code(r), "step_not_held");
                else {
                  const v = okv(r);
                  resolved.set(op.key, id);
                  if (op.kind === "settle") charged.set(op.key, v.step.charged);
                }
              }
              // After every operation: each settled step charged once, and the run's total is their sum.
              const steps = await h.runs.listSteps(tenantId, run.id, 100);
              for (const s of steps) {
                const k = Number(s.key.slice(1));
                assert.equal(s.charged, charged.get(k) ?? 0n, `step ${s.key} charged as first settled`);
              }
              const total = await h.runTotal(tenantId, run.id);
              const sum = [...charged.values()].reduce((a, b) => a + b, 0n);
              assert.equal(total.events, charged.size, "one event per settled step");
              assert.equal(total.charged, sum, "the run's total is the sum of its steps");
              const b = (await h.store.balance(tenantId, walletId))!;
              assert.equal(b.total, granted - sum);
            }
            assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
          },
        ),
        { numRuns: backend.name === "pglite" ? 30 : 15 },
      );
    });
  });
}

if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("durable runs under concurrency (postgres)", () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await postgresDatabase(url, { max: 20 });
      h = harness(database);
    });
    after(async () => {
      await database.close();
    });

    test("concurrent retries of one step hold once and settle once; retries racing grants never deadlock", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(100n));
      const run = okv(await h.start(tenantId, customerId));
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => h.step(tenantId, run.id, "a", credits(5n))),
      );
      const holds = new Set(answers.map((r) => okv(r).hold?.id));
      assert.equal(holds.size, 1, "one hold, whatever the retries");
      assert.equal(answers.filter((r) => !okv(r).replayed).length, 1);
      const settles = await Promise.all(
        Array.from({ length: 20 }, () => h.settle(tenantId, run.id, "a", 4n)),
      );
      assert.equal(settles.filter((r) => !okv(r).replayed).length, 1);
      assert.deepEqual(await h.runTotal(tenantId, run.id), { events: 1, charged: credits(4n) });
      // A suspended run: its retries and top-ups at once, in any order, all commit.
      const poor = await h.setup(0n);
      const runs = await Promise.all(
        Array.from({ length: 5 }, () => h.start(poor.tenantId, poor.customerId)),
      );
      for (const r of runs) okv(await h.step(poor.tenantId, okv(r).id, "x", credits(1n)));
      const raced = await Promise.all([
        ...runs.flatMap((r) => [
          h.step(poor.tenantId, okv(r).id, "x", credits(1n)),
          h.resume(poor.tenantId, okv(r).id),
        ]),
        ...Array.from({ length: 5 }, () => h.grant(poor.tenantId, poor.walletId, credits(1n))),
      ]);
      assert.equal(raced.length, 15);
      for (const r of runs) okv(await h.resume(poor.tenantId, okv(r).id));
      for (const r of runs) assert.equal((await h.runs.getRun(poor.tenantId, okv(r).id))!.status, "running");
      assert.deepEqual((await h.store.reconcile(poor.tenantId)).differences, []);
      assert.ok(walletId);
    });

    test("two instances' schedulers at a cap's new period announce each suspended run once", async () => {
      let now = Date.UTC(2027, 2, 1, 22);
      const instance = () => {
        const store = database.store(() => now);
        const metering = new Metering((t) => store.now(t), store.newId);
        const holds = new Holds(store, metering);
        return { store, metering, runs: new Runs(store, holds), caps: new SpendCaps(store) };
      };
      const a = instance();
      const b = instance();
      const tenant = await a.store.createTenant("Cap race", "live");
      const tenantId = tenant.id;
      const customer = okv(
        await a.store.db.transaction((ex) => a.store.createCustomer(ex, tenantId, { kind: "organization" })),
      );
      okv(
        await a.store.db.transaction((ex) =>
          a.store.createGrant(ex, tenantId, {
            walletId: customer.walletId,
            amount: credits(100n),
            source: "top_up",
          }),
        ),
      );
      okv(
        await a.store.db.transaction((ex) =>
          a.caps.create(ex, tenantId, {
            customerId: customer.id,
            targetId: customer.walletId,
            period: "day",
            limit: credits(5n),
            setBy: "vendor",
          }),
        ),
      );
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const run = okv(
          await a.store.db.transaction((ex) =>
            a.runs.start(ex, tenantId, { id: null, customerId: customer.id, subjectId: null, metadata: {} }),
          ),
        );
        const r = okv(
          await a.store.db.transaction((ex) =>
            a.runs.step(ex, tenantId, run.id, {
              key: "s",
              action: "agent.step",
              estimate: { credits: credits(i === 0 ? 5n : 2n) },
              holdTimeoutSeconds: 600,
            }),
          ),
        );
        assert.equal(r.run.status, i === 0 ? "running" : "suspended");
        if (i > 0) ids.push(run.id);
      }
      now = Date.UTC(2027, 2, 2, 0, 0, 1);
      await Promise.all([a.store.runDue(), b.store.runDue(), a.store.runDue(), b.store.runDue()]);
      const { rows } = await a.store.db.query<{ run_id: string; n: number }>(
        `SELECT payload->>'run_id' AS run_id, count(*)::int AS n FROM outbox_events
         WHERE tenant_id = $1 AND type = 'run.resumable' GROUP BY 1 ORDER BY 1`,
        [tenantId],
      );
      assert.deepEqual(
        rows.map((r) => `${r.run_id}:${Number(r.n)}`).sort(),
        ids.map((id) => `${id}:1`).sort(),
      );
    });
  });
}
