import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, Subject } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { snapshot } from "./support/http.js";
import { fails } from "./support/sdk.js";

/**
 * Spend caps over HTTP, on every backend: the vendor's cap (secret key) and the customer's
 * own (restricted key) coexist and the tighter binds; a restricted key never changes the
 * vendor's cap; events beyond a cap are recorded unpaid with reason `spend_cap_reached`,
 * authorizations are denied with it, held amounts reserve cap room until they resolve, a
 * direct debit beyond a cap fails; each period starts fresh; the `spend_cap_reached` alert
 * fires once per cap and period and is written to the webhook outbox.
 */

const T0 = Date.parse("2026-03-10T12:00:00.000Z");

for (const backend of backends()) {
  describe(`spend caps through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    let mine: Drawdown;
    let acme: Customer;
    let other: Customer;
    let agent: Subject;
    let member: Subject;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => T0 });
      const sdk = (apiKey: string) => contractClient(server.url, apiKey, log);
      dd = sdk(server.key);
      await dd.testClock.advance({ to: new Date(T0) });
      const card = await dd.rateCards.create({ name: "Agents" });
      await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "agent-tokens", action: "agent.run", quantity: "output_tokens", rate: "0.001" }],
      });
      acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      other = await dd.customers.create({ kind: "organization", name: "Other" });
      await dd.grants.create({ wallet_id: acme.wallet_id, amount: "100", source: "purchase" });
      agent = await dd.subjects.create(acme.id, { kind: "agent", external_id: "bot" });
      member = await dd.subjects.create(acme.id, { kind: "member", external_id: "ann" });
      const key = await dd.apiKeys.create({ kind: "restricted", name: "acme page", customer_id: acme.id });
      mine = sdk(key.secret!);
    });
    after(async () => {
      await server?.close();
      assert.deepEqual(log.violations, []);
    });

    const ledger = async () => {
      const {
        idempotency_keys: _,
        alerts: _a,
        alert_states: _s,
        outbox_events: _o,
        ...tables
      } = await snapshot(server.store);
      return tables;
    };
    const capAlerts = async (capId: string) =>
      (await dd.alerts.list({ customer_id: acme.id, kind: "spend_cap_reached" })).data.filter(
        (a) => a.details.cap_id === capId,
      );
    const outboxed = async (capId: string) => {
      const { rows } = await server.store.db.query(
        "SELECT payload FROM outbox_events WHERE tenant_id = $1 AND type = 'alert.triggered'",
        [server.tenantId],
      );
      return rows
        .map(
          (r) =>
            (typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload) as Record<string, unknown>,
        )
        .filter((p) => p.kind === "spend_cap_reached" && p.cap_id === capId);
    };
    const event = (id: string, tokens: number, subject = agent.id) =>
      dd.events.ingest({
        id,
        customer_id: acme.id,
        subject_id: subject,
        action: "agent.run",
        quantities: { output_tokens: tokens },
      });

    let vendorCap: string;
    let customerCap: string;

    test("vendor and customer caps coexist on one agent; the tighter binds; events beyond it are recorded unpaid", async () => {
      const v = await dd.spendCaps.create(acme.id, { target_id: agent.id, period: "day", limit: "5" });
      assert.equal(v.set_by, "vendor");
      assert.equal(v.target_kind, "subject");
      assert.deepEqual(v.current_period, {
        start: "2026-03-10T00:00:00.000Z",
        end: "2026-03-11T00:00:00.000Z",
        spent: "0",
        held: "0",
        remaining: "5",
      });
      const c = await mine.spendCaps.create(acme.id, { target_id: agent.id, period: "day", limit: "3" });
      assert.equal(c.set_by, "customer");
      vendorCap = v.id;
      customerCap = c.id;

      const first = await event("e-1", 2000);
      assert.equal(first.charge?.outcome, "charged");
      const second = await event("e-2", 2000);
      assert.equal(second.charge?.outcome, "unpaid");
      assert.equal(second.charge?.unpaid, "2");
      assert.equal(second.charge?.reason, "spend_cap_reached");
      // The member is not capped: its charge goes through.
      assert.equal((await event("e-3", 2000, member.id)).charge?.outcome, "charged");

      assert.equal((await dd.spendCaps.get(customerCap)).current_period.remaining, "1");
      assert.equal((await dd.spendCaps.get(vendorCap)).current_period.remaining, "3");
      // The refusal fired the customer cap's alert, once, and wrote it to the outbox.
      assert.equal((await capAlerts(customerCap)).length, 1);
      await event("e-4", 5000);
      assert.equal((await capAlerts(customerCap)).length, 1, "once per cap and period");
      const sent = await outboxed(customerCap);
      assert.equal(sent.length, 1);
      assert.equal(sent[0]!.period_start, "2026-03-10T00:00:00.000Z");
      assert.equal(sent[0]!.limit, "3");
      assert.equal((await capAlerts(vendorCap)).length, 0);
    });

    test("authorize: a deny says spend_cap_reached; a hold reserves cap room until it resolves", async () => {
      const denied = await dd.holds.authorize({
        customer_id: acme.id,
        subject_id: agent.id,
        action: "agent.run",
        estimate: { credits: "2" },
        hold: true,
      });
      assert.equal(denied.decision, "deny");
      assert.equal(denied.reason, "spend_cap_reached");
      assert.equal(denied.available, "1");
      assert.equal(denied.hold, null);

      const held = await dd.holds.authorize({
        customer_id: acme.id,
        subject_id: agent.id,
        action: "agent.run",
        estimate: { credits: "1" },
        hold: true,
      });
      assert.equal(held.decision, "allow");
      let cap = await dd.spendCaps.get(customerCap);
      assert.deepEqual(
        [cap.current_period.spent, cap.current_period.held, cap.current_period.remaining],
        ["2", "1", "0"],
      );
      // Fully reserved: the next authorization is denied.
      const none = await dd.holds.authorize({
        customer_id: acme.id,
        subject_id: agent.id,
        action: "agent.run",
        estimate: { credits: "0.5" },
      });
      assert.equal(none.decision, "deny");
      assert.equal(none.reason, "spend_cap_reached");
      await dd.holds.void(held.hold!.id);
      cap = await dd.spendCaps.get(customerCap);
      assert.deepEqual([cap.current_period.held, cap.current_period.remaining], ["0", "1"]);

      const again = await dd.holds.authorize({
        customer_id: acme.id,
        subject_id: agent.id,
        action: "agent.run",
        estimate: { credits: "1" },
        hold: true,
      });
      await dd.holds.settle(again.hold!.id, { quantities: { output_tokens: 400 } });
      cap = await dd.spendCaps.get(customerCap);
      assert.deepEqual(
        [cap.current_period.spent, cap.current_period.held, cap.current_period.remaining],
        ["2.4", "0", "0.6"],
      );
    });

    test("a restricted key changes its own caps, never the vendor's; bad input changes nothing", async () => {
      const before = await ledger();
      const caps = await server.store.db.query("SELECT * FROM spend_caps ORDER BY id");
      await fails(mine.spendCaps.update(vendorCap, { limit: "100" }), "forbidden", 403);
      await fails(mine.spendCaps.delete(vendorCap), "forbidden", 403);
      await fails(
        mine.spendCaps.create(other.id, { target_id: other.wallet_id, period: "day", limit: "1" }),
        "not_found",
        404,
      );
      await fails(mine.spendCaps.get(`cap_${"0".repeat(26)}`), "not_found", 404);
      await fails(
        dd.spendCaps.create(acme.id, { target_id: agent.id, period: "day", limit: "-1" }),
        "invalid_amount",
        400,
      );
      await fails(dd.spendCaps.update(vendorCap, { limit: "-0.5" }), "invalid_amount", 400);
      await fails(
        dd.spendCaps.create(acme.id, { target_id: other.wallet_id, period: "day", limit: "1" }),
        "invalid_argument",
        400,
      );
      await fails(
        dd.spendCaps.create(acme.id, { target_id: `wal_${"0".repeat(26)}`, period: "day", limit: "1" }),
        "not_found",
        404,
      );
      await fails(
        mine.spendCaps.create(acme.id, { target_id: agent.id, period: "day", limit: "9" }),
        "already_exists",
        409,
      );
      assert.deepEqual(await ledger(), before);
      assert.deepEqual((await server.store.db.query("SELECT * FROM spend_caps ORDER BY id")).rows, caps.rows);

      // It reads every cap of its customer, the vendor's too.
      const listed = await mine.spendCaps.list(acme.id);
      assert.deepEqual(listed.data.map((c) => c.id).sort(), [vendorCap, customerCap].sort());
      // It may loosen its own cap: the vendor's still binds.
      const loosened = await mine.spendCaps.update(customerCap, { limit: "50" });
      assert.equal(loosened.limit, "50");
      const a = await dd.holds.authorize({
        customer_id: acme.id,
        subject_id: agent.id,
        action: "agent.run",
        estimate: { credits: "3" },
      });
      assert.equal(a.decision, "deny");
      assert.equal(a.available, "2.6", "the vendor's 5 minus 2.4 spent");
      // The vendor may change the customer's cap; deleting returns it as it was.
      const gone = await dd.spendCaps.delete(customerCap);
      assert.equal(gone.deleted, true);
      await fails(dd.spendCaps.get(customerCap), "not_found", 404);
    });

    test("a direct debit beyond a wallet cap fails with spend_cap_reached; a pool cap counts every charge", async () => {
      const cap = await dd.spendCaps.create(acme.id, {
        target_id: acme.wallet_id,
        period: "month",
        limit: "8",
      });
      await dd.adjustments.debit(acme.wallet_id, { amount: "3", reason: "support call" });
      const before = await ledger();
      await fails(
        dd.adjustments.debit(acme.wallet_id, { amount: "6", reason: "support call" }),
        "spend_cap_reached",
        402,
      );
      assert.deepEqual(await ledger(), before);
      // The member's event is charged through the pool: it counts on the pool's cap.
      assert.equal((await event("e-5", 4000, member.id)).charge?.outcome, "charged");
      const got = await dd.spendCaps.get(cap.id);
      assert.equal(got.current_period.spent, "7");
      assert.equal((await event("e-6", 2000, member.id)).charge?.reason, "spend_cap_reached");
      assert.equal((await capAlerts(cap.id)).length, 1);
      await dd.spendCaps.delete(cap.id);
    });

    test("each period starts fresh", async () => {
      await dd.testClock.advance({ to: new Date(T0 + 86_400_000) });
      const v = await dd.spendCaps.get(vendorCap);
      assert.deepEqual(v.current_period, {
        start: "2026-03-11T00:00:00.000Z",
        end: "2026-03-12T00:00:00.000Z",
        spent: "0",
        held: "0",
        remaining: "5",
      });
      assert.equal((await event("e-7", 5000)).charge?.outcome, "charged");
      assert.equal((await event("e-8", 1)).charge?.reason, "spend_cap_reached");
      // A new period: the alert fires again, once (the first period's fired on the denial above).
      const fired = (await capAlerts(vendorCap)).map((a) => a.details.period_start).sort();
      assert.deepEqual(fired, ["2026-03-10T00:00:00.000Z", "2026-03-11T00:00:00.000Z"]);
      const r = await dd.reconcile();
      assert.equal(r.ok, true);
    });
  });
}
