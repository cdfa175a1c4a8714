/**
 * Contract tests of every Store method, run identically on PGlite and (when DATABASE_URL is
 * set) on PostgreSQL. One database per backend; every test works in its own tenant, which
 * also exercises tenant confinement on every query.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { credits, type GrantInput, type LedgerErrorCode, type Result } from "@drawdown/core";
import { createIdGenerator, type SqlExecutor, Store, type TransactionRecord } from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const c = (n: number): bigint => credits(BigInt(n));

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function failed<T>(r: Result<T>, code: LedgerErrorCode) {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
  assert.ok(r.error.message.length > 0, "a failure carries a message");
  return r.error;
}

/** The grant-account side of a transaction, as [grantId, amount] pairs, in entry order. */
const draws = (tx: TransactionRecord): [string, bigint][] =>
  tx.entries.flatMap((e) => (e.account.kind === "grant" ? [[e.account.grantId, e.amount]] : [])) as [
    string,
    bigint,
  ][];

const systemSide = (tx: TransactionRecord): [string, bigint][] =>
  tx.entries.flatMap((e) => (e.account.kind === "system" ? [[e.account.name, e.amount]] : [])) as [
    string,
    bigint,
  ][];

for (const backend of backends()) {
  describe(`Store on ${backend.name}`, () => {
    let database: TestDatabase;
    let now = T0;
    let store: Store;

    before(async () => {
      database = await backend.open();
      store = database.store(() => now);
    });
    after(async () => {
      await database?.close();
    });

    /** Runs a write in one transaction, as the server does. */
    const write = <T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> => store.db.transaction(fn);

    /** A fresh tenant with one organization customer; the clock back at T0. */
    async function setup(name = "Acme") {
      now = T0;
      const tenant = await store.createTenant(name, "test");
      const customer = okv(
        await write((tx) =>
          store.createCustomer(tx, tenant.id, { kind: "organization", externalId: "acme" }),
        ),
      );
      return { tenantId: tenant.id, customer, walletId: customer.walletId };
    }

    async function grant(tenantId: string, input: GrantInput) {
      return okv(await write((tx) => store.createGrant(tx, tenantId, input))).grant;
    }

    async function debit(
      tenantId: string,
      walletId: string,
      amount: bigint,
      extra: { action?: string | null; grantId?: string | null } = {},
    ) {
      return write((tx) =>
        store.debitWallet(tx, tenantId, walletId, {
          amount,
          action: extra.action ?? null,
          kind: "debit",
          grantId: extra.grantId ?? null,
        }),
      );
    }

    /** Everything a tenant's ledger holds, as text, to prove a failure changed nothing. */
    async function snapshot(tenantId: string): Promise<string> {
      const q = async (sql: string) => (await store.db.query(sql, [tenantId])).rows;
      return JSON.stringify({
        wallets: await q("SELECT id, balance::text FROM wallets WHERE tenant_id = $1 ORDER BY id"),
        grants: await q(
          "SELECT id, remaining::text, status, expires_at::text FROM grants WHERE tenant_id = $1 ORDER BY id",
        ),
        transactions: await q("SELECT id FROM journal_transactions WHERE tenant_id = $1 ORDER BY id"),
        entries: await q("SELECT count(*)::int AS n FROM journal_entries WHERE tenant_id = $1"),
        changes: await q("SELECT count(*)::int AS n FROM grant_changes WHERE tenant_id = $1"),
        keys: await q("SELECT key, outcome FROM idempotency_keys WHERE tenant_id = $1 ORDER BY key"),
      });
    }

    async function count(table: string, tenantId: string, where = "TRUE"): Promise<number> {
      const { rows } = await store.db.query(
        `SELECT count(*)::int AS n FROM ${table} WHERE tenant_id = $1 AND ${where}`,
        [tenantId],
      );
      return Number(rows[0]!.n);
    }

    async function expectClean(tenantId: string | null) {
      const report = await store.reconcile(tenantId);
      assert.deepEqual(report.differences, [], "reconcile finds no difference");
      return report;
    }

    // ------------------------------------------------------------------ tenants and keys

    describe("tenants", () => {
      test("createTenant, getTenant and listTenants", async () => {
        now = T0;
        const live = await store.createTenant("Live One", "live");
        assert.match(live.id, /^ten_/);
        assert.equal(live.name, "Live One");
        assert.equal(live.environment, "live");
        assert.equal(live.createdAt, T0);
        assert.deepEqual(await store.getTenant(live.id), live);
        assert.equal(await store.getTenant("ten_missing"), null);
        const all = await store.listTenants();
        assert.ok(all.some((t) => t.id === live.id));
      });
    });

    describe("API keys", () => {
      test("create returns the secret once; only its hash is stored", async () => {
        const { tenantId } = await setup();
        const { key, secret } = okv(await store.createApiKey(tenantId, { kind: "secret", name: "backend" }));
        assert.match(secret, /^dd_test_sk_[0-9A-Za-z]{32}$/);
        assert.equal(key.kind, "secret");
        assert.equal(key.tenantId, tenantId);
        assert.equal(key.customerId, null);
        assert.equal(key.prefix, secret.slice(0, 14));
        assert.equal(key.revokedAt, null);
        assert.ok(!JSON.stringify(key).includes(secret), "the key record never carries the secret");

        const { rows } = await store.db.query("SELECT * FROM api_keys WHERE tenant_id = $1 AND id = $2", [
          tenantId,
          key.id,
        ]);
        const row = rows[0]!;
        assert.equal(row.hash, createHash("sha256").update(secret).digest("hex"));
        for (const value of Object.values(row)) assert.notEqual(value, secret, "the secret is not stored");

        const listed = await store.listApiKeys(tenantId);
        assert.deepEqual(listed, [key]);
        assert.ok(!JSON.stringify(listed).includes(secret));
      });

      test("concurrent requests with a key not cached share one lookup", async () => {
        const { tenantId } = await setup();
        const { key, secret } = okv(await store.createApiKey(tenantId, { kind: "secret", name: "hot" }));
        // Another instance (a store of its own, cold cache) over a client that counts key lookups.
        let lookups = 0;
        const counting = {
          ...store.db,
          query: ((text: string, params?: readonly unknown[]) => {
            if (text.includes("FROM api_keys k JOIN tenants")) lookups++;
            return store.db.query(text, params);
          }) as typeof store.db.query,
        };
        const other = new Store(counting, { newId: createIdGenerator(() => now), clock: () => now });
        const found = await Promise.all(Array.from({ length: 50 }, () => other.authenticate(secret)));
        assert.ok(found.every((f) => f?.key.id === key.id));
        assert.equal(lookups, 1);
        // A wrong secret is looked up (once per burst too) and found nowhere.
        const none = await Promise.all(Array.from({ length: 5 }, () => other.authenticate(`${secret}x`)));
        assert.ok(none.every((f) => f === null));
        assert.equal(lookups, 2);
      });

      test("authenticate finds a live key and its tenant; revoke stops it at once", async () => {
        const { tenantId } = await setup();
        const { key, secret } = okv(await store.createApiKey(tenantId, { kind: "secret", name: "backend" }));
        const auth = await store.authenticate(secret);
        assert.ok(auth);
        assert.equal(auth.key.id, key.id);
        assert.equal(auth.tenant.id, tenantId);
        assert.equal(auth.tenant.environment, "test");
        assert.equal(await store.authenticate(`${secret}x`), null);
        assert.equal(await store.authenticate("dd_test_sk_nothing"), null);

        now = T0 + HOUR;
        const revoked = okv(await store.revokeApiKey(tenantId, key.id));
        assert.equal(revoked.revokedAt, T0 + HOUR);
        assert.equal(await store.authenticate(secret), null);
        now = T0 + 2 * HOUR;
        const again = okv(await store.revokeApiKey(tenantId, key.id));
        assert.equal(again.revokedAt, T0 + HOUR, "revoking twice keeps the first time");
        failed(await store.revokeApiKey(tenantId, "key_missing"), "not_found");
      });

      test("restricted keys name one existing customer; live tenants get live keys", async () => {
        const { tenantId, customer } = await setup();
        failed(await store.createApiKey(tenantId, { kind: "restricted", name: "page" }), "not_found");
        failed(
          await store.createApiKey(tenantId, { kind: "restricted", name: "page", customerId: "cus_missing" }),
          "not_found",
        );
        const r = okv(
          await store.createApiKey(tenantId, { kind: "restricted", name: "page", customerId: customer.id }),
        );
        assert.equal(r.key.kind, "restricted");
        assert.equal(r.key.customerId, customer.id);
        assert.match(r.secret, /^dd_test_rk_/);
        // A secret key ignores a customer id.
        const s = okv(
          await store.createApiKey(tenantId, { kind: "secret", name: "all", customerId: customer.id }),
        );
        assert.equal(s.key.customerId, null);

        const live = await store.createTenant("Live", "live");
        assert.match(
          okv(await store.createApiKey(live.id, { kind: "secret", name: "prod" })).secret,
          /^dd_live_sk_/,
        );
        failed(await store.createApiKey("ten_missing", { kind: "secret", name: "x" }), "not_found");
      });
    });

    // ------------------------------------------------------------------ customers, subjects, wallets

    describe("customers", () => {
      test("createCustomer creates the customer and its pool wallet", async () => {
        const { tenantId } = await setup();
        const customer = okv(
          await write((tx) =>
            store.createCustomer(tx, tenantId, {
              kind: "individual",
              externalId: "user-1",
              name: "Ada",
              metadata: { plan: "pro" },
            }),
          ),
        );
        assert.match(customer.id, /^cus_/);
        assert.equal(customer.kind, "individual");
        assert.equal(customer.externalId, "user-1");
        assert.equal(customer.name, "Ada");
        assert.deepEqual(customer.metadata, { plan: "pro" });
        assert.equal(customer.createdAt, T0);
        assert.deepEqual(await store.getCustomer(tenantId, customer.id), customer);
        assert.equal(await store.getCustomer(tenantId, "cus_missing"), null);

        const pool = await store.getWallet(tenantId, customer.walletId);
        assert.ok(pool);
        assert.equal(pool.customerId, customer.id);
        assert.equal(pool.memberId, null);
        assert.equal(pool.balance, 0n);
        assert.deepEqual(await store.listWallets(tenantId, customer.id), [pool]);
      });

      test("external_id is unique per tenant: a duplicate is already_exists and creates nothing", async () => {
        const { tenantId } = await setup();
        const was = [await count("customers", tenantId), await count("wallets", tenantId)];
        failed(
          await write((tx) =>
            store.createCustomer(tx, tenantId, { kind: "organization", externalId: "acme" }),
          ),
          "already_exists",
        );
        assert.deepEqual([await count("customers", tenantId), await count("wallets", tenantId)], was);
        // Another tenant may use the same external id; customers without one never collide.
        const other = await store.createTenant("Other", "test");
        okv(
          await write((tx) =>
            store.createCustomer(tx, other.id, { kind: "organization", externalId: "acme" }),
          ),
        );
        okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "individual" })));
        okv(
          await write((tx) => store.createCustomer(tx, tenantId, { kind: "individual", externalId: null })),
        );
        assert.equal(await count("customers", tenantId), 3);
      });

      test("listCustomers pages by id and filters by external id", async () => {
        const { tenantId, customer } = await setup();
        const ids = [customer.id];
        for (let i = 0; i < 4; i++) {
          ids.push(
            okv(
              await write((tx) =>
                store.createCustomer(tx, tenantId, { kind: "individual", externalId: `u${i}` }),
              ),
            ).id,
          );
        }
        const seen: string[] = [];
        let after: string | null = null;
        let pages = 0;
        do {
          const page = await store.listCustomers(tenantId, { after, limit: 2 });
          seen.push(...page.items.map((c) => c.id));
          after = page.next;
          pages++;
        } while (after !== null);
        assert.equal(pages, 3);
        assert.deepEqual(seen, [...ids].sort());
        const one = await store.listCustomers(tenantId, { limit: 10 }, "u2");
        assert.deepEqual(
          one.items.map((c) => c.externalId),
          ["u2"],
        );
        assert.equal(one.next, null);
      });
    });

    describe("subjects and member wallets", () => {
      test("createSubject, getSubject, listSubjects; external_id unique per customer", async () => {
        const { tenantId, customer } = await setup();
        const ada = okv(
          await write((tx) =>
            store.createSubject(tx, tenantId, {
              customerId: customer.id,
              kind: "member",
              externalId: "ada",
              name: "Ada",
              metadata: { team: "ml" },
            }),
          ),
        );
        assert.match(ada.id, /^sub_/);
        assert.equal(ada.customerId, customer.id);
        assert.equal(ada.kind, "member");
        assert.deepEqual(ada.metadata, { team: "ml" });
        assert.deepEqual(await store.getSubject(tenantId, ada.id), ada);
        assert.equal(await store.getSubject(tenantId, "sub_missing"), null);

        failed(
          await write((tx) =>
            store.createSubject(tx, tenantId, { customerId: customer.id, kind: "agent", externalId: "ada" }),
          ),
          "already_exists",
        );
        failed(
          await write((tx) =>
            store.createSubject(tx, tenantId, { customerId: "cus_missing", kind: "member" }),
          ),
          "not_found",
        );
        const other = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
        okv(
          await write((tx) =>
            store.createSubject(tx, tenantId, { customerId: other.id, kind: "member", externalId: "ada" }),
          ),
        );
        const ids = [ada.id];
        for (let i = 0; i < 4; i++) {
          ids.push(
            okv(
              await write((tx) =>
                store.createSubject(tx, tenantId, { customerId: customer.id, kind: "agent" }),
              ),
            ).id,
          );
        }
        const seen: string[] = [];
        let after: string | null = null;
        do {
          const page = await store.listSubjects(tenantId, customer.id, { after, limit: 3 });
          seen.push(...page.items.map((s) => s.id));
          after = page.next;
        } while (after !== null);
        assert.deepEqual(seen, [...ids].sort());
      });

      test("one wallet per member; none for agents or for another customer's member", async () => {
        const { tenantId, customer } = await setup();
        const member = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "member" })),
        );
        const agent = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "agent" })),
        );
        const wallet = okv(
          await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)),
        );
        assert.match(wallet.id, /^wal_/);
        assert.equal(wallet.memberId, member.id);
        assert.equal(wallet.customerId, customer.id);
        assert.equal(wallet.balance, 0n);
        failed(
          await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)),
          "already_exists",
        );
        failed(
          await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, agent.id)),
          "invalid_argument",
        );
        failed(
          await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, "sub_missing")),
          "not_found",
        );
        const other = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "organization" })));
        failed(await write((tx) => store.createMemberWallet(tx, tenantId, other.id, member.id)), "not_found");
        const wallets = await store.listWallets(tenantId, customer.id);
        assert.deepEqual(
          wallets.map((w) => [w.id, w.memberId]),
          [
            [customer.walletId, null],
            [wallet.id, member.id],
          ],
        );
      });
    });

    // ------------------------------------------------------------------ grants and balance

    describe("grants", () => {
      test("createGrant stores every field and posts issuance -> grant", async () => {
        const { tenantId, customer, walletId } = await setup();
        const r = okv(
          await write((tx) =>
            store.createGrant(tx, tenantId, {
              walletId,
              amount: c(100),
              source: "purchase",
              costBasis: 10_000_000n,
              currency: "USD",
              effectiveAt: T0 - HOUR,
              expiresAt: T0 + 30 * DAY,
              priority: 7,
              scope: ["image.*", "chat.completion", "image.*"],
              metadata: { order: "o-1" },
            }),
          ),
        );
        const g = r.grant;
        assert.match(g.id, /^grt_/);
        assert.equal(g.walletId, walletId);
        assert.equal(g.customerId, customer.id);
        assert.equal(g.amount, c(100));
        assert.equal(g.remaining, c(100));
        assert.equal(g.costBasis, 10_000_000n);
        assert.equal(g.currency, "USD");
        assert.equal(g.effectiveAt, T0 - HOUR);
        assert.equal(g.expiresAt, T0 + 30 * DAY);
        assert.equal(g.priority, 7);
        assert.deepEqual(g.scope, ["chat.completion", "image.*"], "scope is deduplicated and sorted");
        assert.deepEqual(g.metadata, { order: "o-1" });
        assert.equal(g.status, "active");

        assert.deepEqual(await store.getGrant(tenantId, g.id), { ...g, statusAt: null });
        assert.equal(await store.getGrant(tenantId, "grt_missing"), null);

        const tx = await store.getTransaction(tenantId, r.transactionId);
        assert.ok(tx);
        assert.equal(tx.kind, "grant");
        assert.equal(tx.customerId, customer.id);
        assert.equal(tx.postedAt, T0);
        assert.deepEqual(draws(tx), [[g.id, c(100)]]);
        assert.deepEqual(systemSide(tx), [["issuance", -c(100)]]);
        assert.equal((await store.getWallet(tenantId, walletId))?.balance, c(100));
        await expectClean(tenantId);
      });

      test("invalid grants fail with a code and change nothing", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(5), source: "plan" });
        const was = await snapshot(tenantId);
        const attempt = (input: GrantInput) => write((tx) => store.createGrant(tx, tenantId, input));
        failed(await attempt({ walletId, amount: 0n, source: "plan" }), "invalid_amount");
        failed(await attempt({ walletId, amount: -c(1), source: "plan" }), "invalid_amount");
        failed(
          await attempt({ walletId, amount: c(1), source: "plan", expiresAt: T0 - 1 }),
          "invalid_argument",
        );
        failed(await attempt({ walletId, amount: c(1), source: "plan", costBasis: 5n }), "invalid_argument");
        failed(await attempt({ walletId, amount: c(1), source: "plan", priority: 101 }), "invalid_argument");
        failed(await attempt({ walletId, amount: c(1), source: "plan", scope: [] }), "invalid_argument");
        failed(await attempt({ walletId: "wal_missing", amount: c(1), source: "plan" }), "not_found");
        const adjust = (source: GrantInput["source"], kind: "grant" | "adjustment.credit", reason?: string) =>
          write((tx) =>
            store.createGrant(tx, tenantId, { walletId, amount: c(1), source }, { kind, reason }),
          );
        failed(await adjust("adjustment", "adjustment.credit"), "invalid_argument"); // no reason
        failed(await adjust("adjustment", "grant", "why"), "invalid_argument"); // the source is for adjustments
        failed(await adjust("plan", "adjustment.credit", "why"), "invalid_argument"); // which need that source
        assert.equal(await snapshot(tenantId), was);
      });

      test("listGrants filters by wallet, customer and status, and pages by id", async () => {
        const { tenantId, customer, walletId } = await setup();
        const member = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "member" })),
        );
        const mw = okv(await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)));
        const other = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "individual" })));
        const pool: string[] = [];
        for (let i = 0; i < 5; i++)
          pool.push((await grant(tenantId, { walletId, amount: c(1), source: "plan" })).id);
        const mine = (await grant(tenantId, { walletId: mw.id, amount: c(1), source: "gift" })).id;
        const theirs = (await grant(tenantId, { walletId: other.walletId, amount: c(1), source: "plan" })).id;
        okv(await write((tx) => store.voidGrant(tx, tenantId, pool[0]!, "test")));

        const all = async (filter: Parameters<Store["listGrants"]>[1], limit = 2) => {
          const ids: string[] = [];
          let after: string | null = null;
          do {
            const page = await store.listGrants(tenantId, filter, { after, limit });
            assert.ok(page.items.length <= limit);
            ids.push(...page.items.map((g) => g.id));
            after = page.next;
          } while (after !== null);
          return ids;
        };
        assert.deepEqual(await all({ walletId }), [...pool].sort());
        assert.deepEqual(await all({ walletId: mw.id }), [mine]);
        assert.deepEqual(await all({ customerId: customer.id }), [...pool, mine].sort());
        assert.deepEqual(await all({ customerId: other.id }), [theirs]);
        assert.deepEqual(await all({}, 3), [...pool, mine, theirs].sort());
        assert.deepEqual(await all({ status: "voided" }), [pool[0]]);
        assert.deepEqual(await all({ walletId, status: "active" }), pool.slice(1).sort());
        const voided = await store.getGrant(tenantId, pool[0]!);
        assert.equal(voided?.status, "voided");
        assert.equal(voided?.remaining, 0n);
      });
    });

    describe("balance", () => {
      test("total, available, pending, per-scope, and grants in burn-down order", async () => {
        const { tenantId, customer, walletId } = await setup();
        const g = {
          a: await grant(tenantId, { walletId, amount: c(10), source: "plan" }),
          b: await grant(tenantId, { walletId, amount: c(11), source: "plan", priority: 10 }),
          c: await grant(tenantId, { walletId, amount: c(12), source: "promo", scope: ["chat.*"] }),
          d: await grant(tenantId, { walletId, amount: c(13), source: "plan", expiresAt: T0 + 10 * DAY }),
          e: await grant(tenantId, { walletId, amount: c(14), source: "plan", expiresAt: T0 + 5 * DAY }),
          f: await grant(tenantId, {
            walletId,
            amount: c(15),
            source: "purchase",
            costBasis: 5_000_000n,
            currency: "USD",
          }),
          g: await grant(tenantId, { walletId, amount: c(16), source: "plan", effectiveAt: T0 - DAY }),
          h: await grant(tenantId, { walletId, amount: c(17), source: "plan", effectiveAt: T0 + DAY }),
        };
        const bal = await store.balance(tenantId, walletId);
        assert.ok(bal);
        assert.equal(bal.walletId, walletId);
        assert.equal(bal.customerId, customer.id);
        assert.equal(bal.memberId, null);
        assert.equal(bal.total, c(10 + 11 + 12 + 13 + 14 + 15 + 16 + 17));
        assert.equal(bal.available, c(10 + 11 + 12 + 13 + 14 + 15 + 16));
        assert.equal(bal.upcoming, c(17));
        assert.equal(bal.expired, 0n);
        assert.deepEqual(bal.scopes, [
          { scope: ["chat.*"], available: c(12) },
          { scope: null, available: c(10 + 11 + 13 + 14 + 15 + 16) },
        ]);
        // Priority, scoped before unscoped, soonest expiry, free before paid, earliest effective.
        // The pending grant h (effective tomorrow, never expiring, free) sorts by the same rules.
        assert.deepEqual(
          bal.grants.map((x) => x.id),
          [g.b, g.c, g.e, g.d, g.g, g.a, g.h, g.f].map((x) => x.id),
        );
        assert.equal(await store.balance(tenantId, "wal_missing"), null);

        // A day later h is effective: nothing pending.
        now = T0 + DAY;
        const later = await store.balance(tenantId, walletId);
        assert.equal(later?.upcoming, 0n);
        assert.equal(later?.available, later?.total);
      });

      test("expired grants await breakage until the wallet is touched", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(5), source: "plan", expiresAt: T0 + HOUR });
        await grant(tenantId, { walletId, amount: c(7), source: "plan" });
        now = T0 + 2 * HOUR;
        const bal = await store.balance(tenantId, walletId);
        assert.equal(bal?.total, c(12));
        assert.equal(bal?.available, c(7));
        assert.equal(bal?.expired, c(5));
        assert.equal(bal?.upcoming, 0n);
      });
    });

    // ------------------------------------------------------------------ debits

    describe("debits", () => {
      test("a debit draws grants in burn-down order and posts to consumption", async () => {
        const { tenantId, customer, walletId } = await setup();
        const b = await grant(tenantId, { walletId, amount: c(10), source: "plan", priority: 10 });
        const scoped = await grant(tenantId, { walletId, amount: c(10), source: "promo", scope: ["chat.*"] });
        const soon = await grant(tenantId, {
          walletId,
          amount: c(10),
          source: "plan",
          expiresAt: T0 + 5 * DAY,
        });
        const late = await grant(tenantId, {
          walletId,
          amount: c(10),
          source: "plan",
          expiresAt: T0 + 9 * DAY,
        });
        const old = await grant(tenantId, { walletId, amount: c(10), source: "plan", effectiveAt: T0 - DAY });
        const free = await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        const paid = await grant(tenantId, {
          walletId,
          amount: c(10),
          source: "purchase",
          costBasis: 1n,
          currency: "EUR",
        });

        now = T0 + 1000;
        const first = okv(await debit(tenantId, walletId, c(15), { action: "chat.completion" }));
        assert.equal(first.kind, "debit");
        assert.equal(first.action, "chat.completion");
        assert.equal(first.customerId, customer.id);
        assert.equal(first.postedAt, T0 + 1000);
        assert.match(first.seq, /^\d+$/);
        assert.deepEqual(draws(first), [
          [b.id, -c(10)],
          [scoped.id, -c(5)],
        ]);
        assert.deepEqual(systemSide(first), [["consumption", c(15)]]);

        // Without an action the scoped grant is not eligible.
        const second = okv(await debit(tenantId, walletId, c(25)));
        assert.deepEqual(draws(second), [
          [soon.id, -c(10)],
          [late.id, -c(10)],
          [old.id, -c(5)],
        ]);
        const third = okv(await debit(tenantId, walletId, c(20), { action: "image.upscale" }));
        assert.deepEqual(draws(third), [
          [old.id, -c(5)],
          [free.id, -c(10)],
          [paid.id, -c(5)],
        ]);
        assert.deepEqual(await store.getTransaction(tenantId, third.id), third);
        const bal = await store.balance(tenantId, walletId);
        assert.equal(bal?.total, c(70 - 60));
        assert.deepEqual(
          bal?.grants.map((g) => [g.id, g.remaining]),
          [
            [scoped.id, c(5)],
            [paid.id, c(5)],
          ],
        );
        await expectClean(tenantId);
      });

      test("a member's debit draws its own wallet, then falls through to the pool", async () => {
        const { tenantId, customer, walletId: poolId } = await setup();
        const member = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "member" })),
        );
        const mw = okv(await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)));
        const own = await grant(tenantId, { walletId: mw.id, amount: c(10), source: "plan" });
        const shared = await grant(tenantId, {
          walletId: poolId,
          amount: c(20),
          source: "plan",
          priority: 0,
        });

        const tx = okv(await debit(tenantId, mw.id, c(15)));
        assert.deepEqual(draws(tx), [
          [own.id, -c(10)],
          [shared.id, -c(5)],
        ]);
        assert.deepEqual(
          tx.entries.flatMap((e) => (e.account.kind === "grant" ? [e.account.walletId] : [])),
          [mw.id, poolId],
        );
        assert.equal((await store.balance(tenantId, mw.id))?.total, 0n);
        assert.equal((await store.balance(tenantId, poolId))?.total, c(15));

        // The member may use the rest of the pool, but no more.
        const was = await snapshot(tenantId);
        const err = failed(await debit(tenantId, mw.id, c(16)), "insufficient_credits");
        assert.deepEqual(err.details, { requested: "16", available: "15" });
        assert.equal(await snapshot(tenantId), was);

        // The pool never draws from a member's wallet.
        await grant(tenantId, { walletId: mw.id, amount: c(3), source: "gift" });
        failed(await debit(tenantId, poolId, c(16)), "insufficient_credits");
        okv(await debit(tenantId, poolId, c(15)));
        assert.equal((await store.balance(tenantId, mw.id))?.total, c(3));
        assert.equal((await store.balance(tenantId, poolId))?.total, 0n);
        await expectClean(tenantId);
      });

      test("a grant-targeted debit draws only that grant", async () => {
        const { tenantId, walletId } = await setup();
        const first = await grant(tenantId, { walletId, amount: c(10), source: "plan", priority: 0 });
        const target = await grant(tenantId, { walletId, amount: c(10), source: "plan", priority: 90 });
        const tx = okv(
          await write((ex) =>
            store.debitWallet(ex, tenantId, walletId, {
              amount: c(4),
              action: null,
              kind: "adjustment.debit",
              reason: "refund of a duplicate charge",
              grantId: target.id,
            }),
          ),
        );
        assert.equal(tx.kind, "adjustment.debit");
        assert.equal(tx.reason, "refund of a duplicate charge");
        assert.deepEqual(draws(tx), [[target.id, -c(4)]]);
        assert.deepEqual(systemSide(tx), [["adjustments", c(4)]]);
        assert.equal((await store.getGrant(tenantId, first.id))?.remaining, c(10));

        const was = await snapshot(tenantId);
        // More than the grant holds fails even though the wallet holds enough.
        failed(await debit(tenantId, walletId, c(7), { grantId: target.id }), "insufficient_credits");
        // A grant of another wallet (wallet_mismatch), a missing grant, a voided grant.
        const other = okv(await write((ex) => store.createCustomer(ex, tenantId, { kind: "individual" })));
        const foreign = await grant(tenantId, { walletId: other.walletId, amount: c(1), source: "plan" });
        const beforeForeign = await snapshot(tenantId);
        failed(await debit(tenantId, walletId, c(1), { grantId: foreign.id }), "wallet_mismatch");
        failed(await debit(tenantId, walletId, c(1), { grantId: "grt_missing" }), "not_found");
        assert.equal(await snapshot(tenantId), beforeForeign);
        assert.notEqual(was, beforeForeign);
        okv(await write((ex) => store.voidGrant(ex, tenantId, first.id, null)));
        const beforeVoided = await snapshot(tenantId);
        failed(await debit(tenantId, walletId, c(1), { grantId: first.id }), "grant_inactive");
        assert.equal(await snapshot(tenantId), beforeVoided);
        await expectClean(tenantId);
      });

      test("insufficient_credits, bad amounts and missing reasons change nothing", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(3), source: "plan" });
        await grant(tenantId, { walletId, amount: c(4), source: "plan", scope: ["chat.*"] });
        await grant(tenantId, { walletId, amount: c(5), source: "plan", effectiveAt: T0 + DAY });
        const was = await snapshot(tenantId);
        const err = failed(
          await debit(tenantId, walletId, c(8), { action: "chat.x" }),
          "insufficient_credits",
        );
        assert.deepEqual(err.details, { requested: "8", available: "7" });
        failed(await debit(tenantId, walletId, c(4)), "insufficient_credits");
        failed(await debit(tenantId, walletId, 0n), "invalid_amount");
        failed(await debit(tenantId, walletId, -1n), "invalid_amount");
        failed(
          await write((ex) =>
            store.debitWallet(ex, tenantId, walletId, { amount: 1n, action: null, kind: "adjustment.debit" }),
          ),
          "invalid_argument",
        );
        failed(await debit(tenantId, "wal_missing", 1n), "not_found");
        assert.equal(await snapshot(tenantId), was);
        // Exactly what is eligible can be drawn.
        okv(await debit(tenantId, walletId, c(7), { action: "chat.x" }));
        assert.equal((await store.balance(tenantId, walletId))?.total, c(5));
      });
    });

    // ------------------------------------------------------------------ corrections

    describe("credit adjustments, voids, expiry extensions, reversals", () => {
      test("a credit adjustment issues an adjustment grant with its reason, from adjustments", async () => {
        const { tenantId, walletId } = await setup();
        const r = okv(
          await write((tx) =>
            store.createGrant(
              tx,
              tenantId,
              { walletId, amount: c(9), source: "adjustment" },
              { kind: "adjustment.credit", reason: "goodwill" },
            ),
          ),
        );
        assert.equal(r.grant.source, "adjustment");
        const tx = await store.getTransaction(tenantId, r.transactionId);
        assert.equal(tx?.kind, "adjustment.credit");
        assert.equal(tx?.reason, "goodwill");
        assert.deepEqual(systemSide(tx!), [["adjustments", -c(9)]], "manual corrections net in adjustments");
        assert.equal((await store.balance(tenantId, walletId))?.total, c(9));
        await expectClean(tenantId);
      });

      test("void moves the remainder to voided, once", async () => {
        const { tenantId, walletId } = await setup();
        const g = await grant(tenantId, { walletId, amount: c(10), source: "promo" });
        okv(await debit(tenantId, walletId, c(4)));
        now = T0 + HOUR;
        const voided = okv(await write((tx) => store.voidGrant(tx, tenantId, g.id, "promo withdrawn")));
        assert.equal(voided.status, "voided");
        assert.equal(voided.statusAt, T0 + HOUR);
        assert.equal(voided.remaining, 0n);
        const [voidTx] = (await store.listJournal(tenantId, {}, { limit: 10 })).items.filter(
          (t) => t.kind === "void",
        );
        assert.ok(voidTx);
        assert.equal(voidTx.reason, "promo withdrawn");
        assert.deepEqual(draws(voidTx), [[g.id, -c(6)]]);
        assert.deepEqual(systemSide(voidTx), [["voided", c(6)]]);
        assert.equal((await store.balance(tenantId, walletId))?.total, 0n);

        const was = await snapshot(tenantId);
        failed(await write((tx) => store.voidGrant(tx, tenantId, g.id, null)), "grant_inactive");
        failed(await write((tx) => store.voidGrant(tx, tenantId, "grt_missing", null)), "not_found");
        assert.equal(await snapshot(tenantId), was);
        // A fully drawn grant voids with no transaction.
        const empty = await grant(tenantId, { walletId, amount: c(1), source: "plan" });
        okv(await debit(tenantId, walletId, c(1)));
        const txs = await count("journal_transactions", tenantId);
        assert.equal(
          okv(await write((tx) => store.voidGrant(tx, tenantId, empty.id, null))).status,
          "voided",
        );
        assert.equal(await count("journal_transactions", tenantId), txs);
        await expectClean(tenantId);
      });

      test("extending an expiry is a recorded change, never a shortening", async () => {
        const { tenantId, walletId } = await setup();
        const g = await grant(tenantId, { walletId, amount: c(10), source: "plan", expiresAt: T0 + DAY });
        const forever = await grant(tenantId, { walletId, amount: c(1), source: "plan" });
        now = T0 + HOUR;
        const extended = okv(
          await write((tx) => store.extendGrantExpiry(tx, tenantId, g.id, T0 + 7 * DAY, "customer asked")),
        );
        assert.equal(extended.expiresAt, T0 + 7 * DAY);
        assert.equal(extended.remaining, c(10));
        now = T0 + 2 * HOUR;
        okv(await write((tx) => store.extendGrantExpiry(tx, tenantId, g.id, null, "contract renewed")));
        assert.equal((await store.getGrant(tenantId, g.id))?.expiresAt, null);
        const history = await store.grantHistory(tenantId, g.id);
        assert.deepEqual(
          history.map(({ kind, from, to, reason, at }) => ({ kind, from, to, reason, at })),
          [
            {
              kind: "expiry_extended",
              from: T0 + DAY,
              to: T0 + 7 * DAY,
              reason: "customer asked",
              at: T0 + HOUR,
            },
            {
              kind: "expiry_extended",
              from: T0 + 7 * DAY,
              to: null,
              reason: "contract renewed",
              at: T0 + 2 * HOUR,
            },
          ],
        );
        assert.ok(history.every((h) => h.id.startsWith("chg_")));

        const other = await grant(tenantId, {
          walletId,
          amount: c(1),
          source: "plan",
          expiresAt: T0 + 5 * DAY,
        });
        const was = await snapshot(tenantId);
        const ext = (id: string, to: number | null, reason = "why") =>
          write((tx) => store.extendGrantExpiry(tx, tenantId, id, to, reason));
        failed(await ext(other.id, T0 + 4 * DAY), "expiry_not_extendable");
        failed(await ext(other.id, T0 + 5 * DAY), "expiry_not_extendable");
        failed(await ext(forever.id, T0 + 9 * DAY), "expiry_not_extendable");
        failed(await ext(other.id, T0 + 9 * DAY, ""), "invalid_argument");
        failed(await ext("grt_missing", T0 + 9 * DAY), "not_found");
        assert.equal(await snapshot(tenantId), was);
        // An expired grant cannot be extended (and the failed attempt posts no breakage).
        now = T0 + 6 * DAY;
        failed(await ext(other.id, T0 + 9 * DAY), "grant_expired");
        assert.equal(await snapshot(tenantId), was);
        await expectClean(tenantId);
      });

      test("a reversal restores the grants once; reverses_id is unique", async () => {
        const { tenantId, customer, walletId: poolId } = await setup();
        const member = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "member" })),
        );
        const mw = okv(await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)));
        const own = await grant(tenantId, { walletId: mw.id, amount: c(10), source: "plan" });
        const shared = await grant(tenantId, { walletId: poolId, amount: c(10), source: "plan" });
        const spent = okv(await debit(tenantId, mw.id, c(14), { action: "chat.completion" }));
        now = T0 + HOUR;
        const rev = okv(await write((tx) => store.reverseTransaction(tx, tenantId, spent.id, "failed run")));
        assert.equal(rev.kind, "reversal");
        assert.equal(rev.reversesId, spent.id);
        assert.equal(rev.reason, "failed run");
        assert.equal(rev.action, "chat.completion");
        assert.deepEqual(draws(rev), [
          [own.id, c(10)],
          [shared.id, c(4)],
        ]);
        assert.deepEqual(systemSide(rev), [["consumption", -c(14)]]);
        assert.equal((await store.balance(tenantId, mw.id))?.total, c(10));
        assert.equal((await store.balance(tenantId, poolId))?.total, c(10));
        assert.ok(await store.getTransaction(tenantId, spent.id), "the original stays");

        const was = await snapshot(tenantId);
        const again = (id: string, reason = "again") =>
          write((tx) => store.reverseTransaction(tx, tenantId, id, reason));
        failed(await again(spent.id), "transaction_already_reversed");
        failed(await again(rev.id), "transaction_not_reversible");
        const grantTx = (await store.listJournal(tenantId, { walletId: poolId }, { limit: 1 })).items[0]!;
        assert.equal(grantTx.kind, "grant");
        failed(await again(grantTx.id), "transaction_not_reversible");
        failed(await again("txn_missing"), "not_found");
        const other = okv(await debit(tenantId, poolId, c(1)));
        const beforeReason = await snapshot(tenantId);
        failed(await again(other.id, ""), "invalid_argument");
        assert.equal(await snapshot(tenantId), beforeReason);
        assert.notEqual(was, beforeReason);

        // The database itself refuses a second reversal of the same transaction.
        await assert.rejects(
          store.db.query(
            `INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, reverses_id, posted_at)
             VALUES ($1, 'txn_dup', $2, 'reversal', $3, now())`,
            [tenantId, customer.id, spent.id],
          ),
          /unique|duplicate/i,
        );
        // A debit from a grant voided since cannot be reversed: its credits have nowhere to go.
        const later = okv(await debit(tenantId, mw.id, c(2)));
        assert.deepEqual(draws(later), [[own.id, -c(2)]]);
        okv(await write((tx) => store.voidGrant(tx, tenantId, own.id, null)));
        const beforeVoid = await snapshot(tenantId);
        failed(await again(later.id), "grant_inactive");
        assert.equal(await snapshot(tenantId), beforeVoid);
        await expectClean(tenantId);
      });
    });

    // ------------------------------------------------------------------ expiry

    describe("expiry on touch", () => {
      test("the next write after expiry posts one expire to breakage, exactly once", async () => {
        const { tenantId, customer, walletId } = await setup();
        const short = await grant(tenantId, {
          walletId,
          amount: c(10),
          source: "purchase",
          costBasis: 2n,
          currency: "USD",
          expiresAt: T0 + DAY,
        });
        const long = await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        okv(await debit(tenantId, walletId, c(3)));
        assert.equal(
          (await store.getGrant(tenantId, short.id))?.remaining,
          c(7),
          "soonest expiry burns first",
        );

        now = T0 + DAY; // expiry is exclusive: at expires_at the grant is expired
        assert.equal((await store.balance(tenantId, walletId))?.expired, c(7));
        assert.equal(
          await count("journal_transactions", tenantId, "kind = 'expire'"),
          0,
          "reads post nothing",
        );
        // A failing write posts nothing either.
        failed(await debit(tenantId, walletId, c(11)), "insufficient_credits");
        assert.equal(await count("journal_transactions", tenantId, "kind = 'expire'"), 0);

        now = T0 + DAY + HOUR;
        const d = okv(await debit(tenantId, walletId, c(2)));
        assert.deepEqual(draws(d), [[long.id, -c(2)]]);
        const expires = (await store.listJournal(tenantId, { walletId }, { limit: 100 })).items.filter(
          (t) => t.kind === "expire",
        );
        assert.equal(expires.length, 1);
        const exp = expires[0]!;
        assert.equal(exp.customerId, customer.id);
        assert.equal(exp.postedAt, T0 + DAY + HOUR);
        assert.deepEqual(draws(exp), [[short.id, -c(7)]]);
        assert.deepEqual(systemSide(exp), [["breakage", c(7)]]);
        assert.ok(BigInt(exp.seq) < BigInt(d.seq), "the expiry is posted before the write that found it");
        const expired = await store.getGrant(tenantId, short.id);
        assert.equal(expired?.status, "expired");
        assert.equal(expired?.statusAt, T0 + DAY + HOUR);
        assert.equal(expired?.remaining, 0n);
        const bal = await store.balance(tenantId, walletId);
        assert.equal(bal?.expired, 0n);
        assert.equal(bal?.total, c(8));

        // Further writes of every kind find nothing more to expire.
        now = T0 + 3 * DAY;
        okv(await debit(tenantId, walletId, c(1)));
        await grant(tenantId, { walletId, amount: c(1), source: "plan" });
        okv(await write((tx) => store.voidGrant(tx, tenantId, long.id, null)));
        assert.equal(await count("journal_transactions", tenantId, "kind = 'expire'"), 1);
        failed(await debit(tenantId, walletId, c(1), { grantId: short.id }), "grant_expired");
        failed(await write((tx) => store.voidGrant(tx, tenantId, short.id, null)), "grant_expired");
        await expectClean(tenantId);
      });

      test("a fully drawn grant is marked expired once, with no transaction", async () => {
        const { tenantId, walletId } = await setup();
        const drained = await grant(tenantId, {
          walletId,
          amount: c(2),
          source: "plan",
          expiresAt: T0 + HOUR,
        });
        await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        okv(await debit(tenantId, walletId, c(2)));
        assert.equal((await store.getGrant(tenantId, drained.id))?.remaining, 0n);
        now = T0 + 2 * HOUR;
        const txs = await count("journal_transactions", tenantId);
        okv(await debit(tenantId, walletId, c(1)));
        assert.equal(await count("journal_transactions", tenantId), txs + 1, "only the debit is posted");
        const g = await store.getGrant(tenantId, drained.id);
        assert.equal(g?.status, "expired");
        assert.equal(g?.statusAt, T0 + 2 * HOUR);
        okv(await debit(tenantId, walletId, c(1)));
        assert.equal((await store.getGrant(tenantId, drained.id))?.statusAt, T0 + 2 * HOUR, "expired once");
        await expectClean(tenantId);
      });

      test("a member's write expires the pool's due grants too", async () => {
        const { tenantId, customer, walletId: poolId } = await setup();
        const member = okv(
          await write((tx) => store.createSubject(tx, tenantId, { customerId: customer.id, kind: "member" })),
        );
        const mw = okv(await write((tx) => store.createMemberWallet(tx, tenantId, customer.id, member.id)));
        const pooled = await grant(tenantId, {
          walletId: poolId,
          amount: c(4),
          source: "plan",
          expiresAt: T0 + HOUR,
        });
        await grant(tenantId, { walletId: mw.id, amount: c(4), source: "plan" });
        now = T0 + 2 * HOUR;
        okv(await debit(tenantId, mw.id, c(1)));
        assert.equal((await store.getGrant(tenantId, pooled.id))?.status, "expired");
        assert.equal((await store.balance(tenantId, poolId))?.total, 0n);
        assert.equal(await count("journal_transactions", tenantId, "kind = 'expire'"), 1);
        await grant(tenantId, { walletId: poolId, amount: c(1), source: "plan" });
        okv(await debit(tenantId, mw.id, c(4)));
        assert.equal(await count("journal_transactions", tenantId, "kind = 'expire'"), 1);
        await expectClean(tenantId);
      });
    });

    // ------------------------------------------------------------------ journal

    describe("journal", () => {
      test("listJournal filters by wallet, customer and time, and pages by position", async () => {
        const { tenantId, customer, walletId } = await setup();
        const other = okv(await write((tx) => store.createCustomer(tx, tenantId, { kind: "individual" })));
        const ids: string[] = [];
        const mine: string[] = [];
        for (let i = 0; i < 5; i++) {
          now = T0 + i * HOUR;
          const a = okv(
            await write((tx) => store.createGrant(tx, tenantId, { walletId, amount: c(2), source: "plan" })),
          );
          ids.push(a.transactionId);
          mine.push(a.transactionId);
          const b = okv(
            await write((tx) =>
              store.createGrant(tx, tenantId, { walletId: other.walletId, amount: c(2), source: "plan" }),
            ),
          );
          ids.push(b.transactionId);
          const d = okv(await debit(tenantId, walletId, c(1)));
          ids.push(d.id);
          mine.push(d.id);
        }
        const everything = async (filter: Parameters<Store["listJournal"]>[1], limit: number) => {
          const out: TransactionRecord[] = [];
          let after: string | null = null;
          let pages = 0;
          do {
            const page = await store.listJournal(tenantId, filter, { after, limit });
            assert.ok(page.items.length <= limit);
            out.push(...page.items);
            after = page.next;
            pages++;
            assert.ok(pages < 100);
          } while (after !== null);
          return out;
        };
        const all = await everything({}, 4);
        assert.deepEqual(
          all.map((t) => t.id),
          ids,
          "oldest first, every transaction once",
        );
        const seqs = all.map((t) => BigInt(t.seq));
        assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!));
        for (const t of all)
          assert.deepEqual(await store.getTransaction(tenantId, t.id), t, "entries come along");

        assert.deepEqual(
          (await everything({ walletId }, 3)).map((t) => t.id),
          mine,
        );
        assert.deepEqual(
          (await everything({ customerId: customer.id }, 2)).map((t) => t.id),
          mine,
        );
        assert.deepEqual(
          (await everything({ customerId: other.id }, 2)).map((t) => t.kind),
          ["grant", "grant", "grant", "grant", "grant"],
        );
        const window = await everything({ from: T0 + HOUR, to: T0 + 3 * HOUR }, 2);
        assert.deepEqual(
          window.map((t) => t.id),
          ids.slice(3, 9),
          "from is inclusive, to exclusive",
        );
        assert.deepEqual(
          (await everything({ walletId, from: T0 + 4 * HOUR }, 10)).map((t) => t.id),
          mine.slice(8),
        );
        assert.deepEqual(
          (await store.listJournal(tenantId, { walletId: "wal_missing" }, { limit: 5 })).items,
          [],
        );
        const last = await store.listJournal(tenantId, {}, { limit: ids.length });
        assert.equal(last.next, null);
        assert.equal(last.items.length, ids.length);
      });

      test("the journal is append-only: UPDATE, DELETE and TRUNCATE raise", async () => {
        const { tenantId, walletId } = await setup();
        const r = okv(
          await write((tx) =>
            store.createGrant(tx, tenantId, { walletId, amount: c(1), source: "plan", expiresAt: T0 + DAY }),
          ),
        );
        okv(await write((tx) => store.extendGrantExpiry(tx, tenantId, r.grant.id, T0 + 2 * DAY, "why")));
        const was = await snapshot(tenantId);
        const refused = /append-only/;
        await assert.rejects(
          store.db.query("UPDATE journal_entries SET amount = amount * 2 WHERE tenant_id = $1", [tenantId]),
          refused,
        );
        await assert.rejects(
          store.db.query("DELETE FROM journal_entries WHERE tenant_id = $1", [tenantId]),
          refused,
        );
        await assert.rejects(
          store.db.query(
            "UPDATE journal_transactions SET reason = 'edited' WHERE tenant_id = $1 AND id = $2",
            [tenantId, r.transactionId],
          ),
          refused,
        );
        await assert.rejects(
          store.db.query("DELETE FROM journal_transactions WHERE tenant_id = $1", [tenantId]),
          refused,
        );
        await assert.rejects(store.db.query("TRUNCATE journal_entries"), refused);
        await assert.rejects(store.db.query("TRUNCATE journal_transactions CASCADE"), refused);
        // Recorded grant changes are history too.
        await assert.rejects(
          store.db.query("UPDATE grant_changes SET reason = 'edited' WHERE tenant_id = $1", [tenantId]),
          refused,
        );
        await assert.rejects(
          store.db.query("DELETE FROM grant_changes WHERE tenant_id = $1", [tenantId]),
          refused,
        );
        // Also inside a transaction, whatever else it did.
        await assert.rejects(
          write(async (tx) => {
            await tx.query("UPDATE wallets SET balance = 0 WHERE tenant_id = $1", [tenantId]);
            await tx.query("DELETE FROM journal_entries WHERE tenant_id = $1", [tenantId]);
          }),
          refused,
        );
        assert.equal(await snapshot(tenantId), was);
      });
    });

    // ------------------------------------------------------------------ idempotency

    describe("idempotent()", () => {
      test("same key and fingerprint replays the outcome without running fn", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        let runs = 0;
        const run = (key: string | null, fingerprint: string) =>
          store.idempotent(tenantId, key, fingerprint, async (tx) => {
            runs++;
            const r = await store.debitWallet(tx, tenantId, walletId, {
              amount: c(1),
              action: null,
              kind: "debit",
            });
            return r.ok ? { ok: true, id: r.value.id } : { ok: false, code: r.error.code };
          });
        const first = await run("k-1", "POST /debit {1}");
        assert.ok(first.kind === "fresh" && first.outcome.ok);
        const replay = await run("k-1", "POST /debit {1}");
        assert.deepEqual(replay, { kind: "replayed", outcome: first.outcome });
        assert.equal(runs, 1);
        assert.equal((await store.balance(tenantId, walletId))?.total, c(9));

        assert.deepEqual(await run("k-1", "POST /debit {2}"), { kind: "conflict" });
        assert.equal(runs, 1);
        assert.equal((await store.balance(tenantId, walletId))?.total, c(9));

        // Without a key, fn simply runs each time.
        await run(null, "x");
        await run(null, "x");
        assert.equal(runs, 3);
        // A business failure is an outcome too, and replays.
        const big = await store.idempotent(tenantId, "k-2", "f", async (tx) => {
          runs++;
          const r = await store.debitWallet(tx, tenantId, walletId, {
            amount: c(100),
            action: null,
            kind: "debit",
          });
          return r.ok ? { ok: true } : { ok: false, code: r.error.code };
        });
        assert.deepEqual(big, { kind: "fresh", outcome: { ok: false, code: "insufficient_credits" } });
        assert.deepEqual(await store.idempotent(tenantId, "k-2", "f", async () => assert.fail("not run")), {
          kind: "replayed",
          outcome: { ok: false, code: "insufficient_credits" },
        });
        // Keys are per tenant.
        const other = await setup("Other");
        const elsewhere = await store.idempotent(
          other.tenantId,
          "k-1",
          "POST /debit {2}",
          async () => "other",
        );
        assert.deepEqual(elsewhere, { kind: "fresh", outcome: "other" });
      });

      test("an outcome with no value (undefined) is stored and replays as null", async () => {
        const { tenantId } = await setup();
        let runs = 0;
        const first = await store.idempotent(tenantId, "k-void", "f", async () => {
          runs++;
          return undefined;
        });
        assert.deepEqual(first, { kind: "fresh", outcome: undefined });
        const again = await store.idempotent(tenantId, "k-void", "f", async () => {
          runs++;
          return undefined;
        });
        assert.deepEqual(again, { kind: "replayed", outcome: null });
        assert.equal(runs, 1);
      });

      test("fn throwing rolls everything back and leaves no key row", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        const was = await snapshot(tenantId);
        await assert.rejects(
          store.idempotent(tenantId, "k-boom", "f", async (tx) => {
            okv(
              await store.debitWallet(tx, tenantId, walletId, { amount: c(1), action: null, kind: "debit" }),
            );
            throw new Error("boom");
          }),
          /boom/,
        );
        // An outcome that cannot be stored (a bigint) fails the same way.
        await assert.rejects(
          store.idempotent(tenantId, "k-bigint", "f", async (tx) => {
            return okv(
              await store.debitWallet(tx, tenantId, walletId, { amount: c(1), action: null, kind: "debit" }),
            );
          }),
          TypeError,
        );
        assert.equal(await snapshot(tenantId), was);
        assert.equal(await count("idempotency_keys", tenantId), 0);
        // The key is free for a retry.
        const retry = await store.idempotent(tenantId, "k-boom", "f", async () => "done");
        assert.deepEqual(retry, { kind: "fresh", outcome: "done" });
      });
    });

    // ------------------------------------------------------------------ tenant confinement

    describe("tenant confinement", () => {
      test("a second tenant's ids are not found through the first tenant", async () => {
        const a = await setup("A");
        const b = await setup("B");
        const member = okv(
          await write((tx) =>
            store.createSubject(tx, b.tenantId, { customerId: b.customer.id, kind: "member" }),
          ),
        );
        const mw = okv(
          await write((tx) => store.createMemberWallet(tx, b.tenantId, b.customer.id, member.id)),
        );
        const bGrant = await grant(b.tenantId, {
          walletId: b.walletId,
          amount: c(10),
          source: "plan",
          expiresAt: T0 + DAY,
        });
        const bDebit = okv(await debit(b.tenantId, b.walletId, c(1)));
        const bKey = okv(await store.createApiKey(b.tenantId, { kind: "secret", name: "b" }));
        await grant(a.tenantId, { walletId: a.walletId, amount: c(10), source: "plan" });
        const bBefore = await snapshot(b.tenantId);
        const aBefore = await snapshot(a.tenantId);
        const A = a.tenantId;

        assert.equal(await store.getCustomer(A, b.customer.id), null);
        assert.equal(await store.getSubject(A, member.id), null);
        assert.equal(await store.getWallet(A, b.walletId), null);
        assert.equal(await store.getWallet(A, mw.id), null);
        assert.equal(await store.getGrant(A, bGrant.id), null);
        assert.equal(await store.getTransaction(A, bDebit.id), null);
        assert.equal(await store.balance(A, b.walletId), null);
        assert.deepEqual(await store.listWallets(A, b.customer.id), []);
        assert.deepEqual((await store.listSubjects(A, b.customer.id, { limit: 10 })).items, []);
        assert.deepEqual((await store.listGrants(A, { walletId: b.walletId }, { limit: 10 })).items, []);
        assert.deepEqual((await store.listGrants(A, { customerId: b.customer.id }, { limit: 10 })).items, []);
        assert.deepEqual((await store.listJournal(A, { walletId: b.walletId }, { limit: 10 })).items, []);
        assert.deepEqual(
          (await store.listJournal(A, { customerId: b.customer.id }, { limit: 10 })).items,
          [],
        );
        assert.deepEqual(await store.grantHistory(A, bGrant.id), []);
        assert.ok((await store.listCustomers(A, { limit: 100 })).items.every((x) => x.id !== b.customer.id));
        assert.deepEqual(
          (await store.listCustomers(A, { limit: 10 }, "acme")).items.map((x) => x.id),
          [a.customer.id],
        );
        assert.ok((await store.listGrants(A, {}, { limit: 100 })).items.every((g) => g.id !== bGrant.id));
        assert.ok(
          (await store.listJournal(A, {}, { limit: 100 })).items.every((t) => t.customerId === a.customer.id),
        );
        assert.ok((await store.listApiKeys(A)).every((k) => k.tenantId === A));

        failed(await debit(A, b.walletId, c(1)), "not_found");
        failed(await debit(A, a.walletId, c(1), { grantId: bGrant.id }), "not_found");
        failed(
          await write((tx) =>
            store.createGrant(tx, A, { walletId: b.walletId, amount: c(1), source: "plan" }),
          ),
          "not_found",
        );
        failed(await write((tx) => store.voidGrant(tx, A, bGrant.id, null)), "not_found");
        failed(
          await write((tx) => store.extendGrantExpiry(tx, A, bGrant.id, T0 + 9 * DAY, "x")),
          "not_found",
        );
        failed(await write((tx) => store.reverseTransaction(tx, A, bDebit.id, "x")), "not_found");
        failed(
          await write((tx) => store.createSubject(tx, A, { customerId: b.customer.id, kind: "member" })),
          "not_found",
        );
        failed(await write((tx) => store.createMemberWallet(tx, A, b.customer.id, member.id)), "not_found");
        failed(await write((tx) => store.createMemberWallet(tx, A, a.customer.id, member.id)), "not_found");
        failed(
          await store.createApiKey(A, { kind: "restricted", name: "x", customerId: b.customer.id }),
          "not_found",
        );
        failed(await store.revokeApiKey(A, bKey.key.id), "not_found");
        assert.equal((await store.authenticate(bKey.secret))?.tenant.id, b.tenantId);

        const report = await store.reconcile(A);
        assert.deepEqual(report.differences, []);
        assert.equal(report.transactions, 1);
        assert.equal(report.grants, 1);
        assert.equal(report.wallets, 1);
        assert.equal(await snapshot(b.tenantId), bBefore);
        assert.equal(await snapshot(a.tenantId), aBefore);
      });
    });

    // ------------------------------------------------------------------ reconcile

    describe("reconcile", () => {
      test("everything the tests above wrote reconciles clean", async () => {
        const report = await expectClean(null);
        assert.ok(report.wallets > 10);
        assert.ok(report.grants > 10);
        assert.ok(report.transactions > 10);
      });

      test("detects a wallet balance edited behind the ledger's back", async () => {
        const { tenantId, walletId } = await setup();
        await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        okv(await debit(tenantId, walletId, c(3)));
        await expectClean(tenantId);
        await store.db.query("UPDATE wallets SET balance = balance + 1 WHERE tenant_id = $1 AND id = $2", [
          tenantId,
          walletId,
        ]);
        const report = await store.reconcile(tenantId);
        assert.deepEqual(
          report.differences.map((d) => [d.kind, d.tenantId, d.id]),
          [["wallet", tenantId, walletId]],
        );
        assert.match(report.differences[0]!.message, /7000000001/);
        await store.db.query("UPDATE wallets SET balance = balance - 1 WHERE tenant_id = $1 AND id = $2", [
          tenantId,
          walletId,
        ]);
        await expectClean(tenantId);
      });

      test("detects a grant's remaining edited behind the ledger's back", async () => {
        const { tenantId, walletId } = await setup();
        const g = await grant(tenantId, { walletId, amount: c(10), source: "plan" });
        await store.db.query("UPDATE grants SET remaining = remaining - 5 WHERE tenant_id = $1 AND id = $2", [
          tenantId,
          g.id,
        ]);
        const report = await store.reconcile(tenantId);
        const found = report.differences.map((d) => [d.kind, d.id]).sort();
        assert.deepEqual(found, [
          ["grant", g.id],
          ["wallet", walletId],
        ]);
        // Other tenants are unaffected.
        const other = await setup("Other");
        await expectClean(other.tenantId);
      });

      test("detects an unbalanced transaction inserted directly", async () => {
        const { tenantId, customer } = await setup();
        await store.db.query(
          `INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, posted_at) VALUES ($1, 'txn_bad', $2, 'debit', now())`,
          [tenantId, customer.id],
        );
        await store.db.query(
          `INSERT INTO journal_entries (tenant_id, tx_id, idx, account, unit, amount)
           VALUES ($1, 'txn_bad', 0, 'consumption', 'credit', 5)`,
          [tenantId],
        );
        const report = await store.reconcile(tenantId);
        assert.deepEqual(
          report.differences.map((d) => [d.kind, d.id]),
          [["transaction", "txn_bad"]],
        );
      });
    });
  });
}
