import { createHash, randomBytes } from "node:crypto";
import type { IdGenerator } from "@drawdown/core";

const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz";

function base32(bytes: Uint8Array, length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += CROCKFORD[(bytes[i] ?? 0) & 31];
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
    return `${prefix}_${time}${base32(randomBytes(16), 16)}`;
  };
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A new API key secret, e.g. `dd_test_sk_…` (190 random bits). Shown once, stored hashed. */
export function newKeySecret(environment: "live" | "test", kind: "secret" | "restricted"): string {
  const bytes = randomBytes(32);
  let body = "";
  for (const b of bytes) body += BASE62[b % 62];
  return `dd_${environment}_${kind === "secret" ? "sk" : "rk"}_${body}`;
}

/** The stored form of a key: SHA-256, hex. Keys are random and long, so no salt or slow hash is needed. */
export const hashKey = (secret: string): string => createHash("sha256").update(secret).digest("hex");
