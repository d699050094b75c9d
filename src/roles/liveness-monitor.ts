/**
 * How the leading orchestrator knows what is alive: node heartbeats (the fleet
 * view placement reads) and task leases. Both are judged by when this process
 * last saw them change, never by the writer's clock, so hosts need not agree
 * on the time. A node silent for `nodeTimeoutMs` is lost; a running attempt
 * whose lease was not renewed for `leaseTtlMs` has expired.
 */
import type { FleetView } from "../actors/placement-ladder.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import type { TaskLeaseValue } from "../adapters/records/task-lease.js";
import { type Clock, every } from "../clock.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import { type NodeHeartbeat, NodeHeartbeatSchema } from "../protocol/fleet-messages.js";

/** A running attempt the monitor should watch. */
export interface RunningAttempt {
  readonly taskId: string;
  readonly attempt: number;
  readonly node: string | undefined;
  /** When this process first saw the attempt running. */
  readonly since: number;
}

/** What the monitor reports to its owner. */
export interface LivenessHooks {
  nodeSeen(hb: NodeHeartbeat): void;
  nodeLost(id: string): void;
  leaseExpired(taskId: string, attempt: number): void;
  /** The attempts running now. */
  running(): Iterable<RunningAttempt>;
}

/**
 * How often the monitor judges nodes and leases. A check is a pass over in-memory maps,
 * cheap enough to run often, so a loss is seen within 5% of its timeout (250 ms with the
 * defaults) after it.
 */
export function livenessCheckEveryMs(
  options: Pick<ResolvedFleetOptions, "nodeTimeoutMs" | "leaseTtlMs">,
): number {
  return Math.max(20, Math.min(options.nodeTimeoutMs, options.leaseTtlMs) / 20);
}

/** Watches nodes and leases for one leadership term. */
export class LivenessMonitor {
  readonly view: FleetView & { nodes: Map<string, NodeHeartbeat> } = { nodes: new Map() };
  private readonly nodeSeenAt = new Map<string, number>();
  private readonly leaseSeenAt = new Map<string, { attempt: number; at: number }>();
  private readonly stoppers: Array<() => void> = [];
  private readonly since: number;
  private stopped = false;

  constructor(
    private readonly nats: FleetNats,
    private readonly options: ResolvedFleetOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly hooks: LivenessHooks,
  ) {
    this.since = clock.now();
  }

  async start(): Promise<void> {
    await this.watch(this.nats.kv.nodes, ">", (key, value) => this.onNode(key, value));
    await this.watch(this.nats.kv.leases, "task.>", (key, value) => this.onLease(key, value));
    this.stoppers.push(every(this.clock, livenessCheckEveryMs(this.options), () => this.check()));
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.stoppers) s();
  }

  private async watch(
    kv: FleetNats["kv"]["nodes"],
    key: string,
    apply: (key: string, value: unknown | null) => void,
  ): Promise<void> {
    const watch = await kv.watch({ key });
    this.stoppers.push(() => watch.stop());
    void (async () => {
      for await (const e of watch) {
        if (this.stopped) return;
        let value: unknown = null;
        if (e.operation === "PUT") {
          try {
            value = e.json();
          } catch {
            continue;
          }
        }
        apply(e.key, value);
      }
    })();
  }

  private onNode(key: string, value: unknown | null): void {
    if (value === null) {
      this.lose(key, true);
      return;
    }
    const hb = NodeHeartbeatSchema.safeParse(value);
    if (!hb.success) return;
    const prev = this.view.nodes.get(hb.data.id);
    if (prev && prev.startedAt === hb.data.startedAt && prev.seq >= hb.data.seq) return;
    this.view.nodes.set(hb.data.id, hb.data);
    this.nodeSeenAt.set(hb.data.id, this.clock.now());
    this.hooks.nodeSeen(hb.data);
  }

  private onLease(key: string, value: unknown | null): void {
    const taskId = key.slice("task.".length);
    const lease = value as TaskLeaseValue | null;
    if (!lease || lease.revoked) this.leaseSeenAt.delete(taskId);
    else this.leaseSeenAt.set(taskId, { attempt: lease.attempt, at: this.clock.now() });
  }

  /**
   * A node is gone: its heartbeat is stale, or its key was deleted. A node that announced
   * it was stopping and then deleted its key left as it said it would: no warning. Either
   * way its running attempts are retried elsewhere.
   */
  private lose(id: string, deleted = false): void {
    const last = this.view.nodes.get(id);
    this.view.nodes.delete(id);
    this.nodeSeenAt.delete(id);
    if (last && deleted && last.stopping && !last.failure) this.log.info({ node: id }, "node left");
    else if (last) this.log.warn({ node: id }, "node lost");
    this.hooks.nodeLost(id);
  }

  private check(): void {
    const now = this.clock.now();
    for (const [id, seen] of this.nodeSeenAt) {
      if (now - seen > this.options.nodeTimeoutMs) this.lose(id);
    }
    for (const r of this.hooks.running()) {
      // Until a term has watched for a full timeout, an unknown node may just not have reported yet.
      if (r.node && !this.view.nodes.has(r.node) && now - this.since > this.options.nodeTimeoutMs) {
        this.hooks.nodeLost(r.node);
        continue;
      }
      const lease = this.leaseSeenAt.get(r.taskId);
      const renewedAt = lease && lease.attempt === r.attempt ? lease.at : 0;
      if (now - Math.max(renewedAt, r.since) > this.options.leaseTtlMs) {
        this.log.warn({ taskId: r.taskId, attempt: r.attempt }, "task lease expired");
        this.hooks.leaseExpired(r.taskId, r.attempt);
      }
    }
  }
}
