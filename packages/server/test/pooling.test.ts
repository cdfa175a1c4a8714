import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, Wallet } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Pooling and per-member allocations through the SDK over HTTP, on every backend, with the
 * test clock: a per-member plan's renewal resets every member's allocation; partial pooling
 * splits each member's allocation between its wallet and the customer's pool; a member draws
 * its own credits, then the pool; a member joining mid-period gets the rest of the period,
 * once, even when its wallet creation is retried. Every response is checked against its
 * route's schema (support/contract.ts).
 */

const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const APR = "2026-04-01T00:00:01.000Z";
const MAY = "2026-05-01T00:00:01.000Z";

for (const backend of backends()) {
  describe(`pooling through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => T0 });
    });
    after(async () => {
      await server?.close();
    });

    /** A fresh test tenant at T0 with an organization and `n` members holding wallets. */
    async function team(n: number) {
      const dd = connect((await server.newTenant(`pooling ${Math.random()}`)).key);
      await dd.testClock.advance({ to: new Date(T0).toISOString() });
      const customer = await dd.customers.create({ kind: "organization", name: "Team" });
      const members: Wallet[] = [];
      for (let i = 0; i < n; i++) members.push(await member(dd, customer));
      return { dd, customer, members };
    }

    async function member(dd: Drawdown, customer: Customer, idempotencyKey?: string): Promise<Wallet> {
      const subject = await dd.subjects.create(customer.id, { kind: "member" });
      return dd.wallets.create(
        { customer_id: customer.id, member_id: subject.id },
        idempotencyKey ? { idempotencyKey } : {},
      );
    }

    const plan = (dd: Drawdown, pool_share_percent: number, extra: object = {}) =>
      dd.plans.create({
        name: `Per member ${pool_share_percent}%`,
        base_fee: { amount: "0", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
        allocation: { mode: "per_member", pool_share_percent },
        ...extra,
      });

    const available = async (dd: Drawdown, walletId: string) =>
      (await dd.wallets.balance(walletId)).available;
    const all = async (dd: Drawdown, customer: Customer, members: Wallet[]) => ({
      members: await Promise.all(members.map((m) => available(dd, m.id))),
      pool: await available(dd, customer.wallet_id),
    });

    test("a per-member plan: each member's 25 resets every month; the plan shows its allocation", async () => {
      const { dd, customer, members } = await team(2);
      const p = await plan(dd, 0);
      assert.deepEqual(p.allocation, { mode: "per_member", pool_share_percent: 0 });
      assert.deepEqual((await dd.plans.get(p.id)).allocation, p.allocation);
      await dd.subscriptions.create({ customer_id: customer.id, plan_id: p.id });
      assert.deepEqual(await all(dd, customer, members), { members: ["25", "25"], pool: "0" });
      await dd.adjustments.debit(members[0]!.id, { amount: "20", reason: "usage" });
      // 30 is more than the member's own 5 and an empty pool: refused, nothing drawn.
      await fails(
        dd.adjustments.debit(members[1]!.id, { amount: "30", reason: "usage" }),
        "insufficient_credits",
      );
      assert.deepEqual(await all(dd, customer, members), { members: ["5", "25"], pool: "0" });
      await dd.testClock.advance({ to: APR });
      assert.deepEqual(await all(dd, customer, members), { members: ["25", "25"], pool: "0" });
      await dd.testClock.advance({ to: MAY });
      assert.deepEqual(await all(dd, customer, members), { members: ["25", "25"], pool: "0" });
      // One personal plan grant per member and period: 2 members × 3 periods, none to the pool.
      const grants = [];
      for await (const g of dd.grants.listAll({ customer_id: customer.id })) grants.push(g);
      const personal = grants.filter((g) => g.metadata.allocation === "personal");
      assert.equal(personal.length, 6);
      assert.deepEqual(
        new Set(personal.map((g) => `${g.wallet_id}:${g.metadata.period_index}`)).size,
        6,
        "each member once per period",
      );
      assert.ok(grants.every((g) => g.wallet_id !== customer.wallet_id));
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("20% partial pooling: a member spends its own 20, then the pool; the balance shows both", async () => {
      const { dd, customer, members } = await team(3);
      const p = await plan(dd, 20);
      await dd.subscriptions.create({ customer_id: customer.id, plan_id: p.id });
      assert.deepEqual(await all(dd, customer, members), { members: ["20", "20", "20"], pool: "15" });
      const b = await dd.wallets.balance(members[0]!.id);
      assert.deepEqual(
        [b.available, b.pool, b.spendable],
        ["20", { wallet_id: customer.wallet_id, available: "15" }, "35"],
      );
      const poolBalance = await dd.wallets.balance(customer.wallet_id);
      assert.deepEqual([poolBalance.pool, poolBalance.spendable], [null, "15"]);

      const tx = await dd.adjustments.debit(members[0]!.id, { amount: "30", reason: "prototype" });
      const drawn = tx.entries
        .filter((e) => e.grant_id !== null)
        .map((e) => [e.wallet_id, e.amount])
        .sort();
      assert.deepEqual(
        drawn,
        [
          [customer.wallet_id, "-10"],
          [members[0]!.id, "-20"],
        ].sort(),
      );
      assert.deepEqual(await all(dd, customer, members), { members: ["0", "20", "20"], pool: "5" });
      const other = await dd.wallets.balance(members[1]!.id);
      assert.deepEqual([other.pool?.available, other.spendable], ["5", "25"], "the pool is shared");
      // 26 is more than 20 own + 5 pooled: refused, nothing drawn.
      await fails(
        dd.adjustments.debit(members[1]!.id, { amount: "26", reason: "x" }),
        "insufficient_credits",
      );
      assert.deepEqual(await all(dd, customer, members), { members: ["0", "20", "20"], pool: "5" });

      await dd.testClock.advance({ to: APR });
      assert.deepEqual(await all(dd, customer, members), { members: ["20", "20", "20"], pool: "15" });
      const poolGrants = [];
      for await (const g of dd.grants.listAll({ wallet_id: customer.wallet_id })) poolGrants.push(g);
      assert.deepEqual(
        poolGrants
          .map((g) => [g.metadata.allocation, g.metadata.member_count, g.metadata.period_index, g.amount])
          .sort((a, b) => Number(a[2]) - Number(b[2])),
        [
          ["pool_share", "3", "0", "15"],
          ["pool_share", "3", "1", "15"],
        ],
      );
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("a member joining mid-period gets the rest of it prorated, once, even when its creation is retried", async () => {
      const { dd, customer, members } = await team(1);
      const p = await plan(dd, 20, { allotment: "31" });
      await dd.subscriptions.create({ customer_id: customer.id, plan_id: p.id });
      // March 17: 15 of March's 31 days left: 15 credits, 12 personal and 3 pooled.
      await dd.testClock.advance({ to: "2026-03-17T00:00:00.000Z" });
      const subject = await dd.subjects.create(customer.id, { kind: "member" });
      const body = { customer_id: customer.id, member_id: subject.id };
      const late = await dd.wallets.create(body, { idempotencyKey: "join-1" });
      assert.deepEqual(await dd.wallets.create(body, { idempotencyKey: "join-1" }), late, "replayed");
      await fails(dd.wallets.create(body), "already_exists");
      assert.equal(await available(dd, late.id), "12");
      assert.equal(
        await available(dd, customer.wallet_id),
        "9.2",
        "6.2 from the first member, 3 from the new one",
      );
      const joined = [];
      for await (const g of dd.grants.listAll({ customer_id: customer.id })) joined.push(g);
      const added = joined.filter((g) => g.metadata.lifecycle === "member_added");
      assert.deepEqual(
        added.map((g) => [g.wallet_id, g.metadata.allocation, g.metadata.member_wallet_id, g.amount]).sort(),
        [
          [late.id, "personal", late.id, "12"],
          [customer.wallet_id, "pool_share", late.id, "3"],
        ].sort(),
      );
      // April: both members receive a whole allocation.
      await dd.testClock.advance({ to: APR });
      assert.deepEqual(await all(dd, customer, [...members, late]), {
        members: ["24.8", "24.8"],
        pool: "12.4",
      });
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("a customer plan still grants to the pool; a member's balance shows the pool it draws after its own", async () => {
      const { dd, customer, members } = await team(1);
      const p = await dd.plans.create({
        name: "Customer plan",
        base_fee: { amount: "20", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
      });
      assert.deepEqual(p.allocation, { mode: "customer" });
      await dd.subscriptions.create({ customer_id: customer.id, plan_id: p.id });
      const b = await dd.wallets.balance(members[0]!.id);
      assert.deepEqual([b.available, b.pool?.available, b.spendable], ["0", "25", "25"]);
      // A member joining later gets nothing of its own: the plan allots to the customer.
      const late = await member(dd, customer);
      assert.deepEqual([await available(dd, late.id), await available(dd, customer.wallet_id)], ["0", "25"]);
    });

    test("member allocations: each member's allocation this period, what remains of it and its pool share; paged; the customer's own restricted key reads them, another's does not", async () => {
      const { dd, customer, members } = await team(3);
      const ids = members.map((m) => m.id).sort();
      const rows = async (client: Drawdown = dd) => {
        const out = [];
        for await (const m of client.subscriptions.memberAllocationsAll(customer.id, { limit: 2 }))
          out.push(m);
        return out;
      };
      // No subscription: every member wallet, nothing allocated.
      const before = await rows();
      assert.deepEqual(
        before.map((m) => [m.wallet_id, m.subscription_id, m.period, m.allocated, m.remaining, m.reason]),
        ids.map((id) => [id, null, null, "0", "0", null]),
      );
      const p = await plan(dd, 20);
      const sub = await dd.subscriptions.create({ customer_id: customer.id, plan_id: p.id });
      await dd.adjustments.debit(members[0]!.id, { amount: "8", reason: "usage" });
      // Pages of two, in wallet id order.
      const first = await dd.subscriptions.memberAllocations(customer.id, { limit: 2 });
      assert.equal(first.data.length, 2);
      assert.notEqual(first.next_cursor, null);
      const second = await dd.subscriptions.memberAllocations(customer.id, {
        limit: 2,
        cursor: first.next_cursor!,
      });
      assert.deepEqual([second.data.length, second.next_cursor], [1, null]);
      const march = [...first.data, ...second.data];
      assert.deepEqual(
        march.map((m) => m.wallet_id),
        ids,
      );
      const period = { index: 0, starts_at: "2026-03-01T00:00:00.000Z", ends_at: "2026-04-01T00:00:00.000Z" };
      for (const m of march) {
        const spent = m.wallet_id === members[0]!.id;
        assert.deepEqual(
          [
            m.subscription_id,
            m.period,
            m.pool_share_percent,
            m.allocated,
            m.personal,
            m.pool_share,
            m.remaining,
          ],
          [sub.id, period, 20, "25", "20", "5", spent ? "12" : "20"],
        );
        assert.equal(m.reason, "renewal");
        assert.equal(m.member_id, members.find((w) => w.id === m.wallet_id)!.member_id);
        assert.equal((await dd.grants.get(m.personal_grant_id!)).wallet_id, m.wallet_id);
        assert.equal((await dd.grants.get(m.pool_grant_id!)).wallet_id, customer.wallet_id);
      }
      // A member joining mid-period: its allocation prorated to the 16 of 31 days left, split 80/20.
      await dd.testClock.advance({ to: "2026-03-16T00:00:00.000Z" });
      const late = await member(dd, customer);
      const joined = (await rows()).find((m) => m.wallet_id === late.id)!;
      assert.deepEqual(
        [joined.reason, joined.allocated, joined.personal, joined.pool_share, joined.remaining],
        ["member_added", "12.903225806", "10.322580645", "2.580645161", "10.322580645"],
      );
      // April: a new period, every member's allocation renewed whole.
      await dd.testClock.advance({ to: APR });
      const april = await rows();
      assert.equal(april.length, 4);
      for (const m of april)
        assert.deepEqual(
          [m.period?.index, m.reason, m.allocated, m.remaining],
          [1, "renewal", "25", "20"],
          m.wallet_id,
        );
      // The customer's own restricted key reads them; another customer's key finds no such customer.
      const mine = connect(
        (await dd.apiKeys.create({ kind: "restricted", name: "team page", customer_id: customer.id }))
          .secret!,
      );
      assert.deepEqual(await rows(mine), april);
      const stranger = await dd.customers.create({ kind: "organization", name: "Stranger" });
      const theirs = connect(
        (await dd.apiKeys.create({ kind: "restricted", name: "stranger", customer_id: stranger.id })).secret!,
      );
      await fails(theirs.subscriptions.memberAllocations(customer.id), "not_found", 404);
      await fails(dd.subscriptions.memberAllocations("cus_00000000000000000000000000"), "not_found", 404);
      await fails(
        dd.subscriptions.memberAllocations(customer.id, { cursor: "bm9wZQ" }),
        "invalid_cursor",
        400,
      );
      // A customer plan allocates nothing per member.
      const other = await team(1);
      const flat = await other.dd.plans.create({
        name: "Customer plan",
        base_fee: { amount: "0", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "25",
      });
      const s = await other.dd.subscriptions.create({ customer_id: other.customer.id, plan_id: flat.id });
      const [only] = (await other.dd.subscriptions.memberAllocations(other.customer.id)).data;
      assert.deepEqual(
        [only?.subscription_id, only?.pool_share_percent, only?.allocated, only?.reason],
        [s.id, null, "0", null],
      );
    });

    test("every response matched its documented schema (plans with allocations, balances with the pool)", () => {
      assert.deepEqual(log.violations, []);
      for (const op of ["createPlan", "getPlan", "getBalance", "createWallet", "listMemberAllocations"])
        assert.ok(
          (log.seen.get(op) ?? []).some((s) => s < 300),
          op,
        );
    });
  });
}
