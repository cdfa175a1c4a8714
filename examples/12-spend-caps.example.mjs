// Spend caps: the vendor caps an agent at 5 credits a day; the customer, from its own page with
// a restricted key, tightens it to 3 (and cannot loosen the vendor's). Usage beyond the tighter
// cap is recorded unpaid, authorize says spend_cap_reached, and the next day starts fresh.
import { Drawdown } from "@drawdown/sdk";

export const title = "spend caps set by the vendor and by the customer";

export async function run({ dd, assert, log, baseUrl }) {
  await dd.testClock.advance({ to: "2027-05-10T09:00:00Z" });
  const card = await dd.rateCards.create({ name: "Agents" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [{ id: "steps", action: "agent.step", quantity: "output_tokens", rate: "1", per: 1000 }],
  });
  const c = await dd.customers.create({ kind: "organization", name: "Globex" });
  await dd.grants.create({ wallet_id: c.wallet_id, amount: "100", source: "purchase" });
  const bot = await dd.subjects.create(c.id, { kind: "agent", external_id: "researcher" });

  // The vendor's cap, with the secret key.
  const vendorCap = await dd.spendCaps.create(c.id, { target_id: bot.id, period: "day", limit: "5" });
  // The customer's own, with its restricted key: tighter, so it binds.
  const key = await dd.apiKeys.create({ kind: "restricted", name: "Globex billing page", customer_id: c.id });
  const page = new Drawdown({ apiKey: key.secret, baseUrl });
  const ownCap = await page.spendCaps.create(c.id, { target_id: bot.id, period: "day", limit: "3" });
  assert.equal(ownCap.set_by, "customer");
  const refused = await page.spendCaps.update(vendorCap.id, { limit: "500" }).catch((e) => e.code);
  assert.equal(refused, "forbidden", "a customer never loosens the vendor's cap");

  const step = (id, tokens) =>
    dd.events.ingest({
      id,
      customer_id: c.id,
      subject_id: bot.id,
      action: "agent.step",
      quantities: { output_tokens: tokens },
    });
  assert.equal((await step("s-1", 2000)).charge.outcome, "charged");
  const over = await step("s-2", 2000);
  assert.deepEqual([over.charge.outcome, over.charge.reason], ["unpaid", "spend_cap_reached"]);
  const ask = await dd.holds.authorize({
    customer_id: c.id,
    subject_id: bot.id,
    action: "agent.step",
    estimate: { credits: "2" },
  });
  assert.deepEqual([ask.decision, ask.reason, ask.available], ["deny", "spend_cap_reached", "1"]);
  const today = await page.spendCaps.get(ownCap.id);
  log(
    "today:",
    today.current_period.spent,
    "spent of",
    today.limit,
    "— remaining",
    today.current_period.remaining,
  );
  const alerts = await dd.alerts.list({ customer_id: c.id, kind: "spend_cap_reached" });
  assert.equal(alerts.data.length, 1, "the alert fires once per cap and day");

  await dd.testClock.advance({ to: "2027-05-11T00:00:00Z" });
  const fresh = await dd.spendCaps.get(ownCap.id);
  assert.deepEqual([fresh.current_period.spent, fresh.current_period.remaining], ["0", "3"]);
  assert.equal((await step("s-3", 3000)).charge.outcome, "charged");
  log(
    "next day:",
    (await dd.spendCaps.get(ownCap.id)).current_period.spent,
    "spent; the vendor's cap shows",
    (await dd.spendCaps.get(vendorCap.id)).current_period.remaining,
    "left",
  );
  assert.equal((await dd.reconcile()).ok, true);
}
