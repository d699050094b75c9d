/**
 * An agent program (the reference agent, or the agent host of real runtimes)
 * as one plain ES module, so a process pool starts it with
 * bare `node` instead of through tsx's TypeScript loader: several hundred
 * milliseconds less per agent start, which every cold start and every
 * restart in place (healing tier 1) pays.
 *
 * Bundled once per process by esbuild into `node_modules/.cache/clawfleet/`
 * under the project (inside what sandboxes already see, read-only), named by
 * the hash of its contents, so an edited agent gets a new file and concurrent
 * nodes agree on one. better-sqlite3 stays external: it is native code, found
 * from there in the project's `node_modules`.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { InternalError } from "../../errors.js";
import type { Logger } from "../../logger.js";

const PROJECT_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const CACHE_DIR = path.join(PROJECT_ROOT, "node_modules", ".cache", "clawfleet");

/** The agent programs: the reference agent, and the agent host of real runtimes. */
export const AGENT_ENTRIES = {
  "scripted-agent": fileURLToPath(new URL("../../agents/scripted-agent.ts", import.meta.url)),
  "runtime-agent": fileURLToPath(new URL("../../agents/runtime-agent.ts", import.meta.url)),
} as const;
export type AgentProgram = keyof typeof AGENT_ENTRIES;

const bundled = new Map<AgentProgram, Promise<string | null>>();

/**
 * The bundle's path, built on first use; null when it cannot be built or
 * written (say, a read-only install): agents then start through tsx. Checked
 * on every call: a bundle removed meanwhile (another node's cleanup after an
 * upgrade, a wiped cache) is built again.
 */
export async function agentBundle(program: AgentProgram, log?: Logger): Promise<string | null> {
  for (let tries = 0; ; tries++) {
    let pending = bundled.get(program);
    if (!pending) {
      pending = writeBundle(program).catch((err: unknown) => {
        log?.warn({ err: String(err) }, "cannot bundle the agent; starting it through tsx");
        return null;
      });
      bundled.set(program, pending);
    }
    const file = await pending;
    if (file === null || (await exists(file))) return file;
    bundled.delete(program);
    // Gone again right after it was written: something keeps removing it; use tsx.
    if (tries > 0) return null;
  }
}

/**
 * An agent program bundled by esbuild into one ES module's bytes; `external`
 * packages stay imports (the Docker image inlines everything, for it has no
 * `node_modules`).
 */
export async function buildAgent(
  external: readonly string[] = [],
  program: AgentProgram = "scripted-agent",
): Promise<Uint8Array> {
  const result = await build({
    entryPoints: [AGENT_ENTRIES[program]],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: [...external],
    write: false,
    legalComments: "none",
    logLevel: "silent",
  });
  const contents = result.outputFiles[0]?.contents;
  if (!contents) throw new InternalError("esbuild produced no agent bundle");
  return contents;
}

async function writeBundle(program: AgentProgram): Promise<string> {
  const contents = await buildAgent(["better-sqlite3"], program);
  const hash = createHash("sha256").update(contents).digest("hex").slice(0, 16);
  const file = path.join(CACHE_DIR, `${program}-${hash}.mjs`);
  if (await exists(file)) {
    // In use again: not stale for another node's cleanup.
    const now = new Date();
    await utimes(file, now, now).catch(() => {});
    return file;
  }
  await mkdir(CACHE_DIR, { recursive: true });
  // Write-then-rename: another node bundling at the same moment never sees half a file.
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, contents);
  await rename(tmp, file);
  // Housekeeping only: failing at it must not cost the bundle just written.
  await removeStale(`${program}-`, file).catch(() => {});
  return file;
}

/**
 * Removes bundles of other versions of the agent untouched for a day. A node
 * still running an older version rebuilds its own if it finds it gone.
 */
async function removeStale(prefix: string, current: string): Promise<void> {
  const DAY_MS = 24 * 3600 * 1000;
  for (const name of await readdir(CACHE_DIR)) {
    const file = path.join(CACHE_DIR, name);
    if (!name.startsWith(prefix) || file === current) continue;
    const s = await stat(file).catch(() => null);
    if (s && Date.now() - s.mtimeMs > DAY_MS) await rm(file, { force: true });
  }
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => null)) !== null;
}
