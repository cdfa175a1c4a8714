import { formatAmount, parseAmount, UNIT } from "@drawdown/core";
import { startTestServer, type TestServer } from "./harness.js";
import { Client } from "./http.js";

type Obj = Record<string, unknown>;

/** One tenant's fixture ids. */
export interface TenantFixtures {
  readonly tenantId: string;
  /** Its secret key. */
  readonly key: string;
  /** The main customer (external_id "acme"), its pool wallet, a member with a wallet, an agent. */
  readonly customer: string;
  readonly wallet: string;
  readonly member: string;
  readonly memberWallet: string;
  readonly agent: string;
  /** A second customer of the same tenant, with a subject, a grant and a debit. */
  readonly customer2: string;
  readonly wallet2: string;
  readonly subject2: string;
  readonly grant2: string;
  /** An active grant in the pool (100 credits, expiring 2099) and one in the member's wallet. */
  readonly grant: string;
  readonly memberGrant: string;
  /** A voided grant, in the pool. */
  readonly voidedGrant: string;
  /** The transaction that issued `grant` (not reversible), a debit, a reversed debit, its reversal. */
  readonly issue: string;
  readonly debit: string;
  readonly reversed: string;
  readonly reversal: string;
  readonly debit2: string;
  /** A secret key's id (not the client's own key). */
  readonly apiKey: string;
  /** The default rate card (pricing chat.completion by output_tokens) and its version. */
  readonly rateCard: string;
  readonly rateCardVersion: string;
  /** A usage event of the main customer, in run `run`; and one of the second customer. */
  readonly event: string;
  readonly run: string;
  readonly event2: string;
  readonly run2: string;
  /** A monthly plan (10 credits a period, no rollover), and its subscriptions: the main customer's and the second's. */
  readonly plan: string;
  readonly subscription: string;
  readonly subscription2: string;
  /** A gift code (10 uses, 3 credits each), claimed once by the second customer. */
  readonly giftCode: string;
  /** A year's contract (10 credits upfront) of the main customer, and one of the second. */
  readonly contract: string;
  readonly contract2: string;
  /** A proof-of-concept allocation of the main customer, and one of the second. */
  readonly poc: string;
  readonly poc2: string;
  /**
   * A USD price book (pack "starter": 100 credits for 10.00; tiers 0.12 then 0.10 a credit), a
   * pending invoice for the pack into the main wallet, a commitment of the main customer, and
   * an auto top-up on the main wallet (threshold 1: it never falls due here).
   */
  readonly priceBook: string;
  readonly purchase: string;
  readonly purchase2: string;
  /** A pending hold of 1 credit (7 days) on the main customer's pool, and one of the second customer. */
  readonly hold: string;
  readonly hold2: string;
  /** A webhook endpoint (to a name resolving to loopback) and its test-send's delivery, refused, pending a retry. */
  readonly webhookEndpoint: string;
  readonly webhookDelivery: string;
  /** A vendor's monthly spend cap on the main pool (1,000,000 credits: never reached here), and one on the second customer's pool. */
  readonly spendCap: string;
  readonly spendCap2: string;
}

/** What every bad-input and tenancy test starts from: two tenants with one of everything. */
export interface Fixtures {
  readonly a: TenantFixtures;
  readonly b: TenantFixtures;
  /** Tenant A's restricted key, reading `a.customer` only. */
  readonly restricted: string;
  readonly restrictedId: string;
  /** Tenant A's revoked secret key. */
  readonly revoked: string;
}

/** A running server with its fixtures, a client for tenant A, and a clock that can be moved. */
export interface World {
  readonly server: TestServer;
  readonly client: Client;
  readonly f: Fixtures;
  /** Moves the server's clock forward. */
  advance(ms: number): void;
  close(): Promise<void>;
}

let counter = 0;
/** A short unique suffix for external ids and names. */
export const unique = (): string => `${Date.now().toString(36)}${(counter++).toString(36)}`;

/** The rate card line every fixture tenant prices its events by. */
export const CHAT_LINE = {
  id: "chat",
  action: "chat.completion",
  quantity: "output_tokens",
  rate: "0.001",
} as const;

async function tenantFixtures(client: Client, tenantId: string, t: string): Promise<TenantFixtures> {
  const c1 = await client.create("/v1/customers", { kind: "organization", external_id: "acme" });
  const c2 = await client.create("/v1/customers", { kind: "individual", external_id: "bob" });
  const customer = String(c1.id);
  const wallet = String(c1.wallet_id);
  const member = await client.create(`/v1/customers/${customer}/subjects`, {
    kind: "member",
    external_id: "alice",
  });
  const agent = await client.create(`/v1/customers/${customer}/subjects`, {
    kind: "agent",
    external_id: "bot",
  });
  const subject2 = await client.create(`/v1/customers/${c2.id}/subjects`, { kind: "member" });
  const memberWallet = await client.create("/v1/wallets", { customer_id: customer, member_id: member.id });
  const grant = await client.create<{ grant: Obj; transaction_id: string }>("/v1/grants", {
    wallet_id: wallet,
    amount: "100",
    source: "promo",
    expires_at: "2099-01-01T00:00:00Z",
  });
  const memberGrant = await client.create<{ grant: Obj }>("/v1/grants", {
    wallet_id: memberWallet.id,
    amount: "10",
    source: "plan",
  });
  const grant2 = await client.create<{ grant: Obj }>("/v1/grants", {
    wallet_id: c2.wallet_id,
    amount: "10",
    source: "purchase",
    cost_basis: "0.01",
    currency: "USD",
  });
  const voided = await client.create<{ grant: Obj }>("/v1/grants", {
    wallet_id: wallet,
    amount: "5",
    source: "gift",
  });
  await client.create(`/v1/grants/${voided.grant.id}/void`, { reason: "fixture" });
  // The pool's own rule: its next debit fires an alert (so every tenant has one to list).
  await client.create(`/v1/wallets/${wallet}/alert_rules`, {
    rules: [{ kind: "amount_remaining", amount: "1000" }, { kind: "exhausted" }],
  });
  const debit = await client.create(`/v1/wallets/${wallet}/debits`, {
    amount: "1",
    reason: "fixture",
    action: "chat.completion",
  });
  const reversed = await client.create(`/v1/wallets/${wallet}/debits`, { amount: "2", reason: "fixture" });
  const reversal = await client.create(`/v1/transactions/${reversed.id}/reverse`, { reason: "fixture" });
  const debit2 = await client.create(`/v1/wallets/${c2.wallet_id}/debits`, {
    amount: "1",
    reason: "fixture",
  });
  const apiKey = await client.create("/v1/api_keys", { kind: "secret", name: `fixture-${unique()}` });
  const card = await client.create("/v1/rate_cards", { name: "Standard" });
  const version = await client.create(`/v1/rate_cards/${card.id}/versions`, { lines: [CHAT_LINE] });
  const event = async (id: string, customerId: string, runId: string) => {
    await client.create("/v1/events", {
      id,
      customer_id: customerId,
      action: "chat.completion",
      quantities: { output_tokens: 10 },
      run_id: runId,
    });
  };
  // Durable runs (their events below carry their ids): one of each customer.
  await client.create("/v1/runs", { id: `run-${t}-1`, customer_id: customer, metadata: { fixture: "yes" } });
  await client.create("/v1/runs", { id: `run-${t}-2`, customer_id: c2.id });
  await event(`evt-${t}-1`, customer, `run-${t}-1`);
  await event(`evt-${t}-2`, String(c2.id), `run-${t}-2`);
  const plan = await client.create("/v1/plans", {
    name: "Fixture plan",
    base_fee: { amount: "20", currency: "USD" },
    interval: { unit: "month", count: 1 },
    allotment: "10",
  });
  const subscription = await client.create("/v1/subscriptions", { customer_id: customer, plan_id: plan.id });
  const subscription2 = await client.create("/v1/subscriptions", { customer_id: c2.id, plan_id: plan.id });
  const giftCode = await client.create("/v1/gift_codes", { code: "FIXTURE", amount: "3", max_uses: 10 });
  await client.create("/v1/gift_codes/claim", { code: giftCode.code, customer_id: c2.id });
  const contract = async (customerId: unknown) =>
    String(
      (
        await client.create("/v1/contracts", {
          customer_id: customerId,
          ends_at: new Date(Date.now() + 365 * 86_400_000).toISOString(),
          commitment: "10",
          credit_price: { amount: "0.01", currency: "USD" },
        })
      ).id,
    );
  const poc = async (customerId: unknown) =>
    String(
      (
        await client.create("/v1/poc_allocations", {
          customer_id: customerId,
          amount: "5",
          list_value: { amount: "2", currency: "USD" },
          ends_at: new Date(Date.now() + 30 * 86_400_000).toISOString(),
        })
      ).id,
    );
  const priceBook = await client.create("/v1/price_books", {
    currency: "USD",
    packs: [{ id: "starter", name: "Starter", credits: "100", price: "10" }],
    tiers: [
      { up_to: "1000", unit_price: "0.12" },
      { up_to: null, unit_price: "0.1" },
    ],
    commitment_discounts: [{ min_committed: "10000", percent_off: 10 }],
  });
  const buy = (walletId: string) =>
    client.create("/v1/purchases", {
      wallet_id: walletId,
      currency: "USD",
      pack_id: "starter",
      provider: "manual",
    });
  const purchase = await buy(wallet);
  // The second customer's purchase and auto top-up: what a restricted key of the first may not see.
  const purchase2 = await buy(String(c2.wallet_id));
  await client.create(`/v1/customers/${customer}/commitments`, {
    currency: "USD",
    credits: "1000",
    ends_at: "2099-01-01T00:00:00Z",
  });
  await client.create(`/v1/wallets/${wallet}/auto_top_up`, {
    threshold: "1",
    amount: "100",
    currency: "USD",
    monthly_cap: "100",
    provider: "manual",
  });
  const hold = async (customerId: string) =>
    String(
      (
        (await client.create("/v1/authorize", {
          customer_id: customerId,
          action: "chat.completion",
          estimate: { credits: "1" },
          hold: true,
          hold_timeout_seconds: 7 * 86_400,
        })) as { hold: { id: string } }
      ).hold.id,
    );
  const hold1 = await hold(customer);
  const hold2 = await hold(String(c2.id));
  // An overage invoice of each customer (so every tenant, and the restricted key's customer,
  // has one to list): a priced soft cap owes 1 credit, billed; then the policy is cleared and
  // the credits the usage drew are granted back.
  const overageInvoice = async (customerId: string, walletId: string, n: number) => {
    await client.create(`/v1/wallets/${walletId}/overage`, {
      mode: "soft_cap",
      floor: "-10",
      price: { amount: "0.5", currency: "USD" },
    });
    const b = await client.ok<{ available: string }>({
      method: "GET",
      path: `/v1/wallets/${walletId}/balance`,
    });
    const available = parseAmount(b.available, { allowZero: true });
    if (!available.ok) throw new Error(available.error.message);
    await client.create("/v1/events", {
      id: `evt-${t}-overage-${n}`,
      customer_id: customerId,
      action: "chat.completion",
      quantities: { output_tokens: formatAmount((available.value + UNIT) * 1000n) },
    });
    await client.create(`/v1/wallets/${walletId}/overage/bill`, {});
    await client.create(`/v1/wallets/${walletId}/overage/clear`, {});
    if (available.value > 0n)
      await client.create("/v1/grants", {
        wallet_id: walletId,
        amount: formatAmount(available.value),
        source: "promo",
      });
  };
  await overageInvoice(customer, wallet, 1);
  await overageInvoice(String(c2.id), String(c2.wallet_id), 2);
  // The world's resolver gives this name a loopback address, which the server refuses to
  // connect to: the test-send fails at once, connecting nowhere, and waits to retry.
  const endpoint = await client.create("/v1/webhook_endpoints", {
    url: "http://hooks.example.test/hooks",
    event_types: ["*"],
  });
  const delivery = await client.create(`/v1/webhook_endpoints/${endpoint.id}/test`);
  const cap = async (customerId: string, walletId: string) =>
    String(
      (
        await client.create(`/v1/customers/${customerId}/spend_caps`, {
          target_id: walletId,
          period: "month",
          limit: "1000000",
        })
      ).id,
    );
  return {
    tenantId,
    key: client.key,
    customer,
    wallet,
    member: String(member.id),
    memberWallet: String(memberWallet.id),
    agent: String(agent.id),
    customer2: String(c2.id),
    wallet2: String(c2.wallet_id),
    subject2: String(subject2.id),
    grant2: String(grant2.grant.id),
    grant: String(grant.grant.id),
    memberGrant: String(memberGrant.grant.id),
    voidedGrant: String(voided.grant.id),
    issue: grant.transaction_id,
    debit: String(debit.id),
    reversed: String(reversed.id),
    reversal: String(reversal.id),
    debit2: String(debit2.id),
    apiKey: String(apiKey.id),
    rateCard: String(card.id),
    rateCardVersion: String(version.id),
    event: `evt-${t}-1`,
    run: `run-${t}-1`,
    event2: `evt-${t}-2`,
    run2: `run-${t}-2`,
    plan: String(plan.id),
    subscription: String(subscription.id),
    subscription2: String(subscription2.id),
    giftCode: String(giftCode.code),
    contract: await contract(customer),
    contract2: await contract(c2.id),
    poc: await poc(customer),
    poc2: await poc(c2.id),
    priceBook: String(priceBook.id),
    purchase: String(purchase.id),
    purchase2: String(purchase2.id),
    hold: hold1,
    hold2,
    webhookEndpoint: String(endpoint.id),
    webhookDelivery: String(delivery.id),
    spendCap: await cap(customer, wallet),
    spendCap2: await cap(String(c2.id), String(c2.wallet_id)),
  };
}

/**
 * Starts a server on PGlite with a movable clock and builds both tenants' fixtures over HTTP.
 * Webhooks refuse private networks, as in production; names resolve by a table, never by DNS
 * (`hooks.example.test` to loopback; any other name is not found).
 */
export async function startWorld(): Promise<World> {
  let offset = 0;
  const server = await startTestServer({
    clock: () => Date.now() + offset,
    webhookResolver: async (hostname) => {
      if (hostname === "hooks.example.test") return [{ address: "127.0.0.1", family: 4 }];
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    },
  });
  const client = new Client(server.url, server.key);
  const a = await tenantFixtures(client, server.tenantId, "a");
  const other = await server.newTenant("Other");
  const b = await tenantFixtures(client.as(other.key), other.tenantId, "b");
  const restricted = await client.create("/v1/api_keys", {
    kind: "restricted",
    name: "customer page",
    customer_id: a.customer,
  });
  const revoked = await client.create("/v1/api_keys", { kind: "secret", name: "old" });
  await client.create(`/v1/api_keys/${revoked.id}/revoke`);
  return {
    server,
    client,
    f: {
      a,
      b,
      restricted: String(restricted.secret),
      restrictedId: String(restricted.id),
      revoked: String(revoked.secret),
    },
    advance: (ms) => {
      offset += ms;
    },
    close: () => server.close(),
  };
}
