import {
  type Contract,
  type ContractInput,
  combine,
  contractInstallments,
  type Effect,
  fail,
  type Installment,
  installmentKey,
  issueGrant,
  type Money,
  nextInstallmentAt,
  ok,
  type PocInput,
  parseRateCard,
  planInstallment,
  planTermination,
  pocGrant,
  type RateLineInput,
  type Result,
  validateContract,
  validatePoc,
  versionAt,
  voidGrant,
} from "@drawdown/core";
import type { Metering } from "./metering.js";
import type { GrantRecord } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

/** What a contract does to the credits it issued when terminated early. */
export type OnTerminate = "keep" | "forfeit";

/** A stored contract: its terms, its rate card terms and where its schedule stands. */
export interface ContractRecord extends Contract {
  /** The card the customer follows from the term's start; null: the tenant's default card. */
  readonly rateCardId: string | null;
  /** The version in force at signing, pinned when the vendor may not move the customer to newer ones. */
  readonly pinnedVersionId: string | null;
  readonly overrides: readonly RateLineInput[];
  readonly status: "active" | "terminated";
  readonly terminatedAt: number | null;
  readonly onTerminate: OnTerminate | null;
  /** The last installment issued (-1 before the first). */
  readonly issuedThrough: number;
  /** When the next installment falls due; null when none will. */
  readonly nextInstallmentAt: number | null;
  readonly createdAt: number;
}

/** What happened to a grant's credits, read from the journal. */
export interface GrantUsage {
  /** Drawn by usage and debits, net of reversals. */
  readonly used: bigint;
  /** Moved to breakage at expiry. */
  readonly expired: bigint;
  /** Voided. */
  readonly voided: bigint;
}

/** One installment as a statement shows it. */
export interface InstallmentLine extends Installment {
  /**
   * `issued`; `scheduled` (not due yet); `canceled` (due at or after an early termination);
   * `lapsed` (caught up after its credits would already have expired: recorded, not granted).
   */
  readonly status: "issued" | "scheduled" | "canceled" | "lapsed";
  readonly grant: GrantRecord | null;
  readonly usage: GrantUsage;
}

/** A contract's statement: every installment and the totals. */
export interface ContractStatement {
  readonly installments: readonly InstallmentLine[];
  readonly totals: {
    readonly committed: bigint;
    readonly issued: bigint;
    readonly used: bigint;
    readonly expired: bigint;
    readonly voided: bigint;
    /** What the issued grants still hold. */
    readonly remaining: bigint;
    /** Committed credits that will never be granted (canceled by a termination, or lapsed). */
    readonly forgone: bigint;
  };
}

/** A stored proof-of-concept allocation and its grant. */
export interface PocRecord {
  readonly id: string;
  readonly customerId: string;
  readonly amount: bigint;
  readonly listValue: Money;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly scope: readonly string[] | null;
  readonly grantId: string;
  readonly createdAt: number;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const NO_USAGE: GrantUsage = { used: 0n, expired: 0n, voided: 0n };

const contractJson = (c: Contract): string =>
  JSON.stringify(c, (_k, v) => (typeof v === "bigint" ? { $bigint: v.toString() } : v));

const contractFrom = (r: Row): ContractRecord => ({
  ...(JSON.parse(String(r.definition), (_k, v) =>
    v !== null && typeof v === "object" && "$bigint" in v ? BigInt(v.$bigint) : v,
  ) as Contract),
  rateCardId: r.rate_card_id === null ? null : String(r.rate_card_id),
  pinnedVersionId: r.pinned_version_id === null ? null : String(r.pinned_version_id),
  overrides: JSON.parse(String(r.overrides)) as RateLineInput[],
  status: r.status as ContractRecord["status"],
  terminatedAt: r.terminated_at === null ? null : ms(r.terminated_at),
  onTerminate: r.on_terminate === null ? null : (r.on_terminate as OnTerminate),
  issuedThrough: Number(r.issued_through),
  nextInstallmentAt: r.next_installment_at === null ? null : ms(r.next_installment_at),
  createdAt: ms(r.created_at),
});

const pocFrom = (r: Row): PocRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  amount: BigInt(String(r.amount)),
  listValue: { amount: BigInt(String(r.list_value)), currency: String(r.list_currency) },
  startsAt: ms(r.starts_at),
  endsAt: ms(r.ends_at),
  scope: (r.scope as string[] | null) ?? null,
  grantId: String(r.grant_id),
  createdAt: ms(r.created_at),
});

/** What creating a contract takes, beyond the core's terms. */
export type ContractCreate = Omit<ContractInput, "id"> & {
  /** The card to follow; null or absent: the tenant's default card. */
  readonly rateCardId?: string | null;
  /** Override lines, which take precedence over the card's (customer pricing). */
  readonly overrides?: readonly RateLineInput[];
};

/**
 * Contracts and proof-of-concept allocations. A contract's installments are a scheduler job:
 * each is granted exactly once (its key is a primary key), in order, under the contract's row
 * lock, catching up after downtime; the store's scheduler and test clock run them. When its
 * term starts, a contract's card, pinned version and overrides join the customer's pricing
 * history over its term, so together they rate the events timed inside it, late ones included,
 * even after a later contract's terms were applied; its card and pin also become the customer's
 * base pricing (`customer_pricing`), which prices events after the term.
 */
export class Contracts implements DueJob {
  constructor(
    private readonly store: Store,
    private readonly metering: Metering,
  ) {
    store.addDueJob(this);
  }

  /**
   * Signs a contract: validates its terms (core), its overrides and rate card, refuses one whose
   * term overlaps another live contract of the customer (`already_exists`), and issues what is
   * due at once (a term starting now grants its first installment and applies its pricing).
   * With `allowRateCardUpgrades` false, the version of the card in force now is pinned
   * (`no_rate_card` when none is).
   */
  async create(ex: SqlExecutor, tenantId: string, input: ContractCreate): Promise<Result<ContractRecord>> {
    // The customer's row lock makes two signings for one customer take turns (the overlap check).
    const customer = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      input.customerId,
    ]);
    if (customer.rowCount === 0) return fail("not_found", `No customer ${input.customerId}.`);
    const now = this.store.now(tenantId);
    const checked = validateContract(
      { now, newId: this.store.newId },
      { ...input, id: this.store.newId("ctr") },
    );
    if (!checked.ok) return checked;
    const contract = checked.value;
    const overrides = input.overrides ?? [];
    const parsed = parseRateCard({ lines: overrides });
    if (!parsed.ok) return parsed;
    const catalog = await this.metering.catalog(ex, tenantId);
    let rateCardId = input.rateCardId ?? null;
    if (rateCardId !== null && !catalog.cards.has(rateCardId))
      return fail("not_found", `No rate card ${rateCardId}.`);
    let pinnedVersionId: string | null = null;
    if (!contract.allowRateCardUpgrades) {
      const card = catalog.cards.get(rateCardId ?? catalog.defaultCardId ?? "");
      const version = card ? versionAt(card.versions, now) : null;
      if (!card || !version) {
        return fail(
          "no_rate_card",
          "No rate card version is in force to pin: publish one, or allow rate card upgrades.",
        );
      }
      rateCardId = card.id;
      pinnedVersionId = version.id;
    }
    const overlap = await ex.query(
      `SELECT id FROM contracts WHERE tenant_id = $1 AND customer_id = $2
         AND starts_at < $4 AND least(ends_at, coalesce(terminated_at, ends_at)) > greatest(starts_at, $3::timestamptz)
       LIMIT 1`,
      [tenantId, contract.customerId, iso(contract.startsAt), iso(contract.endsAt)],
    );
    if (overlap.rowCount > 0) {
      return fail(
        "already_exists",
        `Customer ${contract.customerId} has contract ${overlap.rows[0]!.id} over part of this term; terminate it or start after it ends.`,
      );
    }
    // Every refusal comes before this point; a failure of the writes below undoes them all.
    await ex.query("SAVEPOINT contract_create");
    const { rows } = await ex.query(
      `INSERT INTO contracts (tenant_id, id, customer_id, starts_at, ends_at, definition, rate_card_id, pinned_version_id,
         overrides, status, issued_through, next_installment_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', -1, $4, $10) RETURNING *`,
      [
        tenantId,
        contract.id,
        contract.customerId,
        iso(contract.startsAt),
        iso(contract.endsAt),
        contractJson(contract),
        rateCardId,
        pinnedVersionId,
        JSON.stringify(overrides),
        iso(now),
      ],
    );
    const issued = await this.#issue(ex, tenantId, contractFrom(rows[0]!));
    if (!issued.ok) {
      await ex.query("ROLLBACK TO SAVEPOINT contract_create");
      return issued;
    }
    await ex.query("RELEASE SAVEPOINT contract_create");
    return ok((await this.get(tenantId, contract.id, ex))!);
  }

  async get(tenantId: string, id: string, ex: SqlExecutor = this.store.db): Promise<ContractRecord | null> {
    const { rows } = await ex.query("SELECT * FROM contracts WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    return rows[0] ? contractFrom(rows[0]) : null;
  }

  /** A customer's contracts, oldest first. */
  async list(tenantId: string, customerId: string): Promise<ContractRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM contracts WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at, id",
      [tenantId, customerId],
    );
    return rows.map(contractFrom);
  }

  /**
   * Terminates a contract early: installments due from now on are never granted. Installments
   * already due are issued first (the scheduler may lag). The credits already issued are kept
   * (`keep`, the default: they last to their own expiry) or voided now (`forfeit`). The
   * customer's base card and pin are left as they are; the contract's entries of the pricing
   * history end now (events timed from now on are rated by the base: its card and pin while
   * still the base, without its overrides). `invalid_argument` once terminated or after the term.
   */
  async terminate(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    onTerminate: OnTerminate = "keep",
  ): Promise<Result<ContractRecord>> {
    const locked = await this.#lock(ex, tenantId, id);
    if (!locked) return fail("not_found", `No contract ${id}.`);
    const now = this.store.now(tenantId);
    const refused = planTermination({ now, newId: this.store.newId }, locked, locked.terminatedAt);
    if (!refused.ok) return refused;
    // Refusals are checked above; a failure of the writes below undoes them all.
    await ex.query("SAVEPOINT contract_terminate");
    const done = await this.#terminate(ex, tenantId, locked, onTerminate);
    if (!done.ok) {
      await ex.query("ROLLBACK TO SAVEPOINT contract_terminate");
      return done;
    }
    await ex.query("RELEASE SAVEPOINT contract_terminate");
    return ok((await this.get(tenantId, id, ex))!);
  }

  async #terminate(
    ex: SqlExecutor,
    tenantId: string,
    locked: ContractRecord,
    onTerminate: OnTerminate,
  ): Promise<Result<null>> {
    const id = locked.id;
    const issued = await this.#issue(ex, tenantId, locked);
    if (!issued.ok) return issued;
    const c = (await this.get(tenantId, id, ex))!;
    const planned = planTermination(
      { now: this.store.now(tenantId), newId: this.store.newId },
      c,
      c.terminatedAt,
    );
    if (!planned.ok) return planned;
    // The pricing row's lock before the pool's (the order a term's start takes them in).
    await this.#endOverrides(ex, tenantId, c.customerId, id, planned.value.terminatedAt);
    if (onTerminate === "forfeit") {
      const pool = await this.#pool(ex, tenantId, c.customerId);
      const r = await this.store.mutate(ex, tenantId, pool, [], (ctx, state) => {
        const effects: Effect[] = [];
        for (const g of [...state.grants.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
          if (g.status !== "active" || g.metadata.contract_id !== c.id) continue;
          const v = voidGrant(ctx, c.customerId, g, "contract terminated: credits forfeited");
          if (v.ok) effects.push(v.value);
        }
        return ok(combine(...effects));
      });
      if (!r.ok) return r;
    }
    await ex.query(
      `UPDATE contracts SET status = 'terminated', terminated_at = $3, on_terminate = $4, next_installment_at = NULL
       WHERE tenant_id = $1 AND id = $2`,
      [tenantId, id, iso(planned.value.terminatedAt), onTerminate],
    );
    return ok(null);
  }

  /**
   * The term ends at `at`: so do its terms. Its entries of the customer's pricing history
   * (card, pin and overrides) end there (one starting later is dropped; the core's `cutTerms`),
   * under the pricing row's lock, which a change of pricing takes too; the row's own window, if
   * it is still this contract's, says so.
   */
  async #endOverrides(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    contractId: string,
    at: number,
  ): Promise<void> {
    await ex.query("SELECT 1 FROM customer_pricing WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE", [
      tenantId,
      customerId,
    ]);
    const args = [tenantId, customerId, contractId, iso(at)];
    await ex.query(
      `UPDATE customer_pricing SET overrides_until = $4
       WHERE tenant_id = $1 AND customer_id = $2 AND contract_id = $3`,
      args,
    );
    await ex.query(
      `DELETE FROM customer_override_terms
       WHERE tenant_id = $1 AND customer_id = $2 AND source = $3 AND starts_at >= $4`,
      args,
    );
    await ex.query(
      `UPDATE customer_override_terms SET ends_at = $4
       WHERE tenant_id = $1 AND customer_id = $2 AND source = $3 AND (ends_at IS NULL OR ends_at > $4)`,
      args,
    );
  }

  /** Every installment of a contract with its grant and what became of its credits. */
  async statement(
    tenantId: string,
    c: ContractRecord,
    ex: SqlExecutor = this.store.db,
  ): Promise<ContractStatement> {
    const { rows } = await ex.query(
      "SELECT installment_index, grant_id FROM contract_installments WHERE tenant_id = $1 AND contract_id = $2",
      [tenantId, c.id],
    );
    const recorded = new Map(rows.map((r) => [Number(r.installment_index), r.grant_id as string | null]));
    const grantIds = [...recorded.values()].filter((g): g is string => g !== null);
    const grants = new Map<string, GrantRecord>();
    for (const g of grantIds) {
      const record = await this.store.getGrant(tenantId, g, ex);
      if (record) grants.set(g, record);
    }
    const usage = await this.usage(tenantId, grantIds, ex);
    const totals = {
      committed: c.commitment,
      issued: 0n,
      used: 0n,
      expired: 0n,
      voided: 0n,
      remaining: 0n,
      forgone: 0n,
    };
    const installments = contractInstallments(c).map((i): InstallmentLine => {
      const issued = recorded.has(i.index);
      const grantId = recorded.get(i.index) ?? null;
      const grant = grantId === null ? null : (grants.get(grantId) ?? null);
      const u = grantId === null ? NO_USAGE : (usage.get(grantId) ?? NO_USAGE);
      const status = issued
        ? grant === null && i.amount > 0n
          ? "lapsed"
          : "issued"
        : c.terminatedAt !== null && i.at >= c.terminatedAt
          ? "canceled"
          : "scheduled";
      if (grant) {
        totals.issued += grant.amount;
        totals.remaining += grant.remaining;
      }
      if (status === "canceled" || status === "lapsed") totals.forgone += i.amount;
      totals.used += u.used;
      totals.expired += u.expired;
      totals.voided += u.voided;
      return { ...i, status, grant, usage: u };
    });
    return { installments, totals };
  }

  /** What happened to each grant's credits: used (debits and usage, net of reversals), expired, voided. */
  async usage(
    tenantId: string,
    grantIds: readonly string[],
    ex: SqlExecutor = this.store.db,
  ): Promise<Map<string, GrantUsage>> {
    const out = new Map<string, GrantUsage>();
    if (grantIds.length === 0) return out;
    const { rows } = await ex.query(
      `SELECT e.grant_id, t.kind, sum(e.amount)::text AS total
       FROM grants g
       JOIN journal_entries e ON e.tenant_id = g.tenant_id AND e.wallet_id = g.wallet_id AND e.grant_id = g.id
       JOIN journal_transactions t ON t.tenant_id = e.tenant_id AND t.id = e.tx_id
       WHERE g.tenant_id = $1 AND g.id = ANY($2::text[]) GROUP BY 1, 2`,
      [tenantId, grantIds],
    );
    for (const r of rows) {
      const id = String(r.grant_id);
      const u = out.get(id) ?? NO_USAGE;
      const total = -BigInt(String(r.total));
      switch (String(r.kind)) {
        case "debit":
        case "usage":
        case "adjustment.debit":
        case "reversal":
          out.set(id, { ...u, used: u.used + total });
          break;
        case "expire":
        case "rollover":
          out.set(id, { ...u, expired: u.expired + total });
          break;
        case "void":
          out.set(id, { ...u, voided: u.voided + total });
          break;
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ proof-of-concept allocations

  /**
   * Allocates proof-of-concept credits to a customer: a free grant (source contract, cost basis
   * 0) into its pool wallet, usable from `startsAt` (now by default) and expiring at `endsAt`,
   * recording the list value the credits stand for. Standalone per customer: before a contract,
   * during one, or without any.
   */
  async createPoc(
    ex: SqlExecutor,
    tenantId: string,
    input: Omit<PocInput, "id" | "startsAt"> & { readonly startsAt?: number | null },
  ): Promise<Result<PocRecord>> {
    const pool = await this.#poolOf(ex, tenantId, input.customerId);
    if (pool === null) return fail("not_found", `No customer ${input.customerId}.`);
    const now = this.store.now(tenantId);
    const poc = validatePoc(
      { now, newId: this.store.newId },
      { ...input, id: this.store.newId("poc"), startsAt: input.startsAt ?? now },
    );
    if (!poc.ok) return poc;
    const r = await this.store.createGrant(ex, tenantId, pocGrant(poc.value, pool), {
      reason: `proof of concept ${poc.value.id}`,
    });
    if (!r.ok) return r;
    const p = poc.value;
    const { rows } = await ex.query(
      `INSERT INTO poc_allocations (tenant_id, id, customer_id, amount, list_value, list_currency, starts_at, ends_at,
         scope, grant_id, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
      [
        tenantId,
        p.id,
        p.customerId,
        p.amount.toString(),
        p.listValue.amount.toString(),
        p.listValue.currency,
        iso(p.startsAt),
        iso(p.endsAt),
        r.value.grant.scope,
        r.value.grant.id,
        iso(now),
      ],
    );
    return ok(pocFrom(rows[0]!));
  }

  async getPoc(tenantId: string, id: string): Promise<PocRecord | null> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM poc_allocations WHERE tenant_id = $1 AND id = $2",
      [tenantId, id],
    );
    return rows[0] ? pocFrom(rows[0]) : null;
  }

  /** A customer's proof-of-concept allocations, oldest first. */
  async listPocs(tenantId: string, customerId: string): Promise<PocRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM poc_allocations WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at, id",
      [tenantId, customerId],
    );
    return rows.map(pocFrom);
  }

  // ------------------------------------------------------------------ internals

  async #lock(ex: SqlExecutor, tenantId: string, id: string): Promise<ContractRecord | null> {
    const { rows } = await ex.query("SELECT * FROM contracts WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      id,
    ]);
    return rows[0] ? contractFrom(rows[0]) : null;
  }

  async #poolOf(ex: SqlExecutor, tenantId: string, customerId: string): Promise<string | null> {
    const { rows } = await ex.query(
      "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL",
      [tenantId, customerId],
    );
    return rows[0] ? String(rows[0].id) : null;
  }

  async #pool(ex: SqlExecutor, tenantId: string, customerId: string): Promise<string> {
    return (await this.#poolOf(ex, tenantId, customerId))!;
  }

  /**
   * Issues every installment that has fallen due, in order, each in one write: its key first
   * (if it exists, another writer issued it), then its grant into the customer's pool; the
   * first also applies the contract's pricing. The caller holds the contract's row lock.
   */
  async #issue(ex: SqlExecutor, tenantId: string, first: ContractRecord): Promise<Result<number>> {
    let c = first;
    let issued = 0;
    while (c.nextInstallmentAt !== null && c.nextInstallmentAt <= this.store.now(tenantId)) {
      const index = c.issuedThrough + 1;
      const pool = await this.#pool(ex, tenantId, c.customerId);
      const installment = contractInstallments(c)[index]!;
      const key = installmentKey(c.id, index);
      const fresh = await ex.query(
        `INSERT INTO contract_installments (tenant_id, key, contract_id, installment_index, amount, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING key`,
        [tenantId, key, c.id, index, installment.amount.toString(), iso(this.store.now(tenantId))],
      );
      if (fresh.rowCount > 0) {
        if (index === 0) {
          const pricing = await this.metering.setCustomerPricing(ex, tenantId, c.customerId, {
            rateCardId: c.rateCardId,
            pinnedVersionId: c.pinnedVersionId,
            overrides: c.overrides,
            // Its card, pin and overrides rate the events whose own time is inside the term.
            window: { contractId: c.id, from: c.startsAt, until: c.endsAt },
          });
          if (!pricing.ok) return pricing;
        }
        let grantId: string | null = null;
        const r = await this.store.mutate(ex, tenantId, pool, [], (ctx) => {
          const plan = planInstallment(ctx, { contract: c, index, walletId: pool });
          if (!plan.ok) return plan;
          if (plan.value.key !== key) throw new Error("installment keys disagree");
          if (!plan.value.grant || plan.value.lapsed) return ok(EMPTY);
          const g = issueGrant(ctx, c.customerId, plan.value.grant, {
            reason: `contract ${c.id}: installment ${index}`,
          });
          if (g.ok) grantId = g.value.newGrants[0]?.id ?? null;
          return g;
        });
        if (!r.ok) return r;
        await ex.query("UPDATE contract_installments SET grant_id = $3 WHERE tenant_id = $1 AND key = $2", [
          tenantId,
          key,
          grantId,
        ]);
        issued++;
      }
      const next = nextInstallmentAt(c, index, c.terminatedAt);
      await ex.query(
        "UPDATE contracts SET issued_through = $3, next_installment_at = $4 WHERE tenant_id = $1 AND id = $2",
        [tenantId, c.id, index, next === null ? null : iso(next)],
      );
      c = (await this.get(tenantId, c.id, ex))!;
    }
    return ok(issued);
  }

  // ------------------------------------------------------------------ the scheduler's job

  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const { rows } = await this.store.db.query<{ at: unknown }>(
      "SELECT min(next_installment_at) AS at FROM contracts WHERE tenant_id = $1 AND next_installment_at <= $2",
      [tenantId, iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /** Issues what is due, contract by contract, each in its own transaction under its row lock. */
  async run(tenantId: string | null): Promise<number> {
    let issued = 0;
    for (;;) {
      const { rows } = await this.store.db.query<{ tenant_id: string; id: string }>(
        `SELECT c.tenant_id, c.id FROM contracts c JOIN tenants t ON t.id = c.tenant_id
         WHERE c.next_installment_at <= coalesce(t.clock_at, $1::timestamptz) AND ($2::text IS NULL OR c.tenant_id = $2)
         ORDER BY c.next_installment_at LIMIT 100`,
        [iso(this.store.now()), tenantId],
      );
      const before = issued;
      for (const r of rows) {
        await this.store.clockOf(r.tenant_id);
        try {
          issued += await this.store.db.transaction(async (tx) => {
            const c = await this.#lock(tx, r.tenant_id, r.id);
            if (!c) return 0;
            const done = await this.#issue(tx, r.tenant_id, c);
            // Roll the whole contract's run back: it stays due, and is tried again next run.
            if (!done.ok) throw new Stuck(done.error.message);
            return done.value;
          });
        } catch (error) {
          if (!(error instanceof Stuck)) throw error;
        }
      }
      // Stop when the page was the last, or when nothing moved (never spin on a stuck one).
      if (rows.length < 100 || issued === before) return issued;
    }
  }
}

/** An installment that cannot be issued (a bug or a refused write): its run is rolled back. */
class Stuck extends Error {}

const EMPTY: Effect = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };
