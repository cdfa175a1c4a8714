import { fail, ok, type Result } from "@drawdown/core";

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
}

const DEFAULTS = {
  dataDir: ".drawdown/data",
  host: "127.0.0.1",
  port: 4020,
  bodyLimit: 1024 * 1024,
  poolSize: 10,
  schedulerMs: 5_000,
  writerLanes: 2,
  webhookTimeoutMs: 10_000,
  webhookPollMs: 1_000,
};

function integer(
  name: string,
  text: string | undefined,
  fallback: number,
  min: number,
  max: number,
): Result<number> {
  if (text === undefined || text === "") return ok(fallback);
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    return fail("invalid_argument", `${name} must be an integer from ${min} to ${max}, not "${text}".`);
  }
  return ok(Number(text));
}

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
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  overrides: Partial<Config> = {},
): Result<Config> {
  const databaseUrl = env.DATABASE_URL?.trim() || null;
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    return fail("invalid_argument", "DATABASE_URL must be a postgres:// or postgresql:// URL.");
  }
  const port = integer("PORT", env.PORT, DEFAULTS.port, 0, 65535);
  if (!port.ok) return port;
  const bodyLimit = integer(
    "DRAWDOWN_BODY_LIMIT",
    env.DRAWDOWN_BODY_LIMIT,
    DEFAULTS.bodyLimit,
    1024,
    64 * 1024 * 1024,
  );
  if (!bodyLimit.ok) return bodyLimit;
  const poolSize = integer("DRAWDOWN_POOL_SIZE", env.DRAWDOWN_POOL_SIZE, DEFAULTS.poolSize, 1, 500);
  if (!poolSize.ok) return poolSize;
  const schedulerMs = integer(
    "DRAWDOWN_SCHEDULER_MS",
    env.DRAWDOWN_SCHEDULER_MS,
    DEFAULTS.schedulerMs,
    0,
    3_600_000,
  );
  if (!schedulerMs.ok) return schedulerMs;
  const writerLanes = integer(
    "DRAWDOWN_WRITER_LANES",
    env.DRAWDOWN_WRITER_LANES,
    DEFAULTS.writerLanes,
    1,
    16,
  );
  if (!writerLanes.ok) return writerLanes;
  const webhookTimeoutMs = integer(
    "DRAWDOWN_WEBHOOK_TIMEOUT_MS",
    env.DRAWDOWN_WEBHOOK_TIMEOUT_MS,
    DEFAULTS.webhookTimeoutMs,
    100,
    120_000,
  );
  if (!webhookTimeoutMs.ok) return webhookTimeoutMs;
  const webhookPollMs = integer(
    "DRAWDOWN_WEBHOOK_POLL_MS",
    env.DRAWDOWN_WEBHOOK_POLL_MS,
    DEFAULTS.webhookPollMs,
    0,
    3_600_000,
  );
  if (!webhookPollMs.ok) return webhookPollMs;
  return ok({
    databaseUrl,
    dataDir: env.DRAWDOWN_DATA_DIR || DEFAULTS.dataDir,
    host: env.HOST || DEFAULTS.host,
    port: port.value,
    bodyLimit: bodyLimit.value,
    poolSize: poolSize.value,
    logRequests: env.DRAWDOWN_LOG_REQUESTS === "1",
    schedulerMs: schedulerMs.value,
    writerLanes: writerLanes.value,
    webhookTimeoutMs: webhookTimeoutMs.value,
    webhookPollMs: webhookPollMs.value,
    ...overrides,
  });
}
