// Low-balance alerts as signed webhooks: a receiver verifies each Standard Webhooks signature,
// a customer's usage crosses 20% and 10% of its credits (each alert fires once), a top-up
// re-arms them, and the delivery log shows every attempt.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

export const title = "low-balance alerts delivered as signed webhooks";

/** Verifies a Standard Webhooks signature: v1, HMAC-SHA256 of "id.timestamp.body", keyed by the secret's bytes. */
function verify(secret, headers, body) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key)
    .update(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`)
    .digest();
  const fresh = Math.abs(Date.now() / 1000 - Number(headers["webhook-timestamp"])) < 300;
  return (
    fresh &&
    String(headers["webhook-signature"])
      .split(" ")
      .some((s) => {
        const given = Buffer.from(s.slice(3), "base64");
        return s.startsWith("v1,") && given.length === expected.length && timingSafeEqual(given, expected);
      })
  );
}

export async function run({ dd, assert, log }) {
  let secret = "";
  const seen = new Map(); // webhook-id → event: a receiver dedupes, delivery is at least once
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      if (!verify(secret, req.headers, body)) return res.writeHead(400).end();
      seen.set(req.headers["webhook-id"], JSON.parse(body));
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  try {
    await dd.testClock.advance({ to: "2027-03-01T00:00:00Z" });
    const endpoint = await dd.webhooks.create({
      url: `http://127.0.0.1:${receiver.address().port}/drawdown`,
      event_types: ["alert.triggered"],
    });
    secret = endpoint.secret;
    const test = await dd.webhooks.test(endpoint.id);
    assert.equal(test.status, "succeeded");

    const c = await dd.customers.create({ kind: "organization", name: "Initech" });
    const card = await dd.rateCards.create({ name: "Chat" });
    await dd.rateCards.publishVersion(card.id, {
      lines: [{ id: "out", action: "chat.completion", quantity: "output_tokens", rate: "1", per: 1000 }],
    });
    await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "purchase" });
    const use = (id, tokens) =>
      dd.events.ingest({
        id,
        customer_id: c.id,
        action: "chat.completion",
        quantities: { output_tokens: tokens },
      });
    await use("u1", 70_000); // 30 left: nothing
    await use("u2", 12_000); // 18 left: the 20% rule fires
    await use("u3", 3_000); // 15 left: already fired, nothing
    await use("u4", 6_000); // 9 left: the 10% rule fires
    await dd.testClock.advance({ seconds: 1 }); // due webhooks go out
    const alerts = [...seen.values()].filter((e) => e.type === "alert.triggered");
    assert.deepEqual(
      alerts.map((e) => e.data.rule.percent).sort((a, b) => a - b),
      [10, 20],
    );
    log(
      "alerts received:",
      alerts.map((e) => `${e.data.rule.percent}% (${e.data.available} left)`).join(", "),
    );

    await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "top_up" }); // re-arms both
    await use("u5", 95_000); // 14 of 109 left: 20% fires again
    await dd.testClock.advance({ seconds: 1 });
    const listed = await dd.alerts.list({ wallet_id: c.wallet_id });
    assert.deepEqual(
      listed.data.map((a) => a.rule_key),
      ["percent_remaining:20", "percent_remaining:10", "percent_remaining:20"],
    );
    assert.equal([...seen.values()].filter((e) => e.type === "alert.triggered").length, 3);
    const log_ = await dd.webhooks.deliveries(endpoint.id);
    assert.ok(log_.data.every((d) => d.status === "succeeded" && d.attempts === 1));
    log("delivery log:", log_.data.length, "deliveries, each delivered on its first attempt");
  } finally {
    await new Promise((resolve) => receiver.close(resolve));
  }
}
