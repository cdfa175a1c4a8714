/** @drawdown/server: the HTTP API over the store. */
export { type AppOptions, buildApp } from "./app.js";
export { type Config, loadConfig } from "./config.js";
export { CONTRACT_ROUTES } from "./contract-routes.js";
export { seedDemo } from "./demo.js";
export { type ApiErrorCode, ERRORS, type Problem } from "./errors.js";
export { GIFT_ROUTES } from "./gift-routes.js";
export { LIFECYCLE_ROUTES } from "./lifecycle-routes.js";
export { METERING_ROUTES } from "./metering-routes.js";
export { buildOpenApi } from "./openapi.js";
export { ROUTES } from "./routes.js";
export { MigrationsPending, openDatabase, type RunningServer, startServer } from "./server.js";
