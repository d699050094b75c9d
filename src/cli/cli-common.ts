/**
 * Flags and helpers every `clawfleet` command shares: where the fleet is, and
 * a connected API client for the length of one command.
 */
import { type Command, InvalidArgumentError } from "commander";
import { FleetClient } from "../gateway/fleet-client.js";
import { type LocatorFlags, locateFleet } from "./fleet-locator.js";

/** Parses a whole non-negative number for a flag. */
export const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`${name} must be a whole number`);
  return n;
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
  const { natsUrl, prefix } = await locateFleet(flags);
  const client = await FleetClient.connect(natsUrl, { prefix });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/** Writes `value` as indented JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
