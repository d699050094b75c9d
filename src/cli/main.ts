/**
 * The `clawfleet` command. Role commands (`up`, `node`, `orchestrator`,
 * `gateway`) run until SIGINT/SIGTERM; client commands talk to the public API
 * and exit. Every failure prints one line, `clawfleet: <reason>`, and exits 1.
 */
import { readFile } from "node:fs/promises";
import { Command, InvalidArgumentError, Option } from "commander";
import { ClawfleetError, ConfigError, toErrorInfo } from "../errors.js";
import { type FleetOptions, resolveFleetOptions } from "../fleet-options.js";
import { SERVICE_VERSION } from "../gateway/api-service.js";
import { FleetClient } from "../gateway/fleet-client.js";
import { isTerminalItem, type TimelineItem } from "../gateway/task-timeline.js";
import type { Logger } from "../logger.js";
import type { Priority, TaskRecord } from "../protocol/api-schemas.js";
import {
  type RoleName,
  type RunningRole,
  startLocalFleet,
  startRole,
} from "../roles/fleet-roles.js";
import { dataDirOf, type LocatorFlags, locateFleet } from "./fleet-locator.js";
import { LOG_LEVELS, type LogLevel, pinoLogger } from "./pino-logger.js";
import { printStatus, printTask, printTimelineEvent } from "./print.js";

interface RoleFlags extends LocatorFlags {
  id?: string;
  config?: string;
  logLevel: LogLevel;
  minIdle?: number;
  max?: number;
  sandbox?: "auto" | "bwrap" | "none";
  installNats?: boolean;
}

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`${name} must be a whole number`);
  return n;
};

/** Options of a role process, from `--config` (JSON), flags and environment. */
async function roleOptions(flags: RoleFlags, needsUrl: boolean) {
  let base: FleetOptions = {};
  if (flags.config) {
    try {
      base = JSON.parse(await readFile(flags.config, "utf8")) as FleetOptions;
    } catch (err) {
      throw new ConfigError(`cannot read config ${flags.config}: ${(err as Error).message}`);
    }
  }
  const natsUrl = needsUrl
    ? (await locateFleet(flags)).natsUrl
    : (flags.nats ?? process.env.CLAWFLEET_NATS_URL);
  const pool = { ...(base.pools?.[0] ?? {}) };
  if (flags.minIdle !== undefined) pool.minIdle = flags.minIdle;
  if (flags.max !== undefined) pool.max = flags.max;
  if (flags.sandbox) pool.sandbox = flags.sandbox;
  return resolveFleetOptions({
    ...base,
    dataDir: dataDirOf({ dataDir: flags.dataDir ?? base.dataDir }),
    prefix: flags.prefix ?? process.env.CLAWFLEET_PREFIX ?? base.prefix,
    natsUrl: natsUrl ?? base.natsUrl,
    nodeId: flags.id ?? base.nodeId,
    pools: [pool, ...(base.pools?.slice(1) ?? [])],
  });
}

function withFleetFlags(cmd: Command): Command {
  return cmd
    .option(
      "--nats <url>",
      "NATS server URL (default: $CLAWFLEET_NATS_URL, then fleet.json in the data dir)",
    )
    .option("--data-dir <dir>", "data directory (default: $CLAWFLEET_DATA_DIR or .clawfleet)")
    .option("--prefix <prefix>", "subject prefix (default: fleet)");
}

function withRoleFlags(cmd: Command): Command {
  return withFleetFlags(cmd)
    .option("--id <name>", "this process's id in records and status (default: <hostname>-<pid>)")
    .option("--config <file>", "JSON file of FleetOptions")
    .addOption(
      new Option("--log-level <level>", "log level on stderr").choices(LOG_LEVELS).default("info"),
    )
    .option("--min-idle <n>", "warm idle containers to keep", int("--min-idle"))
    .option("--max <n>", "most containers in the pool", int("--max"))
    .addOption(
      new Option("--sandbox <kind>", "agent confinement").choices(["auto", "bwrap", "none"]),
    );
}

/** Runs until a signal, then stops the roles cleanly. */
async function serve(stopAll: () => Promise<void>, log: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string) => {
      log.info({ signal: sig }, "stopping");
      stopAll().then(resolve, resolve);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
  });
}

async function runRoles(roles: RoleName[], flags: RoleFlags): Promise<void> {
  const options = await roleOptions(flags, true);
  const logger = pinoLogger(flags.logLevel);
  const running: RunningRole[] = [];
  for (const r of roles) running.push(await startRole(r, options, { logger }));
  process.stdout.write(
    `clawfleet ${roles.join(" + ")} ${options.nodeId} connected to ${options.natsUrl}\n`,
  );
  await serve(async () => {
    for (const r of running.reverse()) await r.stop();
  }, logger);
}

async function withClient<T>(flags: LocatorFlags, fn: (c: FleetClient) => Promise<T>): Promise<T> {
  const { natsUrl, prefix } = await locateFleet(flags);
  const client = await FleetClient.connect(natsUrl, { prefix });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

interface SendFlags extends LocatorFlags {
  session: string;
  tenant?: string;
  json?: boolean;
  idempotencyKey?: string;
  priority?: Priority;
  timeout?: number;
  wait?: number;
}

function taskRequest(input: string[], f: SendFlags) {
  return {
    tenant: f.tenant,
    session: f.session,
    input: input.join(" "),
    idempotencyKey: f.idempotencyKey,
    priority: f.priority,
    timeoutMs: f.timeout,
  };
}

function withTaskFlags(cmd: Command): Command {
  return withFleetFlags(cmd)
    .requiredOption("-s, --session <id>", "session id ([A-Za-z0-9_-], 1-128)")
    .option("-t, --tenant <id>", "tenant id (default: default)")
    .option("-k, --idempotency-key <key>", "the same key submits the same task once")
    .addOption(
      new Option("-p, --priority <p>", "scheduling priority").choices(["low", "normal", "high"]),
    )
    .option("--timeout <ms>", "turn deadline once running", int("--timeout"));
}

/** Builds the command tree. */
export function buildProgram(): Command {
  const program = new Command("clawfleet")
    .description(
      "Host long-running, stateful AI agents for many users on a fixed pool of containers.",
    )
    .version(SERVICE_VERSION)
    .showHelpAfterError();

  withRoleFlags(program.command("up"))
    .description(
      "run a one-node fleet in this process: embedded nats-server, orchestrator, node and gateway",
    )
    .option("--install-nats", "install nats-server with apt-get when missing (Debian, as root)")
    .action(async (flags: RoleFlags) => {
      const options = await roleOptions(flags, false);
      const logger = pinoLogger(flags.logLevel);
      const fleet = await startLocalFleet(options, { logger, autoInstallNats: flags.installNats });
      const pool = options.pools[0]!;
      process.stdout.write(
        [
          `clawfleet is up: node ${options.nodeId}, pool ${pool.name} (${pool.runtime} agent, minIdle ${pool.minIdle}, max ${pool.max})`,
          `NATS: ${fleet.natsUrl} (data in ${options.dataDir})`,
          "Talk to it:",
          "  npx clawfleet send --session demo hello",
          `  nats req ${options.prefix}.api.run '{"session":"demo","input":"hello"}'   # any NATS client`,
          "Ctrl-C stops the fleet.",
          "",
        ].join("\n"),
      );
      await serve(() => fleet.stop(), logger);
    });

  for (const role of ["node", "orchestrator", "gateway"] as const) {
    withRoleFlags(program.command(role))
      .description(`run the ${role} role against an existing NATS server`)
      .action((flags: RoleFlags) => runRoles([role], flags));
  }

  withTaskFlags(program.command("send"))
    .description("run a task and print its output")
    .argument("<input...>", "the input text")
    .option("--json", "print the task record as JSON")
    .option("--wait <ms>", "how long to wait for the result (default 60000)", int("--wait"))
    .action(async (input: string[], f: SendFlags) => {
      const task = await withClient(f, (c) => c.run({ ...taskRequest(input, f), waitMs: f.wait }));
      if (f.json) process.stdout.write(`${JSON.stringify(task, null, 2)}\n`);
      else if (task.status === "succeeded") process.stdout.write(`${task.output ?? ""}\n`);
      if (task.status !== "succeeded") {
        throw new ClawfleetError(
          task.error?.code ?? "FAILED",
          `task ${task.taskId} ${task.status}: ${task.error?.message ?? ""}`,
        );
      }
    });

  withTaskFlags(program.command("submit"))
    .description("submit a task and print its id")
    .argument("<input...>", "the input text")
    .action(async (input: string[], f: SendFlags) => {
      const r = await withClient(f, (c) => c.submit(taskRequest(input, f)));
      process.stdout.write(`${r.taskId}\n`);
    });

  withFleetFlags(program.command("task"))
    .description("print a task's record")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const task = await withClient(f, (c) => c.task(taskId));
      process.stdout.write(
        f.json ? `${JSON.stringify(task, null, 2)}\n` : printTask(task as TaskRecord),
      );
    });

  withFleetFlags(program.command("timeline"))
    .description("print a task's timeline: submitted, placed, steps, effects, retries, the end")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const t = await withClient(f, (c) => c.timeline(taskId));
      process.stdout.write(
        f.json ? `${JSON.stringify(t, null, 2)}\n` : t.events.map(printTimelineEvent).join(""),
      );
    });

  withFleetFlags(program.command("watch"))
    .description("follow a task's timeline live until it ends (exit 0 only if it succeeded)")
    .argument("<taskId>")
    .option("--json", "print one JSON line per event")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        await withClient(f, async (c) => {
          let last: TimelineItem | undefined;
          for await (const e of c.watch(taskId, { signal: stop.signal })) {
            process.stdout.write(f.json ? `${JSON.stringify(e)}\n` : printTimelineEvent(e));
            last = e;
          }
          // Interrupted: the task goes on; exit as a shell expects after Ctrl-C.
          if (stop.signal.aborted) {
            process.exitCode = 130;
            return;
          }
          // Ended without its terminal line (lost): the record says how it ended.
          const ended = last && isTerminalItem(last) ? null : await c.task(taskId);
          const status = ended ? ended.status : last!.type;
          const error = ended ? ended.error : last?.error;
          if (status !== "succeeded") {
            throw new ClawfleetError(
              error?.code ?? status.toUpperCase(),
              `task ${taskId} ${status}${error ? `: ${error.message}` : ""}`,
            );
          }
        });
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });

  withFleetFlags(program.command("cancel"))
    .description("cancel a task")
    .argument("<taskId>")
    .action(async (taskId: string, f: LocatorFlags) => {
      const task = await withClient(f, (c) => c.cancel(taskId));
      process.stdout.write(printTask(task));
    });

  withFleetFlags(program.command("status"))
    .description("print nodes, pools, containers and queue depth")
    .option("--json", "print JSON")
    .action(async (f: LocatorFlags & { json?: boolean }) => {
      const s = await withClient(f, (c) => c.status());
      process.stdout.write(f.json ? `${JSON.stringify(s, null, 2)}\n` : printStatus(s));
    });

  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  const info = toErrorInfo(err);
  process.stderr.write(
    `clawfleet: ${info.code === "INTERNAL" ? "" : `${info.code}: `}${info.message}\n`,
  );
  process.exitCode = 1;
}
