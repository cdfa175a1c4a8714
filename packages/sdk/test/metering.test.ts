import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Drawdown, DrawdownError, publicRateCard } from "../src/index.js";

/** What the metering methods send: quantities, rate lines, media types, keys. */

interface Call {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body: unknown;
}

function client(answer: (call: Call) => Response = () => json(200, {})) {
  const calls: Call[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit) => {
    const call: Call = {
      url: new URL(String(input)),
      method: init?.method ?? "GET",
      headers: { ...(init?.headers as Record<string, string>) },
      body: typeof init?.body === "string" ? JSON.parse(init.body) : undefined,
    };
    calls.push(call);
    return answer(call);
  };
  const dd = new Drawdown({
    apiKey: "dd_test_sk_x",
    baseUrl: "http://drawdown.test",
    fetch: fetch as typeof globalThis.fetch,
    retryBaseDelayMs: 1,
  });
  return { dd, calls, fetch: fetch as typeof globalThis.fetch };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

describe("events", () => {
  test("quantities: bigints and safe integers as whole counts, strings as they are; times as RFC 3339", async () => {
    const { dd, calls } = client();
    await dd.events.ingest({
      id: "e1",
      customer_id: "cus_1",
      action: "chat.completion",
      quantities: { input_tokens: 1200, output_tokens: 350n, gpu_seconds: "1.25", big: 2n ** 70n },
      time: new Date("2026-03-01T00:00:00Z"),
      reported_cost: 1_500_000n,
    });
    assert.deepEqual(calls[0]!.body, {
      id: "e1",
      customer_id: "cus_1",
      action: "chat.completion",
      quantities: {
        input_tokens: "1200",
        output_tokens: "350",
        gpu_seconds: "1.25",
        big: "1180591620717411303424",
      },
      time: "2026-03-01T00:00:00.000Z",
      reported_cost: "0.0015",
    });
    assert.equal(calls[0]!.url.pathname, "/v1/events");
    assert.equal(calls[0]!.headers["content-type"], "application/json");
    assert.equal(calls[0]!.headers["idempotency-key"], undefined, "events are deduplicated by their ids");
    assert.equal(calls[0]!.headers.authorization, "Bearer dd_test_sk_x");
  });

  test("fractional, negative or unsafe numbers never leave the SDK", async () => {
    const { dd, calls } = client();
    const base = { id: "e", customer_id: "c", action: "a" };
    await assert.rejects(dd.events.ingest({ ...base, quantities: { t: 1.5 } }), TypeError);
    await assert.rejects(dd.events.ingest({ ...base, quantities: { t: -1 } }), TypeError);
    await assert.rejects(dd.events.ingest({ ...base, quantities: { t: 2 ** 60 } }), /safe integer/);
    await assert.rejects(dd.events.ingest({ ...base, quantities: { t: -1n } }), RangeError);
    await assert.rejects(
      dd.events.ingest({ ...base, quantities: { t: 1 }, reported_cost: 0.5 as unknown as string }),
      /never JS numbers/,
    );
    await assert.rejects(
      dd.events.ingestBatch([
        { ...base, quantities: { ok: 1 } },
        { ...base, quantities: { bad: 0.1 } },
      ]),
      /events\[1\]\.quantities\.bad/,
    );
    assert.equal(calls.length, 0);
  });

  test("CloudEvents: one as application/cloudevents+json, a batch of them as a bare array", async () => {
    const { dd, calls } = client();
    const cloud = {
      specversion: "1.0" as const,
      id: "ce1",
      source: "/agents/a",
      type: "chat.completion",
      time: new Date("2026-03-01T00:00:00Z"),
      traceparent: "00-abc-def-01",
      data: { customer_id: "cus_1", quantities: { output_tokens: 3n } },
    };
    await dd.events.ingest(cloud);
    await dd.events.ingestBatch([cloud, { ...cloud, id: "ce2" }]);
    await dd.events.ingestBatch([
      cloud,
      { id: "n1", customer_id: "cus_1", action: "a", quantities: { x: 1 } },
    ]);
    const wire = {
      specversion: "1.0",
      id: "ce1",
      source: "/agents/a",
      type: "chat.completion",
      time: "2026-03-01T00:00:00.000Z",
      traceparent: "00-abc-def-01",
      data: { customer_id: "cus_1", quantities: { output_tokens: "3" } },
    };
    assert.equal(calls[0]!.headers["content-type"], "application/cloudevents+json");
    assert.deepEqual(calls[0]!.body, wire);
    assert.equal(calls[1]!.headers["content-type"], "application/cloudevents-batch+json");
    assert.deepEqual(calls[1]!.body, [wire, { ...wire, id: "ce2" }]);
    assert.equal(calls[1]!.url.pathname, "/v1/events/batch");
    assert.equal(calls[2]!.headers["content-type"], "application/json", "a mixed batch is wrapped");
    assert.deepEqual(calls[2]!.body, {
      events: [wire, { id: "n1", customer_id: "cus_1", action: "a", quantities: { x: "1" } }],
    });
  });

  test("a rejected event throws its code; retries are safe because ids dedupe", async () => {
    let n = 0;
    const { dd, calls } = client(() => {
      n++;
      if (n === 1) return json(503, { code: "internal_error", detail: "x", status: 503 });
      if (n === 2) return json(201, { id: "e", status: "accepted", charge: {} });
      return new Response(
        JSON.stringify({
          type: "t",
          title: "t",
          status: 400,
          code: "unknown_action",
          detail: "no line",
          request_id: "req_1",
          details: { event_id: "e" },
        }),
        { status: 400, headers: { "content-type": "application/problem+json" } },
      );
    });
    const ok = await dd.events
      .ingest({ id: "e", customer_id: "c", action: "a", quantities: { x: 1 } })
      .withResponse();
    assert.equal(ok.attempts, 2);
    assert.equal(ok.idempotencyKey, null);
    assert.equal(calls.length, 2);
    const e = await dd.events
      .ingest({ id: "e", customer_id: "c", action: "a", quantities: { x: 1 } })
      .catch((x) => x);
    assert.ok(e instanceof DrawdownError);
    assert.equal(e.code, "unknown_action");
    assert.deepEqual(e.details, { event_id: "e" });
  });
});

describe("pricing", () => {
  test("rate lines: per, minimum and tier bounds go as strings; rates as they are", async () => {
    const { dd, calls } = client();
    await dd.rateCards.publishVersion("rcd_1", {
      effective_at: new Date("2026-04-01T00:00:00Z"),
      lines: [
        { id: "a", action: "x.y", quantity: "t", rate: "0.000015", per: 1_000_000 },
        {
          id: "b",
          action: "x.z",
          quantity: "t",
          tiers: [
            { up_to: 1000n, rate: "1" },
            { up_to: null, rate: "0.5" },
          ],
        },
        { id: "c", action: "x.w", quantity: "t", rate: "2", minimum: 5_000_000_000n, per: 10n },
      ],
    });
    assert.deepEqual(calls[0]!.body, {
      effective_at: "2026-04-01T00:00:00.000Z",
      lines: [
        { id: "a", action: "x.y", quantity: "t", rate: "0.000015", per: "1000000" },
        {
          id: "b",
          action: "x.z",
          quantity: "t",
          tiers: [
            { up_to: "1000", rate: "1" },
            { up_to: null, rate: "0.5" },
          ],
        },
        { id: "c", action: "x.w", quantity: "t", rate: "2", minimum: "5", per: "10" },
      ],
    });
    assert.match(calls[0]!.headers["idempotency-key"]!, /^[0-9a-f-]{36}$/, "pricing changes carry a key");
    await dd.customers.setPricing("cus_1", {
      overrides: [{ id: "o", action: "a", quantity: "t", minimum: "1" }],
    });
    assert.deepEqual(calls[1]!.body, { overrides: [{ id: "o", action: "a", quantity: "t", minimum: "1" }] });
    await dd.wallets.setOverage("wal_1", { mode: "soft_cap", floor: -100_000_000_000n });
    assert.deepEqual(calls[2]!.body, { mode: "soft_cap", floor: "-100" });
    await dd.reports.margin({ group_by: "run", from: new Date("2026-03-01T00:00:00Z") });
    assert.equal(calls[3]!.url.search, "?group_by=run&from=2026-03-01T00%3A00%3A00.000Z");
  });

  test("the public rate card is fetched without any key", async () => {
    const { dd, calls, fetch } = client(() => json(200, { object: "public_rate_card" }));
    await dd.publicRateCard("ten_1");
    await publicRateCard("ten_1", { baseUrl: "http://drawdown.test/", fetch });
    for (const c of calls) {
      assert.equal(c.url.href, "http://drawdown.test/v1/public/ten_1/rate_card");
      assert.equal(c.headers.authorization, undefined);
    }
    assert.throws(() => publicRateCard("ten_1", { baseUrl: "nope" }), TypeError);
    await assert.rejects(dd.publicRateCard(""), TypeError);
  });
});
