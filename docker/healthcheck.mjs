// The agent image's HEALTHCHECK: passes while the agent process runs and is neither
// stopped nor a zombie. Liveness only: hangs are caught by the host's heartbeat watchdog.
import { readdirSync, readFileSync } from "node:fs";

let ok = false;
for (const pid of readdirSync("/proc")) {
  if (!/^[0-9]+$/.test(pid) || Number(pid) === process.pid) continue;
  try {
    // The reference agent or the agent host of a real runtime (clawfleet's docker-image.ts).
    if (!/\/app\/(agent|runtime-agent)\.mjs/.test(readFileSync(`/proc/${pid}/cmdline`, "utf8")))
      continue;
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).charAt(0);
    if (state !== "Z" && state !== "T") ok = true;
  } catch {
    // the process went away while we looked
  }
}
process.exit(ok ? 0 : 1);
