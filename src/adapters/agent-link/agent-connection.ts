/**
 * The host side of the agent protocol (agent-protocol.ts) over any pair of byte
 * streams: a child's stdio today, a container's attach streams later. It frames
 * and validates lines, runs turns under the {@link ContainerHandle.runTurn}
 * contract, and watches the agent's heartbeat on an injected clock.
 */
import type { Readable, Writable } from "node:stream";
import { type Clock, systemClock } from "../../clock.js";
import {
  AgentError,
  ClawfleetError,
  ErrorCodes,
  fromErrorInfo,
  RetryableError,
  TerminalError,
  ValidationError,
} from "../../errors.js";
import { type Logger, silentLogger } from "../../logger.js";
import {
  type AgentMessage,
  AgentMessageSchema,
  encodeLine,
  type TurnMessage,
  TurnMessageSchema,
} from "../../protocol/agent-protocol.js";
import { ModelRelay } from "./model-relay.js";
import type { TurnHooks } from "./pool-adapter.js";

/** How an {@link AgentConnection} talks to its agent and when it gives up on it. */
export interface AgentConnectionOptions {
  /** The agent's output (its stdout): protocol lines only. */
  readonly input: Readable;
  /** The agent's input (its stdin). */
  readonly output: Writable;
  /** The agent's diagnostics, kept in the log tail. */
  readonly stderr?: Readable;
  /** How often the agent promised to show life. */
  readonly heartbeatMs: number;
  /** Silent periods of `heartbeatMs` before the agent counts as hung. */
  readonly missedHeartbeats: number;
  readonly clock?: Clock;
  /** Time the agent gets to answer a `cancel` before it counts as hung. Default 2000 ms. */
  readonly cancelGraceMs?: number;
  /** Longest accepted protocol line. Default 8 MiB. */
  readonly maxLineBytes?: number;
  /** Lines kept by {@link AgentConnection.logTail}. Default 200. */
  readonly logTailLines?: number;
  /**
   * Whether the end of `input` fails the connection (`AGENT_EXITED`). Default
   * true; a process owner turns it off to fail it with the exit code instead.
   */
  readonly closeOnEnd?: boolean;
  readonly logger?: Logger;
}

/** Splits a byte stream into UTF-8 lines, bounded in length; partial chunks are joined. */
export class LineFramer {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;

  constructor(
    private readonly maxLineBytes: number,
    private readonly onLine: (line: string) => void,
    /** Called once per over-long line; the rest of that line is dropped. */
    private readonly onOverflow: () => void,
  ) {}

  push(chunk: Buffer | string): void {
    const buf = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const piece = buf.subarray(start, nl);
      start = nl + 1;
      if (!this.discarding && this.size + piece.length > this.maxLineBytes) this.onOverflow();
      else if (!this.discarding) {
        const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
        const text = line.toString("utf8");
        this.onLine(text.endsWith("\r") ? text.slice(0, -1) : text);
      }
      this.parts = [];
      this.size = 0;
      this.discarding = false;
    }
    const rest = buf.subarray(start);
    if (rest.length === 0 || this.discarding) return;
    if (this.size + rest.length > this.maxLineBytes) {
      this.parts = [];
      this.size = 0;
      this.discarding = true;
      this.onOverflow();
      return;
    }
    this.parts.push(rest);
    this.size += rest.length;
  }
}

interface ActiveTurn {
  readonly taskId: string;
  readonly hooks: TurnHooks;
  readonly resolve: (output: string) => void;
  readonly reject: (err: ClawfleetError) => void;
  /** Set once the host has sent `cancel`: the error the turn will end with. */
  stopping?: ClawfleetError;
  deadline?: unknown;
  grace?: unknown;
  detach?: () => void;
}

type TurnLine = Extract<AgentMessage, { type: "step" | "effect" | "result" | "error" }>;

/** Requests the host makes between turns and the agent answers with the same id. */
type RoundTrip = "quiesce" | "release";

function asClawfleetError(err: unknown, what: string): ClawfleetError {
  if (err instanceof ClawfleetError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new RetryableError(ErrorCodes.INTERNAL, `${what}: ${reason}`, { cause: err });
}

function preview(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** One agent's protocol session. Fails once and for good; owners replace the agent then. */
export class AgentConnection {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly tail: string[] = [];
  private readonly tailMax: number;
  private readonly graceMs: number;
  private readonly failureListeners = new Set<(err: ClawfleetError) => void>();
  private readyWaiters: { resolve: () => void; reject: (err: ClawfleetError) => void }[] = [];
  private capabilities = new Set<string>();
  private readonly roundTrips = new Map<number, () => void>();
  private nextRoundTripId = 1;
  private readonly relay: ModelRelay;
  private isReady = false;
  private failed: ClawfleetError | undefined;
  private active: ActiveTurn | undefined;
  private watchdog: unknown;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: AgentConnectionOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
    this.tailMax = options.logTailLines ?? 200;
    this.graceMs = options.cancelGraceMs ?? 2000;
    this.relay = new ModelRelay(
      (msg) => this.write(msg),
      (err) => {
        if (this.active) this.stopTurn(this.active, err);
      },
      this.logger,
    );
    const maxLine = options.maxLineBytes ?? 8 * 1024 * 1024;
    const framer = new LineFramer(
      maxLine,
      (line) => this.onLine(line),
      () => this.fail(this.protocolError(`agent sent a line over ${maxLine} bytes`)),
    );
    options.input.on("data", (chunk: Buffer | string) => framer.push(chunk));
    options.input.on("error", (err) => this.closeInput(`agent output failed: ${err.message}`));
    options.input.on("end", () => this.closeInput("agent closed its output"));
    options.output.on("error", (err) =>
      this.logger.debug({ err: err.message }, "agent input failed"),
    );
    if (options.stderr !== undefined) {
      const stderr = new LineFramer(
        64 * 1024,
        (line) => this.pushTail(line),
        () => this.pushTail("[stderr line over 64 KiB dropped]"),
      );
      options.stderr.on("data", (chunk: Buffer | string) => stderr.push(chunk));
    }
  }

  /** Whether the agent is still speaking the protocol. */
  get alive(): boolean {
    return this.failed === undefined;
  }

  /** Why the connection failed, once it has. */
  get failure(): ClawfleetError | undefined {
    return this.failed;
  }

  /** The last stderr lines and log messages, oldest first. */
  logTail(): string[] {
    return [...this.tail];
  }

  /** Calls `listener` once when the connection fails (hang, protocol error, close). */
  onFailure(listener: (err: ClawfleetError) => void): () => void {
    this.failureListeners.add(listener);
    return () => this.failureListeners.delete(listener);
  }

  /** Resolves on the agent's `ready`; rejects with `AGENT_START_FAILED` on failure or timeout. */
  waitReady(timeoutMs: number): Promise<void> {
    if (this.isReady) return Promise.resolve();
    if (this.failed) return Promise.reject(this.startFailed(this.failed));
    return new Promise<void>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(
          new AgentError(ErrorCodes.AGENT_START_FAILED, `agent not ready within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const waiter = {
        resolve: () => {
          this.clock.clearTimeout(timer);
          resolve();
        },
        reject: (err: ClawfleetError) => {
          this.clock.clearTimeout(timer);
          reject(err);
        },
      };
      this.readyWaiters.push(waiter);
    });
  }

  /**
   * {@link waitReady} for a container that is starting: if the agent never gets
   * ready, `stop` takes the container down and the start fails
   * `AGENT_START_FAILED`, naming `containerId` and the agent's last log lines.
   */
  async readyOrStop(
    containerId: string,
    timeoutMs: number,
    stop: () => Promise<void>,
  ): Promise<void> {
    try {
      await this.waitReady(timeoutMs);
    } catch (err) {
      await stop();
      const tail = this.logTail().slice(-5).join(" | ");
      const reason = (err as Error).message + (tail === "" ? "" : `; agent log: ${tail}`);
      throw new AgentError(ErrorCodes.AGENT_START_FAILED, `container ${containerId}: ${reason}`, {
        cause: err,
      });
    }
  }

  /**
   * Runs one turn (see {@link ContainerHandle.runTurn}). Settles only once the
   * agent is idle again or the connection has failed, so `alive` afterwards says
   * whether another turn may follow. On timeout, abort or a failing hook the
   * agent gets `cancel` and {@link AgentConnectionOptions.cancelGraceMs} to
   * answer; past that the connection fails with `AGENT_HUNG`.
   */
  runTurn(
    turn: TurnMessage,
    hooks: TurnHooks,
    options: { timeoutMs: number; signal: AbortSignal },
  ): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.active) {
      return Promise.reject(new TerminalError(ErrorCodes.INTERNAL, "a turn is already running"));
    }
    if (options.signal.aborted) return Promise.reject(canceledError());
    const parsed = TurnMessageSchema.safeParse(turn);
    if (!parsed.success)
      return Promise.reject(new ValidationError(`invalid turn: ${parsed.error.message}`));
    return new Promise<string>((resolve, reject) => {
      const active: ActiveTurn = { taskId: parsed.data.taskId, hooks, resolve, reject };
      this.active = active;
      active.deadline = this.clock.setTimeout(() => {
        const msg = `turn exceeded its deadline of ${options.timeoutMs} ms`;
        this.stopTurn(active, new TerminalError(ErrorCodes.TURN_TIMEOUT, msg));
      }, options.timeoutMs);
      const onAbort = () => this.stopTurn(active, canceledError());
      options.signal.addEventListener("abort", onAbort, { once: true });
      active.detach = () => options.signal.removeEventListener("abort", onAbort);
      this.write(parsed.data);
    });
  }

  /**
   * Asks the agent to make its workspace safe to copy and waits for its answer.
   * A no-op for agents without the `quiesce` capability; an agent that does not
   * answer within `timeoutMs` fails the snapshot rather than risk a torn copy.
   */
  quiesce(timeoutMs = 10_000): Promise<void> {
    return this.roundTrip("quiesce", timeoutMs);
  }

  /**
   * Asks the agent to close everything it holds open in the workspace (its files
   * are about to be replaced) and waits for its answer. A no-op for agents
   * without the `release` capability.
   */
  release(timeoutMs = 30_000): Promise<void> {
    return this.roundTrip("release", timeoutMs);
  }

  private roundTrip(type: RoundTrip, timeoutMs: number): Promise<void> {
    if (!this.capabilities.has(type) || this.failed) return Promise.resolve();
    const id = this.nextRoundTripId++;
    return new Promise<void>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.roundTrips.delete(id);
        reject(
          new AgentError(ErrorCodes.AGENT_HUNG, `agent did not ${type} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.roundTrips.set(id, () => {
        this.clock.clearTimeout(timer);
        resolve();
      });
      this.write({ type, id });
    });
  }

  /** Fails the connection from outside (the agent exited, or its owner stopped it). */
  close(error: ClawfleetError): void {
    this.fail(error);
  }

  private onLine(line: string): void {
    if (this.failed || line.trim() === "") return;
    this.armWatchdog();
    let msg: AgentMessage;
    try {
      msg = AgentMessageSchema.parse(JSON.parse(line));
    } catch {
      this.fail(this.protocolError(`agent sent an invalid line: ${preview(line)}`));
      return;
    }
    switch (msg.type) {
      case "ready":
        this.isReady = true;
        this.capabilities = new Set(msg.capabilities);
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        return;
      case "quiesced":
      case "released":
        this.roundTrips.get(msg.id)?.();
        this.roundTrips.delete(msg.id);
        return;
      case "model_request":
        this.relay.request(msg, this.active?.stopping ? undefined : this.active?.hooks.onModelCall);
        return;
      case "model_abort":
        this.relay.abort(msg.id);
        return;
      case "heartbeat":
        return;
      case "log":
        this.pushTail(`[${msg.level}] ${msg.msg}`);
        try {
          this.active?.hooks.onLog({ level: msg.level, msg: msg.msg });
        } catch (err) {
          this.logger.warn({ err: String(err) }, "onLog hook threw");
        }
        return;
      default:
        this.onTurnLine(msg);
    }
  }

  private onTurnLine(msg: TurnLine): void {
    const turn = this.active;
    if (turn === undefined) {
      this.fail(this.protocolError(`agent sent "${msg.type}" with no turn running`));
      return;
    }
    if ((msg.type === "result" || msg.type === "error") && msg.taskId !== turn.taskId) {
      this.fail(this.protocolError(`agent answered task ${msg.taskId}, expected ${turn.taskId}`));
      return;
    }
    // Hooks run one at a time in arrival order, so an effect is recorded before its step.
    this.queue = this.queue
      .then(() => this.handleTurnLine(turn, msg))
      .catch((err: unknown) => this.fail(asClawfleetError(err, "handling an agent line failed")));
  }

  private async handleTurnLine(turn: ActiveTurn, msg: TurnLine): Promise<void> {
    if (this.active !== turn) return;
    switch (msg.type) {
      case "step":
      case "effect": {
        if (turn.stopping) return;
        try {
          if (msg.type === "step") {
            await turn.hooks.onStep({ step: msg.step, name: msg.name, output: msg.output });
          } else
            await turn.hooks.onEffect({ step: msg.step, kind: msg.kind, payload: msg.payload });
        } catch (err) {
          this.stopTurn(turn, asClawfleetError(err, `${msg.type} hook failed`));
          return;
        }
        if (msg.type === "step" && this.active === turn && !turn.stopping) {
          this.write({ type: "ack", step: msg.step });
        }
        return;
      }
      case "result":
        this.settle(turn, turn.stopping ?? msg.output);
        return;
      case "error":
        this.settle(turn, turn.stopping ?? fromErrorInfo(msg.error, msg.retryable));
    }
  }

  private stopTurn(turn: ActiveTurn, err: ClawfleetError): void {
    if (this.active !== turn || turn.stopping) return;
    turn.stopping = err;
    this.write({ type: "cancel" });
    turn.grace = this.clock.setTimeout(() => {
      if (this.active !== turn) return;
      const msg = `agent did not stop within ${this.graceMs} ms of cancel`;
      this.fail(new AgentError(ErrorCodes.AGENT_HUNG, msg));
    }, this.graceMs);
  }

  private settle(turn: ActiveTurn, outcome: string | ClawfleetError): void {
    if (this.active !== turn) return;
    this.active = undefined;
    this.clock.clearTimeout(turn.deadline);
    if (turn.grace !== undefined) this.clock.clearTimeout(turn.grace);
    turn.detach?.();
    // No model call outlives its turn: it would be billed to nobody.
    this.relay.abortAll(new TerminalError(ErrorCodes.CANCELED, "the turn ended"));
    if (typeof outcome === "string") turn.resolve(outcome);
    else turn.reject(outcome);
  }

  private fail(err: ClawfleetError): void {
    if (this.failed) return;
    this.failed = err;
    this.logger.debug({ code: err.code, err: err.message }, "agent connection failed");
    if (this.watchdog !== undefined) this.clock.clearTimeout(this.watchdog);
    if (this.active) this.settle(this.active, this.active.stopping ?? err);
    for (const w of this.readyWaiters.splice(0)) w.reject(this.startFailed(err));
    for (const listener of [...this.failureListeners]) listener(err);
  }

  private armWatchdog(): void {
    if (this.watchdog !== undefined) this.clock.clearTimeout(this.watchdog);
    const silence = this.options.missedHeartbeats * this.options.heartbeatMs;
    this.watchdog = this.clock.setTimeout(() => {
      const msg = `agent silent for ${silence} ms (${this.options.missedHeartbeats} missed heartbeats)`;
      this.fail(new AgentError(ErrorCodes.AGENT_HUNG, msg));
    }, silence);
  }

  private closeInput(reason: string): void {
    if (this.options.closeOnEnd === false) return;
    this.fail(new AgentError(ErrorCodes.AGENT_EXITED, reason));
  }

  private write(msg: unknown): void {
    if (this.options.output.writable) this.options.output.write(encodeLine(msg));
  }

  private pushTail(line: string): void {
    this.tail.push(line);
    if (this.tail.length > this.tailMax) this.tail.shift();
  }

  private protocolError(message: string): AgentError {
    return new AgentError(ErrorCodes.AGENT_PROTOCOL, message);
  }

  private startFailed(cause: ClawfleetError): AgentError {
    const msg = `agent failed before ready: ${cause.message}`;
    return new AgentError(ErrorCodes.AGENT_START_FAILED, msg, { cause });
  }
}

function canceledError(): TerminalError {
  return new TerminalError(ErrorCodes.CANCELED, "turn canceled");
}
