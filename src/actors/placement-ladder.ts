/**
 * The preference ladder (DESIGN.md): where the next task of a session should
 * run. Pure functions over a view of the fleet, so the orchestrator, its tests
 * and the placement simulator all run the same code.
 */
import type { Rung } from "../protocol/api-schemas.js";
import type { ContainerInfo, NodeHeartbeat } from "../protocol/fleet-messages.js";
import type { Placement } from "./task-machine.js";

/** What placement needs to know about the fleet: live nodes and their containers. */
export interface FleetView {
  readonly nodes: ReadonlyMap<string, NodeHeartbeat>;
}

/** Placements decided but not yet visible in node heartbeats. */
export interface Claims {
  /** Containers promised to a task. */
  readonly containers: ReadonlySet<string>;
  /** New containers requested per `node/pool`, not yet seen in a heartbeat. */
  readonly newByPool: ReadonlyMap<string, number>;
  /** Containers and `node/pool`s that refused work since their last heartbeat. */
  readonly refused: ReadonlySet<string>;
}

/** What placement knows of the task itself (see {@link decidePlacement}). */
export interface PlacementTask {
  readonly taskId?: string;
  readonly avoid?: ReadonlySet<string>;
}

/** No claims. */
export const noClaims: Claims = { containers: new Set(), newByPool: new Map(), refused: new Set() };

/** The ladder's answer: run there, wait behind the session's busy container, or wait for capacity. */
export type LadderDecision =
  | { kind: "place"; placement: Placement }
  | { kind: "wait"; rung: Extract<Rung, "own-busy"> }
  | { kind: "no-capacity" };

/** Key of a pool across the fleet. */
export function poolKey(node: string, pool: string): string {
  return `${node}/${pool}`;
}

const holds = (c: ContainerInfo, tenant: string, session: string) =>
  c.tenant === tenant && c.session === session;

/**
 * Walks the ladder for one task of `tenant/session`:
 * 1. the session's container is busy with it → wait behind it;
 * 2. a container reserved for the session → take it;
 * 3. an idle container holding the session's warm state → take it;
 * 4. any idle container (restore into it) → prefer ones holding no one's warm state;
 * 5. a pool that may grow → start a new container there (the pool with most room);
 * and when none may grow, another session's reserved container (restored into, as idle).
 *
 * For a task placed again, `task.taskId` keeps its own abandoned attempt (still
 * shown busy by a node that is not yet known dead) from counting as the session's
 * busy container, and `task.avoid` names containers its attempts died in (healing
 * tier 2): passed over while anything else will do, taken when nothing else ever would.
 */
export function decidePlacement(
  tenant: string,
  session: string,
  view: FleetView,
  claims: Claims = noClaims,
  task: PlacementTask = {},
): LadderDecision {
  if (task.avoid && task.avoid.size > 0) {
    const refused = new Set([...claims.refused, ...task.avoid]);
    const elsewhere = decidePlacement(
      tenant,
      session,
      view,
      { ...claims, refused },
      {
        taskId: task.taskId,
      },
    );
    if (elsewhere.kind !== "no-capacity") return elsewhere;
  }
  const containers: ContainerInfo[] = [];
  for (const node of view.nodes.values()) {
    if (node.stopping) continue;
    for (const c of node.containers) containers.push(c);
  }
  const free = (c: ContainerInfo) => !claims.containers.has(c.id) && !claims.refused.has(c.id);

  if (
    containers.some(
      (c) =>
        holds(c, tenant, session) &&
        (c.state === "busy" || c.state === "starting") &&
        (task.taskId === undefined || c.taskId !== task.taskId),
    )
  ) {
    return { kind: "wait", rung: "own-busy" };
  }
  const reserved = containers.find(
    (c) => c.state === "reserved" && holds(c, tenant, session) && free(c),
  );
  if (reserved) return place(reserved, "reserved");
  const warm = containers.find((c) => c.state === "idle" && holds(c, tenant, session) && free(c));
  if (warm) return place(warm, "warm");
  const idle = containers.filter((c) => c.state === "idle" && free(c));
  const cold = idle.find((c) => c.session === undefined) ?? idle[0];
  if (cold) return place(cold, "idle");

  let best: { node: string; pool: string; room: number } | null = null;
  for (const node of view.nodes.values()) {
    if (node.stopping) continue;
    for (const p of node.pools) {
      const key = poolKey(node.id, p.name);
      if (claims.refused.has(key)) continue;
      const room = p.max - p.size - (claims.newByPool.get(key) ?? 0);
      if (room > 0 && (best === null || room > best.room))
        best = { node: node.id, pool: p.name, room };
    }
  }
  if (best) return { kind: "place", placement: { node: best.node, pool: best.pool, rung: "new" } };
  // Last resort: another session's reservation. Affinity is a preference, never a pin.
  const reservedElsewhere = containers.find((c) => c.state === "reserved" && free(c));
  if (reservedElsewhere) return place(reservedElsewhere, "idle");
  return { kind: "no-capacity" };
}

function place(c: ContainerInfo, rung: Rung): LadderDecision {
  return { kind: "place", placement: { node: c.node, pool: c.pool, container: c.id, rung } };
}
