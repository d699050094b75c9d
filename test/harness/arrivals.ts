/**
 * Waiting in chaos tests: items that arrive over time ({@link Arrivals}), a bound
 * on any promise ({@link withTimeout}) and a retry loop for requests that fail
 * while nats-server (re)starts ({@link retrying}). Every wait is bounded and fails
 * with a message naming what it waited for.
 */

/** Default bound of every wait, well under the per-file budget. */
export const WAIT_MS = 20_000;

/** Items that arrive over time, and waits for the first one that matches. */
export class Arrivals<T> {
  readonly items: T[] = [];
  private readonly waiters = new Set<{ match: (t: T) => boolean; resolve: (t: T) => void }>();

  push(item: T): void {
    this.items.push(item);
    for (const w of [...this.waiters]) {
      if (w.match(item)) {
        this.waiters.delete(w);
        w.resolve(item);
      }
    }
  }

  /**
   * The first item (already arrived or still to come) that `match` accepts;
   * rejects after `timeoutMs`, or at once when `signal` aborts (the caller lost interest).
   */
  waitFor(
    match: (t: T) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
    signal?: AbortSignal,
  ): Promise<T> {
    const found = this.items.find(match);
    if (found !== undefined) return Promise.resolve(found);
    const waiter = { match, resolve: (_: T) => {} };
    let onAbort = () => {};
    const arrived = new Promise<T>((resolve, reject) => {
      waiter.resolve = resolve;
      this.waiters.add(waiter);
      onAbort = () => reject(new Error(`stopped waiting for ${what}`));
      if (signal?.aborted) onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    return withTimeout(arrived, timeoutMs, what).finally(() => {
      this.waiters.delete(waiter);
      signal?.removeEventListener("abort", onAbort);
    });
  }
}

/** Rejects with a message naming `what` when `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs `fn` until it succeeds, backing off from 25 ms to 400 ms, for at most
 * `timeoutMs`: for requests that fail while nats-server (re)starts.
 */
export async function retrying<T>(
  fn: () => Promise<T>,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 25; ; delay = Math.min(delay * 2, 400)) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() + delay > deadline) {
        throw new Error(`gave up on ${what} after ${timeoutMs} ms: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
