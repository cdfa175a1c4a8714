/**
 * Contracts in storage, on PGlite and (when DATABASE_URL is set) PostgreSQL: installments
 * granted once each, in order, at the negotiated cost basis and with rolling expiry, through
 * the test clock and through the scheduler after downtime; pinned or following rate cards;
 * overlaps refused; early termination; proof-of-concept allocations; and two instances racing
 * on PostgreSQL.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, formatAmount, type Result, UNIT } from "@drawdown/core";
import {
  Contracts,
  type CustomerPricing,
  Metering,
  MIGRATIONS,
  type Store,
  splitStatements,
} from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const DAY = 86_400_000;
const T0 = Date.UTC(2027, 0, 15);
const YEAR_END = Date.UTC(2028, 0, 15);
const QUARTERS = [T0, Date.UTC(2027, 3, 15), Date.UTC(2027, 6, 15), Date.UTC(2027, 9, 15)];

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

for (const backend of backends()) {
  describe(`contracts (${backend.name})`, () => {
    let database: TestDatabase;
    /** The store's clock, for tenants without a test clock. */
    let now = T0;
    let store: Store;
    let metering: Metering;
    let contracts: Contracts;
    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
      metering = new Metering((t) => store.now(t), store.newId);
      contracts = new Contracts(store, metering);
    });
    after(async () => {
      await database?.close();
    });

    async function setup(environment: "test" | "live" = "test") {
      const tenant = await store.createTenant("Contracts", environment);
      if (environment === "test") okv(await store.advanceClock(tenant.id, T0));
      const customer = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenant.id, { kind: "organization" })),
      );
      return { tenantId: tenant.id, customer };
    }

    const available = async (tenantId: string, walletId: string) =>
      formatAmount((await store.balance(tenantId, walletId))!.available);

    const quarterly = (customerId: string) => ({
      customerId,
      startsAt: T0,
      endsAt: YEAR_END,
      commitment: credits(100_000n),
      schedule: { kind: "installments" as const, interval: { unit: "month" as const, count: 3 } },
      creditPrice: { amount: 8_000_000n, currency: "USD" },
    });

    const installments = async (tenantId: string, contractId: string) => {
      const { rows } = await store.db.query(
        "SELECT installment_index, grant_id FROM contract_installments WHERE tenant_id = $1 AND contract_id = $2 ORDER BY installment_index",
        [tenantId, contractId],
      );
      return rows.map((r) => ({ index: Number(r.installment_index), grant: r.grant_id as string | null }));
    };

    test("quarterly installments over a year: each granted once, at its time, at the negotiated cost basis, expiring 12 months later", async () => {
      const { tenantId, customer } = await setup();
      const c = okv(
        await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(customer.id))),
      );
      assert.equal(c.issuedThrough, 0);
      assert.equal(c.nextInstallmentAt, QUARTERS[1]);
      assert.equal(await available(tenantId, customer.walletId), "25000");
      // In small steps, then one big step past the end: the same installments, once each.
      for (const day of [1, 50, 89, 90, 91, 200]) okv(await store.advanceClock(tenantId, T0 + day * DAY));
      okv(await store.advanceClock(tenantId, YEAR_END + DAY));
      const list = await installments(tenantId, c.id);
      assert.deepEqual(
        list.map((i) => i.index),
        [0, 1, 2, 3],
      );
      for (const [k, i] of list.entries()) {
        const g = (await store.getGrant(tenantId, i.grant!))!;
        assert.equal(g.source, "contract");
        assert.equal(g.amount, credits(25_000n));
        assert.equal(g.costBasis, 8_000_000n);
        assert.equal(g.currency, "USD");
        assert.equal(g.effectiveAt, QUARTERS[k]);
        const expires = new Date(QUARTERS[k]!);
        expires.setUTCFullYear(expires.getUTCFullYear() + 1);
        assert.equal(g.expiresAt, expires.getTime());
        assert.equal(g.metadata.contract_id, c.id);
      }
      // A year and a day in: the first installment has expired (rolling 12 months), the rest remain.
      assert.equal(await available(tenantId, customer.walletId), "75000");
      const after = (await contracts.get(tenantId, c.id))!;
      assert.equal(after.issuedThrough, 3);
      assert.equal(after.nextInstallmentAt, null);
      const s = await contracts.statement(tenantId, after);
      assert.deepEqual(
        s.installments.map((i) => i.status),
        ["issued", "issued", "issued", "issued"],
      );
      assert.equal(s.totals.issued, credits(100_000n));
      assert.equal(s.totals.expired, credits(25_000n));
      assert.equal(s.totals.remaining, credits(75_000n));
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("the scheduler catches up after downtime: every due installment once, in order; credits already past their expiry lapse", async () => {
      const { tenantId, customer } = await setup("live");
      now = T0;
      const c = okv(
        await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(customer.id))),
      );
      // Nothing ran for 16 months: installments 1 to 3 are due; the first two (and the first) are past their expiry.
      now = Date.UTC(2028, 4, 1);
      await store.runDue(tenantId);
      await store.runDue(tenantId);
      const list = await installments(tenantId, c.id);
      assert.deepEqual(
        list.map((i) => [i.index, i.grant === null]),
        [
          [0, false],
          [1, true],
          [2, false],
          [3, false],
        ],
      );
      const s = await contracts.statement(tenantId, (await contracts.get(tenantId, c.id))!);
      assert.deepEqual(
        s.installments.map((i) => i.status),
        ["issued", "lapsed", "issued", "issued"],
      );
      assert.equal(s.totals.forgone, credits(25_000n));
      assert.equal(await available(tenantId, customer.walletId), "50000");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
      now = T0;
    });

    test("rate cards: pinned at signing when upgrades are not allowed, following otherwise; overrides become the customer's", async () => {
      const { tenantId, customer } = await setup();
      const other = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })),
      );
      const card = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "List")));
      const line = (rate: string) => ({ id: "chat", action: "chat.completion", quantity: "tokens", rate });
      const v1 = okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, card.id, null, { lines: [line("1")] }),
        ),
      );
      const override = { id: "ent", action: "chat.completion", quantity: "tokens", rate: "0.5" };
      const pinned = okv(
        await store.db.transaction((tx) =>
          contracts.create(tx, tenantId, {
            ...quarterly(customer.id),
            allowRateCardUpgrades: false,
            overrides: [override],
          }),
        ),
      );
      assert.equal(pinned.pinnedVersionId, v1.id);
      assert.equal(pinned.rateCardId, card.id);
      const following = okv(
        await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(other.id))),
      );
      assert.equal(following.pinnedVersionId, null);
      okv(await store.advanceClock(tenantId, T0 + DAY));
      const v2 = okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, card.id, null, { lines: [line("2")] }),
        ),
      );
      const catalog = await metering.catalog(store.db, tenantId);
      const pricing = await metering.customerPricing(store.db, tenantId, [customer.id, other.id]);
      const at = T0 + 2 * DAY;
      assert.equal(Metering.pricingAt(catalog, pricing.get(customer.id), at)?.versionId, v1.id);
      assert.deepEqual(pricing.get(customer.id)?.overrides, [override]);
      assert.equal(Metering.pricingAt(catalog, pricing.get(other.id), at)?.versionId, v2.id);
      // Pinning needs a version in force.
      const third = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "individual" })),
      );
      const bare = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "Empty")));
      const r = await store.db.transaction((tx) =>
        contracts.create(tx, tenantId, {
          ...quarterly(third.id),
          startsAt: T0 + DAY,
          rateCardId: bare.id,
          allowRateCardUpgrades: false,
        }),
      );
      assert.equal(r.ok ? "ok" : r.error.code, "no_rate_card");
    });

    test("a contract's overrides are in force over its term only, cut short by a termination; pricing set by hand has no window", async () => {
      const { tenantId, customer } = await setup();
      const other = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })),
      );
      const card = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "List")));
      okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, card.id, null, {
            lines: [{ id: "list", action: "chat", quantity: "tokens", rate: "1" }],
          }),
        ),
      );
      const overrides = [{ id: "deal", action: "chat", quantity: "tokens", rate: "0.5" }];
      const start = T0 + DAY;
      const end = T0 + 30 * DAY;
      const ends = okv(
        await store.db.transaction((tx) =>
          contracts.create(tx, tenantId, {
            ...quarterly(customer.id),
            schedule: { kind: "upfront" },
            startsAt: start,
            endsAt: end,
            overrides,
          }),
        ),
      );
      const stops = okv(
        await store.db.transaction((tx) =>
          contracts.create(tx, tenantId, { ...quarterly(other.id), startsAt: start, overrides }),
        ),
      );
      okv(await store.advanceClock(tenantId, T0 + 10 * DAY));
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, stops.id)));
      const catalog = await metering.catalog(store.db, tenantId);
      const pricing = await metering.customerPricing(store.db, tenantId, [customer.id, other.id]);
      const p = pricing.get(customer.id)!;
      const windows = (x: CustomerPricing | undefined) =>
        x?.overrideHistory.map((t) => [t.source, t.from, t.until]);
      assert.deepEqual([p.contractId, p.overridesFrom, p.overridesUntil], [ends.id, start, end]);
      assert.deepEqual(windows(p), [[ends.id, start, end]]);
      assert.equal(pricing.get(other.id)?.overridesUntil, T0 + 10 * DAY, "the termination ends the overrides");
      assert.deepEqual(windows(pricing.get(other.id)), [[stops.id, start, T0 + 10 * DAY]]);
      const lineAt = (customerId: string, t: number) =>
        Metering.pricingAt(catalog, pricing.get(customerId), t)?.overrides.map((l) => l.id);
      assert.deepEqual(
        [start - 1, start, end - 1, end, end + DAY].map((t) => lineAt(customer.id, t)),
        [[], ["deal"], ["deal"], [], []],
      );
      assert.deepEqual(
        [start, T0 + 10 * DAY - 1, T0 + 10 * DAY].map((t) => lineAt(other.id, t)),
        [["deal"], ["deal"], []],
      );
      // Pricing the vendor sets by hand replaces the contract's, and its overrides have no window.
      const byHand = okv(
        await store.db.transaction((tx) =>
          metering.setCustomerPricing(tx, tenantId, customer.id, {
            rateCardId: null,
            pinnedVersionId: null,
            overrides,
          }),
        ),
      );
      assert.deepEqual(
        [byHand.contractId, byHand.overridesFrom, byHand.overridesUntil],
        [null, null, null],
      );
      assert.deepEqual(windows(byHand), [["manual", null, null]], "without a window: the whole history");
      assert.deepEqual(
        Metering.pricingAt(catalog, byHand, end + DAY)?.overrides.map((l) => l.id),
        ["deal"],
      );

      // Migration 17 gives pricing a contract applied before it the contract's window, and none
      // to pricing set by hand since.
      await store.db.query(
        "UPDATE customer_pricing SET contract_id = NULL, overrides_from = NULL, overrides_until = NULL WHERE tenant_id = $1",
        [tenantId],
      );
      const backfill = splitStatements(
        MIGRATIONS.find((m) => m.name === "contract pricing window")!.sql,
      ).filter((q) => q.startsWith("UPDATE"));
      assert.equal(backfill.length, 1);
      await store.db.query(backfill[0]!);
      const again = await metering.customerPricing(store.db, tenantId, [customer.id, other.id]);
      assert.deepEqual(
        [customer.id, other.id].map((c) => {
          const x = again.get(c)!;
          return [x.contractId, x.overridesFrom, x.overridesUntil];
        }),
        [
          [null, null, null],
          [stops.id, start, T0 + 10 * DAY],
        ],
      );
    });

    test("a contract starting later applies its pricing and first installment at its start, not at signing", async () => {
      const { tenantId, customer } = await setup();
      const start = T0 + 10 * DAY;
      const c = okv(
        await store.db.transaction((tx) =>
          contracts.create(tx, tenantId, {
            ...quarterly(customer.id),
            startsAt: start,
            endsAt: start + 365 * DAY,
          }),
        ),
      );
      assert.equal(c.issuedThrough, -1);
      assert.equal(await available(tenantId, customer.walletId), "0");
      assert.equal((await metering.customerPricing(store.db, tenantId, [customer.id])).size, 0);
      okv(await store.advanceClock(tenantId, start));
      assert.equal(await available(tenantId, customer.walletId), "25000");
      assert.equal((await metering.customerPricing(store.db, tenantId, [customer.id])).size, 1);
    });

    test("refusals change nothing: an overlapping term, a start in the past, an interval longer than the term", async () => {
      const { tenantId, customer } = await setup();
      okv(await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(customer.id))));
      const count = async () =>
        Number(
          (await store.db.query("SELECT count(*)::int AS n FROM contracts WHERE tenant_id = $1", [tenantId]))
            .rows[0]!.n,
        );
      const before = await count();
      const attempt = (over: object) =>
        store.db.transaction((tx) => contracts.create(tx, tenantId, { ...quarterly(customer.id), ...over }));
      const code = (r: Result<unknown>) => (r.ok ? "ok" : r.error.code);
      assert.equal(
        code(await attempt({ startsAt: T0 + 100 * DAY, endsAt: T0 + 500 * DAY })),
        "already_exists",
      );
      assert.equal(code(await attempt({ startsAt: T0 - 2 * DAY })), "invalid_argument");
      assert.equal(
        code(await attempt({ schedule: { kind: "installments", interval: { unit: "year", count: 2 } } })),
        "invalid_argument",
      );
      assert.equal(code(await attempt({ commitment: -1n })), "invalid_amount");
      assert.equal(code(await attempt({ customerId: "cus_nobody" })), "not_found");
      assert.equal(await count(), before);
      // Back to back is no overlap.
      okv(await attempt({ startsAt: YEAR_END, endsAt: YEAR_END + 30 * DAY, schedule: { kind: "upfront" } }));
    });

    test("early termination stops future installments; issued credits are kept, or voided with forfeit", async () => {
      const { tenantId, customer } = await setup();
      const other = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })),
      );
      const kept = okv(
        await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(customer.id))),
      );
      const lost = okv(
        await store.db.transaction((tx) => contracts.create(tx, tenantId, quarterly(other.id))),
      );
      okv(await store.advanceClock(tenantId, Date.UTC(2027, 4, 1)));
      const k = okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, kept.id)));
      assert.equal(k.status, "terminated");
      assert.equal(k.onTerminate, "keep");
      assert.equal(k.nextInstallmentAt, null);
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, lost.id, "forfeit")));
      // Just before the first installment's credits expire (12 months after it).
      okv(await store.advanceClock(tenantId, YEAR_END - DAY));
      assert.equal((await installments(tenantId, kept.id)).length, 2);
      assert.equal(await available(tenantId, customer.walletId), "50000");
      assert.equal(await available(tenantId, other.walletId), "0");
      const s = await contracts.statement(tenantId, (await contracts.get(tenantId, lost.id))!);
      assert.deepEqual(
        s.installments.map((i) => i.status),
        ["issued", "issued", "canceled", "canceled"],
      );
      assert.equal(s.totals.voided, credits(50_000n));
      assert.equal(s.totals.forgone, credits(50_000n));
      const twice = await store.db.transaction((tx) => contracts.terminate(tx, tenantId, kept.id));
      assert.equal(twice.ok ? "ok" : twice.error.code, "invalid_argument");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a proof-of-concept allocation: free credits for its window, expiring at its end, with its list value", async () => {
      const { tenantId, customer } = await setup();
      const poc = okv(
        await store.db.transaction((tx) =>
          contracts.createPoc(tx, tenantId, {
            customerId: customer.id,
            amount: credits(5_000n),
            listValue: { amount: 40n * UNIT, currency: "USD" },
            endsAt: T0 + 30 * DAY,
          }),
        ),
      );
      const g = (await store.getGrant(tenantId, poc.grantId))!;
      assert.equal(g.costBasis, 0n);
      assert.equal(g.expiresAt, T0 + 30 * DAY);
      assert.equal(g.metadata.poc_id, poc.id);
      assert.deepEqual(poc.listValue, { amount: 40n * UNIT, currency: "USD" });
      okv(
        await store.db.transaction((tx) =>
          store.debitWallet(tx, tenantId, customer.walletId, {
            amount: credits(1_000n),
            kind: "debit",
            action: null,
          }),
        ),
      );
      okv(await store.advanceClock(tenantId, T0 + 31 * DAY));
      const u = (await contracts.usage(tenantId, [poc.grantId])).get(poc.grantId)!;
      assert.deepEqual(u, { used: credits(1_000n), expired: credits(4_000n), voided: 0n });
      assert.deepEqual(
        (await contracts.listPocs(tenantId, customer.id)).map((p) => p.id),
        [poc.id],
      );
      const late = await store.db.transaction((tx) =>
        contracts.createPoc(tx, tenantId, {
          customerId: customer.id,
          amount: credits(1n),
          listValue: { amount: 1n, currency: "USD" },
          startsAt: T0,
          endsAt: T0 + 40 * DAY,
        }),
      );
      assert.equal(late.ok ? "ok" : late.error.code, "invalid_argument");
    });

    // Needs concurrent connections: PostgreSQL only (PGlite has one).
    if (backend.name === "postgres")
      test("two Store instances on one PostgreSQL database, running at once: each installment once", async () => {
        const made: { tenantId: string; id: string }[] = [];
        now = T0;
        for (let i = 0; i < 6; i++) {
          const { tenantId, customer } = await setup("live");
          const c = okv(
            await store.db.transaction((tx) =>
              contracts.create(tx, tenantId, {
                ...quarterly(customer.id),
                schedule: { kind: "installments", interval: { unit: "month", count: 1 } },
              }),
            ),
          );
          made.push({ tenantId, id: c.id });
        }
        now = Date.UTC(2027, 11, 20);
        const a = database.store(() => now);
        const b = database.store(() => now);
        for (const s of [a, b]) new Contracts(s, new Metering((t) => s.now(t), s.newId));
        await Promise.all([a.runDue(), b.runDue(), a.runDue(), b.runDue()]);
        for (const { tenantId, id } of made) {
          const list = await installments(tenantId, id);
          assert.deepEqual(
            list.map((i) => i.index),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
          );
          const { rows } = await store.db.query(
            "SELECT count(*)::int AS n FROM grants WHERE tenant_id = $1 AND metadata->>'contract_id' = $2",
            [tenantId, id],
          );
          assert.equal(Number(rows[0]!.n), 12, "one grant per installment");
          assert.deepEqual((await store.reconcile(tenantId)).differences, []);
        }
        now = T0;
      });
  });
}
