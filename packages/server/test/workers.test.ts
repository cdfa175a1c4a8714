import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { describe, test } from "node:test";
import { credits } from "@drawdown/core";
import { POSTGRES_URL } from "@drawdown/storage/testing";
import { scratchDatabase, seedTenant, serveCli } from "./support/cli.js";

/** `drawdown serve` with `workers` processes. */
const serve = (databaseUrl: string, workers: number) =>
  serveCli(databaseUrl, { DRAWDOWN_WORKERS: String(workers), DRAWDOWN_POOL_SIZE: "4" });

/** The live child processes of `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // Fields after the command's closing parenthesis: state, then the parent's pid.
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(ppid) === pid && state !== "Z") found.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(what: string, check: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("serve with several worker processes (PostgreSQL)", {
  skip: POSTGRES_URL ? false : "set DATABASE_URL to run on PostgreSQL",
}, () => {
  test("workers share the port and the ledger; a dead worker is replaced; they stop with the primary", {
    timeout: 120_000,
  }, async () => {
    const scratch = await scratchDatabase(POSTGRES_URL!, "dd_workers");
    const { db, store, databaseUrl } = scratch;
    const servers: ChildProcess[] = [];
    try {
      const { tenantId, secret, customers } = await seedTenant(scratch, {
        count: 10,
        amount: 1_000n,
        rate: "1",
      });

      const first = await serve(databaseUrl, 2);
      servers.push(first.child);
      const primary = first.child.pid!;
      let errors = "";
      first.child.stderr!.on("data", (d) => {
        errors += d;
      });
      await until("two workers run", () => childrenOf(primary).length === 2);

      // Many concurrent batches, all on the same ten wallets, through both workers: each event
      // is charged once, no wallet goes below zero, and the ledger reconciles.
      let n = 0;
      // One connection per request (no keep-alive): a killed worker leaves no dead pooled
      // connection behind for the next request to fail on.
      const post = async (events: number) => {
        const body = JSON.stringify({
          events: Array.from({ length: events }, () => ({
            customer_id: customers[n % customers.length],
            id: `e${n++}`,
            action: "chat.completion",
            quantities: { tokens: 3 },
          })),
        });
        const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
          const req = request(
            `${first.url}/v1/events/batch`,
            {
              method: "POST",
              agent: false,
              headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
            },
            (res) => {
              let text = "";
              res.setEncoding("utf8");
              res.on("data", (d: string) => {
                text += d;
              });
              res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
            },
          );
          req.on("error", reject);
          req.end(body);
        });
        assert.equal(status, 200, text);
        return (JSON.parse(text) as { results: { status: string; charge?: { outcome: string } }[] }).results;
      };
      const results = (await Promise.all(Array.from({ length: 40 }, () => post(25)))).flat();
      assert.equal(results.length, 1000);
      assert.ok(results.every((r) => r.status === "accepted"));
      // 1,000 credits per wallet, 3 a event, 100 events each: 300 charged, none unpaid.
      assert.ok(results.every((r) => r.charge!.outcome === "charged"));
      const balances = await db.query<{ balance: string }>(
        "SELECT balance::text AS balance FROM wallets WHERE tenant_id = $1",
        [tenantId],
      );
      for (const b of balances.rows) assert.equal(b.balance, credits(700n).toString());
      assert.deepEqual((await store.reconcile(tenantId)).differences, []);

      // A worker killed outright is replaced, and the server keeps answering.
      const [victim] = childrenOf(primary);
      process.kill(victim!, "SIGKILL");
      const listening = () => errors.match(/ is listening/g)?.length ?? 0;
      await until("the dead worker is replaced", () => {
        const now = childrenOf(primary);
        return now.length === 2 && !now.includes(victim!) && listening() === 1;
      });
      assert.ok((await post(10)).every((r) => r.status === "accepted"));

      // A replacement that cannot start (here: the schema is newer than this build) is tried
      // again until one listens.
      await db.query("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')");
      const [doomed, survivor] = childrenOf(primary);
      process.kill(doomed!, "SIGKILL");
      await until("a replacement failed to start and is tried again", () => /trying again in/.test(errors));
      assert.ok(alive(survivor!), "the other worker serves on");
      await db.query("DELETE FROM schema_migrations WHERE version = 9999");
      await until("the retried worker listens", () => listening() === 2, 20_000);
      assert.equal(childrenOf(primary).length, 2);
      assert.ok((await post(10)).every((r) => r.status === "accepted"));

      // SIGTERM stops the primary and every worker.
      const workers = childrenOf(primary);
      first.child.kill("SIGTERM");
      const [code] = await once(first.child, "exit");
      assert.equal(code, 0);
      await until("the workers have stopped", () => workers.every((w) => !alive(w)));

      // A primary killed outright leaves no worker behind.
      const second = await serve(databaseUrl, 2);
      servers.push(second.child);
      await until("two workers run", () => childrenOf(second.child.pid!).length === 2);
      const orphans = childrenOf(second.child.pid!);
      second.child.kill("SIGKILL");
      await once(second.child, "exit");
      await until("the orphaned workers have stopped", () => orphans.every((w) => !alive(w)));
    } finally {
      for (const s of servers)
        if (s.exitCode === null && s.signalCode === null) {
          s.kill("SIGKILL");
          await once(s, "exit");
        }
      await scratch.drop();
    }
  });
});
