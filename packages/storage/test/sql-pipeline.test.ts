// The SqlExecutor contract for statements issued without waiting (pipelined on PostgreSQL):
// order, snapshots after a lock, atomicity when a statement nobody awaited fails, COPY between
// statements. The writers rely on each of these.

import assert from "node:assert/strict";
import { Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import type { SqlExecutor } from "../src/index.js";
import { backends, POSTGRES_URL, type TestDatabase } from "./support/backends.js";

for (const backend of backends()) {
  describe(`pipelined transactions (${backend.name})`, () => {
    let t: TestDatabase;
    before(async () => {
      t = await backend.open();
      await t.db.exec("CREATE TABLE pipe_items (id text PRIMARY KEY, n integer NOT NULL)");
    });
    after(() => t.close());

    test("statements issued together run in the order issued, each answering its own caller", async () => {
      const results = await t.db.transaction((tx) =>
        Promise.all([
          tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["order-a", 1]),
          tx.query("UPDATE pipe_items SET n = n + $2 WHERE id = $1 RETURNING n", ["order-a", 10]),
          tx.query("UPDATE pipe_items SET n = n * $2 WHERE id = $1 RETURNING n", ["order-a", 3]),
          tx.query("SELECT n FROM pipe_items WHERE id = $1", ["order-a"]),
          tx.query("SELECT n FROM pipe_items WHERE id = $1", ["missing"]),
        ]),
      );
      assert.deepEqual(
        results.map((r) => r.rows.map((row) => Number(row.n))),
        [[], [11], [33], [33], []],
      );
      assert.equal(results[0]!.rowCount, 1);
    });

    test("a statement nobody awaited that fails rolls the whole transaction back", async () => {
      await assert.rejects(
        t.db.transaction(async (tx) => {
          void tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["atomic-a", 1]);
          void tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["atomic-a", 2]); // duplicate key
          void tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["atomic-b", 3]);
          return "done";
        }),
      );
      const { rows } = await t.db.query("SELECT id FROM pipe_items WHERE id LIKE 'atomic-%'");
      assert.deepEqual(rows, []);
    });

    test("a failed transaction reports its first failed statement, whichever rejection reached the caller first", async () => {
      await t.db.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["first-taken", 0]);
      // A caller that takes its time before passing the failure on (it logs, or cleans up): the
      // statements after it have failed ("current transaction is aborted") by then.
      const deep = async (tx: SqlExecutor) => {
        try {
          return await tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["first-taken", 1]);
        } catch (error) {
          await new Promise((r) => setTimeout(r, 50));
          throw error;
        }
      };
      const error = await t.db
        .transaction(async (tx) => {
          const writes = [
            deep(tx), // a unique violation, passed on late
            tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["first-later", 2]), // then aborted
            tx.query("SELECT 1 AS one"),
          ];
          await Promise.all(writes);
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      assert.equal((error as { code?: string } | null)?.code, "23505");
      const { rows } = await t.db.query("SELECT id FROM pipe_items WHERE id = 'first-later'");
      assert.deepEqual(rows, []);
    });

    test("a failure thrown before the statements answer still waits for them, then rolls back", async () => {
      await assert.rejects(
        t.db.transaction(async (tx) => {
          void tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["thrown-a", 1]);
          throw new Error("planned failure");
        }),
        /planned failure/,
      );
      // The connection is clean for the next transaction, and nothing of the failed one landed.
      await t.db.transaction((tx) =>
        tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["thrown-b", 1]),
      );
      const { rows } = await t.db.query("SELECT id FROM pipe_items WHERE id LIKE 'thrown-%' ORDER BY id");
      assert.deepEqual(
        rows.map((r) => r.id),
        ["thrown-b"],
      );
    });

    test("COPY between pipelined statements keeps their order", async () => {
      const counts = await t.db.transaction(async (tx) => {
        const first = tx.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["copy-0", 0]);
        const copied = tx.copyFrom(
          "pipe_items",
          ["id", "n"],
          Array.from({ length: 100 }, (_, i) => [`copy-${i + 1}`, String(i + 1)]),
        );
        const count = tx.query(
          "SELECT count(*)::int AS c, sum(n)::int AS s FROM pipe_items WHERE id LIKE 'copy-%'",
        );
        await Promise.all([first, copied]);
        return (await count).rows[0];
      });
      assert.deepEqual({ c: Number(counts?.c), s: Number(counts?.s) }, { c: 101, s: 5050 });
    });

    if (backend.name === "postgres") {
      test("statements issued in one tick leave in one socket write, and later ones still go out", async () => {
        // Every write of a socket to PostgreSQL's port, counted at the stream's own methods.
        const postgresPort = Number(new URL(POSTGRES_URL ?? "").port || 5432);
        const proto = Socket.prototype as unknown as Record<
          "_writev" | "_write",
          (...a: unknown[]) => unknown
        >;
        const original = { _writev: proto._writev, _write: proto._write };
        let writes = 0;
        for (const m of ["_writev", "_write"] as const) {
          proto[m] = function (this: Socket, ...a: unknown[]) {
            if (this.remotePort === postgresPort) writes++;
            return original[m].apply(this, a);
          };
        }
        try {
          const [together, later] = await t.db.transaction(async (tx) => {
            const reads = Array.from({ length: 8 }, (_, i) => tx.query("SELECT $1::int AS n", [i]));
            const first = writes;
            const answers = await Promise.all(reads);
            const after = writes;
            // A statement issued after an await (the next tick) is sent, and answers.
            const last = await tx.query("SELECT $1::int AS n", [8]);
            return [
              [first, after, answers.map((r) => Number(r.rows[0]?.n))],
              Number(last.rows[0]?.n),
            ] as const;
          });
          // Nothing left before the tick ended; BEGIN and the eight statements then left together.
          assert.equal(together[0], 0);
          assert.equal(together[1], 1);
          assert.deepEqual(together[2], [0, 1, 2, 3, 4, 5, 6, 7]);
          assert.equal(later, 8);
        } finally {
          Object.assign(proto, original);
        }
      });

      test("a read sent right after a row lock sees what was committed before the lock was granted", async () => {
        await t.db.query("INSERT INTO pipe_items (id, n) VALUES ($1, $2)", ["locked", 0]);
        await t.db.exec("CREATE TABLE pipe_side (id text PRIMARY KEY, n integer NOT NULL)");
        let release!: () => void;
        const held = new Promise<void>((r) => {
          release = r;
        });
        let locked!: () => void;
        const isLocked = new Promise<void>((r) => {
          locked = r;
        });
        // The first transaction holds the lock, writes a side row, and commits.
        const first = t.db.transaction(async (tx) => {
          await tx.query("SELECT id FROM pipe_items WHERE id = $1 FOR UPDATE", ["locked"]);
          locked();
          await held;
          await tx.query("INSERT INTO pipe_side (id, n) VALUES ($1, $2)", ["side", 7]);
        });
        await isLocked;
        // The second sends its lock and its read together; the read runs once the lock is granted.
        const second = t.db.transaction((tx) =>
          Promise.all([
            tx.query("SELECT id FROM pipe_items WHERE id = $1 FOR UPDATE", ["locked"]),
            tx.query("SELECT n FROM pipe_side WHERE id = $1", ["side"]),
          ]),
        );
        await new Promise((r) => setTimeout(r, 50));
        release();
        await first;
        const [, side] = await second;
        assert.deepEqual(
          side.rows.map((r) => Number(r.n)),
          [7],
        );
      });
    }
  });
}
