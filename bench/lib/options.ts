/**
 * Integer parameters of a bench, from `--name N` / `--name=N` on the command line, then
 * `BENCH_<NAME>` in the environment, then the default.
 */
import { parseArgs } from "node:util";

/** One integer parameter. */
export interface IntParam {
  readonly default: number;
  readonly min: number;
  readonly help: string;
}

/** The environment variable of a parameter: `sessions` → `BENCH_SESSIONS`. */
export function envName(name: string): string {
  return `BENCH_${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Parses `argv` against `specs`; unknown flags and bad values throw with a readable message. */
export function parseIntParams<K extends string>(
  argv: readonly string[],
  specs: Readonly<Record<K, IntParam>>,
  env: NodeJS.ProcessEnv = process.env,
): Record<K, number> {
  const names = Object.keys(specs) as K[];
  const { values } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(names.map((n) => [n, { type: "string" as const }])),
    strict: true,
    allowPositionals: false,
  });
  const out = {} as Record<K, number>;
  for (const name of names) {
    const spec = specs[name];
    const raw = (values as Record<string, string | undefined>)[name] ?? env[envName(name)];
    const value = raw === undefined ? spec.default : Number(raw);
    if (!Number.isInteger(value) || value < spec.min) {
      throw new Error(`--${name} must be an integer ≥ ${spec.min}, got ${JSON.stringify(raw)}`);
    }
    out[name] = value;
  }
  return out;
}

/** `--help` text for the parameters. */
export function paramsUsage(specs: Readonly<Record<string, IntParam>>): string {
  return Object.entries(specs)
    .map(
      ([name, s]) =>
        `  --${name} N`.padEnd(20) + `${s.help} (default ${s.default}; env ${envName(name)})`,
    )
    .join("\n");
}
