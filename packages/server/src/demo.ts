import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { credits, invariant } from "@drawdown/core";
import type { Store } from "@drawdown/storage";

const DAY = 86_400_000;

/**
 * Seeds a demo tenant on a new database: a customer with a member, both with wallets, and
 * grants of several sources. Returns its secret key, kept in `keyFile` so later starts can
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
    return store.createApiKey(tenant.id, { kind: "secret", name: "Demo key" }, tx);
  });
  invariant(result.ok, "demo key");
  mkdirSync(dirname(keyFile), { recursive: true });
  writeFileSync(keyFile, result.value.secret + "\n", { mode: 0o600 });
  return { secret: result.value.secret, created: true };
}
