/**
 * One run of a CLI agent for the `command` driver (command-driver.ts): the
 * program in its own process group, its answer read from stdout under a byte
 * cap, its stderr kept as a short tail, and every way it can end reported as a
 * {@link ProcessOutcome} for the driver to turn into an error code.
 *
 * Why nothing outlives a run: the program leads its own process group
 * (`detached`), cancel and an oversized answer signal the whole group (SIGTERM,
 * then SIGKILL after a grace), and when the leader exits whatever it left
 * running in the group is killed too, since nothing may run between turns. A
 * descendant that left the group (`setsid`) and still holds our pipes cannot
 * hold the turn: the pipes are dropped a grace after the leader's exit.
 *
 * {@link findProgram} answers before any turn whether the spawn would find the
 * program, so a missing one is a coded error at start rather than a crash loop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";

/** Longest line passed on or kept; a longer run of bytes without a newline is cut into lines. */
export const MAX_LINE_CHARS = 4096;
/** How much of stderr an `AGENT_FAILED` message carries. */
const TAIL_LINES = 20;
const TAIL_CHARS = 4096;

/** How a run ended. */
export type ProcessOutcome =
  | {
      readonly kind: "exited";
      readonly code: number;
      readonly stdout: Buffer;
      readonly stderrTail: string;
    }
  | { readonly kind: "signaled"; readonly signal: NodeJS.Signals; readonly stderrTail: string }
  /** Ended by {@link CommandProcess.cancel} or the spec's signal. */
  | { readonly kind: "canceled" }
  /** Killed because stdout passed `maxStdoutBytes`. */
  | { readonly kind: "too-large" }
  | { readonly kind: "spawn-failed"; readonly error: NodeJS.ErrnoException };

/** What to run and how. */
export interface ProcessSpec {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd: string;
  /** The whole environment of the program (nothing is inherited). */
  readonly env: Readonly<Record<string, string>>;
  /** Written to stdin, which is then closed; without it stdin is `/dev/null`. */
  readonly stdin?: string;
  /** Whether stdout is the answer (kept, capped) or only lines for {@link ProcessSpec.onLine}. */
  readonly captureStdout: boolean;
  readonly maxStdoutBytes: number;
  readonly killGraceMs: number;
  /** Aborting it cancels the run. */
  readonly signal: AbortSignal;
  /** Each line of stderr (and of stdout when it is not captured). */
  onLine(stream: "stdout" | "stderr", line: string): void;
}

/** Splits text into bounded lines and keeps the last few of them. */
export class LineTail {
  private partial = "";
  private readonly lines: string[] = [];
  private chars = 0;

  constructor(private readonly emit: (line: string) => void) {}

  push(text: string): void {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const line of parts) this.line(line);
    // A program that never writes a newline must not grow the buffer without bound.
    while (this.partial.length > MAX_LINE_CHARS) {
      this.line(this.partial.slice(0, MAX_LINE_CHARS));
      this.partial = this.partial.slice(MAX_LINE_CHARS);
    }
  }

  /** Flushes a last line without its newline. */
  end(): void {
    if (this.partial !== "") this.line(this.partial);
    this.partial = "";
  }

  /** The last lines seen: at most ~20 lines and ~4 KiB. */
  text(): string {
    return this.lines.join("\n").slice(-TAIL_CHARS);
  }

  private line(raw: string): void {
    const line = (raw.endsWith("\r") ? raw.slice(0, -1) : raw).slice(0, MAX_LINE_CHARS);
    this.emit(line);
    this.lines.push(line);
    this.chars += line.length + 1;
    while (this.lines.length > 1 && (this.lines.length > TAIL_LINES || this.chars > TAIL_CHARS)) {
      this.chars -= this.lines.shift()!.length + 1;
    }
  }
}

/** A running CLI agent; {@link CommandProcess.done} settles once it and its pipes are gone. */
export class CommandProcess {
  /** Never rejects: every ending is an outcome. */
  readonly done: Promise<ProcessOutcome>;
  private readonly child: ChildProcess;
  /** Why we signalled the group, if we did; it decides the outcome over the exit status. */
  private reason: "canceled" | "too-large" | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private stdout: Buffer[] = [];
  private stdoutBytes = 0;

  constructor(private readonly spec: ProcessSpec) {
    this.child = spawn(spec.file, [...spec.args], {
      cwd: spec.cwd,
      env: { ...spec.env },
      detached: true,
      stdio: [spec.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    this.done = new Promise((resolve) => this.wire(resolve));
  }

  /** The group leader's pid (undefined when the spawn failed). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Ends the run: SIGTERM to the group, SIGKILL after the grace. */
  cancel(): void {
    this.reason ??= "canceled";
    this.terminate();
  }

  private wire(resolve: (outcome: ProcessOutcome) => void): void {
    const { child, spec } = this;
    const stderr = new LineTail((line) => spec.onLine("stderr", line));
    const stdoutLines = new LineTail((line) => spec.onLine("stdout", line));
    const onAbort = () => this.cancel();
    spec.signal.addEventListener("abort", onAbort, { once: true });
    let settled = false;
    const settle = (outcome: ProcessOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(this.killTimer);
      clearTimeout(this.drainTimer);
      spec.signal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };

    child.on("error", (error: NodeJS.ErrnoException) => {
      // After a successful spawn this is only a failed kill(); the exit still comes.
      if (child.pid === undefined) settle({ kind: "spawn-failed", error });
    });
    if (child.stdin) {
      // EPIPE: a program that exits without reading its input is judged by its exit.
      child.stdin.on("error", () => {});
      child.stdin.end(spec.stdin);
    }
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (text: string) => stderr.push(text));
    if (spec.captureStdout) {
      child.stdout!.on("data", (chunk: Buffer) => this.onStdout(chunk));
    } else {
      child.stdout!.setEncoding("utf8");
      child.stdout!.on("data", (text: string) => stdoutLines.push(text));
    }
    child.on("exit", () => {
      this.signalGroup("SIGKILL");
      this.drainTimer = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
      }, spec.killGraceMs);
    });
    child.on("close", (code, signal) => {
      if (child.pid === undefined) return;
      stderr.end();
      stdoutLines.end();
      settle(this.outcome(code, signal, stderr.text()));
    });
    if (spec.signal.aborted) this.cancel();
  }

  private outcome(
    code: number | null,
    signal: NodeJS.Signals | null,
    stderrTail: string,
  ): ProcessOutcome {
    // Our own signals say nothing about the program: the reason we sent them decides.
    if (this.reason !== undefined) return { kind: this.reason };
    if (signal !== null) return { kind: "signaled", signal, stderrTail };
    return { kind: "exited", code: code ?? -1, stdout: Buffer.concat(this.stdout), stderrTail };
  }

  private onStdout(chunk: Buffer): void {
    if (this.reason !== undefined) return;
    this.stdoutBytes += chunk.length;
    if (this.stdoutBytes > this.spec.maxStdoutBytes) {
      // Stop reading at once and drop what we hold: the answer is refused whatever follows.
      this.reason = "too-large";
      this.stdout = [];
      this.child.stdout!.destroy();
      this.terminate();
      return;
    }
    this.stdout.push(chunk);
  }

  private terminate(): void {
    this.signalGroup("SIGTERM");
    this.killTimer ??= setTimeout(() => this.signalGroup("SIGKILL"), this.spec.killGraceMs);
  }

  private signalGroup(sig: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch (err) {
      // ESRCH: the group is already gone. Anything else: at least reach the leader.
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") this.child.kill(sig);
    }
  }
}

/**
 * Where `program` would be run from, as execvp finds it: a name with a slash is
 * a path from `cwd`, any other is looked up on `searchPath`.
 */
export async function findProgram(
  program: string,
  searchPath: string,
  cwd: string,
): Promise<string | undefined> {
  const candidates = program.includes("/")
    ? [path.resolve(cwd, program)]
    : searchPath.split(":").map((dir) => path.resolve(cwd, dir || ".", program));
  for (const candidate of candidates) {
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

async function isExecutableFile(file: string): Promise<boolean> {
  try {
    if (!(await stat(file)).isFile()) return false;
    await access(file, constants.X_OK);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EACCES" || code === "ELOOP") {
      return false;
    }
    throw err;
  }
}
