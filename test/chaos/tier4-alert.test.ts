/**
 * Chaos, healing tier 4: a turn whose agent dies on every attempt climbs the
 * whole ladder, with real role processes and real agent deaths: three agents
 * found through /proc and SIGKILLed right after a checkpoint, then a fourth
 * that exits on its own (a `crash` op armed for attempt 4 only, so its
 * diagnostic is in the log tail).
 *
 * attempt 1 lost → tier 2 recreate (attempt 2 resumes after its checkpoint)
 * attempt 2 lost → tier 2 recreate (attempt 3 resumes)
 * attempt 3 lost → tier 3 repair   (attempt 4 drops the checkpoints, starts over)
 * attempt 4 lost → tier 4 alert:   the task fails `SESSION_QUARANTINED`, a
 *   post-mortem (tiers tried with times, last errors, log tail, timeline) is
 *   stored in the alerts bucket and published on `fleet.alerts.critical`, new
 *   tasks of the session fail at once without running, other sessions are not
 *   affected, and `clawfleet session release` (the CLI, as a person runs it)
 *   lifts the quarantine: the session works again from its last good turn.
 */
import { describe, expect, it } from "vitest";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";
import { FAST_LIVENESS, script, stepsByAttempt } from "../harness/chaos-fleet.js";
import { runCli } from "../harness/cli-process.js";
import { killAgent } from "./chaos-faults.js";
import { useChaosFleet } from "./chaos-scenario.js";

const NODE = "node-a";
const ops = [
  // Passed by attempts 1-3; attempt 4, started over by the repair, exits here.
  { op: "crash", mode: "exit", onAttempt: 4 },
  { op: "write", path: "doomed.md", text: "one\n", append: true },
  // Each sleep holds a kill (long enough that the kill lands in it, even under load).
  { op: "sleep", ms: 1000 },
  { op: "write", path: "doomed.md", text: "two\n", append: true },
  { op: "sleep", ms: 1000 },
  { op: "write", path: "doomed.md", text: "three\n", append: true },
  { op: "sleep", ms: 1000 },
  { op: "reply", text: "never" },
];
/** The step after whose checkpoint attempt n's agent is killed. */
const KILL_AFTER: Record<number, number> = { 1: 2, 2: 4, 3: 6 };

describe("chaos: tier 4, a session whose agent keeps dying is quarantined with a post-mortem", () => {
  const chaos = useChaosFleet({
    nodes: [NODE],
    config: {
      ...FAST_LIVENESS,
      maxAttempts: 10,
      pools: [{ minIdle: 2, max: 2, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
      healing: { recreateMax: 2, repairMax: 1, windowMs: 60_000 },
    },
    idlePerNode: 2,
  });

  it("climbs 2 → 3 → 4, alerts, fails new tasks fast, and a release lifts it", async () => {
    const fleet = chaos();
    const session = "t4-doomed";
    expect((await fleet.client.run({ session, input: "hello" })).output).toBe("turn 1: hello");

    const { taskId } = await fleet.client.submit({ session, input: script(...ops) });
    const killed: Array<{ attempt: number; container: string; pid: number }> = [];
    for (const attempt of [1, 2, 3]) {
      const started = await fleet.event(
        taskId,
        (e) => e.type === "started" && e.attempt === attempt,
        `attempt ${attempt}'s start`,
      );
      const step = KILL_AFTER[attempt]!;
      await fleet.event(
        taskId,
        (e) => e.type === "step" && e.attempt === attempt && e.step === step,
        `attempt ${attempt}'s step ${step}`,
      );
      const pid = await killAgent(fleet, NODE, started.container!);
      killed.push({ attempt, container: started.container!, pid });
    }

    const failed = await fleet.finished(taskId, 30_000);
    expect(failed).toMatchObject({
      status: "failed",
      attempts: 4,
      error: { code: "SESSION_QUARANTINED" },
    });
    expect(failed.history.map((h) => [h.attempt, h.outcome, h.error?.code])).toEqual([
      [1, "lost", "AGENT_EXITED"],
      [2, "lost", "AGENT_EXITED"],
      [3, "lost", "AGENT_EXITED"],
      [4, "lost", "AGENT_EXITED"],
    ]);
    expect(failed.history.slice(0, 3).map((h) => h.container)).toEqual(
      killed.map((k) => k.container),
    );
    // Attempts 2 and 3 resumed after the last checkpoint; the repair started over at step 1.
    const steps = stepsByAttempt(await fleet.storedEvents(taskId));
    expect([...steps.entries()]).toEqual([
      [1, [1, 2]],
      [2, [3, 4]],
      [3, [5, 6]],
    ]);

    // The post-mortem, as published on fleet.alerts.critical.
    const pm = await fleet.alerts.waitFor((a) => a.session === session, "the critical alert");
    expect(pm).toMatchObject({ severity: "critical", tenant: "default", session, taskId });
    expect(pm.summary).toContain("quarantined");
    expect(pm.tiers.map((t) => [t.tier, t.remedy, t.taskId, t.attempt, t.error.code])).toEqual([
      [2, "recreate", taskId, 1, "AGENT_EXITED"],
      [2, "recreate", taskId, 2, "AGENT_EXITED"],
      [3, "repair", taskId, 3, "AGENT_EXITED"],
      [4, "alert", taskId, 4, "AGENT_EXITED"],
    ]);
    const times = pm.tiers.map((t) => Date.parse(t.at));
    expect(times.every((t, i) => Number.isFinite(t) && (i === 0 || t >= times[i - 1]!))).toBe(true);
    // Three deaths by our SIGKILL (bwrap reports its child's as exit 137), then the crash.
    const messages = pm.lastErrors.map((e) => e.message);
    expect(messages.slice(0, 3)).toEqual(
      Array(3).fill(expect.stringMatching(/signal SIGKILL|code 137/)),
    );
    expect(messages[3]).toBe("agent exited with code 1");
    expect(pm.logTail.join("\n")).toContain("crashing on purpose");
    const lines = (pm.timeline as Array<{ source: string; type: string; attempt: number }>)
      .filter((l) => l.source === "fleet" && (l.type === "placed" || l.type === "requeued"))
      .map((l) => [l.type, l.attempt]);
    // (The alert is raised on attempt 4's `requeued` line, which it may or may not include.)
    expect(lines.slice(0, 7)).toEqual([
      ["placed", 1],
      ["requeued", 1],
      ["placed", 2],
      ["requeued", 2],
      ["placed", 3],
      ["requeued", 3],
      ["placed", 4],
    ]);
    expect(lines.slice(7)).toEqual(lines.length > 7 ? [["requeued", 4]] : []);
    // Stored too, with the quarantine mark.
    const alerts = await fleet.kv("fleet_alerts");
    expect((await alerts.get(`alert.${pm.alertId}`))?.json()).toEqual(pm);
    expect((await alerts.get(`quarantine.default.${session}`))?.json()).toMatchObject({
      alertId: pm.alertId,
    });

    // The tree, through the CLI: the session at tier 4 after 2 recreates and 1 repair.
    const treeOut = await runCli(["tree", "--json", "--nats", fleet.nats.url]);
    expect(treeOut.code, treeOut.stderr).toBe(0);
    const tree = JSON.parse(treeOut.stdout) as FleetTree;
    expect(tree.sessions.find((s) => s.session === session)).toMatchObject({
      tier: 4,
      restarts: { recreate: 2, repair: 1 },
    });
    const listed = await runCli(["alerts", "--nats", fleet.nats.url]);
    expect(listed.stdout).toContain(`${pm.alertId}  default/${session}  [quarantined]`);

    // Quarantined: a new task fails at once, without running anywhere.
    const refused = await fleet.client.run({ session, input: "hello?" });
    expect(refused).toMatchObject({
      status: "failed",
      attempts: 0,
      error: { code: "SESSION_QUARANTINED" },
      history: [],
    });
    expect(fleet.taskEvents(refused.taskId)).toEqual([]);
    // Another session never noticed.
    const bystander = await fleet.client.run({ session: "t4-bystander", input: "hi" });
    expect(bystander).toMatchObject({ status: "succeeded", output: "turn 1: hi" });

    const released = await runCli(["session", "release", session, "--nats", fleet.nats.url]);
    expect(released).toMatchObject({ code: 0, stdout: `released default/${session}\n` });
    expect(await alerts.get(`quarantine.default.${session}`)).toMatchObject({ operation: "DEL" });
    // It works again, from the last good turn: the failed turn left nothing behind.
    const back = await fleet.client.run({ session, input: "back" });
    expect(back).toMatchObject({ status: "succeeded", output: "turn 2: back", attempts: 1 });
    expect(await fleet.sessionFile(session, "doomed.md")).toBeNull();
  });
});
