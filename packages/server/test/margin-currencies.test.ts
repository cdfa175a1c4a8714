import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";

/**
 * Money in several currencies is never added up: credits bought in EUR and in USD, costs priced
 * in USD, one event drawing both. The margin report, a run's totals and an event's explanation
 * keep one amount per currency, and give single figures only where there is one. Rows written before migration 22 (no currency columns) read
 * their currencies from their detail and report the same.
 */

const T0 = "2027-05-04T10:00:00Z";

for (const backend of backends()) {
  describe(`margin in several currencies (${backend.name})`, () => {
    let server: TestServer;
    const log = newContractLog();
    before(async () => {
      server = await startTestServer({ backend: backend.name });
    });
    after(async () => {
      await server?.close();
      assert.deepEqual(log.violations, []);
    });

    test("revenue and cost stay per currency in the margin report and a run's totals", async () => {
      const { tenantId, key } = await server.newTenant("Two currencies");
      const dd = contractClient(server.url, key, log);
      await dd.testClock.advance({ to: T0 });
      const card = await dd.rateCards.create({ name: "Standard" });
      await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "step", action: "agent.step", quantity: "units", rate: "1" }],
      });
      await dd.costTables.publish({
        currency: "USD",
        lines: [{ id: "c-step", action: "agent.step", quantity: "units", rate: "0.01" }],
      });
      const eur = await dd.customers.create({ kind: "organization", name: "Euro" });
      const usd = await dd.customers.create({ kind: "organization", name: "Dollar" });
      // Euro's first grant (drawn first: it expires first) in EUR, then one in USD.
      await dd.grants.create({
        wallet_id: eur.wallet_id,
        amount: "10",
        source: "purchase",
        cost_basis: "0.1",
        currency: "EUR",
        expires_at: "2027-06-01T00:00:00Z",
      });
      await dd.grants.create({
        wallet_id: eur.wallet_id,
        amount: "100",
        source: "purchase",
        cost_basis: "0.2",
        currency: "USD",
      });
      await dd.grants.create({
        wallet_id: usd.wallet_id,
        amount: "100",
        source: "purchase",
        cost_basis: "0.3",
        currency: "USD",
      });
      const step = (id: string, customer: string, units: number) => ({
        id,
        customer_id: customer,
        action: "agent.step",
        quantities: { units },
        run_id: "run_mixed",
      });
      // Euro: 8 from the EUR grant (0.8 EUR); 4 from both grants, 2 × 0.1 = 0.2 EUR and
      // 2 × 0.2 = 0.4 USD, each in its own currency; 5 from the USD grant (1 USD). Dollar: 3
      // (0.9 USD). Every step costs 0.01 USD.
      const res = await dd.events.ingestBatch([
        step("e1", eur.id, 8),
        step("e2", eur.id, 4),
        step("e3", eur.id, 5),
        step("e4", usd.id, 3),
      ]);
      assert.equal(res.accepted, 4, JSON.stringify(res));

      const report = await dd.reports.margin({ group_by: "customer" });
      const row = (customer: string) => report.rows.find((r) => r.key === customer)!;
      assert.deepEqual(
        { ...row(eur.id), day: "", key: "" },
        {
          day: "",
          key: "",
          events: 3,
          credits: "17",
          unpaid: "0",
          currency: null,
          revenue: null,
          cost: null,
          margin: null,
          amounts: [
            { currency: "EUR", revenue: "1", cost: "0", margin: "1" },
            { currency: "USD", revenue: "1.4", cost: "0.17", margin: "1.23" },
          ],
        },
      );
      assert.deepEqual(
        [row(usd.id).currency, row(usd.id).revenue, row(usd.id).cost, row(usd.id).margin],
        ["USD", "0.9", "0.03", "0.87"],
      );
      const run = await dd.runs.get("run_mixed");
      assert.deepEqual(
        [run.currency, run.revenue, run.amounts],
        [
          null,
          null,
          [
            { currency: "EUR", revenue: "1", cost: "0", margin: "1" },
            { currency: "USD", revenue: "2.3", cost: "0.2", margin: "2.1" },
          ],
        ],
      );

      // One event's money per currency: e2 drew EUR and USD credits and cost USD.
      const e2 = await dd.events.get("e2");
      assert.deepEqual(
        [e2.revenue, e2.margin, e2.amounts],
        [
          { amount: "0.2", currency: "EUR" },
          null,
          [
            { currency: "EUR", revenue: "0.2", cost: "0", margin: "0.2" },
            { currency: "USD", revenue: "0.4", cost: "0.04", margin: "0.36" },
          ],
        ],
      );
      const e4 = await dd.events.get("e4");
      assert.deepEqual(
        [e4.revenue, e4.margin, e4.amounts],
        [
          { amount: "0.9", currency: "USD" },
          "0.87",
          [{ currency: "USD", revenue: "0.9", cost: "0.03", margin: "0.87" }],
        ],
      );

      // Rows recorded before the currency columns existed read them from their detail.
      await server.store.db.query(
        "UPDATE usage_events SET revenue_currency = NULL, cost_currency = NULL WHERE tenant_id = $1",
        [tenantId],
      );
      assert.deepEqual(await dd.reports.margin({ group_by: "customer" }), report);
      assert.deepEqual(await dd.runs.get("run_mixed"), run);
    });
  });
}
