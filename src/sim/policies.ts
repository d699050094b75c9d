/**
 * The placement policies the simulator compares. All see the same fleet view (node
 * heartbeats) and keep claims the same way, so they differ only in where they send a task:
 *
 * - `ladder`: the real thing: {@link PlacementClaims} over `decidePlacement`, with
 *   the scheduler's warm pass before its cold pass.
 * - `any-free`: the first free container (idle or reserved, for any session), restoring
 *   when it does not hold the session; a new container when none is free and the pool may
 *   grow. No notion of affinity.
 * - `pinned`: each session hashed to one of the pool's slots, a slot bound to one
 *   container; the task waits until that container is free.
 */
import {
  type Claims,
  decidePlacement,
  type FleetView,
  type LadderDecision,
  poolKey,
} from "../actors/placement-ladder.js";
import type { Placement } from "../actors/task-machine.js";
import type { Rung } from "../protocol/api-schemas.js";
import type { ContainerInfo, NodeHeartbeat } from "../protocol/fleet-messages.js";
import { PlacementClaims } from "../roles/placement-claims.js";
import type { PolicyName } from "./sim-options.js";
import { fnv1a } from "./workload.js";

/** Where a policy sends the head task of a session, and the claims it keeps meanwhile. */
export interface PlacementPolicy {
  readonly name: PolicyName;
  /** Places warm/reserved rungs in a pass of their own before the cold ones (the ladder's scheduler). */
  readonly warmFirst: boolean;
  decide(tenant: string, session: string, view: FleetView): LadderDecision;
  claim(taskId: string, placement: Placement, tenant: string, session: string): void;
  release(taskId: string): void;
  refuse(placement: Placement): void;
  observe(hb: NodeHeartbeat): void;
  /** The node accepted the task's attempt on `container`. */
  accepted(taskId: string, container: string): void;
}

/**
 * The real {@link PlacementClaims}, with their current state readable: the baselines
 * need it to skip containers already promised to a task.
 */
abstract class ClaimsKeeper {
  private readonly claims = new PlacementClaims();
  claim(taskId: string, placement: Placement, _tenant: string, _session: string): void {
    this.claims.claim(taskId, placement);
  }
  release(taskId: string): void {
    this.claims.release(taskId);
  }
  refuse(placement: Placement): void {
    this.claims.refuse(placement);
  }
  observe(hb: NodeHeartbeat): void {
    this.claims.observe(hb);
  }
  protected snapshot(): Claims {
    return this.claims.current();
  }
  /** Whether `c` can take a task now: up, not busy, not promised, not refusing. */
  protected free(c: ContainerInfo, claims: Claims): boolean {
    return (
      (c.state === "idle" || c.state === "reserved") &&
      !claims.containers.has(c.id) &&
      !claims.refused.has(c.id)
    );
  }
  /** A pool that may start one more container, first in view order. */
  protected growable(view: FleetView, claims: Claims): Placement | null {
    for (const node of view.nodes.values()) {
      if (node.stopping) continue;
      for (const p of node.pools) {
        const key = poolKey(node.id, p.name);
        if (claims.refused.has(key)) continue;
        if (p.max - p.size - (claims.newByPool.get(key) ?? 0) > 0)
          return { node: node.id, pool: p.name, rung: "new" };
      }
    }
    return null;
  }
  accepted(_taskId: string, _container: string): void {}
}

/** The real ladder with the real claims. */
class LadderPolicy extends ClaimsKeeper implements PlacementPolicy {
  readonly name = "ladder" as const;
  readonly warmFirst = true;
  decide(tenant: string, session: string, view: FleetView): LadderDecision {
    return decidePlacement(tenant, session, view, this.snapshot());
  }
}

function containersOf(view: FleetView): ContainerInfo[] {
  const out: ContainerInfo[] = [];
  for (const node of view.nodes.values()) if (!node.stopping) out.push(...node.containers);
  return out;
}

/** The rung a choice of container amounts to, for counting placements alike. */
function rungOf(c: ContainerInfo, tenant: string, session: string): Rung {
  if (c.tenant !== tenant || c.session !== session) return "idle";
  return c.state === "reserved" ? "reserved" : "warm";
}

const place = (c: ContainerInfo, rung: Rung): LadderDecision => ({
  kind: "place",
  placement: { node: c.node, pool: c.pool, container: c.id, rung },
});

/** First free container, whoever it belongs to; else a new one; else wait. */
class AnyFreePolicy extends ClaimsKeeper implements PlacementPolicy {
  readonly name = "any-free" as const;
  readonly warmFirst = false;
  decide(tenant: string, session: string, view: FleetView): LadderDecision {
    const claims = this.snapshot();
    const c = containersOf(view).find((x) => this.free(x, claims));
    if (c) return place(c, rungOf(c, tenant, session));
    const grow = this.growable(view, claims);
    return grow ? { kind: "place", placement: grow } : { kind: "no-capacity" };
  }
}

/** Each session hashed to one of `slots` slots; a slot is bound to one container for good. */
class PinnedPolicy extends ClaimsKeeper implements PlacementPolicy {
  readonly name = "pinned" as const;
  readonly warmFirst = false;
  private readonly bound = new Map<number, string>();
  private readonly boundIds = new Set<string>();
  /** Tasks starting the container of a slot: slot by task id. */
  private readonly starting = new Map<string, number>();

  constructor(private readonly slots: number) {
    super();
  }

  decide(tenant: string, session: string, view: FleetView): LadderDecision {
    const slot = this.slotOf(tenant, session);
    const claims = this.snapshot();
    const all = containersOf(view);
    let id = this.bound.get(slot);
    if (id !== undefined && !all.some((c) => c.id === id)) {
      this.unbind(slot);
      id = undefined;
    }
    if (id === undefined) {
      if ([...this.starting.values()].includes(slot)) return { kind: "no-capacity" };
      const spare = all.find((c) => !this.boundIds.has(c.id));
      if (spare) this.bind(slot, spare.id);
      else {
        const grow = this.growable(view, claims);
        return grow ? { kind: "place", placement: grow } : { kind: "no-capacity" };
      }
    }
    const c = all.find((x) => x.id === this.bound.get(slot));
    if (c && this.free(c, claims)) return place(c, rungOf(c, tenant, session));
    return { kind: "no-capacity" };
  }

  override claim(taskId: string, placement: Placement, tenant: string, session: string): void {
    super.claim(taskId, placement, tenant, session);
    // A new container: it will serve the slot the task's session hashes to.
    if (placement.container === undefined) this.starting.set(taskId, this.slotOf(tenant, session));
  }

  override release(taskId: string): void {
    super.release(taskId);
    this.starting.delete(taskId);
  }

  override accepted(taskId: string, container: string): void {
    const slot = this.starting.get(taskId);
    if (slot === undefined) return;
    this.starting.delete(taskId);
    this.bind(slot, container);
  }

  private slotOf(tenant: string, session: string): number {
    return fnv1a(`${tenant}/${session}`) % this.slots;
  }

  private bind(slot: number, id: string): void {
    this.bound.set(slot, id);
    this.boundIds.add(id);
  }

  private unbind(slot: number): void {
    const id = this.bound.get(slot);
    if (id !== undefined) this.boundIds.delete(id);
    this.bound.delete(slot);
  }
}

/** The policy named `name`, fresh for one run on a pool of `containers`. */
export function createPolicy(name: PolicyName, containers: number): PlacementPolicy {
  switch (name) {
    case "ladder":
      return new LadderPolicy();
    case "any-free":
      return new AnyFreePolicy();
    case "pinned":
      return new PinnedPolicy(containers);
  }
}
