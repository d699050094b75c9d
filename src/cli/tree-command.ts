/**
 * `clawfleet tree`: the supervision tree, indented and coloured (`--json` for
 * machines, `--watch` to follow it live).
 */
import type { Command } from "commander";
import type { FleetTree } from "../gateway/fleet-tree.js";
import { printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";

interface Flags extends LocatorFlags {
  json?: boolean;
  watch?: boolean;
}

const useColor = () => process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number) => (s: string) => (useColor() ? `\u001b[${code}m${s}\u001b[0m` : s);
const dim = paint(2);
const STATE_COLOR: Record<string, (s: string) => string> = {
  idle: paint(32),
  reserved: paint(36),
  busy: paint(33),
  starting: paint(34),
  failed: paint(31),
  draining: paint(35),
};

/** A line of the tree and the lines under it. */
export interface TreeLine {
  readonly text: string;
  readonly children?: readonly TreeLine[];
}

/**
 * Draws `roots` with box-drawing connectors: `├─` for every child but the last, `└─`
 * for the last, and `│ ` under a child whose later siblings are still to come.
 */
export function drawTree(roots: readonly TreeLine[]): string[] {
  const out: string[] = [];
  const walk = (items: readonly TreeLine[], indent: string) => {
    items.forEach((item, i) => {
      const last = i === items.length - 1;
      out.push(`${indent}${last ? "└─" : "├─"} ${item.text}`);
      walk(item.children ?? [], `${indent}${last ? "   " : "│  "}`);
    });
  };
  walk(roots, "");
  return out;
}

/** The tree as indented text. */
export function renderTree(t: FleetTree): string {
  const out: string[] = [
    t.orchestrator
      ? `fleet  orchestrator ${t.orchestrator.id}  ${dim(`queued ${t.orchestrator.queueDepth}, running ${t.orchestrator.running}`)}`
      : `fleet  ${paint(31)("no orchestrator")}`,
  ];
  out.push(
    ...drawTree(
      t.nodes.map((n) => ({
        text: `node ${n.id}${n.stopping ? " (stopping)" : ""}  ${dim(`last seen ${n.lastSeen}`)}${n.failure ? paint(31)(`  gave up: ${n.failure}`) : ""}`,
        children: n.pools.map((p) => ({
          text: `pool ${p.name} [${p.runtime}] ${p.size}/${p.max} minIdle ${p.minIdle}  restarts ${p.restarts}${p.crashes ? paint(31)(`  crashes ${p.crashes}`) : ""}`,
          children: p.containers.map((c) => {
            const color = STATE_COLOR[c.state] ?? ((s: string) => s);
            const holds = c.session ? `  ${c.tenant}/${c.session}` : "";
            const task = c.taskId ? `  task ${c.taskId}` : "";
            const restarts = c.restarts ? dim(`  agent restarts ${c.restarts}`) : "";
            return { text: `${c.id}  ${color(c.state)}${holds}${task}${restarts}` };
          }),
        })),
      })),
    ),
  );
  if (t.sessions.length > 0) {
    out.push("healing");
    out.push(
      ...drawTree(
        t.sessions.map((s) => {
          const tier =
            s.tier === 0
              ? paint(32)(`healthy since ${s.recoveredAt ?? "?"}`)
              : paint(s.tier >= 4 ? 31 : 33)(`tier ${s.tier}`);
          return {
            text: `${s.tenant}/${s.session}  ${tier}  recreated ${s.restarts.recreate}, repaired ${s.restarts.repair}`,
            children: s.history.map((h) => ({
              text: `${dim(String(h.at))}  tier ${h.tier} ${h.remedy}  ${h.taskId}#${h.attempt}`,
            })),
          };
        }),
      ),
    );
  }
  return `${out.join("\n")}\n`;
}

/** Registers `tree`. */
export function registerTreeCommand(program: Command): void {
  withFleetFlags(program.command("tree"))
    .description("print the supervision tree: nodes, pools, containers, sessions and healing tiers")
    .option("--json", "print JSON")
    .option("--watch", "redraw every second until Ctrl-C")
    .action(async (f: Flags) => {
      await withClient(f, async (c) => {
        const show = async () => {
          const t = await c.request<FleetTree & { ok: true }>("tree", {});
          if (f.json) printJson(t);
          else
            process.stdout.write(
              (f.watch && useColor() ? "\u001b[2J\u001b[H" : "") + renderTree(t),
            );
        };
        await show();
        if (!f.watch) return;
        await new Promise<void>((resolve) => {
          const timer = setInterval(() => void show().catch(() => {}), 1000);
          process.once("SIGINT", () => {
            clearInterval(timer);
            resolve();
          });
        });
      });
    });
}
