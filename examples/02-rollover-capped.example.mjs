// Rollover of up to two months' worth, capped at 3x the allotment: unused credits carry into
// the next months (each credit at most two period ends), but the balance never exceeds 75.
export const title = "rollover for up to two months, capped at 3x the allotment";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-01-31T12:00:00Z" });
  const c = await dd.customers.create({ kind: "individual", name: "Ann" });
  const plan = await dd.plans.create({
    name: "Rollover 3x",
    base_fee: { amount: "10", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "25",
    rollover: { kind: "capped", cap: { multiple_of_allotment: "3" }, max_periods: 2 },
  });
  await dd.subscriptions.create({ customer_id: c.id, plan_id: plan.id });
  await dd.adjustments.debit(c.wallet_id, { amount: "5", reason: "used 5 in January" });
  const seen = [];
  // Month ends keep the 31st as anchor: Feb 28, Mar 31, Apr 30, May 31.
  for (const at of [
    "2027-02-28T13:00:00Z",
    "2027-03-31T13:00:00Z",
    "2027-04-30T13:00:00Z",
    "2027-05-31T13:00:00Z",
  ]) {
    await dd.testClock.advance({ to: at });
    seen.push((await dd.wallets.balance(c.wallet_id)).available);
  }
  log("available after each renewal:", seen.join(", "));
  assert.deepEqual(seen, ["45", "70", "75", "75"]);
  assert.equal((await dd.reconcile()).ok, true);
}
