import { GRANT_LIMITS, GRANT_SOURCES, MAX_INTEGER_DIGITS, SCALE } from "@drawdown/core";
import { type TSchema, Type } from "@sinclair/typebox";

/**
 * The request and response schemas. Fastify validates requests with them and the OpenAPI
 * document is generated from them, so the documentation cannot drift from the checks.
 */

const amountDoc = `A decimal string with at most ${SCALE} decimals and ${MAX_INTEGER_DIGITS} integer digits, e.g. "12.5".`;

/** An amount of credits on the wire: a decimal string, never a JSON number. */
export const Amount = (description = "Credits.") =>
  Type.String({ description: `${description} ${amountDoc}`, maxLength: 40, examples: ["25", "0.000015"] });

export const Timestamp = (description: string) =>
  Type.String({ description: `${description} RFC 3339, e.g. "2026-12-31T23:59:59Z".`, maxLength: 40 });

export const Id = (prefix: string, description: string) =>
  Type.String({
    description,
    minLength: 1,
    maxLength: 64,
    examples: [`${prefix}_01jd0s7k2mqx3v8r9t5w6y7z8a`],
  });

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const Metadata = Type.Record(
  Type.String({ maxLength: GRANT_LIMITS.metadataKeyMax }),
  Type.String({ maxLength: GRANT_LIMITS.metadataValueMax }),
  {
    description: "Your own key-value pairs: up to 50 keys of 40 characters, string values of 500.",
    maxProperties: GRANT_LIMITS.metadataMaxKeys,
    // A Record's key schema documents the keys but does not check them; this does.
    propertyNames: { minLength: 1, maxLength: GRANT_LIMITS.metadataKeyMax },
  },
);

const Reason = (required: boolean) =>
  Type.String({
    description: required ? "Why: required, kept in the journal." : "Why, kept in the journal.",
    minLength: required ? 1 : 0,
    maxLength: GRANT_LIMITS.reasonMax,
  });

const ActionName = Type.String({
  description: 'An action name such as "chat.completion".',
  pattern: "^[a-z0-9][a-z0-9_:.-]*$",
  maxLength: 100,
});

/** Request bodies refuse unknown fields. */
export const strict = { additionalProperties: false } as const;

// ------------------------------------------------------------------ requests

export const CustomerCreate = Type.Object(
  {
    external_id: Type.Optional(
      Type.String({
        description: "Your id for the customer; unique per tenant.",
        minLength: 1,
        maxLength: 200,
      }),
    ),
    kind: Type.Union([Type.Literal("individual"), Type.Literal("organization")], {
      description: "A B2C individual or a B2B organization.",
    }),
    name: Type.Optional(Type.String({ maxLength: 200 })),
    metadata: Type.Optional(Metadata),
  },
  { ...strict, title: "CustomerCreate" },
);

export const SubjectCreate = Type.Object(
  {
    kind: Type.Union([Type.Literal("member"), Type.Literal("agent"), Type.Literal("workflow")]),
    external_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    name: Type.Optional(Type.String({ maxLength: 200 })),
    metadata: Type.Optional(Metadata),
  },
  { ...strict, title: "SubjectCreate" },
);

export const WalletCreate = Type.Object(
  {
    customer_id: Id("cus", "The customer."),
    member_id: Id("sub", "The member (a subject of kind member) who will hold the wallet."),
  },
  { ...strict, title: "WalletCreate" },
);

const grantFields = {
  expires_at: Type.Optional(
    Nullable(
      Timestamp("When the remainder expires to breakage; null: never; absent: the source's expiry policy."),
    ),
  ),
  priority: Type.Optional(
    Type.Integer({
      minimum: GRANT_LIMITS.priorityMin,
      maximum: GRANT_LIMITS.priorityMax,
      description: "Lower is drawn first. Default 50.",
    }),
  ),
  scope: Type.Optional(
    Nullable(
      Type.Array(Type.String({ maxLength: 100 }), {
        minItems: 1,
        maxItems: GRANT_LIMITS.scopeMaxItems,
        description:
          'Actions the grant may pay for ("image.*" admits every image action); null or absent: all.',
      }),
    ),
  ),
  metadata: Type.Optional(Metadata),
};

export const GrantCreate = Type.Object(
  {
    wallet_id: Id("wal", "The wallet that holds the grant."),
    amount: Amount("Credits granted; positive."),
    source: Type.Union(
      GRANT_SOURCES.map((s) => Type.Literal(s)),
      { description: "Where the credits came from." },
    ),
    cost_basis: Type.Optional(
      Amount("Money paid per credit, in `currency`; 0 (the default) for free credits."),
    ),
    currency: Type.Optional(
      Nullable(Type.String({ pattern: "^[A-Z]{3}$", description: "ISO 4217, required with a cost basis." })),
    ),
    effective_at: Type.Optional(Timestamp("When the credits become usable. Default: now.")),
    ...grantFields,
  },
  { ...strict, title: "GrantCreate" },
);

export const CreditAdjustment = Type.Object(
  { amount: Amount("Credits to add; positive."), reason: Reason(true), ...grantFields },
  { ...strict, title: "CreditAdjustment" },
);

export const DebitAdjustment = Type.Object(
  {
    amount: Amount("Credits to take; positive."),
    reason: Reason(true),
    action: Type.Optional(ActionName),
    grant_id: Type.Optional(Id("grt", "Take from this grant only.")),
  },
  { ...strict, title: "DebitAdjustment" },
);

export const GrantVoid = Type.Object(
  { reason: Type.Optional(Reason(false)) },
  { ...strict, title: "GrantVoid" },
);

export const GrantExtend = Type.Object(
  { expires_at: Nullable(Timestamp("The new, later expiry; null: never expires.")), reason: Reason(true) },
  { ...strict, title: "GrantExtend" },
);

export const Reversal = Type.Object({ reason: Reason(true) }, { ...strict, title: "Reversal" });

export const ApiKeyCreate = Type.Object(
  {
    kind: Type.Union([Type.Literal("secret"), Type.Literal("restricted")], {
      description:
        "secret: everything (your backend). restricted: reads one customer (a customer-facing page).",
    }),
    name: Type.String({ minLength: 1, maxLength: 200 }),
    customer_id: Type.Optional(Id("cus", "For a restricted key: the one customer it may read.")),
  },
  { ...strict, title: "ApiKeyCreate" },
);

/** The longest a test clock moves in one request: 366 days, in seconds. */
export const MAX_ADVANCE_SECONDS = 31_622_400;

export const TestClockAdvance = Type.Object(
  {
    to: Type.Optional(
      Timestamp(
        "Where the clock moves to: now or later. A retry of the same `to` is harmless (the clock is already there).",
      ),
    ),
    seconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_ADVANCE_SECONDS,
        description:
          "How far the clock moves, in seconds (up to 366 days). Relative: a retry moves it again; prefer `to` when a request may be retried.",
      }),
    ),
  },
  {
    ...strict,
    title: "TestClockAdvance",
    description: "Exactly one of `to` and `seconds`.",
  },
);

export const Empty = Type.Object({}, { ...strict, title: "Empty" });

export const Page = Type.Object(
  {
    limit: Type.Optional(Type.String({ pattern: "^[0-9]{1,3}$", description: "1 to 200; default 50." })),
    cursor: Type.Optional(Type.String({ maxLength: 200, description: "next_cursor of the previous page." })),
  },
  strict,
);

export const withPage = <T extends Record<string, TSchema>>(props: T) =>
  Type.Object({ ...Page.properties, ...props }, strict);

export const IdParam = (prefix: string, what: string) =>
  Type.Object({ id: Id(prefix, `The ${what}'s id.`) }, strict);

// ------------------------------------------------------------------ responses

const ts = (d: string) => Timestamp(d);

export const CustomerView = Type.Object(
  {
    object: Type.Literal("customer"),
    id: Type.String(),
    external_id: Nullable(Type.String()),
    kind: Type.String(),
    name: Nullable(Type.String()),
    metadata: Metadata,
    wallet_id: Type.String({ description: "The customer's own wallet, its pool." }),
    created_at: ts("Created."),
  },
  { title: "Customer" },
);

export const SubjectView = Type.Object(
  {
    object: Type.Literal("subject"),
    id: Type.String(),
    customer_id: Type.String(),
    kind: Type.String(),
    external_id: Nullable(Type.String()),
    name: Nullable(Type.String()),
    metadata: Metadata,
    created_at: ts("Created."),
  },
  { title: "Subject" },
);

export const WalletView = Type.Object(
  {
    object: Type.Literal("wallet"),
    id: Type.String(),
    customer_id: Type.String(),
    member_id: Nullable(Type.String({ description: "Null for the customer's pool wallet." })),
    balance: Amount("Sum of the grants' remaining credits."),
    created_at: ts("Created."),
  },
  { title: "Wallet" },
);

export const GrantView = Type.Object(
  {
    object: Type.Literal("grant"),
    id: Type.String(),
    wallet_id: Type.String(),
    customer_id: Type.String(),
    amount: Amount("Credits granted."),
    remaining: Amount("Credits left."),
    source: Type.String(),
    cost_basis: Amount("Money per credit."),
    currency: Nullable(Type.String()),
    effective_at: ts("Usable from."),
    expires_at: Nullable(ts("Expires at.")),
    priority: Type.Integer(),
    scope: Nullable(Type.Array(Type.String())),
    metadata: Metadata,
    status: Type.Union(
      ["active", "pending", "depleted", "expired", "voided"].map((s) => Type.Literal(s)),
      { description: "active; pending (not yet effective); depleted (nothing left); expired; voided." },
    ),
    status_changed_at: Nullable(ts("When it was voided or expired.")),
    created_at: ts("Created."),
    changes: Type.Optional(
      Type.Array(
        Type.Object({
          kind: Type.Union([Type.Literal("expiry_extended"), Type.Literal("expiry_shortened")]),
          from: Nullable(Type.String()),
          to: Nullable(Type.String()),
          reason: Type.String(),
          at: Type.String(),
        }),
        { description: "Recorded changes, oldest first (on GET of one grant)." },
      ),
    ),
  },
  { title: "Grant" },
);

export const EntryView = Type.Object(
  {
    account: Type.String({
      description: "grant, or a system account: issuance, consumption, adjustments, breakage, voided.",
    }),
    wallet_id: Nullable(Type.String()),
    grant_id: Nullable(Type.String()),
    unit: Type.Literal("credit"),
    amount: Amount("Signed: positive adds to the account."),
  },
  { title: "Entry" },
);

export const TransactionView = Type.Object(
  {
    object: Type.Literal("transaction"),
    id: Type.String(),
    kind: Type.String(),
    customer_id: Type.String(),
    posted_at: ts("Posted."),
    reason: Nullable(Type.String()),
    action: Nullable(Type.String()),
    reverses_id: Nullable(Type.String()),
    entries: Type.Array(EntryView),
  },
  { title: "Transaction" },
);

export const GrantCreated = Type.Object(
  { object: Type.Literal("grant"), grant: GrantView, transaction_id: Type.String() },
  { title: "GrantCreated" },
);

export const BalanceView = Type.Object(
  {
    object: Type.Literal("balance"),
    wallet_id: Type.String(),
    customer_id: Type.String(),
    member_id: Nullable(Type.String()),
    total: Amount(
      "The wallet's balance: its grants' remaining credits plus what pending holds reserve, minus what it owes.",
    ),
    available: Amount(
      "Spendable now: effective, unexpired grants. Pending holds are already out of it (available = balance − held − upcoming − expired, at zero overdraft).",
    ),
    upcoming: Amount("In grants not yet effective."),
    held: Amount("Reserved by pending holds until they are settled, voided or expire."),
    expired: Amount("In grants past expiry awaiting breakage."),
    as_of: ts("When the balance was read."),
    grants: Type.Array(
      Type.Object({
        id: Type.String(),
        source: Type.String(),
        remaining: Amount(),
        priority: Type.Integer(),
        scope: Nullable(Type.Array(Type.String())),
        effective_at: Type.String(),
        expires_at: Nullable(Type.String()),
        status: Type.String(),
      }),
      { description: "Grants holding credits, in burn-down order." },
    ),
    scopes: Type.Array(Type.Object({ scope: Nullable(Type.Array(Type.String())), available: Amount() }), {
      description: "Available credits per scope; a null scope pays for every action.",
    }),
    pool: Nullable(
      Type.Object(
        {
          wallet_id: Type.String({ description: "The customer's pool wallet." }),
          available: Amount("What the pool has available now, shared with every member."),
        },
        {
          description:
            "For a member's wallet: the customer's pool, drawn after the member's own grants. Null for a pool wallet.",
        },
      ),
    ),
    spendable: Amount(
      "What a debit on this wallet can draw now: available, plus the pool's available for a member's wallet.",
    ),
  },
  { title: "Balance" },
);

export const ReconcileView = Type.Object(
  {
    object: Type.Literal("reconcile_report"),
    ok: Type.Boolean(),
    wallets: Type.Integer(),
    grants: Type.Integer(),
    transactions: Type.Integer(),
    differences: Type.Array(Type.Object({ kind: Type.String(), id: Type.String(), message: Type.String() })),
  },
  { title: "ReconcileReport" },
);

export const ApiKeyView = Type.Object(
  {
    object: Type.Literal("api_key"),
    id: Type.String(),
    kind: Type.String(),
    customer_id: Nullable(Type.String()),
    name: Type.String(),
    prefix: Type.String({ description: "The first characters, to recognize it." }),
    created_at: Type.String(),
    revoked_at: Nullable(Type.String()),
    secret: Type.Optional(Type.String({ description: "The key itself: returned once, at creation." })),
  },
  { title: "ApiKey" },
);

export const TestClockView = Type.Object(
  {
    object: Type.Literal("test_clock"),
    now: ts("The tenant's time: its test clock when frozen, else real time."),
    frozen: Type.Boolean({
      description:
        "True once the clock was advanced: the tenant's time then stands still until the next advance.",
    }),
    environment: Type.Union([Type.Literal("test"), Type.Literal("live")], {
      description: "Only test tenants have a test clock.",
    }),
  },
  { title: "TestClock" },
);

export const TestClockAdvanced = Type.Object(
  {
    object: Type.Literal("test_clock"),
    from: ts("The tenant's time before."),
    to: ts("Where the clock was moved to."),
    now: ts("The tenant's time after: `to`, frozen there."),
    expired_grants: Type.Integer({
      minimum: 0,
      description: "Grants expired on the way, each at its own expiry time, in time order.",
    }),
  },
  { title: "TestClockAdvanced" },
);

export const ListOf = <T extends TSchema>(item: T) =>
  Type.Object({
    object: Type.Literal("list"),
    data: Type.Array(item),
    next_cursor: Nullable(
      Type.String({ description: "Pass as cursor for the next page; null on the last." }),
    ),
  });

export const ProblemView = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ description: "Stable machine code; see the error table." }),
    detail: Type.String(),
    request_id: Type.String(),
    errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
    details: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  { title: "Problem" },
);
