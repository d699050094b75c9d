/** Human-readable renderings of API answers for the CLI. */
import type { TimelineItem } from "../adapters/records/task-timeline.js";
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
    `placements    ${
      Object.entries(s.placements ?? {})
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none yet"
    }`,
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

/**
 * One timeline line: time, source (`fleet` or `node`), attempt, type, then
 * what is known (node/container, rung, step, retry delay, error, message).
 *
 * ```
 * 2025-01-01T10:00:00.012Z  fleet  #1  placed     node-a/c-1 rung=idle
 * 2025-01-01T10:00:00.020Z  node   #1  step       node-a/c-1 step=1 write
 * ```
 */
export function printTimelineEvent(e: TimelineItem): string {
  const details: string[] = [];
  if (e.node) details.push(e.container ? `${e.node}/${e.container}` : e.node);
  else if (e.container) details.push(e.container);
  if (e.source === "fleet" && e.rung) details.push(`rung=${e.rung}`);
  if (e.source === "node" && e.step !== undefined) details.push(`step=${e.step}`);
  if (e.source === "fleet" && e.delayMs !== undefined) details.push(`retry in ${e.delayMs}ms`);
  if (e.message) details.push(e.message);
  if (e.error) details.push(`${e.error.code}: ${e.error.message}`);
  if (e.source === "node" && e.retryable) details.push("(retryable)");
  const cols = [e.at.padEnd(24), e.source.padEnd(5), `#${e.attempt}`.padEnd(3), e.type.padEnd(9)];
  return `${[...cols, details.join(" ")].join("  ").trimEnd()}\n`;
}
