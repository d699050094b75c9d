/**
 * The `clawfleet` command as a child process, for tests that run roles as
 * separate processes talking only over NATS.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The CLI entry point of this checkout. */
export const CLI = fileURLToPath(new URL("../../bin/clawfleet.js", import.meta.url));

/** Result of a finished CLI command. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `clawfleet ...args` to completion. */
export function runCli(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A long-running role process (`up`, `node`, …). */
export class CliProcess implements AsyncDisposable {
  private stdoutText = "";
  private stderrText = "";
  /** The signal that ended the process, if one did (null while it runs or after a normal exit). */
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.on("data", (d: Buffer) => {
      this.stdoutText += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      this.stderrText += d.toString();
    });
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.exitSignal = signal;
        resolve(code);
      }),
    );
  }

  /**
   * Starts `clawfleet ...args` and resolves once its stdout (or, with `readyOn`,
   * its stderr) contains `readyText`.
   */
  static async start(
    args: string[],
    readyText: string,
    options: { cwd?: string; env?: NodeJS.ProcessEnv; readyOn?: "stdout" | "stderr" } = {},
  ): Promise<CliProcess> {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const p = new CliProcess(child);
    await new Promise<void>((resolve, reject) => {
      const stream = options.readyOn === "stderr" ? child.stderr : child.stdout;
      const text = () => (options.readyOn === "stderr" ? p.stderrText : p.stdoutText);
      const onData = () => {
        if (text().includes(readyText)) {
          stream?.off("data", onData);
          resolve();
        }
      };
      stream?.on("data", onData);
      p.exited.then((code) =>
        reject(new Error(`clawfleet ${args[0]} exited ${code} before ready:\n${p.stderrText}`)),
      );
    });
    return p;
  }

  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}
