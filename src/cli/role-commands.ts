/**
 * The role commands: `up` (a whole fleet in one process) and `node`,
 * `orchestrator`, `gateway`, `model-gateway` (one role against an existing NATS
 * server). They run until SIGINT/SIGTERM and then stop cleanly.
 */
import path from "node:path";
import { type Command, Option } from "commander";
import { ConfigError } from "../errors.js";
import {
  type FleetOptions,
  type ResolvedFleetOptions,
  resolveFleetOptions,
} from "../fleet-options.js";
import type { Logger } from "../logger.js";
import {
  type RoleName,
  type RunningRole,
  startLocalFleet,
  startRole,
} from "../roles/fleet-roles.js";
import { RUNTIME_NAMES, type RuntimeName } from "../runtime-options.js";
import { int, oneOf, readUserFile, withFleetFlags } from "./cli-common.js";
import { dataDirOf, type LocatorFlags, locateFleet, shownDir } from "./fleet-locator.js";
import { LOG_LEVELS, type LogLevel, pinoLogger } from "./pino-logger.js";

interface RoleFlags extends LocatorFlags {
  id?: string;
  config?: string;
  logLevel: LogLevel;
  minIdle?: number;
  max?: number;
  sandbox?: "auto" | "bwrap" | "none";
  pool?: "process" | "docker";
  installNats?: boolean;
  modelUrl?: string;
  modelKeyEnv?: string;
  runtime?: RuntimeName;
  model?: string;
}

/** Options of a role process, from `--config` (JSON), flags and environment. */
async function roleOptions(flags: RoleFlags, needsUrl: boolean) {
  let base: FleetOptions = {};
  if (flags.config) {
    const text = await readUserFile(flags.config);
    try {
      base = JSON.parse(text) as FleetOptions;
    } catch (err) {
      throw new ConfigError(`${flags.config} is not JSON: ${(err as Error).message}`);
    }
  }
  const natsUrl = needsUrl
    ? (await locateFleet(flags)).natsUrl
    : (flags.nats ?? process.env.CLAWFLEET_NATS_URL);
  const pool = { ...(base.pools?.[0] ?? {}) };
  if (flags.minIdle !== undefined) pool.minIdle = flags.minIdle;
  if (flags.max !== undefined) pool.max = flags.max;
  if (flags.sandbox) pool.sandbox = flags.sandbox;
  if (flags.pool) pool.kind = flags.pool;
  if (flags.runtime) pool.runtime = flags.runtime;
  if (flags.model) pool.model = { ...pool.model, model: flags.model };
  return resolveFleetOptions({
    ...base,
    models: modelOptions(base.models, flags),
    dataDir: dataDirOf({ dataDir: flags.dataDir ?? base.dataDir }),
    prefix: flags.prefix ?? process.env.CLAWFLEET_PREFIX ?? base.prefix,
    natsUrl: natsUrl ?? base.natsUrl,
    nodeId: flags.id ?? base.nodeId,
    pools: [pool, ...(base.pools?.slice(1) ?? [])],
  });
}

/**
 * `--model-url` creates or replaces the `default` upstream's baseUrl (the one pools
 * bind to unless told otherwise), keeping the rest of its settings from `--config`;
 * `--model-key-env` names the variable its key is read from.
 */
function modelOptions(base: FleetOptions["models"], flags: RoleFlags): FleetOptions["models"] {
  if (flags.modelUrl === undefined && flags.modelKeyEnv === undefined) return base;
  const current = base?.upstreams?.default;
  const baseUrl = flags.modelUrl ?? current?.baseUrl;
  if (baseUrl === undefined)
    throw new ConfigError("--model-key-env needs --model-url or an upstream `default` in --config");
  const upstream = { ...current, baseUrl };
  if (flags.modelKeyEnv !== undefined) {
    upstream.keyEnv = flags.modelKeyEnv;
    delete upstream.keyFile;
  }
  return { ...base, upstreams: { ...base?.upstreams, default: upstream } };
}

function withModelFlags(cmd: Command): Command {
  return cmd
    .option(
      "--model-url <url>",
      "base URL of the model upstream `default` (e.g. http://127.0.0.1:4010/v1)",
    )
    .option("--model-key-env <name>", "environment variable holding the `default` upstream's key")
    .option("--model <id>", "the model id the pool's agents ask for (OpenClaw's primary model)");
}

const SANDBOXES = ["auto", "bwrap", "none"] as const;
const POOL_KINDS = ["process", "docker"] as const;

/**
 * How to reach this fleet from another terminal: the CLI finds it through `fleet.json`
 * in the data dir (flags only when that is not where it looks by default), and any other
 * NATS client needs the URL, since the embedded server listens on a free port.
 */
export function talkToIt(
  options: ResolvedFleetOptions,
  natsUrl: string,
  external: boolean,
): string[] {
  const where: string[] = [];
  if (external) where.push(`--nats ${natsUrl}`);
  else if (options.dataDir !== path.resolve(".clawfleet"))
    where.push(`--data-dir ${shownDir(options.dataDir)}`);
  if (external && options.prefix !== "fleet") where.push(`--prefix ${options.prefix}`);
  const flags = where.map((w) => ` ${w}`).join("");
  return [
    `  npx clawfleet send${flags} --session demo hello`,
    `  nats --server ${natsUrl} req ${options.prefix}.api.run '{"session":"demo","input":"hello"}'   # any NATS client`,
  ];
}

function withRoleFlags(cmd: Command): Command {
  return withFleetFlags(cmd)
    .option("--id <name>", "this process's id in records and status (default: <hostname>-<pid>)")
    .option("--config <file>", "JSON file of FleetOptions")
    .addOption(
      new Option("--log-level <level>", "log level on stderr")
        .choices(LOG_LEVELS)
        .argParser(oneOf("--log-level", LOG_LEVELS))
        .default("info"),
    )
    .option("--min-idle <n>", "warm idle containers to keep", int("--min-idle"))
    .option("--max <n>", "most containers in the pool", int("--max"))
    .addOption(
      new Option("--sandbox <kind>", "agent confinement")
        .choices(SANDBOXES)
        .argParser(oneOf("--sandbox", SANDBOXES)),
    )
    .addOption(
      new Option(
        "--runtime <name>",
        "the agent runtime of the first pool (command pools need --config)",
      )
        .choices(RUNTIME_NAMES)
        .argParser(oneOf("--runtime", RUNTIME_NAMES)),
    )
    .addOption(
      new Option("--pool <kind>", "what runs the agents: processes or Docker containers")
        .choices(POOL_KINDS)
        .argParser(oneOf("--pool", POOL_KINDS)),
    );
}

/** The stop signals of a long-running command; see {@link watchStopSignals}. */
interface StopSignals {
  /** Resolves with the first SIGINT or SIGTERM. */
  readonly received: Promise<NodeJS.Signals>;
  dispose(): void;
}

/**
 * Takes over SIGINT and SIGTERM before anything starts. Whoever waits for the
 * ready line may signal the moment it appears; a handler installed after printing
 * it would leave a window in which the default action kills the process outright,
 * with nothing stopped. The first signal stops the fleet cleanly (once it has
 * started); a second one, for a start or a stop that hangs, exits at once with
 * 130, and the process's exit hook still stops the embedded nats-server.
 */
function watchStopSignals(log: Logger): StopSignals {
  let fire: (sig: NodeJS.Signals) => void = () => {};
  const received = new Promise<NodeJS.Signals>((resolve) => {
    fire = resolve;
  });
  let seen = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (seen) {
      log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(130);
    }
    seen = true;
    log.info({ signal: sig }, "stopping");
    fire(sig);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    received,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}

/** Runs until a stop signal, then stops the roles cleanly. */
async function serve(signals: StopSignals, stopAll: () => Promise<void>): Promise<void> {
  await signals.received;
  try {
    await stopAll();
  } finally {
    signals.dispose();
  }
}

async function runRoles(roles: RoleName[], flags: RoleFlags): Promise<void> {
  const options = await roleOptions(flags, true);
  const logger = pinoLogger(flags.logLevel);
  const signals = watchStopSignals(logger);
  const running: RunningRole[] = [];
  const stopAll = async () => {
    for (const r of running.reverse()) await r.stop();
  };
  try {
    for (const r of roles) running.push(await startRole(r, options, { logger }));
  } catch (err) {
    await stopAll();
    signals.dispose();
    throw err;
  }
  process.stdout.write(
    `clawfleet ${roles.join(" + ")} ${options.nodeId} connected to ${options.natsUrl}\n`,
  );
  await serve(signals, stopAll);
}

/** Registers `up`, `node`, `orchestrator`, `gateway` and `model-gateway`. */
export function registerRoleCommands(program: Command): void {
  withModelFlags(withRoleFlags(program.command("up")))
    .description(
      "run a one-node fleet in this process: embedded nats-server, orchestrator, node, gateway and model gateway",
    )
    .option("--install-nats", "install nats-server with apt-get when missing (Debian, as root)")
    .action(async (flags: RoleFlags) => {
      const options = await roleOptions(flags, false);
      const logger = pinoLogger(flags.logLevel);
      const signals = watchStopSignals(logger);
      // Ctrl-C stops the roles, then the server: the server must not get the SIGINT too.
      const fleet = await startLocalFleet(options, {
        logger,
        autoInstallNats: flags.installNats,
        detachServer: true,
      }).catch((err) => {
        signals.dispose();
        throw err;
      });
      const pool = options.pools[0]!;
      process.stdout.write(
        [
          `clawfleet is up: node ${options.nodeId}, pool ${pool.name} (${pool.runtime} agent, ${pool.kind === "docker" ? `docker image ${pool.docker.image}` : "process"}, minIdle ${pool.minIdle}, max ${pool.max})`,
          `NATS: ${fleet.natsUrl} (data in ${options.dataDir})`,
          "Talk to it:",
          ...talkToIt(options, fleet.natsUrl, options.natsUrl !== undefined),
          "Ctrl-C stops the fleet.",
          "",
        ].join("\n"),
      );
      await serve(signals, () => fleet.stop());
    });

  for (const role of ["node", "orchestrator", "gateway"] as const) {
    withRoleFlags(program.command(role))
      .description(`run the ${role} role against an existing NATS server`)
      .action((flags: RoleFlags) => runRoles([role], flags));
  }
  withModelFlags(withRoleFlags(program.command("model-gateway")))
    .description(
      "run the model gateway (holds the upstream keys, forwards agents' model calls) against an existing NATS server",
    )
    .action((flags: RoleFlags) => runRoles(["model-gateway"], flags));
}
