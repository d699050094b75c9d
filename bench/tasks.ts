import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Job, Queue, QueueEvents, Worker } from "bullmq";
import { processPoolAvailableSandbox } from "../src/index.js";
import { type Cleanup, tempDir, withCleanup } from "./lib/cleanup.js";
import { natsServerBinary, startBenchFleet, taskError } from "./lib/fleet-bench.js";
import {
  Completions,
  LatencyRecorder,
  type LatencySummary,
  round,
  runWindowed,
} from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { ensureRedisServer, redisVersion, startRedisServer } from "./lib/redis-server.js";
import { commandVersion, gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  tasks: { default: 2000, min: 1, help: "no-op tasks in the throughput run" },
  sessions: { default: 16, min: 1, help: "sessions the throughput tasks are spread over" },
  window: { default: 32, min: 1, help: "throughput tasks in flight at once" },
  latency: { default: 500, min: 1, help: "sequential submit→result calls on one session" },
  warmup: { default: 200, min: 0, help: "unmeasured tasks first (and warmup/4 latency calls)" },
  pool: { default: 4, min: 1, help: "fleet pool size (minIdle = max) = BullMQ concurrency" },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;

export const usage = `npm run bench -- tasks [options]

No-op task throughput and warm-path latency: a one-node clawfleet (own nats-server,
process pool) against BullMQ on a local redis-server. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

/** The reference agent's plain-text input: one step, appended to the session's memory. */
const INPUT = "ping";
const TASK_TIMEOUT_MS = 120_000;

/** What one side measured. */
interface SideResult {
  readonly throughput_tps: number;
  readonly throughput_elapsed_ms: number;
  /** Sequential calls on one warm session: the warm path. */
  readonly latency_ms: LatencySummary;
  /** Submit → result of every throughput task: latency with the window full. */
  readonly loaded_latency_ms: LatencySummary;
}

interface ClawfleetResult extends SideResult {
  /** Ladder rungs the throughput tasks were placed on. */
  readonly rungs: Record<string, number>;
  /** Throughput tasks that needed more than one attempt. */
  readonly retried: number;
  /** Tasks the fleet had run when each phase began (cost per task must not grow with it). */
  readonly fleet_tasks_before: { readonly throughput: number; readonly latency: number };
}

/** Runs the bench; resolves with the JSON report (and prints the summary on stderr). */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  const t0 = performance.now();
  const git = await gitState(); // before measuring: src/ may change during a long run
  return withCleanup(async (cleanup) => {
    // Both servers are checked first, so a missing one fails before a minute of measuring.
    const natsBinary = await natsServerBinary();
    const redisBinary = await ensureRedisServer();
    const root = await tempDir(cleanup, "clawfleet-bench-");

    const fleetSide = await cleanup.scope((c) => benchClawfleet(params, natsBinary, root, c));
    const bullSide = await cleanup.scope((c) => benchBullmq(params, redisBinary, root, c));

    const report = {
      bench: "tasks",
      date: startedAt.toISOString(),
      duration_s: round((performance.now() - t0) / 1000, 1),
      machine: machineInfo(),
      versions: {
        clawfleet: await packageVersion(".."),
        nats_server: await commandVersion(natsBinary, /v?(\d+\.\d+\.\d+\S*)/),
        bullmq: await packageVersion("../node_modules/bullmq"),
        redis_server: await redisVersion(redisBinary),
        git,
      },
      params: {
        ...params,
        input: INPUT,
        clawfleet: fleetSide.config,
        bullmq: {
          concurrency: params.pool,
          processor: "async no-op in this process",
          completion: "QueueEvents (throughput), job.waitUntilFinished (latency)",
          redis: 'redis-server --save "" --appendonly no, loopback TCP',
        },
      },
      clawfleet: fleetSide.result,
      bullmq: bullSide,
      ratios: ratios(fleetSide.result, bullSide),
    };
    process.stderr.write(summary(report));
    return report;
  });
}

// ---------------------------------------------------------------------------- clawfleet

async function benchClawfleet(params: Params, binary: string, root: string, cleanup: Cleanup) {
  const { options, client, results, stopResults } = await startBenchFleet(
    root,
    params.pool,
    binary,
    cleanup,
  );

  const rungs: Record<string, number> = {};
  let retried = 0;
  const loaded = new LatencyRecorder();
  const task = (measured: boolean) => async (i: number) => {
    const t0 = performance.now();
    const { taskId } = await client.submit({ session: `s${i % params.sessions}`, input: INPUT });
    const record = await results.wait(taskId, TASK_TIMEOUT_MS);
    if (!measured) return;
    loaded.record(performance.now() - t0);
    const rung = record.rung ?? "none";
    rungs[rung] = (rungs[rung] ?? 0) + 1;
    if (record.attempts > 1) retried++;
  };
  progress(`clawfleet: warmup (${params.warmup} tasks)`);
  await runWindowed(params.warmup, params.window, task(false));
  progress(`clawfleet: throughput (${params.tasks} tasks, window ${params.window})`);
  const elapsed = await runWindowed(params.tasks, params.window, task(true));
  stopResults();

  progress(`clawfleet: latency (${params.latency} sequential runs)`);
  const latency = new LatencyRecorder();
  const runOne = async () => {
    const record = await client.run({ session: "latency", input: INPUT, waitMs: TASK_TIMEOUT_MS });
    if (record.status !== "succeeded") throw taskError(record);
  };
  for (let i = 0; i < Math.ceil(params.warmup / 4); i++) await runOne();
  for (let i = 0; i < params.latency; i++) await latency.time(runOne);

  const { dataDir: _d, natsUrl: _n, nodeId: _id, ...shownOptions } = options;
  const config = { sandbox: await processPoolAvailableSandbox(), options: shownOptions };
  const result: ClawfleetResult = {
    throughput_tps: round((params.tasks * 1000) / elapsed, 1),
    throughput_elapsed_ms: round(elapsed, 1),
    latency_ms: latency.summary(),
    loaded_latency_ms: loaded.summary(),
    rungs,
    retried,
    fleet_tasks_before: {
      throughput: params.warmup,
      latency: params.warmup + params.tasks + Math.ceil(params.warmup / 4),
    },
  };
  progress(`clawfleet: ${result.throughput_tps} tasks/s, p50 ${result.latency_ms.p50} ms`);
  return { result, config };
}

// ------------------------------------------------------------------------------ BullMQ

interface JobData {
  readonly session: string;
  readonly input: string;
}

async function benchBullmq(
  params: Params,
  binary: string,
  root: string,
  cleanup: Cleanup,
): Promise<SideResult> {
  const dir = path.join(root, "redis");
  await mkdir(dir, { recursive: true });
  progress(`bullmq: starting redis-server and a worker (concurrency ${params.pool})`);
  const redis = await startRedisServer(binary, dir);
  cleanup.defer("stop redis-server", () => redis.stop());
  const connection = { host: redis.host, port: redis.port, maxRetriesPerRequest: null };
  const name = "bench-tasks";
  const queue = new Queue<JobData, string>(name, { connection });
  cleanup.defer("close the queue", () => queue.close());
  const events = new QueueEvents(name, { connection });
  cleanup.defer("close the queue events", () => events.close());
  const worker = new Worker<JobData, string>(
    name,
    async (job: Job<JobData, string>) => `ok: ${job.data.input}`,
    { connection, concurrency: params.pool },
  );
  cleanup.defer("close the worker", () => worker.close());
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), worker.waitUntilReady()]);

  const addAndWait = async (session: string) => {
    const job = await queue.add("noop", { session, input: INPUT });
    await job.waitUntilFinished(events, TASK_TIMEOUT_MS);
  };
  // QueueEvents reads new events only; one job through waitUntilFinished (which also
  // checks the job's state) makes sure its stream reader is live before the warmup.
  await addAndWait("s0");

  const done = new Completions<string>();
  const onCompleted = ({ jobId, returnvalue }: { jobId: string; returnvalue: string }) =>
    done.settle(jobId, returnvalue);
  const onFailed = ({ jobId, failedReason }: { jobId: string; failedReason: string }) =>
    done.fail(jobId, new Error(`job ${jobId} failed: ${failedReason}`));
  events.on("completed", onCompleted);
  events.on("failed", onFailed);
  const loaded = new LatencyRecorder();
  const job = (measured: boolean) => async (i: number) => {
    const t0 = performance.now();
    const added = await queue.add("noop", { session: `s${i % params.sessions}`, input: INPUT });
    if (added.id === undefined) throw new Error("BullMQ added a job without an id");
    await done.wait(added.id, TASK_TIMEOUT_MS);
    if (measured) loaded.record(performance.now() - t0);
  };
  progress(`bullmq: warmup (${params.warmup} jobs)`);
  await runWindowed(params.warmup, params.window, job(false));
  progress(`bullmq: throughput (${params.tasks} jobs, window ${params.window})`);
  const elapsed = await runWindowed(params.tasks, params.window, job(true));
  events.off("completed", onCompleted);
  events.off("failed", onFailed);

  progress(`bullmq: latency (${params.latency} sequential jobs)`);
  const latency = new LatencyRecorder();
  for (let i = 0; i < Math.ceil(params.warmup / 4); i++) await addAndWait("latency");
  for (let i = 0; i < params.latency; i++) await latency.time(() => addAndWait("latency"));

  const result: SideResult = {
    throughput_tps: round((params.tasks * 1000) / elapsed, 1),
    throughput_elapsed_ms: round(elapsed, 1),
    latency_ms: latency.summary(),
    loaded_latency_ms: loaded.summary(),
  };
  progress(`bullmq: ${result.throughput_tps} jobs/s, p50 ${result.latency_ms.p50} ms`);
  return result;
}

// ------------------------------------------------------------------------------ report

/** clawfleet ÷ BullMQ: throughput above 1 and latencies below 1 favour clawfleet. */
function ratios(cf: SideResult, bq: SideResult) {
  const r = (a: number, b: number) => (b > 0 ? Number((a / b).toPrecision(3)) : null);
  return {
    throughput: r(cf.throughput_tps, bq.throughput_tps),
    p50: r(cf.latency_ms.p50, bq.latency_ms.p50),
    p90: r(cf.latency_ms.p90, bq.latency_ms.p90),
    p99: r(cf.latency_ms.p99, bq.latency_ms.p99),
    max: r(cf.latency_ms.max, bq.latency_ms.max),
    loaded_p50: r(cf.loaded_latency_ms.p50, bq.loaded_latency_ms.p50),
    loaded_p99: r(cf.loaded_latency_ms.p99, bq.loaded_latency_ms.p99),
  };
}

interface SummaryInput {
  machine: { cpus: number; node: string };
  params: Params & { clawfleet: { sandbox: string } };
  clawfleet: ClawfleetResult;
  bullmq: SideResult;
  ratios: ReturnType<typeof ratios>;
  duration_s: number;
}

function summary(r: SummaryInput): string {
  const p = r.params;
  const rows: Array<[string, number, number, number | null]> = [
    [
      "throughput (tasks/s)",
      r.clawfleet.throughput_tps,
      r.bullmq.throughput_tps,
      r.ratios.throughput,
    ],
    ["latency p50 (ms)", r.clawfleet.latency_ms.p50, r.bullmq.latency_ms.p50, r.ratios.p50],
    ["latency p90 (ms)", r.clawfleet.latency_ms.p90, r.bullmq.latency_ms.p90, r.ratios.p90],
    ["latency p99 (ms)", r.clawfleet.latency_ms.p99, r.bullmq.latency_ms.p99, r.ratios.p99],
    ["latency max (ms)", r.clawfleet.latency_ms.max, r.bullmq.latency_ms.max, r.ratios.max],
    [
      "loaded p50 (ms)",
      r.clawfleet.loaded_latency_ms.p50,
      r.bullmq.loaded_latency_ms.p50,
      r.ratios.loaded_p50,
    ],
    [
      "loaded p99 (ms)",
      r.clawfleet.loaded_latency_ms.p99,
      r.bullmq.loaded_latency_ms.p99,
      r.ratios.loaded_p99,
    ],
  ];
  const num = (x: number | null) => (x === null ? "-" : String(x));
  const lines = [
    "",
    `tasks bench: ${r.machine.cpus} cpus, node ${r.machine.node}, ${r.duration_s} s`,
    `  ${p.tasks} no-op tasks over ${p.sessions} sessions, window ${p.window}; ` +
      `${p.latency} sequential latency calls; pool ${p.pool} (${p.clawfleet.sandbox}) vs BullMQ concurrency ${p.pool}`,
    "",
    `${"".padEnd(22)}${"clawfleet".padStart(12)}${"bullmq".padStart(12)}${"clawfleet/bullmq".padStart(19)}`,
    ...rows.map(
      ([label, a, b, ratio]) =>
        `${label.padEnd(22)}${num(a).padStart(12)}${num(b).padStart(12)}${num(ratio).padStart(19)}`,
    ),
    "",
    `  clawfleet placements: ${
      Object.entries(r.clawfleet.rungs)
        .map(([rung, n]) => `${rung} ${n}`)
        .join(", ") || "none"
    }; retried ${r.clawfleet.retried}`,
    `  the fleet had run ${r.clawfleet.fleet_tasks_before.throughput} tasks before the throughput run, ${r.clawfleet.fleet_tasks_before.latency} before the latency run`,
    "  throughput ratio > 1 and latency ratios < 1 favour clawfleet",
    "",
  ];
  return `${lines.join("\n")}\n`;
}

const benchDir = path.dirname(fileURLToPath(import.meta.url));

/** The `version` of a package.json relative to bench/, or null. */
async function packageVersion(dir: string): Promise<string | null> {
  try {
    const pkg = JSON.parse(await readFile(path.join(benchDir, dir, "package.json"), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? null;
  } catch {
    return null;
  }
}
