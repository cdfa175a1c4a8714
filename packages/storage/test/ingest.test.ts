/**
 * The group-commit ingest writer on PGlite and (when DATABASE_URL is set) PostgreSQL:
 * rating, drawing, deduplication, overage, tiers, effective-dated versions, contract
 * overrides, cost and revenue, each checked against the ledger and reconciled. A property
 * proves that re-ingesting any batch changes nothing; on PostgreSQL, many concurrent
 * submitters on one hot wallet lose and overdraw nothing.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  type GrantInput,
  type LedgerErrorCode,
  parseDecimal,
  QUANTITY_SCALE,
  type RateCardInput,
  type Result,
  type UsageEvent,
} from "@drawdown/core";
import fc from "fast-check";
import {
  type ChargeRecord,
  type EventDetail,
  type IngestResult,
  IngestWriter,
  Metering,
  type SqlExecutor,
  type Store,
} from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";

const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Credits (or money) as units at scale 9, from a decimal string: `cr("7.5")`. */
const cr = (text: string): bigint => {
  const r = parseDecimal(text, 9, { allowZero: true, allowNegative: true });
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
};
/** A quantity at 9 decimals from a count or a decimal string. */
const qty = (v: number | string): bigint => {
  const r = parseDecimal(String(v), QUANTITY_SCALE, { allowZero: true });
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
};

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function failed<T>(r: Result<T>, code: LedgerErrorCode): void {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
}

/** The charge of an accepted (or duplicate) result. */
function charged(r: IngestResult | undefined, status: "accepted" | "duplicate" = "accepted"): ChargeRecord {
  assert.ok(r, "a result");
  if (r.status === "rejected") assert.fail(`expected ${status}, got rejected ${r.code}: ${r.message}`);
  assert.equal(r.status, status);
  return r.charge;
}

function rejected(r: IngestResult | undefined, code: string): void {
  assert.ok(r, "a result");
  assert.equal(
    r.status,
    "rejected",
    JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)),
  );
  if (r.status === "rejected") {
    assert.equal(r.code, code, r.message);
    assert.ok(r.message.length > 0);
  }
}

/** The writer's fingerprint of an event: its normalized body (the server hashes the wire body the same way). */
const fingerprintOf = (e: UsageEvent): string =>
  createHash("sha256")
    .update(JSON.stringify(e, (_k, v) => (typeof v === "bigint" ? v.toString() : v)))
    .digest("base64url");

/**
 * The standard card: 1 credit per 1,000 input tokens, 3 per 1,000 output tokens (0.5 for the
 * mini model), 2 per search call with a minimum of 5, graduated document pages, a free ping,
 * a turbo multiplier of 6 and internal evals non-billable.
 */
const CARD: RateCardInput = {
  lines: [
    { id: "chat-in", action: "chat.completion", quantity: "input_tokens", rate: "1", per: "1000" },
    { id: "chat-out", action: "chat.completion", quantity: "output_tokens", rate: "3", per: "1000" },
    {
      id: "chat-out-mini",
      action: "chat.completion",
      match: { model: "mini" },
      quantity: "output_tokens",
      rate: "0.5",
      per: "1000",
    },
    { id: "search", action: "tool.search", quantity: "calls", rate: "2", minimum: "5" },
    {
      id: "docs",
      action: "document.parse",
      quantity: "pages",
      tiers: [
        { up_to: "100", rate: "1" },
        { up_to: null, rate: "0.5" },
      ],
    },
    { id: "ping", action: "health.ping", quantity: "calls", free: true },
    { id: "unit", action: "unit.call", quantity: "calls", rate: "0.5" },
  ],
  multipliers: [{ dimension: "tier", value: "turbo", factor: "6" }],
  non_billable: [{ action: "chat.*", match: { feature: "eval" }, reason: "internal evals" }],
};

/** Everything the tests look at, as plain comparable values. */
async function snapshot(ex: SqlExecutor, tenantId: string) {
  const q = async (sql: string) => (await ex.query(sql, [tenantId])).rows;
  return {
    wallets: await q(
      "SELECT id, balance::text AS balance, overdraft::text AS overdraft FROM wallets WHERE tenant_id = $1 ORDER BY id",
    ),
    grants: await q(
      "SELECT id, remaining::text AS remaining, status FROM grants WHERE tenant_id = $1 ORDER BY id",
    ),
    journal: await q(
      "SELECT id, kind, customer_id, posted_at FROM journal_transactions WHERE tenant_id = $1 ORDER BY seq",
    ),
    entries: await q(
      "SELECT tx_id, idx, account, wallet_id, grant_id, amount::text AS amount FROM journal_entries WHERE tenant_id = $1 ORDER BY tx_id, idx",
    ),
    events: await q(
      `SELECT event_id, fingerprint, customer_id, action, model, time, run_id, outcome, credits::text AS credits,
         charged::text AS charged, unpaid::text AS unpaid, cost::text AS cost, revenue::text AS revenue, detail::text AS detail
       FROM usage_events WHERE tenant_id = $1 ORDER BY event_id`,
    ),
    counters: await q(
      "SELECT customer_id, period, line_id, quantity::text AS quantity FROM usage_counters WHERE tenant_id = $1 ORDER BY 1, 2, 3",
    ),
  };
}

async function eventRow(store: Store, tenantId: string, id: string) {
  const { rows } = await store.db.query("SELECT * FROM usage_events WHERE tenant_id = $1 AND event_id = $2", [
    tenantId,
    id,
  ]);
  const r = rows[0];
  assert.ok(r, `event ${id} is recorded`);
  const detail = (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as EventDetail;
  return {
    outcome: String(r.outcome),
    credits: BigInt(String(r.credits)),
    charged: BigInt(String(r.charged)),
    unpaid: BigInt(String(r.unpaid)),
    cost: r.cost === null ? null : BigInt(String(r.cost)),
    revenue: BigInt(String(r.revenue)),
    model: r.model === null ? null : String(r.model),
    detail,
  };
}

for (const backend of backends()) {
  describe(`ingest writer on ${backend.name}`, () => {
    let database: TestDatabase;
    let store: Store;
    let metering: Metering;
    let writer: IngestWriter;
    let now = T0;
    let seq = 0;

    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
      metering = new Metering(() => now, store.newId);
      writer = new IngestWriter(store, metering);
    });
    after(async () => {
      await database?.close();
    });

    const write = <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => store.db.transaction(fn);

    /**
     * A fresh tenant at T0: Acme (a member Ann with her own wallet, an agent Bot without one),
     * Beta, and the standard card published now.
     */
    async function world(card: RateCardInput = CARD) {
      now = T0;
      const tenant = await store.createTenant("Ingest", "test");
      const tenantId = tenant.id;
      const acme = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
      const beta = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
      const ann = okv(
        await write((tx) => store.createSubject(tx, tenantId, { customerId: acme.id, kind: "member" })),
      );
      const bot = okv(
        await write((tx) => store.createSubject(tx, tenantId, { customerId: acme.id, kind: "agent" })),
      );
      const annWallet = okv(await write((tx) => store.createMemberWallet(tx, tenantId, acme.id, ann.id)));
      const rateCard = okv(await write((tx) => metering.createRateCard(tx, tenantId, "Standard")));
      const v1 = okv(
        await write((tx) => metering.publishRateCardVersion(tx, tenantId, rateCard.id, null, card)),
      );
      return { tenantId, acme, beta, ann, bot, annWallet, card: rateCard, v1 };
    }

    async function grant(tenantId: string, input: GrantInput) {
      return okv(await write((tx) => store.createGrant(tx, tenantId, input))).grant;
    }

    /** An event at the clock's time, with a new id unless given. */
    function ev(
      customerId: string,
      action: string,
      quantities: Record<string, number | string>,
      extra: Partial<UsageEvent> = {},
    ): UsageEvent {
      return {
        id: `evt_${++seq}`,
        customerId,
        subjectId: null,
        action,
        dimensions: {},
        quantities: Object.fromEntries(Object.entries(quantities).map(([k, v]) => [k, qty(v)])),
        time: now,
        status: "succeeded",
        runId: null,
        reportedCost: null,
        ...extra,
      };
    }

    const submit = (tenantId: string, events: readonly UsageEvent[]) =>
      writer.submit(
        tenantId,
        events.map((event) => ({ event, fingerprint: fingerprintOf(event) })),
      );

    async function balanceOf(tenantId: string, walletId: string): Promise<bigint> {
      return (await store.getWallet(tenantId, walletId))!.balance;
    }

    async function assertClean(tenantId: string) {
      const report = await store.reconcile(tenantId);
      assert.deepEqual(report.differences, [], "reconcile is clean");
    }

    async function setPricing(
      tenantId: string,
      customerId: string,
      input: Partial<Parameters<Metering["setCustomerPricing"]>[3]>,
    ) {
      return okv(
        await write((tx) =>
          metering.setCustomerPricing(tx, tenantId, customerId, {
            rateCardId: null,
            pinnedVersionId: null,
            overrides: [],
            ...input,
          }),
        ),
      );
    }

    test("an accepted event is rated exactly, drawn, journaled and recorded with its explanation", async () => {
      const w = await world();
      const plan = await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      const e = ev(
        w.acme.id,
        "chat.completion",
        { input_tokens: 1500, output_tokens: 2000 },
        {
          dimensions: { model: "big" },
          runId: "run_1",
        },
      );
      const [r] = await submit(w.tenantId, [e]);
      const c = charged(r);
      assert.equal(r!.id, e.id);
      assert.deepEqual(
        { ...c, transactionId: null },
        {
          outcome: "charged",
          credits: cr("7.5"),
          drawn: cr("7.5"),
          overdraft: 0n,
          unpaid: 0n,
          reason: null,
          walletId: w.acme.walletId,
          rateCardVersionId: w.v1.id,
          transactionId: null,
        },
      );
      assert.match(c.transactionId ?? "", /^txn_/);
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("92.5"));
      const tx = await store.getTransaction(w.tenantId, c.transactionId!);
      assert.ok(tx);
      assert.equal(tx.kind, "usage");
      assert.equal(tx.customerId, w.acme.id);
      assert.deepEqual(
        tx.entries.map((x) => [x.account.kind === "system" ? x.account.name : x.account.kind, x.amount]),
        [
          ["grant", -cr("7.5")],
          ["consumption", cr("7.5")],
        ],
      );
      const row = await eventRow(store, w.tenantId, e.id);
      assert.equal(row.outcome, "charged");
      assert.equal(row.credits, cr("7.5"));
      assert.equal(row.charged, cr("7.5"));
      assert.equal(row.model, "big");
      assert.equal(row.cost, null, "no cost table, no reported cost");
      assert.equal(row.detail.rate_card_version_id, w.v1.id);
      assert.deepEqual(row.detail.quantities, { input_tokens: "1500", output_tokens: "2000" });
      assert.deepEqual(row.detail.explanation, {
        multiplier: "1",
        lines: [
          {
            line_id: "chat-in",
            quantity: "input_tokens",
            amount: "1500",
            per: "1000",
            pieces: [{ quantity: "1500", rate: "1" }],
            credits: "1.5",
            minimum_applied: false,
            free: false,
            override: false,
          },
          {
            line_id: "chat-out",
            quantity: "output_tokens",
            amount: "2000",
            per: "1000",
            pieces: [{ quantity: "2000", rate: "3" }],
            credits: "6",
            minimum_applied: false,
            free: false,
            override: false,
          },
        ],
        override_source: null,
        rounded: "7.5",
        draws: [{ grant_id: plan.id, wallet_id: w.acme.walletId, credits: "7.5" }],
      });
      await assertClean(w.tenantId);
    });

    test("rating rounds once per event, not per line; multipliers, minimums and the most specific line apply", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("1000"), source: "plan" });
      const events = [
        // 1.5 units + 1.5 units: 3 units exactly, where rounding each line would give 4.
        ev(w.acme.id, "chat.completion", { input_tokens: "0.0000015", output_tokens: "0.0000005" }),
        // Half a unit alone rounds away from zero.
        ev(w.acme.id, "chat.completion", { input_tokens: "0.0000005" }),
        ev(w.acme.id, "chat.completion", { output_tokens: 1000 }, { dimensions: { model: "mini" } }),
        ev(w.acme.id, "chat.completion", { output_tokens: 1000 }, { dimensions: { tier: "turbo" } }),
        ev(w.acme.id, "tool.search", { calls: 1 }),
        ev(w.acme.id, "tool.search", { calls: 4 }),
      ];
      const results = await submit(w.tenantId, events);
      assert.deepEqual(
        results.map((r) => charged(r).credits),
        [3n, 1n, cr("0.5"), cr("18"), cr("5"), cr("8")],
      );
      const sum = results.reduce((a, r) => a + charged(r).credits, 0n);
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("1000") - sum);
      const txIds = new Set(results.map((r) => charged(r).transactionId));
      assert.equal(txIds.size, 1, "one usage transaction per customer per batch");
      const tx = (await store.getTransaction(w.tenantId, [...txIds][0]!))!;
      assert.deepEqual(
        tx.entries.filter((x) => x.account.kind === "system").map((x) => x.amount),
        [sum],
        "the batch's consumption is the sum of its events' charges",
      );
      const turbo = await eventRow(store, w.tenantId, events[3]!.id);
      assert.equal((turbo.detail.explanation as { multiplier: string }).multiplier, "6");
      const min = await eventRow(store, w.tenantId, events[4]!.id);
      assert.equal(
        (min.detail.explanation as { lines: { minimum_applied: boolean }[] }).lines[0]!.minimum_applied,
        true,
      );
      const mini = await eventRow(store, w.tenantId, events[2]!.id);
      assert.equal(
        (mini.detail.explanation as { lines: { line_id: string }[] }).lines[0]!.line_id,
        "chat-out-mini",
      );
      await assertClean(w.tenantId);
    });

    test("a duplicate returns the first result and changes nothing, even after prices change", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      const e = ev(w.acme.id, "chat.completion", { output_tokens: 1000 });
      const first = charged((await submit(w.tenantId, [e]))[0]);
      const before = await snapshot(store.db, w.tenantId);
      now += HOUR;
      okv(
        await write((tx) =>
          metering.publishRateCardVersion(tx, w.tenantId, w.card.id, null, {
            lines: [{ id: "chat-out", action: "chat.completion", quantity: "output_tokens", rate: "100" }],
          }),
        ),
      );
      const again = await submit(w.tenantId, [e]);
      assert.deepEqual(charged(again[0], "duplicate"), first);
      assert.deepEqual(await snapshot(store.db, w.tenantId), before);
      // Also when the duplicate travels with new events in one batch.
      const fresh = ev(w.acme.id, "chat.completion", { output_tokens: 1 });
      const mixed = await submit(w.tenantId, [fresh, e]);
      assert.equal(charged(mixed[0]).credits, cr("100"));
      assert.deepEqual(charged(mixed[1], "duplicate"), first);
      await assertClean(w.tenantId);
    });

    test("the same id with a different body is event_id_reused and changes nothing", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      const e = ev(w.acme.id, "chat.completion", { output_tokens: 1000 });
      charged((await submit(w.tenantId, [e]))[0]);
      const before = await snapshot(store.db, w.tenantId);
      const variants: UsageEvent[] = [
        { ...e, quantities: { output_tokens: qty(1001) } },
        { ...e, customerId: w.beta.id },
        { ...e, status: "failed" },
        { ...e, dimensions: { model: "mini" } },
        { ...e, time: e.time - 1 },
      ];
      for (const r of await submit(w.tenantId, variants)) rejected(r, "event_id_reused");
      assert.deepEqual(await snapshot(store.db, w.tenantId), before);
    });

    test("duplicates within one batch: the first is processed, the rest echo it or are event_id_reused", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      const a = ev(w.acme.id, "chat.completion", { output_tokens: 1000 });
      const altered = { ...a, quantities: { output_tokens: qty(5) } };
      const bad = ev(w.acme.id, "no.such.action", { calls: 1 });
      const results = await submit(w.tenantId, [a, a, altered, bad, bad, a]);
      const first = charged(results[0]);
      assert.equal(first.credits, cr("3"));
      assert.deepEqual(charged(results[1], "duplicate"), first);
      rejected(results[2], "event_id_reused");
      rejected(results[3], "unknown_action");
      rejected(results[4], "unknown_action");
      assert.deepEqual(charged(results[5], "duplicate"), first);
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("97"), "charged once");
      const { rows } = await store.db.query(
        "SELECT count(*)::int AS n FROM usage_events WHERE tenant_id = $1",
        [w.tenantId],
      );
      assert.equal(rows[0]!.n, 1, "one event row; rejected events are not recorded");
      await assertClean(w.tenantId);
    });

    test("unknown customers, subjects and actions are rejected alone; the rest of the batch is accepted", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      const betaMember = okv(
        await write((tx) => store.createSubject(tx, w.tenantId, { customerId: w.beta.id, kind: "member" })),
      );
      const good = ev(w.acme.id, "tool.search", { calls: 1 });
      const events = [
        ev("cus_nobody", "tool.search", { calls: 1 }),
        ev(w.acme.id, "tool.search", { calls: 1 }, { subjectId: "sub_nobody" }),
        ev(w.acme.id, "tool.search", { calls: 1 }, { subjectId: betaMember.id }),
        ev(w.acme.id, "image.generate", { images: 1 }),
        good,
      ];
      const results = await submit(w.tenantId, events);
      rejected(results[0], "not_found");
      rejected(results[1], "not_found");
      rejected(results[2], "not_found");
      rejected(results[3], "unknown_action");
      assert.equal(charged(results[4]).credits, cr("5"));
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("95"));
      // A rejected event is not recorded: its id may be sent again, corrected.
      const fixed = { ...events[3]!, action: "tool.search", quantities: { calls: qty(1) } };
      assert.equal(charged((await submit(w.tenantId, [fixed]))[0]).credits, cr("5"));
      // Another tenant's customer is unknown here.
      const other = await world();
      rejected((await submit(other.tenantId, [ev(w.acme.id, "tool.search", { calls: 1 })]))[0], "not_found");
      await assertClean(w.tenantId);
    });

    test("event time: 7 days late at most, 5 minutes ahead at most, and a version must be in force", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("100"), source: "plan" });
      now = T0 + 10 * DAY;
      const at = (time: number) => ev(w.acme.id, "unit.call", { calls: 1 }, { time });
      const results = await submit(w.tenantId, [
        at(now - 7 * DAY - 1),
        at(now - 7 * DAY),
        at(now + 5 * MINUTE),
        at(now + 5 * MINUTE + 1),
      ]);
      rejected(results[0], "event_too_old");
      charged(results[1]);
      charged(results[2]);
      rejected(results[3], "event_in_future");
      // Before the first version took effect (within the grace window): no card in force.
      const late = await world();
      await grant(late.tenantId, { walletId: late.acme.walletId, amount: cr("100"), source: "plan" });
      now = T0 + HOUR;
      rejected(
        (await submit(late.tenantId, [ev(late.acme.id, "unit.call", { calls: 1 }, { time: T0 - 1 })]))[0],
        "no_rate_card",
      );
      // No card at all.
      const bare = await store.createTenant("Bare", "test");
      const c = okv(await write((tx) => store.createCustomer(tx, bare.id, { kind: "individual" })));
      rejected((await submit(bare.id, [ev(c.id, "unit.call", { calls: 1 })]))[0], "no_rate_card");
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("99"));
      await assertClean(w.tenantId);
    });

    test("failed, non-billable and free events are recorded at zero and leave balances unchanged", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("10"), source: "plan" });
      const before = await snapshot(store.db, w.tenantId);
      const events = [
        ev(w.acme.id, "chat.completion", { output_tokens: 100_000 }, { status: "failed" }),
        ev(w.acme.id, "chat.completion", { output_tokens: 100_000 }, { dimensions: { feature: "eval" } }),
        ev(w.acme.id, "health.ping", { calls: 1000 }),
        // Zero everywhere, even when the wallet could not pay for it.
        ev(w.beta.id, "chat.completion", { output_tokens: 100_000 }, { status: "failed" }),
      ];
      const results = await submit(w.tenantId, events);
      const reasons = results.map((r) => {
        const c = charged(r);
        assert.equal(c.outcome, "zero");
        assert.equal(c.credits, 0n);
        assert.equal(c.drawn, 0n);
        assert.equal(c.unpaid, 0n);
        assert.equal(c.transactionId, null);
        return c.reason;
      });
      assert.deepEqual(reasons, ["failed", "non_billable: internal evals", "free", "failed"]);
      const after = await snapshot(store.db, w.tenantId);
      assert.deepEqual(after.wallets, before.wallets);
      assert.deepEqual(after.grants, before.grants);
      assert.deepEqual(after.journal, before.journal, "no journal transaction");
      assert.equal(after.events.length, 4, "recorded, at zero");
      assert.ok(after.events.every((r) => r.outcome === "zero" && r.credits === "0"));
      await assertClean(w.tenantId);
    });

    test("a member's wallet pays first, then the customer's pool; an agent pays from the pool", async () => {
      const w = await world();
      const own = await grant(w.tenantId, { walletId: w.annWallet.id, amount: cr("5"), source: "plan" });
      const pool = await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("20"), source: "plan" });
      const e1 = ev(
        w.acme.id,
        "chat.completion",
        { input_tokens: 1500, output_tokens: 2000 },
        { subjectId: w.ann.id },
      );
      const e2 = ev(w.acme.id, "unit.call", { calls: 4 }, { subjectId: w.bot.id });
      const [r1, r2] = await submit(w.tenantId, [e1, e2]);
      assert.equal(charged(r1).walletId, w.annWallet.id);
      assert.equal(charged(r1).drawn, cr("7.5"));
      assert.equal(charged(r2).walletId, w.acme.walletId);
      const row = await eventRow(store, w.tenantId, e1.id);
      assert.equal(row.detail.subject_id, w.ann.id);
      assert.deepEqual((row.detail.explanation as { draws: unknown }).draws, [
        { grant_id: own.id, wallet_id: w.annWallet.id, credits: "5" },
        { grant_id: pool.id, wallet_id: w.acme.walletId, credits: "2.5" },
      ]);
      assert.equal(await balanceOf(w.tenantId, w.annWallet.id), 0n);
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("15.5"));
      await assertClean(w.tenantId);
    });

    test("hard cap: a charge the credits cannot cover is recorded unpaid and draws nothing", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("10"), source: "plan" });
      const events = [
        ev(w.acme.id, "chat.completion", { input_tokens: 1500, output_tokens: 2000 }),
        ev(w.acme.id, "chat.completion", { input_tokens: 1500, output_tokens: 2000 }),
        ev(w.acme.id, "unit.call", { calls: 2 }),
      ];
      const [a, b, c] = await submit(w.tenantId, events);
      assert.equal(charged(a).outcome, "charged");
      assert.deepEqual(
        { ...charged(b) },
        {
          ...charged(b),
          outcome: "unpaid",
          credits: cr("7.5"),
          drawn: 0n,
          overdraft: 0n,
          unpaid: cr("7.5"),
          reason: "insufficient_credits",
          transactionId: null,
        },
      );
      assert.equal(charged(c).drawn, cr("1"), "a smaller charge after an unpaid one is still paid");
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("1.5"));
      const row = await eventRow(store, w.tenantId, events[1]!.id);
      assert.deepEqual([row.outcome, row.charged, row.unpaid], ["unpaid", 0n, cr("7.5")]);
      assert.deepEqual((row.detail.explanation as { draws: unknown[] }).draws, []);
      // A member's own wallet and the pool together cannot cover it: nothing drawn from either.
      await grant(w.tenantId, { walletId: w.annWallet.id, amount: cr("1"), source: "plan" });
      const [d] = await submit(w.tenantId, [
        ev(w.acme.id, "unit.call", { calls: 10 }, { subjectId: w.ann.id }),
      ]);
      assert.equal(charged(d).outcome, "unpaid");
      assert.equal(await balanceOf(w.tenantId, w.annWallet.id), cr("1"));
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("1.5"));
      await assertClean(w.tenantId);
    });

    test("soft cap: overdraft down to the floor, then unpaid; the policy is checked", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("10"), source: "plan" });
      okv(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, w.acme.walletId, { mode: "soft_cap", floor: -cr("10") }),
        ),
      );
      const chat = () => ev(w.acme.id, "chat.completion", { input_tokens: 1500, output_tokens: 2000 });
      const results = await submit(w.tenantId, [
        chat(),
        chat(),
        chat(),
        ev(w.acme.id, "unit.call", { calls: 10 }),
        ev(w.acme.id, "unit.call", { calls: "0.002" }),
      ]);
      const view = results.map((r) => {
        const c = charged(r);
        return [c.outcome, c.drawn, c.overdraft, c.unpaid];
      });
      assert.deepEqual(view, [
        ["charged", cr("7.5"), 0n, 0n],
        ["charged", cr("2.5"), cr("5"), 0n],
        ["unpaid", 0n, 0n, cr("7.5")],
        ["charged", 0n, cr("5"), 0n],
        ["unpaid", 0n, 0n, cr("0.001")],
      ]);
      const wallet = (await store.getWallet(w.tenantId, w.acme.walletId))!;
      assert.equal(wallet.balance, -cr("10"), "exactly at the floor");
      const { rows } = await store.db.query(
        "SELECT overdraft::text AS o FROM wallets WHERE tenant_id = $1 AND id = $2",
        [w.tenantId, w.acme.walletId],
      );
      assert.equal(rows[0]!.o, cr("10").toString());
      const tx = (await store.getTransaction(w.tenantId, charged(results[1]).transactionId!))!;
      assert.deepEqual(
        tx.entries
          .filter((e) => e.account.kind === "overdraft")
          .map((e) => [e.account.kind === "overdraft" && e.account.walletId, e.amount]),
        [[w.acme.walletId, -cr("10")]],
        "the overdraft is journaled against the pool",
      );
      await assertClean(w.tenantId);

      // The policy cannot be tightened past what is owed, nor set on a member's wallet, nor be positive.
      failed(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, w.acme.walletId, { mode: "hard_cap", floor: 0n }),
        ),
        "invalid_argument",
      );
      failed(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, w.annWallet.id, { mode: "soft_cap", floor: -1n }),
        ),
        "invalid_argument",
      );
      failed(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, w.acme.walletId, { mode: "soft_cap", floor: 1n }),
        ),
        "invalid_argument",
      );
      failed(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, w.acme.walletId, { mode: "hard_cap", floor: -1n }),
        ),
        "invalid_argument",
      );
      failed(
        await write((tx) =>
          metering.setOveragePolicy(tx, w.tenantId, "wal_nobody", { mode: "hard_cap", floor: 0n }),
        ),
        "not_found",
      );
      // New credits pay new charges; the overdraft stays owed.
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("20"), source: "top_up" });
      const [next] = await submit(w.tenantId, [ev(w.acme.id, "unit.call", { calls: 2 })]);
      assert.deepEqual([charged(next).drawn, charged(next).overdraft], [cr("1"), 0n]);
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("9"));
      await assertClean(w.tenantId);
    });

    test("volume tiers count the customer's month across batches, per customer and per period", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("1000"), source: "plan" });
      await grant(w.tenantId, { walletId: w.beta.walletId, amount: cr("1000"), source: "plan" });
      now = T0 + 20 * DAY;
      const docs = (customerId: string, pages: number, time = now) =>
        ev(customerId, "document.parse", { pages }, { time });
      const credits = async (events: UsageEvent[]) =>
        (await submit(w.tenantId, events)).map((r) => charged(r).credits);
      assert.deepEqual(await credits([docs(w.acme.id, 60)]), [cr("60")]);
      const crossing = docs(w.acme.id, 60);
      assert.deepEqual(await credits([crossing]), [cr("50")], "40 at 1, then 20 at 0.5");
      assert.deepEqual(await credits([docs(w.acme.id, 10), docs(w.beta.id, 10)]), [cr("5"), cr("10")]);
      const row = await eventRow(store, w.tenantId, crossing.id);
      assert.deepEqual((row.detail.explanation as { lines: { pieces: unknown }[] }).lines[0]!.pieces, [
        { quantity: "40", rate: "1" },
        { quantity: "20", rate: "0.5" },
      ]);
      // Within one batch, the running total counts too.
      assert.deepEqual(await credits([docs(w.beta.id, 80), docs(w.beta.id, 20)]), [cr("80"), cr("15")]);
      // A new month starts over; an event late from the last month still counts in its own month.
      now = Date.parse("2026-04-02T00:00:00.000Z");
      assert.deepEqual(
        await credits([docs(w.acme.id, 10), docs(w.acme.id, 10, Date.parse("2026-03-31T12:00:00.000Z"))]),
        [cr("10"), cr("5")],
      );
      const counters = (await snapshot(store.db, w.tenantId)).counters.map((r) => [
        r.customer_id,
        new Date(r.period as string).toISOString(),
        r.line_id,
        r.quantity,
      ]);
      assert.deepEqual(
        counters.sort(),
        [
          [w.acme.id, "2026-03-01T00:00:00.000Z", "docs", qty(140).toString()],
          [w.acme.id, "2026-04-01T00:00:00.000Z", "docs", qty(10).toString()],
          [w.beta.id, "2026-03-01T00:00:00.000Z", "docs", qty(110).toString()],
        ].sort(),
      );
      await assertClean(w.tenantId);
    });

    test("versions: in force at the event's time (a scheduled one takes effect on the clock), or pinned", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("1000"), source: "plan" });
      await grant(w.tenantId, { walletId: w.beta.walletId, amount: cr("1000"), source: "plan" });
      const v2At = T0 + 10 * DAY;
      const v2Card: RateCardInput = {
        lines: [{ id: "unit", action: "unit.call", quantity: "calls", rate: "2" }],
      };
      now = T0 + DAY;
      const v2 = okv(
        await write((tx) => metering.publishRateCardVersion(tx, w.tenantId, w.card.id, v2At, v2Card)),
      );
      assert.equal(v2.version, 2);
      // Versions must start after the latest, and never in the past; cards must not be ambiguous.
      failed(
        await write((tx) => metering.publishRateCardVersion(tx, w.tenantId, w.card.id, v2At, v2Card)),
        "rate_card_overlap",
      );
      failed(
        await write((tx) => metering.publishRateCardVersion(tx, w.tenantId, w.card.id, now - 1, v2Card)),
        "rate_card_overlap",
      );
      failed(
        await write((tx) =>
          metering.publishRateCardVersion(tx, w.tenantId, w.card.id, null, {
            lines: [
              { id: "a", action: "unit.call", quantity: "calls", rate: "1" },
              { id: "b", action: "unit.call", quantity: "calls", rate: "2" },
            ],
          }),
        ),
        "invalid_rate_card",
      );
      failed(
        await write((tx) => metering.publishRateCardVersion(tx, w.tenantId, "rcd_nobody", null, v2Card)),
        "not_found",
      );
      await setPricing(w.tenantId, w.beta.id, { pinnedVersionId: w.v1.id });
      const unit = (customerId: string, time = now) => ev(customerId, "unit.call", { calls: 1 }, { time });
      const rate = async (events: UsageEvent[]) =>
        (await submit(w.tenantId, events)).map((r) => [charged(r).rateCardVersionId, charged(r).credits]);

      assert.deepEqual(await rate([unit(w.acme.id), unit(w.beta.id)]), [
        [w.v1.id, cr("0.5")],
        [w.v1.id, cr("0.5")],
      ]);
      // The clock passes v2's start: the same writer and catalog cache now rate by v2.
      now = v2At + HOUR;
      assert.deepEqual(
        await rate([unit(w.acme.id), unit(w.acme.id, v2At - HOUR), unit(w.acme.id, v2At), unit(w.beta.id)]),
        [
          [v2.id, cr("2")],
          [w.v1.id, cr("0.5")],
          [v2.id, cr("2")],
          [w.v1.id, cr("0.5")],
        ],
      );
      // Unpinned again: Beta follows the version in force.
      await setPricing(w.tenantId, w.beta.id, {});
      assert.deepEqual(await rate([unit(w.beta.id)]), [[v2.id, cr("2")]]);
      // A version may be pinned only from the card followed.
      const other = okv(await write((tx) => metering.createRateCard(tx, w.tenantId, "Other")));
      assert.equal(other.isDefault, false);
      failed(
        await write((tx) =>
          metering.setCustomerPricing(tx, w.tenantId, w.beta.id, {
            rateCardId: other.id,
            pinnedVersionId: w.v1.id,
            overrides: [],
          }),
        ),
        "not_found",
      );
      await assertClean(w.tenantId);
    });

    test("a customer on another card, and contract overrides that win over the card", async () => {
      const w = await world();
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("1000"), source: "plan" });
      await grant(w.tenantId, { walletId: w.beta.walletId, amount: cr("1000"), source: "plan" });
      const enterprise = okv(await write((tx) => metering.createRateCard(tx, w.tenantId, "Enterprise")));
      const ev1 = okv(
        await write((tx) =>
          metering.publishRateCardVersion(tx, w.tenantId, enterprise.id, null, {
            lines: [{ id: "unit-ent", action: "unit.call", quantity: "calls", rate: "0.25" }],
          }),
        ),
      );
      await setPricing(w.tenantId, w.beta.id, { rateCardId: enterprise.id });
      await setPricing(w.tenantId, w.acme.id, {
        overrides: [
          { id: "acme-out", action: "chat.completion", quantity: "output_tokens", rate: "1", per: "1000" },
          {
            id: "acme-docs",
            action: "document.parse",
            quantity: "pages",
            tiers: [
              { up_to: "10", rate: "2" },
              { up_to: null, rate: "0.1" },
            ],
          },
        ],
      });
      const chat = ev(
        w.acme.id,
        "chat.completion",
        { input_tokens: 1000, output_tokens: 2000 },
        { dimensions: { model: "mini" } },
      );
      const results = await submit(w.tenantId, [
        chat,
        ev(w.acme.id, "document.parse", { pages: 20 }),
        ev(w.beta.id, "unit.call", { calls: 4 }),
        ev(w.beta.id, "chat.completion", { output_tokens: 1 }),
      ]);
      // The override (unfiltered) wins even over the card's more specific mini line; input stays the card's.
      assert.equal(charged(results[0]).credits, cr("3"));
      assert.equal(charged(results[1]).credits, cr("21"), "10 at 2, then 10 at 0.1: the override's tiers");
      assert.deepEqual(
        [charged(results[2]).rateCardVersionId, charged(results[2]).credits],
        [ev1.id, cr("1")],
      );
      rejected(results[3], "unknown_action");
      const row = await eventRow(store, w.tenantId, chat.id);
      assert.deepEqual(
        (row.detail.explanation as { lines: { line_id: string; override: boolean }[] }).lines.map((l) => [
          l.line_id,
          l.override,
        ]),
        [
          ["chat-in", false],
          ["acme-out", true],
        ],
      );
      assert.equal(row.detail.explanation.override_source, "manual", "set by hand");
      const counters = (await snapshot(store.db, w.tenantId)).counters;
      assert.deepEqual(
        counters.map((r) => [r.line_id, r.quantity]),
        [["acme-docs", qty(20).toString()]],
        "an override's tiers are counted",
      );
      // Bad overrides and unknown customers or cards are refused.
      failed(
        await write((tx) =>
          metering.setCustomerPricing(tx, w.tenantId, w.acme.id, {
            rateCardId: null,
            pinnedVersionId: null,
            overrides: [{ id: "x", action: "unit.call", quantity: "calls" }],
          }),
        ),
        "invalid_rate_card",
      );
      failed(
        await write((tx) =>
          metering.setCustomerPricing(tx, w.tenantId, "cus_nobody", {
            rateCardId: null,
            pinnedVersionId: null,
            overrides: [],
          }),
        ),
        "not_found",
      );
      failed(
        await write((tx) =>
          metering.setCustomerPricing(tx, w.tenantId, w.acme.id, {
            rateCardId: "rcd_nobody",
            pinnedVersionId: null,
            overrides: [],
          }),
        ),
        "not_found",
      );
      await assertClean(w.tenantId);
    });

    test("cost from the cost table in force or as reported; revenue from the cost basis of the credits drawn", async () => {
      const w = await world();
      const free = await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("10"), source: "plan" });
      const paid = await grant(w.tenantId, {
        walletId: w.acme.walletId,
        amount: cr("100"),
        source: "purchase",
        costBasis: cr("0.01"),
        currency: "USD",
      });
      const table = okv(
        await write((tx) =>
          metering.publishCostTable(tx, w.tenantId, null, "USD", {
            lines: [
              {
                id: "c-in",
                action: "chat.completion",
                quantity: "input_tokens",
                rate: "2.5",
                per: "1000000",
              },
              {
                id: "c-out",
                action: "chat.completion",
                quantity: "output_tokens",
                rate: "10",
                per: "1000000",
              },
            ],
          }),
        ),
      );
      const future = okv(
        await write((tx) =>
          metering.publishCostTable(tx, w.tenantId, T0 + DAY, "USD", {
            lines: [
              {
                id: "c-out",
                action: "chat.completion",
                quantity: "output_tokens",
                rate: "20",
                per: "1000000",
              },
            ],
          }),
        ),
      );
      failed(
        await write((tx) => metering.publishCostTable(tx, w.tenantId, T0 + DAY, "USD", { lines: [] })),
        "rate_card_overlap",
      );
      const chat = (extra: Partial<UsageEvent> = {}) =>
        ev(w.acme.id, "chat.completion", { input_tokens: 1500, output_tokens: 2000 }, extra);
      const a = chat();
      const b = chat({ reportedCost: cr("0.5") });
      const c = ev(w.acme.id, "unit.call", { calls: 2 });
      await submit(w.tenantId, [a, b, c]);
      const ra = await eventRow(store, w.tenantId, a.id);
      assert.equal(ra.cost, cr("0.02375"), "1500 × 2.5/1e6 + 2000 × 10/1e6 USD");
      assert.equal(ra.detail.cost_version_id, table.id);
      assert.equal(ra.detail.cost_currency, "USD");
      assert.equal(ra.detail.reported_cost, false);
      assert.equal(ra.revenue, 0n, "7.5 free credits drawn: no revenue");
      const rb = await eventRow(store, w.tenantId, b.id);
      assert.deepEqual(
        [rb.cost, rb.detail.reported_cost, rb.detail.cost_version_id],
        [cr("0.5"), true, null],
      );
      // 2.5 free credits, then 5 paid at 0.01: 0.05 USD.
      assert.equal(rb.revenue, cr("0.05"));
      assert.equal(rb.detail.revenue_currency, "USD");
      assert.deepEqual((rb.detail.explanation as { draws: unknown }).draws, [
        { grant_id: free.id, wallet_id: w.acme.walletId, credits: "2.5" },
        { grant_id: paid.id, wallet_id: w.acme.walletId, credits: "5" },
      ]);
      const rc = await eventRow(store, w.tenantId, c.id);
      assert.equal(rc.cost, null, "an action the cost table does not price has an unknown cost");
      assert.equal(rc.revenue, cr("0.01"));
      // The next day's table is in force for the next day's events.
      now = T0 + DAY;
      const d = chat();
      await submit(w.tenantId, [d]);
      const rd = await eventRow(store, w.tenantId, d.id);
      assert.deepEqual([rd.cost, rd.detail.cost_version_id], [cr("0.04"), future.id]);
      await assertClean(w.tenantId);
    });

    test("expired grants are never drawn: the batch expires them first", async () => {
      const w = await world();
      const soon = await grant(w.tenantId, {
        walletId: w.acme.walletId,
        amount: cr("10"),
        source: "promo",
        expiresAt: T0 + HOUR,
      });
      await grant(w.tenantId, { walletId: w.acme.walletId, amount: cr("10"), source: "plan" });
      now = T0 + 2 * HOUR;
      const [r] = await submit(w.tenantId, [ev(w.acme.id, "unit.call", { calls: 2 })]);
      assert.equal(charged(r).drawn, cr("1"));
      assert.equal((await store.getGrant(w.tenantId, soon.id))!.status, "expired");
      assert.equal(await balanceOf(w.tenantId, w.acme.walletId), cr("9"));
      await assertClean(w.tenantId);
    });

    test("property: re-ingesting any batch changes nothing; a batch's charge is the sum of its events'", async () => {
      const kinds = ["chat", "mini", "turbo", "eval", "docs", "search", "ping", "unknown"] as const;
      const spec = fc.record({
        customer: fc.constantFrom("acme", "beta", "ghost"),
        subject: fc.constantFrom("none", "none", "ann", "bot", "ghost"),
        kind: fc.constantFrom(...kinds),
        amount: fc.integer({ min: 0, max: 4000 }),
        failed: fc.constantFrom(false, false, false, true),
        late: fc.constantFrom(0, 0, 0, HOUR, 8 * DAY, -10 * MINUTE),
        repeat: fc.option(fc.record({ of: fc.nat(), altered: fc.boolean() }), { freq: 5 }),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            pool: fc.integer({ min: 0, max: 60 }),
            member: fc.integer({ min: 0, max: 10 }),
            soft: fc.option(fc.integer({ min: 0, max: 30 })),
            events: fc.array(spec, { minLength: 1, maxLength: 25 }),
          }),
          async (input) => {
            const w = await world();
            now = T0 + 8 * DAY;
            if (input.pool > 0)
              await grant(w.tenantId, {
                walletId: w.acme.walletId,
                amount: cr(String(input.pool)),
                source: "plan",
              });
            if (input.member > 0)
              await grant(w.tenantId, {
                walletId: w.annWallet.id,
                amount: cr(String(input.member)),
                source: "plan",
              });
            await grant(w.tenantId, { walletId: w.beta.walletId, amount: cr("5"), source: "plan" });
            if (input.soft !== null)
              okv(
                await write((tx) =>
                  metering.setOveragePolicy(tx, w.tenantId, w.acme.walletId, {
                    mode: "soft_cap",
                    floor: -cr(String(input.soft)),
                  }),
                ),
              );
            const events: UsageEvent[] = [];
            for (const s of input.events) {
              const earlier = s.repeat && events.length > 0 ? events[s.repeat.of % events.length]! : null;
              if (earlier && s.repeat) {
                events.push(
                  s.repeat.altered ? { ...earlier, quantities: { calls: qty(s.amount + 1) } } : earlier,
                );
                continue;
              }
              const customerId =
                s.customer === "acme" ? w.acme.id : s.customer === "beta" ? w.beta.id : "cus_ghost";
              const subjectId =
                s.subject === "ann"
                  ? w.ann.id
                  : s.subject === "bot"
                    ? w.bot.id
                    : s.subject === "ghost"
                      ? "sub_x"
                      : null;
              const [action, quantities, dimensions]: [
                string,
                Record<string, number>,
                Record<string, string>,
              ] =
                s.kind === "chat"
                  ? ["chat.completion", { input_tokens: s.amount, output_tokens: s.amount >> 1 }, {}]
                  : s.kind === "mini"
                    ? ["chat.completion", { output_tokens: s.amount }, { model: "mini" }]
                    : s.kind === "turbo"
                      ? ["chat.completion", { output_tokens: s.amount }, { tier: "turbo" }]
                      : s.kind === "eval"
                        ? ["chat.completion", { output_tokens: s.amount }, { feature: "eval" }]
                        : s.kind === "docs"
                          ? ["document.parse", { pages: s.amount % 150 }, {}]
                          : s.kind === "search"
                            ? ["tool.search", { calls: s.amount % 5 }, {}]
                            : s.kind === "ping"
                              ? ["health.ping", { calls: 1 }, {}]
                              : ["image.generate", { images: 1 }, {}];
              events.push(
                ev(customerId, action, quantities, {
                  subjectId,
                  dimensions,
                  time: now - s.late,
                  status: s.failed ? "failed" : "succeeded",
                }),
              );
            }
            const before = await snapshot(store.db, w.tenantId);
            const first = await submit(w.tenantId, events);
            const after = await snapshot(store.db, w.tenantId);

            // Each accepted charge is all paid or all unpaid; the batch's consumption is their sum.
            let paid = 0n;
            let owed = 0n;
            const perCustomer = new Map<string, bigint>();
            first.forEach((r, i) => {
              if (r.status !== "accepted") return;
              const c = r.charge;
              assert.equal(c.credits, c.drawn + c.overdraft + c.unpaid);
              assert.ok(c.unpaid === 0n || c.drawn + c.overdraft === 0n, "unpaid is all or nothing");
              paid += c.drawn + c.overdraft;
              owed += c.overdraft;
              const id = events[i]!.customerId;
              perCustomer.set(id, (perCustomer.get(id) ?? 0n) + c.drawn + c.overdraft);
              if (c.drawn + c.overdraft > 0n) assert.ok(c.transactionId);
            });
            const sum = (rows: Record<string, unknown>[], key: string) =>
              rows.reduce((a, r) => a + BigInt(String(r[key])), 0n);
            assert.equal(sum(before.wallets, "balance") - sum(after.wallets, "balance"), paid);
            assert.equal(sum(after.wallets, "overdraft") - sum(before.wallets, "overdraft"), owed);
            const newTx = after.journal.slice(before.journal.length);
            assert.ok(newTx.every((t) => t.kind === "usage"));
            for (const t of newTx) {
              const consumption = after.entries
                .filter((e) => e.tx_id === t.id && e.account === "consumption")
                .reduce((a, e) => a + BigInt(String(e.amount)), 0n);
              assert.equal(consumption, perCustomer.get(String(t.customer_id)));
            }
            assert.equal(newTx.length, [...perCustomer.values()].filter((v) => v > 0n).length);
            // The first occurrence of each id decides; later ones echo it or are event_id_reused.
            const byId = new Map<string, number>();
            events.forEach((e, i) => {
              const at = byId.get(e.id);
              if (at === undefined) {
                byId.set(e.id, i);
                return;
              }
              const origin = first[at]!;
              const r = first[i]!;
              if (fingerprintOf(e) !== fingerprintOf(events[at]!)) rejected(r, "event_id_reused");
              else if (origin.status === "rejected") assert.deepEqual(r, origin);
              else assert.deepEqual(charged(r, "duplicate"), origin.charge);
            });

            // Again: nothing changes, and every answer is the first one's.
            const second = await submit(w.tenantId, events);
            assert.deepEqual(await snapshot(store.db, w.tenantId), after);
            second.forEach((r, i) => {
              const o = first[i]!;
              if (o.status === "rejected") assert.deepEqual(r, o);
              else assert.deepEqual(charged(r, "duplicate"), o.charge);
            });
            await assertClean(w.tenantId);
          },
        ),
        { numRuns: backend.name === "pglite" ? 20 : 30 },
      );
    });
  });
}

describe("ingest under concurrency on PostgreSQL", {
  skip: POSTGRES_URL ? false : "DATABASE_URL is unset",
}, () => {
  let database: TestDatabase;
  let store: Store;
  const now = Date.now();

  before(async () => {
    if (!POSTGRES_URL) return;
    database = await postgresDatabase(POSTGRES_URL, { max: 16 });
    store = database.store(() => now);
  });
  after(async () => {
    await database?.close();
  });

  const write = <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => store.db.transaction(fn);

  /** Several writers, as several server instances on one database would have. */
  const instances = (n: number) =>
    Array.from({ length: n }, () => new IngestWriter(store, new Metering(() => now, store.newId)));

  async function tenantWithCard() {
    const tenant = await store.createTenant("Hot", "test");
    const metering = new Metering(() => now, store.newId);
    const card = okv(await write((tx) => metering.createRateCard(tx, tenant.id, "Standard")));
    okv(await write((tx) => metering.publishRateCardVersion(tx, tenant.id, card.id, null, CARD)));
    return tenant.id;
  }

  test("20 submitters × 20 batches of 50 on one hot wallet: exactly N charged, the rest unpaid, balance exact", async () => {
    const tenantId = await tenantWithCard();
    const customer = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
    const N = 7_777;
    // unit.call costs 0.5 per call: room for exactly N events.
    okv(
      await write((tx) =>
        store.createGrant(tx, tenantId, {
          walletId: customer.walletId,
          amount: cr("0.5") * BigInt(N),
          source: "plan",
        }),
      ),
    );
    const writers = instances(4);
    const SUBMITTERS = 20;
    const BATCHES = 20;
    const SIZE = 50;
    const event = (s: number, b: number, i: number): UsageEvent => ({
      id: `hot-${s}-${b}-${i}`,
      customerId: customer.id,
      subjectId: null,
      action: "unit.call",
      dimensions: {},
      quantities: { calls: qty(1) },
      time: now,
      status: "succeeded",
      runId: null,
      reportedCost: null,
    });
    const results: IngestResult[] = [];
    const replays: [IngestResult, IngestResult][] = [];
    await Promise.all(
      Array.from({ length: SUBMITTERS }, async (_, s) => {
        for (let b = 0; b < BATCHES; b++) {
          const batch = Array.from({ length: SIZE }, (_, i) => event(s, b, i)).map((e) => ({
            event: e,
            fingerprint: fingerprintOf(e),
          }));
          const r = await writers[s % writers.length]!.submit(tenantId, batch);
          results.push(...r);
          // Every fifth batch is sent again at once through another instance: answered, not charged twice.
          if (b % 5 === 0) {
            const again = await writers[(s + 1) % writers.length]!.submit(tenantId, batch);
            for (const [i, x] of again.entries()) replays.push([r[i]!, x]);
          }
        }
      }),
    );
    assert.equal(results.length, SUBMITTERS * BATCHES * SIZE);
    const outcomes = { charged: 0, unpaid: 0 };
    for (const r of results) {
      const c = charged(r);
      if (c.outcome === "charged") {
        outcomes.charged++;
        assert.equal(c.drawn, cr("0.5"));
      } else {
        assert.equal(c.outcome, "unpaid");
        outcomes.unpaid++;
      }
    }
    assert.deepEqual(outcomes, { charged: N, unpaid: SUBMITTERS * BATCHES * SIZE - N });
    for (const [first, again] of replays) assert.deepEqual(charged(again, "duplicate"), charged(first));
    assert.equal((await store.getWallet(tenantId, customer.walletId))!.balance, 0n, "exactly used up");
    const { rows } = await store.db.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE outcome = 'charged')::int AS charged, sum(charged)::text AS credits
       FROM usage_events WHERE tenant_id = $1`,
      [tenantId],
    );
    assert.deepEqual(rows[0], {
      n: SUBMITTERS * BATCHES * SIZE,
      charged: N,
      credits: (cr("0.5") * BigInt(N)).toString(),
    });
    const journal = await store.db.query(
      `SELECT sum(amount)::text AS consumed FROM journal_entries WHERE tenant_id = $1 AND account = 'consumption'`,
      [tenantId],
    );
    assert.equal(journal.rows[0]!.consumed, (cr("0.5") * BigInt(N)).toString());
    const report = await store.reconcile(tenantId);
    assert.deepEqual(report.differences, []);
  });

  test("two instances racing the same event ids for two customers: each id is accepted once", async () => {
    const tenantId = await tenantWithCard();
    const x = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
    const y = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
    for (const c of [x, y])
      okv(
        await write((tx) =>
          store.createGrant(tx, tenantId, { walletId: c.walletId, amount: cr("1000"), source: "plan" }),
        ),
      );
    const [w1, w2] = instances(2);
    const batch = (customerId: string) =>
      Array.from({ length: 200 }, (_, i) => {
        const e: UsageEvent = {
          id: `race-${i}`,
          customerId,
          subjectId: null,
          action: "unit.call",
          dimensions: {},
          quantities: { calls: qty(1) },
          time: now,
          status: "succeeded",
          runId: null,
          reportedCost: null,
        };
        return { event: e, fingerprint: fingerprintOf(e) };
      });
    const [rx, ry] = await Promise.all([
      w1!.submit(tenantId, batch(x.id)),
      w2!.submit(tenantId, batch(y.id)),
    ]);
    let accepted = 0n;
    rx.forEach((a, i) => {
      const b = ry[i]!;
      const statuses = [a.status, b.status].sort();
      assert.deepEqual(statuses, ["accepted", "rejected"], `race-${i}`);
      for (const r of [a, b]) if (r.status === "rejected") assert.equal(r.code, "event_id_reused");
      accepted++;
    });
    const total =
      (await store.getWallet(tenantId, x.walletId))!.balance +
      (await store.getWallet(tenantId, y.walletId))!.balance;
    assert.equal(total, cr("2000") - cr("0.5") * accepted);
    assert.deepEqual((await store.reconcile(tenantId)).differences, []);
  });

  test("the catalog cache sees a version committed after a later-numbered one", async () => {
    const tenantId = await tenantWithCard();
    const metering = new Metering(() => now, store.newId);
    const a = okv(await write((tx) => metering.createRateCard(tx, tenantId, "A")));
    const b = okv(await write((tx) => metering.createRateCard(tx, tenantId, "B")));
    const lines: RateCardInput = { lines: [{ id: "u", action: "unit.call", quantity: "calls", rate: "1" }] };
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let published!: () => void;
    const inserted = new Promise<void>((r) => {
      published = r;
    });
    // A's version takes its sequence number first but commits last.
    const slow = write(async (tx) => {
      okv(await metering.publishRateCardVersion(tx, tenantId, a.id, null, lines));
      published();
      await held;
    });
    await inserted;
    okv(await write((tx) => metering.publishRateCardVersion(tx, tenantId, b.id, null, lines)));
    const early = await metering.catalog(store.db, tenantId);
    assert.equal(early.cards.get(a.id)!.versions.length, 0);
    release();
    await slow;
    const later = await metering.catalog(store.db, tenantId);
    assert.equal(later.cards.get(a.id)!.versions.length, 1, "the cache was revalidated");
  });
});
