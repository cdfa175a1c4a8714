import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type PriceBookInput, UNIT, type UsageEvent } from "@drawdown/core";
import {
  AWAITING_CHARGE_GRACE_MS,
  Commerce,
  Holds,
  HoldWriter,
  IngestWriter,
  Metering,
  type PaymentProvider,
  type PaymentRequest,
  type SqlExecutor,
  type Store,
} from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";
import { authorizeAlone, okv } from "./support/helpers.js";

/**
 * An auto top-up's provider is charged with no transaction open, on both databases: while the
 * provider is being charged, the customer's wallets can be locked by anyone else (authorize
 * before a denial, usage before an unpaid charge, the scheduler's check). A charge whose provider
 * does not answer leaves its purchase awaiting the charge; the scheduler charges it after the
 * grace, with the same idempotency key, and it is paid once.
 */

const T0 = Date.UTC(2027, 0, 10, 12);
const cr = (n: number | bigint): bigint => credits(BigInt(n));
const usd = (whole: bigint): bigint => whole * UNIT;

const BOOK: PriceBookInput = {
  currency: "USD",
  packs: [{ id: "small", name: "Small", credits: cr(20), price: usd(2n), expiry: { kind: "never" } }],
  tiers: [{ upTo: null, unitPrice: usd(1n) / 10n }],
};

/**
 * A card that pays at once and keeps its charges by key (as Stripe does), and that, while it
 * is being charged, tries to lock the customer's wallets from elsewhere (`probe`). `failNext`
 * charges lose their connection before any answer; `pauseNext` holds the next charge's answer
 * until released.
 */
function probingProvider(probe: (r: PaymentRequest) => Promise<void>) {
  const charges = new Map<string, string>();
  const seen: string[] = [];
  let failNext = 0;
  let paused: { started: () => void; released: Promise<void> } | null = null;
  const provider: PaymentProvider = {
    id: "probe",
    testOnly: true,
    synchronous: true,
    checkPaymentMethod: () => null,
    charge: async (r) => {
      seen.push(r.idempotencyKey);
      await probe(r);
      const pause = paused;
      paused = null;
      if (pause) {
        pause.started();
        await pause.released;
      }
      if (failNext > 0) {
        failNext--;
        throw new Error("connection reset by the provider");
      }
      const reference = charges.get(r.idempotencyKey) ?? `ch_${charges.size + 1}`;
      charges.set(r.idempotencyKey, reference);
      return { status: "succeeded", reference };
    },
  };
  return {
    provider,
    seen,
    charges,
    failNext: (n: number) => {
      failNext = n;
    },
    /** The next charge waits for `release`; `started` resolves when it is being charged. */
    pauseNext: () => {
      let started = () => {};
      let release = () => {};
      const startedP = new Promise<void>((r) => {
        started = r;
      });
      const released = new Promise<void>((r) => {
        release = r;
      });
      paused = { started, released };
      return { started: startedP, release };
    },
  };
}

for (const backend of backends()) {
  describe(`auto top-ups charged outside transactions (${backend.name})`, () => {
    let database: TestDatabase;
    let store: Store;
    let metering: Metering;
    let commerce: Commerce;
    let holds: Holds;
    let writer: IngestWriter;
    let card: ReturnType<typeof probingProvider>;
    /** What each probe found: whether the customer's wallets could be locked during the charge. */
    const probes: boolean[] = [];
    let seq = 0;
    before(async () => {
      database = await backend.open();
      store = database.store(() => T0);
      metering = new Metering((tenantId) => store.now(tenantId), store.newId);
      card = probingProvider(probe);
      commerce = new Commerce(store, [card.provider]);
      holds = new Holds(store, metering, commerce);
      writer = new IngestWriter(store, metering, { commerce });
    });
    after(async () => {
      await database.close();
    });

    const write = <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => store.db.transaction(fn);

    /**
     * Another transaction (PostgreSQL: another connection; PGlite: the one connection, free only
     * when no transaction is open) locks the customer's wallets without waiting.
     */
    const probe = async (r: Pick<PaymentRequest, "tenantId" | "customerId">) => {
      const locked = await store.db
        .transaction((tx) =>
          tx.query("SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE NOWAIT", [
            r.tenantId,
            r.customerId,
          ]),
        )
        .then(
          (q) => q.rowCount > 0,
          () => false,
        );
      probes.push(locked);
    };

    /** A test tenant at T0 where a `unit` call costs 1 credit, a USD book, and customers with an auto top-up. */
    async function setup(customers = 1, threshold = cr(1)) {
      const tenant = await store.createTenant("Charge", "test");
      const tenantId = tenant.id;
      okv(await store.advanceClock(tenantId, T0));
      const rc = okv(await write((tx) => metering.createRateCard(tx, tenantId, "Standard")));
      okv(
        await write((tx) =>
          metering.publishRateCardVersion(tx, tenantId, rc.id, null, {
            lines: [{ id: "unit", action: "unit", quantity: "calls", rate: "1" }],
          }),
        ),
      );
      okv(await write((tx) => commerce.publishPriceBook(tx, tenantId, BOOK)));
      const out: { id: string; walletId: string }[] = [];
      for (let i = 0; i < customers; i++) {
        const c = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
        okv(
          await write((tx) =>
            commerce.setAutoTopUp(tx, tenantId, c.walletId, {
              threshold,
              buy: { kind: "pack", packId: "small" },
              currency: "USD",
              monthlyCap: usd(100n),
              provider: "probe",
              paymentMethod: "pm_any",
            }),
          ),
        );
        out.push({ id: c.id, walletId: c.walletId });
      }
      return { tenantId, customers: out };
    }

    const authorize = (tenantId: string, customerId: string, estimate: bigint) =>
      authorizeAlone(store, holds, tenantId, {
        customerId,
        subjectId: null,
        action: "unit",
        estimate: { credits: estimate },
        holdTimeoutSeconds: 600,
      });

    const event = (tenantId: string, customerId: string, calls: number): UsageEvent => ({
      id: `evt_${++seq}`,
      customerId,
      subjectId: null,
      action: "unit",
      dimensions: {},
      quantities: { calls: BigInt(calls) * UNIT },
      time: store.now(tenantId),
      status: "succeeded",
      runId: null,
      reportedCost: null,
    });

    const purchases = async (tenantId: string) =>
      (
        await store.db.query(
          "SELECT status, awaiting_charge, provider_key, provider_reference FROM purchases WHERE tenant_id = $1 ORDER BY created_at, id",
          [tenantId],
        )
      ).rows;

    test("authorize, usage and the scheduled check charge the provider while the customer's wallets are free", async () => {
      const { tenantId, customers } = await setup(2);
      const [a, b] = customers as [(typeof customers)[0], (typeof customers)[0]];
      if (database.name === "postgres") {
        // The probe sees a lock held elsewhere (what charging inside the transaction did).
        await write(async (tx) => {
          await tx.query("SELECT id FROM wallets WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
            tenantId,
            a.walletId,
          ]);
          await probe({ tenantId, customerId: a.id });
        });
        assert.deepEqual(probes, [false]);
      }
      probes.length = 0;
      // Authorize 15 with nothing: a pack of 20 is bought first, then the hold is placed.
      const held = okv(await authorize(tenantId, a.id, cr(15)));
      assert.equal(held.authorization.decision, "allow");
      assert.equal(held.autoTopUp?.outcome, "covered");
      assert.equal(held.autoTopUp?.purchaseIds.length, 1);
      // A batch of two customers' usage, one of them short: its pack is bought, then the batch
      // runs again and both events are paid.
      const results = await writer.submit(
        tenantId,
        [event(tenantId, a.id, 12), event(tenantId, b.id, 3)].map((e) => ({ event: e, fingerprint: e.id })),
      );
      for (const r of results) {
        assert.equal(r.status, "accepted");
        assert.equal(r.status === "accepted" ? r.charge.unpaid : null, 0n);
      }
      // The scheduler: b below its threshold of 1 once its balance (20 bought, 3 used) is spent.
      okv(
        await write((tx) =>
          store.debitWallet(tx, tenantId, b.walletId, { amount: cr(17), action: null, kind: "debit" }),
        ),
      );
      okv(await store.advanceClock(tenantId, T0 + 60_000));
      assert.equal((await store.balance(tenantId, b.walletId))!.available, cr(20));
      assert.equal(probes.length, 4, "four charges: authorize, two customers' usage, the scheduler");
      assert.deepEqual(probes, [true, true, true, true], "no wallet was locked during a charge");
      const rows = await purchases(tenantId);
      assert.equal(rows.length, 4);
      for (const r of rows) {
        assert.equal(r.status, "confirmed");
        assert.equal(r.awaiting_charge, false);
      }
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a charge the provider does not answer waits; the scheduler charges it with the same key after the grace, once", async () => {
      const { tenantId, customers } = await setup(1, 0n);
      const c = customers[0]!;
      const keysBefore = card.seen.length;
      card.failNext(1);
      // The provider loses its connection: nothing is paid, so the authorization is denied, and
      // the purchase stays pending, awaiting its charge.
      const denied = okv(await authorize(tenantId, c.id, cr(15)));
      assert.equal(denied.authorization.decision, "deny");
      assert.equal(denied.autoTopUp?.outcome, "none");
      assert.equal(denied.autoTopUp?.purchaseIds.length, 1);
      let rows = await purchases(tenantId);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.status, "pending");
      assert.equal(rows[0]!.awaiting_charge, true);
      const key = String(rows[0]!.provider_key);
      // While it waits, another denial buys nothing more (one pending auto top-up per wallet).
      const again = okv(await authorize(tenantId, c.id, cr(15)));
      assert.equal(again.authorization.decision, "deny");
      assert.equal((await purchases(tenantId)).length, 1);
      // The scheduler takes it after the grace.
      assert.equal(await commerce.nextDue(tenantId, T0 + 3_600_000), T0 + AWAITING_CHARGE_GRACE_MS);
      okv(await store.advanceClock(tenantId, T0 + AWAITING_CHARGE_GRACE_MS - 1));
      assert.equal((await purchases(tenantId))[0]!.awaiting_charge, true);
      okv(await store.advanceClock(tenantId, T0 + AWAITING_CHARGE_GRACE_MS));
      rows = await purchases(tenantId);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.status, "confirmed");
      assert.equal(rows[0]!.awaiting_charge, false);
      assert.deepEqual(card.seen.slice(keysBefore), [key, key], "asked twice with one key");
      assert.equal(card.charges.has(key), true);
      assert.equal((await store.balance(tenantId, c.walletId))!.available, cr(20));
      // Now the authorization goes through on the credits bought.
      assert.equal(okv(await authorize(tenantId, c.id, cr(15))).authorization.decision, "allow");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("a purchase awaiting its charge confirmed by hand is granted once and never charged by the scheduler", async () => {
      const { tenantId, customers } = await setup(1, 0n);
      const c = customers[0]!;
      card.failNext(1);
      const denied = okv(await authorize(tenantId, c.id, cr(15)));
      const purchaseId = denied.autoTopUp!.purchaseIds[0]!;
      const asked = card.seen.length;
      const confirmed = okv(await write((tx) => commerce.confirmPurchase(tx, tenantId, purchaseId)));
      assert.deepEqual([confirmed.status, confirmed.awaitingCharge], ["confirmed", false]);
      okv(await store.advanceClock(tenantId, T0 + 2 * AWAITING_CHARGE_GRACE_MS));
      assert.equal(card.seen.length, asked, "the provider is not asked again");
      assert.equal((await store.balance(tenantId, c.walletId))!.available, cr(20));
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("usage: a customer's top-up is bought off the writer's lane; its later events wait behind it and are paid", async () => {
      const { tenantId, customers } = await setup(2);
      const [a, b] = customers as [(typeof customers)[0], (typeof customers)[0]];
      okv(
        await write((tx) =>
          store.createGrant(tx, tenantId, { walletId: b.walletId, amount: cr(50), source: "promo" }),
        ),
      );
      // One lane: without the gate, b's batch would wait for a's provider.
      const oneLane = new IngestWriter(store, metering, { commerce, lanes: 1 });
      const submit = (customerId: string, calls: number) => {
        const e = event(tenantId, customerId, calls);
        return oneLane.submit(tenantId, [{ event: e, fingerprint: e.id }]);
      };
      const charge = card.pauseNext();
      const first = submit(a.id, 5);
      await charge.started;
      // While a's provider is being charged: b's events commit, and a's next events queue.
      const [other] = await submit(b.id, 3);
      assert.equal(other?.status === "accepted" ? other.charge.unpaid : null, 0n);
      const next = submit(a.id, 4);
      charge.release();
      for (const [r] of await Promise.all([first, next])) {
        assert.equal(r?.status, "accepted");
        assert.equal(r?.status === "accepted" ? r.charge.unpaid : null, 0n, "paid from the pack bought");
      }
      assert.equal((await purchases(tenantId)).length, 1, "one pack of 20 pays both of a's events");
      assert.equal((await store.balance(tenantId, a.walletId))!.available, cr(11));
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("authorize: a customer's top-up is bought off the hold writer's lane; its later requests wait behind it", async () => {
      const { tenantId, customers } = await setup(2);
      const [a, b] = customers as [(typeof customers)[0], (typeof customers)[0]];
      okv(
        await write((tx) =>
          store.createGrant(tx, tenantId, { walletId: b.walletId, amount: cr(50), source: "promo" }),
        ),
      );
      const holdWriter = new HoldWriter(store, holds, metering);
      const ask = async (customerId: string, credits: bigint) => {
        const r = await holdWriter.authorize(
          tenantId,
          { customerId, subjectId: null, action: "unit", estimate: { credits }, holdTimeoutSeconds: 600 },
          null,
        );
        assert.equal(r.kind, "fresh");
        return r.kind === "fresh" ? okv(r.result) : null;
      };
      const charge = card.pauseNext();
      const first = ask(a.id, cr(5));
      await charge.started;
      // While a's provider is being charged: b is answered, and a's next request queues.
      assert.equal((await ask(b.id, cr(3)))?.authorization.decision, "allow");
      const next = ask(a.id, cr(4));
      charge.release();
      const [one, two] = await Promise.all([first, next]);
      assert.equal(one?.authorization.decision, "allow");
      assert.equal(one?.autoTopUp?.outcome, "covered");
      assert.equal(two?.authorization.decision, "allow", "held from the pack bought, not denied meanwhile");
      assert.equal((await purchases(tenantId)).length, 1);
      assert.equal((await store.balance(tenantId, a.walletId))!.available, cr(11));
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });
  });
}
