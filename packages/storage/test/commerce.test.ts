import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, formatAmount, type PriceBookInput, UNIT } from "@drawdown/core";
import { Commerce, type Store } from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const T0 = Date.UTC(2027, 0, 10, 12);
const DAY = 86_400_000;
const usd = (whole: bigint, cents = 0n): bigint => whole * UNIT + cents * 10_000_000n;

const BOOK: PriceBookInput = {
  currency: "USD",
  packs: [
    {
      id: "annual",
      name: "Annual 1000",
      credits: credits(1000n),
      price: usd(100n),
      expiry: { kind: "rolling", months: 12 },
    },
  ],
  tiers: [
    { upTo: credits(1000n), unitPrice: usd(0n, 12n) },
    { upTo: null, unitPrice: usd(0n, 10n) },
  ],
  commitmentDiscounts: [{ minCommitted: credits(10_000n), percentOff: 10 }],
};

for (const backend of backends()) {
  describe(`top-ups and the price book (${backend.name})`, () => {
    let database: TestDatabase;
    let store: Store;
    let commerce: Commerce;
    before(async () => {
      database = await backend.open();
      store = database.store(() => T0);
      commerce = new Commerce(store);
    });
    after(async () => {
      await database.close();
    });

    /** A test tenant at T0 with a USD price book and one customer. */
    async function setup(environment: "test" | "live" = "test") {
      const tenant = await store.createTenant("Shop", environment);
      if (environment === "test") assert.ok((await store.advanceClock(tenant.id, T0)).ok);
      const book = await store.db.transaction((tx) => commerce.publishPriceBook(tx, tenant.id, BOOK));
      assert.ok(book.ok, book.ok ? "" : book.error.message);
      const c = await store.db.transaction((tx) =>
        store.createCustomer(tx, tenant.id, { kind: "organization" }),
      );
      assert.ok(c.ok);
      return { tenantId: tenant.id, customer: c.value, walletId: c.value.walletId };
    }

    const total = async (tenantId: string, walletId: string) =>
      formatAmount((await store.getWallet(tenantId, walletId))!.balance);

    const rowsOf = async (tenantId: string) => {
      const { rows } = await store.db.query(
        `SELECT (SELECT count(*) FROM grants WHERE tenant_id = $1)::int AS grants,
                (SELECT count(*) FROM journal_transactions WHERE tenant_id = $1)::int AS txs,
                (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM purchases WHERE tenant_id = $1) AS purchases,
                (SELECT string_agg(wallet_id || ':' || enabled || ':' || attempts || ':' || coalesce(capped_until::text, '-'), ',') FROM auto_top_ups WHERE tenant_id = $1) AS auto`,
        [tenantId],
      );
      return rows[0];
    };

    test("price books are versioned per currency; the latest is in force", async () => {
      const { tenantId } = await setup();
      const v2 = await store.db.transaction((tx) =>
        commerce.publishPriceBook(tx, tenantId, { ...BOOK, packs: [] }),
      );
      assert.ok(v2.ok);
      assert.equal(v2.value.version, 2);
      const eur = await store.db.transaction((tx) =>
        commerce.publishPriceBook(tx, tenantId, { ...BOOK, currency: "EUR" }),
      );
      assert.ok(eur.ok);
      assert.equal(eur.value.version, 1);
      const books = await commerce.listPriceBooks(tenantId);
      assert.deepEqual(
        books.map((b) => [b.currency, b.version]),
        [
          ["EUR", 1],
          ["USD", 2],
        ],
      );
      assert.equal((await commerce.currentPriceBook(tenantId, "USD"))!.packs.length, 0);
    });

    test("an invoice is pending, grants nothing until confirmed, then grants once with its cost basis and expiry", async () => {
      const { tenantId, walletId } = await setup();
      const p = await store.db.transaction((tx) =>
        commerce.createPurchase(tx, tenantId, {
          walletId,
          currency: "USD",
          item: { packId: "annual" },
          provider: "manual",
        }),
      );
      assert.ok(p.ok, p.ok ? "" : p.error.message);
      assert.equal(p.value.status, "pending");
      assert.equal(p.value.price, usd(100n));
      assert.equal(await total(tenantId, walletId), "0");
      await store.advanceClock(tenantId, T0 + DAY);
      const c = await store.db.transaction((tx) =>
        commerce.confirmPurchase(tx, tenantId, p.value.id, "wire-42"),
      );
      assert.ok(c.ok);
      assert.equal(c.value.status, "confirmed");
      assert.equal(c.value.providerReference, "wire-42");
      const grant = await store.getGrant(tenantId, c.value.grantId!);
      assert.equal(grant!.source, "purchase");
      assert.equal(grant!.costBasis, usd(0n, 10n));
      assert.equal(grant!.currency, "USD");
      // Twelve months from the payment, not from the order.
      assert.equal(grant!.expiresAt, Date.UTC(2028, 0, 11, 12));
      assert.equal(await total(tenantId, walletId), "1000");

      const before = await rowsOf(tenantId);
      const again = await store.db.transaction((tx) => commerce.confirmPurchase(tx, tenantId, p.value.id));
      assert.ok(!again.ok);
      assert.equal(again.error.code, "purchase_not_pending");
      const failAfter = await store.db.transaction((tx) =>
        commerce.resolveUnpaid(tx, tenantId, p.value.id, "failed", "bounced"),
      );
      assert.ok(!failAfter.ok);
      assert.equal(failAfter.error.code, "purchase_not_pending");
      assert.deepEqual(await rowsOf(tenantId), before);
      assert.equal(await total(tenantId, walletId), "1000");
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("custom amounts are priced by the graduated tiers, with the committed-use discount in force", async () => {
      const { tenantId, walletId, customer } = await setup();
      const plain = await store.db.transaction((tx) =>
        commerce.quote(tx, tenantId, customer.id, "USD", { credits: credits(2500n) }),
      );
      assert.ok(plain.ok);
      assert.equal(plain.value.quote.price, usd(270n));
      const committed = await store.db.transaction((tx) =>
        commerce.addCommitment(tx, tenantId, customer.id, {
          currency: "USD",
          credits: credits(12_000n),
          endsAt: T0 + 365 * DAY,
        }),
      );
      assert.ok(committed.ok);
      const p = await store.db.transaction((tx) =>
        commerce.createPurchase(tx, tenantId, {
          walletId,
          currency: "USD",
          item: { credits: credits(2500n) },
          provider: "test",
          paymentMethod: "pm_test_ok",
        }),
      );
      assert.ok(p.ok);
      assert.equal(p.value.status, "confirmed");
      assert.equal(p.value.listPrice, usd(270n));
      assert.equal(p.value.discountPercent, 10);
      assert.equal(p.value.price, usd(243n));
      assert.equal(p.value.costBasis, 97_200_000n);
      assert.equal(await total(tenantId, walletId), "2500");
    });

    test("refusals write nothing: no book, an unknown pack, a live tenant on the test provider, a bad test card", async () => {
      const { tenantId, walletId } = await setup();
      const live = await setup("live");
      const before = await rowsOf(tenantId);
      const cases: [string, Promise<{ ok: boolean; error?: { code: string } }>][] = [
        [
          "no_price_book",
          store.db.transaction((tx) =>
            commerce.createPurchase(tx, tenantId, {
              walletId,
              currency: "EUR",
              item: { packId: "annual" },
              provider: "manual",
            }),
          ),
        ],
        [
          "not_found",
          store.db.transaction((tx) =>
            commerce.createPurchase(tx, tenantId, {
              walletId,
              currency: "USD",
              item: { packId: "nope" },
              provider: "manual",
            }),
          ),
        ],
        [
          "invalid_argument",
          store.db.transaction((tx) =>
            commerce.createPurchase(tx, tenantId, {
              walletId,
              currency: "USD",
              item: { packId: "annual" },
              provider: "test",
              paymentMethod: "pm_card_visa",
            }),
          ),
        ],
        [
          "invalid_argument",
          store.db.transaction((tx) =>
            commerce.createPurchase(tx, live.tenantId, {
              walletId: live.walletId,
              currency: "USD",
              item: { packId: "annual" },
              provider: "test",
              paymentMethod: "pm_test_ok",
            }),
          ),
        ],
      ];
      for (const [code, call] of cases) {
        const r = await call;
        assert.ok(!r.ok);
        assert.equal(r.error?.code, code);
      }
      assert.deepEqual(await rowsOf(tenantId), before);
    });

    test("a declined card fails the purchase, grants nothing", async () => {
      const { tenantId, walletId } = await setup();
      const p = await store.db.transaction((tx) =>
        commerce.createPurchase(tx, tenantId, {
          walletId,
          currency: "USD",
          item: { packId: "annual" },
          provider: "test",
          paymentMethod: "pm_test_declined",
        }),
      );
      assert.ok(p.ok);
      assert.equal(p.value.status, "failed");
      assert.match(p.value.failureReason!, /declined/);
      assert.equal(await total(tenantId, walletId), "0");
    });

    test("auto top-up: below the threshold the clock's advance buys once; the monthly cap stops it until the next month", async () => {
      const { tenantId, walletId } = await setup();
      await store.db.transaction((tx) =>
        store.createGrant(tx, tenantId, { walletId, amount: credits(300n), source: "promo" }),
      );
      const set = await store.db.transaction((tx) =>
        commerce.setAutoTopUp(tx, tenantId, walletId, {
          threshold: credits(200n),
          buy: { kind: "amount", credits: credits(500n) },
          currency: "USD",
          monthlyCap: usd(100n),
          provider: "test",
          paymentMethod: "pm_test_ok",
        }),
      );
      assert.ok(set.ok, set.ok ? "" : set.error.message);
      // Above the threshold: nothing due.
      assert.equal(await commerce.nextDue(tenantId, T0 + 30 * DAY), null);
      const spend = (amount: bigint) =>
        store.db.transaction((tx) =>
          store.debitWallet(tx, tenantId, walletId, { amount, action: null, kind: "debit" }),
        );
      assert.ok((await spend(credits(150n))).ok);
      assert.equal(await commerce.nextDue(tenantId, T0 + DAY), T0);
      await store.advanceClock(tenantId, T0 + 60_000);
      assert.equal(await total(tenantId, walletId), "650");
      const bought = await commerce.listPurchases(tenantId, { walletId }, { limit: 10 });
      assert.equal(bought.items.length, 1);
      assert.equal(bought.items[0]!.origin, "auto_top_up");
      assert.equal(bought.items[0]!.price, usd(60n));
      const g = await store.getGrant(tenantId, bought.items[0]!.grantId!);
      assert.equal(g!.source, "top_up");

      // Second crossing: $60 of the $100 cap is spent, the next $60 does not fit.
      assert.ok((await spend(credits(500n))).ok);
      const before = await rowsOf(tenantId);
      const manual = await commerce.checkAutoTopUp(tenantId, walletId);
      assert.ok(!manual.ok);
      assert.equal(manual.error.code, "auto_top_up_cap_reached");
      assert.deepEqual(await rowsOf(tenantId), before, "a refused manual check writes nothing");
      await store.advanceClock(tenantId, T0 + 2 * DAY);
      assert.equal(await total(tenantId, walletId), "150");
      const capped = await commerce.getAutoTopUp(tenantId, walletId);
      assert.equal(capped!.cappedUntil, Date.UTC(2027, 1, 1));
      assert.equal(await commerce.nextDue(tenantId, T0 + 30 * DAY), Date.UTC(2027, 1, 1));
      // The month ends: the cap resets and the top-up happens at the boundary, once.
      await store.advanceClock(tenantId, Date.UTC(2027, 1, 5));
      assert.equal(await total(tenantId, walletId), "650");
      const all = await commerce.listPurchases(tenantId, { walletId }, { limit: 10 });
      assert.equal(all.items.length, 2);
      // (Ids carry the store's clock, not the tenant's: order by time.)
      assert.deepEqual(
        all.items.map((p) => p.createdAt).sort((a, b) => a - b),
        [T0, Date.UTC(2027, 1, 1)],
      );
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("auto top-up to a target balance; a declined payment turns it off with the reason", async () => {
      const { tenantId, walletId } = await setup();
      const set = await store.db.transaction((tx) =>
        commerce.setAutoTopUp(tx, tenantId, walletId, {
          threshold: credits(100n),
          buy: { kind: "target", balance: credits(400n) },
          currency: "USD",
          monthlyCap: usd(1000n),
          provider: "test",
          paymentMethod: "pm_test_ok",
        }),
      );
      assert.ok(set.ok);
      await store.advanceClock(tenantId, T0 + 1000);
      assert.equal(await total(tenantId, walletId), "400");
      // A declined card: the purchase fails, no credits, auto top-up off, and nothing due any more.
      await store.db.transaction((tx) =>
        commerce.setAutoTopUp(tx, tenantId, walletId, {
          threshold: credits(500n),
          buy: { kind: "target", balance: credits(800n) },
          currency: "USD",
          monthlyCap: usd(1000n),
          provider: "test",
          paymentMethod: "pm_test_declined",
        }),
      );
      await store.advanceClock(tenantId, T0 + 2000);
      assert.equal(await total(tenantId, walletId), "400");
      const off = await commerce.getAutoTopUp(tenantId, walletId);
      assert.equal(off!.enabled, false);
      assert.match(off!.disabledReason!, /^payment_failed: card_declined/);
      assert.equal(await commerce.nextDue(tenantId, T0 + 30 * DAY), null);
      const purchases = await commerce.listPurchases(tenantId, { walletId }, { limit: 10 });
      assert.deepEqual(purchases.items.map((p) => p.status).sort(), ["confirmed", "failed"]);
      const r = await commerce.checkAutoTopUp(tenantId, walletId);
      assert.ok(!r.ok);
      assert.equal(r.error.code, "auto_top_up_disabled");
    });

    test("an invoiced auto top-up waits for its confirmation: one pending at a time; failing it turns auto top-up off", async () => {
      const { tenantId, walletId } = await setup();
      await store.db.transaction((tx) =>
        commerce.setAutoTopUp(tx, tenantId, walletId, {
          threshold: credits(100n),
          buy: { kind: "pack", packId: "annual" },
          currency: "USD",
          monthlyCap: usd(1000n),
          provider: "manual",
        }),
      );
      await store.advanceClock(tenantId, T0 + 1000);
      await store.advanceClock(tenantId, T0 + 2 * DAY);
      const pending = await commerce.listPurchases(tenantId, { walletId }, { limit: 10 });
      assert.equal(pending.items.length, 1);
      assert.equal(pending.items[0]!.status, "pending");
      assert.equal(await total(tenantId, walletId), "0");
      const run = await commerce.checkAutoTopUp(tenantId, walletId);
      assert.ok(run.ok);
      assert.equal(run.value.outcome, "pending");
      const failed = await store.db.transaction((tx) =>
        commerce.resolveUnpaid(tx, tenantId, pending.items[0]!.id, "failed", "invoice unpaid after 30 days"),
      );
      assert.ok(failed.ok);
      const off = await commerce.getAutoTopUp(tenantId, walletId);
      assert.equal(off!.enabled, false);
      assert.equal(off!.disabledReason, "payment_failed: invoice unpaid after 30 days");
    });

    test("two Store instances confirming one purchase at once: one grant, the other purchase_not_pending", async () => {
      const { tenantId, walletId } = await setup();
      const other = database.store(() => T0);
      const commerce2 = new Commerce(other);
      for (let round = 0; round < 5; round++) {
        const p = await store.db.transaction((tx) =>
          commerce.createPurchase(tx, tenantId, {
            walletId,
            currency: "USD",
            item: { credits: credits(10n) },
            provider: "manual",
          }),
        );
        assert.ok(p.ok);
        const results = await Promise.all([
          store.db.transaction((tx) => commerce.confirmPurchase(tx, tenantId, p.value.id)),
          other.db.transaction((tx) => commerce2.confirmPurchase(tx, tenantId, p.value.id)),
        ]);
        assert.equal(results.filter((r) => r.ok).length, 1);
        const lost = results.find((r) => !r.ok);
        assert.equal(lost && !lost.ok ? lost.error.code : null, "purchase_not_pending");
      }
      assert.equal(await total(tenantId, walletId), "50");
      const { rows } = await store.db.query(
        "SELECT count(*)::int AS n FROM grants WHERE tenant_id = $1 AND source = 'purchase'",
        [tenantId],
      );
      assert.equal(rows[0]!.n, 5);
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);
    });

    test("two instances running auto top-up at once buy once for one shortfall", async () => {
      const { tenantId, walletId } = await setup();
      await store.db.transaction((tx) =>
        commerce.setAutoTopUp(tx, tenantId, walletId, {
          threshold: credits(100n),
          buy: { kind: "amount", credits: credits(200n) },
          currency: "USD",
          monthlyCap: usd(1000n),
          provider: "test",
          paymentMethod: "pm_test_ok",
        }),
      );
      const other = database.store(() => T0);
      const commerce2 = new Commerce(other);
      await Promise.all([
        commerce.run(tenantId),
        commerce2.run(tenantId),
        commerce.run(null),
        commerce2.run(null),
      ]);
      assert.equal(await total(tenantId, walletId), "200");
      const bought = await commerce.listPurchases(tenantId, { walletId }, { limit: 10 });
      assert.equal(bought.items.length, 1);
      assert.equal(bought.items[0]!.status, "confirmed");
    });
  });
}
