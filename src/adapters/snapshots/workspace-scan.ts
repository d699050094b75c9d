/**
 * The walk that applies the workspace rules (`workspace-rules.ts`) when a
 * workspace is snapshotted, skipping excluded paths (`workspace-exclude.ts`),
 * and the guarded open of the files it found.
 *
 * The rules and exclude patterns are re-exported here, where they used to live.
 */
import { constants } from "node:fs";
import { lstat, open, readdir, readlink, realpath } from "node:fs/promises";
import path from "node:path";
import { ErrorCodes, RetryableError, TerminalError } from "../../errors.js";
import { compileExclude } from "./workspace-exclude.js";
import {
  checkFileSize,
  checkSymlink,
  checkWorkspaceSize,
  type SnapshotLimits,
} from "./workspace-rules.js";

export { compileExclude, ExcludePatternSchema, SQLITE_LIVE_FILES } from "./workspace-exclude.js";
export {
  checkFileSize,
  checkSymlink,
  checkWorkspaceSize,
  isSafeRelativePath,
  lexicalSymlinkTarget,
  resolveInside,
  resolveSnapshotLimits,
  type SnapshotLimits,
  SnapshotLimitsSchema,
} from "./workspace-rules.js";

/** A directory found by {@link scanWorkspace}. */
export interface ScannedDir {
  readonly type: "dir";
  readonly path: string;
  readonly mode: number;
  readonly mtime: number;
}

/** A regular file found by {@link scanWorkspace}; `dev`/`ino` pin the inode that was checked. */
export interface ScannedFile {
  readonly type: "file";
  readonly path: string;
  readonly mode: number;
  readonly mtime: number;
  readonly size: number;
  readonly dev: number;
  readonly ino: number;
}

/** A symlink found by {@link scanWorkspace}; its target stays inside. */
export interface ScannedSymlink {
  readonly type: "symlink";
  readonly path: string;
  readonly target: string;
}

export type ScannedEntry = ScannedDir | ScannedFile | ScannedSymlink;

/** What {@link scanWorkspace} found. */
export interface ScanResult {
  /** The workspace's real path. */
  readonly root: string;
  /** Pre-order, names sorted; a directory comes before its contents. */
  readonly entries: readonly ScannedEntry[];
  readonly files: number;
  readonly bytes: number;
}

/** Options of {@link scanWorkspace}. */
export interface ScanOptions {
  readonly limits: Readonly<SnapshotLimits>;
  readonly exclude?: readonly string[];
}

/**
 * Walks `dir` without following symlinks and applies every workspace rule.
 * Entries that vanish during the walk are skipped (the agent may still be
 * writing; a runtime's quiesce hook is what makes a snapshot consistent).
 */
export async function scanWorkspace(dir: string, options: ScanOptions): Promise<ScanResult> {
  const { limits } = options;
  const excluded = compileExclude(options.exclude ?? []);
  const root = await realpath(dir);
  const entries: ScannedEntry[] = [];
  let files = 0;
  let bytes = 0;

  const visit = async (rel: string): Promise<void> => {
    let raw: Buffer[];
    try {
      raw = await readdir(rel === "" ? root : path.join(root, rel), { encoding: "buffer" });
    } catch (err) {
      if (rel !== "" && isGone(err)) return;
      throw err;
    }
    // Names are kept as text; one that is not UTF-8 could not be stored faithfully,
    // and must not be skipped silently either.
    const names = raw.map((b) => {
      const name = b.toString("utf8");
      if (!Buffer.from(name, "utf8").equals(b)) {
        throw new TerminalError(
          ErrorCodes.WORKSPACE_ERROR,
          `a file name in ${rel === "" ? "the workspace root" : rel} is not valid UTF-8`,
        );
      }
      return name;
    });
    names.sort();
    const stats = await Promise.all(
      names.map((name) =>
        lstat(path.join(root, rel, name)).catch((err: unknown) => {
          if (isGone(err)) return null;
          throw err;
        }),
      ),
    );
    for (let i = 0; i < names.length; i++) {
      const st = stats[i];
      if (!st) continue;
      const p = rel === "" ? names[i]! : `${rel}/${names[i]!}`;
      const isDir = st.isDirectory();
      if (excluded(p, isDir)) continue;
      if (entries.length >= limits.maxFiles) {
        throw new TerminalError(
          ErrorCodes.TOO_MANY_FILES,
          `the workspace has more than ${limits.maxFiles} entries`,
        );
      }
      if (isDir) {
        entries.push({
          type: "dir",
          path: p,
          mode: st.mode & 0o777,
          mtime: Math.floor(st.mtimeMs),
        });
        await visit(p);
      } else if (st.isFile()) {
        checkFileSize(p, st.size, limits);
        bytes += st.size;
        checkWorkspaceSize(bytes, limits);
        files++;
        entries.push({
          type: "file",
          path: p,
          mode: st.mode & 0o777,
          mtime: Math.floor(st.mtimeMs),
          size: st.size,
          dev: st.dev,
          ino: st.ino,
        });
      } else if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = await readlink(path.join(root, p));
        } catch (err) {
          if (isGone(err)) continue;
          throw err;
        }
        await checkSymlink(root, p, target);
        entries.push({ type: "symlink", path: p, target });
      } else {
        throw new TerminalError(
          ErrorCodes.SPECIAL_FILE,
          `${p} is not a regular file, directory or symlink (exclude it to leave it out)`,
        );
      }
    }
  };
  await visit("");
  return { root, entries, files, bytes };
}

/**
 * Opens a scanned file for reading, refusing anything but the very inode the
 * scan checked: the last component is opened with O_NOFOLLOW, the inode must
 * match, and on Linux the kernel's own name for the open file must lie under
 * the workspace root. So an agent that swaps a directory for a symlink during
 * the walk cannot make the host copy files from outside its workspace.
 */
export async function openScannedFile(root: string, file: ScannedFile) {
  const abs = path.join(root, file.path);
  const fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === "ELOOP" || isGone(err)) throw changed(file.path);
    throw err;
  });
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.ino !== file.ino || st.dev !== file.dev) throw changed(file.path);
    let real: string | undefined;
    try {
      real = await readlink(`/proc/self/fd/${fh.fd}`);
    } catch {
      real = undefined; // no /proc: the inode check above is what we have
    }
    if (real !== undefined && !real.startsWith(`${root}/`)) {
      throw new TerminalError(
        ErrorCodes.SYMLINK_ESCAPE,
        `${file.path} resolved outside the workspace while being read`,
      );
    }
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** A file changed under a snapshot; retrying reads the new state, so this is retryable. */
export function changed(p: string): RetryableError {
  return new RetryableError(ErrorCodes.WORKSPACE_CHANGED, `${p} changed during the snapshot`);
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}
