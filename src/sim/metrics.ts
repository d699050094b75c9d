/**
 * What a simulation run measures, task by task, and the per-policy summary built from it.
 * Percentiles are exact (nearest rank over every sample): runs are small enough to keep
 * every wait, and `hdr-histogram-js` is only a dev dependency of the benches.
 */
import type {
  Percentiles,
  PolicyName,
  PolicyResult,
  ResolvedSimOptions,
  TaskTrace,
} from "./sim-options.js";
import type { SimMessage } from "./workload.js";

interface Row {
  readonly taskId: string;
  readonly session: string;
  readonly index: number;
  readonly submitAt: number;
  placedAt: number | null;
  turnStartAt: number | null;
  finishedAt: number | null;
  status: string;
  rung: string | null;
  container: string | null;
  reload: boolean;
  restoreMs: number;
}

/** Nearest-rank percentiles of `values` (ms), rounded to whole milliseconds. */
export function percentiles(values: readonly number[]): Percentiles {
  if (values.length === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
  const sum = sorted.reduce((s, v) => s + v, 0);
  return {
    count: sorted.length,
    p50: Math.round(at(50)),
    p95: Math.round(at(95)),
    p99: Math.round(at(99)),
    max: Math.round(sorted.at(-1)!),
    mean: round(sum / sorted.length, 1),
  };
}

/** Rounds to `digits` decimals. */
export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Collects one policy's run; times are ms since the start of the run (`now()`). */
export class Recorder {
  private readonly rows = new Map<string, Row>();
  private readonly rungs: Record<string, number> = {};
  private starts = 0;
  private refused = 0;
  private restoreMs = 0;
  private turnMs = 0;
  private depth = 0;
  private depthSince = 0;
  private depthArea = 0;
  private peakDepth = 0;

  constructor(private readonly now: () => number) {}

  submitted(m: SimMessage): void {
    this.rows.set(m.taskId, {
      taskId: m.taskId,
      session: m.session,
      index: m.index,
      submitAt: this.now(),
      placedAt: null,
      turnStartAt: null,
      finishedAt: null,
      status: "queued",
      rung: null,
      container: null,
      reload: false,
      restoreMs: 0,
    });
  }

  placed(taskId: string, rung: string, container: string): void {
    const row = this.rows.get(taskId);
    if (!row || row.placedAt !== null) return;
    row.placedAt = this.now();
    row.rung = rung;
    row.container = container;
    this.rungs[rung] = (this.rungs[rung] ?? 0) + 1;
  }

  turnStarted(taskId: string, reload: boolean, restoreMs: number): void {
    const row = this.rows.get(taskId);
    if (!row) return;
    row.turnStartAt = this.now();
    row.reload = reload;
    row.restoreMs = restoreMs;
    this.restoreMs += restoreMs;
  }

  turnEnded(turnMs: number): void {
    this.turnMs += turnMs;
  }

  finished(taskId: string, status: string): void {
    const row = this.rows.get(taskId);
    if (!row) return;
    row.finishedAt = this.now();
    row.status = status;
  }

  containerStarted(): void {
    this.starts++;
  }

  refusal(): void {
    this.refused++;
  }

  /** The orchestrator's queue depth changed (or may have). */
  queueDepth(depth: number): void {
    if (depth === this.depth) return;
    const t = this.now();
    this.depthArea += this.depth * (t - this.depthSince);
    this.depth = depth;
    this.depthSince = t;
    if (depth > this.peakDepth) this.peakDepth = depth;
  }

  /** One row per task, in submit order. */
  traces(): TaskTrace[] {
    return [...this.rows.values()].map(({ restoreMs: _r, ...row }) => ({ ...row }));
  }

  /** The summary of the run that ended at `end` after `events` clock events. */
  result(policy: PolicyName, o: ResolvedSimOptions, end: number, events: number): PolicyResult {
    const rows = [...this.rows.values()];
    const succeeded = rows.filter((r) => r.status === "succeeded").length;
    const failed = rows.filter((r) => r.status === "failed" || r.status === "canceled").length;
    const unfinished = rows.length - succeeded - failed;
    const ran = rows.filter((r) => r.turnStartAt !== null);
    const followUps = ran.filter((r) => r.index > 0);
    const zeroReload = followUps.filter((r) => !r.reload).length;
    const reloads = ran.filter((r) => r.reload);
    // Utilisation and mean depth over the horizon, or the whole run when it went past it.
    const span = Math.max(1, o.horizonMs, end);
    const capacity = o.containers * span;
    const area = this.depthArea + this.depth * (end - this.depthSince);
    return {
      policy,
      tasks: { submitted: rows.length, succeeded, failed, unfinished },
      failures: failed + unfinished,
      followUps: {
        ran: followUps.length,
        zeroReload,
        zeroReloadShare: followUps.length === 0 ? 1 : round(zeroReload / followUps.length, 4),
      },
      reloads: {
        count: reloads.length,
        totalMs: this.restoreMs,
        meanMs: reloads.length === 0 ? 0 : round(this.restoreMs / reloads.length, 1),
      },
      containerStarts: this.starts,
      refusals: this.refused,
      placements: sortedKeys(this.rungs),
      waitMs: percentiles(ran.map((r) => r.turnStartAt! - r.submitAt)),
      queueWaitMs: percentiles(
        rows.filter((r) => r.placedAt !== null).map((r) => r.placedAt! - r.submitAt),
      ),
      queueDepth: { peak: this.peakDepth, mean: round(area / span, 3) },
      utilisation: {
        busy: round((this.restoreMs + this.turnMs) / capacity, 4),
        restoring: round(this.restoreMs / capacity, 4),
      },
      invariants: checkSessions(rows),
      simulatedMs: end,
      events,
    };
  }
}

/** Counts breaches of the one-task-per-session-in-order rule. */
function checkSessions(rows: readonly Row[]): PolicyResult["invariants"] {
  const bySession = new Map<string, Row[]>();
  for (const r of rows) {
    const list = bySession.get(r.session) ?? [];
    list.push(r);
    bySession.set(r.session, list);
  }
  let overlappingTurns = 0;
  let outOfOrder = 0;
  for (const list of bySession.values()) {
    list.sort((a, b) => a.index - b.index);
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1]!;
      const next = list[i]!;
      if (next.placedAt === null) continue;
      if (prev.placedAt === null || next.placedAt < prev.placedAt) outOfOrder++;
      else if (prev.finishedAt === null || next.placedAt < prev.finishedAt) overlappingTurns++;
    }
  }
  return { overlappingTurns, outOfOrder };
}

function sortedKeys(record: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : 1)));
}
