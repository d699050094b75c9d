/**
 * The simulated users: a seeded, deterministic chat workload.
 *
 * Each user is one session with a state size. A user talks in bursts: a message, the
 * agent's turn, then reading the reply and thinking before the follow-up; after a burst
 * the user takes a short break or, now and then, goes quiet for hours and comes back.
 * Every draw comes from a per-user PRNG (mulberry32 seeded from the run's seed and the
 * user's number), so adding users leaves the others' rhythm unchanged.
 *
 * The workload is open-loop: arrival times and turn durations are drawn up front and do
 * not depend on the policy, so every policy serves exactly the same messages. A user's
 * follow-up is timed from when the reply would come with no waiting (arrival + turn +
 * think); when the fleet is slower the follow-up queues behind the session's running task.
 */
import type { ResolvedSimOptions } from "./sim-options.js";

/** A PRNG returning floats in [0, 1). */
export type Random = () => number;

/** mulberry32: a small, fast, well-mixed 32-bit PRNG. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a hash of a string, 32 bits. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A standard normal draw (Box–Muller). */
export function normal(rand: Random): number {
  const u = 1 - rand(); // (0, 1]
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A log-normal draw with the given median and sigma, clamped to [min, max]. */
export function logNormal(
  rand: Random,
  median: number,
  sigma: number,
  min: number,
  max: number,
): number {
  return Math.min(max, Math.max(min, median * Math.exp(sigma * normal(rand))));
}

/** Uniform in [min, max). */
export function uniform(rand: Random, min: number, max: number): number {
  return min + (max - min) * rand();
}

/** Log-uniform in [min, max): as likely to be 1–2 h as 2–4 h. */
export function logUniform(rand: Random, min: number, max: number): number {
  if (min <= 0 || max <= min) return uniform(rand, min, max);
  return Math.exp(uniform(rand, Math.log(min), Math.log(max)));
}

/** Geometric on {1, 2, …} with the given mean, capped. */
export function geometric(rand: Random, mean: number, cap: number): number {
  if (mean <= 1) return 1;
  const p = 1 / mean;
  const n = 1 + Math.floor(Math.log(1 - rand()) / Math.log(1 - p));
  return Math.min(cap, n);
}

/** One user's session. */
export interface SimSession {
  readonly tenant: string;
  readonly session: string;
  /** Size of the session's state (what a restore has to load). */
  readonly stateMB: number;
}

/** One message: a task to submit at `at`, whose turn takes `turnMs`. */
export interface SimMessage {
  readonly taskId: string;
  readonly tenant: string;
  readonly session: string;
  /** 0 for the session's first message; follow-ups are 1, 2, … */
  readonly index: number;
  /** Submit time, ms since the start of the run. */
  readonly at: number;
  readonly turnMs: number;
}

/** Every session and message of a run, messages in submit order. */
export interface Workload {
  readonly sessions: readonly SimSession[];
  readonly messages: readonly SimMessage[];
}

const TENANT = "sim";
const MAX_BURST = 50;

/** Draws the workload of `options` (users, rhythm, sizes, durations) from its seed. */
export function generateWorkload(o: ResolvedSimOptions): Workload {
  const sessions: SimSession[] = [];
  const messages: SimMessage[] = [];
  const width = String(o.users - 1).length;
  for (let u = 0; u < o.users; u++) {
    const rand = mulberry32(fnv1a(`${o.seed}/${u}`));
    const session = `u${String(u).padStart(width, "0")}`;
    const stateMB = Math.round(logNormal(rand, o.stateMedianMB, o.stateSigma, 1, o.stateMaxMB));
    sessions.push({ tenant: TENANT, session, stateMB });
    let t = Math.floor(uniform(rand, 0, o.rampMs));
    let index = 0;
    while (t < o.horizonMs) {
      const burst = geometric(rand, o.burstMean, MAX_BURST);
      for (let i = 0; i < burst && t < o.horizonMs; i++) {
        const turnMs = Math.round(
          logNormal(rand, o.turnMedianMs, o.turnSigma, o.turnMinMs, o.turnMaxMs),
        );
        messages.push({
          taskId: `${session}-m${String(index).padStart(4, "0")}`,
          tenant: TENANT,
          session,
          index,
          at: t,
          turnMs,
        });
        index++;
        const think = logNormal(rand, o.thinkMedianMs, o.thinkSigma, o.thinkMinMs, o.thinkMaxMs);
        t += turnMs + Math.round(think);
      }
      t += Math.round(
        rand() < o.quietProbability
          ? logUniform(rand, o.quietMinMs, o.quietMaxMs)
          : uniform(rand, o.breakMinMs, o.breakMaxMs),
      );
    }
  }
  // Submit order: by time, ties by task id (stable and seed-independent).
  messages.sort((a, b) => a.at - b.at || (a.taskId < b.taskId ? -1 : 1));
  return { sessions, messages };
}
