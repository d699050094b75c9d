/**
 * The agent side of the agent link for real runtimes: one process in the
 * container that speaks the JSON-lines protocol on stdio (agent-protocol.ts),
 * heartbeats on the agent's behalf, serves the model shim on the container's
 * loopback (model-shim.ts), and runs each turn through a {@link RuntimeDriver}
 * (a CLI agent per turn, or a warm OpenClaw).
 *
 * Start-up failures (a program that is not installed, a config it refuses) are
 * reported as a log line naming the code and an exit with {@link EXIT_START_FAILED}
 * before `ready`, so the node's start fails with that reason instead of a hang.
 */
import { createInterface } from "node:readline";
import type { z } from "zod";
import { ClawfleetError, ErrorCodes, TerminalError, toErrorInfo } from "../errors.js";
import {
  type AgentMessageSchema,
  encodeLine,
  HostMessageSchema,
} from "../protocol/agent-protocol.js";
import { ModelShim } from "./model-shim.js";
import type {
  AgentHostConfig,
  DriverContext,
  DriverTurn,
  ModelEndpoint,
  RuntimeDriver,
} from "./runtime-driver.js";

/** Exit code of an agent host whose runtime could not start (sysexits' EX_CONFIG). */
export const EXIT_START_FAILED = 78;

/** The dummy key agents see: real keys live only at the model gateway. */
export const DUMMY_MODEL_KEY = "clawfleet-no-key";

type Outgoing = z.input<typeof AgentMessageSchema>;
type HostMessage = z.output<typeof HostMessageSchema>;

/** Builds the variables that point an agent at its model endpoint. */
export function modelEndpoint(url: string, config: AgentHostConfig): ModelEndpoint {
  const baseUrl = `${url}/${config.model.upstream}`;
  const env: Record<string, string> = {
    CLAWFLEET_MODEL_URL: url,
    CLAWFLEET_MODEL_BASE_URL: baseUrl,
    CLAWFLEET_MODEL: config.model.model,
  };
  if (config.model.api === "anthropic") {
    env.ANTHROPIC_BASE_URL = baseUrl;
    env.ANTHROPIC_API_KEY = DUMMY_MODEL_KEY;
  } else {
    env.OPENAI_BASE_URL = baseUrl;
    env.OPENAI_API_KEY = DUMMY_MODEL_KEY;
  }
  return { url, baseUrl, env };
}

/** Where the host's messages come from and its answers go (stdio in production). */
export interface AgentHostIo {
  readonly input: NodeJS.ReadableStream;
  readonly write: (line: string) => void;
  /** Diagnostics (stderr in production). */
  readonly diag: (line: string) => void;
  /** Ends the process (tests pass a recorder). */
  readonly exit: (code: number) => void;
}

interface RunningTurn {
  readonly taskId: string;
  readonly controller: AbortController;
  ack?: { step: number; resolve: () => void };
}

/** Runs one runtime driver behind the agent protocol; see the module comment. */
export class AgentHost {
  private shim: ModelShim | undefined;
  private driver: RuntimeDriver | undefined;
  private endpoint: ModelEndpoint | undefined;
  private current: RunningTurn | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Between-turn requests (quiesce, release) run one at a time, never beside a turn. */
  private chores: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: AgentHostConfig,
    private readonly workspace: string,
    private readonly makeDriver: (model: ModelEndpoint) => RuntimeDriver | Promise<RuntimeDriver>,
    private readonly io: AgentHostIo,
  ) {}

  /** Starts the shim and the driver, then says `ready`; exits {@link EXIT_START_FAILED} if it cannot. */
  async start(): Promise<void> {
    // Heartbeats begin at once: a slow runtime start (OpenClaw: ~10 s) is not a hang.
    this.heartbeat = setInterval(() => this.send({ type: "heartbeat" }), this.config.heartbeatMs);
    const lines = createInterface({ input: this.io.input, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => this.onLine(line));
    // The host closing our stdin means nobody will ever read our answers.
    lines.on("close", () => void this.shutdown(0));
    try {
      this.shim = new ModelShim({
        send: (msg) => this.send(msg as Outgoing),
        port: this.config.shimPort,
        maxRequestBytes: this.config.maxRequestBytes,
      });
      this.endpoint = modelEndpoint(await this.shim.listen(), this.config);
      this.driver = await this.makeDriver(this.endpoint);
      await this.driver.start();
    } catch (err) {
      const info = toErrorInfo(err);
      this.send({ type: "log", level: "error", msg: `${info.code}: ${info.message}` });
      this.io.diag(`cannot start: ${info.code}: ${info.message}`);
      await this.shutdown(EXIT_START_FAILED);
      return;
    }
    this.send({
      type: "ready",
      agent: this.driver.name,
      capabilities: [...this.driver.capabilities],
    });
  }

  private onLine(line: string): void {
    if (line.trim() === "") return;
    let msg: HostMessage;
    try {
      msg = HostMessageSchema.parse(JSON.parse(line));
    } catch (err) {
      this.io.diag(`invalid host line: ${err instanceof Error ? err.message : String(err)}`);
      this.send({ type: "log", level: "warn", msg: "ignored an invalid host message" });
      return;
    }
    switch (msg.type) {
      case "model_response":
      case "model_chunk":
      case "model_end":
        this.shim?.onHostMessage(msg);
        return;
      case "ack":
        if (this.current?.ack?.step === msg.step) {
          const { resolve } = this.current.ack;
          this.current.ack = undefined;
          resolve();
        }
        return;
      case "cancel":
        this.current?.controller.abort();
        return;
      case "quiesce":
      case "release": {
        const { type, id } = msg;
        const fn = type === "quiesce" ? this.driver?.quiesce : this.driver?.release;
        this.chores = this.chores
          .then(() => fn?.call(this.driver))
          .then(
            () => this.send({ type: type === "quiesce" ? "quiesced" : "released", id }),
            (err) => {
              // No answer: the host's wait times out and it does not copy a workspace in doubt.
              this.send({ type: "log", level: "error", msg: `${type} failed: ${String(err)}` });
            },
          );
        return;
      }
      case "turn":
        if (this.current !== undefined) {
          this.send({
            type: "error",
            taskId: msg.taskId,
            error: { code: ErrorCodes.INVALID_REQUEST, message: "a turn is already running" },
            retryable: false,
          });
          return;
        }
        void this.serve(msg);
    }
  }

  private async serve(turn: DriverTurn): Promise<void> {
    const run: RunningTurn = { taskId: turn.taskId, controller: new AbortController() };
    this.current = run;
    const ctx: DriverContext = {
      signal: run.controller.signal,
      workspace: this.workspace,
      model: this.endpoint!,
      log: (level, msg) => this.send({ type: "log", level, msg: msg.slice(0, 4096) }),
      step: (s) => this.checkpoint(run, s),
    };
    try {
      await this.chores;
      const output = await this.driver!.runTurn(turn, ctx);
      if (run.controller.signal.aborted) throw canceled();
      this.send({ type: "result", taskId: turn.taskId, output });
    } catch (err) {
      const e =
        run.controller.signal.aborted && !(err instanceof ClawfleetError) ? canceled() : err;
      const retryable = e instanceof ClawfleetError ? e.retryable : true;
      if (!(e instanceof ClawfleetError)) this.io.diag(`turn ${turn.taskId} failed: ${String(e)}`);
      this.send({ type: "error", taskId: turn.taskId, error: toErrorInfo(e), retryable });
    } finally {
      this.current = undefined;
    }
  }

  private checkpoint(
    run: RunningTurn,
    s: { step: number; name?: string; output?: unknown },
  ): Promise<void> {
    if (run.controller.signal.aborted) return Promise.reject(canceled());
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(canceled());
      run.controller.signal.addEventListener("abort", onAbort, { once: true });
      run.ack = {
        step: s.step,
        resolve: () => {
          run.controller.signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.send({ type: "step", ...s });
    });
  }

  private send(msg: Outgoing): void {
    this.io.write(encodeLine(msg));
  }

  private async shutdown(code: number): Promise<void> {
    clearInterval(this.heartbeat);
    this.current?.controller.abort();
    await Promise.allSettled([this.driver?.stop(), this.shim?.close()]);
    this.io.exit(code);
  }
}

function canceled(): TerminalError {
  return new TerminalError(ErrorCodes.CANCELED, "turn canceled by the host");
}
