/**
 * Contracts in storage, on PGlite and (when DATABASE_URL is set) PostgreSQL: installments
 * granted once each, in order, at the negotiated cost basis and with rolling expiry, through
 * the test clock and through the scheduler after downtime; pinned or following rate cards;
 * overlaps refused; early termination; proof-of-concept allocations; and two instances racing
 * on PostgreSQL.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, formatAmount, type Result, rateEvent, UNIT, type UsageEvent } from "@drawdown/core";
import {
  Contracts,
  type CustomerPricing,
  Holds,
  HoldWriter,
  IngestWriter,
  Metering,
  MIGRATIONS,
  type SqlExecutor,
  type Store,
  splitStatements,
} from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const DAY = 86_400_000;
const HOUR = 3_600_000;
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
    let writer: IngestWriter;
    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
      metering = new Metering((t) => store.now(t), store.newId);
      contracts = new Contracts(store, metering);
      writer = new IngestWriter(store, metering);
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
      assert.equal(
        pricing.get(other.id)?.overridesUntil,
        T0 + 10 * DAY,
        "the termination ends the overrides",
      );
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
      assert.deepEqual([byHand.contractId, byHand.overridesFrom, byHand.overridesUntil], [null, null, null]);
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

    /** Ingests one event of `tokens` at `time` and returns its charge and explanation. */
    async function rate(tenantId: string, customerId: string, id: string, time: number, tokens = 1n) {
      const event = {
        id,
        customerId,
        subjectId: null,
        action: "chat",
        dimensions: {},
        quantities: { tokens: tokens * UNIT },
        time,
        status: "succeeded" as const,
        runId: null,
        reportedCost: null,
      };
      const [r] = await writer.submit(tenantId, [{ event, fingerprint: id }]);
      if (r?.status !== "accepted") assert.fail(`${id}: ${JSON.stringify(r, (_k, v) => String(v))}`);
      const [, , line, source] = await ratedRow(tenantId, id);
      return [formatAmount(r.charge.credits), line, source];
    }

    /** A tenant with a card pricing chat at 1 credit a token, a customer with credits to spend. */
    async function pricedWorld() {
      const { tenantId, customer } = await setup();
      const card = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "List")));
      okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, card.id, null, {
            lines: [{ id: "list", action: "chat", quantity: "tokens", rate: "1" }],
          }),
        ),
      );
      okv(
        await store.db.transaction((tx) =>
          store.createGrant(tx, tenantId, {
            walletId: customer.walletId,
            amount: credits(1_000n),
            source: "promo",
          }),
        ),
      );
      return { tenantId, customer };
    }

    const deal = (id: string, rate: string) => [{ id, action: "chat", quantity: "tokens", rate }];
    /** A pricing-only contract (no commitment) over [from, until) with its own override line. */
    const pricingContract = (customerId: string, from: number, until: number, line: string, rate: string) =>
      ({
        customerId,
        startsAt: from,
        endsAt: until,
        commitment: 0n,
        schedule: { kind: "upfront" as const },
        creditPrice: { amount: 8_000_000n, currency: "USD" },
        overrides: deal(line, rate),
      }) as const;

    /** Contract A over days 1 to 10 ("a-deal" at 0.5), then B over days 12 to 60 ("b-deal" at 0.25). */
    async function twoTerms(tenantId: string, customerId: string) {
      const create = (from: number, until: number, line: string, rate: string) =>
        store.db.transaction((tx) =>
          contracts.create(tx, tenantId, pricingContract(customerId, from, until, line, rate)),
        );
      const a = okv(await create(T0 + DAY, T0 + 10 * DAY, "a-deal", "0.5"));
      const b = okv(await create(T0 + 12 * DAY, T0 + 60 * DAY, "b-deal", "0.25"));
      return { a, b };
    }

    const windowsOf = async (tenantId: string, customerId: string, ex: SqlExecutor = store.db) =>
      (await metering.customerPricing(ex, tenantId, [customerId]))
        .get(customerId)
        ?.overrideHistory.map((t) => [t.source, t.from, t.until, t.input.map((l) => l.id)]) ?? [];

    test("the override history: a late event is priced by the earlier contract's overrides, one in the gap between terms by the card; a termination cuts its window", async () => {
      const { tenantId, customer } = await pricedWorld();
      const { a, b } = await twoTerms(tenantId, customer.id);
      okv(await store.advanceClock(tenantId, T0 + 14 * DAY));
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, b.id)));
      okv(await store.advanceClock(tenantId, T0 + 15 * DAY));
      assert.deepEqual(await windowsOf(tenantId, customer.id), [
        [a.id, T0 + DAY, T0 + 10 * DAY, ["a-deal"]],
        [b.id, T0 + 12 * DAY, T0 + 14 * DAY, ["b-deal"]],
      ]);
      // B's terms are the current ones; late events (7 days' grace) are rated by their own time's.
      assert.deepEqual(
        [
          await rate(tenantId, customer.id, "in-a", T0 + 9 * DAY),
          await rate(tenantId, customer.id, "a-last-ms", T0 + 10 * DAY - 1),
          await rate(tenantId, customer.id, "gap", T0 + 10 * DAY),
          await rate(tenantId, customer.id, "gap-end", T0 + 12 * DAY - 1),
          await rate(tenantId, customer.id, "in-b", T0 + 12 * DAY),
          await rate(tenantId, customer.id, "b-terminated", T0 + 14 * DAY),
          await rate(tenantId, customer.id, "now", T0 + 15 * DAY),
        ],
        [
          ["0.5", "a-deal", a.id],
          ["0.5", "a-deal", a.id],
          ["1", "list", null],
          ["1", "list", null],
          ["0.25", "b-deal", b.id],
          ["1", "list", null],
          ["1", "list", null],
        ],
      );
      // A batch loads only the entries that can still rate an accepted event (the grace window).
      okv(await store.advanceClock(tenantId, T0 + 19 * DAY));
      const recent = await metering.customerPricing(store.db, tenantId, [customer.id], store.now(tenantId));
      assert.deepEqual(
        recent.get(customer.id)?.overrideHistory.map((t) => t.source),
        [b.id],
      );
      assert.deepEqual(await rate(tenantId, customer.id, "late-in-b", T0 + 13 * DAY), [
        "0.25",
        "b-deal",
        b.id,
      ]);
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("terms set by hand for a window replace that part of the history only; without one, all of it; a bad window changes nothing", async () => {
      const { tenantId, customer } = await pricedWorld();
      const { a, b } = await twoTerms(tenantId, customer.id);
      okv(await store.advanceClock(tenantId, T0 + 14 * DAY));
      const byHand = (window: { from: number | null; until: number | null } | null, rate = "0.1") =>
        store.db.transaction((tx) =>
          metering.setCustomerPricing(tx, tenantId, customer.id, {
            rateCardId: null,
            pinnedVersionId: null,
            overrides: deal("hand", rate),
            window,
          }),
        );
      const set = okv(await byHand({ from: T0 + 9 * DAY, until: T0 + 13 * DAY }));
      const expected = [
        [a.id, T0 + DAY, T0 + 9 * DAY, ["a-deal"]],
        ["manual", T0 + 9 * DAY, T0 + 13 * DAY, ["hand"]],
        [b.id, T0 + 13 * DAY, T0 + 60 * DAY, ["b-deal"]],
      ];
      assert.deepEqual(
        set.overrideHistory.map((t) => [t.source, t.from, t.until, t.input.map((l) => l.id)]),
        expected,
      );
      // A window set by hand leaves the base (B's, set at its start) as it was.
      assert.deepEqual(
        [set.contractId, set.overridesFrom, set.overridesUntil],
        [b.id, T0 + 12 * DAY, T0 + 60 * DAY],
      );
      assert.deepEqual(await windowsOf(tenantId, customer.id), expected);
      assert.deepEqual(
        [
          await rate(tenantId, customer.id, "a", T0 + 9 * DAY - 1),
          await rate(tenantId, customer.id, "hand", T0 + 11 * DAY),
          await rate(tenantId, customer.id, "b", T0 + 13 * DAY),
        ],
        [
          ["0.5", "a-deal", a.id],
          ["0.1", "hand", "manual"],
          ["0.25", "b-deal", b.id],
        ],
      );
      // Terminating B cuts its remaining piece; the hand-set window is not B's and stays.
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, b.id)));
      assert.deepEqual(await windowsOf(tenantId, customer.id), [
        expected[0],
        expected[1],
        [b.id, T0 + 13 * DAY, T0 + 14 * DAY, ["b-deal"]],
      ]);
      // Refused, changing nothing: a window ending before (or where) it starts.
      const before = await windowsOf(tenantId, customer.id);
      for (const w of [
        { from: T0 + 20 * DAY, until: T0 + 20 * DAY },
        { from: T0 + 20 * DAY, until: T0 + 19 * DAY },
      ]) {
        const r = await byHand(w);
        assert.equal(r.ok ? "ok" : r.error.code, "invalid_argument");
      }
      assert.deepEqual(await windowsOf(tenantId, customer.id), before);
      // An open-ended start: from then on, whatever was there.
      okv(await byHand({ from: T0 + 5 * DAY, until: null }, "0.2"));
      assert.deepEqual(await windowsOf(tenantId, customer.id), [
        [a.id, T0 + DAY, T0 + 5 * DAY, ["a-deal"]],
        ["manual", T0 + 5 * DAY, null, ["hand"]],
      ]);
      // No window: the whole history, as setting pricing always did.
      okv(await byHand(null, "0.3"));
      assert.deepEqual(await windowsOf(tenantId, customer.id), [["manual", null, null, ["hand"]]]);
      assert.deepEqual(await rate(tenantId, customer.id, "any", T0 + 8 * DAY), ["0.3", "hand", "manual"]);
      // No lines for a window: its card and pin alone (here the default card) price it.
      okv(
        await store.db.transaction((tx) =>
          metering.setCustomerPricing(tx, tenantId, customer.id, {
            rateCardId: null,
            pinnedVersionId: null,
            overrides: [],
            window: { from: T0 + 9 * DAY, until: T0 + 10 * DAY },
          }),
        ),
      );
      assert.deepEqual(await windowsOf(tenantId, customer.id), [
        ["manual", null, T0 + 9 * DAY, ["hand"]],
        ["manual", T0 + 9 * DAY, T0 + 10 * DAY, []],
        ["manual", T0 + 10 * DAY, null, ["hand"]],
      ]);
      assert.deepEqual(await rate(tenantId, customer.id, "hole", T0 + 9 * DAY), ["1", "list", null]);
    });

    /** Counts the batches' pricing loads: the writers must load it once per batch, never per event. */
    class CountingMetering extends Metering {
      loads = 0;
      override customerPricing(...args: Parameters<Metering["customerPricing"]>) {
        this.loads++;
        return super.customerPricing(...args);
      }
    }

    /** The rated form of an event's row: credits, version, the line that priced it, its overrides' source. */
    async function ratedRow(tenantId: string, id: string) {
      const { rows } = await store.db.query(
        "SELECT credits::text AS credits, detail FROM usage_events WHERE tenant_id = $1 AND event_id = $2",
        [tenantId, id],
      );
      const detail = (
        typeof rows[0]!.detail === "string" ? JSON.parse(rows[0]!.detail) : rows[0]!.detail
      ) as {
        rate_card_version_id: string;
        explanation: { lines: { line_id: string }[]; override_source: string | null };
      };
      return [
        formatAmount(BigInt(String(rows[0]!.credits))),
        detail.rate_card_version_id,
        detail.explanation.lines[0]?.line_id,
        detail.explanation.override_source,
      ];
    }

    /**
     * A tenant with two cards: List (the default; chat 1 credit a token, docs 5 a page) and Other
     * (chat 7, docs 9); a customer with credits. List's v2 (chat 2) is published later.
     */
    async function twoCards() {
      const { tenantId, customer } = await setup();
      const lines = (chat: string, docs: string) => [
        { id: "chat", action: "chat", quantity: "tokens", rate: chat },
        { id: "docs", action: "docs", quantity: "pages", rate: docs },
      ];
      const list = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "List")));
      const other = okv(await store.db.transaction((tx) => metering.createRateCard(tx, tenantId, "Other")));
      const v1 = okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, list.id, null, { lines: lines("1", "5") }),
        ),
      );
      const o1 = okv(
        await store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, other.id, null, { lines: lines("7", "9") }),
        ),
      );
      const publishV2 = () =>
        store.db.transaction((tx) =>
          metering.publishRateCardVersion(tx, tenantId, list.id, null, { lines: lines("2", "5") }),
        );
      const funded = async () => {
        const c = okv(
          await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })),
        );
        okv(
          await store.db.transaction((tx) =>
            store.createGrant(tx, tenantId, {
              walletId: c.walletId,
              amount: credits(1_000n),
              source: "promo",
            }),
          ),
        );
        return c;
      };
      okv(
        await store.db.transaction((tx) =>
          store.createGrant(tx, tenantId, {
            walletId: customer.walletId,
            amount: credits(1_000n),
            source: "promo",
          }),
        ),
      );
      return { tenantId, customer, list, other, v1, o1, publishV2, funded };
    }

    const usageEvent = (
      customerId: string,
      id: string,
      time: number,
      action: "chat" | "docs",
    ): UsageEvent => ({
      id,
      customerId,
      subjectId: null,
      action,
      dimensions: {},
      quantities: { [action === "chat" ? "tokens" : "pages"]: UNIT },
      time,
      status: "succeeded" as const,
      runId: null,
      reportedCost: null,
    });

    test("the pricing history: a late event of a previous term is rated by that term's pinned version and overrides after a renewal pinned another; a gap keeps the base it had; after a termination the base prices; one pricing load per batch", async () => {
      const { tenantId, customer, list, other, v1, o1, publishV2, funded } = await twoCards();
      const switcher = await funded();
      const docsDeal = (id: string, rate: string) => [{ id, action: "docs", quantity: "pages", rate }];
      const term = (customerId: string, from: number, until: number) => ({
        customerId,
        startsAt: from,
        endsAt: until,
        commitment: 0n,
        schedule: { kind: "upfront" as const },
        creditPrice: { amount: 8_000_000n, currency: "USD" },
      });
      const sign = async (input: Parameters<Contracts["create"]>[2]) =>
        okv(await store.db.transaction((tx) => contracts.create(tx, tenantId, input)));
      // A pins v1 (in force at its signing), with a document discount.
      const a = await sign({
        ...term(customer.id, T0 + DAY, T0 + 10 * DAY),
        allowRateCardUpgrades: false,
        overrides: docsDeal("a-deal", "4"),
      });
      assert.deepEqual([a.rateCardId, a.pinnedVersionId], [list.id, v1.id]);
      // The switcher follows List, then Other.
      const a2 = await sign({ ...term(switcher.id, T0 + DAY, T0 + 10 * DAY), rateCardId: list.id });
      okv(await store.advanceClock(tenantId, T0 + 5 * DAY));
      const v2 = okv(await publishV2());
      // The renewal, signed once v2 is in force, pins v2, with a deeper discount; after a gap.
      const b = await sign({
        ...term(customer.id, T0 + 12 * DAY, T0 + 60 * DAY),
        allowRateCardUpgrades: false,
        overrides: docsDeal("b-deal", "3"),
      });
      assert.equal(b.pinnedVersionId, v2.id);
      const b2 = await sign({ ...term(switcher.id, T0 + 12 * DAY, T0 + 60 * DAY), rateCardId: other.id });
      okv(await store.advanceClock(tenantId, T0 + 13 * DAY));
      const pricing = (await metering.customerPricing(store.db, tenantId, [customer.id, switcher.id]))!;
      // The base is the renewal's; the history keeps each term's card, pin and lines, and the
      // base each had before a start moved it (the default card before A, A's in the gap).
      const shape = (p: CustomerPricing) => ({
        base: [p.rateCardId, p.pinnedVersionId],
        history: p.overrideHistory.map((t) => [
          t.source,
          t.from,
          t.until,
          t.rateCardId,
          t.pinnedVersionId,
          t.input.map((l) => l.id),
        ]),
      });
      assert.deepEqual(shape(pricing.get(customer.id)!), {
        base: [list.id, v2.id],
        history: [
          ["manual", null, T0 + DAY, null, null, []],
          [a.id, T0 + DAY, T0 + 10 * DAY, list.id, v1.id, ["a-deal"]],
          [a.id, T0 + 10 * DAY, T0 + 12 * DAY, list.id, v1.id, []],
          [b.id, T0 + 12 * DAY, T0 + 60 * DAY, list.id, v2.id, ["b-deal"]],
        ],
      });
      assert.deepEqual(shape(pricing.get(switcher.id)!), {
        base: [other.id, null],
        history: [
          ["manual", null, T0 + DAY, null, null, []],
          [a2.id, T0 + DAY, T0 + 10 * DAY, list.id, null, []],
          [a2.id, T0 + 10 * DAY, T0 + 12 * DAY, list.id, null, []],
          [b2.id, T0 + 12 * DAY, T0 + 60 * DAY, other.id, null, []],
        ],
      });

      // One ingest batch of late events from both terms and the gap, for both customers.
      const counting = new CountingMetering((t) => store.now(t), store.newId);
      const batchWriter = new IngestWriter(store, counting, { lanes: 1 });
      const events = [
        usageEvent(customer.id, "a-chat", T0 + 9 * DAY, "chat"),
        usageEvent(customer.id, "a-docs", T0 + 9 * DAY, "docs"),
        usageEvent(customer.id, "gap-chat", T0 + 11 * DAY, "chat"),
        usageEvent(customer.id, "gap-docs", T0 + 11 * DAY, "docs"),
        usageEvent(customer.id, "b-chat", T0 + 12 * DAY, "chat"),
        usageEvent(customer.id, "b-docs", T0 + 12 * DAY + HOUR, "docs"),
        usageEvent(switcher.id, "s-a", T0 + 9 * DAY, "chat"),
        usageEvent(switcher.id, "s-gap", T0 + 11 * DAY, "chat"),
        usageEvent(switcher.id, "s-b", T0 + 12 * DAY, "chat"),
      ];
      const results = await batchWriter.submit(
        tenantId,
        events.map((event) => ({ event, fingerprint: event.id })),
      );
      assert.deepEqual(
        results.map((r) => r.status),
        events.map(() => "accepted"),
      );
      assert.equal(counting.loads, 1, "the batch loaded the pricing once");
      const rows = async (ids: string[]) => Promise.all(ids.map((id) => ratedRow(tenantId, id)));
      assert.deepEqual(await rows(events.map((e) => e.id)), [
        ["1", v1.id, "chat", null],
        ["4", v1.id, "a-deal", a.id],
        ["1", v1.id, "chat", null],
        ["5", v1.id, "docs", null],
        ["2", v2.id, "chat", null],
        ["3", v2.id, "b-deal", b.id],
        // The switcher followed List in A's term (v2 in force from T0 + 5 days) and in the gap.
        ["2", v2.id, "chat", null],
        ["2", v2.id, "chat", null],
        ["7", o1.id, "chat", null],
      ]);

      // B is terminated: from then on the base (B's card and pin) prices, without its lines.
      okv(await store.advanceClock(tenantId, T0 + 14 * DAY));
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, b.id)));
      okv(await store.advanceClock(tenantId, T0 + 15 * DAY));
      await batchWriter.submit(
        tenantId,
        [
          usageEvent(customer.id, "after-docs", T0 + 14 * DAY + HOUR, "docs"),
          usageEvent(customer.id, "late-b-docs", T0 + 13 * DAY, "docs"),
        ].map((event) => ({ event, fingerprint: event.id })),
      );
      assert.equal(counting.loads, 2);
      assert.deepEqual(await rows(["after-docs", "late-b-docs"]), [
        ["5", v2.id, "docs", null],
        ["3", v2.id, "b-deal", b.id],
      ]);

      // The hold writer's settle batch rates its events the same way, with one load.
      const holds = new Holds(store, counting);
      const holdWriter = new HoldWriter(store, holds, counting);
      const placed = okv(
        (
          (await holdWriter.authorize(
            tenantId,
            {
              customerId: customer.id,
              subjectId: null,
              action: "docs",
              estimate: { credits: credits(20n) },
              holdTimeoutSeconds: 300,
            },
            null,
          )) as { result: Result<{ hold: { id: string; walletId: string } | null }> }
        ).result,
      );
      const loads = counting.loads;
      const settleEvent = (id: string, time: number) => ({
        id,
        action: "docs",
        dimensions: {},
        quantities: { pages: UNIT },
        time,
        status: "succeeded" as const,
        runId: null,
        reportedCost: null,
        fingerprint: id,
      });
      await holdWriter.settle(
        tenantId,
        { id: placed.hold!.id, customerId: customer.id, walletId: placed.hold!.walletId },
        { events: [settleEvent("held-a", T0 + 9 * DAY), settleEvent("held-b", T0 + 13 * DAY)] },
        null,
      );
      assert.equal(counting.loads, loads + 1, "the settle batch loaded the pricing once");
      assert.deepEqual(await rows(["held-a", "held-b"]), [
        ["4", v1.id, "a-deal", a.id],
        ["3", v2.id, "b-deal", b.id],
      ]);
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("pricing set by hand for a window prices it with its own card and pin and leaves the base; bad input is refused with nothing changed", async () => {
      const { tenantId, customer, list, other, v1, o1, publishV2 } = await twoCards();
      okv(await store.advanceClock(tenantId, T0 + DAY));
      const v2 = okv(await publishV2());
      okv(await store.advanceClock(tenantId, T0 + 10 * DAY));
      const set = (input: Parameters<Metering["setCustomerPricing"]>[3]) =>
        store.db.transaction((tx) => metering.setCustomerPricing(tx, tenantId, customer.id, input));
      // The base: Other, for all time.
      okv(await set({ rateCardId: other.id, pinnedVersionId: null, overrides: [] }));
      // List pinned at v1 for three days in the past, with a chat discount on its last day.
      const w = okv(
        await set({
          rateCardId: list.id,
          pinnedVersionId: v1.id,
          overrides: [],
          window: { from: T0 + 5 * DAY, until: T0 + 8 * DAY },
        }),
      );
      okv(
        await set({
          rateCardId: list.id,
          pinnedVersionId: v1.id,
          overrides: [{ id: "promo", action: "chat", quantity: "tokens", rate: "0.5" }],
          window: { from: T0 + 7 * DAY, until: T0 + 8 * DAY },
        }),
      );
      assert.deepEqual([w.rateCardId, w.pinnedVersionId], [other.id, null], "the base is left as it was");
      const snapshot = async () => {
        const p = (await metering.customerPricing(store.db, tenantId, [customer.id])).get(customer.id)!;
        return {
          base: [p.rateCardId, p.pinnedVersionId, p.contractId, p.overridesFrom, p.overridesUntil],
          history: p.overrideHistory.map((t) => [
            t.source,
            t.from,
            t.until,
            t.rateCardId,
            t.pinnedVersionId,
            t.input,
          ]),
        };
      };
      const before = await snapshot();
      assert.deepEqual(
        before.history.map((h) => h.slice(0, 5)),
        [
          ["manual", null, T0 + 5 * DAY, other.id, null],
          ["manual", T0 + 5 * DAY, T0 + 7 * DAY, list.id, v1.id],
          ["manual", T0 + 7 * DAY, T0 + 8 * DAY, list.id, v1.id],
          ["manual", T0 + 8 * DAY, null, other.id, null],
        ],
      );
      for (const [id, time] of [
        ["before", T0 + 4 * DAY],
        ["pinned", T0 + 6 * DAY],
        ["promo", T0 + 7 * DAY],
        ["after", T0 + 9 * DAY],
      ] as const) {
        const [r] = await writer.submit(tenantId, [
          { event: usageEvent(customer.id, id, time, "chat"), fingerprint: id },
        ]);
        assert.equal(r?.status, "accepted", id);
      }
      assert.deepEqual(
        await Promise.all(["before", "pinned", "promo", "after"].map((id) => ratedRow(tenantId, id))),
        [
          ["7", o1.id, "chat", null],
          ["1", v1.id, "chat", null],
          ["0.5", v1.id, "promo", "manual"],
          ["7", o1.id, "chat", null],
        ],
      );
      // Refused, changing nothing: a version of another card (with or without a window, or as
      // the default card's), an unknown card, an unknown customer.
      const window = { from: T0 + 6 * DAY, until: T0 + 9 * DAY };
      const code = (r: Result<unknown>) => (r.ok ? "ok" : r.error.code);
      for (const input of [
        { rateCardId: other.id, pinnedVersionId: v2.id, overrides: [], window },
        { rateCardId: list.id, pinnedVersionId: o1.id, overrides: [], window: null },
        { rateCardId: null, pinnedVersionId: o1.id, overrides: [], window },
        { rateCardId: "rcd_nobody", pinnedVersionId: null, overrides: [], window },
        { rateCardId: "rcd_nobody", pinnedVersionId: null, overrides: [] },
        { rateCardId: list.id, pinnedVersionId: "rcv_nobody", overrides: [], window },
      ]) {
        assert.equal(code(await set(input)), "not_found", JSON.stringify(input));
        assert.deepEqual(await snapshot(), before, JSON.stringify(input));
      }
      const nobody = await store.db.transaction((tx) =>
        metering.setCustomerPricing(tx, tenantId, "cus_nobody", {
          rateCardId: null,
          pinnedVersionId: null,
          overrides: [],
          window,
        }),
      );
      assert.equal(code(nobody), "not_found");
      const { rows } = await store.db.query(
        "SELECT count(*)::int AS n FROM customer_pricing WHERE tenant_id = $1 AND customer_id = 'cus_nobody'",
        [tenantId],
      );
      assert.equal(Number(rows[0]!.n), 0);
    });

    test("migration 20's backfill rebuilds the history from what exists and keeps every recorded rating", async () => {
      const { tenantId, customer: chained } = await pricedWorld();
      const make = async () =>
        okv(await store.db.transaction((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
      const [emptied, handSet, handFirst] = [await make(), await make(), await make()];
      const sign = async (customerId: string, from: number, until: number, line: string, rate: string) =>
        okv(
          await store.db.transaction((tx) =>
            contracts.create(tx, tenantId, pricingContract(customerId, from, until, line, rate)),
          ),
        );
      const a = await sign(chained.id, T0 + DAY, T0 + 10 * DAY, "a-deal", "0.5");
      const b = await sign(chained.id, T0 + 12 * DAY, T0 + 60 * DAY, "b-deal", "0.25");
      const e = await sign(emptied.id, T0 + DAY, T0 + 60 * DAY, "e-deal", "0.5");
      await sign(handSet.id, T0 + DAY, T0 + 60 * DAY, "h-deal", "0.5");
      const handByHand = async (customerId: string) =>
        okv(
          await store.db.transaction((tx) =>
            metering.setCustomerPricing(tx, tenantId, customerId, {
              rateCardId: null,
              pinnedVersionId: null,
              overrides: deal("hand", "0.1"),
            }),
          ),
        );
      await handByHand(handFirst.id);
      const f = await sign(handFirst.id, T0 + 5 * DAY, T0 + 60 * DAY, "f-deal", "0.75");
      // Events recorded as the terms were applied, along the way.
      const recorded: [string, string, number][] = [];
      const record = async (customerId: string, id: string, time: number) => {
        await rate(tenantId, customerId, id, time);
        recorded.push([customerId, id, time]);
      };
      okv(await store.advanceClock(tenantId, T0 + DAY));
      // Terminated the instant its term started: its window is empty.
      okv(await store.db.transaction((tx) => contracts.terminate(tx, tenantId, e.id)));
      okv(await store.advanceClock(tenantId, T0 + 3 * DAY));
      await record(chained.id, "c1", T0 + 2 * DAY);
      await record(emptied.id, "e1", T0 + 2 * DAY);
      await record(handSet.id, "h1", T0 + 2 * DAY);
      await record(handFirst.id, "f0", T0 + 2 * DAY);
      await handByHand(handSet.id);
      okv(await store.advanceClock(tenantId, T0 + 11 * DAY));
      await record(chained.id, "c2", T0 + 10 * DAY + HOUR);
      await record(handFirst.id, "f1", T0 + 6 * DAY);
      okv(await store.advanceClock(tenantId, T0 + 13 * DAY));
      await record(chained.id, "c3", T0 + 12 * DAY);
      await record(chained.id, "c4", T0 + 9 * DAY);
      await record(handSet.id, "h2", T0 + 12 * DAY);
      const customers = [chained.id, emptied.id, handSet.id, handFirst.id];
      const live = Object.fromEntries(
        await Promise.all(customers.map(async (c) => [c, await windowsOf(tenantId, c)])),
      );
      assert.deepEqual(live, {
        [chained.id]: [
          [a.id, T0 + DAY, T0 + 10 * DAY, ["a-deal"]],
          [b.id, T0 + 12 * DAY, T0 + 60 * DAY, ["b-deal"]],
        ],
        [emptied.id]: [],
        [handSet.id]: [["manual", null, null, ["hand"]]],
        [handFirst.id]: [
          ["manual", null, T0 + 5 * DAY, ["hand"]],
          [f.id, T0 + 5 * DAY, T0 + 60 * DAY, ["f-deal"]],
        ],
      });

      // Before migration 20 there was no history: drop it (in a transaction rolled back at the
      // end, since the backfill runs over every tenant) and run the backfill's statements.
      const backfill = splitStatements(MIGRATIONS.find((m) => m.version === 20)!.sql).filter((q) =>
        q.startsWith("INSERT"),
      );
      assert.equal(backfill.length, 2);
      const ROLLBACK = new Error("rolled back");
      await assert.rejects(
        store.db.transaction(async (tx) => {
          await tx.query("DELETE FROM customer_override_terms");
          for (const q of backfill) await tx.query(q);
          const rebuilt = Object.fromEntries(
            await Promise.all(customers.map(async (c) => [c, await windowsOf(tenantId, c, tx)])),
          );
          // Everything the contracts table can tell is rebuilt; pricing set by hand before a
          // contract was overwritten in customer_pricing and cannot be (the card priced those
          // late events before this migration, and still does).
          assert.deepEqual(rebuilt, { ...live, [handFirst.id]: [live[handFirst.id]![1]] });
          // Existing ratings are unchanged: wherever the terms before the migration (the
          // customer_pricing row, in force over its window) applied, the history applies the
          // same lines. Elsewhere it differs only inside an earlier contract's term (the fix).
          const catalog = await metering.catalog(tx, tenantId);
          const pricing = await metering.customerPricing(tx, tenantId, customers);
          const { rows: before } = await tx.query(
            "SELECT customer_id, overrides, overrides_from, overrides_until FROM customer_pricing WHERE tenant_id = $1",
            [tenantId],
          );
          const ms = (v: unknown) => (v === null ? null : new Date(v as string).getTime());
          for (const row of before) {
            const customerId = String(row.customer_id);
            const lines = (JSON.parse(String(row.overrides)) as { id: string }[]).map((l) => l.id);
            const [from, until] = [ms(row.overrides_from), ms(row.overrides_until)];
            for (let t = T0; t <= T0 + 70 * DAY; t += HOUR) {
              const old = (from === null || t >= from) && (until === null || t < until) ? lines : [];
              const now = Metering.pricingAt(catalog, pricing.get(customerId), t)!.overrides.map((l) => l.id);
              if (old.length > 0) assert.deepEqual(now, old, `${customerId} at ${t}`);
              else if (customerId !== chained.id || t >= T0 + 10 * DAY)
                assert.deepEqual(now, [], `${customerId} at ${t}`);
              else assert.deepEqual(now, t >= T0 + DAY ? ["a-deal"] : [], `A's term at ${t}`);
            }
          }
          // The chained customer's events, recorded with the live history (the late one in A's
          // term too), are rated again by the rebuilt one as they were recorded.
          for (const [customerId, id, time] of recorded.filter(([c]) => c === chained.id)) {
            const { rows } = await tx.query(
              "SELECT credits::text AS credits, detail FROM usage_events WHERE tenant_id = $1 AND event_id = $2",
              [tenantId, id],
            );
            const at = Metering.pricingAt(catalog, pricing.get(customerId), time)!;
            const again = rateEvent(
              at.content,
              at.overrides,
              { action: "chat", dimensions: {}, quantities: { tokens: UNIT }, status: "succeeded" },
              () => 0n,
            );
            if (!again.ok) assert.fail(again.error.message);
            const detail =
              typeof rows[0]!.detail === "string" ? JSON.parse(rows[0]!.detail) : rows[0]!.detail;
            assert.deepEqual(
              [again.value.credits.toString(), again.value.lines[0]?.lineId, at.overridesSource],
              [rows[0]!.credits, detail.explanation.lines[0].line_id, detail.explanation.override_source],
              id,
            );
          }
          throw ROLLBACK;
        }),
        (e) => e === ROLLBACK,
      );
      assert.deepEqual(await windowsOf(tenantId, handFirst.id), live[handFirst.id]);
    });

    test("migration 21's backfill gives each entry the card and pin it was set with where known, and keeps every recorded rating", async () => {
      const { tenantId, customer: p, list, other, v1, o1, publishV2, funded } = await twoCards();
      const [m, g] = [await funded(), await funded()];
      const line = (id: string, rate: string) => [{ id, action: "docs", quantity: "pages", rate }];
      const setBy = async (customerId: string, input: Parameters<Metering["setCustomerPricing"]>[3]) =>
        okv(await store.db.transaction((tx) => metering.setCustomerPricing(tx, tenantId, customerId, input)));
      const sign = async (input: Parameters<Contracts["create"]>[2]) =>
        okv(await store.db.transaction((tx) => contracts.create(tx, tenantId, input)));
      const term = (customerId: string, from: number, until: number) => ({
        customerId,
        startsAt: from,
        endsAt: until,
        commitment: 0n,
        schedule: { kind: "upfront" as const },
        creditPrice: { amount: 8_000_000n, currency: "USD" },
      });
      const recorded: [string, string, number, "chat" | "docs"][] = [];
      const record = async (customerId: string, id: string, time: number, action: "chat" | "docs") => {
        const [r] = await writer.submit(tenantId, [
          { event: usageEvent(customerId, id, time, action), fingerprint: id },
        ]);
        assert.equal(r?.status, "accepted", id);
        recorded.push([customerId, id, time, action]);
      };
      okv(await store.advanceClock(tenantId, T0 + 2 * HOUR));
      // P: pricing set by hand (List pinned at v1), then contract A (pins v1), then B (pins v2).
      await setBy(p.id, { rateCardId: list.id, pinnedVersionId: v1.id, overrides: line("hand", "2") });
      await record(p.id, "p0", T0 + HOUR, "docs");
      // M: Other by hand, and a promotion for a window, on the same card.
      await setBy(m.id, { rateCardId: other.id, pinnedVersionId: null, overrides: line("m-deal", "6") });
      const a = await sign({
        ...term(p.id, T0 + DAY, T0 + 10 * DAY),
        allowRateCardUpgrades: false,
        overrides: line("a-deal", "4"),
      });
      // G: a contract on Other without overrides (before migration 21 it left no entry).
      await sign({ ...term(g.id, T0 + DAY, T0 + 3 * DAY), rateCardId: other.id });
      okv(await store.advanceClock(tenantId, T0 + 2 * DAY));
      await record(p.id, "p1", T0 + 2 * DAY, "docs");
      await record(p.id, "p1c", T0 + 2 * DAY, "chat");
      await record(g.id, "g1", T0 + 2 * DAY, "chat");
      await setBy(m.id, {
        rateCardId: other.id,
        pinnedVersionId: null,
        overrides: line("promo", "1"),
        window: { from: T0 + 2 * DAY, until: T0 + 4 * DAY },
      });
      okv(await store.advanceClock(tenantId, T0 + 3 * DAY));
      await record(m.id, "m1", T0 + 2 * DAY + 12 * HOUR, "docs");
      okv(await store.advanceClock(tenantId, T0 + 5 * DAY));
      const v2 = okv(await publishV2());
      await record(m.id, "m2", T0 + 5 * DAY, "docs");
      const b = await sign({
        ...term(p.id, T0 + 10 * DAY, T0 + 60 * DAY),
        allowRateCardUpgrades: false,
        overrides: line("b-deal", "3"),
      });
      okv(await store.advanceClock(tenantId, T0 + 11 * DAY));
      await record(p.id, "p2", T0 + 11 * DAY, "docs");
      await record(p.id, "p3", T0 + 9 * DAY, "docs");
      await record(p.id, "p4", T0 + 9 * DAY, "chat");
      const customers = [p.id, m.id, g.id];
      const historyOf = async (ex: SqlExecutor) => {
        const pricing = await metering.customerPricing(ex, tenantId, customers);
        return customers.map((c) =>
          pricing
            .get(c)!
            .overrideHistory.map((t) => [
              t.source,
              t.from,
              t.until,
              t.rateCardId,
              t.pinnedVersionId,
              t.input.map((l) => l.id),
            ]),
        );
      };
      const live = await historyOf(store.db);
      assert.deepEqual(live, [
        [
          ["manual", null, T0 + DAY, list.id, v1.id, ["hand"]],
          [a.id, T0 + DAY, T0 + 10 * DAY, list.id, v1.id, ["a-deal"]],
          [b.id, T0 + 10 * DAY, T0 + 60 * DAY, list.id, v2.id, ["b-deal"]],
        ],
        [
          ["manual", null, T0 + 2 * DAY, other.id, null, ["m-deal"]],
          ["manual", T0 + 2 * DAY, T0 + 4 * DAY, other.id, null, ["promo"]],
          ["manual", T0 + 4 * DAY, null, other.id, null, ["m-deal"]],
        ],
        [
          ["manual", null, T0 + DAY, null, null, []],
          [(await contracts.list(tenantId, g.id))[0]!.id, T0 + DAY, T0 + 3 * DAY, other.id, null, []],
        ],
      ]);

      const usageRows = (ex: SqlExecutor) =>
        ex.query("SELECT * FROM usage_events WHERE tenant_id = $1 ORDER BY event_id", [tenantId]);
      const migration = splitStatements(MIGRATIONS.find((x) => x.version === 21)!.sql);
      const ROLLBACK = new Error("rolled back");
      await assert.rejects(
        store.db.transaction(async (tx) => {
          // The state before migration 21 (rolled back at the end: the backfill runs over every
          // tenant): entries had no card or pin, and a window without lines was a gap.
          const events = (await usageRows(tx)).rows;
          await tx.query("DELETE FROM customer_override_terms WHERE lines = '[]'");
          await tx.query("ALTER TABLE customer_override_terms DROP COLUMN rate_card_id");
          await tx.query("ALTER TABLE customer_override_terms DROP COLUMN pinned_version_id");
          for (const q of migration) await tx.query(q);
          assert.deepEqual((await usageRows(tx)).rows, events, "no recorded event is touched");
          const rebuilt = await historyOf(tx);
          // A contract's entries get its own card and pin; entries set by hand, the current base
          // (P's was set before A and B moved the base: the v1 it was set with is not known, so it
          // gets B's v2, what rated late events there before the migration); no entry without lines.
          assert.deepEqual(rebuilt, [
            [["manual", null, T0 + DAY, list.id, v2.id, ["hand"]], live[0]![1], live[0]![2]],
            live[1],
            [],
          ]);
          // Every recorded event, rated again by the backfilled history, is rated as recorded,
          // except P's event in the window set by hand before the contracts (its version only:
          // the lines set by hand priced it, and still do).
          const catalog = await metering.catalog(tx, tenantId);
          const pricing = await metering.customerPricing(tx, tenantId, customers);
          for (const [customerId, id, time, action] of recorded) {
            const at = Metering.pricingAt(catalog, pricing.get(customerId), time)!;
            const again = rateEvent(
              at.content,
              at.overrides,
              {
                action,
                dimensions: {},
                quantities: { [action === "chat" ? "tokens" : "pages"]: UNIT },
                status: "succeeded",
              },
              () => 0n,
            );
            if (!again.ok) assert.fail(again.error.message);
            const { rows } = await tx.query(
              "SELECT credits::text AS credits, detail FROM usage_events WHERE tenant_id = $1 AND event_id = $2",
              [tenantId, id],
            );
            const detail =
              typeof rows[0]!.detail === "string" ? JSON.parse(rows[0]!.detail) : rows[0]!.detail;
            const was = [
              rows[0]!.credits,
              detail.rate_card_version_id,
              detail.explanation.lines[0].line_id,
              detail.explanation.override_source,
            ];
            // The explanation names the overrides' source when one of its lines priced the event.
            const source = again.value.lines.some((l) => l.override) ? at.overridesSource : null;
            const now = [again.value.credits.toString(), at.versionId, again.value.lines[0]?.lineId, source];
            if (id === "p0") {
              assert.deepEqual(was, [credits(2n).toString(), v1.id, "hand", "manual"]);
              assert.deepEqual(now, [credits(2n).toString(), v2.id, "hand", "manual"]);
            } else assert.deepEqual(now, was, id);
          }
          // What each recorded event was priced by, for the record.
          assert.deepEqual(
            recorded.map(([, id]) => id),
            ["p0", "p1", "p1c", "g1", "m1", "m2", "p2", "p3", "p4"],
          );
          assert.equal(Metering.pricingAt(catalog, pricing.get(g.id), T0 + 2 * DAY)?.versionId, o1.id);
          throw ROLLBACK;
        }),
        (e) => e === ROLLBACK,
      );
      assert.deepEqual(await historyOf(store.db), live);
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
