import { inRange } from "./amount.js";
import type { Context, GrantInput } from "./ledger.js";
import {
  addInterval,
  type ExpiryPolicy,
  expiryFor,
  type Interval,
  type Money,
  periodAt,
  validateExpiryPolicy,
  validateInterval,
} from "./lifecycle.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Enterprise contracts' pure core (DESIGN.md, "Plan, subscription, contract"): committed
 * credits over a term, granted upfront or in installments, at a negotiated credit price, under
 * an expiry policy (rolling 12 months by default); and proof-of-concept allocations: free,
 * time-bounded credits that carry the list value they would have cost.
 *
 * Everything here plans; nothing writes. Exactly-once (invariant 7) is the storage layer's, on
 * the keys this module makes ({@link installmentKey}), stored under a unique constraint like a
 * subscription's {@link renewalKey}. Times are epoch milliseconds (UTC); amounts are units.
 */

/** Bounds on contract inputs, shared with the API's validation. */
export const CONTRACT_LIMITS = {
  /** A term lasts at most 120 calendar months (10 years). */
  termMonthsMax: 120,
  /** A schedule has at most 1,000 installments. */
  installmentsMax: 1000,
  /** A contract or allocation may start this long before now (clock skew, a slow request), no more. */
  pastToleranceMs: 60_000,
  /** A proof-of-concept window lasts at most 366 days. */
  pocDaysMax: 366,
  /** Ids are 1 to 100 characters. */
  idMax: 100,
} as const;

const DAY_MS = 86_400_000;
/** The latest and earliest instants a JavaScript Date can hold. */
const TIME_MAX = 8.64e15;
const isEpochMs = (t: unknown): t is number =>
  typeof t === "number" && Number.isSafeInteger(t) && Math.abs(t) <= TIME_MAX;

/** Metadata keys written on the grants this module plans. */
export const CONTRACT_METADATA = {
  contract: "contract_id",
  installment: "installment_index",
  poc: "poc_id",
  /** On a proof-of-concept grant: its list value, a decimal-free unit string, and currency. */
  listValue: "list_value_units",
  listCurrency: "list_value_currency",
} as const;

/**
 * How committed credits are granted:
 * - `upfront`: all of them at the term's start;
 * - `installments`: one installment at the start of every `interval` of the term (the last
 *   period may be cut short by the term's end); the commitment is split evenly (see
 *   {@link splitCommitment}).
 */
export type InstallmentSchedule =
  | { readonly kind: "upfront" }
  | { readonly kind: "installments"; readonly interval: Interval };

/** A contract as a caller writes it; the optional terms take their defaults. */
export interface ContractInput {
  readonly id: string;
  readonly customerId: string;
  /** The term: `[startsAt, endsAt)`. It starts now or later (a minute's tolerance). */
  readonly startsAt: number;
  readonly endsAt: number;
  /** Credits committed over the term, in units; ≥ 0 (0: a pricing-only contract). */
  readonly commitment: bigint;
  /** Default `{ kind: "upfront" }`. */
  readonly schedule?: InstallmentSchedule;
  /** The negotiated price of one credit: the cost basis and currency of every contract grant. */
  readonly creditPrice: Money;
  /** When contract credits expire. Default: rolling 12 months from each grant. */
  readonly expiry?: ExpiryPolicy;
  /**
   * Whether the vendor may move the customer to newer rate card versions. False pins the
   * version in force at signing; true (the default) follows the version in force.
   */
  readonly allowRateCardUpgrades?: boolean;
}

/** A validated contract, its defaults filled. */
export interface Contract {
  readonly id: string;
  readonly customerId: string;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly commitment: bigint;
  readonly schedule: InstallmentSchedule;
  readonly creditPrice: Money;
  readonly expiry: ExpiryPolicy;
  readonly allowRateCardUpgrades: boolean;
}

/** The default expiry of contract credits: rolling 12 months, the enterprise norm. */
export const CONTRACT_EXPIRY_DEFAULT: ExpiryPolicy = { kind: "rolling", months: 12 };

/** One installment of a schedule: `amount` credits granted at `at`, for the period `[at, until)`. */
export interface Installment {
  readonly index: number;
  readonly at: number;
  /** The end of its period: the next installment's time, or the term's end for the last. */
  readonly until: number;
  readonly amount: bigint;
}

function checkId(id: unknown, field: string): Result<string> {
  if (typeof id !== "string" || id.length === 0 || id.length > CONTRACT_LIMITS.idMax) {
    return fail("invalid_argument", `${field} is a string of 1 to ${CONTRACT_LIMITS.idMax} characters.`, {
      field,
    });
  }
  return ok(id);
}

function checkMoney(m: Money, field: string, what: string): Result<Money> {
  if (
    typeof m !== "object" ||
    m === null ||
    typeof m.amount !== "bigint" ||
    m.amount < 0n ||
    !inRange(m.amount)
  ) {
    return fail("invalid_amount", `${what} is an amount of money ≥ 0.`, { field: `${field}.amount` });
  }
  if (typeof m.currency !== "string" || !/^[A-Z]{3}$/.test(m.currency)) {
    return fail("invalid_argument", `${what} needs its currency, an ISO 4217 code such as "USD".`, {
      field: `${field}.currency`,
    });
  }
  return ok({ amount: m.amount, currency: m.currency });
}

/** Refuses a start in the past, beyond {@link CONTRACT_LIMITS.pastToleranceMs}: history is not rewritten. */
function checkStart(ctx: Context, startsAt: number, field: string): Result<number> {
  if (!isEpochMs(startsAt)) {
    return fail("invalid_argument", `${field} must be whole epoch milliseconds.`, { field });
  }
  if (startsAt < ctx.now - CONTRACT_LIMITS.pastToleranceMs) {
    return fail(
      "invalid_argument",
      `${field} is in the past (${new Date(startsAt).toISOString()}); it starts now or later, never backdated.`,
      { field },
    );
  }
  return ok(startsAt);
}

/**
 * Validates a contract and fills its defaults. Fails with `invalid_argument` (its
 * `details.field` names the field) or `invalid_amount` when: the term ends at or before its
 * start, starts in the past (beyond a minute) or lasts over 120 months; the commitment is
 * negative; the credit price is negative or has no currency; the installment interval is
 * longer than the term (one installment would be all of it: say `upfront`) or makes over 1,000
 * installments; the expiry policy is invalid.
 */
export function validateContract(ctx: Context, input: ContractInput): Result<Contract> {
  const id = checkId(input.id, "id");
  if (!id.ok) return id;
  const customer = checkId(input.customerId, "customerId");
  if (!customer.ok) return customer;
  const start = checkStart(ctx, input.startsAt, "startsAt");
  if (!start.ok) return start;
  const { startsAt, endsAt } = input;
  if (!isEpochMs(endsAt) || endsAt <= startsAt) {
    return fail("invalid_argument", "The term ends after it starts: endsAt must be later than startsAt.", {
      field: "endsAt",
    });
  }
  if (endsAt > addInterval(startsAt, { unit: "month", count: CONTRACT_LIMITS.termMonthsMax })) {
    return fail("invalid_argument", `A term lasts at most ${CONTRACT_LIMITS.termMonthsMax} months.`, {
      field: "endsAt",
    });
  }
  if (typeof input.commitment !== "bigint" || input.commitment < 0n || !inRange(input.commitment)) {
    return fail("invalid_amount", "The commitment is an amount of credits ≥ 0.", { field: "commitment" });
  }
  const price = checkMoney(input.creditPrice, "creditPrice", "The credit price");
  if (!price.ok) return price;
  const schedule = input.schedule ?? { kind: "upfront" };
  let checkedSchedule: InstallmentSchedule;
  if (schedule?.kind === "upfront") checkedSchedule = { kind: "upfront" };
  else if (schedule?.kind === "installments") {
    const interval = validateInterval(schedule.interval);
    if (!interval.ok) {
      return fail(interval.error.code, interval.error.message, {
        field: `schedule.${interval.error.details?.field ?? "interval"}`,
      });
    }
    if (addInterval(startsAt, interval.value) > endsAt) {
      return fail(
        "invalid_argument",
        "The installment interval is longer than the term; for a single grant at the start, use the upfront schedule.",
        { field: "schedule.interval" },
      );
    }
    checkedSchedule = { kind: "installments", interval: interval.value };
    if (installmentTimes(startsAt, endsAt, checkedSchedule).length > CONTRACT_LIMITS.installmentsMax) {
      return fail(
        "invalid_argument",
        `The schedule makes more than ${CONTRACT_LIMITS.installmentsMax} installments; choose a longer interval.`,
        { field: "schedule.interval" },
      );
    }
  } else {
    return fail("invalid_argument", 'A schedule\'s kind is "upfront" or "installments".', {
      field: "schedule.kind",
    });
  }
  const expiry = validateExpiryPolicy(input.expiry ?? CONTRACT_EXPIRY_DEFAULT);
  if (!expiry.ok) return expiry;
  const upgrades = input.allowRateCardUpgrades ?? true;
  if (typeof upgrades !== "boolean") {
    return fail("invalid_argument", "allowRateCardUpgrades is true or false.", {
      field: "allowRateCardUpgrades",
    });
  }
  return ok({
    id: id.value,
    customerId: customer.value,
    startsAt,
    endsAt,
    commitment: input.commitment,
    schedule: checkedSchedule,
    creditPrice: price.value,
    expiry: expiry.value,
    allowRateCardUpgrades: upgrades,
  });
}

/**
 * When each installment is granted: the term's start, then every interval after it while
 * before the term's end (at most one more than the limit, so a caller can see it is over).
 * Every time is computed from the start (see {@link periodAt}), so month ends keep their anchor.
 */
function installmentTimes(startsAt: number, endsAt: number, schedule: InstallmentSchedule): number[] {
  if (schedule.kind === "upfront") return [startsAt];
  const times: number[] = [];
  for (let i = 0; i <= CONTRACT_LIMITS.installmentsMax; i++) {
    const from = periodAt(startsAt, schedule.interval, i).from;
    if (from >= endsAt) break;
    times.push(from);
  }
  return times;
}

/**
 * Splits `total` into `count` installments that sum to it exactly: each gets
 * `floor(total / count)` units, and the first `total mod count` get one unit more. So they
 * differ by at most one unit (a billionth of a credit), and the earlier never get less.
 */
export function splitCommitment(total: bigint, count: number): bigint[] {
  if (!Number.isSafeInteger(count) || count < 1) throw new RangeError("count is a whole number ≥ 1.");
  if (total < 0n) throw new RangeError("total must not be negative.");
  const n = BigInt(count);
  const base = total / n;
  const extra = total % n;
  return Array.from({ length: count }, (_, i) => base + (BigInt(i) < extra ? 1n : 0n));
}

/**
 * The contract's installments, in order: when each is granted, its period, and its amount
 * ({@link splitCommitment} of the commitment). Upfront is one installment over the whole term.
 */
export function contractInstallments(contract: Contract): Installment[] {
  const times = installmentTimes(contract.startsAt, contract.endsAt, contract.schedule);
  const amounts = splitCommitment(contract.commitment, times.length);
  return times.map((at, index) => ({
    index,
    at,
    until: times[index + 1] ?? contract.endsAt,
    amount: amounts[index]!,
  }));
}

/**
 * The idempotency key of an installment: `installment:<contractId>:<index>`. The storage layer
 * stores it under a unique constraint, so each installment is granted once whatever the
 * retries, crashes or instances (invariant 7).
 */
export const installmentKey = (contractId: string, index: number): string =>
  `installment:${contractId}:${index}`;

/**
 * The installments due at `now` and not issued yet: index above `issuedThrough` (the last one
 * issued, -1 before the first), granted at or before `now`, and before `terminatedAt` (null:
 * not terminated). Nothing at or after the term's end or the termination is ever due. Asking
 * at `a` then at `b` lists, together, exactly what asking at `b` once lists.
 */
export function dueInstallments(
  contract: Contract,
  issuedThrough: number,
  now: number,
  terminatedAt: number | null = null,
): Installment[] {
  return contractInstallments(contract).filter(
    (i) => i.index > issuedThrough && i.at <= now && (terminatedAt === null || i.at < terminatedAt),
  );
}

/** When the next installment falls due, or null when none will (all issued, or terminated before it). */
export function nextInstallmentAt(
  contract: Contract,
  issuedThrough: number,
  terminatedAt: number | null = null,
): number | null {
  const next = contractInstallments(contract)[issuedThrough + 1];
  if (!next || (terminatedAt !== null && next.at >= terminatedAt)) return null;
  return next.at;
}

/** One installment, planned. */
export interface InstallmentPlan {
  /** {@link installmentKey}: write the grant only if this key is new. */
  readonly key: string;
  readonly installment: Installment;
  /** The grant to issue (with {@link issueGrant}); null when the amount is zero. */
  readonly grant: GrantInput | null;
  /**
   * True when the grant's expiry is already past at `ctx.now` (caught up after downtime
   * longer than the credits live): it is not issued, but the key is still recorded.
   */
  readonly lapsed: boolean;
}

/**
 * Plans installment `index` of a contract: a grant of source `contract` into `walletId`, at the
 * negotiated price (cost basis and currency), effective at the installment's time, expiring by
 * the contract's policy (`rolling`: that many months after the installment; `period_end`: at
 * the end of its period; `never`), linked by metadata ({@link CONTRACT_METADATA}).
 */
export function planInstallment(
  ctx: Context,
  input: { readonly contract: Contract; readonly index: number; readonly walletId: string },
): Result<InstallmentPlan> {
  const wallet = checkId(input.walletId, "walletId");
  if (!wallet.ok) return wallet;
  const installment = contractInstallments(input.contract)[input.index];
  if (!installment) {
    return fail("invalid_argument", `The contract has no installment ${input.index}.`, { field: "index" });
  }
  const c = input.contract;
  const expiresAt = expiryFor(c.expiry, installment.at, installment.until);
  const grant: GrantInput | null =
    installment.amount > 0n
      ? {
          walletId: wallet.value,
          amount: installment.amount,
          source: "contract",
          costBasis: c.creditPrice.amount,
          currency: c.creditPrice.currency,
          effectiveAt: installment.at,
          expiresAt,
          metadata: {
            [CONTRACT_METADATA.contract]: c.id,
            [CONTRACT_METADATA.installment]: String(installment.index),
          },
        }
      : null;
  return ok({
    key: installmentKey(c.id, installment.index),
    installment,
    grant,
    lapsed: grant !== null && expiresAt !== null && expiresAt <= ctx.now,
  });
}

/** An early termination, planned. */
export interface TerminationPlan {
  readonly terminatedAt: number;
  /** Installments that will never be granted: those due at or after the termination. */
  readonly canceled: readonly Installment[];
}

/**
 * Plans terminating a contract at `ctx.now`: no installment due from then on is granted.
 * Installments already due are not canceled (the storage layer issues any the scheduler has
 * not reached yet, first). Fails with `invalid_argument` once the term has ended or when the
 * contract is terminated already.
 */
export function planTermination(
  ctx: Context,
  contract: Contract,
  terminatedAt: number | null,
): Result<TerminationPlan> {
  if (terminatedAt !== null) {
    return fail(
      "invalid_argument",
      `Contract ${contract.id} was terminated at ${new Date(terminatedAt).toISOString()}.`,
    );
  }
  if (ctx.now >= contract.endsAt) {
    return fail(
      "invalid_argument",
      `Contract ${contract.id}'s term ended at ${new Date(contract.endsAt).toISOString()}; there is nothing left to terminate.`,
    );
  }
  return ok({
    terminatedAt: ctx.now,
    canceled: contractInstallments(contract).filter((i) => i.at >= ctx.now),
  });
}

// ---------------------------------------------------------------------------------------------
// Proof-of-concept allocations
// ---------------------------------------------------------------------------------------------

/** A proof-of-concept allocation as a caller writes it. */
export interface PocInput {
  readonly id: string;
  readonly customerId: string;
  /** Free credits, in units; > 0. */
  readonly amount: bigint;
  /** What the credits would cost at list price (shown on statements); money ≥ 0 with its currency. */
  readonly listValue: Money;
  /** The window `[startsAt, endsAt)`: usable from its start (now or later), expiring at its end. */
  readonly startsAt: number;
  readonly endsAt: number;
  /** Actions the credits may pay for; null: all. */
  readonly scope?: readonly string[] | null;
}

/** A validated proof-of-concept allocation. */
export interface PocAllocation {
  readonly id: string;
  readonly customerId: string;
  readonly amount: bigint;
  readonly listValue: Money;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly scope: readonly string[] | null;
}

/**
 * Validates a proof-of-concept allocation: a positive amount, a list value with its currency,
 * a window that starts now or later (a minute's tolerance), ends after it starts and lasts at
 * most 366 days. Its scope is checked with the grant it becomes.
 */
export function validatePoc(ctx: Context, input: PocInput): Result<PocAllocation> {
  const id = checkId(input.id, "id");
  if (!id.ok) return id;
  const customer = checkId(input.customerId, "customerId");
  if (!customer.ok) return customer;
  if (typeof input.amount !== "bigint" || input.amount <= 0n || !inRange(input.amount)) {
    return fail("invalid_amount", "A proof-of-concept allocation grants a positive amount of credits.", {
      field: "amount",
    });
  }
  const list = checkMoney(input.listValue, "listValue", "The list value");
  if (!list.ok) return list;
  const start = checkStart(ctx, input.startsAt, "startsAt");
  if (!start.ok) return start;
  if (!isEpochMs(input.endsAt) || input.endsAt <= input.startsAt) {
    return fail("invalid_argument", "The window ends after it starts: endsAt must be later than startsAt.", {
      field: "endsAt",
    });
  }
  if (input.endsAt - input.startsAt > CONTRACT_LIMITS.pocDaysMax * DAY_MS) {
    return fail(
      "invalid_argument",
      `A proof-of-concept window lasts at most ${CONTRACT_LIMITS.pocDaysMax} days; for longer, sign a contract.`,
      { field: "endsAt" },
    );
  }
  return ok({
    id: id.value,
    customerId: customer.value,
    amount: input.amount,
    listValue: list.value,
    startsAt: input.startsAt,
    endsAt: input.endsAt,
    scope: input.scope ?? null,
  });
}

/**
 * The grant a proof-of-concept allocation becomes: source `contract`, free (cost basis 0, so
 * neither its use nor its breakage is revenue), effective at the window's start and expiring
 * at its end, with the allocation and its list value in its metadata.
 */
export function pocGrant(poc: PocAllocation, walletId: string): GrantInput {
  return {
    walletId,
    amount: poc.amount,
    source: "contract",
    costBasis: 0n,
    currency: null,
    effectiveAt: poc.startsAt,
    expiresAt: poc.endsAt,
    scope: poc.scope,
    metadata: {
      [CONTRACT_METADATA.poc]: poc.id,
      [CONTRACT_METADATA.listValue]: poc.listValue.amount.toString(),
      [CONTRACT_METADATA.listCurrency]: poc.listValue.currency,
    },
  };
}

/**
 * The list value of `credits` of an allocation: `credits × listValue / amount`, rounded down
 * (in the allocation's currency). What a statement shows for the credits used.
 */
export function listValueOf(poc: Pick<PocAllocation, "amount" | "listValue">, credits: bigint): Money {
  if (credits < 0n || credits > poc.amount) throw new RangeError("credits must be within [0, amount].");
  return { amount: (credits * poc.listValue.amount) / poc.amount, currency: poc.listValue.currency };
}
