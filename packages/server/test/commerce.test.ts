import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { PaymentProvider, PaymentResult } from "@drawdown/storage";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Top-ups and the price book through the SDK over HTTP, on every backend, with the test clock:
 * an invoice pending until confirmed (and confirmed once), auto top-up when the balance crosses
 * its threshold, a declined card turning auto top-up off, the monthly cap refusing a top-up and
 * changing nothing, and the cap's reset at the month's end. Every response is checked against
 * its route's schema (support/contract.ts).
 */

const T0 = "2027-03-10T12:00:00Z";

for (const backend of backends()) {
  describe(`top-ups and the price book over HTTP (${backend.name})`, () => {
    let server: TestServer;
    const log = newContractLog();
    before(async () => {
      server = await startTestServer({ backend: backend.name });
    });
    after(async () => {
      await server?.close();
      assert.deepEqual(log.violations, []);
    });

    /** A fresh test tenant at T0 with a USD price book and one customer. */
    async function shop() {
      const { key } = await server.newTenant("Shop");
      const dd = contractClient(server.url, key, log);
      await dd.testClock.advance({ to: T0 });
      const book = await dd.priceBooks.publish({
        currency: "USD",
        packs: [
          {
            id: "annual",
            name: "1,000 credits",
            credits: "1000",
            price: "100",
            expiry: { kind: "rolling", months: 12 },
          },
        ],
        tiers: [
          { up_to: "1000", unit_price: "0.12" },
          { up_to: null, unit_price: "0.1" },
        ],
        commitment_discounts: [{ min_committed: "10000", percent_off: 10 }],
      });
      assert.equal(book.version, 1);
      const c = await dd.customers.create({ kind: "organization" });
      const available = async () => (await dd.wallets.balance(c.wallet_id)).available;
      return { dd, c, available };
    }

    test("an invoice: pending and unusable until confirmed, then a purchase grant with its cost basis, confirmed once", async () => {
      const { dd, c, available } = await shop();
      const invoice = await dd.purchases.create({
        wallet_id: c.wallet_id,
        currency: "USD",
        pack_id: "annual",
        provider: "manual",
      });
      assert.equal(invoice.status, "pending");
      assert.equal(invoice.price, "100");
      assert.equal(invoice.grant_id, null);
      assert.equal(await available(), "0");
      await fails(
        dd.adjustments.debit(c.wallet_id, { amount: "1", reason: "try" }),
        "insufficient_credits",
        402,
      );
      await dd.testClock.advance({ seconds: 86_400 });
      const paid = await dd.purchases.confirm(invoice.id, { reference: "wire-7" });
      assert.equal(paid.status, "confirmed");
      assert.equal(paid.provider_reference, "wire-7");
      const grant = await dd.grants.get(paid.grant_id!);
      assert.equal(grant.source, "purchase");
      assert.equal(grant.cost_basis, "0.1");
      assert.equal(grant.currency, "USD");
      assert.equal(grant.expires_at, "2028-03-11T12:00:00.000Z");
      assert.equal(await available(), "1000");
      const e = await fails(dd.purchases.confirm(invoice.id), "purchase_not_pending", 409);
      assert.equal(e.details?.status, "confirmed");
      await fails(dd.purchases.fail(invoice.id, { reason: "late" }), "purchase_not_pending", 409);
      assert.equal(await available(), "1000");
      assert.equal((await dd.grants.list({ wallet_id: c.wallet_id })).data.length, 1);
      const listed = await dd.purchases.list({ customer_id: c.id });
      assert.deepEqual(
        listed.data.map((p) => p.status),
        ["confirmed"],
      );
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("a committed customer pays the discounted price; custom amounts are graduated", async () => {
      const { dd, c } = await shop();
      await dd.priceBooks.commit(c.id, {
        currency: "USD",
        credits: "12000",
        ends_at: "2028-03-10T12:00:00Z",
      });
      assert.equal((await dd.priceBooks.commitments(c.id)).data.length, 1);
      const p = await dd.purchases.create({
        wallet_id: c.wallet_id,
        currency: "USD",
        credits: "2500",
        provider: "test",
        payment_method: "pm_test_ok",
      });
      assert.equal(p.status, "confirmed");
      assert.equal(p.list_price, "270");
      assert.equal(p.discount_percent, 10);
      assert.equal(p.price, "243");
      assert.equal(p.cost_basis, "0.0972");
    });

    test("auto top-up: the clock's advance refills below the threshold; the spent cap refuses with a code and changes nothing; the next month refills", async () => {
      const { dd, c, available } = await shop();
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "300", source: "promo" });
      const set = await dd.autoTopUps.set(c.wallet_id, {
        threshold: "200",
        amount: "500",
        currency: "USD",
        monthly_cap: "100",
        provider: "test",
        payment_method: "pm_test_ok",
      });
      assert.equal(set.enabled, true);
      await dd.adjustments.debit(c.wallet_id, { amount: "150", reason: "usage" });
      assert.equal(await available(), "150");
      await dd.testClock.advance({ seconds: 60 });
      assert.equal(await available(), "650");
      const [topUp] = (await dd.purchases.list({ wallet_id: c.wallet_id })).data;
      assert.equal(topUp?.origin, "auto_top_up");
      assert.equal(topUp?.price, "60");
      assert.equal((await dd.grants.get(topUp!.grant_id!)).source, "top_up");

      await dd.adjustments.debit(c.wallet_id, { amount: "500", reason: "usage" });
      const e = await fails(dd.autoTopUps.run(c.wallet_id), "auto_top_up_cap_reached", 409);
      assert.equal(e.details?.cap_left, "40");
      await dd.testClock.advance({ to: "2027-03-31T23:00:00Z" });
      assert.equal(await available(), "150");
      assert.equal((await dd.autoTopUps.get(c.wallet_id)).capped_until, "2027-04-01T00:00:00.000Z");
      await dd.testClock.advance({ to: "2027-04-02T00:00:00Z" });
      assert.equal(await available(), "650");
      const all = (await dd.purchases.list({ wallet_id: c.wallet_id })).data;
      assert.deepEqual(all.map((p) => p.created_at).sort(), [
        "2027-03-10T12:00:00.000Z",
        "2027-04-01T00:00:00.000Z",
      ]);
      // Above the threshold now: a manual check buys nothing.
      assert.equal((await dd.autoTopUps.run(c.wallet_id)).outcome, "not_needed");
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("a declined card: the top-up fails, no credits, auto top-up turns itself off with the reason", async () => {
      const { dd, c, available } = await shop();
      await dd.autoTopUps.set(c.wallet_id, {
        threshold: "100",
        target_balance: "400",
        currency: "USD",
        monthly_cap: "500",
        provider: "test",
        payment_method: "pm_test_declined",
      });
      await dd.testClock.advance({ seconds: 60 });
      assert.equal(await available(), "0");
      const off = await dd.autoTopUps.get(c.wallet_id);
      assert.equal(off.enabled, false);
      assert.match(off.disabled_reason ?? "", /^payment_failed: card_declined/);
      const [failed] = (await dd.purchases.list({ wallet_id: c.wallet_id })).data;
      assert.equal(failed?.status, "failed");
      await fails(dd.autoTopUps.run(c.wallet_id), "auto_top_up_disabled", 409);
      await dd.testClock.advance({ seconds: 3600 });
      assert.equal(
        (await dd.purchases.list({ wallet_id: c.wallet_id })).data.length,
        1,
        "off: nothing more tried",
      );
      // Setting it again with a good card turns it back on; the next check buys up to the target.
      const on = await dd.autoTopUps.set(c.wallet_id, {
        threshold: "100",
        target_balance: "400",
        currency: "USD",
        monthly_cap: "500",
        provider: "test",
        payment_method: "pm_test_ok",
      });
      assert.equal(on.disabled_reason, null);
      const run = await dd.autoTopUps.run(c.wallet_id);
      assert.equal(run.outcome, "purchased");
      assert.equal(run.purchase?.credits, "400");
      assert.equal(await available(), "400");
    });

    test("an invoiced auto top-up waits for its confirmation; one pending at a time; disable turns it off", async () => {
      const { dd, c, available } = await shop();
      await dd.autoTopUps.set(c.wallet_id, {
        threshold: "100",
        pack_id: "annual",
        currency: "USD",
        monthly_cap: "1000",
        provider: "manual",
      });
      await dd.testClock.advance({ seconds: 60 });
      await dd.testClock.advance({ seconds: 86_400 });
      const pending = (await dd.purchases.list({ wallet_id: c.wallet_id, status: "pending" })).data;
      assert.equal(pending.length, 1);
      assert.equal(await available(), "0");
      assert.equal((await dd.autoTopUps.run(c.wallet_id)).outcome, "pending");
      await dd.purchases.confirm(pending[0]!.id);
      assert.equal(await available(), "1000");
      const off = await dd.autoTopUps.disable(c.wallet_id);
      assert.equal(off.enabled, false);
      assert.equal(off.disabled_reason, null);
      await fails(dd.autoTopUps.run(c.wallet_id), "auto_top_up_disabled", 409);
    });
  });
}

/**
 * A card provider that keeps its charges by idempotency key, as Stripe does, and loses its
 * connection right after its first charge: the request fails after the money moved.
 */
function flakyCard() {
  const keys: string[] = [];
  const charges = new Map<string, PaymentResult>();
  let lose = true;
  const provider: PaymentProvider = {
    id: "card",
    testOnly: true,
    synchronous: true,
    checkPaymentMethod: () => null,
    charge: async (r) => {
      keys.push(r.idempotencyKey);
      let result = charges.get(r.idempotencyKey);
      if (!result) {
        result = { status: "succeeded", reference: `ch_${charges.size + 1}` };
        charges.set(r.idempotencyKey, result);
      }
      if (lose) {
        lose = false;
        throw new Error("the connection to the provider was lost after it charged");
      }
      return result;
    },
  };
  return { provider, keys, charges };
}

for (const backend of backends()) {
  describe(`a purchase retried after its transaction rolled back (${backend.name})`, () => {
    test("the retry with the same Idempotency-Key reaches the provider with the same key: charged once, granted once", async () => {
      const card = flakyCard();
      const server = await startTestServer({ backend: backend.name, paymentProviders: [card.provider] });
      try {
        const { tenantId, key } = await server.newTenant("Shop");
        const dd = contractClient(server.url, key, newContractLog());
        await dd.priceBooks.publish({
          currency: "USD",
          packs: [],
          tiers: [{ up_to: null, unit_price: "0.1" }],
        });
        const c = await dd.customers.create({ kind: "organization" });
        const body = {
          wallet_id: c.wallet_id,
          currency: "USD",
          credits: "50",
          provider: "card",
          payment_method: "pm_card",
        };
        // The provider charged, then the request failed: its transaction rolled back.
        await assert.rejects(dd.purchases.create(body, { idempotencyKey: "buy-50" }));
        assert.equal((await dd.purchases.list({ wallet_id: c.wallet_id })).data.length, 0);
        const bought = await dd.purchases.create(body, { idempotencyKey: "buy-50" });
        assert.equal(bought.status, "confirmed");
        assert.equal(bought.provider_reference, "ch_1");
        const expected = `purchase:${createHash("sha256").update(`${tenantId}\n${"buy-50"}`).digest("hex")}`;
        assert.deepEqual(card.keys, [expected, expected]);
        assert.equal(card.charges.size, 1);
        assert.equal((await dd.wallets.balance(c.wallet_id)).available, "50");
        // Without a key each request is a purchase of its own.
        await dd.purchases.create(body);
        await dd.purchases.create(body);
        assert.equal(card.charges.size, 3);
        assert.equal((await dd.wallets.balance(c.wallet_id)).available, "150");
      } finally {
        await server.close();
      }
    });
  });
}
