import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, DrawdownError, DrawdownErrorCode } from "@drawdown/sdk";
import { GIFT_ROUTES } from "../src/gift-routes.js";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { snapshot } from "./support/http.js";
import { fails } from "./support/sdk.js";

/**
 * Gifts and referrals through the SDK over HTTP, on every backend: direct gifts, claimable
 * codes (once per customer, N uses exact even under concurrent claims, nothing after the end),
 * referral grants once per referred customer, the gift report, and a clean reconcile. Every
 * refusal has its code and changes nothing; every response matches its documented schema.
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

for (const backend of backends()) {
  describe(`gifts and referrals through the SDK (${backend.name})`, () => {
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

    const customer = (): Promise<Customer> => dd.customers.create({ kind: "individual" });
    /** Every table but the idempotency record (the SDK's key keeps the refusal, to replay it). */
    const state = async () => {
      const { idempotency_keys: _, ...tables } = await snapshot(server.store);
      return tables;
    };
    /** A refusal with its code that leaves every table as it was. */
    const refused = async (call: () => Promise<unknown>, code: DrawdownErrorCode, status = 409) => {
      const before = await state();
      await fails(call(), code, status);
      assert.deepEqual(await state(), before, `a refused ${code} changed the database`);
    };

    test("a direct gift: source gift, zero cost basis, the given scope, expiry and reason", async () => {
      const c = await customer();
      const { grant, transaction_id } = await dd.gifts.give(c.id, {
        amount: "12.5",
        scope: ["image.*"],
        expires_at: iso(now + 30 * DAY),
        reason: "beta tester",
      });
      assert.equal(grant.source, "gift");
      assert.equal(grant.cost_basis, "0");
      assert.equal(grant.currency, null);
      assert.equal(grant.amount, "12.5");
      assert.deepEqual(grant.scope, ["image.*"]);
      assert.equal(grant.expires_at, iso(now + 30 * DAY));
      assert.equal(grant.wallet_id, c.wallet_id);
      assert.equal((await dd.transactions.get(transaction_id)).reason, "beta tester");
      assert.equal((await dd.wallets.balance(c.wallet_id)).available, "12.5");
      await refused(
        () => dd.gifts.give(c.id, { amount: "1", expires_at: iso(now - HOUR) }),
        "invalid_argument",
        400,
      );
      await refused(() => dd.gifts.give("cus_00000000000000000000000000", { amount: "1" }), "not_found", 404);
    });

    test("a code: each customer claims once, N uses exactly, zero cost basis, scoped and expiring", async () => {
      const code = await dd.gifts.createCode({
        code: "WELCOME3",
        amount: "5",
        max_uses: 3,
        expires_in_days: 10,
        scope: ["chat.*"],
      });
      assert.equal(code.uses, 0);
      await refused(() => dd.gifts.createCode({ code: "WELCOME3", amount: "1" }), "already_exists");
      const [a, b, c, d] = [await customer(), await customer(), await customer(), await customer()];
      const claim = await dd.gifts.claim({ code: "WELCOME3", customer_id: a.id });
      assert.equal(claim.gift_code_id, code.id);
      assert.equal(claim.grant.source, "gift");
      assert.equal(claim.grant.cost_basis, "0");
      assert.equal(claim.grant.amount, "5");
      assert.deepEqual(claim.grant.scope, ["chat.*"]);
      assert.equal(claim.grant.expires_at, iso(now + 10 * DAY));
      assert.equal(claim.grant.wallet_id, a.wallet_id);
      // Claimed twice: refused, nothing changes.
      await refused(() => dd.gifts.claim({ code: "WELCOME3", customer_id: a.id }), "already_exists");
      await dd.gifts.claim({ code: "WELCOME3", customer_id: b.id });
      await dd.gifts.claim({ code: "WELCOME3", customer_id: c.id });
      await refused(() => dd.gifts.claim({ code: "WELCOME3", customer_id: d.id }), "gift_code_exhausted");
      await refused(() => dd.gifts.claim({ code: "NO-SUCH-CODE", customer_id: d.id }), "not_found", 404);
      const listed = (await dd.gifts.listCodes()).data.find((x) => x.id === code.id);
      assert.equal(listed?.uses, 3);
      assert.equal((await dd.wallets.balance(d.wallet_id)).available, "0");
      for (const x of [a, b, c]) assert.equal((await dd.wallets.balance(x.wallet_id)).available, "5");
    });

    test("a claim at or after the code's end is refused and changes nothing", async () => {
      await dd.gifts.createCode({ code: "SPRING", amount: "2", max_uses: 10, ends_at: iso(now + HOUR) });
      const early = await customer();
      await dd.gifts.claim({ code: "SPRING", customer_id: early.id });
      now += 2 * HOUR;
      const late = await customer();
      await refused(() => dd.gifts.claim({ code: "SPRING", customer_id: late.id }), "gift_code_ended");
      assert.equal((await dd.gifts.listCodes()).data.find((x) => x.code === "SPRING")?.uses, 1);
      await refused(
        () => dd.gifts.createCode({ code: "PAST", amount: "1", ends_at: iso(now - HOUR) }),
        "invalid_argument",
        400,
      );
    });

    test("concurrent claims: exactly N succeed, and one customer's concurrent claims succeed once", async () => {
      await dd.gifts.createCode({ code: "RUSH", amount: "1", max_uses: 5 });
      const customers = await Promise.all(Array.from({ length: 12 }, () => customer()));
      const outcomes = await Promise.allSettled(
        customers.map((c) => dd.gifts.claim({ code: "RUSH", customer_id: c.id })),
      );
      const won = outcomes.filter((o) => o.status === "fulfilled").length;
      const lost = outcomes.filter(
        (o) => o.status === "rejected" && (o.reason as DrawdownError).code === "gift_code_exhausted",
      ).length;
      assert.deepEqual([won, lost], [5, 7]);
      assert.equal((await dd.gifts.listCodes()).data.find((x) => x.code === "RUSH")?.uses, 5);

      await dd.gifts.createCode({ code: "TWICE", amount: "1", max_uses: 10 });
      const one = await customer();
      const again = await Promise.allSettled(
        Array.from({ length: 6 }, () => dd.gifts.claim({ code: "TWICE", customer_id: one.id })),
      );
      assert.equal(again.filter((o) => o.status === "fulfilled").length, 1);
      assert.ok(
        again.every((o) => o.status === "fulfilled" || (o.reason as DrawdownError).code === "already_exists"),
      );
      assert.equal((await dd.wallets.balance(one.wallet_id)).available, "1");
      const { rows } = await server.store.db.query(
        "SELECT code, count(*)::int AS n FROM gift_claims c JOIN gift_codes g ON g.tenant_id = c.tenant_id AND g.id = c.code_id WHERE g.code IN ('RUSH', 'TWICE') GROUP BY code ORDER BY code",
      );
      assert.deepEqual(
        rows.map((r) => [r.code, Number(r.n)]),
        [
          ["RUSH", 5],
          ["TWICE", 1],
        ],
      );
    });

    test("a referral grants promo credits to both, once per referred customer", async () => {
      const referrer = await customer();
      const newcomer = await customer();
      const r = await dd.gifts.refer(newcomer.id, {
        referrer_customer_id: referrer.id,
        amount: "5",
        referrer_amount: "2",
        expires_at: iso(now + 90 * DAY),
      });
      assert.equal(r.grant.source, "promo");
      assert.equal(r.grant.cost_basis, "0");
      assert.equal(r.grant.wallet_id, newcomer.wallet_id);
      assert.equal(r.referrer_grant?.wallet_id, referrer.wallet_id);
      assert.equal(r.referrer_grant?.amount, "2");
      assert.equal(r.grant.expires_at, iso(now + 90 * DAY));
      await refused(
        () => dd.gifts.refer(newcomer.id, { referrer_customer_id: referrer.id, amount: "5" }),
        "already_exists",
      );
      await refused(
        () => dd.gifts.refer(referrer.id, { referrer_customer_id: referrer.id, amount: "5" }),
        "invalid_argument",
        400,
      );
      // Both grants or neither: a referrer grant that is refused takes the referred one back.
      const other = await customer();
      await refused(
        () =>
          dd.gifts.refer(other.id, {
            referrer_customer_id: referrer.id,
            amount: "5",
            referrer_amount: "999999999999999999",
          }),
        "invalid_amount",
        400,
      );
      assert.equal((await dd.wallets.balance(other.wallet_id)).available, "0");
      assert.equal((await dd.wallets.balance(referrer.wallet_id)).available, "2");
    });

    test("the gift report: given, used, and whether the customer bought credits afterwards", async () => {
      const buyer = await customer();
      const idle = await customer();
      await dd.gifts.give(buyer.id, { amount: "10" });
      await dd.gifts.give(idle.id, { amount: "4" });
      await dd.adjustments.debit(buyer.wallet_id, { amount: "3", reason: "used" });
      now += 60_000;
      await dd.grants.create({
        wallet_id: buyer.wallet_id,
        amount: "100",
        source: "purchase",
        cost_basis: "0.01",
        currency: "USD",
      });
      const mine = await dd.reports.gifts({ customer_id: buyer.id });
      assert.deepEqual(
        mine.rows.map((r) => [r.gifts, r.given, r.used, r.bought_after]),
        [[1, "10", "3", true]],
      );
      const all = await dd.reports.gifts();
      const row = all.rows.find((r) => r.customer_id === idle.id);
      assert.deepEqual([row?.given, row?.used, row?.bought_after], ["4", "0", false]);
      assert.ok(all.totals.customers >= 2);
      assert.ok(all.totals.bought_after >= 1);
    });

    test("the ledger reconciles, every gift route was answered, every response matched its schema", async () => {
      assert.equal((await dd.reconcile()).ok, true);
      assert.deepEqual(log.violations, []);
      const unanswered = GIFT_ROUTES.filter((r) => !(log.seen.get(r.operationId) ?? []).some((s) => s < 300));
      assert.deepEqual(
        unanswered.map((r) => `${r.method} ${r.url}`),
        [],
      );
    });
  });
}
