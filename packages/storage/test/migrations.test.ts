/**
 * Migrations on PGlite and (when DATABASE_URL is set) PostgreSQL: applied once, in order,
 * atomically, and safely when several migrators start at once.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import {
  MIGRATIONS,
  type Migration,
  migrate,
  openPglite,
  openPostgres,
  pendingMigrations,
  SchemaTooNew,
  type SqlClient,
  splitStatements,
} from "../src/index.js";
import { POSTGRES_URL } from "./support/backends.js";

/** An empty, unmigrated database, plus (on PostgreSQL) more pools onto the same schema. */
interface FreshDatabase {
  readonly db: SqlClient;
  /** Another client on the same database; PostgreSQL only (PGlite is one in-process client). */
  connect(): Promise<SqlClient>;
  close(): Promise<void>;
}

let pglite: Promise<SqlClient> | undefined;
after(async () => {
  await (await pglite)?.close();
});

function freshBackends(): { name: "pglite" | "postgres"; open: () => Promise<FreshDatabase> }[] {
  const list: { name: "pglite" | "postgres"; open: () => Promise<FreshDatabase> }[] = [
    {
      name: "pglite",
      // One embedded instance (starting one takes seconds), a fresh schema per test.
      open: async () => {
        pglite ??= openPglite();
        const db = await pglite;
        const schema = `dd_mig_${randomBytes(6).toString("hex")}`;
        await db.exec(`CREATE SCHEMA ${schema}; SET search_path TO ${schema}`);
        return {
          db,
          connect: () => Promise.reject(new Error("PGlite has one client")),
          close: () => db.exec(`DROP SCHEMA ${schema} CASCADE; SET search_path TO public`),
        };
      },
    },
  ];
  const url = POSTGRES_URL;
  if (url) {
    list.push({
      name: "postgres",
      open: async () => {
        const schema = `dd_mig_${randomBytes(6).toString("hex")}`;
        const admin = await openPostgres(url, { max: 1 });
        await admin.exec(`CREATE SCHEMA ${schema}`);
        const clients: SqlClient[] = [];
        const connect = async () => {
          const client = await openPostgres(url, { schema, max: 2 });
          clients.push(client);
          return client;
        };
        const db = await connect();
        return {
          db,
          connect,
          close: async () => {
            for (const client of clients) await client.close();
            await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
            await admin.close();
          },
        };
      },
    });
  }
  return list;
}

const ALL = MIGRATIONS.map((m) => m.version);

async function applied(db: SqlClient): Promise<{ version: number; name: string }[]> {
  const { rows } = await db.query<{ version: number; name: string }>(
    "SELECT version, name FROM schema_migrations ORDER BY version",
  );
  return rows.map((r) => ({ version: Number(r.version), name: String(r.name) }));
}

async function tableExists(db: SqlClient, name: string): Promise<boolean> {
  const { rows } = await db.query<{ t: string | null }>("SELECT to_regclass($1)::text AS t", [name]);
  return rows[0]?.t !== null && rows[0]?.t !== undefined;
}

const EXTRA: Migration = {
  version: 1000,
  name: "extra",
  sql: `
-- a comment line between statements
CREATE TABLE extra_things (id integer PRIMARY KEY, note text);
CREATE FUNCTION extra_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- a comment inside the body stays
  NEW.note := coalesce(NEW.note, 'touched;');
  RETURN NEW;
END $$;
CREATE TRIGGER extra_things_touch BEFORE INSERT ON extra_things
  FOR EACH ROW EXECUTE FUNCTION extra_touch();
`,
};

for (const backend of freshBackends()) {
  describe(`migrations on ${backend.name}`, () => {
    test("a fresh database gets every migration once; migrating again applies nothing", async () => {
      const fresh = await backend.open();
      try {
        assert.deepEqual(await pendingMigrations(fresh.db), ALL);
        assert.deepEqual(await migrate(fresh.db), ALL);
        assert.deepEqual(await pendingMigrations(fresh.db), []);
        assert.deepEqual(await migrate(fresh.db), []);
        assert.deepEqual(await migrate(fresh.db), []);
        assert.deepEqual(
          await applied(fresh.db),
          MIGRATIONS.map((m) => ({ version: m.version, name: m.name })),
        );
        for (const table of [
          "tenants",
          "api_keys",
          "customers",
          "subjects",
          "wallets",
          "grants",
          "grant_changes",
          "journal_transactions",
          "journal_entries",
          "idempotency_keys",
        ]) {
          assert.ok(await tableExists(fresh.db, table), `${table} exists`);
        }
      } finally {
        await fresh.close();
      }
    });

    test("a later migration is pending until applied, $$ bodies and all", async () => {
      const fresh = await backend.open();
      try {
        await migrate(fresh.db);
        const list = [...MIGRATIONS, EXTRA];
        assert.deepEqual(await pendingMigrations(fresh.db, list), [EXTRA.version]);
        assert.deepEqual(await migrate(fresh.db, list), [EXTRA.version]);
        assert.deepEqual(await pendingMigrations(fresh.db, list), []);
        assert.deepEqual(await migrate(fresh.db, list), []);
        // The function body survived the split whole: the trigger runs it.
        await fresh.db.query("INSERT INTO extra_things (id) VALUES (1)");
        const { rows } = await fresh.db.query("SELECT note FROM extra_things WHERE id = 1");
        assert.equal(rows[0]?.note, "touched;");
        // A build that knows fewer migrations than the database refuses to run.
        await assert.rejects(migrate(fresh.db), SchemaTooNew);
        await assert.rejects(pendingMigrations(fresh.db), SchemaTooNew);
        assert.deepEqual(
          (await applied(fresh.db)).map((m) => m.version),
          [...ALL, EXTRA.version],
        );
      } finally {
        await fresh.close();
      }
    });

    test("a failing migration applies nothing, not even its earlier statements", async () => {
      const fresh = await backend.open();
      try {
        await migrate(fresh.db);
        const good: Migration = { version: 2000, name: "good", sql: "CREATE TABLE good_one (id integer);" };
        const bad: Migration = {
          version: 2001,
          name: "bad",
          sql: "CREATE TABLE half_done (id integer);\nSELECT 1 / 0;\n",
        };
        await assert.rejects(migrate(fresh.db, [...MIGRATIONS, good, bad]), /division by zero/);
        assert.equal(await tableExists(fresh.db, "half_done"), false);
        assert.equal(await tableExists(fresh.db, "good_one"), false, "one transaction for the whole run");
        assert.deepEqual(await pendingMigrations(fresh.db, [...MIGRATIONS, good, bad]), [2000, 2001]);
        assert.deepEqual(await migrate(fresh.db, [...MIGRATIONS, good]), [2000]);
        assert.ok(await tableExists(fresh.db, "good_one"));
      } finally {
        await fresh.close();
      }
    });

    test("migrations apply in version order whatever the list order", async () => {
      const fresh = await backend.open();
      try {
        const a: Migration = {
          version: 3000,
          name: "a",
          sql: "CREATE TABLE ordered_a (id integer PRIMARY KEY);",
        };
        const b: Migration = {
          version: 3001,
          name: "b",
          sql: "CREATE TABLE ordered_b (a integer REFERENCES ordered_a (id));",
        };
        assert.deepEqual(await migrate(fresh.db, [b, ...MIGRATIONS, a]), [...ALL, 3000, 3001]);
      } finally {
        await fresh.close();
      }
    });

    if (backend.name === "postgres") {
      test("migrators started at once on one fresh schema: each version applied exactly once", async () => {
        for (let round = 0; round < 5; round++) {
          const fresh = await backend.open();
          try {
            const others = await Promise.all([fresh.connect(), fresh.connect(), fresh.connect()]);
            const results = await Promise.all([fresh.db, ...others].map((db) => migrate(db)));
            const winners = results.filter((r) => r.length > 0);
            assert.equal(winners.length, 1, `round ${round}: one migrator applies, the others find nothing`);
            assert.deepEqual(winners[0], ALL);
            assert.ok(results.every((r) => r.length === 0 || r.length === ALL.length));
            const { rows } = await fresh.db.query<{ version: number; n: number }>(
              "SELECT version, count(*)::int AS n FROM schema_migrations GROUP BY version ORDER BY version",
            );
            assert.deepEqual(
              rows.map((r) => [Number(r.version), Number(r.n)]),
              ALL.map((v) => [v, 1]),
            );
            for (const db of [fresh.db, ...others]) assert.deepEqual(await pendingMigrations(db), []);
          } finally {
            await fresh.close();
          }
        }
      });

      test("migrators on different schemas do not wait for each other", async () => {
        const [one, two] = await Promise.all([backend.open(), backend.open()]);
        try {
          const [a, b] = await Promise.all([migrate(one!.db), migrate(two!.db)]);
          assert.deepEqual(a, ALL);
          assert.deepEqual(b, ALL);
        } finally {
          await one?.close();
          await two?.close();
        }
      });
    }
  });
}

describe("splitStatements", () => {
  test("splits on semicolons at line ends and drops comment lines between statements", () => {
    assert.deepEqual(
      splitStatements("-- heading\nCREATE TABLE a (x int);\n\n  -- note\nCREATE INDEX i ON a (x);\nSELECT 1"),
      ["CREATE TABLE a (x int);", "CREATE INDEX i ON a (x);", "SELECT 1"],
    );
    assert.deepEqual(splitStatements("CREATE TABLE b (\n  x int,\n  y text\n);\n"), [
      "CREATE TABLE b (\n  x int,\n  y text\n);",
    ]);
    assert.deepEqual(splitStatements("SELECT 'a;b' AS x, 2;"), ["SELECT 'a;b' AS x, 2;"]);
    assert.deepEqual(splitStatements("\n\n"), []);
  });

  test("keeps $$ bodies whole, with their semicolons and comments", () => {
    const body = `CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- inside the body
  PERFORM 1;
  RAISE EXCEPTION 'no; never';
END $$;`;
    assert.deepEqual(splitStatements(`${body}\nCREATE TABLE t (x int);\n`), [
      body,
      "CREATE TABLE t (x int);",
    ]);
    // $$ opened and closed on one line.
    assert.deepEqual(
      splitStatements("CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nSELECT 2;"),
      ["CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;", "SELECT 2;"],
    );
  });

  test("the shipped migrations split into whole statements", () => {
    const all: string[] = [];
    for (const m of MIGRATIONS) {
      const statements = splitStatements(m.sql);
      assert.ok(statements.length > 0);
      for (const s of statements) {
        assert.match(
          s,
          /^(CREATE|ALTER|INSERT|UPDATE|DROP|COMMENT|DO)\b/,
          `statement starts a command: ${s.slice(0, 60)}`,
        );
        assert.ok(s.endsWith(";"), `statement ends whole: ${s.slice(-60)}`);
        assert.equal((s.match(/\$\$/g) ?? []).length % 2, 0, "no $$ body is cut");
      }
      all.push(...statements);
    }
    const fn = all.find((s) => s.includes("drawdown_append_only() RETURNS trigger"));
    assert.ok(fn?.includes("RAISE EXCEPTION") && fn.endsWith("END $$;"), "the append-only function is whole");
  });
});
