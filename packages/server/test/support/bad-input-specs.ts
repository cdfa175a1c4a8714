import type { ApiErrorCode } from "../../src/errors.js";
import type { Fixtures, World } from "./fixtures.js";
import { CHAT_LINE, unique } from "./fixtures.js";
import type { Call, Client } from "./http.js";

/**
 * The bad-input suite's table: for every route of the API, how to build a valid request,
 * and the route's own failure cases. The generic cases (authentication, ids, query, body,
 * fields, amounts) are generated from the route's schemas in bad-input.ts.
 */

// ------------------------------------------------------------------ cases

/** What a case is about; the coverage test requires the categories that apply to each route. */
export type Category =
  | "auth"
  | "forbidden"
  | "unknown_query"
  | "query"
  | "unknown_id"
  | "foreign_id"
  | "bad_id"
  | "malformed_json"
  | "not_object"
  | "content_type"
  | "oversized"
  | "idempotency_invalid"
  | "idempotency_reused"
  | "missing_field"
  | "unknown_field"
  | "wrong_type"
  | "amount"
  | "timestamp"
  | "body_id"
  | "business";

export type Vars = Readonly<Record<string, string>>;
export type Json = Record<string, unknown>;

/** What a case's request is built from. */
export interface Ctx {
  readonly f: Fixtures;
  /** What the route's setup created. */
  readonly v: Vars;
  readonly client: Client;
  readonly world: World;
}

export interface Case {
  readonly name: string;
  readonly category: Category;
  readonly code: ApiErrorCode;
  /** A field the problem must name. */
  readonly field?: string;
  readonly call: (x: Ctx) => Call;
  /** Runs before the "before" snapshot, e.g. the first use of an idempotency key. */
  readonly prepare?: (x: Ctx) => Promise<void>;
}

/** A route-specific case: the valid request with its path id or body replaced. */
interface Variant {
  readonly name: string;
  readonly code: ApiErrorCode;
  readonly field?: string;
  readonly id?: (f: Fixtures, v: Vars) => string;
  readonly body?: (f: Fixtures, v: Vars) => Json;
  /** The API key sent instead of tenant A's (say, a live tenant's). */
  readonly key?: (f: Fixtures, v: Vars) => string;
}

/** How to build valid requests for one route, and its own failure cases. */
export interface Spec {
  /** Creates fresh resources for this route (before its cases), e.g. a grant to void. */
  readonly setup?: (x: { f: Fixtures; client: Client; world: World }) => Promise<Vars>;
  /** The path id of a valid request. Default: tenant A's fixture of the id's kind. */
  readonly id?: (f: Fixtures, v: Vars) => string;
  /** A valid body (POST). */
  readonly body?: (f: Fixtures, v: Vars) => Json;
  /** Another valid request, different from the first (the idempotency conflict). */
  readonly other?: (f: Fixtures, v: Vars) => { path: string; json: Json };
  /** Amount fields where "0" is a valid value. */
  readonly zeroAllowed?: readonly string[];
  /** Id fields of the body: the body they are set in (default: the valid one) and the code. */
  readonly ids?: Readonly<
    Record<string, { code: ApiErrorCode; base?: (f: Fixtures, v: Vars) => Json; kind: Kind }>
  >;
  /** Route-specific failures: duplicates, wrong states, values out of bounds. */
  readonly business?: readonly Variant[];
  /** The kind of the path id, when its schema gives no example id (client-given ids). */
  readonly idKind?: Kind;
  /** The query of a valid request (required parameters). */
  readonly query?: Readonly<Record<string, string>>;
  /** The code for a body of the wrong shape, when the handler checks it (default validation_failed). */
  readonly bodyCode?: ApiErrorCode;
  /** The code of a reused Idempotency-Key, or of the route's own id reused (default idempotency_key_reused). */
  readonly conflictCode?: ApiErrorCode;
  /** Generated cases that do not apply to this route, by name, each with the reason. */
  readonly skip?: Readonly<Record<string, string>>;
}

// ------------------------------------------------------------------ ids

/** Kinds of ids: ours by prefix, and the client-given event and run ids. */
export type Kind =
  | "cus"
  | "sub"
  | "wal"
  | "grt"
  | "txn"
  | "key"
  | "rcd"
  | "rcv"
  | "evt"
  | "run"
  | "pln"
  | "sbs"
  | "ctr"
  | "poc"
  | "pur"
  | "hld"
  | "whe"
  | "whd"
  | "cap";

/** Tenant `t`'s fixture of a kind. */
export const fixtureOf = (f: Fixtures, t: "a" | "b", kind: Kind): string => {
  const x = f[t];
  return {
    cus: x.customer,
    sub: x.member,
    wal: x.wallet,
    grt: x.grant,
    txn: x.debit,
    key: x.apiKey,
    rcd: x.rateCard,
    rcv: x.rateCardVersion,
    evt: x.event,
    run: x.run,
    pln: x.plan,
    sbs: x.subscription,
    ctr: x.contract,
    poc: x.poc,
    pur: x.purchase,
    hld: x.hold,
    whe: x.webhookEndpoint,
    whd: x.webhookDelivery,
    cap: x.spendCap,
  }[kind];
};

/** Tenant A's fixture of a kind that belongs to its second customer (for restricted keys). */
export const otherCustomersOf = (f: Fixtures, kind: Kind): string | null => {
  const x = f.a;
  return (
    (
      {
        cus: x.customer2,
        wal: x.wallet2,
        sub: x.subject2,
        grt: x.grant2,
        txn: x.debit2,
        evt: x.event2,
        run: x.run2,
        sbs: x.subscription2,
        ctr: x.contract2,
        poc: x.poc2,
        hld: x.hold2,
        cap: x.spendCap2,
        pur: x.purchase2,
      } as Partial<Record<Kind, string>>
    )[kind] ?? null
  );
};

/** A well-formed id that names nothing. */
export const unknownId = (kind: Kind): string => `${kind}_${"0".repeat(26)}`;

/** An existing id of tenant A, of another kind than `kind`. */
export const otherKind = (f: Fixtures, kind: Kind): string =>
  kind === "cus" ? f.a.wallet : kind === "txn" ? f.a.grant : f.a.customer;

// ------------------------------------------------------------------ specs

const FUTURE = "2099-01-01T00:00:00Z";
const LATER = "2100-01-01T00:00:00Z";
/** Takes any wallet holding a credit past the largest balance. */
const MAX = "999999999999999999.999999999";

/** A fresh grant in a fresh customer's wallet: changes to it touch no other route's fixtures. */
async function freshGrant(client: Client, body: Json = {}): Promise<{ grant: string; wallet: string }> {
  const c = await client.create("/v1/customers", { kind: "individual" });
  const g = await client.create<{ grant: { id: string } }>("/v1/grants", {
    wallet_id: c.wallet_id,
    amount: "10",
    source: "promo",
    expires_at: FUTURE,
    ...body,
  });
  return { grant: g.grant.id, wallet: String(c.wallet_id) };
}

/** A grant that has expired: issued to expire in a minute, then the clock moves two. */
async function expiredGrant(client: Client, world: World): Promise<string> {
  const expiresAt = new Date(world.server.store.now() + 60_000).toISOString();
  const { grant } = await freshGrant(client, { expires_at: expiresAt });
  world.advance(120_000);
  return grant;
}

const authorizeBody = (f: Fixtures): Json => ({
  customer_id: f.a.customer,
  action: "chat.completion",
  estimate: { credits: "1" },
});

/** A fresh 1-credit hold of a customer, left pending, or settled, voided, or past its timeout. */
async function freshHold(
  client: Client,
  customerId: string,
  state: "pending" | "posted" | "voided" | "expired" = "pending",
  world?: World,
): Promise<string> {
  const a = await client.create<{ hold: { id: string } }>("/v1/authorize", {
    customer_id: customerId,
    action: "chat.completion",
    estimate: { credits: "1" },
    hold: true,
    hold_timeout_seconds: state === "expired" ? 60 : 7 * 86_400,
  });
  const id = a.hold.id;
  if (state === "posted") await client.create(`/v1/holds/${id}/settle`, { quantities: { output_tokens: 1 } });
  if (state === "voided") await client.create(`/v1/holds/${id}/void`, {});
  if (state === "expired") world!.advance(120_000);
  return id;
}

/** A fresh vendor cap (10 credits a day) on a fresh customer's pool. */
async function freshCap(client: Client): Promise<string> {
  const c = await client.create("/v1/customers", { kind: "individual" });
  const cap = await client.create(`/v1/customers/${c.id}/spend_caps`, {
    target_id: c.wallet_id,
    period: "day",
    limit: "10",
  });
  return String(cap.id);
}

const metadataCases = (body: (f: Fixtures, v: Vars) => Json): Variant[] => [
  {
    name: "metadata with a number value",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({ ...body(f, v), metadata: { seats: 3 } }),
  },
  {
    name: "metadata with 51 keys",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({
      ...body(f, v),
      metadata: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, "v"])),
    }),
  },
  {
    name: "metadata key over 40 characters",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({ ...body(f, v), metadata: { ["k".repeat(41)]: "v" } }),
  },
  {
    name: "an empty metadata key",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({ ...body(f, v), metadata: { "": "v" } }),
  },
  {
    name: "metadata value over 500 characters",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({ ...body(f, v), metadata: { plan: "p".repeat(501) } }),
  },
  {
    name: "a NUL character in a metadata value",
    code: "validation_failed",
    field: "metadata",
    body: (f, v) => ({ ...body(f, v), metadata: { plan: "pro\u0000" } }),
  },
];

const grantFieldCases = (body: (f: Fixtures, v: Vars) => Json): Variant[] => [
  {
    name: "priority below 0",
    code: "validation_failed",
    field: "priority",
    body: (f, v) => ({ ...body(f, v), priority: -1 }),
  },
  {
    name: "priority above 100",
    code: "validation_failed",
    field: "priority",
    body: (f, v) => ({ ...body(f, v), priority: 101 }),
  },
  {
    name: "priority beyond any integer",
    code: "validation_failed",
    field: "priority",
    body: (f, v) => ({ ...body(f, v), priority: 1e300 }),
  },
  {
    name: "an empty scope",
    code: "validation_failed",
    field: "scope",
    body: (f, v) => ({ ...body(f, v), scope: [] }),
  },
  {
    name: "a scope entry that is no action pattern",
    code: "invalid_argument",
    body: (f, v) => ({ ...body(f, v), scope: ["Bad Scope!"] }),
  },
  {
    name: "a scope of 51 entries",
    code: "validation_failed",
    field: "scope",
    body: (f, v) => ({ ...body(f, v), scope: Array.from({ length: 51 }, (_, i) => `a${i}`) }),
  },
  {
    name: "expires_at in the past",
    code: "invalid_argument",
    body: (f, v) => ({ ...body(f, v), expires_at: "2001-01-01T00:00:00Z" }),
  },
  {
    name: "an amount that takes the wallet beyond the largest balance",
    code: "invalid_amount",
    body: (f, v) => ({ ...body(f, v), amount: MAX }),
  },
  ...metadataCases(body),
];

const reasonCases = (body: (f: Fixtures, v: Vars) => Json, required: boolean): Variant[] => [
  ...(required
    ? [
        {
          name: "an empty reason",
          code: "validation_failed" as const,
          field: "reason",
          body: (f: Fixtures, v: Vars) => ({ ...body(f, v), reason: "" }),
        },
      ]
    : []),
  {
    name: "a reason over 500 characters",
    code: "validation_failed",
    field: "reason",
    body: (f, v) => ({ ...body(f, v), reason: "r".repeat(501) }),
  },
];

const customerBody = (): Json => ({ kind: "organization", external_id: `org-${unique()}`, name: "Org" });
const subjectBody = (): Json => ({ kind: "agent", external_id: `agent-${unique()}`, name: "Agent" });
const creditBody = (): Json => ({ amount: "5", reason: "goodwill", priority: 10, scope: ["chat.*"] });
const debitBody = (): Json => ({ amount: "1", reason: "manual", action: "chat.completion" });
const grantBody = (f: Fixtures): Json => ({
  wallet_id: f.a.wallet,
  amount: "10",
  source: "purchase",
  cost_basis: "0.02",
  currency: "USD",
  expires_at: FUTURE,
});
const extendBody = (): Json => ({ expires_at: LATER, reason: "support" });

// ------------------------------------------------------------------ metering

/** A usage event tenant A's rate card prices. */
const eventBody = (f: Fixtures, id: string): Json => ({
  id,
  customer_id: f.a.customer,
  action: "chat.completion",
  quantities: { output_tokens: 10 },
  dimensions: { model: "small" },
});

/** An event variant: a fresh id, the valid event with `change` over it. */
const event = (name: string, code: ApiErrorCode, change: (f: Fixtures) => Json): Variant => ({
  name,
  code,
  body: (f) => ({ ...eventBody(f, `evt-bad-${unique()}`), ...change(f) }),
});

const cloudEvent = (f: Fixtures, change: Json = {}): Json => ({
  specversion: "1.0",
  id: `ce-bad-${unique()}`,
  source: "test",
  type: "chat.completion",
  data: { customer_id: f.a.customer, quantities: { output_tokens: 1 } },
  ...change,
});

const eventCases: Variant[] = [
  event("no customer_id", "invalid_event", () => ({ customer_id: undefined })),
  event("a customer that does not exist", "not_found", () => ({
    customer_id: "cus_00000000000000000000000000",
  })),
  event("another tenant's customer", "not_found", (f) => ({ customer_id: f.b.customer })),
  event("a subject that does not exist", "not_found", () => ({
    subject_id: "sub_00000000000000000000000000",
  })),
  event("a subject of another customer", "not_found", (f) => ({ subject_id: f.a.subject2 })),
  event("another tenant's subject", "not_found", (f) => ({ subject_id: f.b.member })),
  event("a negative quantity", "invalid_event", () => ({ quantities: { output_tokens: -1 } })),
  event("a negative quantity as a string", "invalid_event", () => ({ quantities: { output_tokens: "-1" } })),
  event("a fractional quantity as a number", "invalid_event", () => ({ quantities: { output_tokens: 1.5 } })),
  event("a quantity beyond a safe integer", "invalid_event", () => ({
    quantities: { output_tokens: 2 ** 53 },
  })),
  event("a quantity with an exponent", "invalid_event", () => ({ quantities: { output_tokens: "1e3" } })),
  event("a quantity with 10 decimals", "invalid_event", () => ({
    quantities: { output_tokens: "0.0000000001" },
  })),
  event("a quantity of 19 integer digits", "invalid_event", () => ({
    quantities: { output_tokens: "1000000000000000000" },
  })),
  event("a quantity as a boolean", "invalid_event", () => ({ quantities: { output_tokens: true } })),
  event("no quantities", "invalid_event", () => ({ quantities: {} })),
  event("a quantity name that is no identifier", "invalid_event", () => ({
    quantities: { "Output Tokens": 10 },
  })),
  event("quantities as an array", "invalid_event", () => ({ quantities: [10] })),
  event("a time that is no timestamp", "invalid_event", () => ({ time: "yesterday" })),
  event("an impossible date", "invalid_event", () => ({ time: "2026-02-30T00:00:00Z" })),
  event("a time older than the grace window", "event_too_old", () => ({ time: "2001-01-01T00:00:00Z" })),
  event("a time in the future", "event_in_future", () => ({ time: "2099-01-01T00:00:00Z" })),
  event("an action no rate card line prices", "unknown_action", () => ({ action: "image.generate" })),
  event("an action that is no action name", "invalid_event", () => ({ action: "Chat Completion" })),
  event("a status not in the list", "invalid_event", () => ({ status: "maybe" })),
  event("a negative reported_cost", "invalid_amount", () => ({ reported_cost: "-1" })),
  event("a reported_cost with 10 decimals", "invalid_amount", () => ({ reported_cost: "0.0000000001" })),
  event("a reported_cost as a number", "invalid_event", () => ({ reported_cost: 1 })),
  event("an empty id", "invalid_event", () => ({ id: "" })),
  event("an id over 200 characters", "invalid_event", () => ({ id: "e".repeat(201) })),
  event("an id as a number", "invalid_event", () => ({ id: 7 })),
  event("a dimension with a number value", "invalid_event", () => ({ dimensions: { model: 4 } })),
  event("a dimension name that is no identifier", "invalid_event", () => ({
    dimensions: { "Model Name": "x" },
  })),
  event("a NUL character in a dimension", "validation_failed", () => ({ dimensions: { model: "a\u0000" } })),
  event("an empty run_id", "invalid_event", () => ({ run_id: "" })),
  {
    name: "a CloudEvent of another specversion",
    code: "invalid_event",
    body: (f) => cloudEvent(f, { specversion: "0.3" }),
  },
  {
    name: "a CloudEvent without data",
    code: "invalid_event",
    body: (f) => cloudEvent(f, { data: undefined }),
  },
  {
    name: "a CloudEvent for another tenant's customer",
    code: "not_found",
    body: (f) => cloudEvent(f, { data: { customer_id: f.b.customer, quantities: { output_tokens: 1 } } }),
  },
  {
    name: "a CloudEvent with a negative quantity",
    code: "invalid_event",
    body: (f) => cloudEvent(f, { data: { customer_id: f.a.customer, quantities: { output_tokens: -5 } } }),
  },
];

/** Rate card lines that cannot be published. */
const lineCases = (body: (f: Fixtures, v: Vars) => Json, field: "lines" | "overrides"): Variant[] => {
  const withLines = (lines: unknown[]) => (f: Fixtures, v: Vars) => ({ ...body(f, v), [field]: lines });
  return [
    { name: "a negative rate", code: "invalid_rate_card", body: withLines([{ ...CHAT_LINE, rate: "-1" }]) },
    {
      name: "a rate with an exponent",
      code: "invalid_rate_card",
      body: withLines([{ ...CHAT_LINE, rate: "1e3" }]),
    },
    {
      name: "a rate with 13 decimals",
      code: "invalid_rate_card",
      body: withLines([{ ...CHAT_LINE, rate: "0.0000000000001" }]),
    },
    {
      name: "a line with no rate, tiers or free",
      code: "invalid_rate_card",
      body: withLines([{ id: "chat", action: "chat.completion", quantity: "output_tokens" }]),
    },
    {
      name: "two lines pricing the same quantity alike",
      code: "invalid_rate_card",
      body: withLines([CHAT_LINE, { ...CHAT_LINE, id: "chat-2" }]),
    },
    {
      name: "a line with an unknown field",
      code: "validation_failed",
      field,
      body: withLines([{ ...CHAT_LINE, price: "1" }]),
    },
    {
      name: "a match on a dimension name that is no identifier",
      code: "validation_failed",
      field,
      body: withLines([{ ...CHAT_LINE, match: { "Model Name": "big" } }]),
    },
    {
      name: "a line without quantity",
      code: "validation_failed",
      field,
      body: withLines([{ id: "chat", action: "chat.completion", rate: "1" }]),
    },
    {
      name: "a rate as a JSON number",
      code: "validation_failed",
      field,
      body: withLines([{ ...CHAT_LINE, rate: 0.001 }]),
    },
  ];
};

const versionBody = (): Json => ({ lines: [CHAT_LINE] });
const costBody = (): Json => ({ currency: "USD", lines: [{ ...CHAT_LINE, rate: "0.0000002" }] });
const freshCustomer = async (client: Client) => client.create("/v1/customers", { kind: "organization" });

const METERING_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/events": {
    setup: async () => ({ event: `evt-ok-${unique()}` }),
    body: (f, v) => eventBody(f, v.event!),
    other: (f, v) => ({
      path: "/v1/events",
      json: { ...eventBody(f, v.event!), quantities: { output_tokens: 11 } },
    }),
    // Events are idempotent by their own id: a reused id with another body is the conflict.
    conflictCode: "event_id_reused",
    bodyCode: "invalid_event",
    business: eventCases,
  },
  "POST /v1/events/batch": {
    body: (f) => ({ events: [eventBody(f, `evt-batch-${unique()}`)] }),
    skip: {
      "an array holding the valid body":
        "a JSON array is a batch (CloudEvents batch mode); each element is answered on its own",
    },
    business: [
      { name: "no events", code: "validation_failed", body: () => ({ events: [] }) },
      { name: "events not an array", code: "validation_failed", body: () => ({ events: "e1" }) },
      { name: "no events field", code: "validation_failed", body: () => ({}) },
      {
        name: "10,001 events, over the limit",
        code: "validation_failed",
        body: (f) => ({
          events: Array.from({ length: 10_001 }, (_, i) => eventBody(f, `evt-many-${i}`)),
        }),
      },
    ],
  },
  "GET /v1/events/:id": { idKind: "evt" },
  "POST /v1/rate_cards": {
    body: () => ({ name: `card-${unique()}` }),
    other: () => ({ path: "/v1/rate_cards", json: { name: `another-${unique()}` } }),
    business: [
      { name: "a name another card has", code: "already_exists", body: () => ({ name: "Standard" }) },
      { name: "an empty name", code: "validation_failed", field: "name", body: () => ({ name: "" }) },
      {
        name: "a name over 100 characters",
        code: "validation_failed",
        field: "name",
        body: () => ({ name: "n".repeat(101) }),
      },
    ],
  },
  "GET /v1/rate_cards": {},
  "GET /v1/rate_cards/:id": {},
  "POST /v1/rate_cards/:id/versions": {
    setup: async ({ client }) => ({
      card: String((await client.create("/v1/rate_cards", { name: `versions-${unique()}` })).id),
    }),
    id: (_f, v) => v.card!,
    body: versionBody,
    other: (_f, v) => ({
      path: `/v1/rate_cards/${v.card}/versions`,
      json: { lines: [{ ...CHAT_LINE, rate: "0.002" }] },
    }),
    business: [
      {
        name: "effective_at in the past",
        code: "rate_card_overlap",
        body: () => ({ ...versionBody(), effective_at: "2001-01-01T00:00:00Z" }),
      },
      {
        name: "over 1,000 lines",
        code: "validation_failed",
        field: "lines",
        body: () => ({ lines: Array.from({ length: 1001 }, (_, i) => ({ ...CHAT_LINE, id: `l${i}` })) }),
      },
      {
        name: "a multiplier with a negative factor",
        code: "invalid_rate_card",
        body: () => ({ ...versionBody(), multipliers: [{ dimension: "model", value: "big", factor: "-2" }] }),
      },
      {
        name: "a non-billable rule without reason",
        code: "validation_failed",
        field: "non_billable",
        body: () => ({ ...versionBody(), non_billable: [{ action: "chat.completion" }] }),
      },
      ...lineCases(versionBody, "lines"),
    ],
  },
  "POST /v1/customers/:id/pricing": {
    setup: async ({ client }) => ({ customer: String((await freshCustomer(client)).id) }),
    id: (_f, v) => v.customer!,
    body: (f) => ({ rate_card_id: f.a.rateCard }),
    other: (f, v) => ({
      path: `/v1/customers/${v.customer}/pricing`,
      json: { rate_card_id: f.a.rateCard, overrides: [{ ...CHAT_LINE, rate: "0.0005" }] },
    }),
    ids: {
      rate_card_id: { code: "not_found", kind: "rcd" },
      pinned_version_id: { code: "not_found", kind: "rcv" },
    },
    business: [
      ...lineCases((f) => ({ rate_card_id: f.a.rateCard }), "overrides"),
      ...[
        ["a window ending where it starts", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"],
        ["a window ending before it starts", "2030-01-02T00:00:00Z", "2030-01-01T00:00:00Z"],
        [
          "a window ending before it starts, across offsets",
          "2030-01-01T00:30:00-01:00",
          "2030-01-01T01:00:00Z",
        ],
      ].map(
        ([name, from, until]): Variant => ({
          name: name!,
          code: "invalid_argument",
          field: "overrides_until",
          body: (f) => ({ rate_card_id: f.a.rateCard, overrides_from: from, overrides_until: until }),
        }),
      ),
    ],
  },
  "POST /v1/cost_tables": {
    body: costBody,
    other: () => ({ path: "/v1/cost_tables", json: { ...costBody(), currency: "EUR" } }),
    business: [
      {
        name: "a currency that is not ISO 4217",
        code: "validation_failed",
        field: "currency",
        body: () => ({ ...costBody(), currency: "usd" }),
      },
      {
        name: "effective_at in the past",
        code: "rate_card_overlap",
        body: () => ({ ...costBody(), effective_at: "2001-01-01T00:00:00Z" }),
      },
      ...lineCases(costBody, "lines"),
    ],
  },
  "POST /v1/wallets/:id/overage": {
    setup: async ({ client }) => ({ wallet: String((await freshCustomer(client)).wallet_id) }),
    id: (_f, v) => v.wallet!,
    body: () => ({ mode: "soft_cap", floor: "-10" }),
    other: (_f, v) => ({ path: `/v1/wallets/${v.wallet}/overage`, json: { mode: "hard_cap" } }),
    business: [
      {
        name: "a floor above zero",
        code: "invalid_argument",
        body: () => ({ mode: "soft_cap", floor: "5" }),
      },
      {
        name: "a floor below zero under a hard cap",
        code: "invalid_argument",
        body: () => ({ mode: "hard_cap", floor: "-5" }),
      },
      { name: "a member's wallet", code: "invalid_argument", id: (f) => f.a.memberWallet },
      ...[
        ["with an exponent", "-1e3"],
        ["with 10 decimals", "-0.0000000001"],
        ["of 19 integer digits", "-1000000000000000000"],
        ["empty", ""],
        ["with a plus sign", "+5"],
        ["with a leading space", " -5"],
      ].map(
        ([label, floor]): Variant => ({
          name: `a floor ${label}`,
          code: "invalid_amount",
          body: () => ({ mode: "soft_cap", floor }),
        }),
      ),
      {
        name: "a floor over 40 characters",
        code: "validation_failed",
        field: "floor",
        body: () => ({ mode: "soft_cap", floor: `-${"1".repeat(40)}` }),
      },
      {
        name: "an unknown mode",
        code: "validation_failed",
        field: "mode",
        body: () => ({ mode: "lenient" }),
      },
      {
        name: "a price on a hard cap",
        code: "invalid_argument",
        body: () => ({ mode: "hard_cap", price: { amount: "0.02", currency: "USD" } }),
      },
      {
        name: "a price of zero",
        code: "invalid_amount",
        body: () => ({ mode: "soft_cap", floor: "-10", price: { amount: "0", currency: "USD" } }),
      },
      {
        name: "a negative price",
        code: "invalid_amount",
        body: () => ({ mode: "soft_cap", floor: "-10", price: { amount: "-1", currency: "USD" } }),
      },
      {
        name: "a lowercase price currency",
        code: "validation_failed",
        field: "price",
        body: () => ({ mode: "soft_cap", floor: "-10", price: { amount: "1", currency: "usd" } }),
      },
      { name: "a throttle without its rule", code: "invalid_argument", body: () => ({ mode: "throttle" }) },
      {
        name: "a throttle that allows nothing and names no fallback",
        code: "invalid_argument",
        body: () => ({ mode: "throttle", throttle: { level: "10", allowed_actions: [] } }),
      },
      {
        name: "a throttle with a negative level",
        code: "invalid_amount",
        body: () => ({ mode: "throttle", throttle: { level: "-1", fallback_action: "chat.mini" } }),
      },
      {
        name: "a throttle allowing a bad action pattern",
        code: "invalid_argument",
        body: () => ({ mode: "throttle", throttle: { level: "1", allowed_actions: ["Bad Action"] } }),
      },
      {
        name: "a fallback action that is a pattern",
        code: "invalid_argument",
        body: () => ({ mode: "throttle", throttle: { level: "1", fallback_action: "chat.*" } }),
      },
      {
        name: "a throttle rule on a soft cap",
        code: "invalid_argument",
        body: () => ({ mode: "soft_cap", throttle: { level: "1", fallback_action: "chat.mini" } }),
      },
      {
        name: "a floor on fair use",
        code: "invalid_argument",
        body: () => ({ mode: "fair_use", floor: "-5" }),
      },
    ],
  },
  "GET /v1/wallets/:id/overage": {
    business: [{ name: "a member's wallet", code: "invalid_argument", id: (f) => f.a.memberWallet }],
  },
  "POST /v1/wallets/:id/overage/clear": {
    setup: async ({ client }) => ({
      wallet: String((await freshCustomer(client)).wallet_id),
      other: String((await freshCustomer(client)).wallet_id),
    }),
    id: (_f, v) => v.wallet!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/wallets/${v.other}/overage/clear`, json: {} }),
    business: [{ name: "a member's wallet", code: "invalid_argument", id: (f) => f.a.memberWallet }],
  },
  "POST /v1/wallets/:id/overage/bill": {
    setup: async ({ client }) => {
      const priced = async () => {
        const w = String((await freshCustomer(client)).wallet_id);
        await client.create(`/v1/wallets/${w}/overage`, {
          mode: "soft_cap",
          floor: "-10",
          price: { amount: "0.5", currency: "USD" },
        });
        return w;
      };
      return {
        wallet: await priced(),
        other: await priced(),
        unpriced: String((await freshCustomer(client)).wallet_id),
      };
    },
    id: (_f, v) => v.wallet!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/wallets/${v.other}/overage/bill`, json: {} }),
    business: [
      { name: "a member's wallet", code: "invalid_argument", id: (f) => f.a.memberWallet },
      { name: "a wallet whose overage has no price", code: "invalid_argument", id: (_f, v) => v.unpriced! },
    ],
  },
  "GET /v1/overage_invoices": {},
  "GET /v1/reports/margin": { query: { group_by: "customer" } },
};

/** Every route of the table, by `METHOD url`. A route without an entry fails the suite. */
// ------------------------------------------------------------------ plans and subscriptions

/** A fresh customer subscribed to `planId`: its subscription's id (changes to it touch no fixture). */
async function freshSubscription(client: Client, planId: string, seats?: number): Promise<string> {
  const c = await freshCustomer(client);
  const s = await client.create("/v1/subscriptions", {
    customer_id: c.id,
    plan_id: planId,
    ...(seats === undefined ? {} : { seats }),
  });
  return String(s.id);
}

/** A subscription already canceled. */
async function canceledSubscription(client: Client, planId: string): Promise<string> {
  const id = await freshSubscription(client, planId);
  await client.create(`/v1/subscriptions/${id}/cancel`, {});
  return id;
}

const planBody = (_f: Fixtures, v: Vars): Json => ({
  name: v.name!,
  base_fee: { amount: "20", currency: "USD" },
  interval: { unit: "month", count: 1 },
  allotment: "25",
});

/** A plan body with one field replaced. */
const planWith =
  (change: Json) =>
  (f: Fixtures, v: Vars): Json => ({ ...planBody(f, v), ...change });

const LIFECYCLE_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/plans": {
    setup: async () => ({ name: `plan-${unique()}` }),
    body: planBody,
    other: (f, v) => ({ path: "/v1/plans", json: { ...planBody(f, v), name: `${v.name}-other` } }),
    zeroAllowed: ["allotment"],
    business: [
      { name: "a name already taken", code: "already_exists", body: planWith({ name: "Fixture plan" }) },
      {
        name: "an overage policy with a price on a hard cap",
        code: "invalid_argument",
        field: "overage.price",
        body: planWith({ overage: { mode: "hard_cap", price: { amount: "1", currency: "USD" } } }),
      },
      {
        name: "an overage floor that is not an amount",
        code: "invalid_amount",
        field: "overage.floor",
        body: planWith({ overage: { mode: "soft_cap", floor: "x" } }),
      },
      { name: "a blank name", code: "invalid_argument", body: planWith({ name: "   " }) },
      {
        name: "a name over 100 characters",
        code: "validation_failed",
        field: "name",
        body: planWith({ name: "n".repeat(101) }),
      },
      {
        name: "a negative base fee",
        code: "invalid_amount",
        field: "base_fee.amount",
        body: planWith({ base_fee: { amount: "-1", currency: "USD" } }),
      },
      {
        name: "a base fee as a JSON number",
        code: "validation_failed",
        field: "base_fee",
        body: planWith({ base_fee: { amount: 20, currency: "USD" } }),
      },
      {
        name: "a lowercase currency",
        code: "validation_failed",
        field: "base_fee",
        body: planWith({ base_fee: { amount: "20", currency: "usd" } }),
      },
      {
        name: "a base fee without currency",
        code: "validation_failed",
        field: "base_fee",
        body: planWith({ base_fee: { amount: "20" } }),
      },
      {
        name: "an interval of 0 months",
        code: "validation_failed",
        field: "interval",
        body: planWith({ interval: { unit: "month", count: 0 } }),
      },
      {
        name: "an interval in hours",
        code: "validation_failed",
        field: "interval",
        body: planWith({ interval: { unit: "hour", count: 1 } }),
      },
      {
        name: "an interval of 1001 months",
        code: "validation_failed",
        field: "interval",
        body: planWith({ interval: { unit: "month", count: 1001 } }),
      },
      {
        name: "a rollover kind not in the list",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "some" } }),
      },
      {
        name: "a capped rollover without a cap",
        code: "invalid_argument",
        body: planWith({ rollover: { kind: "capped" } }),
      },
      {
        name: "a capped rollover with a cap of zero kinds",
        code: "invalid_argument",
        body: planWith({ rollover: { kind: "capped", cap: {} } }),
      },
      {
        name: "a capped rollover with a cap of two kinds",
        code: "invalid_argument",
        body: planWith({ rollover: { kind: "capped", cap: { absolute: "10", percent_of_allotment: 50 } } }),
      },
      {
        name: "a capped rollover with a negative absolute cap",
        code: "invalid_amount",
        field: "rollover.cap.absolute",
        body: planWith({ rollover: { kind: "capped", cap: { absolute: "-10" } } }),
      },
      {
        name: "a capped rollover with a multiple of 1e3",
        code: "invalid_amount",
        field: "rollover.cap.multiple_of_allotment",
        body: planWith({ rollover: { kind: "capped", cap: { multiple_of_allotment: "1e3" } } }),
      },
      {
        name: "a capped rollover at 101 percent",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "capped", cap: { percent_of_allotment: 101 } } }),
      },
      {
        name: "a cap with an unknown kind",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "capped", cap: { fraction: "0.5" } } }),
      },
      {
        name: "a declining rollover without a schedule",
        code: "invalid_argument",
        body: planWith({ rollover: { kind: "declining" } }),
      },
      {
        name: "a declining rollover with an empty schedule",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "declining", schedule: [] } }),
      },
      {
        name: "a declining rollover carrying 150 percent",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "declining", schedule: [150, 50] } }),
      },
      {
        name: "a declining rollover of 25 steps",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "declining", schedule: Array.from({ length: 25 }, () => 50) } }),
      },
      {
        name: "a rollover carried for 0 periods",
        code: "validation_failed",
        field: "rollover",
        body: planWith({ rollover: { kind: "full", max_periods: 0 } }),
      },
      {
        name: "a rolling expiry without months",
        code: "invalid_argument",
        body: planWith({ expiry: { kind: "rolling" } }),
      },
      {
        name: "a rolling expiry of 0 months",
        code: "validation_failed",
        field: "expiry",
        body: planWith({ expiry: { kind: "rolling", months: 0 } }),
      },
      {
        name: "a full rollover of credits that never expire",
        code: "invalid_argument",
        field: "rollover",
        body: planWith({ rollover: { kind: "full" }, expiry: { kind: "never" } }),
      },
      {
        name: "a capped rollover of credits on a rolling expiry",
        code: "invalid_argument",
        field: "rollover",
        body: planWith({
          rollover: { kind: "capped", cap: { percent_of_allotment: 50 } },
          expiry: { kind: "rolling", months: 3 },
        }),
      },
      {
        name: "a declining rollover of credits that never expire",
        code: "invalid_argument",
        field: "rollover",
        body: planWith({
          rollover: { kind: "declining", schedule: [100, 50, 0] },
          expiry: { kind: "never" },
        }),
      },
      {
        name: "a pool share of 101 percent",
        code: "validation_failed",
        field: "allocation",
        body: planWith({ allocation: { mode: "per_member", pool_share_percent: 101 } }),
      },
      {
        name: "a negative pool share",
        code: "validation_failed",
        field: "allocation",
        body: planWith({ allocation: { mode: "per_member", pool_share_percent: -1 } }),
      },
      {
        name: "a fractional pool share",
        code: "validation_failed",
        field: "allocation",
        body: planWith({ allocation: { mode: "per_member", pool_share_percent: 12.5 } }),
      },
      {
        name: "a pool share as a string",
        code: "validation_failed",
        field: "allocation",
        body: planWith({ allocation: { mode: "per_member", pool_share_percent: "20" } }),
      },
      {
        name: "an allocation mode not in the list",
        code: "validation_failed",
        field: "allocation",
        body: planWith({ allocation: { mode: "per_seat_member" } }),
      },
      {
        name: "a per_member allocation without its pool share",
        code: "invalid_argument",
        field: "allocation.pool_share_percent",
        body: planWith({ allocation: { mode: "per_member" } }),
      },
      {
        name: "a pool share on a customer allocation",
        code: "invalid_argument",
        field: "allocation.pool_share_percent",
        body: planWith({ allocation: { mode: "customer", pool_share_percent: 20 } }),
      },
      {
        name: "a per_member allocation on a per-seat plan",
        code: "invalid_argument",
        field: "allocation",
        body: planWith({ per_seat: true, allocation: { mode: "per_member", pool_share_percent: 20 } }),
      },
    ],
  },
  "GET /v1/plans": {},
  "GET /v1/plans/:id": {},
  "POST /v1/subscriptions": {
    // Fresh customers: subscribing the fixture customers would fail (one active subscription each).
    setup: async ({ client }) => ({
      customer: String((await freshCustomer(client)).id),
      customer2: String((await freshCustomer(client)).id),
    }),
    body: (f, v) => ({ customer_id: v.customer!, plan_id: f.a.plan }),
    other: (f, v) => ({ path: "/v1/subscriptions", json: { customer_id: v.customer2!, plan_id: f.a.plan } }),
    ids: {
      customer_id: { code: "not_found", kind: "cus" },
      plan_id: { code: "not_found", kind: "pln" },
    },
    business: [
      {
        name: "a customer with an active subscription already",
        code: "already_exists",
        body: (f) => ({ customer_id: f.a.customer, plan_id: f.a.plan }),
      },
      {
        name: "a start in the past",
        code: "invalid_argument",
        body: (f, v) => ({ customer_id: v.customer!, plan_id: f.a.plan, start_at: "2001-01-01T00:00:00Z" }),
      },
      {
        name: "seats over 1,000,000",
        code: "validation_failed",
        field: "seats",
        body: (f, v) => ({ customer_id: v.customer!, plan_id: f.a.plan, seats: 1_000_001 }),
      },
      {
        name: "seats negative",
        code: "validation_failed",
        field: "seats",
        body: (f, v) => ({ customer_id: v.customer!, plan_id: f.a.plan, seats: -1 }),
      },
      {
        name: "seats beyond any integer",
        code: "validation_failed",
        field: "seats",
        body: (f, v) => ({ customer_id: v.customer!, plan_id: f.a.plan, seats: 1e300 }),
      },
    ],
  },
  "GET /v1/customers/:id/subscriptions": {},
  "GET /v1/customers/:id/member_allocations": {},
  "GET /v1/subscriptions/:id": {},
  "POST /v1/subscriptions/:id/seats": {
    setup: async ({ client }) => {
      const plan = await client.create("/v1/plans", {
        name: `per-seat-${unique()}`,
        base_fee: { amount: "10", currency: "USD" },
        interval: { unit: "month", count: 1 },
        allotment: "5",
        per_seat: true,
      });
      const id = String(plan.id);
      return {
        sub: await freshSubscription(client, id, 2),
        other: await freshSubscription(client, id, 2),
        canceled: await canceledSubscription(client, id),
      };
    },
    id: (_f, v) => v.sub!,
    body: () => ({ seats: 3 }),
    other: (_f, v) => ({ path: `/v1/subscriptions/${v.other}/seats`, json: { seats: 3 } }),
    business: [
      {
        name: "seats on a canceled subscription",
        code: "invalid_argument",
        id: (_f, v) => v.canceled!,
        body: () => ({ seats: 3 }),
      },
      {
        name: "seats over 1,000,000",
        code: "validation_failed",
        field: "seats",
        body: () => ({ seats: 1_000_001 }),
      },
      { name: "seats negative", code: "validation_failed", field: "seats", body: () => ({ seats: -1 }) },
    ],
  },
  "POST /v1/subscriptions/:id/plan": {
    // Fresh subscriptions to fresh plans: the valid request upgrades one, the other request another.
    setup: async ({ client }) => {
      const plan = async (allotment: string, unit = "month") =>
        String(
          (
            await client.create("/v1/plans", {
              name: `plan-${unique()}`,
              base_fee: { amount: "10", currency: "USD" },
              interval: { unit, count: 1 },
              allotment,
            })
          ).id,
        );
      const basic = await plan("10");
      return {
        basic,
        plus: await plan("30"),
        yearly: await plan("300", "year"),
        sub: await freshSubscription(client, basic),
        other: await freshSubscription(client, basic),
        canceled: await canceledSubscription(client, basic),
      };
    },
    id: (_f, v) => v.sub!,
    body: (_f, v) => ({ plan_id: v.plus! }),
    other: (_f, v) => ({ path: `/v1/subscriptions/${v.other}/plan`, json: { plan_id: v.plus! } }),
    ids: { plan_id: { code: "not_found", kind: "pln" } },
    business: [
      {
        name: "a plan change on a canceled subscription",
        code: "invalid_argument",
        id: (_f, v) => v.canceled!,
        body: (_f, v) => ({ plan_id: v.plus! }),
      },
      {
        name: "the plan it is already on",
        code: "invalid_argument",
        body: (_f, v) => ({ plan_id: v.basic! }),
      },
      {
        name: "a plan on another interval",
        code: "invalid_argument",
        body: (_f, v) => ({ plan_id: v.yearly! }),
      },
    ],
  },
  "POST /v1/subscriptions/:id/cancel": {
    setup: async ({ f, client }) => ({
      sub: await freshSubscription(client, f.a.plan),
      other: await freshSubscription(client, f.a.plan),
      canceled: await canceledSubscription(client, f.a.plan),
    }),
    id: (_f, v) => v.sub!,
    other: (_f, v) => ({ path: `/v1/subscriptions/${v.other}/cancel`, json: {} }),
    business: [{ name: "canceling twice", code: "invalid_argument", id: (_f, v) => v.canceled! }],
  },
};

// ------------------------------------------------------------------ gifts and referrals

/** A fresh gift code of tenant A: its code text. */
async function freshGiftCode(client: Client, extra: Json = {}): Promise<string> {
  const c = await client.create("/v1/gift_codes", { code: `g-${unique()}`, amount: "2", ...extra });
  return String(c.code);
}

const giftCodeWith =
  (change: Json) =>
  (_f: Fixtures, v: Vars): Json => ({ code: v.code!, amount: "2", ...change });

const referralWith =
  (change: Json) =>
  (f: Fixtures): Json => ({ referrer_customer_id: f.a.customer, amount: "5", ...change });

// ------------------------------------------------------------------ webhooks and alerts

const endpointBody = (): Json => ({ url: "https://example.com/hooks", event_types: ["grant.*"] });
/** Two fresh endpoints: one for the valid request, one for the conflicting other. */
const freshEndpoints = async ({ client }: { client: Client }): Promise<Vars> => ({
  endpoint: String((await client.create("/v1/webhook_endpoints", endpointBody())).id),
  other: String((await client.create("/v1/webhook_endpoints", endpointBody())).id),
});
const urlCases = (body: (f: Fixtures, v: Vars) => Json): Variant[] => [
  ...[
    "ftp://example.com/hooks",
    "javascript:alert(1)",
    "/hooks",
    "https://user:secret@example.com/hooks",
  ].map(
    (url): Variant => ({
      name: `url ${url}`,
      code: "invalid_webhook_url",
      body: (f, v) => ({ ...body(f, v), url }),
    }),
  ),
  {
    name: "a url with a fragment",
    code: "invalid_webhook_url",
    body: (f, v) => ({ ...body(f, v), url: "https://example.com/hooks#x" }),
  },
  // The server refuses private networks (the default): each of these names one.
  ...[
    "http://127.0.0.1:9/hooks",
    "http://0x7f.1/hooks",
    "http://2130706433/hooks",
    "http://[::1]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "https://10.1.2.3/hooks",
    "https://172.16.0.1/hooks",
    "https://192.168.1.1/hooks",
    "https://[fc00::1]/hooks",
    "https://[fe80::1]/hooks",
    "http://0.0.0.0/hooks",
    "http://224.0.0.1/hooks",
    "http://localhost:3000/hooks",
    "http://localhost./hooks",
    "http://api.localhost/hooks",
  ].map(
    (url): Variant => ({
      name: `a private url ${url}`,
      code: "webhook_url_not_allowed",
      field: "url",
      body: (f, v) => ({ ...body(f, v), url }),
    }),
  ),
  {
    name: "a url over 2048 characters",
    code: "validation_failed",
    field: "url",
    body: (f, v) => ({ ...body(f, v), url: `https://example.com/${"x".repeat(2048)}` }),
  },
  {
    name: "an event type that does not exist",
    code: "invalid_argument",
    body: (f, v) => ({ ...body(f, v), event_types: ["grant.exploded"] }),
  },
  {
    name: "a wildcard over no type",
    code: "invalid_argument",
    body: (f, v) => ({ ...body(f, v), event_types: ["nothing.*"] }),
  },
  {
    name: "webhook.test as a filter (sent by test-sends only)",
    code: "invalid_argument",
    body: (f, v) => ({ ...body(f, v), event_types: ["webhook.test"] }),
  },
  {
    name: "no event types",
    code: "validation_failed",
    field: "event_types",
    body: (f, v) => ({ ...body(f, v), event_types: [] }),
  },
  {
    name: "51 event types",
    code: "validation_failed",
    field: "event_types",
    body: (f, v) => ({ ...body(f, v), event_types: Array.from({ length: 51 }, () => "*") }),
  },
  {
    name: "a description over 500 characters",
    code: "validation_failed",
    field: "description",
    body: (f, v) => ({ ...body(f, v), description: "d".repeat(501) }),
  },
];
const rulesWith = (rules: unknown) => (): Json => ({ rules });

// ------------------------------------------------------------------ durable runs

/** A step body of tenant A's rate card. */
const stepBody = (key = "s1", credits = "1"): Json => ({
  key,
  action: "chat.completion",
  estimate: { credits },
  hold_timeout_seconds: 7 * 86_400,
});

/**
 * A fresh run of a customer: running (no steps), with step s1 held, settled or denied (the run
 * suspended), its hold past its timeout, or the run completed or canceled.
 */
async function freshRun(
  client: Client,
  customerId: string,
  state: "running" | "held" | "settled" | "suspended" | "expired" | "completed" | "canceled" = "running",
  world?: World,
): Promise<string> {
  const id = String((await client.create("/v1/runs", { customer_id: customerId })).id);
  if (state === "held" || state === "settled") await client.create(`/v1/runs/${id}/steps`, stepBody());
  if (state === "expired")
    await client.create(`/v1/runs/${id}/steps`, { ...stepBody(), hold_timeout_seconds: 60 });
  if (state === "settled")
    await client.create(`/v1/runs/${id}/settle_step`, { key: "s1", quantities: { output_tokens: 1 } });
  // More than the wallet holds but within the fixtures' vendor spend cap (1,000,000): a spend
  // cap's denial would not suspend the run, only a lack of credits does.
  if (state === "suspended") await client.create(`/v1/runs/${id}/steps`, stepBody("s1", "900000"));
  if (state === "expired") world!.advance(120_000);
  if (state === "completed") await client.create(`/v1/runs/${id}/complete`, {});
  if (state === "canceled") await client.create(`/v1/runs/${id}/cancel`, {});
  return id;
}

const RUN_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/runs": {
    setup: async ({ f, client }) => {
      const poor = await freshCustomer(client);
      await client.create(`/v1/wallets/${poor.wallet_id}/run_settings`, { run_start_minimum: "5" });
      const taken = `taken-${unique()}`;
      await client.create("/v1/runs", { id: taken, customer_id: f.a.customer });
      return { poor: String(poor.id), taken };
    },
    body: (f) => ({ customer_id: f.a.customer }),
    other: (f) => ({ path: "/v1/runs", json: { customer_id: f.a.customer2 } }),
    ids: {
      customer_id: { code: "not_found", kind: "cus" },
      subject_id: { code: "not_found", kind: "sub" },
    },
    business: [
      {
        name: "an id in use",
        code: "already_exists",
        body: (f, v) => ({ customer_id: f.a.customer, id: v.taken! }),
      },
      {
        name: "an id with a slash",
        code: "validation_failed",
        field: "id",
        body: (f) => ({ customer_id: f.a.customer, id: "a/b" }),
      },
      {
        name: "an id over 200 characters",
        code: "validation_failed",
        field: "id",
        body: (f) => ({ customer_id: f.a.customer, id: "r".repeat(201) }),
      },
      {
        name: "a subject of another customer",
        code: "not_found",
        body: (f) => ({ customer_id: f.a.customer, subject_id: f.a.subject2 }),
      },
      {
        name: "less available than the wallet's run start minimum",
        code: "run_start_below_minimum",
        body: (_f, v) => ({ customer_id: v.poor! }),
      },
      ...metadataCases((f) => ({ customer_id: f.a.customer })),
    ],
  },
  "GET /v1/runs/:id": { idKind: "run" },
  "GET /v1/customers/:id/runs": {},
  "POST /v1/runs/:id/steps": {
    idKind: "run",
    setup: async ({ f, client }) => ({
      run: await freshRun(client, f.a.customer),
      other: await freshRun(client, f.a.customer),
      held: await freshRun(client, f.a.customer, "held"),
      suspended: await freshRun(client, f.a.customer, "suspended"),
      completed: await freshRun(client, f.a.customer, "completed"),
    }),
    id: (_f, v) => v.run!,
    body: () => stepBody(),
    other: (_f, v) => ({ path: `/v1/runs/${v.other}/steps`, json: stepBody() }),
    business: [
      {
        name: "a step key reused with another body",
        code: "step_key_reused",
        id: (_f, v) => v.held!,
        body: () => stepBody("s1", "2"),
      },
      {
        name: "a finished run",
        code: "run_not_running",
        id: (_f, v) => v.completed!,
        body: () => stepBody("s9"),
      },
      {
        name: "a new step of a suspended run",
        code: "run_suspended",
        id: (_f, v) => v.suspended!,
        body: () => stepBody("s2"),
      },
      {
        name: "a key with a space",
        code: "validation_failed",
        field: "key",
        body: () => ({ ...stepBody(), key: "step 1" }),
      },
      { name: "a negative estimate", code: "invalid_amount", body: () => stepBody("s1", "-1") },
      { name: "an absurd estimate", code: "invalid_amount", body: () => stepBody("s1", "1e40") },
      {
        name: "an estimate in credits and quantities",
        code: "invalid_argument",
        field: "estimate",
        body: () => ({ ...stepBody(), estimate: { credits: "1", quantities: { output_tokens: 1 } } }),
      },
      { name: "an empty estimate", code: "invalid_argument", body: () => ({ ...stepBody(), estimate: {} }) },
      {
        name: "quantities of an action the rate card does not price",
        code: "unknown_action",
        body: () => ({ ...stepBody(), action: "image.render", estimate: { quantities: { pixels: 5 } } }),
      },
      {
        name: "a hold timeout of zero",
        code: "validation_failed",
        field: "hold_timeout_seconds",
        body: () => ({ ...stepBody(), hold_timeout_seconds: 0 }),
      },
    ],
  },
  "POST /v1/runs/:id/settle_step": {
    idKind: "run",
    setup: async ({ f, client, world }) => ({
      held: await freshRun(client, f.a.customer, "held"),
      other: await freshRun(client, f.a.customer, "held"),
      settled: await freshRun(client, f.a.customer, "settled"),
      denied: await freshRun(client, f.a.customer, "suspended"),
      expired: await freshRun(client, f.a.customer, "expired", world),
    }),
    id: (_f, v) => v.held!,
    body: () => ({ key: "s1", quantities: { output_tokens: 10 } }),
    other: (_f, v) => ({
      path: `/v1/runs/${v.other}/settle_step`,
      json: { key: "s1", quantities: { output_tokens: 10 } },
    }),
    business: [
      {
        name: "a settled step settled differently",
        code: "step_key_reused",
        id: (_f, v) => v.settled!,
        body: () => ({ key: "s1", quantities: { output_tokens: 2 } }),
      },
      { name: "a denied step", code: "step_not_held", id: (_f, v) => v.denied! },
      { name: "a step whose hold expired", code: "hold_expired", id: (_f, v) => v.expired! },
      {
        name: "a step the run does not have",
        code: "not_found",
        body: () => ({ key: "nope", quantities: { output_tokens: 1 } }),
      },
      {
        name: "events and quantities both",
        code: "invalid_argument",
        body: () => ({
          key: "s1",
          quantities: { output_tokens: 1 },
          events: [{ id: `evt-${unique()}`, quantities: { output_tokens: 1 } }],
        }),
      },
      { name: "neither events nor quantities", code: "invalid_argument", body: () => ({ key: "s1" }) },
      {
        name: "an event id already recorded",
        code: "event_id_reused",
        body: (f) => ({ key: "s1", events: [{ id: f.a.event, quantities: { output_tokens: 1 } }] }),
      },
      {
        name: "an event of another run",
        code: "invalid_argument",
        body: () => ({
          key: "s1",
          events: [{ id: `evt-${unique()}`, quantities: { output_tokens: 1 }, run_id: "elsewhere" }],
        }),
      },
      {
        name: "an absurd quantity",
        code: "invalid_amount",
        body: () => ({ key: "s1", quantities: { output_tokens: "1e40" } }),
      },
    ],
  },
  "POST /v1/runs/:id/void_step": {
    idKind: "run",
    setup: async ({ f, client }) => ({
      held: await freshRun(client, f.a.customer, "held"),
      other: await freshRun(client, f.a.customer, "held"),
      settled: await freshRun(client, f.a.customer, "settled"),
      denied: await freshRun(client, f.a.customer, "suspended"),
    }),
    id: (_f, v) => v.held!,
    body: () => ({ key: "s1" }),
    other: (_f, v) => ({ path: `/v1/runs/${v.other}/void_step`, json: { key: "s1" } }),
    business: [
      { name: "a settled step", code: "step_key_reused", id: (_f, v) => v.settled! },
      { name: "a denied step", code: "step_not_held", id: (_f, v) => v.denied! },
      { name: "a step the run does not have", code: "not_found", body: () => ({ key: "nope" }) },
    ],
  },
  "POST /v1/runs/:id/resume": {
    idKind: "run",
    setup: async ({ f, client }) => ({
      run: await freshRun(client, f.a.customer, "suspended"),
      other: await freshRun(client, f.a.customer, "suspended"),
      completed: await freshRun(client, f.a.customer, "completed"),
      canceled: await freshRun(client, f.a.customer, "canceled"),
    }),
    id: (_f, v) => v.run!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/runs/${v.other}/resume`, json: {} }),
    business: [
      { name: "a completed run", code: "run_not_running", id: (_f, v) => v.completed! },
      { name: "a canceled run", code: "run_not_running", id: (_f, v) => v.canceled! },
    ],
  },
  "POST /v1/runs/:id/complete": {
    idKind: "run",
    setup: async ({ f, client }) => ({
      run: await freshRun(client, f.a.customer),
      other: await freshRun(client, f.a.customer),
      completed: await freshRun(client, f.a.customer, "completed"),
      held: await freshRun(client, f.a.customer, "held"),
    }),
    id: (_f, v) => v.run!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/runs/${v.other}/complete`, json: {} }),
    business: [
      { name: "a completed run", code: "run_not_running", id: (_f, v) => v.completed! },
      { name: "a step still holding credits", code: "run_steps_pending", id: (_f, v) => v.held! },
    ],
  },
  "POST /v1/runs/:id/cancel": {
    idKind: "run",
    setup: async ({ f, client }) => ({
      run: await freshRun(client, f.a.customer, "held"),
      other: await freshRun(client, f.a.customer),
      completed: await freshRun(client, f.a.customer, "completed"),
      canceled: await freshRun(client, f.a.customer, "canceled"),
    }),
    id: (_f, v) => v.run!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/runs/${v.other}/cancel`, json: {} }),
    business: [
      { name: "a completed run", code: "run_not_running", id: (_f, v) => v.completed! },
      { name: "a canceled run", code: "run_not_running", id: (_f, v) => v.canceled! },
    ],
  },
  "GET /v1/wallets/:id/run_settings": {},
  "POST /v1/wallets/:id/run_settings": {
    setup: async ({ client }) => ({ wallet: String((await freshCustomer(client)).wallet_id) }),
    id: (_f, v) => v.wallet!,
    body: () => ({ run_start_minimum: "5" }),
    other: (_f, v) => ({ path: `/v1/wallets/${v.wallet}/run_settings`, json: { run_start_minimum: "6" } }),
    zeroAllowed: ["run_start_minimum"],
  },
};

const WEBHOOK_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/webhook_endpoints": {
    body: endpointBody,
    other: () => ({
      path: "/v1/webhook_endpoints",
      json: { url: "https://example.com/other", event_types: ["*"] },
    }),
    business: urlCases(endpointBody),
  },
  "GET /v1/webhook_endpoints": {},
  "GET /v1/webhook_endpoints/:id": {},
  "POST /v1/webhook_endpoints/:id": {
    setup: freshEndpoints,
    id: (_f, v) => v.endpoint!,
    body: () => ({ description: "updated" }),
    other: (_f, v) => ({ path: `/v1/webhook_endpoints/${v.endpoint}`, json: { enabled: false } }),
    business: urlCases(() => ({})),
  },
  "POST /v1/webhook_endpoints/:id/delete": {
    setup: freshEndpoints,
    id: (_f, v) => v.endpoint!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/webhook_endpoints/${v.other}/delete`, json: {} }),
  },
  "POST /v1/webhook_endpoints/:id/rotate_secret": {
    setup: freshEndpoints,
    id: (_f, v) => v.endpoint!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/webhook_endpoints/${v.other}/rotate_secret`, json: {} }),
  },
  // Not keyed by Idempotency-Key and no `other`: no case sends the valid request.
  "POST /v1/webhook_endpoints/:id/test": { body: () => ({}) },
  "GET /v1/webhook_endpoints/:id/deliveries": {},
  "GET /v1/webhook_deliveries/:id": {},
  "POST /v1/webhook_deliveries/:id/retry": { body: () => ({}) },
  "GET /v1/alerts": {},
  "GET /v1/wallets/:id/alert_rules": {},
  "POST /v1/wallets/:id/alert_rules": {
    setup: async ({ client }) => ({
      wallet: String((await client.create("/v1/customers", { kind: "individual" })).wallet_id),
    }),
    id: (_f, v) => v.wallet!,
    body: rulesWith([{ kind: "percent_remaining", percent: 30 }, { kind: "exhausted" }]),
    other: (_f, v) => ({ path: `/v1/wallets/${v.wallet}/alert_rules`, json: { rules: null } }),
    business: [
      {
        name: "percent 0",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "percent_remaining", percent: 0 }]),
      },
      {
        name: "percent 100",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "percent_remaining", percent: 100 }]),
      },
      {
        name: "a fractional percent",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "percent_remaining", percent: 12.5 }]),
      },
      {
        name: "an amount of 0",
        code: "invalid_amount",
        body: rulesWith([{ kind: "amount_remaining", amount: "0" }]),
      },
      {
        name: "a negative amount",
        code: "invalid_amount",
        body: rulesWith([{ kind: "amount_remaining", amount: "-5" }]),
      },
      {
        name: "an amount as a number",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "amount_remaining", amount: 5 }]),
      },
      {
        name: "the same rule twice",
        code: "invalid_argument",
        body: rulesWith([{ kind: "exhausted" }, { kind: "exhausted" }]),
      },
      {
        name: "two expiring_soon rules",
        code: "invalid_argument",
        body: rulesWith([
          { kind: "expiring_soon", days: 3 },
          { kind: "expiring_soon", days: 7 },
        ]),
      },
      {
        name: "days 0",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "expiring_soon", days: 0 }]),
      },
      {
        name: "days over 365",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "expiring_soon", days: 366 }]),
      },
      {
        name: "a kind not in the list",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "sunny" }]),
      },
      {
        name: "a rule with an unknown field",
        code: "validation_failed",
        field: "rules",
        body: rulesWith([{ kind: "exhausted", percent: 3 }]),
      },
      {
        name: "21 rules",
        code: "validation_failed",
        field: "rules",
        body: rulesWith(
          Array.from({ length: 21 }, (_, i) => ({ kind: "percent_remaining", percent: i + 1 })),
        ),
      },
    ],
  },
};

const GIFT_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/gift_codes": {
    setup: async () => ({ code: `gift-${unique()}` }),
    body: giftCodeWith({}),
    other: (f, v) => ({ path: "/v1/gift_codes", json: giftCodeWith({ code: `${v.code}-other` })(f, v) }),
    business: [
      { name: "a code already taken", code: "already_exists", body: giftCodeWith({ code: "FIXTURE" }) },
      {
        name: "an end in the past",
        code: "invalid_argument",
        body: giftCodeWith({ ends_at: "2001-01-01T00:00:00Z" }),
      },
      {
        name: "a code with a space",
        code: "validation_failed",
        field: "code",
        body: giftCodeWith({ code: "two words" }),
      },
      {
        name: "a code of 3 characters",
        code: "validation_failed",
        field: "code",
        body: giftCodeWith({ code: "abc" }),
      },
      {
        name: "max_uses 0",
        code: "validation_failed",
        field: "max_uses",
        body: giftCodeWith({ max_uses: 0 }),
      },
      {
        name: "max_uses over 1,000,000",
        code: "validation_failed",
        field: "max_uses",
        body: giftCodeWith({ max_uses: 1_000_001 }),
      },
      {
        name: "expires_in_days 0",
        code: "validation_failed",
        field: "expires_in_days",
        body: giftCodeWith({ expires_in_days: 0 }),
      },
      {
        name: "an empty scope",
        code: "validation_failed",
        field: "scope",
        body: giftCodeWith({ scope: [] }),
      },
    ],
  },
  "GET /v1/gift_codes": {},
  "POST /v1/gift_codes/claim": {
    setup: async ({ client, world }) => {
      const code = await freshGiftCode(client, { max_uses: 5, expires_in_days: 30 });
      const claimed = await freshGiftCode(client);
      const claimer = String((await freshCustomer(client)).id);
      await client.create("/v1/gift_codes/claim", { code: claimed, customer_id: claimer });
      const ended = await freshGiftCode(client, { ends_at: "2099-01-01T00:00:00Z" });
      // No valid request ends a code now, and the suite moves no clock: end it in the database.
      await world.server.store.db.query(
        "UPDATE gift_codes SET ends_at = now() - interval '1 day' WHERE code = $1",
        [ended],
      );
      return {
        code,
        claimed,
        claimer,
        ended,
        customer: String((await freshCustomer(client)).id),
        customer2: String((await freshCustomer(client)).id),
      };
    },
    body: (_f, v) => ({ code: v.code!, customer_id: v.customer! }),
    other: (_f, v) => ({ path: "/v1/gift_codes/claim", json: { code: v.code!, customer_id: v.customer2! } }),
    ids: { customer_id: { code: "not_found", kind: "cus" } },
    business: [
      {
        name: "a code that does not exist",
        code: "not_found",
        body: (_f, v) => ({ code: "NOPE-NOPE", customer_id: v.customer! }),
      },
      {
        name: "another tenant's code",
        code: "not_found",
        body: (f) => ({ code: "FIXTURE", customer_id: f.b.customer }),
      },
      {
        name: "a code claimed twice by one customer",
        code: "already_exists",
        body: (_f, v) => ({ code: v.claimed!, customer_id: v.claimer! }),
      },
      {
        name: "a code whose every use is taken",
        code: "gift_code_exhausted",
        body: (_f, v) => ({ code: v.claimed!, customer_id: v.customer! }),
      },
      {
        name: "a code after its end",
        code: "gift_code_ended",
        body: (_f, v) => ({ code: v.ended!, customer_id: v.customer! }),
      },
      {
        name: "an empty code",
        code: "validation_failed",
        field: "code",
        body: (_f, v) => ({ code: "", customer_id: v.customer! }),
      },
    ],
  },
  "POST /v1/customers/:id/gifts": {
    setup: async ({ client }) => ({
      customer: String((await freshCustomer(client)).id),
      other: String((await freshCustomer(client)).id),
    }),
    id: (_f, v) => v.customer!,
    body: () => ({ amount: "3", scope: ["image.*"], reason: "beta tester" }),
    other: (_f, v) => ({ path: `/v1/customers/${v.other}/gifts`, json: { amount: "3" } }),
    business: [
      {
        name: "an expiry in the past",
        code: "invalid_argument",
        body: () => ({ amount: "3", expires_at: "2001-01-01T00:00:00Z" }),
      },
      {
        name: "an empty scope",
        code: "validation_failed",
        field: "scope",
        body: () => ({ amount: "3", scope: [] }),
      },
      {
        name: "a reason over the limit",
        code: "validation_failed",
        field: "reason",
        body: () => ({ amount: "3", reason: "r".repeat(1001) }),
      },
    ],
  },
  "POST /v1/customers/:id/referral": {
    setup: async ({ client }) => {
      const done = String((await freshCustomer(client)).id);
      const referrer = String((await freshCustomer(client)).id);
      await client.create(`/v1/customers/${done}/referral`, { referrer_customer_id: referrer, amount: "5" });
      return {
        customer: String((await freshCustomer(client)).id),
        other: String((await freshCustomer(client)).id),
        done,
      };
    },
    id: (_f, v) => v.customer!,
    body: referralWith({}),
    other: (f, v) => ({ path: `/v1/customers/${v.other}/referral`, json: referralWith({})(f) }),
    ids: { referrer_customer_id: { code: "not_found", kind: "cus" } },
    business: [
      {
        name: "a customer referred already",
        code: "already_exists",
        id: (_f, v) => v.done!,
        body: referralWith({}),
      },
      {
        name: "a customer referring itself",
        code: "invalid_argument",
        body: (_f, v) => ({ referrer_customer_id: v.customer!, amount: "5" }),
      },
      {
        name: "an expiry in the past",
        code: "invalid_argument",
        body: referralWith({ expires_at: "2001-01-01T00:00:00Z" }),
      },
    ],
  },
  "GET /v1/reports/gifts": {},
};

// ------------------------------------------------------------------ contracts

const DAY = 86_400_000;
/** A time `days` from now, as the server's clock (which the suite moves only minutes) sees it. */
const inDays = (days: number): string => new Date(Date.now() + days * DAY).toISOString();

const contractBody = (customerId: string, change: Json = {}): Json => ({
  customer_id: customerId,
  ends_at: inDays(365),
  commitment: "1200",
  schedule: { kind: "installments", interval: { unit: "month", count: 3 } },
  credit_price: { amount: "0.008", currency: "USD" },
  ...change,
});

/** A valid contract body for the route's fresh customer, with fields replaced. */
const contractWith =
  (change: Json) =>
  (_f: Fixtures, v: Vars): Json =>
    contractBody(v.customer!, change);

/** A fresh customer with a contract: the contract's id. */
async function freshContract(client: Client): Promise<string> {
  const c = await freshCustomer(client);
  return String((await client.create("/v1/contracts", contractBody(String(c.id)))).id);
}

const pocWith =
  (change: Json) =>
  (_f: Fixtures, v: Vars): Json => ({
    customer_id: v.customer!,
    amount: "100",
    list_value: { amount: "40", currency: "USD" },
    ends_at: inDays(30),
    ...change,
  });

const CONTRACT_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/contracts": {
    setup: async ({ client }) => {
      const bound = String((await freshCustomer(client)).id);
      await client.create("/v1/contracts", contractBody(bound));
      const card = await client.create("/v1/rate_cards", { name: `empty-${unique()}` });
      return {
        customer: String((await freshCustomer(client)).id),
        customer2: String((await freshCustomer(client)).id),
        bound,
        emptyCard: String(card.id),
      };
    },
    body: contractWith({}),
    other: (_f, v) => ({ path: "/v1/contracts", json: contractBody(v.customer2!) }),
    zeroAllowed: ["commitment"],
    ids: {
      customer_id: { code: "not_found", kind: "cus" },
      rate_card_id: { code: "not_found", kind: "rcd" },
    },
    business: [
      {
        name: "a term overlapping the customer's contract",
        code: "already_exists",
        body: (_f, v) => contractBody(v.bound!, { starts_at: inDays(100), ends_at: inDays(400) }),
      },
      {
        name: "a term ending before it starts",
        code: "invalid_argument",
        body: contractWith({ starts_at: inDays(10), ends_at: inDays(5) }),
      },
      {
        name: "a term ending as it starts",
        code: "invalid_argument",
        body: contractWith({ starts_at: inDays(10), ends_at: inDays(10) }),
      },
      {
        name: "a term starting in the past (a period change in the past)",
        code: "invalid_argument",
        body: contractWith({ starts_at: inDays(-2) }),
      },
      {
        name: "a term of more than 120 months",
        code: "invalid_argument",
        body: contractWith({ ends_at: inDays(3700) }),
      },
      {
        name: "an installment interval longer than the term",
        code: "invalid_argument",
        body: contractWith({ schedule: { kind: "installments", interval: { unit: "year", count: 2 } } }),
      },
      {
        name: "installments without an interval",
        code: "invalid_argument",
        body: contractWith({ schedule: { kind: "installments" } }),
      },
      {
        name: "a schedule kind not in the list",
        code: "validation_failed",
        field: "schedule",
        body: contractWith({ schedule: { kind: "monthly" } }),
      },
      {
        name: "a credit price without currency",
        code: "validation_failed",
        field: "credit_price",
        body: contractWith({ credit_price: { amount: "0.008" } }),
      },
      {
        name: "a negative credit price",
        code: "invalid_amount",
        field: "credit_price.amount",
        body: contractWith({ credit_price: { amount: "-0.008", currency: "USD" } }),
      },
      {
        name: "a credit price as a JSON number",
        code: "validation_failed",
        field: "credit_price",
        body: contractWith({ credit_price: { amount: 0.008, currency: "USD" } }),
      },
      {
        name: "a rolling expiry without months",
        code: "invalid_argument",
        body: contractWith({ expiry: { kind: "rolling" } }),
      },
      {
        name: "a version to pin, with none in force",
        code: "no_rate_card",
        body: (_f, v) =>
          contractBody(v.customer!, { rate_card_id: v.emptyCard!, allow_rate_card_upgrades: false }),
      },
      {
        name: "an override line without a rate",
        code: "invalid_rate_card",
        body: contractWith({
          overrides: [{ id: "x", action: "chat.completion", quantity: "output_tokens" }],
        }),
      },
    ],
  },
  "GET /v1/customers/:id/contracts": {},
  "GET /v1/contracts/:id": {},
  "POST /v1/contracts/:id/terminate": {
    setup: async ({ client }) => {
      const terminated = await freshContract(client);
      await client.create(`/v1/contracts/${terminated}/terminate`, {});
      return { contract: await freshContract(client), other: await freshContract(client), terminated };
    },
    id: (_f, v) => v.contract!,
    body: () => ({ credits: "forfeit" }),
    other: (_f, v) => ({ path: `/v1/contracts/${v.other}/terminate`, json: {} }),
    business: [
      { name: "terminating twice", code: "invalid_argument", id: (_f, v) => v.terminated! },
      {
        name: "credits neither keep nor forfeit",
        code: "validation_failed",
        field: "credits",
        body: () => ({ credits: "burn" }),
      },
    ],
  },
  "POST /v1/poc_allocations": {
    setup: async ({ client }) => ({
      customer: String((await freshCustomer(client)).id),
      customer2: String((await freshCustomer(client)).id),
    }),
    body: pocWith({}),
    other: (f, v) => ({
      path: "/v1/poc_allocations",
      json: { ...pocWith({})(f, v), customer_id: v.customer2! },
    }),
    ids: { customer_id: { code: "not_found", kind: "cus" } },
    business: [
      {
        name: "a window ending before it starts",
        code: "invalid_argument",
        body: pocWith({ starts_at: inDays(10), ends_at: inDays(5) }),
      },
      {
        name: "a window starting in the past",
        code: "invalid_argument",
        body: pocWith({ starts_at: inDays(-2) }),
      },
      {
        name: "a window of more than 366 days",
        code: "invalid_argument",
        body: pocWith({ ends_at: inDays(400) }),
      },
      {
        name: "a window that has already ended",
        code: "invalid_argument",
        body: pocWith({ ends_at: inDays(-1) }),
      },
      {
        name: "a list value without currency",
        code: "validation_failed",
        field: "list_value",
        body: pocWith({ list_value: { amount: "40" } }),
      },
      {
        name: "a negative list value",
        code: "invalid_amount",
        field: "list_value.amount",
        body: pocWith({ list_value: { amount: "-40", currency: "USD" } }),
      },
      {
        name: "an empty scope",
        code: "validation_failed",
        field: "scope",
        body: pocWith({ scope: [] }),
      },
      {
        name: "a scope pattern outside the syntax",
        code: "invalid_argument",
        body: pocWith({ scope: ["Docs Review"] }),
      },
    ],
  },
  "GET /v1/customers/:id/poc_allocations": {},
  "GET /v1/poc_allocations/:id": {},
};

// ------------------------------------------------------------------ top-ups and the price book

const TIERS = [
  { up_to: "1000", unit_price: "0.12" },
  { up_to: null, unit_price: "0.1" },
];

const bookWith = (change: Json) => (): Json => ({
  currency: "EUR",
  packs: [{ id: "starter", name: "Starter", credits: "100", price: "9.5" }],
  tiers: TIERS,
  ...change,
});

const pack = (change: Json): Json => ({ id: "p", name: "P", credits: "10", price: "1", ...change });

/** A fresh purchase of tenant A: a pending invoice, or one already confirmed. */
async function freshPurchase(client: Client, wallet: string, confirmed = false): Promise<string> {
  const p = await client.create("/v1/purchases", {
    wallet_id: wallet,
    currency: "USD",
    credits: "5",
    provider: "manual",
  });
  if (confirmed) await client.create(`/v1/purchases/${p.id}/confirm`, {});
  return String(p.id);
}

/** Setup of the routes that resolve a purchase: fresh pending ones, and one in each final state. */
const purchaseStates = async ({ f, client }: { f: Fixtures; client: Client }): Promise<Vars> => {
  const failed = await freshPurchase(client, f.a.wallet2);
  await client.create(`/v1/purchases/${failed}/fail`, { reason: "bounced" });
  const canceled = await freshPurchase(client, f.a.wallet2);
  await client.create(`/v1/purchases/${canceled}/cancel`, {});
  return {
    purchase: await freshPurchase(client, f.a.wallet2),
    other: await freshPurchase(client, f.a.wallet2),
    confirmed: await freshPurchase(client, f.a.wallet2, true),
    failed,
    canceled,
  };
};

const notPending: Variant[] = [
  { name: "a purchase confirmed already", code: "purchase_not_pending", id: (_f, v) => v.confirmed! },
  { name: "a purchase whose payment failed", code: "purchase_not_pending", id: (_f, v) => v.failed! },
  { name: "a canceled purchase", code: "purchase_not_pending", id: (_f, v) => v.canceled! },
];

const topUpWith = (change: Json) => (): Json => ({
  threshold: "50",
  amount: "100",
  currency: "USD",
  monthly_cap: "100",
  provider: "test",
  payment_method: "pm_test_ok",
  ...change,
});

const COMMERCE_SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/price_books": {
    body: bookWith({}),
    other: () => ({ path: "/v1/price_books", json: bookWith({ currency: "GBP" })() }),
    business: [
      { name: "a book that sells nothing", code: "invalid_argument", body: () => ({ currency: "EUR" }) },
      {
        name: "a lowercase currency",
        code: "validation_failed",
        field: "currency",
        body: bookWith({ currency: "eur" }),
      },
      { name: "decimals 10", code: "validation_failed", field: "decimals", body: bookWith({ decimals: 10 }) },
      {
        name: "a pack price finer than the book's decimals",
        code: "invalid_amount",
        body: bookWith({ packs: [pack({ price: "1.005" })] }),
      },
      {
        name: "a pack of zero credits",
        code: "invalid_amount",
        body: bookWith({ packs: [pack({ credits: "0" })] }),
      },
      {
        name: "a pack price as a JSON number",
        code: "validation_failed",
        field: "price",
        body: bookWith({ packs: [pack({ price: 1 })] }),
      },
      {
        name: "a pack id listed twice",
        code: "invalid_argument",
        body: bookWith({ packs: [pack({}), pack({ name: "Q" })] }),
      },
      {
        name: "a pack id with capitals",
        code: "validation_failed",
        field: "id",
        body: bookWith({ packs: [pack({ id: "Starter" })] }),
      },
      {
        name: "a pack expiring at period end (purchases have no period)",
        code: "validation_failed",
        field: "kind",
        body: bookWith({ packs: [pack({ expiry: { kind: "period_end" } })] }),
      },
      {
        name: "a rolling expiry without its months",
        code: "invalid_argument",
        field: "months",
        body: bookWith({ packs: [pack({ expiry: { kind: "rolling" } })] }),
      },
      {
        name: "a negative unit price",
        code: "invalid_amount",
        body: bookWith({ tiers: [{ up_to: null, unit_price: "-0.1" }] }),
      },
      {
        name: "a last tier with an end",
        code: "invalid_argument",
        body: bookWith({ tiers: [{ up_to: "1000", unit_price: "0.1" }] }),
      },
      {
        name: "tier ends that fall",
        code: "invalid_argument",
        body: bookWith({
          tiers: [
            { up_to: "1000", unit_price: "0.1" },
            { up_to: "500", unit_price: "0.1" },
            { up_to: null, unit_price: "0.1" },
          ],
        }),
      },
      {
        name: "a commitment discount of 100%",
        code: "validation_failed",
        field: "percent_off",
        body: bookWith({ commitment_discounts: [{ min_committed: "10", percent_off: 100 }] }),
      },
      {
        name: "a discount that falls as the commitment grows",
        code: "invalid_argument",
        body: bookWith({
          commitment_discounts: [
            { min_committed: "10", percent_off: 20 },
            { min_committed: "20", percent_off: 10 },
          ],
        }),
      },
      {
        name: "51 packs",
        code: "validation_failed",
        field: "packs",
        body: bookWith({ packs: Array.from({ length: 51 }, (_, i) => pack({ id: `p${i}` })) }),
      },
    ],
  },
  "GET /v1/price_books": {},
  "POST /v1/customers/:id/commitments": {
    setup: async ({ client }) => ({
      customer: String((await freshCustomer(client)).id),
      other: String((await freshCustomer(client)).id),
    }),
    id: (_f, v) => v.customer!,
    body: () => ({ currency: "USD", credits: "10000", ends_at: FUTURE }),
    other: (_f, v) => ({
      path: `/v1/customers/${v.other}/commitments`,
      json: { currency: "USD", credits: "5", ends_at: FUTURE },
    }),
    business: [
      {
        name: "an end in the past",
        code: "invalid_argument",
        body: () => ({ currency: "USD", credits: "10", ends_at: "2001-01-01T00:00:00Z" }),
      },
      {
        name: "an end before the start",
        code: "invalid_argument",
        body: () => ({ currency: "USD", credits: "10", starts_at: LATER, ends_at: FUTURE }),
      },
      {
        name: "a currency that is no code",
        code: "validation_failed",
        field: "currency",
        body: () => ({ currency: "dollars", credits: "10", ends_at: FUTURE }),
      },
    ],
  },
  "GET /v1/customers/:id/commitments": {},
  "POST /v1/purchases": {
    setup: async ({ client }) => ({ wallet: String((await freshCustomer(client)).wallet_id) }),
    body: (_f, v) => ({ wallet_id: v.wallet!, currency: "USD", pack_id: "starter", provider: "manual" }),
    other: (_f, v) => ({
      path: "/v1/purchases",
      json: { wallet_id: v.wallet!, currency: "USD", credits: "3", provider: "manual" },
    }),
    ids: { wallet_id: { code: "not_found", kind: "wal" } },
    business: [
      {
        name: "a currency without a price book",
        code: "no_price_book",
        body: (_f, v) => ({ wallet_id: v.wallet!, currency: "JPY", pack_id: "starter", provider: "manual" }),
      },
      {
        name: "a pack the book does not have",
        code: "not_found",
        body: (_f, v) => ({ wallet_id: v.wallet!, currency: "USD", pack_id: "nope", provider: "manual" }),
      },
      {
        name: "both a pack and credits",
        code: "invalid_argument",
        body: (_f, v) => ({
          wallet_id: v.wallet!,
          currency: "USD",
          pack_id: "starter",
          credits: "5",
          provider: "manual",
        }),
      },
      {
        name: "neither a pack nor credits",
        code: "invalid_argument",
        body: (_f, v) => ({ wallet_id: v.wallet!, currency: "USD", provider: "manual" }),
      },
      {
        name: "a provider this server does not have",
        code: "invalid_argument",
        field: "provider",
        body: (_f, v) => ({ wallet_id: v.wallet!, currency: "USD", pack_id: "starter", provider: "paypal" }),
      },
      {
        name: "the test provider without a test payment method",
        code: "invalid_argument",
        field: "payment_method",
        body: (_f, v) => ({
          wallet_id: v.wallet!,
          currency: "USD",
          pack_id: "starter",
          provider: "test",
          payment_method: "pm_card_visa",
        }),
      },
    ],
  },
  "GET /v1/purchases": {},
  "GET /v1/purchases/:id": {},
  "POST /v1/purchases/:id/confirm": {
    setup: purchaseStates,
    id: (_f, v) => v.purchase!,
    body: () => ({ reference: "wire-1" }),
    other: (_f, v) => ({ path: `/v1/purchases/${v.other}/confirm`, json: {} }),
    business: notPending,
  },
  "POST /v1/purchases/:id/fail": {
    setup: purchaseStates,
    id: (_f, v) => v.purchase!,
    body: () => ({ reason: "invoice unpaid" }),
    other: (_f, v) => ({ path: `/v1/purchases/${v.other}/fail`, json: {} }),
    business: notPending,
  },
  "POST /v1/purchases/:id/cancel": {
    setup: purchaseStates,
    id: (_f, v) => v.purchase!,
    body: () => ({ reason: "ordered twice" }),
    other: (_f, v) => ({ path: `/v1/purchases/${v.other}/cancel`, json: {} }),
    business: notPending,
  },
  "POST /v1/wallets/:id/auto_top_up": {
    setup: async ({ client }) => ({
      wallet: String((await freshCustomer(client)).wallet_id),
      other: String((await freshCustomer(client)).wallet_id),
    }),
    id: (_f, v) => v.wallet!,
    body: topUpWith({}),
    other: (_f, v) => ({ path: `/v1/wallets/${v.other}/auto_top_up`, json: topUpWith({})() }),
    zeroAllowed: ["threshold"],
    business: [
      {
        name: "both an amount and a target",
        code: "invalid_argument",
        body: topUpWith({ target_balance: "500" }),
      },
      {
        name: "no amount, target or pack",
        code: "invalid_argument",
        body: () => {
          const { amount: _, ...rest } = topUpWith({})();
          return rest;
        },
      },
      {
        name: "a target at the threshold",
        code: "invalid_argument",
        body: () => {
          const { amount: _, ...rest } = topUpWith({ target_balance: "50" })();
          return rest;
        },
      },
      {
        name: "a pack the book does not have",
        code: "not_found",
        body: () => {
          const { amount: _, ...rest } = topUpWith({ pack_id: "nope" })();
          return rest;
        },
      },
      {
        name: "a currency without a price book",
        code: "no_price_book",
        body: topUpWith({ currency: "JPY" }),
      },
      {
        name: "a declining test card's unknown cousin",
        code: "invalid_argument",
        field: "payment_method",
        body: topUpWith({ payment_method: "pm_card_visa" }),
      },
    ],
  },
  "GET /v1/wallets/:id/auto_top_up": {},
  "POST /v1/wallets/:id/auto_top_up/disable": {
    setup: async ({ client }) => {
      const set = async () => {
        const wallet = String((await freshCustomer(client)).wallet_id);
        await client.create(`/v1/wallets/${wallet}/auto_top_up`, topUpWith({})());
        return wallet;
      };
      return {
        wallet: await set(),
        other: await set(),
        none: String((await freshCustomer(client)).wallet_id),
      };
    },
    id: (_f, v) => v.wallet!,
    other: (_f, v) => ({ path: `/v1/wallets/${v.other}/auto_top_up/disable`, json: {} }),
    business: [{ name: "a wallet without auto top-up", code: "not_found", id: (_f, v) => v.none! }],
  },
  "POST /v1/wallets/:id/auto_top_up/run": {
    setup: async ({ client }) => {
      const set = async (change: Json) => {
        const c = await freshCustomer(client);
        const wallet = String(c.wallet_id);
        await client.create("/v1/grants", { wallet_id: wallet, amount: "100", source: "promo" });
        await client.create(`/v1/wallets/${wallet}/auto_top_up`, topUpWith(change)());
        return wallet;
      };
      const off = await set({ enabled: false });
      // The cap spent: a first top-up of 100 credits (12.00) fits the 20.00 cap, a second does not.
      const capped = await set({ threshold: "150", monthly_cap: "20" });
      await client.create(`/v1/wallets/${capped}/auto_top_up/run`, {});
      await client.create(`/v1/wallets/${capped}/debits`, { amount: "100", reason: "spent" });
      return {
        wallet: await set({}),
        other: await set({}),
        off,
        capped,
        none: String((await freshCustomer(client)).wallet_id),
      };
    },
    id: (_f, v) => v.wallet!,
    other: (_f, v) => ({ path: `/v1/wallets/${v.other}/auto_top_up/run`, json: {} }),
    business: [
      { name: "an auto top-up that is off", code: "auto_top_up_disabled", id: (_f, v) => v.off! },
      {
        name: "an auto top-up whose cap is already spent",
        code: "auto_top_up_cap_reached",
        id: (_f, v) => v.capped!,
      },
      { name: "a wallet without auto top-up", code: "not_found", id: (_f, v) => v.none! },
    ],
  },
};

export const SPECS: Readonly<Record<string, Spec>> = {
  "POST /v1/customers": {
    body: customerBody,
    other: () => ({ path: "/v1/customers", json: { kind: "individual" } }),
    business: [
      {
        name: "an external_id another customer has",
        code: "already_exists",
        body: () => ({ kind: "individual", external_id: "acme" }),
      },
      {
        name: "an empty external_id",
        code: "validation_failed",
        field: "external_id",
        body: () => ({ kind: "individual", external_id: "" }),
      },
      {
        name: "a name over 200 characters",
        code: "validation_failed",
        field: "name",
        body: () => ({ kind: "individual", name: "n".repeat(201) }),
      },
      ...metadataCases(customerBody),
    ],
  },
  "GET /v1/customers": {},
  "GET /v1/customers/:id": {},
  "POST /v1/customers/:id/subjects": {
    body: subjectBody,
    other: (f) => ({ path: `/v1/customers/${f.a.customer}/subjects`, json: { kind: "workflow" } }),
    business: [
      {
        name: "an external_id another subject of the customer has",
        code: "already_exists",
        body: () => ({ kind: "member", external_id: "alice" }),
      },
      {
        name: "an empty external_id",
        code: "validation_failed",
        field: "external_id",
        body: () => ({ kind: "member", external_id: "" }),
      },
      ...metadataCases(subjectBody),
    ],
  },
  "GET /v1/customers/:id/subjects": {},
  "GET /v1/subjects/:id": {},
  "POST /v1/wallets": {
    setup: async ({ f, client }) => {
      const member = async () =>
        String((await client.create(`/v1/customers/${f.a.customer}/subjects`, { kind: "member" })).id);
      return { member: await member(), member2: await member() };
    },
    body: (f, v) => ({ customer_id: f.a.customer, member_id: v.member! }),
    other: (f, v) => ({ path: "/v1/wallets", json: { customer_id: f.a.customer, member_id: v.member2! } }),
    ids: {
      customer_id: { code: "not_found", kind: "cus" },
      member_id: { code: "not_found", kind: "sub" },
    },
    business: [
      {
        name: "a member that already has a wallet",
        code: "already_exists",
        body: (f) => ({ customer_id: f.a.customer, member_id: f.a.member }),
      },
      {
        name: "a subject that is an agent, not a member",
        code: "invalid_argument",
        body: (f) => ({ customer_id: f.a.customer, member_id: f.a.agent }),
      },
      {
        name: "a member of another customer",
        code: "not_found",
        body: (f, v) => ({ customer_id: f.a.customer2, member_id: v.member! }),
      },
    ],
  },
  "GET /v1/customers/:id/wallets": {},
  "GET /v1/wallets/:id": {},
  "GET /v1/wallets/:id/balance": {},
  "POST /v1/wallets/:id/credits": {
    body: creditBody,
    other: (f) => ({ path: `/v1/wallets/${f.a.wallet}/credits`, json: { amount: "6", reason: "goodwill" } }),
    business: [...grantFieldCases(creditBody), ...reasonCases(creditBody, true)],
  },
  "POST /v1/wallets/:id/debits": {
    body: debitBody,
    other: (f) => ({ path: `/v1/wallets/${f.a.wallet}/debits`, json: { amount: "2", reason: "manual" } }),
    ids: { grant_id: { code: "not_found", kind: "grt" } },
    business: [
      {
        name: "more than the wallet holds",
        code: "insufficient_credits",
        body: () => ({ amount: "100000", reason: "manual" }),
      },
      {
        name: "the largest amount",
        code: "insufficient_credits",
        body: () => ({ amount: MAX, reason: "manual" }),
      },
      {
        name: "a grant of another wallet",
        code: "wallet_mismatch",
        body: (f) => ({ amount: "1", reason: "manual", grant_id: f.a.memberGrant }),
      },
      {
        name: "a voided grant",
        code: "grant_inactive",
        body: (f) => ({ amount: "1", reason: "manual", grant_id: f.a.voidedGrant }),
      },
      {
        name: "more than the named grant holds",
        code: "insufficient_credits",
        body: (f) => ({ amount: "1000", reason: "manual", grant_id: f.a.grant }),
      },
      {
        name: "an action that is no action name",
        code: "validation_failed",
        field: "action",
        body: () => ({ amount: "1", reason: "manual", action: "Chat Completion" }),
      },
      ...reasonCases(debitBody, true),
    ],
  },
  "POST /v1/grants": {
    body: grantBody,
    other: (f) => ({ path: "/v1/grants", json: { ...grantBody(f), amount: "11" } }),
    zeroAllowed: ["cost_basis"],
    ids: { wallet_id: { code: "not_found", kind: "wal" } },
    business: [
      {
        name: "a cost basis without its currency",
        code: "invalid_argument",
        body: (f) => ({ wallet_id: f.a.wallet, amount: "1", source: "purchase", cost_basis: "0.5" }),
      },
      {
        name: "a currency that is not ISO 4217",
        code: "validation_failed",
        field: "currency",
        body: (f) => ({ ...grantBody(f), currency: "usd" }),
      },
      {
        name: "expires_at before effective_at",
        code: "invalid_argument",
        body: (f) => ({
          ...grantBody(f),
          effective_at: "2098-01-01T00:00:00Z",
          expires_at: "2097-01-01T00:00:00Z",
        }),
      },
      ...grantFieldCases(grantBody),
    ],
  },
  "GET /v1/grants": {},
  "GET /v1/grants/:id": {},
  "POST /v1/grants/:id/void": {
    setup: async ({ client, world }) => ({
      grant: (await freshGrant(client)).grant,
      other: (await freshGrant(client)).grant,
      expired: await expiredGrant(client, world),
    }),
    id: (_f, v) => v.grant!,
    body: () => ({ reason: "refund" }),
    other: (_f, v) => ({ path: `/v1/grants/${v.other}/void`, json: { reason: "refund" } }),
    business: [
      { name: "a grant already voided", code: "grant_inactive", id: (f) => f.a.voidedGrant },
      { name: "a grant that has expired", code: "grant_expired", id: (_f, v) => v.expired! },
      ...reasonCases(() => ({ reason: "refund" }), false),
    ],
  },
  "POST /v1/grants/:id/extend": {
    setup: async ({ client, world }) => ({
      grant: (await freshGrant(client)).grant,
      expired: await expiredGrant(client, world),
    }),
    id: (_f, v) => v.grant!,
    body: extendBody,
    other: (_f, v) => ({
      path: `/v1/grants/${v.grant}/extend`,
      json: { expires_at: "2101-01-01T00:00:00Z", reason: "support" },
    }),
    business: [
      {
        name: "an earlier expiry",
        code: "expiry_not_extendable",
        body: () => ({ expires_at: "2098-01-01T00:00:00Z", reason: "support" }),
      },
      {
        name: "the same expiry",
        code: "expiry_not_extendable",
        body: () => ({ expires_at: FUTURE, reason: "support" }),
      },
      {
        name: "a grant that never expires",
        code: "expiry_not_extendable",
        id: (f) => f.a.memberGrant,
      },
      { name: "a grant already voided", code: "grant_inactive", id: (f) => f.a.voidedGrant },
      { name: "a grant that has expired", code: "grant_expired", id: (_f, v) => v.expired! },
      ...reasonCases(extendBody, true),
    ],
  },
  "GET /v1/transactions": {},
  "GET /v1/transactions/:id": {},
  "POST /v1/transactions/:id/reverse": {
    setup: async ({ client }) => {
      const { grant, wallet } = await freshGrant(client);
      const debit = async () =>
        String((await client.create(`/v1/wallets/${wallet}/debits`, { amount: "1", reason: "x" })).id);
      const first = await debit();
      const second = await debit();
      // A debit whose grant was voided since: its credits have nowhere to return.
      const g = await freshGrant(client);
      const stranded = String(
        (
          await client.create(`/v1/wallets/${g.wallet}/debits`, {
            amount: "1",
            reason: "x",
            grant_id: g.grant,
          })
        ).id,
      );
      await client.create(`/v1/grants/${g.grant}/void`, { reason: "x" });
      return { debit: first, other: second, stranded, grant };
    },
    id: (_f, v) => v.debit!,
    body: () => ({ reason: "refund" }),
    other: (_f, v) => ({ path: `/v1/transactions/${v.other}/reverse`, json: { reason: "refund" } }),
    business: [
      { name: "a grant's issuing transaction", code: "transaction_not_reversible", id: (f) => f.a.issue },
      { name: "a debit already reversed", code: "transaction_already_reversed", id: (f) => f.a.reversed },
      { name: "a reversal", code: "transaction_not_reversible", id: (f) => f.a.reversal },
      { name: "a debit whose grant was voided", code: "grant_inactive", id: (_f, v) => v.stranded! },
      ...reasonCases(() => ({ reason: "refund" }), true),
    ],
  },
  "POST /v1/reconcile": {
    body: () => ({}),
    // Reconcile takes no input: a different request is one to another endpoint.
    other: () => ({ path: "/v1/customers", json: { kind: "individual" } }),
  },
  "POST /v1/api_keys": {
    body: () => ({ kind: "secret", name: `ci-${unique()}` }),
    other: () => ({ path: "/v1/api_keys", json: { kind: "secret", name: "another" } }),
    ids: {
      customer_id: {
        code: "not_found",
        kind: "cus",
        base: () => ({ kind: "restricted", name: "customer page" }),
      },
    },
    business: [
      {
        name: "a restricted key without customer_id",
        code: "invalid_argument",
        body: () => ({ kind: "restricted", name: "page" }),
      },
      {
        name: "a secret key with customer_id",
        code: "invalid_argument",
        body: (f) => ({ kind: "secret", name: "page", customer_id: f.a.customer }),
      },
      {
        name: "an empty name",
        code: "validation_failed",
        field: "name",
        body: () => ({ kind: "secret", name: "" }),
      },
    ],
  },
  "GET /v1/api_keys": {},
  "POST /v1/api_keys/:id/revoke": {
    setup: async ({ client }) => {
      const key = async () => String((await client.create("/v1/api_keys", { kind: "secret", name: "k" })).id);
      return { key: await key(), other: await key() };
    },
    id: (_f, v) => v.key!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/api_keys/${v.other}/revoke`, json: {} }),
  },
  "GET /v1/expiry_policies": {},
  "POST /v1/expiry_policies": {
    body: () => ({ source: "promo", expiry: { kind: "never" } }),
    other: () => ({ path: "/v1/expiry_policies", json: { source: "top_up", expiry: { kind: "never" } } }),
    business: [
      {
        name: "a plan source (plan credits follow their plan)",
        code: "validation_failed",
        field: "source",
        body: () => ({ source: "plan", expiry: { kind: "never" } }),
      },
      {
        name: "period_end outside a plan",
        code: "invalid_argument",
        body: () => ({ source: "promo", expiry: { kind: "period_end" } }),
      },
      {
        name: "a rolling expiry without months",
        code: "invalid_argument",
        field: "expiry.months",
        body: () => ({ source: "promo", expiry: { kind: "rolling" } }),
      },
      {
        name: "a rolling expiry of 0 months",
        code: "validation_failed",
        field: "expiry",
        body: () => ({ source: "promo", expiry: { kind: "rolling", months: 0 } }),
      },
    ],
  },
  "POST /v1/authorize": {
    body: (f) => authorizeBody(f),
    other: (f) => ({ path: "/v1/authorize", json: { ...authorizeBody(f), estimate: { credits: "2" } } }),
    zeroAllowed: ["credits"],
    ids: {
      customer_id: { code: "not_found", kind: "cus" },
      subject_id: {
        code: "not_found",
        kind: "sub",
        base: (f) => ({ ...authorizeBody(f), subject_id: f.a.member }),
      },
    },
    business: [
      {
        name: "a negative estimate",
        code: "invalid_amount",
        field: "estimate.credits",
        body: (f) => ({ ...authorizeBody(f), estimate: { credits: "-1" } }),
      },
      {
        name: "an absurd estimate (beyond the amount range)",
        code: "invalid_amount",
        field: "estimate.credits",
        body: (f) => ({ ...authorizeBody(f), estimate: { credits: "1000000000000000000000" } }),
      },
      {
        name: "an estimate that is not a number",
        code: "invalid_amount",
        field: "estimate.credits",
        body: (f) => ({ ...authorizeBody(f), estimate: { credits: "1e3" } }),
      },
      {
        name: "an estimate in credits and quantities",
        code: "invalid_argument",
        field: "estimate",
        body: (f) => ({ ...authorizeBody(f), estimate: { credits: "1", quantities: { output_tokens: 1 } } }),
      },
      {
        name: "an empty estimate",
        code: "invalid_argument",
        field: "estimate",
        body: (f) => ({ ...authorizeBody(f), estimate: {} }),
      },
      {
        name: "a negative quantity",
        code: "validation_failed",
        field: "estimate",
        body: (f) => ({ ...authorizeBody(f), estimate: { quantities: { output_tokens: -5 } } }),
      },
      {
        name: "an absurd quantity",
        code: "invalid_amount",
        field: "estimate.quantities.output_tokens",
        body: (f) => ({ ...authorizeBody(f), estimate: { quantities: { output_tokens: "1e40" } } }),
      },
      {
        name: "quantities of an action the rate card does not price",
        code: "unknown_action",
        body: (f) => ({
          ...authorizeBody(f),
          action: "image.render",
          estimate: { quantities: { pixels: 5 } },
        }),
      },
      {
        name: "a hold timeout of zero",
        code: "validation_failed",
        field: "hold_timeout_seconds",
        body: (f) => ({ ...authorizeBody(f), hold: true, hold_timeout_seconds: 0 }),
      },
      {
        name: "a hold timeout beyond 7 days",
        code: "validation_failed",
        field: "hold_timeout_seconds",
        body: (f) => ({ ...authorizeBody(f), hold: true, hold_timeout_seconds: 7 * 86_400 + 1 }),
      },
      {
        name: "a hold timeout without a hold",
        code: "invalid_argument",
        field: "hold_timeout_seconds",
        body: (f) => ({ ...authorizeBody(f), hold_timeout_seconds: 60 }),
      },
      {
        name: "a subject of another customer",
        code: "not_found",
        body: (f) => ({ ...authorizeBody(f), subject_id: f.a.subject2 }),
      },
    ],
  },
  "GET /v1/holds": {},
  "GET /v1/holds/:id": {},
  "POST /v1/holds/:id/settle": {
    setup: async ({ f, client, world }) => ({
      hold: await freshHold(client, f.a.customer),
      other: await freshHold(client, f.a.customer),
      posted: await freshHold(client, f.a.customer, "posted"),
      voided: await freshHold(client, f.a.customer, "voided"),
      expired: await freshHold(client, f.a.customer, "expired", world),
    }),
    id: (_f, v) => v.hold!,
    body: () => ({ quantities: { output_tokens: 10 } }),
    other: (_f, v) => ({ path: `/v1/holds/${v.other}/settle`, json: { quantities: { output_tokens: 10 } } }),
    business: [
      { name: "a hold already settled", code: "hold_not_pending", id: (_f, v) => v.posted! },
      { name: "a voided hold", code: "hold_not_pending", id: (_f, v) => v.voided! },
      { name: "an expired hold", code: "hold_expired", id: (_f, v) => v.expired! },
      {
        name: "events and quantities both",
        code: "invalid_argument",
        body: () => ({
          quantities: { output_tokens: 1 },
          events: [{ id: `evt-${unique()}`, quantities: { output_tokens: 1 } }],
        }),
      },
      { name: "neither events nor quantities", code: "invalid_argument", body: () => ({}) },
      {
        name: "an event id already recorded",
        code: "event_id_reused",
        body: (f) => ({ events: [{ id: f.a.event, quantities: { output_tokens: 1 } }] }),
      },
      {
        name: "an event id twice",
        code: "invalid_argument",
        body: () => ({
          events: [
            { id: "evt-twice", quantities: { output_tokens: 1 } },
            { id: "evt-twice", quantities: { output_tokens: 1 } },
          ],
        }),
      },
      {
        name: "a negative quantity",
        code: "validation_failed",
        field: "quantities",
        body: () => ({ quantities: { output_tokens: -1 } }),
      },
      {
        name: "an absurd quantity",
        code: "invalid_event",
        body: () => ({ quantities: { output_tokens: "1e40" } }),
      },
      {
        name: "an event of an action the rate card does not price",
        code: "unknown_action",
        body: () => ({
          events: [{ id: `evt-${unique()}`, action: "image.render", quantities: { pixels: 1 } }],
        }),
      },
      {
        name: "an event time a year ago",
        code: "event_too_old",
        body: () => ({
          events: [{ id: `evt-${unique()}`, quantities: { output_tokens: 1 }, time: "2020-01-01T00:00:00Z" }],
        }),
      },
    ],
  },
  "POST /v1/holds/:id/void": {
    setup: async ({ f, client, world }) => ({
      hold: await freshHold(client, f.a.customer),
      other: await freshHold(client, f.a.customer),
      posted: await freshHold(client, f.a.customer, "posted"),
      voided: await freshHold(client, f.a.customer, "voided"),
      expired: await freshHold(client, f.a.customer, "expired", world),
    }),
    id: (_f, v) => v.hold!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/holds/${v.other}/void`, json: {} }),
    business: [
      { name: "a hold already settled", code: "hold_not_pending", id: (_f, v) => v.posted! },
      { name: "a voided hold", code: "hold_not_pending", id: (_f, v) => v.voided! },
      { name: "an expired hold", code: "hold_expired", id: (_f, v) => v.expired! },
    ],
  },
  "POST /v1/customers/:id/spend_caps": {
    body: (f) => ({ target_id: f.a.agent, period: "day", limit: "10" }),
    other: (f) => ({
      path: `/v1/customers/${f.a.customer}/spend_caps`,
      json: { target_id: f.a.member, period: "day", limit: "10" },
    }),
    zeroAllowed: ["limit"],
    ids: { target_id: { code: "not_found", kind: "wal" } },
    business: [
      {
        name: "a wallet of another customer",
        code: "invalid_argument",
        body: (f) => ({ target_id: f.a.wallet2, period: "day", limit: "10" }),
      },
      {
        name: "a subject of another customer",
        code: "invalid_argument",
        body: (f) => ({ target_id: f.a.subject2, period: "day", limit: "10" }),
      },
      {
        name: "a second vendor cap on the same target and period",
        code: "already_exists",
        body: (f) => ({ target_id: f.a.wallet, period: "month", limit: "5" }),
      },
      {
        name: "a restricted key for another customer",
        code: "not_found",
        id: (f) => f.a.customer2,
        key: (f) => f.restricted,
        body: (f) => ({ target_id: f.a.wallet2, period: "day", limit: "10" }),
      },
    ],
  },
  "GET /v1/customers/:id/spend_caps": {},
  "GET /v1/spend_caps/:id": {},
  "POST /v1/spend_caps/:id": {
    setup: async ({ client }) => ({
      cap: await freshCap(client),
      other: await freshCap(client),
    }),
    id: (_f, v) => v.cap!,
    body: () => ({ limit: "20" }),
    other: (_f, v) => ({ path: `/v1/spend_caps/${v.other}`, json: { limit: "30" } }),
    zeroAllowed: ["limit"],
    business: [
      {
        name: "a restricted key on the vendor's cap",
        code: "forbidden",
        id: (f) => f.a.spendCap,
        key: (f) => f.restricted,
        body: () => ({ limit: "1" }),
      },
    ],
  },
  "POST /v1/spend_caps/:id/delete": {
    setup: async ({ client }) => {
      const deleted = await freshCap(client);
      await client.create(`/v1/spend_caps/${deleted}/delete`, {});
      return { cap: await freshCap(client), other: await freshCap(client), deleted };
    },
    id: (_f, v) => v.cap!,
    body: () => ({}),
    other: (_f, v) => ({ path: `/v1/spend_caps/${v.other}/delete`, json: {} }),
    business: [
      {
        name: "a restricted key on the vendor's cap",
        code: "forbidden",
        id: (f) => f.a.spendCap,
        key: (f) => f.restricted,
      },
      { name: "a cap already deleted", code: "not_found", id: (_f, v) => v.deleted! },
    ],
  },
  "GET /v1/ping": {},
  "GET /v1/test_clock": {},
  "POST /v1/test_clock/advance": {
    // A live tenant of its own, with a secret key: it has no test clock.
    setup: async ({ world }) => {
      const { store } = world.server;
      const live = await store.createTenant(`Live ${unique()}`, "live");
      const key = await store.createApiKey(live.id, { kind: "secret", name: "live" });
      if (!key.ok) throw new Error(key.error.message);
      return { liveKey: key.value.secret };
    },
    // Never sent as is: the route takes no Idempotency-Key and has no `other`, so no case runs
    // the valid body, and tenant A's clock is never frozen for the rest of the suite.
    body: () => ({ to: FUTURE }),
    business: [
      {
        name: "a time before the tenant's clock (moving back)",
        code: "invalid_argument",
        body: () => ({ to: "2001-01-01T00:00:00Z" }),
      },
      { name: "both to and seconds", code: "invalid_argument", body: () => ({ to: FUTURE, seconds: 60 }) },
      { name: "neither to nor seconds", code: "invalid_argument", body: () => ({}) },
      { name: "seconds 0", code: "validation_failed", field: "seconds", body: () => ({ seconds: 0 }) },
      {
        name: "seconds negative",
        code: "validation_failed",
        field: "seconds",
        body: () => ({ seconds: -60 }),
      },
      {
        name: "seconds over 366 days",
        code: "validation_failed",
        field: "seconds",
        body: () => ({ seconds: 31_622_401 }),
      },
      {
        name: "seconds beyond any integer",
        code: "validation_failed",
        field: "seconds",
        body: () => ({ seconds: 1e300 }),
      },
      {
        name: "a live tenant (to)",
        code: "invalid_argument",
        key: (_f, v) => v.liveKey!,
      },
      {
        name: "a live tenant (seconds)",
        code: "invalid_argument",
        key: (_f, v) => v.liveKey!,
        body: () => ({ seconds: 60 }),
      },
    ],
  },
  ...METERING_SPECS,
  ...LIFECYCLE_SPECS,
  ...GIFT_SPECS,
  ...CONTRACT_SPECS,
  ...COMMERCE_SPECS,
  ...WEBHOOK_SPECS,
  ...RUN_SPECS,
};
