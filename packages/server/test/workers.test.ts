import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { credits } from "@drawdown/core";
import { createIdGenerator, Metering, migrate, openPostgres, Store } from "@drawdown/storage";
import { POSTGRES_URL } from "@drawdown/storage/testing";

const CLI = fileURLToPath(new URL("../../../cli/dist/src/main.js", import.meta.url));

/** Starts `drawdown serve` with `workers` processes; resolves with its URL once all listen. */
async function serve(databaseUrl: string, workers: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [CLI, "serve"], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: "0",
      HOST: "127.0.0.1",
      DRAWDOWN_WORKERS: String(workers),
      DRAWDOWN_POOL_SIZE: "4",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code} before listening`)));
  });
  return { url, child };
}

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
    const base = POSTGRES_URL!;
    const name = `dd_workers_${randomBytes(5).toString("hex")}`;
    const admin = await openPostgres(base, { max: 1 });
    await admin.exec(`CREATE DATABASE ${name}`);
    const url = new URL(base);
    url.pathname = `/${name}`;
    const databaseUrl = url.toString();
    const db = await openPostgres(databaseUrl, { max: 2 });
    const servers: ChildProcess[] = [];
    try {
      await migrate(db);
      const store = new Store(db, { newId: createIdGenerator() });
      const metering = new Metering(() => store.now(), store.newId);
      const tenant = await store.createTenant("Workers", "test");
      const key = await store.createApiKey(tenant.id, { kind: "secret", name: "workers" });
      assert.ok(key.ok);
      const customers: string[] = [];
      await db.transaction(async (tx) => {
        for (let i = 0; i < 10; i++) {
          const c = await store.createCustomer(tx, tenant.id, { kind: "organization" });
          assert.ok(c.ok);
          await store.createGrant(tx, tenant.id, {
            walletId: c.value.walletId,
            amount: credits(1_000n),
            source: "purchase",
          });
          customers.push(c.value.id);
        }
        const card = await metering.createRateCard(tx, tenant.id, "default");
        assert.ok(card.ok);
        await metering.publishRateCardVersion(tx, tenant.id, card.value.id, null, {
          lines: [{ id: "tokens", action: "chat.completion", quantity: "tokens", rate: "1" }],
        });
      });

      const first = await serve(databaseUrl, 2);
      servers.push(first.child);
      const primary = first.child.pid!;
      await until("two workers run", () => childrenOf(primary).length === 2);

      // Many concurrent batches, all on the same ten wallets, through both workers: each event
      // is charged once, no wallet goes below zero, and the ledger reconciles.
      let n = 0;
      const post = async (events: number) => {
        const res = await fetch(`${first.url}/v1/events/batch`, {
          method: "POST",
          headers: { authorization: `Bearer ${key.value.secret}`, "content-type": "application/json" },
          body: JSON.stringify({
            events: Array.from({ length: events }, () => ({
              customer_id: customers[n % customers.length],
              id: `e${n++}`,
              action: "chat.completion",
              quantities: { tokens: 3 },
            })),
          }),
        });
        assert.equal(res.status, 200);
        return ((await res.json()) as { results: { status: string; charge?: { outcome: string } }[] })
          .results;
      };
      const results = (await Promise.all(Array.from({ length: 40 }, () => post(25)))).flat();
      assert.equal(results.length, 1000);
      assert.ok(results.every((r) => r.status === "accepted"));
      // 1,000 credits per wallet, 3 a event, 100 events each: 300 charged, none unpaid.
      assert.ok(results.every((r) => r.charge!.outcome === "charged"));
      const balances = await db.query<{ balance: string }>(
        "SELECT balance::text AS balance FROM wallets WHERE tenant_id = $1",
        [tenant.id],
      );
      for (const b of balances.rows) assert.equal(b.balance, credits(700n).toString());
      assert.deepEqual((await store.reconcile(tenant.id)).differences, []);

      // A worker killed outright is replaced, and the server keeps answering.
      const [victim] = childrenOf(primary);
      process.kill(victim!, "SIGKILL");
      await until("the dead worker is replaced", () => {
        const now = childrenOf(primary);
        return now.length === 2 && !now.includes(victim!);
      });
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
      await db.close();
      await admin.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.close();
    }
  });
});
