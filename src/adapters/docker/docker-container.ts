/**
 * One Docker container running one agent: the {@link ContainerHandle} that
 * drives its agent over the container's attached stdio with the same
 * {@link AgentConnection} the process pool uses, reports its death, and reads
 * its memory. How it is created is in docker-container-spec.ts.
 */
import { readFile } from "node:fs/promises";
import { PassThrough } from "node:stream";
import type Docker from "dockerode";
import type { Clock } from "../../clock.js";
import { AgentError, type ClawfleetError, ErrorCodes } from "../../errors.js";
import type { Logger } from "../../logger.js";
import type { TurnMessage } from "../../protocol/agent-protocol.js";
import type { AgentConnection } from "../agent-link/agent-connection.js";
import type {
  ContainerHandle,
  ContainerSpec,
  ExitInfo,
  TurnHooks,
} from "../agent-link/pool-adapter.js";
import { memoryUsageMb, parseMemoryStat } from "./memory-budget.js";

export {
  type ContainerOwner,
  cgroupMemoryStatPath,
  chownTree,
  containerCreateOptions,
  containerName,
  LABELS,
} from "./docker-container-spec.js";

/** What the pool knows of a container's use, for shedding and reaping. */
export interface ContainerUse {
  busy: boolean;
  /** Set once the pool decided to remove it; no turn may start. */
  removing: boolean;
  /** Priority of the last task it ran; -1 before the first. */
  priority: number;
  lastUsedAt: number;
  /** The session of its last turn: whose working copy it holds. */
  session?: { tenant: string; session: string };
}

/** A started container with its agent; see the module comment. */
export class DockerContainer implements ContainerHandle {
  readonly id: string;
  readonly workspaceDir: string;
  readonly use: ContainerUse;
  private exited = false;
  private stopRequested = false;
  private removeReason: ClawfleetError | undefined;
  private stopping: Promise<void> | undefined;
  private exitInfo: ExitInfo | undefined;
  private readonly exitListeners = new Set<(info: ExitInfo) => void>();
  private readonly closed: Promise<void>;
  /** Where its memory stats are read from the kernel, when the engine is local. */
  memoryStatPath: string | undefined;

  constructor(
    readonly spec: ContainerSpec,
    readonly container: Docker.Container,
    private readonly stream: NodeJS.ReadWriteStream,
    private readonly conn: AgentConnection,
    private readonly deps: {
      clock: Clock;
      logger: Logger;
      stopGraceMs: number;
      /** Runs before each turn (gives the workspace to the agent user, notes the priority). */
      beforeTurn: (turn: TurnMessage) => Promise<void>;
    },
  ) {
    this.id = spec.id;
    this.workspaceDir = spec.workspaceDir;
    this.use = { busy: false, removing: false, priority: -1, lastUsedAt: deps.clock.now() };
    this.closed = new Promise((resolve) => {
      let done = false;
      const onEnd = () => {
        if (done) return;
        done = true;
        void this.onStreamEnd().finally(resolve);
      };
      stream.on("end", onEnd);
      stream.on("close", onEnd);
      stream.on("error", onEnd);
    });
    conn.onFailure(() => {
      if (!this.exited) void this.kill();
    });
  }

  /** Splits the attached stream into the agent's stdout and stderr. */
  static demux(docker: Docker, stream: NodeJS.ReadableStream) {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    docker.modem.demuxStream(stream, stdout, stderr);
    stream.on("end", () => {
      stdout.end();
      stderr.end();
    });
    return { stdout, stderr };
  }

  get alive(): boolean {
    return !this.exited && this.conn.alive && !this.use.removing;
  }

  async runTurn(
    turn: TurnMessage,
    hooks: TurnHooks,
    options: { timeoutMs: number; signal: AbortSignal },
  ): Promise<string> {
    if (this.use.removing || this.use.busy) {
      const why = this.use.busy ? "a turn is already running" : "container is being removed";
      throw new AgentError(ErrorCodes.AGENT_EXITED, `container ${this.id}: ${why}`);
    }
    this.use.busy = true;
    this.use.session = { tenant: turn.tenant, session: turn.session };
    try {
      await this.deps.beforeTurn(turn);
      return await this.conn.runTurn(turn, hooks, options);
    } finally {
      this.use.busy = false;
      this.use.lastUsedAt = this.deps.clock.now();
    }
  }

  onExit(listener: (info: ExitInfo) => void): () => void {
    const info = this.exitInfo;
    if (info !== undefined) queueMicrotask(() => listener(info));
    else this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  quiesce(): Promise<void> {
    return this.conn.quiesce();
  }

  release(): Promise<void> {
    return this.conn.release();
  }

  logTail(): string[] {
    return this.conn.logTail();
  }

  /** Stops the agent (SIGTERM, then SIGKILL after the grace) and removes the container. */
  stop(): Promise<void> {
    this.stopRequested = true;
    this.stopping ??= this.remove();
    return this.stopping;
  }

  /**
   * Removes the container on the pool's initiative (shed, reaped, unhealthy):
   * unlike {@link stop}, its owner hears of it as a death with `reason`.
   */
  evict(reason: ClawfleetError): Promise<void> {
    this.use.removing = true;
    this.removeReason ??= reason;
    this.stopping ??= this.remove();
    return this.stopping;
  }

  /** Memory the container holds now, MiB (see memory-budget.ts), or undefined if unknown. */
  async memoryMb(): Promise<number | undefined> {
    if (this.memoryStatPath) {
      const text = await readFile(this.memoryStatPath, "utf8").catch(() => undefined);
      if (text !== undefined) return memoryUsageMb({ stats: parseMemoryStat(text) });
    }
    const stats = await this.container
      .stats({ stream: false, "one-shot": true })
      .catch(() => undefined);
    return memoryUsageMb(stats?.memory_stats);
  }

  /** Resolves once the container's stdio has closed and its exit has been reported. */
  whenClosed(): Promise<void> {
    return this.closed;
  }

  private async remove(): Promise<void> {
    if (!this.exited) {
      const t = Math.max(0, Math.ceil(this.deps.stopGraceMs / 1000));
      await this.container.stop({ t }).catch(() => {});
    }
    await this.container.remove({ force: true, v: true }).catch(() => {});
    this.stream.end();
    await this.closed;
  }

  private kill(): Promise<void> {
    return this.container.kill().then(
      () => {},
      () => {},
    );
  }

  private async onStreamEnd(): Promise<void> {
    const result = await this.container.wait().catch(() => null);
    const state = await this.container.inspect().then(
      (i) => i.State,
      () => null,
    );
    this.exited = true;
    const code = (result?.StatusCode as number | undefined) ?? state?.ExitCode ?? null;
    const failure = this.conn.failure;
    let error: ClawfleetError;
    if (this.removeReason) error = this.removeReason;
    else if (state?.OOMKilled)
      error = new AgentError(ErrorCodes.AGENT_EXITED, "container killed: out of memory");
    else if (failure !== undefined && failure.code !== ErrorCodes.AGENT_EXITED) error = failure;
    else error = new AgentError(ErrorCodes.AGENT_EXITED, `container exited with code ${code}`);
    this.conn.close(
      this.stopRequested ? new AgentError(ErrorCodes.AGENT_EXITED, "container stopped") : error,
    );
    this.deps.logger.debug({ code, error: error.message }, "container closed");
    if (this.stopRequested) return;
    const info: ExitInfo = { code, signal: null, error };
    this.exitInfo = info;
    for (const listener of [...this.exitListeners]) listener(info);
    this.exitListeners.clear();
  }
}
