/**
 * `npm run bench -- ladder`: the placement simulator (`src/sim`) on its default scenario
 * and on the same users with fewer containers ("loaded"), comparing the policies
 * `ladder`, `any-free` and `pinned` on one seeded workload.
 *
 * stdout: the JSON report (`{bench, scenarios: SimReport[]}`); it holds no wall-clock
 * field, so the same arguments give byte-identical output. stderr: the table, the wall
 * time and where the SVG chart went (`--chart FILE`, or a new temp file).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { renderChart, renderTable, runSimulation, type SimReport } from "../src/sim/index.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";

const PARAMS = {
  seed: { default: 1, min: 0, help: "seed of the workload" },
  users: { default: 100, min: 1, help: "users (one session each)" },
  containers: { default: 10, min: 1, help: "containers in the default scenario" },
  loaded: { default: 6, min: 0, help: "containers in the loaded scenario (0: skip it)" },
  hours: { default: 8, min: 1, help: "simulated hours of arrivals (the horizon)" },
} satisfies Record<string, IntParam>;

export const usage = `npm run bench -- ladder [--chart FILE] [options]

Placement simulator: one seeded chat workload on simulated containers, placed by the real
ladder and by two baselines (any-free, pinned), on a simulated clock. JSON on stdout
(deterministic), a table on stderr, an SVG chart in FILE (default: a new temp file).

  --chart FILE      where to write the SVG chart
${paramsUsage(PARAMS)}`;

/** Splits `--chart FILE` / `--chart=FILE` off the integer parameters. */
function takeChart(argv: readonly string[]): { chart: string | null; rest: string[] } {
  const rest: string[] = [];
  let chart: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--chart") {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new Error("--chart needs a FILE");
      chart = next;
      i++;
    } else if (a.startsWith("--chart=")) chart = a.slice("--chart=".length);
    else rest.push(a);
  }
  return { chart, rest };
}

export async function run(argv: readonly string[]): Promise<object> {
  const { chart, rest } = takeChart(argv);
  const p = parseIntParams(rest, PARAMS);
  const base = {
    seed: p.seed,
    users: p.users,
    horizonMs: p.hours * 3600_000,
    minIdle: Math.min(1, p.containers),
  };
  const scenarios: SimReport[] = [];
  const t0 = performance.now();
  scenarios.push(await runSimulation({ ...base, name: "default", containers: p.containers }));
  if (p.loaded > 0) {
    scenarios.push(
      await runSimulation({
        ...base,
        name: "loaded",
        containers: p.loaded,
        minIdle: Math.min(1, p.loaded),
      }),
    );
  }
  const wallMs = Math.round(performance.now() - t0);
  const file =
    chart ?? path.join(mkdtempSync(path.join(tmpdir(), "clawfleet-ladder-")), "ladder.svg");
  writeFileSync(file, renderChart(scenarios));
  process.stderr.write(renderTable(scenarios));
  process.stderr.write(`simulated in ${wallMs} ms (wall clock); chart: ${path.resolve(file)}\n`);
  return { bench: "ladder", scenarios };
}
