/**
 * The recovery bench's report: one repetition's figures ({@link Rep}), their statistics
 * per fault against the bound the default liveness settings promise ({@link summarise}),
 * and the human summary printed on stderr ({@link summary}).
 */
import { round } from "./measure.js";
import { FAULT_ACTIONS, FAULT_KINDS, type FaultKind } from "./recovery-faults.js";

/** One repetition of one fault; times in ms since the fault was injected. */
export interface Rep {
  readonly rep: number;
  readonly session: string;
  readonly task_id: string | null;
  /** Tasks started for this repetition: more than one when the fault came too late (see `runRep`). */
  readonly tries: number;
  /** Where attempt 1 ran, and the fault was injected. */
  readonly node: string | null;
  readonly container: string | null;
  /** Error code of the line that told the fleet the attempt was lost. */
  readonly detected_by: string | null;
  /** The node's `failed` event (agent faults) or the orchestrator's `requeued` line (node kill). */
  readonly detect_ms: number | null;
  /** The orchestrator's `requeued` line: it has decided to retry. */
  readonly requeue_ms: number | null;
  /** The orchestrator's `placed` line of attempt 2 (after the retry backoff). */
  readonly placed_ms: number | null;
  /** The retry's `started` event: attempt 2 holds the lease and is about to resume. */
  readonly resume_ms: number | null;
  /** Attempt 2's first step event: the interrupted step, run again, checkpointed. */
  readonly first_step_ms: number | null;
  /** The orchestrator's `succeeded` line. */
  readonly done_ms: number | null;
  /** Where attempt 2 ran. */
  readonly resumed_on: { node: string; container: string; rung: string | null } | null;
  /** Steps attempt 2 skipped (restored from checkpoints). */
  readonly resumed_after_step: number | null;
  readonly status: string | null;
  readonly attempts: number | null;
  /** The agent process was still alive seconds after the fleet gave the attempt up. */
  readonly agent_left_running: boolean;
  /** What went wrong, if the repetition did not end as expected. */
  readonly error?: string;
}

/** min / p50 / max / mean of a handful of values (N ≤ 20: plain sorting, no histogram). */
export interface Stats {
  readonly count: number;
  readonly min: number;
  readonly p50: number;
  readonly max: number;
  readonly mean: number;
}

/** The {@link Stats} of `values`, nulls left out; null when none is left. */
export function stats(values: ReadonlyArray<number | null>): Stats | null {
  const xs = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = xs.length >> 1;
  const p50 = xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
  return {
    count: xs.length,
    min: round(xs[0]!, 1),
    p50: round(p50, 1),
    max: round(xs.at(-1)!, 1),
    mean: round(xs.reduce((a, b) => a + b, 0) / xs.length, 1),
  };
}

/** The figures of one fault over its repetitions. */
export interface FaultResult {
  readonly action: string;
  readonly reps: number;
  readonly failed: number;
  /** Tasks started again because the previous one got past step 4 before the fault. */
  readonly late_faults: number;
  readonly detected_by: Record<string, number>;
  readonly detect_ms: Stats | null;
  readonly requeue_ms: Stats | null;
  readonly resume_ms: Stats | null;
  /** Resume minus detect: requeue, retry backoff, placement, dispatch, lease. */
  readonly detect_to_resume_ms: Stats | null;
  readonly first_step_ms: Stats | null;
  /** The baseline: what the default settings promise for detection (and for the resume, plus the backoff). */
  readonly bound: {
    readonly detect_ms: number;
    readonly basis: string;
    readonly resume_ms: number;
  };
  /** Measured ÷ bound. */
  readonly ratio: {
    readonly detect_p50: number | null;
    readonly detect_max: number | null;
    readonly resume_p50: number | null;
    readonly resume_max: number | null;
  };
  readonly resumed_on_rung: Record<string, number>;
  readonly runs: readonly Rep[];
}

/** Sums up the repetitions of fault `kind` against its detection `bound` (plus `backoffMs` for the resume). */
export function summarise(
  kind: FaultKind,
  reps: readonly Rep[],
  bound: { detect_ms: number; basis: string },
  backoffMs: number,
): FaultResult {
  const ok = reps.filter((r) => r.error === undefined);
  const count = (values: ReadonlyArray<string | null>) => {
    const out: Record<string, number> = {};
    for (const v of values) out[v ?? "none"] = (out[v ?? "none"] ?? 0) + 1;
    return out;
  };
  const detect = stats(ok.map((r) => r.detect_ms));
  const resume = stats(ok.map((r) => r.resume_ms));
  const resumeBound = bound.detect_ms + backoffMs;
  const ratio = (x: number | undefined, b: number) =>
    x === undefined ? null : Number((x / b).toPrecision(3));
  return {
    action: FAULT_ACTIONS[kind],
    reps: reps.length,
    failed: reps.length - ok.length,
    late_faults: reps.reduce((n, r) => n + r.tries - 1, 0),
    detected_by: count(ok.map((r) => r.detected_by)),
    detect_ms: detect,
    requeue_ms: stats(ok.map((r) => r.requeue_ms)),
    resume_ms: resume,
    detect_to_resume_ms: stats(
      ok.map((r) =>
        r.resume_ms === null || r.detect_ms === null ? null : r.resume_ms - r.detect_ms,
      ),
    ),
    first_step_ms: stats(ok.map((r) => r.first_step_ms)),
    bound: { ...bound, resume_ms: resumeBound },
    ratio: {
      detect_p50: ratio(detect?.p50, bound.detect_ms),
      detect_max: ratio(detect?.max, bound.detect_ms),
      resume_p50: ratio(resume?.p50, resumeBound),
      resume_max: ratio(resume?.max, resumeBound),
    },
    resumed_on_rung: count(ok.map((r) => r.resumed_on?.rung ?? null)),
    runs: reps,
  };
}

/** A time in whole ms for the summary, or `-`. */
export function fmt(x: number | null | undefined): string {
  return x === null || x === undefined ? "-" : String(Math.round(x));
}

/** What {@link summary} reads of the report. */
export interface SummaryInput {
  machine: { cpus: number; node: string; load_average: { before: number[]; after: number[] } };
  duration_s: number;
  params: {
    reps: number;
    sleep: number;
    nodes: number;
    sandbox: string;
    liveness: Record<string, number>;
  };
  faults: Record<FaultKind, FaultResult>;
}

/** The human summary of the report: a table of the faults, then any failed repetitions. */
export function summary(r: SummaryInput): string {
  const l = r.params.liveness;
  const pair = (s: Stats | null) => (s === null ? "-" : `${fmt(s.p50)} / ${fmt(s.max)}`);
  const num = (x: number | null) => (x === null ? "-" : x.toFixed(x < 0.1 ? 3 : 2));
  const header =
    "fault".padEnd(16) +
    "detect p50/max".padStart(16) +
    "bound".padStart(8) +
    "ratio p50/max".padStart(17) +
    "resume p50/max".padStart(16) +
    "bound".padStart(8) +
    "1st step p50/max".padStart(18) +
    "  ok";
  const rows = FAULT_KINDS.map((kind) => {
    const f = r.faults[kind];
    return (
      kind.padEnd(16) +
      pair(f.detect_ms).padStart(16) +
      String(f.bound.detect_ms).padStart(8) +
      `${num(f.ratio.detect_p50)} / ${num(f.ratio.detect_max)}`.padStart(17) +
      pair(f.resume_ms).padStart(16) +
      String(f.bound.resume_ms).padStart(8) +
      pair(f.first_step_ms).padStart(18) +
      `  ${f.reps - f.failed}/${f.reps}`
    );
  });
  const lines = [
    "",
    `recovery bench: ${r.machine.cpus} cpus, node ${r.machine.node}, ${r.duration_s} s; ` +
      `${r.params.reps} reps per fault, ${r.params.nodes} nodes, sandbox ${r.params.sandbox}; ` +
      `load average ${r.machine.load_average.before[0]} before, ${r.machine.load_average.after[0]} after`,
    `  defaults: agent heartbeat ${l.agent_heartbeat_ms} ms × ${l.missed_heartbeats}, ` +
      `node heartbeat ${l.node_heartbeat_ms} / timeout ${l.node_timeout_ms} ms, ` +
      `lease renew ${l.lease_renew_ms} / ttl ${l.lease_ttl_ms} ms (checked every ${l.liveness_check_every_ms} ms), ` +
      `retry backoff ${l.retry_backoff_ms} ms`,
    "  ms from the fault; resume bound = detect bound + retry backoff; " +
      `1st step includes re-running the interrupted ${r.params.sleep} ms step`,
    "",
    header,
    ...rows,
    "",
  ];
  const failures = FAULT_KINDS.flatMap((k) =>
    r.faults[k].runs.filter((x) => x.error).map((x) => `  ${k} ${x.rep}: ${x.error}`),
  );
  if (failures.length > 0) lines.push("failed repetitions:", ...failures, "");
  return `${lines.join("\n")}\n`;
}
