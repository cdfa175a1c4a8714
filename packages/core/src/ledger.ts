import { formatAmount, inRange } from "./amount.js";
import { type DrawSource, isDueToExpire, planDraws, SCOPE_PATTERN } from "./burndown.js";
import { assertBalanced, entry, grantAccount, grantDeltas } from "./journal.js";
import type { Entry, Grant, GrantSource, IdGenerator, JournalTransaction, TransactionKind } from "./model.js";
import { fail, invariant, ok, type Result } from "./result.js";

/**
 * The ledger's operations as pure functions: state in, {@link Effect} out.
 * The storage layer loads the locked state, calls one of these, and writes the effect;
 * nothing here reads a clock or makes an id on its own.
 */

/** The clock and id generator every operation is given. */
export interface Context {
  readonly now: number;
  readonly newId: IdGenerator;
}

/** A recorded change to a grant that moves no credits (an expiry extension). */
export interface GrantChange {
  readonly id: string;
  readonly grantId: string;
  /** Extended by a person (never shortened that way), or shortened by a subscription's cancel. */
  readonly kind: "expiry_extended" | "expiry_shortened";
  readonly from: number | null;
  readonly to: number | null;
  readonly reason: string;
  readonly at: number;
}

/**
 * What an operation does, as data. Grant `remaining` and wallet `balance` changes are not
 * listed: they are exactly the transactions' entries, so they cannot disagree with the journal.
 */
export interface Effect {
  readonly transactions: readonly JournalTransaction[];
  readonly newGrants: readonly Grant[];
  readonly statusChanges: readonly { readonly grantId: string; readonly status: "voided" | "expired" }[];
  readonly grantChanges: readonly GrantChange[];
}

const EMPTY: Effect = { transactions: [], newGrants: [], statusChanges: [], grantChanges: [] };

/** Limits on grant fields, shared with the API's validation. */
export const GRANT_LIMITS = {
  priorityMin: 0,
  priorityMax: 100,
  priorityDefault: 50,
  scopeMaxItems: 50,
  metadataMaxKeys: 50,
  metadataKeyMax: 40,
  metadataValueMax: 500,
  reasonMax: 500,
} as const;

/** What a caller supplies to create a grant. */
export interface GrantInput {
  readonly walletId: string;
  readonly amount: bigint;
  readonly source: GrantSource;
  readonly costBasis?: bigint;
  readonly currency?: string | null;
  readonly effectiveAt?: number;
  readonly expiresAt?: number | null;
  readonly priority?: number;
  readonly scope?: readonly string[] | null;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** A new balanced transaction at `ctx.now` (asserts invariant 1: a failure is a bug). */
export function makeTx(
  ctx: Context,
  kind: TransactionKind,
  customerId: string,
  entries: Entry[],
  extra: { reason?: string | null; action?: string | null; reversesId?: string | null } = {},
): JournalTransaction {
  const tx: JournalTransaction = {
    id: ctx.newId("txn"),
    kind,
    customerId,
    postedAt: ctx.now,
    reason: extra.reason ?? null,
    reversesId: extra.reversesId ?? null,
    action: extra.action ?? null,
    entries,
  };
  assertBalanced(tx);
  return tx;
}

function checkReason(reason: string | null | undefined, required: boolean): Result<string | null> {
  if (reason === undefined || reason === null || reason.trim() === "") {
    return required ? fail("invalid_argument", "A reason is required for this change.") : ok(null);
  }
  if (reason.length > GRANT_LIMITS.reasonMax) {
    return fail("invalid_argument", `The reason is longer than ${GRANT_LIMITS.reasonMax} characters.`);
  }
  return ok(reason);
}

/**
 * A time must be whole epoch milliseconds: NaN compares false with everything, so a grant
 * expiring at NaN would never expire and never be drawn.
 */
const isEpochMs = (t: number): boolean => Number.isSafeInteger(t);

/** Validates the fields of a new grant and fills its defaults. */
export function validateGrantInput(ctx: Context, input: GrantInput): Result<Omit<Grant, "id" | "createdAt">> {
  if (input.amount <= 0n || !inRange(input.amount))
    return fail("invalid_amount", "The grant amount must be positive.");
  const costBasis = input.costBasis ?? 0n;
  if (costBasis < 0n || !inRange(costBasis))
    return fail("invalid_amount", "The cost basis must not be negative.");
  const currency = input.currency ?? null;
  if (currency !== null && !/^[A-Z]{3}$/.test(currency)) {
    return fail("invalid_argument", `"${currency}" is not an ISO 4217 currency code such as "USD".`);
  }
  if (costBasis > 0n && currency === null) {
    return fail("invalid_argument", "A grant with a cost basis needs its currency.");
  }
  const effectiveAt = input.effectiveAt ?? ctx.now;
  const expiresAt = input.expiresAt ?? null;
  if (!isEpochMs(effectiveAt) || (expiresAt !== null && !isEpochMs(expiresAt))) {
    return fail("invalid_argument", "effective_at and expires_at must be whole epoch milliseconds.");
  }
  if (expiresAt !== null && expiresAt <= effectiveAt) {
    return fail("invalid_argument", "expires_at must be after effective_at.");
  }
  if (expiresAt !== null && expiresAt <= ctx.now) {
    return fail("invalid_argument", "expires_at is in the past; the grant would be expired on arrival.");
  }
  const priority = input.priority ?? GRANT_LIMITS.priorityDefault;
  if (
    !Number.isInteger(priority) ||
    priority < GRANT_LIMITS.priorityMin ||
    priority > GRANT_LIMITS.priorityMax
  ) {
    return fail(
      "invalid_argument",
      `priority must be an integer from ${GRANT_LIMITS.priorityMin} to ${GRANT_LIMITS.priorityMax}.`,
    );
  }
  const scope = input.scope ?? null;
  if (scope !== null) {
    if (scope.length === 0 || scope.length > GRANT_LIMITS.scopeMaxItems) {
      return fail(
        "invalid_argument",
        `scope lists 1 to ${GRANT_LIMITS.scopeMaxItems} actions, or is null for all.`,
      );
    }
    const bad = scope.find((p) => !SCOPE_PATTERN.test(p));
    if (bad !== undefined) {
      return fail(
        "invalid_argument",
        `"${bad}" is not an action pattern (like "chat.completion" or "image.*").`,
      );
    }
  }
  const metadata = input.metadata ?? {};
  const keys = Object.keys(metadata);
  if (keys.length > GRANT_LIMITS.metadataMaxKeys)
    return fail("invalid_argument", "metadata has too many keys.");
  for (const key of keys) {
    const value = metadata[key];
    if (
      key.length === 0 ||
      key.length > GRANT_LIMITS.metadataKeyMax ||
      typeof value !== "string" ||
      value.length > GRANT_LIMITS.metadataValueMax
    ) {
      return fail(
        "invalid_argument",
        `metadata "${key.slice(0, 40)}" is invalid: keys up to 40 characters, string values up to 500.`,
      );
    }
  }
  return ok({
    walletId: input.walletId,
    amount: input.amount,
    remaining: input.amount,
    source: input.source,
    costBasis,
    currency,
    effectiveAt,
    expiresAt,
    priority,
    scope: scope === null ? null : [...new Set(scope)].sort(),
    metadata,
    status: "active",
  });
}

/**
 * Issues a grant into a wallet: issuance → grant. A credit adjustment is the same movement,
 * recorded as `adjustment.credit` with a required reason and source `adjustment`.
 */
export function issueGrant(
  ctx: Context,
  customerId: string,
  input: GrantInput,
  options: { kind?: "grant" | "adjustment.credit"; reason?: string | null } = {},
): Result<Effect> {
  const kind = options.kind ?? "grant";
  const reason = checkReason(options.reason, kind === "adjustment.credit");
  if (!reason.ok) return reason;
  if ((input.source === "adjustment") !== (kind === "adjustment.credit")) {
    return fail(
      "invalid_argument",
      "Source adjustment is for credit adjustments (with their reason), and only for them.",
    );
  }
  const fields = validateGrantInput(ctx, input);
  if (!fields.ok) return fields;
  const grant: Grant = { ...fields.value, id: ctx.newId("grt"), createdAt: ctx.now };
  // Manual corrections net in `adjustments`, both ways; everything else is issued.
  const counter = kind === "adjustment.credit" ? "adjustments" : "issuance";
  const tx = makeTx(
    ctx,
    kind,
    customerId,
    [
      entry({ kind: "system", name: counter }, -grant.amount),
      entry(grantAccount(grant.id, grant.walletId), grant.amount),
    ],
    { reason: reason.value },
  );
  return ok({ ...EMPTY, transactions: [tx], newGrants: [grant] });
}

/**
 * Expires every active grant whose expiry has passed: the remainder moves to breakage
 * (invariant 7: the status change happens once, so a grant never expires twice).
 */
export function expireDue(ctx: Context, customerId: string, grants: readonly Grant[]): Effect {
  const due = expireDueEntries(grants, ctx.now);
  if (due.grantIds.length === 0) return EMPTY;
  return {
    ...EMPTY,
    transactions: due.entries.length > 0 ? [makeTx(ctx, "expire", customerId, due.entries)] : [],
    statusChanges: due.grantIds.map((grantId) => ({ grantId, status: "expired" as const })),
  };
}

/**
 * The grants due to expire at `now` (in id order) and the entries moving their remainders
 * to breakage (empty when nothing remains).
 */
export function expireDueEntries(
  grants: readonly Grant[],
  now: number,
): { grantIds: string[]; entries: Entry[] } {
  // Plan credits under a rollover policy expire with their period's rollover, not here.
  const due = grants
    .filter((g) => isDueToExpire(g, now) && g.metadata[ROLLOVER_EXPIRY.key] !== ROLLOVER_EXPIRY.value)
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  const entries: Entry[] = [];
  let total = 0n;
  for (const g of due) {
    if (g.remaining > 0n) {
      entries.push(entry(grantAccount(g.id, g.walletId), -g.remaining));
      total += g.remaining;
    }
  }
  if (total > 0n) entries.push(entry({ kind: "system", name: "breakage" }, total));
  return { grantIds: due.map((g) => g.id), entries };
}

function checkActive(grant: Grant, now: number): Result<null> {
  if (grant.status !== "active" || isDueToExpire(grant, now)) {
    const status = grant.status === "active" ? "expired" : grant.status;
    return fail(
      status === "expired" ? "grant_expired" : "grant_inactive",
      `Grant ${grant.id} is ${status}.`,
      {
        grant_id: grant.id,
        status,
      },
    );
  }
  return ok(null);
}

/** Voids an active grant: its remainder moves to the `voided` account and it is never drawn again. */
export function voidGrant(
  ctx: Context,
  customerId: string,
  grant: Grant,
  reason: string | null,
): Result<Effect> {
  const why = checkReason(reason, false);
  if (!why.ok) return why;
  const active = checkActive(grant, ctx.now);
  if (!active.ok) return active;
  const transactions =
    grant.remaining > 0n
      ? [
          makeTx(
            ctx,
            "void",
            customerId,
            [
              entry(grantAccount(grant.id, grant.walletId), -grant.remaining),
              entry({ kind: "system", name: "voided" }, grant.remaining),
            ],
            { reason: why.value },
          ),
        ]
      : [];
  return ok({ ...EMPTY, transactions, statusChanges: [{ grantId: grant.id, status: "voided" }] });
}

/**
 * Moves a grant's expiry later (or removes it, with `null`), as a recorded change.
 * Only an active, unexpired grant can be extended, and never to an earlier time.
 */
export function extendExpiry(
  ctx: Context,
  grant: Grant,
  expiresAt: number | null,
  reason: string,
): Result<Effect> {
  const why = checkReason(reason, true);
  if (!why.ok) return why;
  const active = checkActive(grant, ctx.now);
  if (!active.ok) return active;
  if (expiresAt !== null && !isEpochMs(expiresAt)) {
    return fail("invalid_argument", "expires_at must be whole epoch milliseconds.");
  }
  if (grant.expiresAt === null) {
    return fail("expiry_not_extendable", `Grant ${grant.id} never expires; there is nothing to extend.`);
  }
  if (expiresAt !== null && expiresAt <= grant.expiresAt) {
    return fail(
      "expiry_not_extendable",
      "The new expiry must be later than the current one; expiries are extended, never shortened.",
    );
  }
  const change: GrantChange = {
    id: ctx.newId("chg"),
    grantId: grant.id,
    kind: "expiry_extended",
    from: grant.expiresAt,
    to: expiresAt,
    reason: why.value ?? "",
    at: ctx.now,
  };
  return ok({ ...EMPTY, grantChanges: [change] });
}

/** What a debit asks for. */
export interface DebitInput {
  readonly customerId: string;
  readonly amount: bigint;
  /** The action paid for; scoped grants admit only matching actions. Null: unscoped grants only. */
  readonly action: string | null;
  /** `debit` for usage, `adjustment.debit` for a manual correction (reason required). */
  readonly kind: "debit" | "adjustment.debit";
  readonly reason?: string | null;
  /** Draw only from this grant (for a correction aimed at one grant). */
  readonly grantId?: string | null;
}

/**
 * Debits a wallet by the burn-down order. `sources` is the wallet's own grants, then, for a
 * member's wallet, the customer's pool. Fails with `insufficient_credits` (and changes
 * nothing) when the eligible grants cannot cover the amount: the floor is zero.
 */
export function debit(ctx: Context, sources: readonly DrawSource[], input: DebitInput): Result<Effect> {
  if (input.amount <= 0n || !inRange(input.amount))
    return fail("invalid_amount", "The debit amount must be positive.");
  const why = checkReason(input.reason, input.kind === "adjustment.debit");
  if (!why.ok) return why;
  let from = sources;
  if (input.grantId) {
    const target = input.grantId;
    from = sources
      .map((s) => ({ walletId: s.walletId, grants: s.grants.filter((g) => g.id === target) }))
      .filter((s) => s.grants.length > 0);
    const grant = from[0]?.grants[0];
    if (!grant)
      return fail("wallet_mismatch", `Grant ${target} does not belong to this wallet.`, { grant_id: target });
    const active = checkActive(grant, ctx.now);
    if (!active.ok) return active;
  }
  const plan = planDraws(from, input.amount, input.action, ctx.now);
  if (plan.shortfall > 0n) {
    const available = input.amount - plan.shortfall;
    return fail("insufficient_credits", "The wallet does not hold enough eligible credits for this debit.", {
      requested: formatAmount(input.amount),
      available: formatAmount(available),
    });
  }
  const counter = input.kind === "debit" ? "consumption" : "adjustments";
  const entries: Entry[] = plan.draws.map((d) => entry(grantAccount(d.grantId, d.walletId), -d.amount));
  entries.push(entry({ kind: "system", name: counter }, input.amount));
  const tx = makeTx(ctx, input.kind, input.customerId, entries, { reason: why.value, action: input.action });
  return ok({ ...EMPTY, transactions: [tx] });
}

/**
 * Marks a grant whose expiry is handled by its subscription's rollover (metadata
 * `drawdown_expiry: rollover`): expiry on touch and the expiry scheduler leave it to the
 * period's renewal, which carries part of it forward and expires the rest in one transaction.
 * It is not drawable after its expiry either way. Extending its expiry removes the mark: the
 * grant then no longer ends with its period, so the rollover would never take it, and it
 * expires at its new time like any grant.
 */
export const ROLLOVER_EXPIRY = { key: "drawdown_expiry", value: "rollover" } as const;

/** Kinds a reversal may undo: debits. Grants are voided instead; a reversal is final. */
export const REVERSIBLE_KINDS: readonly TransactionKind[] = ["debit", "adjustment.debit"];

/**
 * Reverses a debit with a new transaction of negated entries (invariant 2: the original
 * stays). Credits return to the same grants, which must still be active and unexpired.
 */
export function reverse(
  ctx: Context,
  original: JournalTransaction,
  grants: ReadonlyMap<string, Grant>,
  alreadyReversed: boolean,
  reason: string,
): Result<Effect> {
  const why = checkReason(reason, true);
  if (!why.ok) return why;
  if (!REVERSIBLE_KINDS.includes(original.kind)) {
    return fail(
      "transaction_not_reversible",
      `A ${original.kind} transaction cannot be reversed${original.kind === "grant" ? "; void the grant instead" : ""}.`,
    );
  }
  if (alreadyReversed)
    return fail("transaction_already_reversed", `Transaction ${original.id} is already reversed.`);
  for (const [grantId, delta] of grantDeltas(original.entries)) {
    const grant = grants.get(grantId);
    invariant(grant, `grant ${grantId} of transaction ${original.id} was not loaded`);
    const active = checkActive(grant, ctx.now);
    if (!active.ok) return active;
    invariant(grant.remaining - delta <= grant.amount, `reversal would overfill grant ${grantId}`);
  }
  const entries = original.entries.map((e) => ({ ...e, amount: -e.amount }));
  const tx = makeTx(ctx, "reversal", original.customerId, entries, {
    reason: why.value,
    reversesId: original.id,
    action: original.action,
  });
  return ok({ ...EMPTY, transactions: [tx] });
}

/**
 * Applies an effect to a set of grants, returning the new states. The storage layer does the
 * same with SQL; the model tests use this to compare the two.
 */
export function applyEffect(grants: ReadonlyMap<string, Grant>, effect: Effect): Map<string, Grant> {
  const next = new Map(grants);
  for (const g of effect.newGrants) next.set(g.id, { ...g, remaining: 0n });
  for (const tx of effect.transactions) {
    for (const [grantId, delta] of grantDeltas(tx.entries)) {
      const g = next.get(grantId);
      invariant(g, `effect names unknown grant ${grantId}`);
      const remaining = g.remaining + delta;
      invariant(remaining >= 0n && remaining <= g.amount, `grant ${grantId} remaining out of [0, amount]`);
      next.set(grantId, { ...g, remaining });
    }
  }
  for (const c of effect.statusChanges) {
    const g = next.get(c.grantId);
    invariant(g, `effect names unknown grant ${c.grantId}`);
    next.set(c.grantId, { ...g, status: c.status });
  }
  for (const c of effect.grantChanges) {
    const g = next.get(c.grantId);
    invariant(g, `effect names unknown grant ${c.grantId}`);
    if (c.kind === "expiry_extended" && ROLLOVER_EXPIRY.key in g.metadata) {
      // Extended past its period end, it expires on its own (see ROLLOVER_EXPIRY).
      const { [ROLLOVER_EXPIRY.key]: _, ...metadata } = g.metadata;
      next.set(c.grantId, { ...g, expiresAt: c.to, metadata });
    } else next.set(c.grantId, { ...g, expiresAt: c.to });
  }
  return next;
}

/** Concatenates effects in order (e.g. expiries found on touch, then the operation). */
export function combine(...effects: Effect[]): Effect {
  return {
    transactions: effects.flatMap((e) => e.transactions),
    newGrants: effects.flatMap((e) => e.newGrants),
    statusChanges: effects.flatMap((e) => e.statusChanges),
    grantChanges: effects.flatMap((e) => e.grantChanges),
  };
}
