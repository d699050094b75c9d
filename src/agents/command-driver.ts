/**
 * The `command` runtime: any CLI agent (Claude Code, Codex, a script) run as one
 * process per turn inside the container, in the workspace, pointed at the
 * container's model endpoint. Nothing runs between turns, so the driver needs
 * no quiesce or release (command-process.ts makes sure of that).
 *
 * The program sees a built environment, never the host's: `PATH`, `HOME` (the
 * workspace's `.clawfleet/home`, so the agent's own state and history move with
 * the session), `LANG`, the profile's fixed variables, the allow-listed
 * pass-through values, the model endpoint's variables and the turn's ids. The
 * endpoint's variables come after the profile's: a profile cannot point the
 * agent past the gateway.
 *
 * A turn is one checkpointed step holding the answer. A retry after that
 * checkpoint answers from it instead of running the agent again, which could
 * repeat whatever the agent did to the workspace or the world.
 */
import { constants } from "node:fs";
import { mkdir, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { AgentError, ClawfleetError, ErrorCodes, TerminalError } from "../errors.js";
import type { CommandProfile } from "../runtime-options.js";
import { CommandProcess, findProgram, type ProcessOutcome } from "./command-process.js";
import type { DriverContext, DriverTurn, RuntimeDriver } from "./runtime-driver.js";
import { resolveWorkspacePath } from "./scripted-script.js";

/** The agent's `HOME`, relative to the workspace. */
export const COMMAND_HOME = ".clawfleet/home";
/** Grace between SIGTERM and SIGKILL when a turn is canceled. */
export const DEFAULT_KILL_GRACE_MS = 2000;
/** Most lines of the program's stderr (or non-answer stdout) sent to the host's log per turn. */
const MAX_LOG_LINES = 500;
/** Used when the host runs without a `PATH` (execvp's own default). */
const DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin";
const PLACEHOLDER = /\{input(File)?\}/g;
/** Spawn failures another attempt may not meet: the container was short of processes or memory. */
const TRANSIENT_SPAWN_ERRORS = new Set(["EAGAIN", "ENOMEM", "EMFILE", "ENFILE"]);

/** Options of a {@link CommandDriver}. */
export interface CommandDriverOptions {
  /** The profile's `passEnv` values as the host has them, already filtered. */
  env?: Record<string, string>;
  /** SIGTERM → SIGKILL grace on cancel. Default {@link DEFAULT_KILL_GRACE_MS}. */
  killGraceMs?: number;
}

/** Runs a CLI agent once per turn; see the module comment. */
export class CommandDriver implements RuntimeDriver {
  readonly name = "command";
  readonly capabilities: readonly string[] = [];
  private readonly workspace: string;
  /** Everything of the environment that does not depend on the turn (HOME aside). */
  private readonly env: Readonly<Record<string, string>>;
  private readonly killGraceMs: number;
  private running: CommandProcess | undefined;

  constructor(
    private readonly profile: CommandProfile,
    workspace: string,
    options: CommandDriverOptions = {},
  ) {
    this.workspace = path.resolve(workspace);
    this.env = {
      PATH: process.env.PATH ?? DEFAULT_PATH,
      LANG: "C.UTF-8",
      ...profile.env,
      ...options.env,
    };
    this.killGraceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  }

  private get program(): string {
    return this.profile.argv[0]!;
  }

  /** Checks that the program exists and is executable, as the turn's spawn would find it. */
  async start(): Promise<void> {
    if ((await findProgram(this.program, this.env.PATH!, this.workspace)) === undefined) {
      throw notInstalled(this.program, this.env.PATH!);
    }
  }

  /** Runs the program once and checkpoints its answer as step 1; a resumed turn answers from that step. */
  async runTurn(turn: DriverTurn, ctx: DriverContext): Promise<string> {
    if (turn.resumeAfter >= 1 && typeof turn.steps[0] === "string") return turn.steps[0];
    const output = await this.run(turn, ctx);
    await ctx.step({ step: 1, name: "command", output });
    return output;
  }

  /** Kills a running turn's process group and waits until it is gone. */
  async stop(): Promise<void> {
    const running = this.running;
    if (running === undefined) return;
    running.cancel();
    await running.done;
  }

  private async run(turn: DriverTurn, ctx: DriverContext): Promise<string> {
    const { profile } = this;
    const home = await this.home(ctx);
    const wantsFile =
      profile.input === "file" || profile.argv.some((a) => a.includes("{inputFile}"));
    let inputFile = path.join(this.workspace, profile.inputFile);
    if (wantsFile) {
      inputFile = await workspaceFile(this.workspace, profile.inputFile);
      await fsStep(`cannot write ${profile.inputFile}`, async () => {
        await mkdir(path.dirname(inputFile), { recursive: true });
        await writeFile(inputFile, turn.input);
      });
    }
    let outputFile: string | undefined;
    if (profile.outputFile !== undefined) {
      outputFile = await workspaceFile(this.workspace, profile.outputFile);
      // A stale answer from the previous turn must not pass for this one's.
      await fsStep(`cannot clear ${profile.outputFile}`, () => rm(outputFile!, { force: true }));
    }
    const argv = profile.argv.map((arg) =>
      arg.replace(PLACEHOLDER, (_, file: string | undefined) => (file ? inputFile : turn.input)),
    );
    if (profile.input === "arg" && !profile.argv.some((a) => a.includes("{input}"))) {
      argv.push(turn.input);
    }
    const env: Record<string, string> = {
      HOME: home,
      ...this.env,
      ...ctx.model.env,
      CLAWFLEET_TASK_ID: turn.taskId,
      CLAWFLEET_SESSION: turn.session,
      CLAWFLEET_TENANT: turn.tenant,
    };
    let logged = 0;
    const onLine = (_stream: "stdout" | "stderr", line: string) => {
      logged += 1;
      if (logged <= MAX_LOG_LINES) ctx.log("info", line);
      else if (logged === MAX_LOG_LINES + 1)
        ctx.log("warn", "further output of the agent not logged");
    };

    // No await between this check and the spawn: an abort after it reaches the process.
    if (ctx.signal.aborted) throw canceled();
    let proc: CommandProcess;
    try {
      proc = new CommandProcess({
        file: argv[0]!,
        args: argv.slice(1),
        cwd: this.workspace,
        env,
        ...(profile.input === "stdin" ? { stdin: turn.input } : {}),
        captureStdout: outputFile === undefined,
        maxStdoutBytes: profile.maxOutputBytes,
        killGraceMs: this.killGraceMs,
        signal: ctx.signal,
        onLine,
      });
    } catch (err) {
      // spawn() throws at once only for arguments it cannot pass (a NUL byte in the input).
      throw new TerminalError(ErrorCodes.INVALID_REQUEST, `cannot run ${q(this.program)}: ${err}`, {
        cause: err,
      });
    }
    this.running = proc;
    let outcome: ProcessOutcome;
    try {
      outcome = await proc.done;
    } finally {
      this.running = undefined;
    }
    if (outcome.kind !== "exited" || outcome.code !== 0) throw this.failure(outcome);
    const answer =
      outputFile === undefined ? outcome.stdout : await this.readOutputFile(outputFile);
    return answer.toString("utf8").replace(/\r?\n$/, "");
  }

  /** The agent's HOME: in the workspace if it can be made there, else the container's /tmp. */
  private async home(ctx: DriverContext): Promise<string> {
    const home = path.join(this.workspace, COMMAND_HOME);
    try {
      await mkdir(home, { recursive: true });
      return home;
    } catch (err) {
      ctx.log("warn", `cannot make ${COMMAND_HOME} (${err}); HOME is ${tmpdir()}`);
      return tmpdir();
    }
  }

  private async readOutputFile(file: string): Promise<Buffer> {
    const { outputFile, maxOutputBytes } = this.profile;
    return fsStep(`cannot read ${outputFile}`, async () => {
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        // O_NONBLOCK: a FIFO left at the path must not hang the turn.
        handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        throw new TerminalError(
          ErrorCodes.AGENT_FAILED,
          `${q(this.program)} exited with code 0 but wrote no ${outputFile}`,
        );
      }
      try {
        const info = await handle.stat();
        if (!info.isFile()) {
          throw new TerminalError(ErrorCodes.AGENT_FAILED, `${outputFile} is not a regular file`);
        }
        if (info.size > maxOutputBytes) throw tooLarge(this.program, maxOutputBytes);
        const data = await handle.readFile();
        if (data.length > maxOutputBytes) throw tooLarge(this.program, maxOutputBytes);
        return data;
      } finally {
        await handle.close();
      }
    });
  }

  private failure(outcome: ProcessOutcome): ClawfleetError {
    const program = q(this.program);
    switch (outcome.kind) {
      case "canceled":
        return canceled();
      case "too-large":
        return tooLarge(this.program, this.profile.maxOutputBytes);
      case "signaled":
        // We signal only after deciding the outcome ourselves: this came from outside (OOM killer, kill -9).
        return new AgentError(
          ErrorCodes.AGENT_EXITED,
          `${program} was killed by ${outcome.signal}${tail(outcome.stderrTail)}`,
        );
      case "exited":
        return new TerminalError(
          ErrorCodes.AGENT_FAILED,
          `${program} exited with code ${outcome.code}${tail(outcome.stderrTail) || ": (no stderr)"}`,
        );
      case "spawn-failed":
        return spawnFailure(this.program, this.env.PATH!, outcome.error);
    }
  }
}

function spawnFailure(program: string, searchPath: string, error: NodeJS.ErrnoException) {
  switch (error.code) {
    case "ENOENT":
    case "EACCES":
      return notInstalled(program, searchPath, error);
    case "E2BIG":
      return new TerminalError(
        ErrorCodes.INPUT_TOO_LARGE,
        `the input is too large for ${q(program)}'s command line; use input "stdin" or "file"`,
        { cause: error },
      );
  }
  const message = `cannot start ${q(program)}: ${error.message}`;
  return TRANSIENT_SPAWN_ERRORS.has(error.code ?? "")
    ? new AgentError(ErrorCodes.AGENT_START_FAILED, message, { cause: error })
    : new TerminalError(ErrorCodes.AGENT_START_FAILED, message, { cause: error });
}

/** A workspace path that may not lead out (PATH_ESCAPE), with fs failures as WORKSPACE_ERROR. */
function workspaceFile(workspace: string, relPath: string): Promise<string> {
  return fsStep(`cannot resolve ${relPath}`, () => resolveWorkspacePath(workspace, relPath));
}

async function fsStep<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ClawfleetError) throw err;
    throw new TerminalError(ErrorCodes.WORKSPACE_ERROR, `${what}: ${err}`, { cause: err });
  }
}

function notInstalled(program: string, searchPath: string, cause?: unknown): TerminalError {
  const where = program.includes("/") ? "" : ` on PATH ${searchPath}`;
  return new TerminalError(
    ErrorCodes.RUNTIME_NOT_INSTALLED,
    `program ${q(program)} is not installed: no executable file${where}`,
    { cause },
  );
}

function tooLarge(program: string, max: number): TerminalError {
  return new TerminalError(
    ErrorCodes.OUTPUT_TOO_LARGE,
    `${q(program)}'s answer is over maxOutputBytes (${max} bytes)`,
  );
}

function canceled(): TerminalError {
  return new TerminalError(ErrorCodes.CANCELED, "turn canceled");
}

function tail(stderrTail: string): string {
  return stderrTail === "" ? "" : `: ${stderrTail}`;
}

function q(s: string): string {
  return JSON.stringify(s);
}
