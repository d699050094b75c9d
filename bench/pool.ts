import path from "node:path";
import {
  FleetClient,
  findNatsServer,
  fleetSubjects,
  processPoolAvailableSandbox,
  resolveFleetOptions,
  startLocalFleet,
  startNatsServer,
} from "../src/index.js";
import { DockerEngine } from "../test/harness/docker-engine.js";
import { type Cleanup, tempDir, withCleanup } from "./lib/cleanup.js";
import { Completions, LatencyRecorder, type LatencySummary, round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  sessions: { default: 20, min: 1, help: "new sessions measured per pool kind and mode" },
  warmup: { default: 2, min: 0, help: "unmeasured new sessions first, per run" },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;
type Kind = "process" | "docker";
type Mode = "warm" | "cold";

export const usage = `npm run bench -- pool [options]

Submit → first step of a new session's task, warm pool vs cold start, for the process and the
Docker pool. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

const TIMEOUT_MS = 60_000;

interface RunResult {
  readonly first_step_ms: LatencySummary;
  /** Ladder rungs the measured tasks were placed on: `idle` when warm, `new` when cold. */
  readonly rungs: Record<string, number>;
}

/** Runs the bench; resolves with the JSON report. */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const t0 = performance.now();
  const startedAt = new Date();
  return withCleanup(async (cleanup) => {
    const natsBinary = findNatsServer();
    if (natsBinary === null) throw new Error("nats-server is missing: apt-get install nats-server");
    progress("docker: finding or starting an engine, building the agent image if needed");
    const engine = await DockerEngine.start();
    cleanup.defer("release the Docker engine", () => engine[Symbol.asyncDispose]());
    const image = await engine.ensureAgentImage();
    const root = await tempDir(cleanup, "clawfleet-bench-pool-");
    const results: Record<string, Record<Mode, RunResult>> = {};
    for (const kind of ["process", "docker"] as const) {
      const byMode = {} as Record<Mode, RunResult>;
      for (const mode of ["warm", "cold"] as const) {
        byMode[mode] = await cleanup.scope((c) =>
          measure(kind, mode, params, { natsBinary, root, host: engine.host }, c),
        );
      }
      results[kind] = byMode;
    }
    const version = await engine.docker.version();
    const ratio = (k: Kind) =>
      round(results[k]!.cold.first_step_ms.p50 / results[k]!.warm.first_step_ms.p50, 2);
    const report = {
      bench: "pool",
      date: startedAt.toISOString(),
      duration_s: round((performance.now() - t0) / 1000, 1),
      machine: machineInfo(),
      versions: { docker_engine: version.Version, agent_image: image.id.slice(7, 19) },
      params: {
        ...params,
        process_sandbox: await processPoolAvailableSandbox(),
        measured: "client submit → the node's first step event of the task (step 1 checkpointed)",
        warm: "minIdle 1: an idle container is ready when the task arrives",
        cold: "minIdle 0: the task's placement starts a new container",
      },
      results,
      cold_over_warm_p50: { process: ratio("process"), docker: ratio("docker") },
    };
    process.stderr.write(summary(report.results, params));
    return report;
  });
}

async function measure(
  kind: Kind,
  mode: Mode,
  params: Params,
  env: { natsBinary: string; root: string; host: string },
  cleanup: Cleanup,
): Promise<RunResult> {
  progress(`${kind} pool, ${mode}: starting nats-server and a one-node fleet`);
  const dir = path.join(env.root, `${kind}-${mode}`);
  const server = await startNatsServer({
    storeDir: path.join(dir, "nats"),
    binary: env.natsBinary,
  });
  cleanup.defer("stop nats-server", () => server.stop());
  const total = params.warmup + params.sessions;
  const options = resolveFleetOptions({
    nodeId: "bench",
    prefix: `bench${kind}${mode}`,
    natsUrl: server.url,
    dataDir: path.join(dir, "fleet"),
    // Room for every session's container, so no task has to take another's reservation.
    pools: [{ kind, minIdle: mode === "warm" ? 1 : 0, max: total + 2 }],
    docker: { host: env.host },
  });
  const fleet = await startLocalFleet(options);
  cleanup.defer("stop the fleet", () => fleet.stop());
  const client = await FleetClient.connect(server.url, { prefix: options.prefix });
  cleanup.defer("close the client", () => client.close());

  const firstSteps = new Completions<number>();
  const sub = client.nc.subscribe(fleetSubjects(options.prefix).taskEventsWildcard, {
    callback: (err, msg) => {
      if (err) return;
      const e = msg.json<{ type: string; taskId: string; step?: number }>();
      if (e.type === "step" && e.step === 1) firstSteps.settle(e.taskId, performance.now());
    },
  });
  cleanup.defer("unsubscribe", () => sub.unsubscribe());
  await client.nc.flush();

  const latency = new LatencyRecorder();
  const rungs: Record<string, number> = {};
  for (let i = 0; i < total; i++) {
    if (mode === "warm") await waitForIdle(client);
    const t0 = performance.now();
    const { taskId } = await client.submit({ session: `new-${i}`, input: "hello" });
    const at = await firstSteps.wait(taskId, TIMEOUT_MS);
    const record = await waitForEnd(client, taskId);
    if (record.status !== "succeeded") throw new Error(`task ${taskId} ${record.status}`);
    if (i < params.warmup) continue;
    latency.record(at - t0);
    rungs[record.rung ?? "none"] = (rungs[record.rung ?? "none"] ?? 0) + 1;
  }
  const result = { first_step_ms: latency.summary(), rungs };
  progress(`${kind} pool, ${mode}: p50 ${result.first_step_ms.p50} ms`);
  return result;
}

async function waitForIdle(client: FleetClient): Promise<void> {
  for (const t0 = Date.now(); Date.now() - t0 < TIMEOUT_MS; await pause(20)) {
    const status = await client.status().catch(() => null);
    if ((status?.containers.idle ?? 0) >= 1) return;
  }
  throw new Error("the pool kept no idle container");
}

async function waitForEnd(client: FleetClient, taskId: string) {
  for (const t0 = Date.now(); Date.now() - t0 < TIMEOUT_MS; await pause(20)) {
    const record = await client.task(taskId);
    if (record.status !== "queued" && record.status !== "running") return record;
  }
  throw new Error(`task ${taskId} did not end`);
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function summary(results: Record<string, Record<Mode, RunResult>>, params: Params): string {
  const lines = [
    "",
    `pool bench: submit → first step of a new session, ${params.sessions} sessions each`,
    `${"".padEnd(10)}${"warm p50".padStart(10)}${"warm p90".padStart(10)}${"cold p50".padStart(10)}${"cold p90".padStart(10)}`,
  ];
  for (const [kind, r] of Object.entries(results)) {
    const w = r.warm.first_step_ms;
    const c = r.cold.first_step_ms;
    lines.push(
      `${kind.padEnd(10)}${[w.p50, w.p90, c.p50, c.p90].map((x) => String(x).padStart(10)).join("")}`,
    );
  }
  return `${lines.join("\n")}\n  (ms)\n\n`;
}
