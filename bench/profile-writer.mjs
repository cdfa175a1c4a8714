// Profiles the ingest writer alone (no HTTP) on PostgreSQL: node --cpu-prof bench/profile-writer.mjs

import { credits } from "@drawdown/core";
import { createIdGenerator, IngestWriter, Metering, migrate, openPostgres, Store } from "@drawdown/storage";
import pg from "pg";

const BASE_URL = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test";
const admin = new pg.Client({ connectionString: BASE_URL });
await admin.connect();
const dbName = `drawdown_prof_${process.pid}`;
await admin.query(`CREATE DATABASE ${dbName}`);
const url = new URL(BASE_URL);
url.pathname = `/${dbName}`;
const db = await openPostgres(url.toString(), { max: 8 });
try {
  await migrate(db);
  const timings = new Map();
  const origTx = db.transaction;
  db.transaction = (fn) =>
    origTx((tx) =>
      fn({
        copyFrom: async (t, c, r) => {
          const s = performance.now();
          try {
            return await tx.copyFrom(t, c, r);
          } finally {
            timings.set("COPY " + t, (timings.get("COPY " + t) ?? 0) + performance.now() - s);
          }
        },
        query: async (text, params) => {
          const s = performance.now();
          try {
            return await tx.query(text, params);
          } finally {
            const k = text.replace(/\s+/g, " ").slice(0, 70);
            timings.set(k, (timings.get(k) ?? 0) + performance.now() - s);
          }
        },
      }),
    );
  globalThis.__timings = timings;
  const store = new Store(db, { newId: createIdGenerator() });
  const metering = new Metering(() => store.now(), store.newId);
  const writer = new IngestWriter(store, metering);
  const t = await store.createTenant("P", "test");
  const customers = [];
  for (let i = 0; i < 2000; i++) {
    const c = (await db.transaction((tx) => store.createCustomer(tx, t.id, { kind: "organization" }))).value;
    await db.transaction((tx) =>
      store.createGrant(tx, t.id, { walletId: c.walletId, amount: credits(1000000n), source: "purchase" }),
    );
    customers.push(c.id);
  }
  await db.transaction(async (tx) => {
    const card = await metering.createRateCard(tx, t.id, "default");
    await metering.publishRateCardVersion(tx, t.id, card.value.id, null, {
      lines: [{ id: "in", action: "chat", quantity: "tokens", rate: "0.001" }],
    });
  });
  timings.clear();
  let seq = 0;
  const batch = (hot) =>
    Array.from({ length: 1000 }, () => ({
      event: {
        id: `e${++seq}`,
        customerId: hot ? customers[0] : customers[Math.floor(Math.random() * customers.length)],
        subjectId: null,
        action: "chat",
        dimensions: {},
        quantities: { tokens: 1000n * 10n ** 9n },
        time: Date.now(),
        status: "succeeded",
        runId: null,
        reportedCost: null,
      },
      fingerprint: `f${seq}`,
    }));
  for (const hot of [false, true]) {
    const start = performance.now();
    for (let i = 0; i < 20; i++) await writer.submit(t.id, batch(hot));
    console.log(hot ? "hot" : "spread", "events/s", Math.round(20000 / ((performance.now() - start) / 1000)));
    console.log(
      [...timings]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 12)
        .map(([k, v]) => v.toFixed(0).padStart(7) + " ms " + k)
        .join("\n"),
    );
    timings.clear();
  }
} finally {
  await db.close();
  await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
  await admin.end();
}
