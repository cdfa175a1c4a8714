/**
 * @drawdown/storage: the ledger on PostgreSQL's dialect, embedded (PGlite) or served
 * (PostgreSQL 15+), with the same migrations and queries on both.
 */

export * from "./alerts.js";
export * from "./caps.js";
export * from "./commerce.js";
export * from "./contracts.js";
export * from "./gifts.js";
export * from "./hold-writer.js";
export * from "./holds.js";
export * from "./ids.js";
export * from "./ingest.js";
export * from "./metering.js";
export * from "./migrations.js";
export * from "./outbox.js";
export * from "./overage.js";
export * from "./records.js";
export * from "./run-resume.js";
export * from "./runs.js";
export * from "./sql.js";
export * from "./store.js";
export * from "./subscriptions.js";
export * from "./webhook-http.js";
export * from "./webhooks.js";
