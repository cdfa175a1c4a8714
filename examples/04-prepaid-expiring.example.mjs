// Prepaid credits that expire after a year: a purchased pack with its cost basis, burned down
// by usage, and the rest broken (moved to breakage) exactly once when the year is over.
export const title = "prepaid credits that expire after a year";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-01-01T00:00:00Z" });
  const c = await dd.customers.create({ kind: "organization", name: "Globex" });
  const card = await dd.rateCards.create({ name: "Images" });
  await dd.rateCards.publishVersion(card.id, {
    lines: [{ id: "img", action: "image.generate", quantity: "images", rate: "4" }],
  });
  const { grant } = await dd.grants.create({
    wallet_id: c.wallet_id,
    amount: "500",
    source: "purchase",
    cost_basis: "0.01",
    currency: "USD",
    expires_at: "2028-01-01T00:00:00Z",
  });
  const batch = await dd.events.ingestBatch(
    Array.from({ length: 25 }, (_, i) => ({
      id: `img-${i}`,
      customer_id: c.id,
      action: "image.generate",
      quantities: { images: 1 },
    })),
  );
  assert.equal(batch.accepted, 25);
  assert.equal(batch.credits, "100");
  assert.equal((await dd.wallets.balance(c.wallet_id)).available, "400");
  const month = await dd.testClock.advance({ to: "2027-12-31T23:00:00Z" });
  assert.equal(month.expired_grants, 0);
  const year = await dd.testClock.advance({ to: "2028-01-02T00:00:00Z" });
  assert.equal(year.expired_grants, 1);
  const after = await dd.grants.get(grant.id);
  assert.equal(after.status, "expired");
  assert.equal((await dd.wallets.balance(c.wallet_id)).total, "0");
  log("the 400 left went to breakage on", after.expires_at);
  assert.equal((await dd.reconcile()).ok, true);
}
