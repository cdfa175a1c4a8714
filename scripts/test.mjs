// Runs every compiled test file (packages/*/dist/test/**/*.test.js) with node's test runner.
// Extra arguments are passed to `node --test` (e.g. `--test-name-pattern=reconcile`).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const roots = readdirSync("packages").map((p) => join("packages", p, "dist", "test"));
const files = [];
const walk = (dir) => {
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith(".test.js")) files.push(path);
  }
};
for (const root of roots) walk(root);
files.sort();
const result = spawnSync(process.execPath, ["--test", ...process.argv.slice(2), ...files], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
