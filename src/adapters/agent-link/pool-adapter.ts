/**
 * The seam between the node's actors and whatever runs agents: child processes
 * (the process pool) or Docker containers (a later pool). Actors only ever see
 * these interfaces, so every pool runs the same container and pool machines.
 */
import type { ClawfleetError } from "../../errors.js";
import type { PoolProfile } from "../../fleet-options.js";
import type { TurnMessage } from "../../protocol/agent-protocol.js";

/** What the node asks a pool adapter to start. */
export interface ContainerSpec {
  /** Unique container id (also used in paths, subjects and labels). */
  readonly id: string;
  /** The pool's runtime profile (limits, heartbeat, sandbox). */
  readonly profile: PoolProfile;
  /** Host directory holding this container's working copy; the agent's only writable place. */
  readonly workspaceDir: string;
  /** Extra environment for the agent (no secrets are added by the runtime). */
  readonly env?: Readonly<Record<string, string>>;
}

/** One model call of the agent, as its shim relayed it (credentials already stripped). */
export interface AgentModelRequest {
  readonly upstream: string;
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** Where a model call's answer goes, as it arrives: the head once, then body chunks. */
export interface ModelCallSink {
  head(status: number, headers: Record<string, string>): void;
  chunk(data: string): void;
}

/**
 * Forwards one model call and streams its answer into `sink`. Resolves once the
 * answer is complete: with nothing, or with the error the bridge or gateway
 * failed with (an upstream's own HTTP error is an answer, not an error).
 */
export type ModelCallHook = (
  request: AgentModelRequest,
  sink: ModelCallSink,
  signal: AbortSignal,
) => Promise<ClawfleetError | undefined>;

/** Callbacks a running turn reports through; each is awaited before the agent goes on. */
export interface TurnHooks {
  /** A step checkpoint; the agent receives its ack only after this resolves. */
  onStep(step: { step: number; name?: string; output?: unknown }): Promise<void>;
  /** A side effect for the outbox, keyed by the task and step. */
  onEffect(effect: { step: number; kind: string; payload: unknown }): Promise<void>;
  /** A log line from the agent. */
  onLog(log: { level: "debug" | "info" | "warn" | "error"; msg: string }): void;
  /** The agent's model calls during this turn; without it they are refused. */
  onModelCall?: ModelCallHook;
}

/** Why an agent or container went away without being asked to. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: string | null;
  readonly error: ClawfleetError;
}

/** A started container with a ready agent in it. */
export interface ContainerHandle {
  readonly id: string;
  readonly workspaceDir: string;
  /**
   * Runs one turn to its end. Resolves with the output; rejects with a
   * `ClawfleetError` whose `retryable` says whether another attempt may help
   * (agent crash or hang: retryable; script error, timeout, cancel: terminal).
   * Aborting `signal` cancels the turn (`CANCELED`).
   */
  runTurn(
    turn: TurnMessage,
    hooks: TurnHooks,
    options: { timeoutMs: number; signal: AbortSignal },
  ): Promise<string>;
  /** Whether the agent process is alive and speaking the protocol. */
  readonly alive: boolean;
  /** Called once if the agent or container dies on its own (crash, hang, kill). */
  onExit(listener: (info: ExitInfo) => void): () => void;
  /**
   * Asks the agent to make the workspace safe to copy (e.g. checkpoint SQLite's
   * WAL) and waits until it has. Absent or a no-op for agents that cannot.
   */
  quiesce?(): Promise<void>;
  /**
   * Asks the agent to close everything it holds open in the workspace, which is
   * about to be replaced by another session's files. Absent or a no-op for
   * agents that hold nothing between turns.
   */
  release?(): Promise<void>;
  /** The last lines the agent wrote to stderr and log messages, oldest first. */
  logTail(): string[];
  /** Stops the agent and releases the container; idempotent. */
  stop(): Promise<void>;
}

/** Starts containers for one kind of pool. */
export interface PoolAdapter {
  /** `process` or `docker`: shown in status. */
  readonly kind: string;
  /** Starts a container and resolves once its agent has said `ready`. */
  start(spec: ContainerSpec): Promise<ContainerHandle>;
  /** Releases adapter-wide resources; containers are stopped by their owners first. */
  close(): Promise<void>;
}
