// The event row's `detail` text is written directly (eventDetailJson) instead of with
// JSON.stringify: it is stored as text and read back, so it must be the same text exactly.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { Accepted } from "@drawdown/core";
import fc from "fast-check";
import { eventDetail, eventDetailJson } from "../src/ingest.js";

/** Any string, with the characters JSON escapes or that need care: quotes, backslashes, controls, lone surrogates. */
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.string({
    unit: fc.constantFrom(
      '"',
      "\\",
      "\n",
      "\t",
      "\u0000",
      "\u001f",
      "\u2028",
      "\ud800",
      "\udc00",
      "é",
      "😀",
      "a",
    ),
  }),
);
const nullable = fc.option(text, { nil: null });
const units = fc.bigInt({ min: 0n, max: 10n ** 30n });
const record = (values: fc.Arbitrary<string>) => fc.dictionary(text, values, { maxKeys: 4 });

const accepted: fc.Arbitrary<Accepted> = fc
  .record({
    event: fc.record({
      id: text,
      customerId: text,
      subjectId: nullable,
      action: text,
      dimensions: record(text),
      quantities: fc.dictionary(text, units, { maxKeys: 4 }),
      time: fc.integer({ min: 0, max: 4_000_000_000_000 }),
      status: fc.constantFrom("succeeded" as const, "failed" as const),
      runId: nullable,
      reportedCost: fc.option(units, { nil: null }),
    }),
    versionId: text,
    rating: fc.record({
      credits: units,
      billable: fc.boolean(),
      reason: nullable,
      multiplier: units,
      multiplierScale: fc.integer({ min: 0, max: 30 }),
      exactScale: fc.integer({ min: 0, max: 40 }),
      lines: fc.array(
        fc.record({
          lineId: text,
          quantity: text,
          amount: units,
          perExponent: fc.integer({ min: 0, max: 9 }),
          pieces: fc.array(fc.record({ quantity: units, rate: units }), { maxLength: 3 }),
          exact: units,
          minimumApplied: fc.boolean(),
          free: fc.boolean(),
          override: fc.boolean(),
        }),
        { maxLength: 3 },
      ),
    }),
    walletId: text,
    drawn: units,
    overdraft: units,
    unpaid: units,
    draws: fc.array(fc.record({ grantId: text, walletId: text, amount: units }), { maxLength: 3 }),
    revenue: units,
    revenueCurrency: nullable,
    extraRevenue: fc.array(fc.record({ currency: text, amount: units }), { maxLength: 2 }),
    cost: fc.option(units, { nil: null }),
    costCurrency: nullable,
    costVersionId: nullable,
    reason: nullable,
    transactionId: nullable,
    overrideSource: nullable,
  })
  .map((o) => ({ kind: "accepted" as const, ...o }));

test("an event's detail text is JSON.stringify of its detail, character for character", () => {
  fc.assert(
    fc.property(accepted, text, (o, receivedAt) => {
      assert.equal(eventDetailJson(o, receivedAt), JSON.stringify(eventDetail(o, receivedAt)));
    }),
    { numRuns: 2000 },
  );
});
