/**
 * The state plane's snapshot store: versioned workspace snapshots in NATS.
 *
 * ## Storage layout (prefix `fleet`)
 *
 * - Object Store bucket `fleet_chunks` (stream `OBJ_fleet_chunks`): content-addressed
 *   objects `<tenant>/sha256/<hex>`: every distinct chunk of file contents (files
 *   are cut into `chunkSize` pieces, default 1 MiB; deflated when that pays) and
 *   every manifest (gzipped JSON). Shared by all sessions of one tenant, never
 *   across tenants.
 * - KV bucket `fleet_snapshots`:
 *   - `v.<tenant>.<session>.<version, 10 digits>`: one entry per version
 *     ({@link VersionInfo}: manifest hash, time, counts, known-good flag). Created
 *     with create-only semantics, so two writers can never both make version N
 *     (the loser takes N+1).
 *   - `ck.<tenant>.<session>.<taskId>.<step, 10 digits>`: checkpoints of a running
 *     task; never a session version, never `latest`.
 *
 * ## A snapshot
 *
 * Walk the workspace with the workspace rules (`workspace-scan.ts`), hash each
 * chunk, store the chunks the store lacks (existence checked per chunk, with an
 * in-process cache), store the manifest, and only then create the version entry.
 * The entry is the commit point: a snapshot that fails or dies before it (a
 * container killed mid-sync) leaves the previous version as `latest` and at most
 * some unreferenced chunks, which GC removes. The caller quiesces the workspace
 * first (a runtime's quiesce hook, e.g. `ObjectWorkspaceStore`'s `quiesce`) and
 * names live files that must not be copied in `exclude` (`SQLITE_LIVE_FILES`).
 *
 * ## A restore
 *
 * Read the version's manifest, check it against the workspace rules and limits,
 * download and verify every chunk into a staging directory beside the target,
 * check every symlink against the staged tree, and only then empty the target
 * and move the staged entries in (renames). The target directory itself is kept
 * (it may be bind-mounted into a sandbox). A restore that fails before the move
 * leaves the target as it was; one that fails during the move empties it; it
 * never resolves with a partial tree.
 *
 * ## Garbage collection and why it is safe against concurrent snapshots
 *
 * {@link SnapshotStore.prune} removes version entries (keeping the last N and the
 * newest known-good ones); {@link SnapshotStore.gc} then deletes objects that no
 * version or checkpoint entry references, directly (a manifest) or through its
 * manifest (a chunk). The danger is a snapshot in flight that decided to reuse an
 * object and has not committed yet. Three rules make that safe, with
 * G = `gcGraceMs`, D = `maxSnapshotMs`, ε = `clockSkewMs`, R = G − D − 2ε:
 *
 * 1. Every object's meta record carries an mtime, a lease on its existence. GC
 *    only deletes objects whose mtime is older than G at the start of its run (t0),
 *    and reads the version entries after t0.
 * 2. A snapshot starting at s references an object it did not upload only if it
 *    saw an mtime ≥ s − R; otherwise it renews the lease (rewrites the meta record
 *    with mtime = now). It commits before s + D or not at all (SNAPSHOT_TIMEOUT).
 * 3. The renewal is conditional on the meta record's stream sequence
 *    (expected-last-subject-sequence), and so is GC's delete (delete by sequence):
 *    of a racing renewal and delete exactly one succeeds.
 *
 * Suppose a snapshot commits at c a version referencing X and a GC run deletes X.
 * If c precedes the run's read of the entries, X is referenced: contradiction. So
 * c > t0, and the snapshot started at s > t0 − D − ε. If it uploaded or renewed X
 * before GC read X's meta record, GC saw mtime ≥ s − ε > t0 − G: not stale. If
 * after, GC's delete names a sequence that is no longer X's record and fails, or
 * it came first and the renewal fails and the snapshot uploads X again (new data
 * under a new id, untouched by GC's purge of the old one). If it reused X as seen,
 * GC sees mtime ≥ s − R − ε > t0 − G: not stale. The process cache only holds
 * mtimes that were once true, and an object that a GC run deleted later than a
 * cached sighting m' would need t0' > m' + G ≥ s + D + 2ε > c, so that run read
 * the committed entry and kept X. Objects uploaded by a snapshot that never
 * commits get old and are collected. Assumed: clocks within ε, and no process
 * pause longer than ε between the deadline check and the KV write.
 *
 * GC also purges object data no meta record points to (left by a crash between
 * upload steps) once older than G, checkpoints older than `checkpointRetentionMs`,
 * and old KV delete markers.
 */
import { constants } from "node:fs";
import {
  chmod,
  cp,
  type FileHandle,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  symlink,
  utimes,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  StorageType,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { type ObjectStore, Objm, setSha256Backend } from "@nats-io/obj";
import { z } from "zod";
import { type Clock, isoNow, systemClock } from "../clock.js";
import {
  ClawfleetError,
  ConfigError,
  RetryableError,
  TerminalError,
  ValidationError,
} from "../errors.js";
import { PREFIX_PATTERN } from "../protocol/fleet-subjects.js";
import { forEachLimit, Limiter } from "./async-limit.js";
import { ChunkStore, type EnsureResult } from "./chunk-store.js";
import { emptyDir } from "./local-workspace-store.js";
import { isCasConflict } from "./nats-retry.js";
import {
  checkManifest,
  corrupt,
  decodeManifest,
  decodeVersionEntry,
  encodeManifest,
  encodeVersionEntry,
  ID_PATTERN,
  type Manifest,
  type ManifestEntry,
  type VersionInfo,
} from "./snapshot-manifest.js";
import {
  changed,
  checkSymlink,
  ExcludePatternSchema,
  openScannedFile,
  type ScannedFile,
  SnapshotErrorCodes,
  type SnapshotLimits,
  SnapshotLimitsSchema,
  scanWorkspace,
} from "./workspace-scan.js";

export type { VersionInfo } from "./snapshot-manifest.js";
export { SnapshotErrorCodes, type SnapshotLimits, SQLITE_LIVE_FILES } from "./workspace-scan.js";

const MiB = 1024 * 1024;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Options of {@link SnapshotStore.open}; every field has a default. */
export interface SnapshotStoreOptions {
  /** Name stem of the buckets (`<prefix>_chunks`, `<prefix>_snapshots`). Default `fleet`. */
  prefix?: string;
  /** Bytes per chunk of file contents. Default 1 MiB. */
  chunkSize?: number;
  /** Workspace limits, checked on snapshot and restore. */
  limits?: Partial<SnapshotLimits>;
  /** Deflate chunks when it saves at least 10 %. Default true. */
  compress?: boolean;
  /** Chunk uploads/downloads in flight at once. Default 8. */
  concurrency?: number;
  /** GC never deletes an object whose lease (mtime) is younger than this. Default 6 h. */
  gcGraceMs?: number;
  /** A snapshot not committed within this long is abandoned (SNAPSHOT_TIMEOUT). Default 30 min. */
  maxSnapshotMs?: number;
  /** Largest difference between the clocks of the hosts sharing the store. Default 60 s. */
  clockSkewMs?: number;
  /** GC drops checkpoints older than this (their task is long gone). Default 7 days. */
  checkpointRetentionMs?: number;
  /** Replicas of the buckets on a NATS cluster. Default 1. */
  replicas?: number;
}

const OptionsSchema = z
  .strictObject({
    prefix: z.string().regex(PREFIX_PATTERN).default("fleet"),
    chunkSize: z
      .number()
      .int()
      .min(1024)
      .max(8 * MiB)
      .default(MiB),
    limits: SnapshotLimitsSchema.prefault({}),
    compress: z.boolean().default(true),
    concurrency: z.number().int().min(1).max(64).default(8),
    gcGraceMs: z
      .number()
      .int()
      .min(1)
      .default(6 * HOUR),
    maxSnapshotMs: z
      .number()
      .int()
      .min(1)
      .default(30 * MINUTE),
    clockSkewMs: z.number().int().min(0).default(MINUTE),
    checkpointRetentionMs: z
      .number()
      .int()
      .min(1)
      .default(7 * DAY),
    replicas: z.number().int().min(1).max(5).default(1),
  })
  .refine((o) => o.gcGraceMs > o.maxSnapshotMs + 2 * o.clockSkewMs, {
    message: "gcGraceMs must exceed maxSnapshotMs + 2 × clockSkewMs",
    path: ["gcGraceMs"],
  });

/** Snapshot store options with every default applied. */
export type ResolvedSnapshotStoreOptions = Readonly<z.output<typeof OptionsSchema>>;

/** Validates `options` and applies defaults; throws {@link ConfigError}. */
export function resolveSnapshotStoreOptions(
  options: SnapshotStoreOptions = {},
): ResolvedSnapshotStoreOptions {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new ConfigError(`invalid snapshot store options: ${z.prettifyError(parsed.error)}`, {
      cause: parsed.error,
    });
  }
  return Object.freeze(parsed.data);
}

/** Bucket names of the snapshot store for `prefix` (for provisioning and tools). */
export function snapshotStoreNames(prefix = "fleet"): {
  readonly chunks: string;
  readonly chunksStream: string;
  readonly snapshots: string;
} {
  if (!PREFIX_PATTERN.test(prefix)) throw new ConfigError(`invalid prefix: ${prefix}`);
  const lower = prefix.replaceAll(".", "_");
  return {
    chunks: `${lower}_chunks`,
    chunksStream: `OBJ_${lower}_chunks`,
    snapshots: `${lower}_snapshots`,
  };
}

/**
 * Creates the store's Object Store and KV buckets if missing (an existing bucket is
 * opened as it is), for provisioning; {@link SnapshotStore.open} calls it too.
 */
export async function provisionSnapshotBuckets(
  nc: NatsConnection,
  options: { readonly prefix?: string; readonly replicas?: number } = {},
): Promise<{ readonly os: ObjectStore; readonly kv: KV }> {
  const names = snapshotStoreNames(options.prefix ?? "fleet");
  const replicas = options.replicas ?? 1;
  const js = jetstream(nc);
  const [os, kv] = await Promise.all([
    new Objm(js).create(names.chunks, {
      storage: StorageType.File,
      replicas,
      description: "clawfleet workspace snapshots: content-addressed chunks and manifests",
    }),
    new Kvm(js).create(names.snapshots, { history: 1, storage: StorageType.File, replicas }),
  ]);
  return { os, kv };
}

/** Options of one snapshot. */
export interface SnapshotOptions {
  /** Patterns of paths never stored (see `compileExclude`), e.g. `SQLITE_LIVE_FILES`. */
  readonly exclude?: readonly string[];
  /** Why it was taken (`turn`, `sync`, ...), kept with the version. */
  readonly reason?: string;
  /** The version the working copy was restored from, kept as lineage. */
  readonly parent?: number;
  /** Mark the version known-good at once (it is the state after a successful turn). */
  readonly knownGood?: boolean;
}

/** Which version to restore: one of `version`, or the newest matching `at` and/or `knownGood`; default the latest. */
export interface RestoreSelector {
  readonly version?: number;
  /** The newest version created at or before this time. */
  readonly at?: Date;
  /** The newest known-good version. */
  readonly knownGood?: boolean;
}

/** Retention of {@link SnapshotStore.prune}. */
export interface PruneOptions {
  /** Keep the newest N versions (at least 1: the latest is never pruned). */
  readonly keepLast: number;
  /** Also keep the newest M known-good versions. Default 1; `Infinity` keeps them all. */
  readonly keepKnownGood?: number;
}

/** What one {@link SnapshotStore.gc} run did. */
export interface GcReport {
  /** Objects in the bucket when the run listed them. */
  readonly objects: number;
  /** Objects referenced by a version or checkpoint. */
  readonly referenced: number;
  readonly deleted: number;
  readonly freedBytes: number;
  /** Unreferenced objects left because they are younger than the grace period. */
  readonly young: number;
  /** Objects a concurrent snapshot renewed or re-uploaded while GC was deleting them. */
  readonly raced: number;
  /** Object data without a meta record, purged. */
  readonly orphansPurged: number;
  readonly expiredCheckpoints: number;
  /** Tenants with an unreadable manifest: nothing of theirs was deleted. */
  readonly skippedTenants: readonly string[];
}

/** Test hooks: points where a test can inject failures or races. */
export interface SnapshotStoreHooks {
  /** Before each chunk upload of a snapshot (`n` from 1). Throwing aborts the snapshot. */
  beforeChunkUpload?(n: number, hash: string): void | Promise<void>;
  /** After all chunks and the manifest are stored, before the version entry is written. */
  beforeCommit?(): void | Promise<void>;
  /** In GC, after choosing to delete an object and before the conditional delete. */
  beforeChunkDelete?(name: string): void | Promise<void>;
}

interface Captured {
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

interface StoredEntry {
  readonly info: VersionInfo;
  readonly revision: number;
}

const MANIFEST_CACHE = 16;

/** Versioned workspace snapshots in NATS; see the module comment. */
export class SnapshotStore {
  private readonly manifests = new Map<string, Manifest>();

  private constructor(
    private readonly kv: KV,
    private readonly chunks: ChunkStore,
    readonly options: ResolvedSnapshotStoreOptions,
    private readonly clock: Clock,
    private readonly hooks: SnapshotStoreHooks,
  ) {}

  /** Creates (idempotently) the buckets and opens the store. */
  static async open(
    nc: NatsConnection,
    options: SnapshotStoreOptions = {},
    clock: Clock = systemClock,
    hooks: SnapshotStoreHooks = {},
  ): Promise<SnapshotStore> {
    const opts = resolveSnapshotStoreOptions(options);
    // The Object Store client hashes every object it moves; its default is pure-JS
    // SHA-256 (for browsers), which caps puts at ~20 MB/s. The setting is process-wide.
    setSha256Backend("native");
    const names = snapshotStoreNames(opts.prefix);
    const js = jetstream(nc);
    const jsm: JetStreamManager = await jetstreamManager(nc);
    const { os, kv } = await provisionSnapshotBuckets(nc, opts);
    const maxPayload = nc.info?.max_payload ?? MiB;
    const chunks = new ChunkStore(
      os,
      names.chunks,
      js,
      jsm,
      {
        compress: opts.compress,
        // Leave room for headers so a whole chunk travels as one message when it can.
        maxMessageBytes: Math.min(opts.chunkSize, maxPayload - 4096),
        refreshAfterMs: opts.gcGraceMs - opts.maxSnapshotMs - 2 * opts.clockSkewMs,
        cacheEntries: 200_000,
      },
      clock,
    );
    return new SnapshotStore(kv, chunks, opts, clock, hooks);
  }

  /** Stores `dir` as the next version of the session. */
  async snapshot(
    tenant: string,
    session: string,
    dir: string,
    options: SnapshotOptions = {},
  ): Promise<VersionInfo> {
    checkIds(tenant, session);
    const exclude = checkExclude(options.exclude);
    return this.guard("snapshot", async () => {
      const captured = await this.capture(tenant, dir, exclude);
      await this.hooks.beforeCommit?.();
      return this.commitVersion(tenant, session, captured, options);
    });
  }

  /** Replaces the contents of `dir` with a version (default: the latest); SNAPSHOT_NOT_FOUND if none matches. */
  async restore(
    tenant: string,
    session: string,
    dir: string,
    select: RestoreSelector = {},
  ): Promise<VersionInfo> {
    checkIds(tenant, session);
    return this.guard("restore", async () => {
      const info = await this.resolve(tenant, session, select);
      await this.materialize(info, dir);
      return info;
    });
  }

  /** Every version of the session, oldest first. */
  async versions(tenant: string, session: string): Promise<VersionInfo[]> {
    checkIds(tenant, session);
    return this.guard("list", async () => (await this.entries(tenant, session)).map((e) => e.info));
  }

  /** The session's latest version, or null. */
  async latest(tenant: string, session: string): Promise<VersionInfo | null> {
    checkIds(tenant, session);
    return this.guard("latest", async () => {
      for (const n of (await this.versionNumbers(tenant, session)).reverse()) {
        const e = await this.getEntry(versionKey(tenant, session, n));
        if (e) return e.info;
      }
      return null;
    });
  }

  /** Marks a version known-good (a turn succeeded after it). */
  async markKnownGood(tenant: string, session: string, version: number): Promise<VersionInfo> {
    checkIds(tenant, session);
    return this.guard("mark", async () => {
      const key = versionKey(tenant, session, version);
      for (let attempt = 0; attempt < 20; attempt++) {
        const e = await this.getEntry(key);
        if (!e) throw notFound(`${tenant}/${session} has no version ${version}`);
        if (e.info.knownGood) return e.info;
        const info: VersionInfo = { ...e.info, knownGood: true };
        try {
          await this.kv.update(key, encodeVersionEntry(info), e.revision);
          return info;
        } catch (err) {
          if (!isCasConflict(err)) throw err;
        }
      }
      throw new RetryableError(
        SnapshotErrorCodes.SNAPSHOT_STORE_ERROR,
        `could not mark ${key}: too many writers`,
      );
    });
  }

  /**
   * Removes the session's versions except the newest `keepLast` and the newest
   * `keepKnownGood` known-good ones. Their objects go at the next {@link gc}.
   * Resolves with the removed version numbers.
   */
  async prune(tenant: string, session: string, options: PruneOptions): Promise<number[]> {
    checkIds(tenant, session);
    const keepLast = options.keepLast;
    const keepKnownGood = options.keepKnownGood ?? 1;
    if (!Number.isInteger(keepLast) || keepLast < 1)
      throw new ValidationError("keepLast must be an integer ≥ 1");
    if (
      !(
        keepKnownGood === Number.POSITIVE_INFINITY ||
        (Number.isInteger(keepKnownGood) && keepKnownGood >= 0)
      )
    ) {
      throw new ValidationError("keepKnownGood must be an integer ≥ 0 or Infinity");
    }
    return this.guard("prune", async () => {
      const all = await this.entries(tenant, session);
      const keep = new Set(all.slice(-keepLast).map((e) => e.info.version));
      const good = all.filter((e) => e.info.knownGood);
      const goodKept =
        keepKnownGood === Number.POSITIVE_INFINITY ? good : good.slice(good.length - keepKnownGood);
      for (const e of keepKnownGood === 0 ? [] : goodKept) keep.add(e.info.version);
      const pruned: number[] = [];
      for (const e of all) {
        if (keep.has(e.info.version)) continue;
        try {
          await this.kv.purge(versionKey(tenant, session, e.info.version), {
            previousSeq: e.revision,
          });
          pruned.push(e.info.version);
        } catch (err) {
          if (!isCasConflict(err)) throw err; // changed meanwhile (marked known-good): judged next time
        }
      }
      return pruned;
    });
  }

  /** Deletes objects no version or checkpoint references; see the module comment. */
  async gc(options: { tenant?: string } = {}): Promise<GcReport> {
    const { tenant } = options;
    if (tenant !== undefined && !ID_PATTERN.test(tenant))
      throw new ValidationError(`invalid tenant id: ${tenant}`);
    return this.guard("gc", async () => {
      const t0 = this.clock.now();
      const cutoff = t0 - this.options.gcGraceMs;
      const scope = tenant === undefined ? ">" : `${tenant}.>`;
      const keys = [...(await this.keys(`v.${scope}`)), ...(await this.keys(`ck.${scope}`))];
      const referenced = new Set<string>();
      const manifestsSeen = new Set<string>();
      const skipped = new Set<string>();
      let expiredCheckpoints = 0;
      await forEachLimit(keys, this.options.concurrency, async (key) => {
        let e: StoredEntry | null;
        try {
          e = await this.getEntry(key);
        } catch (err) {
          if (!isCorrupt(err)) throw err;
          skipped.add(key.split(".")[1]!);
          return;
        }
        if (!e) return;
        const { info } = e;
        if (
          info.checkpoint &&
          t0 - Date.parse(info.createdAt) > this.options.checkpointRetentionMs
        ) {
          await this.kv.purge(key, { previousSeq: e.revision }).then(
            () => expiredCheckpoints++,
            (err: unknown) => {
              if (!isCasConflict(err)) throw err;
            },
          );
          return;
        }
        const name = ChunkStore.objectName(info.tenant, info.manifest);
        referenced.add(name);
        if (manifestsSeen.has(name)) return;
        manifestsSeen.add(name);
        try {
          const manifest = await this.readManifest(info.tenant, info.manifest, false);
          for (const entry of manifest.entries) {
            if (entry.type === "file")
              for (const h of entry.chunks) referenced.add(ChunkStore.objectName(info.tenant, h));
          }
        } catch (err) {
          if (!isCorrupt(err)) throw err;
          skipped.add(info.tenant);
        }
      });

      const objects = await this.chunks.list();
      let young = 0;
      const candidates: string[] = [];
      for (const o of objects) {
        const parsed = ChunkStore.parseName(o.name);
        if (!parsed || (tenant !== undefined && parsed.tenant !== tenant)) continue;
        if (skipped.has(parsed.tenant) || referenced.has(o.name)) continue;
        if (Date.parse(o.mtime) < cutoff) candidates.push(o.name);
        else young++;
      }
      let deleted = 0;
      let freedBytes = 0;
      let raced = 0;
      await forEachLimit(candidates, this.options.concurrency, async (name) => {
        const freed = await this.chunks.deleteIfStale(name, cutoff, this.hooks.beforeChunkDelete);
        if (freed === null) {
          raced++;
        } else {
          deleted++;
          freedBytes += freed;
        }
      });
      let orphansPurged = 0;
      if (tenant === undefined) {
        orphansPurged = await this.chunks.sweepOrphans(new Set(objects.map((o) => o.nuid)), cutoff);
        const purgeDeletes = (
          this.kv as { purgeDeletes?: (olderMillis?: number) => Promise<unknown> }
        ).purgeDeletes;
        await purgeDeletes?.call(this.kv, 30 * MINUTE);
      }
      return {
        objects: objects.length,
        referenced: referenced.size,
        deleted,
        freedBytes,
        young,
        raced,
        orphansPurged,
        expiredCheckpoints,
        skippedTenants: [...skipped].sort(),
      };
    });
  }

  /**
   * Stores `dir` as the state after `step` of task `taskId`: apart from the
   * session's versions (never `latest`), replacing the task's older checkpoints.
   */
  async saveCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
    options: Pick<SnapshotOptions, "exclude" | "reason"> = {},
  ): Promise<VersionInfo> {
    checkIds(tenant, session, taskId);
    checkStep(step);
    const exclude = checkExclude(options.exclude);
    return this.guard("checkpoint", async () => {
      const captured = await this.capture(tenant, dir, exclude);
      await this.hooks.beforeCommit?.();
      this.checkDeadline(captured.startedAt);
      const info = this.versionInfo(tenant, session, step, captured, {
        reason: options.reason ?? "checkpoint",
      });
      const full: VersionInfo = { ...info, checkpoint: { taskId, step } };
      await this.kv.put(checkpointKey(tenant, session, taskId, step), encodeVersionEntry(full));
      for (const key of await this.keys(`ck.${tenant}.${session}.${taskId}.*`)) {
        if (Number(key.slice(key.lastIndexOf(".") + 1)) < step) await this.kv.purge(key);
      }
      return full;
    });
  }

  /** Restores the state after `step` of task `taskId` into `dir`; null (and `dir` untouched) if there is none. */
  async restoreCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<VersionInfo | null> {
    checkIds(tenant, session, taskId);
    checkStep(step);
    return this.guard("checkpoint restore", async () => {
      const e = await this.getEntry(checkpointKey(tenant, session, taskId, step));
      if (!e) return null;
      await this.materialize(e.info, dir);
      return e.info;
    });
  }

  /** Forgets every checkpoint of task `taskId` (the task ended). */
  async dropCheckpoints(tenant: string, session: string, taskId: string): Promise<void> {
    checkIds(tenant, session, taskId);
    await this.guard("drop checkpoints", async () => {
      for (const key of await this.keys(`ck.${tenant}.${session}.${taskId}.*`))
        await this.kv.purge(key);
    });
  }

  // --- snapshot -----------------------------------------------------------------

  /** Walks `dir`, stores missing chunks and the manifest; commits nothing. */
  private async capture(
    tenant: string,
    dir: string,
    exclude: readonly string[],
  ): Promise<Captured> {
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
    this.cacheManifest(ChunkStore.objectName(tenant, manifestHash), manifest);
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

  /** Creates the next version entry (the commit point), retrying numbers taken by other writers. */
  private async commitVersion(
    tenant: string,
    session: string,
    captured: Captured,
    options: SnapshotOptions,
  ): Promise<VersionInfo> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const numbers = await this.versionNumbers(tenant, session);
      const version = (numbers.at(-1) ?? 0) + 1;
      this.checkDeadline(captured.startedAt);
      const info = this.versionInfo(tenant, session, version, captured, options);
      try {
        await this.kv.create(versionKey(tenant, session, version), encodeVersionEntry(info));
        return info;
      } catch (err) {
        if (!isCasConflict(err)) throw err;
      }
    }
    throw new RetryableError(
      SnapshotErrorCodes.SNAPSHOT_STORE_ERROR,
      `could not commit a version of ${tenant}/${session}: too many concurrent writers`,
    );
  }

  private versionInfo(
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

  private checkDeadline(startedAt: number): void {
    if (this.clock.now() - startedAt > this.options.maxSnapshotMs) {
      throw new RetryableError(
        SnapshotErrorCodes.SNAPSHOT_TIMEOUT,
        `the snapshot took longer than ${this.options.maxSnapshotMs} ms and was not committed`,
      );
    }
  }

  // --- restore ------------------------------------------------------------------

  private async resolve(
    tenant: string,
    session: string,
    select: RestoreSelector,
  ): Promise<VersionInfo> {
    if (select.version !== undefined) {
      if (select.at !== undefined || select.knownGood !== undefined) {
        throw new ValidationError("restore takes a version, or at/knownGood, not both");
      }
      const e = await this.getEntry(versionKey(tenant, session, select.version));
      if (!e) throw notFound(`${tenant}/${session} has no version ${select.version}`);
      return e.info;
    }
    if (select.at === undefined && !select.knownGood) {
      const latest = await this.latest(tenant, session);
      if (!latest) throw notFound(`${tenant}/${session} has no snapshot`);
      return latest;
    }
    const at = select.at?.getTime();
    if (at !== undefined && Number.isNaN(at)) throw new ValidationError("invalid restore time");
    const match = (await this.entries(tenant, session))
      .map((e) => e.info)
      .filter(
        (v) =>
          (at === undefined || Date.parse(v.createdAt) <= at) && (!select.knownGood || v.knownGood),
      )
      .at(-1);
    if (!match) {
      const what = [
        at === undefined ? "" : `at or before ${select.at!.toISOString()}`,
        select.knownGood ? "known-good" : "",
      ]
        .filter(Boolean)
        .join(", ");
      throw notFound(`${tenant}/${session} has no version ${what}`);
    }
    return match;
  }

  /** Writes a version into `dir`; see "A restore" in the module comment. */
  private async materialize(info: VersionInfo, dir: string): Promise<void> {
    const { tenant } = info;
    const manifest = await this.readManifest(tenant, info.manifest, true);
    checkManifest(manifest, this.options.limits);
    const { chunkSize } = manifest;
    const target = path.resolve(dir);
    const staging = await makeStaging(target);
    const dirs = manifest.entries
      .filter((e) => e.type === "dir")
      .sort((a, b) => depth(b.path) - depth(a.path));
    try {
      for (const e of manifest.entries) {
        if (e.type === "dir")
          await mkdir(path.join(staging, e.path), { recursive: true, mode: 0o700 });
      }
      const fetches = new Limiter(this.options.concurrency);
      const files = manifest.entries.filter((e) => e.type === "file");
      await forEachLimit(files, this.options.concurrency, async (f) => {
        const fh = await open(
          path.join(staging, f.path),
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          const results = await Promise.allSettled(
            f.chunks.map((hash, i) =>
              fetches.run(async () => {
                const data = await this.chunks.read(tenant, hash);
                const expected = Math.min(chunkSize, f.size - i * chunkSize);
                if (data.length !== expected)
                  throw corrupt(`${f.path}: chunk ${i} has ${data.length} bytes, not ${expected}`);
                await writeFully(fh, data, i * chunkSize);
              }),
            ),
          );
          const failed = results.find((r) => r.status === "rejected");
          if (failed) throw failed.reason;
          await fh.chmod(f.mode);
          await fh.utimes(seconds(f.mtime), seconds(f.mtime));
        } finally {
          await fh.close();
        }
      });
      const links = manifest.entries.filter((e) => e.type === "symlink");
      for (const l of links) await symlink(l.target, path.join(staging, l.path));
      for (const l of links) await checkSymlink(staging, l.path, l.target);
      // Nested directories get their modes and times here, deepest first, after their contents.
      for (const d of dirs) {
        if (depth(d.path) === 0) continue;
        const p = path.join(staging, d.path);
        await utimes(p, seconds(d.mtime), seconds(d.mtime));
        await chmod(p, d.mode);
      }

      // Everything is here and checked: swap it in, keeping `target` itself.
      await mkdir(target, { recursive: true });
      try {
        await emptyDir(target);
        for (const name of await readdir(staging))
          await moveEntry(path.join(staging, name), path.join(target, name));
        for (const d of dirs) {
          if (depth(d.path) !== 0) continue;
          // By handle, never following a symlink someone may have put in its place.
          const fh = await open(
            path.join(target, d.path),
            constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
          );
          try {
            await fh.utimes(seconds(d.mtime), seconds(d.mtime));
            await fh.chmod(d.mode);
          } finally {
            await fh.close();
          }
        }
      } catch (err) {
        // Never leave a half-moved tree behind.
        await emptyDir(target).catch(() => {});
        throw err;
      }
    } finally {
      await rm(staging, { recursive: true, force: true }).catch(() => {});
    }
  }

  // --- entries and manifests ---------------------------------------------------

  private async readManifest(tenant: string, hash: string, cache: boolean): Promise<Manifest> {
    const name = ChunkStore.objectName(tenant, hash);
    const hit = this.manifests.get(name);
    if (hit) return hit;
    const manifest = await decodeManifest(await this.chunks.read(tenant, hash), name);
    if (cache) this.cacheManifest(name, manifest);
    return manifest;
  }

  private cacheManifest(name: string, manifest: Manifest): void {
    this.manifests.delete(name);
    this.manifests.set(name, manifest);
    if (this.manifests.size > MANIFEST_CACHE)
      this.manifests.delete(this.manifests.keys().next().value!);
  }

  private async entries(tenant: string, session: string): Promise<StoredEntry[]> {
    const numbers = await this.versionNumbers(tenant, session);
    const out: Array<StoredEntry | null> = new Array(numbers.length).fill(null);
    await forEachLimit(numbers, 16, async (n, i) => {
      out[i] = await this.getEntry(versionKey(tenant, session, n));
    });
    return out.filter((e): e is StoredEntry => e !== null);
  }

  private async versionNumbers(tenant: string, session: string): Promise<number[]> {
    return (await this.keys(`v.${tenant}.${session}.*`))
      .map((k) => Number(k.slice(k.lastIndexOf(".") + 1)))
      .filter((n) => Number.isInteger(n))
      .sort((a, b) => a - b);
  }

  private async getEntry(key: string): Promise<StoredEntry | null> {
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT") return null;
    return { info: decodeVersionEntry(e.value, key), revision: e.revision };
  }

  private async keys(filter: string): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }

  /** Runs `fn`, turning stray errors into coded ones. */
  private async guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw asSnapshotError(op, err);
    }
  }
}

function versionKey(tenant: string, session: string, version: number): string {
  if (!Number.isInteger(version) || version < 0)
    throw new ValidationError(`invalid version: ${version}`);
  return `v.${tenant}.${session}.${String(version).padStart(10, "0")}`;
}

function checkpointKey(tenant: string, session: string, taskId: string, step: number): string {
  return `ck.${tenant}.${session}.${taskId}.${String(step).padStart(10, "0")}`;
}

function checkIds(...ids: string[]): void {
  for (const id of ids) {
    if (!ID_PATTERN.test(id)) throw new ValidationError(`invalid id: ${JSON.stringify(id)}`);
  }
}

function checkStep(step: number): void {
  if (!Number.isInteger(step) || step < 0 || step > 9_999_999_999)
    throw new ValidationError(`invalid step: ${step}`);
}

function checkExclude(exclude: readonly string[] | undefined): readonly string[] {
  const parsed = z
    .array(ExcludePatternSchema)
    .max(1000)
    .safeParse(exclude ?? []);
  if (!parsed.success)
    throw new ValidationError(`invalid exclude patterns: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

function notFound(message: string): TerminalError {
  return new TerminalError(SnapshotErrorCodes.SNAPSHOT_NOT_FOUND, message);
}

function isCorrupt(err: unknown): boolean {
  return err instanceof ClawfleetError && err.code === SnapshotErrorCodes.SNAPSHOT_CORRUPT;
}

const RETRYABLE_FS = new Set(["ENOSPC", "EMFILE", "ENFILE", "EIO", "EAGAIN", "EBUSY"]);

/** Our own errors pass; filesystem errors are WORKSPACE_ERROR; anything else (NATS) is retryable. */
function asSnapshotError(op: string, err: unknown): ClawfleetError {
  if (err instanceof ClawfleetError) return err;
  const e = err as NodeJS.ErrnoException;
  const message = `${op} failed: ${e?.message ?? String(err)}`;
  if (typeof e?.code === "string" && typeof e.syscall === "string") {
    return RETRYABLE_FS.has(e.code)
      ? new RetryableError(SnapshotErrorCodes.WORKSPACE_ERROR, message, { cause: err })
      : new TerminalError(SnapshotErrorCodes.WORKSPACE_ERROR, message, { cause: err });
  }
  return new RetryableError(SnapshotErrorCodes.SNAPSHOT_STORE_ERROR, message, { cause: err });
}

/** Seconds for utimes: the middle of the recorded millisecond, so float rounding cannot drop it. */
function seconds(ms: number): number {
  return (ms + 0.5) / 1000;
}

function depth(p: string): number {
  let n = 0;
  for (const c of p) if (c === "/") n++;
  return n;
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

async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** A private directory beside `target` (same filesystem, so moves are renames), else in tmp. */
async function makeStaging(target: string): Promise<string> {
  const parent = path.dirname(target);
  try {
    await mkdir(parent, { recursive: true });
    return await mkdtemp(path.join(parent, `.${path.basename(target)}.restore-`));
  } catch {
    return mkdtemp(path.join(tmpdir(), "clawfleet-restore-"));
  }
}

async function moveEntry(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await cp(from, to, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  }
}
