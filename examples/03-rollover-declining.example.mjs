// A declining rollover: unused credits carry 100% at the first period end, 50% at the second,
// nothing after.
export const title = "a declining 100/50/0 rollover";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-01-01T00:00:00Z" });
  const c = await dd.customers.create({ kind: "individual", name: "Bo" });
  const plan = await dd.plans.create({
    name: "Declining",
    base_fee: { amount: "0", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "100",
    rollover: { kind: "declining", schedule: [100, 50, 0] },
  });
  await dd.subscriptions.create({ customer_id: c.id, plan_id: plan.id });
  const seen = [];
  for (const at of ["2027-02-01T00:00:01Z", "2027-03-01T00:00:01Z", "2027-04-01T00:00:01Z"]) {
    await dd.testClock.advance({ to: at });
    seen.push((await dd.wallets.balance(c.wallet_id)).available);
  }
  log("available after each renewal:", seen.join(", "));
  // 100 + 100 carried; 100 + 100 + 50; the 50 then carries 0%.
  assert.deepEqual(seen, ["200", "250", "250"]);
  assert.equal((await dd.reconcile()).ok, true);
}
