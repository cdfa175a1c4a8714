// npm run bench:balance: do balance reads cost the same with 1,000 or 10 million journal
// entries behind the wallet? (DESIGN.md, "Performance targets".)
//
// Seeds one tenant with two customers whose pool wallets have the same shape (the same four
// grants, one pending hold) and different histories: SMALL has 1,000 journal entries behind
// it, BIG 10,000,000 (BENCH_BALANCE_ENTRIES). The ledger is valid: balanced transactions,
// grants' remaining equal to their journal entries, the wallets' materialized balance and held
// credits equal to theirs; `drawdown reconcile` proves it before any read. Then the server (a
// child process) is driven over keep-alive HTTP by 50 concurrent clients, in alternating
// phases SMALL, BIG, SMALL, BIG of the same size (BENCH_BALANCE_READS requests each), for each
// read endpoint: `GET /v1/wallets/:id/balance` (total, available, upcoming, held, per grant and
// scope; what the SDK's `wallets.balance` calls) and `GET /v1/wallets/:id`. Each phase reports
// requests/s, p50/p99 latency, the CPU of the server and of PostgreSQL per request, and, from
// pg_stat_statements, the statements and shared buffers per request. The journal tables'
// scan counters over all the read phases show whether any read touched them, and every
// statement the reads ran is EXPLAINed (ANALYZE, BUFFERS) for the BIG wallet. The last line
// printed is one JSON object.
import os from "node:os";
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

const SMALL_ENTRIES = 1000;
const BIG_ENTRIES = Math.max(SMALL_ENTRIES, Number(process.env.BENCH_BALANCE_ENTRIES || 10_000_000));
const READS = Math.max(100, Number(process.env.BENCH_BALANCE_READS || 20_000));
const CLIENTS = 50;
const WARM_UP = 5000;
const WORKERS = Math.max(1, Number(process.env.BENCH_WORKERS || 1));
const TENANT = "ten_balance";
// Other customers of the tenant (a pool wallet and one grant each), so that the wallets and
// grants tables have a live tenant's size and the reads are planned as they would be there.
const OTHERS = Math.max(0, Number(process.env.BENCH_BALANCE_OTHERS ?? 10_000));
// Usage transactions per seeding statement (two entries each); two statements run at a time.
const CHUNK = 1_000_000;
// Credits are stored in units of 10^-9 credit. One usage transaction draws 0.006 credits: 1,200
// input and 300 output tokens of gpt-4o on the bench card.
const CREDIT = 1_000_000_000n;
const DRAW = 6_000_000n;
const DAY = 86_400_000;

const log = (...args) => console.error("[balance]", ...args);
const database = await createDatabase("drawdown_balance", log);
const { dbName, DATABASE_URL, admin } = database;

let serving;
let db;
try {
  log(
    `${os.cpus().length} CPUs, load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  const seedStart = Date.now();
  await cli(["migrate"], DATABASE_URL);
  db = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  const now = Date.now();
  const wallets = {
    SMALL: walletPlan("s", SMALL_ENTRIES, now),
    BIG: walletPlan("b", BIG_ENTRIES, now),
  };
  await seedTenant(db);
  const key = await createKey(DATABASE_URL, TENANT);
  await publishRateCard(DATABASE_URL, TENANT, BENCH_CARD);
  for (const w of Object.values(wallets)) await seedWallet(db, w);
  await seedOthers(db);
  const journalDone = Date.now();
  log(`journal written in ${((journalDone - seedStart) / 1000).toFixed(1)} s`);
  // Statistics and the visibility map, as a live database has them after autovacuum; done now,
  // so that autovacuum does not pass over the 10 million new rows during the read phases.
  await db.query("VACUUM (ANALYZE)");
  await db.query("CHECKPOINT");
  const vacuumDone = Date.now();
  log(`VACUUM (ANALYZE) and CHECKPOINT in ${((vacuumDone - journalDone) / 1000).toFixed(1)} s`);

  // ---- the server, in its own process
  serving = await startServer({ DATABASE_URL, DRAWDOWN_POOL_SIZE: "8", DRAWDOWN_WORKERS: String(WORKERS) });
  const { get, post, close } = httpClient(serving.base, key);

  // One pending hold per wallet, through the API (so `held` is not zero and `available`
  // excludes it, as a live wallet mid-request has).
  for (const w of Object.values(wallets)) {
    const a = JSON.parse(
      await post(
        "/v1/authorize",
        JSON.stringify({
          customer_id: w.customerId,
          action: "chat.completion",
          estimate: {
            quantities: { input_tokens: 1200, output_tokens: 300 },
            dimensions: { model: "gpt-4o" },
          },
          hold: true,
          hold_timeout_seconds: 7 * 86_400,
        }),
      ),
    );
    if (a.decision !== "allow" || !a.hold) throw new Error(`authorize ${w.customerId}: ${JSON.stringify(a)}`);
  }
  const reconcile = (await cli(["reconcile"], DATABASE_URL)).trim();
  log(reconcile);
  if (!reconcile.endsWith("no differences.")) throw new Error("the seeded ledger does not reconcile");
  const reconcileDone = Date.now();
  const seedSeconds = (reconcileDone - seedStart) / 1000;
  log(`holds and reconcile in ${((reconcileDone - vacuumDone) / 1000).toFixed(1)} s`);

  // What is behind each wallet: every entry of its customer's transactions, and those that
  // name the wallet (its grants and its hold).
  const counts = await db.query(
    `SELECT t.customer_id, count(*)::bigint AS entries, count(e.wallet_id)::bigint AS on_wallet
     FROM journal_transactions t JOIN journal_entries e ON e.tenant_id = t.tenant_id AND e.tx_id = t.id
     WHERE t.tenant_id = $1 AND t.customer_id = ANY($2) GROUP BY 1`,
    [TENANT, Object.values(wallets).map((w) => w.customerId)],
  );
  for (const r of counts.rows) {
    const w = Object.values(wallets).find((x) => x.customerId === r.customer_id);
    w.entries = Number(r.entries);
    w.onWallet = Number(r.on_wallet);
  }
  const sizes = await db.query(
    `SELECT pg_size_pretty(pg_total_relation_size('journal_entries')) AS entries,
       pg_size_pretty(pg_total_relation_size('journal_transactions')) AS transactions`,
  );
  log(
    `seeded in ${seedSeconds.toFixed(1)} s: SMALL ${fmt(wallets.SMALL.entries)} journal entries (${fmt(wallets.SMALL.onWallet)} on the wallet), BIG ${fmt(wallets.BIG.entries)} (${fmt(wallets.BIG.onWallet)} on the wallet); journal_entries ${sizes.rows[0].entries}, journal_transactions ${sizes.rows[0].transactions} with their indexes`,
  );

  // The two wallets answer the same shape.
  for (const [name, w] of Object.entries(wallets)) {
    const b = JSON.parse(await get(`/v1/wallets/${w.walletId}/balance`));
    log(
      `${name} balance: total ${b.total}, available ${b.available}, upcoming ${b.upcoming}, held ${b.held}, expired ${b.expired}, ${b.grants.length} grants, ${b.scopes.length} scopes`,
    );
    if (b.grants.length !== 3 || b.held === "0")
      throw new Error(`${name}: unexpected balance ${JSON.stringify(b)}`);
  }

  // ---- the reads
  let statements = true;
  try {
    await db.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    await db.query("SELECT 1 FROM pg_stat_statements LIMIT 1");
  } catch (error) {
    statements = false;
    log(`no pg_stat_statements (${error.message}): statements per request are not counted`);
  }
  const dbOid = Number(
    (await admin.query("SELECT oid FROM pg_database WHERE datname = $1", [dbName])).rows[0].oid,
  );
  // The server's statements in this database: the monitoring runs on the admin connection,
  // in another database, and this pool's own queries name the statistics views.
  const OWN = "query NOT ILIKE '%pg_stat%' AND query NOT ILIKE 'EXPLAIN%'";
  const resetStatements = async () => {
    if (statements) await db.query("SELECT pg_stat_statements_reset(0, $1, 0)", [dbOid]);
  };
  const readStatements = async () => {
    if (!statements) return [];
    const { rows } = await db.query(
      `SELECT query, calls::bigint AS calls, rows::bigint AS rows, (shared_blks_hit + shared_blks_read)::bigint AS blocks,
         total_exec_time AS ms
       FROM pg_stat_statements WHERE dbid = $1 AND ${OWN} ORDER BY calls DESC`,
      [dbOid],
    );
    return rows.map((r) => ({
      ...r,
      calls: Number(r.calls),
      rows: Number(r.rows),
      blocks: Number(r.blocks),
    }));
  };
  const tableCounters = async () => {
    const { rows } = await db.query(
      `SELECT s.relname, coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0) AS scans,
         coalesce(s.seq_tup_read, 0) + coalesce(s.idx_tup_fetch, 0) AS tuples,
         coalesce(io.heap_blks_hit, 0) + coalesce(io.heap_blks_read, 0) + coalesce(io.idx_blks_hit, 0) + coalesce(io.idx_blks_read, 0) AS blocks
       FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)
       WHERE s.relname IN ('journal_entries', 'journal_transactions') ORDER BY 1`,
    );
    return Object.fromEntries(
      rows.map((r) => [
        r.relname,
        { scans: Number(r.scans), tuples: Number(r.tuples), blocks: Number(r.blocks) },
      ]),
    );
  };

  const endpoints = [
    {
      name: "balance",
      label: "GET /v1/wallets/:id/balance",
      path: (w) => `/v1/wallets/${w.walletId}/balance`,
    },
    { name: "wallet", label: "GET /v1/wallets/:id", path: (w) => `/v1/wallets/${w.walletId}` },
  ];
  // Warm up each endpoint at full concurrency, on both wallets, before any measured phase.
  for (const e of endpoints) {
    const paths = Object.values(wallets).map(e.path);
    let n = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (n < WARM_UP) await get(paths[n++ % paths.length]);
      }),
    );
  }

  // Backends flush their table statistics within a second of going idle, or ten seconds later.
  await new Promise((r) => setTimeout(r, 11_000));
  const journalBefore = await tableCounters();
  const meter = cpuMeter(admin, dbName, serving.server.pid);
  const results = {};
  const observed = new Map();
  for (const e of endpoints) {
    results[e.name] = { SMALL: [], BIG: [] };
    for (const name of ["SMALL", "BIG", "SMALL", "BIG"]) {
      const w = wallets[name];
      const path = e.path(w);
      const latencies = [];
      let next = 0;
      await resetStatements();
      const done = await meter.phase();
      const started = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          while (next++ < READS) {
            const t = process.hrtime.bigint();
            await get(path);
            latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
          }
        }),
      );
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const cpu = await done(READS);
      const stmts = await readStatements();
      if (name === "BIG")
        for (const s of stmts) {
          // One entry per statement text (pg_stat_statements may keep several, e.g. per top level).
          const text = s.query.replace(/\s+/g, " ").trim();
          const o = observed.get(text) ?? { query: text, calls: 0, blocks: 0 };
          observed.set(text, { query: text, calls: o.calls + s.calls, blocks: o.blocks + s.blocks });
        }
      const calls = stmts.reduce((a, s) => a + s.calls, 0);
      const blocks = stmts.reduce((a, s) => a + s.blocks, 0);
      latencies.sort((a, b) => a - b);
      const phase = {
        seconds,
        latencies,
        cpu,
        statements: calls / READS,
        blocks: blocks / READS,
      };
      results[e.name][name].push(phase);
      log(
        `${e.label}, ${name} (${fmt(w.entries)} entries), ${CLIENTS} clients: ${READS} in ${seconds.toFixed(2)} s, ${Math.round(READS / seconds)}/s; p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms; CPU per request: server ${cpu.server_ms} ms, PostgreSQL ${cpu.db_ms} ms; ${statements ? `${phase.statements.toFixed(2)} statements, ${phase.blocks.toFixed(2)} buffers per request; ` : ""}other processes ${cpu.others_pct}% of the machine`,
      );
    }
  }
  await meter.stop();
  log(
    `load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  await new Promise((r) => setTimeout(r, 11_000));
  const journalAfter = await tableCounters();
  const journalRead = {};
  for (const [table, c] of Object.entries(journalAfter)) {
    const b = journalBefore[table];
    journalRead[table] = {
      scans: c.scans - b.scans,
      tuples: c.tuples - b.tuples,
      blocks: c.blocks - b.blocks,
    };
  }
  log(
    `journal tables during the ${endpoints.length * 4 * READS} reads: ${Object.entries(journalRead)
      .map(([t, d]) => `${t} ${d.scans} scans, ${d.tuples} rows, ${d.blocks} buffers`)
      .join("; ")}`,
  );

  // ---- EXPLAIN every statement the BIG phases ran, with the BIG wallet's values
  const hash = (await db.query("SELECT hash FROM api_keys WHERE tenant_id = $1", [TENANT])).rows[0].hash;
  const bigValues = { tenant_id: TENANT, id: wallets.BIG.walletId, wallet_id: wallets.BIG.walletId, hash };
  const toExplain = statements
    ? [...observed.values()]
    : [
        // Without pg_stat_statements: the two statements Store.balance runs (packages/storage/src/store.ts).
        { query: "SELECT * FROM wallets WHERE tenant_id = $1 AND id = $2", calls: null },
        {
          query:
            "SELECT * FROM grants WHERE tenant_id = $1 AND wallet_id = $2 AND status = 'active' AND remaining > 0",
          calls: null,
        },
      ];
  const explained = [];
  const background = [];
  for (const s of toExplain) {
    if (!/^\s*(SELECT|WITH)\b/i.test(s.query)) {
      background.push(s);
      continue;
    }
    // Each parameter is compared with a column whose value is known (tenant, wallet, key hash),
    // or the statement is not the read's.
    const wanted = Math.max(0, ...[...s.query.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
    const params = Array.from({ length: wanted }, () => undefined);
    for (const m of s.query.matchAll(/(\w+)\s*=\s*\$(\d+)/g)) params[Number(m[2]) - 1] = bigValues[m[1]];
    if (params.includes(undefined)) {
      background.push(s);
      continue;
    }
    const { rows } = await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${s.query}`, params);
    const plan = rows.map((r) => r["QUERY PLAN"]);
    const touchesJournal = /journal_/.test(plan.join("\n"));
    explained.push({ query: s.query, touchesJournal });
    log(
      `EXPLAIN (ANALYZE, BUFFERS), BIG wallet${s.calls === null ? "" : ` (${s.calls} calls in the BIG phases, ${(s.blocks / s.calls).toFixed(2)} buffers per call)`}:\n  ${s.query}\n${plan.map((l) => `    ${l}`).join("\n")}`,
    );
  }
  // The server's scheduler (due holds, deliveries, expiries, renewals) polls every few seconds.
  if (background.length > 0)
    log(
      `not explained: ${background.length} statements of the server's background jobs in the BIG phases (${background.reduce((a, s) => a + s.calls, 0)} calls), not the reads:\n${background.map((s) => `    ${s.calls} × ${s.query.replace(/\s+/g, " ").slice(0, 100)}…`).join("\n")}`,
    );
  close();

  const combined = (phases) => {
    const seconds = phases.reduce((a, p) => a + p.seconds, 0);
    const latencies = phases.flatMap((p) => p.latencies).sort((a, b) => a - b);
    const mean = (f) => Number((phases.reduce((a, p) => a + f(p), 0) / phases.length).toFixed(3));
    return {
      perSecond: Math.round((READS * phases.length) / seconds),
      p50: Number(percentile(latencies, 50).toFixed(2)),
      p99: Number(percentile(latencies, 99).toFixed(2)),
      server: mean((p) => p.cpu.server_ms),
      db: mean((p) => p.cpu.db_ms),
      blocks: mean((p) => p.blocks),
    };
  };
  const figures = {};
  for (const e of endpoints) {
    const small = combined(results[e.name].SMALL);
    const big = combined(results[e.name].BIG);
    Object.assign(figures, {
      [`${e.name}_small_per_s`]: small.perSecond,
      [`${e.name}_big_per_s`]: big.perSecond,
      [`${e.name}_big_vs_small`]: Number((big.perSecond / small.perSecond).toFixed(2)),
      [`${e.name}_p50_small_ms`]: small.p50,
      [`${e.name}_p50_big_ms`]: big.p50,
      [`${e.name}_p99_small_ms`]: small.p99,
      [`${e.name}_p99_big_ms`]: big.p99,
      [`${e.name}_server_ms_small`]: small.server,
      [`${e.name}_server_ms_big`]: big.server,
      [`${e.name}_db_ms_small`]: small.db,
      [`${e.name}_db_ms_big`]: big.db,
      ...(statements
        ? { [`${e.name}_buffers_small`]: small.blocks, [`${e.name}_buffers_big`]: big.blocks }
        : {}),
    });
  }
  console.log(
    JSON.stringify({
      ...figures,
      journal_entries_big: wallets.BIG.entries,
      journal_entries_small: wallets.SMALL.entries,
      journal_rows_read: Object.values(journalRead).reduce((a, d) => a + d.tuples, 0),
      statements_touching_journal: explained.filter((x) => x.touchesJournal).length,
      reads_per_phase: READS,
      clients: CLIENTS,
      seed_s: Math.round(seedSeconds),
    }),
  );
} finally {
  await db?.end();
  await serving?.stop();
  await database.drop();
}

/** Thousands separated, for the log. */
function fmt(n) {
  return n === undefined ? "?" : n.toLocaleString("en-US");
}

/**
 * One wallet's seed, so that its journal ends with `entries` entries (including the hold's
 * two, placed later through the API): four grant transactions (two entries each) and usage
 * transactions (the grant drawn, consumption). The first half of the usage depletes the plan
 * grant, the rest draws the purchase; the promo and next month's plan grant are untouched. The
 * grants' remaining credits are the same in both wallets, whatever the history.
 */
function walletPlan(letter, entries, now) {
  const usages = Math.max(2, Math.floor((entries - 8 - 2) / 2));
  const onPlan = Math.ceil(usages / 2);
  const start = now - 365 * DAY;
  const id = (kind) => `${kind}_${letter === "b" ? "big" : "small"}`;
  const grants = [
    {
      id: `grt_${letter}_plan`,
      source: "plan",
      amount: BigInt(onPlan) * DRAW,
      remaining: 0n,
      costBasis: 0n,
      currency: null,
      effectiveAt: start,
      expiresAt: now + 20 * DAY,
      priority: 10,
      scope: null,
    },
    {
      id: `grt_${letter}_purchase`,
      source: "purchase",
      amount: 500_000n * CREDIT + BigInt(usages - onPlan) * DRAW,
      remaining: 500_000n * CREDIT,
      costBasis: 10_000_000n,
      currency: "USD",
      effectiveAt: start,
      expiresAt: null,
      priority: 50,
      scope: null,
    },
    {
      id: `grt_${letter}_promo`,
      source: "promo",
      amount: 1_000n * CREDIT,
      remaining: 1_000n * CREDIT,
      costBasis: 0n,
      currency: null,
      effectiveAt: now - 10 * DAY,
      expiresAt: now + 90 * DAY,
      priority: 20,
      scope: ["chat.completion"],
    },
    {
      id: `grt_${letter}_next`,
      source: "plan",
      amount: 2_000n * CREDIT,
      remaining: 2_000n * CREDIT,
      costBasis: 0n,
      currency: null,
      effectiveAt: now + 20 * DAY,
      expiresAt: now + 50 * DAY,
      priority: 10,
      scope: null,
    },
  ];
  return {
    letter,
    customerId: id("cus"),
    walletId: id("wal"),
    target: entries,
    usages,
    onPlan,
    start,
    // Spread over the year before now.
    stepMs: Math.max(1, Math.floor((now - start) / (usages + 1))),
    grants,
  };
}

async function seedTenant(db) {
  await db.query(
    "INSERT INTO tenants (id, name, environment, created_at) VALUES ($1, 'Balance bench', 'test', $2)",
    [TENANT, new Date(Date.now() - 400 * DAY).toISOString()],
  );
}

/** The other customers: a pool wallet with one purchased grant each, and its grant transaction. */
async function seedOthers(db) {
  if (OTHERS === 0) return;
  const at = new Date(Date.now() - 100 * DAY).toISOString();
  await seedPoolWallets(db, {
    tenantId: TENANT,
    prefix: "o",
    count: OTHERS,
    amount: (100n * CREDIT).toString(),
    at,
  });
}

async function seedWallet(db, w) {
  const iso = (t) => (t === null ? null : new Date(t).toISOString());
  const started = Date.now();
  await db.query(
    "INSERT INTO customers (tenant_id, id, kind, created_at) VALUES ($1, $2, 'organization', $3)",
    [TENANT, w.customerId, iso(w.start)],
  );
  const balance = w.grants.reduce((a, g) => a + g.remaining, 0n);
  await db.query(
    "INSERT INTO wallets (tenant_id, id, customer_id, balance, created_at) VALUES ($1, $2, $3, $4, $5)",
    [TENANT, w.walletId, w.customerId, balance.toString(), iso(w.start)],
  );
  for (const g of w.grants) {
    const created = Math.min(g.effectiveAt, Date.now());
    await db.query(
      `INSERT INTO grants (tenant_id, id, wallet_id, customer_id, amount, remaining, source, cost_basis, currency,
         effective_at, expires_at, priority, scope, status, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'active', $14)`,
      [
        TENANT,
        g.id,
        w.walletId,
        w.customerId,
        g.amount.toString(),
        g.remaining.toString(),
        g.source,
        g.costBasis.toString(),
        g.currency,
        iso(g.effectiveAt),
        iso(g.expiresAt),
        g.priority,
        g.scope,
        iso(created),
      ],
    );
    const txId = `txn_${w.letter}_${g.id.slice(4)}`;
    await db.query(
      "INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, posted_at) VALUES ($1, $2, $3, 'grant', $4)",
      [TENANT, txId, w.customerId, iso(created)],
    );
    await db.query(
      `INSERT INTO journal_entries (tenant_id, tx_id, idx, account, wallet_id, grant_id, unit, amount) VALUES
         ($1, $2, 0, 'issuance', NULL, NULL, 'credit', -$5::numeric), ($1, $2, 1, 'grant', $3, $4, 'credit', $5::numeric)`,
      [TENANT, txId, w.walletId, g.id, g.amount.toString()],
    );
  }
  // Usage transactions in chunks, two statements at a time (one per core). Ids have the shape
  // and length of real ones (prefix, then a time-ordered part, then 16 random-looking characters).
  const txId = `'txn_${w.letter}' || lpad(g::text, 9, '0') || substr(md5('${w.letter}' || g), 1, 16)`;
  const [plan, purchase] = w.grants;
  const chunks = [];
  for (let lo = 1; lo <= w.usages; lo += CHUNK) chunks.push([lo, Math.min(w.usages, lo + CHUNK - 1)]);
  let done = 0;
  const worker = async () => {
    const c = await db.connect();
    try {
      for (let chunk = chunks.shift(); chunk; chunk = chunks.shift()) {
        const [lo, hi] = chunk;
        await c.query(
          `INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, action, posted_at)
           SELECT $1, ${txId}, $2, 'usage', 'chat.completion', $3::timestamptz + g::bigint * $4::bigint * interval '1 millisecond'
           FROM generate_series($5::int, $6::int) g`,
          [TENANT, w.customerId, iso(w.start), w.stepMs, lo, hi],
        );
        await c.query(
          `INSERT INTO journal_entries (tenant_id, tx_id, idx, account, wallet_id, grant_id, unit, amount)
           SELECT $1, x.id, e.idx, e.account, e.wallet_id, e.grant_id, 'credit', e.amount
           FROM (SELECT g, ${txId} AS id FROM generate_series($2::int, $3::int) g) x,
           LATERAL (VALUES
             (0, 'grant', $4::text, CASE WHEN x.g <= $5::int THEN $6::text ELSE $7::text END, -$8::numeric),
             (1, 'consumption', NULL::text, NULL::text, $8::numeric)) AS e(idx, account, wallet_id, grant_id, amount)
`,
          [TENANT, lo, hi, w.walletId, w.onPlan, plan.id, purchase.id, DRAW.toString()],
        );
        done += hi - lo + 1;
        if (w.usages > CHUNK)
          log(
            `${w.walletId}: ${fmt(done)} of ${fmt(w.usages)} usage transactions (${((Date.now() - started) / 1000).toFixed(0)} s)`,
          );
      }
    } finally {
      c.release();
    }
  };
  await Promise.all([worker(), worker()]);
}
