/**
 * @drawdown/core: the pure ledger. No I/O and no runtime dependencies; the clock and the
 * id generator are passed in, so every function here is deterministic and property-tested.
 */
export * from "./addresses.js";
export * from "./alerts.js";
export * from "./amount.js";
export * from "./burndown.js";
export * from "./caps.js";
export * from "./commerce.js";
export * from "./contracts.js";
export * from "./holds.js";
export * from "./journal.js";
export * from "./ledger.js";
export * from "./lifecycle.js";
export * from "./model.js";
export * from "./overage.js";
export * from "./override-terms.js";
export * from "./rating.js";
export * from "./result.js";
export * from "./runs.js";
export * from "./time.js";
export * from "./usage.js";
export * from "./webhooks.js";
