/**
 * A pool adapter whose containers are Docker containers, one agent each, driven
 * over the container's attached stdio. Node-wide it:
 * - admits a start only when its reserve fits the {@link MemoryBudget} (from
 *   real container stats), and at most `maxConcurrentStarts` at once; a start
 *   that does not fit first sheds idle or reserved containers of lower value
 *   if that frees enough, else waits until memory frees up;
 * - every `statsIntervalMs` reads stats, sheds idle and reserved containers
 *   (lowest value first) while the containers hold more than the budget or the
 *   host is short, and busy ones too past the hard limit; reaps containers idle
 *   past `idleTtlMs` beyond their pool's `minIdle`; and removes orphans:
 *   containers labelled for this fleet whose node is not alive (on open, too);
 * - awaits `onShed` (a snapshot) before a shed or reaped container goes; its
 *   owner hears of the removal as the container's death.
 */
import { randomUUID } from "node:crypto";
import { mkdir, realpath } from "node:fs/promises";
import type { Writable } from "node:stream";
import Docker from "dockerode";
import { type Clock, every, systemClock } from "../../clock.js";
import { AgentError, ErrorCodes } from "../../errors.js";
import type { DockerFleetSettings, PoolProfile } from "../../fleet-options.js";
import { type Logger, silentLogger } from "../../logger.js";
import type { ModelGatewaySettings } from "../../model-gateway-options.js";
import { AgentConnection } from "../agent-link/agent-connection.js";
import { agentLaunch, type RuntimeFiles } from "../agent-link/agent-launch.js";
import type { ContainerSpec, PoolAdapter } from "../agent-link/pool-adapter.js";
import {
  type ContainerOwner,
  cgroupMemoryStatPath,
  chownTree,
  containerCreateOptions,
  DockerContainer,
  LABELS,
} from "./docker-container.js";
import { AGENT_UID } from "./docker-image.js";
import type { DockerPoolEvent, ShedContainer } from "./docker-pool-events.js";
import { DockerPoolGovernor } from "./docker-pool-governor.js";
import { MemoryBudget } from "./memory-budget.js";

export type { DockerPoolEvent, ShedContainer } from "./docker-pool-events.js";

/** Options of {@link DockerPool.open}. */
export interface DockerPoolOptions {
  /** The engine. Default: `$DOCKER_HOST`, else /var/run/docker.sock. */
  readonly docker?: Docker;
  /** The fleet's name (its subject prefix), written into labels. */
  readonly fleet: string;
  readonly nodeId: string;
  readonly settings: DockerFleetSettings;
  /** Ids of the live nodes of the fleet; containers of any other node are orphans. */
  readonly liveNodes?: () => Promise<ReadonlySet<string>>;
  /** Priority of a task (low 0, normal 1, high 2), so sheds spare containers of important work. */
  readonly priorityOf?: (taskId: string) => Promise<number | undefined>;
  /** Awaited before a shed or reaped container is removed (snapshot its workspace). */
  readonly onShed?: (container: ShedContainer) => Promise<void>;
  /** Every admission, wait, shed, reap and orphan removal, for tests and metrics. */
  readonly onEvent?: (event: DockerPoolEvent) => void;
  /** Real available host memory, MiB. Default: /proc/meminfo. */
  readonly hostAvailableMb?: () => Promise<number | undefined>;
  /** Orphans younger than this are left alone (their node may not have announced itself). Default 30 000 ms. */
  readonly orphanGraceMs?: number;
  /** Time between SIGTERM and SIGKILL when a container stops. Default 2000 ms. */
  readonly stopGraceMs?: number;
  /** The fleet's model settings: upstreams' wire formats and the request size limit. */
  readonly models?: ModelGatewaySettings;
  /** Where a real runtime's files are inside the pool's image (OpenClaw's). */
  readonly runtimeFiles?: (profile: PoolProfile) => RuntimeFiles | undefined;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** Runs each container as a Docker container; `kind` is `docker`. */
export class DockerPool implements PoolAdapter {
  readonly kind = "docker";
  readonly docker: Docker;
  readonly budget: MemoryBudget;
  readonly owner: ContainerOwner;
  private readonly governor: DockerPoolGovernor;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly starting = new Set<Promise<unknown>>();
  private stopTicker: () => void = () => {};
  private closed = false;

  private constructor(private readonly options: DockerPoolOptions) {
    this.docker = options.docker ?? new Docker();
    this.clock = options.clock ?? systemClock;
    this.logger = (options.logger ?? silentLogger).child({ adapter: "docker" });
    this.budget = new MemoryBudget(options.settings);
    const root = process.geteuid?.() === 0;
    const uid = root ? AGENT_UID : (process.geteuid?.() ?? AGENT_UID);
    const gid = root ? AGENT_UID : (process.getegid?.() ?? AGENT_UID);
    this.owner = {
      fleet: options.fleet,
      node: options.nodeId,
      instance: randomUUID(),
      user: `${uid}:${gid}`,
    };
    this.governor = new DockerPoolGovernor({
      docker: this.docker,
      budget: this.budget,
      owner: this.owner,
      settings: options.settings,
      clock: this.clock,
      logger: this.logger,
      liveNodes: options.liveNodes,
      onShed: options.onShed,
      onEvent: options.onEvent,
      hostAvailableMb: options.hostAvailableMb,
      orphanGraceMs: options.orphanGraceMs,
    });
  }

  /** Checks the engine, removes this fleet's orphans, and starts watching memory. */
  static async open(options: DockerPoolOptions): Promise<DockerPool> {
    const pool = new DockerPool(options);
    await pool.docker.ping();
    await pool.governor.sweep();
    await pool.governor.tick();
    pool.stopTicker = every(pool.clock, options.settings.statsIntervalMs, () => {
      void pool.governor.tick();
    });
    return pool;
  }

  /** Containers up now, for inspection. */
  get containers(): readonly DockerContainer[] {
    return this.governor.containers;
  }

  async start(spec: ContainerSpec): Promise<DockerContainer> {
    if (this.closed) throw new AgentError(ErrorCodes.AGENT_START_FAILED, "docker pool is closed");
    const run = this.startAdmitted(spec);
    this.starting.add(run);
    try {
      return await run;
    } finally {
      this.starting.delete(run);
    }
  }

  private async startAdmitted(spec: ContainerSpec): Promise<DockerContainer> {
    await this.governor.admit(spec.id);
    let container: Docker.Container | undefined;
    try {
      await mkdir(spec.workspaceDir, { recursive: true });
      const workspace = await realpath(spec.workspaceDir);
      const [uid, gid] = this.owner.user.split(":").map(Number) as [number, number];
      const chown =
        process.geteuid?.() === 0 ? () => chownTree(workspace, uid, gid) : async () => {};
      await chown();
      container = await this.docker.createContainer(
        containerCreateOptions(
          spec,
          workspace,
          this.owner,
          agentLaunch(spec.profile, {
            models: this.options.models,
            privateNetwork: spec.profile.docker.network === "none",
            runtime: this.options.runtimeFiles?.(spec.profile),
          }),
        ),
      );
      const stream = await container.attach({
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        hijack: true,
      });
      const { stdout, stderr } = DockerContainer.demux(this.docker, stream);
      const log = this.logger.child({ container: spec.id, docker: container.id.slice(0, 12) });
      const conn = new AgentConnection({
        input: stdout,
        output: stream as unknown as Writable,
        stderr,
        heartbeatMs: spec.profile.agentHeartbeatMs,
        missedHeartbeats: spec.profile.missedHeartbeats,
        clock: this.clock,
        closeOnEnd: false,
        logger: log,
      });
      const handle = new DockerContainer(spec, container, stream, conn, {
        clock: this.clock,
        logger: log,
        stopGraceMs: this.options.stopGraceMs ?? 2000,
        beforeTurn: async (turn) => {
          void this.notePriority(spec.id, turn.taskId);
          await chown();
        },
      });
      await container.start();
      const pid = (await container.inspect()).State.Pid;
      handle.memoryStatPath = pid > 0 ? await cgroupMemoryStatPath(pid) : undefined;
      await conn.readyOrStop(spec.id, spec.profile.startTimeoutMs, () => handle.stop());
      this.governor.track(handle, spec);
      log.debug({}, "container ready");
      return handle;
    } catch (err) {
      await container?.remove({ force: true }).catch(() => {});
      this.budget.release(spec.id);
      if (err instanceof AgentError) throw err;
      const msg = `container ${spec.id} did not start: ${(err as Error).message}`;
      throw new AgentError(ErrorCodes.AGENT_START_FAILED, msg, { cause: err });
    } finally {
      this.governor.startDone(spec.id);
    }
  }

  /** Records the priority of the task a container is about to run (for shedding order). */
  async notePriority(containerId: string, taskId: string): Promise<void> {
    const p = await this.options.priorityOf?.(taskId).catch(() => undefined);
    if (p !== undefined) this.governor.setPriority(containerId, p);
  }

  /** Runs one round now: fresh stats, pressure, reaping, waiting starts (as every `statsIntervalMs`). */
  refresh(): Promise<void> {
    return this.governor.tick();
  }

  /** Stops watching, refuses waiting starts, and removes every container this pool started. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTicker();
    this.governor.close();
    await Promise.allSettled([...this.starting]);
    await Promise.all(this.governor.containers.map((c) => c.stop()));
    await this.governor.idle();
  }
}

/** The label filter of one fleet's containers on an engine. */
export function fleetFilter(fleet: string): { label: string[] } {
  return { label: [`${LABELS.fleet}=${fleet}`] };
}
