// Request ids and key hashes are computed on every request with fast paths (pooled random
// bytes, one-shot hash): they must keep the shapes and values the plain calls give.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import { hashKey, randomHex } from "../src/ids.js";

test("randomHex: the asked number of random bytes as lowercase hex, across pool refills", () => {
  const seen = new Set<string>();
  // 12 bytes at a time crosses the 4 KiB pool's end many times.
  for (let i = 0; i < 5_000; i++) {
    const h = randomHex(12);
    assert.match(h, /^[0-9a-f]{24}$/);
    seen.add(h);
  }
  assert.equal(seen.size, 5_000);
  assert.match(randomHex(1), /^[0-9a-f]{2}$/);
});

test("hashKey: SHA-256 of the secret, hex, as createHash gives it", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary" }), (secret) => {
      assert.equal(hashKey(secret), createHash("sha256").update(secret).digest("hex"));
    }),
  );
});
