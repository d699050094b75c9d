/**
 * Measuring tools shared by benches: latency histograms (HdrHistogram, microsecond
 * resolution), a bounded-concurrency driver, and a table of completions that arrive
 * on one subscription and are awaited by id.
 */
import { build, type Histogram } from "hdr-histogram-js";

/** Latency percentiles in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Latencies recorded in microseconds, reported in milliseconds. */
export class LatencyRecorder {
  private readonly histogram: Histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000, // one hour in µs
    numberOfSignificantValueDigits: 3,
  });

  /** Records one latency given in milliseconds (from `performance.now()` differences). */
  record(ms: number): void {
    this.histogram.recordValue(Math.max(1, Math.round(ms * 1000)));
  }

  /** Times `fn` and records its duration. */
  async time<T>(fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const value = await fn();
    this.record(performance.now() - t0);
    return value;
  }

  summary(): LatencySummary {
    const h = this.histogram;
    const ms = (us: number) => round(us / 1000, 3);
    // Percentiles are the highest value of their bucket (≤ 0.1 % above); never above max.
    const at = (p: number) => ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
    return {
      count: h.totalCount,
      p50: at(50),
      p90: at(90),
      p99: at(99),
      max: ms(h.maxValue),
      mean: ms(h.mean),
    };
  }
}

/**
 * Calls `one(i)` for i in [0, count) with at most `window` calls in flight; resolves with
 * the elapsed milliseconds from the first call to the last completion. Stops starting new
 * calls after the first failure, and rethrows it.
 */
export async function runWindowed(
  count: number,
  window: number,
  one: (i: number) => Promise<void>,
): Promise<number> {
  let next = 0;
  let failed = false;
  const lane = async () => {
    while (!failed && next < count) {
      const i = next++;
      try {
        await one(i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(window, count) }, lane));
  return performance.now() - t0;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: Error };
type Waiter<T> = { resolve(value: T): void; reject(error: Error): void; timer: NodeJS.Timeout };

/**
 * Outcomes keyed by id, settled by a listener and awaited by whoever submitted the id.
 * An outcome may arrive before its waiter (a fast result can beat the submit's reply):
 * it is kept until awaited.
 */
export class Completions<T> {
  private readonly early = new Map<string, Settled<T>>();
  private readonly waiting = new Map<string, Waiter<T>>();

  settle(id: string, value: T): void {
    this.deliver(id, { ok: true, value });
  }

  fail(id: string, error: Error): void {
    this.deliver(id, { ok: false, error });
  }

  /** The outcome of `id`; rejects on failure or after `timeoutMs`. */
  wait(id: string, timeoutMs: number): Promise<T> {
    const done = this.early.get(id);
    if (done !== undefined) {
      this.early.delete(id);
      return done.ok ? Promise.resolve(done.value) : Promise.reject(done.error);
    }
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${id} did not complete within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
    });
  }

  private deliver(id: string, outcome: Settled<T>): void {
    const waiter = this.waiting.get(id);
    if (waiter === undefined) {
      this.early.set(id, outcome);
      return;
    }
    this.waiting.delete(id);
    clearTimeout(waiter.timer);
    if (outcome.ok) waiter.resolve(outcome.value);
    else waiter.reject(outcome.error);
  }
}

/** Rounds to `digits` decimals. */
export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
