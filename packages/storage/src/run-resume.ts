import { type DrawSource, drawable, formatAmount, overdraftRoom } from "@drawdown/core";
import { overageColumnsOf, overagePolicyFrom } from "./overage.js";
import { toGrant } from "./records.js";
import type { SqlExecutor } from "./sql.js";
import type { Store } from "./store.js";

/**
 * The `run.resumable` hook of the write pipeline: called by `Store.writeEffect` when an effect
 * issues grants, in its transaction, with the wallets credited. One indexed lookup
 * (`run_suspensions_waiting`) finds the suspended runs those wallets pay for; it finds nothing
 * almost always, and usage writes (which issue no grants) never reach it. For each run found,
 * what its chain can now pay for the suspended step's action is computed as authorize would
 * (eligible grants plus the soft cap's room); when it covers the step's estimate,
 * `run.resumable` is emitted and the suspension is marked, so it is emitted once per suspension.
 *
 * Why no lock on the run: the writer already holds the credited wallet's lock, and a suspension
 * row is only written under its chain's pool lock (every chain ends in the pool, and a
 * member-wallet write locks the pool too), so this never waits on a run and cannot deadlock
 * with a step that holds its run and waits for the wallets.
 */
export async function announceResumableRuns(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  walletIds: readonly string[],
): Promise<void> {
  const { rows } = await ex.query(
    `SELECT DISTINCT run_id, step_key, action, estimate::text AS estimate FROM run_suspensions
     WHERE tenant_id = $1 AND wallet_id = ANY($2::text[]) AND resumable_at IS NULL`,
    [tenantId, walletIds],
  );
  if (rows.length === 0) return;
  const now = store.now(tenantId);
  for (const r of rows) {
    const runId = String(r.run_id);
    const run = await ex.query(
      `SELECT r.customer_id, r.subject_id, r.wallet_id, r.pool_wallet_id, ${overageColumnsOf("p")}
       FROM runs r JOIN wallets p ON p.tenant_id = r.tenant_id AND p.id = r.pool_wallet_id
       WHERE r.tenant_id = $1 AND r.id = $2`,
      [tenantId, runId],
    );
    const row = run.rows[0];
    if (!row) continue;
    const chain = [...new Set([String(row.wallet_id), String(row.pool_wallet_id)])];
    const grants = await ex.query(
      "SELECT * FROM grants WHERE tenant_id = $1 AND wallet_id = ANY($2::text[]) AND status = 'active' AND remaining > 0",
      [tenantId, chain],
    );
    const all = grants.rows.map(toGrant);
    const sources: DrawSource[] = chain.map((walletId) => ({
      walletId,
      grants: all.filter((g) => g.walletId === walletId),
    }));
    const policy = overagePolicyFrom(row);
    const available =
      drawable(sources, String(r.action), now) +
      overdraftRoom({ overdraft: BigInt(String(row.overdraft)), policy });
    const estimate = BigInt(String(r.estimate));
    if (available < estimate) continue;
    await ex.query(
      "UPDATE run_suspensions SET resumable_at = $3 WHERE tenant_id = $1 AND run_id = $2 AND resumable_at IS NULL",
      [tenantId, runId, new Date(now).toISOString()],
    );
    await store.emit(ex, tenantId, "run.resumable", {
      run_id: runId,
      customer_id: String(row.customer_id),
      subject_id: row.subject_id === null ? null : String(row.subject_id),
      wallet_id: String(row.wallet_id),
      step: String(r.step_key),
      action: String(r.action),
      estimate: formatAmount(estimate),
      available: formatAmount(available),
    });
  }
}
