/**
 * `clawfleet snapshots <session>` and `clawfleet restore <session>`: a
 * session's saved versions, and going back to one (as a new version).
 */
import type { Command } from "commander";
import { z } from "zod";
import { IdSchema } from "../protocol/api-schemas.js";
import { int, printJson, withClient, withFleetFlags } from "./cli-common.js";
import { UsageError } from "./cli-errors.js";
import type { LocatorFlags } from "./fleet-locator.js";
import { checkRequest } from "./request-check.js";

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
    throw new UsageError(`--at must be a time, e.g. 2026-11-23T10:00:00Z, got '${v}'`);
  return new Date(t).toISOString();
};

const SessionSchema = z.object({ tenant: IdSchema.optional(), session: IdSchema });

/** Tenant and session as typed, checked as the API would. */
function sessionOf(session: string, f: StateFlags): { tenant?: string; session: string } {
  const s = { tenant: f.tenant, session };
  checkRequest(SessionSchema, s, {
    tenant: { flag: "--tenant" },
    session: { flag: "the session" },
  });
  return s;
}

/** A session's versions as a table with a header, oldest first. */
export function renderVersions(versions: readonly VersionView[]): string {
  if (versions.length === 0) return "no versions yet\n";
  const row = (cols: [string, string, string, string, string]) =>
    `${cols[0].padStart(7)}  ${cols[1].padEnd(24)}  ${cols[2].padStart(5)}  ${cols[3].padStart(10)}  ${cols[4]}`.trimEnd();
  const size = (bytes: number) =>
    bytes < 1024 * 1024
      ? `${(bytes / 1024).toFixed(1)} KiB`
      : `${(bytes / 1048576).toFixed(1)} MiB`;
  const notes = (v: VersionView) =>
    [v.knownGood ? "known-good" : "", v.reason ?? "", v.parent ? `from v${v.parent}` : ""]
      .filter(Boolean)
      .join(", ");
  const lines = [
    row(["version", "created", "files", "size", "notes"]),
    ...versions.map((v) =>
      row([String(v.version), v.createdAt, String(v.files), size(v.bytes), notes(v)]),
    ),
  ];
  return `${lines.join("\n")}\n`;
}

/** Registers `snapshots` and `restore`. */
export function registerStateCommands(program: Command): void {
  withFleetFlags(program.command("snapshots"))
    .description("list a session's saved versions, oldest first")
    .argument("<session>")
    .option("-t, --tenant <id>", "tenant (default: default)")
    .option("--json", "print JSON")
    .action(async (session: string, f: StateFlags) => {
      const req = sessionOf(session, f);
      const r = await withClient(f, (c) =>
        c.request<{ versions: VersionView[] }>("snapshots", req),
      );
      if (f.json) printJson(r.versions);
      else process.stdout.write(renderVersions(r.versions));
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
      const req = sessionOf(session, f);
      if ((f.version === undefined) === (f.at === undefined))
        throw new UsageError("give one of --version N or --at TIME");
      const r = await withClient(f, (c) =>
        c.request<{ from: VersionView; version: VersionView }>(
          "restore",
          { ...req, version: f.version, at: f.at },
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
