import { accountName, formatAmount, formatTimestamp } from "@drawdown/core";
import type {
  ApiKey,
  Balance,
  Customer,
  GrantRecord,
  ReconcileReport,
  Subject,
  TransactionRecord,
  WalletRecord,
} from "@drawdown/storage";

/** Records to wire objects: snake_case, amounts as decimal strings, times as RFC 3339. */

const time = (ms: number | null): string | null => (ms === null ? null : formatTimestamp(ms));

export const customerView = (c: Customer) => ({
  object: "customer" as const,
  id: c.id,
  external_id: c.externalId,
  kind: c.kind,
  name: c.name,
  metadata: c.metadata,
  wallet_id: c.walletId,
  created_at: formatTimestamp(c.createdAt),
});

export const subjectView = (s: Subject) => ({
  object: "subject" as const,
  id: s.id,
  customer_id: s.customerId,
  kind: s.kind,
  external_id: s.externalId,
  name: s.name,
  metadata: s.metadata,
  created_at: formatTimestamp(s.createdAt),
});

export const walletView = (w: WalletRecord) => ({
  object: "wallet" as const,
  id: w.id,
  customer_id: w.customerId,
  member_id: w.memberId,
  balance: formatAmount(w.balance),
  created_at: formatTimestamp(w.createdAt),
});

/** A grant's status as a reader needs it: the stored one, refined by time and remaining. */
export function grantStatus(
  g: GrantRecord,
  now: number,
): "active" | "pending" | "depleted" | "expired" | "voided" {
  if (g.status !== "active") return g.status;
  if (g.expiresAt !== null && g.expiresAt <= now) return "expired";
  if (g.remaining === 0n) return "depleted";
  if (g.effectiveAt > now) return "pending";
  return "active";
}

export const grantView = (g: GrantRecord, now: number) => ({
  object: "grant" as const,
  id: g.id,
  wallet_id: g.walletId,
  customer_id: g.customerId,
  amount: formatAmount(g.amount),
  remaining: formatAmount(g.remaining),
  source: g.source,
  cost_basis: formatAmount(g.costBasis),
  currency: g.currency,
  effective_at: formatTimestamp(g.effectiveAt),
  expires_at: time(g.expiresAt),
  priority: g.priority,
  scope: g.scope === null ? null : [...g.scope],
  metadata: g.metadata,
  status: grantStatus(g, now),
  status_changed_at: time(g.statusAt),
  created_at: formatTimestamp(g.createdAt),
});

export const transactionView = (t: TransactionRecord) => ({
  object: "transaction" as const,
  id: t.id,
  kind: t.kind,
  customer_id: t.customerId,
  posted_at: formatTimestamp(t.postedAt),
  reason: t.reason,
  action: t.action,
  reverses_id: t.reversesId,
  entries: t.entries.map((e) => ({
    account: accountName(e.account),
    wallet_id: e.account.kind === "system" ? null : e.account.walletId,
    grant_id: e.account.kind === "grant" ? e.account.grantId : null,
    unit: e.unit,
    amount: formatAmount(e.amount),
  })),
});

export const balanceView = (b: Balance, now: number) => ({
  object: "balance" as const,
  wallet_id: b.walletId,
  customer_id: b.customerId,
  member_id: b.memberId,
  total: formatAmount(b.total),
  available: formatAmount(b.available),
  upcoming: formatAmount(b.upcoming),
  held: formatAmount(b.held),
  expired: formatAmount(b.expired),
  as_of: formatTimestamp(now),
  grants: b.grants.map((g) => ({
    id: g.id,
    source: g.source,
    remaining: formatAmount(g.remaining),
    priority: g.priority,
    scope: g.scope === null ? null : [...g.scope],
    effective_at: formatTimestamp(g.effectiveAt),
    expires_at: time(g.expiresAt),
    status: grantStatus(g, now),
  })),
  scopes: b.scopes.map((s) => ({
    scope: s.scope === null ? null : [...s.scope],
    available: formatAmount(s.available),
  })),
  pool: b.pool === null ? null : { wallet_id: b.pool.walletId, available: formatAmount(b.pool.available) },
  spendable: formatAmount(b.available + (b.pool?.available ?? 0n)),
});

export const reconcileView = (r: ReconcileReport) => ({
  object: "reconcile_report" as const,
  ok: r.differences.length === 0,
  wallets: r.wallets,
  grants: r.grants,
  transactions: r.transactions,
  differences: r.differences.map((d) => ({ kind: d.kind, id: d.id, message: d.message })),
});

export const apiKeyView = (k: ApiKey, secret?: string) => ({
  object: "api_key" as const,
  id: k.id,
  kind: k.kind,
  customer_id: k.customerId,
  name: k.name,
  prefix: k.prefix,
  created_at: formatTimestamp(k.createdAt),
  revoked_at: time(k.revokedAt),
  ...(secret ? { secret } : {}),
});

export const listView = <T>(data: T[], next: string | null) => ({
  object: "list" as const,
  data,
  next_cursor: next === null ? null : Buffer.from(next).toString("base64url"),
});
