import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createIdGenerator,
  migrate,
  openPglite,
  openPostgres,
  type SqlClient,
  Store,
} from "../../src/index.js";

/** A database for one test: migrated, isolated, and dropped by `close`. */
export interface TestDatabase {
  readonly name: "pglite" | "postgres";
  readonly db: SqlClient;
  /** A store on this database with the given clock (default: real time). */
  store(clock?: () => number): Store;
  /**
   * Another client on the same data, as another process would open (PostgreSQL: a pool of its
   * own; PGlite, one process's database, has none). The caller closes it.
   */
  connect(): Promise<SqlClient>;
  close(): Promise<void>;
}

/** The PostgreSQL URL the suite runs against, when set (CI sets it); tests read it here only. */
export const POSTGRES_URL = process.env.DATABASE_URL?.trim() || null;

/** A fresh in-memory PGlite database. */
export async function pgliteDatabase(): Promise<TestDatabase> {
  const db = await openPglite();
  await migrate(db);
  return {
    name: "pglite",
    db,
    store: (clock) => new Store(db, { clock, newId: createIdGenerator(clock) }),
    connect: () => Promise.reject(new Error("PGlite is one process's database: use PostgreSQL")),
    close: () => db.close(),
  };
}

/** A fresh schema on the real PostgreSQL, so test files can run side by side. */
export async function postgresDatabase(url: string, options: { max?: number } = {}): Promise<TestDatabase> {
  const schema = `dd_test_${randomBytes(6).toString("hex")}`;
  const admin = await openPostgres(url, { max: 1 });
  await admin.exec(`CREATE SCHEMA ${schema}`);
  const db = await openPostgres(url, { schema, max: options.max ?? 10 });
  await migrate(db);
  return {
    name: "postgres",
    db,
    store: (clock) => new Store(db, { clock, newId: createIdGenerator(clock) }),
    connect: () => openPostgres(url, { schema, max: options.max ?? 10 }),
    close: async () => {
      await db.close();
      await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
      await admin.close();
    },
  };
}

/**
 * The backends every storage test runs on: PGlite always, PostgreSQL when DATABASE_URL is
 * set. Use: `for (const backend of backends()) describe(backend.name, () => ...)`.
 */
export function backends(): { name: "pglite" | "postgres"; open: () => Promise<TestDatabase> }[] {
  const list: { name: "pglite" | "postgres"; open: () => Promise<TestDatabase> }[] = [
    { name: "pglite", open: pgliteDatabase },
  ];
  if (POSTGRES_URL) list.push({ name: "postgres", open: () => postgresDatabase(POSTGRES_URL) });
  return list;
}

/**
 * A database that outlives its connections, for restart tests: `restart` drops the current
 * client and opens a new one on the same data, as a server process coming back up would.
 * PGlite keeps its data in a temporary folder (really closed and reopened); PostgreSQL keeps a
 * fresh schema (a new pool). `close` drops the data.
 */
export interface RestartableDatabase {
  readonly name: "pglite" | "postgres";
  /** The client of the current "process". */
  readonly db: SqlClient;
  /** Closes the current client and opens (and migrates, as a server start does) a new one. */
  restart(): Promise<SqlClient>;
  close(): Promise<void>;
}

/** A {@link RestartableDatabase} on the named backend (PostgreSQL needs DATABASE_URL). */
export async function restartableDatabase(name: "pglite" | "postgres"): Promise<RestartableDatabase> {
  let open: () => Promise<SqlClient>;
  let drop: () => Promise<void>;
  if (name === "pglite") {
    const dir = mkdtempSync(join(tmpdir(), "drawdown-restart-"));
    open = () => openPglite(dir);
    drop = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    if (!POSTGRES_URL) throw new Error("set DATABASE_URL for a PostgreSQL database");
    const url = POSTGRES_URL;
    const schema = `dd_test_${randomBytes(6).toString("hex")}`;
    const admin = await openPostgres(url, { max: 1 });
    await admin.exec(`CREATE SCHEMA ${schema}`);
    open = () => openPostgres(url, { schema, max: 10 });
    drop = async () => {
      await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
      await admin.close();
    };
  }
  let db = await open();
  await migrate(db);
  return {
    name,
    get db() {
      return db;
    },
    restart: async () => {
      await db.close();
      db = await open();
      await migrate(db);
      return db;
    },
    close: async () => {
      await db.close();
      await drop();
    },
  };
}
