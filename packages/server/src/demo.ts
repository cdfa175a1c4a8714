import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { credits, invariant } from "@drawdown/core";
import { Metering, type Store } from "@drawdown/storage";

const DAY = 86_400_000;

/**
 * Seeds a demo tenant on a new database: a customer with a member, both with wallets, grants
 * of several sources, a rate card and a cost table. Returns its secret key, kept in `keyFile` so later starts can
 * print it again (a local convenience; real keys are shown once and stored hashed).
 */
export async function seedDemo(store: Store, keyFile: string): Promise<{ secret: string; created: boolean }> {
  const tenants = await store.listTenants();
  if (tenants.length > 0) {
    const secret = existsSync(keyFile) ? readFileSync(keyFile, "utf8").trim() : "";
    return { secret, created: false };
  }
  const now = store.now();
  const tenant = await store.createTenant("Demo", "test");
  const metering = new Metering((tenantId) => store.now(tenantId), store.newId);
  const result = await store.db.transaction(async (tx) => {
    const customer = await store.createCustomer(tx, tenant.id, {
      kind: "organization",
      name: "Acme Robotics",
      externalId: "acme",
    });
    invariant(customer.ok, "demo customer");
    const member = await store.createSubject(tx, tenant.id, {
      customerId: customer.value.id,
      kind: "member",
      name: "Ada",
      externalId: "ada",
    });
    invariant(member.ok, "demo member");
    await store.createSubject(tx, tenant.id, {
      customerId: customer.value.id,
      kind: "agent",
      name: "Research agent",
      externalId: "agent-1",
    });
    const wallet = await store.createMemberWallet(tx, tenant.id, customer.value.id, member.value.id);
    invariant(wallet.ok, "demo wallet");
    const pool = customer.value.walletId;
    await store.createGrant(tx, tenant.id, {
      walletId: pool,
      amount: credits(1000n),
      source: "plan",
      expiresAt: now + 30 * DAY,
    });
    await store.createGrant(tx, tenant.id, {
      walletId: pool,
      amount: credits(500n),
      source: "purchase",
      costBasis: 10_000_000n,
      currency: "USD",
    });
    await store.createGrant(tx, tenant.id, {
      walletId: pool,
      amount: credits(50n),
      source: "promo",
      scope: ["image.*"],
      expiresAt: now + 14 * DAY,
    });
    await store.createGrant(tx, tenant.id, {
      walletId: wallet.value.id,
      amount: credits(25n),
      source: "plan",
      expiresAt: now + 30 * DAY,
    });
    await store.debitWallet(tx, tenant.id, wallet.value.id, {
      amount: credits(30n),
      action: "chat.completion",
      kind: "adjustment.debit",
      reason: "Demo usage",
    });
    // Prices, so usage events can be sent right away: a card with a turbo mode at 6x, and costs.
    const card = await metering.createRateCard(tx, tenant.id, "Standard");
    invariant(card.ok, "demo rate card");
    await metering.publishRateCardVersion(tx, tenant.id, card.value.id, null, {
      lines: [
        {
          id: "gpt4o-in",
          action: "chat.completion",
          match: { model: "gpt-4o" },
          quantity: "input_tokens",
          rate: "0.25",
          per: "1000",
        },
        {
          id: "gpt4o-out",
          action: "chat.completion",
          match: { model: "gpt-4o" },
          quantity: "output_tokens",
          rate: "1",
          per: "1000",
        },
        {
          id: "mini-in",
          action: "chat.completion",
          match: { model: "gpt-4o-mini" },
          quantity: "input_tokens",
          rate: "0.015",
          per: "1000",
        },
        {
          id: "mini-out",
          action: "chat.completion",
          match: { model: "gpt-4o-mini" },
          quantity: "output_tokens",
          rate: "0.06",
          per: "1000",
        },
        { id: "image", action: "image.generate", quantity: "images", rate: "4", minimum: "4" },
      ],
      multipliers: [{ dimension: "mode", value: "turbo", factor: "6" }],
      non_billable: [
        { action: "chat.completion", match: { feature: "internal-eval" }, reason: "internal evaluation" },
      ],
    });
    await metering.publishCostTable(tx, tenant.id, null, "USD", {
      lines: [
        {
          id: "gpt4o-in",
          action: "chat.completion",
          match: { model: "gpt-4o" },
          quantity: "input_tokens",
          rate: "0.0025",
          per: "1000",
        },
        {
          id: "gpt4o-out",
          action: "chat.completion",
          match: { model: "gpt-4o" },
          quantity: "output_tokens",
          rate: "0.01",
          per: "1000",
        },
        { id: "image", action: "image.generate", quantity: "images", rate: "0.04" },
      ],
    });
    return store.createApiKey(tenant.id, { kind: "secret", name: "Demo key" }, tx);
  });
  invariant(result.ok, "demo key");
  mkdirSync(dirname(keyFile), { recursive: true });
  writeFileSync(keyFile, result.value.secret + "\n", { mode: 0o600 });
  return { secret: result.value.secret, created: true };
}
