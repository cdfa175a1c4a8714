import { type ApiErrorCode, DrawdownConnectionError, DrawdownError } from "./errors.js";

/** What a call returns when you ask for more than the body: see {@link ApiPromise.withResponse}. */
export interface ApiResponse<T> {
  /** The parsed body, exactly as the API sent it. */
  readonly data: T;
  /** HTTP status, e.g. 201. */
  readonly status: number;
  /** The `request-id` header. */
  readonly requestId: string | null;
  /** The `Idempotency-Key` the POST was sent with (yours or the generated one); null for a GET and for usage events (deduplicated by their ids). */
  readonly idempotencyKey: string | null;
  /** True when the API answered from its idempotency record (header `idempotent-replayed`). */
  readonly idempotentReplayed: boolean;
  /** How many times the request was sent (1 without retries). */
  readonly attempts: number;
  readonly headers: Headers;
}

/**
 * The promise every SDK call returns: await it for the body, or call `withResponse()` for the
 * status, request id and idempotency information too.
 *
 * @example
 * const { data, idempotentReplayed } = await dd.grants
 *   .create({ wallet_id, amount: "100", source: "plan" }, { idempotencyKey: "plan-2026-01" })
 *   .withResponse();
 */
export class ApiPromise<T> extends Promise<T> {
  readonly #response: Promise<ApiResponse<T>>;

  constructor(response: Promise<ApiResponse<T>>) {
    super(() => {});
    this.#response = response;
  }

  // Built-in methods that make a new promise make a plain one, never an ApiPromise.
  static override get [Symbol.species]() {
    return Promise;
  }

  /** The body with the response's metadata. */
  withResponse(): Promise<ApiResponse<T>> {
    return this.#response;
  }

  // biome-ignore lint/suspicious/noThenProperty: this is a promise; `then` delegates to the response.
  override then<R1 = T, R2 = never>(
    onfulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.#response.then((r) => r.data).then(onfulfilled, onrejected);
  }
}

/** The transport's settings, from the client's options. @internal */
export interface TransportOptions {
  readonly apiKey: string;
  readonly baseUrl: string;
  readonly fetch: typeof globalThis.fetch;
  readonly maxRetries: number;
  readonly retryBaseDelayMs: number;
  readonly timeoutMs: number;
  readonly userAgent: string;
}

/** One request as the resources describe it. @internal */
export interface RequestSpec {
  readonly method: "GET" | "POST";
  readonly path: string;
  readonly query?: Record<string, string | undefined>;
  readonly body?: unknown;
  readonly idempotencyKey?: string;
  readonly signal?: AbortSignal;
  /** The body's media type; default `application/json`. */
  readonly contentType?: string;
  /** False for a POST that is idempotent by its own ids (usage events): no Idempotency-Key is sent. */
  readonly idempotent?: false;
  /** False for a public endpoint: no Authorization header is sent. */
  readonly authenticate?: false;
}

const MAX_RETRY_DELAY_MS = 8_000;

const sleep = (ms: number, signal: AbortSignal | undefined) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });

/**
 * Sends requests: authentication, JSON, idempotency keys, retries with exponential backoff,
 * and problem documents turned into {@link DrawdownError}. @internal
 */
export class Transport {
  constructor(readonly options: TransportOptions) {}

  /**
   * Sends a request. `build` runs inside the returned promise, so a bad argument (a number
   * for an amount) rejects the call like any other failure instead of throwing synchronously.
   */
  request<T>(build: () => RequestSpec): ApiPromise<T> {
    return new ApiPromise((async () => this.#send<T>(build()))());
  }

  /** The delay before retry number `attempt` (1-based): exponential, with jitter, capped. */
  #delay(attempt: number, retryAfter: string | null): number {
    const seconds = retryAfter === null ? Number.NaN : Number(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, MAX_RETRY_DELAY_MS);
    const base = Math.min(this.options.retryBaseDelayMs * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS);
    return base * (0.75 + Math.random() * 0.25);
  }

  async #send<T>(spec: RequestSpec): Promise<ApiResponse<T>> {
    const o = this.options;
    const url = new URL(o.baseUrl + spec.path);
    for (const [k, v] of Object.entries(spec.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = {
      ...(spec.authenticate === false ? {} : { authorization: `Bearer ${o.apiKey}` }),
      accept: "application/json",
      "user-agent": o.userAgent,
    };
    let idempotencyKey: string | null = null;
    let body: string | undefined;
    if (spec.method === "POST") {
      if (spec.idempotent !== false) {
        // A key of our own when the caller gave none, so our retries can never apply a change twice.
        idempotencyKey = spec.idempotencyKey ?? globalThis.crypto.randomUUID();
        headers["idempotency-key"] = idempotencyKey;
      }
      headers["content-type"] = spec.contentType ?? "application/json";
      body = JSON.stringify(spec.body ?? {});
    }

    for (let attempt = 1; ; attempt++) {
      const last = attempt > o.maxRetries;
      let response: Response;
      const controller = new AbortController();
      const onAbort = () => controller.abort(spec.signal?.reason);
      if (spec.signal?.aborted) throw spec.signal.reason;
      spec.signal?.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(
        () => controller.abort(new Error(`no response within ${o.timeoutMs} ms`)),
        o.timeoutMs,
      );
      try {
        response = await o.fetch(url, { method: spec.method, headers, body, signal: controller.signal });
      } catch (error) {
        if (spec.signal?.aborted) throw spec.signal.reason;
        if (last) {
          const why = error instanceof Error ? error.message : String(error);
          throw new DrawdownConnectionError(
            `${spec.method} ${spec.path} got no response after ${attempt} attempt(s): ${why}`,
            idempotencyKey,
            error,
          );
        }
        await sleep(this.#delay(attempt, null), spec.signal);
        continue;
      } finally {
        clearTimeout(timer);
        spec.signal?.removeEventListener("abort", onAbort);
      }

      if ((response.status >= 500 || response.status === 429) && !last) {
        await response.body?.cancel().catch(() => {});
        await sleep(this.#delay(attempt, response.headers.get("retry-after")), spec.signal);
        continue;
      }
      return this.#read<T>(response, spec, idempotencyKey, attempt);
    }
  }

  async #read<T>(
    response: Response,
    spec: RequestSpec,
    idempotencyKey: string | null,
    attempts: number,
  ): Promise<ApiResponse<T>> {
    const requestId = response.headers.get("request-id");
    const text = await response.text();
    let parsed: unknown;
    let isJson = true;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      isJson = false;
    }
    if (!response.ok) throw toError(response.status, requestId, isJson ? parsed : undefined, text);
    if (!isJson || parsed === null || typeof parsed !== "object") {
      throw new DrawdownError({
        status: response.status,
        code: "invalid_response",
        detail: `${spec.method} ${spec.path} answered ${response.status} with a body that is not a JSON object: ${text.slice(0, 200)}`,
        requestId,
      });
    }
    return {
      data: parsed as T,
      status: response.status,
      requestId,
      idempotencyKey,
      idempotentReplayed: response.headers.get("idempotent-replayed") === "true",
      attempts,
      headers: response.headers,
    };
  }
}

/** A failed response as a {@link DrawdownError}: from its problem document when it has one. */
function toError(status: number, requestId: string | null, body: unknown, text: string): DrawdownError {
  const p = (body !== null && typeof body === "object" ? body : {}) as Record<string, unknown>;
  if (typeof p.code === "string" && typeof p.detail === "string") {
    return new DrawdownError({
      status,
      // A code this SDK does not know yet (a newer server) still comes through as sent.
      code: p.code as ApiErrorCode,
      detail: p.detail,
      requestId: typeof p.request_id === "string" ? p.request_id : requestId,
      errors: Array.isArray(p.errors) ? (p.errors as { path: string; message: string }[]) : undefined,
      details:
        p.details !== null && typeof p.details === "object"
          ? (p.details as Record<string, string>)
          : undefined,
      type: typeof p.type === "string" ? p.type : undefined,
      title: typeof p.title === "string" ? p.title : undefined,
    });
  }
  return new DrawdownError({
    status,
    code: status >= 500 ? "internal_error" : "invalid_response",
    detail: `HTTP ${status} without a problem document: ${text.slice(0, 200)}`,
    requestId,
  });
}
