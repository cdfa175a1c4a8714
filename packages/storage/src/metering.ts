import {
  baseTerms,
  type CostTableAt,
  checkTermsWindow,
  fail,
  fillGaps,
  type IdGenerator,
  LATE_GRACE_MS,
  MANUAL_SOURCE,
  type OveragePolicy,
  type OveragePolicyInput,
  type OverrideTerms,
  ok,
  type PricingAt,
  parseRateCard,
  pricingTermsAt,
  type RateCardContent,
  type RateCardInput,
  type RateLine,
  type RateLineInput,
  type Result,
  spliceTerms,
  type TermsWindow,
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

/**
 * One entry of a customer's pricing history, as stored (table `customer_override_terms`): the
 * card, pinned version and override lines in force over its window.
 */
export interface OverrideTermsRecord extends OverrideTerms {
  /** The override lines as sent. */
  readonly input: readonly RateLineInput[];
  /** When these terms were set. */
  readonly setAt: number;
}

/**
 * A customer's pricing for rating: its base (the card and pin of table `customer_pricing`, with
 * the terms that last set them) and its pricing history. An event is rated by the history's
 * entry whose window holds its own time, else by the base (the core's `pricingTermsAt`).
 */
export interface CustomerPricing {
  readonly customerId: string;
  /** The base card, for times outside every window; null: the tenant's default card. */
  readonly rateCardId: string | null;
  /** The base pin, used whatever the event's time; null: the version in force at the event's time. */
  readonly pinnedVersionId: string | null;
  /**
   * The override lines of the terms that last set the base (a contract's start, or pricing set
   * by hand without a window), as sent; every window's lines are in {@link overrideHistory}.
   */
  readonly overrides: readonly RateLineInput[];
  /** The contract that last set the base; null: set by hand. */
  readonly contractId: string | null;
  /** The window those overrides were given (null bounds open), cut by a termination. */
  readonly overridesFrom: number | null;
  readonly overridesUntil: number | null;
  /**
   * The pricing history rating reads, oldest first, windows apart (see the core's
   * `pricingTermsAt`). Loaded for a batch, it holds only the entries that can still rate an
   * accepted event (see {@link Metering.customerPricing}).
   */
  readonly overrideHistory: readonly OverrideTermsRecord[];
  readonly updatedAt: number;
}

/**
 * When the pricing being set is in force, and over what it replaces the history. A contract's
 * terms replace everything from its start on and become the base (after its term its card and
 * pin price, without its lines, until new terms are set); terms set by hand replace only their
 * own window, and become the base when it is open at both ends.
 */
export interface OverrideWindow extends TermsWindow {
  /** The contract setting its terms; null or absent: set by hand (source `manual`). */
  readonly contractId?: string | null;
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

const DEFAULT_BASE = baseTerms(null, null);
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

/** Parses stored override lines; validated when set, so a failure never happens (no lines then). */
function parseLines(text: unknown): { input: RateLineInput[]; lines: OverrideTerms["lines"] } {
  const input = text ? (JSON.parse(String(text)) as RateLineInput[]) : [];
  const parsed = parseRateCard({ lines: input });
  return { input, lines: parsed.ok ? parsed.value.lines : [] };
}

function parseTermsRow(row: Record<string, unknown>): OverrideTermsRecord {
  const { input, lines } = parseLines(row.terms_lines);
  return {
    rateCardId: row.terms_card == null ? null : String(row.terms_card),
    pinnedVersionId: row.terms_pin == null ? null : String(row.terms_pin),
    lines,
    input,
    source: String(row.terms_source),
    from: row.terms_from == null ? null : ms(row.terms_from),
    until: row.terms_until == null ? null : ms(row.terms_until),
    setAt: ms(row.terms_set_at),
  };
}

const byFrom = (a: OverrideTerms, b: OverrideTerms): number =>
  a.from === b.from ? 0 : a.from === null ? -1 : b.from === null ? 1 : a.from - b.from;

function parseCustomerPricing(
  row: Record<string, unknown>,
  history: readonly OverrideTermsRecord[],
): CustomerPricing {
  return {
    customerId: String(row.customer_id),
    rateCardId: row.rate_card_id === null ? null : String(row.rate_card_id),
    pinnedVersionId: row.pinned_version_id === null ? null : String(row.pinned_version_id),
    overrides: row.overrides ? (JSON.parse(String(row.overrides)) as RateLineInput[]) : [],
    contractId: row.contract_id == null ? null : String(row.contract_id),
    overridesFrom: row.overrides_from == null ? null : ms(row.overrides_from),
    overridesUntil: row.overrides_until == null ? null : ms(row.overrides_until),
    overrideHistory: history,
    updatedAt: ms(row.updated_at),
  };
}

// Named columns, not *, so the statement is prepared (sql.ts): the ingest writer runs it per
// batch. One row per history entry (or one without, for a customer with none), in one query.
const PRICING_WITH_HISTORY = `SELECT p.customer_id, p.rate_card_id, p.pinned_version_id, p.overrides, p.updated_at,
    p.contract_id, p.overrides_from, p.overrides_until,
    t.source AS terms_source, t.lines AS terms_lines, t.starts_at AS terms_from, t.ends_at AS terms_until,
    t.set_at AS terms_set_at, t.rate_card_id AS terms_card, t.pinned_version_id AS terms_pin
  FROM customer_pricing p
  LEFT JOIN customer_override_terms t ON t.tenant_id = p.tenant_id AND t.customer_id = p.customer_id
    AND ($3::timestamptz IS NULL OR t.ends_at IS NULL OR t.ends_at > $3::timestamptz)
  WHERE p.tenant_id = $1 AND p.customer_id = ANY($2::text[])`;

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
    const [cards, versions, costs] = await Promise.all([
      ex.query("SELECT * FROM rate_cards WHERE tenant_id = $1 ORDER BY created_at, id", [tenantId]),
      ex.query("SELECT * FROM rate_card_versions WHERE tenant_id = $1 ORDER BY version", [tenantId]),
      ex.query("SELECT * FROM cost_table_versions WHERE tenant_id = $1 ORDER BY version", [tenantId]),
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
   * Sets a customer's pricing over `window` (open bounds when absent): its card, pinned version
   * and override lines, in force there together. The pricing history keeps every earlier entry
   * outside what the new terms replace (see {@link OverrideWindow}): an event is rated by the
   * entry in force at its own time, else by the base. A contract's terms (and terms set by hand
   * without a window) also become the base; before a contract's start, times no entry covered
   * keep the base they had, as entries of it (the core's `fillGaps`), so a late event timed
   * there is rated as it would have been. `not_found` for an unknown card or a version of
   * another card, `invalid_argument` for a window that ends before it starts; nothing is written
   * on any failure.
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
    const from = input.window?.from ?? null;
    const until = input.window?.until ?? null;
    const contractId = input.window?.contractId ?? null;
    const checked = checkTermsWindow({ from, until });
    if (!checked.ok) return checked;
    const now = this.clock(tenantId);
    // The pricing row's lock first: the history below is read and rewritten by one writer at a
    // time (a termination takes the same lock). A missing row is created as the defaults (the
    // default card, following), which price exactly as no row does.
    await ex.query(
      `INSERT INTO customer_pricing (tenant_id, customer_id, rate_card_id, pinned_version_id, overrides, updated_at)
       VALUES ($1, $2, NULL, NULL, '[]', $3) ON CONFLICT (tenant_id, customer_id) DO NOTHING`,
      [tenantId, customerId, iso(now)],
    );
    const locked = await ex.query(
      "SELECT * FROM customer_pricing WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE",
      [tenantId, customerId],
    );
    let row = locked.rows[0]!;
    const old = parseCustomerPricing(row, []);
    // A contract's terms, and terms set by hand for all time, become the base; a window set by
    // hand leaves the base as it is (its card and pin price that window only).
    const setsBase = contractId !== null || (from === null && until === null);
    if (setsBase) {
      const { rows } = await ex.query(
        `UPDATE customer_pricing SET rate_card_id = $3, pinned_version_id = $4, overrides = $5, updated_at = $6,
           contract_id = $7, overrides_from = $8, overrides_until = $9
         WHERE tenant_id = $1 AND customer_id = $2 RETURNING *`,
        [
          tenantId,
          customerId,
          input.rateCardId,
          input.pinnedVersionId,
          JSON.stringify(input.overrides),
          iso(now),
          contractId,
          from === null ? null : iso(from),
          until === null ? null : iso(until),
        ],
      );
      row = rows[0]!;
    }
    let history = await this.#history(ex, tenantId, customerId);
    const replace = contractId !== null && from !== null ? { from, until: null } : { from, until };
    if (
      contractId !== null &&
      from !== null &&
      (old.rateCardId !== input.rateCardId || old.pinnedVersionId !== input.pinnedVersionId)
    ) {
      // The base moves at the contract's start: what it priced before then stays priced by it.
      history = fillGaps(history, { from: null, until: from }, (gap) => ({
        ...gap,
        rateCardId: old.rateCardId,
        pinnedVersionId: old.pinnedVersionId,
        lines: [],
        input: [],
        source: old.contractId ?? MANUAL_SOURCE,
        setAt: now,
      }));
    }
    const entry: OverrideTermsRecord = {
      rateCardId: input.rateCardId,
      pinnedVersionId: input.pinnedVersionId,
      lines: parsed.value.lines,
      input: input.overrides,
      source: contractId ?? MANUAL_SOURCE,
      from,
      until,
      setAt: now,
    };
    // A contract's terms replace the history from its start on; terms set by hand, their window.
    const next = spliceTerms(history, replace, entry);
    await ex.query("DELETE FROM customer_override_terms WHERE tenant_id = $1 AND customer_id = $2", [
      tenantId,
      customerId,
    ]);
    await ex.query(
      `INSERT INTO customer_override_terms (tenant_id, customer_id, seq, source, lines, starts_at, ends_at, set_at,
         rate_card_id, pinned_version_id)
       SELECT $1, $2, * FROM unnest($3::int[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
         $8::timestamptz[], $9::text[], $10::text[])`,
      [
        tenantId,
        customerId,
        next.map((_, i) => i),
        next.map((e) => e.source),
        next.map((e) => JSON.stringify(e.input)),
        next.map((e) => (e.from === null ? null : iso(e.from))),
        next.map((e) => (e.until === null ? null : iso(e.until))),
        next.map((e) => iso(e.setAt)),
        next.map((e) => e.rateCardId),
        next.map((e) => e.pinnedVersionId),
      ],
    );
    return ok(parseCustomerPricing(row, next));
  }

  /** A customer's whole pricing history, oldest first. */
  async #history(ex: SqlExecutor, tenantId: string, customerId: string): Promise<OverrideTermsRecord[]> {
    const { rows } = await ex.query(
      `SELECT source AS terms_source, lines AS terms_lines, starts_at AS terms_from, ends_at AS terms_until,
         set_at AS terms_set_at, rate_card_id AS terms_card, pinned_version_id AS terms_pin
       FROM customer_override_terms WHERE tenant_id = $1 AND customer_id = $2`,
      [tenantId, customerId],
    );
    return rows.map(parseTermsRow).sort(byFrom);
  }

  /**
   * Customers' pricing terms with their pricing history, in one query (the ingest and
   * authorize writers run it once per batch); a customer without any is absent (the defaults).
   * Given the batch's `now`, entries that ended before the late-event grace window are left
   * out: an event older than that is refused before it is rated, so they could rate none.
   */
  async customerPricing(
    ex: SqlExecutor,
    tenantId: string,
    customerIds: readonly string[],
    now: number | null = null,
  ): Promise<Map<string, CustomerPricing>> {
    const { rows } = await ex.query(PRICING_WITH_HISTORY, [
      tenantId,
      customerIds,
      now === null ? null : iso(now - LATE_GRACE_MS),
    ]);
    const byCustomer = new Map<string, { row: Record<string, unknown>; history: OverrideTermsRecord[] }>();
    for (const r of rows) {
      const id = String(r.customer_id);
      let c = byCustomer.get(id);
      if (!c) {
        c = { row: r, history: [] };
        byCustomer.set(id, c);
      }
      if (r.terms_source != null) c.history.push(parseTermsRow(r));
    }
    const out = new Map<string, CustomerPricing>();
    for (const [id, c] of byCustomer) {
      if (c.history.length > 1) c.history.sort(byFrom);
      out.set(id, parseCustomerPricing(c.row, c.history));
    }
    return out;
  }

  /**
   * Resolves what rates a customer's event at `time`: the pricing in force at that time (the
   * history entry whose window holds it, else the base: the core's `pricingTermsAt`), then, of
   * its card (null: the default), its pinned version, else the version in force at `time`; and
   * its override lines. Pure: the history was loaded with the batch.
   */
  static pricingAt(
    catalog: Catalog,
    pricing: CustomerPricing | undefined,
    time: number,
  ): (PricingAt & { version: RateCardVersion }) | null {
    const base = pricing ? baseTerms(pricing.rateCardId, pricing.pinnedVersionId) : DEFAULT_BASE;
    const terms = pricingTermsAt(pricing?.overrideHistory, base, time);
    const cardId = terms.rateCardId ?? catalog.defaultCardId;
    const card = cardId === null ? undefined : catalog.cards.get(cardId);
    if (!card) return null;
    const version =
      terms.pinnedVersionId !== null
        ? card.versions.find((v) => v.id === terms.pinnedVersionId)
        : versionAt(card.versions, time);
    if (!version) return null;
    return {
      versionId: version.id,
      content: version.content,
      overrides: terms.lines,
      overridesSource: terms.source,
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
