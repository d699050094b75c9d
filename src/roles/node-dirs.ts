/**
 * What a node keeps on local disk: `<dataDir>/nodes/<node id>/containers/<container>`,
 * one workspace directory per container. A node removes its own directory when it
 * stops. A node that was killed could not, and a default node id (`<host>-<pid>`) is
 * new on every run, so a starting node also removes the directories of default ids of
 * this host whose pid is gone, and a directory of its own id left by an earlier run
 * (none of its containers exists yet). Directories of other ids are left alone: a node
 * with a chosen id may be running in another process on the same data dir.
 */
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { defaultNodeId } from "../fleet-options.js";

/** The directory under which node `id` keeps its containers' workspaces. */
export function nodeDir(dataDir: string, id: string): string {
  return path.join(dataDir, "nodes", id);
}

/** Whether a process with this pid exists on this host (one we may not signal counts). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether `name` is the default id of a process of this host that is gone: this
 * process's default id with another pid. (A host name long enough to cut the id short
 * matches nothing: those directories are left.)
 */
export function isDeadDefaultId(name: string, alive: (pid: number) => boolean = isAlive): boolean {
  const own = defaultNodeId();
  const suffix = `-${process.pid}`;
  if (!own.endsWith(suffix)) return false;
  const host = own.slice(0, -suffix.length);
  const pid = Number(name.slice(host.length + 1));
  return (
    name.startsWith(`${host}-`) &&
    /^\d+$/.test(name.slice(host.length + 1)) &&
    Number.isSafeInteger(pid) &&
    pid > 0 &&
    !alive(pid)
  );
}

/** Removes what earlier runs left under `<dataDir>/nodes`: see the module comment. */
export async function pruneNodeDirs(
  dataDir: string,
  selfId: string,
  alive: (pid: number) => boolean = isAlive,
): Promise<string[]> {
  const root = path.join(dataDir, "nodes");
  const names = await readdir(root).catch(() => [] as string[]);
  const stale = names.filter((n) => n === selfId || isDeadDefaultId(n, alive));
  await Promise.all(stale.map((n) => removeNodeDir(dataDir, n)));
  return stale;
}

/** Removes node `id`'s directory; retried, since a dying agent may still be writing in it. */
export async function removeNodeDir(dataDir: string, id: string): Promise<void> {
  await rm(nodeDir(dataDir, id), { recursive: true, force: true, maxRetries: 3 });
}
