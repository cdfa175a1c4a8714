#!/usr/bin/env node
import { parseArgs } from "node:util";
import { loadConfig, MigrationsPending } from "@drawdown/server";
import { migrate, openPglite, openPostgres } from "@drawdown/storage";
import { open, serve } from "./serve.js";

const HELP = `drawdown: the credit ledger for AI products

Usage:
  drawdown serve [--demo]                 Start the API (embedded PGlite unless DATABASE_URL is set).
                                          --demo seeds a demo tenant on a new database and prints its key.
  drawdown migrate                        Apply pending migrations (safe to run from several hosts at once).
  drawdown reconcile [--tenant ID]        Recompute balances from the journal; exit 1 on any difference.
  drawdown tenants create --name N [--env test|live]
  drawdown tenants list
  drawdown keys create --tenant ID [--name N] [--restricted --customer ID]
  drawdown keys revoke --tenant ID --key KEY_ID

Environment: DATABASE_URL, DRAWDOWN_DATA_DIR, HOST, PORT, DRAWDOWN_BODY_LIMIT, DRAWDOWN_POOL_SIZE,
DRAWDOWN_WORKERS (server processes; more than 1 needs DATABASE_URL),
DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS (deny: webhooks never go to private, loopback or link-local
addresses; allow: they may. Default deny; allow with serve --demo).
`;

function fail(message: string): never {
  process.stderr.write(`drawdown: ${message}\n`);
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      demo: { type: "boolean" },
      tenant: { type: "string" },
      name: { type: "string" },
      env: { type: "string" },
      restricted: { type: "boolean" },
      customer: { type: "string" },
      key: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, sub] = positionals;
  if (values.help || !command) {
    process.stdout.write(HELP);
    return command ? 0 : 2;
  }
  // The one place that reads the process environment. The demo's webhooks may reach receivers
  // on this machine unless DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS says otherwise.
  const parsed = loadConfig(process.env, {}, { demo: command === "serve" && values.demo === true });
  if (!parsed.ok) fail(parsed.error.message);
  const config = parsed.value;

  switch (command) {
    case "serve":
      await serve(config, { demo: values.demo === true });
      return -1;
    case "migrate": {
      const db = config.databaseUrl
        ? await openPostgres(config.databaseUrl)
        : await openPglite(config.dataDir);
      const applied = await migrate(db);
      await db.close();
      process.stdout.write(
        applied.length ? `Applied migrations ${applied.join(", ")}.\n` : "The schema is up to date.\n",
      );
      return 0;
    }
    case "reconcile": {
      const { db, store } = await open(config);
      const report = await store.reconcile(values.tenant ?? null);
      await db.close();
      process.stdout.write(
        `Checked ${report.wallets} wallets, ${report.grants} grants, ${report.transactions} transactions: ` +
          `${report.differences.length === 0 ? "no differences." : `${report.differences.length} differences:`}\n`,
      );
      for (const d of report.differences)
        process.stdout.write(`  ${d.kind} ${d.id} (tenant ${d.tenantId}): ${d.message}\n`);
      return report.differences.length === 0 ? 0 : 1;
    }
    case "tenants": {
      const { db, store } = await open(config);
      try {
        if (sub === "create") {
          if (!values.name) fail("tenants create needs --name");
          const env = values.env ?? "test";
          if (env !== "test" && env !== "live") fail("--env is test or live");
          const t = await store.createTenant(values.name, env);
          process.stdout.write(`${t.id}\t${t.environment}\t${t.name}\n`);
        } else if (sub === "list") {
          for (const t of await store.listTenants())
            process.stdout.write(`${t.id}\t${t.environment}\t${t.name}\n`);
        } else fail("tenants create | tenants list");
      } finally {
        await db.close();
      }
      return 0;
    }
    case "keys": {
      if (!values.tenant) fail(`keys ${sub ?? ""} needs --tenant`);
      const { db, store } = await open(config);
      try {
        if (sub === "create") {
          if (values.customer && !values.restricted)
            fail("--customer is for restricted keys; add --restricted");
          const r = await store.createApiKey(values.tenant, {
            kind: values.restricted ? "restricted" : "secret",
            name: values.name ?? "CLI key",
            customerId: values.customer ?? null,
          });
          if (!r.ok) fail(r.error.message);
          process.stdout.write(`${r.value.secret}\n`);
          process.stderr.write(
            `Key ${r.value.key.id} (${r.value.key.kind}). This is the only time the key is shown.\n`,
          );
        } else if (sub === "revoke") {
          if (!values.key) fail("keys revoke needs --key");
          const r = await store.revokeApiKey(values.tenant, values.key);
          if (!r.ok) fail(r.error.message);
          process.stdout.write(`Revoked ${r.value.id}.\n`);
        } else fail("keys create | keys revoke");
      } finally {
        await db.close();
      }
      return 0;
    }
    default:
      fail(`unknown command "${command}"; see drawdown --help`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    if (error instanceof MigrationsPending) fail(error.message);
    process.stderr.write(
      `drawdown: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
