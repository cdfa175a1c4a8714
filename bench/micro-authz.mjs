// CPU per authorize-with-hold + settle cycle of the hold writer alone (no HTTP), at fixed batch
// sizes, on PostgreSQL: `node bench/micro-authz.mjs` (after `npm run build`). The full bench's
// batch sizes follow the machine's load (0.15 to 0.9 commits per cycle), and so does its CPU
// per cycle; here each round submits K authorizations at once, then their K settlements, so
// the batches are the same from run to run (the writer takes the first request alone, then
// the K-1 that queued behind it). Prints, per K, the CPU of this process and of the database's
// backends per cycle, and the statements per batch. With `MICRO_STATEMENTS=1` and
// `pg_stat_statements` loaded (`track_planning` on for the planning column), it also prints each
// statement's planning and execution time per call, largest total first.

import { readFileSync } from "node:fs";
import {
  createIdGenerator,
  Holds,
  HoldWriter,
  Metering,
  migrate,
  openPostgres,
  Store,
} from "@drawdown/storage";
import { BENCH_CARD } from "./card.mjs";
import { createDatabase, seedPoolWallets } from "./harness.mjs";

const CUSTOMERS = 2000;
const SIZES = (process.env.MICRO_SIZES || "2,16").split(",").map(Number);
const CYCLES = Number(process.env.MICRO_CYCLES || 3000);
const STATEMENTS = process.env.MICRO_STATEMENTS === "1";

const { dbName, admin, DATABASE_URL, drop } = await createDatabase("drawdown_micro", console.log);
const db = await openPostgres(DATABASE_URL, { max: 8 });
/** CPU ms of a process: user and system. */
const ticks = (pid) => {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return [Number(f[11]) * 10, Number(f[12]) * 10];
  } catch {
    return [0, 0];
  }
};
try {
  await migrate(db);
  const now = new Date().toISOString();
  const tenantId = "ten_micro";
  const amount = "1000000000000000";
  await db.query("INSERT INTO tenants (id, name, environment, created_at) VALUES ($1, 'M', 'test', $2)", [
    tenantId,
    now,
  ]);
  await seedPoolWallets(db, { tenantId, count: CUSTOMERS, amount, at: now });
  const store = new Store(db, { newId: createIdGenerator() });
  const metering = new Metering((t) => store.now(t), store.newId);
  await db.transaction(async (tx) => {
    const card = await metering.createRateCard(tx, tenantId, "default");
    await metering.publishRateCardVersion(tx, tenantId, card.value.id, null, BENCH_CARD);
  });
  await db.query("ANALYZE");
  const holds = new Holds(store, metering);
  const writer = new HoldWriter(store, holds, metering);
  const backends = async () =>
    (await admin.query("SELECT pid FROM pg_stat_activity WHERE datname = $1", [dbName])).rows.map(
      (r) => r.pid,
    );
  const commits = async () =>
    Number(
      (await admin.query("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", [dbName])).rows[0]
        .xact_commit,
    );
  let seq = 0;
  const round = async (k) => {
    const picked = Array.from({ length: k }, () => `cus_${1 + Math.floor(Math.random() * CUSTOMERS)}`);
    const answers = await Promise.all(
      picked.map((customerId) =>
        writer.authorize(
          tenantId,
          {
            customerId,
            subjectId: null,
            action: "chat.completion",
            estimate: {
              quantities: { input_tokens: 1200n * 10n ** 9n, output_tokens: 300n * 10n ** 9n },
              dimensions: { model: "gpt-4o" },
            },
            holdTimeoutSeconds: 60,
          },
          null,
        ),
      ),
    );
    await Promise.all(
      answers.map((a) => {
        const hold = a.result.value.hold;
        if (!hold) throw new Error(`no hold: ${JSON.stringify(a.result)}`);
        return writer.settle(
          tenantId,
          hold,
          {
            events: [
              {
                id: `${hold.id}.settle`,
                action: "chat.completion",
                dimensions: { model: "gpt-4o" },
                quantities: { input_tokens: 1000n * 10n ** 9n, output_tokens: 250n * 10n ** 9n },
                time: null,
                status: "succeeded",
                runId: null,
                reportedCost: null,
                fingerprint: `f${++seq}`,
              },
            ],
          },
          null,
        );
      }),
    );
  };
  for (const k of SIZES) {
    for (let i = 0; i < 200 / k; i++) await round(k); // warm up
    // Statistics of the tables the warm-up filled (holds, events), as autovacuum keeps them in a
    // live database: planned as empty, a hold lookup scans the table.
    await db.query("ANALYZE");
    const pids = await backends();
    const before = pids.map(ticks);
    const c0 = await commits();
    if (STATEMENTS) await admin.query("SELECT pg_stat_statements_reset()");
    const cpu0 = process.cpuUsage();
    const wall0 = performance.now();
    const rounds = Math.ceil(CYCLES / k);
    for (let i = 0; i < rounds; i++) await round(k);
    const wall = performance.now() - wall0;
    const cpu = process.cpuUsage(cpu0);
    const after = pids.map(ticks);
    const db_user = after.reduce((a, t, i) => a + t[0] - before[i][0], 0);
    const db_sys = after.reduce((a, t, i) => a + t[1] - before[i][1], 0);
    await new Promise((r) => setTimeout(r, 1100));
    const cycles = rounds * k;
    console.log(
      `K=${k}: ${cycles} cycles; ${((wall * 1000) / rounds).toFixed(0)} µs per round (authorize, then settle); CPU per cycle: node ${((cpu.user + cpu.system) / 1000 / cycles).toFixed(3)} ms (system ${(cpu.system / 1000 / cycles).toFixed(3)}), PostgreSQL ${((db_user + db_sys) / cycles).toFixed(3)} ms (system ${(db_sys / cycles).toFixed(3)}); ${(((await commits()) - c0) / cycles).toFixed(3)} commits per cycle`,
    );
    if (STATEMENTS) await printStatements(cycles);
  }
} finally {
  await db.close();
  await drop();
}

/** Each statement's calls per cycle and its planning and execution µs per call, largest total first. */
async function printStatements(cycles) {
  const { rows } = await admin.query(
    `SELECT s.calls, s.total_plan_time, s.total_exec_time, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) AS q
     FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
     WHERE d.datname = $1 ORDER BY s.total_plan_time + s.total_exec_time DESC LIMIT 25`,
    [dbName],
  );
  let plan = 0;
  let exec = 0;
  for (const r of rows) {
    plan += r.total_plan_time;
    exec += r.total_exec_time;
    const per = (ms) => ((ms * 1000) / Number(r.calls)).toFixed(0).padStart(6);
    console.log(
      `${(Number(r.calls) / cycles).toFixed(2).padStart(6)}/cycle plan ${per(r.total_plan_time)} µs exec ${per(r.total_exec_time)} µs  ${r.q}`,
    );
  }
  const us = (ms) => ((ms * 1000) / cycles).toFixed(0);
  console.log(`per cycle (top 25): planning ${us(plan)} µs, execution ${us(exec)} µs`);
}
