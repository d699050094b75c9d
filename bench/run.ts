/**
 * The bench entry: `npm run bench -- <name> [options]` runs the exported `run(argv)` of
 * `bench/<name>.ts` and prints the report it returns as JSON on stdout. Progress and the
 * human summary go to stderr, so stdout stays pure JSON (`> report.json` just works).
 * Benches are not tests: they measure against a baseline started in the same run.
 * Besides `src/`, a bench imports only `test/harness/`, the harness tests and benches
 * share (servers, role processes, observers; it never imports vitest or a test).
 */
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** What a bench module exports. */
export interface BenchModule {
  /** Runs the bench with the arguments after its name; resolves with the JSON report. */
  run(argv: readonly string[]): Promise<object>;
  /** Help text for `--help`. */
  usage?: string;
}

const here = path.dirname(fileURLToPath(import.meta.url));

/** Bench names: the `.ts` files beside this one (helpers live in `lib/`). */
function availableBenches(): string[] {
  return readdirSync(here)
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts") && f !== "run.ts")
    .map((f) => f.slice(0, -".ts".length))
    .sort();
}

/** Libraries that log with `console.*` must not corrupt the JSON report on stdout. */
function routeConsoleToStderr(): void {
  const toStderr = (...args: unknown[]) => console.error(...args);
  console.log = toStderr;
  console.info = toStderr;
  console.debug = toStderr;
  console.warn = toStderr;
}

function exit(code: number): never {
  process.exit(code);
}

async function main(): Promise<void> {
  const [name, ...rest] = process.argv.slice(2);
  const names = availableBenches();
  const list = `usage: npm run bench -- <name> [options]   (--help after a name for its options)\navailable: ${names.join(", ")}\n`;
  if (name === "--help" || name === "-h") {
    process.stderr.write(list);
    exit(0);
  }
  if (name === undefined || !names.includes(name)) {
    process.stderr.write(
      `${name === undefined ? "no bench named" : `unknown bench: ${name}`}\n${list}`,
    );
    exit(1);
  }
  const mod = (await import(
    pathToFileURL(path.join(here, `${name}.ts`)).href
  )) as Partial<BenchModule>;
  if (typeof mod.run !== "function") {
    process.stderr.write(`bench/${name}.ts exports no run()\n`);
    exit(1);
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stderr.write(`${mod.usage ?? `npm run bench -- ${name}`}\n`);
    exit(0);
  }
  routeConsoleToStderr();
  // A reader that went away (`| head`) must not crash the bench before it cleans up.
  process.stderr.on("error", () => {});
  process.stdout.on("error", () => exit(1));
  let report: object;
  try {
    report = await mod.run(rest);
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    process.stderr.write(`bench ${name} failed: ${text}\n`);
    if (process.env.BENCH_DEBUG && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
    exit(1);
  }
  // Every bench cleans up after itself; exiting here only guards against a stray handle.
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`, () => exit(0));
}

await main();
