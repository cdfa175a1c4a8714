import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, DrawdownErrorCode } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { snapshot } from "./support/http.js";
import { fails } from "./support/sdk.js";

/**
 * Authorize and holds through the SDK over HTTP, on every backend, moved by the test clock:
 * a hold takes its estimate out of `available` at once; settling posts the actual usage and
 * releases the rest; a failed run voids its hold and costs nothing; a hold left alone expires at
 * its timeout and cannot be posted; a denial holds nothing. Every refusal has its code and
 * changes nothing; every response matches its documented schema; reconcile stays clean.
 */

const T0 = Date.parse("2026-03-01T00:00:00.000Z");

for (const backend of backends()) {
  describe(`authorize and holds through the SDK (${backend.name})`, () => {
    const now = T0;
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    let acme: Customer;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = contractClient(server.url, server.key, log);
      await dd.testClock.advance({ to: new Date(T0) });
      const card = await dd.rateCards.create({ name: "Agents" });
      await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "agent-tokens", action: "agent.run", quantity: "output_tokens", rate: "0.001" }],
      });
      acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      await dd.grants.create({ wallet_id: acme.wallet_id, amount: "10", source: "purchase" });
    });
    after(async () => {
      await server?.close();
    });

    const balance = () => dd.wallets.balance(acme.wallet_id);
    const state = async () => {
      const { idempotency_keys: _, ...tables } = await snapshot(server.store);
      return tables;
    };
    const refused = async (call: () => Promise<unknown>, code: DrawdownErrorCode, status = 409) => {
      const before = await state();
      await fails(call(), code, status);
      assert.deepEqual(await state(), before, `a refused ${code} changed the database`);
    };

    test("an estimate in quantities is rated and held at once; settling posts the usage and releases the rest", async () => {
      const a = await dd.holds.authorize({
        customer_id: acme.id,
        action: "agent.run",
        estimate: { quantities: { output_tokens: 4000 } },
        hold: true,
        hold_timeout_seconds: 300,
      });
      assert.equal(a.decision, "allow");
      assert.equal(a.reason, "sufficient_credits");
      assert.equal(a.available, "10");
      assert.equal(a.estimate, "4");
      assert.ok(a.hold);
      assert.equal(a.hold.status, "pending");
      assert.equal(a.hold.expires_at, new Date(T0 + 300_000).toISOString());
      let b = await balance();
      assert.deepEqual([b.total, b.available, b.held, b.upcoming], ["10", "6", "4", "0"]);

      const h = await dd.holds.settle(a.hold.id, {
        events: [
          { id: "run-1-step-1", quantities: { output_tokens: 1500 }, run_id: "run-1" },
          { id: "run-1-step-2", quantities: { output_tokens: 1000 }, run_id: "run-1" },
        ],
      });
      assert.equal(h.status, "posted");
      assert.deepEqual([h.posted, h.released, h.unpaid], ["2.5", "1.5", "0"]);
      b = await balance();
      assert.deepEqual([b.total, b.available, b.held], ["7.5", "7.5", "0"]);
      // The events are recorded like ingested ones: the run's report sees them.
      const step = await dd.events.get("run-1-step-1");
      assert.equal(step.charge.credits, "1.5");
      const run = await dd.runs.get("run-1");
      assert.equal(run.credits, "2.5");
      await refused(
        () => dd.holds.settle(a.hold!.id, { quantities: { output_tokens: 1 } }),
        "hold_not_pending",
      );
    });

    test("a failed run voids its hold and costs nothing; a denial holds nothing", async () => {
      const before = await balance();
      const a = await dd.holds.authorize({
        customer_id: acme.id,
        action: "agent.run",
        estimate: { credits: "3" },
        hold: true,
      });
      assert.equal((await balance()).held, "3");
      const v = await dd.holds.void(a.hold!.id);
      assert.deepEqual([v.status, v.released, v.posted], ["voided", "3", "0"]);
      assert.deepEqual(await balance(), { ...before, as_of: (await balance()).as_of });
      await refused(() => dd.holds.void(a.hold!.id), "hold_not_pending");

      const deny = await dd.holds.authorize({
        customer_id: acme.id,
        action: "agent.run",
        estimate: { credits: "100" },
        hold: true,
      });
      assert.deepEqual(
        [deny.decision, deny.reason, deny.available, deny.hold],
        ["deny", "insufficient_credits", "7.5", null],
      );
    });

    test("a hold left alone expires at its timeout as the test clock passes it, and cannot be posted", async () => {
      const a = await dd.holds.authorize({
        customer_id: acme.id,
        action: "agent.run",
        estimate: { credits: "2" },
        hold: true,
        hold_timeout_seconds: 60,
      });
      assert.equal((await balance()).available, "5.5");
      await dd.testClock.advance({ seconds: 120 });
      const h = await dd.holds.get(a.hold!.id);
      assert.equal(h.status, "expired");
      assert.equal(h.resolved_at, new Date(T0 + 60_000).toISOString());
      assert.equal((await balance()).available, "7.5");
      await refused(() => dd.holds.settle(a.hold!.id, { quantities: { output_tokens: 1 } }), "hold_expired");
      const listed = await dd.holds.list({ wallet_id: acme.wallet_id });
      // Ids made in the same millisecond (the frozen clock) sort in any order: compare as sets.
      assert.deepEqual(listed.data.map((x) => x.status).sort(), ["expired", "posted", "voided"]);
      const pending = await dd.holds.list({ customer_id: acme.id, status: "pending" });
      assert.deepEqual(pending.data, []);
    });

    test("the journal shows each hold's movements, and reconcile is clean", async () => {
      const kinds = (await dd.transactions.list({ wallet_id: acme.wallet_id })).data.map((t) => t.kind);
      assert.deepEqual(kinds, [
        "grant",
        "hold",
        "hold.settle",
        "hold",
        "hold.release",
        "hold",
        "hold.release",
      ]);
      const report = await dd.reconcile();
      assert.ok(report.ok, JSON.stringify(report.differences));
      assert.deepEqual(await dd.holds.ping(), { object: "pong" });
      assert.deepEqual(log.violations, []);
    });
  });
}
