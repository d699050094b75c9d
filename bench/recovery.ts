/**
 * Recovery: how long the fleet takes to notice that a running task's attempt is lost, and
 * to resume the task, for four faults (agent kill, agent hang, container kill, node kill),
 * with the fleet's default liveness settings, next to the detection bound those settings
 * promise. Real role processes (orchestrator, gateway, two nodes) on a real nats-server,
 * through the chaos harness (test/harness/chaos-fleet.ts).
 */
import { readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { findNatsServer, processPoolAvailableSandbox, resolveFleetOptions } from "../src/index.js";
import { livenessCheckEveryMs } from "../src/roles/liveness-monitor.js";
import { ChaosFleet, script } from "../test/harness/chaos-fleet.js";
import { withCleanup } from "./lib/cleanup.js";
import { round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { FAULT_ACTIONS, FAULT_KINDS, type FaultKind, timedEvents } from "./lib/recovery-faults.js";
import { type Ctx, FAULT_AFTER, runRep, taskOps } from "./lib/recovery-repetition.js";
import { type FaultResult, fmt, type Rep, summarise, summary } from "./lib/recovery-report.js";
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

export const usage = `npm run bench -- recovery [options]

Time to detect a lost attempt and time to resume the task, for an agent kill (SIGKILL),
an agent hang (SIGSTOP), a container kill (SIGKILL of the agent's sandbox) and a node kill
(SIGKILL of the node process), each injected right after a step was checkpointed. Real
role processes (orchestrator, gateway, two nodes) on their own nats-server, with the
fleet's default liveness settings. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

/** Nodes in the fleet: a node kill needs a survivor to resume on. */
const NODES = 2;

/**
 * The fleet's options: every liveness setting at its default. One pool per node with its
 * defaults too (minIdle 1, max 4), so the fleet keeps a warm container to resume on besides
 * the one running the task; except that a container that served a session is idle again at
 * once (`reservedWindowMs` 0, not a liveness setting). With the default 60 s window every
 * repetition leaves a container reserved for a session that never comes back, the pools
 * fill up to `max`, and the next repetition waits for a reservation to lapse.
 */
const FLEET_CONFIG = { pools: [{ reservedWindowMs: 0 }] };

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
  const tick = livenessCheckEveryMs(options);
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
      config: FLEET_CONFIG,
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
