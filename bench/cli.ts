/**
 * `npm run bench -- cli`: how long one `clawfleet` call takes, from spawn to exit, as
 * a user runs it: `clawfleet --version`, and `clawfleet send` against a running
 * one-node fleet (`clawfleet up` in a temp data dir). Each is measured through the
 * bundle bin/clawfleet.js runs (dist/cli/, see scripts/build-cli.mjs) and, side by
 * side, through the old path: the sources compiled by tsx at every call
 * (`CLAWFLEET_FROM_SOURCE=1`). Calls run one at a time; the fleet stays up between
 * them, so `send` is the CLI's cost plus one warm turn (`send_task`: the task's own time,
 * created to finished, from its record). Each call's CPU time is reported beside its wall
 * time: on a loaded machine the wall time is as much the wait for a core.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { loadavg } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Cleanup, tempDir, withCleanup } from "./lib/cleanup.js";
import { LatencyRecorder, type LatencySummary, round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  runs: { default: 20, min: 1, help: "measured calls per command through the bundle" },
  baselineRuns: { default: 10, min: 0, help: "measured calls per command through tsx" },
  warmup: { default: 2, min: 0, help: "unmeasured calls per command and path first" },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;
type Path = "bundle" | "tsx";

export const usage = `npm run bench -- cli [options]

Wall time of one CLI call (spawn to exit): --version, and send against a running fleet,
through the bundle and through tsx. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

const CLI = fileURLToPath(new URL("../bin/clawfleet.js", import.meta.url));
const CALL_TIMEOUT_MS = 60_000;

/** Runs the bench; resolves with the JSON report. */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  const loadBefore = loadavg().map((x) => round(x, 2));
  return withCleanup(async (cleanup) => {
    const dataDir = path.join(await tempDir(cleanup, "clawfleet-bench-cli-"), "data");
    const env = { ...process.env, CLAWFLEET_DATA_DIR: dataDir };
    // Builds the bundle if the sources changed since the last build, so that cost
    // (paid once after an edit) is not in the figures.
    await call(["--version"], env);
    progress("starting a one-node fleet (clawfleet up)");
    await startFleet(env, dataDir, cleanup);
    const results: Partial<Record<Path, Results>> = {};
    for (const via of ["bundle", "tsx"] as const) {
      const runs = via === "bundle" ? params.runs : params.baselineRuns;
      if (runs === 0) continue;
      const viaEnv = via === "tsx" ? { ...env, CLAWFLEET_FROM_SOURCE: "1" } : env;
      const version = await measure(`${via}: --version`, ["--version"], viaEnv, runs, params);
      const send = await measureSend(`${via}: send`, `bench-${via}`, viaEnv, runs, params);
      results[via] = { version, ...send };
    }
    summarize(results);
    return {
      bench: "cli",
      started_at: startedAt.toISOString(),
      params,
      machine: { ...machineInfo(), loadavg_at_start: loadBefore },
      git: await gitState(),
      unit: "ms per call: wall (spawn to exit) and cpu (user + system, by GNU time); send_task: the task record's created → finished",
      results,
    };
  });
}

/**
 * GNU time, when installed, reports each call's CPU time (user + system): on a loaded
 * machine wall time measures the queue for a core as much as the CLI.
 */
const GNU_TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
const CPU_MARK = "clawfleet-bench-cpu";

interface Call {
  readonly stdout: string;
  readonly wallMs: number;
  readonly cpuMs: number | null;
}

/** Runs `clawfleet ...args` to completion; rejects unless it exits 0. */
function call(args: readonly string[], env: NodeJS.ProcessEnv): Promise<Call> {
  const argv = [CLI, ...args];
  const [file, fileArgs] = GNU_TIME
    ? [GNU_TIME, ["-f", `${CPU_MARK} %U %S`, process.execPath, ...argv]]
    : [process.execPath, argv];
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(file, fileArgs, { env, timeout: CALL_TIMEOUT_MS }, (err, stdout, stderr) => {
      const wallMs = performance.now() - t0;
      if (err) {
        reject(new Error(`clawfleet ${args.join(" ")}: ${err.message}\n${stderr}`));
        return;
      }
      const m = new RegExp(`${CPU_MARK} ([\\d.]+) ([\\d.]+)`).exec(stderr);
      const cpuMs = m ? (Number(m[1]) + Number(m[2])) * 1000 : null;
      resolve({ stdout, wallMs, cpuMs });
    });
  });
}

/** Wall and CPU time of a series of calls. */
class CallTimes {
  readonly wall = new LatencyRecorder();
  private readonly cpu = new LatencyRecorder();
  private cpuSeen = false;

  add(c: Call): void {
    this.wall.record(c.wallMs);
    if (c.cpuMs !== null) {
      this.cpu.record(c.cpuMs);
      this.cpuSeen = true;
    }
  }

  summary(): { wall: LatencySummary; cpu: LatencySummary | null } {
    return { wall: this.wall.summary(), cpu: this.cpuSeen ? this.cpu.summary() : null };
  }
}

/**
 * `send --json`: the call's wall time, and the task's own (created → finished, from its
 * record), so what the CLI adds is the difference.
 */
async function measureSend(
  label: string,
  session: string,
  env: NodeJS.ProcessEnv,
  runs: number,
  params: Params,
): Promise<{ send: Timed; send_task: LatencySummary }> {
  const args = ["send", "--session", session, "--json", "hello"];
  for (let i = 0; i < params.warmup; i++) await call(args, env);
  const times = new CallTimes();
  const task = new LatencyRecorder();
  for (let i = 0; i < runs; i++) {
    const c = await call(args, env);
    times.add(c);
    const record = JSON.parse(c.stdout) as {
      status: string;
      createdAt: string;
      finishedAt: string;
    };
    if (record.status !== "succeeded") throw new Error(`${label}: task ${record.status}`);
    task.record(Date.parse(record.finishedAt) - Date.parse(record.createdAt));
  }
  const s = times.summary();
  const t = task.summary();
  progress(`${label}: ${line(s)}; the task itself p50 ${t.p50} ms`);
  return { send: s, send_task: t };
}

type Timed = ReturnType<CallTimes["summary"]>;

function line(s: Timed): string {
  const cpu = s.cpu ? `, CPU p50 ${s.cpu.p50} ms` : "";
  return `wall p50 ${s.wall.p50} ms, p90 ${s.wall.p90} ms${cpu} (${s.wall.count} calls)`;
}

async function measure(
  label: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  runs: number,
  params: Params,
): Promise<Timed> {
  for (let i = 0; i < params.warmup; i++) await call(args, env);
  const times = new CallTimes();
  for (let i = 0; i < runs; i++) times.add(await call(args, env));
  const s = times.summary();
  progress(`${label}: ${line(s)}`);
  return s;
}

/** `clawfleet up` in `dataDir`, stopped by `cleanup`; resolves once a `send` succeeds. */
async function startFleet(env: NodeJS.ProcessEnv, dataDir: string, cleanup: Cleanup) {
  const child = spawn(process.execPath, [CLI, "up", "--data-dir", dataDir], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  cleanup.defer("stop the fleet", async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
    await exited;
  });
  const deadline = Date.now() + CALL_TIMEOUT_MS;
  const fleetFile = path.join(dataDir, "fleet.json");
  for (;;) {
    if (child.exitCode !== null) throw new Error(`clawfleet up exited early:\n${stderr}`);
    if (existsSync(fleetFile)) {
      const ok = await call(["send", "--session", "bench-ready", "hello"], env).then(
        () => true,
        () => false,
      );
      if (ok) return;
    }
    if (Date.now() > deadline) throw new Error(`the fleet did not answer in time:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Results {
  readonly version: Timed;
  readonly send: Timed;
  readonly send_task: LatencySummary;
}

function summarize(results: Partial<Record<Path, Results>>): void {
  const { bundle, tsx } = results;
  if (!bundle) return;
  for (const cmd of ["version", "send"] as const) {
    const b = bundle[cmd];
    const t = tsx?.[cmd];
    const cpu = b.cpu ? ` (CPU ${b.cpu.p50} ms)` : "";
    const tcpu = t?.cpu ? ` (CPU ${t.cpu.p50} ms)` : "";
    const versus = t
      ? `; tsx p50 ${t.wall.p50} ms${tcpu}, ${round(t.wall.p50 / b.wall.p50, 1)}×`
      : "";
    progress(`${cmd}: bundle p50 ${b.wall.p50} ms${cpu} / p90 ${b.wall.p90} ms${versus}`);
  }
}
