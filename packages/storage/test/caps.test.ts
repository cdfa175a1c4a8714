import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type Result, UNIT, type UsageEvent } from "@drawdown/core";
import { Holds, IngestWriter, Metering, SpendCaps, type SqlExecutor, type Store } from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";

/** 31 March 2027, 20:00 UTC: four hours to the next day and month. */
const T0 = Date.UTC(2027, 2, 31, 20);

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function harness(database: TestDatabase, clock: () => number = () => T0) {
  const store = database.store(clock);
  const metering = new Metering((t) => store.now(t), store.newId);
  const holds = new Holds(store, metering);
  const writer = new IngestWriter(store, metering);
  const caps = new SpendCaps(store);
  const tx = <T>(fn: (ex: SqlExecutor) => Promise<T>) => store.db.transaction(fn);

  /** A test tenant at T0; a customer with 100 credits in its pool, a member with 10 in its own wallet, an agent; `units` cost 1 credit each. */
  async function setup(live = false) {
    const tenant = await store.createTenant("Caps", live ? "live" : "test");
    const tenantId = tenant.id;
    if (!live) okv(await store.advanceClock(tenantId, T0));
    const customer = okv(await tx((ex) => store.createCustomer(ex, tenantId, { kind: "organization" })));
    const other = okv(await tx((ex) => store.createCustomer(ex, tenantId, { kind: "organization" })));
    const member = okv(
      await tx((ex) => store.createSubject(ex, tenantId, { customerId: customer.id, kind: "member" })),
    );
    const agent = okv(
      await tx((ex) => store.createSubject(ex, tenantId, { customerId: customer.id, kind: "agent" })),
    );
    const flow = okv(
      await tx((ex) => store.createSubject(ex, tenantId, { customerId: customer.id, kind: "workflow" })),
    );
    const memberWallet = okv(
      await tx((ex) => store.createMemberWallet(ex, tenantId, customer.id, member.id)),
    );
    for (const [walletId, amount] of [
      [customer.walletId, credits(100n)],
      [memberWallet.id, credits(10n)],
    ] as const)
      okv(await tx((ex) => store.createGrant(ex, tenantId, { walletId, amount, source: "promo" })));
    const card = okv(await tx((ex) => metering.createRateCard(ex, tenantId, "Standard")));
    okv(
      await tx((ex) =>
        metering.publishRateCardVersion(ex, tenantId, card.id, null, {
          lines: [{ id: "run", action: "agent.run", quantity: "units", rate: "1" }],
        }),
      ),
    );
    return {
      tenantId,
      customerId: customer.id,
      pool: customer.walletId,
      other,
      member: member.id,
      memberWallet: memberWallet.id,
      agent: agent.id,
      flow: flow.id,
    };
  }
  type World = Awaited<ReturnType<typeof setup>>;

  let eventNo = 0;
  const ingest = async (w: World, subjectId: string | null, units: bigint) => {
    const event: UsageEvent = {
      id: `e-${eventNo++}`,
      customerId: w.customerId,
      subjectId,
      action: "agent.run",
      dimensions: {},
      quantities: { units: units * UNIT },
      time: store.now(w.tenantId),
      status: "succeeded",
      runId: null,
      reportedCost: null,
    };
    const [r] = await writer.submit(w.tenantId, [{ event, fingerprint: event.id }]);
    assert.ok(r && r.status === "accepted", r?.status === "rejected" ? r.message : "no result");
    return r.charge;
  };
  const authorize = (w: World, subjectId: string | null, estimate: bigint, hold: number | null = 3600) =>
    tx((ex) =>
      holds.authorize(ex, w.tenantId, {
        customerId: w.customerId,
        subjectId,
        action: "agent.run",
        estimate: { credits: credits(estimate) },
        holdTimeoutSeconds: hold,
      }),
    );
  const cap = (
    w: World,
    targetId: string,
    period: "day" | "month",
    limit: bigint,
    setBy: "vendor" | "customer" = "vendor",
  ) =>
    tx((ex) =>
      caps.create(ex, w.tenantId, {
        customerId: w.customerId,
        targetId,
        period,
        limit: credits(limit),
        setBy,
      }),
    );
  const status = async (w: World, id: string) => {
    const c = (await caps.get(w.tenantId, id))!;
    return [c.status.spent, c.status.held, c.status.remaining].map((x) => x / UNIT);
  };
  const capAlerts = async (w: World, capId: string) => {
    const { rows } = await store.db.query(
      "SELECT details FROM alerts WHERE tenant_id = $1 AND kind = 'spend_cap_reached'",
      [w.tenantId],
    );
    return rows
      .map(
        (r) => (typeof r.details === "string" ? JSON.parse(r.details) : r.details) as Record<string, string>,
      )
      .filter((d) => d.cap_id === capId);
  };
  const clean = async (w: World) => assert.deepEqual((await store.reconcile(w.tenantId)).differences, []);
  return {
    store,
    metering,
    holds,
    writer,
    caps,
    tx,
    setup,
    ingest,
    authorize,
    cap,
    status,
    capAlerts,
    clean,
  };
}

for (const backend of backends()) {
  describe(`spend caps (${backend.name})`, () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await backend.open();
      h = harness(database);
    });
    after(async () => {
      await database.close();
    });

    test("bad caps fail with their codes and change nothing", async () => {
      const w = await h.setup();
      const count = async () =>
        Number(
          (await h.store.db.query("SELECT count(*) AS n FROM spend_caps WHERE tenant_id = $1", [w.tenantId]))
            .rows[0]!.n,
        );
      const fails = async (r: Promise<Result<unknown>>, code: string) => {
        const got = await r;
        assert.equal(got.ok ? "ok" : got.error.code, code);
      };
      await fails(h.cap(w, w.pool, "day", -1n), "invalid_amount");
      await fails(h.cap(w, `wal_${"0".repeat(26)}`, "day", 1n), "not_found");
      await fails(h.cap(w, w.other.walletId, "day", 1n), "invalid_argument");
      await fails(h.cap(w, w.flow, "day", 1n), "invalid_argument");
      const vendor = okv(await h.cap(w, w.pool, "day", 5n));
      await fails(h.cap(w, w.pool, "day", 9n), "already_exists");
      okv(await h.cap(w, w.pool, "day", 9n, "customer"));
      assert.equal(await count(), 2);
      await fails(
        h.tx((ex) => h.caps.update(ex, w.tenantId, vendor.id, credits(50n), "customer")),
        "forbidden",
      );
      await fails(
        h.tx((ex) => h.caps.delete(ex, w.tenantId, vendor.id, "customer")),
        "forbidden",
      );
      await fails(
        h.tx((ex) => h.caps.update(ex, w.tenantId, vendor.id, -1n, "vendor")),
        "invalid_amount",
      );
      assert.equal((await h.caps.get(w.tenantId, vendor.id))!.limit, credits(5n));
      assert.equal(await count(), 2);
    });

    test("events: the tighter of the vendor's and the customer's caps binds; a refusal is recorded unpaid and alerts once", async () => {
      const w = await h.setup();
      const vendor = okv(await h.cap(w, w.agent, "day", 5n));
      const mine = okv(await h.cap(w, w.agent, "day", 3n, "customer"));
      assert.equal((await h.ingest(w, w.agent, 2n)).outcome, "charged");
      const refused = await h.ingest(w, w.agent, 2n);
      assert.deepEqual(
        [refused.outcome, refused.unpaid, refused.reason],
        ["unpaid", credits(2n), "spend_cap_reached"],
      );
      assert.equal((await h.ingest(w, w.agent, 1n)).outcome, "charged");
      assert.deepEqual(await h.status(w, mine.id), [3n, 0n, 0n]);
      assert.deepEqual(await h.status(w, vendor.id), [3n, 0n, 2n]);
      // Fully spent after the refusal: still one alert for the cap and the day.
      await h.ingest(w, w.agent, 1n);
      const fired = await h.capAlerts(w, mine.id);
      assert.equal(fired.length, 1);
      assert.equal(fired[0]!.period_start, "2027-03-31T00:00:00.000Z");
      const { rows } = await h.store.db.query(
        "SELECT count(*) AS n FROM outbox_events WHERE tenant_id = $1 AND type = 'alert.triggered' AND payload->>'cap_id' = $2",
        [w.tenantId, mine.id],
      );
      assert.equal(Number(rows[0]!.n), 1, "the alert is in the webhook outbox");
      // The balance paid 3 credits only.
      assert.equal((await h.store.balance(w.tenantId, w.pool))!.available, credits(97n));
      await h.clean(w);
    });

    test("wallet caps count their chain: a pool's cap counts the member's charges; a member wallet's cap only its own", async () => {
      const w = await h.setup();
      const pool = okv(await h.cap(w, w.pool, "month", 12n));
      const own = okv(await h.cap(w, w.memberWallet, "day", 4n));
      assert.equal((await h.ingest(w, w.member, 4n)).outcome, "charged");
      assert.equal((await h.ingest(w, w.member, 1n)).reason, "spend_cap_reached");
      assert.equal((await h.ingest(w, w.agent, 6n)).outcome, "charged");
      assert.deepEqual(await h.status(w, pool.id), [10n, 0n, 2n]);
      assert.deepEqual(await h.status(w, own.id), [4n, 0n, 0n]);
      // A direct debit on the pool is capped too.
      const debit = await h.tx((ex) =>
        h.store.debitWallet(ex, w.tenantId, w.pool, { amount: credits(3n), action: null, kind: "debit" }),
      );
      assert.equal(debit.ok ? "ok" : debit.error.code, "spend_cap_reached");
      okv(
        await h.tx((ex) =>
          h.store.debitWallet(ex, w.tenantId, w.pool, { amount: credits(2n), action: null, kind: "debit" }),
        ),
      );
      assert.deepEqual(await h.status(w, pool.id), [12n, 0n, 0n]);
      await h.clean(w);
    });

    test("holds reserve cap room until settled, voided or expired; a settlement's overrun respects the cap; periods start fresh", async () => {
      const w = await h.setup();
      const c = okv(await h.cap(w, w.agent, "day", 10n));
      const denied = okv(await h.authorize(w, w.agent, 11n));
      assert.deepEqual(
        [denied.authorization.decision, denied.authorization.reason],
        ["deny", "spend_cap_reached"],
      );
      assert.equal(denied.authorization.available, credits(10n));
      const a = okv(await h.authorize(w, w.agent, 4n)).hold!;
      const b = okv(await h.authorize(w, w.agent, 4n, 60)).hold!;
      assert.equal(b.status, "pending");
      assert.deepEqual(await h.status(w, c.id), [0n, 8n, 2n]);
      assert.equal(okv(await h.authorize(w, w.agent, 3n)).authorization.reason, "spend_cap_reached");
      // Settling uses 3 of 4: 1 is freed.
      okv(await h.tx((ex) => h.holds.settle(ex, w.tenantId, a.id, { quantities: { units: 3n * UNIT } })));
      assert.deepEqual(await h.status(w, c.id), [3n, 4n, 3n]);
      // b expires after its minute: its room is free again.
      okv(await h.store.advanceClock(w.tenantId, { seconds: 120 }));
      assert.deepEqual(await h.status(w, c.id), [3n, 0n, 7n]);
      // A soft cap would allow an overrun; the spend cap still bounds it.
      okv(
        await h.tx((ex) =>
          h.metering.setOveragePolicy(ex, w.tenantId, w.pool, { mode: "soft_cap", floor: -credits(50n) }),
        ),
      );
      const d = okv(await h.authorize(w, w.agent, 2n)).hold!;
      const settled = okv(
        await h.tx((ex) => h.holds.settle(ex, w.tenantId, d.id, { quantities: { units: 9n * UNIT } })),
      );
      // Room 7: the hold's 2 and an overrun of 5; the other 2 are unpaid.
      assert.deepEqual([settled.posted, settled.unpaid], [credits(7n), credits(2n)]);
      assert.deepEqual(await h.status(w, c.id), [10n, 0n, 0n]);
      // The next day starts fresh.
      okv(await h.store.advanceClock(w.tenantId, Date.UTC(2027, 3, 1, 1)));
      assert.deepEqual(await h.status(w, c.id), [0n, 0n, 10n]);
      assert.equal(okv(await h.authorize(w, w.agent, 10n, null)).authorization.decision, "allow");
      await h.clean(w);
    });

    test("reversing a debit gives back what it counted on each cap, in the period it counted in, once", async () => {
      const w = await h.setup();
      const day = okv(await h.cap(w, w.pool, "day", 10n));
      const month = okv(await h.cap(w, w.pool, "month", 50n));
      const own = okv(await h.cap(w, w.memberWallet, "day", 8n));
      const debit = async (walletId: string, amount: bigint) =>
        okv(
          await h.tx((ex) =>
            h.store.debitWallet(ex, w.tenantId, walletId, {
              amount: credits(amount),
              action: null,
              kind: "debit",
            }),
          ),
        );
      const reverse = (txId: string) =>
        h.tx((ex) => h.store.reverseTransaction(ex, w.tenantId, txId, "charged in error"));
      const spentIn = async (capId: string, periodStart: string) => {
        const { rows } = await h.store.db.query(
          "SELECT spent::text AS spent FROM spend_cap_counters WHERE tenant_id = $1 AND cap_id = $2 AND period_start = $3",
          [w.tenantId, capId, periodStart],
        );
        return rows[0] ? BigInt(String(rows[0].spent)) / UNIT : null;
      };
      // A member's debit counts on its own wallet's cap and the pool's (its chain).
      const first = await debit(w.memberWallet, 6n);
      assert.deepEqual(await h.status(w, own.id), [6n, 0n, 2n]);
      assert.deepEqual(await h.status(w, day.id), [6n, 0n, 4n]);
      assert.deepEqual(await h.status(w, month.id), [6n, 0n, 44n]);
      // A new day and month: a debit counts in the new periods.
      okv(await h.store.advanceClock(w.tenantId, Date.UTC(2027, 3, 1, 1)));
      const second = await debit(w.pool, 4n);
      assert.deepEqual(await h.status(w, day.id), [4n, 0n, 6n]);
      // Reversing the first debit gives back its own periods' room only.
      okv(await reverse(first.id));
      assert.deepEqual(await h.status(w, day.id), [4n, 0n, 6n]);
      assert.deepEqual(await h.status(w, month.id), [4n, 0n, 46n]);
      for (const c of [own, day])
        assert.equal(await spentIn(c.id, "2027-03-31T00:00:00.000Z"), 0n, "the day it counted in");
      assert.equal(await spentIn(month.id, "2027-03-01T00:00:00.000Z"), 0n, "the month it counted in");
      // Once: a second reversal is refused and changes nothing.
      const again = await reverse(first.id);
      assert.equal(again.ok ? "ok" : again.error.code, "transaction_already_reversed");
      assert.equal(await spentIn(day.id, "2027-03-31T00:00:00.000Z"), 0n);
      okv(await reverse(second.id));
      assert.deepEqual(await h.status(w, day.id), [0n, 0n, 10n]);
      assert.deepEqual(await h.status(w, month.id), [0n, 0n, 50n]);
      // A cap deleted since: the reversal goes through, the other caps get their room back.
      const third = await debit(w.pool, 7n);
      okv(await h.tx((ex) => h.caps.delete(ex, w.tenantId, day.id, "vendor")));
      okv(await reverse(third.id));
      assert.deepEqual(await h.status(w, month.id), [0n, 0n, 50n]);
      const left = await h.store.db.query(
        "SELECT count(*)::int AS n FROM spend_cap_debits WHERE tenant_id = $1",
        [w.tenantId],
      );
      assert.equal(Number(left.rows[0]!.n), 0, "every record went with its reversal or its cap");
      await h.clean(w);
    });
  });
}

if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("spend caps under concurrency (postgres)", () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    let store: Store;
    before(async () => {
      database = await postgresDatabase(url, { max: 20 });
      h = harness(database, Date.now);
      store = h.store;
    });
    after(async () => {
      await database.close();
    });

    test("100 concurrent authorizations against cap room for exactly 40 allow exactly 40", async () => {
      const w = await h.setup(true);
      const c = okv(await h.cap(w, w.agent, "day", 40n));
      const results = await Promise.all(Array.from({ length: 100 }, () => h.authorize(w, w.agent, 1n, 300)));
      const decisions = results.map((r) => okv(r).authorization);
      assert.equal(decisions.filter((d) => d.decision === "allow").length, 40);
      assert.equal(decisions.filter((d) => d.reason === "spend_cap_reached").length, 60);
      const got = (await h.caps.get(w.tenantId, c.id))!;
      assert.deepEqual([got.status.spent, got.status.held, got.status.remaining], [0n, credits(40n), 0n]);
      assert.equal((await store.balance(w.tenantId, w.pool))!.held, credits(40n));
      await h.clean(w);
    });
  });
}
