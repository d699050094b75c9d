/**
 * A `clawfleet <role>` child process of a chaos fleet (orchestrator, gateway or
 * node), usable before it is ready, so it is killed at disposal whatever happens.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { withTimeout } from "./arrivals.js";
import { CLI } from "./cli-process.js";

/** util-linux `setpriv`, if installed. */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

/** How long a role process may take to say it is connected. */
const ROLE_START_MS = 30_000;

/**
 * A `clawfleet <role>` child process. Unlike the shared harness's CliProcess it
 * is usable before it is ready, so a role that never gets ready is still killed
 * at disposal, and its stderr explains why.
 */
export class RoleProcess {
  private out = "";
  private err = "";
  readonly exited: Promise<number | null>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on("data", (d: Buffer) => {
      this.out += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      this.err += d.toString();
    });
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  /**
   * Spawns `clawfleet ...args` (see {@link ready}); through `setpriv --pdeathsig`
   * where there is one, so the role dies with the test process even if that is
   * killed before it can clean up.
   */
  static spawn(name: string, args: string[]): RoleProcess {
    const command = [process.execPath, CLI, ...args];
    const [file, ...argv] = SETPRIV ? [SETPRIV, "--pdeathsig", "KILL", "--", ...command] : command;
    const child = spawn(file!, argv, { stdio: ["ignore", "pipe", "pipe"] });
    return new RoleProcess(name, child);
  }

  /** Resolves once stdout says `readyText`; rejects if the process exits or takes too long. */
  async ready(readyText: string, timeoutMs = ROLE_START_MS): Promise<void> {
    let onData = () => {};
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          onData = () => {
            if (this.out.includes(readyText)) resolve();
          };
          this.child.stdout?.on("data", onData);
          onData();
          void this.exited.then((code) =>
            reject(new Error(`${this.name} exited ${code} before ready:\n${this.err}`)),
          );
        }),
        timeoutMs,
        `${this.name} to connect; stderr:\n${this.err.split("\n").slice(-20).join("\n")}`,
      );
    } finally {
      this.child.stdout?.off("data", onData);
    }
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  /** Sends `signal` (unless it already exited) and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
