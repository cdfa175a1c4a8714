// What the HTTP benches share: a fresh database, the CLI, the server as a child process, a
// keep-alive HTTP client, and the CPU meter (server process and PostgreSQL backends, from /proc).
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import pg from "pg";

/** The PostgreSQL the benches create their databases on. */
export const BASE_URL = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test";

const CLI = "packages/cli/dist/src/main.js";

/**
 * Creates `<prefix>_<pid>` on BASE_URL. `admin` stays connected to the base database (for the
 * drop, and for monitoring queries that should not run in the measured database); `drop()`
 * keeps it when BENCH_KEEP_DB is set, to EXPLAIN statements on it afterwards.
 */
export async function createDatabase(prefix, log) {
  const dbName = `${prefix}_${process.pid}`;
  const admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const url = new URL(BASE_URL);
  url.pathname = `/${dbName}`;
  return {
    dbName,
    admin,
    DATABASE_URL: url.toString(),
    async drop() {
      if (process.env.BENCH_KEEP_DB) log(`kept database ${dbName}`);
      else await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await admin.end();
    },
  };
}

/** Runs a command to completion (stderr inherited); its stdout, or an error on a non-zero exit. */
export async function run(cmd, args, env) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const [code] = await once(child, "exit");
  if (code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${code}`);
  return out;
}

/** Runs `drawdown <args>` (the built CLI) against a database. */
export const cli = (args, DATABASE_URL) => run(process.execPath, [CLI, ...args], { DATABASE_URL });

/**
 * Starts `drawdown serve` in its own process on a free port, with `env` added to this
 * process's. BENCH_NODE_FLAGS (e.g. "--cpu-prof") go to it, to profile it under load.
 * Resolves once it listens: `{ server, base, stop }`.
 */
export async function startServer(env) {
  const flags = (process.env.BENCH_NODE_FLAGS || "").split(" ").filter(Boolean);
  const server = spawn(process.execPath, [...flags, CLI, "serve"], {
    env: { ...process.env, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const base = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  return {
    server,
    base,
    async stop() {
      if (server.exitCode === null && server.signalCode === null) {
        server.kill("SIGTERM");
        await once(server, "exit").catch(() => undefined);
      }
    },
  };
}

/**
 * A keep-alive HTTP client for one server and one API key. `get` and `post` resolve with the
 * body (a Buffer) of a 2xx answer and reject with the status and body otherwise.
 */
export function httpClient(base, key, maxSockets = 64) {
  const { hostname, port } = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const request = (method, path, body) =>
    new Promise((resolve, reject) => {
      const headers = { authorization: `Bearer ${key}` };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      const req = http.request({ hostname, port, path, method, agent, headers }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          res.statusCode < 300
            ? resolve(Buffer.concat(chunks))
            : reject(new Error(`${method} ${path}: ${res.statusCode} ${Buffer.concat(chunks)}`)),
        );
      });
      req.on("error", reject);
      req.end(body);
    });
  return {
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
    close: () => agent.destroy(),
  };
}

/** Creates a secret API key for a tenant through the CLI; its secret. */
export async function createKey(DATABASE_URL, tenantId) {
  return (await cli(["keys", "create", "--tenant", tenantId], DATABASE_URL)).trim();
}

/** Publishes a tenant's default rate card through the storage layer, so it is validated as the API would. */
export async function publishRateCard(DATABASE_URL, tenantId, card) {
  const { Store, Metering, openPostgres, createIdGenerator } = await import("@drawdown/storage");
  const sql = await openPostgres(DATABASE_URL, { max: 1 });
  const store = new Store(sql, { newId: createIdGenerator() });
  const metering = new Metering(() => Date.now(), store.newId);
  await sql.transaction(async (tx) => {
    const created = await metering.createRateCard(tx, tenantId, "default");
    await metering.publishRateCardVersion(tx, tenantId, created.value.id, null, card);
  });
  await sql.close();
}

/** The value at percentile `p` (0 to 100) of an ascending array. */
export const percentile = (sorted, p) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/**
 * CPU seconds spent by the server process and by the database's backends (Linux /proc), so a
 * phase's cost per operation can be compared on a machine other work shares: wall-clock rates
 * move with the neighbours' load, CPU per operation much less. Backends are sampled every
 * 100 ms (a backend that exits keeps its last reading). `db` runs the monitoring queries; a
 * connection to another database keeps them out of the measured one. Each phase also reports
 * the machine's other CPU use (all cores, less the server, the backends and this process), as a
 * share of the machine, to tell a quiet run from a busy one.
 */
export function cpuMeter(db, dbName, serverPid) {
  const ticks = (pid) => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return null;
    }
  };
  // The machine's busy and total CPU seconds (all cores), from the first line of /proc/stat.
  const machine = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    const idle = f[3] + f[4]; // idle and iowait
    return { busy: (total - idle) / 100, total: total / 100 };
  };
  const self = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const backends = new Map();
  let stopped = false;
  const sample = async () => {
    const { rows } = await db.query("SELECT pid FROM pg_stat_activity WHERE datname = $1", [dbName]);
    for (const { pid } of rows) {
      const t = ticks(pid);
      if (t !== null) backends.set(pid, t);
    }
  };
  const loop = (async () => {
    while (!stopped) {
      await sample().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  // The server is the primary and its worker processes (DRAWDOWN_WORKERS).
  const serverPids = () => [
    serverPid,
    ...readdirSync("/proc")
      .filter((p) => /^[0-9]+$/.test(p) && parentOf(p) === serverPid)
      .map(Number),
  ];
  const parentOf = (pid) => {
    try {
      return Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[1]);
    } catch {
      return null;
    }
  };
  const read = () => ({
    server: serverPids().reduce((sum, pid) => sum + (ticks(pid) ?? 0), 0),
    db: [...backends.values()].reduce((a, b) => a + b, 0),
    machine: machine(),
    self: self(),
  });
  // Commits: transactions per operation shows how well requests batch.
  const commits = async () =>
    Number(
      (await db.query("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", [dbName])).rows[0]
        .xact_commit,
    );
  return {
    /** Starts a phase: returns a function that ends it and gives CPU ms per operation. */
    async phase() {
      await sample();
      const start = read();
      const before = new Map(backends);
      const startCommits = await commits();
      return async (ops) => {
        await sample();
        const end = read();
        // The statistics reach pg_stat_database within a second of a backend going idle.
        await new Promise((r) => setTimeout(r, 1100));
        const txs = (await commits()) - startCommits;
        let db = 0;
        for (const [pid, t] of backends) db += t - (before.get(pid) ?? 0);
        const server = end.server - start.server;
        const busy = end.machine.busy - start.machine.busy;
        const total = end.machine.total - start.machine.total;
        const others = Math.max(0, busy - server - db - (end.self - start.self));
        return {
          server_ms: Number(((server * 1000) / ops).toFixed(3)),
          db_ms: Number(((db * 1000) / ops).toFixed(3)),
          commits: Number((txs / ops).toFixed(3)),
          others_pct: total > 0 ? Math.round((others / total) * 100) : 0,
        };
      };
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/**
 * Seeds `count` customers `cus_<prefix><n>`, each with a pool wallet `wal_<prefix><n>` holding
 * one purchased grant of `amount` units and the balanced journal transaction that issued it
 * (so reconcile is clean), in five set-based statements.
 */
export async function seedPoolWallets(db, { tenantId, prefix = "", count, amount, at }) {
  await db.query(
    "INSERT INTO customers (tenant_id, id, kind, created_at) SELECT $1, 'cus_' || $4 || g, 'organization', $2 FROM generate_series(1, $3) g",
    [tenantId, at, count, prefix],
  );
  await db.query(
    "INSERT INTO wallets (tenant_id, id, customer_id, balance, created_at) SELECT $1, 'wal_' || $5 || g, 'cus_' || $5 || g, $2, $3 FROM generate_series(1, $4) g",
    [tenantId, amount, at, count, prefix],
  );
  await db.query(
    `INSERT INTO grants (tenant_id, id, wallet_id, customer_id, amount, remaining, source, cost_basis, currency, effective_at, priority, status, created_at)
     SELECT $1, 'grt_' || $5 || g, 'wal_' || $5 || g, 'cus_' || $5 || g, $2, $2, 'purchase', 10000000, 'USD', $3, 50, 'active', $3 FROM generate_series(1, $4) g`,
    [tenantId, amount, at, count, prefix],
  );
  await db.query(
    "INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, posted_at) SELECT $1, 'txn_' || $4 || g, 'cus_' || $4 || g, 'grant', $2 FROM generate_series(1, $3) g",
    [tenantId, at, count, prefix],
  );
  await db.query(
    `INSERT INTO journal_entries (tenant_id, tx_id, idx, account, wallet_id, grant_id, unit, amount)
     SELECT $1, 'txn_' || $4 || g, e.idx, e.account, e.wallet_id, e.grant_id, 'credit', e.amount
     FROM generate_series(1, $3) g, LATERAL (VALUES
       (0, 'issuance', NULL, NULL, -$2::numeric),
       (1, 'grant', 'wal_' || $4 || g, 'grt_' || $4 || g, $2::numeric)) AS e(idx, account, wallet_id, grant_id, amount)`,
    [tenantId, amount, count, prefix],
  );
}
