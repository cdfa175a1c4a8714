import { lookup as dnsLookup } from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { addressRange, addressRefusal, type PrivateNetworkPolicy } from "@drawdown/core";

/**
 * The webhook deliverer's HTTP client: node:http and node:https, with the SSRF check on the
 * connection itself. Under the `deny` policy a host name is resolved once per connection, every
 * address it resolves to is checked, and the socket connects to those checked addresses (a
 * `lookup` of our own, so a second, different DNS answer, as in DNS rebinding, is never asked
 * for); a literal IP host is checked before connecting. Redirects are never followed.
 */

/** One address a host name resolves to. */
export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** Resolves a host name to every address it has (as `dns.lookup` with `all`); injected in tests. */
export type Resolver = (hostname: string) => Promise<readonly ResolvedAddress[]>;

/** The system's resolver (`getaddrinfo`, as a connection would use it). */
export const systemResolver: Resolver = async (hostname) =>
  (await dnsLookup(hostname, { all: true })).map((a) => ({
    address: a.address,
    family: a.family === 6 ? 6 : 4,
  }));

/** A connection refused by the private-network policy: recorded as the attempt's error. */
export class DestinationRefused extends Error {
  override name = "DestinationRefused";
  readonly code = "ERR_WEBHOOK_DESTINATION_REFUSED";
}

/** What a POST answered. */
export interface HttpAnswer {
  readonly status: number;
  /** The start of the body (at most `maxChars` characters); null for a status without one. */
  readonly body: string | null;
}

/** Sends webhook POSTs under one policy, with connections of its own. */
export class WebhookHttp {
  readonly #policy: PrivateNetworkPolicy;
  readonly #lookup: LookupFunction;
  // Agents of our own: a kept-alive socket was connected under this policy's check, so a
  // client with another policy in the same process (the global agent) never reuses it.
  readonly #http = new http.Agent({ keepAlive: true, timeout: 5_000 });
  readonly #https = new https.Agent({ keepAlive: true, timeout: 5_000 });

  constructor(policy: PrivateNetworkPolicy, resolve: Resolver = systemResolver) {
    this.#policy = policy;
    this.#lookup = checkedLookup(policy, resolve);
  }

  /**
   * POSTs `body` to `url`. Rejects with {@link DestinationRefused} before any connection when
   * the policy refuses the destination, with a `TimeoutError` after `timeoutMs`, or with the
   * socket's error (`ECONNREFUSED`, `ENOTFOUND`, ...). Once the answer's head has arrived, a
   * body cut short (or by the deadline) still resolves, with what it began with.
   */
  post(
    url: string,
    headers: Readonly<Record<string, string>>,
    body: string,
    options: { timeoutMs: number; maxChars: number },
  ): Promise<HttpAnswer> {
    const u = new URL(url);
    const hostname = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
    // A literal address never reaches the lookup: it is checked here.
    if (this.#policy === "deny" && isIP(hostname) !== 0) {
      const why = addressRefusal(hostname);
      if (why !== null) return Promise.reject(new DestinationRefused(refusedText(why)));
    }
    const https_ = u.protocol === "https:";
    return new Promise<HttpAnswer>((resolve, reject) => {
      let settled = false;
      // Until the answer's head arrives the deadline fails the POST; after, it ends the body.
      let onDeadline = () => {
        const e = new Error(`timed out after ${options.timeoutMs} ms`);
        e.name = "TimeoutError";
        settle(() => reject(e));
        req.destroy(e);
      };
      const timer = setTimeout(() => onDeadline(), options.timeoutMs);
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const req = (https_ ? https : http).request(
        {
          protocol: u.protocol,
          hostname,
          port: u.port === "" ? undefined : Number(u.port),
          path: `${u.pathname}${u.search}`,
          method: "POST",
          headers: { ...headers, "content-length": String(Buffer.byteLength(body)) },
          agent: https_ ? this.#https : this.#http,
          lookup: this.#lookup,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const decoder = new TextDecoder();
          let text = "";
          const done = () => {
            settle(() =>
              resolve({
                status,
                body: NULL_BODY.has(status) ? null : text.slice(0, options.maxChars).replaceAll("\u0000", ""),
              }),
            );
            // Read no further than needed; the socket goes (it is not reused mid-body).
            if (!res.complete) res.destroy();
          };
          onDeadline = done;
          res.on("data", (chunk: Buffer) => {
            text += decoder.decode(chunk, { stream: true });
            if (text.length >= options.maxChars) done();
          });
          res.on("end", done);
          res.on("error", done);
          res.on("close", done);
        },
      );
      req.on("error", (error) => settle(() => reject(error)));
      req.end(body);
    });
  }
}

/** Statuses whose answers have no body (as fetch gives them). */
const NULL_BODY: ReadonlySet<number> = new Set([101, 204, 205, 304]);

const refusedText = (why: string) =>
  `${why}; webhooks are only sent to public addresses (DRAWDOWN_WEBHOOK_PRIVATE_NETWORKS=deny)`;

/**
 * A `lookup` for net.connect: resolves with `resolve`, and under `deny` refuses the connection
 * when any address the name has is not public (a name with a private address among its answers
 * is refused whole, not filtered: mixing one in is how rebinding attacks are made). The socket
 * connects only to the addresses given here, the ones checked.
 */
function checkedLookup(policy: PrivateNetworkPolicy, resolve: Resolver): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (all) => {
        if (policy === "deny") {
          for (const a of all) {
            const range = addressRange(a.address);
            if (range !== null) {
              const why = `${hostname} resolves to ${a.address}, which is not a public address (${range})`;
              return callback(new DestinationRefused(refusedText(why)), "", 0);
            }
          }
        }
        const wanted = familyOf(options.family);
        const addresses = all.filter((a) => wanted === 0 || a.family === wanted);
        if (addresses.length === 0) {
          const e = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), {
            code: "ENOTFOUND",
            hostname,
          });
          return callback(e, "", 0);
        }
        if (options.all)
          return callback(
            null,
            addresses.map((a) => ({ ...a })),
          );
        return callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, "", 0),
    );
  };
}

const familyOf = (f: number | string | undefined): 0 | 4 | 6 =>
  f === 4 || f === "IPv4" ? 4 : f === 6 || f === "IPv6" ? 6 : 0;
