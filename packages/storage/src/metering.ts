import {
  type CostTableAt,
  fail,
  type IdGenerator,
  type OveragePolicy,
  type OveragePolicyInput,
  type OverrideTerms,
  ok,
  overridesAt,
  type PricingAt,
  parseRateCard,
  type RateCardContent,
  type RateCardInput,
  type RateLine,
  type RateLineInput,
  type Result,
  versionAt,
} from "@drawdown/core";
import { setWalletOverage } from "./overage.js";
import type { SqlExecutor } from "./sql.js";

/** A published rate card version: the wire form as given and its parsed content. */
export interface RateCardVersion {
  readonly id: string;
  readonly rateCardId: string;
  readonly version: number;
  readonly effectiveAt: number;
  readonly input: RateCardInput;
  readonly content: RateCardContent;
  readonly createdAt: number;
}

/** A rate card and its versions, oldest first. */
export interface RateCard {
  readonly id: string;
  readonly name: string;
  readonly isDefault: boolean;
  readonly createdAt: number;
  readonly versions: readonly RateCardVersion[];
}

/** A cost table version: money per unit of each quantity. */
export interface CostTableVersion {
  readonly id: string;
  readonly version: number;
  readonly effectiveAt: number;
  readonly currency: string;
  readonly input: { readonly lines: readonly RateLineInput[] };
  readonly lines: readonly RateLine[];
  readonly createdAt: number;
}

/** A customer's contract terms for rating. */
export interface CustomerPricing {
  readonly customerId: string;
  /** The card followed; null: the tenant's default card. */
  readonly rateCardId: string | null;
  /** A pinned version, used whatever the event's time; null: the version in force at the event's time. */
  readonly pinnedVersionId: string | null;
  readonly overrides: readonly RateLineInput[];
  /** The override lines and their window, as rating reads them (see {@link overridesAt}). */
  readonly overrideTerms: OverrideTerms;
  /** The contract that set this pricing; null: set by hand. */
  readonly contractId: string | null;
  readonly updatedAt: number;
}

/** Where a customer's override lines apply: a contract's term, or (null) always. */
export interface OverrideWindow {
  readonly contractId: string;
  readonly from: number;
  readonly until: number;
}

/** Everything about a tenant's pricing that changes only by publishing: cached, revalidated by a stamp. */
export interface Catalog {
  readonly stamp: string;
  readonly cards: ReadonlyMap<string, RateCard>;
  readonly defaultCardId: string | null;
  readonly costVersions: readonly CostTableVersion[];
  /** Line ids that have volume tiers (their period usage is counted). */
  readonly tieredLines: ReadonlySet<string>;
}

const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const iso = (t: number): string => new Date(t).toISOString();

// Rows are never deleted, so their counts grow with every commit. A count, not max(seq): a
// version that took its sequence number first may commit after a later-numbered one.
const STAMP_EXPRESSION = `(SELECT count(*) FROM rate_card_versions WHERE tenant_id = $1)::text || ':' ||
  (SELECT count(*) FROM rate_cards WHERE tenant_id = $1)::text || ':' ||
  (SELECT count(*) FROM cost_table_versions WHERE tenant_id = $1)::text`;
const STAMP = `SELECT ${STAMP_EXPRESSION} AS stamp`;

/**
 * A select-list column `catalog_stamp`: the tenant's catalog stamp (the tables are append-only,
 * so their counts change with every publication), for a statement whose `$1` is the tenant id.
 * The writers read it with their wallet lock and pass it to {@link Metering.catalog}: one
 * round trip fewer per batch.
 */
export const CATALOG_STAMP_COLUMN = `(${STAMP_EXPRESSION}) AS catalog_stamp`;

/** The {@link CATALOG_STAMP_COLUMN} of rows that carry it; undefined when there are none. */
export const stampOf = (rows: readonly Record<string, unknown>[]): string | undefined =>
  rows.length === 0 ? undefined : String(rows[0]!.catalog_stamp);

function parseCustomerPricing(row: Record<string, unknown>): CustomerPricing {
  const overrides = row.overrides ? (JSON.parse(String(row.overrides)) as RateLineInput[]) : [];
  const parsed = parseRateCard({ lines: overrides });
  const overrideLines = parsed.ok ? parsed.value.lines : [];
  const from = row.overrides_from == null ? null : ms(row.overrides_from);
  const until = row.overrides_until == null ? null : ms(row.overrides_until);
  return {
    customerId: String(row.customer_id),
    rateCardId: row.rate_card_id === null ? null : String(row.rate_card_id),
    pinnedVersionId: row.pinned_version_id === null ? null : String(row.pinned_version_id),
    overrides,
    overrideTerms: { lines: overrideLines, from, until },
    contractId: row.contract_id == null ? null : String(row.contract_id),
    updatedAt: ms(row.updated_at),
  };
}

/**
 * Rate cards, cost tables and customer pricing: published as immutable, effective-dated
 * versions, so a change needs no deploy and a future version takes effect at its time.
 */
export class Metering {
  readonly #catalogs = new Map<string, Catalog>();

  constructor(
    private readonly clock: (tenantId: string) => number,
    private readonly newId: IdGenerator,
  ) {}

  /**
   * The tenant's catalog, reloaded only when something was published since it was cached.
   * `stamp` is the {@link CATALOG_STAMP_COLUMN} the caller read in this transaction, if it did;
   * otherwise it is read here.
   */
  async catalog(ex: SqlExecutor, tenantId: string, stamp?: string): Promise<Catalog> {
    if (stamp === undefined) {
      const { rows } = await ex.query<{ stamp: string }>(STAMP, [tenantId]);
      stamp = String(rows[0]!.stamp);
    }
    const cached = this.#catalogs.get(tenantId);
    if (cached && cached.stamp === stamp) return cached;
    const cards = await ex.query("SELECT * FROM rate_cards WHERE tenant_id = $1 ORDER BY created_at, id", [
      tenantId,
    ]);
    const versions = await ex.query(
      "SELECT * FROM rate_card_versions WHERE tenant_id = $1 ORDER BY version",
      [tenantId],
    );
    const costs = await ex.query("SELECT * FROM cost_table_versions WHERE tenant_id = $1 ORDER BY version", [
      tenantId,
    ]);
    const tieredLines = new Set<string>();
    const byCard = new Map<string, RateCardVersion[]>();
    for (const v of versions.rows) {
      const input = JSON.parse(String(v.content)) as RateCardInput;
      const parsed = parseRateCard(input);
      if (!parsed.ok) continue; // validated at publish; never happens
      for (const l of parsed.value.lines) if (l.tiers) tieredLines.add(l.id);
      const list = byCard.get(String(v.rate_card_id)) ?? [];
      list.push({
        id: String(v.id),
        rateCardId: String(v.rate_card_id),
        version: Number(v.version),
        effectiveAt: ms(v.effective_at),
        input,
        content: parsed.value,
        createdAt: ms(v.created_at),
      });
      byCard.set(String(v.rate_card_id), list);
    }
    const cardMap = new Map<string, RateCard>();
    let defaultCardId: string | null = null;
    for (const c of cards.rows) {
      const id = String(c.id);
      if (c.is_default) defaultCardId = id;
      cardMap.set(id, {
        id,
        name: String(c.name),
        isDefault: Boolean(c.is_default),
        createdAt: ms(c.created_at),
        versions: byCard.get(id) ?? [],
      });
    }
    const costVersions: CostTableVersion[] = costs.rows.map((r) => {
      const input = JSON.parse(String(r.content)) as { lines: RateLineInput[] };
      const parsed = parseRateCard(input);
      return {
        id: String(r.id),
        version: Number(r.version),
        effectiveAt: ms(r.effective_at),
        currency: String(r.currency),
        input,
        lines: parsed.ok ? parsed.value.lines : [],
        createdAt: ms(r.created_at),
      };
    });
    const catalog: Catalog = { stamp, cards: cardMap, defaultCardId, costVersions, tieredLines };
    this.#catalogs.set(tenantId, catalog);
    return catalog;
  }

  /** Creates a rate card; the tenant's first card is its default. */
  async createRateCard(ex: SqlExecutor, tenantId: string, name: string): Promise<Result<RateCard>> {
    // Serialize card creation per tenant, so two "first" cards cannot both become the default.
    await ex.query("SELECT pg_advisory_xact_lock(hashtext('drawdown.rate_card:' || $1))", [tenantId]);
    const existing = await ex.query("SELECT count(*)::int AS n FROM rate_cards WHERE tenant_id = $1", [
      tenantId,
    ]);
    const isDefault = Number(existing.rows[0]!.n) === 0;
    const id = this.newId("rcd");
    const createdAt = this.clock(tenantId);
    const { rowCount } = await ex.query(
      `INSERT INTO rate_cards (tenant_id, id, name, is_default, created_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, name) DO NOTHING`,
      [tenantId, id, name, isDefault, iso(createdAt)],
    );
    if (rowCount === 0) return fail("already_exists", `A rate card named "${name}" already exists.`);
    return ok({ id, name, isDefault, createdAt, versions: [] });
  }

  /**
   * Publishes a new version of a card, in force from `effectiveAt` (now or later: history is
   * never rewritten) until the next version. A version must start after the latest one.
   */
  async publishRateCardVersion(
    ex: SqlExecutor,
    tenantId: string,
    rateCardId: string,
    effectiveAt: number | null,
    input: RateCardInput,
  ): Promise<Result<RateCardVersion>> {
    const card = await ex.query("SELECT id FROM rate_cards WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      rateCardId,
    ]);
    if (card.rowCount === 0) return fail("not_found", `No rate card ${rateCardId}.`);
    const parsed = parseRateCard(input);
    if (!parsed.ok) return parsed;
    const now = this.clock(tenantId);
    const at = effectiveAt ?? now;
    if (at < now)
      return fail(
        "rate_card_overlap",
        "effective_at is in the past; a version takes effect now or later, never backdated.",
      );
    const latest = await ex.query(
      "SELECT version, effective_at FROM rate_card_versions WHERE tenant_id = $1 AND rate_card_id = $2 ORDER BY version DESC LIMIT 1",
      [tenantId, rateCardId],
    );
    const last = latest.rows[0];
    if (last && ms(last.effective_at) >= at) {
      return fail(
        "rate_card_overlap",
        `Version ${last.version} takes effect at ${iso(ms(last.effective_at))}; a new version must start after it.`,
      );
    }
    const version = last ? Number(last.version) + 1 : 1;
    const id = this.newId("rcv");
    await ex.query(
      `INSERT INTO rate_card_versions (tenant_id, id, rate_card_id, version, effective_at, content, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [tenantId, id, rateCardId, version, iso(at), JSON.stringify(input), iso(now)],
    );
    return ok({ id, rateCardId, version, effectiveAt: at, input, content: parsed.value, createdAt: now });
  }

  /** Publishes a cost table version (money per unit), effective now or later. */
  async publishCostTable(
    ex: SqlExecutor,
    tenantId: string,
    effectiveAt: number | null,
    currency: string,
    input: { lines: readonly RateLineInput[] },
  ): Promise<Result<CostTableVersion>> {
    const parsed = parseRateCard({ lines: input.lines });
    if (!parsed.ok) return parsed;
    const tiered = parsed.value.lines.find((l) => l.tiers !== null);
    if (tiered)
      return fail(
        "invalid_rate_card",
        `Cost line "${tiered.id}" has tiers; a cost table prices each unit flat.`,
      );
    const now = this.clock(tenantId);
    const at = effectiveAt ?? now;
    if (at < now)
      return fail(
        "rate_card_overlap",
        "effective_at is in the past; a cost table takes effect now or later.",
      );
    await ex.query("SELECT pg_advisory_xact_lock(hashtext('drawdown.cost:' || $1))", [tenantId]);
    const latest = await ex.query(
      "SELECT version, effective_at FROM cost_table_versions WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
      [tenantId],
    );
    const last = latest.rows[0];
    if (last && ms(last.effective_at) >= at) {
      return fail(
        "rate_card_overlap",
        `Cost table version ${last.version} starts at ${iso(ms(last.effective_at))}; start after it.`,
      );
    }
    const version = last ? Number(last.version) + 1 : 1;
    const id = this.newId("ctv");
    await ex.query(
      `INSERT INTO cost_table_versions (tenant_id, id, version, effective_at, currency, content, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [tenantId, id, version, iso(at), currency, JSON.stringify(input), iso(now)],
    );
    return ok({ id, version, effectiveAt: at, currency, input, lines: parsed.value.lines, createdAt: now });
  }

  /**
   * Sets a customer's contract pricing: its card, a pinned version, and override lines, in
   * force over `window` (a contract's term) or, without one, always.
   */
  async setCustomerPricing(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    input: {
      rateCardId: string | null;
      pinnedVersionId: string | null;
      overrides: readonly RateLineInput[];
      window?: OverrideWindow | null;
    },
  ): Promise<Result<CustomerPricing>> {
    const customer = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      customerId,
    ]);
    if (customer.rowCount === 0) return fail("not_found", `No customer ${customerId}.`);
    const catalog = await this.catalog(ex, tenantId);
    if (input.rateCardId !== null && !catalog.cards.has(input.rateCardId))
      return fail("not_found", `No rate card ${input.rateCardId}.`);
    if (input.pinnedVersionId !== null) {
      const cardId = input.rateCardId ?? catalog.defaultCardId;
      const card = cardId === null ? undefined : catalog.cards.get(cardId);
      if (!card?.versions.some((v) => v.id === input.pinnedVersionId)) {
        return fail(
          "not_found",
          `Rate card ${cardId ?? "(default)"} has no version ${input.pinnedVersionId}.`,
        );
      }
    }
    const parsed = parseRateCard({ lines: input.overrides });
    if (!parsed.ok) return parsed;
    const now = this.clock(tenantId);
    const w = input.window ?? null;
    const { rows } = await ex.query(
      `INSERT INTO customer_pricing (tenant_id, customer_id, rate_card_id, pinned_version_id, overrides, updated_at,
         contract_id, overrides_from, overrides_until)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT (tenant_id, customer_id) DO UPDATE SET rate_card_id = EXCLUDED.rate_card_id,
         pinned_version_id = EXCLUDED.pinned_version_id, overrides = EXCLUDED.overrides, updated_at = EXCLUDED.updated_at,
         contract_id = EXCLUDED.contract_id, overrides_from = EXCLUDED.overrides_from,
         overrides_until = EXCLUDED.overrides_until
       RETURNING *`,
      [
        tenantId,
        customerId,
        input.rateCardId,
        input.pinnedVersionId,
        JSON.stringify(input.overrides),
        iso(now),
        w?.contractId ?? null,
        w === null ? null : iso(w.from),
        w === null ? null : iso(w.until),
      ],
    );
    return ok(parseCustomerPricing(rows[0]!));
  }

  /** A customer's pricing terms, or the defaults when none were set. */
  async customerPricing(
    ex: SqlExecutor,
    tenantId: string,
    customerIds: readonly string[],
  ): Promise<Map<string, CustomerPricing>> {
    const { rows } = await ex.query(
      // Named columns, not *, so the statement is prepared (sql.ts): the ingest writer runs it per batch.
      `SELECT customer_id, rate_card_id, pinned_version_id, overrides, updated_at, contract_id, overrides_from,
         overrides_until FROM customer_pricing
       WHERE tenant_id = $1 AND customer_id = ANY($2::text[])`,
      [tenantId, customerIds],
    );
    return new Map(rows.map((r) => [String(r.customer_id), parseCustomerPricing(r)]));
  }

  /**
   * Resolves what rates a customer's event at `time`: pinned version, else the one in force;
   * and the override lines when `time` is inside their window (the core's {@link overridesAt}).
   */
  static pricingAt(
    catalog: Catalog,
    pricing: CustomerPricing | undefined,
    time: number,
  ): (PricingAt & { version: RateCardVersion }) | null {
    const cardId = pricing?.rateCardId ?? catalog.defaultCardId;
    const card = cardId === null ? undefined : catalog.cards.get(cardId);
    if (!card) return null;
    const version =
      pricing?.pinnedVersionId != null
        ? card.versions.find((v) => v.id === pricing.pinnedVersionId)
        : versionAt(card.versions, time);
    if (!version) return null;
    return {
      versionId: version.id,
      content: version.content,
      overrides: overridesAt(pricing?.overrideTerms, time),
      version,
    };
  }

  /** The cost table in force at `time`. */
  static costAt(catalog: Catalog, time: number): CostTableAt | null {
    const v = versionAt(catalog.costVersions, time);
    return v ? { versionId: v.id, currency: v.currency, lines: v.lines } : null;
  }

  /**
   * Sets the overage policy of a customer's pool wallet (its own, overriding its plan's). What
   * it owes (its overdraft) must fit the new floor. See storage/overage.ts for every mode.
   */
  async setOveragePolicy(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    policy: OveragePolicyInput,
  ): Promise<Result<OveragePolicy>> {
    const r = await setWalletOverage(ex, tenantId, walletId, policy);
    return r.ok ? ok(r.value.policy) : r;
  }
}
