/**
 * OTP-style restart intensity: at most `maxRestarts` within `withinMs`. A
 * supervisor asks before every restart it is about to do; once the limit is
 * reached, the remedy has failed too often and the next tier takes over.
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

  /**
   * Asks to restart now: true (and counted) while fewer than `maxRestarts` restarts
   * happened within the window; false once the limit is reached (not counted: that
   * restart does not happen, the next tier takes over).
   */
  allow(): boolean {
    const now = this.clock.now();
    while (this.times.length > 0 && now - this.times[0]! > this.withinMs) this.times.shift();
    if (this.times.length >= this.maxRestarts) return false;
    this.times.push(now);
    return true;
  }

  /** Restarts inside the window now. */
  get recent(): number {
    const now = this.clock.now();
    return this.times.filter((t) => now - t <= this.withinMs).length;
  }

  reset(): void {
    this.times.length = 0;
  }
}
