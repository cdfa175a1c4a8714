import { checkSuspension, type DrawSource, formatAmount, type SuspensionCheck } from "@drawdown/core";
import { loadCapState } from "./caps.js";
import { overageColumnsOf, overagePolicyFrom } from "./overage.js";
import { toGrant } from "./records.js";
import type { Row, SqlExecutor } from "./sql.js";
import type { DueJob, Store } from "./store.js";

/**
 * `run.resumable`: when a suspended run's step can be paid again, announced once per
 * suspension. A step is suspended for lack of credits or by a spend cap (core/runs.ts), so it
 * is checked again whenever either may have changed:
 *
 * - credits came back to a wallet of its chain (a grant, or credits given back to a grant: a
 *   hold voided, expired or settled below its estimate, a reversal): `Store.writeEffect` calls
 *   {@link announceResumableRuns} with the wallets credited. One indexed lookup
 *   (`run_suspensions_waiting`) finds the suspended runs those wallets pay for; it finds nothing
 *   almost always, and usage writes (which issue no grants) never reach it;
 * - cap room grew (a hold resolved below its reservation, a reversal, a limit changed, a cap
 *   deleted): caps.ts calls it with the customer's pool wallet, which every suspension has a
 *   row for;
 * - a cap's period rolled over: each suspension keeps `retry_at`, when the caps short of room
 *   start their next period ({@link SuspensionCheck.retryAt}), and the scheduler
 *   ({@link CapPeriodResumes}) checks it again then.
 *
 * The check is authorize's, without a hold: eligible grants plus the soft cap's room, narrowed
 * by the spend caps' room, against the step's estimate. When it covers it, `run.resumable` is
 * emitted and the suspension is marked; otherwise `retry_at` is set again.
 *
 * Why no lock on the run: every caller holds the lock of the run's pool wallet (the writer of
 * a credited wallet locks its pool too; caps are changed under it; the scheduler takes it), and
 * a suspension row is only written under it (every chain ends in the pool), so this never waits
 * on a run and cannot deadlock with a step that holds its run and waits for the wallets.
 */

/** A suspended run and its suspended step, as a check needs them. */
interface Suspended {
  readonly runId: string;
  readonly customerId: string;
  readonly subjectId: string | null;
  readonly walletId: string;
  readonly poolWalletId: string;
  readonly step: string;
  readonly action: string;
  readonly estimate: bigint;
}

const iso = (t: number): string => new Date(t).toISOString();

const SUSPENDED_SELECT = `SELECT DISTINCT s.run_id, s.step_key, s.action, s.estimate::text AS estimate,
    r.customer_id, r.subject_id, r.wallet_id, r.pool_wallet_id
  FROM run_suspensions s JOIN runs r ON r.tenant_id = s.tenant_id AND r.id = s.run_id`;

const toSuspended = (r: Row): Suspended => ({
  runId: String(r.run_id),
  customerId: String(r.customer_id),
  subjectId: r.subject_id === null ? null : String(r.subject_id),
  walletId: String(r.wallet_id),
  poolWalletId: String(r.pool_wallet_id),
  step: String(r.step_key),
  action: String(r.action),
  estimate: BigInt(String(r.estimate)),
});

/**
 * Checks a run's step against what its chain and the spend caps allow now, as authorize would
 * (core `checkSuspension`). The caller holds the run's pool lock.
 */
export async function assessSuspension(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  run: {
    readonly customerId: string;
    readonly subjectId: string | null;
    readonly walletId: string;
    readonly poolWalletId: string;
  },
  step: { readonly action: string; readonly estimate: bigint },
): Promise<SuspensionCheck> {
  const now = store.now(tenantId);
  const chain = [...new Set([run.walletId, run.poolWalletId])];
  const pool = await ex.query(
    `SELECT ${overageColumnsOf("p")} FROM wallets p WHERE p.tenant_id = $1 AND p.id = $2`,
    [tenantId, run.poolWalletId],
  );
  const grants = await ex.query(
    "SELECT * FROM grants WHERE tenant_id = $1 AND wallet_id = ANY($2::text[]) AND status = 'active' AND remaining > 0",
    [tenantId, chain],
  );
  const all = grants.rows.map(toGrant);
  const sources: DrawSource[] = chain.map((walletId) => ({
    walletId,
    grants: all.filter((g) => g.walletId === walletId),
  }));
  const caps = await loadCapState(ex, tenantId, [run.customerId], [now]);
  const row = pool.rows[0]!;
  return checkSuspension(
    {
      sources,
      poolWalletId: run.poolWalletId,
      overdraft: BigInt(String(row.overdraft)),
      policy: overagePolicyFrom(row),
      ...(caps ? { caps } : {}),
    },
    { subjectId: run.subjectId, action: step.action, estimate: step.estimate },
    now,
  );
}

/**
 * Announces a suspended run when its step can be paid now (once: the guarded update marks the
 * suspension), else records when to look again. True when something changed.
 */
async function recheck(ex: SqlExecutor, store: Store, tenantId: string, s: Suspended): Promise<boolean> {
  const check = await assessSuspension(ex, store, tenantId, s, s);
  if (!check.payable) {
    const moved = await ex.query(
      `UPDATE run_suspensions SET retry_at = $3 WHERE tenant_id = $1 AND run_id = $2 AND resumable_at IS NULL
         AND retry_at IS DISTINCT FROM $3::timestamptz`,
      [tenantId, s.runId, check.retryAt === null ? null : iso(check.retryAt)],
    );
    return moved.rowCount > 0;
  }
  const marked = await ex.query(
    `UPDATE run_suspensions SET resumable_at = $3, retry_at = NULL
     WHERE tenant_id = $1 AND run_id = $2 AND resumable_at IS NULL`,
    [tenantId, s.runId, iso(store.now(tenantId))],
  );
  if (marked.rowCount === 0) return false;
  await store.emit(ex, tenantId, "run.resumable", {
    run_id: s.runId,
    customer_id: s.customerId,
    subject_id: s.subjectId,
    wallet_id: s.walletId,
    step: s.step,
    action: s.action,
    estimate: formatAmount(s.estimate),
    available: formatAmount(check.available),
  });
  return true;
}

/**
 * Checks the suspended runs these wallets pay for (not yet announced) and announces those whose
 * step can now be paid, in the caller's transaction, which holds the wallets' pool locks.
 */
export async function announceResumableRuns(
  ex: SqlExecutor,
  store: Store,
  tenantId: string,
  walletIds: readonly string[],
): Promise<void> {
  const { rows } = await ex.query(
    `${SUSPENDED_SELECT} WHERE s.tenant_id = $1 AND s.wallet_id = ANY($2::text[]) AND s.resumable_at IS NULL`,
    [tenantId, walletIds],
  );
  for (const r of rows) await recheck(ex, store, tenantId, toSuspended(r));
}

/**
 * The scheduler's half (a job of the store's scheduler and test clock): a suspension whose
 * `retry_at` came (a spend cap short of room started its next period) is checked again, each
 * in its own transaction under its pool's lock, so several instances announce it once; what
 * came due while no instance ran is caught up.
 */
export class CapPeriodResumes implements DueJob {
  constructor(private readonly store: Store) {
    store.addDueJob(this);
  }

  /** The earliest `retry_at` at or before `upTo` of a tenant's waiting suspensions (the test clock stops there). */
  async nextDue(tenantId: string, upTo: number): Promise<number | null> {
    const { rows } = await this.store.db.query<{ at: unknown }>(
      `SELECT min(retry_at) AS at FROM run_suspensions
       WHERE tenant_id = $1 AND resumable_at IS NULL AND retry_at <= $2`,
      [tenantId, iso(upTo)],
    );
    const at = rows[0]?.at;
    return at === null || at === undefined ? null : new Date(at as string).getTime();
  }

  /** Checks every suspension due (each tenant by its own clock); returns the runs announced resumable or rescheduled. */
  async run(tenantId: string | null): Promise<number> {
    let moved = 0;
    for (;;) {
      const { rows } = await this.store.db.query(
        `SELECT DISTINCT s.tenant_id, s.run_id, s.retry_at FROM run_suspensions s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.resumable_at IS NULL AND s.retry_at <= coalesce(t.clock_at, $1::timestamptz)
           AND ($2::text IS NULL OR s.tenant_id = $2)
         ORDER BY s.retry_at, s.run_id LIMIT 100`,
        [iso(this.store.now()), tenantId],
      );
      const before = moved;
      for (const r of rows) {
        const tenant = String(r.tenant_id);
        await this.store.clockOf(tenant);
        const done = await this.store.db.transaction(async (tx) => {
          const run = await tx.query("SELECT pool_wallet_id FROM runs WHERE tenant_id = $1 AND id = $2", [
            tenant,
            String(r.run_id),
          ]);
          if (!run.rows[0]) return false;
          await tx.query("SELECT id FROM wallets WHERE tenant_id = $1 AND id = $2 FOR UPDATE", [
            tenant,
            String(run.rows[0].pool_wallet_id),
          ]);
          // Read again under the lock: another instance may have checked it meanwhile.
          const due = await tx.query(
            `${SUSPENDED_SELECT} WHERE s.tenant_id = $1 AND s.run_id = $2 AND s.resumable_at IS NULL AND s.retry_at <= $3`,
            [tenant, String(r.run_id), iso(this.store.now(tenant))],
          );
          const found = due.rows[0];
          return found ? recheck(tx, this.store, tenant, toSuspended(found)) : false;
        });
        if (done) moved++;
      }
      // Stop at the last page, or when nothing moved (another instance took them).
      if (rows.length < 100 || moved === before) return moved;
    }
  }
}
