/**
 * Cleanup rules of the Docker pool: which containers of a fleet are orphans
 * (no live node owns them), and which idle containers have outstayed the idle
 * TTL. Containers are recognised by their labels alone, so a node that crashed
 * and left its containers running is cleaned up by any node of the fleet on
 * the same engine, or by itself when it comes back.
 */
import type Docker from "dockerode";
import { type ContainerOwner, LABELS } from "./docker-container.js";

/** A container removed as an orphan. */
export interface RemovedOrphan {
  readonly dockerId: string;
  readonly node: string;
  readonly name: string;
}

/** How {@link removeOrphans} decides. */
export interface OrphanRules {
  /** Ids of the fleet's live nodes; without it only this node's stale containers go. */
  readonly liveNodes?: () => Promise<ReadonlySet<string>>;
  /** Containers of other nodes younger than this are kept: their node may not have announced itself yet. */
  readonly graceMs: number;
  readonly now: number;
}

/**
 * Removes the fleet's containers that no live node owns: those of this node
 * from an earlier run (another instance label), and those of nodes that are
 * not alive. Containers of this run are never touched.
 */
export async function removeOrphans(
  docker: Docker,
  owner: ContainerOwner,
  rules: OrphanRules,
): Promise<RemovedOrphan[]> {
  const list = await docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.fleet}=${owner.fleet}`] },
  });
  const removed: RemovedOrphan[] = [];
  let live: ReadonlySet<string> | undefined;
  for (const c of list) {
    const node = c.Labels[LABELS.node] ?? "";
    if (c.Labels[LABELS.instance] === owner.instance) continue;
    if (node !== owner.node) {
      if (!rules.liveNodes || rules.now - c.Created * 1000 < rules.graceMs) continue;
      live ??= await rules.liveNodes();
      if (live.has(node)) continue;
    }
    await docker
      .getContainer(c.Id)
      .remove({ force: true, v: true })
      .catch(() => {});
    removed.push({ dockerId: c.Id, node, name: c.Names[0]?.replace(/^\//, "") ?? "" });
  }
  return removed;
}

/** An up container that is not running a turn, as reaping sees it. */
export interface IdleContainer {
  readonly id: string;
  readonly pool: string;
  readonly idleMs: number;
  /** Its pool's `minIdle`: that many idle containers are always kept. */
  readonly minIdle: number;
}

/**
 * The containers to reap: per pool, longest idle first, those idle past
 * `ttlMs` while more than `minIdle` idle containers would remain.
 */
export function pickReap(idle: readonly IdleContainer[], ttlMs: number): IdleContainer[] {
  const byPool = new Map<string, IdleContainer[]>();
  for (const c of idle) byPool.set(c.pool, [...(byPool.get(c.pool) ?? []), c]);
  const out: IdleContainer[] = [];
  for (const list of byPool.values()) {
    list.sort((a, b) => b.idleMs - a.idleMs);
    let left = list.length;
    for (const c of list) {
      if (left <= c.minIdle || c.idleMs <= ttlMs) break;
      out.push(c);
      left--;
    }
  }
  return out;
}
