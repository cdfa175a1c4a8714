import type { Account, Entry, JournalTransaction } from "./model.js";
import { invariant } from "./result.js";

/** An account that names a wallet's grant. */
export const grantAccount = (grantId: string, walletId: string): Account => ({
  kind: "grant",
  grantId,
  walletId,
});

/** A credit entry on an account. */
export const entry = (account: Account, amount: bigint): Entry => ({ account, amount, unit: "credit" });

/** Sum of entries per unit. A balanced transaction has every sum equal to zero. */
export function sumsPerUnit(entries: readonly Entry[]): Map<string, bigint> {
  const sums = new Map<string, bigint>();
  for (const e of entries) sums.set(e.unit, (sums.get(e.unit) ?? 0n) + e.amount);
  return sums;
}

/** True when every unit's entries sum to zero and no entry is zero (invariant 1). */
export function isBalanced(entries: readonly Entry[]): boolean {
  if (entries.length < 2) return false;
  if (entries.some((e) => e.amount === 0n)) return false;
  for (const sum of sumsPerUnit(entries).values()) if (sum !== 0n) return false;
  return true;
}

/** Asserts invariant 1 on a transaction about to be written; a failure is a bug. */
export function assertBalanced(tx: JournalTransaction): void {
  invariant(isBalanced(tx.entries), `transaction ${tx.id} (${tx.kind}) does not balance`);
}

/** Net change per wallet: the sum of the transaction's entries on that wallet's grants and overdraft. */
export function walletDeltas(entries: readonly Entry[]): Map<string, bigint> {
  const deltas = new Map<string, bigint>();
  for (const e of entries) {
    if (e.account.kind !== "system")
      deltas.set(e.account.walletId, (deltas.get(e.account.walletId) ?? 0n) + e.amount);
  }
  return deltas;
}

/** Net change of each wallet's overdraft account (negative: more owed). */
export function overdraftDeltas(entries: readonly Entry[]): Map<string, bigint> {
  const deltas = new Map<string, bigint>();
  for (const e of entries) {
    if (e.account.kind === "overdraft")
      deltas.set(e.account.walletId, (deltas.get(e.account.walletId) ?? 0n) + e.amount);
  }
  return deltas;
}

/**
 * Wallets whose grants receive credits in these entries (a hold given back, a reversal): where
 * drawable credits may have grown, apart from new grants.
 */
export function walletsGivenCredits(entries: readonly Entry[]): Set<string> {
  const wallets = new Set<string>();
  for (const e of entries) if (e.account.kind === "grant" && e.amount > 0n) wallets.add(e.account.walletId);
  return wallets;
}

/** Net change per grant: the sum of the transaction's entries on that grant. */
export function grantDeltas(entries: readonly Entry[]): Map<string, bigint> {
  const deltas = new Map<string, bigint>();
  for (const e of entries) {
    if (e.account.kind === "grant")
      deltas.set(e.account.grantId, (deltas.get(e.account.grantId) ?? 0n) + e.amount);
  }
  return deltas;
}

/** A stable text name for an account, as stored: `grant`, `overdraft`, or the system account's name. */
export const accountName = (account: Account): string =>
  account.kind === "system" ? account.name : account.kind;
