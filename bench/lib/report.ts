/**
 * What every benchmark reports besides its figures: progress on stderr, the
 * versions of the tools it ran, and the commit it measured.
 */
import { execFile } from "node:child_process";
import { cpus, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const benchDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const benchStart = performance.now();

/** A progress line on stderr, stamped with seconds since the bench started. */
export function progress(message: string): void {
  const s = ((performance.now() - benchStart) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${s}s] ${message}\n`);
}

/** The version a command prints for `--version`, picked out by `pattern`'s first group. */
export async function commandVersion(binary: string, pattern: RegExp): Promise<string | null> {
  try {
    const { stdout, stderr } = await promisify(execFile)(binary, ["--version"], { timeout: 5_000 });
    return pattern.exec(`${stdout}${stderr}`)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The commit measured, and whether src/ had uncommitted changes (figures then are of those). */
export async function gitState(): Promise<{ commit: string; src_dirty: boolean } | null> {
  const git = (...args: string[]) =>
    promisify(execFile)("git", args, { cwd: benchDir, timeout: 5_000 }).then((r) => r.stdout);
  try {
    const commit = (await git("rev-parse", "--short", "HEAD")).trim();
    const dirty = (await git("status", "--porcelain", "--", "../src")).trim() !== "";
    return { commit, src_dirty: dirty };
  } catch {
    return null;
  }
}

/** The machine a bench ran on. */
export function machineInfo() {
  return {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model.trim() ?? null,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}
