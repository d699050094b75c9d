/**
 * Writing snapshots: the capture of a workspace into chunks and a manifest, and
 * the version entry that commits it.
 *
 * ## A snapshot
 *
 * Walk the workspace with the workspace rules (`workspace-scan.ts`), hash each
 * chunk, store the chunks the store lacks (existence checked per chunk, with an
 * in-process cache), store the manifest, and only then create the version entry
 * (which claims the version number) and list it in the session's head
 * (`snapshot-head.ts`). The head update is the commit point (readers see only what
 * a head lists): a snapshot that fails or dies before it (a container killed
 * mid-sync) leaves the previous version as `latest` and at most some chunks and
 * an entry nothing lists, which GC removes. The caller quiesces the workspace
 * first (a runtime's quiesce hook, e.g. `ObjectWorkspaceStore`'s `quiesce`) and
 * names live files that must not be copied in `exclude` (`SQLITE_LIVE_FILES`).
 *
 * Objects it reuses rather than uploads must keep their lease long enough for
 * the commit; see the GC rules in `snapshot-gc.ts`.
 */

import type { FileHandle } from "node:fs/promises";
import { type Clock, isoNow } from "../../clock.js";
import { ErrorCodes, RetryableError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";
import { forEachLimit, Limiter } from "./async-limit.js";
import { ChunkStore, type EnsureResult } from "./chunk-store.js";
import { type SnapshotCatalog, versionKey } from "./snapshot-catalog.js";
import { headVersionOf, withVersion } from "./snapshot-head.js";
import {
  encodeManifest,
  encodeVersionEntry,
  type Manifest,
  type ManifestEntry,
  type VersionInfo,
} from "./snapshot-manifest.js";
import type { ResolvedSnapshotStoreOptions, SnapshotStoreHooks } from "./snapshot-store-options.js";
import { changed, openScannedFile, type ScannedFile, scanWorkspace } from "./workspace-scan.js";

/** Options of one snapshot. */
export interface SnapshotOptions {
  /** Runs after everything is uploaded, right before the version is committed; throw to abandon it. */
  readonly precommit?: () => Promise<void>;
  /** Patterns of paths never stored (see `compileExclude`), e.g. `SQLITE_LIVE_FILES`. */
  readonly exclude?: readonly string[];
  /** Why it was taken (`turn`, `sync`, ...), kept with the version. */
  readonly reason?: string;
  /** The version the working copy was restored from, kept as lineage. */
  readonly parent?: number;
  /** Mark the version known-good at once (it is the state after a successful turn). */
  readonly knownGood?: boolean;
}

/** What {@link SnapshotWriter.capture} stored: the manifest and the counts for its version entry. */
export interface Captured {
  readonly startedAt: number;
  readonly manifest: string;
  readonly manifestBytes: number;
  readonly entries: number;
  readonly files: number;
  readonly bytes: number;
  readonly uploadedBytes: number;
  readonly uploadedChunks: number;
  readonly reusedChunks: number;
  readonly refreshedChunks: number;
}

/** Captures workspaces and commits them as versions (or, for checkpoints, hands them back). */
export class SnapshotWriter {
  constructor(
    private readonly catalog: SnapshotCatalog,
    private readonly chunks: ChunkStore,
    private readonly options: ResolvedSnapshotStoreOptions,
    private readonly clock: Clock,
    private readonly hooks: SnapshotStoreHooks,
  ) {}

  /** Stores `dir` as the next version of the session (`exclude` already checked). */
  async snapshot(
    tenant: string,
    session: string,
    dir: string,
    exclude: readonly string[],
    options: SnapshotOptions,
  ): Promise<VersionInfo> {
    const captured = await this.capture(tenant, dir, exclude);
    await this.hooks.beforeCommit?.();
    // The caller's last word (e.g. "is the task still ours?"): throwing leaves no version.
    await options.precommit?.();
    return this.commitVersion(tenant, session, captured, options);
  }

  /** Walks `dir`, stores missing chunks and the manifest; commits nothing. */
  async capture(tenant: string, dir: string, exclude: readonly string[]): Promise<Captured> {
    const startedAt = this.clock.now();
    const { chunkSize, concurrency } = this.options;
    const scan = await scanWorkspace(dir, { limits: this.options.limits, exclude });
    const files = scan.entries.filter((e): e is ScannedFile => e.type === "file");
    const chunkLists = new Map<string, string[]>();
    const stats = { uploadedBytes: 0, uploadedChunks: 0, reusedChunks: 0, refreshedChunks: 0 };
    const count = (r: EnsureResult) => {
      if (r.outcome === "uploaded") {
        stats.uploadedChunks++;
        stats.uploadedBytes += r.sentBytes;
      } else {
        stats.reusedChunks++;
        if (r.outcome === "refreshed") stats.refreshedChunks++;
      }
    };
    // Readers hash chunks in order; uploads run in the background, `concurrency` at a time.
    const slots = new Limiter(concurrency);
    const pending = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;
    const fail = (error: unknown) => {
      failure ??= { error };
    };
    let uploads = 0;
    const beforeUpload = async (hash: string) => {
      await this.hooks.beforeChunkUpload?.(++uploads, hash);
    };
    await forEachLimit(files, concurrency, async (file) => {
      const hashes: string[] = [];
      chunkLists.set(file.path, hashes);
      if (file.size === 0) return;
      const fh = await openScannedFile(scan.root, file);
      try {
        for (let offset = 0; offset < file.size && !failure; offset += chunkSize) {
          const buf = Buffer.allocUnsafe(Math.min(chunkSize, file.size - offset));
          if ((await readFully(fh, buf, offset)) < buf.length) throw changed(file.path);
          const hash = ChunkStore.hash(buf);
          hashes.push(hash);
          const release = await slots.acquire();
          const p: Promise<void> = this.chunks
            .ensure(tenant, hash, buf, startedAt, { beforeUpload: () => beforeUpload(hash) })
            .then(count, fail)
            .finally(() => {
              release();
              pending.delete(p);
            });
          pending.add(p);
        }
      } finally {
        await fh.close();
      }
    }).catch(fail);
    while (pending.size > 0) await Promise.all([...pending]);
    if (failure) throw failure.error;

    const manifest: Manifest = {
      format: 1,
      chunkSize,
      entries: scan.entries.map((e): ManifestEntry => {
        if (e.type === "dir") return { type: "dir", path: e.path, mode: e.mode, mtime: e.mtime };
        if (e.type === "symlink") return { type: "symlink", path: e.path, target: e.target };
        const chunks = chunkLists.get(e.path)!;
        return { type: "file", path: e.path, mode: e.mode, mtime: e.mtime, size: e.size, chunks };
      }),
    };
    const encoded = await encodeManifest(manifest);
    const manifestHash = ChunkStore.hash(encoded);
    const stored = await this.chunks.ensure(tenant, manifestHash, encoded, startedAt, {
      compress: false,
    });
    stats.uploadedBytes += stored.sentBytes;
    this.catalog.cacheManifest(ChunkStore.objectName(tenant, manifestHash), manifest);
    return {
      startedAt,
      manifest: manifestHash,
      manifestBytes: encoded.length,
      entries: scan.entries.length,
      files: scan.files,
      bytes: scan.bytes,
      ...stats,
    };
  }

  /**
   * Creates the next version entry (the commit point), trying the numbers above the
   * head's until one is free, then adds it to the head.
   */
  private async commitVersion(
    tenant: string,
    session: string,
    captured: Captured,
    options: SnapshotOptions,
  ): Promise<VersionInfo> {
    let version = (await this.catalog.heads.read(tenant, session)).head.last + 1;
    for (let attempt = 0; attempt < 50; attempt++, version++) {
      this.checkDeadline(captured.startedAt);
      const info = this.versionInfo(tenant, session, version, captured, options);
      try {
        await this.catalog.kv.create(
          versionKey(tenant, session, version),
          encodeVersionEntry(info),
        );
      } catch (err) {
        // Taken by a concurrent writer (or one that died before its head update): next one.
        if (!isCasConflict(err)) throw err;
        continue;
      }
      const listed = headVersionOf(info);
      await this.catalog.heads.update(tenant, session, (h) => withVersion(h, listed));
      return info;
    }
    throw new RetryableError(
      ErrorCodes.SNAPSHOT_STORE_ERROR,
      `could not commit a version of ${tenant}/${session}: too many concurrent writers`,
    );
  }

  versionInfo(
    tenant: string,
    session: string,
    version: number,
    c: Captured,
    options: Pick<SnapshotOptions, "reason" | "parent" | "knownGood">,
  ): VersionInfo {
    return {
      tenant,
      session,
      version,
      createdAt: isoNow(this.clock),
      manifest: c.manifest,
      manifestBytes: c.manifestBytes,
      entries: c.entries,
      files: c.files,
      bytes: c.bytes,
      uploadedBytes: c.uploadedBytes,
      uploadedChunks: c.uploadedChunks,
      reusedChunks: c.reusedChunks,
      refreshedChunks: c.refreshedChunks,
      knownGood: options.knownGood ?? false,
      ...(options.reason === undefined ? {} : { reason: options.reason.slice(0, 200) }),
      ...(options.parent === undefined ? {} : { parent: options.parent }),
    };
  }

  checkDeadline(startedAt: number): void {
    if (this.clock.now() - startedAt > this.options.maxSnapshotMs) {
      throw new RetryableError(
        ErrorCodes.SNAPSHOT_TIMEOUT,
        `the snapshot took longer than ${this.options.maxSnapshotMs} ms and was not committed`,
      );
    }
  }
}

async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}
