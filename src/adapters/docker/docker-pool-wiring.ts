/**
 * How a node gets its Docker pool: the engine from the fleet options, the agent
 * images its pools name (the default one is built when missing), live nodes
 * from the nodes bucket (for orphan removal), and task priorities from the
 * tasks bucket (for the shed order). Also {@link PoolRouter}, for a node whose
 * pools are of different kinds.
 */
import Docker from "dockerode";
import type { Clock } from "../../clock.js";
import { ConfigError, toErrorInfo } from "../../errors.js";
import type { PoolProfile, ResolvedFleetOptions } from "../../fleet-options.js";
import type { Logger } from "../../logger.js";
import type { ContainerHandle, ContainerSpec, PoolAdapter } from "../agent-link/pool-adapter.js";
import { bucketKeys, type FleetNats } from "../nats/fleet-nats.js";
import { buildAgentImage, DEFAULT_AGENT_IMAGE } from "./docker-image.js";
import { DockerPool, type DockerPoolOptions } from "./docker-pool.js";

const PRIORITY_RANK: Record<string, number> = { low: 0, normal: 1, high: 2 };

/** A client of the engine at `host` (`unix://…`, `tcp://…`), else `$DOCKER_HOST` or the default socket. */
export function dockerClient(host?: string): Docker {
  if (host === undefined) return new Docker();
  if (host.startsWith("unix://")) return new Docker({ socketPath: host.slice("unix://".length) });
  const url = new URL(host.replace(/^tcp:/, "http:"));
  return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: "http" });
}

/**
 * Makes sure every image the docker pools name exists. The default image is
 * built (from this host's node and the project) when missing; any other must
 * be there already, since no registry is assumed.
 */
export async function ensurePoolImages(
  docker: Docker,
  pools: readonly PoolProfile[],
  logger: Logger,
): Promise<void> {
  const images = new Set(pools.filter((p) => p.kind === "docker").map((p) => p.docker.image));
  for (const image of images) {
    const found = await docker
      .getImage(image)
      .inspect()
      .then(
        () => true,
        () => false,
      );
    if (found) continue;
    if (image !== DEFAULT_AGENT_IMAGE)
      throw new ConfigError(`image ${image} is not on the Docker engine; build or load it first`);
    logger.info({ image }, "agent image missing: building it (clawfleet image build)");
    await buildAgentImage(docker, { tag: image, progress: (line) => logger.info({ image }, line) });
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
