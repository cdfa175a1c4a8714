import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { Drawdown, DrawdownErrorCode, WebhookEndpoint } from "@drawdown/sdk";
import { Webhook } from "standardwebhooks";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { snapshot } from "./support/http.js";
import { fails } from "./support/sdk.js";

/**
 * Webhooks and alerts through the SDK over HTTP, on every backend. A local receiver verifies
 * every signature with a Standard Webhooks library (`standardwebhooks`); it goes down for a
 * while, the test clock moves through the retries, it comes back, and every event arrives,
 * each exactly once by webhook-id. Alerts fire once per crossing and arrive as webhooks.
 * That server allows private networks (its receiver is on loopback); another refuses them, as
 * a production server does: a private URL answers 422 and stores nothing, and a name that
 * resolves to loopback (an injected resolver, no real DNS) is refused at delivery, never
 * reaching the receiver.
 */

interface Received {
  readonly id: string;
  readonly type: string;
  readonly data: Record<string, unknown>;
  readonly signatures: number;
}

/** A webhook receiver on a fixed port that can go down and come back. */
class Receiver {
  readonly received: Received[] = [];
  readonly rejected: string[] = [];
  /** Connections accepted, webhook or not. */
  connections = 0;
  /** The status answered to a valid webhook. */
  status = 200;
  secrets: string[] = [];
  #server: Server | null = null;
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      void this.#handle(req).then((code) => {
        res.writeHead(code, { "content-type": "text/plain" });
        res.end(code === 200 ? "ok" : "no");
      });
    });
    server.on("connection", () => this.connections++);
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", resolve));
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  async #handle(req: IncomingMessage): Promise<number> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const headers = {
      "webhook-id": String(req.headers["webhook-id"]),
      "webhook-timestamp": String(req.headers["webhook-timestamp"]),
      "webhook-signature": String(req.headers["webhook-signature"]),
    };
    // Every secret in use must verify on its own (during a rotation, both).
    for (const secret of this.secrets) {
      try {
        new Webhook(secret).verify(body, headers);
      } catch (error) {
        this.rejected.push(`${headers["webhook-id"]}: ${(error as Error).message}`);
        return 400;
      }
    }
    if (this.status !== 200) return this.status;
    const parsed = JSON.parse(body) as { type: string; timestamp: string; data: Record<string, unknown> };
    assert.deepEqual(Object.keys(parsed).sort(), ["data", "timestamp", "type"]);
    this.received.push({
      id: headers["webhook-id"],
      type: parsed.type,
      data: parsed.data,
      signatures: headers["webhook-signature"].split(" ").length,
    });
    return 200;
  }

  /** How many times each webhook-id arrived. */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const r of this.received) m.set(r.id, (m.get(r.id) ?? 0) + 1);
    return m;
  }
}

for (const backend of backends()) {
  describe(`webhooks and alerts through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const receiver = new Receiver();

    before(async () => {
      // The receiver is on loopback: private networks allowed, explicitly.
      server = await startTestServer({ backend: backend.name, webhookPrivateNetworks: "allow" });
      dd = contractClient(server.url, server.key, log);
      await receiver.start();
      // A frozen test clock: only an advance moves time (and runs what falls due).
      await dd.testClock.advance({ seconds: 60 });
    });
    after(async () => {
      await receiver.stop();
      await server?.close();
    });

    /** Every table but the idempotency record (the SDK's key keeps a refusal, to replay it). */
    const state = async () => {
      const { idempotency_keys: _, ...tables } = await snapshot(server.store);
      return tables;
    };
    const refused = async (call: () => Promise<unknown>, code: DrawdownErrorCode, status = 400) => {
      const before = await state();
      await fails(call(), code, status);
      assert.deepEqual(await state(), before, `a refused ${code} changed the database`);
    };

    let endpoint: WebhookEndpoint;

    test("an endpoint: its secret once, a test-send verified by a Standard Webhooks library", async () => {
      endpoint = await dd.webhooks.create({ url: receiver.url, event_types: ["*"], description: "main" });
      assert.match(endpoint.secret ?? "", /^whsec_[A-Za-z0-9+/]{43}=$/);
      receiver.secrets = [endpoint.secret!];
      const got = await dd.webhooks.get(endpoint.id);
      assert.equal(got.secret, undefined, "the secret is shown once");
      assert.deepEqual(got.event_types, ["*"]);
      const sent = await dd.webhooks.test(endpoint.id);
      assert.equal(sent.status, "succeeded");
      assert.equal(sent.attempts, 1);
      assert.equal(sent.attempt_log[0]?.status_code, 200);
      assert.equal(sent.attempt_log[0]?.response, "ok");
      assert.equal(sent.event.type, "webhook.test");
      assert.deepEqual(receiver.rejected, []);
      assert.deepEqual(
        receiver.received.map((r) => [r.id, r.type]),
        [[sent.event_id, "webhook.test"]],
      );
    });

    test("with the receiver down for a while, every event arrives after it returns, each once", async () => {
      await receiver.stop();
      const c = await dd.customers.create({ kind: "organization", name: "Acme" });
      const grants = [];
      for (const amount of ["100", "50", "25"])
        grants.push((await dd.grants.create({ wallet_id: c.wallet_id, amount, source: "purchase" })).grant);
      await dd.grants.void(grants[2]!.id, { reason: "refund" });
      await dd.adjustments.debit(c.wallet_id, { amount: "130", reason: "usage" });
      // An hour of retries against a closed port: each attempt fails and is logged.
      await dd.testClock.advance({ seconds: 3600 });
      const pending = await dd.webhooks.deliveries(endpoint.id, { status: "pending" });
      assert.ok(pending.data.length >= 5, `pending deliveries: ${pending.data.length}`);
      for (const d of pending.data) {
        assert.ok(d.attempts >= 5, `attempts so far: ${d.attempts}`);
        assert.match(d.last_error ?? "", /ECONNREFUSED|no answer/);
        assert.equal(d.last_status_code, null);
      }
      const detail = await dd.webhooks.delivery(pending.data[0]!.id);
      assert.equal(detail.attempt_log.length, detail.attempts);
      for (const [i, a] of detail.attempt_log.entries()) {
        assert.equal(a.n, i + 1);
        assert.ok(
          a.next_attempt_at !== null && a.next_attempt_at > a.attempted_at,
          "each failure schedules the next",
        );
        if (i > 0) {
          // Exponential: each wait at least half the doubled step (equal jitter).
          const wait = Date.parse(a.attempted_at) - Date.parse(detail.attempt_log[i - 1]!.attempted_at);
          assert.ok(wait >= 15_000 * 2 ** (i - 1), `wait ${i}: ${wait} ms`);
          assert.ok(wait <= 30_000 * 2 ** (i - 1), `wait ${i}: ${wait} ms`);
        }
      }
      assert.equal(receiver.received.length, 1, "nothing arrived while it was down");

      await receiver.start();
      await dd.testClock.advance({ seconds: 6 * 3600 });
      const all = await dd.webhooks.deliveries(endpoint.id, { limit: 200 });
      assert.ok(
        all.data.every((d) => d.status === "succeeded"),
        JSON.stringify(all.data.map((d) => d.status)),
      );
      assert.deepEqual(receiver.rejected, []);
      const counts = receiver.counts();
      assert.ok(
        [...counts.values()].every((n) => n === 1),
        "each webhook-id exactly once",
      );
      assert.deepEqual(
        [...counts.keys()].sort(),
        all.data.map((d) => d.event_id).sort(),
        "every event the endpoint was due arrived",
      );
      const types = receiver.received.map((r) => r.type);
      assert.equal(types.filter((t) => t === "grant.created").length, 3);
      assert.equal(types.filter((t) => t === "grant.voided").length, 1);
      // 130 drawn of 175 granted (25 voided): 20 left of the 175 the last grant left, 11.42%.
      const alerts = receiver.received.filter((r) => r.type === "alert.triggered");
      assert.deepEqual(
        alerts.map((a) => (a.data.rule as { kind: string; percent?: number }).percent),
        [20],
      );
      assert.equal(alerts[0]?.data.wallet_id, c.wallet_id);
      assert.equal(alerts[0]?.data.available, "20");
      assert.equal(alerts[0]?.data.reference, "175");
      assert.equal(alerts[0]?.data.percent_remaining, "11.42");
    });

    test("alerts fire once per crossing, re-arm after recovery, and are listed", async () => {
      const c = await dd.customers.create({ kind: "individual" });
      const before = receiver.received.length;
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "plan" });
      await dd.adjustments.debit(c.wallet_id, { amount: "81", reason: "a" }); // 19%: fires 20%
      await dd.adjustments.debit(c.wallet_id, { amount: "1", reason: "b" }); // 18%: nothing new
      await dd.adjustments.debit(c.wallet_id, { amount: "9", reason: "c" }); // 9%: fires 10%
      await dd.adjustments.debit(c.wallet_id, { amount: "9", reason: "d" }); // 0: exhausted
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "top_up" }); // 100%: re-arms all
      await dd.adjustments.debit(c.wallet_id, { amount: "85", reason: "e" }); // 15%: fires 20% again
      const listed = await dd.alerts.list({ wallet_id: c.wallet_id });
      assert.deepEqual(listed.data.map((a) => a.rule_key).reverse(), [
        "percent_remaining:20",
        "percent_remaining:10",
        "exhausted",
        "percent_remaining:20",
      ]);
      assert.deepEqual(
        (await dd.alerts.list({ wallet_id: c.wallet_id, kind: "exhausted" })).data.map((a) => a.kind),
        ["exhausted"],
      );
      await dd.testClock.advance({ seconds: 1 });
      const delivered = receiver.received.slice(before).filter((r) => r.type === "alert.triggered");
      assert.deepEqual(delivered.map((r) => r.data.alert_id).sort(), listed.data.map((a) => a.id).sort());
    });

    test("a wallet's own rules: amount and expiring soon; null goes back to the defaults", async () => {
      const c = await dd.customers.create({ kind: "individual" });
      assert.deepEqual(await dd.alerts.rules(c.wallet_id), {
        object: "alert_rules",
        wallet_id: c.wallet_id,
        defaults: true,
        rules: [
          { kind: "percent_remaining", percent: 20 },
          { kind: "percent_remaining", percent: 10 },
          { kind: "exhausted" },
        ],
      });
      const set = await dd.alerts.setRules(c.wallet_id, {
        rules: [
          { kind: "amount_remaining", amount: 50_000_000_000n },
          { kind: "expiring_soon", days: 7 },
        ],
      });
      assert.equal(set.defaults, false);
      assert.deepEqual(set.rules, [
        { kind: "amount_remaining", amount: "50" },
        { kind: "expiring_soon", days: 7 },
      ]);
      const clock = await dd.testClock.get();
      const expires = new Date(Date.parse(clock.now) + 30 * 86_400_000).toISOString();
      const { grant } = await dd.grants.create({
        wallet_id: c.wallet_id,
        amount: "60",
        source: "promo",
        expires_at: expires,
      });
      await dd.adjustments.debit(c.wallet_id, { amount: "15", reason: "x" }); // 45 ≤ 50: fires
      await dd.testClock.advance({ seconds: 22 * 86_400 }); // 8 days before: not yet
      assert.deepEqual(
        (await dd.alerts.list({ wallet_id: c.wallet_id })).data.map((a) => a.kind),
        ["amount_remaining"],
      );
      await dd.testClock.advance({ seconds: 2 * 86_400 }); // the window opened
      await dd.testClock.advance({ seconds: 86_400 });
      const expiring = (await dd.alerts.list({ wallet_id: c.wallet_id, kind: "expiring_soon" })).data;
      assert.equal(expiring.length, 1, "once per grant and expiry");
      assert.equal(expiring[0]?.details.grant_id, grant.id);
      assert.equal(expiring[0]?.details.remaining, "45");
      assert.equal(expiring[0]?.fired_at, new Date(Date.parse(expires) - 7 * 86_400_000).toISOString());
      // Extending the expiry is a new crossing when the new window opens.
      await dd.grants.extend(grant.id, {
        expires_at: new Date(Date.parse(expires) + 30 * 86_400_000).toISOString(),
        reason: "goodwill",
      });
      await dd.testClock.advance({ seconds: 30 * 86_400 });
      assert.equal((await dd.alerts.list({ wallet_id: c.wallet_id, kind: "expiring_soon" })).data.length, 2);
      const back = await dd.alerts.setRules(c.wallet_id, { rules: null });
      assert.equal(back.defaults, true);
      assert.equal((await dd.alerts.rules(c.wallet_id)).rules.length, 3);
    });

    test("a failing receiver: the status and answer are logged, and a redelivery succeeds with the same webhook-id", async () => {
      receiver.status = 503;
      const failed = await dd.webhooks.test(endpoint.id);
      assert.equal(failed.status, "pending");
      assert.equal(failed.last_status_code, 503);
      assert.equal(failed.last_error, "HTTP 503");
      assert.equal(failed.attempt_log[0]?.response, "no");
      assert.ok(failed.next_attempt_at !== null);
      receiver.status = 200;
      const again = await dd.webhooks.redeliver(failed.id);
      assert.equal(again.status, "succeeded");
      assert.equal(again.attempts, 2);
      assert.deepEqual(
        again.attempt_log.map((a) => a.status_code),
        [503, 200],
      );
      assert.equal(receiver.received.at(-1)?.id, failed.event_id);
      // A succeeded delivery can be sent again: same id, the receiver dedupes.
      const twice = await dd.webhooks.redeliver(failed.id);
      assert.equal(twice.attempts, 3);
      assert.equal(receiver.counts().get(failed.event_id), 2);
    });

    test("filters, disabling and deleting", async () => {
      const only = await dd.webhooks.create({ url: receiver.url, event_types: ["grant.*"], enabled: false });
      const c = await dd.customers.create({ kind: "individual" });
      await dd.grants.create({ wallet_id: c.wallet_id, amount: "5", source: "promo" });
      assert.equal((await dd.webhooks.deliveries(only.id)).data.length, 0, "disabled: no new events");
      await dd.webhooks.update(only.id, { enabled: true });
      await dd.subscriptions.create({
        customer_id: c.id,
        plan_id: (
          await dd.plans.create({
            name: "Basic",
            base_fee: { amount: "5", currency: "USD" },
            interval: { unit: "month", count: 1 },
            allotment: "10",
          })
        ).id,
      });
      const types = (await dd.webhooks.deliveries(only.id)).data.map((d) => d.event_type);
      assert.deepEqual(types, ["grant.created"], "grant.* only: not subscription.renewed");
      const all = (await dd.webhooks.deliveries(endpoint.id, { limit: 10 })).data.map((d) => d.event_type);
      assert.ok(all.includes("subscription.renewed"));
      const deleted = await dd.webhooks.delete(only.id);
      assert.equal(deleted.enabled, false);
      await fails(dd.webhooks.get(only.id), "not_found", 404);
      assert.ok(!(await dd.webhooks.list()).data.some((e) => e.id === only.id));
      await dd.testClock.advance({ seconds: 1 });
    });

    test("a rotated secret: for a day both secrets sign, and each verifies on its own", async () => {
      const rotated = await dd.webhooks.rotateSecret(endpoint.id);
      assert.ok(rotated.secret && rotated.secret !== endpoint.secret);
      assert.ok(rotated.previous_secret_expires_at !== null);
      receiver.secrets = [endpoint.secret!, rotated.secret];
      const d = await dd.webhooks.test(endpoint.id);
      assert.equal(d.status, "succeeded");
      assert.equal(receiver.received.at(-1)?.signatures, 2);
      await dd.testClock.advance({ seconds: 86_400 + 60 });
      receiver.secrets = [rotated.secret];
      await dd.webhooks.test(endpoint.id);
      assert.equal(receiver.received.at(-1)?.signatures, 1, "the previous secret stopped signing");
      assert.deepEqual(receiver.rejected, []);
    });

    test("bad input: a URL that is not http(s), unknown event types; each with its code, changing nothing", async () => {
      for (const url of [
        "ftp://example.com/x",
        "javascript:alert(1)",
        "/relative",
        "https://user:pw@example.com/",
        "not a url",
      ])
        await refused(() => dd.webhooks.create({ url, event_types: ["*"] }), "invalid_webhook_url");
      await refused(
        () => dd.webhooks.update(endpoint.id, { url: "file:///etc/passwd" }),
        "invalid_webhook_url",
      );
      for (const types of [["grant.exploded"], ["nothing.*"], ["webhook.test"], []])
        await refused(
          () => dd.webhooks.create({ url: receiver.url, event_types: types }),
          types.length === 0 ? "validation_failed" : "invalid_argument",
        );
      await refused(
        () => dd.alerts.setRules(endpoint.id.replace("whe_", "wal_"), { rules: [] }),
        "not_found",
        404,
      );
      const c = await dd.customers.create({ kind: "individual" });
      for (const rules of [
        [{ kind: "percent_remaining" as const, percent: 100 }],
        [{ kind: "exhausted" as const }, { kind: "exhausted" as const }],
        [
          { kind: "expiring_soon" as const, days: 3 },
          { kind: "expiring_soon" as const, days: 5 },
        ],
      ])
        await refused(
          () => dd.alerts.setRules(c.wallet_id, { rules }),
          rules[0]!.kind === "percent_remaining" ? "validation_failed" : "invalid_argument",
        );
      await refused(
        () => dd.alerts.setRules(c.wallet_id, { rules: [{ kind: "amount_remaining", amount: "0" }] }),
        "invalid_amount",
      );
    });

    test("every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
    });
  });

  describe(`webhooks to private networks, refused by default (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const receiver = new Receiver();
    const asked: string[] = [];

    before(async () => {
      await receiver.start();
      server = await startTestServer({
        backend: backend.name,
        // hooks.example.test resolves to loopback, as a rebinding attacker's name would.
        webhookResolver: async (hostname) => {
          asked.push(hostname);
          if (hostname === "hooks.example.test") return [{ address: "127.0.0.1", family: 4 }];
          throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
        },
      });
      dd = contractClient(server.url, server.key, log);
      await dd.testClock.advance({ seconds: 60 });
    });
    after(async () => {
      await receiver.stop();
      await server?.close();
    });

    test("a private URL answers 422 webhook_url_not_allowed, on create and on update, storing nothing", async () => {
      /** Every table but the idempotency record (the SDK's key keeps a refusal, to replay it). */
      const state = async () => {
        const { idempotency_keys: _, ...tables } = await snapshot(server.store);
        return tables;
      };
      const refused = async (call: () => Promise<unknown>) => {
        const before = await state();
        const e = await fails(call(), "webhook_url_not_allowed", 422);
        assert.match(e.message, /not a public address|names this machine/);
        assert.deepEqual(await state(), before, "a refused URL changed the database");
      };
      for (const url of [
        receiver.url,
        "http://0x7f.1/hooks",
        "http://2130706433/hooks",
        "http://[::1]:8080/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/hooks",
        "http://192.168.0.1/hooks",
        "http://[fd00::1]/hooks",
        "http://[fe80::1]/hooks",
        "http://0.0.0.0:4020/hooks",
        "http://localhost./hooks",
        "http://admin.localhost/hooks",
      ])
        await refused(() => dd.webhooks.create({ url, event_types: ["*"] }));
      assert.deepEqual((await dd.webhooks.list()).data, []);
      const endpoint = await dd.webhooks.create({ url: "https://example.com/hooks", event_types: ["*"] });
      await refused(() => dd.webhooks.update(endpoint.id, { url: "http://127.0.0.1:9/hooks" }));
      assert.equal((await dd.webhooks.get(endpoint.id)).url, "https://example.com/hooks");
      await dd.webhooks.delete(endpoint.id);
    });

    test("a name that resolves to loopback is refused at delivery: logged, retried, never connected", async () => {
      const endpoint = await dd.webhooks.create({
        url: `http://hooks.example.test:${receiver.port}/hooks`,
        event_types: ["*"],
      });
      receiver.secrets = [endpoint.secret!];
      const sent = await dd.webhooks.test(endpoint.id);
      assert.equal(sent.status, "pending");
      assert.equal(sent.last_status_code, null);
      assert.match(
        sent.last_error ?? "",
        /^refused: hooks\.example\.test resolves to 127\.0\.0\.1, which is not a public address \(loopback\)/,
      );
      assert.ok(sent.next_attempt_at !== null, "retried like any failure");
      // The retries meet the same refusal.
      await dd.testClock.advance({ seconds: 3600 });
      const d = await dd.webhooks.delivery(sent.id);
      assert.ok(d.attempts >= 5, `attempts: ${d.attempts}`);
      assert.ok(d.attempt_log.every((a) => a.error?.startsWith("refused: ")));
      assert.ok(asked.length >= d.attempts && asked.every((h) => h === "hooks.example.test"));
      assert.equal(receiver.connections, 0, "the receiver was never connected to");
      assert.deepEqual(receiver.received, []);
    });

    test("every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
    });
  });
}
