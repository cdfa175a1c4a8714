import assert from "node:assert/strict";
import type { Store } from "@drawdown/storage";
import { type ApiErrorCode, ERRORS } from "../../src/errors.js";

/** One HTTP request, as the bad-input and tenancy suites describe them. */
export interface Call {
  readonly method: "GET" | "POST";
  /** Path and query, sent as written (so `%00` and repeated parameters go through unchanged). */
  readonly path: string;
  /** The API key: a secret, or null for no Authorization header. Default: the client's key. */
  readonly key?: string | null;
  /** Headers, with the exact Authorization header when given here. */
  readonly headers?: Readonly<Record<string, string>>;
  /** A JSON value, sent as `application/json`. */
  readonly json?: unknown;
  /** A body sent as is; `headers` gives its content type (fetch adds text/plain for a string). */
  readonly raw?: string | Uint8Array | ReadableStream<Uint8Array>;
}

/** A response, its body parsed when it is JSON. */
export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: unknown;
}

/** Plain `fetch` against the test server, with a default key. */
export class Client {
  constructor(
    readonly url: string,
    readonly key: string,
  ) {}

  /** A client of the same server with another key. */
  as(key: string): Client {
    return new Client(this.url, key);
  }

  async send(c: Call): Promise<Answer> {
    const headers: Record<string, string> = {};
    const key = c.key === undefined ? this.key : c.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let body: string | Uint8Array | ReadableStream<Uint8Array> | undefined;
    if (c.json !== undefined) {
      body = JSON.stringify(c.json);
      headers["content-type"] = "application/json";
    } else if (c.raw !== undefined) body = c.raw;
    Object.assign(headers, c.headers ?? {});
    const res = await fetch(this.url + c.path, {
      method: c.method,
      headers,
      body,
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit);
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: res.status, headers: res.headers, text, body: parsed };
  }

  get(path: string): Promise<Answer> {
    return this.send({ method: "GET", path });
  }

  post(path: string, json: unknown = {}, headers: Record<string, string> = {}): Promise<Answer> {
    return this.send({ method: "POST", path, json, headers });
  }

  /** A request that must succeed; returns its body. */
  async ok<T = Record<string, unknown>>(c: Call): Promise<T> {
    const a = await this.send(c);
    assert.ok(a.status >= 200 && a.status < 300, `${c.method} ${c.path}: ${a.status} ${a.text}`);
    return a.body as T;
  }

  /** A GET that must succeed. */
  read<T = Record<string, unknown>>(path: string): Promise<T> {
    return this.ok<T>({ method: "GET", path });
  }

  /** A POST that must succeed. */
  create<T = Record<string, unknown>>(path: string, json: unknown = {}): Promise<T> {
    return this.ok<T>({ method: "POST", path, json });
  }
}

/** A problem document as the API sends it. */
export interface ProblemBody {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly request_id: string;
  readonly errors?: readonly { path: string; message: string }[];
}

/**
 * Asserts a clear 4xx problem: the status of `code`, `application/problem+json`, every member
 * of RFC 9457 plus ours (`code` from the closed list, a detail, the request id of the header),
 * and, when `field` is given, a detail or error path that names the field.
 */
export function assertProblem(a: Answer, code: ApiErrorCode, field?: string): ProblemBody {
  const where = `${a.status} ${a.text.slice(0, 400)}`;
  const expected = ERRORS[code];
  assert.ok(a.status >= 400 && a.status < 500, `a 4xx status: ${where}`);
  assert.match(a.headers.get("content-type") ?? "", /^application\/problem\+json/, where);
  const p = a.body as ProblemBody;
  assert.ok(p !== null && typeof p === "object", `a JSON object body: ${where}`);
  assert.ok(Object.hasOwn(ERRORS, p.code), `code ${p.code} is in the closed list: ${where}`);
  assert.equal(p.code, code, where);
  assert.equal(a.status, expected.status, where);
  assert.equal(p.status, a.status, where);
  assert.equal(typeof p.type, "string", where);
  assert.ok(p.type.length > 0, where);
  assert.equal(p.title, expected.title, where);
  assert.equal(typeof p.detail, "string", where);
  assert.ok(p.detail.trim().length > 0, `a detail: ${where}`);
  const requestId = a.headers.get("request-id");
  assert.ok(requestId, `a request-id header: ${where}`);
  assert.equal(p.request_id, requestId, where);
  if (field !== undefined) {
    const named = p.detail + JSON.stringify(p.errors ?? []);
    assert.ok(named.includes(field), `the problem names ${field}: ${where}`);
  }
  return p;
}

/**
 * The state of every table, as (rows, newest row version): equal snapshots mean no row was
 * inserted, updated or deleted in between. An insert or an update gives its row a new `xmin`
 * (the writing transaction's id, always newer than any before it); a delete lowers the count.
 * Every tenant counts: a change to another tenant's rows is a change too.
 */
export type Snapshot = Readonly<Record<string, string>>;

const states = new WeakMap<Store, { sql: string; lsn: string; tables: Snapshot }>();

/**
 * Takes a snapshot. Cheap when nothing was written since the last one: no data changes
 * without writing the write-ahead log, so an unmoved WAL position means the same tables.
 */
export async function snapshot(store: Store): Promise<Snapshot> {
  const lsn = async () =>
    (await store.db.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")).rows[0]!.lsn;
  let state = states.get(store);
  const before = await lsn();
  if (state && state.lsn === before) return state.tables;
  let sql = state?.sql;
  if (!sql) {
    const { rows } = await store.db.query<{ name: string }>(
      `SELECT table_name AS name FROM information_schema.tables
       WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'
       ORDER BY 1`,
    );
    assert.ok(rows.length > 0, "the database has tables");
    sql = `SELECT ${rows
      .map(
        (r) =>
          `(SELECT count(*) || ' rows, newest ' || coalesce(max(xmin::text::bigint), 0) FROM "${r.name}") AS "${r.name}"`,
      )
      .join(", ")}`;
  }
  const tables = (await store.db.query<Record<string, string>>(sql)).rows[0]!;
  // Cached under the position read before the tables: a write in between only costs a re-read.
  state = { sql, lsn: before, tables };
  states.set(store, state);
  return tables;
}
