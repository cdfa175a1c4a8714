import { PGlite } from "@electric-sql/pglite";
import pg from "pg";

/** A row as the driver returns it. Amount columns arrive as decimal strings. */
export type Row = Record<string, unknown>;

/** Runs SQL. Both the whole database and a transaction are executors. */
export interface SqlExecutor {
  /** Runs one parameterized statement. */
  query<T extends Row = Row>(
    text: string,
    params?: readonly unknown[],
  ): Promise<{ rows: T[]; rowCount: number }>;
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
  return {
    kind: "pglite",
    query: (text, params) => run(db, text, params),
    transaction: (fn) => db.transaction((tx) => fn({ query: (text, params) => run(tx, text, params) })),
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
  return {
    kind: "postgres",
    query: (text, params) => run(pool, text, params),
    transaction: async (fn) => {
      const conn = await pool.connect();
      try {
        await conn.query("BEGIN");
        const result = await fn({ query: (text, params) => run(conn, text, params) });
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
