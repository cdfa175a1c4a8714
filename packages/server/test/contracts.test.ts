import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Customer, Drawdown } from "@drawdown/sdk";
import { CONTRACT_ROUTES } from "../src/contract-routes.js";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails } from "./support/sdk.js";

/**
 * Contracts and proof-of-concept allocations through the SDK over HTTP, on every backend, with
 * the test clock: quarterly installments over a year, each granted once at its time, at the
 * negotiated cost basis, expiring 12 months later (the same journal whether the clock moves
 * fortnight by fortnight or in as few steps as possible); a proof-of-concept allocation expiring at its
 * end with its list value shown; pinned and following rate cards when a new version is
 * published; early termination; refusals that change nothing. Every response is checked
 * against its route's schema (support/contract.ts).
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();
const at = (s: string) => Date.parse(s);

for (const backend of backends()) {
  describe(`contracts through the SDK (${backend.name})`, () => {
    const log = newContractLog();
    let server: TestServer;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    before(async () => {
      // The server's own clock never moves: only each tenant's test clock makes time pass.
      server = await startTestServer({ backend: backend.name, clock: () => T0 });
    });
    after(async () => {
      await server?.close();
    });

    /** A fresh test tenant at T0, with a rate card pricing chat by output tokens (1 credit per 1,000). */
    async function tenant(name: string) {
      const dd = connect((await server.newTenant(name)).key);
      await dd.testClock.advance({ to: iso(T0) });
      const card = await dd.rateCards.create({ name: "List" });
      const v1 = await dd.rateCards.publishVersion(card.id, {
        lines: [{ id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "1", per: 1000 }],
      });
      return { dd, card, v1 };
    }

    const chat = (dd: Drawdown, id: string, c: Customer, tokens: number, model = "small") =>
      dd.events.ingest({
        id,
        customer_id: c.id,
        action: "chat.completion",
        dimensions: { model },
        quantities: { output_tokens: tokens },
      });

    type Mode = "fortnight by fortnight" | "fewest steps";

    /** The enterprise scenario: returns the journal without ids, to compare the modes. */
    async function quarterly(mode: Mode) {
      const { dd } = await tenant(`quarterly (${mode})`);
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const c = await dd.contracts.create({
        customer_id: acme.id,
        ends_at: "2027-03-01T00:00:00Z",
        commitment: "120000",
        schedule: { kind: "installments", interval: { unit: "month", count: 3 } },
        credit_price: { amount: "0.008", currency: "USD" },
      });
      assert.equal(c.status, "active");
      assert.deepEqual(c.expiry, { kind: "rolling", months: 12 });
      assert.deepEqual(
        c.installments.map((i) => [i.at, i.amount, i.status]),
        [
          ["2026-03-01T00:00:00.000Z", "30000", "issued"],
          ["2026-06-01T00:00:00.000Z", "30000", "scheduled"],
          ["2026-09-01T00:00:00.000Z", "30000", "scheduled"],
          ["2026-12-01T00:00:00.000Z", "30000", "scheduled"],
        ],
      );
      const available = async () => (await dd.wallets.balance(acme.wallet_id)).available;
      assert.equal(await available(), "30000");
      const checkpoints: { at: string; act?: () => Promise<void>; balance: string }[] = [
        {
          at: "2026-04-01T00:00:00Z",
          act: async () => {
            const r = await chat(dd, "big-job", acme, 10_000_000);
            assert.equal(r.charge?.credits, "10000");
          },
          balance: "20000",
        },
        { at: "2026-06-01T01:00:00Z", balance: "50000" },
        { at: "2026-09-01T01:00:00Z", balance: "80000" },
        { at: "2026-12-01T01:00:00Z", balance: "110000" },
        // The term is over: nothing more is granted. The first installment's 20,000 left expire.
        { at: "2027-03-01T01:00:00Z", balance: "90000" },
        { at: "2027-06-01T01:00:00Z", balance: "60000" },
        { at: "2027-12-01T01:00:00Z", balance: "0" },
      ];
      for (const [k, cp] of checkpoints.entries()) {
        if (mode === "fewest steps" && !cp.act && k !== checkpoints.length - 1) continue;
        const clock = at((await dd.testClock.get()).now);
        if (mode === "fortnight by fortnight")
          for (let t = clock + 14 * DAY; t < at(cp.at); t += 14 * DAY)
            await dd.testClock.advance({ to: iso(t) });
        await dd.testClock.advance({ to: cp.at });
        await cp.act?.();
        if (mode === "fortnight by fortnight" || cp.act)
          assert.equal(await available(), cp.balance, `${mode} at ${cp.at}`);
      }
      assert.equal(await available(), "0");
      const grants = [];
      for await (const g of dd.grants.listAll({ customer_id: acme.id })) grants.push(g);
      assert.deepEqual(
        grants
          .map((g) => [
            g.source,
            g.amount,
            g.cost_basis,
            g.currency,
            g.effective_at,
            g.expires_at,
            g.metadata,
          ])
          .sort((a, b) => String(a[4]).localeCompare(String(b[4]))),
        ["2026-03-01", "2026-06-01", "2026-09-01", "2026-12-01"].map((d, i) => [
          "contract",
          "30000",
          "0.008",
          "USD",
          `${d}T00:00:00.000Z`,
          `${Number(d.slice(0, 4)) + 1}${d.slice(4)}T00:00:00.000Z`,
          { contract_id: c.id, installment_index: String(i) },
        ]),
      );
      const end = await dd.contracts.get(c.id);
      assert.equal(end.status, "ended");
      assert.deepEqual(end.totals, {
        committed: "120000",
        issued: "120000",
        remaining: "0",
        forgone: "0",
        used: "10000",
        expired: "110000",
        voided: "0",
      });
      assert.deepEqual(
        end.installments.map((i) => [i.status, i.used, i.expired]),
        [
          ["issued", "10000", "20000"],
          ["issued", "0", "30000"],
          ["issued", "0", "30000"],
          ["issued", "0", "30000"],
        ],
      );
      // The margin report values the usage at the negotiated price: 10,000 credits × $0.008.
      const margin = await dd.reports.margin({ group_by: "customer", customer_id: acme.id });
      assert.equal(margin.rows[0]?.revenue, "80");
      assert.equal((await dd.reconcile()).ok, true);
      const txns = [];
      for await (const t of dd.transactions.listAll({ customer_id: acme.id })) txns.push(t);
      return txns
        .map((t) => ({
          kind: t.kind,
          posted_at: t.posted_at,
          entries: t.entries.map((e) => `${e.account} ${e.amount}`).sort(),
        }))
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    }

    test("quarterly installments over a year: each once, at its time and the negotiated cost basis, expiring 12 months later; the same journal however the clock moves", async () => {
      const stepwise = await quarterly("fortnight by fortnight");
      const jump = await quarterly("fewest steps");
      assert.deepEqual(jump, stepwise);
      assert.equal(stepwise.filter((t) => t.kind === "grant").length, 4);
      assert.equal(stepwise.filter((t) => t.kind === "expire").length, 4);
    });

    test("a proof-of-concept allocation: free credits for 30 days, expiring at the end, its list value shown", async () => {
      const { dd } = await tenant("poc");
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const poc = await dd.pocAllocations.create({
        customer_id: acme.id,
        amount: "5000",
        list_value: { amount: "40", currency: "USD" },
        ends_at: iso(T0 + 30 * DAY),
      });
      assert.equal(poc.status, "active");
      const grant = await dd.grants.get(poc.grant_id);
      assert.deepEqual(
        [grant.source, grant.cost_basis, grant.expires_at, grant.metadata.list_value_currency],
        ["contract", "0", iso(T0 + 30 * DAY), "USD"],
      );
      await chat(dd, "trial", acme, 1_250_000);
      await dd.testClock.advance({ to: iso(T0 + 10 * DAY) });
      const mid = await dd.pocAllocations.get(poc.id);
      assert.deepEqual(
        [mid.used, mid.remaining, mid.used_list_value],
        ["1250", "3750", { amount: "10", currency: "USD" }],
      );
      const done = await dd.testClock.advance({ to: iso(T0 + 30 * DAY) });
      assert.equal(done.expired_grants, 1);
      const [ended] = (await dd.pocAllocations.list(acme.id)).data;
      assert.deepEqual(
        [ended?.status, ended?.used, ended?.expired, ended?.remaining, ended?.used_list_value.amount],
        ["ended", "1250", "3750", "0", "10"],
      );
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "0");
      // A window in the past, or one over 366 days, is refused and changes nothing.
      await fails(
        dd.pocAllocations.create({
          customer_id: acme.id,
          amount: "1",
          list_value: { amount: "1", currency: "USD" },
          starts_at: iso(T0),
          ends_at: iso(T0 + 60 * DAY),
        }),
        "invalid_argument",
        400,
      );
      assert.equal((await dd.pocAllocations.list(acme.id)).data.length, 1);
    });

    test("rate cards: a pinned contract keeps the version of its signing, a following one gets the new version; overrides apply", async () => {
      const { dd, card, v1 } = await tenant("pricing");
      const pinned = await dd.customers.create({ kind: "organization", name: "Pinned" });
      const following = await dd.customers.create({ kind: "organization", name: "Following" });
      const terms = {
        ends_at: "2027-03-01T00:00:00Z",
        commitment: "1000",
        credit_price: { amount: "0.01", currency: "USD" },
      };
      const p = await dd.contracts.create({
        ...terms,
        customer_id: pinned.id,
        allow_rate_card_upgrades: false,
        overrides: [
          {
            id: "ent",
            action: "chat.completion",
            match: { model: "large" },
            quantity: "output_tokens",
            rate: "0.5",
            per: 1000,
          },
        ],
      });
      assert.equal(p.pinned_version_id, v1.id);
      assert.equal(p.rate_card_id, card.id);
      const f = await dd.contracts.create({ ...terms, customer_id: following.id });
      assert.equal(f.pinned_version_id, null);
      const v2 = await dd.rateCards.publishVersion(card.id, {
        effective_at: iso(T0 + DAY),
        lines: [{ id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "2", per: 1000 }],
      });
      await dd.testClock.advance({ to: iso(T0 + 2 * DAY) });
      const a = await chat(dd, "p1", pinned, 1000);
      const b = await chat(dd, "f1", following, 1000);
      const o = await chat(dd, "p2", pinned, 1000, "large");
      assert.deepEqual([a.charge?.credits, a.charge?.rate_card_version_id], ["1", v1.id]);
      assert.deepEqual([b.charge?.credits, b.charge?.rate_card_version_id], ["2", v2.id]);
      assert.equal(o.charge?.credits, "0.5");
    });

    test("overrides rate only events timed inside the term: before its start and from its end (or termination) the card prices them; the explanation says which", async () => {
      const { dd, v1 } = await tenant("override window");
      const deal = {
        id: "deal",
        action: "chat.completion",
        quantity: "output_tokens",
        rate: "0.25",
        per: 1000,
      };
      const ends = await dd.customers.create({ kind: "organization", name: "Ends" });
      const stops = await dd.customers.create({ kind: "organization", name: "Stops" });
      const terms = { commitment: "0", credit_price: { amount: "0.01", currency: "USD" }, overrides: [deal] };
      await dd.contracts.create({
        ...terms,
        customer_id: ends.id,
        starts_at: iso(T0 + DAY),
        ends_at: iso(T0 + 4 * DAY),
      });
      const s = await dd.contracts.create({
        ...terms,
        customer_id: stops.id,
        starts_at: iso(T0 + DAY),
        ends_at: iso(T0 + 100 * DAY),
      });
      await dd.testClock.advance({ to: iso(T0 + 5 * DAY) });
      await dd.contracts.terminate(s.id);
      // Late events (within the 7 days' grace) are rated by the terms in force at their own time.
      const cases: [Customer, string, number, string, boolean][] = [
        [ends, "before-start", T0 + DAY - HOUR, "1", false],
        [ends, "at-start", T0 + DAY, "0.25", true],
        [ends, "inside", T0 + 4 * DAY - 1, "0.25", true],
        [ends, "at-end", T0 + 4 * DAY, "1", false],
        [ends, "after-end", T0 + 4 * DAY + HOUR, "1", false],
        [stops, "before-termination", T0 + 5 * DAY - HOUR, "0.25", true],
        [stops, "at-termination", T0 + 5 * DAY, "1", false],
      ];
      for (const [c, id, time, credits, override] of cases) {
        const r = await dd.events.ingest({
          id,
          customer_id: c.id,
          action: "chat.completion",
          quantities: { output_tokens: 1000 },
          time: iso(time),
        });
        assert.deepEqual([r.charge?.credits, r.charge?.rate_card_version_id], [credits, v1.id], id);
        const why = await dd.events.get(id);
        assert.deepEqual(
          why.explanation.lines.map((l) => [l.line_id, l.override]),
          [[override ? "deal" : "chat", override]],
          id,
        );
      }
    });

    test("the override history: a late event timed in the previous contract's term is priced by its overrides, one in the gap by the card; the explanation names the source", async () => {
      const { dd, v1 } = await tenant("override history");
      const line = (id: string, rate: string) => ({
        id,
        action: "chat.completion",
        quantity: "output_tokens",
        rate,
        per: 1000,
      });
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const terms = { commitment: "0", credit_price: { amount: "0.01", currency: "USD" } };
      const a = await dd.contracts.create({
        ...terms,
        customer_id: acme.id,
        starts_at: iso(T0 + DAY),
        ends_at: iso(T0 + 4 * DAY),
        overrides: [line("a-deal", "0.25")],
      });
      const b = await dd.contracts.create({
        ...terms,
        customer_id: acme.id,
        starts_at: iso(T0 + 5 * DAY),
        ends_at: iso(T0 + 100 * DAY),
        overrides: [line("b-deal", "0.5")],
      });
      await dd.testClock.advance({ to: iso(T0 + 6 * DAY) });
      const rated = async (id: string, time: number) => {
        const r = await dd.events.ingest({
          id,
          customer_id: acme.id,
          action: "chat.completion",
          quantities: { output_tokens: 1000 },
          time: iso(time),
        });
        assert.equal(r.charge?.rate_card_version_id, v1.id);
        const why = await dd.events.get(id);
        return [r.charge?.credits, why.explanation.lines[0]?.line_id, why.explanation.override_source];
      };
      // B is the current contract; A's term is over, but an event of its time arrives late.
      assert.deepEqual(
        [
          await rated("late-in-a", T0 + 4 * DAY - HOUR),
          await rated("in-gap", T0 + 4 * DAY + HOUR),
          await rated("in-b", T0 + 5 * DAY + HOUR),
        ],
        [
          ["0.25", "a-deal", a.id],
          ["1", "chat", null],
          ["0.5", "b-deal", b.id],
        ],
      );
    });

    test("the pricing history: a late event of the previous term is rated by its pinned version and overrides after a renewal pinned another; a window set by hand prices with its own card; bad input changes nothing", async () => {
      const { dd, card, v1 } = await tenant("pricing history");
      const large = (id: string, rate: string) => ({
        id,
        action: "chat.completion",
        match: { model: "large" },
        quantity: "output_tokens",
        rate,
        per: 1000,
      });
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const terms = { commitment: "0", credit_price: { amount: "0.01", currency: "USD" } };
      // A pins v1, in force at its signing.
      const a = await dd.contracts.create({
        ...terms,
        customer_id: acme.id,
        starts_at: iso(T0 + DAY),
        ends_at: iso(T0 + 4 * DAY),
        allow_rate_card_upgrades: false,
        overrides: [large("a-deal", "0.25")],
      });
      assert.equal(a.pinned_version_id, v1.id);
      const v2 = await dd.rateCards.publishVersion(card.id, {
        effective_at: iso(T0 + DAY),
        lines: [{ id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "2", per: 1000 }],
      });
      await dd.testClock.advance({ to: iso(T0 + 2 * DAY) });
      // The renewal, signed once v2 is in force, pins v2; it starts where A ends.
      const b = await dd.contracts.create({
        ...terms,
        customer_id: acme.id,
        starts_at: iso(T0 + 4 * DAY),
        ends_at: iso(T0 + 100 * DAY),
        allow_rate_card_upgrades: false,
        overrides: [large("b-deal", "0.5")],
      });
      assert.equal(b.pinned_version_id, v2.id);
      await dd.testClock.advance({ to: iso(T0 + 5 * DAY) });
      const rated = async (id: string, time: number, model: string) => {
        const r = await dd.events.ingest({
          id,
          customer_id: acme.id,
          action: "chat.completion",
          dimensions: { model },
          quantities: { output_tokens: 1000 },
          time: iso(time),
        });
        const why = await dd.events.get(id);
        return [
          r.charge?.credits,
          r.charge?.rate_card_version_id,
          why.explanation.lines[0]?.line_id,
          why.explanation.override_source,
        ];
      };
      // B is current; events of A's term arrive late (within the 7 days' grace).
      assert.deepEqual(
        [
          await rated("late-a", T0 + 4 * DAY - HOUR, "small"),
          await rated("late-a-large", T0 + 4 * DAY - HOUR, "large"),
          await rated("in-b", T0 + 4 * DAY + HOUR, "small"),
          await rated("in-b-large", T0 + 4 * DAY + HOUR, "large"),
        ],
        [
          ["1", v1.id, "chat", null],
          ["0.25", v1.id, "a-deal", a.id],
          ["2", v2.id, "chat", null],
          ["0.5", v2.id, "b-deal", b.id],
        ],
      );

      // Six hours of B's term priced by hand on another card: that window only; the base stays B's.
      const other = await dd.rateCards.create({ name: "Other" });
      const o1 = await dd.rateCards.publishVersion(other.id, {
        lines: [
          { id: "other-chat", action: "chat.completion", quantity: "output_tokens", rate: "7", per: 1000 },
        ],
      });
      const from = T0 + 4 * DAY + 12 * HOUR;
      const until = T0 + 4 * DAY + 18 * HOUR;
      // Other's only version takes effect now, after the window: pinned, it prices the window.
      const set = await dd.customers.setPricing(acme.id, {
        rate_card_id: other.id,
        pinned_version_id: o1.id,
        overrides_from: iso(from),
        overrides_until: iso(until),
      });
      assert.deepEqual(
        [set.rate_card_id, set.pinned_version_id, set.overrides, set.overrides_from, set.overrides_until],
        [other.id, o1.id, [], iso(from), iso(until)],
      );
      assert.deepEqual(set.base, { rate_card_id: card.id, pinned_version_id: v2.id });
      const windows = (history: typeof set.override_history) =>
        history.map((t) => [
          t.source,
          t.overrides_from,
          t.overrides_until,
          t.rate_card_id,
          t.pinned_version_id,
          t.overrides.map((l) => l.id),
        ]);
      const expected = [
        // Before A, the default card, followed: the base A's start moved.
        ["manual", null, iso(T0 + DAY), null, null, []],
        [a.id, iso(T0 + DAY), iso(T0 + 4 * DAY), card.id, v1.id, ["a-deal"]],
        [b.id, iso(T0 + 4 * DAY), iso(from), card.id, v2.id, ["b-deal"]],
        ["manual", iso(from), iso(until), other.id, o1.id, []],
        [b.id, iso(until), iso(T0 + 100 * DAY), card.id, v2.id, ["b-deal"]],
      ];
      assert.deepEqual(windows(set.override_history), expected);
      assert.deepEqual(
        [
          await rated("by-hand", from + HOUR, "large"),
          await rated("after-hand", until, "large"),
          await rated("late-a-again", T0 + 4 * DAY - 2 * HOUR, "small"),
        ],
        [
          ["7", o1.id, "other-chat", null],
          ["0.5", v2.id, "b-deal", b.id],
          ["1", v1.id, "chat", null],
        ],
      );

      // Refused, changing nothing: a version of another card, an unknown card or version.
      for (const body of [
        { rate_card_id: card.id, pinned_version_id: o1.id },
        { pinned_version_id: o1.id, overrides_from: iso(from), overrides_until: iso(until) },
        { rate_card_id: other.id, pinned_version_id: v1.id, overrides_from: iso(from) },
        { rate_card_id: "rcd_nobody", overrides_from: iso(from), overrides_until: iso(until) },
        { rate_card_id: card.id, pinned_version_id: "rcv_nobody", overrides_until: iso(until) },
      ]) {
        await fails(
          dd.customers.setPricing(acme.id, { ...body, overrides: [large("x", "0.01")] }),
          "not_found",
          404,
        );
      }
      assert.deepEqual(
        [
          await rated("by-hand-again", from + 2 * HOUR, "large"),
          await rated("b-again", until + HOUR, "small"),
        ],
        [
          ["7", o1.id, "other-chat", null],
          ["2", v2.id, "chat", null],
        ],
      );
      // The next change shows the history as it was, with only its own window added.
      const far = await dd.customers.setPricing(acme.id, {
        rate_card_id: card.id,
        pinned_version_id: v2.id,
        overrides_from: iso(T0 + 200 * DAY),
      });
      assert.deepEqual(far.base, { rate_card_id: card.id, pinned_version_id: v2.id });
      assert.deepEqual(windows(far.override_history), [
        ...expected,
        ["manual", iso(T0 + 200 * DAY), null, card.id, v2.id, []],
      ]);
    });

    test("pricing set by hand for a window: it replaces that part of the history only; a bad window is refused and changes nothing", async () => {
      const { dd } = await tenant("pricing window");
      const line = (id: string, rate: string) => ({
        id,
        action: "chat.completion",
        quantity: "output_tokens",
        rate,
        per: 1000,
      });
      const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      const c = await dd.contracts.create({
        commitment: "0",
        credit_price: { amount: "0.01", currency: "USD" },
        customer_id: acme.id,
        starts_at: iso(T0 + DAY),
        ends_at: iso(T0 + 100 * DAY),
        overrides: [line("deal", "0.5")],
      });
      await dd.testClock.advance({ to: iso(T0 + 6 * DAY) });
      const promo = await dd.customers.setPricing(acme.id, {
        overrides: [line("promo", "0.1")],
        overrides_from: iso(T0 + 2 * DAY),
        overrides_until: new Date(T0 + 3 * DAY),
      });
      assert.deepEqual([promo.overrides_from, promo.overrides_until], [iso(T0 + 2 * DAY), iso(T0 + 3 * DAY)]);
      // Lines come back as stored: `per` as the wire's string.
      const stored = (id: string, rate: string) => ({ ...line(id, rate), per: "1000" });
      // Every window's card and pin: here the default card, followed, throughout.
      const card = { rate_card_id: null, pinned_version_id: null };
      const history = [
        {
          source: c.id,
          overrides_from: iso(T0 + DAY),
          overrides_until: iso(T0 + 2 * DAY),
          ...card,
          overrides: [stored("deal", "0.5")],
        },
        {
          source: "manual",
          overrides_from: iso(T0 + 2 * DAY),
          overrides_until: iso(T0 + 3 * DAY),
          ...card,
          overrides: [stored("promo", "0.1")],
        },
        {
          source: c.id,
          overrides_from: iso(T0 + 3 * DAY),
          overrides_until: iso(T0 + 100 * DAY),
          ...card,
          overrides: [stored("deal", "0.5")],
        },
      ];
      assert.deepEqual(promo.override_history, history);
      const charge = async (id: string, time: number) =>
        (
          await dd.events.ingest({
            id,
            customer_id: acme.id,
            action: "chat.completion",
            quantities: { output_tokens: 1000 },
            time: iso(time),
          })
        ).charge?.credits;
      assert.deepEqual(
        [
          await charge("w1", T0 + 2 * DAY - 1),
          await charge("w2", T0 + 2 * DAY),
          await charge("w3", T0 + 3 * DAY),
        ],
        ["0.5", "0.1", "0.5"],
      );
      // Refused with invalid_argument, naming the field; nothing changes.
      for (const [body, path] of [
        [{ overrides_from: iso(T0 + 4 * DAY), overrides_until: iso(T0 + 4 * DAY) }, "overrides_until"],
        [{ overrides_from: iso(T0 + 4 * DAY), overrides_until: iso(T0 + 3 * DAY) }, "overrides_until"],
        [{ overrides_from: "2026-03-04" }, "overrides_from"],
        [{ overrides_until: "2026-02-30T00:00:00Z" }, "overrides_until"],
        [{ overrides_from: "soon", overrides_until: iso(T0 + 3 * DAY) }, "overrides_from"],
      ] as const) {
        const e = await fails(
          dd.customers.setPricing(acme.id, { overrides: [line("promo", "0.2")], ...body }),
          "invalid_argument",
          400,
        );
        assert.deepEqual(
          e.errors?.map((x) => x.path),
          [path],
          JSON.stringify(body),
        );
      }
      assert.deepEqual(
        [await charge("w4", T0 + 2 * DAY + HOUR), await charge("w5", T0 + 5 * DAY)],
        ["0.1", "0.5"],
      );
      // An open end: from then on, whatever was there.
      const rest = await dd.customers.setPricing(acme.id, {
        overrides: [line("later", "0.2")],
        overrides_from: iso(T0 + 5 * DAY),
        overrides_until: null,
      });
      assert.deepEqual(
        rest.override_history.map((t) => [t.source, t.overrides_from, t.overrides_until]),
        [
          [c.id, iso(T0 + DAY), iso(T0 + 2 * DAY)],
          ["manual", iso(T0 + 2 * DAY), iso(T0 + 3 * DAY)],
          [c.id, iso(T0 + 3 * DAY), iso(T0 + 5 * DAY)],
          ["manual", iso(T0 + 5 * DAY), null],
        ],
      );
      // No window: the whole history, as before windows existed.
      const all = await dd.customers.setPricing(acme.id, { overrides: [line("flat", "0.3")] });
      assert.deepEqual(
        all.override_history.map((t) => [t.source, t.overrides_from, t.overrides_until]),
        [["manual", null, null]],
      );
      assert.equal(await charge("w6", T0 + 2 * DAY + HOUR), "0.3");
    });

    test("early termination: no installment after it, issued credits kept or forfeited; refusals change nothing", async () => {
      const { dd } = await tenant("terminate");
      const kept = await dd.customers.create({ kind: "organization", name: "Kept" });
      const lost = await dd.customers.create({ kind: "organization", name: "Lost" });
      const terms = {
        ends_at: "2027-03-01T00:00:00Z",
        commitment: "4000",
        schedule: { kind: "installments" as const, interval: { unit: "month" as const, count: 3 } },
        credit_price: { amount: "0.01", currency: "USD" },
      };
      const k = await dd.contracts.create({ ...terms, customer_id: kept.id });
      const l = await dd.contracts.create({ ...terms, customer_id: lost.id });
      await fails(
        dd.contracts.create({ ...terms, customer_id: kept.id, starts_at: "2026-12-01T00:00:00Z" }),
        "already_exists",
        409,
      );
      await fails(
        dd.contracts.create({ ...terms, customer_id: kept.id, ends_at: iso(T0 - DAY) }),
        "invalid_argument",
        400,
      );
      await fails(
        dd.contracts.create({
          ...terms,
          customer_id: lost.id,
          schedule: { kind: "installments", interval: { unit: "year", count: 2 } },
        }),
        "invalid_argument",
        400,
      );
      assert.equal((await dd.contracts.list(kept.id)).data.length, 1);
      await dd.testClock.advance({ to: "2026-07-01T00:00:00Z" });
      const ended = await dd.contracts.terminate(k.id);
      assert.deepEqual(
        [ended.status, ended.on_terminate, ended.next_installment_at],
        ["terminated", "keep", null],
      );
      await dd.contracts.terminate(l.id, { credits: "forfeit" });
      await fails(dd.contracts.terminate(k.id), "invalid_argument", 400);
      await dd.testClock.advance({ to: "2027-02-01T00:00:00Z" });
      assert.equal((await dd.wallets.balance(kept.wallet_id)).available, "2000");
      assert.equal((await dd.wallets.balance(lost.wallet_id)).available, "0");
      const after = await dd.contracts.get(l.id);
      assert.deepEqual(
        after.installments.map((i) => i.status),
        ["issued", "issued", "canceled", "canceled"],
      );
      assert.deepEqual([after.totals.voided, after.totals.forgone], ["2000", "2000"]);
    });

    test("the ledger reconciles, every contract route was answered, every response matched its schema", async () => {
      assert.deepEqual(log.violations, []);
      const unanswered = CONTRACT_ROUTES.filter(
        (r) => !(log.seen.get(r.operationId) ?? []).some((s) => s < 300),
      );
      assert.deepEqual(
        unanswered.map((r) => `${r.method} ${r.url}`),
        [],
      );
    });
  });
}
