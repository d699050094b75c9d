/**
 * What the OpenClaw driver writes into and reads from a session's workspace:
 * the managed fields of `openclaw.json`, the turn's behaviour files, and the
 * list of databases a quiesce must make safe to copy.
 *
 * The workspace belongs to an untrusted agent, but this code runs in the same
 * sandbox as that agent, with the same rights: nothing here can reach further
 * than OpenClaw itself could. Files are still replaced by rename rather than
 * written through, so a symlink the agent left in place is replaced, not
 * followed.
 */
import { randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { AgentError, ErrorCodes } from "../errors.js";
import {
  checkOpenClawBehaviorFile,
  type ManagedConfigInput,
  managedConfig,
  mergeManaged,
  OPENCLAW_CONFIG_FILE,
  OPENCLAW_DIR,
  OPENCLAW_STATE_DIR,
} from "./openclaw-config.js";

/** Relative to the workspace: the behaviour files clawfleet put there, to remove dropped ones. */
export const BEHAVIOR_MANIFEST = `${OPENCLAW_DIR}/clawfleet-behavior.json`;

/** Writes `text` to `file` through a fresh temporary file and a rename. */
async function replaceFile(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.clawfleet-${randomBytes(4).toString("hex")}`;
  await writeFile(tmp, text, { flag: "wx" });
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readText(file: string): Promise<string | null> {
  try {
    return await readFile(file, "utf8");
  } catch {
    // Absent, a directory, unreadable: all mean "not what we would write".
    return null;
  }
}

/**
 * Merges the managed fields into `openclaw.json` (creating it and the state
 * dir). Returns a warning when the file held something that is not a JSON
 * object, which is then replaced.
 */
export async function writeOpenClawConfig(
  workspace: string,
  input: ManagedConfigInput,
): Promise<string | undefined> {
  const file = path.join(workspace, OPENCLAW_CONFIG_FILE);
  await mkdir(path.join(workspace, OPENCLAW_STATE_DIR), { recursive: true });
  const text = await readText(file);
  let current: unknown = {};
  let warning: string | undefined;
  if (text !== null && text.trim() !== "") {
    try {
      current = JSON.parse(text);
    } catch (err) {
      warning = `${OPENCLAW_CONFIG_FILE} is not JSON (${(err as Error).message}); replaced by the managed fields`;
    }
  }
  const next = `${JSON.stringify(mergeManaged(current, managedConfig(input)), null, 2)}\n`;
  if (next !== text) await replaceFile(file, next);
  return warning;
}

/**
 * Puts the turn's behaviour files into the workspace, each only if its text
 * changed, and removes those clawfleet put there before that the turn no
 * longer has. A file OpenClaw cannot use fails the turn `CONFIG_INVALID`,
 * retryable: healing tier 3 resets the file to a valid version.
 */
export async function writeBehaviorFiles(
  workspace: string,
  files: Readonly<Record<string, string>>,
): Promise<void> {
  for (const [name, text] of Object.entries(files)) {
    const problem = checkOpenClawBehaviorFile(name, text);
    if (problem)
      throw new AgentError(ErrorCodes.CONFIG_INVALID, `behaviour file ${name} ${problem}`);
  }
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(workspace, name);
    if ((await readText(file)) !== text) await replaceFile(file, text);
  }
  const manifestFile = path.join(workspace, BEHAVIOR_MANIFEST);
  const before = parseNames(await readText(manifestFile));
  const names = Object.keys(files).sort();
  for (const name of before) {
    // Only names that were valid when written: a tampered manifest cannot point elsewhere.
    if (!(name in files) && checkOpenClawBehaviorFile(name, "x") === undefined)
      await rm(path.join(workspace, name), { force: true });
  }
  if (JSON.stringify(before) !== JSON.stringify(names))
    await replaceFile(manifestFile, `${JSON.stringify(names)}\n`);
}

function parseNames(text: string | null): string[] {
  if (text === null) return [];
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v.filter((n): n is string => typeof n === "string").sort() : [];
  } catch {
    return [];
  }
}

/** Databases a snapshot copies: the ones {@link isSnapshotDatabase} accepts under the state dir. */
export async function snapshotDatabases(workspace: string): Promise<string[]> {
  const root = path.join(workspace, OPENCLAW_STATE_DIR);
  let entries: Dirent[];
  try {
    entries = await readdir(root, { withFileTypes: true, recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const out: string[] = [];
  for (const e of entries) {
    if (!e.isFile()) continue;
    const abs = path.join(e.parentPath, e.name);
    if (isSnapshotDatabase(path.relative(root, abs))) out.push(abs);
  }
  return out.sort();
}

/**
 * Whether `rel` (relative to the state dir) is a database the snapshot keeps:
 * a `*.sqlite` outside what `OPENCLAW_SNAPSHOT_EXCLUDE` leaves out (a unit test
 * holds the two together).
 */
export function isSnapshotDatabase(rel: string): boolean {
  const parts = rel.split(path.sep);
  const name = parts.at(-1) ?? "";
  if (!name.endsWith(".sqlite")) return false;
  if (["tmp", "logs", "cache", "plugin-skills"].includes(parts[0] ?? "") && parts.length > 1)
    return false;
  return !/\.(lock|generation-lock|generation-writer|reindex-lock)\.sqlite$|\.memory-reindex-/.test(
    name,
  );
}
