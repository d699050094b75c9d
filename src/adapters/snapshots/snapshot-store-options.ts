/**
 * Configuration of the snapshot store (`snapshot-store.ts`): its options and
 * their defaults, the names of its buckets, their provisioning, and the test
 * hooks it accepts.
 */
import { jetstream, StorageType } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { type ObjectStore, Objm } from "@nats-io/obj";
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import { PREFIX_PATTERN } from "../../protocol/fleet-subjects.js";
import { type SnapshotLimits, SnapshotLimitsSchema } from "./workspace-rules.js";

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

/** Test hooks: points where a test can inject failures or races. */
export interface SnapshotStoreHooks {
  /** Before each chunk upload of a snapshot (`n` from 1). Throwing aborts the snapshot. */
  beforeChunkUpload?(n: number, hash: string): void | Promise<void>;
  /** After all chunks and the manifest are stored, before the version entry is written. */
  beforeCommit?(): void | Promise<void>;
  /** In GC, after choosing to delete an object and before the conditional delete. */
  beforeChunkDelete?(name: string): void | Promise<void>;
}
