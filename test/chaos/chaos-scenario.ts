/**
 * What the chaos scenarios share besides the fleet itself: one fleet per test
 * file, started before its tests and disposed after them, and the "rounds"
 * script most scenarios run (append a line, send an effect, sleep; repeated),
 * whose steps are numbered so a test can name the step to inject a fault after.
 */
import { afterAll, beforeAll } from "vitest";
import { ChaosFleet, type ChaosFleetOptions, range } from "../harness/chaos-fleet.js";

/**
 * Starts a {@link ChaosFleet} before the file's tests and disposes it after them.
 * Call at the top of a `describe`; the returned function gives the running fleet.
 */
export function useChaosFleet(
  options: ChaosFleetOptions | (() => ChaosFleetOptions),
): () => ChaosFleet {
  let fleet: ChaosFleet | undefined;
  beforeAll(async () => {
    fleet = await ChaosFleet.start(typeof options === "function" ? options() : options);
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });
  return () => {
    if (fleet === undefined)
      throw new Error("the chaos fleet is not running (used outside a test?)");
    return fleet;
  };
}

/** Options of {@link roundsScript}. */
export interface RoundsOptions {
  /** How many rounds of write, effect, sleep. */
  readonly rounds: number;
  /** The file each round appends its line to. */
  readonly file: string;
  /** The line round `n` appends. */
  readonly line: (n: number) => string;
  /** The effect round `n` sends. */
  readonly effect: { readonly kind: string; readonly payload: (n: number) => unknown };
  /** How long round `n` sleeps: the window a fault injected after its effect lands in. */
  readonly sleepMs: (n: number) => number;
  /** Ops after the rounds (e.g. a read and a reply). */
  readonly tail?: readonly object[];
}

/** A rounds script: its ops, its number of steps, and the step of each round's effect. */
export interface RoundsScript {
  readonly ops: readonly object[];
  readonly steps: number;
  /** The step number of round n's effect, for n = 1..rounds. */
  readonly effectSteps: readonly number[];
  /** The step number of round `n`'s effect. */
  effectStep(n: number): number;
}

/** Three steps per round (append a line, send an effect, sleep), then `tail`. */
export function roundsScript(options: RoundsOptions): RoundsScript {
  const ops = [
    ...range(1, options.rounds).flatMap((n) => [
      { op: "write", path: options.file, text: options.line(n), append: true },
      { op: "effect", kind: options.effect.kind, payload: options.effect.payload(n) },
      { op: "sleep", ms: options.sleepMs(n) },
    ]),
    ...(options.tail ?? []),
  ];
  const effectStep = (n: number) => 3 * n - 1;
  return {
    ops,
    steps: ops.length,
    effectSteps: range(1, options.rounds).map(effectStep),
    effectStep,
  };
}
