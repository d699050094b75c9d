/**
 * The host's processes as /proc shows them, for chaos tests that find, signal
 * and check the processes a fleet started (roles, sandboxes, agents).
 */
import { readdir, readFile } from "node:fs/promises";

/** A process as /proc shows it. */
export interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly argv: readonly string[];
}

/** Every process of this host, by pid. */
export async function processTable(): Promise<Map<number, ProcInfo>> {
  const table = new Map<number, ProcInfo>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const argv = (await readFile(`/proc/${name}/cmdline`, "utf8"))
        .split("\0")
        .filter((a) => a !== "");
      table.set(Number(name), { pid: Number(name), ppid: Number(fields[1]), argv });
    } catch {
      // Exited while we looked.
    }
  }
  return table;
}

/** The processes below `pid`, nearest first. */
export function descendantsOf(table: Map<number, ProcInfo>, pid: number): ProcInfo[] {
  const out: ProcInfo[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const p of table.values()) {
      if (p.ppid === parent) {
        out.push(p);
        queue.push(p.pid);
      }
    }
  }
  return out;
}

/** Whether a process is alive (a zombie counts as gone). */
export async function isAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return false;
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
}

/** Sends `signal` to `pid`, if it is still there. */
export function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}
