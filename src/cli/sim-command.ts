/**
 * `clawfleet sim`: the placement simulator. It runs the real task, pool and
 * container machines and the real ladder on a simulated clock, once per
 * policy, and prints how each placed a seeded chat workload.
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { renderChart, renderTable, runSimulation } from "../sim/index.js";
import { int, printJson } from "./cli-common.js";

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
      const report = await runSimulation({
        users: f.users,
        containers: f.containers,
        horizonMs: f.hours === undefined ? undefined : f.hours * 3600_000,
        seed: f.seed,
        reservedWindowMs: f.reservedMs,
      });
      if (f.json) printJson(report);
      else process.stdout.write(renderTable(report));
      if (f.chart) {
        await writeFile(f.chart, renderChart(report));
        process.stderr.write(`chart written to ${f.chart}\n`);
      }
    });
}
