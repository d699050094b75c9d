/**
 * How a node gets its Docker pool: the engine from the fleet options, the agent
 * images its pools name (the default ones are built when missing), where a
 * runtime's files are in its image (OpenClaw's), live nodes
 * from the nodes bucket (for orphan removal), and task priorities from the
 * tasks bucket (for the shed order). Also {@link PoolRouter}, for a node whose
 * pools are of different kinds.
 */
import Docker from "dockerode";
import type { Clock } from "../../clock.js";
import { ClawfleetError, ConfigError, toErrorInfo } from "../../errors.js";
import type { PoolProfile, ResolvedFleetOptions } from "../../fleet-options.js";
import type { Logger } from "../../logger.js";
import type { ContainerHandle, ContainerSpec, PoolAdapter } from "../agent-link/pool-adapter.js";
import { bucketKeys, type FleetNats } from "../nats/fleet-nats.js";
import { DockerPool, type DockerPoolOptions } from "./docker-pool.js";
import {
  buildRuntimeImage,
  IMAGE_RUNTIME_LABELS,
  IMAGE_RUNTIMES,
  IMAGE_TAGS,
  imageRuntimeFiles,
  RUNTIME_LABEL,
} from "./runtime-image.js";

const PRIORITY_RANK: Record<string, number> = { low: 0, normal: 1, high: 2 };

/** A client of the engine at `host` (`unix://…`, `tcp://…`), else `$DOCKER_HOST` or the default socket. */
export function dockerClient(host?: string): Docker {
  if (host === undefined) return new Docker();
  if (host.startsWith("unix://")) return new Docker({ socketPath: host.slice("unix://".length) });
  const url = new URL(host.replace(/^tcp:/, "http:"));
  return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: "http" });
}

/**
 * Makes sure every image the docker pools name exists. The default images
 * (`clawfleet-agent:local`, and `clawfleet-agent-openclaw:local` from the
 * OpenClaw install of this host) are built when missing, and OpenClaw's also
 * when it holds another OpenClaw version than this clawfleet runs; any other
 * image must be there already, since no registry is assumed.
 */
export async function ensurePoolImages(
  docker: Docker,
  pools: readonly PoolProfile[],
  logger: Logger,
): Promise<void> {
  const images = new Map<string, PoolProfile>();
  for (const p of pools)
    if (p.kind === "docker" && !images.has(p.docker.image)) images.set(p.docker.image, p);
  for (const [image, profile] of images) {
    const found = await docker
      .getImage(image)
      .inspect()
      .catch((err: { statusCode?: number }) => {
        // Only "no such image" means missing; an engine that fails must not look empty.
        if (err.statusCode === 404) return undefined;
        throw err;
      });
    const runtime = IMAGE_RUNTIMES.find((r) => IMAGE_TAGS[r] === image);
    if (runtime === undefined) {
      if (found) continue;
      throw new ConfigError(`image ${image} is not on the Docker engine; build or load it first`);
    }
    const label = IMAGE_RUNTIME_LABELS[runtime];
    if (found && found.Config?.Labels?.[RUNTIME_LABEL] === label) continue;
    const why = found
      ? `built for ${found.Config?.Labels?.[RUNTIME_LABEL] ?? "no runtime"}`
      : "missing";
    const command = `clawfleet image build${runtime === "scripted" ? "" : ` --runtime ${runtime}`}`;
    logger.info({ image }, `agent image ${why}: building it (${command})`);
    const runtimesDir = profile.runtime === "openclaw" ? profile.openclaw.runtimesDir : undefined;
    await buildRuntimeImage(docker, {
      tag: image,
      runtime,
      runtimesDir,
      progress: (line) => logger.info({ image }, line),
    }).catch((err: unknown) => {
      // Say which image needed the runtime; the code (RUNTIME_NOT_INSTALLED) is kept.
      if (!(err instanceof ClawfleetError)) throw err;
      throw new ClawfleetError(err.code, `cannot build the agent image ${image}: ${err.message}`, {
        cause: err,
        retryable: err.retryable,
      });
    });
  }
}

/** Ids of nodes whose heartbeat is fresh: within three node timeouts (and 15 s) of now. */
export async function liveNodeIds(nats: FleetNats, nodeTimeoutMs: number): Promise<Set<string>> {
  const live = new Set<string>();
  const window = Math.max(3 * nodeTimeoutMs, 15_000);
  for (const key of await bucketKeys(nats.jsm, nats.subjects.buckets.nodes)) {
    const entry = await nats.kv.nodes.get(key).catch(() => null);
    if (entry && entry.operation === "PUT" && Date.now() - entry.created.getTime() < window)
      live.add(key);
  }
  return live;
}

/** Opens the node's Docker pool with the fleet's NATS view plugged in. */
export async function openNodeDockerPool(
  options: ResolvedFleetOptions,
  nats: FleetNats,
  deps: { clock: Clock; logger: Logger } & Partial<Pick<DockerPoolOptions, "onShed" | "onEvent">>,
): Promise<DockerPool> {
  const docker = dockerClient(options.docker.host);
  try {
    await docker.ping();
  } catch (err) {
    const where = options.docker.host ?? process.env.DOCKER_HOST ?? "/var/run/docker.sock";
    throw new ConfigError(`no Docker engine at ${where}: ${(err as Error).message}`);
  }
  await ensurePoolImages(docker, options.pools, deps.logger);
  return DockerPool.open({
    docker,
    fleet: options.prefix,
    nodeId: options.nodeId,
    settings: options.docker,
    models: options.models,
    clock: deps.clock,
    logger: deps.logger,
    onShed: deps.onShed,
    onEvent: deps.onEvent,
    runtimeFiles: imageRuntimeFiles,
    liveNodes: () => liveNodeIds(nats, options.nodeTimeoutMs),
    priorityOf: async (taskId) => {
      const entry = await nats.kv.tasks.get(taskId).catch(() => null);
      if (entry?.operation !== "PUT") return undefined;
      try {
        return PRIORITY_RANK[(entry.json() as { priority?: string }).priority ?? ""];
      } catch (err) {
        deps.logger.debug({ err: toErrorInfo(err), taskId }, "unreadable task record");
        return undefined;
      }
    },
  });
}

/** Sends each start to the adapter of the profile's `kind`. */
export class PoolRouter implements PoolAdapter {
  readonly kind: string;

  constructor(private readonly adapters: Readonly<Record<string, PoolAdapter>>) {
    this.kind = Object.keys(adapters).sort().join("+");
  }

  async start(spec: ContainerSpec): Promise<ContainerHandle> {
    const adapter = this.adapters[spec.profile.kind];
    if (!adapter) throw new ConfigError(`no ${spec.profile.kind} pool adapter on this node`);
    return adapter.start(spec);
  }

  async close(): Promise<void> {
    await Promise.all(Object.values(this.adapters).map((a) => a.close()));
  }
}
