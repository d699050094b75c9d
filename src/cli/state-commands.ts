/**
 * `clawfleet snapshots <session>` and `clawfleet restore <session>`: a
 * session's saved versions, and going back to one (as a new version).
 */
import { type Command, InvalidArgumentError } from "commander";
import { int, printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";

interface StateFlags extends LocatorFlags {
  tenant?: string;
  json?: boolean;
  version?: number;
  at?: string;
}

interface VersionView {
  version: number;
  createdAt: string;
  files: number;
  bytes: number;
  knownGood: boolean;
  reason?: string;
  parent?: number;
}

const iso = (v: string) => {
  const t = Date.parse(v);
  if (Number.isNaN(t))
    throw new InvalidArgumentError("--at must be a time, e.g. 2026-11-23T10:00:00Z");
  return new Date(t).toISOString();
};

function line(v: VersionView): string {
  const size =
    v.bytes < 1024 * 1024
      ? `${(v.bytes / 1024).toFixed(1)} KiB`
      : `${(v.bytes / 1048576).toFixed(1)} MiB`;
  const flags = [
    v.knownGood ? "known-good" : "",
    v.reason ?? "",
    v.parent ? `from v${v.parent}` : "",
  ].filter(Boolean);
  return `${String(v.version).padStart(5)}  ${v.createdAt}  ${String(v.files).padStart(5)} files  ${size.padStart(10)}  ${flags.join(", ")}\n`;
}

/** Registers `snapshots` and `restore`. */
export function registerStateCommands(program: Command): void {
  withFleetFlags(program.command("snapshots"))
    .description("list a session's saved versions, oldest first")
    .argument("<session>")
    .option("-t, --tenant <id>", "tenant (default: default)")
    .option("--json", "print JSON")
    .action(async (session: string, f: StateFlags) => {
      const r = await withClient(f, (c) =>
        c.request<{ versions: VersionView[] }>("snapshots", { tenant: f.tenant, session }),
      );
      if (f.json) printJson(r.versions);
      else process.stdout.write(r.versions.map(line).join("") || "no versions yet\n");
    });

  withFleetFlags(program.command("restore"))
    .description(
      "make an older version the session's newest (a new version; nothing is overwritten)",
    )
    .argument("<session>")
    .option("-t, --tenant <id>", "tenant (default: default)")
    .option("--version <n>", "the version to go back to", int("--version"))
    .option("--at <time>", "the newest version taken at or before this time", iso)
    .option("--json", "print JSON")
    .action(async (session: string, f: StateFlags) => {
      const r = await withClient(f, (c) =>
        c.request<{ from: VersionView; version: VersionView }>(
          "restore",
          { tenant: f.tenant, session, version: f.version, at: f.at },
          120_000,
        ),
      );
      if (f.json) printJson(r);
      else
        process.stdout.write(
          `restored version ${r.from.version} as version ${r.version.version}\n`,
        );
    });
}
