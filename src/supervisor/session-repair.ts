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
import { lstat, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { z } from "zod";
import type { BehaviorSet, BehaviorStore } from "../adapters/behavior-store.js";
import type { AgentRuntime, RuntimeConfigSpec } from "../agents/agent-runtime.js";

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
  /** The behaviour the turn runs with now. */
  readonly behavior: BehaviorSet;
}

/** Validates and repairs the session config in `workspaceDir`; null when it was fine or absent. */
export async function repairConfig(
  workspaceDir: string,
  spec: RuntimeConfigSpec,
): Promise<ConfigRepair | null> {
  const file = path.join(workspaceDir, spec.file);
  const stat = await lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return null;
    throw err;
  });
  if (!stat) return null;
  let json: unknown;
  if (stat.isFile()) {
    try {
      json = JSON.parse(await readFile(file, "utf8"));
    } catch {
      json = undefined;
    }
  }
  let reset: string[] = [];
  let fixed: Record<string, unknown>;
  if (isPlainObject(json)) {
    fixed = { ...json };
    for (const [key, field] of Object.entries(spec.schema.shape) as [string, z.ZodType][]) {
      if (!(key in fixed) || field.safeParse(fixed[key]).success) continue;
      reset.push(key);
      const fallback = field.safeParse(undefined);
      if (fallback.success && fallback.data !== undefined) fixed[key] = fallback.data;
      else delete fixed[key];
    }
    if (reset.length === 0) return null;
  } else {
    fixed = {};
  }
  // A rule across fields may still fail: then nothing of the file can be trusted.
  if (!spec.schema.safeParse(fixed).success || !isPlainObject(json)) {
    const defaults = spec.schema.safeParse({});
    fixed = defaults.success ? (defaults.data as Record<string, unknown>) : {};
    reset = ["*"];
  }
  // Not a regular file (a directory, a symlink): replace it, never write through it.
  if (!stat.isFile()) await rm(file, { recursive: true, force: true });
  await writeFile(`${file}.repair`, `${JSON.stringify(fixed, null, 2)}\n`);
  await rename(`${file}.repair`, file);
  return { file: spec.file, reset };
}

/** Validates and repairs the behaviour a turn got; null when every file was fine. */
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
    if (bad.length === 0) return null;
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
  throw new Error(`behaviour of ${where.tenant}/${where.profile} keeps changing; not repaired`);
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
    parts.push(`behaviour is now version ${behavior.behavior.version}`);
  }
  return parts.length === 0
    ? "repair: config and behaviour valid; starting over from the last known-good version"
    : `repair: ${parts.join("; ")}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
