import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Drawdown } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Overage policies through the SDK over HTTP, on every backend, moved by the test clock: a
 * plan's priced soft cap billed at the renewal and on demand (invoices listed, the journal to
 * overage_receivable, reconcile clean); a carried deficit repaid by the next grant; throttle's
 * answer; fair use; the auto top-up tried before a denial and its `auto_top_up_failed` alert;
 * the wallet's own policy over its plan's. Every response matches its documented schema.
 */

const T0 = Date.parse("2026-03-01T00:00:00.000Z");

for (const backend of backends()) {
  describe(`overage policies through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => T0 });
      dd = contractClient(server.url, server.key, log);
      await dd.testClock.advance({ to: new Date(T0) });
      const card = await dd.rateCards.create({ name: "Units" });
      await dd.rateCards.publishVersion(card.id, {
        lines: [
          { id: "unit", action: "unit", quantity: "calls", rate: "1" },
          { id: "cheap", action: "cheap.*", quantity: "calls", rate: "1" },
        ],
      });
    });
    after(async () => {
      await server?.close();
    });

    let n = 0;
    const use = (customer_id: string, calls: number, action = "unit") =>
      dd.events.ingest({ id: `ev-${++n}`, customer_id, action, quantities: { calls } });

    test("a plan's priced soft cap: billed at the renewal and on demand; invoices listed; reconcile clean", async () => {
      const plan = await dd.plans.create({
        name: "Metered",
        base_fee: { amount: "20", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "10",
        overage: { mode: "soft_cap", floor: "-100", price: { amount: "0.25", currency: "USD" } },
      });
      assert.deepEqual(plan.overage, {
        mode: "soft_cap",
        floor: "-100",
        price: { amount: "0.25", currency: "USD" },
        throttle: null,
      });
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id });
      const policy = await dd.wallets.getOverage(acme.wallet_id);
      assert.deepEqual([policy.mode, policy.source, policy.owed], ["soft_cap", "plan", "0"]);
      const r = await use(acme.id, 18);
      assert.deepEqual([r.charge?.drawn, r.charge?.overdraft], ["10", "8"]);
      assert.equal((await dd.wallets.getOverage(acme.wallet_id)).owed, "8");
      await dd.testClock.advance({ to: "2026-04-01T00:00:01Z" });
      assert.equal((await dd.wallets.getOverage(acme.wallet_id)).owed, "0");
      let invoices = await dd.overageInvoices.list({ customer_id: acme.id });
      assert.deepEqual(
        invoices.data.map((i) => [i.reason, i.credits, i.price, i.amount, i.currency, i.period_end]),
        [["renewal", "8", "0.25", "2", "USD", "2026-04-01T00:00:00.000Z"]],
      );
      await use(acme.id, 13);
      const bill = await dd.wallets.billOverage(acme.wallet_id);
      assert.equal(bill.object, "overage_bill");
      assert.deepEqual(
        [bill.invoice?.reason, bill.invoice?.credits, bill.invoice?.amount],
        ["on_demand", "3", "0.75"],
      );
      assert.equal(bill.invoice?.period_start, "2026-04-01T00:00:00.000Z");
      const tx = await dd.transactions.get(bill.invoice!.transaction_id);
      assert.equal(tx.kind, "overage.bill");
      assert.deepEqual(tx.entries.map((e) => [e.account, e.amount]).sort(), [
        ["overage_receivable", "-3"],
        ["overdraft", "3"],
      ]);
      assert.equal((await dd.wallets.billOverage(acme.wallet_id)).invoice, null);
      invoices = await dd.overageInvoices.list({ wallet_id: acme.wallet_id });
      assert.equal(invoices.data.length, 2);
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("carry deficit: the next period starts with the grant minus the deficit", async () => {
      const plan = await dd.plans.create({
        name: "Carry",
        base_fee: { amount: "10", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "20",
      });
      const beta = await dd.customers.create({ kind: "organization", name: "Beta" });
      await dd.subscriptions.create({ customer_id: beta.id, plan_id: plan.id });
      const set = await dd.wallets.setOverage(beta.wallet_id, { mode: "carry_deficit", floor: "-30" });
      assert.deepEqual([set.mode, set.floor, set.source], ["carry_deficit", "-30", "wallet"]);
      await use(beta.id, 27);
      assert.equal((await dd.wallets.balance(beta.wallet_id)).total, "-7");
      await dd.testClock.advance({ to: "2026-05-01T00:00:01Z" });
      const b = await dd.wallets.balance(beta.wallet_id);
      assert.deepEqual([b.total, b.available], ["13", "13"]);
      assert.equal((await dd.wallets.getOverage(beta.wallet_id)).owed, "0");
      await fails(dd.wallets.billOverage(beta.wallet_id), "invalid_argument", 400);
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("throttle answers with the allowed actions and the fallback; fair use never denies", async () => {
      const c = await dd.customers.create({ kind: "individual" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "20", source: "promo" });
      await dd.wallets.setOverage(c.wallet_id, {
        mode: "throttle",
        throttle: { level: "10", allowed_actions: ["cheap.*"], fallback_action: "cheap.mini" },
      });
      const t = await dd.holds.authorize({ customer_id: c.id, action: "unit", estimate: { credits: "15" } });
      assert.deepEqual(
        [t.decision, t.reason, t.allowed_actions, t.fallback_action, t.hold],
        ["throttle", "below_throttle_level", ["cheap.*"], "cheap.mini", null],
      );
      const ok = await dd.holds.authorize({
        customer_id: c.id,
        action: "cheap.mini",
        estimate: { credits: "15" },
      });
      assert.deepEqual([ok.decision, ok.allowed_actions, ok.fallback_action], ["allow", null, null]);
      await dd.wallets.setOverage(c.wallet_id, { mode: "fair_use" });
      const f = await dd.holds.authorize({
        customer_id: c.id,
        action: "unit",
        estimate: { credits: "1000000" },
        hold: true,
      });
      assert.equal(f.decision, "allow");
      const cleared = await dd.wallets.clearOverage(c.wallet_id);
      assert.deepEqual([cleared.mode, cleared.source, cleared.floor], ["hard_cap", "default", "-999980"]);
      assert.equal((await dd.reconcile()).ok, true);
    });

    /** An auto top-up of 50 credits below 1, through the test card. */
    const topUpAt50 = (walletId: string, payment_method: string) =>
      dd.autoTopUps.set(walletId, {
        threshold: "1",
        amount: "50",
        currency: "USD",
        monthly_cap: "100",
        provider: "test",
        payment_method,
      });

    test("auto top-up before a denial: covered, then the card declined fires auto_top_up_failed", async () => {
      await dd.priceBooks.publish({
        currency: "USD",
        tiers: [{ up_to: null, unit_price: "0.1" }],
      });
      const c = await dd.customers.create({ kind: "individual" });
      await topUpAt50(c.wallet_id, "pm_test_ok");
      const a = await dd.holds.authorize({
        customer_id: c.id,
        action: "unit",
        estimate: { credits: "30" },
        hold: true,
      });
      assert.equal(a.decision, "allow");
      assert.equal(a.auto_top_up?.outcome, "covered");
      assert.equal(a.auto_top_up?.purchase_ids.length, 1);
      await topUpAt50(c.wallet_id, "pm_test_declined");
      const d = await dd.holds.authorize({ customer_id: c.id, action: "unit", estimate: { credits: "500" } });
      assert.deepEqual(
        [d.decision, d.reason, d.auto_top_up?.outcome],
        ["deny", "insufficient_credits", "failed"],
      );
      const alerts = await dd.alerts.list({ wallet_id: c.wallet_id });
      assert.ok(alerts.data.some((x) => x.kind === "auto_top_up_failed"));
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("a run's step buys its auto top-up first (its request runs again), and a retry of the step buys nothing", async () => {
      await dd.priceBooks.publish({ currency: "USD", tiers: [{ up_to: null, unit_price: "0.1" }] });
      const c = await dd.customers.create({ kind: "individual" });
      await topUpAt50(c.wallet_id, "pm_test_ok");
      const run = await dd.runs.start({ customer_id: c.id });
      const body = { key: "s1", action: "unit", estimate: { credits: "30" } };
      const s1 = await dd.runs.step(run.id, body);
      assert.equal(s1.step.status, "held");
      assert.equal(s1.hold?.amount, "30");
      const bought = async () => (await dd.purchases.list({ wallet_id: c.wallet_id })).data;
      assert.deepEqual(
        (await bought()).map((p) => [p.origin, p.status, p.credits]),
        [["auto_top_up", "confirmed", "50"]],
      );
      const again = await dd.runs.step(run.id, body);
      assert.equal(again.replayed, true);
      assert.equal((await bought()).length, 1);
      assert.equal((await dd.wallets.balance(c.wallet_id)).available, "20");
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("bad input: a member's wallet, a policy the debt does not fit", async () => {
      const c = await dd.customers.create({ kind: "organization" });
      await dd.wallets.setOverage(c.wallet_id, { mode: "soft_cap", floor: "-5" });
      await use(c.id, 4);
      await fails(dd.wallets.setOverage(c.wallet_id, { mode: "hard_cap" }), "invalid_argument", 400);
      await fails(
        dd.wallets.setOverage(c.wallet_id, { mode: "soft_cap", price: { amount: "0", currency: "USD" } }),
        "invalid_amount",
        400,
      );
      await fails(dd.wallets.getOverage("wal_nobody"), "not_found", 404);
      assert.deepEqual(log.violations, []);
    });
  });
}
