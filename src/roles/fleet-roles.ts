/**
 * Starting roles as a process would: each role gets its own NATS connection
 * and talks to the others only through NATS, whether they share a process
 * (`clawfleet up`) or run on different hosts.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { PoolAdapter } from "../adapters/agent-link/pool-adapter.js";
import { connectFleet, type FleetNats } from "../adapters/nats/fleet-nats.js";
import { ensureNatsServer } from "../adapters/nats/nats-server-binary.js";
import { type NatsServerHandle, startNatsServer } from "../adapters/nats/nats-server-process.js";
import { ProcessPool } from "../adapters/process/process-pool.js";
import { locateOpenClaw } from "../adapters/runtimes/openclaw-runtime.js";
import { type Clock, systemClock } from "../clock.js";
import { ConfigError } from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import { ApiService } from "../gateway/api-service.js";
import { type Logger, silentLogger } from "../logger.js";
import { FleetNode } from "./fleet-node.js";
import { FleetOrchestrator } from "./fleet-orchestrator.js";
import { ModelGateway } from "./model-gateway.js";
import { isAlive } from "./node-dirs.js";
import { preflightPools } from "./pool-preflight.js";

/** The roles a process can run. */
export type RoleName = "node" | "orchestrator" | "gateway" | "model-gateway";

/** Shared dependencies of roles in one process. */
export interface RoleDeps {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** The pool adapter for a node. Default: a {@link ProcessPool} masking the data dir. */
  readonly adapter?: PoolAdapter;
}

/** A started role; `stop` ends it and closes its NATS connection. */
export interface RunningRole {
  readonly name: RoleName;
  stop(): Promise<void>;
}

/** Starts one role against `options.natsUrl`. */
export async function startRole(
  name: RoleName,
  options: ResolvedFleetOptions,
  deps: RoleDeps = {},
): Promise<RunningRole> {
  if (!options.natsUrl)
    throw new ConfigError(
      "no NATS URL: pass --nats, set CLAWFLEET_NATS_URL, or run `clawfleet up`",
    );
  const logger = deps.logger ?? silentLogger;
  const nats = await connectFleet(options.natsUrl, {
    prefix: options.prefix,
    retentionMs: options.retentionMs,
    name: `clawfleet-${name}-${options.nodeId}`,
  });
  const common = { nats, clock: deps.clock ?? systemClock, logger };
  const closing = (stop: () => Promise<void>): RunningRole => ({
    name,
    async stop() {
      await stop();
      await nats.close();
    },
  });
  switch (name) {
    case "node": {
      const adapter =
        deps.adapter ??
        (await nodeAdapter(options, nats, common.clock, logger).catch(async (err) => {
          await nats.close();
          throw err;
        }));
      const node = await FleetNode.start(options, { ...common, adapter }).catch(async (err) => {
        if (!deps.adapter) await adapter.close();
        throw err;
      });
      return closing(async () => {
        await node.stop();
        if (!deps.adapter) await adapter.close();
      });
    }
    case "orchestrator": {
      const orchestrator = FleetOrchestrator.start(options, common);
      return closing(() => orchestrator.stop());
    }
    case "gateway": {
      const api = await ApiService.start(options, common);
      return closing(() => api.stop());
    }
    case "model-gateway": {
      const gateway = new ModelGateway({ ...common, settings: options.models });
      // A missing key is a ConfigError here, at start: close the connection with it.
      await gateway.start().catch(async (err) => {
        await nats.close();
        throw err;
      });
      return closing(() => gateway.stop());
    }
  }
}

/** The adapter for the node's pools: processes, Docker containers, or both by profile `kind`. */
async function nodeAdapter(
  options: ResolvedFleetOptions,
  nats: FleetNats,
  clock: Clock,
  logger: Logger,
): Promise<PoolAdapter> {
  const kinds = new Set(options.pools.map((p) => p.kind));
  // A pool whose agent program is missing fails the node's start here, once, with its code.
  await preflightPools(options.pools, {
    locateRuntime: (p) => locateOpenClaw(p.openclaw.runtimesDir),
  });
  const processes = new ProcessPool({
    maskPaths: [options.dataDir],
    clock,
    logger,
    models: options.models,
    runtimeFiles: async (profile) =>
      profile.runtime === "openclaw"
        ? { dir: (await locateOpenClaw(profile.openclaw.runtimesDir)).dir }
        : undefined,
  });
  if (!kinds.has("docker")) return processes;
  // Loaded only for Docker pools: process-only nodes never load the Docker client.
  const { openNodeDockerPool, PoolRouter } = await import(
    "../adapters/docker/docker-pool-wiring.js"
  );
  const docker = await openNodeDockerPool(options, nats, { clock, logger });
  return kinds.has("process") ? new PoolRouter({ process: processes, docker }) : docker;
}

/** What `clawfleet up` writes in its data dir so clients find the fleet. */
export interface FleetFile {
  readonly natsUrl: string;
  readonly prefix: string;
  readonly pid: number;
  readonly startedAt: string;
}

/** The path of `fleet.json` in a data dir. */
export function fleetFilePath(dataDir: string): string {
  return path.join(dataDir, "fleet.json");
}

/** Reads `fleet.json`, or null when there is none. */
export async function readFleetFile(dataDir: string): Promise<FleetFile | null> {
  try {
    return JSON.parse(await readFile(fleetFilePath(dataDir), "utf8")) as FleetFile;
  } catch {
    return null;
  }
}

/** A whole fleet in one process: embedded NATS (unless a URL is given) and every role. */
export interface LocalFleet {
  readonly natsUrl: string;
  readonly options: ResolvedFleetOptions;
  stop(): Promise<void>;
}

/**
 * Starts a one-process fleet. Without `options.natsUrl` it starts nats-server
 * with its store under the data dir (installing it on Debian when
 * `autoInstallNats` is set) and writes `fleet.json`. With `detachServer` the server runs
 * in its own process group, so a terminal's Ctrl-C reaches only this process, which stops
 * the roles and then the server (the CLI's `up`); without, the server shares our signals.
 */
export async function startLocalFleet(
  options: ResolvedFleetOptions,
  deps: RoleDeps & {
    autoInstallNats?: boolean;
    roles?: readonly RoleName[];
    detachServer?: boolean;
  } = {},
): Promise<LocalFleet> {
  const logger = deps.logger ?? silentLogger;
  let server: NatsServerHandle | null = null;
  let natsUrl = options.natsUrl;
  await mkdir(options.dataDir, { recursive: true });
  const running = await readFleetFile(options.dataDir);
  if (!natsUrl && running && running.pid !== process.pid && isAlive(running.pid)) {
    throw new ConfigError(
      `a fleet is already running in ${options.dataDir} (pid ${running.pid}, ${running.natsUrl}); stop it first or use another --data-dir`,
    );
  }
  if (!natsUrl) {
    const binary = await ensureNatsServer({ autoInstall: deps.autoInstallNats ?? false, logger });
    const natsDir = path.join(options.dataDir, "nats");
    await mkdir(natsDir, { recursive: true });
    server = await startNatsServer({
      storeDir: natsDir,
      binary,
      pidFile: path.join(natsDir, "nats-server.pid"),
      logFile: path.join(natsDir, "nats-server.log"),
      logger,
      ownProcessGroup: deps.detachServer ?? false,
    });
    natsUrl = server.url;
    logger.info({ url: natsUrl, pid: server.pid }, "embedded nats-server up");
  }
  const resolved = { ...options, natsUrl };
  const started: RunningRole[] = [];
  const stopAll = async () => {
    for (const r of started.reverse()) await r.stop().catch(() => {});
    if (server) {
      await rm(fleetFilePath(options.dataDir), { force: true });
      await server.stop();
    }
  };
  try {
    // The model gateway first, so it stops last: turns still running can finish their calls.
    const roles = deps.roles ?? (["model-gateway", "orchestrator", "node", "gateway"] as const);
    for (const name of roles) {
      started.push(await startRole(name, resolved, deps));
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  if (server) {
    const file: FleetFile = {
      natsUrl,
      prefix: options.prefix,
      pid: process.pid,
      startedAt: new Date().toISOString(),
    };
    await writeFile(fleetFilePath(options.dataDir), `${JSON.stringify(file, null, 2)}\n`);
  }
  return { natsUrl, options: resolved, stop: stopAll };
}
