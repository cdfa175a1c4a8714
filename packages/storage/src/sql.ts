import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

/** A row as the driver returns it. Amount columns arrive as decimal strings. */
export type Row = Record<string, unknown>;

/**
 * Runs SQL. Both the whole database and a transaction are executors.
 *
 * In a transaction, statements are sent in the order their `query` calls are made, and on
 * PostgreSQL they are pipelined: a statement issued before the previous one has answered goes
 * out at once, so statements that do not need each other's results cost one round trip, not one
 * each. Each still runs after the ones sent before it, with its own snapshot (READ COMMITTED): a
 * read sent after a `FOR UPDATE` sees what was committed before that lock was granted.
 *
 *     const [wallets, grants] = await Promise.all([
 *       tx.query("SELECT id FROM wallets WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE", [t, ids]),
 *       tx.query("SELECT id, remaining FROM grants WHERE tenant_id = $1 AND wallet_id = ANY($2)", [t, ids]),
 *     ]);
 *
 * A statement that fails aborts the transaction, and every later one fails too; the
 * transaction then rolls back even when the failed statement's promise was not awaited.
 */
export interface SqlExecutor {
  /** Runs one parameterized statement. */
  query<T extends Row = Row>(
    text: string,
    params?: readonly unknown[],
  ): Promise<{ rows: T[]; rowCount: number }>;
  /**
   * Bulk-loads rows with `COPY table (columns) FROM ...` in text format: PostgreSQL's fastest
   * path for many rows (the event rows of the hot path). Values are text, or null.
   */
  copyFrom(
    table: string,
    columns: readonly string[],
    rows: readonly (readonly (string | null)[])[],
  ): Promise<void>;
}

const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };
/** True when COPY text must escape something in `v`: four indexOf scans are ~8x faster than a regex test. */
const needsCopyEscape = (v: string): boolean =>
  v.indexOf("\\") !== -1 || v.indexOf("\t") !== -1 || v.indexOf("\n") !== -1 || v.indexOf("\r") !== -1;
const COPY_SPECIALS = /[\\\t\n\r]/g;
const copyEscape = (c: string) => COPY_ESCAPES[c]!;

/** Encodes rows in COPY's text format: tab-separated fields, `\N` for null, backslash escapes. */
export function copyText(rows: readonly (readonly (string | null)[])[]): string {
  // The hot path's rows (event rows, journal rows): one loop, no array per row, and a value
  // without a special character (nearly all) is used as it is.
  let out = "";
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) {
      const v = row[i];
      if (i > 0) out += "\t";
      if (v === null || v === undefined) out += "\\N";
      else out += needsCopyEscape(v) ? v.replace(COPY_SPECIALS, copyEscape) : v;
    }
    out += "\n";
  }
  return out;
}

/**
 * The one database interface the storage layer needs, implemented for PGlite (embedded)
 * and for PostgreSQL. Same SQL on both: PostgreSQL's dialect.
 */
export interface SqlClient extends SqlExecutor {
  /** `pglite` or `postgres`: for logs and tests, never for choosing SQL. */
  readonly kind: "pglite" | "postgres";
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Runs a script of several statements (migrations). */
  exec(script: string): Promise<void>;
  /**
   * Listens to a notification channel (`NOTIFY`, or `pg_notify` in a transaction, delivered on
   * commit) until the returned listener is closed. On PostgreSQL it holds one connection of its
   * own, outside the pool, and reconnects after losing it; `onConnect` runs at every
   * (re)connection, since notifications sent while it was down are lost:
   *
   *     const listener = await db.listen("drawdown_instances", (payload) => forget(payload), () => forgetAll());
   *     await listener.close();
   */
  listen(channel: string, onNotify: (payload: string) => void, onConnect?: () => void): Promise<Listener>;
  close(): Promise<void>;
}

/** A channel being listened to (see {@link SqlClient.listen}). */
export interface Listener {
  close(): Promise<void>;
}

/** A channel name as LISTEN takes it: an identifier, not a parameter. */
const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

function checkChannel(channel: string): void {
  if (!CHANNEL.test(channel)) throw new Error(`not a channel name: ${channel}`);
}

/**
 * Opens the embedded database. With `dataDir` the data lives in that folder; without it,
 * in memory (tests).
 */
export async function openPglite(dataDir?: string): Promise<SqlClient> {
  const db = dataDir ? await PGlite.create(dataDir) : await PGlite.create();
  const run = async <T extends Row>(ex: Pick<PGlite, "query">, text: string, params?: readonly unknown[]) => {
    const r = await ex.query<T>(text, params as unknown[] | undefined);
    return { rows: r.rows, rowCount: r.rows.length > 0 ? r.rows.length : (r.affectedRows ?? 0) };
  };
  // PGlite reads COPY data from a blob it exposes as /dev/blob.
  const copy = async (
    ex: Pick<PGlite, "query">,
    table: string,
    columns: readonly string[],
    rows: readonly (readonly (string | null)[])[],
  ) => {
    if (rows.length === 0) return;
    await ex.query(`COPY ${table} (${columns.join(", ")}) FROM '/dev/blob'`, [], {
      blob: new Blob([copyText(rows)]),
    });
  };
  return {
    kind: "pglite",
    query: (text, params) => run(db, text, params),
    copyFrom: (table, columns, rows) => copy(db, table, columns, rows),
    // PGlite runs one statement at a time, in the order issued; the transaction still waits for
    // every statement issued in it, so none can run after its COMMIT or ROLLBACK.
    transaction: (fn) =>
      db.transaction(async (ptx) => {
        const tx = pipelinedTransaction(
          (text, params) => run(ptx, text, params),
          (table, columns, rows) => copy(ptx, table, columns, rows),
        );
        try {
          const result = await fn(tx.executor);
          await tx.settled();
          return result;
        } catch (error) {
          throw await tx.settled().then(
            () => error,
            (failure: unknown) => failure,
          );
        }
      }),
    exec: async (script) => {
      await db.exec(script);
    },
    // One process holds the database, so it hears every notification: nothing to reconnect.
    listen: async (channel, onNotify, onConnect) => {
      checkChannel(channel);
      const unlisten = await db.listen(channel, onNotify);
      onConnect?.();
      return { close: () => unlisten() };
    },
    close: () => db.close(),
  };
}

/** Most statements one pool prepares; past it, statements are sent unnamed (parsed each time). */
const MAX_PREPARED = 2000;

/**
 * A statement whose result columns a schema change could alter (`SELECT *`, `t.*`,
 * `RETURNING *`): a prepared one would fail with "cached plan must not change result type"
 * after another instance's migration added a column, so these are never prepared.
 */
const STAR = /(?:SELECT|RETURNING|,)\s+(?:\w+\.)?\*/i;

/**
 * The prepared-statement name of a parameterized statement, or undefined (sent unnamed).
 * PostgreSQL then parses and analyzes each statement once per connection, not at every
 * call: about a third of the database's CPU per statement on the hot paths, and less work in
 * the driver (see docs/benchmarks.md). Statements without parameters (migrations, DDL) are
 * never prepared.
 */
function statementNames(): (text: string, params: readonly unknown[] | undefined) => string | undefined {
  const names = new Map<string, string>();
  return (text, params) => {
    if (params === undefined || params.length === 0) return undefined;
    let name = names.get(text);
    if (name === undefined) {
      if (names.size >= MAX_PREPARED || STAR.test(text)) return undefined;
      name = `dd_${names.size}`;
      names.set(text, name);
    }
    return name;
  };
}

/** Options for a PostgreSQL pool. */
export interface PostgresOptions {
  /** Pool size. Default 10. */
  readonly max?: number;
  /** A schema to put first on the search path (tests isolate themselves this way). */
  readonly schema?: string;
}

/** Opens a pool on PostgreSQL 15 or newer. */
export async function openPostgres(url: string, options: PostgresOptions = {}): Promise<SqlClient> {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    // Statements issued before the previous one answered go out at once (see SqlExecutor):
    // measured here, a pipelined statement costs about a third of the CPU, in this process and in
    // PostgreSQL, of one that waits for its round trip (docs/benchmarks.md).
    pipeline: true,
    // Prepared statements are planned for their values each time (a generic plan, chosen
    // after five runs, may scan a tenant's every row when its statistics lag a growing table).
    options: `-c plan_cache_mode=force_custom_plan${options.schema ? ` -c search_path=${options.schema}` : ""}`,
  });
  pool.on("error", () => {
    // An idle client lost its connection; the pool replaces it on next use.
  });
  const client = await pool.connect();
  client.release();
  const nameOf = statementNames();
  const run = async <T extends Row>(
    ex: pg.Pool | pg.PoolClient,
    text: string,
    params?: readonly unknown[],
  ) => {
    if (ex !== pool) corkForTick(ex as pg.PoolClient);
    const name = nameOf(text, params);
    const r =
      name === undefined
        ? await ex.query<T>(text, params as unknown[] | undefined)
        : await ex.query<T>({ name, text, values: params as unknown[] });
    return { rows: r.rows, rowCount: r.rowCount ?? r.rows.length };
  };
  // COPY keeps the connection in a sub-protocol of its own, which a pipelined client refuses:
  // it runs with pipelining off, once nothing else is in flight on the connection.
  const copy = async (
    conn: pg.PoolClient,
    table: string,
    columns: readonly string[],
    rows: readonly (readonly (string | null)[])[],
  ) => {
    if (rows.length === 0) return;
    const client = conn as unknown as { pipeline: boolean };
    client.pipeline = false;
    try {
      await pipeline(
        Readable.from([copyText(rows)]),
        conn.query(copyFrom(`COPY ${table} (${columns.join(", ")}) FROM STDIN`)),
      );
    } finally {
      client.pipeline = true;
    }
  };
  return {
    kind: "postgres",
    query: (text, params) => run(pool, text, params),
    copyFrom: async (table, columns, rows) => {
      const conn = await pool.connect();
      try {
        await copy(conn, table, columns, rows);
      } finally {
        conn.release();
      }
    },
    transaction: async (fn) => {
      const conn = await pool.connect();
      const tx = pipelinedTransaction(
        (text, params) => run(conn, text, params),
        (table, columns, rows) => copy(conn, table, columns, rows),
      );
      try {
        // BEGIN is pipelined with the transaction's first statements; it fails only with the
        // connection, and then so does every statement after it.
        corkForTick(conn);
        tx.track(conn.query("BEGIN"));
        const result = await fn(tx.executor);
        await tx.settled();
        const commit = await conn.query("COMMIT");
        // PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK, not an error.
        if (commit.command !== "COMMIT") throw new Error(`the transaction ended with ${commit.command}`);
        return result;
      } catch (error) {
        const cause = await tx.settled().then(
          () => error,
          (failure: unknown) => failure,
        );
        await conn.query("ROLLBACK").catch(() => undefined);
        throw cause;
      } finally {
        conn.release();
      }
    },
    exec: async (script) => {
      await pool.query(script);
    },
    listen: (channel, onNotify, onConnect) => listenPostgres(url, channel, onNotify, onConnect),
    close: () => pool.end(),
  };
}

/** Connections whose socket is corked until the end of the current tick. */
const corked = new WeakSet<pg.PoolClient>();

/**
 * Holds a connection's outgoing bytes until the current tick's work is done, so the statements
 * a transaction issues together (a pipelined round) leave in one write and reach PostgreSQL in
 * one wake-up: the driver writes each statement with a system call of its own otherwise, and on
 * the small-batch paths those calls were the largest item of the server's profile
 * (docs/benchmarks.md). `process.nextTick` runs once the promise continuations queued now have
 * run, and before the process waits for I/O, so nothing is held longer than the tick's CPU work.
 */
function corkForTick(conn: pg.PoolClient): void {
  if (corked.has(conn)) return;
  const stream = (conn as unknown as { connection?: { stream?: { cork?(): void; uncork?(): void } } })
    .connection?.stream;
  if (!stream?.cork || !stream.uncork) return;
  corked.add(conn);
  stream.cork();
  process.nextTick(() => {
    corked.delete(conn);
    stream.uncork!();
  });
}

/**
 * A transaction's executor over a pipelined connection. It keeps every statement issued, so
 * that the transaction commits only once all of them have answered, and a statement nobody
 * awaited can neither be lost nor reject unhandled. A COPY waits for the statements issued
 * before it, and statements issued during a COPY wait for it.
 *
 * `settled` throws the first failure in the order the statements were issued: after a failed
 * statement every later one fails with "current transaction is aborted", and which of those
 * rejections reaches the caller first depends on how deep each sits in its caller's promises.
 * The transaction reports the cause (a unique violation the ingest writer retries on, say).
 */
function pipelinedTransaction(
  query: SqlExecutor["query"],
  copy: SqlExecutor["copyFrom"],
): { executor: SqlExecutor; track(p: Promise<unknown>): void; settled(): Promise<void> } {
  let issued: Promise<unknown>[] = [];
  const failures: unknown[] = [];
  let copying: Promise<unknown> | null = null;
  const track = <T>(p: Promise<T>): Promise<T> => {
    // Marked handled here; the caller who awaits it still sees its rejection.
    p.catch(() => undefined);
    issued.push(p);
    return p;
  };
  return {
    executor: {
      query: (text, params) => track(copying ? copying.then(() => query(text, params)) : query(text, params)),
      copyFrom: (table, columns, rows) => {
        const before = Promise.allSettled(issued);
        const p = track(before.then(() => copy(table, columns, rows)));
        const done = p.catch(() => undefined);
        copying = done;
        void done.then(() => {
          if (copying === done) copying = null;
        });
        return p;
      },
    },
    track: (p) => void track(p),
    settled: async () => {
      while (issued.length > 0) {
        const batch = issued;
        issued = [];
        for (const r of await Promise.allSettled(batch)) if (r.status === "rejected") failures.push(r.reason);
      }
      if (failures.length > 0) throw failures[0];
    },
  };
}

/** Longest wait between two attempts to reconnect a lost listener. */
const LISTEN_RETRY_MAX_MS = 10_000;

/**
 * A PostgreSQL listener on its own connection. Connecting the first time must succeed (a
 * misconfigured server fails at start); afterwards a lost connection is retried with backoff,
 * and each new connection runs `onConnect` once it listens again.
 */
async function listenPostgres(
  url: string,
  channel: string,
  onNotify: (payload: string) => void,
  onConnect?: () => void,
): Promise<Listener> {
  checkChannel(channel);
  let closed = false;
  let client: pg.Client | null = null;
  let retry: NodeJS.Timeout | null = null;
  let delay = 100;
  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: url });
    c.on("notification", (m) => {
      if (m.channel === channel) onNotify(m.payload ?? "");
    });
    const lost = () => {
      if (client !== c) return;
      client = null;
      c.end().catch(() => undefined);
      if (!closed) schedule();
    };
    c.on("error", lost);
    c.on("end", lost);
    await c.connect();
    await c.query(`LISTEN ${channel}`);
    if (closed) {
      await c.end();
      return;
    }
    client = c;
    delay = 100;
    onConnect?.();
  };
  const schedule = () => {
    retry = setTimeout(() => {
      retry = null;
      connect().catch(() => {
        if (!closed) schedule();
      });
    }, delay);
    retry.unref();
    delay = Math.min(delay * 2, LISTEN_RETRY_MAX_MS);
  };
  await connect();
  return {
    close: async () => {
      closed = true;
      if (retry) clearTimeout(retry);
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
    },
  };
}
