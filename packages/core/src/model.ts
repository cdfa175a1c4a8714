/**
 * The ledger's entities as plain data. Times are epoch milliseconds; amounts are units
 * (see {@link ./amount.ts}). Guarantees per entity are written in docs/invariants.md.
 */

/** Produces a new unique id with the given prefix, e.g. `grt_01HZ...`. Injected, never global. */
export type IdGenerator = (prefix: IdPrefix) => string;

/** Id prefixes tell a reader what an id names. */
export type IdPrefix =
  | "ten"
  | "key"
  | "cus"
  | "sub"
  | "wal"
  | "grt"
  | "txn"
  | "chg"
  | "rcd"
  | "rcv"
  | "ctv"
  | "pln"
  | "sbs"
  | "gft"
  | "ctr"
  | "poc"
  | "pbk"
  | "pur"
  | "cmt"
  | "hld"
  | "evt"
  | "whe"
  | "whd"
  | "alr"
  | "run"
  | "ovi"
  | "cap";

/** Where a grant's credits came from. */
export const GRANT_SOURCES = [
  "plan",
  "purchase",
  "top_up",
  "gift",
  "promo",
  "contract",
  "rollover",
  "adjustment",
] as const;
export type GrantSource = (typeof GRANT_SOURCES)[number];

/** A grant's stored state. `depleted` and `pending` are derived, not stored. */
export type GrantStatus = "active" | "voided" | "expired";

/** A credit block held by a wallet. */
export interface Grant {
  readonly id: string;
  readonly walletId: string;
  /** Credits granted, in units; > 0 and never changed. */
  readonly amount: bigint;
  /** Credits left, in units; 0 ≤ remaining ≤ amount (invariant 4). */
  readonly remaining: bigint;
  readonly source: GrantSource;
  /** Money paid per credit, at the same fixed scale as amounts; 0 for free credits. */
  readonly costBasis: bigint;
  /** ISO 4217 code of the cost basis; required when the cost basis is above zero. */
  readonly currency: string | null;
  readonly effectiveAt: number;
  /** Null: never expires. Otherwise strictly after effectiveAt. */
  readonly expiresAt: number | null;
  /** Lower is drawn first; 0–100. */
  readonly priority: number;
  /** Action patterns this grant may pay for; null pays for everything. */
  readonly scope: readonly string[] | null;
  readonly metadata: Readonly<Record<string, string>>;
  readonly status: GrantStatus;
  readonly createdAt: number;
}

/** Who holds a wallet: a customer (its pool) or one member of it. */
export interface Wallet {
  readonly id: string;
  readonly customerId: string;
  /** Null for the customer's own wallet (the pool); a member subject id otherwise. */
  readonly memberId: string | null;
  /** Materialized balance: the sum of its grants' remaining amounts (invariant 3). */
  readonly balance: bigint;
}

/** System accounts, the other side of every movement of credits. */
export const SYSTEM_ACCOUNTS = [
  "issuance",
  "consumption",
  "adjustments",
  "breakage",
  "voided",
  // Overage billed at a price: credits owed that became money owed (an overage invoice).
  "overage_receivable",
] as const;
export type SystemAccount = (typeof SYSTEM_ACCOUNTS)[number];

/**
 * One side of an entry: a grant of a wallet, a wallet's overdraft (credits owed beyond its
 * grants under a soft cap; its entries are negative while owed), a wallet's hold account
 * (credits reserved by its pending holds; positive while held, see core/holds.ts), or a
 * system account.
 */
export type Account =
  | { readonly kind: "grant"; readonly grantId: string; readonly walletId: string }
  | { readonly kind: "overdraft"; readonly walletId: string }
  | { readonly kind: "hold"; readonly walletId: string }
  | { readonly kind: "system"; readonly name: SystemAccount };

/** Units of value a journal can carry. Entries balance per unit. */
export type LedgerUnit = "credit";

/** One line of a journal transaction. Positive adds to the account, negative takes from it. */
export interface Entry {
  readonly account: Account;
  readonly amount: bigint;
  readonly unit: LedgerUnit;
}

/** Why a transaction exists. */
export const TRANSACTION_KINDS = [
  "grant",
  "debit",
  "usage",
  "adjustment.debit",
  "adjustment.credit",
  "void",
  "expire",
  "rollover",
  "reversal",
  "hold",
  "hold.settle",
  "hold.release",
  "overage.bill",
  "overage.repay",
] as const;
export type TransactionKind = (typeof TRANSACTION_KINDS)[number];

/** An immutable, balanced journal transaction (invariants 1 and 2). */
export interface JournalTransaction {
  readonly id: string;
  readonly kind: TransactionKind;
  readonly customerId: string;
  readonly postedAt: number;
  /** Why a person moved credits: required for adjustments, extensions and reversals, optional for voids. */
  readonly reason: string | null;
  /** Set on a reversal: the transaction it undoes. */
  readonly reversesId: string | null;
  /** The action a debit paid for, when there is one. */
  readonly action: string | null;
  readonly entries: readonly Entry[];
}
