import * as crypto from "node:crypto";
import type { IdGenerator } from "@drawdown/core";

const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz";

/** Random bytes drawn 4 KiB at a time: one system call per 256 ids instead of one per id (the ingest hot path makes an id per journal transaction). */
const POOL = 4096;
let pool = crypto.randomBytes(POOL);
let used = 0;

/** `length` random Crockford base32 characters (5 random bits each). */
function randomBase32(length: number): string {
  if (used + length > POOL) {
    pool = crypto.randomBytes(POOL);
    used = 0;
  }
  let out = "";
  for (let i = 0; i < length; i++) out += CROCKFORD[pool[used + i]! & 31];
  used += length;
  return out;
}

/**
 * Ids like `grt_01jd0s7k2m…`: 10 characters of millisecond time, then 16 random ones
 * (80 bits), so ids sort roughly by creation and never collide in practice.
 */
export function createIdGenerator(clock: () => number = Date.now): IdGenerator {
  return (prefix) => {
    let t = clock();
    let time = "";
    for (let i = 0; i < 10; i++) {
      time = CROCKFORD[t % 32] + time;
      t = Math.floor(t / 32);
    }
    return `${prefix}_${time}${randomBase32(16)}`;
  };
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A new API key secret, e.g. `dd_test_sk_…` (190 random bits). Shown once, stored hashed. */
export function newKeySecret(environment: "live" | "test", kind: "secret" | "restricted"): string {
  const bytes = crypto.randomBytes(32);
  let body = "";
  for (const b of bytes) body += BASE62[b % 62];
  return `dd_${environment}_${kind === "secret" ? "sk" : "rk"}_${body}`;
}

/**
 * `bytes` random bytes as hex, drawn from the same pool as ids: the HTTP layer's request ids
 * (`req_` and 24 hex digits), one per request, cost no system call each.
 */
export function randomHex(bytes: number): string {
  if (used + bytes > POOL) {
    pool = crypto.randomBytes(POOL);
    used = 0;
  }
  const out = pool.toString("hex", used, used + bytes);
  used += bytes;
  return out;
}

/**
 * The stored form of a key: SHA-256, hex. Keys are random and long, so no salt or slow hash is
 * needed. Computed on every request (the key cache is keyed by it): the one-shot `crypto.hash`
 * (Node 20.12 and later) makes no Hash object.
 */
export const hashKey: (secret: string) => string =
  typeof crypto.hash === "function"
    ? (secret) => crypto.hash("sha256", secret, "hex")
    : (secret) => crypto.createHash("sha256").update(secret).digest("hex");
