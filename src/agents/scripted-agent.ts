/**
 * The reference scripted agent: a real agent process that speaks the JSON-lines
 * protocol on stdio and does deterministic work, so the runtime can be tested
 * end to end without an LLM. Run it as
 * `node --import <absolute path of tsx's loader> src/agents/scripted-agent.ts`.
 *
 * Plain-text input is appended to `memory.md` and answered `turn <n>: <input>`
 * (one step). Script input (see scripted-script.ts) runs one step per op.
 * Every turn first reads the session config `agent.json` and checks its
 * behaviour files; it exits with code 78 when either is invalid (see
 * scripted-config.ts).
 *
 * Turn counting: the count lives in {@link AGENT_STATE_FILE} in the workspace as
 * `{turns, lastTaskId}`, so it moves with the workspace. A turn increments it
 * only when its task id differs from `lastTaskId`; every retry of a task
 * (resumed or from scratch) therefore counts once, whichever step it crashed
 * in. A workspace restored from an older snapshot has an older `lastTaskId` and
 * counts the task again, which is right: the earlier increment was lost with it.
 * The count is taken when the turn starts (before step 1); a script the parser
 * rejects never starts and is not counted, one whose op fails later is.
 */

import { access, appendFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import type Database from "better-sqlite3";
import { z } from "zod";
import { ClawfleetError, ErrorCodes, TerminalError, toErrorInfo } from "../errors.js";
import {
  type AgentMessageSchema,
  encodeLine,
  HostMessageSchema,
  type TurnMessageSchema,
} from "../protocol/agent-protocol.js";
import {
  checkScriptedBehavior,
  EXIT_CONFIG,
  InvalidAgentConfig,
  readScriptedConfig,
} from "./scripted-config.js";
import { parseAgentInput, resolveWorkspacePath, type ScriptOp } from "./scripted-script.js";

/** The workspace file holding the session's turn count. */
export const AGENT_STATE_FILE = ".agent-state.json";
/** The workspace file plain-text turns append to. */
export const MEMORY_FILE = "memory.md";

type Outgoing = z.input<typeof AgentMessageSchema>;
type Turn = z.output<typeof TurnMessageSchema>;

const AgentStateSchema = z.object({
  turns: z.number().int().min(0),
  lastTaskId: z.string().optional(),
});
type AgentState = z.output<typeof AgentStateSchema>;

const MiB = 1024 * 1024;

function send(msg: Outgoing): void {
  process.stdout.write(encodeLine(msg));
}

function diag(msg: string): void {
  process.stderr.write(`[scripted-agent] ${msg}\n`);
}

function canceled(): TerminalError {
  return new TerminalError(ErrorCodes.CANCELED, "turn canceled by the host");
}

/**
 * better-sqlite3, an optional package (native, built from source at install). The
 * specifier is a variable so bundlers leave it to node_modules instead of failing
 * the whole agent's build when it is not installed.
 */
async function loadSqlite(): Promise<typeof Database> {
  const pkg = "better-sqlite3";
  try {
    return ((await import(pkg)) as { default: typeof Database }).default;
  } catch (err) {
    const why = `the sqlite op needs the optional package better-sqlite3 (npm install --no-save better-sqlite3@12; it compiles with a C++ toolchain): ${(err as Error).message}`;
    throw new TerminalError(ErrorCodes.SCRIPT_FAILED, why);
  }
}

/** SQLite databases the current turn holds open (better-sqlite3, loaded on first use). */
class OpenDatabases {
  private readonly open_ = new Map<string, Database.Database>();
  private driver: typeof Database | undefined;

  async open(file: string): Promise<Database.Database> {
    let db = this.open_.get(file);
    if (!db) {
      this.driver ??= await loadSqlite();
      db = new this.driver(file);
      db.pragma("journal_mode = WAL");
      this.open_.set(file, db);
    }
    return db;
  }

  /** Moves every WAL's content into its database file, so the file alone is complete. */
  checkpoint(): void {
    for (const db of this.open_.values()) db.pragma("wal_checkpoint(TRUNCATE)");
  }

  closeAll(): void {
    for (const db of this.open_.values()) db.close();
    this.open_.clear();
  }
}

/** One turn in flight: its cancel switch, the ack it waits for, the memory it holds. */
class RunningTurn {
  readonly controller = new AbortController();
  /** Buffers from `alloc` ops, held on purpose until the turn ends. */
  readonly held: Buffer[] = [];
  private waiter: { step: number; resolve: () => void } | undefined;

  constructor(readonly turn: Turn) {}

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  throwIfCanceled(): void {
    if (this.signal.aborted) throw canceled();
  }

  waitAck(step: number): Promise<void> {
    this.throwIfCanceled();
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(canceled());
      this.signal.addEventListener("abort", onAbort, { once: true });
      this.waiter = {
        step,
        resolve: () => {
          this.signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
    });
  }

  ack(step: number): void {
    if (this.waiter?.step !== step) {
      diag(`ignoring ack of step ${step}: waiting for ${this.waiter?.step ?? "none"}`);
      return;
    }
    const { resolve } = this.waiter;
    this.waiter = undefined;
    resolve();
  }
}

class ScriptedAgent {
  private current: RunningTurn | undefined;
  private readonly databases = new OpenDatabases();
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    private readonly workspace: string,
    private readonly heartbeatMs: number,
  ) {}

  start(): void {
    send({ type: "ready", agent: "scripted", capabilities: ["quiesce"] });
    this.heartbeat = setInterval(() => send({ type: "heartbeat" }), this.heartbeatMs);
    const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => this.onLine(line));
    // The host closing our stdin means nobody will ever read our answers.
    lines.on("close", () => process.exit(0));
  }

  private onLine(line: string): void {
    if (line.trim() === "") return;
    let msg: z.output<typeof HostMessageSchema>;
    try {
      msg = HostMessageSchema.parse(JSON.parse(line));
    } catch (err) {
      diag(`invalid host line: ${err instanceof Error ? err.message : String(err)}`);
      send({ type: "log", level: "warn", msg: "ignored an invalid host message" });
      return;
    }
    if (msg.type === "ack") this.current?.ack(msg.step);
    else if (msg.type === "cancel") this.current?.controller.abort();
    else if (msg.type === "quiesce") {
      // Only ever asked while we wait (for an ack, or for the next turn): nothing is mid-write.
      this.databases.checkpoint();
      send({ type: "quiesced", id: msg.id });
    } else if (msg.type !== "turn") {
      // release and model answers: never asked of an agent that announced neither capability.
      diag(`ignoring a ${msg.type} message`);
    } else if (this.current !== undefined) {
      send({
        type: "error",
        taskId: msg.taskId,
        error: { code: ErrorCodes.INVALID_REQUEST, message: "a turn is already running" },
        retryable: false,
      });
    } else void this.serve(new RunningTurn(msg));
  }

  private async serve(run: RunningTurn): Promise<void> {
    this.current = run;
    const { taskId } = run.turn;
    try {
      const output = await this.runTurn(run);
      run.throwIfCanceled();
      // Closed before answering: the host snapshots the workspace as soon as it has the result.
      this.databases.closeAll();
      send({ type: "result", taskId, output });
    } catch (err) {
      this.databases.closeAll();
      if (err instanceof InvalidAgentConfig) {
        // As a real agent would: it does not run with a config it cannot trust.
        diag(`invalid config, exiting: ${err.message}`);
        process.exit(EXIT_CONFIG);
      }
      const retryable = err instanceof ClawfleetError ? err.retryable : true;
      if (!(err instanceof ClawfleetError)) diag(`turn ${taskId} failed: ${String(err)}`);
      send({ type: "error", taskId, error: toErrorInfo(err), retryable });
    } finally {
      this.current = undefined;
    }
  }

  private async runTurn(run: RunningTurn): Promise<string> {
    const { turn } = run;
    const config = await readScriptedConfig(this.workspace);
    checkScriptedBehavior(turn.behavior);
    const input = parseAgentInput(turn.input);
    if (input.kind === "script" && input.ops.length > config.maxSteps) {
      throw new TerminalError(
        ErrorCodes.INVALID_SCRIPT,
        `the script has ${input.ops.length} ops; agent.json allows ${config.maxSteps}`,
      );
    }
    if (input.kind === "text") {
      const checkpointed = turn.resumeAfter >= 1 ? turn.steps[0] : undefined;
      if (typeof checkpointed === "string") return checkpointed;
      const n = await this.countTurn(turn.taskId, (next) =>
        appendFile(path.join(this.workspace, MEMORY_FILE), `## turn ${next}\n\n${input.text}\n\n`),
      );
      const output = `${config.replyPrefix}turn ${n}: ${input.text}`;
      if (turn.resumeAfter < 1) {
        send({ type: "step", step: 1, name: "text", output });
        await run.waitAck(1);
      }
      return output;
    }
    await this.countTurn(turn.taskId);
    const replies: string[] = [];
    for (const [index, op] of input.ops.entries()) {
      const step = index + 1;
      run.throwIfCanceled();
      if (op.op === "reply") replies.push(op.text);
      // Checkpointed steps are not run again; only their contribution to the output counts.
      if (step <= turn.resumeAfter) {
        if (op.op === "behavior") replies.push(String(turn.steps[index] ?? ""));
        continue;
      }
      const output = await this.runOp(run, op, step);
      if (op.op === "behavior") replies.push(String(output));
      run.throwIfCanceled();
      if (!input.checkpoint) continue;
      send({ type: "step", step, name: op.op, output });
      await run.waitAck(step);
    }
    return replies.join("\n");
  }

  private async runOp(run: RunningTurn, op: ScriptOp, step: number): Promise<unknown> {
    try {
      switch (op.op) {
        case "write": {
          const file = await resolveWorkspacePath(this.workspace, op.path);
          await mkdir(path.dirname(file), { recursive: true });
          await (op.append ? appendFile : writeFile)(file, op.text);
          return { path: op.path, bytes: Buffer.byteLength(op.text) };
        }
        case "read":
          return await readFile(await resolveWorkspacePath(this.workspace, op.path), "utf8");
        case "sleep":
          await sleep(op.ms, undefined, { signal: run.signal });
          return null;
        case "wait":
          await waitForFile(await resolveWorkspacePath(this.workspace, op.path), run.signal);
          return null;
        case "effect":
          send({ type: "effect", step, kind: op.kind, payload: op.payload ?? null });
          return null;
        case "crash":
          if (run.turn.attempt === (op.onAttempt ?? 1)) this.crash(op.mode);
          return null;
        case "alloc": {
          const buf = Buffer.allocUnsafeSlow(op.mb * MiB);
          // Touch every page so the memory is really resident, not just reserved.
          buf.fill(0xa5);
          run.held.push(buf);
          return { mb: op.mb };
        }
        case "reply":
          return op.text;
        case "behavior":
          return run.turn.behavior[op.name] ?? "";
        case "sqlite": {
          const file = await resolveWorkspacePath(this.workspace, op.db);
          await mkdir(path.dirname(file), { recursive: true });
          const db = await this.databases.open(file);
          if (op.exec !== undefined) {
            db.exec(op.exec);
            return null;
          }
          return db.prepare(op.query!).all();
        }
      }
    } catch (err) {
      if (err instanceof ClawfleetError) throw err;
      if (run.signal.aborted) throw canceled();
      const reason =
        (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : String(err);
      throw new TerminalError(ErrorCodes.SCRIPT_FAILED, `op ${step} (${op.op}): ${reason}`, {
        cause: err,
      });
    }
  }

  private crash(mode: "exit" | "hang"): never {
    if (mode === "exit") {
      diag("crashing on purpose (exit 1)");
      process.exit(1);
    }
    diag("hanging on purpose");
    clearInterval(this.heartbeat);
    // Blocks the only thread without burning CPU; timers and stdin stop with it.
    const cell = new Int32Array(new SharedArrayBuffer(4));
    for (;;) Atomics.wait(cell, 0, 0);
  }

  /**
   * Counts `taskId` once (see the module comment). `firstTime` runs before the
   * new count is stored, so a crash in between repeats it rather than losing it.
   */
  private async countTurn(
    taskId: string,
    firstTime?: (next: number) => Promise<void>,
  ): Promise<number> {
    const state = await this.readState();
    if (state.lastTaskId === taskId) return state.turns;
    const next = state.turns + 1;
    await firstTime?.(next);
    await this.writeState({ turns: next, lastTaskId: taskId });
    return next;
  }

  private async readState(): Promise<AgentState> {
    let text: string;
    try {
      text = await readFile(path.join(this.workspace, AGENT_STATE_FILE), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { turns: 0 };
      throw err;
    }
    try {
      return AgentStateSchema.parse(JSON.parse(text));
    } catch (err) {
      diag(`resetting unreadable ${AGENT_STATE_FILE}: ${String(err)}`);
      return { turns: 0 };
    }
  }

  private async writeState(state: AgentState): Promise<void> {
    const file = path.join(this.workspace, AGENT_STATE_FILE);
    // Write-then-rename: a crash mid-write must not leave a half file to be snapshotted.
    await writeFile(`${file}.tmp`, JSON.stringify(state));
    await rename(`${file}.tmp`, file);
  }
}

/** How often the `wait` op looks for its file (polling works across bind mounts). */
const WAIT_POLL_MS = 20;

/** Resolves once `file` exists; rejects when `signal` aborts. */
async function waitForFile(file: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    try {
      await access(file);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await sleep(WAIT_POLL_MS, undefined, { signal });
  }
}

function heartbeatFromEnv(value: string | undefined): number {
  const ms = Number(value);
  return Number.isInteger(ms) && ms >= 10 ? ms : 1000;
}

function main(): void {
  const workspace = path.resolve(process.env.CLAWFLEET_WORKSPACE ?? process.cwd());
  const agent = new ScriptedAgent(workspace, heartbeatFromEnv(process.env.CLAWFLEET_HEARTBEAT_MS));
  process.stdout.on("error", (err) => {
    diag(`stdout failed (${err.message}); exiting`);
    process.exit(0);
  });
  agent.start();
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(path.resolve(entry)).href) main();
