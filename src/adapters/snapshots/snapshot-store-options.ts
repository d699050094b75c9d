/**
 * Configuration of the snapshot store (`snapshot-store.ts`): its options and
 * their defaults, the names of its buckets, and the test hooks it accepts. The
 * buckets are provisioned with the fleet's (`nats/fleet-provisioning.ts`).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import {
  DEFAULT_PREFIX,
  DEFAULT_RETENTION_MS,
  fleetSubjects,
  PREFIX_PATTERN,
} from "../../protocol/fleet-subjects.js";
import { type SnapshotLimits, SnapshotLimitsSchema } from "./workspace-rules.js";

const MiB = 1024 * 1024;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

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
    prefix: z.string().regex(PREFIX_PATTERN).default(DEFAULT_PREFIX),
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
    checkpointRetentionMs: z.number().int().min(1).default(DEFAULT_RETENTION_MS),
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
export function snapshotStoreNames(prefix = DEFAULT_PREFIX): {
  readonly chunks: string;
  readonly chunksStream: string;
  readonly snapshots: string;
} {
  const s = fleetSubjects(prefix);
  return { ...s.objects, snapshots: s.buckets.snapshots };
}

/** Provisioning lives with the fleet's; re-exported for the store's existing importers. */

/** Test hooks: points where a test can inject failures or races. */
export interface SnapshotStoreHooks {
  /** Before each chunk upload of a snapshot (`n` from 1). Throwing aborts the snapshot. */
  beforeChunkUpload?(n: number, hash: string): void | Promise<void>;
  /** After all chunks and the manifest are stored, before the version entry is written. */
  beforeCommit?(): void | Promise<void>;
  /** In GC, after choosing to delete an object and before the conditional delete. */
  beforeChunkDelete?(name: string): void | Promise<void>;
}
