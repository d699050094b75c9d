/**
 * The placement simulator (`clawfleet sim`, `npm run bench -- ladder`): a seeded chat
 * workload on a fixed pool of simulated containers, run once per placement policy on a
 * discrete-event clock.
 *
 * Real code, unchanged: the task machine (one actor per task), the pool and container
 * machines (including the reserved window, the start throttle and `minIdle` top-ups), the
 * ladder (`decidePlacement`) with the orchestrator's claims (`PlacementClaims`), the
 * heartbeat and dispatch shapes. Repeated from code bound to NATS: the scheduler's
 * placement pass (`TaskScheduler.placeQueued`), the node's dispatch answer and heartbeat.
 * Simulated: time, container starts, restores and turns (timers), message latencies, the
 * users. Not simulated: NATS, persistence, leases, crashes and retries (agents never fail).
 *
 * ```ts
 * const report = await runSimulation({ users: 100, containers: 10, seed: 7 });
 * process.stderr.write(renderTable(report));
 * writeFileSync("ladder.svg", renderChart(report));
 * ```
 */
import { InternalError } from "../errors.js";
import { Recorder } from "./metrics.js";
import { createPolicy } from "./policies.js";
import { EventClock } from "./sim-clock.js";
import { SimNode } from "./sim-node.js";
import {
  type PolicyName,
  type PolicyResult,
  type ResolvedSimOptions,
  resolveSimOptions,
  type SimOptions,
  type SimReport,
  type TaskTrace,
  type WorkloadSummary,
} from "./sim-options.js";
import { SimOrchestrator } from "./sim-orchestrator.js";
import { generateWorkload, type SimMessage, type Workload } from "./workload.js";

export { renderChart, renderTable } from "./chart.js";
export { percentiles } from "./metrics.js";
export { createPolicy, type PlacementPolicy } from "./policies.js";
export { EventClock, SIM_EPOCH_MS } from "./sim-clock.js";
export {
  type Percentiles,
  POLICY_NAMES,
  type PolicyName,
  type PolicyResult,
  type ResolvedSimOptions,
  resolveSimOptions,
  type SimOptions,
  SimOptionsSchema,
  type SimReport,
  type TaskTrace,
  type WorkloadSummary,
} from "./sim-options.js";
export { generateWorkload, mulberry32, type SimMessage, type Workload } from "./workload.js";

/** Named scenarios: the defaults, and the same users (the same workload) on fewer containers. */
export const SCENARIOS = {
  default: {},
  loaded: { name: "loaded", containers: 6 },
} as const satisfies Record<string, SimOptions>;

/** Where a run is: the policy (`index` of `of`) and how far its simulated time has gone. */
export interface SimProgress {
  readonly policy: PolicyName;
  readonly index: number;
  readonly of: number;
  readonly simulatedMs: number;
  readonly horizonMs: number;
  /** This policy's run has ended (its last report). */
  readonly done: boolean;
}

/** Reports of a run in progress; they change nothing in the report. */
export interface SimHooks {
  /** Called when a policy starts, every simulated hour or so, and when it ends. */
  readonly progress?: (p: SimProgress) => void;
}

/** Runs the workload of `options` once per policy; the same options give the same report. */
export async function runSimulation(
  options: SimOptions = {},
  hooks: SimHooks = {},
): Promise<SimReport> {
  const o = resolveSimOptions(options);
  const workload = generateWorkload(o);
  const results: PolicyResult[] = [];
  const traces: Record<string, TaskTrace[]> = {};
  for (const [index, policy] of o.policies.entries()) {
    const report = hooks.progress;
    const at = (simulatedMs: number, done: boolean) =>
      report?.({ policy, index, of: o.policies.length, simulatedMs, horizonMs: o.horizonMs, done });
    at(0, false);
    const run = await runPolicy(o, workload, policy, report ? at : undefined);
    at(run.endMs, true);
    results.push(run.result);
    if (o.trace) traces[policy] = run.traces;
  }
  return {
    scenario: o.name,
    options: o,
    workload: summarise(workload),
    results,
    ...(o.trace ? { traces } : {}),
  };
}

/** One policy on a fresh clock, node and orchestrator. */
async function runPolicy(
  o: ResolvedSimOptions,
  workload: Workload,
  policyName: PolicyName,
  progress?: (simulatedMs: number, done: false) => void,
): Promise<{ result: PolicyResult; traces: TaskTrace[]; endMs: number }> {
  const clock = new EventClock();
  const recorder = new Recorder(() => clock.elapsed());
  const stateMB = new Map(workload.sessions.map((s) => [`${s.tenant}/${s.session}`, s.stateMB]));
  const byTask = new Map<string, SimMessage>(workload.messages.map((m) => [m.taskId, m]));
  let orchestrator: SimOrchestrator | null = null;
  const later = (fn: () => void) => clock.setTimeout(fn, o.eventLatencyMs);

  const node = new SimNode(clock, o, {
    task: (taskId) => {
      const m = byTask.get(taskId);
      if (!m) throw new InternalError(`unknown task ${taskId}`);
      return {
        stateMB: stateMB.get(`${m.tenant}/${m.session}`) ?? 0,
        followUp: m.index > 0,
        turnMs: m.turnMs,
      };
    },
    turnStarted: (task, _container, reload, restoreMs) => {
      recorder.turnStarted(task.taskId, reload, restoreMs);
      later(() => orchestrator?.started(task.taskId, task.attempt));
    },
    turnEnded: (task) => {
      recorder.turnEnded(byTask.get(task.taskId)?.turnMs ?? 0);
      later(() => orchestrator?.succeeded(task.taskId, task.attempt));
    },
    containerStarted: () => recorder.containerStarted(),
    heartbeat: (hb) => orchestrator?.heartbeat(hb),
  });
  const policy = createPolicy(policyName, o.containers);
  const orch = new SimOrchestrator(clock, o, node, policy, recorder);
  orchestrator = orch;

  let toArrive = workload.messages.length;
  for (const m of workload.messages) {
    clock.at(m.at, () => {
      toArrive--;
      orch.submit(m);
    });
  }
  node.start();
  const endAt = o.horizonMs + o.drainMs;
  // Progress about every simulated hour (or every 1/20 of a shorter horizon).
  const step = Math.min(3600_000, Math.max(1, o.horizonMs / 20));
  let nextReport = step;
  await clock.run(
    endAt,
    () => toArrive === 0 && orch.open === 0,
    progress &&
      ((t) => {
        if (t < nextReport) return;
        nextReport = (Math.floor(t / step) + 1) * step;
        progress(t, false);
      }),
  );
  const end = Math.max(clock.elapsed(), toArrive === 0 && orch.open === 0 ? 0 : endAt);
  orch.stop();
  node.stop();
  return {
    result: recorder.result(policyName, o, end, clock.events),
    traces: recorder.traces(),
    endMs: end,
  };
}

function summarise(w: Workload): WorkloadSummary {
  const mb = w.sessions.reduce((s, x) => s + x.stateMB, 0);
  return {
    sessions: w.sessions.length,
    messages: w.messages.length,
    followUps: w.messages.filter((m) => m.index > 0).length,
    meanStateMB: w.sessions.length === 0 ? 0 : Math.round((mb / w.sessions.length) * 10) / 10,
    turnMsTotal: w.messages.reduce((s, m) => s + m.turnMs, 0),
  };
}
