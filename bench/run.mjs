// npm run bench: Drawdown's ingestion benchmark against the real PostgreSQL.
//
// Starts the server (a child process) on a fresh database, drives it over HTTP from this
// process, and measures in one run: batch ingestion spread over 10,000 wallets, batch
// ingestion on one hot wallet, single-event requests at 50 concurrent clients, and a naive
// ledger (one transaction per event: insert the event, update the balance) on the same
// PostgreSQL; then authorize-with-hold followed by settle at 50 concurrent clients, and the
// bare endpoint of the same server (GET /v1/ping: authenticates, does nothing else) at the same
// concurrency, and authorize in an open loop at half the closed loop's rate (its p99 is the
// latency with room to spare). The last line printed is one JSON object with the figures and
// their ratios.
import pg from "pg";
import { BENCH_CARD } from "./card.mjs";
import {
  cli,
  cpuMeter,
  createDatabase,
  createKey,
  httpClient,
  percentile,
  publishRateCard,
  seedPoolWallets,
  startServer,
} from "./harness.mjs";

const SCALE = Number(process.env.BENCH_SCALE || "1");
const WALLETS = 10_000;
const BATCH = 1000;
const SPREAD_BATCHES = Math.max(1, Math.round(Number(process.env.BENCH_SPREAD_BATCHES || 120) * SCALE));
const HOT_BATCHES = Math.max(1, Math.round(Number(process.env.BENCH_HOT_BATCHES || 120) * SCALE));
const SINGLE_EVENTS = Math.max(1, Math.round(Number(process.env.BENCH_SINGLE_EVENTS || 10_000) * SCALE));
const NAIVE_EVENTS = Math.round(10_000 * SCALE);
const CONCURRENT_BATCHES = Math.max(1, Number(process.env.BENCH_CONCURRENT_BATCHES || 4));
const SINGLE_CLIENTS = 50;
const AUTH_CYCLES = Math.max(1, Math.round(Number(process.env.BENCH_AUTH_CYCLES || 10_000) * SCALE));
const AUTH_CLIENTS = 50;
// Server processes sharing the port (DRAWDOWN_WORKERS). One: on 2 cores shared with PostgreSQL
// and this driver, a second worker halves each writer's batches and costs more CPU per event.
const WORKERS = Math.max(1, Number(process.env.BENCH_WORKERS || 1));

const log = (...args) => console.error("[bench]", ...args);
const database = await createDatabase("drawdown_bench", log);
const { dbName, DATABASE_URL } = database;

let serving;
try {
  // ---- schema and seed (through the CLI's migrate, then bulk SQL that keeps the journal balanced)
  await cli(["migrate"], DATABASE_URL);
  const db = new pg.Pool({ connectionString: DATABASE_URL, max: 16 });
  const { key, customers, hot } = await seed(db);
  // Fresh statistics, as a live database has (autovacuum analyzes within a minute): without
  // them the planner takes the bulk-seeded tables for empty and scans a tenant's 10,000 grants
  // for one wallet's (see docs/benchmarks.md).
  await db.query("ANALYZE");
  log(`seeded ${WALLETS} wallets`);

  // ---- the server, in its own process
  serving = await startServer({ DATABASE_URL, DRAWDOWN_POOL_SIZE: "8", DRAWDOWN_WORKERS: String(WORKERS) });
  const meter = cpuMeter(db, dbName, serving.server.pid);
  const costs = {};
  const { get, post, close } = httpClient(serving.base, key);

  let seq = 0;
  const event = (customer) =>
    `{"id":"b${++seq}","customer_id":"${customer}","action":"chat.completion","dimensions":{"model":"gpt-4o"},"quantities":{"input_tokens":${1000 + (seq % 500)},"output_tokens":${200 + (seq % 100)}}}`;
  const batchBody = (pick) => `{"events":[${Array.from({ length: BATCH }, () => event(pick())).join(",")}]}`;

  async function batches(label, count, pick) {
    const bodies = Array.from({ length: count }, () => batchBody(pick));
    await post("/v1/events/batch", batchBody(pick)); // warm up
    let next = 0;
    let accepted = 0;
    const started = process.hrtime.bigint();
    const done = await meter.phase();
    await Promise.all(
      Array.from({ length: CONCURRENT_BATCHES }, async () => {
        while (next < bodies.length) {
          const body = bodies[next++];
          const res = JSON.parse(await post("/v1/events/batch", body));
          accepted += res.accepted;
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = await done(accepted / 1000);
    costs[label] = cpu;
    log(
      `${label}: ${accepted} events in ${seconds.toFixed(2)} s; CPU per 1,000 events: server ${cpu.server_ms} ms, PostgreSQL ${cpu.db_ms} ms; ${cpu.commits} commits per 1,000`,
    );
    if (accepted !== count * BATCH) throw new Error(`${label}: ${accepted} of ${count * BATCH} accepted`);
    return accepted / seconds;
  }

  const spread = await batches(
    "spread over 10,000 wallets",
    SPREAD_BATCHES,
    () => customers[Math.floor(Math.random() * customers.length)],
  );
  const hotRate = await batches("one hot wallet", HOT_BATCHES, () => hot);

  // ---- single events, 50 concurrent clients
  const singles = Array.from({ length: SINGLE_EVENTS }, () =>
    event(customers[Math.floor(Math.random() * customers.length)]),
  );
  let nextSingle = 0;
  const singleStart = process.hrtime.bigint();
  const singleDone = await meter.phase();
  await Promise.all(
    Array.from({ length: SINGLE_CLIENTS }, async () => {
      while (nextSingle < singles.length) await post("/v1/events", singles[nextSingle++]);
    }),
  );
  const singleSeconds = Number(process.hrtime.bigint() - singleStart) / 1e9;
  const singleRate = SINGLE_EVENTS / singleSeconds;
  const singleCpu = await singleDone(SINGLE_EVENTS / 1000);
  log(
    `single events, ${SINGLE_CLIENTS} clients: ${SINGLE_EVENTS} in ${singleSeconds.toFixed(2)} s; CPU per 1,000 events: server ${singleCpu.server_ms} ms, PostgreSQL ${singleCpu.db_ms} ms`,
  );

  // ---- the naive ledger: one transaction per event, same PostgreSQL, same concurrency as the single-event clients
  await db.query(`CREATE TABLE naive_balances (id int PRIMARY KEY, balance numeric(38,0) NOT NULL CHECK (balance >= 0));
    CREATE TABLE naive_events (id text PRIMARY KEY, wallet int NOT NULL, credits numeric(38,0) NOT NULL, at timestamptz NOT NULL DEFAULT now());
    INSERT INTO naive_balances SELECT g, 1000000000000000 FROM generate_series(1, ${WALLETS}) g;`);
  let nextNaive = 0;
  const naiveStart = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      const c = await db.connect();
      try {
        while (nextNaive < NAIVE_EVENTS) {
          const i = nextNaive++;
          const wallet = 1 + Math.floor(Math.random() * WALLETS);
          await c.query("BEGIN");
          await c.query("INSERT INTO naive_events (id, wallet, credits) VALUES ($1, $2, $3)", [
            `n${i}`,
            wallet,
            "4500000",
          ]);
          await c.query("UPDATE naive_balances SET balance = balance - $2 WHERE id = $1", [
            wallet,
            "4500000",
          ]);
          await c.query("COMMIT");
        }
      } finally {
        c.release();
      }
    }),
  );
  const naiveSeconds = Number(process.hrtime.bigint() - naiveStart) / 1e9;
  const naiveRate = NAIVE_EVENTS / naiveSeconds;
  log(`naive ledger: ${NAIVE_EVENTS} in ${naiveSeconds.toFixed(2)} s`);

  // ---- authorize with a hold, then settle it, at 50 concurrent clients (random wallets)
  const authBody = (customer) =>
    `{"customer_id":"${customer}","action":"chat.completion","estimate":{"quantities":{"input_tokens":1200,"output_tokens":300},"dimensions":{"model":"gpt-4o"}},"hold":true,"hold_timeout_seconds":60}`;
  const settleBody = `{"quantities":{"input_tokens":1000,"output_tokens":250},"dimensions":{"model":"gpt-4o"}}`;
  /** One cycle; the authorize's latency in ms, from `from` (a `performance.now()`; default: when it is sent). */
  const timedCycle = async (from = performance.now()) => {
    const customer = customers[Math.floor(Math.random() * customers.length)];
    const a = JSON.parse(await post("/v1/authorize", authBody(customer)));
    const ms = performance.now() - from;
    if (a.decision !== "allow" || !a.hold) throw new Error(`authorize: ${JSON.stringify(a)}`);
    await post(`/v1/holds/${a.hold.id}/settle`, settleBody);
    return ms;
  };
  const cycle = () => timedCycle();
  for (let i = 0; i < 200; i++) await cycle(); // warm up
  const latencies = [];
  let nextCycle = 0;
  const authStart = process.hrtime.bigint();
  const authDone = await meter.phase();
  await Promise.all(
    Array.from({ length: AUTH_CLIENTS }, async () => {
      while (nextCycle++ < AUTH_CYCLES) latencies.push(await cycle());
    }),
  );
  const authSeconds = Number(process.hrtime.bigint() - authStart) / 1e9;
  const authRate = AUTH_CYCLES / authSeconds;
  const authCpu = await authDone(AUTH_CYCLES);
  latencies.sort((a, b) => a - b);
  const pct = (p) => percentile(latencies, p);
  log(
    `authorize+hold then settle, ${AUTH_CLIENTS} clients: ${AUTH_CYCLES} in ${authSeconds.toFixed(2)} s; authorize p50 ${pct(50).toFixed(2)} ms, p99 ${pct(99).toFixed(2)} ms; CPU per cycle: server ${authCpu.server_ms} ms, PostgreSQL ${authCpu.db_ms} ms; ${authCpu.commits} commits per cycle`,
  );

  // ---- open loop: authorize cycles started at a fixed rate, half the closed loop's, so the
  // latency is that of a server with room to spare rather than of a queue at saturation. Each
  // authorize is timed from when it was due, not from when it was sent, so a generator that
  // falls behind shows as latency (no coordinated omission).
  const openRate = Math.max(1, Math.round(authRate / 2));
  const openCycles = Math.max(1, Math.min(Math.round(AUTH_CYCLES / 2), openRate * 10));
  const openLatencies = [];
  const openStart = performance.now();
  await new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    const launch = () => {
      const now = performance.now();
      while (started < openCycles && openStart + (started * 1000) / openRate <= now) {
        const due = openStart + (started * 1000) / openRate;
        started++;
        timedCycle(due)
          .then((ms) => {
            openLatencies.push(ms);
            if (++finished === openCycles) resolve();
          })
          .catch(reject);
      }
      if (started < openCycles)
        setTimeout(launch, Math.max(0, openStart + (started * 1000) / openRate - now));
    };
    launch();
  });
  openLatencies.sort((a, b) => a - b);
  const openPct = (p) => percentile(openLatencies, p);
  log(
    `authorize+hold then settle, open loop at ${openRate} cycles/s: ${openCycles} cycles; authorize p50 ${openPct(50).toFixed(2)} ms, p99 ${openPct(99).toFixed(2)} ms`,
  );

  // ---- the bare endpoint of the same server: authenticated, no work, same concurrency
  for (let i = 0; i < 200; i++) await get("/v1/ping");
  let nextPing = 0;
  const pingStart = process.hrtime.bigint();
  const pingDone = await meter.phase();
  await Promise.all(
    Array.from({ length: AUTH_CLIENTS }, async () => {
      while (nextPing++ < AUTH_CYCLES) await get("/v1/ping");
    }),
  );
  const pingSeconds = Number(process.hrtime.bigint() - pingStart) / 1e9;
  const bareRate = AUTH_CYCLES / pingSeconds;
  const pingCpu = await pingDone(AUTH_CYCLES);
  log(
    `bare GET /v1/ping, ${AUTH_CLIENTS} clients: ${AUTH_CYCLES} in ${pingSeconds.toFixed(2)} s; CPU per request: server ${pingCpu.server_ms} ms`,
  );
  await meter.stop();

  // ---- the ledger must still reconcile
  const r = await cli(["reconcile"], DATABASE_URL);
  log(r.trim());
  await db.end();
  close();

  const round = (x) => Math.round(x);
  console.log(
    JSON.stringify({
      ingest_events_per_s: round(spread),
      hot_events_per_s: round(hotRate),
      single_events_per_s: round(singleRate),
      naive_events_per_s: round(naiveRate),
      ratio_vs_naive: Number((spread / naiveRate).toFixed(2)),
      hot_vs_spread: Number((hotRate / spread).toFixed(2)),
      authorize_p99_ms: Number(pct(99).toFixed(2)),
      authorize_per_s: round(authRate),
      bare_per_s: round(bareRate),
      authorize_vs_bare: Number((authRate / bareRate).toFixed(2)),
      open_loop_per_s: openRate,
      open_loop_p99_ms: Number(openPct(99).toFixed(2)),
      batch_size: BATCH,
      workers: WORKERS,
      wallets: WALLETS,
    }),
  );
} finally {
  await serving?.stop();
  await database.drop();
}

async function seed(db) {
  const now = new Date().toISOString();
  const tenantId = "ten_bench";
  await db.query("INSERT INTO tenants (id, name, environment, created_at) VALUES ($1, 'Bench', 'test', $2)", [
    tenantId,
    now,
  ]);
  const key = await createKey(DATABASE_URL, tenantId);
  const amount = "1000000000000000"; // a million credits per wallet
  await seedPoolWallets(db, { tenantId, count: WALLETS, amount, at: now });
  await publishRateCard(DATABASE_URL, tenantId, BENCH_CARD);
  return {
    tenantId,
    key,
    customers: Array.from({ length: WALLETS }, (_, i) => `cus_${i + 1}`),
    hot: "cus_1",
  };
}
