/**
 * What the fleet benches share: a one-node fleet on its own nats-server, its
 * results followed on one wildcard subscription, and the CPU time of processes.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import {
  ensureNatsServer,
  FleetClient,
  findNatsServer,
  fleetSubjects,
  type NatsServerHandle,
  type ResolvedFleetOptions,
  resolveFleetOptions,
  startLocalFleet,
  startNatsServer,
  type TaskRecord,
} from "../../src/index.js";
import type { Cleanup } from "./cleanup.js";
import { Completions } from "./measure.js";
import { progress } from "./report.js";

const POOL_READY_TIMEOUT_MS = 60_000;

/** A running one-node fleet, its server and a client whose results arrive in `results`. */
export interface BenchFleet {
  readonly server: NatsServerHandle;
  readonly options: ResolvedFleetOptions;
  readonly client: FleetClient;
  /** Every finished task, settled (succeeded) or failed by id. */
  readonly results: Completions<TaskRecord>;
  /** Stops following results (before a phase that does not need them). */
  stopResults(): void;
}

/** Starts nats-server in `root/nats` and a one-node fleet with a pool of `pool` agents. */
export async function startBenchFleet(
  root: string,
  pool: number,
  binary: string,
  cleanup: Cleanup,
): Promise<BenchFleet> {
  const natsDir = path.join(root, "nats");
  progress(`clawfleet: starting nats-server and a one-node fleet (pool ${pool})`);
  const server = await startNatsServer({
    storeDir: natsDir,
    binary,
    logFile: path.join(natsDir, "nats-server.log"),
  });
  cleanup.defer("stop nats-server", () => server.stop());
  const options = resolveFleetOptions({
    nodeId: "bench",
    natsUrl: server.url,
    dataDir: path.join(root, "fleet"),
    pools: [{ minIdle: pool, max: pool }],
  });
  const fleet = await startLocalFleet(options);
  cleanup.defer("stop the fleet", () => fleet.stop());
  const client = await FleetClient.connect(server.url, { prefix: options.prefix });
  cleanup.defer("close the client", () => client.close());
  await waitForIdleContainers(client, pool);

  // Results arrive on one wildcard subscription, as any client may follow them.
  const results = new Completions<TaskRecord>();
  const sub = client.nc.subscribe(fleetSubjects(options.prefix).resultsWildcard, {
    callback: (err, msg) => {
      if (err) return;
      const record = msg.json<TaskRecord>();
      if (record.status === "succeeded") results.settle(record.taskId, record);
      else results.fail(record.taskId, taskError(record));
    },
  });
  cleanup.defer("unsubscribe from results", () => sub.unsubscribe());
  await client.nc.flush();
  return { server, options, client, results, stopResults: () => sub.unsubscribe() };
}

/** Waits until the pool has started its warm containers. */
async function waitForIdleContainers(client: FleetClient, count: number): Promise<void> {
  const deadline = Date.now() + POOL_READY_TIMEOUT_MS;
  for (;;) {
    const status = await client.status().catch(() => null);
    const idle = status?.containers.idle ?? 0;
    if (idle >= count) return;
    if (Date.now() > deadline) {
      throw new Error(
        `the pool has ${idle} idle containers of ${count} after ${POOL_READY_TIMEOUT_MS} ms: ${JSON.stringify(status?.containers ?? null)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A failed or canceled task as an error naming its code. */
export function taskError(record: TaskRecord): Error {
  const why = record.error ? `${record.error.code}: ${record.error.message}` : "no error recorded";
  return new Error(`task ${record.taskId} (session ${record.session}) ${record.status}: ${why}`);
}

/** nats-server's path; installed with apt-get first when missing and we are root. */
export async function natsServerBinary(): Promise<string> {
  const found = findNatsServer();
  if (found !== null) return found;
  const root = process.getuid?.() === 0;
  if (root)
    progress("nats-server is missing; installing it as root: apt-get install -y nats-server");
  return ensureNatsServer({ autoInstall: root });
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux build that matters). */
const USER_HZ = 100;

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat. */
export async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // The command name may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5) (utime, stime) are at 11 and 12 after the name and state.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
}

/** This process's CPU time (user + system) so far, in ms. */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
