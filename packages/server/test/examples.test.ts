import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const RUNNER = fileURLToPath(new URL("../../../../examples/run.mjs", import.meta.url));

test("npm run examples: every runnable example passes against a fresh embedded database", {
  timeout: 180_000,
}, () => {
  const r = spawnSync(process.execPath, [RUNNER], { encoding: "utf8", timeout: 170_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^\d+ passed, 0 failed$/m);
});
