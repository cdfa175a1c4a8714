/**
 * Model-based test of the ledger core: random operation sequences over one customer with a
 * pool wallet and a member wallet, run through the core (state kept with `applyEffect`) and
 * through an independent reference written here (plain maps of remaining amounts). After
 * every step the invariants of DESIGN.md are checked against both.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  applyEffect,
  type Context,
  type DrawSource,
  debit,
  type Effect,
  expireDue,
  extendExpiry,
  formatAmount,
  type Grant,
  type IdGenerator,
  isBalanced,
  issueGrant,
  type JournalTransaction,
  type LedgerErrorCode,
  type Result,
  reverse,
  voidGrant,
} from "../src/index.js";
import { counterIds, deepFreeze, serialize } from "./support.js";

const CUS = "cus_000000";
const POOL = "wal_pool";
const MEMBER = "wal_member";
const START = 1_700_000_000_000;
const PATTERNS = ["chat", "chat.*", "image.*", "image.upscale", "tool.search"] as const;
const ACTIONS = [
  "chat",
  "chat.completion",
  "image.upscale",
  "image.gen",
  "tool.search",
  "other",
  null,
] as const;

// ---------------------------------------------------------------------------------------------
// Operations.

type WalletName = "pool" | "member";
const walletId = (w: WalletName): string => (w === "pool" ? POOL : MEMBER);

const issueOp = fc.record({
  t: fc.constant("issue" as const),
  wallet: fc.constantFrom<WalletName>("pool", "member"),
  amount: fc.bigInt({ min: 1n, max: 1000n }),
  priority: fc.constantFrom(0, 10, 50, 50, 100),
  scope: fc.option(fc.uniqueArray(fc.constantFrom(...PATTERNS), { minLength: 1, maxLength: 3 }), {
    nil: null,
  }),
  expiresIn: fc.option(fc.oneof(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 8000 })), {
    nil: null,
    freq: 2,
  }),
  costBasis: fc.constantFrom(0n, 0n, 1n, 3n),
  currency: fc.constantFrom("USD", "EUR"),
  effectiveOffset: fc.oneof(fc.constant(0), fc.integer({ min: -3000, max: 5000 })),
  adjustment: fc.boolean(),
});
const debitOp = fc.record({
  t: fc.constant("debit" as const),
  from: fc.constantFrom<WalletName>("pool", "member", "member"),
  amount: fc.oneof(
    { arbitrary: fc.bigInt({ min: 1n, max: 200n }), weight: 3 },
    { arbitrary: fc.bigInt({ min: 1n, max: 2500n }), weight: 1 },
  ),
  action: fc.constantFrom(...ACTIONS),
  adjustment: fc.boolean(),
});
const debitGrantOp = fc.record({
  t: fc.constant("debitGrant" as const),
  from: fc.constantFrom<WalletName>("pool", "member"),
  pick: fc.nat(),
  amount: fc.bigInt({ min: 1n, max: 400n }),
  action: fc.constantFrom(...ACTIONS),
});
const voidOp = fc.record({
  t: fc.constant("void" as const),
  pick: fc.nat(),
  reason: fc.constantFrom("fraud", null),
});
const extendOp = fc.record({
  t: fc.constant("extend" as const),
  pick: fc.nat(),
  by: fc.option(fc.integer({ min: -3000, max: 6000 }), { nil: null, freq: 4 }),
});
const reverseOp = fc.record({ t: fc.constant("reverse" as const), pick: fc.nat(), twice: fc.boolean() });
const reverseOtherOp = fc.record({ t: fc.constant("reverseOther" as const), pick: fc.nat() });
const expireOp = fc.record({ t: fc.constant("expire" as const) });
const advanceOp = fc.record({
  t: fc.constant("advance" as const),
  ms: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 20 })),
});

const opArb = fc.oneof(
  { arbitrary: issueOp, weight: 5 },
  { arbitrary: debitOp, weight: 6 },
  { arbitrary: debitGrantOp, weight: 1 },
  { arbitrary: voidOp, weight: 1 },
  { arbitrary: extendOp, weight: 2 },
  { arbitrary: reverseOp, weight: 2 },
  { arbitrary: reverseOtherOp, weight: 1 },
  { arbitrary: expireOp, weight: 2 },
  { arbitrary: advanceOp, weight: 3 },
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

// ---------------------------------------------------------------------------------------------
// The reference model: written from DESIGN.md, sharing no code with the core.

type Status = "active" | "voided" | "expired";

interface RefGrant {
  readonly id: string;
  readonly walletId: string;
  readonly amount: bigint;
  remaining: bigint;
  status: Status;
  readonly priority: number;
  readonly scope: readonly string[] | null;
  expiresAt: number | null;
  readonly costBasis: bigint;
  readonly effectiveAt: number;
}

interface RefDraw {
  readonly grantId: string;
  readonly walletId: string;
  readonly amount: bigint;
}

interface RefDebit {
  readonly txId: string;
  readonly draws: readonly RefDraw[];
  reversed: boolean;
}

function refAdmits(scope: readonly string[] | null, action: string | null): boolean {
  if (scope === null) return true;
  if (action === null) return false;
  for (const p of scope) {
    if (p === action) return true;
    if (p.endsWith(".*")) {
      const prefix = p.slice(0, p.length - 1); // keeps the dot: "image."
      if (action.slice(0, prefix.length) === prefix) return true;
    }
  }
  return false;
}

const refOverdue = (g: RefGrant, now: number): boolean =>
  g.status === "active" && g.expiresAt !== null && g.expiresAt <= now;

const refEligible = (g: RefGrant, action: string | null, now: number): boolean =>
  g.status === "active" &&
  g.remaining > 0n &&
  g.effectiveAt <= now &&
  !refOverdue(g, now) &&
  refAdmits(g.scope, action);

/** Why a grant cannot be touched (void, extend, reverse into, target), or null. */
function refStatusError(g: RefGrant, now: number): LedgerErrorCode | null {
  if (g.status === "voided") return "grant_inactive";
  if (g.status === "expired" || refOverdue(g, now)) return "grant_expired";
  return null;
}

/** The burn-down order as a tuple, compared element by element. */
function refCompare(a: RefGrant, b: RefGrant): number {
  const ka = [
    a.priority,
    a.scope === null ? 1 : 0,
    a.expiresAt ?? Number.POSITIVE_INFINITY,
    a.costBasis,
    a.effectiveAt,
    a.id,
  ];
  const kb = [
    b.priority,
    b.scope === null ? 1 : 0,
    b.expiresAt ?? Number.POSITIVE_INFINITY,
    b.costBasis,
    b.effectiveAt,
    b.id,
  ];
  for (let i = 0; i < ka.length; i++) {
    const x = ka[i]!;
    const y = kb[i]!;
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return 0;
}

/** Greedy plan over wallets in order, each wallet's eligible grants in burn-down order. */
function refPlan(
  grants: readonly RefGrant[],
  wallets: readonly string[],
  amount: bigint,
  action: string | null,
  now: number,
): { draws: RefDraw[]; eligible: bigint } {
  const draws: RefDraw[] = [];
  let eligible = 0n;
  let left = amount;
  for (const w of wallets) {
    const mine = grants.filter((g) => g.walletId === w && refEligible(g, action, now)).sort(refCompare);
    for (const g of mine) {
      eligible += g.remaining;
      if (left === 0n) continue;
      let take = left; // Math.min does not take bigints
      if (g.remaining < take) take = g.remaining;
      draws.push({ grantId: g.id, walletId: w, amount: take });
      left -= take;
    }
  }
  return { draws, eligible };
}

// ---------------------------------------------------------------------------------------------
// The world: core state, journal, reference, bookkeeping for the checks.

interface World {
  now: number;
  readonly newId: IdGenerator;
  grants: Map<string, Grant>;
  readonly journal: JournalTransaction[];
  readonly snapshots: string[];
  readonly ref: Map<string, RefGrant>;
  readonly refDebits: RefDebit[];
  /** Grants that appeared in an expire transaction's entries. */
  readonly inExpireTx: Set<string>;
  /** Grants given the `expired` status. */
  readonly expiredOnce: Set<string>;
  /** Expiry of each grant after the previous step. */
  readonly lastExpiry: Map<string, number | null>;
  readonly stats: Record<string, number>;
}

function newWorld(): World {
  return {
    now: START,
    newId: counterIds(),
    grants: new Map(),
    journal: [],
    snapshots: [],
    ref: new Map(),
    refDebits: [],
    inExpireTx: new Set(),
    expiredOnce: new Set(),
    lastExpiry: new Map(),
    stats: {},
  };
}

const ctxOf = (w: World): Context => ({ now: w.now, newId: w.newId });
const count = (w: World, key: string) => {
  w.stats[key] = (w.stats[key] ?? 0) + 1;
};

function source(w: World, name: string): DrawSource {
  return { walletId: name, grants: [...w.grants.values()].filter((g) => g.walletId === name) };
}

function expectOk(r: Result<Effect>, what: string): Effect {
  if (!r.ok) assert.fail(`${what}: expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function expectFail(r: Result<Effect>, code: LedgerErrorCode, what: string) {
  if (r.ok) assert.fail(`${what}: expected ${code}, got success`);
  assert.equal(r.error.code, code, `${what}: ${r.error.message}`);
  return r.error;
}

/** Applies an effect to the core state and appends its transactions, frozen, to the journal. */
function commit(w: World, effect: Effect): void {
  const before = w.grants;
  for (const tx of effect.transactions) {
    // Expired or voided grants are never drawn, and only active grants take credits back.
    if (tx.kind === "debit" || tx.kind === "adjustment.debit" || tx.kind === "reversal") {
      for (const e of tx.entries) {
        if (e.account.kind !== "grant") continue;
        const g = before.get(e.account.grantId);
        assert.ok(g, `unknown grant ${e.account.grantId}`);
        assert.equal(g.status, "active", `${tx.kind} touched ${g.status} grant ${g.id}`);
        assert.ok(g.expiresAt === null || w.now < g.expiresAt, `${tx.kind} touched overdue grant ${g.id}`);
      }
    }
    if (tx.kind === "expire") {
      for (const e of tx.entries) {
        if (e.account.kind !== "grant") continue;
        assert.ok(!w.inExpireTx.has(e.account.grantId), `grant ${e.account.grantId} expired twice`);
        w.inExpireTx.add(e.account.grantId);
      }
    }
  }
  for (const c of effect.statusChanges) {
    if (c.status === "expired") {
      assert.ok(!w.expiredOnce.has(c.grantId), `grant ${c.grantId} got the expired status twice`);
      w.expiredOnce.add(c.grantId);
    }
  }
  const next = applyEffect(w.grants, effect);
  for (const g of next.values()) deepFreeze(g);
  w.grants = next;
  for (const tx of effect.transactions) {
    deepFreeze(tx);
    w.journal.push(tx);
    w.snapshots.push(serialize(tx));
  }
}

// ---------------------------------------------------------------------------------------------
// One step: predict with the reference, run the core, compare, update both.

function step(w: World, op: Op): void {
  const refList = [...w.ref.values()];
  switch (op.t) {
    case "advance": {
      w.now += op.ms;
      return;
    }

    case "issue": {
      const effectiveAt = w.now + op.effectiveOffset;
      const expiresAt = op.expiresIn === null ? null : effectiveAt + op.expiresIn;
      const costBasis = op.costBasis;
      const input = {
        walletId: walletId(op.wallet),
        amount: op.amount,
        source: op.adjustment ? ("adjustment" as const) : ("plan" as const),
        costBasis,
        currency: costBasis > 0n ? op.currency : null,
        effectiveAt,
        expiresAt,
        priority: op.priority,
        scope: op.scope,
        metadata: deepFreeze({ step: String(w.journal.length) }),
      };
      const r = issueGrant(
        ctxOf(w),
        CUS,
        input,
        op.adjustment ? { kind: "adjustment.credit", reason: "goodwill" } : {},
      );
      if (expiresAt !== null && expiresAt <= w.now) {
        expectFail(r, "invalid_argument", "issue with expiry in the past");
        count(w, "issue.rejected");
        return;
      }
      const effect = expectOk(r, "issue");
      assert.equal(effect.newGrants.length, 1);
      assert.equal(effect.transactions.length, 1);
      const g = effect.newGrants[0]!;
      const tx = effect.transactions[0]!;
      assert.equal(tx.kind, op.adjustment ? "adjustment.credit" : "grant");
      assert.deepEqual(
        [g.walletId, g.amount, g.remaining, g.priority, g.costBasis, g.effectiveAt, g.expiresAt, g.status],
        [input.walletId, op.amount, op.amount, op.priority, costBasis, effectiveAt, expiresAt, "active"],
      );
      assert.deepEqual(g.scope, op.scope === null ? null : [...op.scope].sort());
      assert.ok(!w.ref.has(g.id) && !w.grants.has(g.id), "grant ids are unique");
      commit(w, effect);
      w.ref.set(g.id, {
        id: g.id,
        walletId: input.walletId,
        amount: op.amount,
        remaining: op.amount,
        status: "active",
        priority: op.priority,
        scope: op.scope,
        expiresAt,
        costBasis,
        effectiveAt,
      });
      count(w, "issue.ok");
      return;
    }

    case "debit": {
      const wallets = op.from === "member" ? [MEMBER, POOL] : [POOL];
      const kind = op.adjustment ? ("adjustment.debit" as const) : ("debit" as const);
      const r = debit(
        ctxOf(w),
        wallets.map((name) => source(w, name)),
        { customerId: CUS, amount: op.amount, action: op.action, kind, reason: op.adjustment ? "fix" : null },
      );
      const plan = refPlan(refList, wallets, op.amount, op.action, w.now);
      if (plan.eligible < op.amount) {
        const err = expectFail(r, "insufficient_credits", "debit");
        assert.deepEqual(err.details, {
          requested: formatAmount(op.amount),
          available: formatAmount(plan.eligible),
        });
        count(w, "debit.short");
        return;
      }
      const effect = expectOk(r, "debit");
      assert.equal(effect.transactions.length, 1);
      const tx = effect.transactions[0]!;
      assert.equal(tx.kind, kind);
      assert.equal(tx.action, op.action);
      // Burn-down order: the core's draws are the reference's greedy plan, entry for entry.
      const draws = tx.entries.filter((e) => e.account.kind === "grant");
      assert.deepEqual(
        draws.map((e) =>
          e.account.kind === "grant"
            ? { grantId: e.account.grantId, walletId: e.account.walletId, amount: -e.amount }
            : null,
        ),
        plan.draws,
      );
      const counter = tx.entries.filter((e) => e.account.kind === "system");
      assert.equal(counter.length, 1);
      assert.deepEqual(counter[0]!.account, {
        kind: "system",
        name: op.adjustment ? "adjustments" : "consumption",
      });
      assert.equal(counter[0]!.amount, op.amount);
      commit(w, effect);
      for (const d of plan.draws) w.ref.get(d.grantId)!.remaining -= d.amount;
      w.refDebits.push({ txId: tx.id, draws: plan.draws, reversed: false });
      count(w, "debit.ok");
      return;
    }

    case "debitGrant": {
      if (refList.length === 0) return;
      const target = refList[op.pick % refList.length]!;
      const wallets = op.from === "member" ? [MEMBER, POOL] : [POOL];
      const r = debit(
        ctxOf(w),
        wallets.map((name) => source(w, name)),
        { customerId: CUS, amount: op.amount, action: op.action, kind: "debit", grantId: target.id },
      );
      if (!wallets.includes(target.walletId)) {
        expectFail(r, "wallet_mismatch", "targeted debit");
        count(w, "debitGrant.mismatch");
        return;
      }
      const statusError = refStatusError(target, w.now);
      if (statusError) {
        expectFail(r, statusError, "targeted debit");
        count(w, "debitGrant.inactive");
        return;
      }
      const available = refEligible(target, op.action, w.now) ? target.remaining : 0n;
      if (available < op.amount) {
        const err = expectFail(r, "insufficient_credits", "targeted debit");
        assert.equal(err.details?.available, formatAmount(available));
        count(w, "debitGrant.short");
        return;
      }
      const effect = expectOk(r, "targeted debit");
      const tx = effect.transactions[0]!;
      assert.equal(tx.entries.length, 2);
      assert.deepEqual(tx.entries[0]!.account, {
        kind: "grant",
        grantId: target.id,
        walletId: target.walletId,
      });
      assert.equal(tx.entries[0]!.amount, -op.amount);
      commit(w, effect);
      target.remaining -= op.amount;
      w.refDebits.push({
        txId: tx.id,
        draws: [{ grantId: target.id, walletId: target.walletId, amount: op.amount }],
        reversed: false,
      });
      count(w, "debitGrant.ok");
      return;
    }

    case "void": {
      if (refList.length === 0) return;
      const target = refList[op.pick % refList.length]!;
      const r = voidGrant(ctxOf(w), CUS, w.grants.get(target.id)!, op.reason);
      const statusError = refStatusError(target, w.now);
      if (statusError) {
        expectFail(r, statusError, "void");
        count(w, "void.refused");
        return;
      }
      const effect = expectOk(r, "void");
      assert.deepEqual(effect.statusChanges, [{ grantId: target.id, status: "voided" }]);
      if (target.remaining === 0n) assert.equal(effect.transactions.length, 0);
      else {
        assert.equal(effect.transactions.length, 1);
        assert.deepEqual(
          effect.transactions[0]!.entries.map((e) => e.amount),
          [-target.remaining, target.remaining],
        );
      }
      commit(w, effect);
      target.remaining = 0n;
      target.status = "voided";
      count(w, "void.ok");
      return;
    }

    case "extend": {
      if (refList.length === 0) return;
      const target = refList[op.pick % refList.length]!;
      const to = op.by === null ? null : (target.expiresAt ?? w.now) + op.by;
      const r = extendExpiry(ctxOf(w), w.grants.get(target.id)!, to, "contract extended");
      const statusError = refStatusError(target, w.now);
      if (statusError) {
        expectFail(r, statusError, "extend");
        count(w, "extend.refused");
        return;
      }
      if (target.expiresAt === null || (to !== null && to <= target.expiresAt)) {
        expectFail(r, "expiry_not_extendable", "extend");
        count(w, "extend.not_extendable");
        return;
      }
      const effect = expectOk(r, "extend");
      assert.equal(effect.transactions.length, 0);
      assert.equal(effect.grantChanges.length, 1);
      const change = effect.grantChanges[0]!;
      assert.deepEqual(
        [change.grantId, change.from, change.to, change.at],
        [target.id, target.expiresAt, to, w.now],
      );
      commit(w, effect);
      target.expiresAt = to;
      count(w, "extend.ok");
      return;
    }

    case "reverse": {
      if (w.refDebits.length === 0) return;
      const target = w.refDebits[op.pick % w.refDebits.length]!;
      const original = w.journal.find((t) => t.id === target.txId);
      assert.ok(original);
      // The shell knows a transaction is reversed from the journal itself.
      const reversedInJournal = w.journal.some((t) => t.reversesId === original.id);
      assert.equal(reversedInJournal, target.reversed);
      const r = reverse(ctxOf(w), original, w.grants, reversedInJournal, "refund");
      if (target.reversed) {
        expectFail(r, "transaction_already_reversed", "reverse");
        count(w, "reverse.again");
        return;
      }
      let expected: LedgerErrorCode | null = null;
      for (const d of target.draws) {
        expected = refStatusError(w.ref.get(d.grantId)!, w.now);
        if (expected) break;
      }
      if (expected) {
        expectFail(r, expected, "reverse");
        count(w, "reverse.refused");
        return;
      }
      const effect = expectOk(r, "reverse");
      const tx = effect.transactions[0]!;
      assert.equal(tx.kind, "reversal");
      assert.equal(tx.reversesId, original.id);
      assert.deepEqual(
        tx.entries.map((e) => [e.account, e.amount]),
        original.entries.map((e) => [e.account, -e.amount]),
      );
      commit(w, effect);
      for (const d of target.draws) w.ref.get(d.grantId)!.remaining += d.amount;
      target.reversed = true;
      count(w, "reverse.ok");
      if (op.twice) {
        // Reversal once: the second attempt is refused and changes nothing.
        const again = reverse(
          ctxOf(w),
          original,
          w.grants,
          w.journal.some((t) => t.reversesId === original.id),
          "x",
        );
        expectFail(again, "transaction_already_reversed", "second reverse");
        count(w, "reverse.twice");
      }
      return;
    }

    case "reverseOther": {
      const others = w.journal.filter((t) => t.kind !== "debit" && t.kind !== "adjustment.debit");
      if (others.length === 0) return;
      const original = others[op.pick % others.length]!;
      expectFail(
        reverse(ctxOf(w), original, w.grants, false, "x"),
        "transaction_not_reversible",
        `reverse ${original.kind}`,
      );
      count(w, `reverseOther.${original.kind}`);
      return;
    }

    case "expire": {
      const effect = expireDue(ctxOf(w), CUS, [...w.grants.values()]);
      const due = refList.filter((g) => refOverdue(g, w.now)).sort((a, b) => (a.id < b.id ? -1 : 1));
      assert.deepEqual(
        effect.statusChanges,
        due.map((g) => ({ grantId: g.id, status: "expired" })),
      );
      const withRemaining = due.filter((g) => g.remaining > 0n);
      if (withRemaining.length === 0) assert.equal(effect.transactions.length, 0);
      else {
        assert.equal(effect.transactions.length, 1);
        const tx = effect.transactions[0]!;
        assert.equal(tx.kind, "expire");
        const total = withRemaining.reduce((s, g) => s + g.remaining, 0n);
        assert.deepEqual(
          tx.entries.map((e) => [e.account, e.amount]),
          [
            ...withRemaining.map((g) => [
              { kind: "grant", grantId: g.id, walletId: g.walletId },
              -g.remaining,
            ]),
            [{ kind: "system", name: "breakage" }, total],
          ],
        );
      }
      commit(w, effect);
      for (const g of due) {
        g.remaining = 0n;
        g.status = "expired";
      }
      count(w, due.length > 0 ? "expire.some" : "expire.none");
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Invariants, checked after every step.

function checkInvariants(w: World): void {
  const txIds = new Set<string>();
  const journalByWallet = new Map<string, bigint>([
    [POOL, 0n],
    [MEMBER, 0n],
  ]);
  const journalByGrant = new Map<string, bigint>();
  for (const [i, tx] of w.journal.entries()) {
    // Invariant 2: earlier transactions are never mutated.
    assert.equal(serialize(tx), w.snapshots[i], `transaction ${tx.id} changed after it was written`);
    assert.ok(Object.isFrozen(tx) && Object.isFrozen(tx.entries));
    assert.ok(!txIds.has(tx.id), `duplicate transaction id ${tx.id}`);
    txIds.add(tx.id);
    assert.equal(tx.customerId, CUS);
    // Invariant 1: every transaction balances per unit, checked by the core and by hand.
    assert.ok(isBalanced(tx.entries), `transaction ${tx.id} does not balance`);
    const sums = new Map<string, bigint>();
    for (const e of tx.entries) {
      assert.equal(typeof e.amount, "bigint"); // invariant 8
      assert.notEqual(e.amount, 0n);
      assert.equal(e.unit, "credit");
      sums.set(e.unit, (sums.get(e.unit) ?? 0n) + e.amount);
      if (e.account.kind === "grant") {
        const { walletId: wal, grantId } = e.account;
        journalByWallet.set(wal, (journalByWallet.get(wal) ?? 0n) + e.amount);
        journalByGrant.set(grantId, (journalByGrant.get(grantId) ?? 0n) + e.amount);
      }
    }
    for (const [unit, sum] of sums) assert.equal(sum, 0n, `transaction ${tx.id} sums to ${sum} ${unit}`);
    if (tx.kind === "reversal") {
      assert.ok(tx.reversesId !== null);
      assert.equal(w.journal.filter((t) => t.reversesId === tx.reversesId).length, 1, "reversed twice");
    }
  }

  const grantsByWallet = new Map<string, bigint>([
    [POOL, 0n],
    [MEMBER, 0n],
  ]);
  const refByWallet = new Map<string, bigint>([
    [POOL, 0n],
    [MEMBER, 0n],
  ]);
  assert.deepEqual([...w.grants.keys()].sort(), [...w.ref.keys()].sort());
  for (const g of w.grants.values()) {
    const r = w.ref.get(g.id)!;
    // Invariant 8: amounts are bigints.
    for (const v of [g.amount, g.remaining, g.costBasis]) assert.equal(typeof v, "bigint");
    // Invariant 4: 0 ≤ remaining ≤ amount.
    assert.ok(g.remaining >= 0n && g.remaining <= g.amount, `grant ${g.id} remaining ${g.remaining}`);
    // Core state equals the reference.
    assert.deepEqual(
      [g.remaining, g.status, g.expiresAt, g.amount, g.walletId],
      [r.remaining, r.status, r.expiresAt, r.amount, r.walletId],
      `grant ${g.id} differs from the reference`,
    );
    // A grant's remaining is exactly what the journal says.
    assert.equal(g.remaining, journalByGrant.get(g.id) ?? 0n, `grant ${g.id} disagrees with the journal`);
    if (g.status !== "active") assert.equal(g.remaining, 0n, `${g.status} grant ${g.id} still holds credits`);
    // Extending never shortens: an expiry only moves later, or goes away; none is ever added.
    if (w.lastExpiry.has(g.id)) {
      const before = w.lastExpiry.get(g.id)!;
      const after = g.expiresAt;
      if (before === null) assert.equal(after, null, `grant ${g.id} gained an expiry`);
      else assert.ok(after === null || after >= before, `grant ${g.id} expiry moved earlier`);
    }
    w.lastExpiry.set(g.id, g.expiresAt);
    grantsByWallet.set(g.walletId, (grantsByWallet.get(g.walletId) ?? 0n) + g.remaining);
    refByWallet.set(r.walletId, (refByWallet.get(r.walletId) ?? 0n) + r.remaining);
  }
  // Invariant 3: per wallet, grants' remaining = journal = reference.
  for (const wal of [POOL, MEMBER]) {
    assert.equal(
      grantsByWallet.get(wal),
      journalByWallet.get(wal),
      `${wal}: grants disagree with the journal`,
    );
    assert.equal(grantsByWallet.get(wal), refByWallet.get(wal), `${wal}: grants disagree with the reference`);
  }
  // Expiry once: the grants with the expired status are exactly those given it once.
  for (const g of w.grants.values()) assert.equal(g.status === "expired", w.expiredOnce.has(g.id));
}

// ---------------------------------------------------------------------------------------------

const totals: Record<string, number> = {};

test("model: random operation sequences keep every invariant and match the reference", () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 60, size: "max" }), (ops) => {
      const w = newWorld();
      for (const op of ops) {
        step(w, op);
        checkInvariants(w);
      }
      for (const [k, v] of Object.entries(w.stats)) totals[k] = (totals[k] ?? 0) + v;
    }),
    // MODEL_RUNS=5000 for a longer soak.
    { numRuns: Number(process.env.MODEL_RUNS ?? 200) },
  );
  // Guard against a generator that never reaches the interesting paths.
  for (const key of [
    "issue.ok",
    "issue.rejected",
    "debit.ok",
    "debit.short",
    "debitGrant.ok",
    "debitGrant.mismatch",
    "void.ok",
    "void.refused",
    "extend.ok",
    "extend.not_extendable",
    "extend.refused",
    "reverse.ok",
    "reverse.again",
    "reverse.refused",
    "reverse.twice",
    "expire.some",
  ])
    assert.ok((totals[key] ?? 0) > 0, `no run exercised ${key}: ${JSON.stringify(totals)}`);
  // MODEL_STATS=1 prints how often each path ran, to tune the generators.
  if (process.env.MODEL_STATS) console.log(totals);
});
