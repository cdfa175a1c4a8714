// A durable agent run: each step authorizes with a hold and settles under its own key. The run
// runs out of credits mid-way and is suspended (run.suspended webhook), the customer tops up
// (run.resumable webhook), the agent resumes by replaying its steps from the start, and the
// ledger shows each step charged exactly once, however many times it was sent.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

export const title =
  "an agent run suspended for lack of credits, topped up and resumed, charged once per step";

/** Verifies a Standard Webhooks signature: v1, HMAC-SHA256 of "id.timestamp.body", keyed by the secret's bytes. */
function verify(secret, headers, body) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key)
    .update(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`)
    .digest();
  return String(headers["webhook-signature"])
    .split(" ")
    .some((s) => {
      const given = Buffer.from(s.slice(3), "base64");
      return s.startsWith("v1,") && given.length === expected.length && timingSafeEqual(given, expected);
    });
}

/** The agent's plan: each step's key, its estimate in tokens, and what it really uses. */
const PLAN = [
  { key: "search", estimate: 3000, used: 2500 },
  { key: "read", estimate: 4000, used: 3600 },
  { key: "summarize", estimate: 5000, used: 4200 },
  { key: "answer", estimate: 2000, used: 1800 },
];

export async function run({ dd, assert, log }) {
  let secret = "";
  const received = new Map(); // webhook-id → event (delivery is at least once: dedupe)
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      if (!verify(secret, req.headers, body)) return res.writeHead(400).end();
      received.set(req.headers["webhook-id"], JSON.parse(body));
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  try {
    await dd.testClock.advance({ to: "2027-04-01T00:00:00Z" });
    const endpoint = await dd.webhooks.create({
      url: `http://127.0.0.1:${receiver.address().port}/drawdown`,
      event_types: ["run.*"],
    });
    secret = endpoint.secret;
    /** Lets the scheduler deliver what is due, then returns the events of a type received so far. */
    const hooks = async (type) => {
      await dd.testClock.advance({ seconds: 1 });
      return [...received.values()].filter((e) => e.type === type);
    };

    const c = await dd.customers.create({ kind: "organization", name: "Umbrella" });
    const card = await dd.rateCards.create({ name: "Agents" });
    await dd.rateCards.publishVersion(card.id, {
      lines: [{ id: "tok", action: "agent.step", quantity: "output_tokens", rate: "1", per: "1000" }],
    });
    await dd.grants.create({ wallet_id: c.wallet_id, amount: "8", source: "purchase" });
    const run = await dd.runs.start({
      id: "research-42",
      customer_id: c.id,
      metadata: { agent: "researcher" },
    });

    /**
     * The agent: runs its plan from the start. A step already done answers `replayed` (nothing
     * held or charged again); a step denied for lack of credits stops the agent.
     */
    const agent = async () => {
      for (const s of PLAN) {
        const body = {
          key: s.key,
          action: "agent.step",
          estimate: { quantities: { output_tokens: s.estimate } },
        };
        const r = await dd.runs.step(run.id, body);
        if (r.step.status === "denied") return { stoppedAt: s.key, available: r.step.available };
        // Settled steps answer as they were; a crash between work and settle just settles again.
        const settled = await dd.runs.settleStep(run.id, {
          key: s.key,
          quantities: { output_tokens: s.used },
        });
        log(
          `step ${s.key.padEnd(9)} ${r.replayed ? "replayed" : "held    "} ${settled.replayed ? "(already settled)" : `charged ${settled.step.charged}`}`,
        );
      }
      return { stoppedAt: null };
    };

    // First attempt: 8 credits cover "search" (2.5) and "read" (3.6); "summarize" needs 5.
    const first = await agent();
    assert.deepEqual(first, { stoppedAt: "summarize", available: "1.9" });
    assert.equal((await dd.runs.get(run.id)).status, "suspended");
    const suspended = await hooks("run.suspended");
    assert.equal(suspended.length, 1);
    log(
      `webhook run.suspended: step ${suspended[0].data.step} needs ${suspended[0].data.estimate}, ${suspended[0].data.available} available`,
    );

    // The customer tops up; once it covers the suspended step, run.resumable arrives (once).
    await dd.grants.create({ wallet_id: c.wallet_id, amount: "2", source: "top_up" });
    assert.equal((await hooks("run.resumable")).length, 0, "3.9 does not cover 5 yet");
    await dd.grants.create({ wallet_id: c.wallet_id, amount: "10", source: "top_up" });
    const resumable = await hooks("run.resumable");
    assert.equal(resumable.length, 1);
    log(`webhook run.resumable: ${resumable[0].data.available} available for step ${resumable[0].data.step}`);

    // The agent resumes from the top: the two settled steps replay, the rest run.
    const second = await agent();
    assert.deepEqual(second, { stoppedAt: null });
    // A client retry of the whole plan changes nothing at all.
    assert.deepEqual(await agent(), { stoppedAt: null });
    const done = await dd.runs.complete(run.id);
    assert.equal(done.status, "completed");
    assert.deepEqual(
      done.steps.map((s) => [s.key, s.status, s.charged]),
      [
        ["search", "settled", "2.5"],
        ["read", "settled", "3.6"],
        ["summarize", "settled", "4.2"],
        ["answer", "settled", "1.8"],
      ],
    );
    assert.equal(done.credits, "12.1"); // 2.5 + 3.6 + 4.2 + 1.8, each once
    assert.equal(done.events, 4);

    // The ledger: one hold and one settlement per step, whatever the retries.
    const journal = await dd.transactions.list({ wallet_id: c.wallet_id, limit: 100 });
    const on = (t, account) => t.entries.find((e) => e.account === account)?.amount;
    const line = (t) =>
      t.kind === "grant"
        ? `+${on(t, "grant")} granted`
        : t.kind === "hold"
          ? `${on(t, "hold")} held`
          : `${on(t, "consumption")} charged, ${on(t, "grant") ?? "0"} released`;
    for (const t of journal.data) log(`ledger ${t.posted_at} ${t.kind.padEnd(11)} ${line(t)}`);
    const kinds = journal.data.map((t) => t.kind);
    assert.equal(kinds.filter((k) => k === "hold.settle").length, PLAN.length);
    assert.equal(kinds.filter((k) => k === "hold").length, PLAN.length);
    const b = await dd.wallets.balance(c.wallet_id);
    assert.deepEqual([b.total, b.held], ["7.9", "0"]); // 8 + 2 + 10 − 12.1
  } finally {
    await new Promise((resolve) => receiver.close(resolve));
  }
}
