/**
 * One NATS connection per role process, with the JetStream streams and KV
 * buckets of the fleet provisioned idempotently on every start.
 */
import {
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { ConfigError } from "../../errors.js";
import { type FleetSubjects, fleetSubjects } from "../../protocol/fleet-subjects.js";
import { provisionSnapshotBuckets } from "../snapshots/snapshot-store.js";
import { isNotFound } from "./nats-retry.js";

/** Options for {@link connectFleet}. */
export interface FleetNatsOptions {
  /** Subject prefix. Default `fleet`. */
  prefix?: string;
  /** How long streams and the task bucket keep data. Default 7 days. */
  retentionMs?: number;
  /** A name shown in the server's connection list. */
  name?: string;
  /** Keep reconnecting forever (roles) or give up after a few tries (CLI). Default true. */
  persistent?: boolean;
}

/** The fleet's NATS handles, shared by every part of one role process. */
export interface FleetNats {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly subjects: FleetSubjects;
  readonly kv: {
    readonly tasks: KV;
    readonly nodes: KV;
    readonly leases: KV;
    readonly checkpoints: KV;
    readonly outbox: KV;
    readonly behaviors: KV;
    readonly sessions: KV;
    readonly alerts: KV;
  };
  /** Drains and closes the connection. */
  close(): Promise<void>;
}

const NS_PER_MS = 1_000_000;

/** Connects to `url` and provisions the fleet's streams and buckets. */
export async function connectFleet(
  url: string,
  options: FleetNatsOptions = {},
): Promise<FleetNats> {
  const subjects = fleetSubjects(options.prefix ?? "fleet");
  const retentionMs = options.retentionMs ?? 7 * 24 * 3600 * 1000;
  const persistent = options.persistent ?? true;
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: url,
      name: options.name ?? "clawfleet",
      maxReconnectAttempts: persistent ? -1 : 3,
      reconnectTimeWait: 250,
    });
  } catch (err) {
    throw new ConfigError(`cannot connect to NATS at ${url}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const jsm = await jetstreamManager(nc);
  await provisionStreams(jsm, subjects, retentionMs);
  const js = jetstream(nc);
  await racing(() => provisionSnapshotBuckets(nc, { prefix: subjects.prefix }));
  const kvm = new Kvm(js);
  const [tasks, nodes, leases, checkpoints, outbox, behaviors, sessions, alerts] = await racing(
    () =>
      Promise.all([
        kvm.create(subjects.buckets.tasks, {
          history: 1,
          ttl: retentionMs,
          storage: StorageType.File,
        }),
        // Node heartbeats are rewritten every second; a bucket TTL sweeps nodes that died long ago.
        kvm.create(subjects.buckets.nodes, {
          history: 1,
          ttl: 10 * 60_000,
          storage: StorageType.File,
        }),
        kvm.create(subjects.buckets.leases, { history: 1, storage: StorageType.File }),
        kvm.create(subjects.buckets.checkpoints, {
          history: 1,
          ttl: retentionMs,
          storage: StorageType.File,
        }),
        kvm.create(subjects.buckets.outbox, {
          history: 1,
          ttl: retentionMs,
          storage: StorageType.File,
        }),
        kvm.create(subjects.buckets.behaviors, { history: 64, storage: StorageType.File }),
        kvm.create(subjects.buckets.sessions, {
          history: 1,
          ttl: retentionMs,
          storage: StorageType.File,
        }),
        // Post-mortems and quarantines: no TTL, a quarantine lasts until someone releases it.
        kvm.create(subjects.buckets.alerts, { history: 1, storage: StorageType.File }),
      ]),
  );
  return {
    nc,
    js,
    jsm,
    subjects,
    kv: { tasks, nodes, leases, checkpoints, outbox, behaviors, sessions, alerts },
    async close() {
      if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
    },
  };
}

/** Creates each stream, or updates it when its configuration drifted. */
async function provisionStreams(
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
async function racing<T>(fn: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await fn();
    } catch (err) {
      if (tries >= 4) throw err;
      await new Promise((r) => setTimeout(r, 50 * tries));
    }
  }
}

/**
 * The keys of a KV bucket (matching `filter`), in one request. Unlike the client's
 * `keys()`, which reads until the bucket stops changing, this answers at once even
 * while the bucket is written many times a second (node heartbeats).
 */
export async function bucketKeys(
  jsm: JetStreamManager,
  bucket: string,
  filter = ">",
): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}${filter}` });
  return Object.keys(info.state.subjects ?? {})
    .map((s) => s.slice(prefix.length))
    .sort();
}
