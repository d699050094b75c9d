/**
 * The workspace rules of the state plane, checked when a workspace is walked
 * (`workspace-scan.ts`) and again on restore, against the manifest, before a
 * byte is written (`snapshot-manifest.ts`):
 *
 * - paths are relative and normalised: no leading `/`, no empty, `.` or `..`
 *   components, no NUL;
 * - a symlink's target is relative and stays inside the workspace, both read as
 *   text (`a/../b`) and resolved through the symlinks it passes on the way
 *   (a link `b -> .` makes `b/../x` leave the workspace although the text
 *   says otherwise); symlinks are recorded, never followed;
 * - only directories, regular files and symlinks: FIFOs, sockets and devices
 *   are refused (name them in `exclude` to leave them out; `workspace-exclude.ts`);
 * - per-file, per-workspace and entry-count limits.
 *
 * Every violation is a {@link TerminalError} with its code in {@link ErrorCodes}.
 */
import type { Stats } from "node:fs";
import { lstat, readlink } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ConfigError, ErrorCodes, TerminalError } from "../../errors.js";

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
      ErrorCodes.SYMLINK_ESCAPE,
      `symlink ${linkPath} -> ${target} leaves the workspace`,
    );
  }
}

export function checkFileSize(p: string, size: number, limits: Readonly<SnapshotLimits>): void {
  if (size > limits.maxFileBytes) {
    throw new TerminalError(
      ErrorCodes.FILE_TOO_LARGE,
      `${p} is ${size} bytes, more than the limit of ${limits.maxFileBytes}`,
    );
  }
}

export function checkWorkspaceSize(total: number, limits: Readonly<SnapshotLimits>): void {
  if (total > limits.maxWorkspaceBytes) {
    throw new TerminalError(
      ErrorCodes.WORKSPACE_TOO_LARGE,
      `the workspace holds more than ${limits.maxWorkspaceBytes} bytes`,
    );
  }
}
