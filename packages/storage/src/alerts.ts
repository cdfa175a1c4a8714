import {
  ALERT_KINDS,
  type AlertKind,
  type AlertLevel,
  type AlertRule,
  alertRuleKey,
  alertRuleWire,
  BALANCE_ALERT_KINDS,
  DEFAULT_ALERT_RULES,
  evaluateAlerts,
  formatAmount,
  invariant,
  ok,
  percentRemaining,
  type Result,
  validateAlertRules,
} from "@drawdown/core";
import { type Page, paginate } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

/**
 * Alerts: rules per wallet (the defaults until a wallet sets its own), evaluated in the same
 * transaction as every balance change, each firing once per crossing and re-arming after
 * recovery; `expiring_soon` by the scheduler; `spend_cap_reached` and `auto_top_up_failed`
 * fired by their features through {@link fireAlert}. Every alert is recorded (GET /v1/alerts)
 * and emitted as an `alert.triggered` event through the outbox.
 */

/** A fired alert. */
export interface AlertRecord {
  readonly id: string;
  readonly walletId: string;
  readonly customerId: string;
  readonly kind: AlertKind;
  /** The rule that fired (balance and expiry rules), or the caller's key; null when none. */
  readonly ruleKey: string | null;
  /** What the alert is about: amounts as decimal strings (see docs/concepts.md). */
  readonly details: Readonly<Record<string, unknown>>;
  /** The outbox event that carries it (`alert.triggered`). */
  readonly eventId: string;
  readonly firedAt: number;
}

/** A wallet's rules, and whether they are the defaults. */
export interface WalletAlertRules {
  readonly walletId: string;
  readonly rules: readonly AlertRule[];
  readonly defaults: boolean;
}

const iso = (t: number): string => new Date(t).toISOString();
const ms = (v: unknown): number => (v instanceof Date ? v.getTime() : new Date(String(v)).getTime());
const json = (v: unknown): unknown => (typeof v === "string" ? JSON.parse(v) : v);

/** Rules as stored: JSON with amounts as unit strings. */
const rulesJson = (rules: readonly AlertRule[]): string =>
  JSON.stringify(
    rules.map((r) => (r.kind === "amount_remaining" ? { ...r, amount: r.amount.toString() } : r)),
  );

const rulesFrom = (v: unknown): AlertRule[] =>
  (json(v) as Record<string, unknown>[]).map((r) =>
    r.kind === "amount_remaining"
      ? { kind: "amount_remaining", amount: BigInt(String(r.amount)) }
      : (r as unknown as AlertRule),
  );

const toAlert = (r: Row): AlertRecord => ({
  id: String(r.id),
  walletId: String(r.wallet_id),
  customerId: String(r.customer_id),
  kind: r.kind as AlertKind,
  ruleKey: r.rule_key === null ? null : String(r.rule_key),
  details: json(r.details) as Record<string, unknown>,
  eventId: String(r.event_id),
  firedAt: ms(r.fired_at),
});

/** The largest percent among the default rules: below it a wallet on the defaults may fire. */
const DEFAULT_WATERMARK = (() => {
  // The hot path's filter assumes the defaults are percent rules and `exhausted` only.
  invariant(
    DEFAULT_ALERT_RULES.every((r) => r.kind === "percent_remaining" || r.kind === "exhausted"),
    "default alert rules are percent_remaining or exhausted",
  );
  return Math.max(0, ...DEFAULT_ALERT_RULES.map((r) => (r.kind === "percent_remaining" ? r.percent : 0)));
})();

/** Days of the default expiring_soon rule, or null when the defaults have none. */
const DEFAULT_EXPIRING_DAYS = (() => {
  const r = (DEFAULT_ALERT_RULES as readonly AlertRule[]).find((x) => x.kind === "expiring_soon");
  return r?.kind === "expiring_soon" ? r.days : null;
})();

/** A wallet's available now (see the core's alerts module): its drawable grants' remaining, minus its overdraft. */
const AVAILABLE = `
  LEFT JOIN LATERAL (
    SELECT sum(remaining) AS available, sum(amount) AS holding FROM grants
    WHERE tenant_id = w.tenant_id AND wallet_id = w.id AND status = 'active' AND remaining > 0
      AND effective_at <= $3 AND (expires_at IS NULL OR expires_at > $3)
  ) g ON true`;

/**
 * Evaluates the balance rules of wallets whose balance just changed, in the caller's
 * transaction (which holds their locks): fires the rules that crossed, re-arms those that
 * recovered. Wallets `credited` (that received a grant) first take their new available as
 * their reference. One query then reads every wallet's level, rules and fired
 * state, and returns only the wallets where something may change: those with their own rules,
 * with a fired rule, or below the defaults' highest threshold; a healthy wallet on the
 * defaults costs nothing more. Returns the alerts fired. Storage-internal: `Store.writeEffect`
 * calls it.
 */
export async function evaluateWalletAlerts(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  walletIds: readonly string[],
  credited: readonly string[],
): Promise<AlertRecord[]> {
  if (walletIds.length === 0) return [];
  const now = iso(store.now(tenantId));
  if (credited.length > 0) {
    await ex.query(
      `INSERT INTO alert_references (tenant_id, wallet_id, reference, updated_at)
       SELECT w.tenant_id, w.id, greatest(coalesce(g.available, 0) - w.overdraft, 0), $3 FROM wallets w ${AVAILABLE}
       WHERE w.tenant_id = $1 AND w.id = ANY($2::text[])
       ON CONFLICT (tenant_id, wallet_id) DO UPDATE SET reference = excluded.reference, updated_at = excluded.updated_at`,
      [tenantId, credited, now],
    );
  }
  const { rows } = await ex.query(
    `SELECT w.id, (coalesce(g.available, 0) - w.overdraft)::text AS available,
       coalesce(x.reference, g.holding, 0)::text AS reference, r.rules, s.fired
     FROM wallets w ${AVAILABLE}
     LEFT JOIN alert_references x ON x.tenant_id = w.tenant_id AND x.wallet_id = w.id
     LEFT JOIN wallet_alert_rules r ON r.tenant_id = w.tenant_id AND r.wallet_id = w.id
     LEFT JOIN LATERAL (
       SELECT array_agg(key) AS fired FROM alert_states
       WHERE tenant_id = w.tenant_id AND wallet_id = w.id AND kind = ANY($5::text[])
     ) s ON true
     WHERE w.tenant_id = $1 AND w.id = ANY($2::text[])
       AND (r.wallet_id IS NOT NULL OR s.fired IS NOT NULL
            OR (coalesce(g.available, 0) - w.overdraft) * 100 <= $4 * coalesce(x.reference, g.holding, 0))
     ORDER BY w.id`,
    [tenantId, walletIds, now, DEFAULT_WATERMARK, [...BALANCE_ALERT_KINDS]],
  );
  const fired: AlertRecord[] = [];
  for (const r of rows) {
    const walletId = String(r.id);
    const level: AlertLevel = {
      available: BigInt(String(r.available)),
      reference: BigInt(String(r.reference)),
    };
    const rules = r.rules === null || r.rules === undefined ? DEFAULT_ALERT_RULES : rulesFrom(r.rules);
    const decision = evaluateAlerts(rules, new Set((r.fired as string[] | null) ?? []), level);
    if (decision.rearm.length > 0) {
      await ex.query(
        "DELETE FROM alert_states WHERE tenant_id = $1 AND wallet_id = $2 AND key = ANY($3::text[])",
        [tenantId, walletId, decision.rearm],
      );
    }
    for (const rule of decision.fire) {
      const alert = await fireAlert(ex, store, {
        tenantId,
        walletId,
        kind: rule.kind as AlertKind,
        key: alertRuleKey(rule),
        details: {
          rule: alertRuleWire(rule),
          available: formatAmount(level.available),
          reference: formatAmount(level.reference),
          percent_remaining: percentRemaining(level),
        },
      });
      if (alert) fired.push(alert);
    }
  }
  return fired;
}

/**
 * Fires an alert on a wallet in the caller's transaction: records it and emits
 * `alert.triggered` through the outbox. The hook for features that detect their own
 * conditions (a spend cap reached, an auto top-up that failed):
 *
 *     await fireAlert(tx, store, { tenantId, walletId, kind: "spend_cap_reached",
 *       key: `spend_cap:${capId}:${periodStart}`, details: { cap_id: capId, cap: "100" } });
 *
 * With `key`, it fires once until {@link rearmAlert} is called with the same key (the
 * "once per crossing" of every alert); without, every call fires. Returns the alert, or null
 * when the key had fired and not re-armed. `details` values should be JSON (amounts as
 * decimal strings).
 */
export async function fireAlert(
  ex: SqlExecutor,
  store: Store,
  input: {
    readonly tenantId: string;
    readonly walletId: string;
    readonly kind: AlertKind;
    readonly details?: Readonly<Record<string, unknown>>;
    readonly key?: string | null;
  },
): Promise<AlertRecord | null> {
  invariant((ALERT_KINDS as readonly string[]).includes(input.kind), `unknown alert kind ${input.kind}`);
  const { tenantId, walletId, kind } = input;
  const now = store.now(tenantId);
  const id = store.newId("alr");
  const key = input.key ?? null;
  if (key !== null) {
    const armed = await ex.query(
      `INSERT INTO alert_states (tenant_id, wallet_id, key, kind, alert_id, fired_at) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT DO NOTHING RETURNING key`,
      [tenantId, walletId, key, kind, id, iso(now)],
    );
    if (armed.rowCount === 0) return null;
  }
  const w = await ex.query("SELECT customer_id, member_id FROM wallets WHERE tenant_id = $1 AND id = $2", [
    tenantId,
    walletId,
  ]);
  invariant(w.rows[0], `wallet ${walletId} exists`);
  const customerId = String(w.rows[0].customer_id);
  const memberId = w.rows[0].member_id === null ? null : String(w.rows[0].member_id);
  const details = input.details ?? {};
  const eventId = await store.emit(ex, tenantId, "alert.triggered", {
    alert_id: id,
    kind,
    wallet_id: walletId,
    customer_id: customerId,
    ...(memberId === null ? {} : { member_id: memberId }),
    fired_at: iso(now),
    ...details,
  });
  await ex.query(
    `INSERT INTO alerts (tenant_id, id, wallet_id, customer_id, kind, rule_key, details, event_id, fired_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [tenantId, id, walletId, customerId, kind, key, JSON.stringify(details), eventId, iso(now)],
  );
  return { id, walletId, customerId, kind, ruleKey: key, details, eventId, firedAt: now };
}

/** Re-arms an alert fired with `key` (see {@link fireAlert}): the next crossing fires again. */
export async function rearmAlert(
  ex: SqlExecutor,
  tenantId: string,
  walletId: string,
  key: string,
): Promise<boolean> {
  const { rowCount } = await ex.query(
    "DELETE FROM alert_states WHERE tenant_id = $1 AND wallet_id = $2 AND key = $3",
    [tenantId, walletId, key],
  );
  return rowCount > 0;
}

/**
 * Rule management, the alert list, and the scheduled `expiring_soon` check (a job of the
 * store's scheduler and test clock): a grant holding credits whose expiry comes within the
 * rule's days is noticed once per grant and expiry time, whatever the number of instances.
 */
export class Alerts implements DueJob {
  constructor(private readonly store: Store) {
    store.addDueJob(this);
  }

  /** A wallet's rules (the defaults when it set none); null when there is no such wallet. */
  async rules(
    tenantId: string,
    walletId: string,
    ex: SqlExecutor = this.store.db,
  ): Promise<WalletAlertRules | null> {
    const { rows } = await ex.query(
      `SELECT w.id, r.rules FROM wallets w LEFT JOIN wallet_alert_rules r ON r.tenant_id = w.tenant_id AND r.wallet_id = w.id
       WHERE w.tenant_id = $1 AND w.id = $2`,
      [tenantId, walletId],
    );
    const r = rows[0];
    if (!r) return null;
    const own = r.rules !== null && r.rules !== undefined;
    return { walletId, rules: own ? rulesFrom(r.rules) : DEFAULT_ALERT_RULES, defaults: !own };
  }

  /**
   * Sets a wallet's rules (replacing the list; an empty list: no alerts), or with null goes
   * back to the defaults. A rule kept keeps its armed state; state of a rule removed is dropped.
   * The new rules are evaluated at the next balance change.
   */
  async setRules(
    ex: SqlExecutor,
    tenantId: string,
    walletId: string,
    rules: readonly AlertRule[] | null,
  ): Promise<Result<WalletAlertRules>> {
    const wallet = await ex.query("SELECT id FROM wallets WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
      tenantId,
      walletId,
    ]);
    if (wallet.rowCount === 0)
      return { ok: false, error: { code: "not_found", message: `No wallet ${walletId}.` } };
    let list: readonly AlertRule[] = DEFAULT_ALERT_RULES;
    if (rules === null) {
      await ex.query("DELETE FROM wallet_alert_rules WHERE tenant_id = $1 AND wallet_id = $2", [
        tenantId,
        walletId,
      ]);
    } else {
      const checked = validateAlertRules(rules);
      if (!checked.ok) return checked;
      list = checked.value;
      const expiring = list.find((r) => r.kind === "expiring_soon");
      await ex.query(
        `INSERT INTO wallet_alert_rules (tenant_id, wallet_id, rules, expiring_days, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, wallet_id) DO UPDATE SET rules = excluded.rules, expiring_days = excluded.expiring_days,
           updated_at = excluded.updated_at`,
        [
          tenantId,
          walletId,
          rulesJson(list),
          expiring?.kind === "expiring_soon" ? expiring.days : null,
          iso(this.store.now(tenantId)),
        ],
      );
    }
    const keys = list.filter((r) => r.kind !== "expiring_soon").map(alertRuleKey);
    await ex.query(
      `DELETE FROM alert_states WHERE tenant_id = $1 AND wallet_id = $2 AND kind = ANY($3::text[]) AND NOT (key = ANY($4::text[]))`,
      [tenantId, walletId, [...BALANCE_ALERT_KINDS], keys],
    );
    return ok({ walletId, rules: list, defaults: rules === null });
  }

  /** Fired alerts, newest first, filtered by wallet, customer and kind. */
  async list(
    tenantId: string,
    filter: { walletId?: string | null; customerId?: string | null; kind?: string | null },
    page: { after?: string | null; limit: number },
  ): Promise<Page<AlertRecord>> {
    const { rows } = await this.store.db.query(
      `SELECT * FROM alerts WHERE tenant_id = $1 AND ($2::text IS NULL OR wallet_id = $2)
       AND ($3::text IS NULL OR customer_id = $3) AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR id < $5)
       ORDER BY id DESC LIMIT $6`,
      [
        tenantId,
        filter.walletId ?? null,
        filter.customerId ?? null,
        filter.kind ?? null,
        page.after ?? null,
        page.limit + 1,
      ],
    );
    return paginate(rows.map(toAlert), page.limit, (x) => x.id);
  }

  // ------------------------------------------------------------------ expiring soon (scheduled)

  /** Grants due for an expiring-soon notice: the SQL shared by nextDue and run. */
  static readonly #DUE = `
    FROM grants g
    LEFT JOIN wallet_alert_rules r ON r.tenant_id = g.tenant_id AND r.wallet_id = g.wallet_id
    CROSS JOIN LATERAL (SELECT CASE WHEN r.wallet_id IS NULL THEN $2::int ELSE r.expiring_days END AS days) d
    WHERE g.status = 'active' AND g.remaining > 0 AND g.expires_at IS NOT NULL AND d.days IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM alert_expiry_notices n
                      WHERE n.tenant_id = g.tenant_id AND n.grant_id = g.id AND n.expires_at = g.expires_at)`;

  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const { rows } = await this.store.db.query(
      `SELECT min(g.expires_at - make_interval(days => d.days)) AS at ${Alerts.#DUE}
         AND g.tenant_id = $1 AND g.expires_at - make_interval(days => d.days) <= $3`,
      [tenantId, DEFAULT_EXPIRING_DAYS, iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : ms(at);
  }

  /**
   * Notices every grant whose expiry window has begun (each tenant by its own clock): records
   * the notice (its key makes it once per grant and expiry) and fires `expiring_soon` on the
   * grant's wallet, unless the grant has expired meanwhile (a catch-up after downtime).
   */
  async run(tenantId: string | null): Promise<number> {
    let fired = 0;
    for (;;) {
      const { rows } = await this.store.db.query(
        `SELECT g.tenant_id, g.id, g.wallet_id, g.customer_id, g.expires_at, g.remaining::text AS remaining, d.days
         ${Alerts.#DUE}
           AND ($1::text IS NULL OR g.tenant_id = $1)
           AND g.expires_at - make_interval(days => d.days) <= coalesce((SELECT clock_at FROM tenants t WHERE t.id = g.tenant_id), $3::timestamptz)
         ORDER BY g.expires_at LIMIT 200`,
        [tenantId, DEFAULT_EXPIRING_DAYS, iso(this.store.now())],
      );
      for (const r of rows) {
        const tenant = String(r.tenant_id);
        await this.store.clockOf(tenant);
        const expiresAt = ms(r.expires_at);
        const done = await this.store.db.transaction(async (tx) => {
          const noticed = await tx.query(
            `INSERT INTO alert_expiry_notices (tenant_id, grant_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING grant_id`,
            [tenant, String(r.id), iso(expiresAt)],
          );
          if (noticed.rowCount === 0 || expiresAt <= this.store.now(tenant)) return 0;
          const days = Number(r.days);
          const alert = await fireAlert(tx, this.store, {
            tenantId: tenant,
            walletId: String(r.wallet_id),
            kind: "expiring_soon",
            key: null,
            details: {
              rule: { kind: "expiring_soon", days },
              grant_id: String(r.id),
              expires_at: iso(expiresAt),
              remaining: formatAmount(BigInt(String(r.remaining))),
            },
          });
          await tx.query(
            "UPDATE alert_expiry_notices SET alert_id = $4 WHERE tenant_id = $1 AND grant_id = $2 AND expires_at = $3",
            [tenant, String(r.id), iso(expiresAt), alert?.id ?? null],
          );
          return 1;
        });
        fired += done;
      }
      if (rows.length < 200) return fired;
    }
  }
}

/** The alert kinds as a list (for schemas). */
export const ALERT_KIND_NAMES: readonly AlertKind[] = ALERT_KINDS;
