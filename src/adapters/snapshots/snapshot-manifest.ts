/**
 * What a snapshot version is made of, as stored:
 *
 * - a **manifest** (gzipped JSON, itself a content-addressed object): every
 *   directory, file and symlink of the workspace with its mode, mtime, size and
 *   the SHA-256 of each fixed-size chunk of its contents;
 * - a **version entry** (a small JSON value in KV) naming the manifest's hash,
 *   with the version number, time, counts and the known-good flag.
 *
 * Both are validated with zod when read; a manifest's paths are checked against
 * the workspace rules ({@link checkManifest}) before anything is written.
 */
import { promisify } from "node:util";
import { gunzip, gzip } from "node:zlib";
import { z } from "zod";
import { ErrorCodes, TerminalError } from "../../errors.js";
import {
  checkFileSize,
  checkWorkspaceSize,
  isSafeRelativePath,
  lexicalSymlinkTarget,
  type SnapshotLimits,
} from "./workspace-rules.js";

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** Tenant, session and task ids: the API's id alphabet, also valid in KV keys and subjects. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

export const HashSchema = z.string().regex(/^[0-9a-f]{64}$/, "a lowercase hex SHA-256");
const Mode = z.number().int().min(0).max(0o777);
const Mtime = z.number().int();
const EntryPath = z.string().min(1).max(4096);

export const ManifestEntrySchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("dir"), path: EntryPath, mode: Mode, mtime: Mtime }),
  z.object({
    type: z.literal("file"),
    path: EntryPath,
    mode: Mode,
    mtime: Mtime,
    size: z.number().int().min(0),
    chunks: z.array(HashSchema),
  }),
  z.object({ type: z.literal("symlink"), path: EntryPath, target: z.string().min(1).max(4096) }),
]);

export const ManifestSchema = z.object({
  format: z.literal(1),
  /** Files are cut into chunks of exactly this many bytes (the last one shorter). */
  chunkSize: z.number().int().min(1),
  entries: z.array(ManifestEntrySchema),
});

export type ManifestEntry = z.output<typeof ManifestEntrySchema>;
export type Manifest = z.output<typeof ManifestSchema>;

/** The KV value of one version (or checkpoint) of a session. */
export const VersionEntrySchema = z.object({
  format: z.literal(1),
  tenant: z.string().regex(ID_PATTERN),
  session: z.string().regex(ID_PATTERN),
  /** Monotonic per session, from 1; a checkpoint's step. */
  version: z.number().int().min(0),
  /** Commit time (ISO-8601, the writer's clock). */
  createdAt: z.iso.datetime(),
  /** SHA-256 of the stored (gzipped) manifest. */
  manifest: HashSchema,
  manifestBytes: z.number().int().min(0),
  /** Directories, files and symlinks. */
  entries: z.number().int().min(0),
  /** Regular files. */
  files: z.number().int().min(0),
  /** Bytes in regular files. */
  bytes: z.number().int().min(0),
  /** Bytes this snapshot sent to the store: new chunks (after compression), and the manifest if new. */
  uploadedBytes: z.number().int().min(0),
  /** Chunks of file contents this snapshot had to upload. */
  uploadedChunks: z.number().int().min(0),
  /** Chunks already in the store (including repeats within the workspace). */
  reusedChunks: z.number().int().min(0),
  /** Reused chunks whose lease had to be renewed (see the GC notes in snapshot-gc.ts). */
  refreshedChunks: z.number().int().min(0),
  /** A turn succeeded after this version was taken (it is a safe point to go back to). */
  knownGood: z.boolean(),
  reason: z.string().max(200).optional(),
  /** The version the working copy was restored from, when the caller knew it. */
  parent: z.number().int().min(0).optional(),
  /** Set on checkpoints: the state after `step` of a running task. */
  checkpoint: z
    .object({ taskId: z.string().regex(ID_PATTERN), step: z.number().int().min(0) })
    .optional(),
});

/** A version of a session's workspace, as stored and as returned. */
export type VersionInfo = Omit<z.output<typeof VersionEntrySchema>, "format">;

/** Serialises a manifest for storage. */
export async function encodeManifest(manifest: Manifest): Promise<Buffer> {
  return gzipAsync(Buffer.from(JSON.stringify(manifest)), { level: 6 });
}

/** Parses a stored manifest; any defect is SNAPSHOT_CORRUPT. */
export async function decodeManifest(bytes: Uint8Array, what: string): Promise<Manifest> {
  let value: unknown;
  try {
    value = JSON.parse((await gunzipAsync(bytes)).toString("utf8"));
  } catch (err) {
    throw corrupt(`${what}: manifest is not gzipped JSON`, err);
  }
  const parsed = ManifestSchema.safeParse(value);
  if (!parsed.success) throw corrupt(`${what}: invalid manifest: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** Parses a KV version entry; any defect is SNAPSHOT_CORRUPT. */
export function decodeVersionEntry(bytes: Uint8Array, what: string): VersionInfo {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw corrupt(`${what}: version entry is not JSON`, err);
  }
  const parsed = VersionEntrySchema.safeParse(value);
  if (!parsed.success)
    throw corrupt(`${what}: invalid version entry: ${z.prettifyError(parsed.error)}`);
  const { format: _format, ...info } = parsed.data;
  return info;
}

/** Serialises a version entry for KV. */
export function encodeVersionEntry(info: VersionInfo): string {
  return JSON.stringify({ format: 1, ...info });
}

/**
 * Checks a manifest against the workspace rules and `limits` before a restore
 * writes anything: safe relative paths, unique, every parent a directory of the
 * manifest (so no write can pass through a symlink or a file), symlink targets
 * that stay inside as text (the restore checks them again on the real tree),
 * chunk lists consistent with sizes, and the size and count limits.
 */
export function checkManifest(manifest: Manifest, limits: Readonly<SnapshotLimits>): void {
  const { entries, chunkSize } = manifest;
  if (entries.length > limits.maxFiles) {
    throw new TerminalError(
      ErrorCodes.TOO_MANY_FILES,
      `the snapshot has ${entries.length} entries, more than the limit of ${limits.maxFiles}`,
    );
  }
  const types = new Map<string, ManifestEntry["type"]>();
  let total = 0;
  for (const e of entries) {
    if (!isSafeRelativePath(e.path)) {
      throw new TerminalError(
        ErrorCodes.PATH_ESCAPE,
        `unsafe path in snapshot: ${JSON.stringify(e.path)}`,
      );
    }
    if (types.has(e.path)) throw corrupt(`duplicate path in snapshot: ${e.path}`);
    types.set(e.path, e.type);
  }
  for (const e of entries) {
    const slash = e.path.lastIndexOf("/");
    if (slash >= 0) {
      const parent = e.path.slice(0, slash);
      const kind = types.get(parent);
      if (kind !== "dir") {
        throw new TerminalError(
          ErrorCodes.PATH_ESCAPE,
          `${e.path} would be written through ${kind === undefined ? "a missing directory" : `a ${kind}`} (${parent})`,
        );
      }
    }
    if (e.type === "file") {
      checkFileSize(e.path, e.size, limits);
      total += e.size;
      checkWorkspaceSize(total, limits);
      if (e.chunks.length !== Math.ceil(e.size / chunkSize)) {
        throw corrupt(`${e.path}: ${e.chunks.length} chunks for ${e.size} bytes`);
      }
    } else if (e.type === "symlink" && lexicalSymlinkTarget(e.path, e.target) === null) {
      throw new TerminalError(
        ErrorCodes.SYMLINK_ESCAPE,
        `symlink ${e.path} -> ${e.target} leaves the workspace`,
      );
    }
  }
}

export function corrupt(message: string, cause?: unknown): TerminalError {
  return new TerminalError(
    ErrorCodes.SNAPSHOT_CORRUPT,
    message,
    cause === undefined ? undefined : { cause },
  );
}
