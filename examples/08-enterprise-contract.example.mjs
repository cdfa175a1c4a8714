// An enterprise contract with a proof-of-concept allocation. First a 30-day POC: free credits
// that carry the list value they stand for (what a statement shows). Then a 12-month contract:
// 120,000 committed credits granted quarterly at a negotiated $0.006 a credit (list: $0.008),
// pinned to the rate card version in force at signing with an override for document analysis,
// each installment expiring 12 months after it is granted. The vendor publishes a newer rate
// card version: customers on the list price get it, the contract customer does not. After the
// term the override ends: documents are priced by the pinned version again. Then a renewal pinned
// to the newer version, and late events of the first term, still priced by the first contract's
// whole pricing: its pinned version and its override.
export const title = "an enterprise contract with a proof-of-concept allocation";

export async function run({ dd, assert, log }) {
  await dd.testClock.advance({ to: "2027-01-01T00:00:00Z" });
  const card = await dd.rateCards.create({ name: "List" });
  const v1 = await dd.rateCards.publishVersion(card.id, {
    lines: [
      { id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "1", per: 1000 },
      { id: "docs", action: "docs.analyze", quantity: "pages", rate: "5" },
    ],
  });
  const globex = await dd.customers.create({ kind: "organization", name: "Globex" });
  const available = async () => (await dd.wallets.balance(globex.wallet_id)).available;

  // The proof of concept: 5,000 free credits for 30 days, worth $40 at list price.
  const poc = await dd.pocAllocations.create({
    customer_id: globex.id,
    amount: "5000",
    list_value: { amount: "40", currency: "USD" },
    ends_at: "2027-01-31T00:00:00Z",
  });
  assert.equal(await available(), "5000");
  await dd.events.ingest({
    id: "poc-1",
    customer_id: globex.id,
    action: "chat.completion",
    quantities: { output_tokens: 2_000_000 },
  });
  const trial = await dd.pocAllocations.get(poc.id);
  assert.equal(trial.used, "2000");
  assert.deepEqual(trial.used_list_value, { amount: "16", currency: "USD" });
  log(`POC: ${trial.used} credits used, worth $${trial.used_list_value.amount} at list price`);

  // The POC ends: what is left of it expires.
  await dd.testClock.advance({ to: "2027-01-31T00:00:00Z" });
  const ended = await dd.pocAllocations.get(poc.id);
  assert.deepEqual([ended.status, ended.expired, ended.remaining], ["ended", "3000", "0"]);
  assert.equal(await available(), "0");

  // The contract, signed the day the POC ends: quarterly installments of 30,000 credits.
  const contract = await dd.contracts.create({
    customer_id: globex.id,
    ends_at: "2028-01-31T00:00:00Z",
    commitment: "120000",
    schedule: { kind: "installments", interval: { unit: "month", count: 3 } },
    credit_price: { amount: "0.006", currency: "USD" },
    allow_rate_card_upgrades: false,
    overrides: [{ id: "docs-enterprise", action: "docs.analyze", quantity: "pages", rate: "4" }],
  });
  assert.equal(contract.pinned_version_id, v1.id);
  assert.deepEqual(
    contract.installments.map((i) => i.at.slice(0, 10)),
    ["2027-01-31", "2027-04-30", "2027-07-31", "2027-10-31"],
  );
  assert.equal(await available(), "30000");
  const [first] = (await dd.contracts.get(contract.id)).installments;
  assert.equal(first.expires_at, "2028-01-31T00:00:00.000Z");

  // The vendor raises the list price of chat by half. A customer on the list price pays it...
  const v2 = await dd.rateCards.publishVersion(card.id, {
    lines: [
      { id: "chat", action: "chat.completion", quantity: "output_tokens", rate: "1.5", per: 1000 },
      { id: "docs", action: "docs.analyze", quantity: "pages", rate: "5" },
    ],
  });
  const initech = await dd.customers.create({ kind: "organization", name: "Initech" });
  await dd.grants.create({ wallet_id: initech.wallet_id, amount: "100", source: "promo" });
  const list = await dd.events.ingest({
    id: "list-1",
    customer_id: initech.id,
    action: "chat.completion",
    quantities: { output_tokens: 1000 },
  });
  assert.equal(list.charge.credits, "1.5");
  assert.equal(list.charge.rate_card_version_id, v2.id);
  // ...the contract customer keeps the version of its signing, and its override for documents.
  const chat = await dd.events.ingest({
    id: "globex-1",
    customer_id: globex.id,
    action: "chat.completion",
    quantities: { output_tokens: 1_000_000 },
  });
  const docs = await dd.events.ingest({
    id: "globex-2",
    customer_id: globex.id,
    action: "docs.analyze",
    quantities: { pages: 10 },
  });
  assert.equal(chat.charge.credits, "1000");
  assert.equal(chat.charge.rate_card_version_id, v1.id);
  assert.equal(docs.charge.credits, "40");
  assert.equal(await available(), "28960");

  // Each quarter grants its installment, once.
  const seen = [];
  for (const at of ["2027-04-30T01:00:00Z", "2027-07-31T01:00:00Z", "2027-10-31T01:00:00Z"]) {
    await dd.testClock.advance({ to: at });
    seen.push(await available());
  }
  assert.deepEqual(seen, ["58960", "88960", "118960"]);
  log("available after each quarter:", seen.join(", "));

  // A year after the first installment its 28,960 left expire; the later ones still run.
  await dd.testClock.advance({ to: "2028-01-31T01:00:00Z" });
  assert.equal(await available(), "90000");
  const statement = await dd.contracts.get(contract.id);
  assert.equal(statement.status, "ended");
  assert.deepEqual(
    [statement.totals.issued, statement.totals.used, statement.totals.expired, statement.totals.remaining],
    ["120000", "1040", "28960", "90000"],
  );
  log(
    `contract: ${statement.totals.used} used, ${statement.totals.expired} expired, ${statement.totals.remaining} left`,
  );
  // The usage is valued at the negotiated price: 1,040 credits × $0.006.
  const margin = await dd.reports.margin({ group_by: "customer", customer_id: globex.id });
  assert.equal(margin.rows.at(-1).revenue, "6.24");

  // The term is over: the document override no longer applies. The customer stays on its pinned
  // version, at its list price for documents; the explanation shows the card's line priced it.
  const late = await dd.events.ingest({
    id: "globex-3",
    customer_id: globex.id,
    action: "docs.analyze",
    quantities: { pages: 10 },
  });
  assert.deepEqual([late.charge.credits, late.charge.rate_card_version_id], ["50", v1.id]);
  const why = await dd.events.get("globex-3");
  assert.deepEqual(
    why.explanation.lines.map((l) => [l.line_id, l.override]),
    [["docs", false]],
  );
  log(`after the term: 10 pages cost ${late.charge.credits} credits (list), not 40`);

  // The renewal starts now, pinned to the version in force at its signing (v2), with a deeper
  // document discount. Events timed on the last day of the first term arrive late: they are
  // still priced by the first contract's pricing, its pinned v1 and its override (each window of
  // the customer's pricing history rates the events of its own time with its card, pin and
  // lines), and the explanation names the contract whose override priced them.
  const renewal = await dd.contracts.create({
    customer_id: globex.id,
    ends_at: "2029-01-31T00:00:00Z",
    commitment: "60000",
    credit_price: { amount: "0.006", currency: "USD" },
    allow_rate_card_upgrades: false,
    overrides: [{ id: "docs-renewal", action: "docs.analyze", quantity: "pages", rate: "3" }],
  });
  const lastDay = await dd.events.ingest({
    id: "globex-4",
    customer_id: globex.id,
    action: "docs.analyze",
    quantities: { pages: 10 },
    time: "2028-01-30T12:00:00Z",
  });
  const renewed = await dd.events.ingest({
    id: "globex-5",
    customer_id: globex.id,
    action: "docs.analyze",
    quantities: { pages: 10 },
  });
  assert.equal(renewal.pinned_version_id, v2.id);
  assert.deepEqual([lastDay.charge.credits, renewed.charge.credits], ["40", "30"]);
  assert.deepEqual(
    [lastDay.charge.rate_card_version_id, renewed.charge.rate_card_version_id],
    [v1.id, v2.id],
  );
  // Chat, which no override prices: the first term's pinned v1 (1 credit per 1,000 tokens) for
  // the late event, the renewal's v2 (1.5) for one of now.
  const lateChat = await dd.events.ingest({
    id: "globex-6",
    customer_id: globex.id,
    action: "chat.completion",
    quantities: { output_tokens: 1_000_000 },
    time: "2028-01-30T12:00:00Z",
  });
  const nowChat = await dd.events.ingest({
    id: "globex-7",
    customer_id: globex.id,
    action: "chat.completion",
    quantities: { output_tokens: 1_000_000 },
  });
  assert.deepEqual(
    [lateChat.charge.credits, lateChat.charge.rate_card_version_id, nowChat.charge.credits],
    ["1000", v1.id, "1500"],
  );
  const whyLate = await dd.events.get("globex-4");
  assert.deepEqual(
    [whyLate.explanation.lines[0].line_id, whyLate.explanation.override_source],
    ["docs-enterprise", contract.id],
  );
  assert.equal((await dd.events.get("globex-5")).explanation.override_source, renewal.id);
  log(
    `late events of the first term: ${lastDay.charge.credits} and ${lateChat.charge.credits} credits; under the renewal: ${renewed.charge.credits} and ${nowChat.charge.credits}`,
  );
  assert.equal((await dd.reconcile()).ok, true);
}
