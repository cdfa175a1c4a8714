import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  credits,
  formatAmount,
  type OveragePolicyInput,
  type PlanInput,
  type PriceBookInput,
  UNIT,
  type UsageEvent,
} from "@drawdown/core";
import {
  billOverage,
  Commerce,
  clearWalletOverage,
  getOverage,
  Holds,
  IngestWriter,
  listOverageInvoices,
  Metering,
  type SqlExecutor,
  type Store,
  Subscriptions,
  setWalletOverage,
} from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";
import { authorizeAlone, okv } from "./support/helpers.js";

/**
 * Overage policies on both databases, with the test clock across renewals: a priced soft cap
 * billed at each renewal and on demand (journal to overage_receivable, invoices, reconcile
 * clean); a deficit repaid once by each renewal's grant; throttle and fair use through
 * authorize; the auto top-up tried before a denial (and `auto_top_up_failed` when it fails);
 * plan policies and the wallet's own policy's precedence.
 */

const T0 = Date.UTC(2027, 0, 10, 12);
const cr = (n: number | bigint): bigint => credits(BigInt(n));
const usd = (whole: bigint, cents = 0n): bigint => whole * UNIT + cents * 10_000_000n;

const BOOK: PriceBookInput = {
  currency: "USD",
  packs: [{ id: "small", name: "Small", credits: cr(20), price: usd(2n), expiry: { kind: "never" } }],
  tiers: [{ upTo: null, unitPrice: usd(0n, 10n) }],
};

for (const backend of backends()) {
  describe(`overage policies (${backend.name})`, () => {
    let database: TestDatabase;
    let store: Store;
    let metering: Metering;
    let writer: IngestWriter;
    let subs: Subscriptions;
    let commerce: Commerce;
    let holds: Holds;
    let seq = 0;
    before(async () => {
      database = await backend.open();
      store = database.store(() => T0);
      metering = new Metering((tenantId) => store.now(tenantId), store.newId);
      subs = new Subscriptions(store);
      commerce = new Commerce(store);
      writer = new IngestWriter(store, metering, { commerce });
      holds = new Holds(store, metering, commerce);
    });
    after(async () => {
      await database.close();
    });

    const write = <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => store.db.transaction(fn);

    /** A test tenant at T0, a card where `unit`, `cheap.*` cost 1 credit per call, and one customer. */
    async function setup() {
      const tenant = await store.createTenant("Overage", "test");
      const tenantId = tenant.id;
      okv(await store.advanceClock(tenantId, T0));
      const card = okv(await write((tx) => metering.createRateCard(tx, tenantId, "Standard")));
      okv(
        await write((tx) =>
          metering.publishRateCardVersion(tx, tenantId, card.id, null, {
            lines: [
              { id: "unit", action: "unit", quantity: "calls", rate: "1" },
              { id: "cheap", action: "cheap.*", quantity: "calls", rate: "1" },
            ],
          }),
        ),
      );
      const customer = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
      return { tenantId, customer, walletId: customer.walletId };
    }

    async function plan(tenantId: string, allotment: bigint, overage?: OveragePolicyInput) {
      const input: Omit<PlanInput, "id"> = {
        name: `plan-${++seq}`,
        baseFee: { amount: usd(20n), currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment,
        ...(overage ? { overage } : {}),
      };
      return okv(await write((tx) => subs.createPlan(tx, tenantId, input)));
    }

    async function use(tenantId: string, customerId: string, calls: number | bigint, action = "unit") {
      const event: UsageEvent = {
        id: `evt_${++seq}`,
        customerId,
        subjectId: null,
        action,
        dimensions: {},
        quantities: { calls: typeof calls === "bigint" ? calls : BigInt(calls) * UNIT },
        time: store.now(tenantId),
        status: "succeeded",
        runId: null,
        reportedCost: null,
      };
      const [r] = await writer.submit(tenantId, [{ event, fingerprint: event.id }]);
      assert.equal(r!.status, "accepted");
      return r!.status === "accepted" ? r!.charge : null;
    }

    const owed = async (tenantId: string, walletId: string) =>
      okv(await getOverage(store.db, tenantId, walletId)).owed;
    const available = async (tenantId: string, walletId: string) =>
      formatAmount((await store.balance(tenantId, walletId))!.available);
    const clean = async (tenantId: string) =>
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    const receivable = async (tenantId: string) => {
      const { rows } = await store.db.query(
        "SELECT coalesce(sum(amount), 0)::text AS s FROM journal_entries WHERE tenant_id = $1 AND account = 'overage_receivable'",
        [tenantId],
      );
      return -BigInt(String(rows[0]!.s));
    };
    const authorize = (
      tenantId: string,
      customerId: string,
      action: string,
      estimate: bigint,
      hold = false,
    ) =>
      // As the server runs it: an auto top-up is bought with no transaction open, then it runs again.
      authorizeAlone(store, holds, tenantId, {
        customerId,
        subjectId: null,
        action,
        estimate: { credits: estimate },
        holdTimeoutSeconds: hold ? 600 : null,
      });

    test("a priced soft cap from the plan: billed at each renewal and on demand, once, to overage_receivable", async () => {
      const { tenantId, customer, walletId } = await setup();
      const p = await plan(tenantId, cr(10), {
        mode: "soft_cap",
        floor: -cr(100),
        price: { amount: usd(0n, 50n), currency: "USD" },
      });
      okv(await write((tx) => subs.subscribe(tx, tenantId, { customerId: customer.id, planId: p.id })));
      const state = okv(await getOverage(store.db, tenantId, walletId));
      assert.equal(state.source, "plan");
      assert.equal(state.policy.mode, "soft_cap");
      // 25 calls on 10 credits: 15 owed.
      const charge = await use(tenantId, customer.id, 25);
      assert.equal(charge?.overdraft, cr(15));
      assert.equal(await owed(tenantId, walletId), cr(15));
      // The renewal bills the closing period: 15 credits at 0.50 = 7.50 USD; the wallet owes nothing.
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 1, 10, 13)));
      assert.equal(await owed(tenantId, walletId), 0n);
      assert.equal(await available(tenantId, walletId), "10");
      let invoices = (await listOverageInvoices(store.db, tenantId, { walletId }, { limit: 10 })).items;
      assert.deepEqual(
        invoices.map((i) => [
          i.reason,
          formatAmount(i.credits),
          formatAmount(i.amount),
          i.currency,
          i.periodStart,
        ]),
        [["renewal", "15", "7.5", "USD", null]],
      );
      assert.equal(invoices[0]!.periodEnd, Date.UTC(2027, 1, 10, 12));
      assert.equal(await receivable(tenantId), cr(15));
      // A renewal with nothing owed bills nothing; advancing again does not bill twice.
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 2, 10, 13)));
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 2, 11)));
      assert.equal(
        (await listOverageInvoices(store.db, tenantId, { walletId }, { limit: 10 })).items.length,
        1,
      );
      // On demand: 3 owed billed now, the period starting where the last invoice ended.
      await use(tenantId, customer.id, 13);
      assert.equal(await owed(tenantId, walletId), cr(3));
      const inv = okv(await write((tx) => billOverage(tx, store, tenantId, walletId)));
      assert.ok(inv);
      assert.deepEqual(
        [inv.reason, formatAmount(inv.credits), formatAmount(inv.amount)],
        ["on_demand", "3", "1.5"],
      );
      assert.equal(inv.periodStart, Date.UTC(2027, 1, 10, 12));
      assert.equal(
        okv(await write((tx) => billOverage(tx, store, tenantId, walletId))),
        null,
        "nothing owed",
      );
      invoices = (await listOverageInvoices(store.db, tenantId, { customerId: customer.id }, { limit: 10 }))
        .items;
      assert.equal(invoices.length, 2);
      assert.equal(await receivable(tenantId), cr(18));
      const tx = await store.getTransaction(tenantId, inv.transactionId);
      assert.equal(tx?.kind, "overage.bill");
      await clean(tenantId);
    });

    test("a pending hold's overdraft is billed only once settled", async () => {
      const { tenantId, customer, walletId } = await setup();
      okv(
        await write((tx) =>
          setWalletOverage(tx, tenantId, walletId, {
            mode: "soft_cap",
            floor: -cr(50),
            price: { amount: UNIT, currency: "EUR" },
          }),
        ),
      );
      const a = okv(await authorize(tenantId, customer.id, "unit", cr(20), true));
      assert.equal(a.authorization.decision, "allow");
      assert.equal(a.authorization.reason, "within_overdraft");
      assert.equal(await owed(tenantId, walletId), cr(20));
      assert.equal(okv(await write((tx) => billOverage(tx, store, tenantId, walletId))), null);
      okv(await write((tx) => holds.settle(tx, tenantId, a.hold!.id, { quantities: { calls: 12n * UNIT } })));
      assert.equal(await owed(tenantId, walletId), cr(12));
      const inv = okv(await write((tx) => billOverage(tx, store, tenantId, walletId)));
      assert.equal(inv?.credits, cr(12));
      assert.equal(inv?.amount, 12n * UNIT);
      await clean(tenantId);
    });

    test("carry deficit: each renewal's grant repays what is owed first, once", async () => {
      const { tenantId, customer, walletId } = await setup();
      const p = await plan(tenantId, cr(25), { mode: "carry_deficit", floor: -cr(40) });
      okv(await write((tx) => subs.subscribe(tx, tenantId, { customerId: customer.id, planId: p.id })));
      // 35 calls on 25 credits: 10 carried.
      await use(tenantId, customer.id, 35);
      assert.equal(await owed(tenantId, walletId), cr(10));
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 1, 10, 13)));
      assert.equal(await owed(tenantId, walletId), 0n);
      assert.equal(await available(tenantId, walletId), "15", "the grant minus the deficit");
      // A period with no deficit repays nothing.
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 2, 10, 13)));
      assert.equal(await available(tenantId, walletId), "25");
      // A deficit larger than the grant: the grant repays what it can; the rest stays owed.
      await use(tenantId, customer.id, 25 + 40);
      assert.equal(await owed(tenantId, walletId), cr(40));
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 3, 10, 13)));
      assert.equal(await owed(tenantId, walletId), cr(15));
      assert.equal(await available(tenantId, walletId), "0");
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 4, 10, 13)));
      assert.equal(await owed(tenantId, walletId), 0n);
      assert.equal(await available(tenantId, walletId), "10");
      const { rows } = await store.db.query(
        "SELECT count(*)::int AS n FROM journal_transactions WHERE tenant_id = $1 AND kind = 'overage.repay'",
        [tenantId],
      );
      assert.equal(Number(rows[0]!.n), 3, "one repayment per renewal that found a deficit");
      await clean(tenantId);
    });

    test("throttle: below the level only listed actions proceed; fair use is never denied", async () => {
      const { tenantId, customer, walletId } = await setup();
      okv(
        await write((tx) => store.createGrant(tx, tenantId, { walletId, amount: cr(30), source: "promo" })),
      );
      okv(
        await write((tx) =>
          setWalletOverage(tx, tenantId, walletId, {
            mode: "throttle",
            throttle: { level: cr(10), allowedActions: ["cheap.*"], fallbackAction: "cheap.mini" },
          }),
        ),
      );
      // 30 - 15 = 15 stays above 10: allowed.
      assert.equal(
        okv(await authorize(tenantId, customer.id, "unit", cr(15))).authorization.decision,
        "allow",
      );
      // 30 - 25 = 5 is below 10: throttled, with what is allowed.
      const t = okv(await authorize(tenantId, customer.id, "unit", cr(25), true)).authorization;
      assert.deepEqual(
        [t.decision, t.reason, t.allowedActions, t.fallbackAction, t.hold],
        ["throttle", "below_throttle_level", ["cheap.*"], "cheap.mini", null],
      );
      // A listed action proceeds by hard cap rules.
      assert.equal(
        okv(await authorize(tenantId, customer.id, "cheap.mini", cr(25))).authorization.decision,
        "allow",
      );
      assert.equal(
        okv(await authorize(tenantId, customer.id, "cheap.mini", cr(31))).authorization.decision,
        "deny",
      );
      // Usage that happened is charged by hard cap rules: no overdraft.
      const c = await use(tenantId, customer.id, 40);
      assert.equal(c?.unpaid, cr(40));
      assert.equal(await owed(tenantId, walletId), 0n);

      okv(await write((tx) => setWalletOverage(tx, tenantId, walletId, { mode: "fair_use" })));
      const f = okv(await authorize(tenantId, customer.id, "unit", cr(1_000_000), true)).authorization;
      assert.equal(f.decision, "allow");
      const c2 = await use(tenantId, customer.id, 500);
      assert.equal(c2?.unpaid, 0n);
      assert.equal(await owed(tenantId, walletId), cr(1_000_000 + 500 - 30));
      // The balance alerts still fire (exhausted).
      const { rows } = await store.db.query(
        "SELECT kind FROM alerts WHERE tenant_id = $1 AND wallet_id = $2 AND kind = 'exhausted'",
        [tenantId, walletId],
      );
      assert.ok(rows.length >= 1);
      await clean(tenantId);
    });

    test("auto top-up is tried before a denial; a declined card or a spent cap fires auto_top_up_failed and denies", async () => {
      const { tenantId, customer, walletId } = await setup();
      okv(await write((tx) => commerce.publishPriceBook(tx, tenantId, BOOK)));
      okv(await write((tx) => store.createGrant(tx, tenantId, { walletId, amount: cr(5), source: "promo" })));
      okv(
        await write((tx) =>
          commerce.setAutoTopUp(tx, tenantId, walletId, {
            threshold: cr(1),
            buy: { kind: "pack", packId: "small" },
            currency: "USD",
            monthlyCap: usd(5n),
            provider: "test",
            paymentMethod: "pm_test_ok",
          }),
        ),
      );
      // 30 needed, 5 held: two packs of 20 (4 USD) cover it, the decision is made again.
      const a = okv(await authorize(tenantId, customer.id, "unit", cr(30), true));
      assert.equal(a.authorization.decision, "allow");
      assert.equal(a.autoTopUp?.outcome, "covered");
      assert.equal(a.autoTopUp?.purchaseIds.length, 2);
      assert.equal(a.hold?.amount, cr(30));
      assert.equal(await available(tenantId, walletId), "15");
      // 1 USD left of the cap: the next pack does not fit. Denied, and the alert fires once.
      for (let i = 0; i < 2; i++) {
        const d = okv(await authorize(tenantId, customer.id, "unit", cr(100)));
        assert.equal(d.authorization.decision, "deny");
        assert.equal(d.autoTopUp?.outcome, "failed");
        assert.match(d.autoTopUp?.reason ?? "", /auto_top_up_cap_reached/);
      }
      const alerts = async () =>
        (
          await store.db.query(
            "SELECT kind, details FROM alerts WHERE tenant_id = $1 AND kind = 'auto_top_up_failed' ORDER BY fired_at, id",
            [tenantId],
          )
        ).rows;
      assert.equal((await alerts()).length, 1, "once per crossing");
      // A declined card: the purchase fails, auto top-up turns off, the alert fires again (re-armed by the new setting).
      okv(
        await write((tx) =>
          commerce.setAutoTopUp(tx, tenantId, walletId, {
            threshold: cr(1),
            buy: { kind: "amount", credits: cr(10) },
            currency: "USD",
            monthlyCap: usd(100n),
            provider: "test",
            paymentMethod: "pm_test_declined",
          }),
        ),
      );
      const d = okv(await authorize(tenantId, customer.id, "unit", cr(100)));
      assert.equal(d.authorization.decision, "deny");
      assert.equal(d.autoTopUp?.outcome, "failed");
      assert.equal((await alerts()).length, 2);
      assert.equal((await commerce.getAutoTopUp(tenantId, walletId))?.enabled, false);
      // Turned off: nothing is tried any more.
      assert.equal(okv(await authorize(tenantId, customer.id, "unit", cr(100))).autoTopUp, null);
      await clean(tenantId);
    });

    test("usage under a hard cap tries the auto top-up before recording a charge unpaid", async () => {
      const { tenantId, customer, walletId } = await setup();
      okv(await write((tx) => commerce.publishPriceBook(tx, tenantId, BOOK)));
      okv(
        await write((tx) =>
          commerce.setAutoTopUp(tx, tenantId, walletId, {
            threshold: cr(1),
            buy: { kind: "pack", packId: "small" },
            currency: "USD",
            monthlyCap: usd(2n),
            provider: "test",
            paymentMethod: "pm_test_ok",
          }),
        ),
      );
      // 15 calls, no credits: one pack of 20 is bought before the batch runs again, and the charge is paid.
      const paid = await use(tenantId, customer.id, 15);
      assert.deepEqual([paid?.drawn, paid?.unpaid], [cr(15), 0n]);
      assert.equal(await available(tenantId, walletId), "5");
      // 10 more: the cap is spent, so the charge is unpaid and auto_top_up_failed fires.
      const unpaid = await use(tenantId, customer.id, 10);
      assert.deepEqual([unpaid?.drawn, unpaid?.unpaid], [0n, cr(10)]);
      const { rows } = await store.db.query(
        "SELECT 1 FROM alerts WHERE tenant_id = $1 AND kind = 'auto_top_up_failed'",
        [tenantId],
      );
      assert.equal(rows.length, 1);
      await clean(tenantId);
    });

    test("the scheduled auto top-up fires auto_top_up_failed when its payment is declined", async () => {
      const { tenantId, walletId } = await setup();
      okv(await write((tx) => commerce.publishPriceBook(tx, tenantId, BOOK)));
      okv(
        await write((tx) =>
          commerce.setAutoTopUp(tx, tenantId, walletId, {
            threshold: cr(5),
            buy: { kind: "amount", credits: cr(10) },
            currency: "USD",
            monthlyCap: usd(100n),
            provider: "test",
            paymentMethod: "pm_test_declined",
          }),
        ),
      );
      okv(await store.advanceClock(tenantId, T0 + 60_000));
      const { rows } = await store.db.query(
        "SELECT details FROM alerts WHERE tenant_id = $1 AND kind = 'auto_top_up_failed'",
        [tenantId],
      );
      assert.equal(rows.length, 1);
      const details = (
        typeof rows[0]!.details === "string" ? JSON.parse(rows[0]!.details) : rows[0]!.details
      ) as {
        code: string;
      };
      assert.equal(details.code, "payment_failed");
    });

    test("precedence: the wallet's own policy over its plan's; clearing it takes the plan's again", async () => {
      const { tenantId, customer, walletId } = await setup();
      okv(await write((tx) => setWalletOverage(tx, tenantId, walletId, { mode: "fair_use" })));
      const p = await plan(tenantId, cr(10), { mode: "soft_cap", floor: -cr(20) });
      const s = okv(
        await write((tx) => subs.subscribe(tx, tenantId, { customerId: customer.id, planId: p.id })),
      );
      let state = okv(await getOverage(store.db, tenantId, walletId));
      assert.deepEqual([state.policy.mode, state.source], ["fair_use", "wallet"]);
      state = okv(await write((tx) => clearWalletOverage(tx, tenantId, walletId)));
      assert.deepEqual(
        [state.policy.mode, state.source, formatAmount(state.policy.floor)],
        ["soft_cap", "plan", "-20"],
      );
      // An upgrade to a plan with another policy applies it at once.
      const bigger = await plan(tenantId, cr(50), { mode: "carry_deficit", floor: -cr(30) });
      okv(await write((tx) => subs.changePlan(tx, tenantId, s.id, bigger.id)));
      state = okv(await getOverage(store.db, tenantId, walletId));
      assert.deepEqual([state.policy.mode, state.source], ["carry_deficit", "plan"]);
      // A wallet that owes keeps owing when the plan's policy changes: the floor fits the debt.
      await use(tenantId, customer.id, (await store.balance(tenantId, walletId))!.available + cr(25));
      assert.equal(await owed(tenantId, walletId), cr(25));
      const none = await plan(tenantId, cr(100));
      okv(await write((tx) => subs.changePlan(tx, tenantId, s.id, none.id)));
      state = okv(await getOverage(store.db, tenantId, walletId));
      assert.deepEqual(
        [state.policy.mode, state.source, formatAmount(state.policy.floor)],
        ["hard_cap", "default", "-25"],
      );
      // Setting a policy the debt does not fit is refused.
      assert.equal(
        (await write((tx) => setWalletOverage(tx, tenantId, walletId, { mode: "hard_cap" }))).ok,
        false,
      );
      await clean(tenantId);
    });
  });
}

// Registered on PostgreSQL only: PGlite is one connection and cannot race.
if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("auto top-up before a denial, under concurrency (postgres)", () => {
    let database: TestDatabase;
    let store: Store;
    let commerce: Commerce;
    let holds: Holds;
    before(async () => {
      database = await postgresDatabase(url, { max: 20 });
      store = database.store(() => T0);
      const metering = new Metering((tenantId) => store.now(tenantId), store.newId);
      commerce = new Commerce(store);
      holds = new Holds(store, metering, commerce);
    });
    after(async () => {
      await database.close();
    });

    test("authorizations topping up and the scheduled auto top-up at once: no deadlock, the cap holds, every allowed hold is paid", async () => {
      const tenant = await store.createTenant("Race", "test");
      const tenantId = tenant.id;
      okv(await store.advanceClock(tenantId, T0));
      okv(await store.db.transaction((tx) => commerce.publishPriceBook(tx, tenantId, BOOK)));
      const customer = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })),
      );
      const walletId = customer.walletId;
      okv(
        await store.db.transaction((tx) =>
          commerce.setAutoTopUp(tx, tenantId, walletId, {
            // Always due for the scheduler too: both paths buy at once.
            threshold: cr(100_000),
            buy: { kind: "pack", packId: "small" },
            currency: "USD",
            monthlyCap: usd(40n),
            provider: "test",
            paymentMethod: "pm_test_ok",
          }),
        ),
      );
      const authorizations = Array.from({ length: 30 }, () =>
        authorizeAlone(store, holds, tenantId, {
          customerId: customer.id,
          subjectId: null,
          action: "unit",
          estimate: { credits: cr(10) },
          holdTimeoutSeconds: 600,
        }),
      );
      const scheduled = Array.from({ length: 5 }, () => commerce.run(tenantId));
      const [results] = await Promise.all([Promise.all(authorizations), Promise.all(scheduled)]);
      const allowed = results.filter((r) => okv(r).authorization.decision === "allow").length;
      const { rows } = await store.db.query(
        "SELECT coalesce(sum(price), 0)::text AS spent, coalesce(sum(credits), 0)::text AS bought FROM purchases WHERE tenant_id = $1 AND status = 'confirmed'",
        [tenantId],
      );
      const spent = BigInt(String(rows[0]!.spent));
      const bought = BigInt(String(rows[0]!.bought));
      assert.ok(spent <= usd(40n), "the monthly cap holds");
      assert.ok(BigInt(allowed) * cr(10) <= bought, "every allowed hold is paid by credits bought");
      assert.ok(allowed > 0);
      const b = (await store.balance(tenantId, walletId))!;
      assert.equal(b.held, BigInt(allowed) * cr(10));
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });
  });
}
