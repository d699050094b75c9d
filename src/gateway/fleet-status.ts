/**
 * `status`: the fleet as NATS knows it. Nodes and containers come from the
 * nodes bucket (live heartbeats only), queue depth from the leading
 * orchestrator; a fleet without a leader reports `queueDepth: null`.
 */
import { bucketKeys, type FleetNats } from "../adapters/nats/fleet-nats.js";
import { LeaderLease, ORCHESTRATOR_LEASE_KEY } from "../adapters/records/leader-lease.js";
import type { Clock } from "../clock.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { FleetStatus } from "../protocol/api-schemas.js";
import {
  type NodeHeartbeat,
  NodeHeartbeatSchema,
  type OrchestratorStatus,
  OrchestratorStatusSchema,
} from "../protocol/fleet-messages.js";

/** The nodes whose heartbeat is fresh (a heartbeat older than the node timeout is a dead node's last word). */
export async function liveNodes(
  nats: FleetNats,
  options: ResolvedFleetOptions,
  clock: Clock,
): Promise<NodeHeartbeat[]> {
  const nodes: NodeHeartbeat[] = [];
  for (const key of await bucketKeys(nats.jsm, nats.subjects.buckets.nodes)) {
    const entry = await nats.kv.nodes.get(key);
    if (entry?.operation !== "PUT") continue;
    const hb = NodeHeartbeatSchema.safeParse(entry.json());
    if (!hb.success) continue;
    if (clock.now() - Date.parse(hb.data.at) > options.nodeTimeoutMs) continue;
    nodes.push(hb.data);
  }
  return nodes.sort((a, b) => a.id.localeCompare(b.id));
}

/** The leading orchestrator's own status, or null when none answers. */
export async function orchestratorStatus(nats: FleetNats): Promise<OrchestratorStatus | null> {
  try {
    const reply = await nats.nc.request(nats.subjects.ctl("status"), "", { timeout: 1500 });
    return OrchestratorStatusSchema.parse(reply.json());
  } catch {
    return null;
  }
}

/** Reads the fleet's status from NATS. */
export async function readFleetStatus(
  nats: FleetNats,
  options: ResolvedFleetOptions,
  clock: Clock,
): Promise<FleetStatus> {
  const nodes = await liveNodes(nats, options, clock);
  const containers: Record<string, number> = {};
  for (const n of nodes)
    for (const c of n.containers) containers[c.state] = (containers[c.state] ?? 0) + 1;

  let queueDepth: number | null = null;
  let placements: Record<string, number> = {};
  let orchestrator: FleetStatus["orchestrator"] = null;
  const s = await orchestratorStatus(nats);
  if (s) {
    queueDepth = s.queueDepth;
    placements = s.placements;
    orchestrator = { id: s.id, since: s.since };
  } else {
    const lease = await LeaderLease.read(nats.kv.leases, ORCHESTRATOR_LEASE_KEY).catch(() => null);
    if (lease && lease.expiresAt > clock.now())
      orchestrator = { id: lease.owner, since: lease.since };
  }
  return {
    nodes: nodes.map((n) => ({ id: n.id, startedAt: n.startedAt, lastSeen: n.at, pools: n.pools })),
    pools: nodes.flatMap((n) => n.pools),
    containers,
    queueDepth,
    placements,
    orchestrator,
  };
}
