/**
 * One OpenClaw gateway process (`openclaw gateway run`): spawned in its own
 * process group (it forks workers: a spawn broker, SQLite readers), ready once
 * `/readyz` answers 200, stopped with SIGTERM and, after a grace, SIGKILL to the
 * whole group, so nothing of it is left holding files in the workspace.
 *
 * Its output is kept as a short tail for error messages only: OpenClaw also
 * logs to its own file, and its stdout carries the conversation's text.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { AgentError, ErrorCodes } from "../errors.js";

/** How to start one gateway. */
export interface GatewayLaunch {
  /** OpenClaw's Node 24. */
  readonly node: string;
  /** `openclaw.mjs` (or its bin link). */
  readonly entry: string;
  /** The workspace. */
  readonly cwd: string;
  /** Its whole environment (nothing of the host's is inherited). */
  readonly env: Readonly<Record<string, string>>;
  /** The port it was configured with, on 127.0.0.1. */
  readonly port: number;
  readonly readyTimeoutMs: number;
}

const TAIL_LINES = 40;
/** SIGTERM stops it in 0.4–1.6 s (measured); past this it is killed. */
const STOP_GRACE_MS = 10_000;

/** A running gateway; see the module comment. */
export class OpenClawGateway {
  /** Settles when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitedFlag = false;
  private readonly lines: string[] = [];

  private constructor(
    private readonly child: ChildProcess,
    /** `http://127.0.0.1:<port>`. */
    readonly url: string,
  ) {
    let partial = "";
    const onData = (chunk: Buffer) => {
      const parts = (partial + chunk.toString("utf8")).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        if (line.trim() === "") continue;
        this.lines.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
        if (this.lines.length > TAIL_LINES) this.lines.shift();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    this.exited = new Promise((resolve) => {
      child.once("close", (code, signal) => {
        this.exitedFlag = true;
        resolve({ code, signal });
      });
      child.once("error", (err) => {
        this.lines.push(String(err));
        this.exitedFlag = true;
        resolve({ code: null, signal: null });
      });
    });
  }

  /**
   * Spawns a gateway and waits until it is ready. Throws `AGENT_START_FAILED`
   * (or `CONFIG_INVALID` when OpenClaw refuses its config) with the tail of its
   * output when it exits first or is not ready within `readyTimeoutMs`.
   */
  static async start(launch: GatewayLaunch): Promise<OpenClawGateway> {
    const child = spawn(launch.node, [launch.entry, "gateway", "run"], {
      cwd: launch.cwd,
      env: { ...launch.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const gateway = new OpenClawGateway(child, `http://127.0.0.1:${launch.port}`);
    const deadline = Date.now() + launch.readyTimeoutMs;
    for (let wait = 100; ; wait = Math.min(500, Math.round(wait * 1.5))) {
      if (gateway.hasExited) {
        const { code, signal } = await gateway.exited;
        throw gateway.startError(`exited (${signal ?? `code ${code}`}) before it was ready`);
      }
      if (await gateway.ready()) return gateway;
      if (Date.now() > deadline) {
        await gateway.stop();
        throw gateway.startError(`was not ready within ${launch.readyTimeoutMs} ms`);
      }
      await Promise.race([new Promise((r) => setTimeout(r, wait)), gateway.exited]);
    }
  }

  /** Whether the process has exited. */
  get hasExited(): boolean {
    return this.exitedFlag;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The last lines it printed. */
  tail(lines = 8): string {
    return this.lines.slice(-lines).join("\n");
  }

  /** `/readyz` answers 200 now. */
  async ready(): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
      await res.body?.cancel();
      return res.status === 200;
    } catch {
      return false;
    }
  }

  /** Resident memory of the gateway and every process under it, in MiB. */
  async rssMb(): Promise<number> {
    const pid = this.child.pid;
    if (pid === undefined || this.exitedFlag) return 0;
    let kb = 0;
    for (const p of await processTree(pid)) {
      const status = await readFile(`/proc/${p}/status`, "utf8").catch(() => "");
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
      if (m) kb += Number(m[1]);
    }
    return kb / 1024;
  }

  /** SIGTERM, then SIGKILL to its group after a grace; resolves once all of it is gone. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined) return;
    if (!this.exitedFlag) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => killGroup(pid), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    // Workers it did not take down with it would still hold files open.
    killGroup(pid);
  }

  private startError(what: string): AgentError {
    const tail = this.tail();
    const code = /Invalid config/i.test(tail)
      ? ErrorCodes.CONFIG_INVALID
      : ErrorCodes.AGENT_START_FAILED;
    return new AgentError(code, `OpenClaw's gateway ${what}${tail ? `: ${tail}` : ""}`);
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** `pid` and its descendants, from `/proc/<pid>/task/<tid>/children`. */
async function processTree(pid: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0 && out.length < 256) {
    const p = queue.shift()!;
    out.push(p);
    const tasks = await readdir(`/proc/${p}/task`).catch(() => [] as string[]);
    for (const t of tasks) {
      const text = await readFile(`/proc/${p}/task/${t}/children`, "utf8").catch(() => "");
      for (const c of text.split(/\s+/)) if (c !== "") queue.push(Number(c));
    }
  }
  return out;
}
