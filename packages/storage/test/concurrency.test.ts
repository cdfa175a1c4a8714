/**
 * Concurrency on real PostgreSQL: many clients, one wallet. Nothing lost, nothing overdrawn,
 * nothing written twice. Skipped (with a message) when DATABASE_URL is unset: PGlite is a
 * single in-process connection, so it cannot race.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type GrantInput, type Result } from "@drawdown/core";
import type { Store } from "../src/index.js";
import { POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";

const URL = POSTGRES_URL;
const SKIP = URL
  ? false
  : "DATABASE_URL is unset: the concurrency tests need PostgreSQL (PGlite cannot race)";
/** Pool size: many more clients than connections, as in production. */
const POOL = 20;

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

/** What a client keeps of an acknowledged debit: JSON-safe, as an HTTP answer would be. */
type Outcome =
  | { readonly ok: true; readonly id: string }
  | { readonly ok: false; readonly code: string; readonly available: string | null };

const elapsed = (start: bigint): number => Number((process.hrtime.bigint() - start) / 1_000_000n);

describe("concurrency on PostgreSQL", { skip: SKIP }, () => {
  let database: TestDatabase;
  let store: Store;

  before(async () => {
    if (!URL) return;
    database = await postgresDatabase(URL, { max: POOL });
    store = database.store();
  });
  after(async () => {
    await database?.close();
  });

  async function setup(name: string) {
    const tenant = await store.createTenant(name, "test");
    const customer = okv(
      await store.db.transaction((tx) => store.createCustomer(tx, tenant.id, { kind: "organization" })),
    );
    return { tenantId: tenant.id, customerId: customer.id, poolId: customer.walletId };
  }

  async function grant(tenantId: string, input: GrantInput) {
    return okv(await store.db.transaction((tx) => store.createGrant(tx, tenantId, input))).grant;
  }

  /** One debit as the HTTP layer does it: idempotent, in one transaction, JSON outcome. */
  function debitOnce(tenantId: string, walletId: string, key: string, amount: bigint) {
    return store.idempotent<Outcome>(tenantId, key, `debit ${walletId} ${amount}`, async (tx) => {
      const r = await store.debitWallet(tx, tenantId, walletId, { amount, action: null, kind: "debit" });
      return r.ok
        ? { ok: true, id: r.value.id }
        : { ok: false, code: r.error.code, available: r.error.details?.available ?? null };
    });
  }

  /** Runs `clients` async clients of `each` sequential debits; returns every acknowledged outcome. */
  async function hammer(
    tenantId: string,
    target: (client: number) => string,
    clients: number,
    each: number,
    prefix: string,
  ) {
    const acks: { key: string; walletId: string; outcome: Outcome }[] = [];
    const errors: unknown[] = [];
    await Promise.all(
      Array.from({ length: clients }, async (_, client) => {
        const walletId = target(client);
        for (let i = 0; i < each; i++) {
          try {
            const key = `${prefix}-${client}-${i}`;
            const r = await debitOnce(tenantId, walletId, key, credits(1n));
            if (r.kind !== "fresh") assert.fail(`a new key answered ${r.kind}`);
            acks.push({ key, walletId, outcome: r.outcome });
          } catch (error) {
            errors.push(error);
          }
        }
      }),
    );
    assert.equal(errors.length, 0, `no client may see an error (deadlock, check violation): ${errors[0]}`);
    return acks;
  }

  /** Samples wallet balances and grant remainders while `work` runs; returns the lowest seen. */
  async function watching<T>(tenantId: string, work: Promise<T>): Promise<{ result: T; lowest: bigint }> {
    let done = false;
    let lowest: bigint | null = null;
    const watcher = (async () => {
      while (!done) {
        const { rows } = await store.db.query(
          `SELECT least((SELECT min(balance) FROM wallets WHERE tenant_id = $1),
                        (SELECT min(remaining) FROM grants WHERE tenant_id = $1))::text AS low`,
          [tenantId],
        );
        const low = BigInt(String(rows[0]!.low));
        if (lowest === null || low < lowest) lowest = low;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      return { result: await work, lowest: lowest ?? 0n };
    } finally {
      done = true;
      await watcher;
    }
  }

  /** Asserts each acknowledged success is in the journal exactly once, and nothing else is. */
  async function assertJournalHolds(tenantId: string, acked: string[]) {
    const { rows } = await store.db.query<{ id: string }>(
      "SELECT id FROM journal_transactions WHERE tenant_id = $1 AND kind = 'debit'",
      [tenantId],
    );
    const journal = rows.map((r) => String(r.id));
    assert.equal(new Set(acked).size, acked.length, "no two acknowledgements share a transaction");
    assert.equal(journal.length, new Set(journal).size, "each transaction once in the journal");
    assert.deepEqual(
      [...journal].sort(),
      [...acked].sort(),
      "the journal holds exactly the acknowledged debits",
    );
  }

  async function assertClean(tenantId: string) {
    const report = await store.reconcile(tenantId);
    assert.deepEqual(report.differences, []);
    return report;
  }

  test("50 clients x 200 debits on one wallet: exact balance, never below zero, each debit once", async (t) => {
    const { tenantId, poolId } = await setup("hot wallet");
    // 7,000 credits over three grants, so the debits cross grant boundaries in burn-down order.
    await grant(tenantId, { walletId: poolId, amount: credits(3000n), source: "plan", priority: 10 });
    await grant(tenantId, {
      walletId: poolId,
      amount: credits(2500n),
      source: "promo",
      expiresAt: Date.now() + 86_400_000,
    });
    await grant(tenantId, {
      walletId: poolId,
      amount: credits(1500n),
      source: "purchase",
      costBasis: 1_000_000n,
      currency: "USD",
    });

    const start = process.hrtime.bigint();
    const { result: acks, lowest } = await watching(
      tenantId,
      hammer(tenantId, () => poolId, 50, 200, "hot"),
    );
    const ms = elapsed(start);
    t.diagnostic(
      `10,000 debits from 50 clients on one wallet (pool of ${POOL}): ${ms} ms, ${Math.round(10_000_000 / ms)} debits/s`,
    );

    assert.equal(acks.length, 10_000, "every request acknowledged");
    const succeeded = acks.flatMap((a) => (a.outcome.ok ? [a.outcome.id] : []));
    const refused = acks.flatMap((a) => (a.outcome.ok ? [] : [a.outcome]));
    assert.equal(succeeded.length, 7_000, "exactly the funded debits succeed");
    assert.equal(refused.length, 3_000);
    for (const r of refused) {
      assert.equal(r.code, "insufficient_credits");
      assert.equal(r.available, "0", "a debit is refused only when nothing is left");
    }
    assert.ok(lowest >= 0n, `never below zero (lowest seen ${lowest})`);

    const balance = await store.balance(tenantId, poolId);
    assert.equal(balance?.total, 0n);
    assert.equal(balance?.available, 0n);
    const low = await store.db.query(
      "SELECT min(remaining)::text AS low, count(*)::int AS n FROM grants WHERE tenant_id = $1 AND remaining <> 0",
      [tenantId],
    );
    assert.equal(Number(low.rows[0]!.n), 0, "every grant fully drawn, none below zero");
    await assertJournalHolds(tenantId, succeeded);
    const consumed = await store.db.query(
      "SELECT sum(amount)::text AS total FROM journal_entries WHERE tenant_id = $1 AND account = 'consumption'",
      [tenantId],
    );
    assert.equal(BigInt(String(consumed.rows[0]!.total)), credits(7000n));
    const keys = await store.db.query(
      "SELECT count(*)::int AS n, count(outcome)::int AS done FROM idempotency_keys WHERE tenant_id = $1",
      [tenantId],
    );
    assert.deepEqual(keys.rows[0], { n: 10_000, done: 10_000 });
    const report = await assertClean(tenantId);
    assert.equal(report.transactions, 3 + 7_000);

    // Retrying acknowledged requests replays them and changes nothing.
    const sample = acks.filter((_, i) => i % 200 === 0);
    const retries = await Promise.all(sample.map((a) => debitOnce(tenantId, poolId, a.key, credits(1n))));
    for (const [i, r] of retries.entries()) {
      assert.deepEqual(r, { kind: "replayed", outcome: sample[i]!.outcome });
    }
    assert.equal((await assertClean(tenantId)).transactions, 3 + 7_000);
  });

  test("a member wallet and its pool debited at once: no deadlock, exact totals", async (t) => {
    const { tenantId, customerId, poolId } = await setup("member and pool");
    const member = okv(
      await store.db.transaction((tx) => store.createSubject(tx, tenantId, { customerId, kind: "member" })),
    );
    const memberWallet = okv(
      await store.db.transaction((tx) => store.createMemberWallet(tx, tenantId, customerId, member.id)),
    );
    await grant(tenantId, { walletId: memberWallet.id, amount: credits(400n), source: "plan" });
    await grant(tenantId, { walletId: poolId, amount: credits(1000n), source: "plan" });

    // Half the clients debit the member (who falls through to the pool), half the pool itself.
    const start = process.hrtime.bigint();
    const { result: acks, lowest } = await watching(
      tenantId,
      hammer(tenantId, (client) => (client % 2 === 0 ? memberWallet.id : poolId), 50, 40, "mp"),
    );
    t.diagnostic(`2,000 debits from 50 clients on a member wallet and its pool: ${elapsed(start)} ms`);

    assert.equal(acks.length, 2_000);
    const succeeded = acks.flatMap((a) => (a.outcome.ok ? [a.outcome.id] : []));
    // Supply 1,400 credits. Pool demand alone (1,000) drains the pool and member demand (1,000)
    // drains the member's 400, whatever the interleaving: exactly 1,400 succeed.
    assert.equal(succeeded.length, 1_400);
    for (const a of acks) if (!a.outcome.ok) assert.equal(a.outcome.code, "insufficient_credits");
    assert.ok(lowest >= 0n, `never below zero (lowest seen ${lowest})`);
    assert.equal((await store.balance(tenantId, memberWallet.id))?.total, 0n);
    assert.equal((await store.balance(tenantId, poolId))?.total, 0n);

    // A pool debit never drew the member's wallet.
    const poolAcks = new Set(
      acks.flatMap((a) => (a.outcome.ok && a.walletId === poolId ? [a.outcome.id] : [])),
    );
    const drawnFromMember = await store.db.query<{ tx_id: string }>(
      "SELECT DISTINCT tx_id FROM journal_entries WHERE tenant_id = $1 AND wallet_id = $2 AND amount < 0",
      [tenantId, memberWallet.id],
    );
    assert.equal(drawnFromMember.rowCount, 400, "the member's 400 credits went to 400 member debits");
    for (const r of drawnFromMember.rows) assert.ok(!poolAcks.has(String(r.tx_id)));
    await assertJournalHolds(tenantId, succeeded);
    await assertClean(tenantId);
  });

  test("member debits, pool debits, grants and reversals interleaved: no deadlock", async () => {
    const { tenantId, customerId, poolId } = await setup("mixed");
    const member = okv(
      await store.db.transaction((tx) => store.createSubject(tx, tenantId, { customerId, kind: "member" })),
    );
    const mw = okv(
      await store.db.transaction((tx) => store.createMemberWallet(tx, tenantId, customerId, member.id)),
    );
    await grant(tenantId, { walletId: mw.id, amount: credits(50n), source: "plan" });
    await grant(tenantId, { walletId: poolId, amount: credits(10_000n), source: "plan" });
    const errors: unknown[] = [];
    const reversed: string[] = [];
    await Promise.all(
      Array.from({ length: 40 }, async (_, client) => {
        for (let i = 0; i < 10; i++) {
          try {
            const walletId = client % 4 === 0 ? poolId : mw.id;
            if (client % 4 === 1 && i % 5 === 0) {
              await grant(tenantId, {
                walletId: client % 8 === 1 ? mw.id : poolId,
                amount: credits(2n),
                source: "gift",
              });
              continue;
            }
            const d = okv(
              await store.db.transaction((tx) =>
                store.debitWallet(tx, tenantId, walletId, {
                  amount: credits(3n),
                  action: null,
                  kind: "debit",
                }),
              ),
            );
            if (client % 4 === 2) {
              okv(await store.db.transaction((tx) => store.reverseTransaction(tx, tenantId, d.id, "undo")));
              reversed.push(d.id);
            }
          } catch (error) {
            errors.push(error);
          }
        }
      }),
    );
    assert.equal(errors.length, 0, `no client may see an error (deadlock, check violation): ${errors[0]}`);
    const reversals = await store.db.query(
      "SELECT count(*)::int AS n, count(DISTINCT reverses_id)::int AS d FROM journal_transactions WHERE tenant_id = $1 AND kind = 'reversal'",
      [tenantId],
    );
    assert.deepEqual(reversals.rows[0], { n: reversed.length, d: reversed.length });
    await assertClean(tenantId);
  });

  test("20 clients sending the same idempotency key and body at once: one transaction", async () => {
    const { tenantId, poolId } = await setup("same key");
    await grant(tenantId, { walletId: poolId, amount: credits(100n), source: "plan" });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => debitOnce(tenantId, poolId, "the-one-key", credits(7n))),
    );
    const kinds = results.map((r) => r.kind).sort();
    assert.deepEqual(kinds, ["fresh", ...Array(19).fill("replayed")]);
    const outcomes = results.map((r) => (r.kind === "conflict" ? null : r.outcome));
    for (const o of outcomes) assert.deepEqual(o, outcomes[0], "20 identical outcomes");
    assert.ok(outcomes[0]?.ok);
    const debits = await store.db.query<{ id: string }>(
      "SELECT id FROM journal_transactions WHERE tenant_id = $1 AND kind = 'debit'",
      [tenantId],
    );
    assert.deepEqual(
      debits.rows.map((r) => r.id),
      [outcomes[0].id],
    );
    assert.equal((await store.balance(tenantId, poolId))?.total, credits(93n));
    await assertClean(tenantId);

    // The same key with two different bodies at once: one runs; its twins replay, the rest conflict.
    const mixed = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        debitOnce(tenantId, poolId, "contested", credits(i % 2 === 0 ? 1n : 2n)),
      ),
    );
    const fresh = mixed.findIndex((r) => r.kind === "fresh");
    assert.ok(fresh >= 0);
    assert.equal(mixed.filter((r) => r.kind === "fresh").length, 1);
    for (const [i, r] of mixed.entries()) {
      if (i === fresh) continue;
      assert.equal(r.kind, i % 2 === fresh % 2 ? "replayed" : "conflict");
    }
    assert.equal(
      (await store.balance(tenantId, poolId))?.total,
      credits(93n) - credits(fresh % 2 === 0 ? 1n : 2n),
    );
    await assertClean(tenantId);
  });

  test("expiry on touch and reversal happen exactly once under concurrent writers", async () => {
    let now = Date.now();
    const timed = database.store(() => now);
    const tenant = await timed.createTenant("expiry race", "test");
    const customer = okv(
      await timed.db.transaction((tx) => timed.createCustomer(tx, tenant.id, { kind: "organization" })),
    );
    const walletId = customer.walletId;
    const short = okv(
      await timed.db.transaction((tx) =>
        timed.createGrant(tx, tenant.id, {
          walletId,
          amount: credits(10n),
          source: "plan",
          expiresAt: now + 60_000,
        }),
      ),
    ).grant;
    okv(
      await timed.db.transaction((tx) =>
        timed.createGrant(tx, tenant.id, { walletId, amount: credits(1000n), source: "plan" }),
      ),
    );
    now += 120_000;
    const debits = await Promise.all(
      Array.from({ length: 30 }, () =>
        timed.db.transaction((tx) =>
          timed.debitWallet(tx, tenant.id, walletId, { amount: credits(1n), action: null, kind: "debit" }),
        ),
      ),
    );
    for (const d of debits) okv(d);
    const expires = await timed.db.query(
      "SELECT count(*)::int AS n FROM journal_transactions WHERE tenant_id = $1 AND kind = 'expire'",
      [tenant.id],
    );
    assert.equal(Number(expires.rows[0]!.n), 1, "one expire transaction, whatever the number of writers");
    assert.equal((await timed.getGrant(tenant.id, short.id))?.status, "expired");
    assert.equal((await timed.balance(tenant.id, walletId))?.total, credits(1000n - 30n));

    // Twenty clients reverse the same debit at once: one succeeds.
    const target = okv(debits[0]!);
    const reversals = await Promise.all(
      Array.from({ length: 20 }, () =>
        timed.db.transaction((tx) => timed.reverseTransaction(tx, tenant.id, target.id, "duplicate")),
      ),
    );
    assert.equal(reversals.filter((r) => r.ok).length, 1);
    for (const r of reversals) if (!r.ok) assert.equal(r.error.code, "transaction_already_reversed");
    assert.equal((await timed.balance(tenant.id, walletId))?.total, credits(1000n - 29n));
    const report = await timed.reconcile(tenant.id);
    assert.deepEqual(report.differences, []);
  });
});
