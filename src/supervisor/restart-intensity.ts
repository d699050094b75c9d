/**
 * OTP-style restart intensity: at most `maxRestarts` within `withinMs`. A
 * supervisor records every failure it is about to remedy; once the limit is
 * passed, the remedy has failed too often and the next tier takes over.
 */
import type { Clock } from "../clock.js";

/** A sliding window of failure times. */
export class RestartIntensity {
  private readonly times: number[] = [];

  constructor(
    readonly maxRestarts: number,
    readonly withinMs: number,
    private readonly clock: Clock,
  ) {}

  /** Records a failure now; true while the failures in the window stay within the limit. */
  allow(): boolean {
    const now = this.clock.now();
    this.times.push(now);
    while (this.times.length > 0 && now - this.times[0]! > this.withinMs) this.times.shift();
    return this.times.length <= this.maxRestarts;
  }

  /** Failures inside the window now. */
  get recent(): number {
    const now = this.clock.now();
    return this.times.filter((t) => now - t <= this.withinMs).length;
  }

  reset(): void {
    this.times.length = 0;
  }
}
