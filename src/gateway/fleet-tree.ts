/**
 * `tree`: the fleet's supervision tree as NATS knows it. Each live node's
 * supervisor with its pools (restart counts), their containers and what each
 * holds (session, task), and the sessions the leading orchestrator is healing,
 * with their tier and tier history.
 */
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import type { Clock } from "../clock.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { ContainerInfo, OrchestratorStatus } from "../protocol/fleet-messages.js";
import { liveNodes, orchestratorStatus } from "./fleet-status.js";

/** One container in the tree. */
export type TreeContainer = Pick<
  ContainerInfo,
  "id" | "state" | "tenant" | "session" | "taskId" | "restarts"
>;

/** The whole tree. */
export interface FleetTree {
  orchestrator: { id: string; since: string; queueDepth: number; running: number } | null;
  nodes: Array<{
    id: string;
    startedAt: string;
    lastSeen: string;
    stopping: boolean;
    /** Why its root supervisor gave up, if it did. */
    failure?: string;
    pools: Array<{
      name: string;
      runtime: string;
      size: number;
      max: number;
      minIdle: number;
      restarts: number;
      /** Crashes of the pool actor that the node's root supervisor restarted. */
      crashes: number;
      containers: TreeContainer[];
    }>;
  }>;
  sessions: OrchestratorStatus["sessions"];
}

/** Reads the tree from node heartbeats and the leading orchestrator. */
export async function readFleetTree(
  nats: FleetNats,
  options: ResolvedFleetOptions,
  clock: Clock,
): Promise<FleetTree> {
  const [nodes, orch] = await Promise.all([
    liveNodes(nats, options, clock),
    orchestratorStatus(nats),
  ]);
  return {
    orchestrator: orch && {
      id: orch.id,
      since: orch.since,
      queueDepth: orch.queueDepth,
      running: orch.running,
    },
    nodes: nodes.map((n) => ({
      id: n.id,
      startedAt: n.startedAt,
      lastSeen: n.at,
      stopping: n.stopping ?? false,
      ...(n.failure ? { failure: n.failure } : {}),
      pools: n.pools.map((p) => ({
        name: p.name,
        runtime: p.runtime,
        size: p.size,
        max: p.max,
        minIdle: p.minIdle,
        restarts: p.restarts,
        crashes: p.crashes,
        containers: n.containers
          .filter((c) => c.pool === p.name)
          .map(({ id, state, tenant, session, taskId, restarts }) => ({
            id,
            state,
            tenant,
            session,
            taskId,
            restarts: restarts ?? 0,
          })),
      })),
    })),
    sessions: orch?.sessions ?? [],
  };
}
