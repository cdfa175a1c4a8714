import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  compareBurnOrder,
  type Draw,
  type DrawSource,
  drawable,
  type Grant,
  isDueToExpire,
  isEligible,
  planDraws,
  SCOPE_PATTERN,
  scopeAdmits,
} from "../src/index.js";
import { makeGrant, sign } from "./support.js";

/** Asserts that `first` sorts strictly before `second`, both ways round. */
function before(first: Grant, second: Grant): void {
  assert.ok(compareBurnOrder(first, second) < 0, `${first.id} should burn before ${second.id}`);
  assert.ok(compareBurnOrder(second, first) > 0, `${second.id} should burn after ${first.id}`);
}

describe("compareBurnOrder rules", () => {
  test("1. lower priority number first, above every later rule", () => {
    const a = makeGrant({ id: "grt_z", priority: 10, scope: null, expiresAt: null, costBasis: 9n });
    const b = makeGrant({ id: "grt_a", priority: 20, scope: ["chat"], expiresAt: 5, costBasis: 0n });
    before(a, b);
    before(makeGrant({ id: "grt_b", priority: 0 }), makeGrant({ id: "grt_a", priority: 100 }));
  });

  test("2. scoped before unscoped, above expiry, cost and time", () => {
    const scoped = makeGrant({
      id: "grt_z",
      scope: ["image.*"],
      expiresAt: null,
      costBasis: 5n,
      effectiveAt: 9,
    });
    const unscoped = makeGrant({ id: "grt_a", scope: null, expiresAt: 10, costBasis: 0n, effectiveAt: 1 });
    before(scoped, unscoped);
    // Narrowness among scoped grants is not ranked: a one-item and a two-item scope tie here.
    const one = makeGrant({ id: "grt_a", scope: ["chat"] });
    const two = makeGrant({ id: "grt_b", scope: ["chat", "image.*"] });
    before(one, two);
  });

  test("3. soonest expiry first, never-expiring last", () => {
    const soon = makeGrant({ id: "grt_z", expiresAt: 1_000, costBasis: 7n, effectiveAt: 500 });
    const later = makeGrant({ id: "grt_y", expiresAt: 2_000, costBasis: 0n, effectiveAt: 0 });
    const never = makeGrant({ id: "grt_a", expiresAt: null, costBasis: 0n, effectiveAt: 0 });
    before(soon, later);
    before(later, never);
    before(soon, never);
  });

  test("4. lower cost basis first (free before paid)", () => {
    const free = makeGrant({ id: "grt_z", costBasis: 0n, effectiveAt: 99 });
    const cheap = makeGrant({ id: "grt_y", costBasis: 1n, currency: "USD", effectiveAt: 0 });
    const dear = makeGrant({ id: "grt_a", costBasis: 10n ** 20n, currency: "USD", effectiveAt: 0 });
    before(free, cheap);
    before(cheap, dear);
  });

  test("5. earliest effectiveAt first", () => {
    before(makeGrant({ id: "grt_z", effectiveAt: 100 }), makeGrant({ id: "grt_a", effectiveAt: 200 }));
  });

  test("6. then grant id, as strings", () => {
    before(makeGrant({ id: "grt_000001" }), makeGrant({ id: "grt_000002" }));
    before(makeGrant({ id: "grt_10" }), makeGrant({ id: "grt_9" }));
    before(makeGrant({ id: "grt_A" }), makeGrant({ id: "grt_a" }));
    const g = makeGrant({ id: "grt_same" });
    assert.equal(compareBurnOrder(g, { ...g }), 0);
  });
});

describe("scopeAdmits", () => {
  test("null scope admits every action, and no action", () => {
    assert.ok(scopeAdmits(null, "chat"));
    assert.ok(scopeAdmits(null, "image.upscale"));
    assert.ok(scopeAdmits(null, null));
  });

  test("a scoped grant needs an action", () => {
    assert.ok(!scopeAdmits(["chat"], null));
    assert.ok(!scopeAdmits(["image.*"], null));
  });

  test("exact names match exactly", () => {
    assert.ok(scopeAdmits(["chat.completion"], "chat.completion"));
    assert.ok(scopeAdmits(["a", "chat.completion"], "chat.completion"));
    assert.ok(!scopeAdmits(["chat.completion"], "chat"));
    assert.ok(!scopeAdmits(["chat.completion"], "chat.completion.stream"));
    assert.ok(!scopeAdmits(["chat"], "chat.completion"));
    assert.ok(!scopeAdmits(["chat"], "chatter"));
    assert.ok(!scopeAdmits(["Chat"], "chat"));
  });

  test("`prefix.*` admits actions under the prefix, not the prefix itself or lookalikes", () => {
    assert.ok(scopeAdmits(["image.*"], "image.upscale"));
    assert.ok(scopeAdmits(["image.*"], "image.gen.hd"));
    assert.ok(scopeAdmits(["chat", "image.*"], "image.x"));
    assert.ok(scopeAdmits(["a.b.*"], "a.b.c"));
    assert.ok(!scopeAdmits(["image.*"], "image"));
    assert.ok(!scopeAdmits(["image.*"], "imagery.x"));
    assert.ok(!scopeAdmits(["image.*"], "images"));
    assert.ok(!scopeAdmits(["a.b.*"], "a.c"));
  });

  test("SCOPE_PATTERN accepts names and trailing wildcards only", () => {
    for (const p of ["chat", "chat.completion", "image.*", "a.b.*", "tool:search", "gpt-4o", "x_1.y"])
      assert.match(p, SCOPE_PATTERN);
    for (const p of ["*", ".*", "image.", "image*", "a.*.b", "Chat", "", " chat", "a..b", "-a"])
      assert.doesNotMatch(p, SCOPE_PATTERN);
  });
});

describe("eligibility", () => {
  const now = 1_000;
  test("active, effective, unexpired, remaining above zero, admitted by scope", () => {
    const base = makeGrant({ id: "grt_1", effectiveAt: now, expiresAt: now + 1 });
    assert.ok(isEligible(base, null, now));
    assert.ok(!isEligible({ ...base, status: "voided" }, null, now));
    assert.ok(!isEligible({ ...base, status: "expired" }, null, now));
    assert.ok(!isEligible({ ...base, remaining: 0n }, null, now));
    assert.ok(!isEligible({ ...base, effectiveAt: now + 1, expiresAt: now + 2 }, null, now));
    assert.ok(!isEligible({ ...base, expiresAt: now }, null, now));
    assert.ok(!isEligible({ ...base, scope: ["chat"] }, null, now));
    assert.ok(isEligible({ ...base, scope: ["chat"] }, "chat", now));
  });

  test("isDueToExpire: active with expiry at or before now", () => {
    const g = makeGrant({ id: "grt_1", expiresAt: now });
    assert.ok(isDueToExpire(g, now));
    assert.ok(!isDueToExpire(g, now - 1));
    assert.ok(!isDueToExpire({ ...g, status: "voided" }, now));
    assert.ok(!isDueToExpire({ ...g, status: "expired" }, now));
    assert.ok(!isDueToExpire({ ...g, expiresAt: null }, now));
  });
});

describe("planDraws examples", () => {
  test("draws a member's own grants first, then the pool, each grant to zero before the next", () => {
    const member: DrawSource = {
      walletId: "wal_m",
      grants: [
        makeGrant({ id: "grt_m2", walletId: "wal_m", amount: 30n, priority: 60 }),
        makeGrant({ id: "grt_m1", walletId: "wal_m", amount: 20n, priority: 40 }),
      ],
    };
    const pool: DrawSource = {
      walletId: "wal_p",
      grants: [makeGrant({ id: "grt_p1", walletId: "wal_p", amount: 100n, priority: 0 })],
    };
    const plan = planDraws([member, pool], 70n, null, 0);
    assert.deepEqual(plan, {
      draws: [
        { grantId: "grt_m1", walletId: "wal_m", amount: 20n },
        { grantId: "grt_m2", walletId: "wal_m", amount: 30n },
        { grantId: "grt_p1", walletId: "wal_p", amount: 20n },
      ],
      shortfall: 0n,
    });
    assert.deepEqual(planDraws([member, pool], 200n, null, 0).shortfall, 50n);
    assert.equal(drawable([member, pool], null, 0), 150n);
  });

  test("skips grants the scope does not admit", () => {
    const src: DrawSource = {
      walletId: "wal_a",
      grants: [
        makeGrant({ id: "grt_1", scope: ["image.*"], amount: 10n }),
        makeGrant({ id: "grt_2", scope: null, amount: 10n }),
      ],
    };
    assert.deepEqual(planDraws([src], 15n, "chat", 0), {
      draws: [{ grantId: "grt_2", walletId: "wal_a", amount: 10n }],
      shortfall: 5n,
    });
    assert.deepEqual(planDraws([src], 15n, "image.x", 0).draws, [
      { grantId: "grt_1", walletId: "wal_a", amount: 10n },
      { grantId: "grt_2", walletId: "wal_a", amount: 5n },
    ]);
  });

  test("an empty plan for no sources", () => {
    assert.deepEqual(planDraws([], 5n, null, 0), { draws: [], shortfall: 5n });
  });
});

// ---------------------------------------------------------------------------------------------
// Properties against an independent reference.

const ACTIONS = ["chat", "chat.completion", "image.upscale", "image.gen", "tool.search", null] as const;
const PATTERNS = ["chat", "chat.*", "chat.completion", "image.*", "image.upscale", "tool.search"] as const;
const NOW = 10_000;

/** The documented order written again as a tuple key: compared element by element. */
type Key = readonly [number, number, number, bigint, number, string];
const key = (g: Grant): Key => [
  g.priority,
  g.scope === null ? 1 : 0,
  g.expiresAt === null ? Number.POSITIVE_INFINITY : g.expiresAt,
  g.costBasis,
  g.effectiveAt,
  g.id,
];
function compareKeys(a: Key, b: Key): number {
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return 0;
}

function refAdmits(scope: readonly string[] | null, action: string | null): boolean {
  if (scope === null) return true;
  if (action === null) return false;
  return scope.some((p) => p === action || (p.endsWith(".*") && action.startsWith(`${p.slice(0, -2)}.`)));
}

function refEligible(g: Grant, action: string | null, now: number): boolean {
  if (g.status !== "active" || g.remaining <= 0n) return false;
  if (now < g.effectiveAt) return false;
  if (g.expiresAt !== null && g.expiresAt <= now) return false;
  return refAdmits(g.scope, action);
}

function referencePlan(sources: readonly DrawSource[], amount: bigint, action: string | null, now: number) {
  const draws: Draw[] = [];
  let left = amount;
  for (const s of sources) {
    const sorted = s.grants
      .filter((g) => refEligible(g, action, now))
      .map((g) => ({ g, k: key(g) }))
      .sort((a, b) => compareKeys(a.k, b.k));
    for (const { g } of sorted) {
      if (left === 0n) break;
      let take = left; // Math.min does not take bigints
      if (g.remaining < take) take = g.remaining;
      draws.push({ grantId: g.id, walletId: s.walletId, amount: take });
      left -= take;
    }
  }
  return { draws, shortfall: left };
}

/** Grants with fields from small domains, so every rule's ties occur often. */
const grantFields = fc.record({
  amount: fc.bigInt({ min: 1n, max: 50n }),
  used: fc.nat({ max: 100 }),
  priority: fc.constantFrom(0, 10, 50, 100),
  scope: fc.option(fc.uniqueArray(fc.constantFrom(...PATTERNS), { minLength: 1, maxLength: 3 }), {
    nil: null,
  }),
  expiresAt: fc.option(fc.constantFrom(NOW - 1, NOW, NOW + 1, NOW + 500, NOW + 1000), { nil: null }),
  costBasis: fc.constantFrom(0n, 0n, 1n, 2n, 10n ** 18n),
  effectiveAt: fc.constantFrom(0, 5_000, NOW, NOW + 1),
  status: fc.constantFrom("active", "active", "active", "voided", "expired"),
});

const sourcesArb = fc
  .tuple(
    fc.array(grantFields, { maxLength: 12 }),
    fc.array(grantFields, { maxLength: 12 }),
    fc.constantFrom(1, 2),
    fc.array(fc.nat({ max: 999 }), { minLength: 12, maxLength: 12 }),
  )
  .map(([first, second, count, idOrder]): DrawSource[] => {
    // Ids come from a scrambled counter so id order differs from generation order.
    let n = 0;
    const nextId = () =>
      `grt_${String(idOrder[n % idOrder.length]).padStart(3, "0")}_${String(n++).padStart(2, "0")}`;
    const build = (walletId: string, fields: typeof first) =>
      fields.map((f) =>
        makeGrant({
          id: nextId(),
          walletId,
          amount: f.amount,
          remaining: (f.amount * BigInt(f.used)) / 100n,
          priority: f.priority,
          scope: f.scope,
          expiresAt: f.expiresAt !== null && f.expiresAt <= f.effectiveAt ? null : f.expiresAt,
          costBasis: f.costBasis,
          currency: f.costBasis > 0n ? "USD" : null,
          effectiveAt: f.effectiveAt,
          status: f.status,
        }),
      );
    const member = { walletId: "wal_member", grants: build("wal_member", first) };
    const pool = { walletId: "wal_pool", grants: build("wal_pool", second) };
    return count === 2 ? [member, pool] : [pool];
  });

/** Shuffles with a list of random keys (stable and reproducible under shrinking). */
function shuffle<T>(items: readonly T[], keys: readonly number[]): T[] {
  return items
    .map((item, i) => ({ item, k: keys[i % Math.max(1, keys.length)] ?? 0, i }))
    .sort((a, b) => a.k - b.k || b.i - a.i)
    .map((x) => x.item);
}

describe("burn-down properties", () => {
  test("planDraws equals the reference greedy plan over the documented order", () => {
    fc.assert(
      fc.property(
        sourcesArb,
        fc.bigInt({ min: 1n, max: 400n }),
        fc.constantFrom(...ACTIONS),
        fc.constantFrom(NOW - 1, NOW, NOW + 1, NOW + 600),
        (sources, amount, action, now) => {
          const plan = planDraws(sources, amount, action, now);
          assert.deepEqual(plan, referencePlan(sources, amount, action, now));
          const total = plan.draws.reduce((s, d) => s + d.amount, 0n);
          assert.equal(total + plan.shortfall, amount);
          assert.ok(plan.draws.every((d) => d.amount > 0n));
          const eligibleTotal = sources
            .flatMap((s) => s.grants)
            .filter((g) => refEligible(g, action, now))
            .reduce((s, g) => s + g.remaining, 0n);
          assert.equal(drawable(sources, action, now), eligibleTotal);
          assert.equal(plan.shortfall, amount > eligibleTotal ? amount - eligibleTotal : 0n);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("the plan does not depend on the order of the input arrays", () => {
    fc.assert(
      fc.property(
        sourcesArb,
        fc.array(fc.integer(), { minLength: 1, maxLength: 12 }),
        fc.bigInt({ min: 1n, max: 400n }),
        fc.constantFrom(...ACTIONS),
        (sources, keys, amount, action) => {
          const shuffled = sources.map((s) => ({ walletId: s.walletId, grants: shuffle(s.grants, keys) }));
          const reversed = sources.map((s) => ({ walletId: s.walletId, grants: [...s.grants].reverse() }));
          const plan = planDraws(sources, amount, action, NOW);
          assert.deepEqual(planDraws(shuffled, amount, action, NOW), plan);
          assert.deepEqual(planDraws(reversed, amount, action, NOW), plan);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("compareBurnOrder is a total order consistent with the tuple key", () => {
    fc.assert(
      fc.property(sourcesArb, (sources) => {
        const grants = sources.flatMap((s) => s.grants);
        for (const a of grants) {
          for (const b of grants) {
            const c = compareBurnOrder(a, b);
            assert.equal(sign(c), sign(compareKeys(key(a), key(b))));
            assert.equal(sign(c) + sign(compareBurnOrder(b, a)), 0);
            if (a.id !== b.id) assert.notEqual(c, 0);
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  test("scopeAdmits equals the reference matcher", () => {
    fc.assert(
      fc.property(
        fc.option(fc.array(fc.constantFrom(...PATTERNS, "a.*", "a.b", "a"), { maxLength: 4 }), { nil: null }),
        fc.constantFrom(...ACTIONS, "a", "a.b", "a.b.c", "ab", "image", "chat.completion.x"),
        (scope, action) => {
          assert.equal(scopeAdmits(scope, action), refAdmits(scope, action));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
