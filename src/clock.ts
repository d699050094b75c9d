/**
 * Time as an injectable dependency. The shape matches XState's `Clock`, so one
 * object drives both machine timers and the runtime's own timers, and tests can
 * use XState's `SimulatedClock` to move time by hand.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown;
  clearTimeout(id: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, timeout) => setTimeout(fn, timeout),
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

/** ISO-8601 time of `clock.now()`. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}

/**
 * Runs `fn` every `ms` on `clock` until the returned function is called.
 * Built on `setTimeout` so simulated clocks (which have no intervals) work too.
 */
export function every(clock: Clock, ms: number, fn: () => void): () => void {
  let stopped = false;
  let handle: unknown;
  const tick = () => {
    if (stopped) return;
    handle = clock.setTimeout(() => {
      if (stopped) return;
      fn();
      tick();
    }, ms);
  };
  tick();
  return () => {
    stopped = true;
    clock.clearTimeout(handle);
  };
}
