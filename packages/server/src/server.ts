import { mkdirSync } from "node:fs";
import {
  createIdGenerator,
  migrate,
  openPglite,
  openPostgres,
  pendingMigrations,
  type SqlClient,
  Store,
  Webhooks,
} from "@drawdown/storage";
import type { FastifyInstance } from "fastify";
import { buildApp } from "./app.js";
import type { Config } from "./config.js";

/** Thrown at start when PostgreSQL's schema is behind: run `drawdown migrate` first. */
export class MigrationsPending extends Error {
  override name = "MigrationsPending";
}

/**
 * Opens the configured database. The embedded PGlite database is migrated here, at start;
 * PostgreSQL is migrated by `drawdown migrate` (a deploy step), and a server refuses to
 * start on a schema that is behind.
 */
export async function openDatabase(
  config: Pick<Config, "databaseUrl" | "dataDir" | "poolSize">,
): Promise<SqlClient> {
  if (config.databaseUrl === null) {
    mkdirSync(config.dataDir, { recursive: true });
    const db = await openPglite(config.dataDir);
    await migrate(db);
    return db;
  }
  const db = await openPostgres(config.databaseUrl, { max: config.poolSize });
  const pending = await pendingMigrations(db);
  if (pending.length > 0) {
    await db.close();
    throw new MigrationsPending(
      `The database needs migrations ${pending.join(", ")}; run \`drawdown migrate\` first.`,
    );
  }
  return db;
}

/** A running server. */
export interface RunningServer {
  readonly url: string;
  readonly app: FastifyInstance;
  readonly store: Store;
  close(): Promise<void>;
}

/** Opens the database, builds the app and listens. */
export async function startServer(
  config: Config,
  options: { clock?: () => number } = {},
): Promise<RunningServer> {
  const db = await openDatabase(config);
  const clock = options.clock ?? Date.now;
  const store = new Store(db, { clock, newId: createIdGenerator(clock) });
  const webhooks = new Webhooks(store, {
    timeoutMs: config.webhookTimeoutMs,
    privateNetworks: config.webhookPrivateNetworks,
  });
  const app = await buildApp({ store, config, webhooks });
  const address = await app.listen({ host: config.host, port: config.port });
  const scheduler = startScheduler(store, config.schedulerMs);
  const instances = await store.listenToOtherInstances();
  // Webhooks go out sooner than the scheduler's tick; both are safe together (leases).
  const deliverer = startLoop("drawdown webhooks", () => webhooks.run(null), config.webhookPollMs);
  return {
    url: address.replace("[::1]", "localhost"),
    app,
    store,
    close: async () => {
      await scheduler.stop();
      await deliverer.stop();
      await instances.close();
      await app.close();
      await db.close();
    },
  };
}

/**
 * Runs due effects (expiries) every `everyMs`, one run at a time. Safe with several instances:
 * each effect goes through the locked write pipeline and happens once. A run that fails is
 * logged and retried at the next tick; nothing due is lost, since "due" is read from the data.
 */
export function startScheduler(store: Store, everyMs: number): { stop(): Promise<void> } {
  return startLoop("drawdown scheduler", () => store.runDue(), everyMs);
}

/** Runs `work` every `everyMs`, one run at a time; a failed run is logged and tried again next tick. */
function startLoop(name: string, work: () => Promise<unknown>, everyMs: number): { stop(): Promise<void> } {
  if (everyMs <= 0) return { stop: async () => undefined };
  let running: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    if (running) return;
    running = work()
      .catch((error: unknown) => console.error(`${name}:`, error))
      .finally(() => {
        running = null;
      });
  }, everyMs);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await running;
    },
  };
}
