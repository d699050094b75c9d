/**
 * Where a CLI command finds the fleet: `--nats`, then `CLAWFLEET_NATS_URL`,
 * then the `fleet.json` that `clawfleet up` writes in its data dir.
 */
import path from "node:path";
import { ConfigError } from "../errors.js";
import { fleetFilePath, readFleetFile } from "../roles/fleet-roles.js";

/** Flags every command shares. */
export interface LocatorFlags {
  nats?: string;
  dataDir?: string;
  prefix?: string;
}

/** The data dir from flags or `CLAWFLEET_DATA_DIR`, default `.clawfleet` in the cwd. */
export function dataDirOf(flags: LocatorFlags): string {
  return path.resolve(flags.dataDir ?? process.env.CLAWFLEET_DATA_DIR ?? ".clawfleet");
}

/** The NATS URL and prefix to use, or a ConfigError saying how to provide one. */
export async function locateFleet(
  flags: LocatorFlags,
): Promise<{ natsUrl: string; prefix: string }> {
  const prefix = flags.prefix ?? process.env.CLAWFLEET_PREFIX;
  const url = flags.nats ?? process.env.CLAWFLEET_NATS_URL;
  if (url) return { natsUrl: url, prefix: prefix ?? "fleet" };
  const dataDir = dataDirOf(flags);
  const file = await readFleetFile(dataDir);
  if (file) return { natsUrl: file.natsUrl, prefix: prefix ?? file.prefix };
  throw new ConfigError(
    `no fleet found: ${fleetFilePath(dataDir)} does not exist; start one with \`npm start\` (or \`clawfleet up\`), or pass --nats URL`,
  );
}
