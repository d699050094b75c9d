/**
 * Healing tier 3's repair, run by the node before the turn starts over from the
 * session's last known-good version. A known-good version is one after which a
 * turn succeeded, yet that turn may well have written a config its agent cannot
 * start with; and behaviour files change under every session of a tenant. So:
 *
 * - the session config (the runtime's file in the workspace) is validated field
 *   by field with the runtime's zod schema; an invalid field is reset to its
 *   default, an unreadable file to all defaults. Unknown fields are kept.
 * - each behaviour file the runtime rejects is reset to its newest earlier
 *   version the runtime accepts, or removed when there is none. This is written
 *   as a new behaviour version (history keeps the broken one), but only if
 *   nobody changed the behaviour meanwhile: a person's newer fix wins.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, open, realpath, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { z } from "zod";
import type { BehaviorSet, BehaviorStore } from "../adapters/records/behavior-store.js";
import type { AgentRuntime, RuntimeConfigSpec } from "../agents/agent-runtime.js";
import { ErrorCodes, RetryableError, TerminalError } from "../errors.js";

/** What the config repair changed. */
export interface ConfigRepair {
  readonly file: string;
  /** Fields reset to their defaults; `["*"]` when the whole file was. */
  readonly reset: readonly string[];
}

/** What the behaviour repair changed. */
export interface BehaviorRepair {
  /** Files reset, each to the behaviour version its text was taken from. */
  readonly reset: Readonly<Record<string, number>>;
  /** Files removed: no earlier version of them was valid. */
  readonly removed: readonly string[];
  /**
   * The behaviour the turn runs with now: the repaired version, or a newer valid
   * one somebody wrote meanwhile (then nothing was reset or removed here).
   */
  readonly behavior: BehaviorSet;
}

/** A config file larger than this is not read: it is replaced with the defaults. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Validates and repairs the session config in `workspaceDir`; null when it was
 * fine or absent. The agent may still be running in that workspace, so nothing
 * here trusts a path twice: the file is read through one handle opened without
 * following a symlink (and without blocking on a FIFO), the repair is written to
 * a fresh file that must not exist yet, then renamed over the config.
 */
export async function repairConfig(
  workspaceDir: string,
  spec: RuntimeConfigSpec,
): Promise<ConfigRepair | null> {
  const file = path.join(workspaceDir, spec.file);
  await checkParentInside(workspaceDir, file);
  const read = await readRegularFile(file);
  if (read === "absent") return null;
  let json: unknown;
  if (typeof read === "string") {
    try {
      json = JSON.parse(read);
    } catch {
      json = undefined;
    }
  }
  let reset: string[] = [];
  let fixed: Record<string, unknown> = {};
  if (isPlainObject(json)) {
    fixed = { ...json };
    for (const [key, field] of Object.entries(spec.schema.shape) as [string, z.ZodType][]) {
      if (!(key in fixed) || field.safeParse(fixed[key]).success) continue;
      reset.push(key);
      const fallback = field.safeParse(undefined);
      if (fallback.success && fallback.data !== undefined) fixed[key] = fallback.data;
      else delete fixed[key];
    }
  }
  if (isPlainObject(json) && spec.schema.safeParse(fixed).success) {
    if (reset.length === 0) return null;
  } else {
    // Unreadable, not an object, or a rule across fields still fails: nothing of it is trusted.
    const defaults = spec.schema.safeParse({});
    fixed = defaults.success ? (defaults.data as Record<string, unknown>) : {};
    reset = ["*"];
  }
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.repair-${randomHex()}`);
  // "wx": fails if anything (a symlink planted by the agent included) already sits there.
  await writeFile(tmp, `${JSON.stringify(fixed, null, 2)}\n`, { flag: "wx", mode: 0o644 });
  try {
    // A directory in the way would make the rename fail; a symlink is replaced, not followed.
    if (read === "not-a-file") await rm(file, { recursive: true, force: true });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return { file: spec.file, reset };
}

/** The file's text; `not-a-file` for a symlink, directory, FIFO or an oversized file. */
async function readRegularFile(file: string): Promise<string | "absent" | "not-a-file"> {
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "absent";
    if (code === "ELOOP" || code === "ENXIO") return "not-a-file";
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_CONFIG_BYTES) return "not-a-file";
    return await fh.readFile("utf8");
  } finally {
    await fh.close();
  }
}

/** A runtime's config in a subdirectory must not lead out of the workspace through a symlinked directory. */
async function checkParentInside(workspaceDir: string, file: string): Promise<void> {
  const root = await realpath(workspaceDir);
  const parent = await realpath(path.dirname(file)).catch(() => null);
  if (parent !== null && parent !== root && !parent.startsWith(`${root}${path.sep}`)) {
    throw new TerminalError(
      ErrorCodes.PATH_ESCAPE,
      `${path.relative(workspaceDir, file)}: its directory leaves the workspace`,
    );
  }
}

function randomHex(): string {
  return randomBytes(6).toString("hex");
}

/**
 * Validates and repairs the behaviour a turn got; null when every file of it was
 * fine. Otherwise the result names the behaviour to run with, which may be a
 * newer valid version a person wrote meanwhile: a repair never undoes that.
 */
export async function repairBehavior(
  store: BehaviorStore,
  runtime: AgentRuntime,
  where: { readonly tenant: string; readonly profile: string },
  current: BehaviorSet,
  now: string,
): Promise<BehaviorRepair | null> {
  for (let tries = 0; tries < 5; tries++) {
    const bad = Object.entries(current.files)
      .filter(([name, text]) => runtime.checkBehaviorFile(name, text) !== undefined)
      .map(([name]) => name);
    if (bad.length === 0) return tries === 0 ? null : { reset: {}, removed: [], behavior: current };
    const history = await store.history(where.tenant, where.profile);
    const set: Record<string, string> = {};
    const reset: Record<string, number> = {};
    const removed: string[] = [];
    for (const name of bad) {
      const good = history
        .filter((h) => h.version < current.version)
        .reverse()
        .find((h) => {
          const text = h.files[name];
          return text !== undefined && runtime.checkBehaviorFile(name, text) === undefined;
        });
      if (good) {
        set[name] = good.files[name]!;
        reset[name] = good.version;
      } else removed.push(name);
    }
    const behavior = await store.changeIfCurrent(
      where.tenant,
      where.profile,
      current.version,
      { set, remove: removed },
      now,
    );
    if (behavior) return { reset, removed, behavior };
    // Changed meanwhile: judge the newer version instead.
    current = await store.get(where.tenant, where.profile);
  }
  throw new RetryableError(
    ErrorCodes.INTERNAL,
    `behaviour of ${where.tenant}/${where.profile} keeps changing; not repaired`,
  );
}

/** One line for the task's timeline. */
export function describeRepair(
  config: ConfigRepair | null,
  behavior: BehaviorRepair | null,
): string {
  const parts: string[] = [];
  if (config) {
    parts.push(
      config.reset[0] === "*"
        ? `${config.file} reset to defaults`
        : `${config.file}: ${config.reset.join(", ")} reset to defaults`,
    );
  }
  if (behavior) {
    for (const [name, version] of Object.entries(behavior.reset))
      parts.push(`behaviour ${name} reset to its version ${version}`);
    for (const name of behavior.removed) parts.push(`behaviour ${name} removed`);
    const changed = Object.keys(behavior.reset).length + behavior.removed.length > 0;
    parts.push(
      changed
        ? `behaviour is now version ${behavior.behavior.version}`
        : `behaviour was fixed meanwhile: running with version ${behavior.behavior.version}`,
    );
  }
  return parts.length === 0
    ? "repair: config and behaviour valid; starting over from the last known-good version"
    : `repair: ${parts.join("; ")}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
