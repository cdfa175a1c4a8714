import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credits, type OveragePolicyInput, type PriceBookInput, type Result, UNIT } from "@drawdown/core";
import fc from "fast-check";
import {
  type AuthorizeOutcome,
  type AuthorizeRequest,
  Commerce,
  type HoldRecord,
  Holds,
  HoldWriter,
  type IdempotencyClaim,
  Metering,
  Runs,
  SpendCaps,
  type SqlExecutor,
  type Store,
  type WriterAnswer,
} from "../src/index.js";
import { backends, POSTGRES_URL, postgresDatabase, type TestDatabase } from "./support/backends.js";
import { authorizeAlone as authorizeAloneWith } from "./support/helpers.js";

// The group-commit writer of authorize and settle: batched, it answers exactly what the
// one-request path (Holds.authorize / Holds.settle, one transaction each) answers for the same
// requests in the same order, keeps invariants 4 and 6, and claims idempotency keys in its batch.
// The random scenarios include spend caps, every overage mode and an auto top-up (test provider).

const T0 = Date.UTC(2027, 2, 1, 12);

function okv<T>(r: Result<T>): T {
  if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function fresh<T>(a: WriterAnswer<T>): Result<T> {
  assert.equal(a.kind, "fresh");
  return (a as { result: Result<T> }).result;
}

function harness(database: TestDatabase, clock: () => number = () => T0) {
  const store = database.store(clock);
  const metering = new Metering((t) => store.now(t), store.newId);
  const commerce = new Commerce(store);
  // With commerce: authorize tries an auto top-up before denying for lack of credits.
  const holds = new Holds(store, metering, commerce);
  const caps = new SpendCaps(store);
  const writer = new HoldWriter(store, holds, metering);
  const tx = <T>(fn: (ex: SqlExecutor) => Promise<T>) => store.db.transaction(fn);
  /** The one-request path as the writer runs it alone: an auto top-up bought first, outside. */
  const authorizeAlone = (tenantId: string, request: AuthorizeRequest) =>
    authorizeAloneWith(store, holds, tenantId, request);

  /** A tenant with one customer holding `amount` credits in two grants, and a card: a `unit` costs 1 credit. */
  async function setup(amount: bigint, softFloor: bigint | null = null) {
    const tenant = await store.createTenant("Writer", "test");
    okv(await store.advanceClock(tenant.id, clock()));
    const tenantId = tenant.id;
    const customer = okv(await tx((ex) => store.createCustomer(ex, tenantId, { kind: "organization" })));
    const half = amount / 2n;
    for (const [part, priority] of [
      [half, 10],
      [amount - half, 20],
    ] as const)
      if (part > 0n)
        okv(
          await tx((ex) =>
            store.createGrant(ex, tenantId, {
              walletId: customer.walletId,
              amount: part,
              source: "promo",
              priority,
            }),
          ),
        );
    if (softFloor !== null)
      okv(
        await tx((ex) =>
          metering.setOveragePolicy(ex, tenantId, customer.walletId, { mode: "soft_cap", floor: -softFloor }),
        ),
      );
    const card = okv(await tx((ex) => metering.createRateCard(ex, tenantId, "Standard")));
    okv(
      await tx((ex) =>
        metering.publishRateCardVersion(ex, tenantId, card.id, null, {
          lines: [
            { id: "run", action: "agent.run", quantity: "units", rate: "1" },
            { id: "cheap", action: "cheap.*", quantity: "units", rate: "1" },
          ],
        }),
      ),
    );
    return { tenantId, customerId: customer.id, walletId: customer.walletId };
  }

  /**
   * {@link setup} plus a scenario: a member with its own wallet (4 credits) and an agent, a
   * `cheap.*` line, the pool's overage policy, spend caps, and an auto top-up (test provider).
   */
  async function setupScenario(sc: Scenario) {
    const w = await setup(credits(20n));
    const { tenantId, customerId, walletId } = w;
    const member = okv(await tx((ex) => store.createSubject(ex, tenantId, { customerId, kind: "member" })));
    const agent = okv(await tx((ex) => store.createSubject(ex, tenantId, { customerId, kind: "agent" })));
    const memberWallet = okv(await tx((ex) => store.createMemberWallet(ex, tenantId, customerId, member.id)));
    okv(
      await tx((ex) =>
        store.createGrant(ex, tenantId, { walletId: memberWallet.id, amount: credits(4n), source: "promo" }),
      ),
    );
    const policy = OVERAGE[sc.overage];
    if (policy) okv(await tx((ex) => metering.setOveragePolicy(ex, tenantId, walletId, policy)));
    const capIds: string[] = [];
    for (const c of sc.caps) {
      const targetId = c.target === "pool" ? walletId : c.target === "member" ? memberWallet.id : agent.id;
      const made = okv(
        await tx((ex) =>
          caps.create(ex, tenantId, {
            customerId,
            targetId,
            period: c.period,
            limit: credits(BigInt(c.limit)),
            setBy: "vendor",
          }),
        ),
      );
      capIds.push(made.id);
    }
    if (sc.topUp) {
      okv(await tx((ex) => commerce.publishPriceBook(ex, tenantId, BOOK)));
      okv(
        await tx((ex) =>
          commerce.setAutoTopUp(ex, tenantId, sc.topUp === "member" ? memberWallet.id : walletId, {
            threshold: credits(1n),
            buy: { kind: "pack", packId: "small" },
            currency: "USD",
            monthlyCap: 3n * UNIT,
            provider: "test",
            paymentMethod: "pm_test_ok",
          }),
        ),
      );
    }
    return { ...w, member: member.id, agent: agent.id, memberWallet: memberWallet.id, capIds };
  }
  const request = (
    customerId: string,
    estimate: bigint,
    hold: boolean,
    subjectId: string | null = null,
    action = "agent.run",
  ): AuthorizeRequest => ({
    customerId,
    subjectId,
    action,
    estimate: { credits: estimate },
    holdTimeoutSeconds: hold ? 300 : null,
  });
  return { store, metering, holds, caps, writer, tx, authorizeAlone, setup, setupScenario, request };
}

/** A pack of 20 credits for 2 USD: an auto top-up capped at 3 USD a month buys one, then fails. */
const BOOK: PriceBookInput = {
  currency: "USD",
  packs: [{ id: "small", name: "Small", credits: credits(20n), price: 2n * UNIT, expiry: { kind: "never" } }],
  tiers: [{ upTo: null, unitPrice: UNIT / 10n }],
};

/** The overage policies a scenario picks from (null: the default hard cap). */
const OVERAGE: Record<string, OveragePolicyInput | null> = {
  hard_cap: null,
  soft_cap: { mode: "soft_cap", floor: -credits(5n) },
  throttle: {
    mode: "throttle",
    throttle: { level: credits(10n), allowedActions: ["cheap.*"], fallbackAction: "cheap.mini" },
  },
  fair_use: { mode: "fair_use" },
  carry_deficit: { mode: "carry_deficit", floor: -credits(5n) },
};

const scenarios = fc.record({
  overage: fc.constantFrom(...Object.keys(OVERAGE)),
  // One cap per target and period (a second is refused).
  caps: fc.uniqueArray(
    fc.record({
      target: fc.constantFrom("pool" as const, "member" as const, "agent" as const),
      period: fc.constantFrom("day" as const, "month" as const),
      limit: fc.integer({ min: 0, max: 24 }),
    }),
    { maxLength: 2, selector: (c) => `${c.target}/${c.period}` },
  ),
  topUp: fc.constantFrom(null, "pool" as const, "member" as const),
});
type Scenario = {
  readonly overage: string;
  readonly caps: readonly {
    readonly target: "pool" | "member" | "agent";
    readonly period: "day" | "month";
    readonly limit: number;
  }[];
  readonly topUp: "pool" | "member" | null;
};

/** What must agree between the two paths: everything but ids. */
const authorizeShape = (r: Result<AuthorizeOutcome>) =>
  r.ok
    ? {
        decision: r.value.authorization.decision,
        reason: r.value.authorization.reason,
        available: r.value.authorization.available,
        held: r.value.hold?.amount ?? null,
        draws: r.value.hold?.draws.map((d) => d.amount) ?? null,
        allowedActions: r.value.authorization.allowedActions,
        fallbackAction: r.value.authorization.fallbackAction,
        autoTopUp: r.value.autoTopUp
          ? {
              outcome: r.value.autoTopUp.outcome,
              purchases: r.value.autoTopUp.purchaseIds.length,
              reason: r.value.autoTopUp.reason,
            }
          : null,
      }
    : { code: r.error.code };
const settleShape = (r: Result<HoldRecord>) =>
  r.ok
    ? { status: r.value.status, posted: r.value.posted, released: r.value.released, unpaid: r.value.unpaid }
    : { code: r.error.code };

const steps = fc.array(
  fc.oneof(
    fc.record({
      kind: fc.constant("authorize" as const),
      estimate: fc.integer({ min: 0, max: 12 }),
      hold: fc.boolean(),
      who: fc.constantFrom("customer" as const, "member" as const, "agent" as const),
      cheap: fc.boolean(),
    }),
    fc.record({
      kind: fc.constant("settle" as const),
      target: fc.nat({ max: 20 }),
      units: fc.integer({ min: 0, max: 10 }),
    }),
  ),
  { minLength: 1, maxLength: 24 },
);

for (const backend of backends()) {
  describe(`hold writer (${backend.name})`, () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await backend.open();
      h = harness(database);
    });
    after(async () => {
      await database.close();
    });

    test("batched requests answer what the one-request path answers in the same order, and the ledgers agree (caps, overage modes, auto top-up)", async () => {
      await fc.assert(
        fc.asyncProperty(scenarios, steps, steps, async (sc, first, second) => {
          const a = await h.setupScenario(sc);
          const b = await h.setupScenario(sc);
          const subject = (w: typeof a, who: "customer" | "member" | "agent") =>
            who === "member" ? w.member : who === "agent" ? w.agent : null;
          const heldA: { id: string; walletId: string }[] = [];
          const heldB: string[] = [];
          // Two rounds: the second settles holds the first placed. Each round is submitted at
          // once (the writer batches it) and run one request at a time on the other customer.
          for (const round of [first, second]) {
            const knownA = [...heldA];
            const knownB = [...heldB];
            const batched = await Promise.all(
              round.map(async (s) => {
                if (s.kind === "authorize") {
                  const r = fresh(
                    await h.writer.authorize(
                      a.tenantId,
                      h.request(
                        a.customerId,
                        credits(BigInt(s.estimate)),
                        s.hold,
                        subject(a, s.who),
                        s.cheap ? "cheap.run" : "agent.run",
                      ),
                      null,
                    ),
                  );
                  const hold = r.ok ? r.value.hold : null;
                  return {
                    shape: authorizeShape(r),
                    hold: hold ? { id: hold.id, walletId: hold.walletId } : null,
                  };
                }
                const held = knownA[s.target % Math.max(1, knownA.length)];
                if (held === undefined) return { shape: null, hold: null };
                const r = await h.writer.settle(
                  a.tenantId,
                  { id: held.id, customerId: a.customerId, walletId: held.walletId },
                  { quantities: { units: BigInt(s.units) * UNIT } },
                  null,
                );
                return { shape: settleShape(fresh(r)), hold: null };
              }),
            );
            const single: unknown[] = [];
            for (const s of round) {
              if (s.kind === "authorize") {
                const r = await h.authorizeAlone(
                  b.tenantId,
                  h.request(
                    b.customerId,
                    credits(BigInt(s.estimate)),
                    s.hold,
                    subject(b, s.who),
                    s.cheap ? "cheap.run" : "agent.run",
                  ),
                );
                single.push(authorizeShape(r));
                if (r.ok && r.value.hold) heldB.push(r.value.hold.id);
              } else {
                const id = knownB[s.target % Math.max(1, knownB.length)];
                if (id === undefined) single.push(null);
                else
                  single.push(
                    settleShape(
                      await h.tx((ex) =>
                        h.holds.settle(ex, b.tenantId, id, { quantities: { units: BigInt(s.units) * UNIT } }),
                      ),
                    ),
                  );
              }
            }
            assert.deepEqual(
              batched.map((x) => x.shape),
              single,
            );
            for (const x of batched) if (x.hold !== null) heldA.push(x.hold);
            assert.equal(heldA.length, heldB.length);
          }
          for (const [wa, wb] of [
            [a.walletId, b.walletId],
            [a.memberWallet, b.memberWallet],
          ] as const) {
            const [ba, bb] = [await h.store.balance(a.tenantId, wa), await h.store.balance(b.tenantId, wb)];
            assert.equal(ba!.available, bb!.available);
            assert.equal(ba!.held, bb!.held);
            assert.equal(ba!.total, bb!.total);
          }
          assert.equal(
            await overdraft(h.store, a.tenantId, a.walletId),
            await overdraft(h.store, b.tenantId, b.walletId),
          );
          // The caps' counters, their reservations and the alerts agree too.
          for (const [k, capId] of a.capIds.entries()) {
            const [ca, cb] = [
              (await h.caps.get(a.tenantId, capId))!,
              (await h.caps.get(b.tenantId, b.capIds[k]!))!,
            ];
            assert.deepEqual(ca.status, cb.status);
          }
          assert.deepEqual(await sideEffects(h.store, a.tenantId), await sideEffects(h.store, b.tenantId));
          assert.deepEqual((await h.store.reconcile(a.tenantId)).differences, []);
        }),
        { numRuns: backend.name === "pglite" ? 16 : 10 },
      );
    });

    test("a batch leaves a denial an auto top-up may cover, and what follows it, to the one-request path, with its key", async () => {
      const sc: Scenario = { overage: "hard_cap", caps: [], topUp: "pool" };
      const [a, b] = [await h.setupScenario(sc), await h.setupScenario(sc)];
      const claim = (key: string): IdempotencyClaim => ({
        key,
        fingerprint: key,
        outcome: (r) =>
          r.ok ? { hold: (r.value as AuthorizeOutcome).hold?.amount.toString() ?? null } : null,
      });
      // 20 credits: 12 held; 10 more need the top-up (one pack of 20, the month's cap); 6 follow
      // it; 40 needs a second pack the cap refuses (auto_top_up_failed, deny).
      const asks = [12n, 10n, 6n, 40n];
      const batched = await Promise.all(
        asks.map(async (n, i) =>
          authorizeShape(
            fresh(
              await h.writer.authorize(
                a.tenantId,
                h.request(a.customerId, credits(n), true),
                claim(`k-${i}`),
              ),
            ),
          ),
        ),
      );
      const single: unknown[] = [];
      for (const n of asks)
        single.push(
          authorizeShape(await h.authorizeAlone(b.tenantId, h.request(b.customerId, credits(n), true))),
        );
      assert.deepEqual(batched, single);
      assert.deepEqual(
        batched.map((x) => ("decision" in x ? [x.decision, x.autoTopUp?.outcome ?? null] : x)),
        [
          ["allow", null],
          ["allow", "covered"],
          ["allow", null],
          ["deny", "failed"],
        ],
      );
      assert.deepEqual(await sideEffects(h.store, a.tenantId), await sideEffects(h.store, b.tenantId));
      // The deferred request's key was recorded by the one-request path: a replay answers it.
      const again = await h.writer.authorize(
        a.tenantId,
        h.request(a.customerId, credits(10n), true),
        claim("k-1"),
      );
      assert.deepEqual(again, { kind: "replayed", outcome: { hold: credits(10n).toString() } });
      assert.deepEqual((await h.store.reconcile(a.tenantId)).differences, []);
    });

    test("a hold settled twice in one batch resolves once; the second answers hold_not_pending", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const placed = okv(
        fresh(await h.writer.authorize(tenantId, h.request(customerId, credits(4n), true), null)),
      );
      const hold = { id: placed.hold!.id, customerId, walletId };
      const [one, two] = await Promise.all([
        h.writer.settle(tenantId, hold, { quantities: { units: 3n * UNIT } }, null),
        h.writer.settle(tenantId, hold, { quantities: { units: 1n * UNIT } }, null),
      ]);
      assert.equal(okv(fresh(one)).posted, credits(3n));
      const second = fresh(two);
      assert.ok(!second.ok && second.error.code === "hold_not_pending");
      const b = (await h.store.balance(tenantId, walletId))!;
      assert.equal(b.available, credits(7n));
      assert.equal(b.held, 0n);
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("a run's resumable check after a batch sees the cap room the batch itself took", async () => {
      // The pool: 7 credits, a daily cap of 10. A member with credits of its own spends under it too.
      const { tenantId, customerId, walletId } = await h.setup(credits(7n));
      const member = okv(
        await h.tx((ex) => h.store.createSubject(ex, tenantId, { customerId, kind: "member" })),
      );
      const memberWallet = okv(
        await h.tx((ex) => h.store.createMemberWallet(ex, tenantId, customerId, member.id)),
      );
      okv(
        await h.tx((ex) =>
          h.store.createGrant(ex, tenantId, {
            walletId: memberWallet.id,
            amount: credits(100n),
            source: "promo",
          }),
        ),
      );
      okv(
        await h.tx((ex) =>
          h.caps.create(ex, tenantId, {
            customerId,
            targetId: walletId,
            period: "day",
            limit: credits(10n),
            setBy: "vendor",
          }),
        ),
      );
      // A hold of 4 leaves the pool 3: a run's step of 5 is suspended for lack of credits.
      const placed = okv(
        fresh(await h.writer.authorize(tenantId, h.request(customerId, credits(4n), true), null)),
      );
      const runs = new Runs(h.store, h.holds);
      const run = okv(
        await h.tx((ex) => runs.start(ex, tenantId, { id: null, customerId, subjectId: null, metadata: {} })),
      );
      const step = () =>
        h.tx((ex) =>
          runs.step(ex, tenantId, run.id, {
            key: "x",
            action: "agent.run",
            estimate: { credits: credits(5n) },
            holdTimeoutSeconds: 300,
          }),
        );
      assert.equal(okv(await step()).run.status, "suspended");
      // One batch (a first request keeps the writer busy while the two queue behind it): the hold
      // is voided by a settlement of nothing, giving its 4 credits and 4 of cap room back, and the
      // member holds 6 under the same cap. Credits would cover the step (7), the cap's room (4)
      // would not: nothing to announce.
      const [, settled, held] = await Promise.all([
        h.writer.authorize(tenantId, h.request(customerId, 0n, false), null),
        h.writer.settle(
          tenantId,
          { id: placed.hold!.id, customerId, walletId },
          { quantities: { units: 0n } },
          null,
        ),
        h.writer.authorize(tenantId, h.request(customerId, credits(6n), true, member.id), null),
      ]);
      assert.equal(okv(fresh(settled)).posted, 0n);
      assert.equal(okv(fresh(held)).authorization.decision, "allow");
      const announced = await h.store.db.query(
        "SELECT count(*)::int AS n FROM outbox_events WHERE tenant_id = $1 AND type = 'run.resumable'",
        [tenantId],
      );
      assert.equal(announced.rows[0]!.n, 0);
      const retry = await h.store.db.query<{ retry_at: unknown }>(
        "SELECT retry_at FROM run_suspensions WHERE tenant_id = $1 AND run_id = $2",
        [tenantId, run.id],
      );
      // It waits for the cap's next day instead.
      assert.deepEqual(
        retry.rows.map((r) => new Date(r.retry_at as string).toISOString()),
        retry.rows.map(() => new Date(Date.UTC(2027, 2, 2)).toISOString()),
      );
      assert.equal(okv(await step()).step.decision, "deny");
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("with batching off, each request runs alone and answers the same", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const alone = new HoldWriter(h.store, h.holds, h.metering, { batch: false });
      const [x, y] = await Promise.all([
        alone.authorize(tenantId, h.request(customerId, credits(6n), true), null),
        alone.authorize(tenantId, h.request(customerId, credits(6n), true), null),
      ]);
      assert.deepEqual([authorizeShape(fresh(x)).decision, authorizeShape(fresh(y)).decision].sort(), [
        "allow",
        "deny",
      ]);
      const placed = okv(fresh(x.kind === "fresh" && x.result.ok && x.result.value.hold ? x : y)).hold!;
      const settled = okv(
        fresh(
          await alone.settle(
            tenantId,
            { id: placed.id, customerId, walletId },
            { quantities: { units: 2n * UNIT } },
            null,
          ),
        ),
      );
      assert.equal(settled.posted, credits(2n));
      assert.equal(settled.released, credits(4n));
      assert.deepEqual((await h.store.reconcile(tenantId)).differences, []);
    });

    test("idempotency keys commit with the batch: a replay answers the first outcome, another request conflicts", async () => {
      const { tenantId, customerId, walletId } = await h.setup(credits(10n));
      const claim = (fingerprint: string): IdempotencyClaim => ({
        key: "k-1",
        fingerprint,
        outcome: (r) =>
          r.ok ? { placed: (r.value as AuthorizeOutcome).hold?.id ?? null } : { failed: r.error.code },
      });
      // The same key twice at once: one runs, the other waits for the next batch and replays it.
      const [x, y] = await Promise.all([
        h.writer.authorize(tenantId, h.request(customerId, credits(2n), true), claim("f")),
        h.writer.authorize(tenantId, h.request(customerId, credits(2n), true), claim("f")),
      ]);
      const kinds = [x.kind, y.kind].sort();
      assert.deepEqual(kinds, ["fresh", "replayed"]);
      const first = (x.kind === "fresh" ? x : y) as { result: Result<AuthorizeOutcome> };
      const replay = (x.kind === "replayed" ? x : y) as { outcome: unknown };
      assert.deepEqual(replay.outcome, { placed: okv(first.result).hold!.id });
      const conflict = await h.writer.authorize(
        tenantId,
        h.request(customerId, credits(3n), true),
        claim("g"),
      );
      assert.equal(conflict.kind, "conflict");
      const b = (await h.store.balance(tenantId, walletId))!;
      assert.equal(b.held, credits(2n), "one hold only");
      // A business failure is an outcome too, stored under its key.
      const failed = await h.writer.authorize(tenantId, h.request("cus_missing", credits(1n), true), {
        ...claim("h"),
        key: "k-2",
      });
      assert.ok(failed.kind === "fresh" && !failed.result.ok && failed.result.error.code === "not_found");
      const again = await h.writer.authorize(tenantId, h.request("cus_missing", credits(1n), true), {
        ...claim("h"),
        key: "k-2",
      });
      assert.deepEqual(again, { kind: "replayed", outcome: { failed: "not_found" } });
    });
  });
}

/** Counts of what a tenant's requests left besides balances: alerts by kind, purchases, cap reservations, events. */
async function sideEffects(store: Store, tenantId: string): Promise<Record<string, string>> {
  const count = async (sql: string) => {
    const { rows } = await store.db.query(sql, [tenantId]);
    return rows.map((r) => Object.values(r).map(String).join(":")).join(",");
  };
  return {
    // Cap and auto top-up alerts. Balance alerts (exhausted, percent_remaining) are left out: a
    // batch evaluates them on its net change, so a release and a hold in one batch cross nothing.
    alerts: await count(
      "SELECT kind, count(*) AS n FROM alerts WHERE tenant_id = $1 AND kind IN ('spend_cap_reached', 'auto_top_up_failed') GROUP BY kind ORDER BY kind",
    ),
    purchases: await count(
      "SELECT status, count(*) AS n, coalesce(sum(credits), 0)::text AS c FROM purchases WHERE tenant_id = $1 GROUP BY status ORDER BY status",
    ),
    reservations: await count(
      "SELECT count(*) AS n, coalesce(sum(amount), 0)::text AS a FROM spend_cap_holds WHERE tenant_id = $1",
    ),
    events: await count("SELECT count(*) AS n FROM usage_events WHERE tenant_id = $1"),
  };
}

async function overdraft(store: Store, tenantId: string, walletId: string): Promise<bigint> {
  const { rows } = await store.db.query(
    "SELECT overdraft::text AS o FROM wallets WHERE tenant_id = $1 AND id = $2",
    [tenantId, walletId],
  );
  return BigInt(String(rows[0]!.o));
}

// Registered on PostgreSQL only: PGlite is one connection and cannot race.
if (POSTGRES_URL) {
  const url = POSTGRES_URL;
  describe("hold writer under concurrency (postgres)", () => {
    let database: TestDatabase;
    let h: ReturnType<typeof harness>;
    before(async () => {
      database = await postgresDatabase(url, { max: 20 });
      h = harness(database, Date.now);
    });
    after(async () => {
      await database.close();
    });

    test("200 concurrent authorizations through two writers (two instances) against room for exactly 100 allow exactly 100", async () => {
      const { store } = h;
      const tenant = await store.createTenant("Race", "live");
      const customer = okv(await h.tx((ex) => store.createCustomer(ex, tenant.id, { kind: "organization" })));
      okv(
        await h.tx((ex) =>
          store.createGrant(ex, tenant.id, {
            walletId: customer.walletId,
            amount: credits(100n),
            source: "promo",
          }),
        ),
      );
      const other = new HoldWriter(store, h.holds, h.metering);
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          (i % 2 === 0 ? h.writer : other).authorize(
            tenant.id,
            h.request(customer.id, credits(1n), true),
            null,
          ),
        ),
      );
      const decisions = results.map((r) => okv(fresh(r)).authorization.decision);
      assert.equal(decisions.filter((d) => d === "allow").length, 100);
      assert.equal(decisions.filter((d) => d === "deny").length, 100);
      const b = (await store.balance(tenant.id, customer.walletId))!;
      assert.equal(b.available, 0n);
      assert.equal(b.held, credits(100n));
      assert.deepEqual((await store.reconcile(tenant.id)).differences, []);
    });
  });
}
