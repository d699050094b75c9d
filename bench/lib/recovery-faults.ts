/**
 * Faults for the recovery bench, on top of the chaos harness (test/harness/chaos-fleet.ts
 * and its modules, used read-only): fleet events stamped with the time this process
 * received them, the processes that make up one container (node → bubblewrap sandbox →
 * agent), the four faults, and a replacement node for one that was killed.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import type { NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import { Arrivals } from "../../test/harness/arrivals.js";
import type { ChaosFleet } from "../../test/harness/chaos-fleet.js";
import type { FleetEvent } from "../../test/harness/fleet-observer.js";
import { isAlive } from "../../test/harness/process-table.js";
import { RoleProcess } from "../../test/harness/role-process.js";

/** The faults the bench injects, in the order it runs them. */
export const FAULT_KINDS = ["agent-kill", "agent-hang", "container-kill", "node-kill"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** What each fault does, for the report. */
export const FAULT_ACTIONS: Record<FaultKind, string> = {
  "agent-kill": "SIGKILL the agent process (the scripted agent inside the sandbox)",
  "agent-hang": "SIGSTOP the agent process (alive, silent: no heartbeats, no steps)",
  "container-kill":
    "SIGKILL the container: the node's child for it, the outer bubblewrap process (the whole sandbox goes with it; without a sandbox it is the agent itself)",
  "node-kill": "SIGKILL the node process running the task (its sandboxes die with it)",
};

/** A fleet event and when this process received it (`performance.now()`). */
export interface TimedEvent extends FleetEvent {
  readonly seenAt: number;
}

/**
 * Every task event and timeline line of the fleet from now on, stamped on arrival.
 * The harness records them too, but without times.
 */
export function timedEvents(fleet: ChaosFleet): { events: Arrivals<TimedEvent>; stop(): void } {
  const events = new Arrivals<TimedEvent>();
  const sub = fleet.nc.subscribe("fleet.events.>", {
    callback: (err, m) => {
      const seenAt = performance.now();
      if (err) return;
      const [, , source, taskId] = m.subject.split(".");
      try {
        const body = m.json<Omit<FleetEvent, "source" | "taskId">>();
        events.push({ ...body, source: source!, taskId: taskId!, seenAt });
      } catch {
        // Not JSON: not a line of ours.
      }
    },
  });
  return { events, stop: () => sub.unsubscribe() };
}

/** The processes of one container running a task. */
export interface FaultTarget {
  readonly node: string;
  readonly container: string;
  readonly nodePid: number;
  /** The node's child for the container: bubblewrap around the agent, or the agent itself without a sandbox. */
  readonly containerPid: number;
  /** The scripted agent process. */
  readonly agentPid: number;
  /** Whether the container is a sandbox around the agent (else container and agent are one process). */
  readonly sandboxed: boolean;
}

/**
 * Finds the processes of `container` on `node` (see {@link FaultTarget}) through the
 * harness's `containerProcesses`: the node's child for the container (the outer bwrap
 * with bubblewrap) and the agent below it.
 */
export async function locate(
  fleet: ChaosFleet,
  node: string,
  container: string,
): Promise<FaultTarget> {
  const { root, agent, sandboxed } = await fleet.containerProcesses(node, container);
  return {
    node,
    container,
    nodePid: fleet.pidOf(node),
    containerPid: root,
    agentPid: agent,
    sandboxed,
  };
}

/** Injects `kind` into `target`; returns at once (the signal is sent, its effect is not awaited). */
export function inject(kind: FaultKind, target: FaultTarget): void {
  switch (kind) {
    case "agent-kill":
      process.kill(target.agentPid, "SIGKILL");
      return;
    case "agent-hang":
      process.kill(target.agentPid, "SIGSTOP");
      return;
    case "container-kill":
      process.kill(target.containerPid, "SIGKILL");
      return;
    case "node-kill":
      process.kill(target.nodePid, "SIGKILL");
      return;
  }
}

/**
 * Waits until `pid` is gone (a zombie counts as gone); false if it is still alive
 * after `timeoutMs`.
 */
export async function gone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (await isAlive(pid)) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Resumes and kills a process we stopped, if it is still there. */
export function release(pid: number): void {
  for (const signal of ["SIGCONT", "SIGKILL"] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }
}

/**
 * Starts one more node role in `fleet` (same NATS, data dir and options as the others)
 * and waits until it announces `idle` free containers. It joins `fleet.nodes`, so the
 * harness's disposal kills it and whatever it started.
 */
export async function addNode(
  fleet: ChaosFleet,
  id: string,
  config: object,
  idle: number,
): Promise<void> {
  const file = path.join(fleet.dir, "recovery-node.config.json");
  await writeFile(file, JSON.stringify(config));
  const node = RoleProcess.spawn(id, [
    "node",
    "--nats",
    fleet.nats.url,
    "--id",
    id,
    "--data-dir",
    fleet.dataDir,
    "--config",
    file,
    "--log-level",
    "warn",
  ]);
  fleet.nodes.set(id, node);
  await node.ready("connected to");
  await fleet.waitNodes([id], idle, 60_000);
}

/**
 * Waits until each of `nodes` announces at least one idle container and none starting:
 * the steady state a fault is injected in, so a task and its retry find warm containers.
 */
export async function settled(
  fleet: ChaosFleet,
  nodes: readonly string[],
  timeoutMs: number,
): Promise<void> {
  const kv = await fleet.kv("fleet_nodes");
  await Promise.all(
    nodes.map((id) =>
      fleet.watchKey(
        kv,
        id,
        (v) => {
          const hb = v as NodeHeartbeat | null;
          if (!hb) return false;
          const states = hb.containers.map((c) => c.state);
          return states.includes("idle") && !states.includes("starting");
        },
        `node ${id} with an idle container and none starting`,
        timeoutMs,
      ),
    ),
  );
}
