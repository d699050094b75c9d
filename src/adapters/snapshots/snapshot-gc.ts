/**
 * Retention and garbage collection of the snapshot store: pruning a session's
 * old versions, and deleting the objects nothing references any more.
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
 * "Commits" above is the creation of the version entry, which comes before the
 * head lists the version (`snapshot-head.ts`): GC reads the entries themselves,
 * listed or not, so the argument holds whether or not the head update happened.
 *
 * GC also purges object data no meta record points to (left by a crash between
 * upload steps) once older than G, checkpoints older than `checkpointRetentionMs`,
 * and version entries no head lists once older than G. Entries go by sequence
 * (`SnapshotCatalog.erase`), leaving no delete markers to sweep.
 * It is the one part of the store that lists keys (a cost in proportion to the
 * bucket, paid once a run, never per task).
 */
import type { Clock } from "../../clock.js";
import { ValidationError } from "../../errors.js";
import { forEachLimit } from "./async-limit.js";
import { ChunkStore } from "./chunk-store.js";
import { type SnapshotCatalog, type StoredEntry, versionKey } from "./snapshot-catalog.js";
import { isCorrupt } from "./snapshot-errors.js";
import type { Head, HeadVersion } from "./snapshot-head.js";
import type { ResolvedSnapshotStoreOptions, SnapshotStoreHooks } from "./snapshot-store-options.js";

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
  /** Version entries no head lists, older than the grace period (see `snapshot-head.ts`). */
  readonly orphanVersions: number;
  /** Tenants with an unreadable manifest: nothing of theirs was deleted. */
  readonly skippedTenants: readonly string[];
}

/** Retention with its default applied, as checked by {@link checkRetention}. */
export interface Retention {
  readonly keepLast: number;
  readonly keepKnownGood: number;
}

/** Checks and completes {@link PruneOptions}; throws {@link ValidationError}. */
export function checkRetention(options: PruneOptions): Retention {
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
  return { keepLast, keepKnownGood };
}

/** Prunes version entries and collects unreferenced objects; see the module comment. */
export class SnapshotGc {
  constructor(
    private readonly catalog: SnapshotCatalog,
    private readonly chunks: ChunkStore,
    private readonly options: ResolvedSnapshotStoreOptions,
    private readonly clock: Clock,
    private readonly hooks: SnapshotStoreHooks,
  ) {}

  /**
   * Removes the session's versions that `retention` does not keep; resolves with
   * their numbers. The head drops them first (no reader finds them from then on),
   * then their entries go, each only if unchanged since.
   */
  async prune(tenant: string, session: string, retention: Retention): Promise<number[]> {
    const { keepLast, keepKnownGood } = retention;
    let dropped: HeadVersion[] = [];
    await this.catalog.heads.update(tenant, session, (h) => {
      const keep = new Set(h.versions.slice(-keepLast).map((v) => v.version));
      const good = h.versions.filter((v) => v.knownGood);
      const goodKept =
        keepKnownGood === Number.POSITIVE_INFINITY ? good : good.slice(good.length - keepKnownGood);
      for (const v of keepKnownGood === 0 ? [] : goodKept) keep.add(v.version);
      dropped = h.versions.filter((v) => !keep.has(v.version));
      if (dropped.length === 0) return null;
      return { last: h.last, versions: h.versions.filter((v) => keep.has(v.version)) };
    });
    const pruned: number[] = [];
    for (const v of dropped) {
      const key = versionKey(tenant, session, v.version);
      const e = await this.catalog.getEntry(key);
      if (!e || (e.info.knownGood && !v.knownGood)) continue;
      // Only the entry as read: one marked known-good since stays, and the mark lists it again.
      if (await this.catalog.erase(key, e.revision)) pruned.push(v.version);
    }
    return pruned;
  }

  /** Deletes objects no version or checkpoint references (of `tenant`, or of all tenants). */
  async collect(tenant: string | undefined): Promise<GcReport> {
    const t0 = this.clock.now();
    const cutoff = t0 - this.options.gcGraceMs;
    const scope = tenant === undefined ? ">" : `${tenant}.>`;
    const keys = [
      ...(await this.catalog.keys(`v.${scope}`)),
      ...(await this.catalog.keys(`ck.${scope}`)),
    ];
    const referenced = new Set<string>();
    const manifestsSeen = new Set<string>();
    const skipped = new Set<string>();
    let expiredCheckpoints = 0;
    let orphanVersions = 0;
    const heads = new Map<string, Promise<Head>>();
    const headOf = (t: string, session: string) => {
      const k = `${t}.${session}`;
      let h = heads.get(k);
      if (!h) {
        h = this.catalog.heads.read(t, session).then((r) => r.head);
        heads.set(k, h);
      }
      return h;
    };
    await forEachLimit(keys, this.options.concurrency, async (key) => {
      let e: StoredEntry | null;
      try {
        e = await this.catalog.getEntry(key);
      } catch (err) {
        if (!isCorrupt(err)) throw err;
        skipped.add(key.split(".")[1]!);
        return;
      }
      if (!e) return;
      const { info } = e;
      if (info.checkpoint && t0 - Date.parse(info.createdAt) > this.options.checkpointRetentionMs) {
        if (await this.catalog.erase(key, e.revision)) expiredCheckpoints++;
        return;
      }
      if (!info.checkpoint && Date.parse(info.createdAt) < cutoff) {
        // A version its head does not list, long after its commit: its writer died
        // before the head update, or a prune before the purge. Its objects still
        // count as referenced in this run (a restore by number may be reading it).
        const head = await headOf(info.tenant, info.session);
        if (!head.versions.some((v) => v.version === info.version)) {
          if (await this.catalog.erase(key, e.revision)) orphanVersions++;
        }
      }
      const name = ChunkStore.objectName(info.tenant, info.manifest);
      referenced.add(name);
      if (manifestsSeen.has(name)) return;
      manifestsSeen.add(name);
      try {
        const manifest = await this.catalog.readManifest(info.tenant, info.manifest, false);
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
      orphanVersions,
      skippedTenants: [...skipped].sort(),
    };
  }
}
