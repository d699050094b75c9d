/**
 * Every error clawfleet raises or reports carries a stable string `code` and says
 * whether retrying could help. Supervisors and the task machine decide by
 * {@link ClawfleetError.retryable}, never by message text.
 */

/**
 * The one registry of error codes: every code the fleet raises, stores on a task
 * record or sends on the wire is here, so clients and docs have one list.
 */
export const ErrorCodes = {
  // Requests at the edge.
  INVALID_REQUEST: "INVALID_REQUEST",
  INPUT_TOO_LARGE: "INPUT_TOO_LARGE",
  NOT_FOUND: "NOT_FOUND",
  TIMEOUT: "TIMEOUT",
  NO_ORCHESTRATOR: "NO_ORCHESTRATOR",
  /** Client side: no gateway answered on the fleet's API subjects. */
  NO_GATEWAY: "NO_GATEWAY",
  /** Client side: the fleet named in the data dir's `fleet.json` is not running (its pid is gone). */
  FLEET_DOWN: "FLEET_DOWN",
  /** Client side: the command line does not parse (unknown command or option, missing or malformed argument). */
  USAGE: "USAGE",
  /** Client side: a file named on the command line does not exist. */
  FILE_NOT_FOUND: "FILE_NOT_FOUND",
  /** Client side: a file named on the command line exists but cannot be read or written. */
  FILE_UNREADABLE: "FILE_UNREADABLE",
  BEHAVIOR_TOO_LARGE: "BEHAVIOR_TOO_LARGE",
  CONFIG_INVALID: "CONFIG_INVALID",
  NATS_SERVER_UNAVAILABLE: "NATS_SERVER_UNAVAILABLE",
  // How a task or an attempt ended.
  TURN_TIMEOUT: "TURN_TIMEOUT",
  CANCELED: "CANCELED",
  ATTEMPTS_EXHAUSTED: "ATTEMPTS_EXHAUSTED",
  SESSION_QUARANTINED: "SESSION_QUARANTINED",
  /** Client side: a task record that failed without an error. */
  FAILED: "FAILED",
  NODE_LOST: "NODE_LOST",
  /** The node stopped while it ran the turn (retryable). */
  NODE_STOPPING: "NODE_STOPPING",
  /** The attempt's task lease expired or was taken over (retryable). */
  LEASE_LOST: "LEASE_LOST",
  /** No node accepted or answered a dispatch (retryable). */
  DISPATCH_FAILED: "DISPATCH_FAILED",
  // The agent and its turn.
  UNKNOWN_OP: "UNKNOWN_OP",
  INVALID_SCRIPT: "INVALID_SCRIPT",
  SCRIPT_FAILED: "SCRIPT_FAILED",
  AGENT_EXITED: "AGENT_EXITED",
  AGENT_HUNG: "AGENT_HUNG",
  AGENT_PROTOCOL: "AGENT_PROTOCOL",
  AGENT_START_FAILED: "AGENT_START_FAILED",
  STEP_OUTPUT_TOO_LARGE: "STEP_OUTPUT_TOO_LARGE",
  /** A CLI agent exited non-zero (terminal; the message ends with its stderr tail). */
  AGENT_FAILED: "AGENT_FAILED",
  /** The agent's answer is over its runtime's size cap (terminal). */
  OUTPUT_TOO_LARGE: "OUTPUT_TOO_LARGE",
  /** A runtime's files (OpenClaw, Node 24, a CLI agent's program) are not installed where the pool looks. */
  RUNTIME_NOT_INSTALLED: "RUNTIME_NOT_INSTALLED",
  // Model calls (the bridge from the sandbox to the model gateway and its upstreams).
  /** No model gateway answered (retryable). */
  MODEL_GATEWAY_UNAVAILABLE: "MODEL_GATEWAY_UNAVAILABLE",
  /** The call names an upstream the gateway does not have (terminal). */
  MODEL_UPSTREAM_UNKNOWN: "MODEL_UPSTREAM_UNKNOWN",
  /** The upstream could not be reached, broke off, or answered something unusable (retryable). */
  MODEL_UPSTREAM_FAILED: "MODEL_UPSTREAM_FAILED",
  /** The upstream did not begin or go on answering in time (retryable). */
  MODEL_UPSTREAM_TIMEOUT: "MODEL_UPSTREAM_TIMEOUT",
  /** The agent's request is over the gateway's size limit (terminal). */
  MODEL_REQUEST_TOO_LARGE: "MODEL_REQUEST_TOO_LARGE",
  /** The upstream's answer is over the gateway's size limit (terminal). */
  MODEL_RESPONSE_TOO_LARGE: "MODEL_RESPONSE_TOO_LARGE",
  /** The relay between sandbox, node and gateway broke: garbage from the shim, lost frames (retryable). */
  MODEL_BRIDGE_FAILED: "MODEL_BRIDGE_FAILED",
  /** The agent called its model while no turn was running (terminal: nobody to bill). */
  MODEL_CALL_OUTSIDE_TURN: "MODEL_CALL_OUTSIDE_TURN",
  // Workspaces and snapshots.
  /** A path is absolute, not normalised, has `..`, or passes through a symlink or file. */
  PATH_ESCAPE: "PATH_ESCAPE",
  /** A symlink is absolute or resolves outside the workspace. */
  SYMLINK_ESCAPE: "SYMLINK_ESCAPE",
  /** A FIFO, socket or device in the workspace. */
  SPECIAL_FILE: "SPECIAL_FILE",
  FILE_TOO_LARGE: "FILE_TOO_LARGE",
  WORKSPACE_TOO_LARGE: "WORKSPACE_TOO_LARGE",
  TOO_MANY_FILES: "TOO_MANY_FILES",
  /** The local filesystem refused an operation (permissions, not a directory...). */
  WORKSPACE_ERROR: "WORKSPACE_ERROR",
  /** A file changed under the snapshot (shrank or was replaced); retryable. */
  WORKSPACE_CHANGED: "WORKSPACE_CHANGED",
  /** No such version (or checkpoint) for this tenant and session. */
  SNAPSHOT_NOT_FOUND: "SNAPSHOT_NOT_FOUND",
  /** A stored manifest or chunk is missing, malformed or does not match its hash. */
  SNAPSHOT_CORRUPT: "SNAPSHOT_CORRUPT",
  /** The snapshot ran past `maxSnapshotMs` and was not committed (retryable). */
  SNAPSHOT_TIMEOUT: "SNAPSHOT_TIMEOUT",
  /** NATS failed under the snapshot store; the same call may succeed later (retryable). */
  SNAPSHOT_STORE_ERROR: "SNAPSHOT_STORE_ERROR",
  /** A bug or an unclassified failure: never retried for its own sake. */
  INTERNAL: "INTERNAL",
} as const;

/** A code of the registry. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** The wire form of an error: what API replies, task records and events carry. */
export interface ErrorInfo {
  readonly code: ErrorCode;
  readonly message: string;
}

/** Base class of all clawfleet errors. */
export class ClawfleetError extends Error {
  /** Stable, machine-readable code, e.g. `INVALID_REQUEST`. */
  readonly code: ErrorCode;
  /** Whether the same work may succeed if tried again (elsewhere or later). */
  readonly retryable: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }

  /** The wire form, safe to send to clients (no stack, no cause). */
  toInfo(): ErrorInfo {
    return { code: this.code, message: this.message };
  }
}

/** A failure that will happen again if retried: bad input, unknown op, policy refusal. */
export class TerminalError extends ClawfleetError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, retryable: false });
  }
}

/** A failure of infrastructure that another attempt may not meet: a crash, a lost node. */
export class RetryableError extends ClawfleetError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, retryable: true });
  }
}

/** A bug: a broken invariant or a missing part. It surfaces; retrying cannot help. */
export class InternalError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.INTERNAL, message, options);
  }
}

/** A request or message failed schema validation at a boundary. */
export class ValidationError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown; code?: ErrorCode }) {
    super(options?.code ?? ErrorCodes.INVALID_REQUEST, message, options);
  }
}

/** The named task does not exist (or has expired from the task bucket). */
export class NotFoundError extends TerminalError {
  constructor(message: string) {
    super(ErrorCodes.NOT_FOUND, message);
  }
}

/** Waiting for something took longer than allowed; the work itself may go on. */
export class TimeoutError extends RetryableError {
  constructor(message: string, options?: { cause?: unknown; code?: ErrorCode }) {
    super(options?.code ?? ErrorCodes.TIMEOUT, message, options);
  }
}

/** The agent process died, hung or broke the protocol while running a turn. */
export class AgentError extends RetryableError {}

/** A configuration value is invalid; the process cannot start as configured. */
export class ConfigError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.CONFIG_INVALID, message, options);
  }
}

/** nats-server is not installed or could not be started. */
export class NatsServerError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.NATS_SERVER_UNAVAILABLE, message, options);
  }
}

/**
 * A model call failed in the bridge or at the gateway (not an upstream's own HTTP
 * error, which the agent sees as it is). Retryable or not by code.
 */
export class ModelError extends ClawfleetError {
  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(code, message, {
      ...options,
      retryable: options?.retryable ?? MODEL_RETRYABLE.has(code),
    });
  }
}

const MODEL_RETRYABLE: ReadonlySet<ErrorCode> = new Set([
  ErrorCodes.MODEL_GATEWAY_UNAVAILABLE,
  ErrorCodes.MODEL_UPSTREAM_FAILED,
  ErrorCodes.MODEL_UPSTREAM_TIMEOUT,
  ErrorCodes.MODEL_BRIDGE_FAILED,
]);

/** Converts anything thrown into the wire form without leaking stacks. */
export function toErrorInfo(err: unknown): ErrorInfo {
  if (err instanceof ClawfleetError) return err.toInfo();
  if (err instanceof Error) return { code: ErrorCodes.INTERNAL, message: err.message };
  return { code: ErrorCodes.INTERNAL, message: String(err) };
}

/** Rebuilds a typed error from its wire form, keeping the retry decision explicit. */
export function fromErrorInfo(info: ErrorInfo, retryable: boolean): ClawfleetError {
  return retryable
    ? new RetryableError(info.code, info.message)
    : new TerminalError(info.code, info.message);
}
