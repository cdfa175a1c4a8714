import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type Balance,
  type Customer,
  Drawdown,
  type Grant,
  type Subject,
  type Transaction,
  toCredits,
  toUnits,
  type Wallet,
} from "@drawdown/sdk";
import { ROUTES } from "../src/routes.js";
import { contractClient, contractFetch, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails, sum } from "./support/sdk.js";

/**
 * The whole API driven through the SDK, on every backend: customers and their pools, members
 * and their wallets, grants of every kind, balances, burn-down, adjustments, voids,
 * extensions, reversals, expiry on an injected clock, the journal, reconcile and keys. Every
 * response is checked against its documented schema (see support/contract.ts), and the last
 * test proves every route was exercised.
 */

const DAY = 86_400_000;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

/** The balance's own arithmetic: total = available + upcoming + expired + held = Σ grants + held. */
function assertBalanceAddsUp(b: Balance): void {
  assert.equal(sum([b.available, b.upcoming, b.expired, b.held]), b.total);
  assert.equal(sum([...b.grants.map((g) => g.remaining), b.held]), b.total);
  assert.equal(sum(b.scopes.map((s) => s.available)), b.available);
}

for (const backend of backends()) {
  describe(`end to end through the SDK (${backend.name})`, () => {
    let now = T0;
    const tick = (ms = 1000) => {
      now += ms;
      return now;
    };
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    let acme: Customer;
    let ann: Subject;
    let bot: Subject;
    let annWallet: Wallet;
    const g: Record<"plan" | "purchase" | "promo" | "gift" | "topUp" | "credit", Grant> = {} as never;
    let imageDebit: Transaction;
    let memberDebit: Transaction;

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = connect(server.key);
    });
    after(async () => {
      await server?.close();
    });

    test("a customer comes with its pool wallet; members get wallets of their own", async () => {
      tick();
      acme = await dd.customers.create({
        kind: "organization",
        external_id: "acme",
        name: "Acme",
        metadata: { plan: "team" },
      });
      assert.equal(acme.object, "customer");
      assert.match(acme.id, /^cus_/);
      assert.match(acme.wallet_id, /^wal_/);
      assert.deepEqual(acme.metadata, { plan: "team" });
      assert.equal(acme.created_at, iso(now));
      assert.deepEqual(await dd.customers.get(acme.id), acme);
      const byExternal = await dd.customers.list({ external_id: "acme" });
      assert.deepEqual(byExternal.data, [acme]);
      assert.equal(byExternal.next_cursor, null);
      await fails(dd.customers.create({ kind: "individual", external_id: "acme" }), "already_exists", 409);

      tick();
      ann = await dd.subjects.create(acme.id, { kind: "member", name: "Ann", external_id: "u_ann" });
      tick();
      bot = await dd.subjects.create(acme.id, { kind: "agent", name: "Summarizer" });
      assert.equal(ann.customer_id, acme.id);
      assert.deepEqual(await dd.subjects.get(bot.id), bot);
      assert.deepEqual((await dd.subjects.list(acme.id)).data, [ann, bot]);
      const paged = await dd.subjects.list(acme.id, { limit: 1 });
      assert.deepEqual(paged.data, [ann]);
      assert.ok(paged.next_cursor);
      const all: Subject[] = [];
      for await (const s of dd.subjects.listAll(acme.id, { limit: 1 })) all.push(s);
      assert.deepEqual(all, [ann, bot]);
      await fails(dd.subjects.create(acme.id, { kind: "member", external_id: "u_ann" }), "already_exists");
      await fails(dd.subjects.create("cus_missing", { kind: "member" }), "not_found", 404);

      tick();
      annWallet = await dd.wallets.create({ customer_id: acme.id, member_id: ann.id });
      assert.equal(annWallet.member_id, ann.id);
      assert.equal(annWallet.balance, "0");
      await fails(dd.wallets.create({ customer_id: acme.id, member_id: bot.id }), "invalid_argument", 400);
      await fails(dd.wallets.create({ customer_id: acme.id, member_id: ann.id }), "already_exists", 409);
      const wallets = await dd.wallets.list(acme.id);
      assert.deepEqual(
        wallets.data.map((w) => [w.id, w.member_id]),
        [
          [acme.wallet_id, null],
          [annWallet.id, ann.id],
        ],
      );
      assert.deepEqual(await dd.wallets.get(annWallet.id), annWallet);
    });

    test("grants of several sources: balances in burn-down order and per scope", async () => {
      tick();
      const plan = await dd.grants.create({
        wallet_id: acme.wallet_id,
        amount: "100",
        source: "plan",
        expires_at: iso(T0 + 30 * DAY),
        metadata: { period: "2026-03" },
      });
      g.plan = plan.grant;
      assert.equal(plan.grant.status, "active");
      assert.equal(plan.grant.remaining, "100");
      assert.equal(plan.grant.priority, 50);
      assert.equal(plan.grant.cost_basis, "0");
      const issued = await dd.transactions.get(plan.transaction_id);
      assert.equal(issued.kind, "grant");
      assert.deepEqual(
        issued.entries.map((e) => [e.account, e.grant_id, e.amount]),
        [
          ["issuance", null, "-100"],
          ["grant", g.plan.id, "100"],
        ],
      );
      tick();
      g.purchase = (
        await dd.grants.create({
          wallet_id: acme.wallet_id,
          amount: 50_000_000_000n, // units: 50 credits
          source: "purchase",
          cost_basis: "0.01",
          currency: "USD",
        })
      ).grant;
      assert.equal(g.purchase.amount, "50");
      assert.equal(g.purchase.cost_basis, "0.01");
      assert.equal(g.purchase.expires_at, null);
      tick();
      g.promo = (
        await dd.grants.create({
          wallet_id: acme.wallet_id,
          amount: "20",
          source: "promo",
          priority: 10,
          scope: ["image.*"],
          expires_at: new Date(T0 + 10 * DAY),
        })
      ).grant;
      tick();
      g.gift = (
        await dd.grants.create({
          wallet_id: acme.wallet_id,
          amount: "5",
          source: "gift",
          effective_at: iso(T0 + DAY),
        })
      ).grant;
      assert.equal(g.gift.status, "pending");
      tick();
      g.topUp = (await dd.grants.create({ wallet_id: annWallet.id, amount: "10", source: "top_up" })).grant;
      await fails(
        dd.grants.create({ wallet_id: acme.wallet_id, amount: "1", source: "purchase", cost_basis: "0.5" }),
        "invalid_argument",
        400,
      );
      await fails(
        dd.grants.create({ wallet_id: acme.wallet_id, amount: "0", source: "plan" }),
        "invalid_amount",
      );
      await fails(dd.grants.create({ wallet_id: "wal_missing", amount: "1", source: "plan" }), "not_found");

      const pool = await dd.wallets.balance(acme.wallet_id);
      assertBalanceAddsUp(pool);
      assert.equal(pool.total, "175");
      assert.equal(pool.available, "170");
      assert.equal(pool.upcoming, "5");
      assert.equal(pool.expired, "0");
      assert.equal(pool.as_of, iso(now));
      // Lower priority first; scoped first; soonest expiry; free before paid.
      assert.deepEqual(
        pool.grants.map((x) => [x.id, x.remaining, x.status]),
        [
          [g.promo.id, "20", "active"],
          [g.plan.id, "100", "active"],
          [g.gift.id, "5", "pending"],
          [g.purchase.id, "50", "active"],
        ],
      );
      assert.deepEqual(pool.scopes, [
        { scope: ["image.*"], available: "20" },
        { scope: null, available: "150" },
      ]);
      assert.equal((await dd.wallets.get(acme.wallet_id)).balance, "175");
      assert.equal((await dd.wallets.balance(annWallet.id)).available, "10");

      const listed = await dd.grants.list({ wallet_id: acme.wallet_id });
      assert.equal(listed.data.length, 4);
      const ids = [g.plan.id, g.purchase.id, g.promo.id, g.gift.id].sort();
      assert.deepEqual(
        listed.data.map((x) => x.id),
        ids,
      );
      const walked: string[] = [];
      for await (const x of dd.grants.listAll({ customer_id: acme.id, limit: 2 })) walked.push(x.id);
      assert.deepEqual(walked, [...ids, g.topUp.id].sort());
      assert.deepEqual((await dd.grants.list({ wallet_id: annWallet.id })).data, [g.topUp]);
      assert.deepEqual((await dd.grants.list({ customer_id: acme.id, status: "voided" })).data, []);
    });

    test("debits draw in burn-down order and fall through from a member to the pool", async () => {
      tick();
      imageDebit = await dd.adjustments.debit(acme.wallet_id, {
        amount: "30",
        reason: "image batch re-run",
        action: "image.generate",
      });
      assert.equal(imageDebit.kind, "adjustment.debit");
      assert.equal(imageDebit.action, "image.generate");
      assert.equal(imageDebit.reason, "image batch re-run");
      assert.deepEqual(
        imageDebit.entries.map((e) => [e.account, e.grant_id, e.amount]),
        [
          ["grant", g.promo.id, "-20"],
          ["grant", g.plan.id, "-10"],
          ["adjustments", null, "30"],
        ],
      );

      tick();
      memberDebit = await dd.adjustments.debit(annWallet.id, { amount: 15_000_000_000n, reason: "overuse" });
      assert.deepEqual(
        memberDebit.entries.map((e) => [e.wallet_id, e.grant_id, e.amount]),
        [
          [annWallet.id, g.topUp.id, "-10"],
          [acme.wallet_id, g.plan.id, "-5"],
          [null, null, "15"],
        ],
      );
      assert.deepEqual(await dd.transactions.get(memberDebit.id), memberDebit);

      tick();
      const aimed = await dd.adjustments.debit(acme.wallet_id, {
        amount: "1",
        reason: "aimed",
        grant_id: g.purchase.id,
      });
      assert.deepEqual(
        aimed.entries.map((e) => [e.grant_id, e.amount]),
        [
          [g.purchase.id, "-1"],
          [null, "1"],
        ],
      );
      await fails(
        dd.adjustments.debit(acme.wallet_id, { amount: "1", reason: "x", grant_id: g.topUp.id }),
        "wallet_mismatch",
        400,
      );
      await fails(dd.adjustments.debit(acme.wallet_id, { amount: "-1", reason: "x" }), "invalid_amount", 400);
      await assert.rejects(
        dd.adjustments.debit(acme.wallet_id, { amount: 1 as unknown as string, reason: "x" }),
        TypeError,
      );

      const pool = await dd.wallets.balance(acme.wallet_id);
      assertBalanceAddsUp(pool);
      assert.equal(pool.total, "139");
      assert.equal(pool.available, "134");
      assert.deepEqual(
        pool.grants.map((x) => [x.id, x.remaining]),
        [
          [g.plan.id, "85"],
          [g.gift.id, "5"],
          [g.purchase.id, "49"],
        ],
      );
      const member = await dd.wallets.balance(annWallet.id);
      assert.equal(member.total, "0");
      assert.deepEqual(member.grants, []);
      assert.equal((await dd.grants.get(g.topUp.id)).status, "depleted");
      assert.equal((await dd.grants.get(g.promo.id)).remaining, "0");
    });

    test("a credit adjustment is a new grant of source adjustment", async () => {
      tick();
      const credit = await dd.adjustments.credit(annWallet.id, {
        amount: "2.5",
        reason: "goodwill",
        metadata: { ticket: "77" },
      });
      g.credit = credit.grant;
      assert.equal(credit.grant.source, "adjustment");
      assert.equal(credit.grant.wallet_id, annWallet.id);
      assert.deepEqual(credit.grant.metadata, { ticket: "77" });
      const txn = await dd.transactions.get(credit.transaction_id);
      assert.equal(txn.kind, "adjustment.credit");
      assert.equal(txn.reason, "goodwill");
      assert.equal((await dd.wallets.get(annWallet.id)).balance, "2.5");
      await fails(dd.adjustments.credit(annWallet.id, { amount: "1", reason: "" }), "validation_failed", 400);
    });

    test("insufficient_credits answers 402 and changes nothing", async () => {
      tick();
      const before = await dd.wallets.balance(annWallet.id);
      const poolBefore = await dd.wallets.balance(acme.wallet_id);
      const journalBefore = await dd.transactions.list({ customer_id: acme.id, limit: 200 });
      // Ann's wallet covers 2.5 of its own plus the pool's 134.
      const e = await fails(
        dd.adjustments.debit(annWallet.id, { amount: "136.500000001", reason: "too much" }),
        "insufficient_credits",
        402,
      );
      assert.deepEqual(e.details, { requested: "136.500000001", available: "136.5" });
      assert.deepEqual(await dd.wallets.balance(annWallet.id), before);
      assert.deepEqual(await dd.wallets.balance(acme.wallet_id), poolBefore);
      assert.deepEqual(await dd.transactions.list({ customer_id: acme.id, limit: 200 }), journalBefore);
      // A scoped grant is not drawn for an action outside its scope, nor without an action.
      await fails(
        dd.adjustments.debit(acme.wallet_id, { amount: "135", reason: "x", action: "chat.completion" }),
        "insufficient_credits",
      );
    });

    test("void a grant; extend an expiry, recorded on the grant", async () => {
      tick();
      const voided = await dd.grants.void(g.gift.id, { reason: "sent by mistake" });
      assert.equal(voided.status, "voided");
      assert.equal(voided.remaining, "0");
      assert.equal(voided.status_changed_at, iso(now));
      await fails(dd.grants.void(g.gift.id), "grant_inactive", 409);
      const pool = await dd.wallets.balance(acme.wallet_id);
      assert.equal(pool.upcoming, "0");
      assert.equal(pool.total, "134");
      const voidTxn = (await dd.transactions.list({ wallet_id: acme.wallet_id, from: iso(now) })).data;
      assert.deepEqual(
        voidTxn.map((t) => [t.kind, t.reason, t.entries.map((e) => [e.account, e.amount])]),
        [
          [
            "void",
            "sent by mistake",
            [
              ["grant", "-5"],
              ["voided", "5"],
            ],
          ],
        ],
      );
      assert.deepEqual((await dd.grants.list({ wallet_id: acme.wallet_id, status: "voided" })).data, [
        { ...voided },
      ]);

      tick();
      const extended = await dd.grants.extend(g.plan.id, {
        expires_at: iso(T0 + 60 * DAY),
        reason: "support ticket 12",
      });
      assert.equal(extended.expires_at, iso(T0 + 60 * DAY));
      const fetched = await dd.grants.get(g.plan.id);
      assert.deepEqual(fetched.changes, [
        {
          kind: "expiry_extended",
          from: iso(T0 + 30 * DAY),
          to: iso(T0 + 60 * DAY),
          reason: "support ticket 12",
          at: iso(now),
        },
      ]);
      await fails(
        dd.grants.extend(g.plan.id, { expires_at: iso(T0 + 40 * DAY), reason: "shorter" }),
        "expiry_not_extendable",
        409,
      );
      await fails(
        dd.grants.extend(g.purchase.id, { expires_at: iso(T0 + 40 * DAY), reason: "no expiry" }),
        "expiry_not_extendable",
      );
      await fails(
        dd.grants.extend(g.gift.id, { expires_at: iso(T0 + 40 * DAY), reason: "voided" }),
        "grant_inactive",
      );
      await fails(dd.grants.get("grt_missing"), "not_found", 404);
    });

    test("a debit is reversed once; the credits return to the same grants", async () => {
      tick();
      const reversal = await dd.transactions.reverse(imageDebit.id, { reason: "duplicate job" });
      assert.equal(reversal.kind, "reversal");
      assert.equal(reversal.reverses_id, imageDebit.id);
      assert.deepEqual(
        reversal.entries.map((e) => [e.account, e.grant_id, e.amount]),
        imageDebit.entries.map((e) => [e.account, e.grant_id, toCredits(-toUnits(e.amount))]),
      );
      assert.equal((await dd.grants.get(g.promo.id)).remaining, "20");
      assert.equal((await dd.grants.get(g.plan.id)).remaining, "95");
      await fails(
        dd.transactions.reverse(imageDebit.id, { reason: "again" }),
        "transaction_already_reversed",
        409,
      );
      await fails(
        dd.transactions.reverse(reversal.id, { reason: "undo" }),
        "transaction_not_reversible",
        409,
      );
      await fails(
        dd.transactions.reverse(
          (await dd.transactions.list({ wallet_id: annWallet.id, limit: 1 })).data[0]!.id,
          { reason: "a grant" },
        ),
        "transaction_not_reversible",
      );
      // Ann's debit touched her depleted top-up and the pool: both get their credits back.
      tick();
      await dd.transactions.reverse(memberDebit.id, { reason: "billing error" });
      assert.equal((await dd.wallets.balance(annWallet.id)).total, "12.5");
      assert.equal((await dd.grants.get(g.topUp.id)).status, "active");
      const pool = await dd.wallets.balance(acme.wallet_id);
      assertBalanceAddsUp(pool);
      assert.equal(pool.total, "169");
    });

    test("after its expiry a grant is not available; the next debit moves it to breakage", async () => {
      now = T0 + 10 * DAY; // the promo's expiry, exactly
      const pool = await dd.wallets.balance(acme.wallet_id);
      assertBalanceAddsUp(pool);
      assert.equal(pool.total, "169");
      assert.equal(pool.expired, "20");
      assert.equal(pool.available, "149");
      assert.deepEqual(pool.scopes, [{ scope: null, available: "149" }]);
      assert.equal(pool.grants.find((x) => x.id === g.promo.id)?.status, "expired");
      const promo = await dd.grants.get(g.promo.id);
      assert.equal(promo.status, "expired");
      assert.equal(promo.remaining, "20");
      await fails(
        dd.adjustments.debit(acme.wallet_id, {
          amount: "1",
          reason: "x",
          action: "image.generate",
          grant_id: promo.id,
        }),
        "grant_expired",
        409,
      );
      await fails(
        dd.grants.extend(promo.id, { expires_at: iso(T0 + 90 * DAY), reason: "too late" }),
        "grant_expired",
      );

      tick(DAY);
      const debit = await dd.adjustments.debit(acme.wallet_id, {
        amount: "4",
        reason: "after expiry",
        action: "image.generate",
      });
      assert.deepEqual(
        debit.entries.map((e) => [e.grant_id, e.amount]),
        [
          [g.plan.id, "-4"],
          [null, "4"],
        ],
      );
      const recent = await dd.transactions.list({ wallet_id: acme.wallet_id, from: iso(now) });
      assert.deepEqual(
        recent.data.map((t) => t.kind),
        ["expire", "adjustment.debit"],
      );
      const expire = recent.data[0]!;
      assert.equal(expire.posted_at, iso(now));
      assert.deepEqual(
        expire.entries.map((e) => [e.account, e.grant_id, e.amount]),
        [
          ["grant", g.promo.id, "-20"],
          ["breakage", null, "20"],
        ],
      );
      const after = await dd.grants.get(g.promo.id);
      assert.equal(after.status, "expired");
      assert.equal(after.remaining, "0");
      assert.equal(after.status_changed_at, iso(now));
      const { changes, ...listed } = after;
      assert.deepEqual(changes, []);
      assert.deepEqual((await dd.grants.list({ customer_id: acme.id, status: "expired" })).data, [listed]);
      const balance = await dd.wallets.balance(acme.wallet_id);
      assertBalanceAddsUp(balance);
      assert.equal(balance.expired, "0");
      assert.equal(balance.total, "145");
    });

    test("the journal pages with cursors and filters by wallet, customer and time", async () => {
      tick();
      const beta = await dd.customers.create({ kind: "individual", name: "Beta" });
      tick();
      await dd.grants.create({ wallet_id: beta.wallet_id, amount: "3", source: "gift" });

      const all: Transaction[] = [];
      for await (const t of dd.transactions.listAll({ limit: 3 })) all.push(t);
      const mine = all.filter((t) => t.customer_id === acme.id);
      assert.equal(all.length, mine.length + 1);
      assert.equal(new Set(all.map((t) => t.id)).size, all.length);
      const times = all.map((t) => Date.parse(t.posted_at));
      assert.deepEqual(
        times,
        [...times].sort((a, b) => a - b),
        "oldest first",
      );
      for (const t of all) assert.equal(sum(t.entries.map((e) => e.amount)), "0", `${t.id} balances`);

      // Page by page, by hand.
      const pages: Transaction[][] = [];
      let cursor: string | undefined;
      do {
        const page = await dd.transactions.list({ customer_id: acme.id, limit: 4, cursor });
        pages.push(page.data);
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
      assert.deepEqual(pages.flat(), mine);
      assert.ok(pages.length >= 3);
      assert.ok(pages.slice(0, -1).every((p) => p.length === 4));

      const betaOnly = await dd.transactions.list({ customer_id: beta.id });
      assert.deepEqual(
        betaOnly.data.map((t) => t.kind),
        ["grant"],
      );
      const annTx: Transaction[] = [];
      for await (const t of dd.transactions.listAll({ wallet_id: annWallet.id, limit: 2 })) annTx.push(t);
      assert.deepEqual(
        annTx,
        all.filter((t) => t.entries.some((e) => e.wallet_id === annWallet.id)),
      );
      assert.deepEqual(
        annTx.map((t) => t.kind),
        ["grant", "adjustment.debit", "adjustment.credit", "reversal"],
      );

      const from = mine[3]!.posted_at;
      const to = mine[8]!.posted_at;
      const window = await dd.transactions.list({ customer_id: acme.id, from, to, limit: 200 });
      assert.deepEqual(
        window.data,
        mine.filter((t) => t.posted_at >= from && t.posted_at < to),
      );
      assert.ok(window.data.length >= 4);
      const since = await dd.transactions.list({ from: new Date(Date.parse(to)), limit: 200 });
      assert.deepEqual(
        since.data,
        all.filter((t) => t.posted_at >= to),
      );

      await fails(dd.transactions.list({ cursor: "bm90LWEtY3Vyc29y" }), "invalid_cursor", 400);
      await fails(dd.transactions.list({ from: "yesterday" }), "invalid_argument", 400);
      await fails(dd.transactions.get("txn_missing"), "not_found", 404);

      const customers: Customer[] = [];
      for await (const c of dd.customers.listAll({ limit: 1 })) customers.push(c);
      assert.deepEqual(
        customers.map((c) => c.id),
        [acme.id, beta.id],
      );
    });

    test("API keys: create, list, revoke; a revoked key is refused", async () => {
      tick();
      const key = await dd.apiKeys.create({ kind: "secret", name: "ci" });
      assert.match(key.secret ?? "", /^dd_test_sk_/);
      assert.equal(key.secret?.startsWith(key.prefix), true);
      const other = connect(key.secret!);
      assert.equal((await other.customers.get(acme.id)).id, acme.id);
      const listed = await dd.apiKeys.list();
      const found = listed.data.find((k) => k.id === key.id);
      assert.ok(found);
      assert.equal(found.secret, undefined, "secrets are shown once");
      tick();
      const revoked = await dd.apiKeys.revoke(key.id);
      assert.equal(revoked.revoked_at, iso(now));
      await fails(other.customers.get(acme.id), "unauthorized", 401);
      await fails(dd.apiKeys.revoke("key_missing"), "not_found", 404);
    });

    test("reconcile reports the journal and the balances agree", async () => {
      const report = await dd.reconcile();
      assert.equal(report.ok, true, JSON.stringify(report.differences));
      assert.deepEqual(report.differences, []);
      assert.equal(report.wallets, 3);
      assert.equal(report.grants, 7);
      assert.ok(report.transactions >= 15);
    });

    // ---- a second tenant: idempotency, restricted keys, isolation

    let other: Drawdown;
    let gamma: Customer;
    let delta: Customer;

    test("idempotency: the same key and body replay the first result; another body is a conflict", async () => {
      other = connect((await server.newTenant("Access")).key);
      tick();
      const first = await other.customers
        .create(
          { kind: "organization", name: "Gamma", external_id: "gamma" },
          { idempotencyKey: "create-gamma" },
        )
        .withResponse();
      assert.equal(first.status, 201);
      assert.equal(first.idempotentReplayed, false);
      assert.equal(first.idempotencyKey, "create-gamma");
      gamma = first.data;
      tick();
      const again = await other.customers
        .create(
          { kind: "organization", name: "Gamma", external_id: "gamma" },
          { idempotencyKey: "create-gamma" },
        )
        .withResponse();
      assert.equal(again.idempotentReplayed, true);
      assert.equal(again.headers.get("idempotent-replayed"), "true");
      assert.equal(again.status, 201);
      assert.deepEqual(again.data, gamma, "the first result, created_at included");
      assert.deepEqual((await other.customers.list()).data, [gamma]);
      await fails(
        other.customers.create({ kind: "organization", name: "Gamma 2" }, { idempotencyKey: "create-gamma" }),
        "idempotency_key_reused",
        409,
      );
      await fails(
        other.grants.create(
          { wallet_id: gamma.wallet_id, amount: "1", source: "plan" },
          { idempotencyKey: "create-gamma" },
        ),
        "idempotency_key_reused",
      );
      await fails(
        other.customers.create({ kind: "individual" }, { idempotencyKey: "has space" }),
        "invalid_idempotency_key",
        400,
      );

      // A grant sent twice is issued once.
      const grant = { wallet_id: gamma.wallet_id, amount: "10", source: "purchase" as const };
      const g1 = await other.grants.create(grant, { idempotencyKey: "order-1" });
      const g2 = await other.grants.create(grant, { idempotencyKey: "order-1" });
      assert.deepEqual(g2, g1);
      assert.equal((await other.wallets.balance(gamma.wallet_id)).total, "10");

      // A failure is the request's result too: replayed even once the wallet could cover it.
      const big = { amount: "15", reason: "big" };
      await fails(
        other.adjustments.debit(gamma.wallet_id, big, { idempotencyKey: "debit-1" }),
        "insufficient_credits",
      );
      await other.adjustments.credit(gamma.wallet_id, { amount: "10", reason: "top up" });
      await fails(
        other.adjustments.debit(gamma.wallet_id, big, { idempotencyKey: "debit-1" }),
        "insufficient_credits",
      );
      assert.equal((await other.wallets.balance(gamma.wallet_id)).total, "20");
      const paid = await other.adjustments.debit(gamma.wallet_id, big, { idempotencyKey: "debit-2" });
      assert.deepEqual(
        await other.adjustments.debit(gamma.wallet_id, big, { idempotencyKey: "debit-2" }),
        paid,
      );
      assert.equal((await other.wallets.balance(gamma.wallet_id)).total, "5");

      // Without a key the SDK sends a fresh one per call: two calls, two customers.
      tick();
      const a = await other.customers.create({ kind: "individual", name: "Twin" }).withResponse();
      const b = await other.customers.create({ kind: "individual", name: "Twin" }).withResponse();
      assert.notEqual(a.idempotencyKey, b.idempotencyKey);
      assert.notEqual(a.data.id, b.data.id);
      assert.equal(b.idempotentReplayed, false);
    });

    test("the SDK's retries are safe: a lost response is retried with its key and replayed", async () => {
      const checked = contractFetch(log);
      let lost = 0;
      // The server does the work, but the first answer to each POST never arrives.
      const lossy: typeof fetch = async (input, init) => {
        const response = await checked(input, init);
        if (init?.method === "POST" && lost++ % 2 === 0) throw new TypeError("socket hang up");
        return response;
      };
      const flaky = new Drawdown({
        apiKey: server.key,
        baseUrl: server.url,
        fetch: lossy,
        maxRetries: 2,
        retryBaseDelayMs: 1,
      });
      const before = toUnits((await dd.wallets.balance(acme.wallet_id)).total);
      const r = await flaky.grants
        .create({ wallet_id: acme.wallet_id, amount: "3", source: "top_up" })
        .withResponse();
      assert.equal(r.attempts, 2);
      assert.equal(r.idempotentReplayed, true);
      assert.equal(r.status, 201);
      const t = await flaky.adjustments
        .debit(acme.wallet_id, { amount: "1", reason: "retried" })
        .withResponse();
      assert.equal(t.attempts, 2);
      assert.equal(
        toUnits((await dd.wallets.balance(acme.wallet_id)).total),
        before + toUnits("2"),
        "once each",
      );
    });

    test("the same key sent concurrently is applied once", async () => {
      const params = { wallet_id: gamma.wallet_id, amount: "1", source: "gift" as const };
      const answers = await Promise.all(
        Array.from({ length: 6 }, () =>
          other.grants.create(params, { idempotencyKey: "race-1" }).withResponse(),
        ),
      );
      assert.equal(answers.filter((a) => !a.idempotentReplayed).length, 1);
      assert.equal(new Set(answers.map((a) => a.data.grant.id)).size, 1);
      assert.equal((await other.wallets.balance(gamma.wallet_id)).total, "6");
    });

    test("restricted keys read their own customer only; other customers are 404; writes are 403", async () => {
      tick();
      delta = await other.customers.create({ kind: "organization", name: "Delta", external_id: "delta" });
      const deltaMember = await other.subjects.create(delta.id, { kind: "member" });
      const deltaGrant = await other.grants.create({
        wallet_id: delta.wallet_id,
        amount: "7",
        source: "gift",
      });
      const gammaMember = await other.subjects.create(gamma.id, { kind: "member", name: "Gus" });

      const key = await other.apiKeys.create({
        kind: "restricted",
        name: "Gamma portal",
        customer_id: gamma.id,
      });
      assert.equal(key.kind, "restricted");
      assert.equal(key.customer_id, gamma.id);
      assert.match(key.secret ?? "", /^dd_test_rk_/);
      const portal = connect(key.secret!);

      // Its own customer, in full.
      assert.deepEqual(await portal.customers.get(gamma.id), gamma);
      assert.deepEqual((await portal.customers.list()).data, [gamma]);
      assert.deepEqual((await portal.customers.list({ external_id: "delta" })).data, []);
      assert.deepEqual((await portal.subjects.list(gamma.id)).data, [gammaMember]);
      assert.deepEqual(await portal.subjects.get(gammaMember.id), gammaMember);
      assert.equal((await portal.wallets.list(gamma.id)).data.length, 1);
      assert.equal((await portal.wallets.get(gamma.wallet_id)).balance, "6");
      assert.equal((await portal.wallets.balance(gamma.wallet_id)).total, "6");
      const grants = (await portal.grants.list()).data;
      assert.ok(grants.length > 0 && grants.every((x) => x.customer_id === gamma.id));
      const txns = (await portal.transactions.list({ limit: 200 })).data;
      assert.ok(txns.length > 0 && txns.every((t) => t.customer_id === gamma.id));
      assert.equal((await portal.transactions.get(txns[0]!.id)).id, txns[0]!.id);
      assert.equal((await portal.grants.get(grants[0]!.id)).id, grants[0]!.id);

      // Another customer of the same tenant does not exist for it.
      await fails(portal.customers.get(delta.id), "not_found", 404);
      await fails(portal.subjects.list(delta.id), "not_found", 404);
      await fails(portal.subjects.get(deltaMember.id), "not_found", 404);
      await fails(portal.wallets.list(delta.id), "not_found", 404);
      await fails(portal.wallets.get(delta.wallet_id), "not_found", 404);
      await fails(portal.wallets.balance(delta.wallet_id), "not_found", 404);
      await fails(portal.grants.get(deltaGrant.grant.id), "not_found", 404);
      await fails(portal.transactions.get(deltaGrant.transaction_id), "not_found", 404);
      assert.deepEqual((await portal.grants.list({ customer_id: delta.id })).data, []);
      assert.deepEqual((await portal.grants.list({ wallet_id: delta.wallet_id })).data, []);
      assert.deepEqual((await portal.transactions.list({ customer_id: delta.id })).data, []);
      assert.deepEqual((await portal.transactions.list({ wallet_id: delta.wallet_id })).data, []);

      // It writes nothing, not even on its own customer, and manages no keys.
      const before = await other.wallets.balance(gamma.wallet_id);
      await fails(portal.customers.create({ kind: "individual" }), "forbidden", 403);
      await fails(portal.subjects.create(gamma.id, { kind: "agent" }), "forbidden", 403);
      await fails(portal.wallets.create({ customer_id: gamma.id, member_id: gammaMember.id }), "forbidden");
      await fails(
        portal.grants.create({ wallet_id: gamma.wallet_id, amount: "1", source: "gift" }),
        "forbidden",
      );
      await fails(portal.adjustments.credit(gamma.wallet_id, { amount: "1", reason: "x" }), "forbidden");
      await fails(portal.adjustments.debit(gamma.wallet_id, { amount: "1", reason: "x" }), "forbidden");
      await fails(portal.grants.void(grants[0]!.id), "forbidden");
      await fails(portal.grants.extend(grants[0]!.id, { expires_at: null, reason: "x" }), "forbidden");
      await fails(portal.transactions.reverse(txns[0]!.id, { reason: "x" }), "forbidden");
      await fails(portal.reconcile(), "forbidden");
      await fails(portal.apiKeys.list(), "forbidden");
      await fails(portal.apiKeys.create({ kind: "secret", name: "escalate" }), "forbidden");
      await fails(portal.apiKeys.revoke(key.id), "forbidden");
      assert.deepEqual(await other.wallets.balance(gamma.wallet_id), before);

      await fails(other.apiKeys.create({ kind: "restricted", name: "no customer" }), "invalid_argument", 400);
      await fails(
        other.apiKeys.create({ kind: "secret", name: "scoped secret", customer_id: gamma.id }),
        "invalid_argument",
      );
      await fails(
        other.apiKeys.create({ kind: "restricted", name: "ghost", customer_id: "cus_missing" }),
        "not_found",
      );

      // Revoked: refused at once.
      tick();
      await other.apiKeys.revoke(key.id);
      await fails(portal.customers.get(gamma.id), "unauthorized", 401);
      assert.ok((await other.apiKeys.list()).data.some((k) => k.id === key.id && k.revoked_at === iso(now)));
    });

    test("tenants are isolated: one tenant's ids do not exist for another", async () => {
      await fails(dd.customers.get(gamma.id), "not_found", 404);
      await fails(dd.wallets.balance(gamma.wallet_id), "not_found", 404);
      await fails(dd.adjustments.debit(gamma.wallet_id, { amount: "1", reason: "x" }), "not_found", 404);
      await fails(dd.grants.create({ wallet_id: delta.wallet_id, amount: "1", source: "gift" }), "not_found");
      assert.deepEqual((await dd.grants.list({ customer_id: gamma.id })).data, []);
      assert.deepEqual((await dd.transactions.list({ customer_id: gamma.id })).data, []);
      await fails(other.customers.get(acme.id), "not_found", 404);
      await fails(other.subjects.list(acme.id), "not_found", 404);
      await fails(connect("dd_test_sk_not-a-key").customers.list(), "unauthorized", 401);
      assert.equal((await other.wallets.balance(gamma.wallet_id)).total, "6");
      // An expiry can be removed (extended to never), recorded like any extension.
      tick();
      const { grant: expiring } = await other.grants.create({
        wallet_id: delta.wallet_id,
        amount: "2",
        source: "promo",
        expires_at: iso(now + DAY),
      });
      tick();
      const forever = await other.grants.extend(expiring.id, { expires_at: null, reason: "keeps them" });
      assert.equal(forever.expires_at, null);
      assert.deepEqual(
        (await other.grants.get(expiring.id)).changes?.map((c) => [c.from, c.to, c.at]),
        [[iso(now - 1000 + DAY), null, iso(now)]],
      );
      const report = await other.reconcile();
      assert.equal(report.ok, true);
      assert.equal(report.wallets, 4, "Gamma, Delta and the two twins");
    });

    test("the test clock of a fresh test tenant: read, then moved (its scenarios: test-clock.test.ts)", async () => {
      const clocked = connect((await server.newTenant("Clocked")).key);
      const clock = await clocked.testClock.get();
      assert.deepEqual(clock, { object: "test_clock", now: iso(now), frozen: false, environment: "test" });
      const moved = await clocked.testClock.advance({ seconds: 3600 });
      assert.deepEqual(moved, {
        object: "test_clock",
        from: iso(now),
        to: iso(now + 3_600_000),
        now: iso(now + 3_600_000),
        expired_grants: 0,
      });
      tick();
      assert.deepEqual(await clocked.testClock.get(), { ...clock, now: moved.now, frozen: true });
      assert.equal((await dd.testClock.get()).frozen, false, "another tenant's clock did not move");
    });

    test("every route was exercised and every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
      const unanswered = ROUTES.filter((r) => !(log.seen.get(r.operationId) ?? []).some((s) => s < 300));
      assert.deepEqual(
        unanswered.map((r) => `${r.method} ${r.url}`),
        [],
        "routes the SDK tests never called successfully",
      );
    });
  });
}
