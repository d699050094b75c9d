/** Human-readable renderings of API answers for the CLI. */
import type { FleetStatus, TaskRecord } from "../protocol/api-schemas.js";

/** A task record as a few aligned lines. */
export function printTask(t: TaskRecord): string {
  const rows: Array<[string, string | number | undefined]> = [
    ["task", t.taskId],
    ["status", t.status],
    ["session", `${t.tenant}/${t.session}`],
    ["attempts", t.attempts],
    ["steps", t.steps],
    ["rung", t.rung],
    ["node", t.node],
    ["container", t.container],
    ["created", t.createdAt],
    ["started", t.startedAt],
    ["finished", t.finishedAt],
    ["error", t.error ? `${t.error.code}: ${t.error.message}` : undefined],
    ["output", t.output],
  ];
  return rows
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k.padEnd(10)}${v}`)
    .join("\n")
    .concat("\n");
}

/** Fleet status as a short report. */
export function printStatus(s: FleetStatus): string {
  const lines = [
    `orchestrator  ${s.orchestrator ? `${s.orchestrator.id} (leading since ${s.orchestrator.since})` : "none"}`,
    `queue depth   ${s.queueDepth ?? "unknown"}`,
    `containers    ${
      Object.entries(s.containers)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none"
    }`,
    `nodes         ${s.nodes.length}`,
  ];
  for (const n of s.nodes) {
    lines.push(`  ${n.id} (last seen ${n.lastSeen})`);
    for (const p of n.pools) {
      const states =
        Object.entries(p.states)
          .map(([k, v]) => `${k} ${v}`)
          .join(", ") || "empty";
      lines.push(
        `    pool ${p.name} [${p.runtime}] ${p.size}/${p.max} (minIdle ${p.minIdle}): ${states}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}
