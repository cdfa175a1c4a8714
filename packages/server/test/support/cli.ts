import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { credits } from "@drawdown/core";
import { createIdGenerator, Metering, migrate, openPostgres, type SqlClient, Store } from "@drawdown/storage";

const CLI = fileURLToPath(new URL("../../../../cli/dist/src/main.js", import.meta.url));

/** Starts `drawdown serve` as a child process on the database; resolves with its URL once it listens. */
export async function serveCli(
  databaseUrl: string,
  env: Record<string, string> = {},
): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [CLI, "serve"], {
    env: { ...process.env, DATABASE_URL: databaseUrl, PORT: "0", HOST: "127.0.0.1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code} before listening`)));
  });
  return { url, child };
}

/** A new, migrated PostgreSQL database for a test that runs servers as processes; `drop` removes it. */
export interface ScratchDatabase {
  readonly databaseUrl: string;
  readonly db: SqlClient;
  readonly store: Store;
  readonly metering: Metering;
  drop(): Promise<void>;
}

export async function scratchDatabase(baseUrl: string, prefix: string): Promise<ScratchDatabase> {
  const name = `${prefix}_${randomBytes(5).toString("hex")}`;
  const admin = await openPostgres(baseUrl, { max: 1 });
  await admin.exec(`CREATE DATABASE ${name}`);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  const db = await openPostgres(url.toString(), { max: 4 });
  await migrate(db);
  const store = new Store(db, { newId: createIdGenerator() });
  return {
    databaseUrl: url.toString(),
    db,
    store,
    metering: new Metering(() => store.now(), store.newId),
    drop: async () => {
      await db.close();
      await admin.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.close();
    },
  };
}

/**
 * A tenant with a secret key, `count` customers each holding `amount` credits, and a card
 * pricing `chat.completion` by `tokens` at `rate`.
 */
export async function seedTenant(
  scratch: ScratchDatabase,
  options: { count: number; amount: bigint; rate: string },
): Promise<{ tenantId: string; secret: string; customers: string[] }> {
  const { db, store, metering } = scratch;
  const tenant = await store.createTenant("Processes", "test");
  const key = await store.createApiKey(tenant.id, { kind: "secret", name: "test" });
  if (!key.ok) throw new Error(key.error.message);
  const customers: string[] = [];
  await db.transaction(async (tx) => {
    for (let i = 0; i < options.count; i++) {
      const c = await store.createCustomer(tx, tenant.id, { kind: "organization" });
      if (!c.ok) throw new Error(c.error.message);
      await store.createGrant(tx, tenant.id, {
        walletId: c.value.walletId,
        amount: credits(options.amount),
        source: "purchase",
      });
      customers.push(c.value.id);
    }
    const card = await metering.createRateCard(tx, tenant.id, "default");
    if (!card.ok) throw new Error(card.error.message);
    await metering.publishRateCardVersion(tx, tenant.id, card.value.id, null, {
      lines: [{ id: "tokens", action: "chat.completion", quantity: "tokens", rate: options.rate }],
    });
  });
  return { tenantId: tenant.id, secret: key.value.secret, customers };
}
