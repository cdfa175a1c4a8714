import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, Plan, PlanCreateParams, Subscription } from "@drawdown/sdk";
import { LIFECYCLE_ROUTES } from "../src/lifecycle-routes.js";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Plans and subscriptions through the SDK over HTTP, on every backend, with the test clock:
 * monthly renewals, capped and declining rollover, per-seat proration and cancel. Each
 * scenario runs on fresh test tenants three times: advancing day by day, checkpoint by
 * checkpoint, and in as few steps as possible; every run must see the same balances at the
 * checkpoints it visits and end with the same journal, each period renewed exactly once
 * (invariant 7), and reconcile clean. Every response is checked against its route's schema
 * with TypeBox's Value.Check (support/contract.ts).
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();
/** Just after the start of each monthly period after the first (April to July 2026). */
const MONTHS = [
  Date.parse("2026-04-01T00:00:00.000Z"),
  Date.parse("2026-05-01T00:00:00.000Z"),
  Date.parse("2026-06-01T00:00:00.000Z"),
  Date.parse("2026-07-01T00:00:00.000Z"),
].map((t) => t + HOUR);

/** What a scenario step sees: the tenant's client, its customer, subscription and plan. */
interface Run {
  readonly dd: Drawdown;
  readonly customer: Customer;
  readonly plan: Plan;
  subscription: Subscription;
}

/** A point in a scenario's time: advance to `at`, then act, then the balance must be `balance`. */
interface Checkpoint {
  readonly at: number;
  readonly act?: (r: Run) => Promise<void>;
  readonly balance: string;
  /** The subscription's `current_period` there. */
  readonly period?: number;
}

interface Scenario {
  readonly plan: PlanCreateParams;
  readonly seats?: number;
  /** Right after subscribing (at T0), then the balance must be `balance`. */
  readonly start?: (r: Run) => Promise<void>;
  readonly balance: string;
  readonly checkpoints: readonly Checkpoint[];
}

type Mode = "day by day" | "checkpoint by checkpoint" | "fewest steps";
const MODES: readonly Mode[] = ["day by day", "checkpoint by checkpoint", "fewest steps"];

for (const backend of backends()) {
  describe(`plans and subscriptions through the SDK (${backend.name})`, () => {
    /** The server's own clock never moves: only each tenant's test clock makes time pass. */
    const now = T0;
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = connect(server.key);
    });
    after(async () => {
      await server?.close();
    });

    const balanceOf = async (r: Run) => (await r.dd.wallets.balance(r.customer.wallet_id)).available;

    /** The customer's journal without ids: kind, time, reason and the amounts per account. */
    const journalOf = async (r: Run) => {
      const txns = [];
      for await (const t of r.dd.transactions.listAll({ customer_id: r.customer.id, limit: 200 }))
        txns.push(t);
      return txns
        .map((t) => ({
          kind: t.kind,
          posted_at: t.posted_at,
          reason: t.reason,
          entries: t.entries.map((e) => `${e.account} ${e.amount}`).sort(),
        }))
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    };

    /** Each period's renewal grant: its period index, once each. */
    const renewalsOf = async (r: Run) => {
      const grants = [];
      for await (const g of r.dd.grants.listAll({ customer_id: r.customer.id, limit: 200 })) grants.push(g);
      return grants
        .filter((g) => g.metadata.lifecycle === "renewal")
        .map((g) => {
          assert.equal(g.metadata.subscription_id, r.subscription.id);
          assert.equal(g.source, "plan");
          return Number(g.metadata.period_index);
        })
        .sort((a, b) => a - b);
    };

    /** Moves the tenant's clock to `to`: in one step, or day by day. */
    async function advance(r: Run, to: number, dayByDay: boolean): Promise<void> {
      const clock = Date.parse((await r.dd.testClock.get()).now);
      if (dayByDay) for (let t = clock + DAY; t < to; t += DAY) await r.dd.testClock.advance({ to: iso(t) });
      if (to > clock) await r.dd.testClock.advance({ to: iso(to) });
    }

    /** Runs a scenario on a fresh test tenant; returns its journal. */
    async function play(
      s: Scenario,
      mode: Mode,
      name: string,
    ): Promise<{ journal: unknown; renewals: number[] }> {
      const tenant = connect((await server.newTenant(`${name} (${mode})`)).key);
      const plan = await tenant.plans.create(s.plan);
      const customer = await tenant.customers.create({ kind: "organization", name });
      const subscription = await tenant.subscriptions.create({
        customer_id: customer.id,
        plan_id: plan.id,
        ...(s.seats === undefined ? {} : { seats: s.seats }),
      });
      assert.equal(subscription.status, "active");
      assert.equal(subscription.current_period, 0);
      assert.equal(subscription.started_at, iso(T0));
      const r: Run = { dd: tenant, customer, plan, subscription };
      await s.start?.(r);
      assert.equal(await balanceOf(r), s.balance, `${mode}: the first period's balance`);
      const last = s.checkpoints.length - 1;
      for (const [i, c] of s.checkpoints.entries()) {
        // The fewest steps skip every checkpoint with nothing to do but the last.
        if (mode === "fewest steps" && !c.act && i !== last) continue;
        await advance(r, c.at, mode === "day by day");
        await c.act?.(r);
        r.subscription = await tenant.subscriptions.get(subscription.id);
        assert.equal(await balanceOf(r), c.balance, `${mode}: the balance at ${iso(c.at)}`);
        if (c.period !== undefined)
          assert.equal(r.subscription.current_period, c.period, `${mode}: the period`);
      }
      const renewals = await renewalsOf(r);
      // Each period renewed exactly once, in order: 0, 1, …, current_period.
      if (r.subscription.status === "active")
        assert.deepEqual(
          renewals,
          Array.from({ length: r.subscription.current_period + 1 }, (_, i) => i),
        );
      const report = await tenant.reconcile();
      assert.equal(report.ok, true, JSON.stringify(report));
      return { journal: await journalOf(r), renewals };
    }

    /** The scenario in each mode: the same balances, renewals and journal whatever the steps. */
    async function scenario(name: string, s: Scenario): Promise<void> {
      const runs = [];
      for (const mode of MODES) runs.push(await play(s, mode, name));
      for (const r of runs.slice(1)) {
        assert.deepEqual(r.renewals, runs[0]!.renewals, "the same renewals");
        assert.deepEqual(r.journal, runs[0]!.journal, "the same journal, in small steps or big ones");
      }
    }

    const monthly = { unit: "month", count: 1 } as const;
    const use = (amount: string) => async (r: Run) => {
      await r.dd.adjustments.debit(r.customer.wallet_id, { amount, reason: "usage" });
    };

    test("a plan at $20 a month that includes 25 credits renews monthly, once per period", async () => {
      const plan = await dd.plans.create({
        name: "Pro",
        base_fee: { amount: "20", currency: "USD" },
        interval: monthly,
        allotment: "25",
      });
      assert.deepEqual(
        { ...plan, id: "", created_at: "" },
        {
          object: "plan",
          id: "",
          name: "Pro",
          base_fee: { amount: "20", currency: "USD" },
          interval: { unit: "month", count: 1 },
          allotment: "25",
          per_seat: false,
          rollover: { kind: "none" },
          expiry: { kind: "period_end" },
          on_cancel: "keep_until_period_end",
          allocation: { mode: "customer" },
          overage: null,
          created_at: "",
        },
      );
      assert.deepEqual(await dd.plans.get(plan.id), plan);
      assert.deepEqual((await dd.plans.list()).data, [plan]);
      await fails(
        dd.plans.create({
          name: "Pro",
          base_fee: { amount: "30", currency: "USD" },
          interval: monthly,
          allotment: "50",
        }),
        "already_exists",
        409,
      );

      await scenario("Pro", {
        plan: {
          name: "Pro",
          base_fee: { amount: "20", currency: "USD" },
          interval: monthly,
          allotment: "25",
        },
        start: use("5"),
        // Unused credits expire at period end (no rollover): each period starts at 25.
        balance: "20",
        checkpoints: [
          { at: T0 + 10 * DAY, balance: "20", period: 0 },
          { at: MONTHS[0]!, balance: "25", period: 1 },
          { at: MONTHS[1]!, act: use("10"), balance: "15", period: 2 },
          { at: MONTHS[2]!, balance: "25", period: 3 },
          { at: MONTHS[3]!, balance: "25", period: 4 },
        ],
      });
    });

    test("rollover of up to two months' worth, capped at 3x the allotment", async () => {
      await scenario("Capped", {
        plan: {
          name: "Capped",
          base_fee: { amount: "20", currency: "USD" },
          interval: monthly,
          allotment: "25",
          rollover: { kind: "capped", cap: { multiple_of_allotment: "3" }, max_periods: 2 },
        },
        start: use("5"),
        balance: "20",
        // 20 carried + 25; + 25 carried + 25; the first 20 is past 2 periods; capped at 75.
        checkpoints: [
          { at: MONTHS[0]!, balance: "45", period: 1 },
          { at: MONTHS[1]!, balance: "70", period: 2 },
          { at: MONTHS[2]!, balance: "75", period: 3 },
          { at: MONTHS[3]!, balance: "75", period: 4 },
        ],
      });
    });

    test("a declining 100/50/0 rollover", async () => {
      await scenario("Declining", {
        plan: {
          name: "Declining",
          base_fee: { amount: "0", currency: "USD" },
          interval: monthly,
          allotment: 100_000_000_000n,
          rollover: { kind: "declining", schedule: [100, 50, 0] },
        },
        balance: "100",
        // Nothing used: 100 + 100 carried; then 100 + 100 + 50; then 100 + 100 + 50 + 0.
        checkpoints: [
          { at: MONTHS[0]!, balance: "200", period: 1 },
          { at: MONTHS[1]!, balance: "250", period: 2 },
          { at: MONTHS[2]!, balance: "250", period: 3 },
        ],
      });
    });

    test("a per-seat plan: a mid-period seat increase is granted prorated", async () => {
      const seats = (n: number) => async (r: Run) => {
        const s = await r.dd.subscriptions.changeSeats(r.subscription.id, { seats: n });
        assert.equal(s.seats, n);
      };
      await scenario("Per seat", {
        plan: {
          name: "Per seat",
          base_fee: { amount: "10", currency: "USD" },
          interval: { unit: "day", count: 10 },
          allotment: "10",
          per_seat: true,
        },
        seats: 2,
        balance: "20",
        checkpoints: [
          // Half the period left: the third seat gets half its 10 credits.
          { at: T0 + 5 * DAY, act: seats(3), balance: "25", period: 0 },
          // Removing a seat takes nothing back; re-adding it in the same period grants nothing.
          { at: T0 + 6 * DAY, act: seats(1), balance: "25", period: 0 },
          { at: T0 + 7 * DAY, act: seats(3), balance: "25", period: 0 },
          // The next period grants the current 3 seats (the last period's credits expired).
          { at: T0 + 11 * DAY, balance: "30", period: 1 },
          { at: T0 + 21 * DAY, balance: "30", period: 2 },
        ],
      });
    });

    const tenDays = { unit: "day", count: 10 } as const;
    /** A plan on the tenant of `r`, same shape as the scenarios' (every 10 days). */
    const planOf = (r: Run, name: string, allotment: string, extra: Partial<PlanCreateParams> = {}) =>
      r.dd.plans.create({
        name,
        base_fee: { amount: "10", currency: "USD" },
        interval: tenDays,
        allotment,
        ...extra,
      });
    const planNamed = async (r: Run, name: string) =>
      (await r.dd.plans.list()).data.find((p) => p.name === name)!;

    test("an upgrade mid-period grants the prorated difference; the next period grants the new allotment", async () => {
      const upgrade = async (r: Run) => {
        const plus = await planOf(r, "Plus", "30");
        const yearly = await planOf(r, "Yearly", "300", { interval: { unit: "year", count: 1 } });
        // Another interval is refused (cancel and subscribe instead); so is the plan it is on.
        await fails(
          r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: yearly.id }),
          "invalid_argument",
          400,
        );
        await fails(
          r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: r.plan.id }),
          "invalid_argument",
          400,
        );
        const s = await r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: plus.id });
        assert.equal(s.plan_id, plus.id, "an upgrade is in force at once");
        assert.equal(s.pending_plan_id, null);
        assert.equal(s.current_period, 0);
      };
      const onPlus = async (r: Run) => {
        const s = await r.dd.subscriptions.get(r.subscription.id);
        assert.equal(s.plan_id, (await planNamed(r, "Plus")).id);
        assert.equal(s.pending_plan_id, null);
      };
      await scenario("Upgrade", {
        plan: {
          name: "Basic",
          base_fee: { amount: "10", currency: "USD" },
          interval: tenDays,
          allotment: "10",
        },
        balance: "10",
        checkpoints: [
          // Half the period left: half of the 20 more credits Plus includes.
          { at: T0 + 5 * DAY, act: upgrade, balance: "20", period: 0 },
          // The next period renews under Plus (the last period's credits expired).
          { at: T0 + 11 * DAY, act: onPlus, balance: "30", period: 1 },
          { at: T0 + 21 * DAY, balance: "30", period: 2 },
        ],
      });
    });

    test("a downgrade keeps the old allotment to the period end, which rolls over under the old plan", async () => {
      const downgrade = async (r: Run) => {
        const basic = await planOf(r, "Basic", "10");
        const s = await r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: basic.id });
        assert.equal(s.plan_id, r.plan.id, "a downgrade waits for the period end");
        assert.equal(s.pending_plan_id, basic.id);
        // Changing back to the current plan withdraws it; then downgrade again.
        const back = await r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: r.plan.id });
        assert.deepEqual([back.plan_id, back.pending_plan_id], [r.plan.id, null]);
        const again = await r.dd.subscriptions.changePlan(r.subscription.id, { plan_id: basic.id });
        assert.deepEqual([again.plan_id, again.pending_plan_id], [r.plan.id, basic.id]);
      };
      const onBasic = async (r: Run) => {
        const s = await r.dd.subscriptions.get(r.subscription.id);
        assert.equal(s.plan_id, (await planNamed(r, "Basic")).id, "in force from the renewal");
        assert.equal(s.pending_plan_id, null);
      };
      await scenario("Downgrade", {
        plan: {
          name: "Plus",
          base_fee: { amount: "30", currency: "USD" },
          interval: tenDays,
          allotment: "30",
          rollover: { kind: "full" },
        },
        start: use("5"),
        balance: "25",
        checkpoints: [
          // Nothing granted, nothing taken back.
          { at: T0 + 5 * DAY, act: downgrade, balance: "25", period: 0 },
          // Plus's full rollover carries the 25; Basic grants its 10.
          { at: T0 + 11 * DAY, act: onBasic, balance: "35", period: 1 },
          // Basic carries nothing: its 10 only.
          { at: T0 + 21 * DAY, balance: "10", period: 2 },
        ],
      });
    });

    test("cancel keeps the credits to the period end, then expires them; nothing renews after", async () => {
      const cancel = async (r: Run) => {
        const s = await r.dd.subscriptions.cancel(r.subscription.id);
        assert.equal(s.status, "canceled");
        assert.ok(s.canceled_at);
        await fails(r.dd.subscriptions.cancel(r.subscription.id), "invalid_argument", 400);
        await fails(r.dd.subscriptions.changeSeats(r.subscription.id, { seats: 2 }), "invalid_argument", 400);
      };
      const ended = async (r: Run) => {
        const s = await r.dd.subscriptions.get(r.subscription.id);
        assert.equal(s.next_renewal_at, null, "ended");
        assert.deepEqual(await renewalsOf(r), [0, 1], "no period renewed after the cancel");
        const { data } = await r.dd.subscriptions.list(r.customer.id);
        assert.deepEqual(data, [s]);
      };
      await scenario("Cancel", {
        plan: {
          name: "Cancelable",
          base_fee: { amount: "20", currency: "USD" },
          interval: monthly,
          allotment: "10",
          rollover: { kind: "full" },
        },
        start: use("4"),
        balance: "6",
        checkpoints: [
          // Full rollover: 6 carried + 10.
          { at: MONTHS[0]!, balance: "16", period: 1 },
          { at: MONTHS[0]! + 10 * DAY, act: cancel, balance: "16", period: 1 },
          // The period end closes it: every credit expires, none carried.
          { at: MONTHS[1]!, balance: "0", period: 1 },
          { at: MONTHS[2]!, act: ended, balance: "0", period: 1 },
        ],
      });
    });

    test("reads: a customer's subscriptions, one by id; a restricted key sees its own customer's", async () => {
      const plan = (await dd.plans.list()).data[0]!;
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const beta = await dd.customers.create({ kind: "individual", name: "Beta" });
      const sub = await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id });
      await fails(dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id }), "already_exists", 409);
      await fails(
        dd.subscriptions.create({ customer_id: beta.id, plan_id: plan.id, start_at: iso(T0 - DAY) }),
        "invalid_argument",
        400,
      );
      assert.deepEqual(await dd.subscriptions.get(sub.id), sub);
      assert.deepEqual((await dd.subscriptions.list(acme.id)).data, [sub]);
      assert.deepEqual((await dd.subscriptions.list(beta.id)).data, []);
      const key = await dd.apiKeys.create({ kind: "restricted", name: "portal", customer_id: acme.id });
      const portal = connect(key.secret!);
      assert.deepEqual(await portal.subscriptions.get(sub.id), sub);
      assert.deepEqual((await portal.subscriptions.list(acme.id)).data, [sub]);
      await fails(portal.subscriptions.list(beta.id), "not_found", 404);
      await fails(portal.subscriptions.cancel(sub.id), "forbidden", 403);
      await fails(portal.plans.list(), "forbidden", 403);
      // Once canceled, the customer may subscribe again (one active subscription at a time).
      await dd.subscriptions.cancel(sub.id);
      // A minute later (ids made in the same millisecond do not sort by creation).
      await dd.testClock.advance({ seconds: 60 });
      const again = await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id, seats: 2 });
      assert.equal(again.status, "active");
      assert.deepEqual(
        (await dd.subscriptions.list(acme.id)).data.map((s) => [s.id, s.status]),
        [
          [sub.id, "canceled"],
          [again.id, "active"],
        ],
      );
      // Member allocations read the active subscription's period (this plan allots to the
      // customer: a member gets nothing of its own); the portal reads its customer's only.
      const ann = await dd.subjects.create(acme.id, { kind: "member", name: "Ann" });
      const wallet = await dd.wallets.create({ customer_id: acme.id, member_id: ann.id });
      const { data: allocations } = await portal.subscriptions.memberAllocations(acme.id);
      assert.deepEqual(
        allocations.map((a) => [
          a.wallet_id,
          a.subscription_id,
          a.period?.index,
          a.pool_share_percent,
          a.allocated,
        ]),
        [[wallet.id, again.id, 0, null, "0"]],
      );
      await fails(portal.subscriptions.memberAllocations(beta.id), "not_found", 404);
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("every lifecycle route was exercised and every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
      const unanswered = LIFECYCLE_ROUTES.filter(
        (r) => !(log.seen.get(r.operationId) ?? []).some((s) => s < 300),
      );
      assert.deepEqual(
        unanswered.map((r) => `${r.method} ${r.url}`),
        [],
        "lifecycle routes the tests never called successfully",
      );
    });
  });
}
