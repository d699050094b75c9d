/**
 * User-facing options of a fleet and every role in it, compiled once by
 * {@link resolveFleetOptions} into a validated, readonly form.
 */
import { hostname } from "node:os";
import path from "node:path";
import { z } from "zod";
import { ConfigError } from "./errors.js";
import {
  type ModelGatewayOptions,
  ModelGatewaySchema,
  type ModelGatewaySettings,
} from "./model-gateway-options.js";
import { DEFAULT_PREFIX, DEFAULT_RETENTION_MS, PREFIX_PATTERN } from "./protocol/fleet-subjects.js";
import {
  type CommandProfileOptions,
  CommandProfileSchema,
  type ModelBindingOptions,
  ModelBindingSchema,
  type OpenClawProfileOptions,
  OpenClawProfileSchema,
  RUNTIME_NAMES,
  RUNTIME_PROFILE_DEFAULTS,
  type RuntimeName,
} from "./runtime-options.js";

/** A runtime profile for one pool of containers on a node. */
export interface PoolProfileOptions {
  /** Pool name, unique on its node. Default `default`. */
  name?: string;
  /**
   * Agent runtime: `scripted` (the reference agent), `command` (any CLI agent, a
   * process per turn; needs `command`) or `openclaw` (OpenClaw kept warm). Default `scripted`.
   */
  runtime?: RuntimeName;
  /** The CLI agent of a `command` pool. */
  command?: CommandProfileOptions;
  /** Settings of an `openclaw` pool (every field has a default). */
  openclaw?: OpenClawProfileOptions;
  /** Which model upstream the agents' model endpoint stands for (every field has a default). */
  model?: ModelBindingOptions;
  /** Containers kept started and idle, ready for a task. Default 1. */
  minIdle?: number;
  /** Most containers this pool may hold at once. Default 4. */
  max?: number;
  /** Most containers starting at the same time. Default 2. */
  maxConcurrentStarts?: number;
  /** `bwrap` confines each agent with bubblewrap; `auto` uses it when installed. Default `auto`. */
  sandbox?: "auto" | "bwrap" | "none";
  /** How long a container stays reserved for the session it just served. Default 60 000 ms. */
  reservedWindowMs?: number;
  /**
   * Healing tier 1: agent restarts in place within `agentRestartWindowMs` before the
   * container is recreated (OTP restart intensity). Default 2. Docker pools skip it (the
   * container is the agent).
   */
  maxAgentRestarts?: number;
  /** The window of `maxAgentRestarts`. Default 300 000 ms. */
  agentRestartWindowMs?: number;
  /** Turn deadline when a task names none. Default 300 000 ms. */
  turnTimeoutMs?: number;
  /** How often the agent must show life. Default 1000 ms. */
  agentHeartbeatMs?: number;
  /** Heartbeats missed before the agent counts as hung. Default 3. */
  missedHeartbeats?: number;
  /** Grace between start and `ready` before a start counts as failed. Default 30 000 ms (OpenClaw: 180 000). */
  startTimeoutMs?: number;
  /** What runs this pool's containers: child processes or Docker containers. Default `process`. */
  kind?: "process" | "docker";
  /** Container settings of a `docker` pool (every field has a default). */
  docker?: DockerProfileOptions;
}

/** Limits and image of each container of a `docker` pool. */
export interface DockerProfileOptions {
  /**
   * The agent image. Default `clawfleet-agent:local` (`clawfleet image build` makes it);
   * OpenClaw pools `clawfleet-agent-openclaw:local` (`clawfleet image build --runtime openclaw`).
   */
  image?: string;
  /** Memory limit of a container, swap included (none allowed). Default 256 MiB (OpenClaw: 2048). */
  memoryMb?: number;
  /** Most processes and threads in a container. Default 128 (OpenClaw: 512). */
  pids?: number;
  /** CPU limit in cores (fractions allowed). Default 1. */
  cpus?: number;
  /** `none` (default), `host`, or the name of a user-defined Docker network the profile allows. */
  network?: string;
  /** Size of the tmpfs mounted at /tmp. Default 64 MiB. */
  tmpfsMb?: number;
}

/** Node-wide settings of the Docker pool: density and cleanup. */
export interface DockerFleetOptions {
  /** The engine: `unix:///path/docker.sock` or `tcp://host:port`. Default `$DOCKER_HOST`, else /var/run/docker.sock. */
  host?: string;
  /** Memory the host offers containers before headroom. Default: the host's total memory. */
  hostMemoryMb?: number;
  /** Memory never given to containers (the host, the node, page cache). Default 10% of the host, at least 512 MiB. */
  headroomMb?: number;
  /** Memory a container is charged at least while it starts or runs a turn (what a working agent may reach). Default 64 MiB. */
  startReserveMb?: number;
  /** Container starts in flight at once on the node. Default 2. */
  maxConcurrentStarts?: number;
  /** An idle container beyond its pool's `minIdle` is removed after this long unused. Default 600 000 ms. */
  idleTtlMs?: number;
  /** How often container stats are read, pressure checked and idle containers reaped. Default 1000 ms. */
  statsIntervalMs?: number;
}

/** Options of a fleet; every field has a documented default. */
export interface FleetOptions {
  /** Subject prefix and name stem of streams and buckets. Default `fleet`. */
  prefix?: string;
  /** Where the embedded nats-server, workspaces and `fleet.json` live. Default `.clawfleet` in the cwd. */
  dataDir?: string;
  /** NATS server URL; when unset `up` starts an embedded nats-server. */
  natsUrl?: string;
  /** This node's id, shown in task records and status. Default `<hostname>-<pid>`. */
  nodeId?: string;
  /** Pools on this node. Default one `scripted` pool with the defaults above. */
  pools?: PoolProfileOptions[];
  /** Node heartbeat period. Default 1000 ms. */
  nodeHeartbeatMs?: number;
  /** A node whose heartbeat is older than this is dead. Default 5000 ms. */
  nodeTimeoutMs?: number;
  /** How often a running attempt renews its task lease. Default 1000 ms. */
  leaseRenewMs?: number;
  /** A task lease not renewed for this long has expired; its task is requeued. Default 5000 ms. */
  leaseTtlMs?: number;
  /** Attempts before a task fails with `ATTEMPTS_EXHAUSTED`. Default 5. */
  maxAttempts?: number;
  /** First retry delay; doubles per attempt up to 30 s. Default 500 ms. */
  retryBackoffMs?: number;
  /** Snapshot versions kept per session (plus the newest known-good one). Default 50. */
  snapshotKeepLast?: number;
  /**
   * Restart intensities of the healing ladder (see src/supervisor/): per session,
   * `recreateMax` (default 2) then `repairMax` (default 1) remedies within `windowMs`
   * (default 300 000); per node, `poolRestartMax` (default 3) crashed pool actors
   * restarted within `windowMs` before the node stops taking work.
   */
  healing?: {
    recreateMax?: number;
    repairMax?: number;
    poolRestartMax?: number;
    windowMs?: number;
  };
  /** How often a running turn's workspace is synced to the store (0: never). Default 3000 ms. */
  syncIntervalMs?: number;
  /** How often the leading orchestrator garbage-collects snapshot chunks. Default 600 000 ms. */
  snapshotGcIntervalMs?: number;
  /** Limits on a session's workspace, checked on every snapshot and restore. */
  workspaceLimits?: {
    /** Default 100 MiB. */
    maxFileBytes?: number;
    /** Default 1 GiB. */
    maxWorkspaceBytes?: number;
    /** Files, directories and symlinks. Default 100 000. */
    maxFiles?: number;
  };
  /** How long task records and streams are kept. Default 7 days. */
  retentionMs?: number;
  /** Docker pool settings of this node (used by pools of kind `docker`). */
  docker?: DockerFleetOptions;
  /** The model gateway: upstream providers and limits (every field has a default). */
  models?: ModelGatewayOptions;
}

/** The longest delay a Node timer can wait (what XState's delayed events use). */
const MAX_TIMER_MS = 2_147_483_647;

const IdToken = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 characters of [A-Za-z0-9_-]");

const DockerProfileSchema = z.strictObject({
  image: z.string().min(1).default("clawfleet-agent:local"),
  memoryMb: z.number().int().min(16).default(256),
  pids: z.number().int().min(16).default(128),
  cpus: z.number().positive().max(1024).default(1),
  network: z.string().min(1).default("none"),
  tmpfsMb: z.number().int().min(1).default(64),
});

const DockerFleetSchema = z.strictObject({
  host: z.string().min(1).optional(),
  hostMemoryMb: z.number().int().min(64).optional(),
  headroomMb: z.number().int().min(0).optional(),
  startReserveMb: z.number().int().min(1).default(64),
  maxConcurrentStarts: z.number().int().min(1).default(2),
  idleTtlMs: z.number().int().min(100).default(600_000),
  statsIntervalMs: z.number().int().min(50).default(1000),
});

const PoolProfileFields = z.strictObject({
  name: IdToken.default("default"),
  runtime: z.enum(RUNTIME_NAMES).default("scripted"),
  command: CommandProfileSchema.optional(),
  openclaw: OpenClawProfileSchema.prefault({}),
  model: ModelBindingSchema.prefault({}),
  minIdle: z.number().int().min(0).default(1),
  max: z.number().int().min(1).default(4),
  maxConcurrentStarts: z.number().int().min(1).default(2),
  sandbox: z.enum(["auto", "bwrap", "none"]).default("auto"),
  reservedWindowMs: z.number().int().min(0).max(MAX_TIMER_MS).default(60_000),
  maxAgentRestarts: z.number().int().min(0).default(2),
  // Timers (this window ages restarts out) cannot wait longer than 2^31 - 1 ms.
  agentRestartWindowMs: z.number().int().min(1).max(MAX_TIMER_MS).default(300_000),
  turnTimeoutMs: z.number().int().min(100).default(300_000),
  agentHeartbeatMs: z.number().int().min(10).default(1000),
  missedHeartbeats: z.number().int().min(1).default(3),
  startTimeoutMs: z.number().int().min(100).default(30_000),
  kind: z.enum(["process", "docker"]).default("process"),
  docker: DockerProfileSchema.prefault({}),
});

/** A profile's runtime-specific defaults go under what it sets (see RUNTIME_PROFILE_DEFAULTS). */
const PoolProfileSchema = z.preprocess(
  (input) => {
    if (typeof input !== "object" || input === null) return input;
    const p = input as PoolProfileOptions;
    const defaults = RUNTIME_PROFILE_DEFAULTS[p.runtime as RuntimeName];
    if (!defaults) return input;
    const { docker, ...rest } = defaults;
    return { ...rest, ...p, docker: { ...docker, ...p.docker } };
  },
  PoolProfileFields.refine((p) => p.runtime !== "command" || p.command !== undefined, {
    message: "a command pool needs `command` (argv or a preset)",
    path: ["command"],
  }),
);

const FleetOptionsSchema = z.strictObject({
  prefix: z.string().regex(PREFIX_PATTERN).default(DEFAULT_PREFIX),
  dataDir: z.string().min(1).default(".clawfleet"),
  natsUrl: z.string().min(1).optional(),
  nodeId: IdToken.optional(),
  pools: z.array(PoolProfileSchema).min(1).optional(),
  nodeHeartbeatMs: z.number().int().min(10).default(1000),
  nodeTimeoutMs: z.number().int().min(50).default(5000),
  leaseRenewMs: z.number().int().min(10).default(1000),
  leaseTtlMs: z.number().int().min(50).default(5000),
  maxAttempts: z.number().int().min(1).default(5),
  retryBackoffMs: z.number().int().min(0).default(500),
  workspaceLimits: z
    .strictObject({
      maxFileBytes: z.number().int().positive().optional(),
      maxWorkspaceBytes: z.number().int().positive().optional(),
      maxFiles: z.number().int().positive().optional(),
    })
    .optional(),
  syncIntervalMs: z.number().int().min(0).default(3000),
  healing: z
    .strictObject({
      recreateMax: z.number().int().min(0).default(2),
      repairMax: z.number().int().min(0).default(1),
      poolRestartMax: z.number().int().min(0).default(3),
      windowMs: z.number().int().min(1).default(300_000),
    })
    .default({ recreateMax: 2, repairMax: 1, poolRestartMax: 3, windowMs: 300_000 }),
  snapshotGcIntervalMs: z.number().int().min(1000).default(600_000),
  snapshotKeepLast: z.number().int().min(1).default(50),
  retentionMs: z.number().int().min(60_000).default(DEFAULT_RETENTION_MS),
  docker: DockerFleetSchema.prefault({}),
  models: ModelGatewaySchema.prefault({}),
});

/** Docker settings of a pool profile with every default applied. */
export type DockerProfile = Readonly<z.output<typeof DockerProfileSchema>>;

/** Node-wide Docker pool settings with every default applied. */
export type DockerFleetSettings = Readonly<z.output<typeof DockerFleetSchema>>;

/** A pool profile with every default applied. */
export type PoolProfile = Readonly<z.output<typeof PoolProfileFields>>;

export type { ModelGatewaySettings };

/** Fleet options with every default applied; `dataDir` is absolute. */
export interface ResolvedFleetOptions
  extends Readonly<Omit<z.output<typeof FleetOptionsSchema>, "pools" | "nodeId">> {
  readonly nodeId: string;
  readonly pools: readonly PoolProfile[];
}

/** The default node id: host name and pid, reduced to allowed characters. */
export function defaultNodeId(): string {
  return `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
}

/** Validates `options` and applies defaults; throws {@link ConfigError} with every problem. */
export function resolveFleetOptions(options: FleetOptions = {}): ResolvedFleetOptions {
  const parsed = FleetOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new ConfigError(`invalid fleet options: ${z.prettifyError(parsed.error)}`, {
      cause: parsed.error,
    });
  }
  const o = parsed.data;
  if (o.leaseRenewMs * 2 > o.leaseTtlMs) {
    throw new ConfigError(
      `leaseTtlMs (${o.leaseTtlMs}) must be at least twice leaseRenewMs (${o.leaseRenewMs})`,
    );
  }
  const pools = o.pools ?? [PoolProfileSchema.parse({})];
  const names = new Set<string>();
  for (const p of pools) {
    if (names.has(p.name)) throw new ConfigError(`duplicate pool name: ${p.name}`);
    names.add(p.name);
    if (p.minIdle > p.max)
      throw new ConfigError(`pool ${p.name}: minIdle ${p.minIdle} > max ${p.max}`);
  }
  return Object.freeze({
    ...o,
    dataDir: path.resolve(o.dataDir),
    nodeId: o.nodeId ?? defaultNodeId(),
    pools: Object.freeze(pools.map((p) => Object.freeze(p))),
  });
}

/** Validates one pool profile on its own (used by the CLI's `--pool` flags). */
export function resolvePoolProfile(options: PoolProfileOptions = {}): PoolProfile {
  const parsed = PoolProfileSchema.safeParse(options);
  if (!parsed.success)
    throw new ConfigError(`invalid pool profile: ${z.prettifyError(parsed.error)}`);
  return Object.freeze(parsed.data);
}
