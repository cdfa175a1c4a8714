import {
  formatTimestamp,
  invariant,
  type LedgerError,
  parseAmount,
  parseTimestamp,
  type Result,
} from "@drawdown/core";
import type {
  Alerts,
  ApiKey,
  Commerce,
  Contracts,
  Gifts,
  Holds,
  HoldWriter,
  IdempotencyClaim,
  IngestWriter,
  Metering,
  Runs,
  SqlExecutor,
  Store,
  Subscriptions,
  TopUpsTried,
  WalletRecord,
  Webhooks,
  WriterAnswer,
} from "@drawdown/storage";
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { ApiError, type ApiErrorCode, problem } from "./errors.js";
import * as S from "./schemas.js";
import {
  apiKeyView,
  balanceView,
  customerView,
  grantView,
  listView,
  reconcileView,
  subjectView,
  transactionView,
  walletView,
} from "./views.js";

/** What a handler is given: the caller's tenant and key, the validated input, and the store. */
export interface RequestContext<P, Q, B> {
  readonly tenantId: string;
  readonly key: ApiKey;
  readonly requestId: string;
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly store: Store;
  /** Rate cards, cost tables and pricing. */
  readonly metering: Metering;
  /** The group-commit writer that ingests usage events. */
  readonly writer: IngestWriter;
  /** Plans and subscriptions. */
  readonly subscriptions: Subscriptions;
  /** Gift codes, gifts and referrals. */
  readonly gifts: Gifts;
  /** Contracts and proof-of-concept allocations. */
  readonly contracts: Contracts;
  /** Price books, purchases and auto top-up. */
  readonly commerce: Commerce;
  /** Authorize and holds. */
  readonly holds: Holds;
  /** Durable runs and their steps (over the holds). */
  readonly runs: Runs;
  /** Webhook endpoints, deliveries and the deliverer. */
  readonly webhooks: Webhooks;
  /** Alert rules and fired alerts. */
  readonly alerts: Alerts;
  /** The group-commit writer of authorize and settle. */
  readonly holdWriter: HoldWriter;
  /** The transaction a POST runs in (with its idempotency record); the database for a GET. */
  readonly tx: SqlExecutor;
  /**
   * A POST's Idempotency-Key and fingerprint (null without a key). A `groupCommit` route hands
   * it to its writer so the key commits with the effect; a purchase derives its payment
   * provider's key from it, so a retried purchase is charged once.
   */
  readonly idempotency?: { readonly key: string; readonly fingerprint: string } | null;
  /**
   * The auto top-ups this request has tried before a denial: a handler that authorizes passes
   * it on (runs). Such a POST throws `TopUpFirst` in its transaction when a top-up is to be
   * bought; the transaction rolls back, the top-up is bought with no transaction open, and the
   * handler runs again with what it did (`withTopUpsFirst`).
   */
  readonly topUps: TopUpsTried;
}

/** A handler's answer. */
export interface Reply {
  readonly status: number;
  readonly body: unknown;
  /** True when the body is a problem document (sent as application/problem+json). */
  readonly problem?: boolean;
  /** A `groupCommit` route's answer replayed from the Idempotency-Key's first outcome. */
  readonly replayed?: boolean;
  /** A `groupCommit` route's Idempotency-Key was used with another request. */
  readonly conflict?: boolean;
}

/** One endpoint: its schemas (validation and documentation both) and its handler. */
export interface Route<
  P extends TSchema = TSchema,
  Q extends TSchema = TSchema,
  B extends TSchema = TSchema,
> {
  readonly method: "GET" | "POST";
  /** Fastify path syntax, e.g. `/v1/grants/:id`. */
  readonly url: string;
  readonly operationId: string;
  readonly tag: string;
  readonly summary: string;
  readonly description?: string;
  /**
   * `secret`: secret keys only. `read`: restricted keys too, confined to their customer.
   * `customer`: a write a restricted key may make for its own customer (its spend caps); the
   * handler confines it and says what such a key may not change.
   */
  readonly access: "secret" | "read" | "customer";
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  readonly response: TSchema;
  readonly status?: number;
  /** Another success status answering the same response schema (a duplicate usage event's 200). */
  readonly duplicateStatus?: number;
  /** Business error codes this endpoint can answer with (documentation). */
  readonly errors: readonly ApiErrorCode[];
  readonly handle: (ctx: RequestContext<Static<P>, Static<Q>, Static<B>>) => Promise<Reply>;
  /** What the idempotency record keeps of a success, when not all of it (never a secret). */
  readonly stored?: (body: unknown) => unknown;
  /**
   * False for POSTs that are idempotent by their own ids (usage events): they run outside the
   * Idempotency-Key transaction, and `tx` is the database.
   */
  readonly idempotencyKey?: false;
  /**
   * True for POSTs whose writer batches requests (authorize, settle): the handler runs outside
   * any transaction (`tx` is the database) and gives `idempotency` to the writer, which claims
   * the key and records its outcome in the batch's transaction. A failure raised before the
   * writer is stored under the key in a transaction of its own.
   */
  readonly groupCommit?: true;
  /** A larger body limit in bytes (batch ingestion). */
  readonly bodyLimit?: number;
}

/** Types a route by its schemas. */
export const route = <P extends TSchema, Q extends TSchema, B extends TSchema>(r: Route<P, Q, B>): Route =>
  r as unknown as Route;

// ------------------------------------------------------------------ helpers

/** A result as the reply a handler gives: `ok` for a success, a problem for a business failure. */
export function replyOf<T>(
  result: Result<T, LedgerError>,
  requestId: string,
  ok: (value: T) => Reply,
): Reply {
  if (result.ok) return ok(result.value);
  const e = ApiError.from(result.error);
  const p = problem(e.code, e.message, requestId, e.extra);
  return { status: p.status, body: p, problem: true };
}

/**
 * Hands a request to a group-commit writer with its Idempotency-Key, and turns the writer's
 * answer into the reply: the same function makes the reply and the key's recorded outcome.
 */
export async function committed<T>(
  ctx: {
    readonly requestId: string;
    readonly idempotency?: RequestContext<unknown, unknown, unknown>["idempotency"];
  },
  submit: (claim: IdempotencyClaim | null) => Promise<WriterAnswer<T>>,
  ok: (value: T) => Reply,
): Promise<Reply> {
  const reply = (r: Result<unknown>) => replyOf(r as Result<T>, ctx.requestId, ok);
  const answer = await submit(ctx.idempotency ? { ...ctx.idempotency, outcome: reply } : null);
  if (answer.kind === "conflict") return { status: 409, body: null, conflict: true };
  if (answer.kind === "replayed") return { ...(answer.outcome as Reply), replayed: true };
  return reply(answer.result);
}

/** Unwraps a core or store result, raising its failure as an API error. */
export function must<T>(result: Result<T, LedgerError>): T {
  if (!result.ok) throw ApiError.from(result.error);
  return result.value;
}

/** Parses a wire amount, raising `invalid_amount` that names the field. */
export function amount(text: string, field: string, allowZero = false): bigint {
  const r = parseAmount(text, { allowZero });
  if (!r.ok)
    throw new ApiError("invalid_amount", `${field}: ${r.error.message}`, {
      errors: [{ path: field, message: r.error.message }],
    });
  return r.value;
}

/** Parses an RFC 3339 time, raising `invalid_argument` that names the field. */
export function timestamp(text: string, field: string): number {
  const r = parseTimestamp(text);
  if (!r.ok)
    throw new ApiError("invalid_argument", `${field}: ${r.error.message}`, {
      errors: [{ path: field, message: r.error.message }],
    });
  return r.value;
}

/** An optional time field: absent stays undefined, null stays null. */
export const optionalTimestamp = (text: string | null | undefined, field: string) =>
  text === undefined ? undefined : text === null ? null : timestamp(text, field);

export function page(query: { limit?: string; cursor?: string }, cursorPattern: RegExp) {
  const limit = query.limit === undefined ? 50 : Number(query.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 200) {
    throw new ApiError("validation_failed", "limit must be from 1 to 200.", {
      errors: [{ path: "limit", message: "from 1 to 200" }],
    });
  }
  let after: string | null = null;
  if (query.cursor !== undefined) {
    after = Buffer.from(query.cursor, "base64url").toString("utf8");
    if (!cursorPattern.test(after) || Buffer.from(after).toString("base64url") !== query.cursor) {
      throw new ApiError(
        "invalid_cursor",
        "The cursor is not one this endpoint returned; pass next_cursor unchanged.",
      );
    }
  }
  return { limit, after };
}

export const ID_CURSOR = /^[a-z]{3}_[0-9a-z]{1,60}$/;
const SEQ_CURSOR = /^[1-9][0-9]{0,18}$/;

export const notFound = (what: string, id: string) => new ApiError("not_found", `No ${what} ${id}.`);

/** Restricted keys see one customer; anything else looks like it does not exist. */
export function visible(key: ApiKey, customerId: string, what: string, id: string): void {
  if (key.customerId !== null && key.customerId !== customerId) throw notFound(what, id);
}

/**
 * A customer named in the path, for lists under it: one this key may see and that exists, or
 * the same `not_found` either way (a foreign id answers like a missing one).
 */
export async function customerInPath(store: Store, tenantId: string, key: ApiKey, id: string): Promise<void> {
  visible(key, id, "customer", id);
  if (!(await store.getCustomer(tenantId, id))) throw notFound("customer", id);
}

/** A wallet named in the path that this key may see, or `not_found` either way. */
export async function walletInPath(
  store: Store,
  tenantId: string,
  key: ApiKey,
  id: string,
): Promise<WalletRecord> {
  const w = await store.getWallet(tenantId, id);
  if (!w) throw notFound("wallet", id);
  visible(key, w.customerId, "wallet", id);
  return w;
}

function secretOnly(key: ApiKey): void {
  if (key.kind !== "secret")
    throw new ApiError("forbidden", "This needs a secret key; restricted keys only read.");
}

export const created = (body: unknown): Reply => ({ status: 201, body });
export const okReply = (body: unknown): Reply => ({ status: 200, body });

// ------------------------------------------------------------------ routes

/** Every endpoint of the API, in the order the reference lists them. */
export const ROUTES: readonly Route[] = [
  // ---- customers
  route({
    method: "POST",
    url: "/v1/customers",
    operationId: "createCustomer",
    tag: "Customers",
    summary: "Create a customer",
    description:
      "Creates a customer (an individual or an organization) and its own wallet, the pool its members share.",
    access: "secret",
    body: S.CustomerCreate,
    response: S.CustomerView,
    status: 201,
    errors: ["already_exists"],
    handle: async ({ store, tx, tenantId, body }) =>
      created(
        customerView(
          must(
            await store.createCustomer(tx, tenantId, {
              kind: body.kind,
              externalId: body.external_id ?? null,
              name: body.name ?? null,
              metadata: body.metadata ?? {},
            }),
          ),
        ),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/customers",
    operationId: "listCustomers",
    tag: "Customers",
    summary: "List customers",
    access: "read",
    query: S.withPage({ external_id: Type.Optional(Type.String({ maxLength: 200 })) }),
    response: S.ListOf(S.CustomerView),
    errors: ["invalid_cursor"],
    handle: async ({ store, tenantId, key, query }) => {
      const p = page(query, ID_CURSOR);
      if (key.customerId !== null) {
        const only = await store.getCustomer(tenantId, key.customerId);
        const match =
          only &&
          (query.external_id === undefined || only.externalId === query.external_id) &&
          (p.after === null || only.id > p.after);
        return okReply(listView(match ? [customerView(only)] : [], null));
      }
      const r = await store.listCustomers(tenantId, p, query.external_id ?? null);
      return okReply(listView(r.items.map(customerView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id",
    operationId: "getCustomer",
    tag: "Customers",
    summary: "Get a customer",
    access: "read",
    params: S.IdParam("cus", "customer"),
    response: S.CustomerView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const c = await store.getCustomer(tenantId, params.id);
      if (!c) throw notFound("customer", params.id);
      visible(key, c.id, "customer", params.id);
      return okReply(customerView(c));
    },
  }),
  // ---- subjects
  route({
    method: "POST",
    url: "/v1/customers/:id/subjects",
    operationId: "createSubject",
    tag: "Subjects",
    summary: "Add a member, agent or workflow to a customer",
    description:
      "Subjects are who or what uses credits inside a customer. Members can also hold wallets of their own.",
    access: "secret",
    params: S.IdParam("cus", "customer"),
    body: S.SubjectCreate,
    response: S.SubjectView,
    status: 201,
    errors: ["not_found", "already_exists"],
    handle: async ({ store, tx, tenantId, params, body }) =>
      created(
        subjectView(
          must(
            await store.createSubject(tx, tenantId, {
              customerId: params.id,
              kind: body.kind,
              externalId: body.external_id ?? null,
              name: body.name ?? null,
              metadata: body.metadata ?? {},
            }),
          ),
        ),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/subjects",
    operationId: "listSubjects",
    tag: "Subjects",
    summary: "List a customer's subjects",
    access: "read",
    params: S.IdParam("cus", "customer"),
    query: S.Page,
    response: S.ListOf(S.SubjectView),
    errors: ["not_found", "invalid_cursor"],
    handle: async ({ store, tenantId, key, params, query }) => {
      await customerInPath(store, tenantId, key, params.id);
      const r = await store.listSubjects(tenantId, params.id, page(query, ID_CURSOR));
      return okReply(listView(r.items.map(subjectView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/subjects/:id",
    operationId: "getSubject",
    tag: "Subjects",
    summary: "Get a subject",
    access: "read",
    params: S.IdParam("sub", "subject"),
    response: S.SubjectView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const s = await store.getSubject(tenantId, params.id);
      if (!s) throw notFound("subject", params.id);
      visible(key, s.customerId, "subject", params.id);
      return okReply(subjectView(s));
    },
  }),
  // ---- wallets
  route({
    method: "POST",
    url: "/v1/wallets",
    operationId: "createWallet",
    tag: "Wallets",
    summary: "Create a member's wallet",
    description:
      "Every customer has a wallet from the start (its pool). This creates one for a member; a debit on it draws the member's own grants, then the pool.",
    access: "secret",
    body: S.WalletCreate,
    response: S.WalletView,
    status: 201,
    errors: ["not_found", "already_exists", "invalid_argument"],
    handle: async ({ store, tx, tenantId, body }) =>
      created(
        walletView(must(await store.createMemberWallet(tx, tenantId, body.customer_id, body.member_id))),
      ),
  }),
  route({
    method: "GET",
    url: "/v1/customers/:id/wallets",
    operationId: "listWallets",
    tag: "Wallets",
    summary: "List a customer's wallets",
    access: "read",
    params: S.IdParam("cus", "customer"),
    response: S.ListOf(S.WalletView),
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      await customerInPath(store, tenantId, key, params.id);
      return okReply(listView((await store.listWallets(tenantId, params.id)).map(walletView), null));
    },
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id",
    operationId: "getWallet",
    tag: "Wallets",
    summary: "Get a wallet",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: S.WalletView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const w = await walletInPath(store, tenantId, key, params.id);
      return okReply(walletView(w));
    },
  }),
  route({
    method: "GET",
    url: "/v1/wallets/:id/balance",
    operationId: "getBalance",
    tag: "Wallets",
    summary: "Get a wallet's balance",
    description:
      "Total, available now, pending (not yet effective) and expired-awaiting-breakage credits, per grant in burn-down order and per scope. Read from materialized rows: as fast with ten million journal entries as with ten.",
    access: "read",
    params: S.IdParam("wal", "wallet"),
    response: S.BalanceView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const now = store.now(tenantId);
      const b = await store.balance(tenantId, params.id);
      if (!b) throw notFound("wallet", params.id);
      visible(key, b.customerId, "wallet", params.id);
      return okReply(balanceView(b, now));
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/credits",
    operationId: "creditWallet",
    tag: "Adjustments",
    summary: "Credit adjustment",
    description:
      "Adds credits by hand with a required reason: a new grant of source `adjustment`, recorded as an `adjustment.credit` transaction.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: S.CreditAdjustment,
    response: S.GrantCreated,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument"],
    handle: async ({ store, tx, tenantId, params, body }) => {
      const r = must(
        await store.createGrant(
          tx,
          tenantId,
          {
            walletId: params.id,
            amount: amount(body.amount, "amount"),
            source: "adjustment",
            expiresAt: optionalTimestamp(body.expires_at, "expires_at"),
            priority: body.priority,
            scope: body.scope,
            metadata: body.metadata,
          },
          { kind: "adjustment.credit", reason: body.reason },
        ),
      );
      return created({
        object: "grant",
        grant: grantView(r.grant, store.now(tenantId)),
        transaction_id: r.transactionId,
      });
    },
  }),
  route({
    method: "POST",
    url: "/v1/wallets/:id/debits",
    operationId: "debitWallet",
    tag: "Adjustments",
    summary: "Debit adjustment",
    description:
      "Takes credits by hand with a required reason, in burn-down order (or from one grant with `grant_id`). Fails with `insufficient_credits` and changes nothing when the wallet cannot cover it, and with `spend_cap_reached` when a spend cap on the wallet's chain has less room.",
    access: "secret",
    params: S.IdParam("wal", "wallet"),
    body: S.DebitAdjustment,
    response: S.TransactionView,
    status: 201,
    errors: [
      "not_found",
      "invalid_amount",
      "insufficient_credits",
      "spend_cap_reached",
      "wallet_mismatch",
      "grant_inactive",
      "grant_expired",
    ],
    handle: async ({ store, tx, tenantId, params, body }) =>
      created(
        transactionView(
          must(
            await store.debitWallet(tx, tenantId, params.id, {
              amount: amount(body.amount, "amount"),
              action: body.action ?? null,
              kind: "adjustment.debit",
              reason: body.reason,
              grantId: body.grant_id ?? null,
            }),
          ),
        ),
      ),
  }),
  // ---- grants
  route({
    method: "POST",
    url: "/v1/grants",
    operationId: "createGrant",
    tag: "Grants",
    summary: "Grant credits",
    description:
      "Issues a credit block into a wallet, with its source, cost basis, effective and expiry times, priority, scope and metadata.",
    access: "secret",
    body: S.GrantCreate,
    response: S.GrantCreated,
    status: 201,
    errors: ["not_found", "invalid_amount", "invalid_argument"],
    handle: async ({ store, tx, tenantId, body }) => {
      const r = must(
        await store.createGrant(tx, tenantId, {
          walletId: body.wallet_id,
          amount: amount(body.amount, "amount"),
          source: body.source,
          costBasis: body.cost_basis === undefined ? undefined : amount(body.cost_basis, "cost_basis", true),
          currency: body.currency ?? null,
          effectiveAt:
            body.effective_at === undefined ? undefined : timestamp(body.effective_at, "effective_at"),
          expiresAt: optionalTimestamp(body.expires_at, "expires_at"),
          priority: body.priority,
          scope: body.scope,
          metadata: body.metadata,
        }),
      );
      return created({
        object: "grant",
        grant: grantView(r.grant, store.now(tenantId)),
        transaction_id: r.transactionId,
      });
    },
  }),
  route({
    method: "GET",
    url: "/v1/grants",
    operationId: "listGrants",
    tag: "Grants",
    summary: "List grants",
    access: "read",
    query: S.withPage({
      wallet_id: Type.Optional(S.Id("wal", "Only this wallet's grants.")),
      customer_id: Type.Optional(S.Id("cus", "Only this customer's grants.")),
      status: Type.Optional(
        Type.Union([Type.Literal("active"), Type.Literal("voided"), Type.Literal("expired")], {
          description: "Stored status.",
        }),
      ),
    }),
    response: S.ListOf(S.GrantView),
    errors: ["invalid_cursor"],
    handle: async ({ store, tenantId, key, query }) => {
      const p = page(query, ID_CURSOR);
      if (
        key.customerId !== null &&
        query.customer_id !== undefined &&
        query.customer_id !== key.customerId
      ) {
        return okReply(listView([], null));
      }
      const r = await store.listGrants(
        tenantId,
        { walletId: query.wallet_id, customerId: key.customerId ?? query.customer_id, status: query.status },
        p,
      );
      const now = store.now(tenantId);
      return okReply(
        listView(
          r.items.map((g) => grantView(g, now)),
          r.next,
        ),
      );
    },
  }),
  route({
    method: "GET",
    url: "/v1/grants/:id",
    operationId: "getGrant",
    tag: "Grants",
    summary: "Get a grant and its recorded changes",
    access: "read",
    params: S.IdParam("grt", "grant"),
    response: S.GrantView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const g = await store.getGrant(tenantId, params.id);
      if (!g) throw notFound("grant", params.id);
      visible(key, g.customerId, "grant", params.id);
      const changes = (await store.grantHistory(tenantId, g.id)).map((c) => ({
        kind: c.kind,
        from: c.from === null ? null : new Date(c.from).toISOString(),
        to: c.to === null ? null : new Date(c.to).toISOString(),
        reason: c.reason,
        at: new Date(c.at).toISOString(),
      }));
      return okReply({ ...grantView(g, store.now(tenantId)), changes });
    },
  }),
  route({
    method: "POST",
    url: "/v1/grants/:id/void",
    operationId: "voidGrant",
    tag: "Grants",
    summary: "Void a grant",
    description: "Its remaining credits leave the wallet for the `voided` account; it is never drawn again.",
    access: "secret",
    params: S.IdParam("grt", "grant"),
    body: S.GrantVoid,
    response: S.GrantView,
    errors: ["not_found", "grant_inactive", "grant_expired"],
    handle: async ({ store, tx, tenantId, params, body }) =>
      okReply(
        grantView(
          must(await store.voidGrant(tx, tenantId, params.id, body.reason ?? null)),
          store.now(tenantId),
        ),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/grants/:id/extend",
    operationId: "extendGrant",
    tag: "Grants",
    summary: "Extend a grant's expiry",
    description:
      "Moves the expiry later (or removes it with null), recorded with its reason. Expiries are never shortened or silently edited.",
    access: "secret",
    params: S.IdParam("grt", "grant"),
    body: S.GrantExtend,
    response: S.GrantView,
    errors: ["not_found", "grant_inactive", "grant_expired", "expiry_not_extendable"],
    handle: async ({ store, tx, tenantId, params, body }) =>
      okReply(
        grantView(
          must(
            await store.extendGrantExpiry(
              tx,
              tenantId,
              params.id,
              body.expires_at === null ? null : timestamp(body.expires_at, "expires_at"),
              body.reason,
            ),
          ),
          store.now(tenantId),
        ),
      ),
  }),
  // ---- journal
  route({
    method: "GET",
    url: "/v1/transactions",
    operationId: "listTransactions",
    tag: "Journal",
    summary: "List journal transactions",
    description: "The journal, oldest first: every transaction with its entries, which sum to zero per unit.",
    access: "read",
    query: S.withPage({
      wallet_id: Type.Optional(S.Id("wal", "Transactions touching this wallet's grants.")),
      customer_id: Type.Optional(S.Id("cus", "This customer's transactions.")),
      from: Type.Optional(S.Timestamp("Posted at or after.")),
      to: Type.Optional(S.Timestamp("Posted before.")),
    }),
    response: S.ListOf(S.TransactionView),
    errors: ["invalid_cursor", "invalid_argument"],
    handle: async ({ store, tenantId, key, query }) => {
      const p = page(query, SEQ_CURSOR);
      if (
        key.customerId !== null &&
        query.customer_id !== undefined &&
        query.customer_id !== key.customerId
      ) {
        return okReply(listView([], null));
      }
      const r = await store.listJournal(
        tenantId,
        {
          walletId: query.wallet_id,
          customerId: key.customerId ?? query.customer_id,
          from: query.from === undefined ? null : timestamp(query.from, "from"),
          to: query.to === undefined ? null : timestamp(query.to, "to"),
        },
        p,
      );
      return okReply(listView(r.items.map(transactionView), r.next));
    },
  }),
  route({
    method: "GET",
    url: "/v1/transactions/:id",
    operationId: "getTransaction",
    tag: "Journal",
    summary: "Get a journal transaction",
    access: "read",
    params: S.IdParam("txn", "transaction"),
    response: S.TransactionView,
    errors: ["not_found"],
    handle: async ({ store, tenantId, key, params }) => {
      const t = await store.getTransaction(tenantId, params.id);
      if (!t) throw notFound("transaction", params.id);
      visible(key, t.customerId, "transaction", params.id);
      return okReply(transactionView(t));
    },
  }),
  route({
    method: "POST",
    url: "/v1/transactions/:id/reverse",
    operationId: "reverseTransaction",
    tag: "Journal",
    summary: "Reverse a debit",
    description:
      "Posts a new transaction with the entries negated; the original stays. Credits return to the same grants, which must still be active.",
    access: "secret",
    params: S.IdParam("txn", "transaction"),
    body: S.Reversal,
    response: S.TransactionView,
    status: 201,
    errors: [
      "not_found",
      "transaction_not_reversible",
      "transaction_already_reversed",
      "grant_inactive",
      "grant_expired",
    ],
    handle: async ({ store, tx, tenantId, params, body }) =>
      created(transactionView(must(await store.reverseTransaction(tx, tenantId, params.id, body.reason)))),
  }),
  route({
    method: "POST",
    url: "/v1/reconcile",
    operationId: "reconcile",
    tag: "Journal",
    summary: "Reconcile balances with the journal",
    description:
      "Recomputes every wallet and grant of the tenant from the journal and reports each difference with the materialized balances, and any transaction that does not balance.",
    access: "secret",
    body: S.Empty,
    response: S.ReconcileView,
    errors: [],
    handle: async ({ store, tx, tenantId }) => okReply(reconcileView(await store.reconcile(tenantId, tx))),
  }),
  // ---- keys
  route({
    method: "POST",
    url: "/v1/api_keys",
    operationId: "createApiKey",
    tag: "API keys",
    summary: "Create an API key",
    description:
      "Returns the key's secret once; only its hash is stored. A retry with the same Idempotency-Key answers the key without its secret.",
    access: "secret",
    body: S.ApiKeyCreate,
    response: S.ApiKeyView,
    status: 201,
    errors: ["not_found", "invalid_argument"],
    handle: async ({ store, tx, tenantId, body }) => {
      if (body.kind === "restricted" && body.customer_id === undefined) {
        throw new ApiError(
          "invalid_argument",
          "A restricted key needs customer_id: the one customer it may read.",
        );
      }
      if (body.kind === "secret" && body.customer_id !== undefined) {
        throw new ApiError(
          "invalid_argument",
          "A secret key reads every customer; drop customer_id or make it restricted.",
        );
      }
      const r = must(
        await store.createApiKey(
          tenantId,
          { kind: body.kind, name: body.name, customerId: body.customer_id ?? null },
          tx,
        ),
      );
      return created(apiKeyView(r.key, r.secret));
    },
    stored: (body) => ({ ...(body as object), secret: undefined }),
  }),
  route({
    method: "GET",
    url: "/v1/api_keys",
    operationId: "listApiKeys",
    tag: "API keys",
    summary: "List API keys",
    access: "secret",
    response: S.ListOf(S.ApiKeyView),
    errors: [],
    handle: async ({ store, tenantId }) =>
      okReply(
        listView(
          (await store.listApiKeys(tenantId)).map((k) => apiKeyView(k)),
          null,
        ),
      ),
  }),
  route({
    method: "POST",
    url: "/v1/api_keys/:id/revoke",
    operationId: "revokeApiKey",
    tag: "API keys",
    summary: "Revoke an API key",
    description: "The key stops working at once.",
    access: "secret",
    params: S.IdParam("key", "API key"),
    body: S.Empty,
    response: S.ApiKeyView,
    errors: ["not_found"],
    handle: async ({ store, tx, tenantId, params }) =>
      okReply(apiKeyView(must(await store.revokeApiKey(tenantId, params.id, tx)))),
  }),
  // ---- test clock
  route({
    method: "GET",
    url: "/v1/test_clock",
    operationId: "getTestClock",
    tag: "Test clock",
    summary: "Get the tenant's time",
    description:
      "The time the tenant lives in. A test tenant's clock is real time until it is first advanced; from then on it stands still (`frozen`) and moves only when advanced. A live tenant always lives in real time.",
    access: "secret",
    response: S.TestClockView,
    errors: [],
    handle: async ({ store, tenantId }) => {
      const tenant = await store.getTenant(tenantId);
      const clock = await store.clockOf(tenantId);
      invariant(tenant !== null && clock !== null, "an authenticated key's tenant exists");
      return okReply({
        object: "test_clock",
        now: formatTimestamp(clock.now),
        frozen: clock.testClock,
        environment: tenant.environment,
      });
    },
  }),
  route({
    method: "POST",
    url: "/v1/test_clock/advance",
    operationId: "advanceTestClock",
    tag: "Test clock",
    summary: "Advance a test tenant's clock",
    description:
      "Moves a test tenant's clock forward, to `to` or by `seconds` (exactly one), and runs every scheduled effect due in between, in time order: the clock stops at each due time (a grant's expiry), the effects due then happen, stamped with that time, and it moves on. The clock then stands still at `to` until the next advance. Never backward; live tenants have none. Not keyed by Idempotency-Key (it runs a transaction per due time): send `to` and a retry is harmless, since the clock is already there and nothing is due twice.",
    access: "secret",
    body: S.TestClockAdvance,
    response: S.TestClockAdvanced,
    errors: ["invalid_argument"],
    idempotencyKey: false,
    handle: async ({ store, tenantId, body }) => {
      const to = body.to === undefined ? undefined : timestamp(body.to, "to");
      if ((to === undefined) === (body.seconds === undefined)) {
        throw new ApiError("invalid_argument", "Give exactly one of to (an RFC 3339 time) and seconds.", {
          errors: [{ path: "body", message: "exactly one of to and seconds" }],
        });
      }
      const r = must(await store.advanceClock(tenantId, to ?? { seconds: body.seconds! }));
      return okReply({
        object: "test_clock",
        from: formatTimestamp(r.from),
        to: formatTimestamp(r.to),
        now: formatTimestamp(store.now(tenantId)),
        expired_grants: r.expiredGrants,
      });
    },
  }),
];

export { secretOnly };
