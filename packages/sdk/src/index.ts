/**
 * @drawdown/sdk: the typed TypeScript client of the Drawdown API.
 *
 * @example
 * import { Drawdown, toUnits } from "@drawdown/sdk";
 * const dd = new Drawdown({ apiKey: process.env.DRAWDOWN_KEY!, baseUrl: "http://127.0.0.1:4020" });
 * const b = await dd.wallets.balance("wal_01jd0s7k2mqx3v8r9t5w6y7z8a");
 * console.log(b.available, toUnits(b.available));
 */
export { toCredits, toUnits, UNITS_PER_CREDIT } from "./amounts.js";
export { type SpendCap, type SpendCapCreateParams, SpendCaps } from "./caps.js";
export { Drawdown, type DrawdownOptions, publicRateCard } from "./client.js";
export {
  API_ERROR_CODES,
  API_ERROR_STATUS,
  type ApiErrorCode,
  DrawdownConnectionError,
  DrawdownError,
  type DrawdownErrorCode,
  type FieldError,
} from "./errors.js";
export {
  type Authorization,
  type AuthorizeParams,
  type EstimateInput,
  type Hold,
  type HoldListParams,
  type HoldStatus,
  Holds,
  type SettleEventInput,
  type SettleParams,
} from "./holds.js";
export { ApiPromise, type ApiResponse } from "./http.js";
export {
  Adjustments,
  Alerts,
  ApiKeys,
  AutoTopUps,
  Contracts,
  CostTables,
  Customers,
  Events,
  Gifts,
  Grants,
  OverageInvoices,
  Plans,
  PocAllocations,
  PriceBooks,
  Purchases,
  paginate,
  RateCards,
  Reports,
  Subjects,
  Subscriptions,
  TestClocks,
  Transactions,
  Wallets,
  Webhooks,
} from "./resources.js";
export {
  type Run,
  type RunListParams,
  type RunSettings,
  type RunStartParams,
  type RunStatus,
  type RunStep,
  type RunStepParams,
  type RunStepResult,
  type RunStepSettleParams,
  type RunStepStatus,
  Runs,
} from "./runs.js";
export type * from "./types.js";
