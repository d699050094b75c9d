/**
 * `clawfleet runtime install openclaw` and `clawfleet runtime list`: the agent
 * runtimes kept out of the default install (OpenClaw and the Node 24 it needs,
 * ~650 MB), put where OpenClaw pools look for them. Progress goes to stderr; the
 * result (where it is) to stdout.
 */
import type { Command } from "commander";
import {
  defaultRuntimesDir,
  listRuntimes,
  type RuntimeListing,
} from "../adapters/runtimes/openclaw-runtime.js";
import { installOpenClaw } from "../adapters/runtimes/runtime-install.js";
import { printJson } from "./cli-common.js";
import { UsageError } from "./cli-errors.js";

interface RuntimeFlags {
  dir?: string;
  json?: boolean;
}

/** The runtimes `runtime install` knows. */
const INSTALLABLE = ["openclaw"] as const;

const DIR_HELP =
  "runtimes directory (default: $CLAWFLEET_RUNTIMES_DIR or ~/.cache/clawfleet/runtimes)";

/** Registers `runtime install` and `runtime list`. */
export function registerRuntimeCommands(program: Command): void {
  const runtime = program
    .command("runtime")
    .description("agent runtimes installed beside clawfleet (OpenClaw)");
  runtime
    .command("install")
    .description("install a pinned agent runtime (openclaw: Node 24 and OpenClaw, via npm)")
    .argument("<name>", `runtime to install: ${INSTALLABLE.join(", ")}`)
    .option("--dir <dir>", DIR_HELP)
    .option("--json", "print the result as JSON")
    .action(async (name: string, flags: RuntimeFlags) => {
      if (!(INSTALLABLE as readonly string[]).includes(name))
        throw new UsageError(`unknown runtime '${name}'; installable: ${INSTALLABLE.join(", ")}`);
      const result = await installOpenClaw({
        runtimesDir: flags.dir ?? defaultRuntimesDir(),
        progress: (line) => process.stderr.write(`runtime: ${line}\n`),
      });
      if (flags.json) printJson(result);
      else
        process.stdout.write(
          `openclaw ${result.version} ${result.dir}${result.alreadyInstalled ? " (already installed)" : ""}\n`,
        );
    });
  runtime
    .command("list")
    .description("installed agent runtimes, their versions and sizes")
    .option("--dir <dir>", DIR_HELP)
    .option("--json", "print as JSON")
    .action(async (flags: RuntimeFlags) => {
      const dir = flags.dir ?? defaultRuntimesDir();
      const found = await listRuntimes(dir);
      if (flags.json) printJson(found);
      else process.stdout.write(renderRuntimes(dir, found));
    });
}

/** The installed runtimes as a table, or a line saying there are none. */
export function renderRuntimes(dir: string, found: readonly RuntimeListing[]): string {
  if (found.length === 0)
    return `no runtimes in ${dir} (install one with: clawfleet runtime install openclaw)\n`;
  const rows = found.map(
    (r) =>
      `${r.runtime.padEnd(10)}  ${r.version.padEnd(10)}  node ${r.node.padEnd(9)}  ${`${(r.bytes / 1048576).toFixed(0)} MiB`.padStart(8)}  ${r.dir}`,
  );
  return `${rows.join("\n")}\n`;
}
