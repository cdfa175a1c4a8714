// Ask before expensive work: authorize an agent step with a hold on its estimate, settle it with
// what the step really used (the rest goes back), void the hold of a step that failed (it costs
// nothing), and let a forgotten hold expire at its timeout. A request the credits cannot cover
// is denied before any work is done.
export const title = "authorize and hold before each agent step";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-03-01T00:00:00Z" });
  const c = await dd.customers.create({ kind: "organization", name: "Initech" });
  const card = await dd.rateCards.create({ name: "Agents" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [{ id: "tok", action: "agent.step", quantity: "output_tokens", rate: "1", per: "1000" }],
  });
  await dd.grants.create({ wallet_id: c.wallet_id, amount: "20", source: "purchase" });

  // Step 1: estimate 8,000 tokens (8 credits), hold them, then settle with the 5,000 used.
  const a = await dd.holds.authorize({
    customer_id: c.id,
    action: "agent.step",
    estimate: { quantities: { output_tokens: 8000 } },
    hold: true,
    hold_timeout_seconds: 300,
  });
  assert.equal(a.decision, "allow");
  assert.equal((await dd.wallets.balance(c.wallet_id)).available, "12");
  const settled = await dd.holds.settle(a.hold.id, {
    events: [{ id: "run-7-step-1", quantities: { output_tokens: 5000 }, run_id: "run-7" }],
  });
  assert.deepEqual([settled.posted, settled.released], ["5", "3"]);

  // Step 2 fails: its hold is voided and costs nothing.
  const b = await dd.holds.authorize({
    customer_id: c.id,
    action: "agent.step",
    estimate: { credits: "6" },
    hold: true,
  });
  await dd.holds.void(b.hold.id);
  assert.equal((await dd.wallets.balance(c.wallet_id)).available, "15");

  // Too big a step is denied before it starts: nothing is held.
  const big = await dd.holds.authorize({
    customer_id: c.id,
    action: "agent.step",
    estimate: { credits: "50" },
    hold: true,
  });
  assert.deepEqual(
    [big.decision, big.reason, big.available, big.hold],
    ["deny", "insufficient_credits", "15", null],
  );

  // A hold nobody settles expires at its timeout; its credits come back.
  const lost = await dd.holds.authorize({
    customer_id: c.id,
    action: "agent.step",
    estimate: { credits: "4" },
    hold: true,
    hold_timeout_seconds: 60,
  });
  assert.equal((await dd.wallets.balance(c.wallet_id)).held, "4");
  await dd.testClock.advance({ seconds: 120 });
  assert.equal((await dd.holds.get(lost.hold.id)).status, "expired");
  const balance = await dd.wallets.balance(c.wallet_id);
  assert.deepEqual([balance.total, balance.available, balance.held], ["15", "15", "0"]);
  log("run-7 paid", settled.posted, "credits; the failed step and the expired hold cost nothing");
  assert.equal((await dd.reconcile()).ok, true);
}
