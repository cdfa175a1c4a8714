import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Drawdown } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Expiry policies per source, through the SDK: a grant that names no expiry gets its source's
 * policy (never by default; rolling months when set), an explicit expiry or `null` wins, plan
 * credits keep their plan's expiry, grants issued before a change keep theirs, and the policy
 * survives into the scheduler: the grant expires exactly at the computed time.
 */

const T0 = Date.parse("2026-01-31T10:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

for (const backend of backends()) {
  describe(`expiry policies per source (${backend.name})`, () => {
    let now = T0;
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = contractClient(server.url, server.key, log);
    });
    after(async () => {
      await server?.close();
    });

    test("every source defaults to never, and a set policy is listed", async () => {
      const before = await dd.grants.expiryPolicies();
      assert.deepEqual(before.policies, {
        purchase: { kind: "never" },
        top_up: { kind: "never" },
        gift: { kind: "never" },
        promo: { kind: "never" },
        contract: { kind: "never" },
        adjustment: { kind: "never" },
      });
      const after = await dd.grants.setExpiryPolicy({
        source: "contract",
        expiry: { kind: "rolling", months: 12 },
      });
      assert.deepEqual(after.policies.contract, { kind: "rolling", months: 12 });
      assert.deepEqual(after.policies.purchase, { kind: "never" });
      assert.deepEqual((await dd.grants.expiryPolicies()).policies, after.policies);
    });

    test("a grant without expires_at gets its source's policy; explicit values win", async () => {
      await dd.grants.setExpiryPolicy({ source: "contract", expiry: { kind: "rolling", months: 12 } });
      await dd.grants.setExpiryPolicy({ source: "gift", expiry: { kind: "rolling", months: 1 } });
      const c = await dd.customers.create({ kind: "organization" });
      const wallet = c.wallet_id;
      const byPolicy = await dd.grants.create({ wallet_id: wallet, amount: "100", source: "contract" });
      // Calendar months, clamped to the month's end: 2026-01-31 + 12 months.
      assert.equal(byPolicy.grant.expires_at, "2027-01-31T10:00:00.000Z");
      const effectiveLater = await dd.grants.create({
        wallet_id: wallet,
        amount: "1",
        source: "contract",
        effective_at: "2026-03-31T00:00:00Z",
      });
      assert.equal(effectiveLater.grant.expires_at, "2027-03-31T00:00:00.000Z", "counted from effective_at");
      const never = await dd.grants.create({
        wallet_id: wallet,
        amount: "1",
        source: "contract",
        expires_at: null,
      });
      assert.equal(never.grant.expires_at, null);
      const explicit = await dd.grants.create({
        wallet_id: wallet,
        amount: "1",
        source: "contract",
        expires_at: "2026-02-15T00:00:00Z",
      });
      assert.equal(explicit.grant.expires_at, "2026-02-15T00:00:00.000Z");
      const purchase = await dd.grants.create({ wallet_id: wallet, amount: "1", source: "purchase" });
      assert.equal(purchase.grant.expires_at, null, "purchase keeps the default: never");
      const gift = await dd.gifts.give(c.id, { amount: "5" });
      // One month after 2026-01-31 is clamped to February's end.
      assert.equal(gift.grant.expires_at, "2026-02-28T10:00:00.000Z");
      const giftNever = await dd.gifts.give(c.id, { amount: "5", expires_at: null });
      assert.equal(giftNever.grant.expires_at, null);
    });

    test("a policy applies to grants issued after it; earlier grants keep their expiry", async () => {
      await dd.grants.setExpiryPolicy({ source: "promo", expiry: { kind: "never" } });
      const c = await dd.customers.create({ kind: "individual" });
      const early = await dd.grants.create({ wallet_id: c.wallet_id, amount: "3", source: "promo" });
      await dd.grants.setExpiryPolicy({ source: "promo", expiry: { kind: "rolling", months: 3 } });
      const late = await dd.grants.create({ wallet_id: c.wallet_id, amount: "3", source: "promo" });
      assert.equal((await dd.grants.get(early.grant.id)).expires_at, null);
      assert.equal(late.grant.expires_at, iso(Date.parse("2026-04-30T10:00:00.000Z")));
    });

    test("plan credits keep their plan's expiry whatever the policies", async () => {
      const plan = await dd.plans.create({
        name: "Monthly",
        base_fee: { amount: "10", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "20",
      });
      const c = await dd.customers.create({ kind: "individual" });
      await dd.subscriptions.create({ customer_id: c.id, plan_id: plan.id });
      const { data } = await dd.grants.list({ wallet_id: c.wallet_id });
      assert.equal(data.length, 1);
      assert.equal(data[0]!.source, "plan");
      assert.equal(data[0]!.expires_at, "2026-02-28T10:00:00.000Z", "the period's end");
    });

    test("a credit adjustment follows the adjustment policy, and the grant expires at that time", async () => {
      await dd.grants.setExpiryPolicy({ source: "adjustment", expiry: { kind: "rolling", months: 2 } });
      const c = await dd.customers.create({ kind: "individual" });
      const { grant } = await dd.adjustments.credit(c.wallet_id, { amount: "7", reason: "goodwill" });
      assert.equal(grant.expires_at, "2026-03-31T10:00:00.000Z");
      now = Date.parse("2026-03-31T09:59:59.999Z");
      await server.store.runDue();
      assert.equal((await dd.grants.get(grant.id)).status, "active");
      now = Date.parse("2026-03-31T10:00:00.000Z");
      await server.store.runDue();
      const after = await dd.grants.get(grant.id);
      assert.equal(after.status, "expired");
      assert.equal((await dd.wallets.balance(c.wallet_id)).available, "0");
      now = T0;
    });

    test("each tenant has its own policies", async () => {
      await dd.grants.setExpiryPolicy({ source: "top_up", expiry: { kind: "rolling", months: 6 } });
      const other = await server.store.createTenant("Other", "test");
      const key = await server.store.createApiKey(other.id, { kind: "secret", name: "other" });
      if (!key.ok) throw new Error(key.error.message);
      const theirs = new Drawdown({ apiKey: key.value.secret, baseUrl: server.url, maxRetries: 0 });
      assert.deepEqual((await theirs.grants.expiryPolicies()).policies.top_up, { kind: "never" });
      const c = await theirs.customers.create({ kind: "individual" });
      const g = await theirs.grants.create({ wallet_id: c.wallet_id, amount: "1", source: "top_up" });
      assert.equal(g.grant.expires_at, null);
    });

    test("bad policies are refused and change nothing", async () => {
      const before = await dd.grants.expiryPolicies();
      await fails(
        dd.grants.setExpiryPolicy({ source: "gift", expiry: { kind: "period_end" as "never" } }),
        "invalid_argument",
        400,
      );
      await fails(
        dd.grants.setExpiryPolicy({ source: "gift", expiry: { kind: "rolling" } }),
        "invalid_argument",
        400,
      );
      assert.deepEqual(await dd.grants.expiryPolicies(), before);
    });
  });
}
