/**
 * The node role: the pools and containers of one host. It answers dispatches
 * from the orchestrator, runs turns, reports every step and outcome as events
 * in JetStream, and announces itself and its containers in the nodes bucket
 * on every change and at least once per heartbeat period.
 */
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Subscription } from "@nats-io/nats-core";
import { type Actor, type ActorRefFrom, createActor, fromPromise, waitFor } from "xstate";
import { containerMachine, containerStateOf } from "../actors/container-machine.js";
import { announcePool, poolMachine, refuseStart } from "../actors/pool-machine.js";
import type { ContainerHandle, PoolAdapter } from "../adapters/agent-link/pool-adapter.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { SnapshotStore, SQLITE_LIVE_FILES } from "../adapters/snapshots/snapshot-store.js";
import { ObjectWorkspaceStore } from "../adapters/workspace/object-workspace-store.js";
import type { WorkspaceStore } from "../adapters/workspace/workspace-store.js";
import { agentRuntime } from "../agents/agent-runtime.js";
import { type Clock, every, isoNow, systemClock } from "../clock.js";
import { ErrorCodes, RetryableError, toErrorInfo } from "../errors.js";
import type { PoolProfile, ResolvedFleetOptions } from "../fleet-options.js";
import { type Logger, silentLogger } from "../logger.js";
import {
  type DispatchReply,
  DispatchRequestSchema,
  NodeCancelSchema,
  type NodeHeartbeat,
} from "../protocol/fleet-messages.js";
import { nodeSupervisorMachine } from "../supervisor/node-supervisor.js";
import { nodeDir, pruneNodeDirs, removeNodeDir } from "./node-dirs.js";
import { TurnRunner } from "./turn-runner.js";

/** What a node needs besides its options. */
export interface FleetNodeDeps {
  readonly nats: FleetNats;
  /** Starts containers; one adapter serves every pool of the node. */
  readonly adapter: PoolAdapter;
  readonly store?: WorkspaceStore;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

type PoolRef = ActorRefFrom<typeof poolMachine>;

/** A running node. Create with {@link FleetNode.start}; stop with {@link FleetNode.stop}. */
export class FleetNode {
  readonly id: string;
  /** The root of the node's supervision tree: pools are its children, containers theirs. */
  private root!: Actor<typeof nodeSupervisorMachine>;
  /** Pool profiles by name, as the pools run them. */
  private readonly profiles = new Map<string, PoolProfile>();
  /** Running agents by pool, so a crashed pool actor's agents can be stopped. */
  private readonly handlesByPool = new Map<string, Set<ContainerHandle>>();
  private readonly subs: Subscription[] = [];
  private readonly startedAt: string;
  private seq = 0;
  /** Takes no more work: stopping, or its root supervisor gave up. */
  private stopping = false;
  private stopCalled = false;
  /** Its key is deleted (or about to be): a heartbeat now would announce it again. */
  private gone = false;
  private heartbeatQueued = false;
  private stopTicker: () => void = () => {};
  private containerCount = 0;
  private readonly events: TurnRunner;
  private readonly clock: Clock;
  private readonly log: Logger;
  private store!: WorkspaceStore;
  /** Running containers by workspace directory: whom to ask to quiesce before a snapshot. */
  private readonly handlesByDir = new Map<string, ContainerHandle>();
  private readonly containersDir: string;

  private constructor(
    private readonly options: ResolvedFleetOptions,
    private readonly deps: FleetNodeDeps,
  ) {
    this.id = options.nodeId;
    this.clock = deps.clock ?? systemClock;
    this.log = (deps.logger ?? silentLogger).child({ role: "node", node: this.id });
    this.startedAt = isoNow(this.clock);
    this.containersDir = path.join(nodeDir(options.dataDir, this.id), "containers");
    this.events = new TurnRunner(deps.nats, this.id, options, this.clock, this.log);
  }

  /** Starts the node's pools and begins serving dispatches. */
  static async start(options: ResolvedFleetOptions, deps: FleetNodeDeps): Promise<FleetNode> {
    const node = new FleetNode(options, deps);
    await node.init();
    return node;
  }

  private async init(): Promise<void> {
    this.store = this.deps.store ?? (await this.defaultStore());
    const pruned = await pruneNodeDirs(this.options.dataDir, this.id).catch((err) => {
      this.log.warn({ err: toErrorInfo(err) }, "cannot remove earlier runs' workspaces");
      return [];
    });
    if (pruned.length > 0) this.log.info({ nodes: pruned }, "removed earlier runs' workspaces");
    await mkdir(this.containersDir, { recursive: true });
    const { nc, subjects } = this.deps.nats;
    this.subs.push(
      nc.subscribe(subjects.node(this.id, "dispatch"), { callback: (_e, m) => this.onDispatch(m) }),
    );
    this.subs.push(
      nc.subscribe(subjects.node(this.id, "cancel"), { callback: (_e, m) => this.onCancel(m) }),
    );
    this.startSupervisor();
    await this.publishHeartbeat();
    this.stopTicker = every(this.clock, this.options.nodeHeartbeatMs, () => this.queueHeartbeat());
    this.log.info(
      { pools: this.options.pools.map((p) => p.name), adapter: this.deps.adapter.kind },
      "node up",
    );
  }

  /** Starts (or restarts) the agent of container `id` in its workspace directory. */
  private async startAgent(
    profile: PoolProfile,
    id: string,
    signal: AbortSignal,
  ): Promise<ContainerHandle> {
    const workspaceDir = path.join(this.containersDir, id);
    await mkdir(workspaceDir, { recursive: true });
    const handle = await this.deps.adapter.start({ id, profile, workspaceDir });
    this.handlesByDir.set(handle.workspaceDir, handle);
    const mine = this.handlesByPool.get(profile.name) ?? new Set();
    this.handlesByPool.set(profile.name, mine.add(handle));
    // Stopped while starting: nobody else will ever stop this handle.
    if (signal.aborted) {
      this.forget(handle);
      await handle.stop();
      throw new RetryableError(ErrorCodes.NODE_STOPPING, "the node stopped while starting");
    }
    return handle;
  }

  /** Sessions' files as versioned snapshots in NATS, so any node can serve any session. */
  private async defaultStore(): Promise<WorkspaceStore> {
    const limits = this.options.workspaceLimits;
    const snapshots = await SnapshotStore.open(
      this.deps.nats.nc,
      { prefix: this.options.prefix, ...(limits ? { limits } : {}) },
      this.clock,
    );
    return new ObjectWorkspaceStore(snapshots, {
      // SQLite's live side files are never copied; the agent folds its WAL in first. Runtimes
      // add their own scratch and lock files (OpenClaw's).
      exclude: [
        ...new Set([
          ...SQLITE_LIVE_FILES,
          ...this.options.pools.flatMap((p) => agentRuntime(p.runtime).snapshotExclude ?? []),
        ]),
      ],
      quiesce: async (dir) => this.handlesByDir.get(dir)?.quiesce?.(),
      keepLast: this.options.snapshotKeepLast,
    });
  }

  /** Starts the node's supervision tree: the root, its pools, and their containers. */
  private startSupervisor(): void {
    const profileOf = (pool: string) => this.profiles.get(pool)!;
    const pool = poolMachine.provide({
      actors: {
        container: containerMachine.provide({
          actors: {
            startContainer: fromPromise(async ({ input, signal }) =>
              this.startAgent(profileOf(input.pool), input.id, signal),
            ),
            // Tier 1: the same container (id, workspace directory) with a new agent process.
            restartAgent: fromPromise(async ({ input, signal }) => {
              await input.handle?.stop();
              if (input.handle) this.forget(input.handle);
              this.log.info({ container: input.id }, "restarting the agent in place");
              return this.startAgent(profileOf(input.pool), input.id, signal);
            }),
            runTask: fromPromise(async ({ input }) =>
              this.events.runTask(input, profileOf(input.task.pool), this.store),
            ),
            stopContainer: fromPromise(async ({ input }) => {
              await input?.stop();
              if (input) this.forget(input);
              if (input) await rm(input.workspaceDir, { recursive: true, force: true });
            }),
          },
        }),
      },
    });
    for (const profile of this.options.pools) {
      // A Docker container is its agent (one process, removed when it dies, shed on purpose
      // under memory pressure): there is nothing to restart in place, the pool recreates it.
      this.profiles.set(
        profile.name,
        profile.kind === "docker" ? { ...profile, maxAgentRestarts: 0 } : profile,
      );
    }
    const root = createActor(
      nodeSupervisorMachine.provide({
        actors: { pool },
        actions: {
          poolCrashed: (_, { pool: name, error }) => {
            this.log.error({ pool: name, error }, "pool actor crashed; stopping its agents");
            void this.stopAgentsOf(name);
          },
          gaveUp: ({ context }) => {
            this.log.error({ reason: context.failure }, "node gave up: taking no more work");
            this.stopping = true;
            this.queueHeartbeat();
          },
        },
      }),
      {
        input: {
          profiles: [...this.profiles.values()],
          newId: () => `${this.id}-${++this.containerCount}`,
          poolRestartMax: this.options.healing.poolRestartMax,
          windowMs: this.options.healing.windowMs,
          now: () => this.clock.now(),
        },
        clock: this.clock,
        // Every snapshot in the tree may change what we announce; a container's may also
        // call for its pool to top up.
        inspect: (ev) => {
          if (ev.type !== "@xstate.snapshot") return;
          const ref = ev.actorRef;
          this.queueHeartbeat(ref !== root && !this.poolRefs().some(([, p]) => p === ref));
        },
      },
    );
    this.root = root;
    root.start();
  }

  /** The pools as they run now (a crashed one is replaced by a new actor). */
  private poolRefs(): [PoolProfile, PoolRef][] {
    const { pools } = this.root.getSnapshot().context;
    return [...this.profiles.values()].flatMap((p) => {
      const ref = pools[p.name];
      return ref ? [[p, ref] as [PoolProfile, PoolRef]] : [];
    });
  }

  private forget(handle: ContainerHandle): void {
    for (const handles of this.handlesByPool.values()) handles.delete(handle);
    this.handlesByDir.delete(handle.workspaceDir);
  }

  /** A crashed pool's containers went with it: their agents must not outlive them. */
  private async stopAgentsOf(pool: string): Promise<void> {
    const handles = [...(this.handlesByPool.get(pool) ?? [])];
    this.handlesByPool.delete(pool);
    await Promise.all(
      handles.map(async (h) => {
        this.handlesByDir.delete(h.workspaceDir);
        await h.stop().catch(() => {});
        await rm(h.workspaceDir, { recursive: true, force: true }).catch(() => {});
      }),
    );
  }

  /** Coalesces bursts of changes into one heartbeat; optionally lets the pools top up first. */
  private queueHeartbeat(checkPools = false): void {
    if (checkPools && !this.stopping) {
      queueMicrotask(() => {
        for (const [, pool] of this.poolRefs()) pool.send({ type: "CHECK" });
      });
    }
    if (this.heartbeatQueued) return;
    this.heartbeatQueued = true;
    setImmediate(() => {
      this.heartbeatQueued = false;
      this.publishHeartbeat().catch((err) => {
        if (!this.gone) this.log.warn({ err: toErrorInfo(err) }, "heartbeat failed");
      });
    });
  }

  /** This node's announcement: its pools and containers as they are now. */
  heartbeat(): NodeHeartbeat {
    const root = this.root.getSnapshot().context;
    const at = isoNow(this.clock);
    const announced = this.poolRefs().map(([profile, pool]) =>
      announcePool(
        this.id,
        profile,
        pool.getSnapshot().context,
        at,
        root.poolCrashes[profile.name],
      ),
    );
    return {
      id: this.id,
      startedAt: this.startedAt,
      at,
      seq: ++this.seq,
      stopping: this.stopping || undefined,
      failure: root.failure ?? undefined,
      pools: announced.map((a) => a.pool),
      containers: announced.flatMap((a) => a.containers),
    };
  }

  private async publishHeartbeat(): Promise<void> {
    if (this.gone || this.deps.nats.nc.isClosed()) return;
    await this.deps.nats.kv.nodes.put(this.id, JSON.stringify(this.heartbeat()));
  }

  private onDispatch(msg: {
    data: Uint8Array;
    respond(data?: string): boolean;
    json<T>(): T;
  }): void {
    const reply = (r: DispatchReply) => msg.respond(JSON.stringify(r));
    const parsed = DispatchRequestSchema.safeParse(safeJson(msg));
    if (!parsed.success) return void reply({ accepted: false, reason: ErrorCodes.INVALID_REQUEST });
    const req = parsed.data;
    if (this.stopping) return void reply({ accepted: false, reason: ErrorCodes.NODE_STOPPING });
    const pool = this.poolRefs().find(([p]) => p.name === req.pool)?.[1];
    if (!pool) return void reply({ accepted: false, reason: "NO_SUCH_POOL" });
    const ctx = pool.getSnapshot().context;
    // A repeated dispatch of the same attempt (a retried request) is answered, not run twice.
    for (const ref of Object.values(ctx.containers)) {
      const t = ref.getSnapshot().context.task;
      if (t?.taskId === req.taskId && t.attempt === req.attempt) {
        return void reply({ accepted: true, container: ref.getSnapshot().context.id });
      }
    }
    if (req.container) {
      const ref = ctx.containers[req.container];
      if (!ref) return void reply({ accepted: false, reason: "NO_SUCH_CONTAINER" });
      const state = containerStateOf(ref.getSnapshot());
      if (state !== "idle" && state !== "reserved")
        return void reply({ accepted: false, reason: "CONTAINER_BUSY" });
      ref.send({ type: "ASSIGN", task: req });
      return void reply({ accepted: true, container: req.container });
    }
    const refusal = refuseStart(ctx);
    if (refusal) return void reply({ accepted: false, reason: refusal });
    const id = ctx.newId();
    pool.send({ type: "SPAWN", id, task: req });
    reply({ accepted: true, container: id });
  }

  private onCancel(msg: { data: Uint8Array; respond(data?: string): boolean; json<T>(): T }): void {
    const parsed = NodeCancelSchema.safeParse(safeJson(msg));
    if (!parsed.success) return void msg.respond(JSON.stringify({ ok: false }));
    let found = false;
    for (const [, pool] of this.poolRefs()) {
      for (const ref of Object.values(pool.getSnapshot().context.containers)) {
        const t = ref.getSnapshot().context.task;
        if (t?.taskId === parsed.data.taskId && t.attempt === parsed.data.attempt) {
          ref.send({ type: "CANCEL", taskId: t.taskId, attempt: t.attempt });
          found = true;
        }
      }
    }
    msg.respond(JSON.stringify({ ok: found }));
  }

  /**
   * Stops taking work, stops every container, and removes the node from the fleet, in
   * an order that leaves nobody to warn: it announces `stopping` first (so the
   * orchestrator reads its leaving as a departure, not a loss), keeps announcing while
   * its containers stop, then stops the heartbeats, and only then deletes its key; the
   * connection is closed by the caller after that.
   */
  async stop(): Promise<void> {
    if (this.stopCalled) return;
    this.stopCalled = true;
    this.stopping = true;
    for (const s of this.subs) s.unsubscribe();
    await this.publishHeartbeat().catch(() => {});
    this.root.send({ type: "STOP" });
    await Promise.all(
      this.poolRefs().map(async ([, pool]) => {
        pool.send({ type: "STOP" });
        await waitFor(pool, (s) => s.matches("stopped"), { timeout: 60_000 }).catch(() => {});
      }),
    );
    this.root.stop();
    await this.events.flush();
    this.stopTicker();
    this.gone = true;
    if (!this.deps.nats.nc.isClosed())
      await this.deps.nats.kv.nodes.delete(this.id).catch(() => {});
    await removeNodeDir(this.options.dataDir, this.id).catch((err) =>
      this.log.warn({ err: toErrorInfo(err) }, "cannot remove the node's workspaces"),
    );
    this.log.info({}, "node stopped");
  }
}

function safeJson(msg: { json<T>(): T }): unknown {
  try {
    return msg.json();
  } catch {
    return undefined;
  }
}
