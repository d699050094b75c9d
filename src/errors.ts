/**
 * Every error clawfleet raises or reports carries a stable string `code` and says
 * whether retrying could help. Supervisors and the task machine decide by
 * {@link ClawfleetError.retryable}, never by message text.
 */

/** The wire form of an error: what API replies, task records and events carry. */
export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
}

/** Base class of all clawfleet errors. */
export class ClawfleetError extends Error {
  /** Stable, machine-readable code, e.g. `INVALID_REQUEST`. */
  readonly code: string;
  /** Whether the same work may succeed if tried again (elsewhere or later). */
  readonly retryable: boolean;

  constructor(code: string, message: string, options?: { cause?: unknown; retryable?: boolean }) {
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
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, retryable: false });
  }
}

/** A failure of infrastructure that another attempt may not meet: a crash, a lost node. */
export class RetryableError extends ClawfleetError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, retryable: true });
  }
}

/** A request or message failed schema validation at a boundary. */
export class ValidationError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? "INVALID_REQUEST", message, options);
  }
}

/** The named task does not exist (or has expired from the task bucket). */
export class NotFoundError extends TerminalError {
  constructor(message: string) {
    super("NOT_FOUND", message);
  }
}

/** Waiting for something took longer than allowed; the work itself may go on. */
export class TimeoutError extends RetryableError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? "TIMEOUT", message, options);
  }
}

/** The agent process died, hung or broke the protocol while running a turn. */
export class AgentError extends RetryableError {}

/** A configuration value is invalid; the process cannot start as configured. */
export class ConfigError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("CONFIG_INVALID", message, options);
  }
}

/** nats-server is not installed or could not be started. */
export class NatsServerError extends TerminalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NATS_SERVER_UNAVAILABLE", message, options);
  }
}

/** Stable error codes used across the fleet, collected for clients and docs. */
export const ErrorCodes = {
  INVALID_REQUEST: "INVALID_REQUEST",
  INPUT_TOO_LARGE: "INPUT_TOO_LARGE",
  NOT_FOUND: "NOT_FOUND",
  TIMEOUT: "TIMEOUT",
  TURN_TIMEOUT: "TURN_TIMEOUT",
  CANCELED: "CANCELED",
  UNKNOWN_OP: "UNKNOWN_OP",
  INVALID_SCRIPT: "INVALID_SCRIPT",
  SCRIPT_FAILED: "SCRIPT_FAILED",
  AGENT_EXITED: "AGENT_EXITED",
  AGENT_HUNG: "AGENT_HUNG",
  AGENT_PROTOCOL: "AGENT_PROTOCOL",
  AGENT_START_FAILED: "AGENT_START_FAILED",
  NODE_LOST: "NODE_LOST",
  ATTEMPTS_EXHAUSTED: "ATTEMPTS_EXHAUSTED",
  WORKSPACE_ERROR: "WORKSPACE_ERROR",
  PATH_ESCAPE: "PATH_ESCAPE",
  NO_ORCHESTRATOR: "NO_ORCHESTRATOR",
  INTERNAL: "INTERNAL",
} as const;

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
