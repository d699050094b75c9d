/**
 * `clawfleet alerts` (post-mortems of sessions the healing ladder gave up on)
 * and `clawfleet session release <session>` (let a quarantined session work again).
 */
import type { Command } from "commander";
import { z } from "zod";
import type { PostMortem, Quarantine } from "../adapters/records/quarantine-registry.js";
import { IdSchema } from "../protocol/api-schemas.js";
import { printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";
import { checkRequest } from "./request-check.js";

interface Flags extends LocatorFlags {
  tenant?: string;
  json?: boolean;
}

function printPostMortem(pm: PostMortem, quarantined: boolean): string {
  const lines = [
    `${pm.at}  CRITICAL  ${pm.alertId}  ${pm.tenant}/${pm.session}${quarantined ? "  [quarantined]" : ""}`,
    `  ${pm.summary}`,
    "  tiers tried:",
    ...pm.tiers.map(
      (t) =>
        `    ${t.at}  tier ${t.tier} ${t.remedy.padEnd(8)}  ${t.taskId}#${t.attempt}  ${t.error.code}: ${t.error.message}`,
    ),
    "  last errors:",
    ...pm.lastErrors.map((e) => `    ${e.code}: ${e.message}`),
  ];
  if (pm.logTail.length > 0) lines.push("  agent log tail:", ...pm.logTail.map((l) => `    ${l}`));
  return `${lines.join("\n")}\n`;
}

/** Registers `alerts` and `session release`. */
export function registerSupervisionCommands(program: Command): void {
  withFleetFlags(program.command("alerts"))
    .description("list critical alerts with their post-mortems")
    .option("--json", "print JSON")
    .action(async (f: Flags) => {
      const r = await withClient(f, (c) =>
        c.request<{ alerts: PostMortem[]; quarantined: Quarantine[] }>("alerts", {}),
      );
      if (f.json) return printJson(r);
      const held = new Set(r.quarantined.map((q) => q.alertId));
      process.stdout.write(
        r.alerts.map((pm) => printPostMortem(pm, held.has(pm.alertId))).join("\n") || "no alerts\n",
      );
    });

  const session = program.command("session").description("manage sessions");
  withFleetFlags(session.command("release"))
    .description("lift a session's quarantine: its tasks run again")
    .argument("<session>")
    .option("-t, --tenant <id>", "tenant (default: default)")
    .action(async (name: string, f: Flags) => {
      const req = { tenant: f.tenant, session: name };
      checkRequest(z.object({ tenant: IdSchema.optional(), session: IdSchema }), req, {
        tenant: { flag: "--tenant" },
        session: { flag: "the session" },
      });
      const r = await withClient(f, (c) =>
        c.request<{ released: boolean }>("session.release", req),
      );
      process.stdout.write(
        r.released
          ? `released ${f.tenant ?? "default"}/${name}\n`
          : `${name} was not quarantined\n`,
      );
    });
}
