import type { Store } from "@drawdown/storage";
import { backends, type TestDatabase } from "@drawdown/storage/testing";
import { buildApp } from "../../src/app.js";

export { backends, POSTGRES_URL } from "@drawdown/storage/testing";

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
  close(): Promise<void>;
}

/**
 * Starts the real HTTP app on a database of `backend` ("pglite" by default). The clock is
 * injectable so tests can move time without sleeping.
 */
export async function startTestServer(
  options: { backend?: "pglite" | "postgres"; clock?: () => number } = {},
): Promise<TestServer> {
  const backend = backends().find((b) => b.name === (options.backend ?? "pglite"));
  if (!backend)
    throw new Error(`backend ${options.backend} is not available (set DATABASE_URL for postgres)`);
  const database = await backend.open();
  const store = database.store(options.clock);
  const app = await buildApp({ store, config: { bodyLimit: 1024 * 1024, logRequests: false } });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
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
    database,
    tenantId: first.tenantId,
    key: first.key,
    newTenant,
    close: async () => {
      await app.close();
      await database.close();
    },
  };
}
