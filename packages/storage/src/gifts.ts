import { randomBytes } from "node:crypto";
import { fail, formatAmount, ok, type Result, validateGrantInput } from "@drawdown/core";
import type { GrantRecord } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/** A claimable gift code: each customer claims it once, at most `maxUses` customers in all. */
export interface GiftCodeRecord {
  readonly id: string;
  readonly code: string;
  /** Credits each claim grants (source gift, zero cost basis). */
  readonly amount: bigint;
  readonly scope: readonly string[] | null;
  /** The claimed credits expire this many days after the claim; null: never. */
  readonly expiresInDays: number | null;
  readonly maxUses: number;
  readonly uses: number;
  /** No claim at or after this time; null: no end. */
  readonly endsAt: number | null;
  readonly createdAt: number;
}

/** What a claim made: the customer's new grant. */
export interface GiftClaimRecord {
  readonly codeId: string;
  readonly customerId: string;
  readonly grant: GrantRecord;
  readonly transactionId: string;
  readonly claimedAt: number;
}

/** A referral: credits for the referred customer, and optionally for the referrer. */
export interface ReferralRecord {
  readonly customerId: string;
  readonly referrerCustomerId: string;
  readonly grant: GrantRecord;
  readonly referrerGrant: GrantRecord | null;
  readonly createdAt: number;
}

/** One customer's line of the gift report. */
export interface GiftReportRow {
  readonly customerId: string;
  /** How many gift grants the customer received. */
  readonly gifts: number;
  readonly given: bigint;
  readonly used: bigint;
  readonly firstGiftAt: number;
  /** Whether a purchase or top-up grant followed the first gift. */
  readonly boughtAfter: boolean;
}

/** Limits of a gift code. */
export const GIFT_LIMITS = {
  codePattern: /^[A-Za-z0-9_-]{4,64}$/,
  maxUses: 1_000_000,
  expiresInDaysMax: 3650,
} as const;

const DAY_MS = 86_400_000;
const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());

const codeFrom = (r: Row): GiftCodeRecord => ({
  id: String(r.id),
  code: String(r.code),
  amount: BigInt(String(r.amount)),
  scope: (r.scope as string[] | null) ?? null,
  expiresInDays: r.expires_in_days === null ? null : Number(r.expires_in_days),
  maxUses: Number(r.max_uses),
  uses: Number(r.uses),
  endsAt: r.ends_at === null ? null : ms(r.ends_at),
  createdAt: ms(r.created_at),
});

/** A code people can type: 12 characters of Crockford's base32. */
function newCode(): string {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  return [...randomBytes(12)].map((b) => alphabet[b % 32]).join("");
}

/**
 * Gifts: credits given to a customer directly, through a claimable code (one use or N, an
 * end date), or for a referral. Every gifted credit is a grant of source gift (promo for
 * referrals) with zero cost basis, issued by the store's write pipeline in the caller's
 * transaction. A refused claim or referral writes nothing.
 */
export class Gifts {
  constructor(private readonly store: Store) {}

  /** Creates a claimable code (validated: amount, scope, limits; a code unique in the tenant). */
  async createCode(
    ex: SqlExecutor,
    tenantId: string,
    input: {
      code?: string;
      amount: bigint;
      scope?: readonly string[] | null;
      expiresInDays?: number | null;
      maxUses?: number;
      endsAt?: number | null;
    },
  ): Promise<Result<GiftCodeRecord>> {
    const now = this.store.now(tenantId);
    const code = input.code ?? newCode();
    if (!GIFT_LIMITS.codePattern.test(code))
      return fail("invalid_argument", "code is 4 to 64 letters, digits, '-' or '_'.", { field: "code" });
    const maxUses = input.maxUses ?? 1;
    if (!Number.isInteger(maxUses) || maxUses < 1 || maxUses > GIFT_LIMITS.maxUses)
      return fail("invalid_argument", "max_uses is a whole number from 1 to 1,000,000.", {
        field: "max_uses",
      });
    const days = input.expiresInDays ?? null;
    if (days !== null && (!Number.isInteger(days) || days < 1 || days > GIFT_LIMITS.expiresInDaysMax))
      return fail("invalid_argument", "expires_in_days is a whole number from 1 to 3650.", {
        field: "expires_in_days",
      });
    const endsAt = input.endsAt ?? null;
    if (endsAt !== null && endsAt <= now)
      return fail("invalid_argument", "ends_at is in the past; nobody could claim the code.", {
        field: "ends_at",
      });
    // The grant a claim makes must be valid: check amount and scope the way a grant is checked.
    const fields = validateGrantInput(
      { now, newId: this.store.newId },
      { walletId: "", amount: input.amount, source: "gift", scope: input.scope ?? null },
    );
    if (!fields.ok) return fields;
    const record: GiftCodeRecord = {
      id: this.store.newId("gft"),
      code,
      amount: input.amount,
      scope: fields.value.scope,
      expiresInDays: days,
      maxUses,
      uses: 0,
      endsAt,
      createdAt: now,
    };
    const { rowCount } = await ex.query(
      `INSERT INTO gift_codes (tenant_id, id, code, amount, scope, expires_in_days, max_uses, uses, ends_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) ON CONFLICT DO NOTHING`,
      [
        tenantId,
        record.id,
        code,
        record.amount.toString(),
        record.scope,
        days,
        maxUses,
        endsAt === null ? null : iso(endsAt),
        iso(now),
      ],
    );
    if (rowCount === 0) return fail("already_exists", `A gift code "${code}" already exists.`);
    return ok(record);
  }

  async listCodes(tenantId: string, ex: SqlExecutor = this.store.db): Promise<GiftCodeRecord[]> {
    const { rows } = await ex.query("SELECT * FROM gift_codes WHERE tenant_id = $1 ORDER BY created_at, id", [
      tenantId,
    ]);
    return rows.map(codeFrom);
  }

  /**
   * A customer claims a code: once per customer, at most `maxUses` claims in all (counted under
   * the code's row lock, so concurrent claims never exceed it), never at or after its end.
   * Every refusal is checked before anything is written.
   */
  async claim(
    ex: SqlExecutor,
    tenantId: string,
    code: string,
    customerId: string,
  ): Promise<Result<GiftClaimRecord>> {
    const locked = await ex.query("SELECT * FROM gift_codes WHERE tenant_id = $1 AND code = $2 FOR UPDATE", [
      tenantId,
      code,
    ]);
    if (!locked.rows[0]) return fail("not_found", `No gift code "${code}".`);
    const gift = codeFrom(locked.rows[0]);
    const pool = await this.#pool(ex, tenantId, customerId);
    if (pool === null) return fail("not_found", `No customer ${customerId}.`);
    const now = this.store.now(tenantId);
    if (gift.endsAt !== null && now >= gift.endsAt)
      return fail("gift_code_ended", `Gift code "${code}" ended at ${iso(gift.endsAt)}.`);
    const claimed = await ex.query(
      "SELECT 1 FROM gift_claims WHERE tenant_id = $1 AND code_id = $2 AND customer_id = $3",
      [tenantId, gift.id, customerId],
    );
    if (claimed.rowCount > 0)
      return fail("already_exists", `Customer ${customerId} already claimed gift code "${code}".`);
    if (gift.uses >= gift.maxUses)
      return fail(
        "gift_code_exhausted",
        `Gift code "${code}" was claimed its ${gift.maxUses} time(s) already.`,
      );
    const r = await this.store.createGrant(ex, tenantId, {
      walletId: pool,
      amount: gift.amount,
      source: "gift",
      costBasis: 0n,
      expiresAt: gift.expiresInDays === null ? null : now + gift.expiresInDays * DAY_MS,
      scope: gift.scope,
      metadata: { gift_code_id: gift.id },
    });
    if (!r.ok) return r;
    await ex.query(
      `INSERT INTO gift_claims (tenant_id, code_id, customer_id, grant_id, claimed_at) VALUES ($1, $2, $3, $4, $5)`,
      [tenantId, gift.id, customerId, r.value.grant.id, iso(now)],
    );
    await ex.query("UPDATE gift_codes SET uses = uses + 1 WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      gift.id,
    ]);
    await this.store.emit(ex, tenantId, "gift.claimed", {
      gift_code_id: gift.id,
      code: gift.code,
      customer_id: customerId,
      grant_id: r.value.grant.id,
      amount: formatAmount(gift.amount),
      claimed_at: iso(now),
    });
    return ok({
      codeId: gift.id,
      customerId,
      grant: r.value.grant,
      transactionId: r.value.transactionId,
      claimedAt: now,
    });
  }

  /** Gives credits to a customer directly: a grant of source gift, zero cost basis, in its pool. */
  async give(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
    input: {
      amount: bigint;
      scope?: readonly string[] | null;
      expiresAt?: number | null;
      reason?: string | null;
    },
  ): Promise<Result<{ grant: GrantRecord; transactionId: string }>> {
    const pool = await this.#pool(ex, tenantId, customerId);
    if (pool === null) return fail("not_found", `No customer ${customerId}.`);
    return this.store.createGrant(
      ex,
      tenantId,
      {
        walletId: pool,
        amount: input.amount,
        source: "gift",
        costBasis: 0n,
        expiresAt: input.expiresAt,
        scope: input.scope ?? null,
      },
      { kind: "grant", reason: input.reason ?? null },
    );
  }

  /**
   * Grants referral credits (source promo, zero cost basis) to a newly referred customer and,
   * with `referrerAmount`, to the referrer: once per referred customer. Both grants or neither.
   */
  async refer(
    ex: SqlExecutor,
    tenantId: string,
    input: {
      customerId: string;
      referrerCustomerId: string;
      amount: bigint;
      referrerAmount?: bigint | null;
      scope?: readonly string[] | null;
      expiresAt?: number | null;
    },
  ): Promise<Result<ReferralRecord>> {
    // The referred customer's row lock makes two referrals of one customer take turns.
    const customer = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      input.customerId,
    ]);
    if (customer.rowCount === 0) return fail("not_found", `No customer ${input.customerId}.`);
    if (input.customerId === input.referrerCustomerId)
      return fail("invalid_argument", "A customer cannot refer itself.", { field: "referrer_customer_id" });
    const pool = (await this.#pool(ex, tenantId, input.customerId))!;
    const referrerPool = await this.#pool(ex, tenantId, input.referrerCustomerId);
    if (referrerPool === null) return fail("not_found", `No customer ${input.referrerCustomerId}.`);
    const done = await ex.query("SELECT 1 FROM referrals WHERE tenant_id = $1 AND customer_id = $2", [
      tenantId,
      input.customerId,
    ]);
    if (done.rowCount > 0)
      return fail("already_exists", `Customer ${input.customerId} already has its referral credits.`);
    const now = this.store.now(tenantId);
    const grant = (walletId: string, amount: bigint, metadata: Record<string, string>) =>
      this.store.createGrant(ex, tenantId, {
        walletId,
        amount,
        source: "promo",
        costBasis: 0n,
        expiresAt: input.expiresAt,
        scope: input.scope ?? null,
        metadata,
      });
    // Both grants or neither: the second may still be refused after the first is written.
    await ex.query("SAVEPOINT referral");
    const first = await grant(pool, input.amount, {
      referral: "referred",
      referrer_customer_id: input.referrerCustomerId,
    });
    let second: Awaited<ReturnType<typeof grant>> | null = null;
    if (first.ok && input.referrerAmount != null)
      second = await grant(referrerPool, input.referrerAmount, {
        referral: "referrer",
        referred_customer_id: input.customerId,
      });
    if (!first.ok || (second !== null && !second.ok)) {
      await ex.query("ROLLBACK TO SAVEPOINT referral");
      return !first.ok ? first : (second as Extract<typeof second, { ok: false }>);
    }
    await ex.query("RELEASE SAVEPOINT referral");
    const referrerGrant = second?.ok ? second.value.grant : null;
    await ex.query(
      `INSERT INTO referrals (tenant_id, customer_id, referrer_customer_id, grant_id, referrer_grant_id, created_at)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [
        tenantId,
        input.customerId,
        input.referrerCustomerId,
        first.value.grant.id,
        referrerGrant?.id ?? null,
        iso(now),
      ],
    );
    return ok({
      customerId: input.customerId,
      referrerCustomerId: input.referrerCustomerId,
      grant: first.value.grant,
      referrerGrant,
      createdAt: now,
    });
  }

  /**
   * Gifts by customer: credits given (source gift), credits used from them (debits and usage
   * drawn from those grants in the journal, net of reversals), and whether the customer bought
   * credits (a purchase or top-up grant) after its first gift.
   */
  async report(tenantId: string, customerId: string | null = null): Promise<GiftReportRow[]> {
    const { rows } = await this.store.db.query(
      `WITH g AS (
         SELECT customer_id, id, wallet_id, amount, created_at FROM grants
         WHERE tenant_id = $1 AND source = 'gift' AND ($2::text IS NULL OR customer_id = $2)
       ), per AS (
         SELECT customer_id, count(*)::int AS gifts, sum(amount) AS given, min(created_at) AS first_at
         FROM g GROUP BY customer_id
       ), drawn AS (
         SELECT g.customer_id, -sum(e.amount) AS used
         FROM g JOIN journal_entries e
           ON e.tenant_id = $1 AND e.wallet_id = g.wallet_id AND e.grant_id = g.id AND e.account = 'grant'
         JOIN journal_transactions t ON t.tenant_id = $1 AND t.id = e.tx_id
         WHERE t.kind IN ('debit', 'usage', 'adjustment.debit', 'reversal')
         GROUP BY g.customer_id
       )
       SELECT per.customer_id, per.gifts, per.given, per.first_at, coalesce(drawn.used, 0) AS used,
         EXISTS (SELECT 1 FROM grants p WHERE p.tenant_id = $1 AND p.customer_id = per.customer_id
           AND p.source IN ('purchase', 'top_up') AND p.created_at > per.first_at) AS bought_after
       FROM per LEFT JOIN drawn ON drawn.customer_id = per.customer_id
       ORDER BY per.customer_id`,
      [tenantId, customerId],
    );
    return rows.map((r) => ({
      customerId: String(r.customer_id),
      gifts: Number(r.gifts),
      given: BigInt(String(r.given)),
      used: BigInt(String(r.used)),
      firstGiftAt: ms(r.first_at),
      boughtAfter: r.bought_after === true || r.bought_after === "t",
    }));
  }

  async #pool(ex: SqlExecutor, tenantId: string, customerId: string): Promise<string | null> {
    const { rows } = await ex.query(
      "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL",
      [tenantId, customerId],
    );
    return rows[0] ? String(rows[0].id) : null;
  }
}
