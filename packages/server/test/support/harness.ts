import type { PrivateNetworkPolicy } from "@drawdown/core";
import {
  Commerce,
  createIdGenerator,
  manualProvider,
  type PaymentProvider,
  type Resolver,
  type SqlClient,
  Store,
  testProvider,
  Webhooks,
} from "@drawdown/storage";
import { backends, type TestDatabase } from "@drawdown/storage/testing";
import { buildApp } from "../../src/app.js";
import { startScheduler } from "../../src/server.js";

export { backends, POSTGRES_URL, postgresDatabase } from "@drawdown/storage/testing";

/** A server listening on a free loopback port, with one tenant and its secret key. */
export interface TestServer {
  readonly url: string;
  readonly store: Store;
  readonly database: TestDatabase;
  readonly tenantId: string;
  /** The tenant's secret key. */
  readonly key: string;
  /** Creates another tenant with its own secret key (for cross-tenant tests). */
  newTenant(name?: string): Promise<{ tenantId: string; key: string }>;
  /** Stops the server (and its scheduler); closes the database unless it was shared in. */
  close(): Promise<void>;
}

/**
 * Starts the real HTTP app on a database of `backend` ("pglite" by default). The clock is
 * injectable so tests can move time without sleeping. With `database` (PostgreSQL), the
 * server runs on that one, through a connection pool of its own, instead of a fresh one, and
 * leaves it open on close: several servers on one database are several instances of one
 * deployment. With `schedulerMs`, it runs the
 * scheduler as the real server does (none by default). Webhooks refuse private networks, as
 * in production, unless `webhookPrivateNetworks` is `allow` (a test with a local receiver);
 * `webhookResolver` resolves their host names instead of DNS.
 */
export async function startTestServer(
  options: {
    backend?: "pglite" | "postgres";
    clock?: () => number;
    database?: TestDatabase;
    schedulerMs?: number;
    /** How long the instance caches an authenticated key (the store's default when absent). */
    keyCacheMs?: number;
    webhookPrivateNetworks?: PrivateNetworkPolicy;
    webhookResolver?: Resolver;
    /** Payment providers besides `manual` and `test`. */
    paymentProviders?: readonly PaymentProvider[];
  } = {},
): Promise<TestServer> {
  let database = options.database;
  if (!database) {
    const backend = backends().find((b) => b.name === (options.backend ?? "pglite"));
    if (!backend)
      throw new Error(`backend ${options.backend} is not available (set DATABASE_URL for postgres)`);
    database = await backend.open();
  }
  const db = database;
  // Sharing a database: a client of its own, as another process of the deployment.
  const own: SqlClient | null = options.database ? await db.connect() : null;
  const store = own
    ? new Store(own, {
        clock: options.clock,
        newId: createIdGenerator(options.clock),
        ...(options.keyCacheMs === undefined ? {} : { keyCacheMs: options.keyCacheMs }),
      })
    : db.store(options.clock);
  const privateNetworks = options.webhookPrivateNetworks ?? "deny";
  const app = await buildApp({
    store,
    config: { bodyLimit: 1024 * 1024, logRequests: false, webhookPrivateNetworks: privateNetworks },
    ...(options.webhookResolver
      ? { webhooks: new Webhooks(store, { privateNetworks, resolve: options.webhookResolver }) }
      : {}),
    ...(options.paymentProviders
      ? { commerce: new Commerce(store, [manualProvider, testProvider, ...options.paymentProviders]) }
      : {}),
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  const scheduler = startScheduler(store, options.schedulerMs ?? 0);
  // As the real server does: revocations and clock moves made by another instance are heard at once.
  const instances = await store.listenToOtherInstances();
  const newTenant = async (name = "Test") => {
    const tenant = await store.createTenant(name, "test");
    const key = await store.createApiKey(tenant.id, { kind: "secret", name: "test" });
    if (!key.ok) throw new Error(key.error.message);
    return { tenantId: tenant.id, key: key.value.secret };
  };
  const first = await newTenant();
  return {
    url,
    store,
    database: db,
    tenantId: first.tenantId,
    key: first.key,
    newTenant,
    close: async () => {
      await scheduler.stop();
      await instances.close();
      await app.close();
      if (own) await own.close();
      else await db.close();
    },
  };
}
