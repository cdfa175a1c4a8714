import cluster, { type Worker } from "node:cluster";
import { once } from "node:events";
import { join } from "node:path";
import { type Config, openDatabase, seedDemo, startServer } from "@drawdown/server";
import { createIdGenerator, type SqlClient, Store } from "@drawdown/storage";

/** Opens the database for an admin command; the embedded one is migrated on open. */
export async function open(config: Config): Promise<{ db: SqlClient; store: Store }> {
  const db = await openDatabase(config);
  return { db, store: new Store(db, { newId: createIdGenerator() }) };
}

/** What a worker tells the primary once it listens. */
interface Listening {
  readonly type: "drawdown.listening";
  readonly url: string;
}

/**
 * `drawdown serve`: one process, or with `DRAWDOWN_WORKERS` above 1 a primary that forks that
 * many server processes sharing the port (node:cluster hands connections out among them).
 *
 * Several workers are several instances on one database, which DESIGN.md already allows:
 * correctness comes from row locks and unique constraints, the scheduler and the webhook
 * deliverer take leases, and each worker's group-commit writers lock wallets in id order. The
 * primary holds no data; it seeds the demo (once, before forking), prints where to connect,
 * replaces a worker that dies, and stops them all on SIGINT or SIGTERM.
 */
export async function serve(config: Config, options: { demo: boolean }): Promise<void> {
  if (config.workers > 1 && cluster.isPrimary) return primary(config, options);
  const server = await startServer(config);
  let closing: Promise<void> | null = null;
  const stop = (code: number) => {
    closing ??= server.close().then(() => process.exit(code));
    return closing;
  };
  process.once("SIGINT", () => stop(0));
  process.once("SIGTERM", () => stop(0));
  if (cluster.isWorker) {
    // The primary is gone (killed, say): nothing hands this worker connections any more.
    process.once("disconnect", () => stop(1));
    process.send?.({ type: "drawdown.listening", url: server.url } satisfies Listening);
    return;
  }
  const demo = options.demo ? await seedDemo(server.store, demoKeyFile(config)) : null;
  process.stdout.write(banner(server.url, demo, config));
}

async function primary(config: Config, options: { demo: boolean }): Promise<void> {
  let demo: { secret: string; created: boolean } | null = null;
  if (options.demo) {
    const { db, store } = await open(config);
    try {
      demo = await seedDemo(store, demoKeyFile(config));
    } finally {
      await db.close();
    }
  }
  let stopping = false;
  const fork = (replacement = false): Promise<string> => {
    const worker = cluster.fork();
    return new Promise<string>((resolve, reject) => {
      const onMessage = (m: Listening) => {
        if (m?.type !== "drawdown.listening") return;
        worker.off("exit", onEarlyExit);
        worker.once("exit", (code, signal) => replace(worker, code, signal));
        if (replacement) process.stderr.write(`drawdown: worker ${worker.process.pid} is listening\n`);
        resolve(m.url);
      };
      // A worker that cannot start (say, migrations pending) printed why; the primary gives up.
      const onEarlyExit = (code: number | null) =>
        reject(new Error(`a server worker exited (code ${code}) before listening`));
      worker.on("message", onMessage);
      worker.once("exit", onEarlyExit);
    });
  };
  const replace = (worker: Worker, code: number | null, signal: string | null) => {
    if (stopping) return;
    process.stderr.write(
      `drawdown: worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); starting another\n`,
    );
    restart(1);
  };
  // A replacement that cannot start (the database away, say) is tried again, waiting twice as
  // long each time, up to a minute, until one listens.
  const restart = (attempt: number) => {
    if (stopping) return;
    fork(true).catch((error: unknown) => {
      const waitMs = Math.min(60_000, 500 * 2 ** attempt);
      process.stderr.write(`drawdown: ${String(error)}; trying again in ${waitMs / 1000} s\n`);
      setTimeout(() => restart(attempt + 1), waitMs);
    });
  };
  const stopAll = async () => {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
    await Promise.all(
      workers.map(async (w) => {
        if (w.isDead()) return;
        const exited = once(w, "exit");
        w.process.kill("SIGTERM");
        await exited;
      }),
    );
  };
  const stop = async () => {
    await stopAll();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  let urls: string[];
  try {
    urls = await Promise.all(Array.from({ length: config.workers }, () => fork()));
  } catch (error) {
    await stopAll();
    throw error;
  }
  process.stdout.write(banner(urls[0]!, demo, config));
}

function demoKeyFile(config: Config): string {
  return join(config.dataDir, "..", "demo-key");
}

function banner(
  url: string,
  demo: { secret: string; created: boolean } | null,
  config: Pick<Config, "workers" | "webhookPrivateNetworks">,
): string {
  const workers = config.workers;
  const lines = [
    `Drawdown is listening on ${url}${workers > 1 ? ` (${workers} worker processes)` : ""}`,
    `  API reference: ${url}/reference`,
  ];
  // Said out loud: allowing private networks is for a trusted network, not an exposed one.
  if (config.webhookPrivateNetworks === "allow")
    lines.push(
      "  Webhooks may go to private and loopback addresses (DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS=allow)",
    );
  if (demo) {
    if (demo.secret) lines.push(`  Demo secret key${demo.created ? " (new)" : ""}: ${demo.secret}`);
    else lines.push("  Create a key with: drawdown keys create --tenant <id>");
    lines.push(`  Try: curl -H "Authorization: Bearer ${demo.secret || "<key>"}" ${url}/v1/customers`);
  }
  return `${lines.join("\n")}\n`;
}
