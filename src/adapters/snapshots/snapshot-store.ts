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
 *   - `h.<tenant>.<session>`: the session's head, listing its kept versions
 *     (`snapshot-head.ts`); every read of "latest", "known-good" or "at a time"
 *     starts here, so no per-task operation lists keys.
 *   - `ck.<tenant>.<session>.<taskId>`: the newest checkpoint of a running task;
 *     never a session version, never `latest`.
 *
 *   Entries are removed by sequence (`SnapshotCatalog.erase`): no delete markers.
 *
 * ## Where the rest is
 *
 * - A snapshot (walk, chunk, store, then commit by creating the version entry):
 *   `snapshot-writer.ts`.
 * - A restore (stage and verify beside the target, then swap in): `snapshot-reader.ts`.
 * - Garbage collection, and why it is safe against concurrent snapshots (the
 *   lease/fencing argument): `snapshot-gc.ts`; the leases themselves: `chunk-store.ts`.
 * - Checkpoints of running tasks: `snapshot-checkpoints.ts`.
 * - Version entries and the manifest cache: `snapshot-catalog.ts`.
 * - Options, bucket names and provisioning: `snapshot-store-options.ts`.
 * - Workspace rules and the walk: `workspace-rules.ts`, `workspace-exclude.ts`,
 *   `workspace-scan.ts`; manifests: `snapshot-manifest.ts`.
 *
 * {@link SnapshotStore} is the facade over these: it checks arguments, runs each
 * operation under {@link guard} (stray errors become coded ones), and delegates.
 */
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { setSha256Backend } from "@nats-io/obj";
import { type Clock, systemClock } from "../../clock.js";
import { ValidationError } from "../../errors.js";
import { provisionSnapshotBuckets } from "../nats/fleet-provisioning.js";
import { ChunkStore } from "./chunk-store.js";
import { SnapshotCatalog } from "./snapshot-catalog.js";
import { SnapshotCheckpoints } from "./snapshot-checkpoints.js";
import { checkExclude, checkIds, checkStep, guard } from "./snapshot-errors.js";
import { checkRetention, type GcReport, type PruneOptions, SnapshotGc } from "./snapshot-gc.js";
import { ID_PATTERN, type VersionInfo } from "./snapshot-manifest.js";
import { type RestoreSelector, SnapshotReader } from "./snapshot-reader.js";
import {
  type ResolvedSnapshotStoreOptions,
  resolveSnapshotStoreOptions,
  type SnapshotStoreHooks,
  type SnapshotStoreOptions,
  snapshotStoreNames,
} from "./snapshot-store-options.js";
import { type SnapshotOptions, SnapshotWriter } from "./snapshot-writer.js";

export type { GcReport, PruneOptions } from "./snapshot-gc.js";
export type { VersionInfo } from "./snapshot-manifest.js";
export type { RestoreSelector } from "./snapshot-reader.js";
export {
  type ResolvedSnapshotStoreOptions,
  resolveSnapshotStoreOptions,
  type SnapshotStoreHooks,
  type SnapshotStoreOptions,
  snapshotStoreNames,
} from "./snapshot-store-options.js";
export type { SnapshotOptions } from "./snapshot-writer.js";
export { SQLITE_LIVE_FILES } from "./workspace-exclude.js";
export type { SnapshotLimits } from "./workspace-rules.js";

const MiB = 1024 * 1024;

/** Versioned workspace snapshots in NATS; see the module comment. */
export class SnapshotStore {
  private readonly catalog: SnapshotCatalog;
  private readonly writer: SnapshotWriter;
  private readonly reader: SnapshotReader;
  private readonly collector: SnapshotGc;
  private readonly checkpoints: SnapshotCheckpoints;

  private constructor(
    kv: KV,
    jsm: JetStreamManager,
    chunks: ChunkStore,
    readonly options: ResolvedSnapshotStoreOptions,
    clock: Clock,
    hooks: SnapshotStoreHooks,
  ) {
    this.catalog = new SnapshotCatalog(
      kv,
      chunks,
      jsm,
      snapshotStoreNames(options.prefix).snapshots,
    );
    this.writer = new SnapshotWriter(this.catalog, chunks, options, clock, hooks);
    this.reader = new SnapshotReader(this.catalog, chunks, options);
    this.collector = new SnapshotGc(this.catalog, chunks, options, clock, hooks);
    this.checkpoints = new SnapshotCheckpoints(this.catalog, this.writer, this.reader, hooks);
  }

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
    const store = new SnapshotStore(kv, jsm, chunks, opts, clock, hooks);
    await guard("open", () => store.catalog.ensureHeads());
    return store;
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
    return guard("snapshot", () => this.writer.snapshot(tenant, session, dir, exclude, options));
  }

  /** Replaces the contents of `dir` with a version (default: the latest); SNAPSHOT_NOT_FOUND if none matches. */
  async restore(
    tenant: string,
    session: string,
    dir: string,
    select: RestoreSelector = {},
  ): Promise<VersionInfo> {
    checkIds(tenant, session);
    return guard("restore", () => this.reader.restore(tenant, session, dir, select));
  }

  /** Every version of the session, oldest first. */
  async versions(tenant: string, session: string): Promise<VersionInfo[]> {
    checkIds(tenant, session);
    return guard("list", async () =>
      (await this.catalog.entries(tenant, session)).map((e) => e.info),
    );
  }

  /** The session's latest version, or null. */
  async latest(
    tenant: string,
    session: string,
    options: { knownGood?: boolean } = {},
  ): Promise<VersionInfo | null> {
    checkIds(tenant, session);
    return guard("latest", () => this.catalog.latest(tenant, session, options.knownGood ?? false));
  }

  /** Marks a version known-good (a turn succeeded after it). */
  async markKnownGood(tenant: string, session: string, version: number): Promise<VersionInfo> {
    checkIds(tenant, session);
    return guard("mark", () => this.catalog.markKnownGood(tenant, session, version));
  }

  /**
   * Removes the session's versions except the newest `keepLast` and the newest
   * `keepKnownGood` known-good ones. Their objects go at the next {@link gc}.
   * Resolves with the removed version numbers.
   */
  async prune(tenant: string, session: string, options: PruneOptions): Promise<number[]> {
    checkIds(tenant, session);
    const retention = checkRetention(options);
    return guard("prune", () => this.collector.prune(tenant, session, retention));
  }

  /**
   * Deletes objects no version or checkpoint references. Why this is safe against
   * snapshots in flight is argued in `snapshot-gc.ts`.
   */
  async gc(options: { tenant?: string } = {}): Promise<GcReport> {
    const { tenant } = options;
    if (tenant !== undefined && !ID_PATTERN.test(tenant))
      throw new ValidationError(`invalid tenant id: ${tenant}`);
    return guard("gc", () => this.collector.collect(tenant));
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
    return guard("checkpoint", () =>
      this.checkpoints.save(tenant, session, taskId, step, dir, exclude, options.reason),
    );
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
    return guard("checkpoint restore", () =>
      this.checkpoints.restore(tenant, session, taskId, step, dir),
    );
  }

  /** Forgets every checkpoint of task `taskId` (the task ended). */
  async dropCheckpoints(tenant: string, session: string, taskId: string): Promise<void> {
    checkIds(tenant, session, taskId);
    await guard("drop checkpoints", () => this.checkpoints.drop(tenant, session, taskId));
  }
}
