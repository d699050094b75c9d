/**
 * `clawfleet behavior set|get|history`: an agent's behaviour files, per tenant
 * and runtime profile, changed without a restart (the next turn reads them).
 */
import path from "node:path";
import type { Command } from "commander";
import { z } from "zod";
import { NotFoundError } from "../errors.js";
import { IdSchema } from "../protocol/api-schemas.js";
import { int, printJson, readUserFile, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";
import { checkRequest } from "./request-check.js";

interface BehaviorFlags extends LocatorFlags {
  tenant?: string;
  profile?: string;
  json?: boolean;
  remove?: string[];
  version?: number;
}

const TargetSchema = z.object({ tenant: IdSchema.optional(), profile: IdSchema.optional() });

/** Tenant and profile as typed, checked as the API would. */
function target(f: BehaviorFlags): { tenant?: string; profile?: string } {
  const t = { tenant: f.tenant, profile: f.profile };
  checkRequest(TargetSchema, t, { tenant: { flag: "--tenant" }, profile: { flag: "--profile" } });
  return t;
}

function withTarget(cmd: Command): Command {
  return withFleetFlags(cmd)
    .option("-t, --tenant <id>", "tenant (default: default)")
    .option("--profile <name>", "runtime profile, i.e. pool name (default: default)")
    .option("--json", "print JSON");
}

/** Registers `behavior set|get|history`. */
export function registerBehaviorCommands(program: Command): void {
  const behavior = program
    .command("behavior")
    .description("an agent's behaviour files (markdown in NATS)");

  withTarget(behavior.command("set"))
    .description("add or replace behaviour files (named by their base names); a new version")
    .argument("[files...]", "markdown files to upload")
    .option("--remove <name...>", "file names to drop")
    .action(async (files: string[], f: BehaviorFlags) => {
      const t = target(f);
      const contents: Record<string, string> = {};
      for (const file of files) contents[path.basename(file)] = await readUserFile(file);
      const r = await withClient(f, (c) =>
        c.request<{ behavior: { version: number; hash: string; files: Record<string, string> } }>(
          "behavior.set",
          { ...t, files: contents, remove: f.remove },
        ),
      );
      if (f.json) printJson(r.behavior);
      else
        process.stdout.write(
          `version ${r.behavior.version} ${r.behavior.hash}: ${Object.keys(r.behavior.files).sort().join(", ") || "(no files)"}\n`,
        );
    });

  withTarget(behavior.command("get"))
    .description("print the latest behaviour (or one file of it)")
    .argument("[name]", "print just this file")
    .option("--version <n>", "an older version (see history)", int("--version"))
    .action(async (name: string | undefined, f: BehaviorFlags) => {
      const t = target(f);
      const r = await withClient(f, (c) =>
        c.request<{
          behavior: {
            version: number;
            hash: string;
            updatedAt: string;
            files: Record<string, string>;
          };
        }>("behavior.get", { ...t, version: f.version }),
      );
      const b = r.behavior;
      if (name !== undefined) {
        const text = b.files[name];
        if (text === undefined)
          throw new NotFoundError(`no behaviour file ${name} in version ${b.version}`);
        process.stdout.write(text);
      } else if (f.json) printJson(b);
      else {
        process.stdout.write(`version ${b.version} ${b.hash} ${b.updatedAt}\n`);
        for (const [file, text] of Object.entries(b.files))
          process.stdout.write(`  ${file} (${Buffer.byteLength(text)} bytes)\n`);
      }
    });

  withTarget(behavior.command("history"))
    .description("list the kept versions, oldest first")
    .action(async (f: BehaviorFlags) => {
      const t = target(f);
      const r = await withClient(f, (c) =>
        c.request<{
          versions: Array<{ version: number; hash: string; updatedAt: string; files: string[] }>;
        }>("behavior.history", t),
      );
      if (f.json) printJson(r.versions);
      else process.stdout.write(renderBehaviorHistory(r.versions));
    });
}

/** The kept versions as a table with a header, oldest first. */
export function renderBehaviorHistory(
  versions: ReadonlyArray<{ version: number; hash: string; updatedAt: string; files: string[] }>,
): string {
  if (versions.length === 0) return "no behaviour versions yet\n";
  const hashWidth = Math.max(4, ...versions.map((v) => v.hash.length));
  const row = (version: string, at: string, hash: string, files: string) =>
    `${version.padStart(7)}  ${at.padEnd(24)}  ${hash.padEnd(hashWidth)}  ${files}`.trimEnd();
  return `${[
    row("version", "updated", "hash", "files"),
    ...versions.map((v) =>
      row(String(v.version), v.updatedAt, v.hash, v.files.join(", ") || "(no files)"),
    ),
  ].join("\n")}\n`;
}
