// npm run examples: runs every example in this folder against a fresh embedded database.
// Each example gets its own test tenant (so its own test clock) and a secret key, sets up a
// real pricing model through the SDK, and asserts the balances at each step.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Drawdown } from "@drawdown/sdk";
import { loadConfig, startServer } from "@drawdown/server";

const dir = mkdtempSync(join(tmpdir(), "drawdown-examples-"));
// The webhook examples run their receivers on this machine: private networks are allowed.
const config = loadConfig({
  DRAWDOWN_DATA_DIR: join(dir, "data"),
  PORT: "0",
  DRAWDOWN_SCHEDULER_MS: "0",
  DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS: "allow",
});
if (!config.ok) throw new Error(config.error.message);
const server = await startServer(config.value);
const only = process.argv[2];
const files = readdirSync(new URL(".", import.meta.url))
  .filter((f) => f.endsWith(".example.mjs") && (!only || f.includes(only)))
  .sort();
let passed = 0;
let failed = 0;
try {
  for (const file of files) {
    const tenant = await server.store.createTenant(file, "test");
    const key = await server.store.createApiKey(tenant.id, { kind: "secret", name: file });
    if (!key.ok) throw new Error(key.error.message);
    const dd = new Drawdown({ apiKey: key.value.secret, baseUrl: server.url });
    const { run, title } = await import(`./${file}`);
    const started = Date.now();
    try {
      await run({ dd, assert, log: (...a) => console.log("   ", ...a), baseUrl: server.url });
      passed++;
      console.log(`ok ${title ?? file} (${Date.now() - started} ms)`);
    } catch (error) {
      failed++;
      console.log(`not ok ${title ?? file}\n${error?.stack ?? error}`);
    }
  }
} finally {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
