import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  API_ERROR_CODES,
  Drawdown,
  DrawdownConnectionError,
  DrawdownError,
  type List,
  toCredits,
  toUnits,
  UNITS_PER_CREDIT,
} from "../src/index.js";

/** A recorded request and a scripted answer: a Response, or an error to throw. */
interface Call {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body: unknown;
}
type Script = (call: Call, n: number) => Response | Error;

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "request-id": "req_test", ...headers },
  });

const problem = (status: number, code: string, extra: object = {}) =>
  new Response(
    JSON.stringify({
      type: `https://drawdown.dev/errors/${code}`,
      title: code,
      status,
      code,
      detail: `it failed: ${code}`,
      request_id: "req_problem",
      ...extra,
    }),
    { status, headers: { "content-type": "application/problem+json", "request-id": "req_problem" } },
  );

/** A client over a scripted fetch; `calls` records what it sent. */
function client(script: Script, options: { maxRetries?: number } = {}) {
  const calls: Call[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit) => {
    const headers = Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>));
    const call: Call = {
      url: new URL(String(input)),
      method: init?.method ?? "GET",
      headers,
      body: typeof init?.body === "string" ? JSON.parse(init.body) : undefined,
    };
    calls.push(call);
    const out = script(call, calls.length);
    if (out instanceof Error) throw out;
    return out;
  };
  const dd = new Drawdown({
    apiKey: "dd_test_sk_x",
    baseUrl: "http://drawdown.test/",
    fetch: fetch as typeof globalThis.fetch,
    retryBaseDelayMs: 1,
    ...options,
  });
  return { dd, calls };
}

const grantCreated = { object: "grant", grant: { id: "grt_1" }, transaction_id: "txn_1" };

describe("amount helpers", () => {
  test("toUnits and toCredits convert exactly at scale 9", () => {
    assert.equal(UNITS_PER_CREDIT, 1_000_000_000n);
    assert.equal(toUnits("12.5"), 12_500_000_000n);
    assert.equal(toUnits("0.000000001"), 1n);
    assert.equal(toUnits("-3"), -3_000_000_000n);
    assert.equal(toUnits("0"), 0n);
    assert.equal(toCredits(12_500_000_000n), "12.5");
    assert.equal(toCredits(-1n), "-0.000000001");
    assert.equal(toCredits(toUnits("123456789.123456789")), "123456789.123456789");
  });

  test("they refuse what is not an exact amount", () => {
    assert.throws(() => toUnits("1e3"), RangeError);
    assert.throws(() => toUnits("0.0000000001"), RangeError);
    assert.throws(() => toUnits(" 1"), RangeError);
    assert.throws(() => toUnits(1.5 as unknown as string), TypeError);
    assert.throws(() => toCredits(15 as unknown as bigint), TypeError);
  });
});

describe("requests", () => {
  test("amounts: strings go as they are, bigints as units, numbers are a TypeError", async () => {
    const { dd, calls } = client(() => json(201, grantCreated));
    await dd.grants.create({ wallet_id: "wal_1", amount: "12.5", source: "plan" });
    await dd.grants.create({
      wallet_id: "wal_1",
      amount: 12_500_000_000n,
      cost_basis: 10_000_000n,
      currency: "USD",
      source: "purchase",
      expires_at: new Date("2030-01-01T00:00:00Z"),
    });
    assert.deepEqual(calls[0]!.body, { wallet_id: "wal_1", amount: "12.5", source: "plan" });
    assert.deepEqual(calls[1]!.body, {
      wallet_id: "wal_1",
      amount: "12.5",
      cost_basis: "0.01",
      currency: "USD",
      source: "purchase",
      expires_at: "2030-01-01T00:00:00.000Z",
    });
    const asNumber = 12.5 as unknown as string;
    await assert.rejects(
      dd.grants.create({ wallet_id: "wal_1", amount: asNumber, source: "plan" }),
      TypeError,
    );
    await assert.rejects(dd.adjustments.debit("wal_1", { amount: asNumber, reason: "x" }), TypeError);
    await assert.rejects(dd.adjustments.credit("wal_1", { amount: asNumber, reason: "x" }), TypeError);
    await assert.rejects(
      dd.grants.create({ wallet_id: "wal_1", amount: "1", cost_basis: asNumber, source: "plan" }),
      /never JS numbers/,
    );
    assert.equal(calls.length, 2, "nothing is sent for a bad amount");
  });

  test("every POST carries an idempotency key: the caller's, or a generated one", async () => {
    const { dd, calls } = client(() => json(201, grantCreated));
    await dd.grants.create({ wallet_id: "wal_1", amount: "1", source: "plan" }, { idempotencyKey: "mine-1" });
    const r = await dd.grants.create({ wallet_id: "wal_1", amount: "1", source: "plan" }).withResponse();
    assert.equal(calls[0]!.headers["idempotency-key"], "mine-1");
    assert.match(calls[1]!.headers["idempotency-key"]!, /^[0-9a-f-]{36}$/);
    assert.equal(r.idempotencyKey, calls[1]!.headers["idempotency-key"]);
    assert.equal(calls[1]!.headers.authorization, "Bearer dd_test_sk_x");
    assert.equal(calls[1]!.headers["content-type"], "application/json");
    assert.equal(calls[1]!.url.href, "http://drawdown.test/v1/grants");
  });

  test("query strings: limits as text, Dates as RFC 3339, absent fields left out", async () => {
    const { dd, calls } = client(() => json(200, { object: "list", data: [], next_cursor: null }));
    await dd.transactions.list({
      wallet_id: "wal_1",
      from: new Date("2026-01-01T00:00:00Z"),
      to: "2026-02-01T00:00:00Z",
      limit: 5,
    });
    await dd.grants.list();
    assert.deepEqual(Object.fromEntries(calls[0]!.url.searchParams), {
      limit: "5",
      wallet_id: "wal_1",
      from: "2026-01-01T00:00:00.000Z",
      to: "2026-02-01T00:00:00Z",
    });
    assert.equal(calls[1]!.url.search, "");
    assert.equal(calls[1]!.method, "GET");
    assert.equal(calls[1]!.headers["idempotency-key"], undefined);
  });

  test("ids are escaped in paths", async () => {
    const { dd, calls } = client(() => json(200, { object: "grant" }));
    await dd.grants.get("grt_1/../x");
    assert.equal(calls[0]!.url.pathname, "/v1/grants/grt_1%2F..%2Fx");
    await assert.rejects(dd.grants.get(""), TypeError);
  });

  test("listAll follows the cursors", async () => {
    const pages: Record<string, List<{ id: number }>> = {
      "": { object: "list", data: [{ id: 1 }, { id: 2 }], next_cursor: "c2" },
      c2: { object: "list", data: [{ id: 3 }], next_cursor: "c3" },
      c3: { object: "list", data: [], next_cursor: null },
    };
    const { dd, calls } = client((call) => json(200, pages[call.url.searchParams.get("cursor") ?? ""]));
    const ids: number[] = [];
    for await (const g of dd.grants.listAll({ wallet_id: "wal_1", limit: 2 }))
      ids.push(g.id as unknown as number);
    assert.deepEqual(ids, [1, 2, 3]);
    assert.equal(calls.length, 3);
    assert.ok(calls.every((c) => c.url.searchParams.get("wallet_id") === "wal_1"));
    assert.ok(calls.every((c) => c.url.searchParams.get("limit") === "2"));
  });
});

describe("retries", () => {
  test("5xx and 429 are retried with the same idempotency key", async () => {
    const { dd, calls } = client((_c, n) =>
      n === 1
        ? problem(503, "internal_error")
        : n === 2
          ? json(429, {}, { "retry-after": "0" })
          : json(201, grantCreated),
    );
    const r = await dd.grants.create({ wallet_id: "wal_1", amount: "1", source: "plan" }).withResponse();
    assert.equal(r.attempts, 3);
    assert.equal(r.status, 201);
    assert.equal(calls.length, 3);
    const keys = new Set(calls.map((c) => c.headers["idempotency-key"]));
    assert.equal(keys.size, 1, "one key across the retries");
  });

  test("network errors are retried, then reported as DrawdownConnectionError", async () => {
    const flaky = client((_c, n) => (n === 1 ? new TypeError("fetch failed") : json(200, { ok: 1 })));
    assert.deepEqual(await flaky.dd.customers.get("cus_1"), { ok: 1 });
    assert.equal(flaky.calls.length, 2);

    const down = client(() => new TypeError("fetch failed"), { maxRetries: 3 });
    const e = await down.dd.customers.create({ kind: "individual" }).catch((x: unknown) => x);
    assert.ok(e instanceof DrawdownConnectionError);
    assert.ok(e instanceof DrawdownError);
    assert.equal(e.code, "connection_error");
    assert.equal(e.status, 0);
    assert.equal(e.idempotencyKey, down.calls[0]!.headers["idempotency-key"]);
    assert.equal(down.calls.length, 4);
  });

  test("after maxRetries the last 5xx is thrown; 4xx are never retried", async () => {
    const five = client(() => problem(500, "internal_error"), { maxRetries: 1 });
    const e = await five.dd.reconcile().catch((x: unknown) => x);
    assert.ok(e instanceof DrawdownError);
    assert.equal(e.status, 500);
    assert.equal(e.code, "internal_error");
    assert.equal(five.calls.length, 2);

    const four = client(() => problem(409, "grant_inactive", { details: { grant_id: "grt_1" } }));
    const f = await four.dd.grants.void("grt_1").catch((x: unknown) => x);
    assert.ok(f instanceof DrawdownError);
    assert.equal(four.calls.length, 1);
    assert.equal(f.code, "grant_inactive");
    assert.equal(f.status, 409);
    assert.equal(f.detail, "it failed: grant_inactive");
    assert.equal(f.requestId, "req_problem");
    assert.deepEqual(f.details, { grant_id: "grt_1" });
    assert.equal(f.title, "grant_inactive");

    const none = client(() => problem(502, "internal_error"), { maxRetries: 0 });
    await assert.rejects(none.dd.apiKeys.list(), DrawdownError);
    assert.equal(none.calls.length, 1);
  });

  test("a response that is not the API's JSON is invalid_response", async () => {
    const { dd } = client(() => new Response("<html>gateway</html>", { status: 200 }));
    await assert.rejects(dd.customers.get("cus_1"), (e: unknown) => {
      assert.ok(e instanceof DrawdownError);
      assert.equal(e.code, "invalid_response");
      return true;
    });
    const proxy = client(() => new Response("nope", { status: 403 }));
    await assert.rejects(proxy.dd.customers.get("cus_1"), { code: "invalid_response", status: 403 });
  });

  test("an aborted call stops, retries included", async () => {
    const controller = new AbortController();
    const { dd, calls } = client(() => {
      controller.abort(new Error("stop"));
      return problem(503, "internal_error");
    });
    await assert.rejects(dd.customers.get("cus_1", { signal: controller.signal }), /stop/);
    assert.equal(calls.length, 1);
  });
});

describe("construction", () => {
  test("apiKey, baseUrl and maxRetries are checked", () => {
    assert.throws(() => new Drawdown({ apiKey: "", baseUrl: "http://x" }), TypeError);
    assert.throws(() => new Drawdown({ apiKey: "k", baseUrl: "localhost:4020" }), TypeError);
    assert.throws(() => new Drawdown({ apiKey: "k", baseUrl: "http://x", maxRetries: -1 }), RangeError);
  });

  test("the error code list has no duplicates", () => {
    assert.equal(new Set(API_ERROR_CODES).size, API_ERROR_CODES.length);
  });
});
