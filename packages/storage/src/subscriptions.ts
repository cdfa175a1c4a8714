import {
  type Context,
  combine,
  type Effect,
  entry,
  fail,
  type Grant,
  type GrantInput,
  grantAccount,
  issueGrant,
  memberRolloverBase,
  ok,
  type Plan,
  type PlanInput,
  periodAt,
  planMemberAddition,
  planMemberRenewal,
  planPlanChange,
  planRenewal,
  planRollover,
  planSeatChange,
  type Result,
  ROLLOVER_EXPIRY,
  type RolloverCandidate,
  type RolloverLine,
  rolloverCandidate,
  validateGrantInput,
  validatePlan,
  voidGrant,
} from "@drawdown/core";
import { applyPlanOverage, insertInvoice, type PlannedInvoice, planRenewalOverage } from "./overage.js";
import type { Page, WalletRecord } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

/** A stored plan. */
export interface PlanRecord extends Plan {
  readonly createdAt: number;
}

/** A customer's subscription to a plan. */
export interface SubscriptionRecord {
  readonly id: string;
  readonly customerId: string;
  readonly planId: string;
  /** The plan a downgrade switches to at the next renewal; null when none is waiting. */
  readonly pendingPlanId: string | null;
  readonly seats: number;
  readonly grantedSeats: number;
  readonly startedAt: number;
  readonly status: "active" | "canceled";
  readonly canceledAt: number | null;
  /** The last period renewed (-1 before the first). */
  readonly renewedThrough: number;
  /** When the next period starts and renews; null once a canceled subscription is closed. */
  readonly nextRenewalAt: number | null;
  readonly createdAt: number;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());

/** Plans are stored as JSON with amounts as decimal-free integer strings. */
const planJson = (p: Plan): string =>
  JSON.stringify(p, (_k, v) => (typeof v === "bigint" ? { $bigint: v.toString() } : v));

const planFrom = (row: Row): PlanRecord => {
  const plan = JSON.parse(String(row.definition), (_k, v) =>
    v !== null && typeof v === "object" && "$bigint" in v ? BigInt(v.$bigint) : v,
  ) as Plan;
  // Plans stored before allocations existed allot to the customer.
  return { ...plan, allocation: plan.allocation ?? { mode: "customer" }, createdAt: ms(row.created_at) };
};

/** One member wallet's allocation for one period of a per-member plan. */
export interface MemberAllocationRecord {
  readonly subscriptionId: string;
  readonly periodIndex: number;
  readonly walletId: string;
  readonly reason: "renewal" | "member_added";
  readonly personal: bigint;
  readonly pool: bigint;
  readonly personalGrantId: string | null;
  readonly poolGrantId: string | null;
  readonly allocatedAt: number;
}

/**
 * One member wallet of a customer and its allocation for the current period: what the
 * customer's per-member plan gave it, what is left of its own part, and its share in the pool.
 */
export interface MemberAllocationLine {
  readonly walletId: string;
  readonly memberId: string;
  /** The subscription whose period is current; null when none is (no subscription, or its last period ended). */
  readonly subscriptionId: string | null;
  /** The current period `[from, to)` and its index; null with no subscription. */
  readonly period: { readonly index: number; readonly from: number; readonly to: number } | null;
  /** The plan's pool share; null when the plan does not allocate per member. */
  readonly poolSharePercent: number | null;
  /** The member's whole allocation this period: `personal + poolShare` (0 when none). */
  readonly allocated: bigint;
  /** The part granted into the member's own wallet. */
  readonly personal: bigint;
  /** The part paid into the customer's pool (shared by every member). */
  readonly poolShare: bigint;
  /** What is left of the personal part: its grant's remaining while active, else 0. */
  readonly remaining: bigint;
  /** `renewal` (with the period) or `member_added` (prorated, when the wallet was created); null when none. */
  readonly reason: "renewal" | "member_added" | null;
  readonly allocatedAt: number | null;
  readonly personalGrantId: string | null;
  readonly poolGrantId: string | null;
}

const allocationFrom = (r: Row): MemberAllocationRecord => ({
  subscriptionId: String(r.subscription_id),
  periodIndex: Number(r.period_index),
  walletId: String(r.wallet_id),
  reason: r.reason as MemberAllocationRecord["reason"],
  personal: BigInt(String(r.personal)),
  pool: BigInt(String(r.pool)),
  personalGrantId: r.personal_grant_id === null ? null : String(r.personal_grant_id),
  poolGrantId: r.pool_grant_id === null ? null : String(r.pool_grant_id),
  allocatedAt: ms(r.allocated_at),
});

const subscriptionFrom = (r: Row): SubscriptionRecord => ({
  id: String(r.id),
  customerId: String(r.customer_id),
  planId: String(r.plan_id),
  pendingPlanId:
    r.pending_plan_id === null || r.pending_plan_id === undefined ? null : String(r.pending_plan_id),
  seats: Number(r.seats),
  grantedSeats: Number(r.granted_seats),
  startedAt: ms(r.started_at),
  status: r.status as SubscriptionRecord["status"],
  canceledAt: r.canceled_at === null ? null : ms(r.canceled_at),
  renewedThrough: Number(r.renewed_through),
  nextRenewalAt: r.next_renewal_at === null ? null : ms(r.next_renewal_at),
  createdAt: ms(r.created_at),
});

/** Plan credits of a plan with rollover are expired by their period's rollover, not on their own. */
const managed = (plan: Plan, input: GrantInput): GrantInput =>
  plan.rollover.kind === "none"
    ? input
    : { ...input, metadata: { ...input.metadata, [ROLLOVER_EXPIRY.key]: ROLLOVER_EXPIRY.value } };

/**
 * Plans and subscriptions: each period renews exactly once (its key is a primary key), in
 * order, with the closing period's rollover in the same transaction; the store's scheduler and
 * test clock run due renewals, catching up after downtime.
 */
export class Subscriptions implements DueJob {
  constructor(private readonly store: Store) {
    store.addDueJob(this);
    store.addMemberWalletHook((ex, tenantId, wallet) => this.#memberAdded(ex, tenantId, wallet));
  }

  /** A subscription's per-member allocations, by period then wallet. */
  async listMemberAllocations(
    tenantId: string,
    subscriptionId: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<MemberAllocationRecord[]> {
    const { rows } = await ex.query(
      "SELECT * FROM member_allocations WHERE tenant_id = $1 AND subscription_id = $2 ORDER BY period_index, wallet_id",
      [tenantId, subscriptionId],
    );
    return rows.map(allocationFrom);
  }

  /**
   * A customer's member wallets, in id order from `page.after`, each with its allocation for the
   * current period: the period of the customer's subscription (the active one first) that
   * contains now. One query for the subscriptions and one for the page (wallets, allocations
   * and personal grants joined).
   */
  async memberAllocations(
    tenantId: string,
    customerId: string,
    page: { after?: string | null; limit: number },
    ex: SqlExecutor = this.store.db,
  ): Promise<Page<MemberAllocationLine>> {
    const current = await this.#currentPeriod(ex, tenantId, customerId);
    const { rows } = await ex.query(
      `SELECT w.id AS wallet_id, w.member_id, a.reason, a.personal::text AS personal, a.pool::text AS pool,
         a.personal_grant_id, a.pool_grant_id, a.allocated_at,
         CASE WHEN g.status = 'active' THEN g.remaining ELSE 0 END::text AS remaining
       FROM wallets w
       LEFT JOIN member_allocations a ON a.tenant_id = w.tenant_id AND a.wallet_id = w.id
         AND a.subscription_id = $5 AND a.period_index = $6
       LEFT JOIN grants g ON g.tenant_id = a.tenant_id AND g.id = a.personal_grant_id
       WHERE w.tenant_id = $1 AND w.customer_id = $2 AND w.member_id IS NOT NULL AND ($3::text IS NULL OR w.id > $3)
       ORDER BY w.id LIMIT $4`,
      [
        tenantId,
        customerId,
        page.after ?? null,
        page.limit + 1,
        current?.subscriptionId ?? null,
        current?.period.index ?? null,
      ],
    );
    const lines = rows.map((r): MemberAllocationLine => {
      const allocated = r.reason !== null && r.reason !== undefined;
      const personal = allocated ? BigInt(String(r.personal)) : 0n;
      const pool = allocated ? BigInt(String(r.pool)) : 0n;
      return {
        walletId: String(r.wallet_id),
        memberId: String(r.member_id),
        subscriptionId: current?.subscriptionId ?? null,
        period: current?.period ?? null,
        poolSharePercent: current?.poolSharePercent ?? null,
        allocated: personal + pool,
        personal,
        poolShare: pool,
        remaining: allocated ? BigInt(String(r.remaining)) : 0n,
        reason: allocated ? (r.reason as MemberAllocationRecord["reason"]) : null,
        allocatedAt: allocated ? ms(r.allocated_at) : null,
        personalGrantId: r.personal_grant_id == null ? null : String(r.personal_grant_id),
        poolGrantId: r.pool_grant_id == null ? null : String(r.pool_grant_id),
      };
    });
    const items = lines.slice(0, page.limit);
    const last = items[items.length - 1];
    return { items, next: lines.length > page.limit && last ? last.walletId : null };
  }

  /**
   * The customer's current period: of its subscriptions that renewed at least once (the active
   * one first, then the newest), the first whose last renewed period contains now. A canceled
   * subscription's last period still counts until it ends.
   */
  async #currentPeriod(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
  ): Promise<{
    subscriptionId: string;
    period: { index: number; from: number; to: number };
    poolSharePercent: number | null;
  } | null> {
    const { rows } = await ex.query(
      `SELECT s.*, p.definition, p.created_at AS plan_created_at FROM subscriptions s
       JOIN plans p ON p.tenant_id = s.tenant_id AND p.id = s.plan_id
       WHERE s.tenant_id = $1 AND s.customer_id = $2 AND s.renewed_through >= 0
       ORDER BY (s.status = 'active') DESC, s.created_at DESC, s.id DESC`,
      [tenantId, customerId],
    );
    const now = this.store.now(tenantId);
    for (const r of rows) {
      const sub = subscriptionFrom(r);
      const plan = planFrom({ definition: r.definition, created_at: r.plan_created_at });
      const { index, from, to } = periodAt(sub.startedAt, plan.interval, sub.renewedThrough);
      if (now < from || now >= to) continue;
      return {
        subscriptionId: sub.id,
        period: { index, from, to },
        poolSharePercent: plan.allocation.mode === "per_member" ? plan.allocation.poolSharePercent : null,
      };
    }
    return null;
  }

  /** Creates a plan (validated by the core: policies, limits, defaults). */
  async createPlan(
    ex: SqlExecutor,
    tenantId: string,
    input: Omit<PlanInput, "id">,
  ): Promise<Result<PlanRecord>> {
    const plan = validatePlan({ ...input, id: this.store.newId("pln") });
    if (!plan.ok) return plan;
    const createdAt = this.store.now(tenantId);
    const { rowCount } = await ex.query(
      `INSERT INTO plans (tenant_id, id, name, definition, created_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, name) DO NOTHING`,
      [tenantId, plan.value.id, plan.value.name, planJson(plan.value), iso(createdAt)],
    );
    if (rowCount === 0) return fail("already_exists", `A plan named "${plan.value.name}" already exists.`);
    return ok({ ...plan.value, createdAt });
  }

  async getPlan(tenantId: string, id: string, ex: SqlExecutor = this.store.db): Promise<PlanRecord | null> {
    const { rows } = await ex.query("SELECT * FROM plans WHERE tenant_id = $1 AND id = $2", [tenantId, id]);
    return rows[0] ? planFrom(rows[0]) : null;
  }

  async listPlans(tenantId: string): Promise<PlanRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM plans WHERE tenant_id = $1 ORDER BY created_at, id",
      [tenantId],
    );
    return rows.map(planFrom);
  }

  async getSubscription(
    tenantId: string,
    id: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<SubscriptionRecord | null> {
    const { rows } = await ex.query("SELECT * FROM subscriptions WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      id,
    ]);
    return rows[0] ? subscriptionFrom(rows[0]) : null;
  }

  async listSubscriptions(tenantId: string, customerId: string): Promise<SubscriptionRecord[]> {
    const { rows } = await this.store.db.query(
      "SELECT * FROM subscriptions WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at, id",
      [tenantId, customerId],
    );
    return rows.map(subscriptionFrom);
  }

  /**
   * Subscribes a customer to a plan from `startAt` (now by default; never in the past) and
   * renews every period already due: the first period's credits are granted at once.
   */
  async subscribe(
    ex: SqlExecutor,
    tenantId: string,
    input: { customerId: string; planId: string; seats?: number; startAt?: number | null },
  ): Promise<Result<SubscriptionRecord>> {
    const plan = await this.getPlan(tenantId, input.planId, ex);
    if (!plan) return fail("not_found", `No plan ${input.planId}.`);
    const customer = await ex.query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2", [
      tenantId,
      input.customerId,
    ]);
    if (customer.rowCount === 0) return fail("not_found", `No customer ${input.customerId}.`);
    const seats = input.seats ?? 1;
    if (!Number.isInteger(seats) || seats < 0 || seats > 1_000_000) {
      return fail("invalid_argument", "seats is a whole number from 0 to 1,000,000.", { field: "seats" });
    }
    const now = this.store.now(tenantId);
    const startAt = input.startAt ?? now;
    if (startAt < now - 60_000)
      return fail("invalid_argument", "A subscription starts now or later, not in the past.");
    const id = this.store.newId("sbs");
    const { rows, rowCount } = await ex.query(
      `INSERT INTO subscriptions (tenant_id, id, customer_id, plan_id, seats, granted_seats, started_at, status,
         renewed_through, next_renewal_at, created_at)
       VALUES ($1, $2, $3, $4, $5, 0, $6, 'active', -1, $6, $7) ON CONFLICT DO NOTHING RETURNING *`,
      [tenantId, id, input.customerId, plan.id, seats, iso(startAt), iso(now)],
    );
    if (rowCount === 0) {
      return fail(
        "already_exists",
        `Customer ${input.customerId} already has an active subscription; change or cancel it.`,
      );
    }
    // The plan's overage policy, unless the wallet set its own (storage/overage.ts).
    await applyPlanOverage(ex, tenantId, await this.#pool(ex, tenantId, input.customerId), plan);
    const renewed = await this.#renew(ex, tenantId, subscriptionFrom(rows[0]!), plan);
    if (!renewed.ok) return renewed;
    return ok((await this.getSubscription(tenantId, id, ex))!);
  }

  /** Changes the seat count; seats above the period's high-water mark are granted prorated. */
  async changeSeats(
    ex: SqlExecutor,
    tenantId: string,
    subscriptionId: string,
    seats: number,
  ): Promise<Result<SubscriptionRecord>> {
    const sub = await this.#lock(ex, tenantId, subscriptionId);
    if (!sub) return fail("not_found", `No subscription ${subscriptionId}.`);
    if (sub.status !== "active") return fail("invalid_argument", "The subscription is canceled.");
    const plan = (await this.getPlan(tenantId, sub.planId, ex))!;
    const pool = await this.#pool(ex, tenantId, sub.customerId);
    const index = Math.max(0, sub.renewedThrough);
    const period = periodAt(sub.startedAt, plan.interval, index);
    let grantedSeats = sub.grantedSeats;
    const r = await this.store.mutate(ex, tenantId, pool, [], (ctx) => {
      const change = planSeatChange(ctx, {
        subscriptionId: sub.id,
        plan,
        period,
        grantedSeats: sub.grantedSeats,
        seats,
        walletId: pool,
      });
      if (!change.ok) return change;
      grantedSeats = change.value.grantedSeats;
      if (!change.value.grant || sub.renewedThrough < 0) return ok(EMPTY);
      return issueGrant(ctx, sub.customerId, managed(plan, change.value.grant));
    });
    if (!r.ok) return r;
    await ex.query(
      "UPDATE subscriptions SET seats = $3, granted_seats = $4 WHERE tenant_id = $1 AND id = $2",
      [tenantId, subscriptionId, seats, grantedSeats],
    );
    return ok((await this.getSubscription(tenantId, subscriptionId, ex))!);
  }

  /**
   * Changes the plan (both must renew on the same interval). An upgrade (a higher period
   * allotment at the high-water seats) is in force now: the difference is granted prorated to
   * the rest of the period and `plan_id` switches at once. Anything else is a downgrade: it
   * waits in `pending_plan_id` until the next renewal, which closes the period under the current
   * plan (its rollover) and grants the new plan's allotment; nothing is granted or taken back
   * now. Changing back to the current plan while a downgrade waits withdraws the downgrade.
   */
  async changePlan(
    ex: SqlExecutor,
    tenantId: string,
    subscriptionId: string,
    planId: string,
  ): Promise<Result<SubscriptionRecord>> {
    const locked = await this.#lock(ex, tenantId, subscriptionId);
    if (!locked) return fail("not_found", `No subscription ${subscriptionId}.`);
    const to = await this.getPlan(tenantId, planId, ex);
    if (!to) return fail("not_found", `No plan ${planId}.`);
    if (locked.status !== "active") return fail("invalid_argument", "The subscription is canceled.");
    // Periods already due renew first (the scheduler may lag): the change applies to the current one.
    const renewed = await this.#renew(
      ex,
      tenantId,
      locked,
      (await this.getPlan(tenantId, locked.planId, ex))!,
    );
    if (!renewed.ok) return renewed;
    const sub = (await this.getSubscription(tenantId, subscriptionId, ex))!;
    const from = (await this.getPlan(tenantId, sub.planId, ex))!;
    if (to.id === from.id && sub.pendingPlanId !== null) {
      await this.#setPlan(ex, tenantId, sub.id, from.id, null);
      return ok((await this.getSubscription(tenantId, subscriptionId, ex))!);
    }
    if (sub.renewedThrough < 0) {
      // Not started yet: nothing granted, so the first renewal simply follows the new plan.
      if (to.id === from.id) {
        return fail("invalid_argument", `The subscription is already on plan ${to.id}.`, {
          field: "plan_id",
        });
      }
      if (from.interval.unit !== to.interval.unit || from.interval.count !== to.interval.count) {
        return fail(
          "invalid_argument",
          "Both plans must renew on the same interval; to change it, cancel and subscribe to the new plan.",
          { field: "plan_id" },
        );
      }
      await this.#setPlan(ex, tenantId, sub.id, to.id, null);
      await applyPlanOverage(ex, tenantId, await this.#pool(ex, tenantId, sub.customerId), to);
      return ok((await this.getSubscription(tenantId, subscriptionId, ex))!);
    }
    const pool = await this.#pool(ex, tenantId, sub.customerId);
    const period = periodAt(sub.startedAt, from.interval, sub.renewedThrough);
    let kind = "downgrade" as "upgrade" | "downgrade";
    const r = await this.store.mutate(ex, tenantId, pool, [], (ctx) => {
      const change = planPlanChange(ctx, {
        subscriptionId: sub.id,
        from,
        to,
        grantedSeats: sub.grantedSeats,
        period,
        walletId: pool,
      });
      if (!change.ok) return fail(change.error.code, change.error.message, { field: "plan_id" });
      kind = change.value.kind;
      if (!change.value.grant) return ok(EMPTY);
      return issueGrant(ctx, sub.customerId, managed(to, change.value.grant));
    });
    if (!r.ok) return r;
    if (kind === "upgrade") {
      await this.#setPlan(ex, tenantId, sub.id, to.id, null);
      await applyPlanOverage(ex, tenantId, pool, to);
    } else await this.#setPlan(ex, tenantId, sub.id, from.id, to.id);
    return ok((await this.getSubscription(tenantId, subscriptionId, ex))!);
  }

  async #setPlan(
    ex: SqlExecutor,
    tenantId: string,
    id: string,
    planId: string,
    pendingPlanId: string | null,
  ): Promise<void> {
    await ex.query(
      "UPDATE subscriptions SET plan_id = $3, pending_plan_id = $4 WHERE tenant_id = $1 AND id = $2",
      [tenantId, id, planId, pendingPlanId],
    );
  }

  /**
   * Cancels: no period renews after this. The plan's cancel rule decides the credits:
   * `forfeit` voids them now; otherwise they last to the period end, when the closing
   * renewal expires them (without rollover).
   */
  async cancel(
    ex: SqlExecutor,
    tenantId: string,
    subscriptionId: string,
  ): Promise<Result<SubscriptionRecord>> {
    const sub = await this.#lock(ex, tenantId, subscriptionId);
    if (!sub) return fail("not_found", `No subscription ${subscriptionId}.`);
    if (sub.status !== "active") return fail("invalid_argument", "The subscription is already canceled.");
    const plan = (await this.getPlan(tenantId, sub.planId, ex))!;
    const now = this.store.now(tenantId);
    if (plan.cancel.onCancel === "forfeit") {
      const wallets = await this.#wallets(ex, tenantId, sub.customerId);
      // Every active grant of the subscription, the fully drawn ones too (the write pipeline
      // loads only grants holding credits): each leaves `active` as voided.
      const own = await ex.query(
        "SELECT id FROM grants WHERE tenant_id = $1 AND customer_id = $2 AND status = 'active' AND metadata->>'subscription_id' = $3",
        [tenantId, sub.customerId, sub.id],
      );
      const ownIds = own.rows.map((g) => String(g.id));
      const r = await this.store.mutate(ex, tenantId, wallets.all, ownIds, (ctx, state) => {
        const effects: Effect[] = [];
        for (const g of this.#ownGrants(state.grants, sub.id)) {
          const v = voidGrant(ctx, sub.customerId, g, "subscription canceled: credits forfeited");
          if (v.ok) effects.push(v.value);
        }
        return ok(combine(...effects));
      });
      if (!r.ok) return r;
    } else if (
      plan.cancel.onCancel === "keep_until_period_end" &&
      sub.nextRenewalAt !== null &&
      sub.renewedThrough >= 0
    ) {
      // Credits that would outlive the period (plans whose credits never expire, or roll for
      // months) are cut to its end, as a recorded change of each grant.
      const periodEnd = sub.nextRenewalAt;
      const wallets = await this.#wallets(ex, tenantId, sub.customerId);
      const r = await this.store.mutate(ex, tenantId, wallets.all, [], (ctx, state) =>
        ok({
          ...EMPTY,
          grantChanges: this.#ownGrants(state.grants, sub.id)
            .filter((g) => g.expiresAt === null || g.expiresAt > periodEnd)
            .map((g) => ({
              id: ctx.newId("chg"),
              grantId: g.id,
              kind: "expiry_shortened" as const,
              from: g.expiresAt,
              to: periodEnd,
              reason: "subscription canceled: credits last to the period end",
              at: ctx.now,
            })),
        }),
      );
      if (!r.ok) return r;
    }
    await ex.query(
      "UPDATE subscriptions SET status = 'canceled', canceled_at = $3, pending_plan_id = NULL WHERE tenant_id = $1 AND id = $2",
      [tenantId, subscriptionId, iso(now)],
    );
    await this.store.emit(ex, tenantId, "subscription.canceled", {
      subscription_id: sub.id,
      customer_id: sub.customerId,
      plan_id: sub.planId,
      canceled_at: iso(now),
      on_cancel: plan.cancel.onCancel,
    });
    return ok((await this.getSubscription(tenantId, subscriptionId, ex))!);
  }

  async #lock(ex: SqlExecutor, tenantId: string, id: string): Promise<SubscriptionRecord | null> {
    const { rows } = await ex.query(
      "SELECT * FROM subscriptions WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
      [tenantId, id],
    );
    return rows[0] ? subscriptionFrom(rows[0]) : null;
  }

  async #pool(ex: SqlExecutor, tenantId: string, customerId: string): Promise<string> {
    const { rows } = await ex.query(
      "SELECT id FROM wallets WHERE tenant_id = $1 AND customer_id = $2 AND member_id IS NULL",
      [tenantId, customerId],
    );
    return String(rows[0]!.id);
  }

  /**
   * The customer's wallets: the pool, its members' (in id order), and all of them with the pool
   * first. Subscription writes lock them all: a per-member plan's credits live in every one.
   */
  async #wallets(
    ex: SqlExecutor,
    tenantId: string,
    customerId: string,
  ): Promise<{ pool: string; members: { id: string; createdAt: number }[]; all: string[] }> {
    const { rows } = await ex.query(
      "SELECT id, member_id, created_at FROM wallets WHERE tenant_id = $1 AND customer_id = $2 ORDER BY member_id NULLS FIRST, id",
      [tenantId, customerId],
    );
    const pool = String(rows.find((r) => r.member_id === null)!.id);
    const members = rows
      .filter((r) => r.member_id !== null)
      .map((r) => ({ id: String(r.id), createdAt: ms(r.created_at) }))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    return { pool, members, all: [pool, ...members.map((m) => m.id)] };
  }

  /**
   * A member wallet was just created (in this transaction): under an active per-member plan it
   * receives the current period's allocation, prorated, once. The subscription's row lock
   * orders this against a renewal running at the same time: whichever comes second sees the
   * other's work (the renewal, the new wallet; this, the renewed period).
   */
  async #memberAdded(ex: SqlExecutor, tenantId: string, wallet: WalletRecord): Promise<Result<unknown>> {
    const { rows } = await ex.query(
      "SELECT id FROM subscriptions WHERE tenant_id = $1 AND customer_id = $2 AND status = 'active'",
      [tenantId, wallet.customerId],
    );
    if (!rows[0]) return ok(null);
    const locked = await this.#lock(ex, tenantId, String(rows[0].id));
    if (locked?.status !== "active") return ok(null);
    // Periods already due renew first (and allocate to the new wallet with everyone else).
    const renewed = await this.#renew(
      ex,
      tenantId,
      locked,
      (await this.getPlan(tenantId, locked.planId, ex))!,
    );
    if (!renewed.ok) return renewed;
    const sub = (await this.getSubscription(tenantId, locked.id, ex))!;
    if (sub.renewedThrough < 0) return ok(null);
    const plan = (await this.getPlan(tenantId, sub.planId, ex))!;
    if (plan.allocation.mode !== "per_member") return ok(null);
    const period = periodAt(sub.startedAt, plan.interval, sub.renewedThrough);
    const now = this.store.now(tenantId);
    if (now < period.from || now >= period.to) return ok(null);
    const fresh = await ex.query(
      `INSERT INTO member_allocations (tenant_id, subscription_id, period_index, wallet_id, reason, personal, pool, allocated_at)
       VALUES ($1, $2, $3, $4, 'member_added', 0, 0, $5) ON CONFLICT DO NOTHING RETURNING wallet_id`,
      [tenantId, sub.id, period.index, wallet.id, iso(now)],
    );
    if (fresh.rowCount === 0) return ok(null);
    const pool = await this.#pool(ex, tenantId, sub.customerId);
    let planned = { personal: 0n, pool: 0n };
    const r = await this.store.mutate(ex, tenantId, [wallet.id, pool], [], (ctx) => {
      const addition = planMemberAddition(ctx, {
        subscriptionId: sub.id,
        plan,
        period,
        poolWalletId: pool,
        memberWalletId: wallet.id,
      });
      if (!addition.ok) return addition;
      planned = addition.value;
      const effects: Effect[] = [];
      for (const g of [addition.value.personalGrant, addition.value.poolGrant]) {
        if (!g) continue;
        const issued = issueGrant(ctx, sub.customerId, managed(plan, g));
        if (!issued.ok) return issued;
        effects.push(issued.value);
      }
      return ok(combine(...effects));
    });
    if (!r.ok) return r;
    const grantIn = (walletId: string) => r.value.newGrants.find((g) => g.walletId === walletId)?.id ?? null;
    await ex.query(
      `UPDATE member_allocations SET personal = $5, pool = $6, personal_grant_id = $7, pool_grant_id = $8
       WHERE tenant_id = $1 AND subscription_id = $2 AND period_index = $3 AND wallet_id = $4`,
      [
        tenantId,
        sub.id,
        period.index,
        wallet.id,
        planned.personal.toString(),
        planned.pool.toString(),
        grantIn(wallet.id),
        grantIn(pool),
      ],
    );
    return ok(null);
  }

  /** Active grants the subscription issued (plan credits and their rollovers). */
  #ownGrants(grants: ReadonlyMap<string, Grant>, subscriptionId: string): Grant[] {
    return [...grants.values()]
      .filter((g) => g.status === "active" && g.metadata.subscription_id === subscriptionId)
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /**
   * Renews every period of the subscription that has started, in order, each in one write:
   * the closing period's rollover (or, once canceled, its expiry), then the new period's grant.
   * A period's key is inserted first; if it exists, another writer renewed it.
   *
   * Under a per-member plan the new period's write also allocates to every member wallet
   * (each keyed in `member_allocations`, so once) and pays their pool shares into one pool
   * grant. Every write locks all the customer's wallets: plan credits may live in any of them.
   */
  async #renew(
    ex: SqlExecutor,
    tenantId: string,
    first: SubscriptionRecord,
    current: PlanRecord,
  ): Promise<Result<number>> {
    let sub = first;
    let plan = current;
    let renewed = 0;
    const wallets = await this.#wallets(ex, tenantId, sub.customerId);
    const pool = wallets.pool;
    while (sub.nextRenewalAt !== null && sub.nextRenewalAt <= this.store.now(tenantId)) {
      const index = sub.renewedThrough + 1;
      const period = periodAt(sub.startedAt, plan.interval, index);
      const closing = sub.status === "canceled";
      // A pending downgrade is in force from this period: the closing one rolls over under `plan`.
      const pending =
        !closing && sub.pendingPlanId !== null ? await this.getPlan(tenantId, sub.pendingPlanId, ex) : null;
      const next = pending ?? plan;
      const key = closing ? `close:${sub.id}` : `renewal:${sub.id}:${index}`;
      const now = iso(this.store.now(tenantId));
      const fresh = await ex.query(
        `INSERT INTO subscription_renewals (tenant_id, key, subscription_id, period_index, renewed_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING key`,
        [tenantId, key, sub.id, index, now],
      );
      if (fresh.rowCount > 0) {
        const perMember = !closing && next.allocation.mode === "per_member";
        // Each member's allocation is keyed too: only wallets without one for this period get one.
        // A period caught up late is allocated to the wallets that existed before it ended.
        const members = perMember
          ? (
              await ex.query(
                `INSERT INTO member_allocations (tenant_id, subscription_id, period_index, wallet_id, reason, personal, pool, allocated_at)
                 SELECT $1, $2, $3, w, 'renewal', 0, 0, $5 FROM unnest($4::text[]) AS w ON CONFLICT DO NOTHING RETURNING wallet_id`,
                [
                  tenantId,
                  sub.id,
                  index,
                  wallets.members.filter((m) => m.createdAt < period.to).map((m) => m.id),
                  now,
                ],
              )
            ).rows.map((r) => String(r.wallet_id))
          : [];
        // The closing period's members: the base of the pool's relative rollover cap.
        const closingMembers =
          index > 0 && plan.allocation.mode === "per_member"
            ? await this.#allocatedMembers(ex, tenantId, sub.id, index - 1)
            : 0;
        let grantId: string | null = null;
        let split: { walletId: string; personal: bigint; pool: bigint }[] = [];
        let invoice: PlannedInvoice | null = null;
        const r = await this.store.mutate(ex, tenantId, wallets.all, [], async (ctx, state) => {
          const effects: Effect[] = [];
          if (index > 0) {
            const roll = this.#rollover(ctx, sub, plan, state.grants, period.from, period.to, closing, {
              pool,
              members: closingMembers,
            });
            if (!roll.ok) return roll;
            effects.push(roll.value);
          }
          if (perMember) {
            const renewal = planMemberRenewal(ctx, {
              subscriptionId: sub.id,
              plan: next,
              period,
              customerId: sub.customerId,
              poolWalletId: pool,
              memberWalletIds: members,
            });
            if (!renewal.ok) return renewal;
            if (!renewal.value.lapsed) {
              split = renewal.value.members.map((m) => ({
                walletId: m.walletId,
                personal: m.personal,
                pool: m.pool,
              }));
              for (const g of [...renewal.value.members.map((m) => m.grant), renewal.value.poolGrant]) {
                if (!g) continue;
                const issued = issueGrant(ctx, sub.customerId, managed(next, g));
                if (!issued.ok) return issued;
                if (g.walletId === pool) grantId = issued.value.newGrants[0]?.id ?? null;
                effects.push(issued.value);
              }
            }
          } else if (!closing) {
            const renewal = planRenewal(ctx, {
              subscriptionId: sub.id,
              plan: next,
              seats: sub.seats,
              period,
              walletId: pool,
              customerId: sub.customerId,
            });
            if (!renewal.ok) return renewal;
            if (renewal.value.grant && !renewal.value.lapsed) {
              const issued = issueGrant(ctx, sub.customerId, managed(next, renewal.value.grant));
              if (!issued.ok) return issued;
              grantId = issued.value.newGrants[0]?.id ?? null;
              effects.push(issued.value);
            }
          }
          // Overage at the renewal (storage/overage.ts): a priced soft cap bills what the closing
          // period left owed; carry deficit repays what is owed from the new plan credits.
          const planned = combine(...effects);
          const overage = await planRenewalOverage(ex, ctx, {
            tenantId,
            poolWalletId: pool,
            closesPeriod: index > 0,
            periodEnd: period.from,
            renewalKey: key,
            newGrants: planned.newGrants.filter((g) => g.source === "plan"),
          });
          if (!overage.ok) return overage;
          invoice = overage.value.invoice;
          return ok({ ...planned, transactions: [...planned.transactions, ...overage.value.transactions] });
        });
        if (!r.ok) return r;
        const billed = invoice as PlannedInvoice | null;
        if (billed) await insertInvoice(ex, this.store, tenantId, billed);
        // A downgrade in force from this period brings its plan's overage policy.
        if (next.id !== plan.id) await applyPlanOverage(ex, tenantId, pool, next);
        await ex.query("UPDATE subscription_renewals SET grant_id = $3 WHERE tenant_id = $1 AND key = $2", [
          tenantId,
          key,
          grantId,
        ]);
        if (split.length > 0) {
          const personalGrant = new Map(
            r.value.newGrants
              .filter((g) => g.source === "plan" && g.walletId !== pool)
              .map((g) => [g.walletId, g.id] as const),
          );
          await ex.query(
            `UPDATE member_allocations a SET personal = d.personal, pool = d.pool, personal_grant_id = d.grant_id, pool_grant_id = $4
             FROM unnest($5::text[], $6::numeric[], $7::numeric[], $8::text[]) AS d(wallet_id, personal, pool, grant_id)
             WHERE a.tenant_id = $1 AND a.subscription_id = $2 AND a.period_index = $3 AND a.wallet_id = d.wallet_id`,
            [
              tenantId,
              sub.id,
              index,
              grantId,
              split.map((m) => m.walletId),
              split.map((m) => m.personal.toString()),
              split.map((m) => m.pool.toString()),
              split.map((m) => personalGrant.get(m.walletId) ?? null),
            ],
          );
        }
        if (!closing) {
          await this.store.emit(ex, tenantId, "subscription.renewed", {
            subscription_id: sub.id,
            customer_id: sub.customerId,
            plan_id: next.id,
            period_index: index,
            period_start: iso(period.from),
            period_end: iso(period.to),
            grant_id: grantId,
          });
        }
        renewed++;
      }
      const nextAt = closing ? null : period.to;
      await ex.query(
        `UPDATE subscriptions SET renewed_through = $3, granted_seats = CASE WHEN $5 THEN granted_seats ELSE seats END,
           next_renewal_at = $4, plan_id = $6, pending_plan_id = CASE WHEN $5 THEN pending_plan_id ELSE NULL END
         WHERE tenant_id = $1 AND id = $2`,
        [
          tenantId,
          sub.id,
          closing ? sub.renewedThrough : index,
          nextAt === null ? null : iso(nextAt),
          closing,
          next.id,
        ],
      );
      sub = (await this.getSubscription(tenantId, sub.id, ex))!;
      plan = next;
    }
    return ok(renewed);
  }

  /** How many member wallets were allocated a period (with its renewal or on joining). */
  async #allocatedMembers(ex: SqlExecutor, tenantId: string, subscriptionId: string, index: number) {
    const { rows } = await ex.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM member_allocations WHERE tenant_id = $1 AND subscription_id = $2 AND period_index = $3",
      [tenantId, subscriptionId, index],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * The closing period's rollover as one balanced `rollover` transaction: each expiring credit
   * leaves its grant; what the policy carries enters a new rollover grant (linked to its source,
   * expiring with the next period), the rest goes to breakage. A canceled subscription carries
   * nothing. The expiring grants leave `active` here, once.
   *
   * Under a per-member plan the rollover is planned wallet by wallet: each member wallet and
   * the pool carry their own credits, capped against their own period allotment
   * ({@link memberRolloverBase}); credits never move between wallets.
   */
  #rollover(
    ctx: Context,
    sub: SubscriptionRecord,
    plan: PlanRecord,
    grants: ReadonlyMap<string, Grant>,
    periodEnd: number,
    nextPeriodEnd: number,
    closing: boolean,
    wallets: { pool: string; members: number },
  ): Result<Effect> {
    const expiring = this.#ownGrants(grants, sub.id).filter(
      (g) => g.expiresAt === periodEnd && g.metadata[ROLLOVER_EXPIRY.key] === ROLLOVER_EXPIRY.value,
    );
    if (expiring.length === 0) return ok(EMPTY);
    const groups = new Map<string, RolloverCandidate[]>();
    const perWallet = plan.allocation.mode === "per_member";
    for (const g of expiring) {
      const c = rolloverCandidate(g);
      if (!c.ok) return c;
      const group = perWallet ? g.walletId : "";
      groups.set(group, [...(groups.get(group) ?? []), c.value]);
    }
    const lines: RolloverLine[] = [];
    let lapsed = false;
    for (const [walletId, candidates] of [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const base = !perWallet
        ? { allotment: plan.allotment, seats: plan.perSeat ? sub.grantedSeats : 1 }
        : {
            allotment: memberRolloverBase(
              plan,
              walletId === wallets.pool ? "pool" : "member",
              wallets.members,
            ),
            seats: 1,
          };
      const planned = planRollover(ctx, {
        policy: closing ? { kind: "none" } : plan.rollover,
        ...base,
        periodEnd,
        nextPeriodEnd,
        expiringGrants: candidates,
      });
      if (!planned.ok) return planned;
      lines.push(...planned.value.lines);
      lapsed = planned.value.lapsed;
    }
    const entries = [];
    const newGrants: Grant[] = [];
    let breakage = 0n;
    for (const line of lines) {
      if (line.remaining > 0n)
        entries.push(entry(grantAccount(line.grantId, line.walletId), -line.remaining));
      breakage += line.breakage;
      if (line.rollover && line.carried > 0n && !lapsed) {
        const fields = validateGrantInput(
          { ...ctx, now: Math.min(ctx.now, periodEnd) },
          managed(plan, line.rollover),
        );
        if (!fields.ok) return fields;
        const grant: Grant = { ...fields.value, id: ctx.newId("grt"), createdAt: ctx.now };
        newGrants.push(grant);
        entries.push(entry(grantAccount(grant.id, grant.walletId), line.carried));
      } else breakage += line.carried;
    }
    if (breakage > 0n) entries.push(entry({ kind: "system", name: "breakage" }, breakage));
    const transactions =
      entries.length >= 2
        ? [
            {
              id: ctx.newId("txn"),
              kind: "rollover" as const,
              customerId: sub.customerId,
              postedAt: ctx.now,
              reason: closing ? "subscription ended" : `rollover: ${plan.rollover.kind}`,
              reversesId: null,
              action: null,
              entries,
            },
          ]
        : [];
    return ok({
      transactions,
      newGrants,
      statusChanges: expiring.map((g) => ({ grantId: g.id, status: "expired" as const })),
      grantChanges: [],
    });
  }

  // ------------------------------------------------------------------ the scheduler's job

  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const { rows } = await this.store.db.query<{ at: unknown }>(
      "SELECT min(next_renewal_at) AS at FROM subscriptions WHERE tenant_id = $1 AND next_renewal_at <= $2",
      [tenantId, iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /** Renews what is due, subscription by subscription, each in its own transaction under its row lock. */
  async run(tenantId: string | null): Promise<number> {
    let renewed = 0;
    for (;;) {
      const { rows } = await this.store.db.query<{ tenant_id: string; id: string }>(
        `SELECT s.tenant_id, s.id FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.next_renewal_at <= coalesce(t.clock_at, $1::timestamptz) AND ($2::text IS NULL OR s.tenant_id = $2)
         ORDER BY s.next_renewal_at LIMIT 100`,
        [iso(this.store.now()), tenantId],
      );
      const before = renewed;
      for (const r of rows) {
        await this.store.clockOf(r.tenant_id);
        const n = await this.store.db.transaction(async (tx) => {
          const sub = await this.#lock(tx, r.tenant_id, r.id);
          if (!sub) return 0;
          const plan = (await this.getPlan(r.tenant_id, sub.planId, tx))!;
          const done = await this.#renew(tx, r.tenant_id, sub, plan);
          return done.ok ? done.value : 0;
        });
        renewed += n;
      }
      // Stop when the page was the last, or when nothing moved (never spin on a stuck one).
      if (rows.length < 100 || renewed === before) return renewed;
    }
  }
}

const EMPTY: Effect = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };
