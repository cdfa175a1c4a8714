import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  CapBook,
  type CapCounter,
  type CapEffect,
  type CapPeriod,
  type CapReservation,
  type CapState,
  capApplies,
  capCounterKey,
  capPeriodEnd,
  capPeriodStart,
  checkCapLimit,
  credits,
  type Grant,
  grantDeltas,
  type Hold,
  type HoldState,
  type JournalTransaction,
  type OveragePolicy,
  overdraftDeltas,
  type PricingAt,
  parseRateCard,
  planAuthorize,
  planRelease,
  planSettle,
  planUsage,
  type SpendCap,
  type UsageEvent,
  withCapEffect,
} from "../src/index.js";
import { counterIds, makeGrant } from "./support.js";

const HOUR = 3_600_000;
const cr = (n: number): bigint => credits(BigInt(n));

describe("cap periods", () => {
  test("a day and a month in UTC", () => {
    const t = Date.parse("2026-03-31T23:59:59.999Z");
    assert.equal(capPeriodStart("day", t), Date.parse("2026-03-31T00:00:00Z"));
    assert.equal(capPeriodEnd("day", capPeriodStart("day", t)), Date.parse("2026-04-01T00:00:00Z"));
    assert.equal(capPeriodStart("month", t), Date.parse("2026-03-01T00:00:00Z"));
    assert.equal(capPeriodEnd("month", capPeriodStart("month", t)), Date.parse("2026-04-01T00:00:00Z"));
    assert.equal(
      capPeriodEnd("month", Date.parse("2026-12-01T00:00:00Z")),
      Date.parse("2027-01-01T00:00:00Z"),
    );
  });
  test("a limit is zero or more", () => {
    assert.equal(checkCapLimit(-1n).ok, false);
    assert.equal(checkCapLimit(0n).ok, true);
  });
  test("which caps apply: a wallet's to its chain, a subject's to its charges", () => {
    const cap = (targetKind: "wallet" | "subject", targetId: string): SpendCap => ({
      id: "cap_1",
      customerId: "cus_1",
      targetKind,
      targetId,
      period: "day",
      limit: 0n,
      setBy: "vendor",
    });
    assert.equal(capApplies(cap("wallet", "wal_p"), ["wal_m", "wal_p"], "sub_m"), true);
    assert.equal(capApplies(cap("wallet", "wal_m"), ["wal_p"], null), false);
    assert.equal(capApplies(cap("subject", "sub_a"), ["wal_p"], "sub_a"), true);
    assert.equal(capApplies(cap("subject", "sub_a"), ["wal_p"], "sub_m"), false);
  });
});

// ------------------------------------------------------------------ the property

const CUSTOMER = "cus_1";
const POOL = "wal_p";
const MEMBER_WALLET = "wal_m";
const SUBJECTS = ["sub_m", "sub_a", null] as const;
type SubjectId = (typeof SUBJECTS)[number];
const chainOf = (s: SubjectId): string[] => (s === "sub_m" ? [MEMBER_WALLET, POOL] : [POOL]);

const CARD = (() => {
  const r = parseRateCard({ lines: [{ id: "run", action: "run", quantity: "tokens", rate: "1" }] });
  assert.ok(r.ok);
  return r.value;
})();
const pricingAt = (): PricingAt => ({ versionId: "rcv_1", content: CARD, overrides: [] });

type Op =
  | { kind: "event"; subject: number; tokens: number }
  | { kind: "authorize"; subject: number; estimate: number; hold: boolean; timeoutHours: number }
  | { kind: "settle"; hold: number; tokens: number }
  | { kind: "void"; hold: number }
  | { kind: "advance"; hours: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("event" as const), subject: fc.nat(2), tokens: fc.nat(6) }),
  fc.record({
    kind: fc.constant("authorize" as const),
    subject: fc.nat(2),
    estimate: fc.nat(6),
    hold: fc.boolean(),
    timeoutHours: fc.integer({ min: 1, max: 72 }),
  }),
  fc.record({ kind: fc.constant("settle" as const), hold: fc.nat(20), tokens: fc.nat(9) }),
  fc.record({ kind: fc.constant("void" as const), hold: fc.nat(20) }),
  fc.record({ kind: fc.constant("advance" as const), hours: fc.integer({ min: 1, max: 40 }) }),
);

const capArb = fc.record({
  target: fc.constantFrom("wal_p", "wal_m", "sub_m", "sub_a"),
  period: fc.constantFrom<CapPeriod>("day", "month"),
  limit: fc.nat(15),
  setBy: fc.constantFrom<"vendor" | "customer">("vendor", "customer"),
});

/** One charge (or pending hold) counted by the independent model: credits, its time, who paid. */
interface Counted {
  amount: bigint;
  at: number;
  chain: string[];
  subject: SubjectId;
}

describe("spend caps under random interleavings (property)", () => {
  test("what is charged plus pending holds in a period never exceeds an applicable cap; each period starts fresh", () => {
    fc.assert(
      fc.property(
        fc.array(capArb, { minLength: 1, maxLength: 4 }),
        fc.constantFrom<OveragePolicy>({ mode: "hard_cap", floor: 0n }, { mode: "soft_cap", floor: -cr(5) }),
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        (capSpecs, policy, ops) => {
          const newId = counterIds();
          const caps: SpendCap[] = capSpecs.map((c, i) => ({
            id: `cap_${i}`,
            customerId: CUSTOMER,
            targetKind: c.target.startsWith("wal_") ? "wallet" : "subject",
            targetId: c.target,
            period: c.period,
            limit: cr(c.limit),
            setBy: c.setBy,
          }));
          let now = Date.parse("2026-03-30T20:00:00.000Z");
          const grants = new Map<string, Grant>([
            ["grt_p", makeGrant({ id: "grt_p", walletId: POOL, amount: cr(60) })],
            ["grt_m", makeGrant({ id: "grt_m", walletId: MEMBER_WALLET, amount: cr(10) })],
          ]);
          let owed = 0n;
          const counters = new Map<string, CapCounter>();
          const holds: { hold: Hold; subject: SubjectId; reservations: readonly CapReservation[] }[] = [];
          // The independent model: charges and pending holds, each with the time it counts at.
          const charged: Counted[] = [];

          const apply = (tx: JournalTransaction | null) => {
            if (!tx) return;
            for (const [id, d] of grantDeltas(tx.entries)) {
              const g = grants.get(id)!;
              grants.set(id, { ...g, remaining: g.remaining + d });
            }
            for (const [, d] of overdraftDeltas(tx.entries)) owed -= d;
          };
          const applyCaps = (e: CapEffect) => {
            for (const [k, d] of e.deltas) {
              const c = counters.get(k) ?? { spent: 0n, held: 0n };
              counters.set(k, { spent: c.spent + d.spent, held: c.held + d.held });
            }
          };
          const release = (reservations: readonly CapReservation[]) => {
            // What the storage does on void and expiry: the reservation leaves `held`.
            for (const r of reservations) {
              const k = capCounterKey(r.capId, r.periodStart);
              const c = counters.get(k)!;
              counters.set(k, { ...c, held: c.held - r.amount });
            }
          };
          const sources = (chain: readonly string[]) =>
            chain.map((walletId) => ({
              walletId,
              grants: [...grants.values()].filter((g) => g.walletId === walletId),
            }));
          const holdState = (chain: readonly string[]): HoldState => ({
            sources: sources(chain),
            poolWalletId: POOL,
            overdraft: owed,
            policy,
            caps: { caps, counters },
          });
          /** The model's count of a cap in the period `at` falls in, with pending holds. */
          const modelUse = (cap: SpendCap, at: number): bigint => {
            const start = capPeriodStart(cap.period, at);
            const pending = holds
              .filter((h) => h.hold.status === "pending")
              .map((h) => ({
                amount: h.hold.amount,
                at: h.hold.createdAt,
                chain: chainOf(h.subject),
                subject: h.subject,
              }));
            return [...charged, ...pending]
              .filter(
                (c) => capApplies(cap, c.chain, c.subject) && capPeriodStart(cap.period, c.at) === start,
              )
              .reduce((s, c) => s + c.amount, 0n);
          };
          const modelRoom = (chain: string[], subject: SubjectId, at: number): bigint | null => {
            const rooms = caps
              .filter((c) => capApplies(c, chain, subject))
              .map((c) => (c.limit - modelUse(c, at) > 0n ? c.limit - modelUse(c, at) : 0n));
            return rooms.length === 0 ? null : rooms.reduce((a, b) => (a < b ? a : b));
          };
          const expireDue = () => {
            for (const h of holds) {
              if (h.hold.status !== "pending" || now < h.hold.expiresAt) continue;
              const r = planRelease({ now, newId }, h.hold, grants, "expired");
              assert.ok(r.ok);
              apply(r.value.transaction);
              release(h.reservations);
              h.hold = r.value.hold;
            }
          };

          for (const op of ops) {
            const ctx = { now, newId };
            if (op.kind === "advance") {
              now += op.hours * HOUR;
              expireDue();
            } else if (op.kind === "event") {
              const subject = SUBJECTS[op.subject]!;
              const chain = chainOf(subject);
              const roomBefore = modelRoom(chain, subject, now);
              const event: UsageEvent = {
                id: newId("evt"),
                customerId: CUSTOMER,
                subjectId: subject,
                action: "run",
                dimensions: {},
                quantities: { tokens: BigInt(op.tokens) * 10n ** 9n },
                time: now,
                status: "succeeded",
                runId: null,
                reportedCost: null,
              };
              const plan = planUsage(
                ctx,
                {
                  wallets: new Map([
                    [POOL, { id: POOL, customerId: CUSTOMER, memberId: null, overdraft: owed, policy }],
                    [
                      MEMBER_WALLET,
                      { id: MEMBER_WALLET, customerId: CUSTOMER, memberId: "sub_m", overdraft: 0n, policy },
                    ],
                  ]),
                  grants,
                  poolWallet: new Map([[CUSTOMER, POOL]]),
                  memberWallet: new Map([["sub_m", MEMBER_WALLET]]),
                  subjects: new Map([
                    ["sub_m", { customerId: CUSTOMER, kind: "member" }],
                    ["sub_a", { customerId: CUSTOMER, kind: "agent" }],
                  ]),
                  pricingAt,
                  costAt: () => null,
                  usage: new Map(),
                  caps: { caps, counters },
                },
                [event],
              );
              for (const tx of plan.transactions) apply(tx);
              applyCaps(plan.caps);
              const o = plan.outcomes[0]!;
              assert.equal(o.kind, "accepted");
              if (o.kind !== "accepted") continue;
              const paid = o.drawn + o.overdraft;
              if (paid > 0n) charged.push({ amount: paid, at: now, chain, subject });
              // A refusal is justified by the model: a fresh period never refuses what fits.
              if (o.reason === "spend_cap_reached") {
                assert.ok(roomBefore !== null && o.rating.credits > roomBefore, "a cap refused what fit");
              } else if (roomBefore !== null && o.rating.credits > roomBefore) {
                assert.fail("a charge beyond a cap's room was not refused");
              }
            } else if (op.kind === "authorize") {
              const subject = SUBJECTS[op.subject]!;
              const chain = chainOf(subject);
              const roomBefore = modelRoom(chain, subject, now);
              const r = planAuthorize(ctx, holdState(chain), {
                customerId: CUSTOMER,
                walletId: chain[0]!,
                subjectId: subject,
                action: "run",
                estimate: cr(op.estimate),
                holdTimeoutSeconds: op.hold ? op.timeoutHours * 3600 : null,
              });
              assert.ok(r.ok);
              const a = r.value.authorization;
              if (roomBefore !== null)
                assert.ok(a.available <= roomBefore, "available within the cap's room");
              if (a.reason === "spend_cap_reached")
                assert.ok(roomBefore !== null && cr(op.estimate) > roomBefore, "a cap denied what fit");
              apply(r.value.transaction);
              applyCaps(r.value.caps);
              if (a.hold) holds.push({ hold: a.hold, subject, reservations: r.value.capReservations });
            } else if (op.kind === "settle" || op.kind === "void") {
              const h = holds[op.hold % Math.max(1, holds.length)];
              if (h?.hold.status !== "pending") continue;
              if (op.kind === "void") {
                const r = planRelease(ctx, h.hold, grants, "voided");
                assert.ok(r.ok);
                apply(r.value.transaction);
                release(h.reservations);
                h.hold = r.value.hold;
                continue;
              }
              const chain = chainOf(h.subject);
              const r = planSettle(
                ctx,
                h.hold,
                {
                  ...holdState(chain),
                  grants,
                  pricingAt,
                  costAt: () => null,
                  usage: new Map(),
                  capReservations: h.reservations,
                },
                [
                  {
                    id: newId("evt"),
                    customerId: CUSTOMER,
                    subjectId: h.subject,
                    action: "run",
                    dimensions: {},
                    quantities: { tokens: BigInt(op.tokens) * 10n ** 9n },
                    time: now,
                    status: "succeeded",
                    runId: null,
                    reportedCost: null,
                  },
                ],
              );
              assert.ok(r.ok);
              apply(r.value.transaction);
              applyCaps(r.value.caps);
              h.hold = r.value.hold;
              // A settlement counts in the period its hold was placed in.
              if (r.value.hold.posted > 0n)
                charged.push({
                  amount: r.value.hold.posted,
                  at: h.hold.createdAt,
                  chain,
                  subject: h.subject,
                });
            }

            // The property: per cap and period, charged plus pending holds ≤ the limit, and the
            // counters the plans wrote agree with the model.
            const periods = new Set([
              ...charged.map((c) => c.at),
              ...holds.map((h) => h.hold.createdAt),
              now,
            ]);
            for (const cap of caps) {
              for (const at of periods) {
                const used = modelUse(cap, at);
                assert.ok(used <= cap.limit, `cap ${cap.id} (${cap.limit}) used ${used} in a period`);
                const c = counters.get(capCounterKey(cap.id, capPeriodStart(cap.period, at)));
                assert.equal((c?.spent ?? 0n) + (c?.held ?? 0n), used, `cap ${cap.id}'s counters`);
              }
            }
            for (const g of grants.values()) assert.ok(g.remaining >= 0n);
            assert.ok(owed >= 0n && owed <= -policy.floor);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test("reversing debits gives back exactly what each counted, in its period: spent is the sum of the debits not reversed, never below zero", () => {
    type DebitOp =
      | { kind: "debit"; subject: number; amount: number }
      | { kind: "reverse"; which: number }
      | { kind: "advance"; hours: number };
    const debitOp: fc.Arbitrary<DebitOp> = fc.oneof(
      fc.record({
        kind: fc.constant("debit" as const),
        subject: fc.nat(2),
        amount: fc.integer({ min: 1, max: 6 }),
      }),
      fc.record({ kind: fc.constant("reverse" as const), which: fc.nat(30) }),
      fc.record({ kind: fc.constant("advance" as const), hours: fc.integer({ min: 1, max: 40 }) }),
    );
    fc.assert(
      fc.property(
        fc.array(capArb, { minLength: 1, maxLength: 4 }),
        fc.array(debitOp, { maxLength: 40 }),
        (capSpecs, ops) => {
          const caps: SpendCap[] = capSpecs.map((c, i) => ({
            id: `cap_${i}`,
            customerId: CUSTOMER,
            targetKind: c.target.startsWith("wal_") ? "wallet" : "subject",
            targetId: c.target,
            period: c.period,
            limit: cr(c.limit),
            setBy: c.setBy,
          }));
          let state: CapState = { caps, counters: new Map() };
          let now = Date.parse("2026-03-30T20:00:00Z");
          /** Every debit allowed: when, who paid, what it counted where, and whether it was reversed. */
          const debits: {
            at: number;
            chain: string[];
            subject: SubjectId;
            amount: bigint;
            charges: ReturnType<CapBook["charge"]>;
            reversed: boolean;
          }[] = [];
          for (const op of ops) {
            if (op.kind === "advance") {
              now += op.hours * HOUR;
              continue;
            }
            const book = new CapBook(state);
            if (op.kind === "debit") {
              const subject = SUBJECTS[op.subject]!;
              const chain = chainOf(subject);
              const amount = cr(op.amount);
              const room = book.roomFor(chain, subject, now);
              if (room !== null && amount > room) continue; // refused whole, as capDebit does
              const charges = book.charge(chain, subject, now, amount);
              debits.push({ at: now, chain, subject, amount, charges, reversed: false });
            } else {
              const d = debits[op.which % Math.max(1, debits.length)];
              if (!d || d.reversed) continue;
              book.refund(d.charges);
              d.reversed = true;
            }
            state = withCapEffect(state, book.effect());
            // Against an independent model: per cap and period, the debits it applies to, not reversed.
            for (const cap of caps)
              for (const start of new Set(debits.map((x) => capPeriodStart(cap.period, x.at)))) {
                const expected = debits
                  .filter(
                    (x) =>
                      !x.reversed &&
                      capPeriodStart(cap.period, x.at) === start &&
                      capApplies(cap, x.chain, x.subject),
                  )
                  .reduce((sum, x) => sum + x.amount, 0n);
                const c = state.counters.get(capCounterKey(cap.id, start));
                assert.equal(c?.spent ?? 0n, expected, `cap ${cap.id} spent in the period`);
                assert.ok(expected >= 0n && expected <= cap.limit);
              }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test("a refund never takes spent below zero, and skips deleted caps", () => {
    const cap: SpendCap = {
      id: "cap_1",
      customerId: CUSTOMER,
      targetKind: "wallet",
      targetId: POOL,
      period: "day",
      limit: cr(10),
      setBy: "vendor",
    };
    const start = capPeriodStart("day", 0);
    const book = new CapBook({
      caps: [cap],
      counters: new Map([[capCounterKey(cap.id, start), { spent: cr(3), held: cr(1) }]]),
    });
    book.refund([
      { capId: cap.id, periodStart: start, amount: cr(5) },
      { capId: "cap_gone", periodStart: start, amount: cr(5) },
    ]);
    assert.deepEqual(
      [...book.effect().deltas],
      [[capCounterKey(cap.id, start), { spent: -cr(3), held: 0n }]],
    );
    assert.equal(book.roomFor([POOL], null, 0), cr(9));
  });

  test("a CapBook without caps costs nothing and changes nothing", () => {
    const book = new CapBook(undefined);
    assert.equal(book.empty, true);
    assert.equal(book.roomFor([POOL], null, 0), null);
    book.charge([POOL], null, 0, 5n);
    assert.equal(book.effect().deltas.size, 0);
  });
});
