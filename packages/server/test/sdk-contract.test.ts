import assert from "node:assert/strict";
import { test } from "node:test";
import type * as Sdk from "@drawdown/sdk";
import { API_ERROR_STATUS, Drawdown } from "@drawdown/sdk";
import type { Static } from "@sinclair/typebox";
import type * as A from "../src/alert-routes.js";
import type * as SC from "../src/cap-routes.js";
import type * as CM from "../src/commerce-routes.js";
import type * as C from "../src/contract-routes.js";
import { type ApiErrorCode, ERRORS } from "../src/errors.js";
import { type CloudEvent, NativeEvent } from "../src/events.js";
import type * as G from "../src/gift-routes.js";
import type * as H from "../src/hold-routes.js";
import type * as L from "../src/lifecycle-routes.js";
import type * as M from "../src/metering-routes.js";
import type * as O from "../src/overage-routes.js";
import type * as R from "../src/run-routes.js";
import type * as S from "../src/schemas.js";
import type * as W from "../src/webhook-routes.js";
import { ALL_ROUTES, routeOf } from "./support/contract.js";

/**
 * The SDK writes its own wire types (it never imports the server); this file proves they
 * match the server's schemas, at compile time, and that the SDK has a method per route.
 */

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assignable<A, B> = [A] extends [B] ? true : false;
/** Compiles only when given `true`. */
const check = <T extends true>(_proof?: T): void => {};

type Item<L> = L extends { data: (infer T)[] } ? T : never;

// Responses: the same fields, and every SDK value is a valid wire value.
check<Equal<keyof Sdk.Customer, keyof Static<typeof S.CustomerView>>>();
check<Assignable<Sdk.Customer, Static<typeof S.CustomerView>>>();
check<Equal<keyof Sdk.Subject, keyof Static<typeof S.SubjectView>>>();
check<Assignable<Sdk.Subject, Static<typeof S.SubjectView>>>();
check<Equal<keyof Sdk.Wallet, keyof Static<typeof S.WalletView>>>();
check<Assignable<Sdk.Wallet, Static<typeof S.WalletView>>>();
check<Equal<keyof Sdk.Grant, keyof Static<typeof S.GrantView>>>();
check<Assignable<Sdk.Grant, Static<typeof S.GrantView>>>();
check<Equal<keyof Sdk.GrantChange, keyof NonNullable<Static<typeof S.GrantView>["changes"]>[number]>>();
check<Equal<keyof Sdk.GrantCreated, keyof Static<typeof S.GrantCreated>>>();
check<Assignable<Sdk.GrantCreated, Static<typeof S.GrantCreated>>>();
check<Equal<keyof Sdk.Entry, keyof Static<typeof S.EntryView>>>();
check<Assignable<Sdk.Entry, Static<typeof S.EntryView>>>();
check<Equal<keyof Sdk.Transaction, keyof Static<typeof S.TransactionView>>>();
check<Assignable<Sdk.Transaction, Static<typeof S.TransactionView>>>();
check<Equal<keyof Sdk.Balance, keyof Static<typeof S.BalanceView>>>();
check<Equal<keyof Sdk.BalanceGrant, keyof Static<typeof S.BalanceView>["grants"][number]>>();
check<Equal<keyof Sdk.ScopeBalance, keyof Static<typeof S.BalanceView>["scopes"][number]>>();
check<Assignable<Sdk.Balance, Static<typeof S.BalanceView>>>();
check<Equal<keyof Sdk.ReconcileReport, keyof Static<typeof S.ReconcileView>>>();
check<Assignable<Sdk.ReconcileReport, Static<typeof S.ReconcileView>>>();
check<Equal<keyof Sdk.ApiKey, keyof Static<typeof S.ApiKeyView>>>();
check<Assignable<Sdk.ApiKey, Static<typeof S.ApiKeyView>>>();
check<Equal<keyof Sdk.TestClock, keyof Static<typeof S.TestClockView>>>();
check<Assignable<Sdk.TestClock, Static<typeof S.TestClockView>>>();
check<Equal<keyof Sdk.TestClockAdvanced, keyof Static<typeof S.TestClockAdvanced>>>();
check<Assignable<Sdk.TestClockAdvanced, Static<typeof S.TestClockAdvanced>>>();
check<Equal<keyof Sdk.Problem, keyof Static<typeof S.ProblemView>>>();
check<Equal<keyof Sdk.List<Sdk.Grant>, keyof Static<ReturnType<typeof S.ListOf<typeof S.GrantView>>>>>();
check<Equal<Item<Sdk.List<Sdk.Grant>>, Sdk.Grant>>();

// Request bodies: the same fields, and every valid wire body is accepted by the SDK as it is.
check<Equal<keyof Sdk.CustomerCreateParams, keyof Static<typeof S.CustomerCreate>>>();
check<Assignable<Static<typeof S.CustomerCreate>, Sdk.CustomerCreateParams>>();
check<Equal<keyof Sdk.SubjectCreateParams, keyof Static<typeof S.SubjectCreate>>>();
check<Assignable<Static<typeof S.SubjectCreate>, Sdk.SubjectCreateParams>>();
check<Equal<keyof Sdk.WalletCreateParams, keyof Static<typeof S.WalletCreate>>>();
check<Assignable<Static<typeof S.WalletCreate>, Sdk.WalletCreateParams>>();
check<Equal<keyof Sdk.GrantCreateParams, keyof Static<typeof S.GrantCreate>>>();
check<Assignable<Static<typeof S.GrantCreate>, Sdk.GrantCreateParams>>();
check<Equal<keyof Sdk.CreditAdjustmentParams, keyof Static<typeof S.CreditAdjustment>>>();
check<Assignable<Static<typeof S.CreditAdjustment>, Sdk.CreditAdjustmentParams>>();
check<Equal<keyof Sdk.DebitAdjustmentParams, keyof Static<typeof S.DebitAdjustment>>>();
check<Assignable<Static<typeof S.DebitAdjustment>, Sdk.DebitAdjustmentParams>>();
check<Equal<keyof Sdk.GrantVoidParams, keyof Static<typeof S.GrantVoid>>>();
check<Assignable<Static<typeof S.GrantVoid>, Sdk.GrantVoidParams>>();
check<Equal<keyof Sdk.GrantExtendParams, keyof Static<typeof S.GrantExtend>>>();
check<Assignable<Static<typeof S.GrantExtend>, Sdk.GrantExtendParams>>();
check<Equal<keyof Sdk.ReversalParams, keyof Static<typeof S.Reversal>>>();
check<Assignable<Static<typeof S.Reversal>, Sdk.ReversalParams>>();
check<Equal<keyof Sdk.ApiKeyCreateParams, keyof Static<typeof S.ApiKeyCreate>>>();
check<Assignable<Static<typeof S.ApiKeyCreate>, Sdk.ApiKeyCreateParams>>();
// The test clock's advance takes exactly one of its fields (the handler checks it): each alone.
type Advance = Static<typeof S.TestClockAdvance>;
check<Equal<keyof Sdk.TestClockAdvanceParams, keyof Advance>>();
check<Assignable<{ to: NonNullable<Advance["to"]> }, Sdk.TestClockAdvanceParams>>();
check<Assignable<{ seconds: NonNullable<Advance["seconds"]> }, Sdk.TestClockAdvanceParams>>();
// …and the SDK's type refuses both, or neither, as the handler does.
check<Equal<Assignable<{ to: string; seconds: number }, Sdk.TestClockAdvanceParams>, false>>();
check<Equal<Assignable<Record<string, never>, Sdk.TestClockAdvanceParams>, false>>();

// Metering: responses and request bodies whose schemas are named.
check<Equal<keyof Sdk.Charge, keyof Static<typeof M.ChargeView>>>();
check<Assignable<Sdk.Charge, Static<typeof M.ChargeView>>>();
check<Equal<keyof Sdk.EventResult, keyof Static<typeof M.EventResult>>>();
check<Assignable<Sdk.EventResult, Static<typeof M.EventResult>>>();
check<Equal<keyof Sdk.RateLine, keyof Static<typeof M.RateLineWire>>>();
check<Assignable<Sdk.RateLine, Static<typeof M.RateLineWire>>>();
check<Equal<keyof Sdk.RateCardVersion, keyof Static<typeof M.VersionView>>>();
check<Assignable<Sdk.RateCardVersion, Static<typeof M.VersionView>>>();
check<Equal<keyof Sdk.RateCard, keyof Static<typeof M.CardView>>>();
check<Assignable<Sdk.RateCard, Static<typeof M.CardView>>>();
check<Equal<keyof Sdk.MarginRow, keyof Static<typeof M.MarginRow>>>();
check<Assignable<Sdk.MarginRow, Static<typeof M.MarginRow>>>();
check<Equal<keyof Sdk.RateLineInput, keyof Static<typeof M.RateLineWire>>>();
check<Assignable<Static<typeof M.RateLineWire>, Sdk.RateLineInput>>();
check<Equal<keyof Sdk.CustomerPricing, keyof Static<typeof M.CustomerPricingView>>>();
check<Assignable<Sdk.CustomerPricing, Static<typeof M.CustomerPricingView>>>();
check<Equal<keyof Sdk.OverrideTerms, keyof Static<typeof M.OverrideTermsView>>>();
check<Equal<keyof Sdk.BasePricing, keyof Static<typeof M.BasePricingView>>>();
check<Equal<keyof Sdk.CustomerPricingParams, keyof Static<typeof M.CustomerPricingSet>>>();
check<Assignable<Static<typeof M.CustomerPricingSet>, Sdk.CustomerPricingParams>>();
check<Equal<keyof Sdk.RateCardVersionParams, keyof Static<typeof M.RateCardVersionCreate>>>();
check<Assignable<Static<typeof M.RateCardVersionCreate>, Sdk.RateCardVersionParams>>();
check<Equal<keyof Sdk.UsageEventInput, keyof Static<typeof NativeEvent>>>();
check<Assignable<Static<typeof NativeEvent>, Sdk.UsageEventInput>>();
check<Assignable<Static<typeof CloudEvent>, Sdk.CloudEventInput>>();

// Overage policies.
check<Equal<keyof Sdk.OveragePolicy, keyof Static<typeof O.OverageView>>>();
check<Assignable<Sdk.OveragePolicy, Static<typeof O.OverageView>>>();
check<Equal<keyof Sdk.OveragePolicyParams, keyof Static<typeof O.OveragePolicyWire>>>();
check<Assignable<Static<typeof O.OveragePolicyWire>, Sdk.OveragePolicyParams>>();
check<Equal<keyof Sdk.OverageInvoice, keyof Static<typeof O.OverageInvoiceView>>>();
check<Assignable<Sdk.OverageInvoice, Static<typeof O.OverageInvoiceView>>>();

// Plans and subscriptions.
check<Equal<keyof Sdk.Plan, keyof Static<typeof L.PlanView>>>();
check<Assignable<Sdk.Plan, Static<typeof L.PlanView>>>();
check<Equal<keyof Sdk.PlanInterval, keyof Static<typeof L.IntervalWire>>>();
check<Equal<keyof Sdk.RolloverPolicy, keyof Static<typeof L.RolloverWire>>>();
check<Assignable<Sdk.RolloverPolicy, Static<typeof L.RolloverWire>>>();
check<Equal<keyof Sdk.ExpiryPolicy, keyof Static<typeof L.ExpiryWire>>>();
check<Assignable<Sdk.ExpiryPolicy, Static<typeof L.ExpiryWire>>>();
check<Equal<keyof Sdk.Subscription, keyof Static<typeof L.SubscriptionView>>>();
check<Assignable<Sdk.Subscription, Static<typeof L.SubscriptionView>>>();
check<Equal<keyof Sdk.MemberAllocation, keyof Static<typeof L.MemberAllocationView>>>();
check<Assignable<Sdk.MemberAllocation, Static<typeof L.MemberAllocationView>>>();
check<
  Equal<
    keyof NonNullable<Sdk.MemberAllocation["period"]>,
    keyof NonNullable<Static<typeof L.MemberAllocationView>["period"]>
  >
>();
check<Equal<keyof Sdk.PlanCreateParams, keyof Static<typeof L.PlanCreate>>>();
check<Assignable<Static<typeof L.PlanCreate>, Sdk.PlanCreateParams>>();
check<Equal<keyof Sdk.RolloverPolicyInput, keyof Static<typeof L.RolloverWire>>>();
check<Equal<keyof Sdk.RolloverCapInput, keyof NonNullable<Static<typeof L.RolloverWire>["cap"]>>>();
check<Equal<keyof Sdk.ExpiryPolicyInput, keyof Static<typeof L.ExpiryWire>>>();
check<Equal<keyof Sdk.SubscriptionCreateParams, keyof Static<typeof L.SubscriptionCreate>>>();
check<Assignable<Static<typeof L.SubscriptionCreate>, Sdk.SubscriptionCreateParams>>();
check<Equal<keyof Sdk.SeatChangeParams, keyof Static<typeof L.SeatChange>>>();
check<Assignable<Static<typeof L.SeatChange>, Sdk.SeatChangeParams>>();
check<Equal<keyof Sdk.PlanChangeParams, keyof Static<typeof L.PlanChange>>>();
check<Assignable<Static<typeof L.PlanChange>, Sdk.PlanChangeParams>>();

// Gifts and referrals.
check<Equal<keyof Sdk.GiftCode, keyof Static<typeof G.GiftCodeView>>>();
check<Assignable<Sdk.GiftCode, Static<typeof G.GiftCodeView>>>();
check<Equal<keyof Sdk.GiftClaim, keyof Static<typeof G.GiftClaimView>>>();
check<Assignable<Sdk.GiftClaim, Static<typeof G.GiftClaimView>>>();
check<Equal<keyof Sdk.Referral, keyof Static<typeof G.ReferralView>>>();
check<Assignable<Sdk.Referral, Static<typeof G.ReferralView>>>();
check<Equal<keyof Sdk.GiftReport, keyof Static<typeof G.GiftReport>>>();
check<Equal<keyof Sdk.GiftReportRow, keyof Static<typeof G.GiftReportRow>>>();
check<Assignable<Sdk.GiftReport, Static<typeof G.GiftReport>>>();
check<Equal<keyof Sdk.GiftCodeCreateParams, keyof Static<typeof G.GiftCodeCreate>>>();
check<Assignable<Static<typeof G.GiftCodeCreate>, Sdk.GiftCodeCreateParams>>();
check<Equal<keyof Sdk.GiftCodeClaimParams, keyof Static<typeof G.GiftCodeClaim>>>();
check<Assignable<Static<typeof G.GiftCodeClaim>, Sdk.GiftCodeClaimParams>>();
check<Equal<keyof Sdk.GiftCreateParams, keyof Static<typeof G.GiftCreate>>>();
check<Assignable<Static<typeof G.GiftCreate>, Sdk.GiftCreateParams>>();
check<Equal<keyof Sdk.ReferralCreateParams, keyof Static<typeof G.ReferralCreate>>>();
check<Assignable<Static<typeof G.ReferralCreate>, Sdk.ReferralCreateParams>>();

// Contracts and proof-of-concept allocations.
check<Equal<keyof Sdk.Contract, keyof Static<typeof C.ContractView>>>();
check<Assignable<Sdk.Contract, Static<typeof C.ContractView>>>();
check<Equal<keyof Sdk.ContractInstallment, keyof Static<typeof C.InstallmentView>>>();
check<Equal<keyof Sdk.Contract["totals"], keyof Static<typeof C.ContractView>["totals"]>>();
check<Equal<keyof Sdk.InstallmentScheduleInput, keyof Static<typeof C.ScheduleWire>>>();
check<Equal<keyof Sdk.ContractCreateParams, keyof Static<typeof C.ContractCreate>>>();
check<Assignable<Static<typeof C.ContractCreate>, Sdk.ContractCreateParams>>();
check<Equal<keyof Sdk.ContractTerminateParams, keyof Static<typeof C.ContractTerminate>>>();
check<Assignable<Static<typeof C.ContractTerminate>, Sdk.ContractTerminateParams>>();
check<Equal<keyof Sdk.PocAllocation, keyof Static<typeof C.PocView>>>();
check<Assignable<Sdk.PocAllocation, Static<typeof C.PocView>>>();
check<Equal<keyof Sdk.PocAllocationCreateParams, keyof Static<typeof C.PocCreate>>>();
check<Assignable<Static<typeof C.PocCreate>, Sdk.PocAllocationCreateParams>>();
// Top-ups and the price book.
check<Equal<keyof Sdk.PriceBook, keyof Static<typeof CM.PriceBookView>>>();
check<Assignable<Sdk.PriceBook, Static<typeof CM.PriceBookView>>>();
check<Equal<keyof Sdk.Commitment, keyof Static<typeof CM.CommitmentView>>>();
check<Assignable<Sdk.Commitment, Static<typeof CM.CommitmentView>>>();
check<Equal<keyof Sdk.Purchase, keyof Static<typeof CM.PurchaseView>>>();
check<Assignable<Sdk.Purchase, Static<typeof CM.PurchaseView>>>();
check<Equal<keyof Sdk.AutoTopUp, keyof Static<typeof CM.AutoTopUpView>>>();
check<Assignable<Sdk.AutoTopUp, Static<typeof CM.AutoTopUpView>>>();
check<Equal<keyof Sdk.AutoTopUpRun, keyof Static<typeof CM.AutoTopUpRunView>>>();
check<Assignable<Sdk.AutoTopUpRun, Static<typeof CM.AutoTopUpRunView>>>();
check<Equal<keyof Sdk.PriceBookParams, keyof Static<typeof CM.PriceBookCreate>>>();
check<Assignable<Static<typeof CM.PriceBookCreate>, Sdk.PriceBookParams>>();
check<Equal<keyof Sdk.CommitmentCreateParams, keyof Static<typeof CM.CommitmentCreate>>>();
check<Assignable<Static<typeof CM.CommitmentCreate>, Sdk.CommitmentCreateParams>>();
check<Equal<keyof Sdk.PurchaseCreateParams, keyof Static<typeof CM.PurchaseCreate>>>();
check<Assignable<Static<typeof CM.PurchaseCreate>, Sdk.PurchaseCreateParams>>();
check<Equal<keyof Sdk.PurchaseConfirmParams, keyof Static<typeof CM.PurchaseConfirm>>>();
check<Assignable<Static<typeof CM.PurchaseConfirm>, Sdk.PurchaseConfirmParams>>();
check<Equal<keyof Sdk.PurchaseUnpaidParams, keyof Static<typeof CM.PurchaseUnpaid>>>();
check<Assignable<Static<typeof CM.PurchaseUnpaid>, Sdk.PurchaseUnpaidParams>>();
check<Equal<keyof Sdk.AutoTopUpParams, keyof Static<typeof CM.AutoTopUpSet>>>();
check<Assignable<Static<typeof CM.AutoTopUpSet>, Sdk.AutoTopUpParams>>();
// Webhooks and alerts.
check<Equal<keyof Sdk.WebhookEndpoint, keyof Static<typeof W.WebhookEndpointView>>>();
check<Assignable<Sdk.WebhookEndpoint, Static<typeof W.WebhookEndpointView>>>();
check<Equal<keyof Sdk.WebhookEndpointCreateParams, keyof Static<typeof W.WebhookEndpointCreate>>>();
check<Assignable<Static<typeof W.WebhookEndpointCreate>, Sdk.WebhookEndpointCreateParams>>();
check<Equal<keyof Sdk.WebhookEndpointUpdateParams, keyof Static<typeof W.WebhookEndpointUpdate>>>();
check<Assignable<Static<typeof W.WebhookEndpointUpdate>, Sdk.WebhookEndpointUpdateParams>>();
check<Equal<keyof Sdk.WebhookDelivery, keyof Static<typeof W.WebhookDeliveryView>>>();
check<Assignable<Sdk.WebhookDelivery, Static<typeof W.WebhookDeliveryView>>>();
check<Equal<keyof Sdk.WebhookDeliveryDetail, keyof Static<typeof W.WebhookDeliveryDetailView>>>();
check<Assignable<Sdk.WebhookDeliveryDetail, Static<typeof W.WebhookDeliveryDetailView>>>();
check<Equal<keyof Sdk.WebhookAttempt, keyof Static<typeof W.WebhookAttemptView>>>();
check<Equal<keyof Sdk.Alert, keyof Static<typeof A.AlertView>>>();
check<Assignable<Sdk.Alert, Static<typeof A.AlertView>>>();
check<Equal<keyof Sdk.AlertRules, keyof Static<typeof A.AlertRulesView>>>();
check<Assignable<Sdk.AlertRules, Static<typeof A.AlertRulesView>>>();
check<Equal<Sdk.AlertRule, Static<typeof A.AlertRuleWire>>>();
check<Equal<keyof Sdk.AlertRulesSetParams, keyof Static<typeof A.AlertRulesSet>>>();
check<Assignable<Static<typeof A.AlertRulesSet>, Sdk.AlertRulesSetParams>>();

// Spend caps.
check<Equal<keyof Sdk.SpendCap, keyof Static<typeof SC.SpendCapView>>>();
check<Assignable<Sdk.SpendCap, Static<typeof SC.SpendCapView>>>();
check<Equal<keyof Sdk.SpendCapCreateParams, keyof Static<typeof SC.SpendCapCreate>>>();
check<Assignable<Static<typeof SC.SpendCapCreate>, Sdk.SpendCapCreateParams>>();

// Paging: the same parameters (limit travels as text; the SDK takes a number).
check<Equal<keyof Sdk.PageParams, keyof Static<typeof S.Page>>>();

// Authorize and holds.
check<Equal<keyof Sdk.Hold, keyof Static<typeof H.HoldView>>>();
check<Assignable<Sdk.Hold, Static<typeof H.HoldView>>>();
check<Equal<keyof Sdk.Authorization, keyof Static<typeof H.AuthorizationView>>>();
check<Assignable<Sdk.Authorization, Static<typeof H.AuthorizationView>>>();
check<Equal<keyof Sdk.AuthorizeParams, keyof Static<typeof H.AuthorizeBody>>>();
check<Equal<keyof Sdk.SettleEventInput, keyof Static<typeof H.SettleEventWire>>>();
check<Assignable<Static<typeof H.SettleEventWire>, Sdk.SettleEventInput>>();

// Durable runs.
check<Equal<keyof Sdk.Run, keyof Static<typeof R.RunView>>>();
check<Assignable<Sdk.Run, Static<typeof R.RunView>>>();
check<Equal<keyof Sdk.RunStep, keyof Static<typeof R.RunStepView>>>();
check<Assignable<Sdk.RunStep, Static<typeof R.RunStepView>>>();
check<Equal<keyof Sdk.RunStepResult, keyof Static<typeof R.RunStepResultView>>>();
check<Assignable<Sdk.RunStepResult, Static<typeof R.RunStepResultView>>>();
check<Equal<keyof Sdk.RunSettings, keyof Static<typeof R.RunSettingsView>>>();
check<Assignable<Sdk.RunSettings, Static<typeof R.RunSettingsView>>>();
check<Equal<keyof Sdk.RunStartParams, keyof Static<typeof R.RunStart>>>();
check<Assignable<Static<typeof R.RunStart>, Sdk.RunStartParams>>();
check<Equal<keyof Sdk.RunStepParams, keyof Static<typeof R.StepBody>>>();

// Error codes: the SDK's union is the server's.
check<Equal<Sdk.ApiErrorCode, ApiErrorCode>>();

test("the SDK's error codes and statuses are the server's", () => {
  const server = Object.fromEntries(Object.entries(ERRORS).map(([code, e]) => [code, e.status]));
  assert.deepEqual({ ...API_ERROR_STATUS }, server);
});

test("the SDK calls every route, sending exactly the documented query parameters and body fields", async () => {
  const sent: {
    method: string;
    path: string;
    query: string[];
    body: string[];
    headers: Record<string, string>;
  }[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(String(input));
    const parsed = typeof init?.body === "string" ? (JSON.parse(init.body) as object) : {};
    // A bare array (a CloudEvents batch) is described by its first item's fields.
    const body = Object.keys(Array.isArray(parsed) ? (parsed[0] as object) : parsed);
    sent.push({
      method: init?.method ?? "GET",
      path: url.pathname,
      query: [...url.searchParams.keys()],
      body,
      headers: { ...(init?.headers as Record<string, string>) },
    });
    return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
  };
  const dd = new Drawdown({ apiKey: "k", baseUrl: "http://sdk.test", fetch });
  // Every parameter set (Required<…>), so a field the SDK types but does not send shows up.
  const page: Required<Sdk.PageParams> = { limit: 10, cursor: "c" };
  const time = new Date(0);
  const customerList: Required<Sdk.CustomerListParams> = { ...page, external_id: "x" };
  const grantList: Required<Sdk.GrantListParams> = {
    ...page,
    wallet_id: "w",
    customer_id: "c",
    status: "active",
  };
  const txnList: Required<Sdk.TransactionListParams> = {
    ...page,
    wallet_id: "w",
    customer_id: "c",
    from: time,
    to: time,
  };
  const customer: Required<Sdk.CustomerCreateParams> = {
    kind: "individual",
    external_id: "x",
    name: "n",
    metadata: {},
  };
  const subject: Required<Sdk.SubjectCreateParams> = {
    kind: "member",
    external_id: "x",
    name: "n",
    metadata: {},
  };
  const grantFields = { expires_at: time, priority: 1, scope: ["a"], metadata: {} };
  const grant: Required<Sdk.GrantCreateParams> = {
    ...grantFields,
    wallet_id: "w",
    amount: 1n,
    source: "plan",
    cost_basis: "0",
    currency: "USD",
    effective_at: time,
  };
  const credit: Required<Sdk.CreditAdjustmentParams> = { ...grantFields, amount: "1", reason: "r" };
  const debit: Required<Sdk.DebitAdjustmentParams> = { amount: "1", reason: "r", action: "a", grant_id: "g" };
  const key: Required<Sdk.ApiKeyCreateParams> = { kind: "restricted", name: "n", customer_id: "c" };
  const event: Required<Sdk.UsageEventInput> = {
    id: "e",
    customer_id: "c",
    action: "a",
    time,
    subject_id: "s",
    dimensions: { model: "m" },
    quantities: { tokens: 1n, calls: 2, seconds: "1.5" },
    status: "failed",
    run_id: "r",
    reported_cost: 1n,
  };
  const cloud: Sdk.CloudEventInput = {
    specversion: "1.0",
    id: "e",
    source: "/s",
    type: "a",
    data: { customer_id: "c", quantities: { tokens: 1n } },
  };
  const line: Required<Sdk.RateLineInput> = {
    id: "l",
    action: "a",
    match: { model: "m" },
    quantity: "tokens",
    rate: "1",
    per: 1000,
    tiers: [{ up_to: 10n, rate: "1" }],
    minimum: 1n,
    free: false,
  };
  const version: Required<Sdk.RateCardVersionParams> = {
    effective_at: time,
    lines: [line],
    multipliers: [{ dimension: "tier", value: "turbo", factor: "6" }],
    non_billable: [{ action: "a", match: {}, reason: "r" }],
  };
  const pricing: Required<Sdk.CustomerPricingParams> = {
    rate_card_id: "rcd_1",
    pinned_version_id: null,
    overrides: [line],
    overrides_from: time,
    overrides_until: null,
  };
  const costTable: Required<Sdk.CostTableParams> = { effective_at: time, currency: "USD", lines: [line] };
  const margin: Required<Sdk.MarginReportParams> = {
    group_by: "model",
    from: time,
    to: time,
    customer_id: "c",
  };
  const overage: Required<Sdk.OveragePolicyParams> = {
    mode: "soft_cap",
    floor: "-1",
    price: { amount: "0.02", currency: "USD" },
    throttle: { level: 5n, allowed_actions: ["chat.mini"], fallback_action: "chat.mini" },
  };
  const overageInvoiceList: Required<Sdk.OverageInvoiceListParams> = {
    limit: 10,
    cursor: "c",
    wallet_id: "wal_1",
    customer_id: "cus_1",
  };
  const plan: Required<Sdk.PlanCreateParams> = {
    name: "n",
    base_fee: { amount: "20", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: 25_000_000_000n,
    per_seat: true,
    rollover: { kind: "capped", cap: { multiple_of_allotment: 3n }, max_periods: 2 },
    expiry: { kind: "period_end" },
    on_cancel: "keep_until_period_end",
    allocation: { mode: "per_member", pool_share_percent: 20 },
    overage,
  };
  const subscription: Required<Sdk.SubscriptionCreateParams> = {
    customer_id: "cus_1",
    plan_id: "pln_1",
    seats: 2,
    start_at: time,
  };
  const giftCode: Required<Sdk.GiftCodeCreateParams> = {
    code: "WELCOME25",
    amount: "25",
    scope: ["image.*"],
    expires_in_days: 30,
    max_uses: 100,
    ends_at: time,
  };
  const gift: Required<Sdk.GiftCreateParams> = { amount: 5n, scope: null, expires_at: time, reason: "r" };
  const referral: Required<Sdk.ReferralCreateParams> = {
    referrer_customer_id: "cus_2",
    amount: "5",
    referrer_amount: "5",
    scope: null,
    expires_at: null,
  };
  const contract: Required<Sdk.ContractCreateParams> = {
    customer_id: "cus_1",
    starts_at: time,
    ends_at: time,
    commitment: "120000",
    schedule: { kind: "installments", interval: { unit: "month", count: 3 } },
    credit_price: { amount: "0.008", currency: "USD" },
    expiry: { kind: "rolling", months: 12 },
    allow_rate_card_upgrades: false,
    rate_card_id: "rcd_1",
    overrides: [line],
  };
  const poc: Required<Sdk.PocAllocationCreateParams> = {
    customer_id: "cus_1",
    amount: 5n,
    list_value: { amount: 40n, currency: "USD" },
    starts_at: time,
    ends_at: time,
    scope: null,
  };
  const book: Required<Sdk.PriceBookParams> = {
    currency: "USD",
    decimals: 2,
    packs: [
      { id: "p", name: "P", credits: "10", price: 1_000_000_000n, expiry: { kind: "rolling", months: 12 } },
    ],
    tiers: [{ up_to: null, unit_price: "0.1" }],
    custom_expiry: { kind: "never" },
    commitment_discounts: [{ min_committed: "100", percent_off: 10 }],
  };
  const commitment: Required<Sdk.CommitmentCreateParams> = {
    currency: "USD",
    credits: "1000",
    starts_at: time,
    ends_at: time,
  };
  const {
    pack_id: _p,
    credits: _c,
    ...purchaseBase
  } = {
    wallet_id: "wal_1",
    currency: "USD",
    pack_id: "p",
    credits: "5",
    provider: "test",
    payment_method: "pm_test_ok",
  } satisfies Required<Sdk.PurchaseCreateParams>;
  const {
    amount: _a,
    target_balance: _t,
    pack_id: _k,
    ...topUpBase
  } = {
    threshold: "10",
    amount: "5",
    target_balance: "20",
    pack_id: "p",
    currency: "USD",
    monthly_cap: "50",
    provider: "test",
    payment_method: "pm_test_ok",
    enabled: true,
  } satisfies Required<Sdk.AutoTopUpParams>;
  const authorize: Required<Sdk.AuthorizeParams> = {
    customer_id: "cus_1",
    subject_id: "sub_1",
    action: "agent.run",
    estimate: { quantities: { tokens: 1n }, dimensions: { model: "m" } },
    hold: true,
    hold_timeout_seconds: 60,
  };
  const settleEvent: Required<Sdk.SettleEventInput> = {
    id: "e",
    action: "a",
    dimensions: { model: "m" },
    quantities: { tokens: 1n },
    status: "failed",
    time,
    run_id: "r",
    reported_cost: 1n,
  };
  const settleEvents: Sdk.SettleParams = { events: [settleEvent] };
  const settleQuantities: Sdk.SettleParams = {
    quantities: { tokens: 2 },
    dimensions: { model: "m" },
    status: "succeeded",
  };
  const runStart: Required<Sdk.RunStartParams> = {
    id: "r",
    customer_id: "cus_1",
    subject_id: "sub_1",
    metadata: { a: "b" },
  };
  const runStep: Required<Sdk.RunStepParams> = {
    key: "k",
    action: "agent.run",
    estimate: { credits: "1" },
    hold_timeout_seconds: 60,
  };
  const holdList: Required<Sdk.HoldListParams> = {
    ...page,
    wallet_id: "w",
    customer_id: "c",
    status: "pending",
  };
  const endpoint: Required<Sdk.WebhookEndpointCreateParams> = {
    url: "https://example.com/hooks",
    event_types: ["*"],
    description: "d",
    enabled: true,
  };
  const deliveryList: Required<Sdk.WebhookDeliveryListParams> = { ...page, status: "failed" };
  const alertList: Required<Sdk.AlertListParams> = {
    ...page,
    wallet_id: "w",
    customer_id: "c",
    kind: "exhausted",
  };
  await Promise.all([
    dd.contracts.create(contract),
    dd.contracts.list("cus_1"),
    dd.contracts.get("ctr_1"),
    dd.contracts.terminate("ctr_1", { credits: "forfeit" }),
    dd.pocAllocations.create(poc),
    dd.pocAllocations.list("cus_1"),
    dd.pocAllocations.get("poc_1"),
    dd.priceBooks.publish(book),
    dd.priceBooks.list(),
    dd.priceBooks.commit("cus_1", commitment),
    dd.priceBooks.commitments("cus_1"),
    dd.purchases.create({ ...purchaseBase, pack_id: "p" }),
    dd.purchases.create({ ...purchaseBase, credits: 5n }),
    dd.purchases.list({ customer_id: "cus_1", wallet_id: "wal_1", status: "pending", limit: 5, cursor: "c" }),
    dd.purchases.get("pur_1"),
    dd.purchases.confirm("pur_1", { reference: "r" }),
    dd.purchases.fail("pur_1", { reason: "r" }),
    dd.purchases.cancel("pur_1", { reason: "r" }),
    dd.autoTopUps.set("wal_1", { ...topUpBase, amount: "5" }),
    dd.autoTopUps.set("wal_1", { ...topUpBase, target_balance: 20_000_000_000n }),
    dd.autoTopUps.set("wal_1", { ...topUpBase, pack_id: "p" }),
    dd.autoTopUps.get("wal_1"),
    dd.autoTopUps.disable("wal_1"),
    dd.autoTopUps.run("wal_1"),
    dd.webhooks.create(endpoint),
    dd.webhooks.list(),
    dd.webhooks.get("whe_1"),
    dd.webhooks.update("whe_1", endpoint),
    dd.webhooks.delete("whe_1"),
    dd.webhooks.rotateSecret("whe_1"),
    dd.webhooks.test("whe_1"),
    dd.webhooks.deliveries("whe_1", deliveryList),
    dd.webhooks.delivery("whd_1"),
    dd.webhooks.redeliver("whd_1"),
    dd.alerts.list(alertList),
    dd.alerts.rules("wal_1"),
    dd.alerts.setRules("wal_1", { rules: [{ kind: "amount_remaining", amount: 5n }] }),
    dd.gifts.createCode(giftCode),
    dd.gifts.listCodes(),
    dd.gifts.claim({ code: "WELCOME25", customer_id: "cus_1" }),
    dd.gifts.give("cus_1", gift),
    dd.gifts.refer("cus_1", referral),
    dd.reports.gifts({ customer_id: "cus_1" }),
    dd.plans.create(plan),
    dd.plans.list(),
    dd.plans.get("pln_1"),
    dd.subscriptions.create(subscription),
    dd.subscriptions.list("cus_1"),
    dd.subscriptions.memberAllocations("cus_1", page),
    dd.subscriptions.get("sbs_1"),
    dd.subscriptions.changeSeats("sbs_1", { seats: 3 }),
    dd.subscriptions.changePlan("sbs_1", { plan_id: "pln_2" }),
    dd.subscriptions.cancel("sbs_1"),
    dd.customers.create(customer),
    dd.customers.list(customerList),
    dd.customers.get("cus_1"),
    dd.subjects.create("cus_1", subject),
    dd.subjects.list("cus_1", page),
    dd.subjects.get("sub_1"),
    dd.wallets.create({ customer_id: "c", member_id: "m" }),
    dd.wallets.list("cus_1"),
    dd.wallets.get("wal_1"),
    dd.wallets.balance("wal_1"),
    dd.adjustments.credit("wal_1", credit),
    dd.adjustments.debit("wal_1", debit),
    dd.grants.create(grant),
    dd.grants.list(grantList),
    dd.grants.get("grt_1"),
    dd.grants.void("grt_1", { reason: "r" }),
    dd.grants.extend("grt_1", { expires_at: null, reason: "r" }),
    dd.grants.expiryPolicies(),
    dd.grants.setExpiryPolicy({ source: "contract", expiry: { kind: "rolling", months: 12 } }),
    dd.transactions.list(txnList),
    dd.transactions.get("txn_1"),
    dd.transactions.reverse("txn_1", { reason: "r" }),
    dd.reconcile(),
    dd.apiKeys.create(key),
    dd.apiKeys.list(),
    dd.apiKeys.revoke("key_1"),
    dd.events.ingest(event),
    dd.events.ingestBatch([event]),
    dd.events.get("evt_1"),
    dd.rateCards.create({ name: "n" }),
    dd.rateCards.list(),
    dd.rateCards.get("rcd_1"),
    dd.rateCards.publishVersion("rcd_1", version),
    dd.customers.setPricing("cus_1", pricing),
    dd.costTables.publish(costTable),
    dd.wallets.setOverage("wal_1", overage),
    dd.wallets.getOverage("wal_1"),
    dd.wallets.clearOverage("wal_1"),
    dd.wallets.billOverage("wal_1"),
    dd.overageInvoices.list(overageInvoiceList),
    dd.reports.margin(margin),
    dd.runs.get("run_1"),
    dd.runs.start(runStart),
    dd.runs.list("cus_1", { ...page, status: "suspended" }),
    dd.runs.step("run_1", runStep),
    dd.runs.settleStep("run_1", { key: "k", events: [settleEvent] }),
    dd.runs.settleStep("run_1", {
      key: "k",
      quantities: { tokens: 1n },
      dimensions: { model: "m" },
      status: "failed",
    }),
    dd.runs.voidStep("run_1", "k"),
    dd.runs.resume("run_1"),
    dd.runs.complete("run_1"),
    dd.runs.cancel("run_1"),
    dd.runs.settings("wal_1"),
    dd.runs.setSettings("wal_1", { run_start_minimum: 5n }),
    dd.publicRateCard("ten_1"),
    dd.testClock.get(),
    dd.testClock.advance({ to: time }),
    dd.testClock.advance({ seconds: 60 }),
    dd.holds.authorize(authorize),
    dd.holds.settle("hld_1", settleEvents),
    dd.holds.settle("hld_1", settleQuantities),
    dd.holds.void("hld_1"),
    dd.holds.get("hld_1"),
    dd.holds.list(holdList),
    dd.holds.ping(),
    dd.spendCaps.create("cus_1", { target_id: "wal_1", period: "day", limit: 5n }),
    dd.spendCaps.list("cus_1", { limit: 10, cursor: "c" }),
    dd.spendCaps.get("cap_1"),
    dd.spendCaps.update("cap_1", { limit: "3" }),
    dd.spendCaps.delete("cap_1"),
  ]);
  // The CloudEvents shapes, each with its media type.
  await dd.events.ingest(cloud);
  await dd.events.ingestBatch([cloud, cloud]);
  const [single, batch] = sent.slice(-2);
  assert.equal(single?.headers["content-type"], "application/cloudevents+json");
  assert.deepEqual(single?.body.sort(), ["data", "id", "source", "specversion", "type"]);
  assert.equal(batch?.headers["content-type"], "application/cloudevents-batch+json");
  assert.deepEqual(batch?.body.sort(), ["data", "id", "source", "specversion", "type"]);
  assert.equal(single?.headers["idempotency-key"], undefined, "events are deduplicated by their ids");

  // Bodies the route table types as unknown (events, either shape): the native event's fields.
  const nativeFields = Object.keys(NativeEvent.properties).sort();
  const unknownBody: Record<string, string[]> = { ingestEvent: nativeFields, ingestEvents: ["events"] };
  // Bodies of exactly one of their fields (the test clock's advance: to or seconds): each call
  // sends one of them, and the calls together send every one.
  const oneOf = new Map<string, Set<string>>([["advanceTestClock", new Set()]]);
  // Bodies with exactly one of some fields besides the others: each call sends one of the
  // alternatives and every other field, and the calls together send every alternative.
  const alternatives = new Map<string, { fields: readonly string[]; sent: Set<string> }>([
    ["createPurchase", { fields: ["pack_id", "credits"], sent: new Set() }],
    ["setAutoTopUp", { fields: ["amount", "target_balance", "pack_id"], sent: new Set() }],
  ]);
  // Bodies with alternative field sets (settle: events, or quantities with dimensions and status).
  const fieldSets = new Map<string, { sets: string[][]; seen: Set<string> }>([
    ["settleHold", { sets: [["events"], ["dimensions", "quantities", "status"]], seen: new Set() }],
    [
      "settleRunStep",
      {
        sets: [
          ["events", "key"],
          ["dimensions", "key", "quantities", "status"],
        ],
        seen: new Set(),
      },
    ],
  ]);
  const called = new Set<string>();
  for (const s of sent.slice(0, -2)) {
    if (s.path.startsWith("/v1/public/")) {
      assert.equal(s.path, "/v1/public/ten_1/rate_card");
      assert.equal(s.headers.authorization, undefined, "the public rate card is fetched without a key");
      continue;
    }
    const route = routeOf(s.method, s.path);
    assert.ok(route, `${s.method} ${s.path} is no route`);
    called.add(route.operationId);
    const props = (schema: unknown) =>
      Object.keys((schema as { properties?: Record<string, unknown> } | undefined)?.properties ?? {}).sort();
    assert.deepEqual([...s.query].sort(), props(route.query), `${route.operationId}: query parameters`);
    const either = oneOf.get(route.operationId);
    if (either) {
      assert.equal(s.body.length, 1, `${route.operationId}: exactly one body field`);
      assert.ok(props(route.body).includes(s.body[0]!), `${route.operationId}: ${s.body[0]} is documented`);
      either.add(s.body[0]!);
      continue;
    }
    const alt = alternatives.get(route.operationId);
    if (alt) {
      const chosen = s.body.filter((f) => alt.fields.includes(f));
      assert.equal(chosen.length, 1, `${route.operationId}: exactly one of ${alt.fields.join(", ")}`);
      alt.sent.add(chosen[0]!);
      assert.deepEqual(
        [...s.body].sort(),
        props(route.body).filter((f) => !alt.fields.includes(f) || f === chosen[0]),
        `${route.operationId}: body fields`,
      );
      continue;
    }
    const alternative = fieldSets.get(route.operationId);
    if (alternative) {
      const sorted = [...s.body].sort();
      assert.ok(
        alternative.sets.some((set) => JSON.stringify(set) === JSON.stringify(sorted)),
        `${route.operationId}: body fields ${sorted.join(", ")}`,
      );
      for (const f of sorted) alternative.seen.add(f);
      continue;
    }
    assert.deepEqual(
      [...s.body].sort(),
      unknownBody[route.operationId] ?? props(route.body),
      `${route.operationId}: body fields`,
    );
  }
  for (const [operationId, alt] of alternatives)
    assert.deepEqual([...alt.sent].sort(), [...alt.fields].sort(), `${operationId}: every alternative sent`);
  for (const [operationId, { seen }] of fieldSets) {
    const route = ALL_ROUTES.find((r) => r.operationId === operationId);
    const documented = Object.keys((route?.body as { properties?: object } | undefined)?.properties ?? {});
    assert.deepEqual([...seen].sort(), documented.sort(), `${operationId}: every body field sent`);
  }
  for (const [operationId, fields] of oneOf) {
    const route = ALL_ROUTES.find((r) => r.operationId === operationId);
    const documented = Object.keys((route?.body as { properties?: object } | undefined)?.properties ?? {});
    assert.deepEqual([...fields].sort(), documented.sort(), `${operationId}: every body field sent`);
  }
  assert.deepEqual(
    [...called].sort(),
    ALL_ROUTES.map((r) => r.operationId).sort(),
    "one SDK call per route, ledger, metering and lifecycle",
  );
});
