/**
 * A simulated node: the real pool and container machines on the simulated clock, with
 * their I/O actors replaced by timers. What `FleetNode` does around them (answer a
 * dispatch, announce containers in a heartbeat, let pools top up after every change) is
 * repeated here without NATS, following `src/roles/fleet-node.ts` line for line.
 *
 * Simulated: starting a container takes `containerStartMs`; a turn takes the message's
 * drawn duration, preceded by a restore of `restoreBaseMs + restoreMsPerMB × state size`
 * when the task is a follow-up and the container does not hold the session's warm state
 * (a session's first message has nothing to restore). Agents never crash.
 */
import { type Actor, createActor, fromPromise } from "xstate";
import {
  containerMachine,
  containerStateOf,
  type RunTaskInput,
  type TaskOutcome,
} from "../actors/container-machine.js";
import { announcePool, poolMachine, refuseStart } from "../actors/pool-machine.js";
import type { ContainerHandle } from "../adapters/agent-link/pool-adapter.js";
import { type Clock, isoNow } from "../clock.js";
import { ErrorCodes, InternalError, RetryableError } from "../errors.js";
import { type PoolProfile, resolvePoolProfile } from "../fleet-options.js";
import type { DispatchReply, DispatchRequest, NodeHeartbeat } from "../protocol/fleet-messages.js";
import type { ResolvedSimOptions } from "./sim-options.js";

/** What the node needs from the rest of the simulation. */
export interface SimNodeWorld {
  /** The message behind a task: its session's state size, whether it is a follow-up, its turn. */
  task(taskId: string): { readonly stateMB: number; readonly followUp: boolean; turnMs: number };
  /** The turn begins on `container` (after a restore of `restoreMs`, when `reload`). */
  turnStarted(task: DispatchRequest, container: string, reload: boolean, restoreMs: number): void;
  /** The turn ended successfully. */
  turnEnded(task: DispatchRequest, container: string): void;
  /** A container was started. */
  containerStarted(id: string): void;
  /** The node announces itself. */
  heartbeat(hb: NodeHeartbeat): void;
}

/** A container handle for a container that runs nothing: turns are timers. */
class SimHandle implements ContainerHandle {
  readonly alive = true;
  readonly workspaceDir: string;
  constructor(readonly id: string) {
    this.workspaceDir = `/sim/${id}`;
  }
  async runTurn(): Promise<string> {
    throw new InternalError("simulated turns go through runTask");
  }
  onExit(): () => void {
    return () => {};
  }
  logTail(): string[] {
    return [];
  }
  async stop(): Promise<void> {}
}

const delay = (clock: Clock, ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = clock.setTimeout(() => resolve(), ms);
    signal?.addEventListener("abort", () => {
      clock.clearTimeout(timer);
      reject(new RetryableError(ErrorCodes.CANCELED, `aborted: ${String(signal.reason)}`));
    });
  });

/** One node with one pool of `containers` simulated containers. */
export class SimNode {
  readonly id = "sim-node";
  private readonly profile: PoolProfile;
  private readonly pool: Actor<typeof poolMachine>;
  private readonly startedAt: string;
  private readonly startMs: number;
  private seq = 0;
  private count = 0;
  private heartbeatQueued = false;
  private checkQueued = false;
  private tick: unknown = null;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly o: ResolvedSimOptions,
    private readonly world: SimNodeWorld,
  ) {
    this.startedAt = isoNow(clock);
    this.startMs = clock.now();
    this.profile = resolvePoolProfile({
      name: "default",
      minIdle: o.minIdle,
      max: o.containers,
      maxConcurrentStarts: o.maxConcurrentStarts,
      reservedWindowMs: o.reservedWindowMs,
      sandbox: "none",
    });
    const logic = poolMachine.provide({
      actors: {
        container: containerMachine.provide({
          actors: {
            startContainer: fromPromise<ContainerHandle, { id: string; pool: string }>(
              async ({ input, signal }) => {
                this.world.containerStarted(input.id);
                await delay(this.clock, this.o.containerStartMs, signal);
                return new SimHandle(input.id);
              },
            ),
            runTask: fromPromise<TaskOutcome, RunTaskInput>(({ input, signal }) =>
              this.runTask(input, signal),
            ),
          },
        }),
      },
    });
    this.pool = createActor(logic, {
      input: { name: this.profile.name, profile: this.profile, newId: () => this.newId() },
      clock,
      // As the real node: any snapshot may change what it announces; a container's may let the pool top up.
      inspect: (ev) => {
        if (ev.type === "@xstate.snapshot") this.changed(ev.actorRef !== this.pool);
      },
    });
  }

  start(): void {
    this.pool.start();
    this.publish();
  }

  stop(): void {
    this.stopped = true;
    if (this.tick !== null) this.clock.clearTimeout(this.tick);
    this.pool.stop();
  }

  /**
   * The real node also announces itself every `nodeHeartbeatMs`. A heartbeat without a
   * change only matters to an orchestrator that marked a target as refusing (the mark
   * lasts until the next heartbeat), so the simulation skips the others: this schedules
   * the periodic heartbeat that would come next.
   */
  periodicHeartbeat(): void {
    if (this.tick !== null) return;
    const period = this.o.nodeHeartbeatMs;
    const now = this.clock.now() - this.startMs;
    this.tick = this.clock.setTimeout(
      () => {
        this.tick = null;
        this.publish();
      },
      period - (now % period),
    );
  }

  private newId(): string {
    return `c${String(++this.count).padStart(String(this.o.containers).length, "0")}`;
  }

  /** Restore if needed, then the turn; both on simulated time. */
  private async runTask(input: RunTaskInput, signal: AbortSignal): Promise<TaskOutcome> {
    const { task, warm, containerId } = input;
    const spec = this.world.task(task.taskId);
    const holds = warm?.tenant === task.tenant && warm?.session === task.session;
    const reload = spec.followUp && !holds;
    const restoreMs = reload
      ? Math.round(this.o.restoreBaseMs + this.o.restoreMsPerMB * spec.stateMB)
      : 0;
    if (restoreMs > 0) await delay(this.clock, restoreMs, signal);
    this.world.turnStarted(task, containerId, reload, restoreMs);
    await delay(this.clock, spec.turnMs, signal);
    this.world.turnEnded(task, containerId);
    return { ok: true, agentAlive: true };
  }

  private changed(checkPools: boolean): void {
    if (this.stopped) return;
    if (checkPools && !this.checkQueued) {
      this.checkQueued = true;
      queueMicrotask(() => {
        this.checkQueued = false;
        if (!this.stopped) this.pool.send({ type: "CHECK" });
      });
    }
    if (this.heartbeatQueued) return;
    this.heartbeatQueued = true;
    this.clock.setTimeout(() => {
      this.heartbeatQueued = false;
      this.publish();
    }, 0);
  }

  private publish(): void {
    this.world.heartbeat(this.heartbeat());
  }

  /** The node's announcement, built as `FleetNode.heartbeat()` builds it. */
  heartbeat(): NodeHeartbeat {
    const at = isoNow(this.clock);
    const { pool, containers } = announcePool(
      this.id,
      this.profile,
      this.pool.getSnapshot().context,
      at,
    );
    return {
      id: this.id,
      startedAt: this.startedAt,
      at,
      seq: ++this.seq,
      pools: [pool],
      containers,
    };
  }

  /** Answers a dispatch as `FleetNode.onDispatch` does. */
  dispatch(req: DispatchRequest): DispatchReply {
    if (req.pool !== this.profile.name) return { accepted: false, reason: "NO_SUCH_POOL" };
    const ctx = this.pool.getSnapshot().context;
    for (const ref of Object.values(ctx.containers)) {
      const t = ref.getSnapshot().context.task;
      if (t?.taskId === req.taskId && t.attempt === req.attempt)
        return { accepted: true, container: ref.getSnapshot().context.id };
    }
    if (req.container) {
      const ref = ctx.containers[req.container];
      if (!ref) return { accepted: false, reason: "NO_SUCH_CONTAINER" };
      const state = containerStateOf(ref.getSnapshot());
      if (state !== "idle" && state !== "reserved")
        return { accepted: false, reason: "CONTAINER_BUSY" };
      ref.send({ type: "ASSIGN", task: req });
      return { accepted: true, container: req.container };
    }
    const refusal = refuseStart(ctx);
    if (refusal) return { accepted: false, reason: refusal };
    const id = ctx.newId();
    this.pool.send({ type: "SPAWN", id, task: req });
    return { accepted: true, container: id };
  }
}
