/**
 * `npm run bench -- aging`: does a task cost more as the fleet's history grows?
 * One fleet runs many no-op tasks back to back; every window of tasks reports its
 * throughput, the nats-server's CPU per task (from /proc), this process's CPU per
 * task (the fleet's roles and the client; the agents are separate processes) and
 * the number of messages the fleet's streams and buckets hold by then.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { jetstreamManager } from "@nats-io/jetstream";
import { tempDir, withCleanup } from "./lib/cleanup.js";
import { natsServerBinary, ownCpuMs, processCpuMs, startBenchFleet } from "./lib/fleet-bench.js";
import { LatencyRecorder, type LatencySummary, round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { commandVersion, gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  tasks: { default: 20_000, min: 1, help: "tasks in all" },
  window: { default: 1000, min: 1, help: "tasks per reported window" },
  sessions: { default: 16, min: 1, help: "sessions the tasks are spread over" },
  inflight: { default: 32, min: 1, help: "tasks in flight at once" },
  pool: { default: 4, min: 1, help: "fleet pool size (minIdle = max)" },
  warmup: { default: 200, min: 0, help: "unmeasured tasks first" },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;

export const usage = `npm run bench -- aging [options]

Cost per task as the fleet's history grows: one fleet (own nats-server, process pool,
reference agent, plain-text input) runs --tasks tasks; every --window tasks it reports
throughput, nats-server CPU per task and this process's CPU per task. Goal: the last
window within 10 % of the first. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

const INPUT = "ping";
const TASK_TIMEOUT_MS = 120_000;
/** How far the last window may be from the first and still pass. */
const TOLERANCE = 0.1;

/** One window of tasks. */
interface Window {
  /** Tasks the fleet had finished when the window began (warmup included). */
  readonly after_tasks: number;
  readonly tasks: number;
  readonly elapsed_s: number;
  readonly tasks_per_s: number;
  /** nats-server user + system CPU per task. */
  readonly server_cpu_ms_per_task: number;
  /** This process's (fleet roles + client) user + system CPU per task. */
  readonly fleet_cpu_ms_per_task: number;
  /** Submit → result, with the window's load. */
  readonly latency_ms: LatencySummary;
  /** Messages in each stream when the window ended. */
  readonly stream_messages: Record<string, number>;
}

export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  const t0 = performance.now();
  const git = await gitState();
  return withCleanup(async (cleanup) => {
    const binary = await natsServerBinary();
    const root = await tempDir(cleanup, "clawfleet-aging-");
    const { server, client, results } = await startBenchFleet(root, params.pool, binary, cleanup);
    const jsm = await jetstreamManager(client.nc);

    let done = 0;
    let submitted = 0;
    let latency = new LatencyRecorder();
    /** Runs `count` tasks with `inflight` at a time; each lane submits and waits. */
    const drive = async (count: number, record: boolean) => {
      const end = submitted + count;
      const lane = async () => {
        while (submitted < end) {
          const i = submitted++;
          const start = performance.now();
          const { taskId } = await client.submit({
            session: `s${i % params.sessions}`,
            input: INPUT,
          });
          await results.wait(taskId, TASK_TIMEOUT_MS);
          if (record) latency.record(performance.now() - start);
          done++;
        }
      };
      await Promise.all(Array.from({ length: Math.min(params.inflight, count) }, lane));
    };

    progress(`aging: warmup (${params.warmup} tasks)`);
    await drive(params.warmup, false);
    const windows: Window[] = [];
    for (let left = params.tasks; left > 0; left -= params.window) {
      const n = Math.min(params.window, left);
      const after = done;
      latency = new LatencyRecorder();
      const serverCpu0 = await processCpuMs(server.pid);
      const ownCpu0 = ownCpuMs();
      const w0 = performance.now();
      await drive(n, true);
      const elapsed = (performance.now() - w0) / 1000;
      const w: Window = {
        after_tasks: after,
        tasks: n,
        elapsed_s: round(elapsed, 2),
        tasks_per_s: round(n / elapsed, 1),
        server_cpu_ms_per_task: round(((await processCpuMs(server.pid)) - serverCpu0) / n, 2),
        fleet_cpu_ms_per_task: round((ownCpuMs() - ownCpu0) / n, 2),
        latency_ms: latency.summary(),
        stream_messages: await streamMessages(jsm),
      };
      windows.push(w);
      progress(
        `aging: tasks ${after}-${after + n}: ${w.tasks_per_s} tasks/s, server ${w.server_cpu_ms_per_task} ms/task, fleet ${w.fleet_cpu_ms_per_task} ms/task, p50 ${w.latency_ms.p50} ms`,
      );
    }

    const first = windows[0]!;
    const last = windows.at(-1)!;
    const change = (a: number, b: number) => (a > 0 ? round((b - a) / a, 3) : null);
    const verdict = {
      throughput_change: change(first.tasks_per_s, last.tasks_per_s),
      server_cpu_change: change(first.server_cpu_ms_per_task, last.server_cpu_ms_per_task),
      fleet_cpu_change: change(first.fleet_cpu_ms_per_task, last.fleet_cpu_ms_per_task),
    };
    // The same with the median of three windows at each end: steadier on a shared machine.
    const ends = (pick: (w: Window) => number) => {
      const median = (ws: Window[]) =>
        ws.map(pick).sort((a, b) => a - b)[Math.floor(ws.length / 2)]!;
      const k = Math.min(3, Math.floor(windows.length / 2)) || 1;
      return change(median(windows.slice(0, k)), median(windows.slice(-k)));
    };
    const medians = {
      throughput_change: ends((w) => w.tasks_per_s),
      server_cpu_change: ends((w) => w.server_cpu_ms_per_task),
      fleet_cpu_change: ends((w) => w.fleet_cpu_ms_per_task),
    };
    const within = (x: number | null, worse: 1 | -1) => x !== null && x * worse <= TOLERANCE;
    const report = {
      bench: "aging",
      date: startedAt.toISOString(),
      duration_s: round((performance.now() - t0) / 1000, 1),
      machine: machineInfo(),
      versions: {
        nats_server: await commandVersion(binary, /v?(\d+\.\d+\.\d+\S*)/),
        git,
      },
      params: { ...params, input: INPUT },
      windows,
      median_first3_vs_last3: medians,
      first_vs_last: {
        ...verdict,
        tolerance: TOLERANCE,
        // Worse means fewer tasks/s or more CPU per task.
        holds:
          within(verdict.throughput_change, -1) &&
          within(verdict.server_cpu_change, 1) &&
          within(verdict.fleet_cpu_change, 1),
      },
    };
    process.stderr.write(summary(params, windows, report.first_vs_last, medians));
    return report;
  });
}

/** Messages held by each stream (KV buckets, the object store and the fleet's streams). */
async function streamMessages(jsm: JetStreamManager): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for await (const si of jsm.streams.list()) out[si.config.name] = si.state.messages;
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

function summary(
  p: Params,
  windows: readonly Window[],
  v: {
    throughput_change: number | null;
    server_cpu_change: number | null;
    fleet_cpu_change: number | null;
    holds: boolean;
  },
  m: {
    throughput_change: number | null;
    server_cpu_change: number | null;
    fleet_cpu_change: number | null;
  },
): string {
  const pct = (x: number | null) =>
    x === null ? "-" : `${x > 0 ? "+" : ""}${round(x * 100, 1)} %`;
  const snapshots = (w: Window) =>
    Object.entries(w.stream_messages).find(([name]) => name.endsWith("_snapshots"))?.[1] ?? 0;
  const lines = [
    "",
    `aging bench: ${p.tasks} tasks over ${p.sessions} sessions, ${p.inflight} in flight, pool ${p.pool}`,
    "",
    `${"after".padStart(8)}${"tasks/s".padStart(10)}${"server ms/task".padStart(16)}${"fleet ms/task".padStart(15)}${"p50 ms".padStart(9)}${"snapshot kv msgs".padStart(18)}`,
    ...windows.map(
      (w) =>
        `${String(w.after_tasks).padStart(8)}${String(w.tasks_per_s).padStart(10)}${String(w.server_cpu_ms_per_task).padStart(16)}${String(w.fleet_cpu_ms_per_task).padStart(15)}${String(w.latency_ms.p50).padStart(9)}${String(snapshots(w)).padStart(18)}`,
    ),
    "",
    `  last vs first window: throughput ${pct(v.throughput_change)}, server CPU/task ${pct(v.server_cpu_change)}, fleet CPU/task ${pct(v.fleet_cpu_change)}`,
    `  median of the last 3 vs the first 3: throughput ${pct(m.throughput_change)}, server CPU/task ${pct(m.server_cpu_change)}, fleet CPU/task ${pct(m.fleet_cpu_change)}`,
    `  goal (each within ${TOLERANCE * 100} %, in the worse direction): ${v.holds ? "holds" : "does not hold"}`,
    "",
  ];
  return `${lines.join("\n")}\n`;
}
