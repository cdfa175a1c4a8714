import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Route } from "../src/routes.js";
import {
  API_ROUTES,
  fixtureOf,
  idKindOf,
  type Json,
  type Kind,
  otherCustomersOf,
  routeKey,
  SPECS,
  unknownId,
  type Vars,
} from "./support/bad-input.js";
import { type Fixtures, startWorld, unique, type World } from "./support/fixtures.js";
import { type Answer, assertProblem, type Call, type Client, snapshot } from "./support/http.js";

/**
 * Tenancy: every query is confined to the key's tenant, and a restricted key to its customer.
 * Another tenant's id answers exactly like an id that does not exist; reads never show another
 * tenant's (or, for a restricted key, another customer's) rows; restricted keys cannot write
 * (except their own customer's spend caps, where another customer's ids look nonexistent);
 * a revoked key stops at once; keys are stored hashed. Driven by the route table.
 */

let world: World;
let f: Fixtures;
let client: Client;
/** Each route's fresh resources (its bad-input spec's setup), for valid bodies. */
const vars = new Map<string, Vars>();
/** Every id in the database: its tenant and, when it has one, its customer. */
let owners: Map<string, { tenant: string; customer: string | null }>;

const ID = /^[a-z]{3}_[0-9a-z]{26}$/;

/** Every string in a JSON value that looks like one of our ids. */
function idsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === "string" && ID.test(value)) out.push(value);
  else if (Array.isArray(value)) for (const v of value) idsIn(v, out);
  else if (value !== null && typeof value === "object") for (const v of Object.values(value)) idsIn(v, out);
  return out;
}

async function loadOwners(): Promise<void> {
  const { rows: tables } = await world.server.store.db.query<{ table: string; customer: boolean }>(
    `SELECT table_name AS table, bool_or(column_name = 'customer_id') AS customer
     FROM information_schema.columns WHERE table_schema = current_schema()
     GROUP BY table_name HAVING bool_or(column_name = 'id') AND bool_or(column_name = 'tenant_id')`,
  );
  const union = tables
    .map(
      (t) =>
        `SELECT id, tenant_id, ${t.table === "customers" ? "id" : t.customer ? "customer_id" : "NULL"}::text AS customer_id FROM "${t.table}"`,
    )
    .join(" UNION ALL ");
  const { rows } = await world.server.store.db.query<{ id: string; tenant_id: string; customer_id: string }>(
    union,
  );
  owners = new Map(rows.map((r) => [r.id, { tenant: r.tenant_id, customer: r.customer_id }]));
}

/** The path of `r` with `id` for its :id, and the query a valid request needs. */
const pathOf = (r: Route, id: string | null, extra: Record<string, string> = {}) => {
  const query = new URLSearchParams({ ...SPECS[routeKey(r)]?.query, ...extra }).toString();
  return (id === null ? r.url : r.url.replace(":id", id)) + (query ? `?${query}` : "");
};

/** The query that lists everything at once, for a route that pages. */
const all = (r: Route): Record<string, string> =>
  "limit" in ((r.query as { properties?: object } | undefined)?.properties ?? {}) ? { limit: "200" } : {};

/** A valid body for a POST route (its bad-input spec's), or none for a GET. */
const bodyOf = (r: Route): Json | undefined =>
  r.method === "POST" ? (SPECS[routeKey(r)]?.body?.(f, vars.get(routeKey(r)) ?? {}) ?? {}) : undefined;

const callOf = (r: Route, id: string | null, key: string): Call => {
  const json = bodyOf(r);
  return { method: r.method, path: pathOf(r, id), key, ...(json === undefined ? {} : { json }) };
};

/** Sends a call that must change nothing in the database. */
async function unchanged(c: Call): Promise<Answer> {
  const before = await snapshot(world.server.store);
  const a = await client.send(c);
  assert.deepEqual(await snapshot(world.server.store), before, `${c.method} ${c.path} changed the database`);
  return a;
}

/** A problem without what differs between two requests: the request id, and the ids named. */
function shape(a: Answer, id: string): string {
  const { request_id: _, ...rest } = a.body as Record<string, unknown>;
  return JSON.stringify(rest).replaceAll(id, "<id>");
}

/** Asserts that `hidden` answers 404 exactly as an id that does not exist does. */
async function looksNonexistent(make: (id: string) => Call, hidden: string, kind: Kind): Promise<void> {
  const missing = unknownId(kind);
  const a = await unchanged(make(hidden));
  const b = await unchanged(make(missing));
  assertProblem(a, "not_found");
  assertProblem(b, "not_found");
  assert.equal(shape(a, hidden), shape(b, missing));
  assert.deepEqual(
    [...a.headers.keys()].filter((h) => h !== "date").sort(),
    [...b.headers.keys()].filter((h) => h !== "date").sort(),
  );
}

before(async () => {
  world = await startWorld();
  f = world.f;
  client = world.client;
  for (const r of API_ROUTES) {
    const setup = SPECS[routeKey(r)]?.setup;
    if (setup) vars.set(routeKey(r), await setup({ f, client, world }));
  }
  await loadOwners();
});

after(async () => {
  await world?.close();
});

describe("another tenant's ids", () => {
  for (const r of API_ROUTES.filter((r) => r.params)) {
    test(`${routeKey(r)}: the other tenant's id answers like one that does not exist`, async () => {
      const kind = idKindOf(r)!;
      // Both directions: A's key with B's id, and B's key with A's.
      await looksNonexistent((id) => callOf(r, id, f.a.key), fixtureOf(f, "b", kind), kind);
      await looksNonexistent((id) => callOf(r, id, f.b.key), fixtureOf(f, "a", kind), kind);
    });
  }

  for (const r of API_ROUTES) {
    const ids = SPECS[routeKey(r)]?.ids ?? {};
    for (const [field, spec] of Object.entries(ids)) {
      test(`${routeKey(r)}: ${field} of the other tenant answers like one that does not exist`, async () => {
        const v = vars.get(routeKey(r)) ?? {};
        const base = spec.base?.(f, v) ?? bodyOf(r) ?? {};
        const kind = idKindOf(r);
        const id = kind === null ? null : fixtureOf(f, "a", kind);
        await looksNonexistent(
          (x) => ({ method: r.method, path: pathOf(r, id), json: { ...base, [field]: x } }),
          fixtureOf(f, "b", spec.kind),
          spec.kind,
        );
      });
    }
  }
});

/** Reads that answer a tenant's settings (or nothing: the bare ping) rather than rows with ids. */
const ROW_LESS = new Set(["GET /v1/test_clock", "GET /v1/expiry_policies", "GET /v1/ping"]);

describe("reads show only the key's tenant", () => {
  for (const r of API_ROUTES.filter((r) => r.method === "GET")) {
    test(`${routeKey(r)}: every id in the answer is the tenant's`, async () => {
      for (const t of ["a", "b"] as const) {
        const kind = idKindOf(r);
        const id = kind === null ? null : fixtureOf(f, t, kind);
        const a = await client.send({ method: "GET", path: pathOf(r, id, all(r)), key: f[t].key });
        assert.equal(a.status, 200, a.text);
        const body = a.body as { object: string; data?: unknown[] };
        if (body.object === "list") assert.ok(body.data!.length > 0, `${routeKey(r)} lists something`);
        const ids = idsIn(a.body);
        // The tenant's clock and its expiry policies name no row (their own tests show tenants' are apart).
        if (!ROW_LESS.has(routeKey(r))) assert.ok(ids.length > 0);
        for (const x of ids) assert.equal(owners.get(x)?.tenant, f[t].tenantId, `${x} in ${routeKey(r)}`);
      }
    });
  }

  test("filters naming the other tenant's rows find nothing", async () => {
    for (const path of [
      `/v1/grants?wallet_id=${f.b.wallet}`,
      `/v1/grants?customer_id=${f.b.customer}`,
      `/v1/transactions?wallet_id=${f.b.wallet}`,
      `/v1/transactions?customer_id=${f.b.customer}`,
    ]) {
      const a = await client.get(path);
      assert.equal(a.status, 200, a.text);
      assert.deepEqual((a.body as { data: unknown[] }).data, [], path);
    }
  });

  test("usage for another tenant's customer answers like a customer that does not exist", async () => {
    const event = (customerId: string): Call => ({
      method: "POST",
      path: "/v1/events",
      json: {
        id: "evt-cross",
        customer_id: customerId,
        action: "chat.completion",
        quantities: { output_tokens: 1 },
      },
    });
    await looksNonexistent(event, f.b.customer, "cus");
    const batch = await unchanged({
      method: "POST",
      path: "/v1/events/batch",
      json: { events: [event(f.b.customer).json] },
    });
    assert.equal(batch.status, 200, batch.text);
    const [result] = (batch.body as { results: { status: string; code: string }[] }).results;
    assert.equal(result?.status, "rejected");
    assert.equal(result?.code, "not_found");
  });

  test("the same external id in two tenants: each key finds its own", async () => {
    for (const t of ["a", "b"] as const) {
      const a = await client.send({ method: "GET", path: "/v1/customers?external_id=acme", key: f[t].key });
      const data = (a.body as { data: { id: string }[] }).data;
      assert.deepEqual(
        data.map((c) => c.id),
        [f[t].customer],
      );
    }
  });

  test("Idempotency-Keys are per tenant", async () => {
    const key = { "idempotency-key": `shared-${unique()}` };
    const a1 = await client.send({
      method: "POST",
      path: "/v1/customers",
      json: { kind: "individual" },
      headers: key,
    });
    const b1 = await client.send({
      method: "POST",
      path: "/v1/customers",
      json: { kind: "organization" },
      headers: key,
      key: f.b.key,
    });
    assert.equal(a1.status, 201, a1.text);
    assert.equal(b1.status, 201, `not a conflict with the other tenant's key: ${b1.text}`);
    const b2 = await client.send({
      method: "POST",
      path: "/v1/customers",
      json: { kind: "individual" },
      headers: key,
      key: f.b.key,
    });
    assertProblem(b2, "idempotency_key_reused");
    const a2 = await client.send({
      method: "POST",
      path: "/v1/customers",
      json: { kind: "individual" },
      headers: key,
    });
    assert.equal(a2.headers.get("idempotent-replayed"), "true");
    assert.equal((a2.body as { id: string }).id, (a1.body as { id: string }).id);
    assert.notEqual((b1.body as { id: string }).id, (a1.body as { id: string }).id);
  });
});

describe("restricted keys", () => {
  let restricted: string;
  before(async () => {
    const k = await client.create<{ kind: string; customer_id: string; secret: string }>("/v1/api_keys", {
      kind: "restricted",
      name: "customer page",
      customer_id: f.a.customer,
    });
    assert.equal(k.kind, "restricted");
    assert.equal(k.customer_id, f.a.customer);
    restricted = k.secret;
  });

  const own = (k: Kind): string => fixtureOf(f, "a", k);

  for (const r of API_ROUTES) {
    if (r.access === "customer") {
      // Writes a restricted key may make for its own customer (its spend caps; see
      // spend-caps.test.ts): another customer's ids look like ones that do not exist.
      test(`${routeKey(r)}: another customer's id looks nonexistent`, async () => {
        const kind = idKindOf(r);
        assert.ok(kind, `${routeKey(r)} has a path id`);
        const other = otherCustomersOf(f, kind);
        assert.ok(other, `a fixture of kind ${kind} for the second customer`);
        await looksNonexistent((id) => ({ ...callOf(r, id, restricted) }), other, kind);
      });
      continue;
    }
    if (r.method === "POST" || r.access === "secret") {
      test(`${routeKey(r)}: forbidden`, async () => {
        const kind = idKindOf(r);
        const a = await unchanged(callOf(r, kind === null ? null : own(kind), restricted));
        assertProblem(a, "forbidden");
      });
      continue;
    }
    test(`${routeKey(r)}: reads its customer only`, async () => {
      const kind = idKindOf(r);
      const a = await client.send({
        method: "GET",
        path: pathOf(r, kind === null ? null : own(kind), all(r)),
        key: restricted,
      });
      assert.equal(a.status, 200, a.text);
      const body = a.body as { object: string; data?: unknown[] };
      if (body.object === "list") assert.ok(body.data!.length > 0, `${routeKey(r)} lists something`);
      for (const x of idsIn(a.body)) {
        const owner = owners.get(x);
        assert.equal(owner?.tenant, f.a.tenantId, x);
        if (owner?.customer) assert.equal(owner.customer, f.a.customer, `${x} in ${routeKey(r)}`);
      }
      if (kind !== null) {
        // Another customer of the same tenant is as invisible as one that does not exist.
        const other = otherCustomersOf(f, kind);
        assert.ok(other, `a fixture of kind ${kind} for the second customer`);
        await looksNonexistent(
          (id) => ({ method: "GET", path: pathOf(r, id), key: restricted }),
          other,
          kind,
        );
      }
    });
  }

  test("filters naming another customer find nothing", async () => {
    for (const path of [
      `/v1/grants?customer_id=${f.a.customer2}`,
      `/v1/grants?wallet_id=${f.a.wallet2}`,
      `/v1/transactions?customer_id=${f.a.customer2}`,
      `/v1/transactions?wallet_id=${f.a.wallet2}`,
      "/v1/customers?external_id=bob",
    ]) {
      const a = await client.send({ method: "GET", path, key: restricted });
      assert.equal(a.status, 200, a.text);
      assert.deepEqual((a.body as { data: unknown[] }).data, [], path);
    }
  });
});

describe("revoked keys", () => {
  test("a revoked key gets 401 at once, for reads and writes", async () => {
    for (const body of [
      { kind: "secret", name: "soon revoked" },
      { kind: "restricted", name: "soon revoked", customer_id: f.a.customer },
    ]) {
      const k = await client.create<{ id: string; secret: string }>("/v1/api_keys", body);
      const read = { method: "GET", path: `/v1/customers/${f.a.customer}`, key: k.secret } as const;
      assert.equal((await client.send(read)).status, 200);
      const revoked = await client.create<{ revoked_at: string | null }>(`/v1/api_keys/${k.id}/revoke`);
      assert.ok(revoked.revoked_at);
      assertProblem(await unchanged(read), "unauthorized");
      assertProblem(
        await unchanged({
          method: "POST",
          path: "/v1/customers",
          json: { kind: "individual" },
          key: k.secret,
        }),
        "unauthorized",
      );
    }
  });

  test("a key that revokes itself stops with that request", async () => {
    const k = await client.create<{ id: string; secret: string }>("/v1/api_keys", {
      kind: "secret",
      name: "self",
    });
    const a = await client.send({ method: "POST", path: `/v1/api_keys/${k.id}/revoke`, key: k.secret });
    assert.equal(a.status, 200, a.text);
    assertProblem(await unchanged({ method: "GET", path: "/v1/api_keys", key: k.secret }), "unauthorized");
  });

  test("another tenant cannot revoke a key", async () => {
    const k = await client.create<{ id: string; secret: string }>("/v1/api_keys", {
      kind: "secret",
      name: "mine",
    });
    assertProblem(
      await unchanged({ method: "POST", path: `/v1/api_keys/${k.id}/revoke`, key: f.b.key }),
      "not_found",
    );
    assert.equal((await client.send({ method: "GET", path: "/v1/api_keys", key: k.secret })).status, 200);
  });
});

describe("keys are stored hashed", () => {
  /** Every row of every table, as text. */
  async function everything(): Promise<string> {
    const { rows } = await world.server.store.db.query<{ name: string }>(
      `SELECT table_name AS name FROM information_schema.tables
       WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`,
    );
    let all = "";
    for (const { name } of rows) {
      const r = await world.server.store.db.query<{ t: string | null }>(
        `SELECT string_agg(x::text, E'\\n') AS t FROM "${name}" x`,
      );
      all += r.rows[0]?.t ?? "";
    }
    return all;
  }

  test("the secret is in the create response only: never stored, listed or replayed", async () => {
    const idem = { "idempotency-key": `key-${unique()}` };
    const created = await client.send({
      method: "POST",
      path: "/v1/api_keys",
      json: { kind: "secret", name: "hashed" },
      headers: idem,
    });
    assert.equal(created.status, 201, created.text);
    const { id, secret, prefix } = created.body as { id: string; secret: string; prefix: string };
    assert.match(secret, /^dd_test_sk_[0-9A-Za-z]{20,}$/);
    assert.ok(secret.startsWith(prefix) && prefix.length < secret.length / 2, "the prefix is a short start");

    const { rows } = await world.server.store.db.query<{ id: string; hash: string }>(
      "SELECT id, hash FROM api_keys",
    );
    for (const r of rows) assert.notEqual(r.hash, secret);
    assert.match(rows.find((r) => r.id === id)!.hash, /^[0-9a-f]{64}$/);
    assert.ok(!(await everything()).includes(secret), "the secret is nowhere in the database");

    const replay = await client.send({
      method: "POST",
      path: "/v1/api_keys",
      json: { kind: "secret", name: "hashed" },
      headers: idem,
    });
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal((replay.body as { id: string }).id, id);
    assert.ok(!replay.text.includes(secret), "a replay does not repeat the secret");

    const list = await client.get("/v1/api_keys");
    assert.ok(!list.text.includes(secret));
    for (const k of (list.body as { data: Record<string, unknown>[] }).data) assert.ok(!("secret" in k));
    const revoked = await client.post(`/v1/api_keys/${id}/revoke`);
    assert.ok(!revoked.text.includes(secret));
    assert.ok(!(await everything()).includes(secret));
  });
});
