import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { describe, test } from "node:test";
import { POSTGRES_URL } from "@drawdown/storage/testing";
import { scratchDatabase, seedTenant, serveCli } from "./support/cli.js";

describe("crash: SIGKILL during sustained ingestion (PostgreSQL)", {
  skip: POSTGRES_URL ? false : "set DATABASE_URL to run on PostgreSQL",
}, () => {
  test("every acknowledged event is in the ledger exactly once and reconcile is clean", {
    timeout: 120_000,
  }, async () => {
    const scratch = await scratchDatabase(POSTGRES_URL!, "dd_crash");
    const { db, store, databaseUrl } = scratch;
    let server: ChildProcess | null = null;
    try {
      const { tenantId, secret, customers } = await seedTenant(scratch, {
        count: 20,
        amount: 1_000_000n,
        rate: "0.001",
      });

      const first = await serveCli(databaseUrl);
      server = first.child;
      const acknowledged = new Map<string, string>(); // event id -> credits charged, as first answered
      const sent: string[] = [];
      const body = (ids: string[]) =>
        JSON.stringify({
          events: ids.map((id, i) => ({
            id,
            customer_id: customers[(Number(id.slice(1)) + i) % customers.length],
            action: "chat.completion",
            quantities: { tokens: 100 + (Number(id.slice(1)) % 50) },
          })),
        });
      let next = 0;
      let killed = false;
      const post = async (target: string, ids: string[]) => {
        const res = await fetch(`${target}/v1/events/batch`, {
          method: "POST",
          headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
          body: body(ids),
        });
        assert.equal(res.status, 200);
        return (await res.json()) as {
          results: { id: string; status: string; charge?: { credits: string } }[];
        };
      };
      // Four clients send batches until the server is killed under them.
      const clients = Array.from({ length: 4 }, async () => {
        while (!killed) {
          const ids = Array.from({ length: 100 }, () => `e${next++}`);
          sent.push(...ids);
          try {
            const r = await post(first.url, ids);
            for (const e of r.results) {
              assert.notEqual(e.status, "rejected");
              acknowledged.set(e.id, e.charge!.credits);
            }
          } catch {
            return; // the connection died with the server: this batch was not acknowledged
          }
        }
      });
      // Kill once a good amount of work is acknowledged, with batches still in flight.
      while (acknowledged.size < 3000) await new Promise((r) => setTimeout(r, 20));
      killed = true;
      server.kill("SIGKILL");
      await once(server, "exit");
      await Promise.all(clients);
      assert.ok(acknowledged.size >= 3000);

      // Every acknowledged event is stored once, with the charge it was acknowledged with.
      const { rows } = await db.query<{ event_id: string; credits: string }>(
        "SELECT event_id, credits::text AS credits FROM usage_events WHERE tenant_id = $1",
        [tenantId],
      );
      const stored = new Map(rows.map((r) => [r.event_id, r.credits]));
      assert.equal(stored.size, rows.length, "no event is stored twice");
      for (const id of acknowledged.keys())
        assert.ok(stored.has(id), `acknowledged event ${id} is in the ledger`);

      // After a restart, resending everything changes nothing already recorded.
      const second = await serveCli(databaseUrl);
      server = second.child;
      for (let i = 0; i < sent.length; i += 1000) {
        const r = await post(second.url, sent.slice(i, i + 1000));
        for (const e of r.results) {
          if (acknowledged.has(e.id)) {
            assert.equal(e.status, "duplicate", `${e.id} was acknowledged before the crash`);
            assert.equal(e.charge!.credits, acknowledged.get(e.id));
          } else assert.ok(e.status === "accepted" || e.status === "duplicate");
        }
      }
      const total = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM usage_events WHERE tenant_id = $1",
        [tenantId],
      );
      assert.equal(Number(total.rows[0]!.n), new Set(sent).size, "each sent event is recorded exactly once");
      const report = await store.reconcile(tenantId);
      assert.deepEqual(report.differences, []);
      // The journal's consumption equals the sum of what the events charged.
      const sums = await db.query<{ journal: string; events: string }>(
        `SELECT (SELECT coalesce(sum(amount), 0) FROM journal_entries WHERE tenant_id = $1 AND account = 'consumption')::text AS journal,
                (SELECT coalesce(sum(charged), 0) FROM usage_events WHERE tenant_id = $1)::text AS events`,
        [tenantId],
      );
      assert.equal(sums.rows[0]!.journal, sums.rows[0]!.events);
    } finally {
      if (server && server.exitCode === null) {
        server.kill("SIGKILL");
        await once(server, "exit");
      }
      await scratch.drop();
    }
  });
});
