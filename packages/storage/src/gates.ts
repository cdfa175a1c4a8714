/**
 * Work queued per key, run one after another off the caller's path: the writers queue a
 * customer's requests behind its auto top-up (bought with no transaction open), so that they
 * see what it bought, in arrival order, while other customers' requests go on.
 */
export class Gates {
  readonly #tails = new Map<string, Promise<void>>();

  get size(): number {
    return this.#tails.size;
  }

  has(key: string): boolean {
    return this.#tails.has(key);
  }

  /** Runs `work` after the work queued under `key` (which handles its own failures). */
  after(key: string, work: () => Promise<void>): void {
    const next = (this.#tails.get(key) ?? Promise.resolve()).then(work).catch(() => undefined);
    this.#tails.set(key, next);
    void next.then(() => {
      if (this.#tails.get(key) === next) this.#tails.delete(key);
    });
  }
}

/** A writer's gate key: one per tenant and customer. */
export const gateKey = (tenantId: string, customerId: string): string => `${tenantId}\n${customerId}`;
