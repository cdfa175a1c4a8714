// CPU per event of the ingest path's pure parts, in-process (no HTTP, no database):
// parse and fingerprint, planUsage, the event rows (insertEvents with a fake executor).
// node bench/micro-ingest.mjs [rounds]

import { parseRateCard, planUsage } from "@drawdown/core";
import { copyText, createIdGenerator, insertEvents, overagePolicyFrom } from "@drawdown/storage";
import { parseEvent } from "../packages/server/dist/src/events.js";
import { BENCH_CARD } from "./card.mjs";

const ROUNDS = Number(process.argv[2] || 40);
const N = 1000;
const WALLETS = 10000;
const now = Date.now();
const newId = createIdGenerator();
const card = parseRateCard(BENCH_CARD);
if (!card.ok) throw new Error("card");
let seq = 0;
const body = () =>
  `{"events":[${Array.from({ length: N }, () => {
    const customer = `cus_${1 + Math.floor(Math.random() * WALLETS)}`;
    return `{"id":"b${++seq}","customer_id":"${customer}","action":"chat.completion","dimensions":{"model":"gpt-4o"},"quantities":{"input_tokens":${1000 + (seq % 500)},"output_tokens":${200 + (seq % 100)}}}`;
  }).join(",")}]}`;
const policy = overagePolicyFrom({
  overage_mode: "hard",
  overage_floor: "0",
  overage_price: null,
  overage_throttle: null,
});
const times = { parse: [], plan: [], rows: [] };
const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
for (let r = 0; r < ROUNDS; r++) {
  const text = body();
  let t = cpu();
  const list = JSON.parse(text).events;
  const parsed = list.map((raw) => parseEvent(raw, now));
  times.parse.push(cpu() - t);
  const events = parsed.map((p) => p.value.event);
  const customers = [...new Set(events.map((e) => e.customerId))];
  const wallets = new Map();
  const poolWallet = new Map();
  const grants = new Map();
  for (const c of customers) {
    const w = { id: `w_${c}`, customerId: c, memberId: null, overdraft: 0n, policy };
    wallets.set(w.id, w);
    poolWallet.set(c, w.id);
    const g = {
      id: `g_${c}`,
      walletId: w.id,
      amount: 10n ** 15n,
      remaining: 10n ** 15n,
      source: "purchase",
      costBasis: 10n ** 7n,
      currency: "USD",
      effectiveAt: now - 1000,
      expiresAt: null,
      priority: 50,
      scope: null,
      metadata: {},
      status: "active",
      createdAt: now - 1000,
    };
    grants.set(g.id, g);
  }
  const pricing = { versionId: "rcv_1", content: card.value, overrides: [] };
  t = cpu();
  const plan = planUsage(
    { now, newId },
    {
      wallets,
      grants,
      poolWallet,
      memberWallet: new Map(),
      subjects: new Map(),
      pricingAt: () => pricing,
      costAt: () => null,
      usage: new Map(),
    },
    events,
  );
  times.plan.push(cpu() - t);
  const accepted = plan.outcomes.map((o, k) => ({ outcome: o, fingerprint: parsed[k].value.fingerprint }));
  t = cpu();
  await insertEvents(
    { copyFrom: async (_t, _c, rows) => void copyText(rows), query: async () => ({ rows: [], rowCount: 0 }) },
    "ten_1",
    accepted,
    now,
  );
  times.rows.push(cpu() - t);
}
// The median round (each round is 1,000 events): the machine is shared, and the mean moves with it.
const per = (list) => (list.sort((a, b) => a - b)[Math.floor(list.length / 2)] / N).toFixed(2);
console.log(
  `CPU µs per event: parse ${per(times.parse)}, planUsage ${per(times.plan)}, event rows ${per(times.rows)}`,
);
if (process.env.SHOW_ROW) {
  // One event row, as written.
  const o = planUsage(
    { now, newId },
    {
      wallets: new Map([["w", { id: "w", customerId: "c", memberId: null, overdraft: 0n, policy }]]),
      grants: new Map([
        [
          "g",
          {
            id: "g",
            walletId: "w",
            amount: 10n ** 15n,
            remaining: 10n ** 15n,
            source: "purchase",
            costBasis: 10n ** 7n,
            currency: "USD",
            effectiveAt: now - 1000,
            expiresAt: null,
            priority: 50,
            scope: null,
            metadata: {},
            status: "active",
            createdAt: now - 1000,
          },
        ],
      ]),
      poolWallet: new Map([["c", "w"]]),
      memberWallet: new Map(),
      subjects: new Map(),
      pricingAt: () => ({ versionId: "rcv_1", content: card.value, overrides: [] }),
      costAt: () => null,
      usage: new Map(),
    },
    [
      parseEvent(
        {
          id: "x",
          customer_id: "c",
          action: "chat.completion",
          dimensions: { model: "gpt-4o" },
          quantities: { input_tokens: 1200, output_tokens: 300 },
        },
        now,
      ).value.event,
    ],
  ).outcomes[0];
  await insertEvents(
    { query: async (_t, params) => void console.log(params.map((c) => c[0]).join("\n")) },
    "t",
    [{ outcome: o, fingerprint: "f" }],
    now,
  );
}
