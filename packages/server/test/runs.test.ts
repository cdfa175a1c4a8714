import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Customer, Drawdown, type DrawdownErrorCode } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { snapshot } from "./support/http.js";
import { fails } from "./support/sdk.js";

/**
 * Durable runs through the SDK over HTTP, on every backend: each step authorizes with a hold
 * and settles under its own key; retries and resumes charge nothing twice; a step denied for
 * lack of credits or by a spend cap suspends the run and writes `run.suspended` to the outbox in
 * the same transaction; a top-up that covers the step, or the cap's next period or a raised
 * limit, writes `run.resumable` once; the run start
 * minimum refuses new runs while started ones continue. Every refusal changes nothing; every
 * response matches its documented schema.
 */

const T0 = Date.parse("2026-03-01T00:00:00.000Z");

for (const backend of backends()) {
  describe(`durable runs through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    let acme: Customer;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => T0 });
      dd = contractClient(server.url, server.key, log);
      await dd.testClock.advance({ to: new Date(T0) });
      const card = await dd.rateCards.create({ name: "Agents" });
      await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "tokens", action: "agent.step", quantity: "output_tokens", rate: "0.001" }],
      });
      acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      await dd.grants.create({ wallet_id: acme.wallet_id, amount: "10", source: "purchase" });
    });
    after(async () => {
      await server?.close();
    });

    const state = async () => {
      const { idempotency_keys: _, ...tables } = await snapshot(server.store);
      return tables;
    };
    const refused = async (call: () => Promise<unknown>, code: DrawdownErrorCode, status = 409) => {
      const before = await state();
      await fails(call(), code, status);
      assert.deepEqual(await state(), before, `a refused ${code} changed the database`);
    };
    const outbox = async (type: string) =>
      (
        await server.store.db.query<{ payload: unknown }>(
          "SELECT payload FROM outbox_events WHERE tenant_id = $1 AND type = $2 ORDER BY created_at, id",
          [server.tenantId, type],
        )
      ).rows.map(
        (r) => (typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload) as Record<string, string>,
      );
    const step = (run: string, key: string, credits: string) =>
      dd.runs.step(run, { key, action: "agent.step", estimate: { credits } });

    test("steps hold, settle once, and a retry of either changes nothing", async () => {
      const run = await dd.runs.start({
        id: "run-a",
        customer_id: acme.id,
        metadata: { agent: "researcher" },
      });
      assert.equal(run.status, "running");
      assert.equal(run.wallet_id, acme.wallet_id);
      const s1 = await step("run-a", "s1", "3");
      assert.equal(s1.step.status, "held");
      assert.equal(s1.hold?.amount, "3");
      assert.equal(s1.replayed, false);
      const again = await step("run-a", "s1", "3");
      assert.equal(again.replayed, true);
      assert.equal(again.hold?.id, s1.hold?.id);
      assert.equal((await dd.wallets.balance(acme.wallet_id)).available, "7");

      const settled = await dd.runs.settleStep("run-a", { key: "s1", quantities: { output_tokens: 2000 } });
      assert.equal(settled.step.status, "settled");
      assert.equal(settled.step.charged, "2");
      const before = await state();
      const replay = await dd.runs.settleStep("run-a", { key: "s1", quantities: { output_tokens: 2000 } });
      assert.equal(replay.replayed, true);
      assert.equal((await step("run-a", "s1", "3")).replayed, true);
      const { idempotency_keys: _, ...after } = await snapshot(server.store);
      assert.deepEqual(after, before);
      assert.equal((await dd.wallets.balance(acme.wallet_id)).available, "8");

      const got = await dd.runs.get("run-a");
      assert.equal(got.credits, "2");
      assert.equal(got.events, 1);
      assert.deepEqual(
        got.steps.map((s) => [s.key, s.status, s.charged]),
        [["s1", "settled", "2"]],
      );
      assert.deepEqual(got.metadata, { agent: "researcher" });
    });

    test("a reused key with another body, and every wrong state, is refused and changes nothing", async () => {
      await refused(() => step("run-a", "s1", "4"), "step_key_reused");
      await refused(
        () => dd.runs.settleStep("run-a", { key: "s1", quantities: { output_tokens: 1 } }),
        "step_key_reused",
      );
      await refused(() => dd.runs.voidStep("run-a", "s1"), "step_key_reused");
      await refused(() => dd.runs.voidStep("run-a", "nope"), "not_found", 404);
      await refused(() => step("no-such-run", "s1", "1"), "not_found", 404);
      await refused(() => dd.runs.start({ id: "run-a", customer_id: acme.id }), "already_exists");
      const s2 = await step("run-a", "s2", "1");
      assert.equal(s2.step.status, "held");
      await refused(() => dd.runs.complete("run-a"), "run_steps_pending");
      await dd.runs.voidStep("run-a", "s2");
      assert.equal((await dd.runs.voidStep("run-a", "s2")).replayed, true);
      await refused(
        () => dd.runs.settleStep("run-a", { key: "s2", quantities: { output_tokens: 1 } }),
        "step_key_reused",
      );
      const done = await dd.runs.complete("run-a");
      assert.equal(done.status, "completed");
      assert.ok(done.finished_at);
      await refused(() => step("run-a", "s3", "1"), "run_not_running");
      await refused(() => dd.runs.complete("run-a"), "run_not_running");
      await refused(() => dd.runs.cancel("run-a"), "run_not_running");
      await refused(() => dd.runs.resume("run-a"), "run_not_running");
      // A settled step of a finished run still replays.
      assert.equal((await step("run-a", "s1", "3")).replayed, true);
    });

    test("out of credits mid-way: suspended with a webhook, resumable once after a top-up, charged once per step", async () => {
      const c = await dd.customers.create({ kind: "organization", name: "Globex" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "5", source: "purchase" });
      const run = await dd.runs.start({ customer_id: c.id });
      assert.match(run.id, /^run_/);
      await step(run.id, "a", "3");
      await dd.runs.settleStep(run.id, { key: "a", quantities: { output_tokens: 3000 } });
      const denied = await step(run.id, "b", "4");
      assert.equal(denied.step.status, "denied");
      assert.equal(denied.step.decision, "deny");
      assert.equal(denied.run_status, "suspended");
      assert.equal(denied.hold, null);
      const suspended = (await outbox("run.suspended")).filter((e) => e.run_id === run.id);
      assert.equal(suspended.length, 1);
      assert.deepEqual(
        [suspended[0]!.step, suspended[0]!.estimate, suspended[0]!.available],
        ["b", "4", "2"],
      );
      // Retried while still short: still suspended, no second webhook; other steps must wait.
      assert.equal((await step(run.id, "b", "4")).step.status, "denied");
      assert.equal((await outbox("run.suspended")).filter((e) => e.run_id === run.id).length, 1);
      await refused(() => step(run.id, "c", "1"), "run_suspended");
      // A grant too small announces nothing; one that covers the step announces once.
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "1", source: "top_up" });
      assert.equal((await outbox("run.resumable")).filter((e) => e.run_id === run.id).length, 0);
      assert.equal((await dd.runs.get(run.id)).resumable, false);
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "10", source: "top_up" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "10", source: "top_up" });
      const resumable = (await outbox("run.resumable")).filter((e) => e.run_id === run.id);
      assert.equal(resumable.length, 1);
      assert.deepEqual([resumable[0]!.step, resumable[0]!.estimate], ["b", "4"]);
      assert.equal((await dd.runs.get(run.id)).resumable, true);

      const resumed = await dd.runs.resume(run.id);
      assert.equal(resumed.status, "running");
      assert.equal(resumed.steps.find((s) => s.key === "b")?.status, "held");
      assert.equal(resumed.steps.find((s) => s.key === "b")?.attempts, 3);
      // The client's retry of the same step after resuming: the held step, not a second hold.
      const retry = await step(run.id, "b", "4");
      assert.equal(retry.replayed, true);
      await dd.runs.settleStep(run.id, { key: "b", quantities: { output_tokens: 4000 } });
      await dd.runs.settleStep(run.id, { key: "b", quantities: { output_tokens: 4000 } });
      await step(run.id, "a", "3"); // a resumed agent replays its first step: nothing happens
      const done = await dd.runs.complete(run.id);
      assert.deepEqual(
        done.steps.map((s) => [s.key, s.status, s.charged]),
        [
          ["a", "settled", "3"],
          ["b", "settled", "4"],
        ],
      );
      assert.equal(done.credits, "7");
      const b = await dd.wallets.balance(c.wallet_id);
      assert.equal(b.available, "19"); // 5 + 1 + 10 + 10 − 3 − 4
      const rec = await server.store.reconcile(server.tenantId);
      assert.deepEqual(rec.differences, []);
    });

    test("a member's run suspends on its chain; a grant to the pool makes it resumable", async () => {
      const c = await dd.customers.create({ kind: "organization", name: "Hooli" });
      const m = await dd.subjects.create(c.id, { kind: "member" });
      const w = await dd.wallets.create({ customer_id: c.id, member_id: m.id });
      await dd.grants.create({ wallet_id: w.id, amount: "1", source: "plan" });
      const run = await dd.runs.start({ customer_id: c.id, subject_id: m.id });
      assert.equal(run.wallet_id, w.id);
      assert.equal((await step(run.id, "x", "2")).run_status, "suspended");
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "5", source: "top_up" });
      assert.equal((await outbox("run.resumable")).filter((e) => e.run_id === run.id).length, 1);
      const again = await step(run.id, "x", "2");
      assert.equal(again.step.status, "held");
      assert.equal(again.run_status, "running");
      const canceled = await dd.runs.cancel(run.id);
      assert.equal(canceled.status, "canceled");
      assert.equal(canceled.steps[0]?.status, "voided");
      assert.equal((await dd.wallets.balance(w.id)).held, "0");
    });

    test("the run start minimum stops new runs while started ones finish", async () => {
      const c = await dd.customers.create({ kind: "organization", name: "Initech" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "10", source: "purchase" });
      const s = await dd.runs.setSettings(c.wallet_id, { run_start_minimum: "5" });
      assert.equal(s.run_start_minimum, "5");
      assert.equal((await dd.runs.settings(c.wallet_id)).run_start_minimum, "5");
      const run = await dd.runs.start({ customer_id: c.id });
      await step(run.id, "1", "6");
      await refused(() => dd.runs.start({ customer_id: c.id }), "run_start_below_minimum", 402);
      // The started run goes on below the minimum, down to the floor.
      assert.equal((await step(run.id, "2", "4")).step.status, "held");
      assert.equal((await dd.wallets.balance(c.wallet_id)).available, "0");
      await dd.runs.setSettings(c.wallet_id, { run_start_minimum: null });
      assert.equal((await dd.runs.settings(c.wallet_id)).run_start_minimum, null);
      await dd.runs.start({ customer_id: c.id });
    });

    test("lists a customer's runs page by page, by status; a restricted key reads its own only", async () => {
      const c = await dd.customers.create({ kind: "individual" });
      for (const id of ["l1", "l2", "l3"]) await dd.runs.start({ id, customer_id: c.id });
      await dd.runs.cancel("l2");
      const first = await dd.runs.list(c.id, { limit: 2 });
      assert.deepEqual(
        first.data.map((r) => r.id),
        ["l1", "l2"],
      );
      const next = await dd.runs.list(c.id, { limit: 2, cursor: first.next_cursor! });
      assert.deepEqual(
        next.data.map((r) => r.id),
        ["l3"],
      );
      assert.equal(next.next_cursor, null);
      assert.deepEqual(
        (await dd.runs.list(c.id, { status: "canceled" })).data.map((r) => r.id),
        ["l2"],
      );
      const key = await dd.apiKeys.create({ kind: "restricted", name: "portal", customer_id: c.id });
      const portal = new Drawdown({ apiKey: key.secret!, baseUrl: server.url, maxRetries: 0 });
      assert.equal((await portal.runs.get("l1")).id, "l1");
      await fails(portal.runs.get("run-a"), "not_found", 404);
      await fails(portal.runs.list(acme.id), "not_found", 404);
      await fails(
        portal.runs.step("l1", { key: "k", action: "agent.step", estimate: { credits: "1" } }),
        "forbidden",
        403,
      );
    });

    // Last: it moves the tenant's clock a day on.
    test("a step refused by a spend cap suspends the run with a webhook naming the cap; the cap's next day, or a raised limit, announces it once; each step is charged once", async () => {
      const c = await dd.customers.create({ kind: "organization", name: "Umbrella" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "purchase" });
      const cap = await dd.spendCaps.create(c.id, { target_id: c.wallet_id, period: "day", limit: "5" });
      const run = await dd.runs.start({ customer_id: c.id });
      await step(run.id, "a", "3");
      await dd.runs.settleStep(run.id, { key: "a", quantities: { output_tokens: 3000 } });
      const denied = await step(run.id, "b", "4");
      assert.deepEqual(
        [denied.step.status, denied.step.reason, denied.run_status],
        ["denied", "spend_cap_reached", "suspended"],
      );
      const suspended = (await outbox("run.suspended")).filter((e) => e.run_id === run.id);
      assert.equal(suspended.length, 1);
      assert.deepEqual(
        [suspended[0]!.reason, suspended[0]!.cap_id, suspended[0]!.cap_period_end, suspended[0]!.available],
        ["spend_cap_reached", cap.id, "2026-03-02T00:00:00.000Z", "2"],
      );
      await refused(() => step(run.id, "c", "1"), "run_suspended");
      const resumable = async () => (await outbox("run.resumable")).filter((e) => e.run_id === run.id);
      // Within the day nothing changes; the cap's next day announces it, once.
      await dd.testClock.advance({ seconds: 3600 });
      assert.equal((await resumable()).length, 0);
      assert.equal((await dd.runs.get(run.id)).resumable, false);
      await dd.testClock.advance({ to: "2026-03-02T01:00:00Z" });
      await dd.testClock.advance({ seconds: 60 });
      assert.equal((await resumable()).length, 1);
      assert.deepEqual([(await resumable())[0]!.step, (await resumable())[0]!.available], ["b", "5"]);
      assert.equal((await dd.runs.get(run.id)).resumable, true);
      const resumed = await dd.runs.resume(run.id);
      assert.equal(resumed.status, "running");
      assert.equal(resumed.steps.find((s) => s.key === "b")?.status, "held");
      await dd.runs.settleStep(run.id, { key: "b", quantities: { output_tokens: 4000 } });
      // The agent replays its plan: nothing is held or charged again.
      assert.equal((await step(run.id, "a", "3")).replayed, true);
      assert.equal((await step(run.id, "b", "4")).replayed, true);
      // The same day, the cap (4 of 5 spent) refuses a 2-credit step; raising its limit announces it, once.
      assert.equal((await step(run.id, "c", "2")).run_status, "suspended");
      assert.equal((await outbox("run.suspended")).filter((e) => e.run_id === run.id).length, 2);
      await dd.spendCaps.update(cap.id, { limit: "5.5" });
      assert.equal((await resumable()).length, 1);
      await dd.spendCaps.update(cap.id, { limit: "6" });
      await dd.spendCaps.update(cap.id, { limit: "20" });
      assert.equal((await resumable()).length, 2, "once per suspension");
      assert.equal((await dd.runs.resume(run.id)).status, "running");
      await dd.runs.voidStep(run.id, "c");
      const done = await dd.runs.complete(run.id);
      assert.deepEqual(
        done.steps.map((s) => [s.key, s.status, s.charged]),
        [
          ["a", "settled", "3"],
          ["b", "settled", "4"],
          ["c", "voided", "0"],
        ],
      );
      assert.equal(done.credits, "7");
      assert.equal((await dd.wallets.balance(c.wallet_id)).available, "93");
      assert.deepEqual((await server.store.reconcile(server.tenantId)).differences, []);
    });

    test("every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
    });
  });
}
