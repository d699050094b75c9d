/**
 * `clawfleet behavior set|get|history`: an agent's behaviour files, per tenant
 * and runtime profile, changed without a restart (the next turn reads them).
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";

interface BehaviorFlags extends LocatorFlags {
  tenant?: string;
  profile?: string;
  json?: boolean;
  remove?: string[];
  version?: string;
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
      const contents: Record<string, string> = {};
      for (const file of files) contents[path.basename(file)] = await readFile(file, "utf8");
      const r = await withClient(f, (c) =>
        c.request<{ behavior: { version: number; hash: string; files: Record<string, string> } }>(
          "behavior.set",
          {
            tenant: f.tenant,
            profile: f.profile,
            files: contents,
            remove: f.remove,
          },
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
    .option("--version <n>", "an older version (see history)")
    .action(async (name: string | undefined, f: BehaviorFlags) => {
      const r = await withClient(f, (c) =>
        c.request<{
          behavior: {
            version: number;
            hash: string;
            updatedAt: string;
            files: Record<string, string>;
          };
        }>("behavior.get", {
          tenant: f.tenant,
          profile: f.profile,
          version: f.version === undefined ? undefined : Number(f.version),
        }),
      );
      const b = r.behavior;
      if (name !== undefined) {
        const text = b.files[name];
        if (text === undefined)
          throw new Error(`no behaviour file ${name} in version ${b.version}`);
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
      const r = await withClient(f, (c) =>
        c.request<{
          versions: Array<{ version: number; hash: string; updatedAt: string; files: string[] }>;
        }>("behavior.history", { tenant: f.tenant, profile: f.profile }),
      );
      if (f.json) printJson(r.versions);
      else
        for (const v of r.versions)
          process.stdout.write(
            `${String(v.version).padStart(5)}  ${v.updatedAt}  ${v.hash}  ${v.files.join(", ")}\n`,
          );
    });
}
