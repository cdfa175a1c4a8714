import { randomBytes } from "node:crypto";
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
