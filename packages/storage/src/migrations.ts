import type { SqlClient } from "./sql.js";

/** One schema change. Versions are applied in order, each exactly once. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/**
 * The ordered migrations, the same on PGlite and PostgreSQL. Never edit one that has
 * shipped: add the next version.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "ledger",
    sql: /* sql */ `
CREATE TABLE tenants (
  id text PRIMARY KEY,
  name text NOT NULL,
  environment text NOT NULL CHECK (environment IN ('live', 'test')),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id text PRIMARY KEY,
  tenant_id text NOT NULL REFERENCES tenants (id),
  kind text NOT NULL CHECK (kind IN ('secret', 'restricted')),
  customer_id text,
  name text NOT NULL,
  prefix text NOT NULL,
  hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  CHECK ((kind = 'restricted') = (customer_id IS NOT NULL))
);

CREATE TABLE customers (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  external_id text,
  kind text NOT NULL CHECK (kind IN ('individual', 'organization')),
  name text,
  metadata jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, external_id)
);

CREATE TABLE subjects (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('member', 'agent', 'workflow')),
  external_id text,
  name text,
  metadata jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  UNIQUE (tenant_id, customer_id, external_id)
);

CREATE TABLE wallets (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  member_id text,
  balance numeric(38, 0) NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, member_id) REFERENCES subjects (tenant_id, id)
) WITH (fillfactor = 70);
-- fillfactor leaves room on each page so balance updates stay heap-only (no index writes).
-- One pool wallet per customer, one wallet per member.
CREATE UNIQUE INDEX wallets_owner ON wallets (tenant_id, customer_id, coalesce(member_id, ''));

CREATE TABLE grants (
  tenant_id text NOT NULL,
  id text NOT NULL,
  wallet_id text NOT NULL,
  customer_id text NOT NULL,
  amount numeric(38, 0) NOT NULL CHECK (amount > 0),
  remaining numeric(38, 0) NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
  source text NOT NULL CHECK (source IN ('plan', 'purchase', 'top_up', 'gift', 'promo', 'contract', 'rollover', 'adjustment')),
  cost_basis numeric(38, 0) NOT NULL CHECK (cost_basis >= 0),
  currency text CHECK (currency ~ '^[A-Z]{3}$'),
  effective_at timestamptz NOT NULL,
  expires_at timestamptz CHECK (expires_at IS NULL OR expires_at > effective_at),
  priority integer NOT NULL CHECK (priority BETWEEN 0 AND 100),
  scope text[],
  metadata jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL CHECK (status IN ('active', 'voided', 'expired')),
  status_at timestamptz,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, wallet_id) REFERENCES wallets (tenant_id, id)
) WITH (fillfactor = 70);
CREATE INDEX grants_by_wallet ON grants (tenant_id, wallet_id, id);
-- No amount in the predicate: drawing a grant down stays a heap-only update.
CREATE INDEX grants_active ON grants (tenant_id, wallet_id) WHERE status = 'active';

CREATE TABLE grant_changes (
  tenant_id text NOT NULL,
  id text NOT NULL,
  grant_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('expiry_extended')),
  from_expires_at timestamptz,
  to_expires_at timestamptz,
  reason text NOT NULL,
  at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, grant_id) REFERENCES grants (tenant_id, id)
);

CREATE TABLE journal_transactions (
  tenant_id text NOT NULL,
  id text NOT NULL,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  customer_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('grant', 'debit', 'usage', 'adjustment.debit', 'adjustment.credit', 'void', 'expire', 'reversal')),
  reason text,
  action text,
  reverses_id text,
  posted_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
-- A transaction is reversed at most once.
CREATE UNIQUE INDEX journal_transactions_reverses ON journal_transactions (tenant_id, reverses_id) WHERE reverses_id IS NOT NULL;
CREATE INDEX journal_transactions_seq ON journal_transactions (tenant_id, seq);

CREATE TABLE journal_entries (
  tenant_id text NOT NULL,
  tx_id text NOT NULL,
  idx integer NOT NULL,
  account text NOT NULL CHECK (account IN ('grant', 'overdraft', 'issuance', 'consumption', 'adjustments', 'breakage', 'voided')),
  wallet_id text,
  grant_id text,
  unit text NOT NULL CHECK (unit = 'credit'),
  amount numeric(38, 0) NOT NULL CHECK (amount <> 0),
  -- No foreign key to the transaction: its check would lock every transaction row per entry on
  -- the hot path. Both are written in one statement pair by one function; reconcile finds orphans.
  PRIMARY KEY (tenant_id, tx_id, idx),
  CHECK ((account = 'grant') = (grant_id IS NOT NULL AND wallet_id IS NOT NULL))
);
CREATE INDEX journal_entries_wallet ON journal_entries (tenant_id, wallet_id, tx_id) WHERE wallet_id IS NOT NULL;
CREATE INDEX journal_entries_grant ON journal_entries (tenant_id, grant_id) WHERE grant_id IS NOT NULL;

-- Invariant 2: the journal is append-only. The database refuses edits, whatever the caller.
CREATE FUNCTION drawdown_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the journal is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER journal_transactions_append_only BEFORE UPDATE OR DELETE ON journal_transactions
  FOR EACH ROW EXECUTE FUNCTION drawdown_append_only();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
  FOR EACH ROW EXECUTE FUNCTION drawdown_append_only();
CREATE TRIGGER journal_transactions_no_truncate BEFORE TRUNCATE ON journal_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION drawdown_append_only();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
  FOR EACH STATEMENT EXECUTE FUNCTION drawdown_append_only();
CREATE TRIGGER grant_changes_append_only BEFORE UPDATE OR DELETE ON grant_changes
  FOR EACH ROW EXECUTE FUNCTION drawdown_append_only();

CREATE TABLE idempotency_keys (
  tenant_id text NOT NULL,
  key text NOT NULL,
  fingerprint text NOT NULL,
  outcome text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
`,
  },
  {
    version: 2,
    name: "metering",
    sql: /* sql */ `
-- Overage: a soft cap lets a wallet owe credits down to its floor; the balance is grants minus overdraft.
ALTER TABLE wallets ADD COLUMN overdraft numeric(38, 0) NOT NULL DEFAULT 0 CHECK (overdraft >= 0);
ALTER TABLE wallets ADD COLUMN overage_mode text NOT NULL DEFAULT 'hard_cap' CHECK (overage_mode IN ('hard_cap', 'soft_cap'));
ALTER TABLE wallets ADD COLUMN overage_floor numeric(38, 0) NOT NULL DEFAULT 0 CHECK (overage_floor <= 0);
-- What a wallet owes never exceeds its floor (grants cannot go negative, so this bounds the balance).
ALTER TABLE wallets ADD CONSTRAINT wallets_floor CHECK (overdraft <= -overage_floor);

CREATE TABLE rate_cards (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  name text NOT NULL,
  is_default boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX rate_cards_default ON rate_cards (tenant_id) WHERE is_default;

-- Versions are immutable; each is in force from effective_at until the next one's.
CREATE TABLE rate_card_versions (
  tenant_id text NOT NULL,
  id text NOT NULL,
  rate_card_id text NOT NULL,
  version integer NOT NULL CHECK (version > 0),
  effective_at timestamptz NOT NULL,
  content text NOT NULL,
  created_at timestamptz NOT NULL,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, rate_card_id) REFERENCES rate_cards (tenant_id, id),
  UNIQUE (tenant_id, rate_card_id, version),
  UNIQUE (tenant_id, rate_card_id, effective_at)
);

CREATE TABLE cost_table_versions (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  version integer NOT NULL CHECK (version > 0),
  effective_at timestamptz NOT NULL,
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  content text NOT NULL,
  created_at timestamptz NOT NULL,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, version),
  UNIQUE (tenant_id, effective_at)
);

-- A customer's contract: which card, a pinned version or the latest, and override lines.
CREATE TABLE customer_pricing (
  tenant_id text NOT NULL,
  customer_id text NOT NULL,
  rate_card_id text,
  pinned_version_id text,
  overrides text,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, customer_id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, rate_card_id) REFERENCES rate_cards (tenant_id, id),
  FOREIGN KEY (tenant_id, pinned_version_id) REFERENCES rate_card_versions (tenant_id, id)
);

-- Every accepted event, once: its id is deduplicated per tenant forever (the primary key).
-- Columns that reports aggregate are columns; the rest of the record (dimensions,
-- quantities, the explanation of the charge) is one JSON document stored as text: written
-- once, read rarely, and not re-parsed by the database on the hot path.
CREATE TABLE usage_events (
  tenant_id text NOT NULL,
  event_id text NOT NULL,
  fingerprint text NOT NULL,
  customer_id text NOT NULL,
  action text NOT NULL,
  model text,
  time timestamptz NOT NULL,
  run_id text,
  outcome text NOT NULL CHECK (outcome IN ('charged', 'zero', 'unpaid')),
  credits numeric(38, 0) NOT NULL CHECK (credits >= 0),
  charged numeric(38, 0) NOT NULL CHECK (charged >= 0),
  unpaid numeric(38, 0) NOT NULL CHECK (unpaid >= 0),
  cost numeric(38, 0),
  revenue numeric(38, 0) NOT NULL,
  detail text NOT NULL,
  PRIMARY KEY (tenant_id, event_id),
  CHECK (credits = charged + unpaid),
  CHECK (outcome <> 'zero' OR credits = 0)
);
CREATE INDEX usage_events_customer_time ON usage_events (tenant_id, customer_id, time);
CREATE INDEX usage_events_run ON usage_events (tenant_id, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX usage_events_time ON usage_events USING brin (time);

-- Quantity used per customer, period (UTC month) and line: what volume tiers count on.
CREATE TABLE usage_counters (
  tenant_id text NOT NULL,
  customer_id text NOT NULL,
  period timestamptz NOT NULL,
  line_id text NOT NULL,
  quantity numeric(38, 0) NOT NULL CHECK (quantity >= 0),
  PRIMARY KEY (tenant_id, customer_id, period, line_id)
);
`,
  },
  {
    version: 3,
    name: "test_clock",
    sql: /* sql */ `
-- A test tenant's own time, moved forward by its test clock; null: real time.
ALTER TABLE tenants ADD COLUMN clock_at timestamptz;
ALTER TABLE tenants ADD CONSTRAINT tenants_clock_test_only CHECK (clock_at IS NULL OR environment = 'test');
-- The scheduler's search for grants due to expire.
CREATE INDEX grants_expiring ON grants (expires_at) WHERE status = 'active' AND expires_at IS NOT NULL;
`,
  },
  {
    version: 4,
    name: "subscriptions",
    sql: /* sql */ `
ALTER TABLE journal_transactions DROP CONSTRAINT journal_transactions_kind_check;
ALTER TABLE journal_transactions ADD CONSTRAINT journal_transactions_kind_check
  CHECK (kind IN ('grant', 'debit', 'usage', 'adjustment.debit', 'adjustment.credit', 'void', 'expire', 'rollover', 'reversal'));

-- A plan: base fee, credits per period (per customer or per seat), rollover, expiry and cancel rules (JSON).
CREATE TABLE plans (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  name text NOT NULL,
  definition text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, name)
);

CREATE TABLE subscriptions (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  plan_id text NOT NULL,
  seats integer NOT NULL CHECK (seats >= 0),
  -- The most seats granted in the current period: removing then re-adding seats grants nothing.
  granted_seats integer NOT NULL CHECK (granted_seats >= 0),
  started_at timestamptz NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'canceled')),
  canceled_at timestamptz,
  -- The last period renewed, and when the next one starts (what the scheduler looks for).
  renewed_through integer NOT NULL,
  next_renewal_at timestamptz,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, plan_id) REFERENCES plans (tenant_id, id)
);
-- A customer has at most one active subscription: overlapping ones are refused.
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (tenant_id, customer_id) WHERE status = 'active';
CREATE INDEX subscriptions_due ON subscriptions (next_renewal_at) WHERE status = 'active';

-- Each period renews once (invariant 7): its key is the primary key.
CREATE TABLE subscription_renewals (
  tenant_id text NOT NULL,
  key text NOT NULL,
  subscription_id text NOT NULL,
  period_index integer NOT NULL,
  grant_id text,
  renewed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, key)
);
`,
  },
  {
    version: 5,
    name: "gifts",
    sql: /* sql */ `
-- Claimable gift codes: each claim grants the amount (source gift, zero cost basis).
CREATE TABLE gift_codes (
  tenant_id text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  amount numeric(38, 0) NOT NULL CHECK (amount > 0),
  scope text[],
  expires_in_days integer CHECK (expires_in_days > 0),
  max_uses integer NOT NULL CHECK (max_uses > 0),
  uses integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
  ends_at timestamptz,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, code)
);

-- One claim per customer and code; uses are counted under the code's row lock.
CREATE TABLE gift_claims (
  tenant_id text NOT NULL,
  code_id text NOT NULL,
  customer_id text NOT NULL,
  grant_id text NOT NULL,
  claimed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, code_id, customer_id)
);

-- One referral grant per referred customer.
CREATE TABLE referrals (
  tenant_id text NOT NULL,
  customer_id text NOT NULL,
  referrer_customer_id text NOT NULL,
  grant_id text NOT NULL,
  referrer_grant_id text,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, customer_id)
);
`,
  },
  {
    version: 6,
    name: "plan_changes",
    sql: /* sql */ `
-- A downgrade waiting for the period end: the plan the next renewal switches to.
ALTER TABLE subscriptions ADD COLUMN pending_plan_id text;
`,
  },
  {
    version: 7,
    name: "expiry_shortened",
    sql: /* sql */ `
-- A canceled subscription cuts its credits to the period end: a recorded change, like an extension.
ALTER TABLE grant_changes DROP CONSTRAINT grant_changes_kind_check;
ALTER TABLE grant_changes ADD CONSTRAINT grant_changes_kind_check CHECK (kind IN ('expiry_extended', 'expiry_shortened'));
`,
  },
  {
    version: 8,
    name: "member_allocations",
    sql: /* sql */ `
-- A per-member plan's allocation of one period to one member wallet: at most one (invariant 7),
-- whether it came with the period's renewal or when the member's wallet was created.
CREATE TABLE member_allocations (
  tenant_id text NOT NULL,
  subscription_id text NOT NULL,
  period_index integer NOT NULL CHECK (period_index >= 0),
  wallet_id text NOT NULL,
  reason text NOT NULL CHECK (reason IN ('renewal', 'member_added')),
  personal numeric(38, 0) NOT NULL CHECK (personal >= 0),
  pool numeric(38, 0) NOT NULL CHECK (pool >= 0),
  -- The member's own plan grant, and the pool grant holding its share (a renewal's is shared).
  personal_grant_id text,
  pool_grant_id text,
  allocated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, subscription_id, period_index, wallet_id)
);
`,
  },
  {
    version: 9,
    name: "commerce",
    sql: /* sql */ `
-- What credits cost to buy, per currency: each publication is a new version (JSON definition);
-- purchases name the version they were priced by.
CREATE TABLE price_books (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  version integer NOT NULL CHECK (version > 0),
  definition text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, currency, version)
);

-- A customer's committed use: credits committed over a term, in one currency (committed-use discounts).
CREATE TABLE commitments (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  credits numeric(38, 0) NOT NULL CHECK (credits > 0),
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL CHECK (ends_at > starts_at),
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX commitments_by_customer ON commitments (tenant_id, customer_id, currency);

-- A purchase of credits: pending until its payment is confirmed, when its grant is written in
-- the same transaction as the status change (grant_id set exactly when confirmed).
CREATE TABLE purchases (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  wallet_id text NOT NULL,
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  credits numeric(38, 0) NOT NULL CHECK (credits > 0),
  pack_id text,
  list_price numeric(38, 0) NOT NULL CHECK (list_price >= 0),
  discount_percent integer NOT NULL CHECK (discount_percent BETWEEN 0 AND 99),
  price numeric(38, 0) NOT NULL CHECK (price >= 0 AND price <= list_price),
  cost_basis numeric(38, 0) NOT NULL CHECK (cost_basis >= 0),
  price_book_id text NOT NULL,
  expiry text NOT NULL,
  provider text NOT NULL,
  payment_method text,
  provider_reference text,
  status text NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed', 'canceled')),
  failure_reason text,
  origin text NOT NULL CHECK (origin IN ('api', 'auto_top_up')),
  grant_id text,
  created_at timestamptz NOT NULL,
  resolved_at timestamptz,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, wallet_id) REFERENCES wallets (tenant_id, id),
  FOREIGN KEY (tenant_id, price_book_id) REFERENCES price_books (tenant_id, id),
  CHECK ((status = 'confirmed') = (grant_id IS NOT NULL)),
  CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX purchases_by_wallet ON purchases (tenant_id, wallet_id, created_at);
CREATE INDEX purchases_by_customer ON purchases (tenant_id, customer_id, id);
-- At most one auto top-up purchase waits for its payment per wallet.
CREATE UNIQUE INDEX purchases_one_pending_auto ON purchases (tenant_id, wallet_id)
  WHERE origin = 'auto_top_up' AND status = 'pending';

-- A wallet's auto top-up: buys when the balance is below the threshold, within a monthly cap.
CREATE TABLE auto_top_ups (
  tenant_id text NOT NULL,
  wallet_id text NOT NULL,
  threshold numeric(38, 0) NOT NULL CHECK (threshold >= 0),
  buy_kind text NOT NULL CHECK (buy_kind IN ('amount', 'target', 'pack')),
  buy_credits numeric(38, 0) CHECK (buy_credits > 0),
  pack_id text,
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  monthly_cap numeric(38, 0) NOT NULL CHECK (monthly_cap > 0),
  provider text NOT NULL,
  payment_method text,
  enabled boolean NOT NULL,
  disabled_reason text,
  disabled_at timestamptz,
  -- Set when the month's cap stopped a top-up: nothing is tried again before it (the next month).
  capped_until timestamptz,
  -- Top-ups tried so far: the provider's idempotency key of the next is auto_top_up:<wallet>:<attempts + 1>.
  attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, wallet_id),
  FOREIGN KEY (tenant_id, wallet_id) REFERENCES wallets (tenant_id, id),
  CHECK ((buy_kind = 'pack') = (pack_id IS NOT NULL)),
  CHECK ((buy_kind = 'pack') = (buy_credits IS NULL))
);
CREATE INDEX auto_top_ups_enabled ON auto_top_ups (tenant_id) WHERE enabled;
`,
  },
  {
    version: 10,
    name: "contracts",
    sql: /* sql */ `
-- An enterprise contract: committed credits over a term, granted upfront or in installments at a
-- negotiated credit price; its terms (the core's Contract) as JSON, and its rate card terms.
CREATE TABLE contracts (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL CHECK (ends_at > starts_at),
  definition text NOT NULL,
  -- Applied to the customer's pricing when the term starts: the card, the version pinned at
  -- signing (when the vendor may not move the customer to newer versions), override lines.
  rate_card_id text,
  pinned_version_id text,
  overrides text NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'terminated')),
  terminated_at timestamptz,
  on_terminate text CHECK (on_terminate IN ('keep', 'forfeit')),
  -- The last installment issued (-1 before the first), and when the next one falls due.
  issued_through integer NOT NULL DEFAULT -1,
  next_installment_at timestamptz,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, rate_card_id) REFERENCES rate_cards (tenant_id, id),
  FOREIGN KEY (tenant_id, pinned_version_id) REFERENCES rate_card_versions (tenant_id, id),
  CHECK ((status = 'terminated') = (terminated_at IS NOT NULL))
);
CREATE INDEX contracts_customer ON contracts (tenant_id, customer_id, created_at);
CREATE INDEX contracts_due ON contracts (next_installment_at) WHERE next_installment_at IS NOT NULL;

-- Each installment is granted once (invariant 7): its key is the primary key.
CREATE TABLE contract_installments (
  tenant_id text NOT NULL,
  key text NOT NULL,
  contract_id text NOT NULL,
  installment_index integer NOT NULL CHECK (installment_index >= 0),
  amount numeric(38, 0) NOT NULL CHECK (amount >= 0),
  grant_id text,
  issued_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, key),
  UNIQUE (tenant_id, contract_id, installment_index)
);

-- Proof-of-concept allocations: free credits for a window, with the list value they stand for.
CREATE TABLE poc_allocations (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  amount numeric(38, 0) NOT NULL CHECK (amount > 0),
  list_value numeric(38, 0) NOT NULL CHECK (list_value >= 0),
  list_currency text NOT NULL CHECK (list_currency ~ '^[A-Z]{3}$'),
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL CHECK (ends_at > starts_at),
  scope text[],
  grant_id text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  FOREIGN KEY (tenant_id, grant_id) REFERENCES grants (tenant_id, id)
);
CREATE INDEX poc_allocations_customer ON poc_allocations (tenant_id, customer_id, created_at);
`,
  },
  {
    version: 11,
    name: "expiry_policies",
    sql: /* sql */ `
-- The default expiry of grants from one source that name none (purchase, gift, contract...).
CREATE TABLE expiry_policies (
  tenant_id text NOT NULL REFERENCES tenants (id),
  source text NOT NULL,
  policy text NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, source)
);
`,
  },
  {
    version: 12,
    name: "holds",
    sql: /* sql */ `
-- Credits reserved by a wallet's pending holds: its hold account (see core/holds.ts). The
-- balance is grants plus held minus overdraft; available is what the grants can pay now.
ALTER TABLE wallets ADD COLUMN held numeric(38, 0) NOT NULL DEFAULT 0 CHECK (held >= 0);

-- Holds: an estimate reserved until settled, voided or expired; each resolves exactly once.
CREATE TABLE holds (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  wallet_id text NOT NULL,
  subject_id text,
  action text NOT NULL,
  amount numeric(38, 0) NOT NULL CHECK (amount >= 0),
  -- Where the held credits came from, in burn-down order: [{wallet_id, grant_id|null, amount}].
  draws text NOT NULL,
  estimate text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'posted', 'voided', 'expired')),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL CHECK (expires_at > created_at),
  resolved_at timestamptz,
  posted numeric(38, 0) NOT NULL DEFAULT 0 CHECK (posted >= 0),
  released numeric(38, 0) NOT NULL DEFAULT 0 CHECK (released >= 0 AND released <= amount),
  unpaid numeric(38, 0) NOT NULL DEFAULT 0 CHECK (unpaid >= 0),
  transaction_id text,
  resolve_transaction_id text,
  PRIMARY KEY (tenant_id, id),
  CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX holds_wallet ON holds (tenant_id, wallet_id, id);
CREATE INDEX holds_customer ON holds (tenant_id, customer_id, id);
-- The scheduler's search for holds past their timeout.
CREATE INDEX holds_due ON holds (expires_at) WHERE status = 'pending';

-- Events posted by a settlement name their hold.
ALTER TABLE usage_events ADD COLUMN hold_id text;
CREATE INDEX usage_events_hold ON usage_events (tenant_id, hold_id) WHERE hold_id IS NOT NULL;

-- New transaction kinds and the hold account, added to whatever lists the checks hold now
-- (other migrations may have added their own), so no kind or account is lost.
DO $$
DECLARE def text;
BEGIN
  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'journal_transactions'::regclass AND conname = 'journal_transactions_kind_check';
  EXECUTE 'ALTER TABLE journal_transactions DROP CONSTRAINT journal_transactions_kind_check';
  EXECUTE 'ALTER TABLE journal_transactions ADD CONSTRAINT journal_transactions_kind_check '
    || replace(def, 'ARRAY[', 'ARRAY[''hold''::text, ''hold.settle''::text, ''hold.release''::text, ');
  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'journal_entries'::regclass AND conname = 'journal_entries_account_check';
  EXECUTE 'ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_account_check';
  EXECUTE 'ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_account_check '
    || replace(def, 'ARRAY[', 'ARRAY[''hold''::text, ');
END $$;
`,
  },
  {
    version: 13,
    name: "outbox_webhooks_alerts",
    sql: /* sql */ `
-- The outbox: every event a state change causes, written in the change's own transaction.
CREATE TABLE outbox_events (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  type text NOT NULL,
  payload jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id)
);

-- Webhook endpoints; deleted ones stay (soft) so their delivery log keeps its meaning.
CREATE TABLE webhook_endpoints (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  url text NOT NULL,
  description text,
  event_types text[] NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  secret text NOT NULL,
  previous_secret text,
  previous_secret_until timestamptz,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  deleted_at timestamptz,
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_endpoints_live ON webhook_endpoints (tenant_id) WHERE deleted_at IS NULL;

-- One event to one endpoint. A lease (on real time) claims it for one deliverer at a time.
CREATE TABLE webhook_deliveries (
  tenant_id text NOT NULL,
  id text NOT NULL,
  endpoint_id text NOT NULL,
  event_id text NOT NULL,
  event_type text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz,
  leased_until timestamptz,
  lease text,
  last_status_code integer,
  last_error text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (tenant_id, endpoint_id, id);

-- The delivery log: every attempt with its answer.
CREATE TABLE webhook_attempts (
  tenant_id text NOT NULL,
  delivery_id text NOT NULL,
  n integer NOT NULL,
  attempted_at timestamptz NOT NULL,
  status_code integer,
  error text,
  duration_ms integer NOT NULL,
  response text,
  next_attempt_at timestamptz,
  PRIMARY KEY (tenant_id, delivery_id, n)
);

-- A wallet's own alert rules (no row: the defaults).
CREATE TABLE wallet_alert_rules (
  tenant_id text NOT NULL,
  wallet_id text NOT NULL,
  rules jsonb NOT NULL,
  expiring_days integer,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, wallet_id)
);

-- The 100% of "percent remaining": what the wallet had available right after its last credit.
CREATE TABLE alert_references (
  tenant_id text NOT NULL,
  wallet_id text NOT NULL,
  reference numeric(38, 0) NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, wallet_id)
);

-- A rule that fired and has not re-armed (no row: armed).
CREATE TABLE alert_states (
  tenant_id text NOT NULL,
  wallet_id text NOT NULL,
  key text NOT NULL,
  kind text NOT NULL,
  alert_id text NOT NULL,
  fired_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, wallet_id, key)
);

-- Every alert fired.
CREATE TABLE alerts (
  tenant_id text NOT NULL,
  id text NOT NULL,
  wallet_id text NOT NULL,
  customer_id text NOT NULL,
  kind text NOT NULL,
  rule_key text,
  details jsonb NOT NULL,
  event_id text NOT NULL,
  fired_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX alerts_by_wallet ON alerts (tenant_id, wallet_id, id);
CREATE INDEX alerts_by_customer ON alerts (tenant_id, customer_id, id);

-- Expiring-soon notices: once per grant and expiry (a later expiry is a new crossing).
CREATE TABLE alert_expiry_notices (
  tenant_id text NOT NULL,
  grant_id text NOT NULL,
  expires_at timestamptz NOT NULL,
  alert_id text,
  PRIMARY KEY (tenant_id, grant_id, expires_at)
);
`,
  },
  {
    version: 14,
    name: "spend_caps",
    sql: /* sql */ `
-- Spend caps: a limit per UTC day or month on a wallet's chain or a member's or agent's
-- charges, one per target, period and setter (the vendor's and the customer's coexist).
CREATE TABLE spend_caps (
  tenant_id text NOT NULL REFERENCES tenants (id),
  id text NOT NULL,
  customer_id text NOT NULL,
  target_kind text NOT NULL CHECK (target_kind IN ('wallet', 'subject')),
  target_id text NOT NULL,
  period text NOT NULL CHECK (period IN ('day', 'month')),
  limit_amount numeric NOT NULL CHECK (limit_amount >= 0),
  set_by text NOT NULL CHECK (set_by IN ('vendor', 'customer')),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, target_id, period, set_by)
);
CREATE INDEX spend_caps_by_customer ON spend_caps (tenant_id, customer_id, id);

-- What a cap counted in one period: charged credits, and pending holds' reserved room.
-- Written only under the lock of the customer's pool wallet, which every charge holds.
CREATE TABLE spend_cap_counters (
  tenant_id text NOT NULL,
  cap_id text NOT NULL,
  period_start timestamptz NOT NULL,
  spent numeric NOT NULL DEFAULT 0,
  held numeric NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, cap_id, period_start)
);

-- The cap room a pending hold reserved; freed when the hold resolves.
CREATE TABLE spend_cap_holds (
  tenant_id text NOT NULL,
  hold_id text NOT NULL,
  cap_id text NOT NULL,
  period_start timestamptz NOT NULL,
  amount numeric NOT NULL,
  PRIMARY KEY (tenant_id, hold_id, cap_id)
);
`,
  },
  {
    version: 15,
    name: "overage_policies",
    sql: /* sql */ `
-- Overage policies (core/overage.ts): every mode, a soft cap's price per credit, a throttle's
-- rule, and where the wallet's policy came from (set on the wallet, from its plan, default).
ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_overage_mode_check;
ALTER TABLE wallets ADD CONSTRAINT wallets_overage_mode_check
  CHECK (overage_mode IN ('hard_cap', 'soft_cap', 'throttle', 'carry_deficit', 'fair_use'));
ALTER TABLE wallets ADD COLUMN overage_price numeric(38, 0) CHECK (overage_price > 0);
ALTER TABLE wallets ADD COLUMN overage_currency text CHECK (overage_currency ~ '^[A-Z]{3}$');
ALTER TABLE wallets ADD COLUMN overage_throttle jsonb;
ALTER TABLE wallets ADD COLUMN overage_source text NOT NULL DEFAULT 'default'
  CHECK (overage_source IN ('wallet', 'plan', 'default'));
ALTER TABLE wallets ADD CONSTRAINT wallets_overage_price CHECK ((overage_price IS NULL) = (overage_currency IS NULL));

-- Overage invoices: what a wallet owed, billed at its price, moved to overage_receivable by
-- the transaction named. A renewal bills once: its key is unique.
CREATE TABLE overage_invoices (
  tenant_id text NOT NULL,
  id text NOT NULL,
  customer_id text NOT NULL,
  wallet_id text NOT NULL,
  credits numeric(38, 0) NOT NULL CHECK (credits > 0),
  price numeric(38, 0) NOT NULL CHECK (price > 0),
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  amount numeric(38, 0) NOT NULL CHECK (amount >= 0),
  reason text NOT NULL CHECK (reason IN ('renewal', 'on_demand')),
  period_start timestamptz,
  period_end timestamptz NOT NULL,
  renewal_key text,
  transaction_id text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, renewal_key)
);
CREATE INDEX overage_invoices_wallet ON overage_invoices (tenant_id, wallet_id, id);
CREATE INDEX overage_invoices_customer ON overage_invoices (tenant_id, customer_id, id);

-- New transaction kinds and the receivable account, added to whatever lists the checks hold.
DO $$
DECLARE def text;
BEGIN
  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'journal_transactions'::regclass AND conname = 'journal_transactions_kind_check';
  EXECUTE 'ALTER TABLE journal_transactions DROP CONSTRAINT journal_transactions_kind_check';
  EXECUTE 'ALTER TABLE journal_transactions ADD CONSTRAINT journal_transactions_kind_check '
    || replace(def, 'ARRAY[', 'ARRAY[''overage.bill''::text, ''overage.repay''::text, ');
  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
    WHERE conrelid = 'journal_entries'::regclass AND conname = 'journal_entries_account_check';
  EXECUTE 'ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_account_check';
  EXECUTE 'ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_account_check '
    || replace(def, 'ARRAY[', 'ARRAY[''overage_receivable''::text, ');
END $$;
`,
  },
  {
    version: 16,
    name: "durable runs",
    sql: /* sql */ `
-- A run groups the steps of an agent workflow; its id is the run_id of its usage events.
CREATE TABLE runs (
  tenant_id text NOT NULL,
  id text NOT NULL,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  customer_id text NOT NULL,
  subject_id text,
  wallet_id text NOT NULL,
  pool_wallet_id text NOT NULL,
  status text NOT NULL CHECK (status IN ('running', 'suspended', 'completed', 'canceled')),
  suspended_step text,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  ended_at timestamptz,
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX runs_by_customer ON runs (tenant_id, customer_id, seq);

-- Each step under its key, with the fingerprint of its body and of its settle or void.
CREATE TABLE run_steps (
  tenant_id text NOT NULL,
  run_id text NOT NULL,
  key text NOT NULL,
  seq integer NOT NULL,
  fingerprint text NOT NULL,
  action text NOT NULL,
  estimate jsonb NOT NULL,
  hold_timeout_seconds integer NOT NULL,
  status text NOT NULL CHECK (status IN ('held', 'denied', 'settled', 'voided')),
  hold_id text,
  decision text NOT NULL,
  reason text NOT NULL,
  available numeric NOT NULL,
  estimate_credits numeric NOT NULL,
  attempts integer NOT NULL,
  settle_fingerprint text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, run_id, key)
);
CREATE INDEX run_steps_by_seq ON run_steps (tenant_id, run_id, seq);

-- A suspended run, once per wallet of its paying chain: what a new grant there is checked
-- against (one indexed lookup, only when grants are written), until run.resumable is emitted.
CREATE TABLE run_suspensions (
  tenant_id text NOT NULL,
  run_id text NOT NULL,
  wallet_id text NOT NULL,
  step_key text NOT NULL,
  action text NOT NULL,
  estimate numeric NOT NULL,
  suspended_at timestamptz NOT NULL,
  resumable_at timestamptz,
  PRIMARY KEY (tenant_id, run_id, wallet_id)
);
CREATE INDEX run_suspensions_waiting ON run_suspensions (tenant_id, wallet_id) WHERE resumable_at IS NULL;

-- The low-balance soft cap on new runs, per wallet.
CREATE TABLE run_settings (
  tenant_id text NOT NULL,
  wallet_id text NOT NULL,
  run_start_minimum numeric NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, wallet_id)
);
`,
  },
  {
    version: 17,
    name: "contract pricing window",
    sql: /* sql */ `
-- When a customer's override lines are in force, [overrides_from, overrides_until); null
-- bounds are open (pricing set by hand). A contract's overrides are in force over its term,
-- cut short by an early termination; contract_id names the contract that set them.
ALTER TABLE customer_pricing ADD COLUMN contract_id text;
ALTER TABLE customer_pricing ADD COLUMN overrides_from timestamptz;
ALTER TABLE customer_pricing ADD COLUMN overrides_until timestamptz;
-- Pricing a contract applied before this migration (with its first installment, and not set
-- again since) gets the window of the customer's latest started contract; pricing set by hand
-- keeps none.
UPDATE customer_pricing p SET contract_id = c.id, overrides_from = c.starts_at,
  overrides_until = least(c.ends_at, coalesce(c.terminated_at, c.ends_at))
FROM (
  SELECT DISTINCT ON (c.tenant_id, c.customer_id) c.*, i.issued_at FROM contracts c
  JOIN contract_installments i ON i.tenant_id = c.tenant_id AND i.contract_id = c.id AND i.installment_index = 0
  ORDER BY c.tenant_id, c.customer_id, c.starts_at DESC
) c
WHERE c.tenant_id = p.tenant_id AND c.customer_id = p.customer_id AND p.updated_at <= c.issued_at
  AND c.overrides = p.overrides AND c.rate_card_id IS NOT DISTINCT FROM p.rate_card_id
  AND c.pinned_version_id IS NOT DISTINCT FROM p.pinned_version_id;
`,
  },
  {
    version: 18,
    name: "one journal index for wallets and grants",
    sql: /* sql */ `
-- A grant belongs to one wallet, and every query for a grant's entries names both, so one
-- index (wallet, then grant) serves a wallet's entries and a grant's. Every grant entry written
-- (the hot path's most common row) then costs one index entry fewer: inserting 20,000 of them
-- took 385 ms with both indexes and 264 ms with one (docs/benchmarks.md).
DROP INDEX journal_entries_grant;
DROP INDEX journal_entries_wallet;
CREATE INDEX journal_entries_wallet ON journal_entries (tenant_id, wallet_id, grant_id) WHERE wallet_id IS NOT NULL;
`,
  },
  {
    version: 19,
    name: "spend caps with runs and reversals",
    sql: /* sql */ `
-- A run suspended by a spend cap waits for the cap's next period: when the caps short of room
-- start their next period, the scheduler checks the suspension again (null: a new period alone
-- cannot make the step payable; a grant, a raised or deleted cap, or freed room announces it).
ALTER TABLE run_suspensions ADD COLUMN retry_at timestamptz;
CREATE INDEX run_suspensions_retry ON run_suspensions (retry_at) WHERE resumable_at IS NULL AND retry_at IS NOT NULL;

-- What a direct debit counted on each spend cap, and in which period: reversing the debit
-- gives exactly that back (once: the rows go with the reversal, or with their cap).
CREATE TABLE spend_cap_debits (
  tenant_id text NOT NULL,
  transaction_id text NOT NULL,
  cap_id text NOT NULL,
  period_start timestamptz NOT NULL,
  amount numeric NOT NULL CHECK (amount > 0),
  PRIMARY KEY (tenant_id, transaction_id, cap_id)
);
CREATE INDEX spend_cap_debits_by_cap ON spend_cap_debits (tenant_id, cap_id);
`,
  },
  {
    version: 20,
    name: "customer override history",
    sql: /* sql */ `
-- A customer's override history: the override lines in force over each window
-- [starts_at, ends_at) (null bounds open), set by a contract (source: its id) or by hand
-- (source 'manual'). One customer's windows never overlap: the code keeps them apart under the
-- customer's customer_pricing row lock. Rating reads this table, not customer_pricing.overrides
-- (which keeps the terms last set, as set), so an event is rated by the overrides in force at
-- its own time even when it arrives after newer terms were set. seq only names a row.
CREATE TABLE customer_override_terms (
  tenant_id text NOT NULL,
  customer_id text NOT NULL,
  seq integer NOT NULL,
  source text NOT NULL,
  lines text NOT NULL,
  starts_at timestamptz,
  ends_at timestamptz,
  set_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, customer_id, seq),
  FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
  CHECK (starts_at IS NULL OR ends_at IS NULL OR starts_at < ends_at)
);
-- Backfill, first: each customer's current terms become its history's latest entry, with the
-- window they had (migration 17), so every event is rated as before. Terms without lines, or
-- whose window a termination emptied, rate nothing and leave no entry.
INSERT INTO customer_override_terms (tenant_id, customer_id, seq, source, lines, starts_at, ends_at, set_at)
SELECT tenant_id, customer_id, 0, coalesce(contract_id, 'manual'), overrides, overrides_from, overrides_until, updated_at
FROM customer_pricing
WHERE overrides IS NOT NULL AND overrides <> '[]'
  AND (overrides_from IS NULL OR overrides_until IS NULL OR overrides_from < overrides_until);
-- Then the contracts applied before the current one, when that is sound: the current terms are
-- a contract's (terms set by hand replaced every window, so nothing older can be trusted), the
-- earlier contract's pricing was applied (its first installment) before them, and its window
-- (its term, cut by a termination) ends by the current terms' start and overlaps no other
-- candidate's. A late event timed in such a window is then rated by that contract's overrides.
INSERT INTO customer_override_terms (tenant_id, customer_id, seq, source, lines, starts_at, ends_at, set_at)
SELECT c.tenant_id, c.customer_id,
  row_number() OVER (PARTITION BY c.tenant_id, c.customer_id ORDER BY c.starts_at, c.id),
  c.id, c.overrides, c.starts_at, c.window_end, c.issued_at
FROM (
  SELECT x.*, least(x.ends_at, coalesce(x.terminated_at, x.ends_at)) AS window_end, i.issued_at
  FROM contracts x
  JOIN contract_installments i ON i.tenant_id = x.tenant_id AND i.contract_id = x.id AND i.installment_index = 0
) c
JOIN customer_pricing p ON p.tenant_id = c.tenant_id AND p.customer_id = c.customer_id
WHERE p.contract_id IS NOT NULL AND p.overrides_from IS NOT NULL AND c.id <> p.contract_id
  AND c.overrides <> '[]' AND c.starts_at < c.window_end AND c.window_end <= p.overrides_from
  AND c.issued_at <= p.updated_at
  AND NOT EXISTS (
    SELECT 1 FROM contracts o
    JOIN contract_installments oi ON oi.tenant_id = o.tenant_id AND oi.contract_id = o.id AND oi.installment_index = 0
    WHERE o.tenant_id = c.tenant_id AND o.customer_id = c.customer_id AND o.id <> c.id
      AND o.starts_at < c.window_end AND least(o.ends_at, coalesce(o.terminated_at, o.ends_at)) > c.starts_at
  );
`,
  },
  {
    version: 21,
    name: "customer pricing history",
    sql: /* sql */ `
-- The override history becomes the pricing history: each entry of customer_override_terms is the
-- customer's whole pricing over its window, the card (null: the tenant's default) and the pinned
-- version (null: the version in force at the event's time) with the override lines (which may now
-- be '[]'), so an event arriving late is rated by the card, pin and lines of its own time.
-- customer_pricing's card and pin are the base: they price times outside every window.
ALTER TABLE customer_override_terms ADD COLUMN rate_card_id text;
ALTER TABLE customer_override_terms ADD COLUMN pinned_version_id text;
ALTER TABLE customer_override_terms ADD FOREIGN KEY (tenant_id, rate_card_id) REFERENCES rate_cards (tenant_id, id);
ALTER TABLE customer_override_terms ADD FOREIGN KEY (tenant_id, pinned_version_id) REFERENCES rate_card_versions (tenant_id, id);
-- Backfill. A contract's entries get the contract's own card and pin: what its term's start set,
-- so the events recorded during its term were rated by them.
UPDATE customer_override_terms t SET rate_card_id = c.rate_card_id, pinned_version_id = c.pinned_version_id
FROM contracts c
WHERE c.tenant_id = t.tenant_id AND c.customer_id = t.customer_id AND c.id = t.source;
-- Entries set by hand get the customer's current card and pin: each request set them, but only
-- the last one's are kept, so an earlier request's are lost. The current ones are what rated
-- events in those windows until now, so nothing rates differently there.
UPDATE customer_override_terms t SET rate_card_id = p.rate_card_id, pinned_version_id = p.pinned_version_id
FROM customer_pricing p
WHERE p.tenant_id = t.tenant_id AND p.customer_id = t.customer_id AND t.source = 'manual';
`,
  },
  {
    version: 22,
    name: "event currencies",
    sql: /* sql */ `
-- The currencies of an event's revenue (its first paid grant's) and cost (its cost table's), as
-- columns, so reports sum money per currency without reading each row's detail. Nullable with
-- no default: adding them rewrites nothing. Rows recorded before keep them in their detail,
-- where the reports read them (see EVENT_REVENUE_CURRENCY in ingest.ts).
ALTER TABLE usage_events ADD COLUMN revenue_currency text, ADD COLUMN cost_currency text;
`,
  },
  {
    version: 23,
    name: "auto top-ups charged outside transactions",
    sql: /* sql */ `
-- An auto top-up's purchase is written (pending, awaiting its charge, with the key its provider is
-- asked with) and committed before the provider is called, so no wallet lock is held during the
-- call; the answer is recorded in a transaction of its own. One left awaiting (a crash, a provider
-- that did not answer) is charged again by the scheduler with the same key. Purchases made before
-- were charged in their own transaction: none awaits.
ALTER TABLE purchases ADD COLUMN awaiting_charge boolean NOT NULL DEFAULT false;
ALTER TABLE purchases ADD COLUMN provider_key text;
ALTER TABLE purchases ADD CONSTRAINT purchases_awaiting_charge
  CHECK (NOT awaiting_charge OR (status = 'pending' AND provider_key IS NOT NULL));
CREATE INDEX purchases_awaiting ON purchases (tenant_id, created_at) WHERE awaiting_charge;
`,
  },
  {
    version: 24,
    name: "event revenue in several currencies",
    sql: /* sql */ `
-- An event that draws paid credits in several currencies keeps each currency's revenue apart:
-- revenue and revenue_currency are the first paid currency drawn, revenue_extra the others, as
-- JSON [{"currency": "USD", "amount": "<units>"}]; null (the usual case) when there are none.
-- Rows recorded before added such revenue into the first currency; they are left as they are.
ALTER TABLE usage_events ADD COLUMN revenue_extra text;
`,
  },
];

/** Thrown when the database's schema is newer than this build knows. */
export class SchemaTooNew extends Error {
  override name = "SchemaTooNew";
}

const LOCK = "SELECT pg_advisory_xact_lock(hashtext('drawdown.migrate:' || current_schema()))";
const TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`;

/**
 * Applies every pending migration in one transaction, under an advisory lock keyed by the
 * schema, so two migrators at once never collide: the second waits, then finds nothing to do.
 * Returns the versions it applied.
 */
export async function migrate(
  db: SqlClient,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number[]> {
  return db.transaction(async (tx) => {
    await tx.query(LOCK);
    await tx.query(TABLE);
    const { rows } = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const done = new Set(rows.map((r) => Number(r.version)));
    const latest = Math.max(0, ...migrations.map((m) => m.version));
    if ([...done].some((v) => v > latest)) {
      throw new SchemaTooNew(`The database has migrations newer than ${latest}; upgrade Drawdown.`);
    }
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      // Statements one by one: the extended protocol of both drivers takes one statement at a time.
      for (const statement of splitStatements(m.sql)) await tx.query(statement);
      await tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      applied.push(m.version);
    }
    return applied;
  });
}

/** Versions not yet applied (empty when the schema is current). */
export async function pendingMigrations(
  db: SqlClient,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number[]> {
  const exists = await db.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (!exists.rows[0]?.t) return migrations.map((m) => m.version);
  const { rows } = await db.query<{ version: number }>("SELECT version FROM schema_migrations");
  const done = new Set(rows.map((r) => Number(r.version)));
  const latest = Math.max(0, ...migrations.map((m) => m.version));
  if ([...done].some((v) => v > latest)) {
    throw new SchemaTooNew(`The database has migrations newer than ${latest}; upgrade Drawdown.`);
  }
  return migrations.map((m) => m.version).filter((v) => !done.has(v));
}

/** Splits a migration script on semicolons at line ends, keeping `$$` bodies whole. */
export function splitStatements(script: string): string[] {
  const out: string[] = [];
  let current = "";
  let inBody = false;
  for (const line of script.split("\n")) {
    if (line.trim().startsWith("--") && !inBody) continue;
    current += line + "\n";
    if ((line.match(/\$\$/g) ?? []).length % 2 === 1) inBody = !inBody;
    if (!inBody && line.trimEnd().endsWith(";")) {
      out.push(current.trim());
      current = "";
    }
  }
  if (current.trim()) out.push(current.trim());
  return out;
}
