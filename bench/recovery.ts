/**
 * Recovery: how long the fleet takes to notice that a running task's attempt is lost, and
 * to resume the task, for four faults (agent kill, agent hang, container kill, node kill),
 * with the fleet's default liveness settings, next to the detection bound those settings
 * promise. Real role processes (orchestrator, gateway, two nodes) on a real nats-server,
 * through the chaos harness (test/chaos/chaos-fleet.ts).
 */
import { readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { findNatsServer, processPoolAvailableSandbox, resolveFleetOptions } from "../src/index.js";
import { ChaosFleet, script } from "../test/chaos/chaos-fleet.js";
import { type Cleanup, withCleanup } from "./lib/cleanup.js";
import { round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import {
  addNode,
  FAULT_ACTIONS,
  FAULT_KINDS,
  type FaultKind,
  gone,
  inject,
  locate,
  release,
  settled,
  type TimedEvent,
  timedEvents,
} from "./lib/recovery-faults.js";
import { commandVersion, gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  reps: { default: 5, min: 1, help: "measured repetitions per fault" },
  warmup: { default: 1, min: 0, help: "unmeasured agent-kill repetitions first" },
  sleep: {
    default: 500,
    min: 100,
    help: "ms of the step the fault lands in (it runs again after the resume)",
  },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;

export const usage = `npm run bench -- recovery [options]

Time to detect a lost attempt and time to resume the task, for an agent kill (SIGKILL),
an agent hang (SIGSTOP), a container kill (SIGKILL of the agent's sandbox) and a node kill
(SIGKILL of the node process), each injected right after a step was checkpointed. Real
role processes (orchestrator, gateway, two nodes) on their own nats-server, with the
fleet's default liveness settings. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

/** Nodes in the fleet: a node kill needs a survivor to resume on. */
const NODES = 2;
/** The fault is injected once this step is checkpointed, while the agent runs the next one. */
const FAULT_AFTER = 3;
/** Timeline lines that end a task. */
const TERMINAL = ["succeeded", "failed", "canceled"];
/** Bound of each wait for the fleet; far above every expected figure. */
const WAIT_MS = 60_000;

/**
 * The fleet's options: every liveness setting at its default. One pool per node with its
 * defaults too (minIdle 1, max 4), so the fleet keeps a warm container to resume on besides
 * the one running the task; except that a container that served a session is idle again at
 * once (`reservedWindowMs` 0, not a liveness setting). With the default 60 s window every
 * repetition leaves a container reserved for a session that never comes back, the pools
 * fill up to `max`, and the next repetition waits for a reservation to lapse.
 */
const FLEET_CONFIG = { pools: [{ reservedWindowMs: 0 }] };

/** The task: three quick checkpointed steps, the step the fault lands in, then two more. */
function taskOps(sleepMs: number): object[] {
  const line = (n: number) => ({
    op: "write",
    path: "progress.md",
    text: `step ${n}\n`,
    append: true,
  });
  return [
    line(1),
    line(2),
    line(3),
    { op: "sleep", ms: sleepMs },
    line(5),
    { op: "reply", text: "recovered" },
  ];
}

/** One repetition of one fault; times in ms since the fault was injected. */
interface Rep {
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
interface Stats {
  readonly count: number;
  readonly min: number;
  readonly p50: number;
  readonly max: number;
  readonly mean: number;
}

function stats(values: ReadonlyArray<number | null>): Stats | null {
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

/** Runs the bench; resolves with the JSON report (and prints the summary on stderr). */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  const t0 = performance.now();
  const git = await gitState();
  const loadBefore = loadavg().map((x) => round(x, 2));
  const natsBinary = findNatsServer();
  if (natsBinary === null) throw new Error("nats-server is missing: apt-get install nats-server");
  const options = resolveFleetOptions(FLEET_CONFIG);
  const pool = options.pools[0]!;
  const tick = Math.max(20, Math.min(options.nodeTimeoutMs, options.leaseTtlMs) / 4);
  const liveness = {
    agent_heartbeat_ms: pool.agentHeartbeatMs,
    missed_heartbeats: pool.missedHeartbeats,
    node_heartbeat_ms: options.nodeHeartbeatMs,
    node_timeout_ms: options.nodeTimeoutMs,
    lease_renew_ms: options.leaseRenewMs,
    lease_ttl_ms: options.leaseTtlMs,
    liveness_check_every_ms: tick,
    retry_backoff_ms: options.retryBackoffMs,
    max_attempts: options.maxAttempts,
  };
  const hangBound = pool.missedHeartbeats * pool.agentHeartbeatMs;
  const nodeBound = Math.min(options.nodeTimeoutMs, options.leaseTtlMs);
  const bounds: Record<FaultKind, { detect_ms: number; basis: string }> = {
    "agent-kill": {
      detect_ms: hangBound,
      basis:
        "no timeout: the node sees its child exit; the bound is the heartbeat watchdog (missedHeartbeats × agentHeartbeatMs) that would catch an unseen death",
    },
    "agent-hang": {
      detect_ms: hangBound,
      basis: "missedHeartbeats × agentHeartbeatMs, from the agent's last message",
    },
    "container-kill": {
      detect_ms: hangBound,
      basis: "as agent-kill: the child exit is seen at once; the watchdog is the fallback",
    },
    "node-kill": {
      detect_ms: nodeBound,
      basis: `min(nodeTimeoutMs, leaseTtlMs) from the node's last heartbeat or renewal, judged every ${tick} ms (worst case ≈ ${nodeBound + tick} ms after the kill)`,
    },
  };

  return withCleanup(async (cleanup) => {
    const sandbox = await processPoolAvailableSandbox();
    progress(`starting nats-server, orchestrator, gateway and ${NODES} nodes (sandbox ${sandbox})`);
    const nodeIds = Array.from({ length: NODES }, (_, i) => `node-${i + 1}`);
    const starting = ChaosFleet.start({ nodes: nodeIds, config: FLEET_CONFIG });
    // Registered before the start resolves, so a Ctrl-C during it still disposes the fleet.
    cleanup.defer("stop the fleet", async () => {
      const fleet = await starting.catch(() => undefined);
      await fleet?.[Symbol.asyncDispose]();
    });
    const fleet = await starting;
    const { events, stop } = timedEvents(fleet);
    cleanup.defer("stop recording events", stop);
    const ctx: Ctx = {
      fleet,
      events,
      live: [...nodeIds],
      nextNode: NODES + 1,
      params,
      input: script(...taskOps(params.sleep)),
      cleanup,
    };
    progress("fleet ready");

    for (let i = 1; i <= params.warmup; i++) {
      const r = await runRep(ctx, "agent-kill", i, true);
      progress(`warmup ${i}: ${r.error ?? `resumed after ${fmt(r.resume_ms)} ms`}`);
    }
    const faults = {} as Record<FaultKind, FaultResult>;
    for (const kind of FAULT_KINDS) {
      const reps: Rep[] = [];
      for (let i = 1; i <= params.reps; i++) {
        const r = await runRep(ctx, kind, i, false);
        reps.push(r);
        progress(
          `${kind} ${i}/${params.reps}: ` +
            (r.error
              ? `FAILED: ${r.error}`
              : `detect ${fmt(r.detect_ms)} ms (${r.detected_by}), resume ${fmt(r.resume_ms)} ms, first step ${fmt(r.first_step_ms)} ms`),
        );
      }
      faults[kind] = summarise(kind, reps, bounds[kind], options.retryBackoffMs);
    }

    const report = {
      bench: "recovery",
      date: startedAt.toISOString(),
      duration_s: round((performance.now() - t0) / 1000, 1),
      machine: {
        ...machineInfo(),
        // Latencies here are timer- and scheduler-bound: a busy host shows in them.
        load_average: { before: loadBefore, after: loadavg().map((x) => round(x, 2)) },
      },
      versions: {
        clawfleet: await packageVersion(),
        nats_server: await commandVersion(natsBinary, /v?(\d+\.\d+\.\d+\S*)/),
        git,
      },
      params: {
        ...params,
        nodes: NODES,
        sandbox,
        pool: {
          min_idle: pool.minIdle,
          max: pool.max,
          max_agent_restarts: pool.maxAgentRestarts,
          reserved_window_ms: pool.reservedWindowMs,
        },
        liveness,
        task: {
          steps: taskOps(params.sleep).length,
          fault_after_step: FAULT_AFTER,
          ops: taskOps(params.sleep),
        },
        faults: FAULT_ACTIONS,
        measured:
          "ms from the fault (just after the bench saw step 3's checkpoint event) to lines on fleet.events.>, as this process received them",
        detect: {
          "agent faults": "the node's `failed` event of attempt 1 (AGENT_EXITED / AGENT_HUNG)",
          "node-kill": "the orchestrator's `requeued` line of attempt 1 (NODE_LOST / LEASE_LOST)",
        },
        resume: "attempt 2's `started` event (lease taken; restore of step 3's checkpoint next)",
        first_step:
          "attempt 2's first `step` event: the interrupted sleep step run again (it includes that sleep)",
      },
      faults,
    };
    process.stderr.write(summary(report));
    return report;
  });
}

// ------------------------------------------------------------------------- one repetition

interface Ctx {
  readonly fleet: ChaosFleet;
  readonly events: ReturnType<typeof timedEvents>["events"];
  /** Nodes alive now. */
  live: string[];
  nextNode: number;
  readonly params: Params;
  readonly input: string;
  readonly cleanup: Cleanup;
}

/** Tasks one repetition may start before it gives up on landing its fault in time. */
const MAX_TRIES = 3;

/**
 * One measured repetition: a fresh session's task, the fault right after its step 3, and
 * the recovery. Should the task get past step 4 before the fault (a slow /proc scan on a
 * busy host), nothing is injected and a new task is started, at most {@link MAX_TRIES} times.
 */
async function runRep(ctx: Ctx, kind: FaultKind, rep: number, warmup: boolean): Promise<Rep> {
  for (let tries = 1; ; tries++) {
    const session = `${warmup ? "warmup" : kind}-${rep}${tries > 1 ? `-try${tries}` : ""}`;
    const r = await faultOnce(ctx, kind, rep, session).catch((err: unknown) => {
      if (err instanceof FatalError) throw err;
      return failedRep(rep, session, (err as Error).message.split("\n")[0]!);
    });
    if (r !== "late") return { ...r, tries };
    progress(`${kind} ${rep}: the task passed step ${FAULT_AFTER + 1} before the fault; again`);
    if (tries === MAX_TRIES) {
      return {
        ...failedRep(rep, session, `the fault came late ${MAX_TRIES} times`),
        tries,
      };
    }
  }
}

/** A failure the bench cannot go on after. */
class FatalError extends Error {}

/** A repetition that ended before anything was measured. */
function failedRep(rep: number, session: string, error: string): Rep {
  return {
    rep,
    session,
    task_id: null,
    tries: 1,
    node: null,
    container: null,
    detected_by: null,
    detect_ms: null,
    requeue_ms: null,
    placed_ms: null,
    resume_ms: null,
    first_step_ms: null,
    done_ms: null,
    resumed_on: null,
    resumed_after_step: null,
    status: null,
    attempts: null,
    agent_left_running: false,
    error,
  };
}

/** One task with one fault; "late" if the task got past the step the fault is meant for. */
async function faultOnce(
  ctx: Ctx,
  kind: FaultKind,
  rep: number,
  session: string,
): Promise<Rep | "late"> {
  const { fleet, events } = ctx;
  await settled(fleet, ctx.live, WAIT_MS);
  const { taskId } = await fleet.client.submit({
    session,
    input: ctx.input,
    idempotencyKey: `recovery-${session}`,
  });
  const of = (match: (e: TimedEvent) => boolean, what: string) =>
    events.waitFor((e) => e.taskId === taskId && match(e), `${what} of ${taskId}`, WAIT_MS);
  const node = (type: string, attempt: number) => (e: TimedEvent) =>
    e.source === "task" && e.type === type && e.attempt === attempt;
  const line = (type: string, attempt: number) => (e: TimedEvent) =>
    e.source === "timeline" && e.type === type && e.attempt === attempt;
  const pastFaultStep = () =>
    events.items.some(
      (e) =>
        e.taskId === taskId &&
        ((node("step", 1)(e) && (e.step ?? 0) > FAULT_AFTER) ||
          (e.source === "timeline" && TERMINAL.includes(e.type))),
    );

  const started = await of(node("started", 1), "attempt 1's start");
  const target = await locate(fleet, started.node!, started.container!);
  await of((e) => node("step", 1)(e) && e.step === FAULT_AFTER, `step ${FAULT_AFTER}`);
  if (pastFaultStep()) {
    await fleet.finished(taskId, WAIT_MS).catch(() => {});
    return "late";
  }
  let agentStopped = false;
  const faultAt = performance.now();
  inject(kind, target);
  if (kind === "agent-hang") {
    agentStopped = true;
    ctx.cleanup.defer(`release stopped agent ${target.agentPid}`, () => release(target.agentPid));
  }
  const since = (e: TimedEvent | null) => (e === null ? null : round(e.seenAt - faultAt, 1));

  let detect: TimedEvent | null = null;
  let requeued: TimedEvent | null = null;
  let resumed: TimedEvent | null = null;
  let firstStep: TimedEvent | null = null;
  let done: TimedEvent | null = null;
  let placed: TimedEvent | null = null;
  let status: string | null = null;
  let attempts: number | null = null;
  let error: string | undefined;
  let leftRunning = false;
  try {
    detect = await of(
      kind === "node-kill" ? line("requeued", 1) : node("failed", 1),
      "the loss of attempt 1",
    );
    requeued = await of(line("requeued", 1), "the requeue");
    resumed = await of(node("started", 2), "attempt 2's start");
    firstStep = await of(node("step", 2), "attempt 2's first step");
    done = await of((e) => e.source === "timeline" && TERMINAL.includes(e.type), "the end");
    placed = events.items.find((e) => e.taskId === taskId && line("placed", 2)(e)) ?? null;
    const record = await fleet.finished(taskId, WAIT_MS);
    status = record.status;
    attempts = record.attempts;
    if (record.status !== "succeeded" || record.attempts !== 2) {
      error = `ended ${record.status} after ${record.attempts} attempts: ${record.error?.code ?? ""} ${record.error?.message ?? ""}`;
    }
    const late = events.items.some(
      (e) => e.taskId === taskId && node("step", 1)(e) && (e.step ?? 0) > FAULT_AFTER,
    );
    if (late) error ??= `attempt 1 checkpointed a step after ${FAULT_AFTER}: the fault came late`;
  } catch (err) {
    error = (err as Error).message.split("\n")[0];
    progress(`${kind} ${rep}: ${await fleet.diagnose(taskId).catch(() => "")}`);
  }
  // The fleet gave the attempt up: its agent must be gone by now, or soon.
  if (!(await gone(target.agentPid, 10_000))) {
    leftRunning = true;
    error ??= `agent ${target.agentPid} still alive 10 s after the attempt was given up`;
  }
  if (agentStopped || leftRunning) release(target.agentPid);
  if (kind === "node-kill") {
    // Without a second node the next kills have nowhere to resume: that ends the bench.
    await replaceNode(ctx, target.node).catch((err: unknown) => {
      throw new FatalError(`could not replace ${target.node}: ${(err as Error).message}`);
    });
  }

  return {
    rep,
    session,
    task_id: taskId,
    tries: 1,
    node: target.node,
    container: target.container,
    detected_by: detect?.error?.code ?? null,
    detect_ms: since(detect),
    requeue_ms: since(requeued),
    placed_ms: since(placed),
    resume_ms: since(resumed),
    first_step_ms: since(firstStep),
    done_ms: since(done),
    resumed_on: resumed
      ? { node: resumed.node!, container: resumed.container!, rung: placedRung(placed) }
      : null,
    resumed_after_step: firstStep?.step === undefined ? null : firstStep.step - 1,
    status,
    attempts,
    agent_left_running: leftRunning,
    ...(error === undefined ? {} : { error }),
  };
}

function placedRung(placed: TimedEvent | null): string | null {
  const rung = (placed as { rung?: unknown } | null)?.rung;
  return typeof rung === "string" ? rung : null;
}

/** Waits for the killed node to exit and starts a fresh one, so the next kill has a survivor. */
async function replaceNode(ctx: Ctx, killed: string): Promise<void> {
  await ctx.fleet.nodes.get(killed)?.exited;
  ctx.live = ctx.live.filter((n) => n !== killed);
  const id = `node-${ctx.nextNode++}`;
  progress(`starting ${id} in place of ${killed}`);
  await addNode(ctx.fleet, id, FLEET_CONFIG, 1);
  ctx.live.push(id);
}

// ---------------------------------------------------------------------------------- report

interface FaultResult {
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

function summarise(
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

function fmt(x: number | null | undefined): string {
  return x === null || x === undefined ? "-" : String(Math.round(x));
}

interface SummaryInput {
  machine: { cpus: number; node: string; load_average: { before: number[]; after: number[] } };
  duration_s: number;
  params: Params & { sandbox: string; liveness: Record<string, number> };
  faults: Record<FaultKind, FaultResult>;
}

function summary(r: SummaryInput): string {
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
      `${r.params.reps} reps per fault, ${NODES} nodes, sandbox ${r.params.sandbox}; ` +
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

const benchDir = path.dirname(fileURLToPath(import.meta.url));

async function packageVersion(): Promise<string | null> {
  try {
    const pkg = JSON.parse(await readFile(path.join(benchDir, "..", "package.json"), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? null;
  } catch {
    return null;
  }
}
