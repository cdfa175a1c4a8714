// Prepaid credits that expire after a year, with auto top-up: a pack bought on invoice (pending,
// unusable, until the payment is confirmed through the API), burned down by usage; below 200
// credits, auto top-up buys 500 more on a (test) card, at most $100 a month; once the month's cap
// is spent it refuses until the next month; a year after each payment, what is left of it goes
// to breakage.
export const title = "prepaid credits that expire after a year, with auto top-up";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-01-01T00:00:00Z" });
  await dd.priceBooks.publish({
    currency: "USD",
    packs: [
      {
        id: "annual",
        name: "1,000 credits",
        credits: "1000",
        price: "100",
        expiry: { kind: "rolling", months: 12 },
      },
    ],
    // Custom amounts (what auto top-up buys): 12 cents a credit up to 1,000, then 10 cents.
    tiers: [
      { up_to: "1000", unit_price: "0.12" },
      { up_to: null, unit_price: "0.1" },
    ],
    custom_expiry: { kind: "rolling", months: 12 },
  });
  const c = await dd.customers.create({ kind: "organization", name: "Initech" });
  const card = await dd.rateCards.create({ name: "Images" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [{ id: "img", action: "image.generate", quantity: "images", rate: "4" }],
  });
  const available = async () => (await dd.wallets.balance(c.wallet_id)).available;
  let n = 0;
  const images = async (count) => {
    const batch = await dd.events.ingestBatch(
      Array.from({ length: count }, () => ({
        id: `img-${n++}`,
        customer_id: c.id,
        action: "image.generate",
        quantities: { images: 1 },
      })),
    );
    assert.equal(batch.accepted, count);
  };

  // The pack, on invoice: pending, no credits yet.
  const invoice = await dd.purchases.create({
    wallet_id: c.wallet_id,
    currency: "USD",
    pack_id: "annual",
    provider: "manual",
  });
  assert.equal(invoice.status, "pending");
  assert.equal(invoice.price, "100");
  assert.equal(await available(), "0");
  // Paid: the grant carries its cost basis (10 cents a credit) and expires a year later.
  const paid = await dd.purchases.confirm(invoice.id, { reference: "wire-2027-001" });
  const pack = await dd.grants.get(paid.grant_id);
  assert.equal(pack.source, "purchase");
  assert.equal(pack.cost_basis, "0.1");
  assert.equal(pack.expires_at, "2028-01-01T00:00:00.000Z");
  assert.equal(await available(), "1000");
  // A second confirmation is refused and changes nothing.
  await assert.rejects(dd.purchases.confirm(invoice.id), { code: "purchase_not_pending" });

  await dd.autoTopUps.set(c.wallet_id, {
    threshold: "200",
    amount: "500",
    currency: "USD",
    monthly_cap: "100",
    provider: "test",
    payment_method: "pm_test_ok",
  });

  await images(200); // 800 credits: exactly 200 left, not below the threshold
  await dd.testClock.advance({ seconds: 60 });
  assert.equal(await available(), "200");
  await images(1); // 196: below
  await dd.testClock.advance({ seconds: 60 });
  assert.equal(await available(), "696");
  const [first] = (await dd.purchases.list({ wallet_id: c.wallet_id, status: "confirmed" })).data.filter(
    (p) => p.origin === "auto_top_up",
  );
  assert.equal(first.price, "60");
  assert.equal(first.cost_basis, "0.12");
  log("auto top-up bought", first.credits, "credits for $" + first.price);

  await images(130); // 520 credits: 176 left, and the next $60 does not fit the $40 left of the cap
  await dd.testClock.advance({ seconds: 60 });
  assert.equal(await available(), "176");
  await assert.rejects(dd.autoTopUps.run(c.wallet_id), { code: "auto_top_up_cap_reached" });
  assert.equal(await available(), "176");
  assert.equal((await dd.autoTopUps.get(c.wallet_id)).capped_until, "2027-02-01T00:00:00.000Z");

  // February: the cap resets and the top-up happens at the month's start.
  await dd.testClock.advance({ to: "2027-02-01T12:00:00Z" });
  assert.equal(await available(), "676");

  // A year after the payments: the pack (spent) and January's top-up (176 left) expire, their
  // rest to breakage; February's 500 last until February 2028.
  const year = await dd.testClock.advance({ to: "2028-01-02T00:00:00Z" });
  assert.equal(year.expired_grants, 2);
  assert.equal(await available(), "500");
  assert.equal((await dd.grants.get(first.grant_id)).status, "expired");
  log("a year on,", await available(), "credits left; the rest went to breakage");
  assert.equal((await dd.reconcile()).ok, true);
}
