// 20% partial pooling for a team: each member's 25 credits a month split 20 personal, 5 to
// the team's shared pool. A member's usage draws its own credits first, then the pool. A member
// who joins mid-month gets the rest of the month, prorated and split the same way.
export const title = "20% partial pooling for a team";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-04-01T00:00:00Z" });
  const card = await dd.rateCards.create({ name: "Team actions" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [
      { id: "prototype", action: "prototype", quantity: "units", rate: "30" },
      { id: "deck", action: "deck_rewrite", quantity: "units", rate: "60" },
    ],
  });
  const plan = await dd.plans.create({
    name: "Team, 20% pooled",
    base_fee: { amount: "99", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "25",
    allocation: { mode: "per_member", pool_share_percent: 20 },
  });
  assert.deepEqual(plan.allocation, { mode: "per_member", pool_share_percent: 20 });
  const acme = await dd.customers.create({ kind: "organization", name: "Acme" });
  const member = async (name) => {
    const subject = await dd.subjects.create(acme.id, { kind: "member", name });
    return { subject, wallet: await dd.wallets.create({ customer_id: acme.id, member_id: subject.id }) };
  };
  const team = [await member("Ann"), await member("Ben"), await member("Cid"), await member("Dee")];
  await dd.subscriptions.create({ customer_id: acme.id, plan_id: plan.id });

  const own = async (m) => (await dd.wallets.balance(m.wallet.id)).available;
  const pool = async () => (await dd.wallets.balance(acme.wallet_id)).available;
  const all = async () => ({ members: await Promise.all(team.map(own)), pool: await pool() });
  let n = 0;
  const use = (m, action) =>
    dd.events.ingest({
      id: `team-${++n}`,
      customer_id: acme.id,
      subject_id: m.subject.id,
      action,
      quantities: { units: 1 },
    });

  // Each member keeps 20 of 25; 4 × 5 = 20 goes to the pool.
  assert.deepEqual(await all(), { members: ["20", "20", "20", "20"], pool: "20" });
  const ann = await dd.wallets.balance(team[0].wallet.id);
  assert.deepEqual(
    [ann.available, ann.pool.wallet_id, ann.pool.available, ann.spendable],
    ["20", acme.wallet_id, "20", "40"],
  );

  // Ann's prototype (30): her own 20, then 10 from the pool.
  const first = await use(team[0], "prototype");
  assert.equal(first.charge.drawn, "30");
  assert.deepEqual(await all(), { members: ["0", "20", "20", "20"], pool: "10" });
  // Ben's: his 20, then the pool's last 10.
  await use(team[1], "prototype");
  assert.deepEqual(await all(), { members: ["0", "0", "20", "20"], pool: "0" });
  // Cid's: his 20 alone do not cover 30, and the pool is empty: refused, nothing drawn.
  const refused = await use(team[2], "prototype");
  assert.equal(refused.charge.unpaid, "30");
  assert.deepEqual(await all(), { members: ["0", "0", "20", "20"], pool: "0" });
  log("after two prototypes:", JSON.stringify(await all()));

  // Eve joins on April 16: 15 of April's 30 days are left, so 12.5 credits: 10 hers, 2.5 pooled.
  await dd.testClock.advance({ to: "2027-04-16T00:00:00Z" });
  const eve = await member("Eve");
  assert.equal(await own(eve), "10");
  assert.equal(await pool(), "2.5");
  // The member allocations of April: per member, what it was allocated, what remains of its own
  // part, and its share paid into the pool.
  const april = new Map();
  for await (const a of dd.subscriptions.memberAllocationsAll(acme.id)) april.set(a.wallet_id, a);
  assert.deepEqual(
    [team[0], team[2], eve].map((m) => {
      const a = april.get(m.wallet.id);
      return [a.reason, a.allocated, a.remaining, a.pool_share];
    }),
    [
      ["renewal", "25", "0", "5"],
      ["renewal", "25", "20", "5"],
      ["member_added", "12.5", "10", "2.5"],
    ],
  );
  log(
    "April allocations (Ann, Cid, Eve):",
    [team[0], team[2], eve].map((m) => april.get(m.wallet.id).remaining).join(", "),
    "remaining",
  );

  // May: everyone's allocation resets, Eve's included: 20 each, 5 × 5 = 25 pooled.
  await dd.testClock.advance({ to: "2027-05-01T00:00:01Z" });
  team.push(eve);
  assert.deepEqual(await all(), { members: ["20", "20", "20", "20", "20"], pool: "25" });
  // A deck rewrite (60) by Dee: her 20 and the pool's 25 make 45, short of 60: refused, nothing drawn.
  assert.equal((await use(team[3], "deck_rewrite")).charge.unpaid, "60");
  // A prototype by Dee: 20 own + 10 pool.
  await use(team[3], "prototype");
  assert.deepEqual(await all(), { members: ["20", "20", "20", "0", "20"], pool: "15" });
  log("May:", JSON.stringify(await all()));
  assert.equal((await dd.reconcile()).ok, true);
}
