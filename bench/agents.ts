/**
 * `npm run bench -- agents`: what a turn of a real agent costs, per runtime, and what
 * the model bridge adds to each model call. Everything runs against aimock on loopback
 * (the model stand-in), whose own latency is shown beside the figures.
 *
 * - bridge: one CLI agent (test/harness/model-caller.mjs) makes `calls` chat completions
 *   one after another and times each itself, run twice: on the host straight against
 *   the stand-in (the baseline), and as a `command` turn in its sandbox, through the
 *   shim → node → model gateway → stand-in. Same program, same client code.
 * - per runtime (`command`, and `openclaw` when installed), submit → result of a
 *   one-model-call turn: `warm` (the same session again on its warm container),
 *   `switch` (another session on the same warm container: a pool of one, sessions
 *   alternating) and `cold` (a new fleet whose pool starts its container for the task).
 * - OpenClaw's baseline: its own one-shot `openclaw agent --local` turn against the
 *   same stand-in, which the warm path must beat by an order of magnitude; and the
 *   peak resident memory of the OpenClaw processes.
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { managedConfig, mergeManaged, REMOVE } from "../src/agents/openclaw-config.js";
import {
  FleetClient,
  locateOpenClaw,
  type PoolProfileOptions,
  resolveFleetOptions,
  startLocalFleet,
  startNatsServer,
  type TaskRecord,
} from "../src/index.js";
import { ModelStandIn } from "../test/harness/model-stand-in.js";
import { type Cleanup, tempDir, withCleanup } from "./lib/cleanup.js";
import { natsServerBinary, taskError } from "./lib/fleet-bench.js";
import { LatencyRecorder, type LatencySummary, round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  runs: { default: 20, min: 1, help: "measured warm and switch turns per case, command runtime" },
  openclawRuns: { default: 6, min: 0, help: "measured turns per case with OpenClaw (0: skip it)" },
  cold: { default: 3, min: 0, help: "cold turns per runtime (a new fleet each)" },
  calls: { default: 50, min: 1, help: "model calls timed for the bridge's overhead" },
  baseline: { default: 2, min: 0, help: "OpenClaw one-shot `agent --local` turns (its baseline)" },
} satisfies Record<string, IntParam>;
type Params = Record<keyof typeof PARAMS, number>;

export const usage = `npm run bench -- agents [options]

Submit → result per agent runtime (warm, after a session switch, cold) and the model
bridge's added latency per call, against aimock. OpenClaw is measured when installed
(clawfleet runtime install openclaw). JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

const CALLER = fileURLToPath(new URL("../test/harness/model-caller.mjs", import.meta.url));
const KEY_ENV = "CLAWFLEET_BENCH_MODEL_KEY";
const WAIT_MS = 10 * 60_000;

interface Bench {
  readonly cleanup: Cleanup;
  readonly root: string;
  readonly natsUrl: string;
  readonly model: ModelStandIn;
  fleets: number;
}

/** Runs the bench; resolves with the JSON report. */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  return withCleanup(async (cleanup) => {
    const root = await tempDir(cleanup, "clawfleet-bench-agents-");
    const server = await startNatsServer({
      storeDir: path.join(root, "nats"),
      binary: await natsServerBinary(),
    });
    cleanup.defer("stop nats-server", () => server.stop());
    const model = (await ModelStandIn.start()).countUserMessages();
    cleanup.defer("stop the stand-in", () => model.stop());
    process.env[KEY_ENV] = "sk-bench-not-a-real-key";
    const b: Bench = { cleanup, root, natsUrl: server.url, model, fleets: 0 };

    const bridge = await benchBridge(b, params);
    const command = await benchRuntime(b, params.runs, params.cold, {
      runtime: "command",
      command: { argv: [process.execPath, CALLER], input: "stdin" },
    });
    let openclaw: object | null = null;
    const installed = await locateOpenClaw().catch((err: Error) => err);
    if (params.openclawRuns > 0 && !(installed instanceof Error)) {
      const peak = new PeakRss();
      const runtime = await benchRuntime(
        b,
        params.openclawRuns,
        params.cold,
        { runtime: "openclaw" },
        peak,
      );
      const baseline = await benchOpenClawOneShot(b, params.baseline, installed);
      openclaw = { ...runtime, one_shot_baseline: baseline, peak_rss_mb: peak.maxMb };
    } else if (params.openclawRuns > 0) {
      progress(`OpenClaw skipped: ${(installed as Error).message}`);
    }
    const report = {
      bench: "agents",
      started_at: startedAt.toISOString(),
      params,
      machine: machineInfo(),
      git: await gitState(),
      unit: "ms; turns: submit → result through the API; bridge: per model call as the agent timed it",
      stand_in: "aimock 1.43.0 on loopback (no added latency)",
      bridge,
      runtimes: { command, ...(openclaw ? { openclaw } : {}) },
    };
    summarize(report);
    return report;
  });
}

/** The same program timing its calls: straight to the stand-in, then through the bridge. */
async function benchBridge(b: Bench, params: Params) {
  progress(`bridge: ${params.calls} calls direct, then through the bridge`);
  const input = `calls: ${params.calls}`;
  const direct = await callerWithInput(b.model.openaiUrl, input);
  const fleet = await startFleet(b, {
    runtime: "command",
    command: { argv: [process.execPath, CALLER], input: "stdin" },
  });
  const task = await runTask(fleet.client, "bridge", input);
  await fleet.stop();
  const viaDirect = summaryOf(JSON.parse(direct) as number[]);
  const viaBridge = summaryOf(JSON.parse(task.output ?? "[]") as number[]);
  return {
    direct: viaDirect,
    bridged: viaBridge,
    added_ms_p50: round(viaBridge.p50 - viaDirect.p50, 3),
    ratio_p50: round(viaBridge.p50 / viaDirect.p50, 2),
  };
}

function callerWithInput(baseUrl: string, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CALLER], {
      env: { PATH: process.env.PATH ?? "", OPENAI_BASE_URL: baseUrl, OPENAI_API_KEY: "x" },
      stdio: ["pipe", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
    child.stdin.end(input);
  });
}

/** warm, switch and cold submit → result of one runtime. */
async function benchRuntime(
  b: Bench,
  runs: number,
  coldRuns: number,
  pool: PoolProfileOptions,
  peak?: PeakRss,
) {
  const name = pool.runtime!;
  const ask = (text: string) => (name === "command" ? `ask: ${text}` : text);
  progress(`${name}: warm and switch turns on a pool of one`);
  const fleet = await startFleet(b, { ...pool, minIdle: 1, max: 1 });
  const warm = new LatencyRecorder();
  const switched = new LatencyRecorder();
  // Unmeasured: the container's first turn restores the session (and starts OpenClaw).
  await runTask(fleet.client, "warm", ask("first"));
  for (let i = 0; i < runs; i++) {
    await warm.time(() => runTask(fleet.client, "warm", ask(`warm ${i}`)));
    await peak?.sample();
  }
  for (let i = 0; i < runs; i++) {
    await switched.time(() => runTask(fleet.client, `switch-${i % 2}`, ask(`switch ${i}`)));
    await peak?.sample();
  }
  await fleet.stop();
  const cold = new LatencyRecorder();
  for (let i = 0; i < coldRuns; i++) {
    progress(`${name}: cold turn ${i + 1}/${coldRuns} (a new fleet)`);
    const fresh = await startFleet(b, { ...pool, minIdle: 0, max: 1 });
    await cold.time(() => runTask(fresh.client, `cold-${i}`, ask(`cold ${i}`)));
    await peak?.sample();
    await fresh.stop();
  }
  return { warm: warm.summary(), switch: switched.summary(), cold: cold.summary() };
}

/** OpenClaw's own `agent --local`, one process per turn, straight against the stand-in. */
async function benchOpenClawOneShot(
  b: Bench,
  runs: number,
  oc: { node: string; entry: string },
): Promise<LatencySummary | null> {
  if (runs === 0) return null;
  const dir = path.join(b.root, "oneshot");
  const state = path.join(dir, "state");
  await mkdir(state, { recursive: true });
  const config = mergeManaged(
    {},
    managedConfig({
      workspace: dir,
      stateDir: state,
      port: 18_999,
      model: {
        baseUrl: b.model.openaiUrl,
        api: "openai",
        model: "bench",
        contextWindow: 128_000,
        maxTokens: 4096,
      },
    }),
  );
  await writeFile(
    path.join(dir, "openclaw.json"),
    JSON.stringify(config, (_k, v) => (v === REMOVE ? undefined : v)),
  );
  const recorder = new LatencyRecorder();
  for (let i = 0; i < runs; i++) {
    progress(`openclaw: one-shot agent --local turn ${i + 1}/${runs}`);
    await recorder.time(() =>
      promisify(execFile)(
        oc.node,
        [oc.entry, "agent", "--local", "--session-id", "oneshot", "-m", `turn ${i}`, "--json"],
        {
          cwd: dir,
          env: {
            PATH: `${path.dirname(oc.node)}:${process.env.PATH ?? ""}`,
            HOME: dir,
            XDG_CACHE_HOME: path.join(dir, "cache"),
            OPENCLAW_STATE_DIR: state,
            OPENCLAW_CONFIG_PATH: path.join(dir, "openclaw.json"),
            OPENCLAW_NO_AUTO_UPDATE: "1",
            OPENCLAW_OFFLINE: "1",
          },
          maxBuffer: 64 * 2 ** 20,
          timeout: 300_000,
        },
      ),
    );
  }
  return recorder.summary();
}

/** A fleet of its own (prefix, node, data dir) on the bench's nats-server. */
async function startFleet(b: Bench, pool: PoolProfileOptions) {
  const n = ++b.fleets;
  const options = resolveFleetOptions({
    prefix: `bench${n}`,
    nodeId: `bench-${n}`,
    natsUrl: b.natsUrl,
    dataDir: path.join(b.root, `fleet-${n}`),
    pools: [{ agentHeartbeatMs: 500, ...pool }],
    models: { upstreams: { default: { baseUrl: b.model.openaiUrl, keyEnv: KEY_ENV } } },
  });
  const fleet = await startLocalFleet(options);
  const client = await FleetClient.connect(b.natsUrl, { prefix: options.prefix });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await client.close();
    await fleet.stop();
  };
  b.cleanup.defer(`stop fleet ${n}`, stop);
  return { client, stop };
}

async function runTask(client: FleetClient, session: string, input: string): Promise<TaskRecord> {
  const record = await client.run({ session, input, waitMs: WAIT_MS });
  if (record.status !== "succeeded") throw taskError(record);
  return record;
}

function summaryOf(values: readonly number[]): LatencySummary {
  const r = new LatencyRecorder();
  for (const v of values) r.record(v);
  return r.summary();
}

/** The largest peak resident set (VmHWM) seen among OpenClaw's processes. */
class PeakRss {
  maxMb = 0;

  async sample(): Promise<void> {
    for (const pid of await readdir("/proc").catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8");
        if (!cmd.includes("openclaw")) continue;
        const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"));
        if (m) this.maxMb = Math.max(this.maxMb, round(Number(m[1]) / 1024, 0));
      } catch {
        // gone meanwhile
      }
    }
  }
}

function summarize(report: {
  bridge: {
    direct: LatencySummary;
    bridged: LatencySummary;
    added_ms_p50: number;
    ratio_p50: number;
  };
  runtimes: Record<string, object>;
}): void {
  const b = report.bridge;
  progress(
    `bridge per model call p50: direct ${b.direct.p50} ms, bridged ${b.bridged.p50} ms (+${b.added_ms_p50} ms, ×${b.ratio_p50}); p99 ${b.direct.p99} → ${b.bridged.p99} ms`,
  );
  for (const [name, r] of Object.entries(report.runtimes) as [
    string,
    Record<string, LatencySummary | number | null>,
  ][]) {
    const line = ["warm", "switch", "cold"]
      .map((k) => {
        const s = r[k] as LatencySummary | undefined;
        return s && s.count > 0 ? `${k} p50 ${s.p50} / p99 ${s.p99} ms` : `${k} -`;
      })
      .join(", ");
    const base = r.one_shot_baseline as LatencySummary | null | undefined;
    const extra = base
      ? `; one-shot agent --local p50 ${base.p50} ms; peak RSS ${r.peak_rss_mb} MB`
      : "";
    progress(`${name}: ${line}${extra}`);
  }
}
