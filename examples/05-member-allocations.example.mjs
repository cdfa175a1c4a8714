// 25 credits per member per month that reset, where a prototype costs 30 and a deck rewrite 60.
// Without a pool, a member's own 25 cannot pay for a prototype; with the members' credits
// pooled, the team's pool can. Each month the allocations reset (no rollover).
export const title = "25 credits per member per month that reset; a prototype costs 30, a deck rewrite 60";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-03-01T00:00:00Z" });
  const card = await dd.rateCards.create({ name: "Studio actions" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [
      { id: "prototype", action: "prototype", quantity: "units", rate: "30" },
      { id: "deck", action: "deck_rewrite", quantity: "units", rate: "60" },
    ],
  });
  const allocation = (pool_share_percent) => ({ mode: "per_member", pool_share_percent });
  const monthly = { base_fee: { amount: "0", currency: "USD" }, interval: { unit: "month", count: 1 } };
  const personal = await dd.plans.create({
    name: "25 per member",
    ...monthly,
    allotment: "25",
    allocation: allocation(0),
  });
  const pooled = await dd.plans.create({
    name: "25 per member, pooled",
    ...monthly,
    allotment: "25",
    allocation: allocation(100),
  });

  /** A customer with members holding wallets: { customer, members: [{ subject, wallet }] }. */
  async function team(name, people) {
    const customer = await dd.customers.create({ kind: "organization", name });
    const members = [];
    for (const person of people) {
      const subject = await dd.subjects.create(customer.id, { kind: "member", name: person });
      members.push({
        subject,
        wallet: await dd.wallets.create({ customer_id: customer.id, member_id: subject.id }),
      });
    }
    return { customer, members };
  }
  let n = 0;
  const use = (t, member, action) =>
    dd.events.ingest({
      id: `use-${++n}`,
      customer_id: t.customer.id,
      subject_id: member.subject.id,
      action,
      quantities: { units: 1 },
    });
  const balances = async (t) => {
    const members = [];
    for (const m of t.members) members.push((await dd.wallets.balance(m.wallet.id)).available);
    return { members, pool: (await dd.wallets.balance(t.customer.wallet_id)).available };
  };

  // Solo: every member keeps its 25; nothing is pooled.
  const solo = await team("Solo", ["Ann", "Ben"]);
  await dd.subscriptions.create({ customer_id: solo.customer.id, plan_id: personal.id });
  assert.deepEqual(await balances(solo), { members: ["25", "25"], pool: "0" });
  const ann = await dd.wallets.balance(solo.members[0].wallet.id);
  assert.deepEqual([ann.pool.available, ann.spendable], ["0", "25"]);
  // A prototype costs 30: Ann's own 25 does not cover it, and there is no pool to draw after.
  const refused = await use(solo, solo.members[0], "prototype");
  assert.equal(refused.charge.credits, "30");
  assert.equal(refused.charge.unpaid, "30");
  assert.equal(refused.charge.reason, "insufficient_credits");
  assert.deepEqual(await balances(solo), { members: ["25", "25"], pool: "0" }, "nothing was drawn");
  log("Solo: Ann's prototype (30) is refused; her 25 stay");

  // Studio: three members, their 25s all pooled: 75 in the team's pool.
  const studio = await team("Studio", ["Cid", "Dee", "Eve"]);
  await dd.subscriptions.create({ customer_id: studio.customer.id, plan_id: pooled.id });
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "75" });
  const cid = await dd.wallets.balance(studio.members[0].wallet.id);
  assert.deepEqual([cid.available, cid.pool.available, cid.spendable], ["0", "75", "75"]);
  assert.equal((await use(studio, studio.members[0], "prototype")).charge.drawn, "30");
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "45" });
  // A deck rewrite (60) is more than the 45 left: refused, nothing drawn.
  assert.equal((await use(studio, studio.members[1], "deck_rewrite")).charge.unpaid, "60");
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "45" });
  assert.equal((await use(studio, studio.members[2], "prototype")).charge.drawn, "30");
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "15" });
  log("Studio: two prototypes from the pool of 75 leave 15; a deck rewrite waits");

  // April: every allocation resets: unused credits expire with March, April's are granted.
  await dd.testClock.advance({ to: "2027-04-01T00:00:01Z" });
  assert.deepEqual(await balances(solo), { members: ["25", "25"], pool: "0" });
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "75" });
  assert.equal((await use(studio, studio.members[1], "deck_rewrite")).charge.drawn, "60");
  assert.deepEqual(await balances(studio), { members: ["0", "0", "0"], pool: "15" });
  log("April: reset to 25 each (Solo) and 75 pooled (Studio); Dee's deck rewrite now fits");
  assert.equal((await dd.reconcile()).ok, true);
}
