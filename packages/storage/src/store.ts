import {
  accountName,
  applyEffect,
  type Context,
  combine,
  compareBurnOrder,
  type DebitInput,
  type DrawSource,
  debit,
  type Effect,
  type EventType,
  type ExpiryPolicy,
  expireDue,
  expiryForSource,
  extendExpiry,
  fail,
  formatAmount,
  type Grant,
  type GrantInput,
  grantDeltas,
  heldDeltas,
  type IdGenerator,
  invariant,
  isDrawableNow,
  issueGrant,
  MAX_AMOUNT,
  ok,
  overdraftDeltas,
  POLICY_SOURCES,
  type PolicySource,
  type Result,
  ROLLOVER_EXPIRY,
  reverse,
  type SourceExpiryPolicy,
  validateSourceExpiry,
  voidGrant,
  walletDeltas,
  walletsGivenCredits,
} from "@drawdown/core";
import { evaluateWalletAlerts } from "./alerts.js";
import { capDebit, refundCapDebit, writeCapDebits, writeCapEffect } from "./caps.js";
import { hashKey, newKeySecret } from "./ids.js";
import { type EventPayload, insertEvent } from "./outbox.js";
import {
  type ApiKey,
  type Customer,
  type GrantRecord,
  type Metadata,
  type Page,
  paginate,
  type Subject,
  type Tenant,
  type TransactionRecord,
  toApiKey,
  toCustomer,
  toEntry,
  toGrant,
  toSubject,
  toTenant,
  toTransaction,
  toWallet,
  type WalletRecord,
} from "./records.js";
import { announceResumableRuns } from "./run-resume.js";
import type { Listener, Row, SqlClient, SqlExecutor } from "./sql.js";

/** The clock and id generator the store gives the core. Injected so tests control time. */
export interface StoreOptions {
  readonly clock?: () => number;
  readonly newId: IdGenerator;
  /** How long an authenticated key is cached; default {@link KEY_CACHE_MS}. */
  readonly keyCacheMs?: number;
}

/** What an idempotent write returns: its outcome, and whether it is a replay of the first. */
export type IdempotentResult<T> =
  | { readonly kind: "fresh" | "replayed"; readonly outcome: T }
  | { readonly kind: "conflict" };

/** A wallet's balance, read from materialized rows: the cost does not grow with the journal. */
export interface Balance {
  readonly walletId: string;
  readonly customerId: string;
  readonly memberId: string | null;
  /**
   * The wallet's balance: its grants' remaining amounts plus what its pending holds reserve,
   * minus what it owes (equal to the journal, invariant 3).
   */
  readonly total: bigint;
  /** What can be spent now: effective, unexpired grants; pending holds are already out of them. */
  readonly available: bigint;
  /** Remaining in grants not yet effective. */
  readonly upcoming: bigint;
  /** Reserved by pending holds (the wallet's hold account). */
  readonly held: bigint;
  /** Remaining in grants past their expiry that await breakage. */
  readonly expired: bigint;
  /** The grants holding credits, in burn-down order. */
  readonly grants: GrantRecord[];
  /** Available credits per scope; `null` scope is usable for every action. */
  readonly scopes: { readonly scope: readonly string[] | null; readonly available: bigint }[];
  /**
   * For a member's wallet: the customer's pool, which a debit draws after the member's own
   * grants, and what it has available now (shared with every other member). Null for a pool.
   */
  readonly pool: { readonly walletId: string; readonly available: bigint } | null;
}

/** A kind of scheduled effect the store runs with its own (see {@link Store.addDueJob}). */
export interface DueJob {
  /** The earliest time at or before `upTo` when something is due for the tenant; null: none. */
  nextDue(tenantId: string, upTo: number): Promise<number | null>;
  /** Does what is due now for one tenant (or all): exactly once, safe with several instances. */
  run(tenantId: string | null): Promise<unknown>;
}

/** Work done in the transaction that creates a member wallet (see {@link Store.addMemberWalletHook}). */
export type MemberWalletHook = (
  ex: SqlExecutor,
  tenantId: string,
  wallet: WalletRecord,
) => Promise<Result<unknown>>;

/** One disagreement found by {@link Store.reconcile}. */
export interface Difference {
  readonly kind: "wallet" | "grant" | "transaction" | "hold" | "overage";
  readonly tenantId: string;
  readonly id: string;
  readonly message: string;
}

/** The outcome of a reconcile: what was checked and every difference found. */
export interface ReconcileReport {
  readonly wallets: number;
  readonly grants: number;
  readonly transactions: number;
  readonly differences: Difference[];
}

const GRANT_COLUMNS =
  "id, wallet_id, customer_id, amount, remaining, source, cost_basis, currency, effective_at, expires_at, priority, scope, metadata, status, status_at, created_at";

/** Effects with at most this many entries are written in one statement (see `writeEffect`). */
const SMALL_EFFECT_ENTRIES = 64;

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/**
 * How long an authenticated key is trusted without asking the database again. A revocation is
 * immediate on the instance that made it, and on the others as soon as they hear of it
 * ({@link Store.listenToOtherInstances}); this is the bound when they cannot hear (not
 * listening, or their listening connection is down).
 */
export const KEY_CACHE_MS = 2_000;

/**
 * The channel on which an instance tells the others what their caches must drop, at commit:
 * `key_revoked <key id>`, or `clock <tenant id> <ms>` (a test clock moved).
 */
const INSTANCES_CHANNEL = "drawdown_instances";

/**
 * The storage layer: tenancy, keys, customers, wallets and the ledger's writes on
 * PostgreSQL's dialect (PGlite or PostgreSQL).
 *
 * Every write runs in one transaction confined to one customer. A ledger write locks the
 * wallets it touches in id order, loads their drawable grants, lets the pure core plan the
 * effect, and writes it with set-based SQL. The core never sees the database; the store
 * never decides a balance.
 */
export class Store {
  readonly #clock: () => number;
  readonly #newId: IdGenerator;
  /** Authenticated keys by hash, for a few seconds: a key lookup per request would cost more than the request. */
  readonly #keys = new Map<string, { found: { key: ApiKey; tenant: Tenant }; until: number }>();
  readonly #revoked = new Set<string>();
  /** Key lookups under way, by hash (see `authenticate`). */
  readonly #lookups = new Map<string, Promise<{ key: ApiKey; tenant: Tenant } | null>>();
  readonly #keyCacheMs: number;
  /** Test tenants whose time is set by their test clock. */
  readonly #tenantClocks = new Map<string, number>();
  readonly #jobs: DueJob[] = [];
  readonly #walletHooks: MemberWalletHook[] = [];

  constructor(
    readonly db: SqlClient,
    options: StoreOptions,
  ) {
    this.#clock = options.clock ?? Date.now;
    this.#newId = options.newId;
    this.#keyCacheMs = options.keyCacheMs ?? KEY_CACHE_MS;
  }

  /**
   * Hears what other instances announce: a revoked key stops being served from the cache at
   * once, instead of after up to the key cache's lifetime; a test clock moved elsewhere is this
   * instance's time for the tenant at once (before, only from its next key lookup). While the
   * listening connection is down, the key cache's lifetime bounds both again; on every
   * (re)connection the cache is emptied, as news may have been missed. Servers call it at
   * start and close the listener at stop.
   */
  async listenToOtherInstances(): Promise<Listener> {
    return this.db.listen(
      INSTANCES_CHANNEL,
      (payload) => {
        const [kind, id, at] = payload.split(" ");
        if (kind === "key_revoked" && id) this.#forgetKey(id);
        else if (kind === "clock" && id && at) {
          const ms = Number(at);
          const known = this.#tenantClocks.get(id);
          if (Number.isFinite(ms) && (known === undefined || ms > known)) this.rememberClock(id, ms);
        }
      },
      () => this.#keys.clear(),
    );
  }

  #forgetKey(keyId: string): void {
    this.#revoked.add(keyId);
    for (const [hash, entry] of this.#keys) if (entry.found.key.id === keyId) this.#keys.delete(hash);
  }

  /** The injected id generator (for the storage layer's other writers). */
  get newId(): IdGenerator {
    return this.#newId;
  }

  /** Now, as the injected clock says, or as a test tenant's own clock says (see the test clock). */
  now(tenantId?: string): number {
    return tenantId === undefined ? this.#clock() : (this.#tenantClocks.get(tenantId) ?? this.#clock());
  }

  /**
   * Sets (or, with null, clears) a test tenant's clock as this instance knows it. The database
   * holds the truth (`tenants.clock_at`); other instances read it at each request of a tenant
   * whose clock they know to be frozen, and hear of every move, the first included, when it
   * commits ({@link Store.listenToOtherInstances}); without that, of the first one when they
   * next look its key up (within the key cache's two seconds).
   */
  rememberClock(tenantId: string, at: number | null): void {
    if (at === null) this.#tenantClocks.delete(tenantId);
    else this.#tenantClocks.set(tenantId, at);
  }

  #ctx(tenantId: string): Context {
    return { now: this.now(tenantId), newId: this.#newId };
  }

  // ---------------------------------------------------------------- idempotency

  /**
   * Runs `fn` in one transaction, recording its outcome under `key` in the same
   * transaction (invariant 5). The same key with the same fingerprint returns the stored
   * outcome and runs nothing; with another fingerprint it is a conflict. Without a key,
   * `fn` just runs in a transaction. `fn` must return failures before writing anything.
   */
  /**
   * What a committed Idempotency-Key answers: its first outcome (`replayed`), or `conflict` for
   * another request under it; null when the key is not recorded. For an operation that claims
   * its key only after running its own transactions (`Commerce.runAutoTopUp`).
   */
  async recordedOutcome<T>(
    ex: SqlExecutor,
    tenantId: string,
    key: string,
    fingerprint: string,
  ): Promise<{ kind: "replayed"; outcome: T } | { kind: "conflict" } | null> {
    const { rows } = await ex.query<{ fingerprint: string; outcome: string | null }>(
      "SELECT fingerprint, outcome FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
      [tenantId, key],
    );
    const first = rows[0];
    if (!first) return null;
    invariant(first.outcome !== null, "a committed idempotency key has an outcome");
    if (first.fingerprint !== fingerprint) return { kind: "conflict" };
    return { kind: "replayed", outcome: JSON.parse(first.outcome) as T };
  }

  async idempotent<T>(
    tenantId: string,
    key: string | null,
    fingerprint: string,
    fn: (tx: SqlExecutor) => Promise<T>,
  ): Promise<IdempotentResult<T>> {
    return this.db.transaction(async (tx) => {
      if (key !== null) {
        const inserted = await tx.query(
          "INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING key",
          [tenantId, key, fingerprint],
        );
        if (inserted.rowCount === 0) {
          const first = await this.recordedOutcome<T>(tx, tenantId, key, fingerprint);
          invariant(first, "a key that conflicts is recorded");
          return first;
        }
      }
      const outcome = await fn(tx);
      if (key !== null) {
        await tx.query("UPDATE idempotency_keys SET outcome = $3 WHERE tenant_id = $1 AND key = $2", [
          tenantId,
          key,
          // JSON has no `undefined`: store it as null, so a committed key always has an outcome.
          JSON.stringify(outcome) ?? "null",
        ]);
      }
      return { kind: "fresh" as const, outcome };
    });
  }

  // ---------------------------------------------------------------- tenants and keys

  /** Creates a tenant (one environment). */
  async createTenant(name: string, environment: "live" | "test"): Promise<Tenant> {
    const { rows } = await this.db.query(
      "INSERT INTO tenants (id, name, environment, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
      [this.#newId("ten"), name, environment, iso(this.now())],
    );
    return toTenant(rows[0]!);
  }

  async getTenant(id: string, ex: SqlExecutor = this.db): Promise<Tenant | null> {
    const { rows } = await ex.query("SELECT * FROM tenants WHERE id = $1", [id]);
    return rows[0] ? toTenant(rows[0]) : null;
  }

  async listTenants(): Promise<Tenant[]> {
    const { rows } = await this.db.query("SELECT * FROM tenants ORDER BY created_at, id");
    return rows.map(toTenant);
  }

  /**
   * Creates an API key and returns its secret, the only time it exists in clear.
   * A restricted key names the one customer it may read.
   */
  async createApiKey(
    tenantId: string,
    input: { kind: "secret" | "restricted"; name: string; customerId?: string | null },
    ex: SqlExecutor = this.db,
  ): Promise<Result<{ key: ApiKey; secret: string }>> {
    const tenant = await this.getTenant(tenantId, ex);
    if (!tenant) return fail("not_found", `No tenant ${tenantId}.`);
    const customerId = input.kind === "restricted" ? (input.customerId ?? null) : null;
    if (input.kind === "restricted") {
      if (!customerId || !(await this.#customerExists(ex, tenantId, customerId))) {
        return fail(
          "not_found",
          `No customer ${customerId ?? "(none given)"}; a restricted key reads one customer.`,
        );
      }
    }
    const secret = newKeySecret(tenant.environment, input.kind);
    const { rows } = await ex.query(
      `INSERT INTO api_keys (id, tenant_id, kind, customer_id, name, prefix, hash, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
      [
        this.#newId("key"),
        tenantId,
        input.kind,
        customerId,
        input.name,
        secret.slice(0, 14),
        hashKey(secret),
        iso(this.now(tenantId)),
      ],
    );
    return ok({ key: toApiKey(rows[0]!), secret });
  }

  /** Finds the live (unrevoked) key for a secret, or null. */
  async authenticate(secret: string): Promise<{ key: ApiKey; tenant: Tenant } | null> {
    const hash = hashKey(secret);
    const cached = this.#keys.get(hash);
    if (cached && cached.until > Date.now() && !this.#revoked.has(cached.found.key.id)) {
      // A frozen test clock moves when any instance advances it: read it again (one primary-key
      // read), so every request lives at the tenant's time. Without this, an instance whose key
      // cache was warm kept the old time for up to KEY_CACHE_MS after another advanced the clock:
      // it showed balances and posted writes at that old time (and started subscriptions in the
      // past). Live tenants, and test tenants never advanced, skip the read.
      const tenantId = cached.found.tenant.id;
      if (this.#tenantClocks.has(tenantId)) await this.clockOf(tenantId);
      return cached.found;
    }
    // One lookup per key at a time: when a hot key's entry lapses, the requests already in
    // flight share it instead of each asking the database.
    let pending = this.#lookups.get(hash);
    if (pending === undefined) {
      pending = this.#lookUpKey(hash).finally(() => this.#lookups.delete(hash));
      this.#lookups.set(hash, pending);
    }
    const found = await pending;
    if (found && !this.#revoked.has(found.key.id)) {
      if (this.#keys.size >= 10_000) this.#keys.clear();
      this.#keys.set(hash, { found, until: Date.now() + this.#keyCacheMs });
    }
    return found;
  }

  async #lookUpKey(hash: string): Promise<{ key: ApiKey; tenant: Tenant } | null> {
    const { rows } = await this.db.query(
      `SELECT k.*, t.name AS tenant_name, t.environment, t.created_at AS tenant_created_at, t.clock_at
       FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = $1 AND k.revoked_at IS NULL`,
      [hash],
    );
    const r = rows[0];
    if (!r) return null;
    this.rememberClock(
      String(r.tenant_id),
      r.clock_at === null ? null : new Date(r.clock_at as string).getTime(),
    );
    return {
      key: toApiKey(r),
      tenant: toTenant({
        id: r.tenant_id,
        name: r.tenant_name,
        environment: r.environment,
        created_at: r.tenant_created_at,
      }),
    };
  }

  // ---------------------------------------------------------------- time: the test clock and due effects

  /**
   * Moves a test tenant's clock forward to `to`, running every scheduled effect due in between
   * in time order: the clock stops at each due time, the effects due then happen, and it moves
   * on. `to` is a time, or a number of seconds after the tenant's time. Live tenants have no
   * test clock. Time never moves back.
   */
  async advanceClock(
    tenantId: string,
    target: number | { readonly seconds: number },
  ): Promise<Result<{ from: number; to: number; expiredGrants: number }>> {
    const tenant = await this.db.query("SELECT environment, clock_at FROM tenants WHERE id = $1", [tenantId]);
    const t = tenant.rows[0];
    if (!t) return fail("not_found", `No tenant ${tenantId}.`);
    if (t.environment !== "test") return fail("invalid_argument", "Only a test tenant has a test clock.");
    const from = t.clock_at === null ? this.#clock() : new Date(t.clock_at as string).getTime();
    const to = typeof target === "number" ? target : from + target.seconds * 1000;
    if (to < from)
      return fail(
        "invalid_argument",
        `A test clock only moves forward: it is at ${new Date(from).toISOString()}, later than ${new Date(to).toISOString()}.`,
      );
    let expiredGrants = 0;
    let stuckAt: number | null = null;
    let stuck = 0;
    for (;;) {
      const next = await this.db.query<{ at: Date | string | null }>(
        `SELECT min(expires_at) AS at FROM grants WHERE tenant_id = $1 AND status = 'active' AND expires_at IS NOT NULL
           AND expires_at <= $2 AND (metadata->>'drawdown_expiry') IS DISTINCT FROM 'rollover'`,
        [tenantId, iso(to)],
      );
      let at = next.rows[0]?.at ? new Date(next.rows[0].at).getTime() : null;
      for (const job of this.#jobs) {
        const due = await job.nextDue(tenantId, to);
        if (due !== null && (at === null || due < at)) at = due;
      }
      if (at === null) break;
      // Something due that cannot happen (a failing effect) must not hold the clock forever.
      if (at === stuckAt && ++stuck >= 3) break;
      if (at !== stuckAt) stuck = 0;
      stuckAt = at;
      await this.#setClock(tenantId, Math.max(from, at));
      expiredGrants += await this.runDue(tenantId);
    }
    await this.#setClock(tenantId, to);
    return ok({ from, to, expiredGrants });
  }

  /**
   * Adds a kind of scheduled effect (subscription renewals): `nextDue` tells the test clock
   * when it next falls due for a tenant, `run` does what is due now. Storage-internal.
   */
  addDueJob(job: DueJob): void {
    this.#jobs.push(job);
  }

  /** Moves a test tenant's clock to `at`, or leaves it where a concurrent advance took it further. */
  async #setClock(tenantId: string, at: number): Promise<void> {
    // The update and its announcement commit together (one statement).
    const { rows } = await this.db.query<{ clock_at: unknown }>(
      `WITH t AS (UPDATE tenants SET clock_at = greatest(clock_at, $2::timestamptz) WHERE id = $1 RETURNING clock_at)
       SELECT clock_at, pg_notify($3, 'clock ' || $1 || ' ' || (extract(epoch FROM clock_at) * 1000)::bigint) FROM t`,
      [tenantId, iso(at), INSTANCES_CHANNEL],
    );
    this.rememberClock(tenantId, new Date(rows[0]!.clock_at as string).getTime());
  }

  /**
   * Runs the effects due now (each tenant by its own clock): expires every active grant past
   * its expiry, wallet by wallet, through the same locked write pipeline as any write, so an
   * effect happens exactly once whatever the number of instances running it (invariant 7), and
   * catches up on whatever came due while no instance ran. Returns the grants expired.
   */
  async runDue(tenantId: string | null = null, limit = 500): Promise<number> {
    // Other due effects first (a period's renewal expires its credits by rolling them over).
    for (const job of this.#jobs) await job.run(tenantId);
    let expired = 0;
    for (;;) {
      const { rows } = await this.db.query<{ tenant_id: string; wallet_id: string; clock_at: unknown }>(
        `SELECT DISTINCT g.tenant_id, g.wallet_id, t.clock_at FROM grants g JOIN tenants t ON t.id = g.tenant_id
         WHERE g.status = 'active' AND g.expires_at IS NOT NULL
           AND g.expires_at <= coalesce(t.clock_at, $1::timestamptz) AND ($2::text IS NULL OR g.tenant_id = $2)
           AND (g.metadata->>'drawdown_expiry') IS DISTINCT FROM 'rollover'
         LIMIT $3`,
        [iso(this.#clock()), tenantId, limit],
      );
      for (const r of rows) {
        if (r.clock_at !== null) this.rememberClock(r.tenant_id, new Date(r.clock_at as string).getTime());
        const done = await this.db.transaction((tx) =>
          this.mutate(tx, r.tenant_id, r.wallet_id, [], () =>
            ok({ transactions: [], newGrants: [], statusChanges: [], grantChanges: [] }),
          ),
        );
        if (done.ok) expired += done.value.statusChanges.length;
      }
      if (rows.length < limit) return expired;
    }
  }

  /** The time a tenant lives in: its test clock when it has one, else real time. */
  async clockOf(tenantId: string): Promise<{ now: number; testClock: boolean } | null> {
    const { rows } = await this.db.query("SELECT environment, clock_at FROM tenants WHERE id = $1", [
      tenantId,
    ]);
    const t = rows[0];
    if (!t) return null;
    const at = t.clock_at === null ? null : new Date(t.clock_at as string).getTime();
    this.rememberClock(tenantId, at);
    return { now: at ?? this.#clock(), testClock: at !== null };
  }

  async listApiKeys(tenantId: string): Promise<ApiKey[]> {
    const { rows } = await this.db.query(
      "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
      [tenantId],
    );
    return rows.map(toApiKey);
  }

  /** Revokes a key; it stops working at once. Revoking twice is harmless. */
  async revokeApiKey(tenantId: string, keyId: string, ex: SqlExecutor = this.db): Promise<Result<ApiKey>> {
    // Never again served from this instance's cache; other instances hear it at commit (see
    // listenToOtherInstances), or drop it within the key cache's lifetime.
    // Only once it is known to be this tenant's: another tenant's key id changes nothing.
    const { rows } = await ex.query(
      "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3) WHERE tenant_id = $1 AND id = $2 RETURNING *",
      [tenantId, keyId, iso(this.now(tenantId))],
    );
    if (!rows[0]) return fail("not_found", `No API key ${keyId}.`);
    this.#forgetKey(keyId);
    await ex.query("SELECT pg_notify($1, $2)", [INSTANCES_CHANNEL, `key_revoked ${keyId}`]);
    return ok(toApiKey(rows[0]));
  }

  // ---------------------------------------------------------------- customers, subjects, wallets

  async #customerExists(ex: SqlExecutor, tenantId: string, id: string): Promise<boolean> {
    const { rowCount } = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    return rowCount > 0;
  }

  /** Creates a customer and its pool wallet. `external_id` is unique per tenant. */
  async createCustomer(
    ex: SqlExecutor,
    tenantId: string,
    input: { externalId?: string | null; kind: Customer["kind"]; name?: string | null; metadata?: Metadata },
  ): Promise<Result<Customer>> {
    const id = this.#newId("cus");
    const walletId = this.#newId("wal");
    const now = iso(this.now(tenantId));
    const inserted = await ex.query(
      `INSERT INTO customers (tenant_id, id, external_id, kind, name, metadata, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, external_id) DO NOTHING RETURNING *`,
      [
        tenantId,
        id,
        input.externalId ?? null,
        input.kind,
        input.name ?? null,
        JSON.stringify(input.metadata ?? {}),
        now,
      ],
    );
    if (inserted.rowCount === 0) {
      return fail("already_exists", `A customer with external_id "${input.externalId}" already exists.`);
    }
    await ex.query(
      "INSERT INTO wallets (tenant_id, id, customer_id, member_id, created_at) VALUES ($1, $2, $3, NULL, $4)",
      [tenantId, walletId, id, now],
    );
    return ok(toCustomer({ ...inserted.rows[0]!, wallet_id: walletId }));
  }

  static readonly #CUSTOMER_SELECT = `SELECT c.*, w.id AS wallet_id FROM customers c
    JOIN wallets w ON w.tenant_id = c.tenant_id AND w.customer_id = c.id AND w.member_id IS NULL`;

  async getCustomer(tenantId: string, id: string): Promise<Customer | null> {
    const { rows } = await this.db.query(`${Store.#CUSTOMER_SELECT} WHERE c.tenant_id = $1 AND c.id = $2`, [
      tenantId,
      id,
    ]);
    return rows[0] ? toCustomer(rows[0]) : null;
  }

  /** Customers in id order, `limit` at a time after the cursor id. */
  async listCustomers(
    tenantId: string,
    page: { after?: string | null; limit: number },
    externalId?: string | null,
  ): Promise<Page<Customer>> {
    const { rows } = await this.db.query(
      `${Store.#CUSTOMER_SELECT} WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.id > $2)
       AND ($4::text IS NULL OR c.external_id = $4) ORDER BY c.id LIMIT $3`,
      [tenantId, page.after ?? null, page.limit + 1, externalId ?? null],
    );
    return paginate(rows.map(toCustomer), page.limit, (c) => c.id);
  }

  /** Adds a member, agent or workflow to a customer. */
  async createSubject(
    ex: SqlExecutor,
    tenantId: string,
    input: {
      customerId: string;
      kind: Subject["kind"];
      externalId?: string | null;
      name?: string | null;
      metadata?: Metadata;
    },
  ): Promise<Result<Subject>> {
    if (!(await this.#customerExists(ex, tenantId, input.customerId)))
      return fail("not_found", `No customer ${input.customerId}.`);
    const { rows, rowCount } = await ex.query(
      `INSERT INTO subjects (tenant_id, id, customer_id, kind, external_id, name, metadata, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, customer_id, external_id) DO NOTHING RETURNING *`,
      [
        tenantId,
        this.#newId("sub"),
        input.customerId,
        input.kind,
        input.externalId ?? null,
        input.name ?? null,
        JSON.stringify(input.metadata ?? {}),
        iso(this.now(tenantId)),
      ],
    );
    if (rowCount === 0)
      return fail(
        "already_exists",
        `This customer already has a subject with external_id "${input.externalId}".`,
      );
    return ok(toSubject(rows[0]!));
  }

  async getSubject(tenantId: string, id: string): Promise<Subject | null> {
    const { rows } = await this.db.query("SELECT * FROM subjects WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    return rows[0] ? toSubject(rows[0]) : null;
  }

  async listSubjects(
    tenantId: string,
    customerId: string,
    page: { after?: string | null; limit: number },
  ): Promise<Page<Subject>> {
    const { rows } = await this.db.query(
      `SELECT * FROM subjects WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR id > $3) ORDER BY id LIMIT $4`,
      [tenantId, customerId, page.after ?? null, page.limit + 1],
    );
    return paginate(rows.map(toSubject), page.limit, (s) => s.id);
  }

  /** Creates a member's own wallet; the customer's pool wallet exists from the start. */
  async createMemberWallet(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    memberId: string,
  ): Promise<Result<WalletRecord>> {
    const { rows: subjects } = await ex.query("SELECT * FROM subjects WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      memberId,
    ]);
    const subject = subjects[0] ? toSubject(subjects[0]) : null;
    if (!subject || subject.customerId !== customerId)
      return fail("not_found", `Customer ${customerId} has no member ${memberId}.`);
    if (subject.kind !== "member")
      return fail("invalid_argument", `Subject ${memberId} is a ${subject.kind}; only members hold wallets.`);
    const { rows, rowCount } = await ex.query(
      `INSERT INTO wallets (tenant_id, id, customer_id, member_id, created_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING RETURNING *`,
      [tenantId, this.#newId("wal"), customerId, memberId, iso(this.now(tenantId))],
    );
    if (rowCount === 0) return fail("already_exists", `Member ${memberId} already has a wallet.`);
    const wallet = toWallet(rows[0]!);
    // In the same transaction: a wallet exists only with what it is owed (a per-member plan's allocation).
    for (const hook of this.#walletHooks) {
      const r = await hook(ex, tenantId, wallet);
      if (!r.ok) return r;
    }
    return ok(wallet);
  }

  /**
   * Adds work done when a member wallet is created, in its transaction (a per-member plan
   * allocates the current period to it). Storage-internal, like {@link addDueJob}.
   */
  addMemberWalletHook(hook: MemberWalletHook): void {
    this.#walletHooks.push(hook);
  }

  async getWallet(tenantId: string, id: string, ex: SqlExecutor = this.db): Promise<WalletRecord | null> {
    const { rows } = await ex.query("SELECT * FROM wallets WHERE tenant_id = $1 AND id = $2", [tenantId, id]);
    return rows[0] ? toWallet(rows[0]) : null;
  }

  async listWallets(tenantId: string, customerId: string): Promise<WalletRecord[]> {
    const { rows } = await this.db.query(
      "SELECT * FROM wallets WHERE tenant_id = $1 AND customer_id = $2 ORDER BY member_id NULLS FIRST, id",
      [tenantId, customerId],
    );
    return rows.map(toWallet);
  }

  // ---------------------------------------------------------------- the ledger's writes

  /**
   * The one write pipeline: lock the wallet (and, for a member, the pool) in id order, load
   * their drawable grants plus any named ones, expire what is due, let the core plan, write.
   * On a failure nothing is written. Every ledger write of the storage layer goes through it
   * (subscriptions too); `ex` is the caller's transaction.
   *
   * `walletId` may list several wallets of one customer (a per-member renewal writes to every
   * member wallet and the pool at once): all are locked together, in id order, and the first
   * is `state.wallet`. A write never spans two customers.
   */
  async mutate(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string | readonly string[],
    extraGrantIds: readonly string[],
    plan: (
      ctx: Context,
      state: { wallet: WalletRecord; sources: DrawSource[]; grants: Map<string, Grant> },
    ) => Result<Effect> | Promise<Result<Effect>>,
  ): Promise<Result<Effect>> {
    const listed = typeof walletId === "string" ? [walletId] : [...walletId];
    const first = listed[0];
    const wallet = first === undefined ? null : await this.getWallet(tenantId, first, ex);
    if (!wallet) return fail("not_found", `No wallet ${first ?? "(none given)"}.`);
    const ids = [...new Set(listed)];
    if (wallet.memberId !== null) {
      const pool = await ex.query(
        "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL",
        [tenantId, wallet.customerId],
      );
      const poolId = String(pool.rows[0]!.id);
      if (!ids.includes(poolId)) ids.push(poolId);
    }
    // Lock in a fixed order so two writers never deadlock.
    const locked = await ex.query(
      "SELECT id FROM wallets WHERE tenant_id = $1 AND id = ANY($2::text[]) AND customer_id = $3 ORDER BY id FOR UPDATE",
      [tenantId, ids, wallet.customerId],
    );
    invariant(locked.rowCount === ids.length, "every wallet to lock exists and belongs to one customer");
    const ctx = this.#ctx(tenantId);
    // Drawable grants, grants due to expire (even empty ones: their status changes once), named ones.
    const { rows } = await ex.query(
      `SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND wallet_id = ANY($2::text[])
       AND ((status = 'active' AND (remaining > 0 OR expires_at <= $4)) OR id = ANY($3::text[]))`,
      [tenantId, ids, extraGrantIds, iso(ctx.now)],
    );
    const loaded = rows.map(toGrant);
    const expiry = expireDue(ctx, wallet.customerId, loaded);
    const grants = applyEffect(new Map(loaded.map((g) => [g.id, g])), expiry);
    const sources = ids.map((id) => ({
      walletId: id,
      grants: [...grants.values()].filter((g) => g.walletId === id),
    }));
    const result = await plan(ctx, { wallet, sources, grants });
    if (!result.ok) return result;
    const effect = combine(expiry, result.value);
    await this.writeEffect(ex, tenantId, wallet.customerId, effect);
    return ok(effect);
  }

  /**
   * Announces `run.resumable` for the suspended runs these wallets pay for whose step can now be
   * paid (run-resume.ts); the caller holds the wallets' pool locks. Storage-internal: spend caps
   * call it when their room grows.
   */
  announceResumableRuns(ex: SqlExecutor, tenantId: string, walletIds: readonly string[]): Promise<void> {
    return announceResumableRuns(ex, this, tenantId, walletIds);
  }

  /**
   * Writes an effect with set-based SQL. Grant remainders, wallet balances and overdrafts
   * change only by journal entries, so they cannot disagree with the journal. The caller
   * holds the locks of every wallet the effect touches (storage-internal).
   */
  async writeEffect(ex: SqlExecutor, tenantId: string, customerId: string, effect: Effect): Promise<void> {
    for (const g of effect.newGrants) {
      await ex.query(
        `INSERT INTO grants (tenant_id, id, wallet_id, customer_id, amount, remaining, source, cost_basis, currency,
           effective_at, expires_at, priority, scope, metadata, status, created_at)
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
        [
          tenantId,
          g.id,
          g.walletId,
          customerId,
          g.amount.toString(),
          g.source,
          g.costBasis.toString(),
          g.currency,
          iso(g.effectiveAt),
          iso(g.expiresAt),
          g.priority,
          g.scope,
          JSON.stringify(g.metadata),
          g.status,
          iso(g.createdAt),
        ],
      );
    }
    const entries = effect.transactions.flatMap((t) => t.entries);
    if (entries.length > 0) {
      if (entries.length <= SMALL_EFFECT_ENTRIES) await this.#writeSmall(ex, tenantId, effect);
      else await this.#writeLarge(ex, tenantId, effect);
    }
    for (const g of effect.newGrants) {
      await this.emit(ex, tenantId, "grant.created", {
        grant_id: g.id,
        wallet_id: g.walletId,
        customer_id: customerId,
        amount: formatAmount(g.amount),
        source: g.source,
        effective_at: iso(g.effectiveAt),
        expires_at: iso(g.expiresAt),
        scope: g.scope,
        metadata: g.metadata,
      });
    }
    // Alerts on every wallet whose balance changed, in this transaction (one query).
    const changed = walletDeltas(entries);
    // Wallets that received a grant: their new available becomes their alerts' 100% (see core
    // alerts).
    const credited = [...new Set(effect.newGrants.map((g) => g.walletId))].sort();
    if (changed.size > 0)
      await evaluateWalletAlerts(ex, this, tenantId, [...changed.keys()].sort(), credited);
    // Suspended runs may become resumable wherever credits came back to be drawn: a new grant,
    // or credits given back to a grant (a hold voided, expired or settled below its estimate, a
    // reversal). One indexed query, and never on usage writes, which only draw.
    const restored = [...new Set([...credited, ...walletsGivenCredits(entries)])].sort();
    if (restored.length > 0) await announceResumableRuns(ex, this, tenantId, restored);
    const left = effect.statusChanges.length > 0 ? grantDeltas(entries) : new Map<string, bigint>();
    for (const c of effect.statusChanges) {
      const { rows, rowCount } = await ex.query(
        "UPDATE grants SET status = $3, status_at = $4 WHERE tenant_id = $1 AND id = $2 AND status = 'active' RETURNING wallet_id, customer_id",
        [tenantId, c.grantId, c.status, iso(this.now(tenantId))],
      );
      // Invariant 7: a grant leaves `active` exactly once; the wallet lock makes this hold.
      invariant(rowCount === 1, `grant ${c.grantId} changed status twice`);
      await this.emit(ex, tenantId, c.status === "expired" ? "grant.expired" : "grant.voided", {
        grant_id: c.grantId,
        wallet_id: String(rows[0]!.wallet_id),
        customer_id: String(rows[0]!.customer_id),
        // What left the grant with this change (to breakage, a rollover, or voided).
        amount: formatAmount(-(left.get(c.grantId) ?? 0n)),
      });
    }
    for (const c of effect.grantChanges) {
      await ex.query(
        `INSERT INTO grant_changes (tenant_id, id, grant_id, kind, from_expires_at, to_expires_at, reason, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [tenantId, c.id, c.grantId, c.kind, iso(c.from), iso(c.to), c.reason, iso(c.at)],
      );
      // An extended grant no longer ends with its period, so its subscription's rollover (which
      // takes credits ending at a period end) will never expire it: drop the rollover's mark, and
      // it expires at its new time like any grant. Without this it stayed active forever.
      await ex.query(
        `UPDATE grants SET expires_at = $3, metadata = CASE WHEN $4::boolean THEN metadata - $5::text ELSE metadata END
         WHERE tenant_id = $1 AND id = $2`,
        [tenantId, c.grantId, iso(c.to), c.kind === "expiry_extended", ROLLOVER_EXPIRY.key],
      );
    }
  }

  /**
   * A small effect's journal and balances in ONE statement (data-modifying CTEs): one round
   * trip instead of four, which is what a single authorize or settle costs. Rows are inserted in
   * the effect's order, so positions (seq) follow it as with COPY.
   */
  async #writeSmall(ex: SqlExecutor, tenantId: string, effect: Effect): Promise<void> {
    const txs = effect.transactions;
    const entries = txs.flatMap((t) => t.entries);
    const flat = txs.flatMap((t) => t.entries.map((e, i) => ({ tx: t.id, i, e })));
    const byGrant = grantDeltas(entries);
    const byWallet = walletDeltas(entries);
    const owed = overdraftDeltas(entries);
    const held = heldDeltas(entries);
    const walletIds = [...byWallet.keys()];
    await ex.query(
      `WITH t AS (
         INSERT INTO journal_transactions (tenant_id, id, customer_id, kind, reason, action, reverses_id, posted_at)
         SELECT $1, x.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
           AS x(id, customer_id, kind, reason, action, reverses_id, posted_at)
         RETURNING 1
       ), e AS (
         INSERT INTO journal_entries (tenant_id, tx_id, idx, account, wallet_id, grant_id, unit, amount)
         SELECT $1, x.tx_id, x.idx, x.account, x.wallet_id, x.grant_id, 'credit', x.amount
         FROM unnest($9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::numeric[])
           AS x(tx_id, idx, account, wallet_id, grant_id, amount)
         RETURNING 1
       ), g AS (
         UPDATE grants g SET remaining = g.remaining + d.delta
         FROM unnest($15::text[], $16::numeric[]) AS d(id, delta) WHERE g.tenant_id = $1 AND g.id = d.id
         RETURNING 1
       )
       UPDATE wallets w SET balance = w.balance + d.delta, overdraft = w.overdraft - d.owed, held = w.held + d.held
       FROM unnest($17::text[], $18::numeric[], $19::numeric[], $20::numeric[]) AS d(id, delta, owed, held)
       WHERE w.tenant_id = $1 AND w.id = d.id`,
      [
        tenantId,
        txs.map((t) => t.id),
        txs.map((t) => t.customerId),
        txs.map((t) => t.kind),
        txs.map((t) => t.reason),
        txs.map((t) => t.action),
        txs.map((t) => t.reversesId),
        txs.map((t) => iso(t.postedAt)),
        flat.map((f) => f.tx),
        flat.map((f) => f.i),
        flat.map((f) => accountName(f.e.account)),
        flat.map((f) => (f.e.account.kind === "system" ? null : f.e.account.walletId)),
        flat.map((f) => (f.e.account.kind === "grant" ? f.e.account.grantId : null)),
        flat.map((f) => f.e.amount.toString()),
        [...byGrant.keys()],
        [...byGrant.values()].map(String),
        walletIds,
        walletIds.map((id) => String(byWallet.get(id))),
        walletIds.map((id) => String(owed.get(id) ?? 0n)),
        walletIds.map((id) => String(held.get(id) ?? 0n)),
      ],
    );
  }

  /** A large effect (a writer batch): COPY for the journal, then set-based updates. */
  async #writeLarge(ex: SqlExecutor, tenantId: string, effect: Effect): Promise<void> {
    const txs = effect.transactions;
    // COPY, in order: each transaction's position (seq) follows the order of the effect.
    await ex.copyFrom(
      "journal_transactions",
      ["tenant_id", "id", "customer_id", "kind", "reason", "action", "reverses_id", "posted_at"],
      txs.map((t) => [
        tenantId,
        t.id,
        t.customerId,
        t.kind,
        t.reason,
        t.action,
        t.reversesId,
        iso(t.postedAt),
      ]),
    );
    await ex.copyFrom(
      "journal_entries",
      ["tenant_id", "tx_id", "idx", "account", "wallet_id", "grant_id", "unit", "amount"],
      txs.flatMap((t) =>
        t.entries.map((e, i) => [
          tenantId,
          t.id,
          String(i),
          accountName(e.account),
          e.account.kind === "system" ? null : e.account.walletId,
          e.account.kind === "grant" ? e.account.grantId : null,
          e.unit,
          e.amount.toString(),
        ]),
      ),
    );
    const entries = txs.flatMap((t) => t.entries);
    const byGrant = grantDeltas(entries);
    if (byGrant.size > 0) {
      await ex.query(
        `UPDATE grants g SET remaining = g.remaining + d.delta
         FROM unnest($2::text[], $3::numeric[]) AS d(id, delta) WHERE g.tenant_id = $1 AND g.id = d.id`,
        [tenantId, [...byGrant.keys()], [...byGrant.values()].map(String)],
      );
    }
    const byWallet = walletDeltas(entries);
    if (byWallet.size > 0) {
      const owed = overdraftDeltas(entries);
      const held = heldDeltas(entries);
      const ids = [...byWallet.keys()];
      await ex.query(
        `UPDATE wallets w SET balance = w.balance + d.delta, overdraft = w.overdraft - d.owed, held = w.held + d.held
         FROM unnest($2::text[], $3::numeric[], $4::numeric[], $5::numeric[]) AS d(id, delta, owed, held)
         WHERE w.tenant_id = $1 AND w.id = d.id`,
        [
          tenantId,
          ids,
          ids.map((id) => String(byWallet.get(id))),
          ids.map((id) => String(owed.get(id) ?? 0n)),
          ids.map((id) => String(held.get(id) ?? 0n)),
        ],
      );
    }
  }

  /**
   * Writes an event to the outbox in the caller's transaction `ex`, so it exists exactly when
   * its cause commits; every enabled webhook endpoint subscribed to `type` gets a delivery.
   * `type` is one of the closed list `EVENT_TYPES` (core); `payload` is the event's `data`,
   * plain JSON (amounts as decimal strings, times RFC 3339). Returns the event id.
   */
  async emit(ex: SqlExecutor, tenantId: string, type: EventType, payload: EventPayload): Promise<string> {
    const r = await insertEvent(ex, { newId: this.#newId, now: this.now(tenantId) }, tenantId, type, payload);
    return r.eventId;
  }

  // ---------------------------------------------------------------- expiry policies per source

  /** Every configurable source's default expiry: what was set, else `never`. */
  async expiryPolicies(
    tenantId: string,
    ex: SqlExecutor = this.db,
  ): Promise<Record<PolicySource, SourceExpiryPolicy>> {
    const { rows } = await ex.query("SELECT source, policy FROM expiry_policies WHERE tenant_id = $1", [
      tenantId,
    ]);
    const set = new Map(
      rows.map((r) => [String(r.source), JSON.parse(String(r.policy)) as SourceExpiryPolicy]),
    );
    return Object.fromEntries(POLICY_SOURCES.map((s) => [s, set.get(s) ?? { kind: "never" }])) as Record<
      PolicySource,
      SourceExpiryPolicy
    >;
  }

  /**
   * Sets the default expiry of grants from `source` that name no expiry of their own. It
   * applies to grants issued from now on; grants already issued keep theirs.
   */
  async setExpiryPolicy(
    ex: SqlExecutor,
    tenantId: string,
    source: string,
    policy: ExpiryPolicy,
  ): Promise<Result<Record<PolicySource, SourceExpiryPolicy>>> {
    const checked = validateSourceExpiry(source, policy);
    if (!checked.ok) return checked;
    await ex.query(
      `INSERT INTO expiry_policies (tenant_id, source, policy, updated_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (tenant_id, source) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at`,
      [tenantId, checked.value.source, JSON.stringify(checked.value.policy), iso(this.now(tenantId))],
    );
    return ok(await this.expiryPolicies(tenantId, ex));
  }

  /**
   * A grant's expiry as given, or, when it names none (`undefined`; `null` means never), its
   * source's policy applied from its effective time.
   */
  async #withSourceExpiry(ex: SqlExecutor, tenantId: string, input: GrantInput): Promise<GrantInput> {
    if (input.expiresAt !== undefined || !(POLICY_SOURCES as readonly string[]).includes(input.source))
      return input;
    const { rows } = await ex.query(
      "SELECT policy FROM expiry_policies WHERE tenant_id = $1 AND source = $2",
      [tenantId, input.source],
    );
    if (!rows[0]) return { ...input, expiresAt: null };
    const policy = JSON.parse(String(rows[0].policy)) as SourceExpiryPolicy;
    return { ...input, expiresAt: expiryForSource(policy, input.effectiveAt ?? this.now(tenantId)) };
  }

  /**
   * Issues a grant (or, with kind `adjustment.credit`, a credit adjustment) into a wallet. A
   * grant that names no expiry (`expiresAt` undefined) gets its source's expiry policy.
   */
  async createGrant(
    ex: SqlExecutor,
    tenantId: string,
    given: GrantInput,
    options: { kind?: "grant" | "adjustment.credit"; reason?: string | null } = {},
  ): Promise<Result<{ grant: GrantRecord; transactionId: string }>> {
    const wallet = await this.getWallet(tenantId, given.walletId, ex);
    if (!wallet) return fail("not_found", `No wallet ${given.walletId}.`);
    const input = await this.#withSourceExpiry(ex, tenantId, given);
    // A balance travels as an amount too: it must stay within the range one can be written in.
    if (wallet.balance + input.amount > MAX_AMOUNT)
      return fail(
        "invalid_amount",
        `This grant would take wallet ${wallet.id} beyond the largest balance, ${formatAmount(MAX_AMOUNT)} credits.`,
      );
    const r = await this.mutate(ex, tenantId, input.walletId, [], (ctx) =>
      issueGrant(ctx, wallet.customerId, input, options),
    );
    if (!r.ok) return r;
    const grant = r.value.newGrants[0]!;
    const tx = r.value.transactions[r.value.transactions.length - 1]!;
    return ok({ grant: { ...grant, customerId: wallet.customerId, statusAt: null }, transactionId: tx.id });
  }

  async #grantWallet(ex: SqlExecutor, tenantId: string, grantId: string): Promise<string | null> {
    const { rows } = await ex.query("SELECT wallet_id FROM grants WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      grantId,
    ]);
    return rows[0] ? String(rows[0].wallet_id) : null;
  }

  /** Voids a grant: its remainder leaves the wallet for the `voided` account. */
  async voidGrant(
    ex: SqlExecutor,
    tenantId: string,
    grantId: string,
    reason: string | null,
  ): Promise<Result<GrantRecord>> {
    const walletId = await this.#grantWallet(ex, tenantId, grantId);
    if (!walletId) return fail("not_found", `No grant ${grantId}.`);
    const r = await this.mutate(ex, tenantId, walletId, [grantId], (ctx, s) =>
      voidGrant(ctx, s.wallet.customerId, s.grants.get(grantId)!, reason),
    );
    if (!r.ok) return r;
    return ok((await this.getGrant(tenantId, grantId, ex))!);
  }

  /** Extends a grant's expiry (or removes it with `null`), recorded with its reason. */
  async extendGrantExpiry(
    ex: SqlExecutor,
    tenantId: string,
    grantId: string,
    expiresAt: number | null,
    reason: string,
  ): Promise<Result<GrantRecord>> {
    const walletId = await this.#grantWallet(ex, tenantId, grantId);
    if (!walletId) return fail("not_found", `No grant ${grantId}.`);
    const r = await this.mutate(ex, tenantId, walletId, [grantId], (ctx, s) =>
      extendExpiry(ctx, s.grants.get(grantId)!, expiresAt, reason),
    );
    if (!r.ok) return r;
    return ok((await this.getGrant(tenantId, grantId, ex))!);
  }

  /** Debits a wallet in burn-down order: usage (`debit`) or a manual `adjustment.debit`. */
  async debitWallet(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    input: Omit<DebitInput, "customerId">,
  ): Promise<Result<TransactionRecord>> {
    if (input.grantId && !(await this.getGrant(tenantId, input.grantId, ex)))
      return fail("not_found", `No grant ${input.grantId}.`);
    // Spend caps (caps.ts) are checked in the debit's plan, under its locks; their effect is written after.
    let caps: Awaited<ReturnType<typeof capDebit>> | null = null;
    const r = await this.mutate(
      ex,
      tenantId,
      walletId,
      input.grantId ? [input.grantId] : [],
      async (ctx, s) => {
        const planned = debit(ctx, s.sources, { ...input, customerId: s.wallet.customerId });
        if (!planned.ok) return planned;
        const chain = s.sources.map((x) => x.walletId);
        caps = await capDebit(ex, tenantId, s.wallet.customerId, chain, ctx.now, input.amount);
        if (caps.ok) return planned;
        return fail("spend_cap_reached", "A spend cap's room for this period is smaller than the debit.", {
          requested: formatAmount(input.amount),
          cap_remaining: formatAmount(caps.room ?? 0n),
        });
      },
    );
    const capped = caps as Awaited<ReturnType<typeof capDebit>> | null;
    if (capped) await writeCapEffect(ex, this, tenantId, capped.effect);
    if (!r.ok) return r;
    const tx = r.value.transactions[r.value.transactions.length - 1]!;
    // What it counted on each cap, and in which period: a reversal gives exactly that back.
    if (capped) await writeCapDebits(ex, tenantId, tx.id, capped.charges);
    return ok((await this.getTransaction(tenantId, tx.id, ex))!);
  }

  /**
   * Reverses a debit with a new, negating transaction; the original stays. What the debit
   * counted on spend caps is given back in the same transaction, in the period it counted in
   * (caps.ts), before the write pipeline checks suspended runs against the credits returned.
   */
  async reverseTransaction(
    ex: SqlExecutor,
    tenantId: string,
    txId: string,
    reason: string,
  ): Promise<Result<TransactionRecord>> {
    const original = await this.getTransaction(tenantId, txId, ex);
    if (!original) return fail("not_found", `No transaction ${txId}.`);
    const walletIds = [
      ...new Set(original.entries.flatMap((e) => (e.account.kind === "grant" ? [e.account.walletId] : []))),
    ].sort();
    if (walletIds.length === 0)
      return reverse(this.#ctx(tenantId), original, new Map(), false, reason) as Result<never>;
    // A member's debit may touch the pool too; locking the member's wallet locks both.
    const anchor = await this.#anchorWallet(ex, tenantId, walletIds);
    const grantIds = [...grantDeltas(original.entries).keys()];
    const r = await this.mutate(ex, tenantId, anchor, grantIds, async (ctx, s) => {
      const done = await ex.query(
        "SELECT 1 FROM journal_transactions WHERE tenant_id = $1 AND reverses_id = $2",
        [tenantId, txId],
      );
      const reversed = reverse(ctx, original, s.grants, done.rowCount > 0, reason);
      if (reversed.ok) await refundCapDebit(ex, this, tenantId, original.customerId, txId);
      return reversed;
    });
    if (!r.ok) return r;
    const tx = r.value.transactions[r.value.transactions.length - 1]!;
    return ok((await this.getTransaction(tenantId, tx.id, ex))!);
  }

  async #anchorWallet(ex: SqlExecutor, tenantId: string, walletIds: string[]): Promise<string> {
    const { rows } = await ex.query(
      "SELECT id FROM wallets WHERE tenant_id = $1 AND id = ANY($2::text[]) ORDER BY member_id NULLS LAST, id LIMIT 1",
      [tenantId, walletIds],
    );
    return String(rows[0]!.id);
  }

  // ---------------------------------------------------------------- reads

  async getGrant(tenantId: string, id: string, ex: SqlExecutor = this.db): Promise<GrantRecord | null> {
    const { rows } = await ex.query(`SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND id = $2`, [
      tenantId,
      id,
    ]);
    return rows[0] ? toGrant(rows[0]) : null;
  }

  /** A grant's recorded changes (expiry extensions), oldest first. */
  async grantHistory(tenantId: string, grantId: string) {
    const { rows } = await this.db.query(
      "SELECT * FROM grant_changes WHERE tenant_id = $1 AND grant_id = $2 ORDER BY at, id",
      [tenantId, grantId],
    );
    return rows.map((r) => ({
      id: String(r.id),
      kind: String(r.kind) as "expiry_extended" | "expiry_shortened",
      from: r.from_expires_at ? new Date(r.from_expires_at as string).getTime() : null,
      to: r.to_expires_at ? new Date(r.to_expires_at as string).getTime() : null,
      reason: String(r.reason),
      at: new Date(r.at as string).getTime(),
    }));
  }

  /** Grants of a wallet or of a customer, in id order. */
  async listGrants(
    tenantId: string,
    filter: { walletId?: string | null; customerId?: string | null; status?: string | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<GrantRecord>> {
    const { rows } = await this.db.query(
      `SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1
       AND ($2::text IS NULL OR wallet_id = $2) AND ($3::text IS NULL OR customer_id = $3)
       AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR id > $5)
       ORDER BY id LIMIT $6`,
      [
        tenantId,
        filter.walletId ?? null,
        filter.customerId ?? null,
        filter.status ?? null,
        page.after ?? null,
        page.limit + 1,
      ],
    );
    return paginate(rows.map(toGrant), page.limit, (g) => g.id);
  }

  /**
   * A wallet's balance from materialized rows: the wallet and its grants holding credits.
   * Its cost is independent of the journal's length.
   */
  async balance(tenantId: string, walletId: string): Promise<Balance | null> {
    const wallet = await this.getWallet(tenantId, walletId);
    if (!wallet) return null;
    let pool: Balance["pool"] = null;
    if (wallet.memberId !== null) {
      const { rows } = await this.db.query(
        "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL",
        [tenantId, wallet.customerId],
      );
      const poolBalance = await this.balance(tenantId, String(rows[0]!.id));
      pool = { walletId: poolBalance!.walletId, available: poolBalance!.available };
    }
    const { rows } = await this.db.query(
      `SELECT ${GRANT_COLUMNS} FROM grants WHERE tenant_id = $1 AND wallet_id = $2 AND status = 'active' AND remaining > 0`,
      [tenantId, walletId],
    );
    const now = this.now(tenantId);
    const grants = rows.map(toGrant);
    let available = 0n;
    let upcoming = 0n;
    let expired = 0n;
    const scopes = new Map<string, { scope: readonly string[] | null; available: bigint }>();
    for (const g of grants) {
      if (isDrawableNow(g, now)) {
        available += g.remaining;
        const key = JSON.stringify(g.scope);
        const s = scopes.get(key) ?? { scope: g.scope, available: 0n };
        scopes.set(key, { scope: s.scope, available: s.available + g.remaining });
      } else if (g.expiresAt !== null && g.expiresAt <= now) expired += g.remaining;
      else upcoming += g.remaining;
    }
    grants.sort(compareBurnOrder);
    return {
      walletId: wallet.id,
      customerId: wallet.customerId,
      memberId: wallet.memberId,
      total: wallet.balance,
      available,
      upcoming,
      held: wallet.held,
      expired,
      grants,
      scopes: [...scopes.values()].sort((a, b) =>
        a.scope === null
          ? 1
          : b.scope === null
            ? -1
            : JSON.stringify(a.scope) < JSON.stringify(b.scope)
              ? -1
              : 1,
      ),
      pool,
    };
  }

  async getTransaction(
    tenantId: string,
    id: string,
    ex: SqlExecutor = this.db,
  ): Promise<TransactionRecord | null> {
    const { rows } = await ex.query("SELECT * FROM journal_transactions WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    if (!rows[0]) return null;
    const entries = await ex.query(
      "SELECT * FROM journal_entries WHERE tenant_id = $1 AND tx_id = $2 ORDER BY idx",
      [tenantId, id],
    );
    return toTransaction(rows[0], entries.rows.map(toEntry));
  }

  /**
   * The journal, oldest first, filtered by wallet, customer and time, paged by position.
   * A wallet filter returns the transactions with an entry on one of its grants.
   */
  async listJournal(
    tenantId: string,
    filter: {
      walletId?: string | null;
      customerId?: string | null;
      from?: number | null;
      to?: number | null;
    },
    page: { after?: string | null; limit: number },
  ): Promise<Page<TransactionRecord>> {
    const { rows } = await this.db.query(
      `SELECT t.* FROM journal_transactions t WHERE t.tenant_id = $1
       AND ($2::text IS NULL OR t.id IN (SELECT e.tx_id FROM journal_entries e WHERE e.tenant_id = $1 AND e.wallet_id = $2))
       AND ($3::text IS NULL OR t.customer_id = $3)
       AND ($4::timestamptz IS NULL OR t.posted_at >= $4) AND ($5::timestamptz IS NULL OR t.posted_at < $5)
       AND ($6::bigint IS NULL OR t.seq > $6)
       ORDER BY t.seq LIMIT $7`,
      [
        tenantId,
        filter.walletId ?? null,
        filter.customerId ?? null,
        iso(filter.from ?? null),
        iso(filter.to ?? null),
        page.after ?? null,
        page.limit + 1,
      ],
    );
    const ids = rows.slice(0, page.limit).map((r) => String(r.id));
    const entries = await this.db.query(
      "SELECT * FROM journal_entries WHERE tenant_id = $1 AND tx_id = ANY($2::text[]) ORDER BY tx_id, idx",
      [tenantId, ids],
    );
    const byTx = new Map<string, Row[]>();
    for (const e of entries.rows) {
      const list = byTx.get(String(e.tx_id)) ?? [];
      list.push(e);
      byTx.set(String(e.tx_id), list);
    }
    const txs = rows.map((r) => toTransaction(r, (byTx.get(String(r.id)) ?? []).map(toEntry)));
    return paginate(txs, page.limit, (t) => t.seq);
  }

  /**
   * Recomputes every wallet and grant from the journal and compares (invariants 1 and 3):
   * each wallet's materialized balance against its grants and against its journal entries,
   * each grant's remaining against its entries, and each transaction's sum per unit.
   * Restricted to one tenant when `tenantId` is given.
   */
  async reconcile(tenantId: string | null = null, ex: SqlExecutor = this.db): Promise<ReconcileReport> {
    const differences: Difference[] = [];
    const wallets = await ex.query(
      `SELECT w.tenant_id, w.id, w.balance::text AS balance, (coalesce(g.total, 0) + w.held - w.overdraft)::text AS grants,
         coalesce(j.total, 0)::text AS journal, w.overdraft::text AS overdraft, (-coalesce(j.owed, 0))::text AS journal_owed,
         w.held::text AS held, coalesce(j.held, 0)::text AS journal_held
       FROM wallets w
       LEFT JOIN (SELECT tenant_id, wallet_id, sum(remaining) AS total FROM grants GROUP BY 1, 2) g
         ON g.tenant_id = w.tenant_id AND g.wallet_id = w.id
       LEFT JOIN (SELECT tenant_id, wallet_id, sum(amount) AS total, sum(amount) FILTER (WHERE account = 'overdraft') AS owed,
                    sum(amount) FILTER (WHERE account = 'hold') AS held
                  FROM journal_entries WHERE wallet_id IS NOT NULL GROUP BY 1, 2) j
         ON j.tenant_id = w.tenant_id AND j.wallet_id = w.id
       WHERE $1::text IS NULL OR w.tenant_id = $1`,
      [tenantId],
    );
    for (const w of wallets.rows) {
      if (
        w.balance !== w.grants ||
        w.balance !== w.journal ||
        w.overdraft !== w.journal_owed ||
        w.held !== w.journal_held
      ) {
        differences.push({
          kind: "wallet",
          tenantId: String(w.tenant_id),
          id: String(w.id),
          message: `balance ${w.balance} units, grants plus held minus overdraft ${w.grants}, journal says ${w.journal}; overdraft ${w.overdraft}, journal owes ${w.journal_owed}; held ${w.held}, journal holds ${w.journal_held}`,
        });
      }
    }
    // What a customer's wallets hold equals what its pending holds reserve (invariant 6).
    const holds = await ex.query(
      `SELECT coalesce(w.tenant_id, h.tenant_id) AS tenant_id, coalesce(w.customer_id, h.customer_id) AS customer_id,
         coalesce(w.held, 0)::text AS held, coalesce(h.amount, 0)::text AS pending
       FROM (SELECT tenant_id, customer_id, sum(held) AS held FROM wallets GROUP BY 1, 2) w
       FULL JOIN (SELECT tenant_id, customer_id, sum(amount) AS amount FROM holds WHERE status = 'pending' GROUP BY 1, 2) h
         ON h.tenant_id = w.tenant_id AND h.customer_id = w.customer_id
       WHERE ($1::text IS NULL OR coalesce(w.tenant_id, h.tenant_id) = $1) AND coalesce(w.held, 0) <> coalesce(h.amount, 0)`,
      [tenantId],
    );
    for (const h of holds.rows) {
      differences.push({
        kind: "hold",
        tenantId: String(h.tenant_id),
        id: String(h.customer_id),
        message: `customer's wallets hold ${h.held} units, its pending holds reserve ${h.pending}`,
      });
    }
    // What overage_receivable holds equals the credits of the overage invoices (storage/overage.ts).
    const receivable = await ex.query(
      `SELECT coalesce(j.tenant_id, i.tenant_id) AS tenant_id, (-coalesce(j.total, 0))::text AS journal,
         coalesce(i.total, 0)::text AS invoiced
       FROM (SELECT tenant_id, sum(amount) AS total FROM journal_entries WHERE account = 'overage_receivable' GROUP BY 1) j
       FULL JOIN (SELECT tenant_id, sum(credits) AS total FROM overage_invoices GROUP BY 1) i ON i.tenant_id = j.tenant_id
       WHERE ($1::text IS NULL OR coalesce(j.tenant_id, i.tenant_id) = $1) AND -coalesce(j.total, 0) <> coalesce(i.total, 0)`,
      [tenantId],
    );
    for (const r of receivable.rows) {
      differences.push({
        kind: "overage",
        tenantId: String(r.tenant_id),
        id: String(r.tenant_id),
        message: `overage_receivable holds ${r.journal} units, the overage invoices bill ${r.invoiced}`,
      });
    }
    const grants = await ex.query(
      `SELECT g.tenant_id, g.id, g.remaining::text AS remaining, coalesce(j.total, 0)::text AS journal
       FROM grants g
       LEFT JOIN (SELECT tenant_id, grant_id, sum(amount) AS total FROM journal_entries WHERE grant_id IS NOT NULL GROUP BY 1, 2) j
         ON j.tenant_id = g.tenant_id AND j.grant_id = g.id
       WHERE $1::text IS NULL OR g.tenant_id = $1`,
      [tenantId],
    );
    for (const g of grants.rows) {
      if (g.remaining !== g.journal) {
        differences.push({
          kind: "grant",
          tenantId: String(g.tenant_id),
          id: String(g.id),
          message: `remaining ${g.remaining} units, journal says ${g.journal}`,
        });
      }
    }
    const orphans = await ex.query(
      `SELECT DISTINCT e.tenant_id, e.tx_id FROM journal_entries e
       WHERE ($1::text IS NULL OR e.tenant_id = $1)
         AND NOT EXISTS (SELECT 1 FROM journal_transactions t WHERE t.tenant_id = e.tenant_id AND t.id = e.tx_id)`,
      [tenantId],
    );
    for (const o of orphans.rows) {
      differences.push({
        kind: "transaction",
        tenantId: String(o.tenant_id),
        id: String(o.tx_id),
        message: "entries belong to a transaction that does not exist",
      });
    }
    const unbalanced = await ex.query(
      `SELECT t.tenant_id, t.id, coalesce(sum(e.amount), 0)::text AS total, count(e.idx)::int AS entries
       FROM journal_transactions t LEFT JOIN journal_entries e ON e.tenant_id = t.tenant_id AND e.tx_id = t.id
       WHERE $1::text IS NULL OR t.tenant_id = $1
       GROUP BY t.tenant_id, t.id, e.unit HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.idx) < 2`,
      [tenantId],
    );
    for (const t of unbalanced.rows) {
      differences.push({
        kind: "transaction",
        tenantId: String(t.tenant_id),
        id: String(t.id),
        message: `entries sum to ${t.total} units over ${t.entries} entries`,
      });
    }
    const count = await ex.query(
      "SELECT count(*)::int AS n FROM journal_transactions WHERE $1::text IS NULL OR tenant_id = $1",
      [tenantId],
    );
    return {
      wallets: wallets.rowCount,
      grants: grants.rowCount,
      transactions: Number(count.rows[0]!.n),
      differences,
    };
  }
}
