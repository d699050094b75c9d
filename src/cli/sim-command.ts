/**
 * `clawfleet sim`: the placement simulator. It runs the real task, pool and
 * container machines and the real ladder on a simulated clock, once per
 * policy, and prints how each placed a seeded chat workload. A run takes seconds of
 * CPU per policy, so progress goes to stderr as it runs (stdout stays the report).
 */
import type { Command } from "commander";
import { renderChart, renderTable, runSimulation, type SimProgress } from "../sim/index.js";
import { int, printJson, writeUserFile } from "./cli-common.js";

interface SimFlags {
  users?: number;
  containers?: number;
  hours?: number;
  seed?: number;
  reservedMs?: number;
  chart?: string;
  json?: boolean;
}

/** Registers `sim`. */
export function registerSimCommand(program: Command): void {
  program
    .command("sim")
    .description(
      "simulate placement of a chat workload: ladder vs any-free vs pinned (deterministic per seed)",
    )
    .option("--users <n>", "users, one session each (default 100)", int("--users"))
    .option("--containers <n>", "containers in the pool (default 10)", int("--containers"))
    .option("--hours <n>", "simulated hours of traffic (default 8)", int("--hours"))
    .option("--seed <n>", "random seed (default 1)", int("--seed"))
    .option("--reserved-ms <ms>", "reserved window (default 60000)", int("--reserved-ms"))
    .option("--chart <file>", "write an SVG chart of the results here")
    .option("--json", "print the full report as JSON")
    .action(async (f: SimFlags) => {
      const progress = progressLine(process.stderr);
      const report = await runSimulation(
        {
          users: f.users,
          containers: f.containers,
          horizonMs: f.hours === undefined ? undefined : f.hours * 3600_000,
          seed: f.seed,
          reservedWindowMs: f.reservedMs,
        },
        { progress },
      );
      if (f.json) printJson(report);
      else process.stdout.write(renderTable(report));
      if (f.chart) {
        await writeUserFile(f.chart, renderChart(report));
        process.stderr.write(`chart written to ${f.chart}\n`);
      }
    });
}

/**
 * Progress on `out`: on a terminal one line rewritten in place (simulated hours of each
 * policy), elsewhere (a log, a pipe) one line per policy as it ends, with its wall time.
 */
export function progressLine(
  out: { write(s: string): unknown; isTTY?: boolean },
  now: () => number = Date.now,
): (p: SimProgress) => void {
  let startedAt = now();
  return (p) => {
    const which = `sim: ${p.policy} (${p.index + 1}/${p.of})`;
    if (p.simulatedMs === 0 && !p.done) startedAt = now();
    if (p.done) {
      const secs = ((now() - startedAt) / 1000).toFixed(1);
      out.write(`${out.isTTY ? "\r\u001b[K" : ""}${which} done in ${secs} s\n`);
    } else if (out.isTTY) {
      const hours = (ms: number) => (ms / 3600_000).toFixed(1);
      out.write(`\r\u001b[K${which} ${hours(p.simulatedMs)} of ${hours(p.horizonMs)} h`);
    } else if (p.simulatedMs === 0) {
      out.write(`${which} running\n`);
    }
  };
}
