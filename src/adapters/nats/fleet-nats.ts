/**
 * One NATS connection per role process, with the JetStream streams and KV
 * buckets of the fleet provisioned idempotently on every start.
 */
import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { ConfigError } from "../../errors.js";
import {
  DEFAULT_PREFIX,
  DEFAULT_RETENTION_MS,
  type FleetSubjects,
  fleetSubjects,
} from "../../protocol/fleet-subjects.js";
import {
  type FleetBuckets,
  provisionKvBuckets,
  provisionSnapshotBuckets,
  provisionStreams,
  racing,
} from "./fleet-provisioning.js";

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
  readonly kv: FleetBuckets;
  /** Drains and closes the connection. */
  close(): Promise<void>;
}

/** Connects to `url` and provisions the fleet's streams and buckets. */
export async function connectFleet(
  url: string,
  options: FleetNatsOptions = {},
): Promise<FleetNats> {
  const subjects = fleetSubjects(options.prefix ?? DEFAULT_PREFIX);
  const retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
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
  const kv = await provisionKvBuckets(js, jsm, subjects, retentionMs);
  return {
    nc,
    js,
    jsm,
    subjects,
    kv,
    async close() {
      if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
    },
  };
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
