import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig } from "../src/config.js";

/** The configuration is parsed once: defaults, bounds, and a clear refusal for anything else. */

test("an empty environment gives the documented defaults", () => {
  const c = loadConfig({});
  assert.ok(c.ok);
  assert.deepEqual(c.value, {
    databaseUrl: null,
    dataDir: ".drawdown/data",
    host: "127.0.0.1",
    port: 4020,
    bodyLimit: 1024 * 1024,
    poolSize: 10,
    schedulerMs: 5_000,
    writerLanes: 2,
    webhookTimeoutMs: 10_000,
    webhookPollMs: 1_000,
    workers: 1,
    logRequests: false,
    webhookPrivateNetworks: "deny",
  });
});

test("webhooks to private networks: deny by default, allow by default for the demo; the variable wins", () => {
  const pick = (env: Record<string, string>, demo?: boolean) => {
    const c = loadConfig(env, {}, demo === undefined ? {} : { demo });
    assert.ok(c.ok, JSON.stringify(env));
    return c.value.webhookPrivateNetworks;
  };
  assert.equal(pick({}), "deny");
  assert.equal(pick({ DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS: "" }), "deny");
  assert.equal(pick({}, false), "deny");
  // PostgreSQL or not makes no difference: only the variable and the demo do.
  assert.equal(pick({ DATABASE_URL: "postgres://postgres@127.0.0.1/test" }), "deny");
  assert.equal(pick({ DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS: "allow" }), "allow");
  assert.equal(pick({}, true), "allow");
  assert.equal(pick({ DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS: "deny" }, true), "deny");
  for (const text of ["ALLOW", "yes", "1", "allow "]) {
    const r = loadConfig({ DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS: text });
    assert.ok(!r.ok, text);
    assert.equal(r.error.code, "invalid_argument");
    assert.match(r.error.message, /^DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS must be allow or deny/);
  }
});

test("integers within their bounds are taken; outside, or not integers, are refused by name", () => {
  const c = loadConfig({
    PORT: "0",
    DRAWDOWN_SCHEDULER_MS: "0",
    DRAWDOWN_WRITER_LANES: "16",
    DRAWDOWN_LOG_REQUESTS: "1",
  });
  assert.ok(c.ok);
  assert.equal(c.value.port, 0);
  assert.equal(c.value.schedulerMs, 0);
  assert.equal(c.value.writerLanes, 16);
  assert.equal(c.value.logRequests, true);
  for (const [name, text] of [
    ["PORT", "65536"],
    ["DRAWDOWN_BODY_LIMIT", "1023"],
    ["DRAWDOWN_POOL_SIZE", "0"],
    ["DRAWDOWN_WRITER_LANES", "1.5"],
    ["DRAWDOWN_WEBHOOK_TIMEOUT_MS", "-1"],
    ["DRAWDOWN_WEBHOOK_POLL_MS", "1e3"],
    ["DRAWDOWN_WORKERS", "0"],
    ["DRAWDOWN_WORKERS", "65"],
  ] as const) {
    const r = loadConfig({ [name]: text });
    assert.ok(!r.ok, `${name}=${text}`);
    assert.equal(r.error.code, "invalid_argument");
    assert.match(r.error.message, new RegExp(`^${name} must be an integer`));
  }
  const url = loadConfig({ DATABASE_URL: "mysql://x" });
  assert.ok(!url.ok);
});

test("several workers need PostgreSQL: the embedded database lives inside one process", () => {
  const embedded = loadConfig({ DRAWDOWN_WORKERS: "2" });
  assert.ok(!embedded.ok);
  assert.equal(embedded.error.code, "invalid_argument");
  assert.match(embedded.error.message, /^DRAWDOWN_WORKERS above 1 needs DATABASE_URL/);
  const pg = loadConfig({ DRAWDOWN_WORKERS: "2", DATABASE_URL: "postgres://postgres@127.0.0.1/test" });
  assert.ok(pg.ok);
  assert.equal(pg.value.workers, 2);
});

test("overrides win over the environment", () => {
  const c = loadConfig({ PORT: "1234" }, { port: 99 });
  assert.ok(c.ok);
  assert.equal(c.value.port, 99);
});
