import { fail, ok, PRIVATE_NETWORK_POLICIES, type PrivateNetworkPolicy, type Result } from "@drawdown/core";

/** The server's configuration, parsed and validated once at start. */
export interface Config {
  /** PostgreSQL URL; null runs on the embedded PGlite database. */
  readonly databaseUrl: string | null;
  /** Where PGlite keeps its data when no database URL is set. */
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  /** Largest accepted request body, in bytes. */
  readonly bodyLimit: number;
  /** PostgreSQL pool size. */
  readonly poolSize: number;
  /** Log each request to stderr. */
  readonly logRequests: boolean;
  /** How often the scheduler runs due effects (expiries), in ms; 0 turns it off. */
  readonly schedulerMs: number;
  /** Lanes of the ingest writer on PostgreSQL (customers split by hash; one batch in flight each). */
  readonly writerLanes: number;
  /** How long one webhook POST may take, answer included, in ms. */
  readonly webhookTimeoutMs: number;
  /** How often the webhook deliverer looks for due deliveries, in ms; 0 leaves it to the scheduler. */
  readonly webhookPollMs: number;
  /**
   * Whether webhooks may go to private, loopback, link-local and other non-public addresses
   * (server-side request forgery protection): `deny` refuses them when an endpoint's URL is
   * set and again at every connection.
   */
  readonly webhookPrivateNetworks: PrivateNetworkPolicy;
  /**
   * Server processes sharing the port (`drawdown serve`): one per core uses every core. More
   * than one needs PostgreSQL (PGlite lives inside one process). Each has its own pool.
   */
  readonly workers: number;
}

const DEFAULTS = {
  dataDir: ".drawdown/data",
  host: "127.0.0.1",
};

type IntegerSetting =
  | "port"
  | "bodyLimit"
  | "poolSize"
  | "schedulerMs"
  | "writerLanes"
  | "webhookTimeoutMs"
  | "webhookPollMs"
  | "workers";

/** The integer settings: their variable, default and bounds, checked in this order. */
const INTEGERS: readonly { key: IntegerSetting; env: string; fallback: number; min: number; max: number }[] =
  [
    { key: "port", env: "PORT", fallback: 4020, min: 0, max: 65535 },
    { key: "bodyLimit", env: "DRAWDOWN_BODY_LIMIT", fallback: 1024 * 1024, min: 1024, max: 64 * 1024 * 1024 },
    { key: "poolSize", env: "DRAWDOWN_POOL_SIZE", fallback: 10, min: 1, max: 500 },
    { key: "schedulerMs", env: "DRAWDOWN_SCHEDULER_MS", fallback: 5_000, min: 0, max: 3_600_000 },
    { key: "writerLanes", env: "DRAWDOWN_WRITER_LANES", fallback: 2, min: 1, max: 16 },
    { key: "webhookTimeoutMs", env: "DRAWDOWN_WEBHOOK_TIMEOUT_MS", fallback: 10_000, min: 100, max: 120_000 },
    { key: "webhookPollMs", env: "DRAWDOWN_WEBHOOK_POLL_MS", fallback: 1_000, min: 0, max: 3_600_000 },
    { key: "workers", env: "DRAWDOWN_WORKERS", fallback: 1, min: 1, max: 64 },
  ];

/**
 * Reads the configuration from an environment (the process's, passed in by the entry point;
 * nothing else reads `process.env`).
 *
 * - `DATABASE_URL`: PostgreSQL 15+; unset runs on embedded PGlite.
 * - `DRAWDOWN_DATA_DIR`: PGlite's folder (default `.drawdown/data`).
 * - `HOST`, `PORT`: where to listen (default 127.0.0.1:4020).
 * - `DRAWDOWN_BODY_LIMIT`: largest request body in bytes (default 1 MiB).
 * - `DRAWDOWN_POOL_SIZE`: PostgreSQL connections (default 10).
 * - `DRAWDOWN_LOG_REQUESTS`: `1` to log requests.
 * - `DRAWDOWN_WRITER_LANES`: ingest writer lanes on PostgreSQL (default 2).
 * - `DRAWDOWN_SCHEDULER_MS`: how often due effects run (default 5000; 0: never, e.g. in tests).
 * - `DRAWDOWN_WEBHOOK_TIMEOUT_MS`: how long one webhook POST may take (default 10000).
 * - `DRAWDOWN_WEBHOOK_POLL_MS`: how often due webhooks are sent (default 1000; 0: only with the scheduler).
 * - `DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS`: `deny` (the default) or `allow` webhooks to private,
 *   loopback and link-local addresses. The demo (`context.demo`, `drawdown serve --demo`)
 *   defaults to `allow`: a playground whose receivers run on the same machine.
 * - `DRAWDOWN_WORKERS`: server processes sharing the port (default 1; more needs `DATABASE_URL`).
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  overrides: Partial<Config> = {},
  context: { readonly demo?: boolean } = {},
): Result<Config> {
  const databaseUrl = env.DATABASE_URL?.trim() || null;
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    return fail("invalid_argument", "DATABASE_URL must be a postgres:// or postgresql:// URL.");
  }
  const integers = {} as Record<IntegerSetting, number>;
  for (const { key, env: name, fallback, min, max } of INTEGERS) {
    const text = env[name];
    if (text === undefined || text === "") {
      integers[key] = fallback;
      continue;
    }
    if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
      return fail("invalid_argument", `${name} must be an integer from ${min} to ${max}, not "${text}".`);
    }
    integers[key] = Number(text);
  }
  if (integers.workers > 1 && databaseUrl === null) {
    return fail(
      "invalid_argument",
      "DRAWDOWN_WORKERS above 1 needs DATABASE_URL: the embedded database lives inside one process.",
    );
  }
  const privateNetworks = env.DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS;
  let webhookPrivateNetworks: PrivateNetworkPolicy = context.demo === true ? "allow" : "deny";
  if (privateNetworks !== undefined && privateNetworks !== "") {
    if (!(PRIVATE_NETWORK_POLICIES as readonly string[]).includes(privateNetworks))
      return fail(
        "invalid_argument",
        `DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS must be allow or deny, not "${privateNetworks.slice(0, 50)}".`,
      );
    webhookPrivateNetworks = privateNetworks as PrivateNetworkPolicy;
  }
  return ok({
    databaseUrl,
    dataDir: env.DRAWDOWN_DATA_DIR || DEFAULTS.dataDir,
    host: env.HOST || DEFAULTS.host,
    ...integers,
    logRequests: env.DRAWDOWN_LOG_REQUESTS === "1",
    webhookPrivateNetworks,
    ...overrides,
  });
}
