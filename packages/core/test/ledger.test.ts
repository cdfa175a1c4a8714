import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  accountName,
  applyEffect,
  type Context,
  combine,
  credits,
  type DrawSource,
  debit,
  type Effect,
  entry,
  expireDue,
  extendExpiry,
  type Grant,
  type GrantInput,
  grantAccount,
  grantDeltas,
  InvariantViolation,
  invariant,
  isBalanced,
  issueGrant,
  type LedgerErrorCode,
  MAX_AMOUNT,
  type Result,
  reverse,
  sumsPerUnit,
  voidGrant,
  walletDeltas,
  walletsGivenCredits,
} from "../src/index.js";
import { ctxAt, makeGrant } from "./support.js";

const CUS = "cus_1";
const NOW = 1_000_000;

function ctx(now = NOW): Context {
  return ctxAt(now);
}

function okValue<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function expectFail<T>(r: Result<T>, code: LedgerErrorCode, message?: RegExp) {
  if (r.ok) assert.fail(`expected ${code}, got success`);
  assert.equal(r.error.code, code, r.error.message);
  assert.ok(r.error.message.length > 0);
  if (message) assert.match(r.error.message, message);
  return r.error;
}

const input = (overrides: Partial<GrantInput> = {}): GrantInput => ({
  walletId: "wal_a",
  amount: credits(10n),
  source: "plan",
  ...overrides,
});

/** Issues a grant at NOW and returns it, applied. */
function issued(overrides: Partial<GrantInput> = {}, c = ctx()): Grant {
  const effect = okValue(issueGrant(c, CUS, input(overrides)));
  const grant = applyEffect(new Map(), effect).get(effect.newGrants[0]!.id);
  assert.ok(grant);
  return grant;
}

describe("issueGrant", () => {
  test("issues: issuance to the grant, with defaults filled", () => {
    const c = ctx();
    const effect = okValue(
      issueGrant(c, CUS, input({ scope: ["image.*", "chat", "chat"], metadata: { campaign: "spring" } })),
    );
    assert.equal(effect.newGrants.length, 1);
    assert.equal(effect.transactions.length, 1);
    const grant = effect.newGrants[0]!;
    assert.equal(grant.id, "grt_000001");
    assert.equal(grant.remaining, grant.amount);
    assert.equal(grant.priority, 50);
    assert.equal(grant.effectiveAt, NOW);
    assert.equal(grant.createdAt, NOW);
    assert.equal(grant.expiresAt, null);
    assert.equal(grant.costBasis, 0n);
    assert.equal(grant.currency, null);
    assert.equal(grant.status, "active");
    assert.deepEqual(grant.scope, ["chat", "image.*"]);
    assert.deepEqual(grant.metadata, { campaign: "spring" });
    const tx = effect.transactions[0]!;
    assert.equal(tx.id, "txn_000002");
    assert.equal(tx.kind, "grant");
    assert.equal(tx.customerId, CUS);
    assert.equal(tx.postedAt, NOW);
    assert.equal(tx.reason, null);
    assert.equal(tx.reversesId, null);
    assert.deepEqual(tx.entries, [
      entry({ kind: "system", name: "issuance" }, -credits(10n)),
      entry(grantAccount(grant.id, "wal_a"), credits(10n)),
    ]);
    assert.ok(isBalanced(tx.entries));
  });

  test("a credit adjustment needs a reason and records it", () => {
    for (const reason of [undefined, null, "", "   "]) {
      expectFail(
        issueGrant(ctx(), CUS, input({ source: "adjustment" }), { kind: "adjustment.credit", reason }),
        "invalid_argument",
        /reason/,
      );
    }
    const effect = okValue(
      issueGrant(ctx(), CUS, input({ source: "adjustment" }), {
        kind: "adjustment.credit",
        reason: "goodwill",
      }),
    );
    assert.equal(effect.transactions[0]!.kind, "adjustment.credit");
    assert.equal(effect.transactions[0]!.reason, "goodwill");
    expectFail(
      issueGrant(ctx(), CUS, input(), { kind: "adjustment.credit", reason: "x".repeat(501) }),
      "invalid_argument",
      /reason/,
    );
  });

  test("invalid_amount for a non-positive or out-of-range amount or cost basis", () => {
    for (const amount of [0n, -1n, MAX_AMOUNT + 1n])
      expectFail(issueGrant(ctx(), CUS, input({ amount })), "invalid_amount");
    okValue(issueGrant(ctx(), CUS, input({ amount: MAX_AMOUNT })));
    okValue(issueGrant(ctx(), CUS, input({ amount: 1n })));
    expectFail(issueGrant(ctx(), CUS, input({ costBasis: -1n, currency: "USD" })), "invalid_amount");
    expectFail(
      issueGrant(ctx(), CUS, input({ costBasis: MAX_AMOUNT + 1n, currency: "USD" })),
      "invalid_amount",
    );
  });

  test("invalid_argument for a bad currency, or a cost basis without one", () => {
    for (const currency of ["usd", "US", "USDT", "U$D", ""])
      expectFail(issueGrant(ctx(), CUS, input({ costBasis: 5n, currency })), "invalid_argument", /ISO 4217/);
    expectFail(issueGrant(ctx(), CUS, input({ costBasis: 5n })), "invalid_argument", /currency/);
    const g = issued({ costBasis: 5n, currency: "EUR" });
    assert.equal(g.costBasis, 5n);
    assert.equal(g.currency, "EUR");
  });

  test("invalid_argument for an expiry in the past, at now, or not after effectiveAt", () => {
    expectFail(issueGrant(ctx(), CUS, input({ expiresAt: NOW - 1 })), "invalid_argument");
    expectFail(issueGrant(ctx(), CUS, input({ expiresAt: NOW })), "invalid_argument");
    expectFail(
      issueGrant(ctx(), CUS, input({ effectiveAt: NOW - 100, expiresAt: NOW })),
      "invalid_argument",
      /past/,
    );
    expectFail(
      issueGrant(ctx(), CUS, input({ effectiveAt: NOW - 100, expiresAt: NOW - 1 })),
      "invalid_argument",
      /past/,
    );
    expectFail(
      issueGrant(ctx(), CUS, input({ effectiveAt: NOW + 100, expiresAt: NOW + 100 })),
      "invalid_argument",
      /after effective_at/,
    );
    expectFail(
      issueGrant(ctx(), CUS, input({ effectiveAt: NOW + 100, expiresAt: NOW + 50 })),
      "invalid_argument",
      /after effective_at/,
    );
    const future = issued({ effectiveAt: NOW + 100, expiresAt: NOW + 101 });
    assert.equal(future.effectiveAt, NOW + 100);
    assert.equal(future.expiresAt, NOW + 101);
    assert.equal(issued({ effectiveAt: NOW - 100, expiresAt: NOW + 1 }).expiresAt, NOW + 1);
  });

  test("invalid_argument for times that are not epoch milliseconds", () => {
    for (const t of [Number.NaN, Number.POSITIVE_INFINITY, 1.5]) {
      expectFail(issueGrant(ctx(), CUS, input({ expiresAt: t })), "invalid_argument");
      expectFail(issueGrant(ctx(), CUS, input({ effectiveAt: t })), "invalid_argument");
    }
    expectFail(issueGrant(ctx(), CUS, input({ effectiveAt: Number.NEGATIVE_INFINITY })), "invalid_argument");
  });

  test("invalid_argument for a bad priority", () => {
    for (const priority of [-1, 101, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
      expectFail(issueGrant(ctx(), CUS, input({ priority })), "invalid_argument", /priority/);
    assert.equal(issued({ priority: 0 }).priority, 0);
    assert.equal(issued({ priority: 100 }).priority, 100);
  });

  test("invalid_argument for a bad scope", () => {
    expectFail(issueGrant(ctx(), CUS, input({ scope: [] })), "invalid_argument", /scope/);
    const tooMany = Array.from({ length: 51 }, (_, i) => `a${i}`);
    expectFail(issueGrant(ctx(), CUS, input({ scope: tooMany })), "invalid_argument", /scope/);
    for (const pattern of ["*", "Chat", "image.", "a.*.b", " chat", ""])
      expectFail(issueGrant(ctx(), CUS, input({ scope: ["chat", pattern] })), "invalid_argument", /pattern/);
    assert.equal(issued({ scope: tooMany.slice(0, 50) }).scope?.length, 50);
    assert.equal(issued({ scope: null }).scope, null);
  });

  test("invalid_argument for bad metadata", () => {
    const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, "v"]));
    expectFail(issueGrant(ctx(), CUS, input({ metadata: many })), "invalid_argument", /metadata/);
    expectFail(issueGrant(ctx(), CUS, input({ metadata: { "": "v" } })), "invalid_argument", /metadata/);
    expectFail(issueGrant(ctx(), CUS, input({ metadata: { ["k".repeat(41)]: "v" } })), "invalid_argument");
    expectFail(issueGrant(ctx(), CUS, input({ metadata: { k: "v".repeat(501) } })), "invalid_argument");
    expectFail(
      issueGrant(ctx(), CUS, input({ metadata: { k: 1 as unknown as string } })),
      "invalid_argument",
      /metadata/,
    );
    okValue(issueGrant(ctx(), CUS, input({ metadata: { ["k".repeat(40)]: "v".repeat(500) } })));
  });
});

describe("expireDue", () => {
  test("nothing due: an empty effect", () => {
    const g = issued({ expiresAt: NOW + 10 });
    assert.deepEqual(expireDue(ctx(NOW + 9), CUS, [g]), {
      transactions: [],
      newGrants: [],
      statusChanges: [],
      grantChanges: [],
    });
  });

  test("moves every due remainder to breakage in one transaction, in id order", () => {
    const c = ctx();
    const a = issued({ amount: 5n, expiresAt: NOW + 10 }, c);
    const b = issued({ amount: 7n, expiresAt: NOW + 5, walletId: "wal_b" }, c);
    const later = issued({ amount: 3n, expiresAt: NOW + 11 }, c);
    const never = issued({ amount: 3n }, c);
    const voided = { ...issued({ amount: 3n, expiresAt: NOW + 1 }, c), status: "voided" as const };
    const empty = { ...issued({ amount: 4n, expiresAt: NOW + 1 }, c), remaining: 0n };
    const effect = expireDue(ctx(NOW + 10), CUS, [later, b, never, voided, empty, a]);
    assert.deepEqual(
      effect.statusChanges,
      [a, b, empty].map((g) => ({ grantId: g.id, status: "expired" })),
    );
    assert.equal(effect.transactions.length, 1);
    const tx = effect.transactions[0]!;
    assert.equal(tx.kind, "expire");
    assert.equal(tx.postedAt, NOW + 10);
    assert.deepEqual(tx.entries, [
      entry(grantAccount(a.id, "wal_a"), -5n),
      entry(grantAccount(b.id, "wal_b"), -7n),
      entry({ kind: "system", name: "breakage" }, 12n),
    ]);
    const after = applyEffect(new Map([a, b, empty].map((g) => [g.id, g])), effect);
    assert.equal(after.get(a.id)?.status, "expired");
    assert.equal(after.get(a.id)?.remaining, 0n);
    // Once expired, a grant is never due again.
    assert.deepEqual(expireDue(ctx(NOW + 20), CUS, [...after.values()]).statusChanges, []);
  });

  test("only empty grants due: status changes without a transaction", () => {
    const g = { ...issued({ expiresAt: NOW + 1 }), remaining: 0n };
    const effect = expireDue(ctx(NOW + 1), CUS, [g]);
    assert.deepEqual(effect.transactions, []);
    assert.deepEqual(effect.statusChanges, [{ grantId: g.id, status: "expired" }]);
  });
});

describe("voidGrant", () => {
  test("moves the remainder to the voided account", () => {
    const g = { ...issued({ amount: 10n }), remaining: 4n };
    const effect = okValue(voidGrant(ctx(), CUS, g, "fraud"));
    assert.equal(effect.transactions.length, 1);
    assert.equal(effect.transactions[0]!.kind, "void");
    assert.equal(effect.transactions[0]!.reason, "fraud");
    assert.deepEqual(effect.transactions[0]!.entries, [
      entry(grantAccount(g.id, g.walletId), -4n),
      entry({ kind: "system", name: "voided" }, 4n),
    ]);
    assert.deepEqual(effect.statusChanges, [{ grantId: g.id, status: "voided" }]);
    const after = applyEffect(new Map([[g.id, g]]), effect).get(g.id);
    assert.equal(after?.remaining, 0n);
    assert.equal(after?.status, "voided");
  });

  test("an empty grant is voided without a transaction", () => {
    const g = { ...issued(), remaining: 0n };
    const effect = okValue(voidGrant(ctx(), CUS, g, null));
    assert.deepEqual(effect.transactions, []);
    assert.deepEqual(effect.statusChanges, [{ grantId: g.id, status: "voided" }]);
  });

  test("grant_inactive on a voided grant, grant_expired on an expired or overdue one", () => {
    const g = issued({ expiresAt: NOW + 10 });
    const err = expectFail(voidGrant(ctx(), CUS, { ...g, status: "voided" }, "x"), "grant_inactive");
    assert.deepEqual(err.details, { grant_id: g.id, status: "voided" });
    expectFail(voidGrant(ctx(), CUS, { ...g, status: "expired" }, "x"), "grant_expired");
    const overdue = expectFail(voidGrant(ctx(NOW + 10), CUS, g, "x"), "grant_expired");
    assert.deepEqual(overdue.details, { grant_id: g.id, status: "expired" });
    okValue(voidGrant(ctx(NOW + 9), CUS, g, "x"));
  });

  test("invalid_argument for an over-long reason", () => {
    expectFail(voidGrant(ctx(), CUS, issued(), "x".repeat(501)), "invalid_argument", /reason/);
  });
});

describe("extendExpiry", () => {
  test("records the change, and may remove the expiry", () => {
    const g = issued({ expiresAt: NOW + 10 });
    const c = ctxAt(NOW + 5);
    const effect = okValue(extendExpiry(c, g, NOW + 100, "contract extended"));
    assert.deepEqual(effect.transactions, []);
    assert.deepEqual(effect.grantChanges, [
      {
        id: "chg_000001",
        grantId: g.id,
        kind: "expiry_extended",
        from: NOW + 10,
        to: NOW + 100,
        reason: "contract extended",
        at: NOW + 5,
      },
    ]);
    assert.equal(applyEffect(new Map([[g.id, g]]), effect).get(g.id)?.expiresAt, NOW + 100);
    const forever = okValue(extendExpiry(ctx(), g, null, "no expiry"));
    assert.equal(applyEffect(new Map([[g.id, g]]), forever).get(g.id)?.expiresAt, null);
  });

  test("invalid_argument without a reason", () => {
    const g = issued({ expiresAt: NOW + 10 });
    for (const reason of ["", "  ", null as unknown as string, undefined as unknown as string])
      expectFail(extendExpiry(ctx(), g, NOW + 20, reason), "invalid_argument", /reason/);
  });

  test("invalid_argument for a time that is not epoch milliseconds", () => {
    const g = issued({ expiresAt: NOW + 10 });
    for (const t of [Number.NaN, Number.POSITIVE_INFINITY, NOW + 20.5])
      expectFail(extendExpiry(ctx(), g, t, "x"), "invalid_argument");
  });

  test("expiry_not_extendable for a never-expiring grant or a time not later", () => {
    expectFail(extendExpiry(ctx(), issued(), NOW + 20, "x"), "expiry_not_extendable", /never expires/);
    const g = issued({ expiresAt: NOW + 10 });
    expectFail(extendExpiry(ctx(), g, NOW + 10, "x"), "expiry_not_extendable", /never shortened/);
    expectFail(extendExpiry(ctx(), g, NOW + 9, "x"), "expiry_not_extendable");
    okValue(extendExpiry(ctx(), g, NOW + 11, "x"));
  });

  test("grant_inactive on a voided grant; grant_expired once expiry has passed", () => {
    const g = issued({ expiresAt: NOW + 10 });
    expectFail(extendExpiry(ctx(), { ...g, status: "voided" }, NOW + 20, "x"), "grant_inactive");
    expectFail(extendExpiry(ctx(), { ...g, status: "expired" }, NOW + 20, "x"), "grant_expired");
    expectFail(extendExpiry(ctx(NOW + 10), g, NOW + 20, "x"), "grant_expired");
  });
});

describe("debit", () => {
  const wallet = (grants: Grant[], walletId = "wal_a"): DrawSource => ({ walletId, grants });
  const g1 = makeGrant({ id: "grt_1", amount: 10n, priority: 10 });
  const g2 = makeGrant({ id: "grt_2", amount: 10n, priority: 20, scope: ["image.*"] });
  const g3 = makeGrant({ id: "grt_3", amount: 10n, priority: 30 });

  test("draws in burn-down order and books consumption", () => {
    const effect = okValue(
      debit(ctx(), [wallet([g3, g2, g1])], {
        customerId: CUS,
        amount: 25n,
        action: "image.gen",
        kind: "debit",
      }),
    );
    const tx = effect.transactions[0]!;
    assert.equal(tx.kind, "debit");
    assert.equal(tx.action, "image.gen");
    assert.equal(tx.reason, null);
    assert.deepEqual(tx.entries, [
      entry(grantAccount("grt_1", "wal_a"), -10n),
      entry(grantAccount("grt_2", "wal_a"), -10n),
      entry(grantAccount("grt_3", "wal_a"), -5n),
      entry({ kind: "system", name: "consumption" }, 25n),
    ]);
  });

  test("an adjustment debit needs a reason and books to adjustments", () => {
    const base = { customerId: CUS, amount: 5n, action: null, kind: "adjustment.debit" } as const;
    for (const reason of [undefined, null, "", " "])
      expectFail(debit(ctx(), [wallet([g1])], { ...base, reason }), "invalid_argument", /reason/);
    const tx = okValue(debit(ctx(), [wallet([g1])], { ...base, reason: "correction" })).transactions[0]!;
    assert.equal(tx.kind, "adjustment.debit");
    assert.equal(tx.reason, "correction");
    assert.deepEqual(tx.entries.at(-1), entry({ kind: "system", name: "adjustments" }, 5n));
  });

  test("invalid_amount for zero, negative or out-of-range amounts", () => {
    for (const amount of [0n, -5n, MAX_AMOUNT + 1n])
      expectFail(
        debit(ctx(), [wallet([g1])], { customerId: CUS, amount, action: null, kind: "debit" }),
        "invalid_amount",
      );
  });

  test("insufficient_credits with requested and available, counting only eligible grants", () => {
    const err = expectFail(
      debit(ctx(), [wallet([g1, g2, g3])], { customerId: CUS, amount: 21n, action: "chat", kind: "debit" }),
      "insufficient_credits",
    );
    assert.deepEqual(err.details, { requested: "0.000000021", available: "0.00000002" });
    const none = expectFail(
      debit(ctx(), [wallet([g2])], { customerId: CUS, amount: 1n, action: null, kind: "debit" }),
      "insufficient_credits",
    );
    assert.deepEqual(none.details, { requested: "0.000000001", available: "0" });
    const empty = expectFail(
      debit(ctx(), [], { customerId: CUS, amount: 1n, action: null, kind: "debit" }),
      "insufficient_credits",
    );
    assert.equal(empty.details?.available, "0");
    okValue(
      debit(ctx(), [wallet([g1, g2, g3])], { customerId: CUS, amount: 20n, action: "chat", kind: "debit" }),
    );
  });

  test("a member draws its own grants, then the pool", () => {
    const own = makeGrant({ id: "grt_9", walletId: "wal_m", amount: 5n, priority: 100 });
    const pool = makeGrant({ id: "grt_0", walletId: "wal_p", amount: 50n, priority: 0 });
    const tx = okValue(
      debit(ctx(), [wallet([own], "wal_m"), wallet([pool], "wal_p")], {
        customerId: CUS,
        amount: 8n,
        action: null,
        kind: "debit",
      }),
    ).transactions[0]!;
    assert.deepEqual(
      walletDeltas(tx.entries),
      new Map([
        ["wal_m", -5n],
        ["wal_p", -3n],
      ]),
    );
  });

  test("a targeted debit draws only that grant", () => {
    const tx = okValue(
      debit(ctx(), [wallet([g1, g3])], {
        customerId: CUS,
        amount: 4n,
        action: null,
        kind: "debit",
        grantId: "grt_3",
      }),
    ).transactions[0]!;
    assert.deepEqual(grantDeltas(tx.entries), new Map([["grt_3", -4n]]));
    expectFail(
      debit(ctx(), [wallet([g1, g3])], {
        customerId: CUS,
        amount: 11n,
        action: null,
        kind: "debit",
        grantId: "grt_3",
      }),
      "insufficient_credits",
    );
  });

  test("wallet_mismatch for a grant not in the sources", () => {
    const err = expectFail(
      debit(ctx(), [wallet([g1])], {
        customerId: CUS,
        amount: 1n,
        action: null,
        kind: "debit",
        grantId: "grt_x",
      }),
      "wallet_mismatch",
    );
    assert.deepEqual(err.details, { grant_id: "grt_x" });
  });

  test("grant_inactive or grant_expired for a targeted grant that cannot be drawn", () => {
    const base = { customerId: CUS, amount: 1n, action: null, kind: "debit", grantId: "grt_1" } as const;
    expectFail(debit(ctx(), [wallet([{ ...g1, status: "voided" }])], base), "grant_inactive");
    expectFail(debit(ctx(), [wallet([{ ...g1, status: "expired" }])], base), "grant_expired");
    expectFail(debit(ctx(), [wallet([{ ...g1, expiresAt: NOW }])], base), "grant_expired");
  });

  test("voided, expired, overdue and future grants are never drawn", () => {
    const grants = [
      { ...g1, status: "voided" as const },
      { ...g2, scope: null, status: "expired" as const },
      { ...g3, expiresAt: NOW },
      makeGrant({ id: "grt_4", effectiveAt: NOW + 1 }),
    ];
    const err = expectFail(
      debit(ctx(), [wallet(grants)], { customerId: CUS, amount: 1n, action: null, kind: "debit" }),
      "insufficient_credits",
    );
    assert.equal(err.details?.available, "0");
  });
});

describe("reverse", () => {
  const g = makeGrant({ id: "grt_1", amount: 10n, remaining: 0n, expiresAt: NOW + 100 });
  const h = makeGrant({ id: "grt_2", walletId: "wal_b", amount: 10n, remaining: 4n });
  const grants = new Map([
    [g.id, g],
    [h.id, h],
  ]);
  const original = okValue(
    debit(
      ctx(NOW - 10),
      [
        { walletId: "wal_a", grants: [{ ...g, remaining: 10n }] },
        { walletId: "wal_b", grants: [{ ...h, remaining: 10n }] },
      ],
      {
        customerId: CUS,
        amount: 16n,
        action: "chat",
        kind: "debit",
      },
    ),
  ).transactions[0]!;

  test("negates the entries in a new transaction that names the original", () => {
    const effect = okValue(
      reverse(
        ctxAt(NOW, () => "txn_reversal"),
        original,
        grants,
        false,
        "refund",
      ),
    );
    const tx = effect.transactions[0]!;
    assert.equal(tx.kind, "reversal");
    assert.equal(tx.reversesId, original.id);
    assert.equal(tx.reason, "refund");
    assert.equal(tx.action, "chat");
    assert.equal(tx.postedAt, NOW);
    assert.notEqual(tx.id, original.id);
    assert.deepEqual(
      tx.entries,
      original.entries.map((e) => ({ ...e, amount: -e.amount })),
    );
    const after = applyEffect(grants, effect);
    assert.equal(after.get(g.id)?.remaining, 10n);
    assert.equal(after.get(h.id)?.remaining, 10n);
  });

  test("invalid_argument without a reason", () => {
    for (const reason of ["", "  ", null as unknown as string])
      expectFail(reverse(ctx(), original, grants, false, reason), "invalid_argument", /reason/);
  });

  test("transaction_not_reversible for grant, void, expire and reversal transactions", () => {
    const issue = okValue(issueGrant(ctx(), CUS, input())).transactions[0]!;
    expectFail(reverse(ctx(), issue, grants, false, "x"), "transaction_not_reversible", /void the grant/);
    const credit = okValue(
      issueGrant(
        ctx(),
        CUS,
        { ...input(), source: "adjustment" },
        { kind: "adjustment.credit", reason: "x" },
      ),
    ).transactions[0]!;
    expectFail(reverse(ctx(), credit, grants, false, "x"), "transaction_not_reversible");
    const voided = okValue(voidGrant(ctx(), CUS, { ...g, remaining: 3n }, "x")).transactions[0]!;
    expectFail(reverse(ctx(), voided, grants, false, "x"), "transaction_not_reversible");
    const expired = expireDue(ctx(NOW + 100), CUS, [{ ...g, remaining: 3n }]).transactions[0]!;
    expectFail(reverse(ctx(), expired, grants, false, "x"), "transaction_not_reversible");
    const reversal = okValue(reverse(ctx(), original, grants, false, "x")).transactions[0]!;
    expectFail(reverse(ctx(), reversal, grants, false, "x"), "transaction_not_reversible");
  });

  test("transaction_already_reversed the second time", () => {
    expectFail(reverse(ctx(), original, grants, true, "again"), "transaction_already_reversed");
  });

  test("grant_inactive or grant_expired when a drawn grant can no longer take credits back", () => {
    const voided = new Map(grants).set(g.id, { ...g, status: "voided" });
    expectFail(reverse(ctx(), original, voided, false, "x"), "grant_inactive");
    const expired = new Map(grants).set(h.id, { ...h, status: "expired" });
    expectFail(reverse(ctx(), original, expired, false, "x"), "grant_expired");
    expectFail(reverse(ctx(NOW + 100), original, grants, false, "x"), "grant_expired");
  });

  test("an adjustment debit is reversible too", () => {
    const adj = okValue(
      debit(ctx(), [{ walletId: "wal_b", grants: [h] }], {
        customerId: CUS,
        amount: 1n,
        action: null,
        kind: "adjustment.debit",
        reason: "fix",
      }),
    ).transactions[0]!;
    const tx = okValue(reverse(ctx(), adj, grants, false, "undo")).transactions[0]!;
    assert.deepEqual(sumsPerUnit(tx.entries), new Map([["credit", 0n]]));
  });
});

describe("journal helpers", () => {
  const a = grantAccount("grt_1", "wal_a");
  const b = grantAccount("grt_2", "wal_b");
  const issuance = { kind: "system", name: "issuance" } as const;

  test("isBalanced needs two or more non-zero entries summing to zero per unit", () => {
    assert.ok(isBalanced([entry(issuance, -5n), entry(a, 5n)]));
    assert.ok(isBalanced([entry(issuance, -5n), entry(a, 2n), entry(b, 3n)]));
    assert.ok(!isBalanced([]));
    assert.ok(!isBalanced([entry(a, 0n)]));
    assert.ok(!isBalanced([entry(issuance, -5n), entry(a, 4n)]));
    assert.ok(!isBalanced([entry(issuance, 0n), entry(a, 0n)]));
    assert.ok(!isBalanced([entry(issuance, -5n), entry(a, 5n), entry(b, 0n)]));
  });

  test("deltas per wallet and per grant ignore system accounts", () => {
    const entries = [entry(issuance, -8n), entry(a, 5n), entry(b, 2n), entry(a, 1n)];
    assert.deepEqual(
      walletDeltas(entries),
      new Map([
        ["wal_a", 6n],
        ["wal_b", 2n],
      ]),
    );
    assert.deepEqual(
      grantDeltas(entries),
      new Map([
        ["grt_1", 6n],
        ["grt_2", 2n],
      ]),
    );
    assert.equal(accountName(a), "grant");
    assert.equal(accountName(issuance), "issuance");
  });

  test("wallets given credits are those with a credit to one of their grants, never a draw or a system account", () => {
    const hold = { kind: "hold", walletId: "wal_c" } as const;
    // A settle: the hold account pays consumption and gives the rest back to grt_1 (wal_a);
    // wal_b's grant is only drawn; wal_c's hold account is no grant.
    const entries = [entry(hold, -5n), entry(issuance, 2n), entry(a, 3n), entry(b, -1n), entry(issuance, 1n)];
    assert.deepEqual(walletsGivenCredits(entries), new Set(["wal_a"]));
    assert.deepEqual(walletsGivenCredits([entry(b, -4n), entry(issuance, 4n)]), new Set());
  });

  test("invariant throws InvariantViolation", () => {
    assert.throws(() => invariant(false, "broken"), InvariantViolation);
    assert.doesNotThrow(() => invariant(true, "fine"));
  });

  test("applyEffect rejects an effect that would overdraw a grant, and combine keeps order", () => {
    const g = makeGrant({ id: "grt_1", walletId: "wal_a", amount: 5n, remaining: 2n });
    const over: Effect = {
      transactions: [
        {
          id: "txn_x",
          kind: "debit",
          customerId: CUS,
          postedAt: NOW,
          reason: null,
          reversesId: null,
          action: null,
          entries: [entry(a, -3n), entry({ kind: "system", name: "consumption" }, 3n)],
        },
      ],
      newGrants: [],
      statusChanges: [],
      grantChanges: [],
    };
    assert.throws(() => applyEffect(new Map([[g.id, g]]), over), InvariantViolation);
    assert.throws(() => applyEffect(new Map(), over), InvariantViolation);
    const e1 = okValue(issueGrant(ctx(), CUS, input()));
    const e2 = okValue(issueGrant(ctx(), CUS, input()));
    const both = combine(e1, e2);
    assert.deepEqual(both.transactions, [...e1.transactions, ...e2.transactions]);
    assert.deepEqual(both.newGrants, [...e1.newGrants, ...e2.newGrants]);
  });
});
