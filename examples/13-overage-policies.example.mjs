// Overage policies: a $20 plan with 100 credits whose overage is billed at 2 cents a credit
// (a soft cap down to -500, invoiced at each renewal); a customer who set their own policy to
// carry the deficit into the next period instead; and a throttle that, below 50 credits, only
// lets the cheap model through and suggests it in place of the expensive one.
export const title = "overage: billed at a price, carried into the next period, throttled";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-03-01T00:00:00Z" });
  const card = await dd.rateCards.create({ name: "Models" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [
      { id: "large", action: "chat.large", quantity: "calls", rate: "10" },
      { id: "mini", action: "chat.mini", quantity: "calls", rate: "1" },
    ],
  });
  const plan = await dd.plans.create({
    name: "Pro with overage",
    base_fee: { amount: "20", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "100",
    overage: { mode: "soft_cap", floor: "-500", price: { amount: "0.02", currency: "USD" } },
  });
  let n = 0;
  const call = (customer_id, action, calls) =>
    dd.events.ingest({ id: `call-${n++}`, customer_id, action, quantities: { calls } });

  // Acme takes the plan's policy; 13 large calls cost 130: 30 go on the overdraft.
  const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
  await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id });
  const r = await call(acme.id, "chat.large", 13);
  assert.deepEqual([r.charge.drawn, r.charge.overdraft], ["100", "30"]);
  assert.deepEqual(
    [(await dd.wallets.getOverage(acme.wallet_id)).source, (await dd.wallets.balance(acme.wallet_id)).total],
    ["plan", "-30"],
  );

  // Beta, on the same plan, carries its deficit into the next period instead (its own policy wins).
  const beta = await dd.customers.create({ kind: "organization", name: "Beta" });
  await dd.subscriptions.create({ customer_id: beta.id, plan_id: plan.id });
  await dd.wallets.setOverage(beta.wallet_id, { mode: "carry_deficit", floor: "-200" });
  await call(beta.id, "chat.large", 12);
  assert.equal((await dd.wallets.balance(beta.wallet_id)).total, "-20");

  // The renewal: Acme's 30 owed are invoiced (30 x $0.02 = $0.60); Beta's new 100 repay its 20.
  await dd.testClock.advance({ to: "2027-04-01T00:00:00Z" });
  const { data: invoices } = await dd.overageInvoices.list({ customer_id: acme.id });
  assert.deepEqual(
    invoices.map((i) => [i.credits, i.amount, i.currency, i.reason]),
    [["30", "0.6", "USD", "renewal"]],
  );
  log(`Acme invoiced ${invoices[0].amount} USD for ${invoices[0].credits} credits of overage`);
  assert.equal((await dd.wallets.balance(acme.wallet_id)).available, "100");
  assert.equal((await dd.wallets.balance(beta.wallet_id)).available, "80");
  log("Beta starts the period with 100 - 20 = 80 credits");

  // A throttle: below 50 credits (after the estimate), only chat.mini proceeds.
  const solo = await dd.customers.create({ kind: "individual", name: "Solo" });
  await dd.grants.create({ wallet_id: solo.wallet_id, amount: "60", source: "promo" });
  await dd.wallets.setOverage(solo.wallet_id, {
    mode: "throttle",
    throttle: { level: "50", allowed_actions: ["chat.mini"], fallback_action: "chat.mini" },
  });
  const big = await dd.holds.authorize({
    customer_id: solo.id,
    action: "chat.large",
    estimate: { credits: "20" },
  });
  assert.deepEqual([big.decision, big.fallback_action], ["throttle", "chat.mini"]);
  const mini = await dd.holds.authorize({
    customer_id: solo.id,
    action: "chat.mini",
    estimate: { credits: "20" },
  });
  assert.equal(mini.decision, "allow");
  log(`chat.large: ${big.decision} (use ${big.fallback_action}); chat.mini: ${mini.decision}`);
  assert.equal((await dd.reconcile()).ok, true);
}
