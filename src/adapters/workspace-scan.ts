/**
 * The workspace rules of the state plane, and the walk that applies them when a
 * workspace is snapshotted:
 *
 * - paths are relative and normalised: no leading `/`, no empty, `.` or `..`
 *   components, no NUL;
 * - a symlink's target is relative and stays inside the workspace, both read as
 *   text (`a/../b`) and resolved through the symlinks it passes on the way
 *   (a link `b -> .` makes `b/../x` leave the workspace although the text
 *   says otherwise); symlinks are recorded, never followed;
 * - only directories, regular files and symlinks: FIFOs, sockets and devices
 *   are refused (name them in `exclude` to leave them out);
 * - per-file, per-workspace and entry-count limits.
 *
 * The same rules are checked again on restore, against the manifest, before a
 * byte is written (see `snapshot-manifest.ts`). Every violation is a
 * {@link TerminalError} with one of {@link SnapshotErrorCodes}.
 */
import { constants, type Stats } from "node:fs";
import { lstat, open, readdir, readlink, realpath } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ConfigError, RetryableError, TerminalError } from "../errors.js";

/** Error codes of the snapshot store and the workspace rules. */
export const SnapshotErrorCodes = {
  /** A path in a manifest is absolute, not normalised, has `..`, or passes through a symlink or file. */
  PATH_ESCAPE: "PATH_ESCAPE",
  /** A symlink is absolute or resolves outside the workspace. */
  SYMLINK_ESCAPE: "SYMLINK_ESCAPE",
  /** A FIFO, socket or device in the workspace. */
  SPECIAL_FILE: "SPECIAL_FILE",
  FILE_TOO_LARGE: "FILE_TOO_LARGE",
  WORKSPACE_TOO_LARGE: "WORKSPACE_TOO_LARGE",
  TOO_MANY_FILES: "TOO_MANY_FILES",
  /** No such version (or checkpoint) for this tenant and session. */
  SNAPSHOT_NOT_FOUND: "SNAPSHOT_NOT_FOUND",
  /** A stored manifest or chunk is missing, malformed or does not match its hash. */
  SNAPSHOT_CORRUPT: "SNAPSHOT_CORRUPT",
  /** The snapshot ran past `maxSnapshotMs` and was not committed (retryable). */
  SNAPSHOT_TIMEOUT: "SNAPSHOT_TIMEOUT",
  /** A file changed under the snapshot (shrank or was replaced); retryable. */
  WORKSPACE_CHANGED: "WORKSPACE_CHANGED",
  /** The local filesystem refused an operation (permissions, not a directory...). */
  WORKSPACE_ERROR: "WORKSPACE_ERROR",
  /** NATS failed; the same call may succeed later (retryable). */
  SNAPSHOT_STORE_ERROR: "SNAPSHOT_STORE_ERROR",
} as const;

const MiB = 1024 * 1024;

/** Size and count limits of one workspace, checked on snapshot and on restore. */
export interface SnapshotLimits {
  /** Largest regular file. Default 100 MiB. */
  maxFileBytes: number;
  /** Sum of all regular files. Default 1 GiB. */
  maxWorkspaceBytes: number;
  /** Most entries (files, directories and symlinks). Default 100 000. */
  maxFiles: number;
}

export const SnapshotLimitsSchema = z.strictObject({
  maxFileBytes: z
    .number()
    .int()
    .min(0)
    .default(100 * MiB),
  maxWorkspaceBytes: z
    .number()
    .int()
    .min(0)
    .default(1024 * MiB),
  maxFiles: z.number().int().min(1).default(100_000),
});

/** Applies defaults to partial limits; throws {@link ConfigError} when invalid. */
export function resolveSnapshotLimits(
  limits: Partial<SnapshotLimits> = {},
): Readonly<SnapshotLimits> {
  const parsed = SnapshotLimitsSchema.safeParse(limits);
  if (!parsed.success) {
    throw new ConfigError(`invalid snapshot limits: ${z.prettifyError(parsed.error)}`, {
      cause: parsed.error,
    });
  }
  return Object.freeze(parsed.data);
}

/** An exclude pattern: see {@link compileExclude}. */
export const ExcludePatternSchema = z
  .string()
  .min(1)
  .max(1024)
  .refine((p) => !p.includes("\0") && p !== "/", "not a usable pattern");

/** Files SQLite keeps beside a live database; never copy them while it runs. */
export const SQLITE_LIVE_FILES: readonly string[] = Object.freeze(["*-wal", "*-shm", "*-journal"]);

/** Whether `p` is a relative, normalised path inside a workspace (`a/b`, never `./a`, `a/../b`, `/a`). */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 4096 || p.includes("\0")) return false;
  for (const part of p.split("/")) {
    if (part === "" || part === "." || part === "..") return false;
  }
  return true;
}

/**
 * Where the symlink at `linkPath` (workspace-relative) points, read as text, as a
 * workspace-relative path (`""` is the root); null if the target is absolute or
 * leaves the workspace.
 */
export function lexicalSymlinkTarget(linkPath: string, target: string): string | null {
  if (target.length === 0 || target.length > 4096 || target.includes("\0")) return null;
  if (target.startsWith("/")) return null;
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(linkPath), target));
  if (joined === ".." || joined.startsWith("../")) return null;
  return joined === "." ? "" : joined.replace(/\/$/, "");
}

/**
 * Resolves `target` as the kernel would, starting in the workspace-relative
 * directory `fromDir` under `root`, following every symlink on the way (reading
 * only inside `root`). Returns the workspace-relative result, or null when any
 * step leaves the workspace, a link is absolute, or the chain loops. Components
 * that do not exist are taken as plain names, which can only make the answer
 * stricter (the kernel would stop there with ENOENT).
 */
export async function resolveInside(
  root: string,
  fromDir: string,
  target: string,
): Promise<string | null> {
  let hops = 0;
  const walk = async (start: readonly string[], t: string): Promise<string[] | null> => {
    if (t.length === 0 || t.startsWith("/") || t.includes("\0")) return null;
    let stack = [...start];
    for (const part of t.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (stack.length === 0) return null;
        stack.pop();
        continue;
      }
      const next = [...stack, part];
      const abs = path.join(root, ...next);
      let st: Stats | undefined;
      try {
        st = await lstat(abs);
      } catch {
        st = undefined;
      }
      if (st?.isSymbolicLink()) {
        if (++hops > 40) return null;
        const resolved = await walk(stack, await readlink(abs));
        if (resolved === null) return null;
        stack = resolved;
      } else {
        stack = next;
      }
    }
    return stack;
  };
  const out = await walk(fromDir === "" ? [] : fromDir.split("/"), target);
  return out === null ? null : out.join("/");
}

/** Checks a symlink at `linkPath` against both rules; throws SYMLINK_ESCAPE. */
export async function checkSymlink(root: string, linkPath: string, target: string): Promise<void> {
  const dir = path.posix.dirname(linkPath);
  if (
    lexicalSymlinkTarget(linkPath, target) === null ||
    (await resolveInside(root, dir === "." ? "" : dir, target)) === null
  ) {
    throw new TerminalError(
      SnapshotErrorCodes.SYMLINK_ESCAPE,
      `symlink ${linkPath} -> ${target} leaves the workspace`,
    );
  }
}

/**
 * Compiles exclude patterns into a predicate over workspace-relative paths.
 * `*` matches within one path component, `**` across components, `?` one
 * character. A pattern without `/` matches the last component at any depth
 * (`*-wal`, `node_modules`); with `/` it matches the whole path (`cache/**`,
 * `/build`). A trailing `/` matches directories only. An excluded directory is
 * skipped with everything below it.
 */
export function compileExclude(
  patterns: readonly string[],
): (rel: string, isDir: boolean) => boolean {
  const rules = patterns.map((raw) => {
    const dirOnly = raw.endsWith("/");
    let body = dirOnly ? raw.slice(0, -1) : raw;
    const anchored = body.includes("/");
    body = body.replace(/^\/+/, "");
    return { re: globToRegExp(body), dirOnly, anchored };
  });
  if (rules.length === 0) return () => false;
  return (rel, isDir) =>
    rules.some(
      (r) => (!r.dirOnly || isDir) && r.re.test(r.anchored ? rel : path.posix.basename(rel)),
    );
}

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        i++;
        if (glob[i + 1] === "/") {
          i++;
          re += "(?:.*/)?";
        } else {
          re += ".*";
        }
      } else {
        re += "[^/]*";
      }
    } else if (c === "?") {
      re += "[^/]";
    } else {
      re += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${re}$`, "s");
}

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
          SnapshotErrorCodes.WORKSPACE_ERROR,
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
          SnapshotErrorCodes.TOO_MANY_FILES,
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
          SnapshotErrorCodes.SPECIAL_FILE,
          `${p} is not a regular file, directory or symlink (exclude it to leave it out)`,
        );
      }
    }
  };
  await visit("");
  return { root, entries, files, bytes };
}

export function checkFileSize(p: string, size: number, limits: Readonly<SnapshotLimits>): void {
  if (size > limits.maxFileBytes) {
    throw new TerminalError(
      SnapshotErrorCodes.FILE_TOO_LARGE,
      `${p} is ${size} bytes, more than the limit of ${limits.maxFileBytes}`,
    );
  }
}

export function checkWorkspaceSize(total: number, limits: Readonly<SnapshotLimits>): void {
  if (total > limits.maxWorkspaceBytes) {
    throw new TerminalError(
      SnapshotErrorCodes.WORKSPACE_TOO_LARGE,
      `the workspace holds more than ${limits.maxWorkspaceBytes} bytes`,
    );
  }
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
        SnapshotErrorCodes.SYMLINK_ESCAPE,
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
  return new RetryableError(
    SnapshotErrorCodes.WORKSPACE_CHANGED,
    `${p} changed during the snapshot`,
  );
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}
