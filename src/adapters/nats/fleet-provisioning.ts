/**
 * The fleet's JetStream streams, KV buckets and Object Store, created
 * idempotently by every role at start (and by the snapshot store when opened on
 * its own). Names come from `fleet-subjects.ts`; what each keeps and for how
 * long is decided here, in one place.
 */
import {
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { type ObjectStore, Objm } from "@nats-io/obj";
import {
  DEFAULT_PREFIX,
  type FleetSubjects,
  fleetSubjects,
} from "../../protocol/fleet-subjects.js";
import { isNotFound } from "./nats-retry.js";

const NS_PER_MS = 1_000_000;

/** The fleet's KV buckets, by role. */
export interface FleetBuckets {
  readonly tasks: KV;
  readonly nodes: KV;
  readonly leases: KV;
  readonly checkpoints: KV;
  readonly outbox: KV;
  readonly behaviors: KV;
  readonly sessions: KV;
  readonly alerts: KV;
}

/** Creates each stream, or updates it when its configuration drifted. */
export async function provisionStreams(
  jsm: JetStreamManager,
  s: FleetSubjects,
  retentionMs: number,
): Promise<void> {
  const base = {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: retentionMs * NS_PER_MS,
    num_replicas: 1,
  } satisfies Partial<StreamConfig>;
  const wanted: Array<Partial<StreamConfig> & { name: string; subjects: string[] }> = [
    // Duplicate window: a resubmitted idempotency key within it is a duplicate, not a new message.
    {
      ...base,
      name: s.streams.tasks,
      subjects: [s.tasksWildcard],
      duplicate_window: 10 * 60_000 * NS_PER_MS,
    },
    {
      ...base,
      name: s.streams.events,
      subjects: [s.eventsWildcard],
      duplicate_window: 2 * 60_000 * NS_PER_MS,
    },
    {
      ...base,
      name: s.streams.results,
      subjects: [s.resultsWildcard],
      duplicate_window: 2 * 60_000 * NS_PER_MS,
    },
    {
      ...base,
      name: s.streams.effects,
      subjects: [s.effectsWildcard],
      duplicate_window: 60 * 60_000 * NS_PER_MS,
    },
  ];
  for (const cfg of wanted) await racing(() => ensureStream(jsm, cfg));
}

/** Age at which the leases bucket drops a key nobody rewrote: far above any lease's TTL. */
const LEASE_BUCKET_TTL_MS = 60 * 60_000;

/**
 * Creates (or opens) the fleet's KV buckets, and brings an existing bucket's TTL to
 * what it should be (opening a bucket keeps the configuration it was created with,
 * so a TTL added or changed since would otherwise never reach it).
 */
export async function provisionKvBuckets(
  js: JetStreamClient,
  jsm: JetStreamManager,
  s: FleetSubjects,
  retentionMs: number,
): Promise<FleetBuckets> {
  const kvm = new Kvm(js);
  const b = s.buckets;
  // Each bucket: how many values a key keeps, and after how long a key nobody rewrote goes.
  const specs: Record<keyof FleetBuckets, { name: string; history: number; ttlMs?: number }> = {
    tasks: { name: b.tasks, history: 1, ttlMs: retentionMs },
    // Node heartbeats are rewritten every second; the TTL sweeps nodes that died long ago.
    nodes: { name: b.nodes, history: 1, ttlMs: 10 * 60_000 },
    // Every finished task leaves its lease's delete marker (watchers must see the release).
    // Live leases are rewritten every second, so a TTL far above any lease's only sweeps
    // markers and leases long dead: the bucket stops growing with the fleet's history.
    leases: { name: b.leases, history: 1, ttlMs: LEASE_BUCKET_TTL_MS },
    checkpoints: { name: b.checkpoints, history: 1, ttlMs: retentionMs },
    outbox: { name: b.outbox, history: 1, ttlMs: retentionMs },
    behaviors: { name: b.behaviors, history: 64 },
    sessions: { name: b.sessions, history: 1, ttlMs: retentionMs },
    // Post-mortems and quarantines: no TTL, a quarantine lasts until someone releases it.
    alerts: { name: b.alerts, history: 1 },
  };
  const entries = Object.entries(specs) as Array<[keyof FleetBuckets, (typeof specs)["tasks"]]>;
  const opened = await racing(() =>
    Promise.all(
      entries.map(([, spec]) =>
        kvm.create(spec.name, {
          history: spec.history,
          storage: StorageType.File,
          ...(spec.ttlMs === undefined ? {} : { ttl: spec.ttlMs }),
        }),
      ),
    ),
  );
  for (const [, spec] of entries) {
    const stream = `KV_${spec.name}`;
    const c = (await jsm.streams.info(stream)).config;
    const maxAge = (spec.ttlMs ?? 0) * NS_PER_MS;
    if (c.max_age !== maxAge) {
      await racing(() => jsm.streams.update(stream, { ...c, max_age: maxAge }));
    }
  }
  return Object.fromEntries(
    entries.map(([key], i) => [key, opened[i]!]),
  ) as unknown as FleetBuckets;
}

/**
 * Creates the snapshot store's Object Store and KV bucket if missing (an existing
 * bucket is opened as it is).
 */
export async function provisionSnapshotBuckets(
  nc: NatsConnection,
  options: { readonly prefix?: string; readonly replicas?: number } = {},
): Promise<{ readonly os: ObjectStore; readonly kv: KV }> {
  const s = fleetSubjects(options.prefix ?? DEFAULT_PREFIX);
  const replicas = options.replicas ?? 1;
  const js = jetstream(nc);
  const [os, kv] = await Promise.all([
    new Objm(js).create(s.objects.chunks, {
      storage: StorageType.File,
      replicas,
      description: "clawfleet workspace snapshots: content-addressed chunks and manifests",
    }),
    new Kvm(js).create(s.buckets.snapshots, { history: 1, storage: StorageType.File, replicas }),
  ]);
  return { os, kv };
}

/** Creates a stream, or updates it when its configuration drifted. */
async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string; subjects: string[] },
): Promise<void> {
  try {
    const c = (await jsm.streams.info(cfg.name)).config;
    const drift =
      c.max_age !== cfg.max_age ||
      c.duplicate_window !== cfg.duplicate_window ||
      c.subjects.join(",") !== cfg.subjects.join(",");
    if (drift) await jsm.streams.update(cfg.name, cfg);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(cfg);
  }
}

/**
 * Roles starting together race to create the same streams and buckets; the loser's
 * create fails (e.g. "subjects overlap"). Trying again finds the winner's and checks it.
 */
export async function racing<T>(fn: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await fn();
    } catch (err) {
      if (tries >= 4) throw err;
      await new Promise((r) => setTimeout(r, 50 * tries));
    }
  }
}
