import { hostRefusal, type PrivateNetworkPolicy } from "./addresses.js";
import { fail, ok, type Result } from "./result.js";

/**
 * Webhooks: the closed list of event types, endpoint filters and URLs, and the retry
 * schedule. Pure; the storage layer writes the outbox and delivers.
 */

/**
 * Every event type the outbox carries, with what it means. A closed list: a feature that
 * emits a new kind of event adds it here (and to docs/concepts.md, "Webhooks and alerts").
 * Names are `<resource>.<what happened>`, past tense.
 */
export const EVENT_TYPES = {
  "grant.created":
    "A grant was issued into a wallet: any source (plan, purchase, top-up, gift, promo, rollover, adjustment).",
  "grant.expired": "A grant expired; what it had left went to breakage (or rolled over).",
  "grant.voided": "A grant was voided; what it had left left the wallet.",
  "subscription.renewed": "A subscription's period renewed (the first period too), granting its credits.",
  "subscription.canceled": "A subscription was canceled.",
  "gift.claimed": "A customer claimed a gift code.",
  "alert.triggered":
    "An alert rule fired: percent or amount remaining, exhausted, expiring soon, spend cap reached, auto top-up failed.",
  "run.suspended":
    "A step of a run was denied for lack of credits or by a spend cap: the run is suspended at that step until it can be paid.",
  "run.resumable":
    "A suspended run's step can be paid again (credits came back; a spend cap's next period, raised limit or deletion): retry the step (or resume the run). Once per suspension.",
  "run.completed": "A run was completed: every step settled or voided; no step holds credits.",
  "run.canceled": "A run was canceled: the steps still holding credits were voided (they cost nothing).",
  "overage.invoiced":
    "A wallet's overage (credits owed under a priced soft cap) was billed: at a period renewal or on demand.",
  "webhook.test": "A test-send: delivered only to the endpoint tested, whatever its filters.",
} as const satisfies Record<string, string>;

/** One event type of {@link EVENT_TYPES}. */
export type EventType = keyof typeof EVENT_TYPES;

/** The event type names, in the order the list gives them. */
export const EVENT_TYPE_NAMES = Object.keys(EVENT_TYPES) as EventType[];

/** Types only ever sent on request, never through a filter. */
const UNFILTERED: ReadonlySet<string> = new Set<EventType>(["webhook.test"]);

/** Whether `text` is one of the closed list's event types. */
export const isEventType = (text: string): text is EventType => Object.hasOwn(EVENT_TYPES, text);

/** Limits of an endpoint's filter list. */
export const EVENT_FILTER_LIMITS = { maxItems: 50 } as const;

/**
 * Checks an endpoint's event filters: `*` (every type), an exact type (`grant.created`), or
 * every type of a resource (`grant.*`). A filter that names no known type is refused, so a
 * typo does not silently subscribe to nothing. Returns them deduplicated, in the given order.
 */
export function validateEventFilters(filters: readonly string[]): Result<string[]> {
  if (filters.length === 0)
    return fail("invalid_argument", 'event_types needs at least one filter; "*" subscribes to every type.', {
      field: "event_types",
    });
  if (filters.length > EVENT_FILTER_LIMITS.maxItems)
    return fail("invalid_argument", `event_types takes at most ${EVENT_FILTER_LIMITS.maxItems} filters.`, {
      field: "event_types",
    });
  const out: string[] = [];
  for (const f of filters) {
    const known =
      f === "*" ||
      (isEventType(f) && !UNFILTERED.has(f)) ||
      (f.endsWith(".*") && EVENT_TYPE_NAMES.some((t) => !UNFILTERED.has(t) && t.startsWith(f.slice(0, -1))));
    if (!known)
      return fail(
        "invalid_argument",
        `event_types: "${f.slice(0, 100)}" names no event type; use "*", a type such as "grant.created", or "grant.*".`,
        { field: "event_types" },
      );
    if (!out.includes(f)) out.push(f);
  }
  return ok(out);
}

/** Whether an endpoint with these filters receives events of `type` (never `webhook.test`). */
export function matchesEventFilters(filters: readonly string[], type: string): boolean {
  if (UNFILTERED.has(type)) return false;
  return filters.some(
    (f) => f === "*" || f === type || (f.endsWith(".*") && type.startsWith(f.slice(0, -1))),
  );
}

/** The longest endpoint URL accepted. */
export const WEBHOOK_URL_MAX = 2048;

/**
 * Checks an endpoint URL: absolute `http:` or `https:` with a host, no user name or password
 * (they would be shown wherever the URL is), no fragment (`invalid_webhook_url` otherwise).
 * Under the `deny` policy, also a host that is a non-public IP address (private, loopback,
 * link-local, unspecified, multicast, reserved; IPv4-mapped IPv6 judged as its IPv4; any IPv4
 * spelling, since URL parsing normalizes `0x7f.1` and `2130706433` to `127.0.0.1`) or a name
 * such as `localhost` (`webhook_url_not_allowed`). A name that resolves to a private address
 * passes here and is refused at delivery. Returns the URL normalized.
 */
export function validateWebhookUrl(text: string, privateNetworks: PrivateNetworkPolicy): Result<string> {
  const refuse = (why: string) =>
    fail("invalid_webhook_url", `url: ${why}`, {
      field: "url",
    });
  if (text.length > WEBHOOK_URL_MAX) return refuse(`at most ${WEBHOOK_URL_MAX} characters.`);
  if (text.trim() !== text || /\s/.test(text)) return refuse("must not contain spaces.");
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return refuse(
      `"${text.slice(0, 100)}" is not an absolute URL; give one like https://example.com/webhooks.`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return refuse(`only http and https URLs receive webhooks, not ${url.protocol.slice(0, 20)}`);
  if (url.hostname === "") return refuse("the URL names no host.");
  if (url.username !== "" || url.password !== "")
    return refuse("must not carry a user name or password; authenticate by the signature.");
  if (url.hash !== "") return refuse("must not have a fragment (#...).");
  if (privateNetworks === "deny") {
    const why = hostRefusal(url.hostname);
    if (why !== null)
      return fail(
        "webhook_url_not_allowed",
        `url: ${why}; webhooks are only sent to public addresses, never to private, loopback or link-local networks.`,
        { field: "url" },
      );
  }
  return ok(url.href);
}

/** How failed deliveries are retried. */
export interface RetryPolicy {
  /** The delay after the first failed attempt, before jitter. */
  readonly baseMs: number;
  /** No delay is longer than this, before jitter. */
  readonly capMs: number;
  /** Attempts in all; after the last one fails, the delivery is marked failed. */
  readonly maxAttempts: number;
}

/**
 * The default schedule: 30 s after the first failure, doubling to at most 12 hours, 16
 * attempts in all: the last one 1.35 to 2.7 days after the first.
 */
export const WEBHOOK_RETRY: RetryPolicy = { baseMs: 30_000, capMs: 12 * 3_600_000, maxAttempts: 16 };

/**
 * The delay before the next attempt after `failedAttempts` attempts have failed (1 or more),
 * or null when they are used up (the delivery is failed). Exponential backoff with "equal
 * jitter": the step is `min(cap, base · 2^(failed − 1))` and the delay is uniformly in
 * [step / 2, step], so retries of many deliveries spread out but never come sooner than half
 * the step. `random` is in [0, 1): injected, so the schedule is a pure function.
 */
export function retryDelay(
  failedAttempts: number,
  random: number,
  policy: RetryPolicy = WEBHOOK_RETRY,
): number | null {
  if (!Number.isInteger(failedAttempts) || failedAttempts < 1) return 0;
  if (failedAttempts >= policy.maxAttempts) return null;
  const exponent = Math.min(failedAttempts - 1, 40);
  const step = Math.min(policy.capMs, policy.baseMs * 2 ** exponent);
  const r = Math.min(Math.max(random, 0), 1);
  return Math.floor(step / 2 + (step / 2) * r);
}
