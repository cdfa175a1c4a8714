import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

/** A row as the driver returns it. Amount columns arrive as decimal strings. */
export type Row = Record<string, unknown>;

/** Runs SQL. Both the whole database and a transaction are executors. */
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

/** Encodes rows in COPY's text format: tab-separated fields, `\N` for null, backslash escapes. */
export function copyText(rows: readonly (readonly (string | null)[])[]): string {
  let out = "";
  for (const row of rows) {
    out += `${row.map((v) => (v === null ? "\\N" : v.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]!))).join("\t")}\n`;
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
  close(): Promise<void>;
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
    transaction: (fn) =>
      db.transaction((tx) =>
        fn({
          query: (text, params) => run(tx, text, params),
          copyFrom: (table, columns, rows) => copy(tx, table, columns, rows),
        }),
      ),
    exec: async (script) => {
      await db.exec(script);
    },
    close: () => db.close(),
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
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
  pool.on("error", () => {
    // An idle client lost its connection; the pool replaces it on next use.
  });
  const client = await pool.connect();
  client.release();
  const run = async <T extends Row>(
    ex: pg.Pool | pg.PoolClient,
    text: string,
    params?: readonly unknown[],
  ) => {
    const r = await ex.query<T>(text, params as unknown[] | undefined);
    return { rows: r.rows, rowCount: r.rowCount ?? r.rows.length };
  };
  const copy = async (
    conn: pg.PoolClient,
    table: string,
    columns: readonly string[],
    rows: readonly (readonly (string | null)[])[],
  ) => {
    if (rows.length === 0) return;
    await pipeline(
      Readable.from([copyText(rows)]),
      conn.query(copyFrom(`COPY ${table} (${columns.join(", ")}) FROM STDIN`)),
    );
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
      try {
        await conn.query("BEGIN");
        const result = await fn({
          query: (text, params) => run(conn, text, params),
          copyFrom: (table, columns, rows) => copy(conn, table, columns, rows),
        });
        await conn.query("COMMIT");
        return result;
      } catch (error) {
        await conn.query("ROLLBACK").catch(() => undefined);
        throw error;
      } finally {
        conn.release();
      }
    },
    exec: async (script) => {
      await pool.query(script);
    },
    close: () => pool.end(),
  };
}
