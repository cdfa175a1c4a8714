import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type CloudEventInput,
  type Customer,
  type Drawdown,
  type EventResult,
  publicRateCard,
  type RateCard,
  type RateCardVersion,
  type RateCardVersionParams,
  type Subject,
  toCredits,
  toUnits,
  type UsageEvent,
  type UsageEventInput,
} from "@drawdown/sdk";
import { type TSchema, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { METERING_ROUTES } from "../src/metering-routes.js";
import { contractClient, newContractLog } from "./support/contract.js";
import { backends, startTestServer, type TestServer } from "./support/harness.js";
import { fails, sum } from "./support/sdk.js";

/**
 * Metering end to end through the SDK over HTTP, on every backend: rate cards and their
 * versions, customer pricing, cost tables, single and batch ingestion in the native and the
 * CloudEvents shapes, the price explanation, overage, the public rate card, the margin report,
 * run summaries and restricted keys. Every response is checked against its route's schema
 * (support/contract.ts); responses whose route schema is open are also checked against the
 * stricter schemas below, which mirror the SDK's types.
 */

const DAY = 86_400_000;
const T0 = Date.parse("2026-03-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

function valid(schema: TSchema, value: unknown, what: string): void {
  const errors = [...Value.Errors(schema, value)].slice(0, 5);
  assert.deepEqual(
    errors.map((e) => `${e.path}: ${e.message}`),
    [],
    `${what} matches its schema: ${JSON.stringify(value)}`,
  );
}

// Stricter schemas for the responses whose route schema is open (additionalProperties: true).
const strict = { additionalProperties: false } as const;
const Str = Type.String();
const NullableStr = Type.Union([Type.String(), Type.Null()]);
const Charge = Type.Object(
  {
    outcome: Type.Union([Type.Literal("charged"), Type.Literal("zero"), Type.Literal("unpaid")]),
    credits: Str,
    drawn: Str,
    overdraft: Str,
    unpaid: Str,
    reason: NullableStr,
    wallet_id: Str,
    rate_card_version_id: Str,
    transaction_id: NullableStr,
  },
  strict,
);
const ExplainedEvent = Type.Object(
  {
    object: Type.Literal("event"),
    id: Str,
    customer_id: Str,
    subject_id: NullableStr,
    action: Str,
    dimensions: Type.Record(Str, Str),
    quantities: Type.Record(Str, Str),
    time: Str,
    status: Type.Union([Type.Literal("succeeded"), Type.Literal("failed")]),
    run_id: NullableStr,
    received_at: Str,
    charge: Charge,
    explanation: Type.Object(
      {
        multiplier: Str,
        lines: Type.Array(
          Type.Object(
            {
              line_id: Str,
              quantity: Str,
              amount: Str,
              per: Str,
              pieces: Type.Array(Type.Object({ quantity: Str, rate: Str }, strict)),
              credits: Str,
              minimum_applied: Type.Boolean(),
              free: Type.Boolean(),
              override: Type.Boolean(),
            },
            strict,
          ),
        ),
        override_source: NullableStr,
        rounded: Str,
        draws: Type.Array(Type.Object({ grant_id: Str, wallet_id: Str, credits: Str }, strict)),
      },
      strict,
    ),
    cost: Type.Union([
      Type.Object(
        { amount: Str, currency: NullableStr, reported: Type.Boolean(), cost_table_version_id: NullableStr },
        strict,
      ),
      Type.Null(),
    ]),
    revenue: Type.Object({ amount: Str, currency: NullableStr }, strict),
    margin: NullableStr,
    amounts: Type.Array(Type.Object({ currency: NullableStr, revenue: Str, cost: Str, margin: Str }, strict)),
  },
  strict,
);
const RunSummary = Type.Object(
  {
    object: Type.Literal("run"),
    id: Str,
    customer_id: Str,
    // A run known only from its events: no status, no steps.
    subject_id: Type.Null(),
    wallet_id: Type.Null(),
    status: Type.Null(),
    metadata: Type.Object({}, strict),
    suspended_step: Type.Null(),
    resumable: Type.Literal(false),
    created_at: Type.Null(),
    finished_at: Type.Null(),
    step_count: Type.Literal(0),
    steps: Type.Array(Type.Never(), { maxItems: 0 }),
    events: Type.Integer(),
    failed_events: Type.Integer(),
    credits: Str,
    unpaid: Str,
    currency: Str,
    revenue: Str,
    cost: Str,
    margin: Str,
    amounts: Type.Array(Type.Object({ currency: Str, revenue: Str, cost: Str, margin: Str }, strict)),
    started_at: Str,
    ended_at: Str,
  },
  strict,
);
const PublicVersion = Type.Object(
  {
    version: Type.Integer(),
    effective_at: Str,
    rates: Type.Array(
      Type.Object(
        {
          action: Str,
          model: NullableStr,
          match: Type.Record(Str, Str),
          quantity: Str,
          rate: NullableStr,
          per: Str,
          tiers: Type.Union([
            Type.Array(Type.Object({ up_to: NullableStr, rate: Str }, strict)),
            Type.Null(),
          ]),
          minimum: NullableStr,
          free: Type.Boolean(),
        },
        strict,
      ),
    ),
    multipliers: Type.Array(Type.Object({ dimension: Str, value: Str, factor: Str }, strict)),
  },
  strict,
);
const PublicCard = Type.Object(
  {
    object: Type.Literal("public_rate_card"),
    name: Str,
    current: Type.Union([PublicVersion, Type.Null()]),
    upcoming: Type.Union([PublicVersion, Type.Null()]),
  },
  strict,
);

/** The standard card, written with every kind of SDK input (numbers, bigints, strings). */
const CARD: RateCardVersionParams = {
  lines: [
    { id: "chat-in", action: "chat.completion", quantity: "input_tokens", rate: "1", per: 1000 },
    { id: "chat-out", action: "chat.completion", quantity: "output_tokens", rate: "3", per: "1000" },
    {
      id: "chat-out-mini",
      action: "chat.completion",
      match: { model: "mini" },
      quantity: "output_tokens",
      rate: "0.5",
      per: 1000n,
    },
    { id: "embed", action: "embedding.create", quantity: "tokens", rate: "0.0000000015" },
    { id: "search", action: "tool.search", quantity: "calls", rate: "2", minimum: 5_000_000_000n },
    {
      id: "docs",
      action: "document.parse",
      quantity: "pages",
      tiers: [
        { up_to: 100, rate: "1" },
        { up_to: null, rate: "0.5" },
      ],
    },
  ],
  multipliers: [{ dimension: "tier", value: "turbo", factor: "6" }],
  non_billable: [{ action: "chat.*", match: { feature: "eval" }, reason: "internal evals" }],
};

for (const backend of backends()) {
  describe(`metering end to end through the SDK (${backend.name})`, () => {
    let now = T0;
    const tick = (ms = 1000) => {
      now += ms;
      return now;
    };
    const log = newContractLog();
    let server: TestServer;
    let dd: Drawdown;
    const connect = (apiKey: string) => contractClient(server.url, apiKey, log);

    let card: RateCard;
    let v1: RateCardVersion;
    let v2: RateCardVersion;
    let acme: Customer;
    let beta: Customer;
    let ann: Subject;
    let annGrant: string;
    let plan: string;
    let costTable: string;
    /** Every event id accepted so far, by customer. */
    const accepted: { id: string; customer: string }[] = [];

    before(async () => {
      server = await startTestServer({ backend: backend.name, clock: () => now });
      dd = connect(server.key);
    });
    after(async () => {
      await server?.close();
    });

    test("rate cards: create, publish versions (ambiguous and overlapping ones refused), list and get", async () => {
      tick();
      card = await dd.rateCards.create({ name: "Standard" });
      assert.equal(card.object, "rate_card");
      assert.equal(card.is_default, true, "the first card is the default");
      assert.deepEqual(card.versions, []);
      assert.equal(card.current_version_id, null);
      await fails(dd.rateCards.create({ name: "Standard" }), "already_exists", 409);

      v1 = await dd.rateCards.publishVersion(card.id, CARD);
      assert.equal(v1.object, "rate_card_version");
      assert.equal(v1.version, 1);
      assert.equal(v1.effective_at, iso(now));
      // The wire form: per, minimum and up_to as strings, whatever the SDK was given.
      assert.deepEqual(
        v1.lines.map((l) => [l.id, l.per ?? null, l.minimum ?? null, l.tiers?.map((t) => t.up_to) ?? null]),
        [
          ["chat-in", "1000", null, null],
          ["chat-out", "1000", null, null],
          ["chat-out-mini", "1000", null, null],
          ["embed", null, null, null],
          ["search", null, "5", null],
          ["docs", null, null, ["100", null]],
        ],
      );

      const ambiguous = await fails(
        dd.rateCards.publishVersion(card.id, {
          lines: [
            { id: "a", action: "chat.completion", quantity: "output_tokens", rate: "1" },
            { id: "b", action: "chat.*", match: {}, quantity: "output_tokens", rate: "2" },
            { id: "c", action: "chat.completion", quantity: "output_tokens", rate: "3" },
          ],
        }),
        "invalid_rate_card",
        400,
      );
      assert.match(ambiguous.detail, /"a" and "c"/);
      const v2At = T0 + 10 * DAY;
      v2 = await dd.rateCards.publishVersion(card.id, {
        ...CARD,
        effective_at: new Date(v2At),
        lines: CARD.lines.map((l) => (l.id === "chat-out" ? { ...l, rate: "4" } : l)),
      });
      assert.equal(v2.version, 2);
      assert.equal(v2.effective_at, iso(v2At));
      await fails(
        dd.rateCards.publishVersion(card.id, { ...CARD, effective_at: iso(v2At - DAY) }),
        "rate_card_overlap",
        409,
      );
      await fails(
        dd.rateCards.publishVersion(card.id, { ...CARD, effective_at: iso(v2At) }),
        "rate_card_overlap",
        409,
      );
      await fails(
        dd.rateCards.publishVersion(card.id, { ...CARD, effective_at: iso(now - 1000) }),
        "rate_card_overlap",
      );
      await fails(dd.rateCards.publishVersion("rcd_nobody", CARD), "not_found", 404);

      const got = await dd.rateCards.get(card.id);
      assert.equal(got.current_version_id, v1.id);
      assert.deepEqual(got.versions, [v1, v2]);
      assert.deepEqual((await dd.rateCards.list()).data, [got]);
      await fails(dd.rateCards.get("rcd_nobody"), "not_found", 404);
    });

    test("customers, grants, a cost table and contract pricing", async () => {
      tick();
      acme = await dd.customers.create({ kind: "organization", name: "Acme" });
      beta = await dd.customers.create({ kind: "organization", name: "Beta" });
      ann = await dd.subjects.create(acme.id, { kind: "member", name: "Ann" });
      const annWallet = await dd.wallets.create({ customer_id: acme.id, member_id: ann.id });
      annGrant = (await dd.grants.create({ wallet_id: annWallet.id, amount: "5", source: "plan" })).grant.id;
      plan = (await dd.grants.create({ wallet_id: acme.wallet_id, amount: "20", source: "plan" })).grant.id;
      await dd.grants.create({
        wallet_id: acme.wallet_id,
        amount: 100_000_000_000n,
        source: "purchase",
        cost_basis: "0.01",
        currency: "USD",
      });
      await dd.grants.create({ wallet_id: beta.wallet_id, amount: "500", source: "plan" });

      const table = await dd.costTables.publish({
        currency: "USD",
        lines: [
          { id: "c-in", action: "chat.completion", quantity: "input_tokens", rate: "2.5", per: 1_000_000 },
          { id: "c-out", action: "chat.completion", quantity: "output_tokens", rate: "10", per: "1000000" },
        ],
      });
      costTable = table.id;
      assert.deepEqual(
        { ...table, id: "" },
        {
          object: "cost_table_version",
          id: "",
          version: 1,
          effective_at: iso(now),
          currency: "USD",
          lines: [
            { id: "c-in", action: "chat.completion", quantity: "input_tokens", rate: "2.5", per: "1000000" },
            { id: "c-out", action: "chat.completion", quantity: "output_tokens", rate: "10", per: "1000000" },
          ],
        },
      );
      await fails(
        dd.costTables.publish({ currency: "USD", effective_at: iso(now), lines: [] }),
        "rate_card_overlap",
      );

      // Beta: pinned to v1, with a contract price for search.
      const pricing = await dd.customers.setPricing(beta.id, {
        pinned_version_id: v1.id,
        overrides: [{ id: "beta-search", action: "tool.search", quantity: "calls", rate: "1" }],
      });
      assert.deepEqual(pricing, {
        object: "customer_pricing",
        customer_id: beta.id,
        rate_card_id: null,
        pinned_version_id: v1.id,
        overrides: [{ id: "beta-search", action: "tool.search", quantity: "calls", rate: "1" }],
        overrides_from: null,
        overrides_until: null,
        base: { rate_card_id: null, pinned_version_id: v1.id },
        override_history: [
          {
            source: "manual",
            overrides_from: null,
            overrides_until: null,
            rate_card_id: null,
            pinned_version_id: v1.id,
            overrides: [{ id: "beta-search", action: "tool.search", quantity: "calls", rate: "1" }],
          },
        ],
      });
      await fails(dd.customers.setPricing(beta.id, { rate_card_id: "rcd_nobody" }), "not_found", 404);
      await fails(dd.customers.setPricing("cus_nobody", {}), "not_found", 404);
      await fails(
        dd.customers.setPricing(beta.id, {
          overrides: [{ id: "x", action: "tool.search", quantity: "calls" }],
        }),
        "invalid_rate_card",
        400,
      );
    });

    test("one event: accepted with its exact charge (201), a retry answers the first result (200)", async () => {
      tick();
      const event: UsageEventInput = {
        id: "evt-1",
        customer_id: acme.id,
        subject_id: ann.id,
        action: "chat.completion",
        dimensions: { model: "gpt-4o", tier: "turbo" },
        quantities: { input_tokens: 1000, output_tokens: 500n },
        run_id: "run_1",
      };
      const first = await dd.events.ingest(event).withResponse();
      assert.equal(first.status, 201);
      assert.equal(first.idempotencyKey, null, "no Idempotency-Key: events dedupe by id");
      const charge = first.data.charge!;
      assert.deepEqual(
        { ...first.data, charge: { ...charge, transaction_id: null } },
        {
          id: "evt-1",
          status: "accepted",
          charge: {
            outcome: "charged",
            credits: "15",
            drawn: "15",
            overdraft: "0",
            unpaid: "0",
            reason: null,
            wallet_id: (await dd.wallets.list(acme.id)).data[1]!.id,
            rate_card_version_id: v1.id,
            transaction_id: null,
          },
        },
      );
      accepted.push({ id: "evt-1", customer: acme.id });
      const txn = await dd.transactions.get(charge.transaction_id!);
      assert.equal(txn.kind, "usage");
      assert.deepEqual(
        txn.entries.map((e) => [e.account, e.grant_id, e.amount]),
        [
          ["grant", annGrant, "-5"],
          ["grant", plan, "-10"],
          ["consumption", null, "15"],
        ],
      );

      const again = await dd.events.ingest(event).withResponse();
      assert.equal(again.status, 200);
      assert.deepEqual(again.data, { ...first.data, status: "duplicate" });
      const reused = await fails(
        dd.events.ingest({ ...event, quantities: { input_tokens: 1001, output_tokens: 500n } }),
        "event_id_reused",
        409,
      );
      assert.deepEqual(reused.details, { event_id: "evt-1" });
      const unknown = await fails(
        dd.events.ingest({ ...event, id: "evt-unknown", action: "image.generate" }),
        "unknown_action",
        400,
      );
      assert.deepEqual(unknown.details, { event_id: "evt-unknown" });
      await fails(
        dd.events.ingest({ ...event, id: "evt-ghost", customer_id: "cus_ghost" }),
        "not_found",
        404,
      );
      await fails(
        dd.events.ingest({ ...event, id: "evt-old", time: new Date(now - 8 * DAY) }),
        "event_too_old",
        400,
      );
      await fails(
        dd.events.ingest({ ...event, id: "evt-future", time: iso(now + 6 * 60_000) }),
        "event_in_future",
        400,
      );
      await fails(
        dd.events.ingest({ ...event, id: "evt-neg", quantities: { input_tokens: "-1" } }),
        "invalid_event",
        400,
      );
      await fails(dd.events.ingest({ ...event, id: "evt-cost", reported_cost: "-1" }), "invalid_amount", 400);
      await assert.rejects(
        dd.events.ingest({ ...event, id: "evt-float", quantities: { input_tokens: 1.5 } }),
        TypeError,
        "a fractional number never leaves the SDK",
      );
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "110");
    });

    test("a batch: each event answered on its own; one bad event does not sink it", async () => {
      tick();
      const base = { customer_id: acme.id, action: "chat.completion" };
      const batch = await dd.events.ingestBatch([
        {
          ...base,
          id: "b-1",
          dimensions: { model: "mini" },
          quantities: { output_tokens: 2000 },
          run_id: "run_1",
        },
        { ...base, id: "b-2", quantities: { output_tokens: "-1" } },
        { ...base, id: "b-3", customer_id: "cus_ghost", quantities: { output_tokens: 1 } },
        { ...base, id: "b-4", action: "image.generate", quantities: { images: 1 } },
        {
          id: "evt-1",
          customer_id: acme.id,
          subject_id: ann.id,
          action: "chat.completion",
          dimensions: { model: "gpt-4o", tier: "turbo" },
          quantities: { input_tokens: "1000", output_tokens: "500" },
          run_id: "run_1",
        },
        { ...base, id: "evt-1", quantities: { output_tokens: 1 } },
        {
          id: "b-7",
          customer_id: beta.id,
          action: "embedding.create",
          quantities: { tokens: 1 },
          run_id: "run_b",
        },
        {
          ...base,
          id: "b-8",
          dimensions: { model: "gpt-4o" },
          quantities: { output_tokens: 1000 },
          status: "failed",
          run_id: "run_1",
        },
        { ...base, id: "b-9", action: "tool.search", quantities: { calls: 1 }, reported_cost: 250_000_000n },
        { ...base, id: "b-10", action: "tool.search", quantities: { calls: 1 }, reported_cost: "-1" },
        { id: "b-11", customer_id: beta.id, action: "tool.search", quantities: { calls: 1 } },
      ]);
      const view = batch.results.map((r: EventResult) => [
        r.id,
        r.status,
        r.code ?? r.charge?.outcome,
        r.charge?.credits ?? null,
      ]);
      assert.deepEqual(view, [
        ["b-1", "accepted", "charged", "1"],
        ["b-2", "rejected", "invalid_event", null],
        ["b-3", "rejected", "not_found", null],
        ["b-4", "rejected", "unknown_action", null],
        ["evt-1", "duplicate", "charged", "15"],
        ["evt-1", "rejected", "event_id_reused", null],
        ["b-7", "accepted", "charged", "0.000000002"],
        ["b-8", "accepted", "zero", "0"],
        ["b-9", "accepted", "charged", "5"],
        ["b-10", "rejected", "invalid_amount", null],
        ["b-11", "accepted", "charged", "1"],
      ]);
      assert.equal(batch.object, "event_batch");
      assert.deepEqual([batch.accepted, batch.duplicates, batch.rejected], [5, 1, 5]);
      assert.equal(batch.credits, "7.000000002");
      assert.ok(batch.results.every((r) => r.status !== "rejected" || (r.message ?? "").length > 0));
      assert.equal(batch.results[7]!.charge!.reason, "failed");
      // Beta is pinned to v1, and its contract prices search at 1 without the card's minimum.
      assert.equal(batch.results[10]!.charge!.rate_card_version_id, v1.id);
      accepted.push(
        ...["b-1", "b-8", "b-9"].map((id) => ({ id, customer: acme.id })),
        ...["b-7", "b-11"].map((id) => ({ id, customer: beta.id })),
      );
      assert.equal((await dd.wallets.balance(acme.wallet_id)).total, "104");
      await fails(dd.events.ingestBatch([]), "validation_failed", 400);
    });

    test("CloudEvents: one as application/cloudevents+json, a bare array as application/cloudevents-batch+json", async () => {
      tick();
      const cloud = (id: string, type: string, data: CloudEventInput["data"]): CloudEventInput => ({
        specversion: "1.0",
        id,
        source: "/agents/summarizer",
        type,
        time: new Date(now - 1000),
        subject: ann.id,
        datacontenttype: "application/json",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        data,
      });
      // 6 credits: the pool's last 4 free credits, then 2 paid at 0.01 USD.
      const one = await dd.events
        .ingest(
          cloud("ce-1", "chat.completion", { customer_id: acme.id, quantities: { output_tokens: 2000 } }),
        )
        .withResponse();
      assert.equal(one.status, 201);
      assert.deepEqual([one.data.status, one.data.charge?.credits], ["accepted", "6"]);
      // Ann's own wallet is empty: she draws from the pool.
      assert.equal(one.data.charge?.wallet_id, (await dd.wallets.list(acme.id)).data[1]!.id);
      const explained = await dd.events.get("ce-1");
      assert.equal(explained.subject_id, ann.id, "the CloudEvent's subject is the subject");
      assert.equal(explained.time, iso(now - 1000));

      const batch = await dd.events.ingestBatch([
        // 60 searches: 120 credits, more than the wallet holds under the hard cap.
        cloud("ce-2", "tool.search", { customer_id: acme.id, quantities: { calls: 60 } }),
        cloud("ce-3", "document.parse", {
          customer_id: beta.id,
          subject_id: undefined,
          quantities: { pages: 120 },
        }),
        cloud("ce-1", "chat.completion", { customer_id: acme.id, quantities: { output_tokens: 2000 } }),
      ]);
      assert.deepEqual(
        batch.results.map((r) => [r.id, r.status, r.charge?.outcome ?? r.code, r.charge?.unpaid]),
        [
          ["ce-2", "accepted", "unpaid", "120"],
          ["ce-3", "rejected", "not_found", undefined],
          ["ce-1", "duplicate", "charged", "0"],
        ],
        "ce-3 names Ann, who is not Beta's",
      );
      assert.equal(batch.results[0]!.charge?.reason, "insufficient_credits");
      const docs = await dd.events.ingestBatch([
        {
          ...cloud("ce-3", "document.parse", { customer_id: beta.id, quantities: { pages: 120 } }),
          subject: undefined,
        },
        // A mixed batch goes as {"events": [...]}.
        { id: "n-1", customer_id: beta.id, action: "document.parse", quantities: { pages: "0.5" } },
      ]);
      assert.deepEqual(
        docs.results.map((r) => r.charge?.credits),
        ["110", "0.25"],
        "100 pages at 1 then 20 at 0.5; then half a page at 0.5",
      );
      accepted.push(
        { id: "ce-1", customer: acme.id },
        { id: "ce-2", customer: acme.id },
        { id: "ce-3", customer: beta.id },
        { id: "n-1", customer: beta.id },
      );
    });

    test("the explanation: version, lines with rates and tier pieces, multiplier, exact credits, draws, cost and revenue", async () => {
      const e1: UsageEvent = await dd.events.get("evt-1");
      valid(ExplainedEvent, e1, "GET /v1/events/evt-1");
      assert.equal(e1.charge.rate_card_version_id, v1.id);
      assert.deepEqual(e1.dimensions, { model: "gpt-4o", tier: "turbo" });
      assert.deepEqual(e1.quantities, { input_tokens: "1000", output_tokens: "500" });
      assert.equal(e1.run_id, "run_1");
      assert.equal(e1.subject_id, ann.id);
      assert.deepEqual(e1.explanation, {
        multiplier: "6",
        lines: [
          {
            line_id: "chat-in",
            quantity: "input_tokens",
            amount: "1000",
            per: "1000",
            pieces: [{ quantity: "1000", rate: "1" }],
            credits: "6",
            minimum_applied: false,
            free: false,
            override: false,
          },
          {
            line_id: "chat-out",
            quantity: "output_tokens",
            amount: "500",
            per: "1000",
            pieces: [{ quantity: "500", rate: "3" }],
            credits: "9",
            minimum_applied: false,
            free: false,
            override: false,
          },
        ],
        override_source: null,
        rounded: "15",
        draws: [
          { grant_id: annGrant, wallet_id: e1.charge.wallet_id, credits: "5" },
          { grant_id: plan, wallet_id: acme.wallet_id, credits: "10" },
        ],
      });
      assert.deepEqual(e1.cost, {
        amount: "0.0075",
        currency: "USD",
        reported: false,
        cost_table_version_id: costTable,
      });
      assert.deepEqual(e1.revenue, { amount: "0", currency: null });
      assert.equal(e1.margin, "-0.0075");

      const embed = await dd.events.get("b-7");
      valid(ExplainedEvent, embed, "GET /v1/events/b-7");
      assert.deepEqual(
        [embed.explanation.lines[0]!.pieces, embed.explanation.lines[0]!.credits, embed.explanation.rounded],
        [[{ quantity: "1", rate: "0.0000000015" }], "0.0000000015", "0.000000002"],
        "exact before the one rounding, half away from zero",
      );
      assert.equal(embed.cost, null, "an action the cost table does not price has an unknown cost");
      assert.equal(embed.margin, null);

      const search = await dd.events.get("b-9");
      assert.equal(search.explanation.lines[0]!.minimum_applied, true);
      assert.deepEqual(search.cost, {
        amount: "0.25",
        currency: "USD",
        reported: true,
        cost_table_version_id: null,
      });

      const beta11 = await dd.events.get("b-11");
      assert.deepEqual(
        beta11.explanation.lines.map((l) => [l.line_id, l.override, l.credits]),
        [["beta-search", true, "1"]],
      );
      assert.equal(beta11.explanation.override_source, "manual", "set by hand");

      const paid = await dd.events.get("ce-1");
      assert.deepEqual(paid.revenue, { amount: "0.02", currency: "USD" });
      assert.deepEqual(
        paid.explanation.draws.map((d) => d.credits),
        ["4", "2"],
        "free credits first, then paid",
      );
      assert.equal(paid.margin, "0", "0.02 revenue, 0.02 cost");

      const docs = await dd.events.get("ce-3");
      assert.deepEqual(docs.explanation.lines[0]!.pieces, [
        { quantity: "100", rate: "1" },
        { quantity: "20", rate: "0.5" },
      ]);
      const failed = await dd.events.get("b-8");
      assert.deepEqual(
        [failed.status, failed.charge.outcome, failed.charge.reason],
        ["failed", "zero", "failed"],
      );
      await fails(dd.events.get("b-2"), "not_found", 404);
      await fails(dd.events.get("nothing-here"), "not_found", 404);
    });

    test("soft cap: an overdraft down to the floor", async () => {
      tick();
      const policy = await dd.wallets.setOverage(acme.wallet_id, {
        mode: "soft_cap",
        floor: -50_000_000_000n,
      });
      assert.deepEqual(policy, {
        object: "overage_policy",
        wallet_id: acme.wallet_id,
        mode: "soft_cap",
        floor: "-50",
        price: null,
        throttle: null,
        source: "wallet",
        owed: "0",
      });
      // 50 searches: 100 credits, 98 drawn and 2 owed.
      const r = await dd.events.ingest({
        id: "over-1",
        customer_id: acme.id,
        action: "tool.search",
        quantities: { calls: 50 },
        run_id: "run_1",
      });
      assert.deepEqual([r.charge?.drawn, r.charge?.overdraft, r.charge?.unpaid], ["98", "2", "0"]);
      accepted.push({ id: "over-1", customer: acme.id });
      const wallet = await dd.wallets.get(acme.wallet_id);
      assert.equal(wallet.balance, "-2");
      await fails(dd.wallets.setOverage(acme.wallet_id, { mode: "hard_cap" }), "invalid_argument", 400);
      await fails(
        dd.wallets.setOverage(acme.wallet_id, { mode: "soft_cap", floor: "1" }),
        "invalid_argument",
        400,
      );
      await fails(
        dd.wallets.setOverage(acme.wallet_id, { mode: "soft_cap", floor: "x" }),
        "invalid_amount",
        400,
      );
      await fails(dd.wallets.setOverage("wal_nobody", { mode: "hard_cap" }), "not_found", 404);
      assert.equal((await dd.reconcile()).ok, true);
    });

    /** What a report row or a run says of these events' money: per currency, and single figures with one. */
    const moneyOf = (list: readonly UsageEvent[]) => {
      const by = new Map<string | null, { revenue: bigint; cost: bigint }>();
      const add = (currency: string | null, revenue: bigint, cost: bigint) => {
        const m = by.get(currency) ?? { revenue: 0n, cost: 0n };
        by.set(currency, { revenue: m.revenue + revenue, cost: m.cost + cost });
      };
      for (const e of list) {
        if (toUnits(e.revenue.amount) !== 0n) add(e.revenue.currency, toUnits(e.revenue.amount), 0n);
        if (e.cost && toUnits(e.cost.amount) !== 0n) add(e.cost.currency, 0n, toUnits(e.cost.amount));
      }
      const amounts = [...by]
        .sort(([a], [b]) => (a ?? "~").localeCompare(b ?? "~"))
        .map(([currency, m]) => ({
          currency,
          revenue: toCredits(m.revenue),
          cost: toCredits(m.cost),
          margin: toCredits(m.revenue - m.cost),
        }));
      const one = amounts.length <= 1;
      const only = amounts[0] ?? { currency: null, revenue: "0", cost: "0", margin: "0" };
      return {
        currency: one ? only.currency : null,
        revenue: one ? only.revenue : null,
        cost: one ? only.cost : null,
        margin: one ? only.margin : null,
        amounts,
      };
    };

    test("the margin report by customer, action, model and run agrees with the events", async () => {
      const events = await Promise.all(accepted.map((a) => dd.events.get(a.id)));
      const keyOf = {
        customer: (e: UsageEvent) => e.customer_id,
        action: (e: UsageEvent) => e.action,
        model: (e: UsageEvent) => e.dimensions.model ?? null,
        run: (e: UsageEvent) => e.run_id,
      };
      for (const group of ["customer", "action", "model", "run"] as const) {
        const report = await dd.reports.margin({ group_by: group });
        assert.equal(report.object, "margin_report");
        assert.equal(report.group_by, group);
        const expected = new Map<string | null, UsageEvent[]>();
        for (const e of events) expected.set(keyOf[group](e), [...(expected.get(keyOf[group](e)) ?? []), e]);
        const rows = [...expected.entries()]
          .map(([key, list]) => ({
            day: "2026-03-01",
            key,
            events: list.length,
            credits: sum(list.map((e) => sum([e.charge.drawn, e.charge.overdraft]))),
            unpaid: sum(list.map((e) => e.charge.unpaid)),
            ...moneyOf(list),
          }))
          .sort((a, b) =>
            a.key === b.key ? 0 : a.key === null ? 1 : b.key === null ? -1 : a.key < b.key ? -1 : 1,
          );
        // The database's collation orders the keys; compare in one order.
        const byKey = (a: { key: string | null }, b: { key: string | null }) =>
          a.key === b.key ? 0 : a.key === null ? 1 : b.key === null ? -1 : a.key < b.key ? -1 : 1;
        assert.deepEqual([...report.rows].sort(byKey), rows, `grouped by ${group}`);
      }
      const byCustomer = await dd.reports.margin({ group_by: "customer", customer_id: beta.id });
      assert.deepEqual(
        byCustomer.rows.map((r) => [r.key, r.events, r.credits]),
        [[beta.id, 4, "111.250000002"]],
      );
      const window = await dd.reports.margin({
        group_by: "action",
        from: new Date(T0 + DAY),
        to: iso(T0 + 2 * DAY),
      });
      assert.deepEqual(window.rows, []);
      const acmeRow = (await dd.reports.margin({ group_by: "customer", customer_id: acme.id })).rows[0]!;
      assert.deepEqual(
        [acmeRow.credits, acmeRow.unpaid, acmeRow.revenue],
        ["127", "120", "1"],
        "15 + 1 + 0 + 5 + 6 + 0 + 100 charged; 120 unpaid; 0.02 + 0.98 revenue",
      );
    });

    test("a run's summary", async () => {
      const run = await dd.runs.get("run_1");
      valid(RunSummary, run, "GET /v1/runs/run_1");
      assert.deepEqual(
        { ...run, started_at: "", ended_at: "" },
        {
          object: "run",
          id: "run_1",
          customer_id: acme.id,
          subject_id: null,
          wallet_id: null,
          status: null,
          metadata: {},
          suspended_step: null,
          resumable: false,
          created_at: null,
          finished_at: null,
          step_count: 0,
          steps: [],
          events: 4,
          failed_events: 1,
          credits: "116",
          unpaid: "0",
          currency: "USD",
          revenue: "0.98",
          cost: "0.0375",
          margin: "0.9425",
          amounts: [{ currency: "USD", revenue: "0.98", cost: "0.0375", margin: "0.9425" }],
          started_at: "",
          ended_at: "",
        },
      );
      assert.ok(run.started_at !== null && run.ended_at !== null && run.started_at <= run.ended_at);
      await fails(dd.runs.get("run_nothing"), "not_found", 404);
    });

    test("a restricted key reads its own customer's events and runs only, and cannot write", async () => {
      const key = await dd.apiKeys.create({ kind: "restricted", name: "Acme portal", customer_id: acme.id });
      const portal = connect(key.secret!);
      assert.equal((await portal.events.get("evt-1")).customer_id, acme.id);
      assert.equal((await portal.runs.get("run_1")).customer_id, acme.id);
      await fails(portal.events.get("b-7"), "not_found", 404);
      await fails(portal.runs.get("run_b"), "not_found", 404);
      await fails(
        portal.events.ingest({
          id: "p-1",
          customer_id: acme.id,
          action: "tool.search",
          quantities: { calls: 1 },
        }),
        "forbidden",
        403,
      );
      await fails(portal.reports.margin({ group_by: "customer" }), "forbidden", 403);
      await fails(portal.rateCards.list(), "forbidden", 403);
      // Another tenant sees none of it.
      const other = connect((await server.newTenant("Other")).key);
      await fails(other.events.get("evt-1"), "not_found", 404);
      await fails(other.runs.get("run_1"), "not_found", 404);
      assert.deepEqual((await other.rateCards.list()).data, []);
      assert.deepEqual((await other.reports.margin({ group_by: "customer" })).rows, []);
    });

    test("the public rate card needs no key, and follows the clock to the scheduled version", async () => {
      const viaClient = await dd.publicRateCard(server.tenantId);
      const noKey = await publicRateCard(server.tenantId, { baseUrl: server.url, maxRetries: 0 });
      assert.deepEqual(noKey, viaClient);
      valid(PublicCard, noKey, "GET /v1/public/:tenant_id/rate_card");
      assert.equal(noKey.name, "Standard");
      assert.equal(noKey.current?.version, 1);
      assert.equal(noKey.upcoming?.version, 2);
      assert.equal(noKey.upcoming?.effective_at, v2.effective_at);
      assert.deepEqual(
        noKey.current?.rates.find((r) => r.quantity === "output_tokens" && r.model === "mini"),
        {
          action: "chat.completion",
          model: "mini",
          match: { model: "mini" },
          quantity: "output_tokens",
          rate: "0.5",
          per: "1000",
          tiers: null,
          minimum: null,
          free: false,
        },
      );
      assert.deepEqual(noKey.current?.multipliers, [{ dimension: "tier", value: "turbo", factor: "6" }]);
      const none = await server.newTenant("Empty");
      await fails(publicRateCard(none.tenantId, { baseUrl: server.url, maxRetries: 0 }), "not_found", 404);
      await fails(publicRateCard("not-a-tenant", { baseUrl: server.url, maxRetries: 0 }), "not_found", 404);

      // The clock passes v2's start: the public card, the card's current version and rating follow.
      now = Date.parse(v2.effective_at) + 1000;
      const later = await publicRateCard(server.tenantId, { baseUrl: server.url });
      assert.deepEqual([later.current?.version, later.upcoming], [2, null]);
      assert.equal((await dd.rateCards.get(card.id)).current_version_id, v2.id);
      await dd.grants.create({ wallet_id: acme.wallet_id, amount: "100", source: "top_up" });
      const [a, b] = (
        await dd.events.ingestBatch([
          {
            id: "v2-a",
            customer_id: acme.id,
            action: "chat.completion",
            quantities: { output_tokens: 1000 },
          },
          {
            id: "v2-b",
            customer_id: beta.id,
            action: "chat.completion",
            quantities: { output_tokens: 1000 },
          },
        ])
      ).results;
      assert.deepEqual([a?.charge?.rate_card_version_id, a?.charge?.credits], [v2.id, "4"]);
      assert.deepEqual([b?.charge?.rate_card_version_id, b?.charge?.credits], [v1.id, "3"], "Beta is pinned");
      assert.equal((await dd.reconcile()).ok, true);
    });

    test("every metering route was exercised and every response matched its documented schema", () => {
      assert.deepEqual(log.violations, []);
      const unanswered = METERING_ROUTES.filter(
        (r) => !(log.seen.get(r.operationId) ?? []).some((s) => s < 300),
      );
      assert.deepEqual(
        unanswered.map((r) => `${r.method} ${r.url}`),
        [],
        "metering routes the tests never called successfully",
      );
    });
  });
}
