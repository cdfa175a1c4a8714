import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { COMMERCE_ROUTES } from "../../src/commerce-routes.js";
import type { ApiErrorCode } from "../../src/errors.js";
import { GIFT_ROUTES } from "../../src/gift-routes.js";
import { LIFECYCLE_ROUTES } from "../../src/lifecycle-routes.js";
import { METERING_ROUTES } from "../../src/metering-routes.js";
import { ROUTES, type Route } from "../../src/routes.js";
import {
  type Case,
  type Category,
  type Ctx,
  fixtureOf,
  type Json,
  type Kind,
  otherKind,
  SPECS,
  type Spec,
  unknownId,
  type Vars,
} from "./bad-input-specs.js";
import type { Fixtures, World } from "./fixtures.js";
import { startWorld } from "./fixtures.js";
import { assertProblem, type Call, snapshot } from "./http.js";

export * from "./bad-input-specs.js";

/**
 * The bad-input suite, driven by the route table: every route has a spec (bad-input-specs.ts),
 * and its cases are generated from its schemas (params, query, body) plus the spec's own.
 * Every case must answer a clear 4xx problem with the exact code, and change nothing in the
 * database.
 */

// ------------------------------------------------------------------ schemas

interface JsonSchema {
  readonly type?: string;
  readonly anyOf?: readonly JsonSchema[];
  readonly const?: unknown;
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly description?: string;
  readonly examples?: readonly unknown[];
}

type FieldKind =
  | { kind: "amount" | "timestamp" | "string" | "enum" | "integer" | "boolean" | "array" | "object" }
  | { kind: "id"; prefix: Kind };

/** What a property is, reading through `T | null`. */
function fieldKind(s: JsonSchema): FieldKind {
  if (s.anyOf) {
    if (s.anyOf.every((x) => x.const !== undefined)) return { kind: "enum" };
    const nonNull = s.anyOf.filter((x) => x.type !== "null");
    assert.equal(nonNull.length, 1, `a union the suite does not know: ${JSON.stringify(s)}`);
    return fieldKind(nonNull[0]!);
  }
  if (s.type === "string") {
    const description = s.description ?? "";
    if (description.includes("decimal string")) return { kind: "amount" };
    if (description.includes("RFC 3339")) return { kind: "timestamp" };
    const prefix = /^([a-z]{3})_/.exec(String(s.examples?.[0] ?? ""))?.[1];
    if (prefix) return { kind: "id", prefix: prefix as Kind };
    return { kind: "string" };
  }
  if (s.type === "integer") return { kind: "integer" };
  if (s.type === "boolean") return { kind: "boolean" };
  if (s.type === "array") return { kind: "array" };
  if (s.type === "object") return { kind: "object" };
  assert.fail(`a property the suite does not know: ${JSON.stringify(s)}`);
}

const propertiesOf = (s: unknown): [string, JsonSchema][] =>
  Object.entries((s as JsonSchema | undefined)?.properties ?? {});

/** Values of the wrong JSON type for a kind of property. */
function wrongTypes(k: FieldKind): { label: string; value: unknown }[] {
  switch (k.kind) {
    case "amount":
      return [
        { label: "a JSON number", value: 10 },
        { label: "an object", value: { value: "10" } },
      ];
    case "timestamp":
      return [{ label: "a number (epoch seconds)", value: 1767225600 }];
    case "id":
    case "string":
      return [
        { label: "a number", value: 42 },
        { label: "an array", value: ["x"] },
      ];
    case "enum":
      return [
        { label: "a value not in the list", value: "nonsense" },
        { label: "a number", value: 1 },
      ];
    case "integer":
      return [
        { label: "a string", value: "5" },
        { label: "a fraction", value: 1.5 },
        { label: "a boolean", value: true },
      ];
    case "boolean":
      return [
        { label: "a string", value: "true" },
        { label: "a number", value: 1 },
        { label: "null", value: null },
      ];
    case "array":
      return [
        { label: "a string", value: "chat.completion" },
        { label: "an object", value: { 0: "chat.completion" } },
      ];
    case "object":
      return [
        { label: "a string", value: "plan=pro" },
        { label: "an array", value: ["plan", "pro"] },
      ];
  }
}

/** Strings that are not amounts, each with the code it earns. */
function badAmounts(zeroAllowed: boolean): { label: string; value: string; code: ApiErrorCode }[] {
  const list: { label: string; value: string; code: ApiErrorCode }[] = [
    { label: "negative", value: "-1", code: "invalid_amount" },
    { label: "negative zero", value: "-0", code: "invalid_amount" },
    { label: "10 decimals, more than the scale", value: "1.0000000001", code: "invalid_amount" },
    { label: "19 integer digits, beyond the range", value: "1000000000000000000", code: "invalid_amount" },
    { label: "an exponent", value: "1e3", code: "invalid_amount" },
    { label: "a leading space", value: " 1", code: "invalid_amount" },
    { label: "a trailing space", value: "1 ", code: "invalid_amount" },
    { label: "a plus sign", value: "+1", code: "invalid_amount" },
    { label: "hexadecimal", value: "0x10", code: "invalid_amount" },
    { label: "empty", value: "", code: "invalid_amount" },
    { label: "a trailing point", value: "1.", code: "invalid_amount" },
    { label: "no integer part", value: ".5", code: "invalid_amount" },
    { label: "a leading zero", value: "01", code: "invalid_amount" },
    { label: "a decimal comma", value: "1,5", code: "invalid_amount" },
    { label: "NaN", value: "NaN", code: "invalid_amount" },
    { label: "Infinity", value: "Infinity", code: "invalid_amount" },
    { label: "non-ASCII digits", value: "١٢", code: "invalid_amount" },
    { label: "over 40 characters", value: "1".repeat(41), code: "validation_failed" },
  ];
  if (!zeroAllowed) {
    list.push(
      { label: "zero", value: "0", code: "invalid_amount" },
      { label: "zero with decimals", value: "0.000000000", code: "invalid_amount" },
    );
  }
  return list;
}

/** Strings that are not RFC 3339 timestamps. */
const BAD_TIMESTAMPS: { label: string; value: string; code: ApiErrorCode }[] = [
  { label: "not a timestamp", value: "next tuesday", code: "invalid_argument" },
  { label: "an impossible date", value: "2030-02-30T00:00:00Z", code: "invalid_argument" },
  { label: "no time zone", value: "2030-01-01T00:00:00", code: "invalid_argument" },
  { label: "a date only", value: "2030-01-01", code: "invalid_argument" },
  { label: "over 40 characters", value: `2030-01-01T00:00:00.${"0".repeat(30)}Z`, code: "validation_failed" },
];

// ------------------------------------------------------------------ generation

/** Every route the app registers from the route tables (the OpenAPI document lists the same). */
export const API_ROUTES: readonly Route[] = [
  ...ROUTES,
  ...METERING_ROUTES,
  ...LIFECYCLE_ROUTES,
  ...GIFT_ROUTES,
  ...COMMERCE_ROUTES,
];

const routeKey = (r: Route): string => `${r.method} ${r.url}`;

export function idKindOf(r: Route): Kind | null {
  const id = (r.params as JsonSchema | undefined)?.properties?.id;
  if (!id) return null;
  const k = fieldKind(id);
  if (k.kind === "id") return k.prefix;
  const given = SPECS[routeKey(r)]?.idKind;
  assert.ok(given, `${routeKey(r)}: its :id has no example id; give the spec an idKind`);
  return given;
}

/** The longest :id the route's schema admits. */
const idMax = (r: Route): number =>
  ((r.params as JsonSchema | undefined)?.properties?.id as { maxLength?: number } | undefined)?.maxLength ??
  64;

const pathOf = (r: Route, id: string | null, query = ""): string =>
  (id === null ? r.url : r.url.replace(":id", id)) + query;

/** A query string from parameters whose values are already encoded (null: left out). */
const queryOf = (params: Readonly<Record<string, string | null>>, raw = ""): string => {
  const parts = Object.entries(params)
    .filter(([, value]) => value !== null)
    .map(([name, value]) => `${name}=${value}`);
  if (raw) parts.push(raw);
  return parts.length > 0 ? `?${parts.join("&")}` : "";
};

/** All the cases of one route. */
export function casesOf(r: Route): Case[] {
  const spec = SPECS[routeKey(r)];
  if (!spec) return [];
  const kind = idKindOf(r);
  const validId = (f: Fixtures, v: Vars): string | null =>
    kind === null ? null : spec.id ? spec.id(f, v) : fixtureOf(f, "a", kind);
  const validBody = (f: Fixtures, v: Vars): Json | undefined =>
    r.method === "POST" ? (spec.body?.(f, v) ?? {}) : undefined;
  const baseQuery = spec.query ?? {};
  /** The valid request with something changed. */
  const request =
    (change: {
      id?: (f: Fixtures, v: Vars) => string;
      /** Query parameters over the valid ones (values encoded; null leaves one out). */
      query?: Record<string, string | null>;
      /** Query text appended as is. */
      rawQuery?: string;
      body?: (f: Fixtures, v: Vars) => unknown;
      key?: (f: Fixtures, v: Vars) => string | null;
      headers?: Record<string, string>;
    }) =>
    ({ f, v }: Ctx): Call => {
      const id = change.id ? change.id(f, v) : validId(f, v);
      const json = change.body ? change.body(f, v) : validBody(f, v);
      return {
        method: r.method,
        path: pathOf(r, id, queryOf({ ...baseQuery, ...change.query }, change.rawQuery)),
        ...(json === undefined ? {} : { json }),
        ...(change.key ? { key: change.key(f, v) } : {}),
        ...(change.headers ? { headers: change.headers } : {}),
      };
    };
  /** The valid request with a raw body. */
  const raw =
    (body: string | Uint8Array | (() => ReadableStream<Uint8Array>), contentType: string | null) =>
    ({ f, v }: Ctx): Call => ({
      method: r.method,
      path: pathOf(r, validId(f, v), queryOf(baseQuery)),
      raw: typeof body === "function" ? body() : body,
      headers: contentType === null ? {} : { "content-type": contentType },
    });

  const cases: Case[] = [];
  /** Adds cases; a null category adds none (a kind of case that does not apply). */
  const add = (category: Category | null, list: Omit<Case, "category">[]) => {
    if (category !== null) for (const c of list) cases.push({ category, ...c });
  };

  // ---- authentication and access
  add("auth", [
    { name: "no Authorization header", code: "unauthorized", call: request({ key: () => null }) },
    {
      name: "a Basic Authorization header",
      code: "unauthorized",
      call: (x) => ({ ...request({})(x), key: null, headers: { authorization: "Basic YWxhZGRpbjpvcGVu" } }),
    },
    {
      name: "Bearer without a key",
      code: "unauthorized",
      call: (x) => ({ ...request({})(x), key: null, headers: { authorization: "Bearer" } }),
    },
    {
      name: "a well-formed key that does not exist",
      code: "unauthorized",
      call: request({ key: () => `dd_test_sk_${"A".repeat(43)}` }),
    },
    { name: "a revoked key", code: "unauthorized", call: request({ key: (f) => f.revoked }) },
    { name: "a 300-character key", code: "unauthorized", call: request({ key: () => "k".repeat(300) }) },
  ]);
  if (r.method === "POST") {
    add("auth", [
      {
        name: "no key, and malformed JSON",
        code: "unauthorized",
        call: (x) => ({ ...raw('{"oops', "application/json")(x), key: null }),
      },
    ]);
  }
  if (r.access === "secret") {
    add("forbidden", [
      { name: "a restricted key", code: "forbidden", call: request({ key: (f) => f.restricted }) },
    ]);
  }

  // ---- query
  add("unknown_query", [
    {
      name: "an unknown query parameter",
      code: "validation_failed",
      field: "unexpected_param",
      call: request({ query: { unexpected_param: "1" } }),
    },
  ]);
  const queryProps = propertiesOf(r.query);
  const queryRequired = new Set((r.query as JsonSchema | undefined)?.required ?? []);
  for (const [name, schema] of queryProps) {
    if (name === "limit") {
      for (const [value, code] of [
        ["0", "validation_failed"],
        ["201", "validation_failed"],
        ["1000", "validation_failed"],
        ["abc", "validation_failed"],
        ["-1", "validation_failed"],
        ["1.5", "validation_failed"],
        ["", "validation_failed"],
      ] as const) {
        add("query", [
          { name: `limit=${value}`, code, field: "limit", call: request({ query: { limit: value } }) },
        ]);
      }
      add("query", [
        {
          name: "limit given twice",
          code: "validation_failed",
          field: "limit",
          call: request({ rawQuery: "limit=1&limit=2" }),
        },
      ]);
      continue;
    }
    if (name === "cursor") {
      add("query", [
        {
          name: "a cursor that is not base64url",
          code: "invalid_cursor",
          call: request({ query: { cursor: "!!" } }),
        },
        { name: "a cursor of garbage", code: "invalid_cursor", call: request({ query: { cursor: "zzzz" } }) },
        {
          name: "a cursor with padding (not as returned)",
          code: "invalid_cursor",
          call: request({ query: { cursor: `${Buffer.from("cus_1").toString("base64")}=` } }),
        },
        {
          name: "a cursor of another endpoint's shape",
          code: "invalid_cursor",
          call: request({
            query: {
              cursor: Buffer.from(r.url === "/v1/transactions" ? "cus_1" : "12").toString("base64url"),
            },
          }),
        },
        {
          name: "a cursor over 200 characters",
          code: "validation_failed",
          field: "cursor",
          call: request({ query: { cursor: "A".repeat(201) } }),
        },
      ]);
      continue;
    }
    const k = fieldKind(schema);
    const q = (value: string) => ({ [name]: encodeURIComponent(value) });
    if (queryRequired.has(name)) {
      add("query", [
        {
          name: `${name} missing`,
          code: "validation_failed",
          field: name,
          call: request({ query: { [name]: null } }),
        },
      ]);
    }
    if (k.kind === "timestamp") {
      for (const t of BAD_TIMESTAMPS) {
        add("query", [
          { name: `${name} ${t.label}`, code: t.code, field: name, call: request({ query: q(t.value) }) },
        ]);
      }
    } else if (k.kind === "enum") {
      add("query", [
        {
          name: `${name} not in the list`,
          code: "validation_failed",
          field: name,
          call: request({ query: q("nonsense") }),
        },
      ]);
    } else {
      add("query", [
        {
          name: `${name} over its length`,
          code: "validation_failed",
          field: name,
          call: request({ query: q("x".repeat(201)) }),
        },
      ]);
    }
    if (k.kind !== "enum") {
      add("query", [
        {
          name: `a NUL character in ${name}`,
          code: "validation_failed",
          field: name,
          call: request({ query: { [name]: "%00" } }),
        },
      ]);
    }
  }

  // ---- path id
  if (kind !== null) {
    add("unknown_id", [
      { name: "an id that does not exist", code: "not_found", call: request({ id: () => unknownId(kind) }) },
      {
        name: "an existing id of another kind",
        code: "not_found",
        call: request({ id: (f) => otherKind(f, kind) }),
      },
    ]);
    add("foreign_id", [
      {
        name: "another tenant's id",
        code: "not_found",
        call: request({ id: (f) => fixtureOf(f, "b", kind) }),
      },
    ]);
    add("bad_id", [
      {
        name: `an id over ${idMax(r)} characters`,
        code: "validation_failed",
        field: "id",
        call: request({ id: () => `${kind}_${"0".repeat(idMax(r) - 3)}` }),
      },
      {
        name: "an id of 2,000 characters",
        code: "validation_failed",
        call: request({ id: () => "x".repeat(2000) }),
      },
      {
        name: "a malformed percent-escape in the id",
        code: "validation_failed",
        call: request({ id: () => "cus_%zz" }),
      },
      {
        name: "a NUL character in the id",
        code: "validation_failed",
        field: "id",
        call: request({ id: () => "%00" }),
      },
    ]);
  }

  if (r.method !== "POST") return cases;

  // ---- the body as a whole
  const json = "application/json";
  add("malformed_json", [
    { name: "truncated JSON", code: "malformed_json", call: raw('{"reason": "x', json) },
    { name: "not JSON at all", code: "malformed_json", call: raw("reason=x", json) },
    { name: "JSON followed by garbage", code: "malformed_json", call: raw("{} {}", json) },
    { name: "single-quoted JSON", code: "malformed_json", call: raw("{'reason': 'x'}", json) },
    { name: "an empty body declared as JSON", code: "malformed_json", call: raw("", json) },
    { name: "a __proto__ key", code: "malformed_json", call: raw('{"__proto__": {"admin": true}}', json) },
    {
      name: "a constructor.prototype key",
      code: "malformed_json",
      call: raw('{"constructor": {"prototype": {"admin": true}}}', json),
    },
    {
      name: "invalid UTF-8",
      code: "malformed_json",
      call: raw(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d]), json),
    },
  ]);
  const shape = spec.bodyCode ?? "validation_failed";
  add("not_object", [
    { name: "a JSON array", code: shape, call: raw("[]", json) },
    {
      name: "an array holding the valid body",
      code: shape,
      call: (x) => raw(JSON.stringify([validBody(x.f, x.v)]), json)(x),
    },
    { name: "a JSON string", code: shape, call: raw('"text"', json) },
    { name: "JSON null", code: shape, call: raw("null", json) },
    { name: "a JSON number", code: shape, call: raw("42", json) },
    { name: "JSON true", code: shape, call: raw("true", json) },
  ]);
  const validText = (x: Ctx) => JSON.stringify(validBody(x.f, x.v));
  add("content_type", [
    { name: "text/plain", code: "unsupported_media_type", call: (x) => raw(validText(x), "text/plain")(x) },
    {
      name: "a form",
      code: "unsupported_media_type",
      call: raw("reason=x", "application/x-www-form-urlencoded"),
    },
    {
      name: "multipart",
      code: "unsupported_media_type",
      call: raw("--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    },
    { name: "XML", code: "unsupported_media_type", call: raw("<reason>x</reason>", "application/xml") },
    {
      name: "a JSON type other than application/json",
      code: "unsupported_media_type",
      call: (x) => raw(validText(x), "application/merge-patch+json")(x),
    },
    {
      name: "a body without Content-Type",
      code: "unsupported_media_type",
      call: (x) => raw(new TextEncoder().encode(validText(x)), null)(x),
    },
  ]);
  const limit = r.bodyLimit ?? 1024 * 1024;
  const MiB = `${limit / (1024 * 1024)} MiB`;
  const chunks = Math.ceil(limit / (64 * 1024)) + 4;
  add("oversized", [
    {
      name: `a JSON body over ${MiB}`,
      code: "payload_too_large",
      call: (x) => raw(JSON.stringify({ ...validBody(x.f, x.v), padding: "x".repeat(limit) }), json)(x),
    },
    {
      name: `a chunked body over ${MiB} (no Content-Length)`,
      code: "payload_too_large",
      call: raw(
        () =>
          new ReadableStream<Uint8Array>({
            start(controller) {
              const chunk = new TextEncoder().encode(`"${"x".repeat(64 * 1024)}`);
              controller.enqueue(new TextEncoder().encode('{"padding": '));
              for (let i = 0; i < chunks; i++) controller.enqueue(chunk);
              controller.close();
            },
          }),
        json,
      ),
    },
  ]);

  // ---- idempotency (routes idempotent by their own ids take no Idempotency-Key)
  const keyed = r.idempotencyKey !== false;
  const withKey = (key: string) => request({ headers: { "idempotency-key": key } });
  add(keyed ? "idempotency_invalid" : null, [
    { name: "an empty Idempotency-Key", code: "invalid_idempotency_key", call: withKey("") },
    {
      name: "an Idempotency-Key of 256 characters",
      code: "invalid_idempotency_key",
      call: withKey("k".repeat(256)),
    },
    { name: "a non-ASCII Idempotency-Key", code: "invalid_idempotency_key", call: withKey("clé-1") },
    { name: "an Idempotency-Key with a space", code: "invalid_idempotency_key", call: withKey("key 1") },
    {
      name: "a validation failure stores no Idempotency-Key",
      code: "validation_failed",
      call: request({
        headers: { "idempotency-key": `never-stored-${r.operationId}` },
        body: (f, v) => ({ ...validBody(f, v), unexpected_field: 1 }),
      }),
    },
  ]);
  const conflictKey = `conflict-${r.operationId}`;
  const headers: Record<string, string> = keyed ? { "idempotency-key": conflictKey } : {};
  add(spec.other ? "idempotency_reused" : null, [
    {
      name: keyed
        ? "an Idempotency-Key reused with a different request"
        : "an id reused with a different request",
      code: spec.conflictCode ?? "idempotency_key_reused",
      prepare: async ({ f, v, client }) => {
        const first = request({ headers })({ f, v } as Ctx);
        const a = await client.send(first);
        assert.ok(a.status >= 200 && a.status < 300, `the valid request succeeds: ${a.status} ${a.text}`);
        const again = await client.send(first);
        assert.ok(
          again.status >= 200 && again.status < 300,
          `a retry succeeds: ${again.status} ${again.text}`,
        );
        if (keyed) assert.equal(again.headers.get("idempotent-replayed"), "true");
      },
      call: ({ f, v }) => {
        const o = spec.other!(f, v);
        return { method: "POST", path: o.path, json: o.json, headers };
      },
    },
  ]);

  // ---- the body's fields
  const props = propertiesOf(r.body);
  const required = new Set((r.body as JsonSchema | undefined)?.required ?? []);
  const first = props[0]?.[0] ?? "reason";
  const cased = first.charAt(0).toUpperCase() + first.slice(1);
  const setField = (name: string, value: unknown) => (f: Fixtures, v: Vars) => ({
    ...validBody(f, v),
    [name]: value,
  });
  add("unknown_field", [
    {
      name: "an unknown field",
      code: shape,
      field: "unexpected_field",
      call: request({ body: setField("unexpected_field", "x") }),
    },
    {
      name: `an unknown field ${cased} (names are case-sensitive)`,
      code: shape,
      field: cased,
      call: request({ body: setField(cased, "x") }),
    },
  ]);
  if (required.size > 0) {
    add("missing_field", [
      { name: "an empty object", code: "validation_failed", call: request({ body: () => ({}) }) },
    ]);
  }
  for (const [name, schema] of props) {
    const k = fieldKind(schema);
    if (required.has(name)) {
      add("missing_field", [
        {
          name: `${name} missing`,
          code: "validation_failed",
          field: name,
          call: request({
            body: (f, v) => {
              const { [name]: _, ...rest } = validBody(f, v) ?? {};
              return rest;
            },
          }),
        },
      ]);
      if (schema.anyOf?.some((x) => x.type === "null") !== true) {
        add("wrong_type", [
          {
            name: `${name} null`,
            code: "validation_failed",
            field: name,
            call: request({ body: setField(name, null) }),
          },
        ]);
      }
    }
    for (const w of wrongTypes(k)) {
      add("wrong_type", [
        {
          name: `${name} as ${w.label}`,
          code: "validation_failed",
          field: name,
          call: request({ body: setField(name, w.value) }),
        },
      ]);
    }
    if (k.kind !== "integer" && k.kind !== "enum" && k.kind !== "boolean") {
      const nul = k.kind === "array" ? ["a\u0000"] : k.kind === "object" ? { a: "\u0000" } : "a\u0000b";
      add("wrong_type", [
        {
          name: `a NUL character in ${name}`,
          code: "validation_failed",
          field: name,
          call: request({ body: setField(name, nul) }),
        },
      ]);
    }
    if (k.kind === "amount") {
      for (const a of badAmounts(spec.zeroAllowed?.includes(name) ?? false)) {
        add("amount", [
          {
            name: `${name} ${a.label} (${JSON.stringify(a.value).slice(0, 24)})`,
            code: a.code,
            field: name,
            call: request({ body: setField(name, a.value) }),
          },
        ]);
      }
    }
    if (k.kind === "timestamp") {
      for (const t of BAD_TIMESTAMPS) {
        add("timestamp", [
          {
            name: `${name} ${t.label}`,
            code: t.code,
            field: name,
            call: request({ body: setField(name, t.value) }),
          },
        ]);
      }
    }
    if (k.kind === "id") {
      const idSpec: NonNullable<Spec["ids"]>[string] | undefined = spec.ids?.[name];
      assert.ok(idSpec, `${routeKey(r)}: the spec lists the body id ${name}`);
      assert.equal(idSpec.kind, k.prefix, `${routeKey(r)}: ${name} is a ${k.prefix} id`);
      const base = (f: Fixtures, v: Vars) => ({ ...(idSpec.base?.(f, v) ?? validBody(f, v)) });
      add("body_id", [
        {
          name: `${name} that does not exist`,
          code: idSpec.code,
          call: request({ body: (f, v) => ({ ...base(f, v), [name]: unknownId(k.prefix) }) }),
        },
        {
          name: `${name} of another tenant`,
          code: idSpec.code,
          call: request({ body: (f, v) => ({ ...base(f, v), [name]: fixtureOf(f, "b", k.prefix) }) }),
        },
        {
          name: `${name} of another kind`,
          code: idSpec.code,
          call: request({ body: (f, v) => ({ ...base(f, v), [name]: otherKind(f, k.prefix) }) }),
        },
        {
          name: `${name} over 64 characters`,
          code: "validation_failed",
          field: name,
          call: request({ body: (f, v) => ({ ...base(f, v), [name]: `${k.prefix}_${"0".repeat(61)}` }) }),
        },
      ]);
    }
  }
  for (const b of spec.business ?? []) {
    add("business", [
      {
        name: b.name,
        code: b.code,
        ...(b.field ? { field: b.field } : {}),
        call: request({
          ...(b.id ? { id: b.id } : {}),
          ...(b.body ? { body: b.body } : {}),
          ...(b.key ? { key: b.key } : {}),
        }),
      },
    ]);
  }
  const skip = spec.skip ?? {};
  for (const name of Object.keys(skip)) {
    assert.ok(
      cases.some((c) => c.name === name),
      `${routeKey(r)}: the spec skips "${name}", which is no case of the route`,
    );
  }
  return cases.filter((c) => !(c.name in skip));
}

/** The categories every route must have cases in, from its shape. */
export function requiredCategories(r: Route): Category[] {
  const out: Category[] = ["auth", "unknown_query"];
  if (r.access === "secret") out.push("forbidden");
  if (r.params) out.push("unknown_id", "foreign_id", "bad_id");
  if (propertiesOf(r.query).some(([name]) => name === "limit")) out.push("query");
  if (r.method === "POST") {
    out.push("malformed_json", "not_object", "content_type", "oversized", "unknown_field");
    // Routes idempotent by their own ids take no Idempotency-Key, and may have no conflict.
    if (r.idempotencyKey !== false) out.push("idempotency_invalid", "idempotency_reused");
    const props = propertiesOf(r.body);
    if (((r.body as JsonSchema | undefined)?.required ?? []).length > 0) out.push("missing_field");
    if (props.length > 0) out.push("wrong_type");
    if (props.some(([, s]) => fieldKind(s).kind === "amount")) out.push("amount");
    if (props.some(([, s]) => fieldKind(s).kind === "id")) out.push("body_id");
  }
  return out;
}

// ------------------------------------------------------------------ running

/**
 * Declares the suite: one server for the file, and for each route
 * its setup, then each case: prepare, snapshot, request, assert the problem, snapshot again.
 */
export function describeBadInput(title: string): void {
  describe(title, () => {
    let world: World;
    before(async () => {
      world = await startWorld();
    });
    after(async () => {
      await world?.close();
    });

    test("the route list is the API's: every operation the OpenAPI document describes", async () => {
      const doc = (await world.client.read("/v1/openapi.json")) as {
        paths: Record<string, Record<string, unknown>>;
      };
      // The public rate card has no key and no body: it is tested on its own below.
      const documented = Object.entries(doc.paths)
        .filter(([path]) => !path.startsWith("/v1/public/"))
        .flatMap(([path, ops]) =>
          Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ":$1")}`),
        );
      assert.deepEqual(documented.sort(), API_ROUTES.map(routeKey).sort());
    });

    for (const r of API_ROUTES) {
      // The idempotency conflict runs the valid request first: it goes last.
      const all = casesOf(r);
      const cases = [
        ...all.filter((c) => c.category !== "idempotency_reused"),
        ...all.filter((c) => c.category === "idempotency_reused"),
      ];
      if (!SPECS[routeKey(r)]) {
        test(routeKey(r), () => assert.fail(`no bad-input spec for ${routeKey(r)}: add one to SPECS`));
        continue;
      }
      if (cases.length === 0) continue;
      describe(routeKey(r), () => {
        let v: Vars = {};
        before(async () => {
          v = (await SPECS[routeKey(r)]?.setup?.({ f: world.f, client: world.client, world })) ?? {};
        });
        for (const c of cases) {
          test(`${c.category}: ${c.name}`, async () => {
            const x: Ctx = { f: world.f, v, client: world.client, world };
            if (c.prepare) await c.prepare(x);
            const before = await snapshot(world.server.store);
            const answer = await world.client.send(c.call(x));
            assertProblem(answer, c.code, c.field);
            const after = await snapshot(world.server.store);
            assert.deepEqual(after, before, "the request changed the database");
          });
        }
      });
    }

    test("the public rate card answers an unknown or malformed tenant with a problem", async () => {
      for (const tenant of ["ten_00000000000000000000000000", "nope", "%00", "x".repeat(2000), "%zz"]) {
        const a = await world.client.send({
          method: "GET",
          path: `/v1/public/${tenant}/rate_card`,
          key: null,
        });
        assertProblem(a, tenant === "%zz" || tenant.length > 1000 ? "validation_failed" : "not_found");
      }
    });

    test("no test clock was moved: no case ran a valid advance, so every case ran on the server's clock", async () => {
      const { rows } = await world.server.store.db.query("SELECT id FROM tenants WHERE clock_at IS NOT NULL");
      assert.deepEqual(rows, []);
    });

    test("the ledger still reconciles", async () => {
      const report = await world.server.store.reconcile();
      assert.deepEqual(report.differences, []);
    });
  });
}

export { routeKey };
