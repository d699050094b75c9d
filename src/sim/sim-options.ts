/**
 * Options of the placement simulator (validated with zod, every field defaulted) and the
 * shape of its report. Times are milliseconds of simulated time; sizes are megabytes.
 */
import { z } from "zod";
import { ConfigError } from "../errors.js";

/** The placement policies the simulator compares. */
export const PolicyNameSchema = z.enum(["ladder", "any-free", "pinned"]);
export type PolicyName = z.infer<typeof PolicyNameSchema>;
export const POLICY_NAMES: readonly PolicyName[] = PolicyNameSchema.options;

const ms = () => z.number().int().min(0);
const positive = () => z.number().positive();

/** Everything a simulation run is made from. Two runs with equal options give equal reports. */
export const SimOptionsSchema = z
  .strictObject({
    /** A name for the scenario, shown in the report, the table and the chart. */
    name: z.string().min(1).max(64).default("default"),
    /** Seed of every random draw (workload, state sizes, turn durations). */
    seed: z.number().int().min(0).max(0xffff_ffff).default(1),
    /** Users; each is one session with its own chat rhythm. */
    users: z.number().int().min(1).max(100_000).default(100),
    /** The pool's size (`max`): the fixed number of containers. */
    containers: z.number().int().min(1).max(10_000).default(10),
    /** Containers the pool keeps started and idle (`minIdle`, the real default); at most `containers`. */
    minIdle: z.number().int().min(0).default(1),
    /** Containers starting at once (`maxConcurrentStarts`). */
    maxConcurrentStarts: z.number().int().min(1).default(2),
    /** Messages arrive during [0, horizon); the run goes on for `drainMs` to finish them. */
    horizonMs: ms().default(8 * 3600_000),
    /** Extra simulated time after the horizon for queued tasks to finish. */
    drainMs: ms().default(3600_000),
    /** Users start within [0, rampMs). */
    rampMs: ms().default(3600_000),
    /** How long a container stays reserved for the session it served (the real default). */
    reservedWindowMs: ms().default(60_000),
    /** Time to start a container. */
    containerStartMs: ms().default(3_000),
    /** A restore costs `restoreBaseMs + restoreMsPerMB × state size`. */
    restoreBaseMs: ms().default(500),
    restoreMsPerMB: z.number().min(0).default(40),
    /** A session's state size: log-normal with this median and sigma, clamped to [1, max]. */
    stateMedianMB: positive().default(50),
    stateSigma: z.number().min(0).default(1),
    stateMaxMB: positive().default(2_000),
    /** A turn's duration: log-normal, clamped to [turnMinMs, turnMaxMs]. */
    turnMedianMs: positive().default(12_000),
    turnSigma: z.number().min(0).default(0.8),
    turnMinMs: ms().default(1_000),
    turnMaxMs: ms().default(300_000),
    /** Reading the reply and thinking before a follow-up: log-normal, clamped. */
    thinkMedianMs: positive().default(40_000),
    thinkSigma: z.number().min(0).default(1),
    thinkMinMs: ms().default(3_000),
    thinkMaxMs: ms().default(600_000),
    /** Messages per burst: geometric with this mean (at least 1, at most 50). */
    burstMean: z.number().min(1).default(6),
    /** After a burst a user goes quiet for hours with this probability… */
    quietProbability: z.number().min(0).max(1).default(0.35),
    quietMinMs: ms().default(3600_000),
    quietMaxMs: ms().default(6 * 3600_000),
    /** …otherwise takes a short break, uniform in [breakMinMs, breakMaxMs]. */
    breakMinMs: ms().default(2 * 60_000),
    breakMaxMs: ms().default(30 * 60_000),
    /** Orchestrator → node dispatch round trip. */
    dispatchLatencyMs: ms().default(2),
    /** Node → orchestrator task events (started, succeeded). */
    eventLatencyMs: ms().default(5),
    /**
     * Period of the node's heartbeat. The node also announces every change at once; of the
     * periodic ones only those that clear a refused target change anything, so only those run.
     */
    nodeHeartbeatMs: z.number().int().min(10).default(1_000),
    /** The policies to run, in report order. */
    policies: z
      .array(PolicyNameSchema)
      .min(1)
      .default([...POLICY_NAMES]),
    /** Adds one row per task to the report (for tests and digging; large). */
    trace: z.boolean().default(false),
  })
  .refine((o) => o.minIdle <= o.containers, { message: "minIdle must be ≤ containers" })
  .refine((o) => o.turnMinMs <= o.turnMaxMs, { message: "turnMinMs must be ≤ turnMaxMs" })
  .refine((o) => o.thinkMinMs <= o.thinkMaxMs, { message: "thinkMinMs must be ≤ thinkMaxMs" })
  .refine((o) => o.quietMinMs <= o.quietMaxMs, { message: "quietMinMs must be ≤ quietMaxMs" })
  .refine((o) => o.breakMinMs <= o.breakMaxMs, { message: "breakMinMs must be ≤ breakMaxMs" });

/** Options as callers write them (every field optional). */
export type SimOptions = z.input<typeof SimOptionsSchema>;
/** Options with every default applied. */
export type ResolvedSimOptions = Readonly<z.output<typeof SimOptionsSchema>>;

/** Validates `options` and applies the defaults; throws a readable error when invalid. */
export function resolveSimOptions(options: SimOptions = {}): ResolvedSimOptions {
  const parsed = SimOptionsSchema.safeParse(options);
  if (!parsed.success)
    throw new ConfigError(`invalid sim options: ${z.prettifyError(parsed.error)}`);
  return Object.freeze(parsed.data);
}

/** Percentiles (nearest rank, exact) of a set of durations, in milliseconds. */
export interface Percentiles {
  readonly count: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** What one policy did with the workload. */
export interface PolicyResult {
  readonly policy: PolicyName;
  /** Tasks submitted, succeeded, failed, and still open when the run ended. */
  readonly tasks: {
    readonly submitted: number;
    readonly succeeded: number;
    readonly failed: number;
    readonly unfinished: number;
  };
  /** Failed plus unfinished tasks (0 expected). */
  readonly failures: number;
  /** Messages after a session's first that ran, and how many found their state warm. */
  readonly followUps: {
    readonly ran: number;
    readonly zeroReload: number;
    readonly zeroReloadShare: number;
  };
  /** Turns that had to restore their session's state first, and the time spent on it. */
  readonly reloads: { readonly count: number; readonly totalMs: number; readonly meanMs: number };
  /** Containers started over the run. */
  readonly containerStarts: number;
  /** Dispatches the node refused (a busy container, a pool at its start throttle). */
  readonly refusals: number;
  /** Placements by ladder rung (for `any-free` and `pinned`, the rung their choice amounts to). */
  readonly placements: Readonly<Record<string, number>>;
  /** Submit → the turn begins (after any container start and restore): what a user waits. */
  readonly waitMs: Percentiles;
  /** Submit → the node accepted the task (placement only). */
  readonly queueWaitMs: Percentiles;
  /** Open tasks not running (the orchestrator's `queueDepth`): peak and time-weighted mean. */
  readonly queueDepth: { readonly peak: number; readonly mean: number };
  /** Share of container-time (containers × span) spent restoring or running turns. */
  readonly utilisation: { readonly busy: number; readonly restoring: number };
  /** Checks of the one-task-per-session rule: both must be 0. */
  readonly invariants: { readonly overlappingTurns: number; readonly outOfOrder: number };
  /** Simulated time from 0 to the end of the run. */
  readonly simulatedMs: number;
  /** Clock events the run processed (deterministic; a measure of its cost). */
  readonly events: number;
}

/** One task of a traced run (times relative to the start of the run). */
export interface TaskTrace {
  readonly taskId: string;
  readonly session: string;
  readonly index: number;
  readonly submitAt: number;
  readonly placedAt: number | null;
  readonly turnStartAt: number | null;
  readonly finishedAt: number | null;
  readonly status: string;
  readonly rung: string | null;
  readonly container: string | null;
  readonly reload: boolean;
}

/** The workload every policy ran. */
export interface WorkloadSummary {
  readonly sessions: number;
  readonly messages: number;
  readonly followUps: number;
  readonly meanStateMB: number;
  readonly turnMsTotal: number;
}

/** The report of one simulation: the options, the workload and one result per policy. */
export interface SimReport {
  readonly scenario: string;
  readonly options: ResolvedSimOptions;
  readonly workload: WorkloadSummary;
  readonly results: readonly PolicyResult[];
  /** Per policy, one row per task; only with `trace: true`. */
  readonly traces?: Readonly<Record<string, readonly TaskTrace[]>>;
}
