/**
 * Checks a node makes before its pools start containers: that each pool's
 * agent program is there. A pool whose program is missing would otherwise
 * start containers that die at once, again and again (with backoff, but never
 * working); failing the node's start names the problem once, with its code.
 *
 * Only what the host can see is checked: a process pool's command on the PATH
 * its agents get (or an absolute path), and an OpenClaw runtime installed
 * where the pool looks. A Docker pool's program is inside its image; the agent
 * host checks it there at start and fails the start with the same code.
 */
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { SANDBOX_PATH } from "../adapters/process/bwrap-sandbox.js";
import { ClawfleetError, ErrorCodes } from "../errors.js";
import type { PoolProfile } from "../fleet-options.js";

/** How a pool's runtime files are found (the OpenClaw locator; throws `RUNTIME_NOT_INSTALLED`). */
export type RuntimeLocator = (profile: PoolProfile) => Promise<unknown>;

/**
 * Throws a `RUNTIME_NOT_INSTALLED` {@link ClawfleetError} naming the first pool
 * whose agent program is missing on this host.
 */
export async function preflightPools(
  pools: readonly PoolProfile[],
  options: { locateRuntime?: RuntimeLocator; hostPath?: string } = {},
): Promise<void> {
  for (const pool of pools) {
    if (pool.kind !== "process") continue;
    if (pool.runtime === "command") await checkCommand(pool, options.hostPath);
    if (pool.runtime === "openclaw") await options.locateRuntime?.(pool);
  }
}

async function checkCommand(pool: PoolProfile, hostPath = process.env.PATH ?? ""): Promise<void> {
  const program = pool.command?.argv[0];
  if (program === undefined) return;
  // Without a sandbox the agent inherits the node's PATH; in bwrap it gets SANDBOX_PATH
  // (`auto` may be either: both are accepted here, and the agent host checks again).
  // A PATH the profile sets for its program is where the agent host looks first.
  const own = pool.command?.env.PATH;
  const searchPath = own
    ? own
    : pool.sandbox === "none"
      ? hostPath
      : pool.sandbox === "bwrap"
        ? SANDBOX_PATH
        : `${SANDBOX_PATH}:${hostPath}`;
  if (await findProgram(program, searchPath)) return;
  throw new ClawfleetError(
    ErrorCodes.RUNTIME_NOT_INSTALLED,
    `pool ${pool.name}: its command ${JSON.stringify(program)} is not installed (not found ${program.includes("/") ? "at that path" : `on PATH ${searchPath}`})`,
  );
}

/** Whether `program` (a path, or a name looked up on `searchPath`) is an executable file. */
export async function findProgram(program: string, searchPath: string): Promise<string | null> {
  const candidates = program.includes("/")
    ? [path.resolve(program)]
    : searchPath
        .split(path.delimiter)
        .filter((d) => d !== "")
        .map((d) => path.join(d, program));
  for (const file of candidates) {
    try {
      await access(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}
