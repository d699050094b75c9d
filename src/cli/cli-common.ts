/**
 * Flags and helpers every `clawfleet` command shares: where the fleet is, a
 * connected API client for the length of one command, flag parsers that
 * refuse a bad value in the user's words, and files named on the command line.
 */
import { readFile, writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { ClawfleetError, ErrorCodes, TerminalError } from "../errors.js";
import { FleetClient } from "../gateway/fleet-client.js";
import { UsageError } from "./cli-errors.js";
import { type LocatorFlags, locateFleet, shownDir } from "./fleet-locator.js";

/** Parses a whole non-negative number for a flag (`what` names its unit, e.g. "milliseconds"). */
export const int =
  (flag: string, what = "number") =>
  (v: string): number => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isInteger(n) || n < 0)
      throw new UsageError(`${flag} must be a whole ${what}, got '${v}'`);
    return n;
  };

/** Parses a flag that takes one of `choices` (use with `Option.choices` so help lists them). */
export const oneOf =
  <T extends string>(flag: string, choices: readonly T[]) =>
  (v: string): T => {
    if (!(choices as readonly string[]).includes(v))
      throw new UsageError(`${flag} must be one of ${choices.join(", ")}, got '${v}'`);
    return v as T;
  };

/** `--nats`, `--data-dir`, `--prefix`. */
export function withFleetFlags(cmd: Command): Command {
  return cmd
    .option(
      "--nats <url>",
      "NATS server URL (default: $CLAWFLEET_NATS_URL, then fleet.json in the data dir)",
    )
    .option("--data-dir <dir>", "data directory (default: $CLAWFLEET_DATA_DIR or .clawfleet)")
    .option("--prefix <prefix>", "subject prefix (default: fleet)");
}

/** Runs `fn` with a client connected to the fleet the flags name. */
export async function withClient<T>(
  flags: LocatorFlags,
  fn: (c: FleetClient) => Promise<T>,
): Promise<T> {
  const where = await locateFleet(flags);
  const client = await FleetClient.connect(where.natsUrl, { prefix: where.prefix });
  try {
    return await fn(client);
  } catch (err) {
    // The client only knows nobody answered; say where we asked and what may be missing.
    if (err instanceof ClawfleetError && err.code === ErrorCodes.NO_GATEWAY) {
      const fleet = where.from
        ? `the fleet in ${shownDir(where.from.dataDir)} (pid ${where.from.pid}) runs no gateway`
        : "start one with clawfleet up, or clawfleet gateway --nats URL";
      throw new ClawfleetError(
        ErrorCodes.NO_GATEWAY,
        `no clawfleet gateway answers on ${where.natsUrl} (prefix ${where.prefix}); ${fleet}`,
        { retryable: err.retryable },
      );
    }
    throw err;
  } finally {
    await client.close();
  }
}

/** Reads a text file named on the command line; a missing or unreadable one is a coded error. */
export async function readUserFile(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw fileError(err, file, "read");
  }
}

/** Writes a file named on the command line (e.g. `--chart FILE`). */
export async function writeUserFile(file: string, data: string): Promise<void> {
  try {
    await writeFile(file, data);
  } catch (err) {
    throw fileError(err, file, "write");
  }
}

function fileError(err: unknown, file: string, verb: "read" | "write"): TerminalError {
  const e = err as NodeJS.ErrnoException;
  if (e.code === "ENOENT") {
    return new TerminalError(
      ErrorCodes.FILE_NOT_FOUND,
      verb === "read" ? `no such file: ${file}` : `no such directory for ${file}`,
      { cause: err },
    );
  }
  const why: Record<string, string> = {
    EACCES: "permission denied",
    EPERM: "permission denied",
    EISDIR: "it is a directory",
    ENOTDIR: "a part of its path is not a directory",
  };
  return new TerminalError(
    ErrorCodes.FILE_UNREADABLE,
    `cannot ${verb} ${file}: ${why[e.code ?? ""] ?? e.message}`,
    { cause: err },
  );
}

/** Writes `value` as indented JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
