/**
 * A discrete-event clock: timers sit in a priority queue ordered by (due time, order of
 * creation), and {@link EventClock.run} jumps from one to the next. It has the shape of
 * XState's `Clock` (and clawfleet's), so the real machines, created with `{ clock }`,
 * run their delays (`after`, the reserved window, retry backoff) on simulated time.
 *
 * XState delivers a promise actor's result in a microtask, so after every timer the run
 * loop lets the microtask queue drain (one `setImmediate`) before it moves time on: a
 * promise resolved at simulated time t is seen by its parent at t, before anything at a
 * later time happens. Nothing here reads the wall clock, so a run is deterministic.
 */
import type { Clock } from "../clock.js";

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly fn: (...args: unknown[]) => void;
  cancelled: boolean;
}

/** When simulated time 0 is, as a wall-clock date (only for ISO strings in records). */
export const SIM_EPOCH_MS = Date.UTC(2030, 0, 1);

const before = (a: Timer, b: Timer) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

/** The discrete-event clock of one simulation run. */
export class EventClock implements Clock {
  private readonly heap: Timer[] = [];
  private t = 0;
  private seq = 0;
  private live = 0;
  /** Timers fired so far. */
  events = 0;

  /** Absolute time (ms since the epoch), as XState and the runtime expect. */
  now(): number {
    return SIM_EPOCH_MS + this.t;
  }

  /** Simulated milliseconds since the start of the run. */
  elapsed(): number {
    return this.t;
  }

  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown {
    const timer: Timer = {
      at: this.t + Math.max(0, Number.isFinite(timeout) ? timeout : 0),
      seq: this.seq++,
      fn,
      cancelled: false,
    };
    this.push(timer);
    this.live++;
    return timer;
  }

  clearTimeout(id: unknown): void {
    const timer = id as Timer | undefined;
    if (timer && !timer.cancelled) {
      timer.cancelled = true;
      this.live--;
    }
  }

  /** Schedules `fn` at simulated time `at` (ms since the start of the run). */
  at(at: number, fn: () => void): unknown {
    return this.setTimeout(fn, at - this.t);
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.live;
  }

  /**
   * Fires timers in order until `done()` holds, nothing is left, or the next timer is due
   * after `endAt`; microtasks drain after each one. Time stays at the last timer fired.
   * `advanced` (for progress reports) sees the time after each timer; it must not schedule
   * timers, or the run would differ from one without it.
   */
  async run(
    endAt: number,
    done: () => boolean,
    advanced?: (elapsedMs: number) => void,
  ): Promise<void> {
    await drainMicrotasks();
    while (!done()) {
      const next = this.pop();
      if (next === undefined) return;
      if (next.at > endAt) {
        this.push(next);
        return;
      }
      this.live--;
      this.t = next.at;
      this.events++;
      next.fn();
      await drainMicrotasks();
      advanced?.(this.t);
    }
  }

  private pop(): Timer | undefined {
    const heap = this.heap;
    while (heap.length > 0) {
      const top = heap[0]!;
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        this.siftDown(0);
      }
      if (!top.cancelled) return top;
    }
    return undefined;
  }

  private push(timer: Timer): void {
    const heap = this.heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  }
}

/** Resolves once every microtask queued so far (and those they queue) has run. */
function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
