/**
 * Placements the orchestrator has made that node heartbeats do not show yet.
 * Without them two tasks would be sent to the same idle container, or a pool
 * asked for more new containers than it may hold, between two heartbeats.
 * Nodes stay the authority: a refused dispatch just marks the target
 * unavailable until its node's next heartbeat.
 */
import {
  type Claims,
  decidePlacement,
  type FleetView,
  type LadderDecision,
  type PlacementTask,
  poolKey,
} from "../actors/placement-ladder.js";
import type { Placement } from "../actors/task-machine.js";
import type { NodeHeartbeat } from "../protocol/fleet-messages.js";

/** Claims of one orchestrator term. */
export class PlacementClaims {
  private readonly byTask = new Map<string, Placement>();
  private readonly refused = new Set<string>();

  /** Walks the ladder with this term's claims applied. */
  decide(tenant: string, session: string, view: FleetView, task?: PlacementTask): LadderDecision {
    return decidePlacement(tenant, session, view, this.current(), task);
  }

  claim(taskId: string, placement: Placement): void {
    this.byTask.set(taskId, placement);
  }

  release(taskId: string): void {
    this.byTask.delete(taskId);
  }

  /** The target refused work: skip it until its node reports again. */
  refuse(placement: Placement): void {
    this.refused.add(placement.container ?? poolKey(placement.node, placement.pool));
  }

  /** A heartbeat arrived: its containers and pools are current again. */
  observe(hb: NodeHeartbeat): void {
    for (const c of hb.containers) {
      this.refused.delete(c.id);
      if (c.taskId && this.byTask.has(c.taskId)) this.byTask.delete(c.taskId);
    }
    for (const p of hb.pools) this.refused.delete(poolKey(hb.id, p.name));
  }

  /** The claims as they stand, in the form the ladder reads. */
  current(): Claims {
    const containers = new Set<string>();
    const newByPool = new Map<string, number>();
    for (const p of this.byTask.values()) {
      if (p.container) containers.add(p.container);
      else {
        const key = poolKey(p.node, p.pool);
        newByPool.set(key, (newByPool.get(key) ?? 0) + 1);
      }
    }
    return { containers, newByPool, refused: this.refused };
  }
}
