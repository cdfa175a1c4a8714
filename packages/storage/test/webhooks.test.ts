/**
 * The outbox, the webhook deliverer and alerts, on PGlite and (when DATABASE_URL is set)
 * PostgreSQL: signatures match the Standard Webhooks spec's reference; events exist exactly
 * when their cause commits; two deliverers at once deliver each event once per endpoint;
 * alerts fire once per crossing and re-arm, against a model over random debits and credits;
 * under the `deny` private-network policy, private URLs are refused when set and private
 * addresses at delivery (a resolver is injected: no real DNS), without connecting.
 * Time is the injected clock or a tenant's test clock: nothing sleeps but the receiver.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  type AlertRule,
  alertConditionHolds,
  alertRuleKey,
  credits,
  DEFAULT_ALERT_RULES,
  type Result,
} from "@drawdown/core";
import fc from "fast-check";
import {
  Alerts,
  fireAlert,
  type Resolver,
  rearmAlert,
  type Store,
  signWebhook,
  WEBHOOK_SECRET_PREFIX,
  Webhooks,
  webhookHeaders,
} from "../src/index.js";
import { backends, type TestDatabase } from "./support/backends.js";

const c = (n: number): bigint => credits(BigInt(n));

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

/** Verifies a Standard Webhooks signature header from the spec, independently of the code under test. */
function verify(secret: string, headers: Record<string, string>, body: string): boolean {
  const key = Buffer.from(secret.slice(WEBHOOK_SECRET_PREFIX.length), "base64");
  const expected = createHmac("sha256", key)
    .update(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`)
    .digest("base64");
  return headers["webhook-signature"]!.split(" ").some((s) => s === `v1,${expected}`);
}

describe("Standard Webhooks signatures", () => {
  test("the spec's reference vector", () => {
    assert.equal(
      signWebhook(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
      ),
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
  });

  test("headers: one signature per secret, each verifying on its own; a changed body verifies with none", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 24, maxLength: 64 }),
        fc.uint8Array({ minLength: 24, maxLength: 64 }),
        fc.string(),
        fc.nat(),
        (a, b, body, ts) => {
          const s1 = WEBHOOK_SECRET_PREFIX + Buffer.from(a).toString("base64");
          const s2 = WEBHOOK_SECRET_PREFIX + Buffer.from(b).toString("base64");
          const h = webhookHeaders([s1, s2], "evt_1", ts, body);
          assert.equal(h["webhook-timestamp"], String(ts));
          assert.equal(h["webhook-signature"]!.split(" ").length, 2);
          assert.ok(verify(s1, h, body) && verify(s2, h, body));
          assert.ok(!verify(s1, h, `${body}x`));
        },
      ),
    );
  });
});

/** A receiver counting each (path, webhook-id) and each connection, answering after `delayMs`. */
async function receiver(delayMs: number): Promise<{
  url: string;
  port: number;
  seen: Map<string, number>;
  connections(): number;
  close(): Promise<void>;
}> {
  const seen = new Map<string, number>();
  let connections = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const key = `${req.url} ${req.headers["webhook-id"]}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      setTimeout(() => res.end("ok"), delayMs);
    });
  });
  server.on("connection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

for (const backend of backends()) {
  describe(`outbox, webhooks and alerts on ${backend.name}`, () => {
    let database: TestDatabase;
    let store: Store;

    before(async () => {
      database = await backend.open();
      store = database.store();
    });
    after(async () => {
      await database?.close();
    });

    async function wallet(tenantId?: string) {
      const t = tenantId ?? (await store.createTenant("Outbox", "test")).id;
      const customer = okv(
        await store.db.transaction((tx) => store.createCustomer(tx, t, { kind: "individual" })),
      );
      return { tenantId: t, customerId: customer.id, walletId: customer.walletId };
    }

    const events = async (tenantId: string) =>
      (
        await store.db.query<{ id: string; type: string; payload: unknown }>(
          "SELECT id, type, payload FROM outbox_events WHERE tenant_id = $1 ORDER BY id",
          [tenantId],
        )
      ).rows.map((r) => ({
        ...r,
        payload: (typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload) as Record<
          string,
          unknown
        >,
      }));

    test("an event exists exactly when its cause commits", async () => {
      const w = await wallet();
      await assert.rejects(
        store.db.transaction(async (tx) => {
          okv(
            await store.createGrant(tx, w.tenantId, { walletId: w.walletId, amount: c(5), source: "promo" }),
          );
          throw new Error("rolled back");
        }),
      );
      assert.deepEqual(await events(w.tenantId), []);
      const g = okv(
        await store.db.transaction((tx) =>
          store.createGrant(tx, w.tenantId, { walletId: w.walletId, amount: c(5), source: "promo" }),
        ),
      );
      const [e] = await events(w.tenantId);
      assert.equal(e?.type, "grant.created");
      assert.equal(e?.payload.grant_id, g.grant.id);
      assert.equal(e?.payload.amount, "5");
      assert.equal(e?.payload.customer_id, w.customerId);
    });

    test("two deliverers at once deliver each event once per endpoint", async () => {
      const r = await receiver(15);
      try {
        const w = await wallet();
        // The receiver is on loopback: private networks allowed, explicitly.
        const a = new Webhooks(store, { timeoutMs: 5000, privateNetworks: "allow" });
        const other = database.store();
        const b = new Webhooks(other, { timeoutMs: 5000, privateNetworks: "allow" });
        for (const path of ["/one", "/two"])
          okv(
            await store.db.transaction((tx) =>
              a.createEndpoint(tx, w.tenantId, { url: r.url + path, eventTypes: ["*"] }),
            ),
          );
        for (let i = 0; i < 40; i++)
          okv(
            await store.db.transaction((tx) =>
              store.createGrant(tx, w.tenantId, { walletId: w.walletId, amount: c(1), source: "promo" }),
            ),
          );
        const made = await Promise.all([a.run(null), b.run(null), a.run(w.tenantId), b.run(w.tenantId)]);
        const total = made.reduce((x, y) => x + y, 0);
        assert.equal(total, 80, `attempts made: ${made}`);
        assert.equal(r.seen.size, 80);
        assert.ok(
          [...r.seen.values()].every((n) => n === 1),
          "no duplicates in the normal path",
        );
        const { rows } = await store.db.query<{ status: string; n: number }>(
          "SELECT status, count(*)::int AS n FROM webhook_deliveries WHERE tenant_id = $1 GROUP BY status",
          [w.tenantId],
        );
        assert.deepEqual(rows, [{ status: "succeeded", n: 80 }]);
        assert.equal(await a.run(null), 0, "nothing left to deliver");
      } finally {
        await r.close();
      }
    });

    test("deny (the default): a private URL is refused when set, and nothing is stored or changed", async () => {
      const t = await store.createTenant("SSRF at create", "test");
      const hooks = new Webhooks(database.store());
      const create = (url: string) =>
        store.db.transaction((tx) => hooks.createEndpoint(tx, t.id, { url, eventTypes: ["*"] }));
      for (const url of [
        "http://127.0.0.1:8080/hooks",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/",
        "http://localhost:3000/",
      ]) {
        const r = await create(url);
        assert.ok(!r.ok && r.error.code === "webhook_url_not_allowed", url);
      }
      const count = async () =>
        (
          await store.db.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM webhook_endpoints WHERE tenant_id = $1",
            [t.id],
          )
        ).rows[0]?.n;
      assert.equal(await count(), 0);
      const e = okv(await create("https://hooks.example.test/in")).endpoint;
      const moved = await store.db.transaction((tx) =>
        hooks.updateEndpoint(tx, t.id, e.id, { url: "http://192.168.1.10/" }),
      );
      assert.ok(!moved.ok && moved.error.code === "webhook_url_not_allowed");
      assert.equal((await hooks.getEndpoint(t.id, e.id))?.url, "https://hooks.example.test/in");
      // Allowed, the same URL is stored.
      const open = new Webhooks(database.store(), { privateNetworks: "allow" });
      okv(
        await store.db.transaction((tx) =>
          open.updateEndpoint(tx, t.id, e.id, { url: "http://192.168.1.10/" }),
        ),
      );
      assert.equal(await count(), 1);
    });

    test("deny: a name resolving to a private address is refused at delivery without connecting, logged and retried", async () => {
      const r = await receiver(0);
      try {
        const t = await store.createTenant("SSRF at delivery", "test");
        const asked: string[] = [];
        let answer: { address: string; family: 4 | 6 }[] = [{ address: "127.0.0.1", family: 4 }];
        const resolve: Resolver = async (hostname) => {
          asked.push(hostname);
          return answer;
        };
        const hooks = new Webhooks(database.store(), { resolve });
        // A name passes when set: only what it resolves to says where it goes.
        const e = okv(
          await store.db.transaction((tx) =>
            hooks.createEndpoint(tx, t.id, {
              url: `http://hooks.example.test:${r.port}/in`,
              eventTypes: ["*"],
            }),
          ),
        ).endpoint;
        const d = okv(await hooks.sendTest(t.id, e.id));
        assert.equal(d.status, "pending", "a refusal is a failed attempt, retried like any other");
        assert.equal(d.attempts, 1);
        assert.equal(d.lastStatusCode, null);
        assert.match(
          d.lastError ?? "",
          /^refused: hooks\.example\.test resolves to 127\.0\.0\.1, which is not a public address \(loopback\)/,
        );
        assert.equal(d.attemptLog[0]?.error, d.lastError);
        assert.ok(d.nextAttemptAt !== null);
        assert.deepEqual(asked, ["hooks.example.test"], "resolved once, for the connection itself");
        assert.equal(r.connections(), 0, "nothing connected to the receiver");

        // One private address among public ones refuses the whole name; so does IPv4-mapped IPv6.
        for (const mixed of [
          [
            { address: "93.184.216.34", family: 4 as const },
            { address: "10.0.0.7", family: 4 as const },
          ],
          [{ address: "::ffff:127.0.0.1", family: 6 as const }],
          [{ address: "fd00::1", family: 6 as const }],
          [{ address: "169.254.169.254", family: 4 as const }],
        ]) {
          answer = mixed;
          const again = okv(await hooks.redeliver(t.id, d.id));
          assert.match(
            again.lastError ?? "",
            /^refused: hooks\.example\.test resolves to /,
            JSON.stringify(mixed),
          );
        }
        assert.equal(r.connections(), 0);

        // Allowed, the same name and answer deliver: the socket goes to the address resolved.
        answer = [{ address: "127.0.0.1", family: 4 }];
        const open = new Webhooks(database.store(), { privateNetworks: "allow", resolve });
        const sent = okv(await open.redeliver(t.id, d.id));
        assert.equal(sent.status, "succeeded");
        assert.equal(sent.attemptLog.at(-1)?.statusCode, 200);
        assert.equal(r.seen.get(`/in ${d.eventId}`), 1);
      } finally {
        await r.close();
      }
    });

    test("deny: an endpoint stored with a literal private address is refused at delivery too", async () => {
      const r = await receiver(0);
      try {
        const t = await store.createTenant("SSRF literal", "test");
        // Set while private networks were allowed (or before this check existed).
        const open = new Webhooks(database.store(), { privateNetworks: "allow" });
        const e = okv(
          await store.db.transaction((tx) =>
            open.createEndpoint(tx, t.id, { url: `${r.url}/in`, eventTypes: ["*"] }),
          ),
        ).endpoint;
        const resolve: Resolver = async () => assert.fail("a literal address is not resolved");
        const hooks = new Webhooks(database.store(), { resolve });
        const d = okv(await hooks.sendTest(t.id, e.id));
        assert.equal(d.status, "pending");
        assert.match(d.lastError ?? "", /^refused: 127\.0\.0\.1 is not a public address \(loopback\)/);
        assert.equal(r.connections(), 0);
      } finally {
        await r.close();
      }
    });

    test("the deliverer's HTTP: redirects are not followed, the answer's start is kept, silence times out", async () => {
      let hits = 0;
      let silent = 0;
      const server = createServer((req, res) => {
        req.resume();
        req.on("end", () => {
          if (req.url === "/moved") return res.writeHead(302, { location: "/target" }).end("moved");
          if (req.url === "/target") hits++;
          if (req.url === "/big") return res.end("x".repeat(100_000));
          if (req.url === "/silent") return void silent++; // never answers
          res.writeHead(204).end();
        });
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      try {
        const t = await store.createTenant("HTTP", "test");
        const hooks = new Webhooks(database.store(), { privateNetworks: "allow", timeoutMs: 200 });
        const send = async (path: string) => {
          const e = okv(
            await store.db.transaction((tx) =>
              hooks.createEndpoint(tx, t.id, { url: base + path, eventTypes: ["*"] }),
            ),
          ).endpoint;
          return okv(await hooks.sendTest(t.id, e.id));
        };
        const moved = await send("/moved");
        assert.equal(moved.lastError, "HTTP 302");
        assert.equal(moved.attemptLog[0]?.response, "moved");
        assert.equal(hits, 0, "the redirect was not followed");
        const big = await send("/big");
        assert.equal(big.status, "succeeded");
        assert.equal(big.attemptLog[0]?.response, "x".repeat(1000));
        const empty = await send("/empty");
        assert.equal(empty.status, "succeeded");
        assert.equal(empty.attemptLog[0]?.statusCode, 204);
        assert.equal(empty.attemptLog[0]?.response, null);
        // The receiver never answers: whatever the machine's speed, the attempt times out.
        const quiet = await send("/silent");
        assert.equal(quiet.status, "pending");
        assert.equal(quiet.lastError, "timed out after 200 ms");
        assert.equal(silent, 1);
      } finally {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    });

    test("fireAlert: once per key until re-armed; without a key, every call", async () => {
      const w = await wallet();
      const fire = (key: string | null) =>
        store.db.transaction((tx) =>
          fireAlert(tx, store, {
            tenantId: w.tenantId,
            walletId: w.walletId,
            kind: "spend_cap_reached",
            key,
            details: { cap: "100" },
          }),
        );
      const first = await fire("cap:day:2026-03-01");
      assert.ok(first);
      assert.equal(first.customerId, w.customerId);
      assert.equal(await fire("cap:day:2026-03-01"), null);
      assert.ok(
        await store.db.transaction((tx) => rearmAlert(tx, w.tenantId, w.walletId, "cap:day:2026-03-01")),
      );
      assert.ok(await fire("cap:day:2026-03-01"));
      assert.ok(await fire(null));
      assert.ok(await fire(null));
      const triggered = (await events(w.tenantId)).filter((e) => e.type === "alert.triggered");
      assert.equal(triggered.length, 4);
      assert.equal(triggered[0]?.payload.kind, "spend_cap_reached");
      assert.equal(triggered[0]?.payload.cap, "100");
      assert.equal(triggered[0]?.payload.alert_id, first.id);
    });

    test("expiring soon: once per grant and expiry, with two schedulers racing", async () => {
      const t = await store.createTenant("Expiring", "test");
      okv(await store.advanceClock(t.id, Date.parse("2030-01-01T00:00:00Z")));
      const w = await wallet(t.id);
      const alerts = new Alerts(store);
      okv(
        await store.db.transaction((tx) =>
          alerts.setRules(tx, t.id, w.walletId, [{ kind: "expiring_soon", days: 3 }]),
        ),
      );
      okv(
        await store.db.transaction((tx) =>
          store.createGrant(tx, t.id, {
            walletId: w.walletId,
            amount: c(9),
            source: "promo",
            expiresAt: Date.parse("2030-01-10T00:00:00Z"),
          }),
        ),
      );
      assert.equal(await alerts.nextDue(t.id, Date.parse("2030-01-06T00:00:00Z")), null);
      assert.equal(
        await alerts.nextDue(t.id, Date.parse("2030-01-08T00:00:00Z")),
        Date.parse("2030-01-07T00:00:00Z"),
      );
      okv(await store.advanceClock(t.id, Date.parse("2030-01-06T23:00:00Z")));
      assert.equal((await alerts.list(t.id, {}, { limit: 10 })).items.length, 0);
      await store.db.query("UPDATE tenants SET clock_at = $2 WHERE id = $1", [t.id, "2030-01-07T12:00:00Z"]);
      await store.clockOf(t.id);
      const other = new Alerts(database.store());
      const [x, y] = await Promise.all([alerts.run(t.id), other.run(t.id)]);
      assert.equal(x + y, 1);
      const listed = (await alerts.list(t.id, {}, { limit: 10 })).items;
      assert.deepEqual(
        listed.map((a) => [a.kind, a.details.remaining]),
        [["expiring_soon", "9"]],
      );
      assert.equal(await alerts.run(t.id), 0);
    });

    test("model: over random debits and credits, each rule fires once per crossing and re-arms after recovery", async () => {
      // A clock of its own, a second per operation: the alerts of one operation share a time.
      let now = Date.parse("2026-01-01T00:00:00Z");
      const timed = database.store(() => now);
      const t = await timed.createTenant("Alerts model", "live");
      const alerts = new Alerts(timed);
      const ruleSets: (readonly AlertRule[] | null)[] = [
        null,
        [
          { kind: "percent_remaining", percent: 50 },
          { kind: "amount_remaining", amount: c(30) },
          { kind: "exhausted" },
        ],
        [{ kind: "amount_remaining", amount: c(5) }],
      ];
      const op = fc.oneof(
        fc.record({ kind: fc.constant("credit" as const), amount: fc.integer({ min: 1, max: 150 }) }),
        fc.record({ kind: fc.constant("debit" as const), amount: fc.integer({ min: 1, max: 120 }) }),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...ruleSets),
          fc.array(op, { minLength: 1, maxLength: 18 }),
          async (set, ops) => {
            const w = await wallet(t.id);
            if (set !== null)
              okv(await timed.db.transaction((tx) => alerts.setRules(tx, t.id, w.walletId, set)));
            const rules = set ?? DEFAULT_ALERT_RULES;
            // The model: available, the reference (available after the last grant), armed state.
            let available = 0n;
            let reference = 0n;
            const fired = new Set<string>();
            const expected: string[] = [];
            for (const o of ops) {
              now += 1000;
              const amount = c(o.amount);
              if (o.kind === "credit") {
                okv(
                  await timed.db.transaction((tx) =>
                    timed.createGrant(tx, t.id, { walletId: w.walletId, amount, source: "purchase" }),
                  ),
                );
                available += amount;
                reference = available;
              } else {
                const r = await timed.db.transaction((tx) =>
                  timed.debitWallet(tx, t.id, w.walletId, {
                    amount,
                    kind: "debit",
                    action: null,
                    reason: "model",
                  }),
                );
                if (available < amount) {
                  assert.ok(!r.ok && r.error.code === "insufficient_credits");
                  continue;
                }
                okv(r);
                available -= amount;
              }
              const now_: string[] = [];
              for (const rule of rules) {
                const key = alertRuleKey(rule);
                const holds = alertConditionHolds(rule, { available, reference });
                if (holds && !fired.has(key)) {
                  fired.add(key);
                  now_.push(key);
                } else if (!holds) fired.delete(key);
              }
              if (now_.length > 0) expected.push(`${new Date(now).toISOString()} ${now_.sort().join(",")}`);
            }
            // Each operation's alerts, in time order (within one operation, as a set).
            const byTime = new Map<number, string[]>();
            for (const a of (await alerts.list(t.id, { walletId: w.walletId }, { limit: 200 })).items)
              byTime.set(a.firedAt, [...(byTime.get(a.firedAt) ?? []), a.ruleKey!]);
            const got = [...byTime.entries()]
              .sort(([x], [y]) => x - y)
              .map(([at, keys]) => `${new Date(at).toISOString()} ${keys.sort().join(",")}`);
            assert.deepEqual(got, expected);
            const state = await timed.db.query<{ key: string }>(
              "SELECT key FROM alert_states WHERE tenant_id = $1 AND wallet_id = $2 ORDER BY key",
              [t.id, w.walletId],
            );
            assert.deepEqual(
              state.rows.map((r) => r.key),
              [...fired].sort(),
            );
          },
        ),
        { numRuns: backend.name === "pglite" ? 40 : 25 },
      );
    });
  });
}
