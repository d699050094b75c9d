/**
 * Where a CLI command finds the fleet: `--nats`, then `CLAWFLEET_NATS_URL`,
 * then the `fleet.json` that `clawfleet up` writes in its data dir.
 */
import path from "node:path";
import { ConfigError, ErrorCodes, TerminalError } from "../errors.js";
import { fleetFilePath, readFleetFile } from "../roles/fleet-roles.js";
import { isAlive } from "../roles/node-dirs.js";

/** Flags every command shares. */
export interface LocatorFlags {
  nats?: string;
  dataDir?: string;
  prefix?: string;
}

/** Where the fleet is, and what told us. */
export interface FleetLocation {
  readonly natsUrl: string;
  readonly prefix: string;
  /** The `up` process that wrote `fleet.json`, when the URL came from it. */
  readonly from?: { readonly dataDir: string; readonly pid: number };
}

/** The data dir from flags or `CLAWFLEET_DATA_DIR`, default `.clawfleet` in the cwd. */
export function dataDirOf(flags: LocatorFlags): string {
  return path.resolve(flags.dataDir ?? process.env.CLAWFLEET_DATA_DIR ?? ".clawfleet");
}

/** A data dir as the user would type it: relative to the cwd when it is under it. */
export function shownDir(dir: string): string {
  const rel = path.relative(process.cwd(), dir);
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : dir;
}

/**
 * The NATS URL and prefix to use; a ConfigError saying how to provide one, or
 * `FLEET_DOWN` when `fleet.json` names an `up` process that is gone (killed: it had
 * no chance to remove the file, and its nats-server may outlive it, answering
 * connections with no gateway behind them).
 */
export async function locateFleet(flags: LocatorFlags): Promise<FleetLocation> {
  const prefix = flags.prefix ?? process.env.CLAWFLEET_PREFIX;
  const url = flags.nats ?? process.env.CLAWFLEET_NATS_URL;
  if (url) return { natsUrl: url, prefix: prefix ?? "fleet" };
  const dataDir = dataDirOf(flags);
  const file = await readFleetFile(dataDir);
  if (file) {
    if (!isAlive(file.pid)) {
      throw new TerminalError(
        ErrorCodes.FLEET_DOWN,
        `the fleet in ${shownDir(dataDir)} (pid ${file.pid}) is not running; start it with clawfleet up`,
      );
    }
    return {
      natsUrl: file.natsUrl,
      prefix: prefix ?? file.prefix,
      from: { dataDir, pid: file.pid },
    };
  }
  throw new ConfigError(
    `no fleet found: ${fleetFilePath(dataDir)} does not exist; start one with \`npm start\` (or \`clawfleet up\`), or pass --nats URL`,
  );
}
