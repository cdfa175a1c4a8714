/**
 * The pure half of webhook SSRF protection: parsing IP addresses and judging which are public.
 * Properties over random addresses: every address of the non-public ranges (restated here from
 * the RFCs, not taken from the code) is refused, literal or in a URL; random public addresses
 * pass; an IPv4-mapped IPv6 address is judged as its IPv4; and every spelling of an IPv4
 * address that WHATWG URL parsing accepts (decimal, hex, octal, short forms) is judged as the
 * dotted one. Plus the tricky forms one by one.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  addressRange,
  addressRefusal,
  hostRefusal,
  parseIpAddress,
  validateWebhookUrl,
} from "../src/index.js";

// ------------------------------------------------------------------ helpers (independent of the code)

const dotted = (n: bigint): string => [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join(".");

/** All eight groups, uncompressed: URL parsing compresses it its own way. */
const v6Full = (n: bigint): string =>
  Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(":");

/** A random address inside `cidr` (a base given as a bigint and a prefix length). */
const inside = (base: bigint, bits: number, width: 32 | 128) =>
  fc
    .bigInt({ min: 0n, max: (1n << BigInt(width - bits)) - 1n })
    .map((offset) => ((base >> BigInt(width - bits)) << BigInt(width - bits)) | offset);

const v4 = (a: number, b: number, c: number, d: number) =>
  (BigInt(a) << 24n) | (BigInt(b) << 16n) | (BigInt(c) << 8n) | BigInt(d);
const v6 = (...groups: number[]) =>
  groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n) << BigInt(16 * (8 - groups.length));

/** The IPv4 ranges that are never a webhook's destination (RFC 1122, 1918, 3927, 5737, 6598, 2544, 5771, 1112). */
const PRIVATE_V4: readonly [bigint, number, string][] = [
  [v4(0, 0, 0, 0), 8, "this network"],
  [v4(10, 0, 0, 0), 8, "private"],
  [v4(100, 64, 0, 0), 10, "carrier-grade NAT"],
  [v4(127, 0, 0, 0), 8, "loopback"],
  [v4(169, 254, 0, 0), 16, "link-local"],
  [v4(172, 16, 0, 0), 12, "private"],
  [v4(192, 0, 0, 0), 24, "IETF"],
  [v4(192, 0, 2, 0), 24, "documentation"],
  [v4(192, 168, 0, 0), 16, "private"],
  [v4(198, 18, 0, 0), 15, "benchmarking"],
  [v4(198, 51, 100, 0), 24, "documentation"],
  [v4(203, 0, 113, 0), 24, "documentation"],
  [v4(224, 0, 0, 0), 4, "multicast"],
  [v4(240, 0, 0, 0), 4, "reserved"],
];

/** The IPv6 ranges that are never a webhook's destination (RFC 4291, 4193, 3849). */
const PRIVATE_V6: readonly [bigint, number, string][] = [
  [0n, 128, "unspecified"],
  [1n, 128, "loopback"],
  [v6(0xfc00), 7, "unique local"],
  [v6(0xfe80), 10, "link-local"],
  [v6(0xff00), 8, "multicast"],
  [v6(0x2001, 0xdb8), 32, "documentation"],
  [v6(0x0100), 8, "reserved"],
];

/** First octets whose whole /8 is public unicast (none of the ranges above touches them). */
const PUBLIC_FIRST_OCTETS = [
  ...Array.from({ length: 9 }, (_, i) => i + 1), // 1-9
  ...Array.from({ length: 89 }, (_, i) => i + 11), // 11-99
  ...Array.from({ length: 26 }, (_, i) => i + 101), // 101-126
  ...Array.from({ length: 41 }, (_, i) => i + 128), // 128-168
  170,
  171,
  ...Array.from({ length: 19 }, (_, i) => i + 173), // 173-191
  193,
  194,
  195,
  196,
  197,
  199,
  200,
  201,
  202,
  ...Array.from({ length: 20 }, (_, i) => i + 204), // 204-223
];
const publicV4 = fc
  .tuple(fc.constantFrom(...PUBLIC_FIRST_OCTETS), fc.integer({ min: 0, max: 0xffffff }))
  .map(([a, rest]) => (BigInt(a) << 24n) | BigInt(rest));
/** Global unicast outside the special blocks 2001::/23, 2002::/16 (6to4) and 3fff::/20. */
const publicV6 = fc
  .tuple(fc.integer({ min: 0x2003, max: 0x3ffe }), fc.bigInt({ min: 0n, max: (1n << 112n) - 1n }))
  .map(([first, rest]) => (BigInt(first) << 112n) | rest);

const uint32 = fc.bigInt({ min: 0n, max: 0xffff_ffffn });

const deny = (url: string) => validateWebhookUrl(url, "deny");
const refused = (url: string): boolean => {
  const r = deny(url);
  if (r.ok) return false;
  assert.equal(r.error.code, "webhook_url_not_allowed", `${url}: ${r.error.message}`);
  return true;
};

// ------------------------------------------------------------------ properties

describe("non-public addresses (properties)", () => {
  test("every IPv4 address in a non-public range is refused: literal, in a URL, and IPv4-mapped", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...PRIVATE_V4).chain(([base, bits]) => inside(base, bits, 32)),
        (n) => {
          const text = dotted(n);
          assert.ok(addressRefusal(text) !== null, text);
          assert.ok(refused(`http://${text}/`), text);
          assert.ok(refused(`https://${text}:8443/hooks`), text);
          assert.ok(refused(`http://[::ffff:${text}]/`), `::ffff:${text}`);
          assert.ok(addressRefusal(`::ffff:${text}`) !== null, `::ffff:${text}`);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("every IPv6 address in a non-public range is refused: literal and in a URL", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...PRIVATE_V6).chain(([base, bits]) => inside(base, bits, 128)),
        (n) => {
          const text = v6Full(n);
          assert.ok(addressRefusal(text) !== null, text);
          assert.ok(refused(`http://[${text}]/`), text);
        },
      ),
      { numRuns: 500 },
    );
  });

  test("random public addresses pass, IPv4 and IPv6, and IPv4-mapped public IPv4", () => {
    fc.assert(
      fc.property(publicV4, publicV6, (a, b) => {
        assert.equal(addressRefusal(dotted(a)), null, dotted(a));
        assert.ok(deny(`https://${dotted(a)}/hooks`).ok, dotted(a));
        assert.ok(deny(`https://[::ffff:${dotted(a)}]/hooks`).ok, dotted(a));
        assert.equal(addressRefusal(v6Full(b)), null, v6Full(b));
        assert.ok(deny(`https://[${v6Full(b)}]/hooks`).ok, v6Full(b));
      }),
      { numRuns: 500 },
    );
  });

  test("an IPv4-mapped IPv6 address is judged exactly as its IPv4 address, in every spelling", () => {
    fc.assert(
      fc.property(uint32, (n) => {
        const text = dotted(n);
        const verdict = addressRefusal(text) === null;
        const hex = `::ffff:${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
        assert.equal(addressRefusal(`::ffff:${text}`) === null, verdict, text);
        assert.equal(addressRefusal(hex) === null, verdict, hex);
        assert.equal(addressRefusal(v6Full(0xffff_0000_0000n | n)) === null, verdict, text);
        assert.equal(deny(`http://[::ffff:${text}]/`).ok, verdict, text);
        assert.equal(deny(`http://${text}/`).ok, verdict, text);
      }),
      { numRuns: 1000 },
    );
  });

  test("every spelling of an IPv4 address a URL accepts is judged as the dotted one", () => {
    fc.assert(
      fc.property(uint32, (n) => {
        const verdict = deny(`http://${dotted(n)}/`).ok;
        const a = n >> 24n;
        const rest = n & 0xff_ffffn;
        for (const spelling of [
          String(n), // 2130706433
          `0x${n.toString(16)}`, // 0x7f000001
          `0${n.toString(8)}`, // 017700000001
          `0x${a.toString(16)}.${rest}`, // 0x7f.1
          `0${a.toString(8)}.0x${rest.toString(16)}`, // 0177.0x1
          `${dotted(n)}.`, // a trailing dot
        ])
          assert.equal(deny(`http://${spelling}/`).ok, verdict, `${spelling} (${dotted(n)})`);
      }),
      { numRuns: 1000 },
    );
  });

  test("parsing: dotted IPv4 and full IPv6 round-trip, and IPv6 as URL parsing compresses it", () => {
    fc.assert(
      fc.property(uint32, fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (a, b) => {
        assert.deepEqual(parseIpAddress(dotted(a)), { family: 4, value: a });
        assert.deepEqual(parseIpAddress(v6Full(b)), { family: 6, value: b });
        const compressed = new URL(`http://[${v6Full(b)}]/`).hostname;
        assert.deepEqual(parseIpAddress(compressed), { family: 6, value: b }, compressed);
      }),
      { numRuns: 1000 },
    );
  });
});

// ------------------------------------------------------------------ the tricky forms

describe("tricky forms", () => {
  test("refused under deny, each naming why", () => {
    for (const [url, why] of [
      ["http://0x7f.1/", "127.0.0.1 is not a public address (loopback)"],
      ["http://2130706433/", "127.0.0.1 is not a public address (loopback)"],
      ["http://017700000001/", "127.0.0.1 is not a public address (loopback)"],
      ["http://127.1/", "127.0.0.1 is not a public address (loopback)"],
      ["http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 is not a public address (IPv4-mapped loopback)"],
      ["http://[::1]/", "::1 is not a public address (loopback)"],
      ["http://[::]/", "is not a public address (unspecified)"],
      ["http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"],
      ["http://[::ffff:a9fe:a9fe]/", "IPv4-mapped link-local"],
      ["http://[64:ff9b::7f00:1]/", "NAT64 loopback"],
      ["http://[::127.0.0.1]/", "IPv4-compatible"],
      ["http://[2002:7f00:1::]/", "6to4"],
      ["http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "IETF protocol assignment"],
      ["http://0.0.0.0/", "unspecified"],
      ["http://0/", "unspecified"],
      ["http://10.1.2.3/", "private"],
      ["http://172.31.255.255/", "private"],
      ["http://192.168.1.1/", "private"],
      ["http://100.64.0.1/", "carrier-grade NAT"],
      ["http://224.0.0.1/", "multicast"],
      ["http://255.255.255.255/", "reserved"],
      ["http://[fd12:3456::1]/", "unique local"],
      ["http://[fe80::1]/", "link-local"],
      ["http://[fec0::1]/", "site-local"],
      ["http://[ff02::1]/", "multicast"],
      ["http://[100::1]/", "discard-only"],
      ["http://[4000::1]/", "reserved"],
      ["http://localhost/", "localhost names this machine"],
      ["http://localhost./", "localhost. names this machine"],
      ["http://LOCALHOST:8080/", "localhost names this machine"],
      ["http://hooks.localhost/", "hooks.localhost names this machine"],
      ["http://printer.local/", "multicast DNS"],
      ["http://metadata.google.internal/", "private network"],
      ["http://router.home.arpa/", "home network"],
    ] as const) {
      const r = deny(url);
      assert.ok(!r.ok && r.error.code === "webhook_url_not_allowed", url);
      assert.ok(r.error.message.includes(why), `${url}: ${r.error.message}`);
      assert.ok(validateWebhookUrl(url, "allow").ok, `${url} under allow`);
    }
  });

  test("public hosts pass under deny, at the edges of the ranges too", () => {
    for (const url of [
      "https://example.com/hooks",
      "https://localhost.example.com/",
      "https://internal-hooks.example.com/",
      "https://receiver/",
      "http://8.8.8.8/",
      "http://[2001:4860:4860::8888]/",
      "http://[::ffff:8.8.8.8]/",
      "http://[64:ff9b::808:808]/",
      "http://9.255.255.255/",
      "http://11.0.0.0/",
      "http://100.63.255.255/",
      "http://100.128.0.0/",
      "http://126.255.255.255/",
      "http://128.0.0.0/",
      "http://169.253.255.255/",
      "http://169.255.0.0/",
      "http://172.15.255.255/",
      "http://172.32.0.0/",
      "http://192.167.255.255/",
      "http://192.169.0.0/",
      "http://223.255.255.255/",
    ])
      assert.ok(deny(url).ok, `${url}: ${JSON.stringify(deny(url))}`);
  });

  test("hostRefusal: names are judged by name only; what they resolve to is checked at delivery", () => {
    assert.equal(hostRefusal("hooks.example.com"), null);
    assert.equal(hostRefusal("localtest.me"), null);
    assert.match(hostRefusal("[::1]") ?? "", /loopback/);
  });

  test("addressRefusal: resolver answers, zones ignored, anything unparsable refused", () => {
    assert.match(addressRefusal("fe80::1%eth0") ?? "", /link-local/);
    assert.match(addressRefusal("::ffff:10.0.0.1") ?? "", /IPv4-mapped private/);
    assert.equal(addressRefusal("93.184.216.34"), null);
    assert.equal(addressRefusal("2606:2800:220:1:248:1893:25c8:1946"), null);
    for (const bad of ["", "example.com", "127.1", "0x7f000001", "2130706433", "1.2.3.4.5", "01.2.3.4"])
      assert.equal(addressRange(bad), "not an IP address", bad);
    assert.equal(addressRange("127.0.0.53"), "loopback");
    assert.equal(addressRange("8.8.4.4"), null);
  });

  test("parseIpAddress: canonical forms only", () => {
    assert.deepEqual(parseIpAddress("[::1]"), { family: 6, value: 1n });
    assert.deepEqual(parseIpAddress("::ffff:1.2.3.4"), { family: 6, value: 0xffff_0102_0304n });
    assert.deepEqual(parseIpAddress("1::"), { family: 6, value: 1n << 112n });
    for (const bad of [
      "",
      "1.2.3",
      "256.1.1.1",
      "1.2.3.04",
      "1::2::3",
      "12345::",
      "::ffff:1.2.3",
      "g::1",
      "1.2.3.4::",
      ":1::",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7::8",
      "1:2:3:4:5:6:7",
      "::1.2.3.4:5",
      "fe80::1%",
      "localhost",
    ])
      assert.equal(parseIpAddress(bad), null, bad);
  });
});
