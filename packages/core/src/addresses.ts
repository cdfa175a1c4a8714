/**
 * Which network destinations are public: the pure half of the webhook SSRF protection (server-
 * side request forgery: a tenant pointing a webhook at the server's own network, its loopback or
 * a cloud metadata service). Parses IP addresses and names the special-purpose range an address
 * falls in; the storage layer asks this at endpoint create and update time (on the URL's host)
 * and again at delivery time (on every address the host name resolves to, the one connected to).
 * No I/O.
 */

import { invariant } from "./result.js";

/** Whether webhooks may go to private, loopback, link-local and other non-public destinations. */
export type PrivateNetworkPolicy = "allow" | "deny";

/** The policies, as configuration spells them. */
export const PRIVATE_NETWORK_POLICIES: readonly PrivateNetworkPolicy[] = ["allow", "deny"];

/** An IP address as a number: 32 bits for IPv4, 128 for IPv6. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly value: bigint;
}

const V4_PART = /^(0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-f]{1,4}$/i;

/**
 * Parses an IP address in its canonical text: dotted-decimal IPv4 (no leading zeros: the
 * octal and hexadecimal forms some resolvers accept are refused, and WHATWG URL parsing turns
 * them into this form before we see them), or IPv6 per RFC 4291 with `::`, an IPv4 tail, and
 * optional brackets and zone id (`fe80::1%eth0`; the zone does not change the range). Null for
 * anything else, host names included.
 */
export function parseIpAddress(text: string): IpAddress | null {
  let t = text;
  if (t.startsWith("[") && t.endsWith("]")) t = t.slice(1, -1);
  const v4 = parseV4(t);
  if (v4 !== null) return { family: 4, value: v4 };
  const v6 = parseV6(t);
  return v6 === null ? null : { family: 6, value: v6 };
}

function parseV4(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const p of parts) {
    if (!V4_PART.test(p) || Number(p) > 255) return null;
    value = (value << 8n) | BigInt(p);
  }
  return value;
}

function parseV6(text: string): bigint | null {
  const zone = text.indexOf("%");
  const t = zone === -1 ? text : text.slice(0, zone);
  if (zone !== -1 && zone === text.length - 1) return null;
  if (!t.includes(":")) return null;
  const halves = t.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const items = s.split(":");
    for (const [i, g] of items.entries()) {
      if (i === items.length - 1 && g.includes(".")) {
        const v4 = parseV4(g);
        if (v4 === null) return null;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (V6_GROUP.test(g)) out.push(Number.parseInt(g, 16));
      else return null;
    }
    return out;
  };
  const head = groupsOf(halves[0]!);
  const tail = halves.length === 2 ? groupsOf(halves[1]!) : [];
  if (head === null || tail === null) return null;
  // An IPv4 tail may only end the address.
  if (halves.length === 2 && halves[0]!.includes(".")) return null;
  const given = head.length + tail.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return null;
  const groups = [...head, ...Array<number>(8 - given).fill(0), ...tail];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** A range in CIDR form and what it is, as the refusal names it. */
interface Range {
  readonly base: bigint;
  readonly bits: number;
  readonly name: string;
}

const range = (family: 4 | 6, cidr: string, name: string): Range => {
  const [base, bits] = cidr.split("/") as [string, string];
  const parsed = parseIpAddress(base);
  invariant(parsed !== null && parsed.family === family, `bad range ${cidr}`);
  return { base: parsed.value, bits: Number(bits), name };
};

const inRange = (value: bigint, width: number, r: Range): boolean =>
  value >> BigInt(width - r.bits) === r.base >> BigInt(width - r.bits);

/**
 * IPv4 ranges that are not public destinations: the IANA special-purpose registry's ranges
 * that are not globally reachable, with multicast and the reserved class E (broadcast too).
 * Whole blocks are refused where the registry carves out a few global addresses (192.0.0.0/24).
 */
const V4_RANGES: readonly Range[] = [
  range(4, "0.0.0.0/8", "unspecified (this network)"),
  range(4, "10.0.0.0/8", "private"),
  range(4, "100.64.0.0/10", "shared (carrier-grade NAT)"),
  range(4, "127.0.0.0/8", "loopback"),
  range(4, "169.254.0.0/16", "link-local (cloud metadata)"),
  range(4, "172.16.0.0/12", "private"),
  range(4, "192.0.0.0/24", "IETF protocol assignment"),
  range(4, "192.0.2.0/24", "documentation"),
  range(4, "192.88.99.0/24", "6to4 relay anycast"),
  range(4, "192.168.0.0/16", "private"),
  range(4, "198.18.0.0/15", "benchmarking"),
  range(4, "198.51.100.0/24", "documentation"),
  range(4, "203.0.113.0/24", "documentation"),
  range(4, "224.0.0.0/4", "multicast"),
  range(4, "240.0.0.0/4", "reserved"),
];

/** IPv6 ranges whose last 32 bits are an IPv4 address, judged as that address. */
const V6_EMBEDDING: readonly Range[] = [
  range(6, "::ffff:0:0/96", "IPv4-mapped"),
  range(6, "64:ff9b::/96", "NAT64"),
];

/**
 * IPv6 ranges that are not public destinations. Only global unicast (2000::/3) can be public,
 * so anything outside it is refused too (as "reserved"); these name the common ones, and the
 * special-purpose blocks inside 2000::/3.
 */
const V6_RANGES: readonly Range[] = [
  range(6, "::/128", "unspecified"),
  range(6, "::1/128", "loopback"),
  range(6, "::/96", "IPv4-compatible (deprecated)"),
  range(6, "64:ff9b:1::/48", "local-use NAT64"),
  range(6, "100::/64", "discard-only"),
  range(6, "2001::/23", "IETF protocol assignment (Teredo, benchmarking, ...)"),
  range(6, "2001:db8::/32", "documentation"),
  range(6, "2002::/16", "6to4"),
  range(6, "3fff::/20", "documentation"),
  range(6, "fc00::/7", "unique local (private)"),
  range(6, "fe80::/10", "link-local"),
  range(6, "fec0::/10", "site-local (deprecated)"),
  range(6, "ff00::/8", "multicast"),
];
const V6_GLOBAL_UNICAST = range(6, "2000::/3", "global unicast");

/**
 * The special-purpose range an address falls in (its name, such as "loopback" or "private"),
 * or null when it is a public, globally reachable unicast address. An IPv6 address that embeds
 * an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is judged as that IPv4
 * address, so `::ffff:127.0.0.1` is loopback like `127.0.0.1`.
 */
export function nonPublicRange(address: IpAddress): string | null {
  if (address.family === 4) return V4_RANGES.find((r) => inRange(address.value, 32, r))?.name ?? null;
  for (const r of V6_EMBEDDING) {
    if (!inRange(address.value, 128, r)) continue;
    const v4 = nonPublicRange({ family: 4, value: address.value & 0xffff_ffffn });
    return v4 === null ? null : `${r.name} ${v4}`;
  }
  // The most specific named range: ::/128 and ::1 lie inside ::/96 too.
  const named = V6_RANGES.filter((r) => inRange(address.value, 128, r)).sort((a, b) => b.bits - a.bits)[0];
  if (named) return named.name;
  return inRange(address.value, 128, V6_GLOBAL_UNICAST) ? null : "reserved";
}

/**
 * Why a resolved address is not a destination webhooks may connect to: the name of its range
 * ("loopback", "IPv4-mapped private"), or null when it is public. Text that is not an IP
 * address is refused ("not an IP address"): an answer we cannot judge is not connected to.
 */
export function addressRange(address: string): string | null {
  const parsed = parseIpAddress(address);
  return parsed === null ? "not an IP address" : nonPublicRange(parsed);
}

/**
 * {@link addressRange} as a sentence ("127.0.0.1 is not a public address (loopback)"), or null
 * when the address is public.
 */
export function addressRefusal(address: string): string | null {
  const range = addressRange(address);
  return range === null ? null : `${address.slice(0, 100)} is not a public address (${range})`;
}

/**
 * Host names that only ever name this machine or a private network (RFC 6761 `localhost`,
 * RFC 6762 `.local`, RFC 8375 `.home.arpa`, ICANN's private-use `.internal`), refused without
 * resolving them. Any other name is judged by what it resolves to, at delivery.
 */
const PRIVATE_NAMES: readonly { readonly suffix: string; readonly what: string }[] = [
  { suffix: "localhost", what: "names this machine" },
  { suffix: "local", what: "is a multicast DNS name of the local network" },
  { suffix: "home.arpa", what: "names a host of a home network" },
  { suffix: "internal", what: "names a host of a private network" },
];

/**
 * Why a URL's host (as WHATWG URL parsing normalized it: lower case, IPv4 in dotted decimal
 * whatever form was given, IPv6 in brackets) is not a destination webhooks may go to, or null
 * when it may be: a non-public IP address, or a name of {@link PRIVATE_NAMES}.
 */
export function hostRefusal(hostname: string): string | null {
  if (hostname.startsWith("[")) return addressRefusal(hostname.slice(1, -1));
  if (parseV4(hostname) !== null) return addressRefusal(hostname);
  // A fully qualified name ends with a dot: `localhost.` is `localhost`.
  const name = hostname.toLowerCase().replace(/\.+$/, "");
  for (const { suffix, what } of PRIVATE_NAMES)
    if (name === suffix || name.endsWith(`.${suffix}`)) return `${hostname.slice(0, 100)} ${what}`;
  return null;
}
