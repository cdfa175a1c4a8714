import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown, Grant, Transaction } from "@drawdown/sdk";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * The test clock through the SDK over HTTP, on every backend: a test tenant's time moves
 * forward by request and every expiry due on the way happens once, in time order, stamped
 * with its own due time; the tenant's time then stands still (frozen), and everything the
 * tenant does (balances, usage events and their grace window) lives in it. Nothing sleeps and
 * no scheduler runs (the harness starts none): the clock alone makes time pass.
 */

const DAY = 86_400_000;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

for (const backend of backends()) {
  describe(`the test clock through the SDK (${backend.name})`, () => {
    /** The server's own clock: it never moves in this file, so only the test clock makes time pass. */
    const now = T0;
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    let acme: Customer;
    /** Expiring at T0 + 1, 3 and 10 days; and one that never expires. */
    let first: Grant;
    let second: Grant;
    let third: Grant;
    let forever: Grant;
    /** The journal before the first advance. */
    let issued: Transaction[];

    const journal = async () => (await dd.transactions.list({ customer_id: acme.id, limit: 200 })).data;
    const expiries = async () => (await journal()).filter((t) => t.kind === "expire");

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = connect(server.key);
      acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const grant = async (amount: string, expiresAt: number | null) =>
        (
          await dd.grants.create({
            wallet_id: acme.wallet_id,
            amount,
            source: "promo",
            expires_at: expiresAt === null ? null : iso(expiresAt),
          })
        ).grant;
      // Issued out of expiry order, so the order of expiry is not the order of issue.
      third = await grant("30", T0 + 10 * DAY);
      first = await grant("10", T0 + DAY);
      forever = await grant("5", null);
      second = await grant("20", T0 + 3 * DAY);
      issued = await journal();
    });
    after(async () => {
      await server?.close();
    });

    test("before any advance the tenant lives in real time: not frozen", async () => {
      assert.deepEqual(await dd.testClock.get(), {
        object: "test_clock",
        now: iso(now),
        frozen: false,
        environment: "test",
      });
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "65");
      assert.deepEqual(
        issued.map((t) => t.kind),
        ["grant", "grant", "grant", "grant"],
      );
    });

    test("advancing by 2 days expires exactly the first grant, at its own expiry time", async () => {
      const moved = await dd.testClock.advance({ seconds: 2 * 86_400 });
      assert.deepEqual(moved, {
        object: "test_clock",
        from: iso(T0),
        to: iso(T0 + 2 * DAY),
        now: iso(T0 + 2 * DAY),
        expired_grants: 1,
      });
      const expired = await dd.grants.get(first.id);
      assert.equal(expired.status, "expired");
      assert.equal(expired.remaining, "0");
      assert.equal(
        expired.status_changed_at,
        first.expires_at,
        "expired when it was due, not when the clock stopped",
      );
      for (const g of [second, third, forever]) assert.equal((await dd.grants.get(g.id)).status, "active");

      // One breakage transaction, after the issues, posted at the grant's expiry (the clock stopped there).
      const after = await journal();
      assert.deepEqual(
        after.slice(0, issued.length).map((t) => t.id),
        issued.map((t) => t.id),
      );
      const [breakage, ...more] = after.slice(issued.length);
      assert.deepEqual(more, []);
      assert.equal(breakage?.kind, "expire");
      assert.equal(breakage?.posted_at, first.expires_at);
      assert.deepEqual(
        breakage?.entries.map((e) => [e.account, e.grant_id, e.amount]),
        [
          ["grant", first.id, "-10"],
          ["breakage", null, "10"],
        ],
      );
      const balance = await dd.wallets.balance(acme.wallet_id);
      assert.deepEqual([balance.total, balance.available, balance.expired], ["55", "55", "0"]);
      assert.equal(balance.as_of, iso(T0 + 2 * DAY), "the balance is read at the tenant's time");
      assert.equal((await dd.wallets.get(acme.wallet_id)).balance, "55");
    });

    test("the clock stands still where it was left: GET answers the frozen time", async () => {
      assert.deepEqual(await dd.testClock.get(), {
        object: "test_clock",
        now: iso(T0 + 2 * DAY),
        frozen: true,
        environment: "test",
      });
    });

    test("advancing to 30 days expires the other two in time order, each at its own time", async () => {
      const moved = await dd.testClock.advance({ to: new Date(T0 + 30 * DAY) });
      assert.deepEqual(moved, {
        object: "test_clock",
        from: iso(T0 + 2 * DAY),
        to: iso(T0 + 30 * DAY),
        now: iso(T0 + 30 * DAY),
        expired_grants: 2,
      });
      const all = await expiries();
      assert.deepEqual(
        all.map((t) => [t.posted_at, t.entries.find((e) => e.account === "grant")?.grant_id]),
        [
          [first.expires_at, first.id],
          [second.expires_at, second.id],
          [third.expires_at, third.id],
        ],
        "journal order is expiry order, and each breakage is posted at its grant's expiry",
      );
      const posted = all.map((t) => Date.parse(t.posted_at));
      assert.deepEqual(
        posted,
        [...posted].sort((a, b) => a - b),
      );
      for (const g of [second, third]) {
        const x = await dd.grants.get(g.id);
        assert.deepEqual([x.status, x.remaining, x.status_changed_at], ["expired", "0", g.expires_at]);
      }
      assert.equal((await dd.grants.get(forever.id)).status, "active");
      const balance = await dd.wallets.balance(acme.wallet_id);
      assert.deepEqual([balance.total, balance.available, balance.expired], ["5", "5", "0"]);
      assert.deepEqual(
        balance.grants.map((g) => g.id),
        [forever.id],
      );
    });

    test("advancing again changes nothing: a retry of the same `to`, and more time with nothing due", async () => {
      const before = await journal();
      const again = await dd.testClock.advance({ to: iso(T0 + 30 * DAY) });
      assert.deepEqual(
        [again.from, again.to, again.expired_grants],
        [iso(T0 + 30 * DAY), iso(T0 + 30 * DAY), 0],
      );
      const later = await dd.testClock.advance({ seconds: 3600 });
      assert.deepEqual(
        [later.from, later.to, later.expired_grants],
        [iso(T0 + 30 * DAY), iso(T0 + 30 * DAY + 3_600_000), 0],
      );
      assert.deepEqual(await journal(), before);
      assert.equal((await expiries()).length, 3, "one breakage per grant");
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "5");
    });

    test("the ledger reconciles", async () => {
      const report = await dd.reconcile();
      assert.deepEqual(report.differences, []);
      assert.equal(report.ok, true);
      assert.equal(report.transactions, issued.length + 3);
    });

    test("the clock never moves back; both or neither of to and seconds are refused", async () => {
      const clock = await dd.testClock.get();
      const back = await fails(dd.testClock.advance({ to: iso(T0 + DAY) }), "invalid_argument", 400);
      assert.match(back.message, /only moves forward/);
      await fails(dd.testClock.advance({ to: iso(T0 + 30 * DAY) }), "invalid_argument", 400);
      await fails(
        dd.testClock.advance({ to: iso(T0 + 40 * DAY), seconds: 60 } as never),
        "invalid_argument",
        400,
      );
      await fails(dd.testClock.advance({} as never), "invalid_argument", 400);
      await fails(dd.testClock.advance({ seconds: 0 }), "validation_failed", 400);
      await fails(dd.testClock.advance({ seconds: 31_622_401 }), "validation_failed", 400);
      await fails(dd.testClock.advance({ seconds: 1.5 }), "validation_failed", 400);
      assert.deepEqual(await dd.testClock.get(), clock, "a refused advance moves nothing");
    });

    test("a grant issued at the tenant's time expires when the clock passes it, however far", async () => {
      const clock = Date.parse((await dd.testClock.get()).now);
      const { grant: soon } = await dd.grants.create({
        wallet_id: acme.wallet_id,
        amount: "7",
        source: "gift",
        expires_at: iso(clock + 1000),
      });
      assert.equal(soon.created_at, iso(clock), "created at the tenant's time");
      assert.equal(soon.effective_at, iso(clock));
      await fails(
        dd.grants.create({
          wallet_id: acme.wallet_id,
          amount: "1",
          source: "gift",
          expires_at: iso(now + DAY),
        }),
        "invalid_argument",
      );
      const moved = await dd.testClock.advance({ seconds: 365 * 86_400 });
      assert.equal(moved.expired_grants, 1);
      const [last] = (await expiries()).slice(-1);
      assert.equal(last?.posted_at, soon.expires_at);
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "5");
    });

    test("usage lives in the tenant's time: no time is stamped at the frozen now; real time is too old", async () => {
      const frozen = (await dd.testClock.get()).now;
      const card = await dd.rateCards.create({ name: "Standard" });
      const version = await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "0.01" }],
      });
      assert.equal(version.effective_at, frozen, "published at the tenant's time");
      const r = await dd.events.ingest({
        id: "evt-clock-1",
        customer_id: acme.id,
        action: "chat.completion",
        quantities: { output_tokens: 100 },
      });
      assert.equal(r.status, "accepted");
      assert.equal(r.charge?.credits, "1");
      const recorded = await dd.events.get("evt-clock-1");
      assert.equal(recorded.time, frozen, "an event without a time happened at the tenant's now");
      assert.equal(recorded.received_at, frozen);
      const charge = await dd.transactions.get(r.charge!.transaction_id!);
      assert.equal(charge.posted_at, frozen);

      // Three days on: the version has been in force since, and the clock is frozen anew.
      const later = (await dd.testClock.advance({ seconds: 3 * 86_400 })).now;
      // The server's real time is far behind the frozen clock: beyond the 7-day grace window.
      const old = await fails(
        dd.events.ingest({
          id: "evt-clock-2",
          customer_id: acme.id,
          action: "chat.completion",
          quantities: { output_tokens: 100 },
          time: iso(now),
        }),
        "event_too_old",
        400,
      );
      assert.match(old.message, /7-day grace/);
      // Within the window of the tenant's time it is fine; ahead of it, it is in the future.
      const late = await dd.events.ingest({
        id: "evt-clock-3",
        customer_id: acme.id,
        action: "chat.completion",
        quantities: { output_tokens: 100 },
        time: iso(Date.parse(later) - 2 * DAY),
      });
      assert.equal(late.status, "accepted");
      await fails(
        dd.events.ingest({
          id: "evt-clock-4",
          customer_id: acme.id,
          action: "chat.completion",
          quantities: { output_tokens: 100 },
          time: iso(Date.parse(later) + DAY),
        }),
        "event_in_future",
      );
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "3");
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("each tenant has its own clock; a live tenant has none", async () => {
      const other = connect((await server.newTenant("Other")).key);
      assert.deepEqual(await other.testClock.get(), {
        object: "test_clock",
        now: iso(now),
        frozen: false,
        environment: "test",
      });
      const live = await server.store.createTenant("Live", "live");
      const key = await server.store.createApiKey(live.id, { kind: "secret", name: "live" });
      assert.ok(key.ok);
      const liveClient = connect(key.value.secret);
      assert.deepEqual(await liveClient.testClock.get(), {
        object: "test_clock",
        now: iso(now),
        frozen: false,
        environment: "live",
      });
      for (const params of [{ to: iso(now + DAY) }, { seconds: 60 }]) {
        const e = await fails(liveClient.testClock.advance(params), "invalid_argument", 400);
        assert.match(e.message, /Only a test tenant has a test clock/);
      }
      assert.equal((await liveClient.testClock.get()).frozen, false);
      assert.equal((await dd.testClock.get()).frozen, true, "the first tenant's clock is its own");
    });

    test("every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
      for (const op of ["getTestClock", "advanceTestClock"])
        assert.ok(
          (log.seen.get(op) ?? []).some((s) => s < 300),
          `${op} answered`,
        );
    });
  });
}
