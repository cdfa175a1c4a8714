// A plan at $20 a month that includes $25 of credits (1 credit = $1), with a turbo mode that
// costs 6x. Usage burns the credits down; the next month renews them (no rollover).
export const title = "a $20/month plan with $25 of credits and a 6x turbo mode";

export async function run({ dd, assert, log }) {
  const clock = await dd.testClock.advance({ to: "2027-01-01T00:00:00Z" });
  log("test clock at", clock.now);
  const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
  const card = await dd.rateCards.create({ name: "Standard" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [{ id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "1", per: 1000 }],
    multipliers: [{ dimension: "mode", value: "turbo", factor: "6" }],
  });
  const plan = await dd.plans.create({
    name: "Pro",
    base_fee: { amount: "20", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "25",
  });
  await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id });
  const available = async () => (await dd.wallets.balance(acme.wallet_id)).available;
  assert.equal(await available(), "25");

  // 2,000 output tokens normally: 2 credits. The same in turbo mode: 12 credits.
  const normal = await dd.events.ingest({
    id: "e1",
    customer_id: acme.id,
    action: "chat.completion",
    quantities: { output_tokens: 2000 },
  });
  const turbo = await dd.events.ingest({
    id: "e2",
    customer_id: acme.id,
    action: "chat.completion",
    dimensions: { mode: "turbo" },
    quantities: { output_tokens: 2000 },
  });
  assert.equal(normal.charge.credits, "2");
  assert.equal(turbo.charge.credits, "12");
  assert.equal(await available(), "11");
  log("after usage:", await available(), "credits left");

  // The next month renews 25 credits; what was left of January expires with its period.
  await dd.testClock.advance({ to: "2027-02-01T00:00:01Z" });
  assert.equal(await available(), "25");
  assert.equal((await dd.reconcile()).ok, true);
}
