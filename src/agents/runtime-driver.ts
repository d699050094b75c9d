/**
 * The seam between the generic agent host that runs inside a container
 * (agent-host.ts: the stdio protocol, heartbeats, the model shim) and one real
 * agent runtime (command-driver.ts, openclaw-driver.ts). A driver only runs
 * turns; it never speaks the protocol itself.
 */
import type { z } from "zod";
import type { TurnMessageSchema } from "../protocol/agent-protocol.js";

export {
  type AgentHostConfig,
  type AgentHostConfigInput,
  AgentHostConfigSchema,
} from "../agent-host-config.js";

/** A turn as the driver gets it (validated, defaults applied). */
export type DriverTurn = z.output<typeof TurnMessageSchema>;

/** The model endpoint inside the container: the shim on the container's loopback. */
export interface ModelEndpoint {
  /** `http://127.0.0.1:<port>`: the shim's root. */
  readonly url: string;
  /** The base URL standing for the pool's upstream: `<url>/<upstream>`. */
  readonly baseUrl: string;
  /**
   * Variables that point an agent at the endpoint: `OPENAI_BASE_URL` (or
   * `ANTHROPIC_BASE_URL`) and a dummy key, plus `CLAWFLEET_MODEL_BASE_URL`.
   * No real key ever reaches the container.
   */
  readonly env: Readonly<Record<string, string>>;
}

/** What a running turn may use. */
export interface DriverContext {
  /** Aborted when the host cancels the turn (cancel, timeout, a failed model call). */
  readonly signal: AbortSignal;
  /** The workspace as the driver sees it (absolute). */
  readonly workspace: string;
  readonly model: ModelEndpoint;
  /** A log line for the host's log tail. */
  log(level: "debug" | "info" | "warn" | "error", msg: string): void;
  /** A step checkpoint; resolves once the host has made it durable. */
  step(step: { step: number; name?: string; output?: unknown }): Promise<void>;
}

/** One agent runtime inside a container. */
export interface RuntimeDriver {
  /** Shown as the agent's name in `ready`. */
  readonly name: string;
  /** Protocol features it supports: `quiesce`, `release`. */
  readonly capabilities: readonly string[];
  /**
   * Gets ready for turns (checks its program exists, starts a warm process).
   * Throwing fails the container's start with the error's message, no retry loop:
   * a `RUNTIME_NOT_INSTALLED` or `CONFIG_INVALID` is reported once.
   */
  start(): Promise<void>;
  /** Runs one turn to its answer; throws a `ClawfleetError` saying whether a retry may help. */
  runTurn(turn: DriverTurn, ctx: DriverContext): Promise<string>;
  /** Makes the workspace safe to copy (never called mid-turn). */
  quiesce?(): Promise<void>;
  /** Closes everything open in the workspace: another session's files replace it next. */
  release?(): Promise<void>;
  /** Stops whatever it started; called once when the host goes away. */
  stop(): Promise<void>;
}
