/**
 * A pool adapter whose "containers" are child processes on this host, each
 * running the scripted agent in its workspace, confined with bubblewrap when
 * the profile asks for it (or `auto` finds it usable). The agent runs from
 * its esbuild bundle (agent-bundle.ts) in plain node; where that cannot be
 * written, through node with tsx's loader given by absolute path, because its
 * working directory is the workspace, where `--import tsx` would not resolve.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdir, realpath } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type Clock, systemClock } from "../../clock.js";
import { AgentError, type ClawfleetError, ConfigError, ErrorCodes } from "../../errors.js";
import type { PoolProfile } from "../../fleet-options.js";
import { type Logger, silentLogger } from "../../logger.js";
import type { ModelGatewaySettings } from "../../model-gateway-options.js";
import type { TurnMessage } from "../../protocol/agent-protocol.js";
import { AGENT_ENTRIES, agentBundle } from "../agent-link/agent-bundle.js";
import { AgentConnection } from "../agent-link/agent-connection.js";
import { agentLaunch, type RuntimeFiles } from "../agent-link/agent-launch.js";
import type {
  ContainerHandle,
  ContainerSpec,
  ExitInfo,
  PoolAdapter,
  TurnHooks,
} from "../agent-link/pool-adapter.js";
import {
  buildBwrapArgs,
  probeBwrap,
  runtimeReadOnlyPaths,
  SANDBOX_PATH,
  SANDBOX_WORKSPACE,
} from "./bwrap-sandbox.js";

/** How an agent process is confined. */
export type SandboxKind = "bwrap" | "none";

const PROJECT_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const TSX_LOADER = createRequire(import.meta.url).resolve("tsx");

/** The sandbox `auto` would choose on this host (probes bwrap once per process). */
export async function processPoolAvailableSandbox(): Promise<SandboxKind> {
  return (await probeBwrap()).usable ? "bwrap" : "none";
}

/** How the pool launches one agent process. */
export interface LaunchCommand {
  readonly sandbox: SandboxKind;
  /** The program: bwrap, or node itself without a sandbox. */
  readonly file: string;
  readonly args: readonly string[];
  /** The whole environment of `file`. */
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
}

/** Options of a {@link ProcessPool}. */
export interface ProcessPoolOptions {
  /**
   * Host paths hidden from sandboxed agents behind an empty tmpfs: the fleet's
   * data dir, so an agent cannot read other sessions' workspaces. Created if
   * missing, since bwrap can only mount over a path that exists.
   */
  readonly maskPaths?: readonly string[];
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Time between SIGTERM and SIGKILL in {@link ContainerHandle.stop}. Default 2000 ms. */
  readonly stopGraceMs?: number;
  /** The fleet's model settings: upstreams' wire formats and the request size limit. */
  readonly models?: ModelGatewaySettings;
  /**
   * Where a real runtime's own files are (OpenClaw: Node 24 and the package),
   * shown read-only in the sandbox; throws `RUNTIME_NOT_INSTALLED` when missing.
   */
  readonly runtimeFiles?: (profile: PoolProfile) => Promise<RuntimeFiles | undefined>;
}

/** Runs each container as a local child process; `kind` is `process`. */
export class ProcessPool implements PoolAdapter {
  readonly kind = "process";
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly handles = new Set<ProcessContainer>();
  private masks: Promise<string[]> | undefined;

  constructor(private readonly options: ProcessPoolOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
  }

  /** The sandbox a container of `profile` gets; throws `ConfigError` if `bwrap` is required but unusable. */
  async sandboxFor(profile: PoolProfile): Promise<SandboxKind> {
    if (profile.sandbox === "none") return "none";
    const probe = await probeBwrap();
    if (probe.usable) return "bwrap";
    if (profile.sandbox === "bwrap") {
      throw new ConfigError(
        `pool ${profile.name} requires bwrap, which is not usable: ${probe.reason}`,
      );
    }
    return "none";
  }

  /**
   * How {@link start} launches the agent for `spec`: program, argv, environment
   * and working directory. Public so status and tests can see the exact sandbox.
   */
  async launchCommand(spec: ContainerSpec): Promise<LaunchCommand> {
    const sandbox = await this.sandboxFor(spec.profile);
    await mkdir(spec.workspaceDir, { recursive: true });
    const workspace = await realpath(spec.workspaceDir);
    const node = await realpath(process.execPath);
    const boxed = sandbox === "bwrap";
    const found = await this.options.runtimeFiles?.(spec.profile);
    // The sandbox binds real paths: the agent must be told the path it will find.
    const runtime = found && { dir: await realpath(found.dir) };
    const launch = agentLaunch(spec.profile, {
      models: this.options.models,
      privateNetwork: boxed,
      runtime,
    });
    const bundle = await agentBundle(launch.program, this.logger);
    const agentArgs = bundle
      ? [bundle]
      : ["--import", pathToFileURL(TSX_LOADER).href, AGENT_ENTRIES[launch.program]];
    // The host environment is never inherited: it may hold credentials the agent must not see.
    const env = {
      PATH: boxed ? SANDBOX_PATH : (process.env.PATH ?? SANDBOX_PATH),
      HOME: boxed ? "/tmp" : tmpdir(),
      ...spec.env,
      ...launch.env,
      CLAWFLEET_WORKSPACE: boxed ? SANDBOX_WORKSPACE : workspace,
      CLAWFLEET_HEARTBEAT_MS: String(spec.profile.agentHeartbeatMs),
    };
    if (!boxed) return { sandbox, file: node, args: agentArgs, env, cwd: workspace };
    const extra = [
      ...(runtime ? [runtime.dir] : []),
      ...(spec.profile.command?.readOnlyPaths ?? []),
    ];
    const args = buildBwrapArgs({
      workspaceDir: workspace,
      command: [node, ...agentArgs],
      env,
      readOnlyPaths: [
        await realpath(PROJECT_ROOT),
        ...runtimeReadOnlyPaths(),
        ...(await Promise.all(extra.map((p) => realpath(p)))),
      ],
      maskPaths: await this.maskPaths(),
      hostname: spec.id.slice(0, 64),
    });
    const bwrap = (await probeBwrap()).path ?? "bwrap";
    return { sandbox, file: bwrap, args, env: {}, cwd: "/" };
  }

  async start(spec: ContainerSpec): Promise<ProcessContainer> {
    const { sandbox, file, args, env, cwd } = await this.launchCommand(spec);
    // detached: the agent leads its own process group, so stop() can signal all of it.
    const child = spawn(file, args, {
      cwd,
      env,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const log = this.logger.child({ container: spec.id, pid: child.pid, sandbox });
    const conn = new AgentConnection({
      input: child.stdout,
      output: child.stdin,
      stderr: child.stderr,
      heartbeatMs: spec.profile.agentHeartbeatMs,
      missedHeartbeats: spec.profile.missedHeartbeats,
      clock: this.clock,
      closeOnEnd: false,
      logger: log,
    });
    const handle = new ProcessContainer(spec, sandbox, child, conn, this.clock, this.options, log);
    this.handles.add(handle);
    handle.onClosed(() => this.handles.delete(handle));
    await conn.readyOrStop(spec.id, spec.profile.startTimeoutMs, () => handle.stop());
    log.debug({}, "agent ready");
    return handle;
  }

  /** Stops every container this pool started that is still running. */
  async close(): Promise<void> {
    await Promise.all([...this.handles].map((h) => h.stop()));
  }

  private maskPaths(): Promise<string[]> {
    this.masks ??= Promise.all(
      (this.options.maskPaths ?? []).map(async (p) => {
        await mkdir(p, { recursive: true });
        return realpath(p);
      }),
    );
    return this.masks;
  }
}

/** A running agent process; see {@link ContainerHandle}. */
export class ProcessContainer implements ContainerHandle {
  readonly id: string;
  readonly workspaceDir: string;
  private exited = false;
  private stopRequested = false;
  private stopping: Promise<void> | undefined;
  private exitInfo: ExitInfo | undefined;
  private readonly exitListeners = new Set<(info: ExitInfo) => void>();
  private readonly closed: Promise<void>;

  constructor(
    spec: ContainerSpec,
    /** How this agent is confined. */
    readonly sandbox: SandboxKind,
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly conn: AgentConnection,
    private readonly clock: Clock,
    private readonly options: ProcessPoolOptions,
    private readonly logger: Logger,
  ) {
    this.id = spec.id;
    this.workspaceDir = spec.workspaceDir;
    this.closed = new Promise((resolve) => {
      child.on("close", (code, signal) => {
        this.onClose(code, signal);
        resolve();
      });
    });
    child.on("error", (err) => {
      const msg = `agent process failed: ${err.message}`;
      conn.close(new AgentError(ErrorCodes.AGENT_START_FAILED, msg));
    });
    // A hung or babbling agent is killed outright: it cannot be trusted to exit on SIGTERM.
    conn.onFailure(() => {
      if (!this.exited) this.signal("SIGKILL");
    });
  }

  /** The process id of the agent (or of bwrap around it). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return !this.exited && this.conn.alive;
  }

  runTurn(
    turn: TurnMessage,
    hooks: TurnHooks,
    options: { timeoutMs: number; signal: AbortSignal },
  ): Promise<string> {
    return this.conn.runTurn(turn, hooks, options);
  }

  onExit(listener: (info: ExitInfo) => void): () => void {
    const info = this.exitInfo;
    // A listener that subscribes after the death still hears about it, once.
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

  stop(): Promise<void> {
    this.stopping ??= this.stopProcess();
    return this.stopping;
  }

  /** Resolves once the process and its stdio have closed, however it ended. */
  onClosed(fn: () => void): void {
    void this.closed.then(fn);
  }

  private async stopProcess(): Promise<void> {
    // Without a pid the spawn itself failed and there is nothing to wait for.
    if (this.exited || this.child.pid === undefined) return;
    this.stopRequested = true;
    this.child.stdin.end();
    this.signal("SIGTERM");
    const timer = this.clock.setTimeout(
      () => this.signal("SIGKILL"),
      this.options.stopGraceMs ?? 2000,
    );
    await this.closed;
    this.clock.clearTimeout(timer);
  }

  private onClose(code: number | null, signal: NodeJS.Signals | null): void {
    this.exited = true;
    const failure = this.conn.failure;
    const error: ClawfleetError =
      failure !== undefined && failure.code !== ErrorCodes.AGENT_EXITED
        ? failure
        : new AgentError(
            ErrorCodes.AGENT_EXITED,
            `agent exited with ${signal === null ? `code ${code}` : `signal ${signal}`}`,
          );
    this.conn.close(
      this.stopRequested ? new AgentError(ErrorCodes.AGENT_EXITED, "agent stopped") : error,
    );
    this.logger.debug({ code, signal, stopRequested: this.stopRequested }, "agent process closed");
    if (this.stopRequested) return;
    const info: ExitInfo = { code, signal, error };
    this.exitInfo = info;
    for (const listener of [...this.exitListeners]) listener(info);
    this.exitListeners.clear();
  }

  private signal(sig: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") this.child.kill(sig);
    }
  }
}
