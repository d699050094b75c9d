/**
 * Chaos: the agent process running a task is killed with SIGKILL mid-script
 * (the node stays up). The node reports the attempt lost, the orchestrator
 * retries it, and the retry resumes after the last checkpoint: no step runs
 * twice and each effect is published once.
 */
import { describe, expect, it } from "vitest";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import { FAST_LIVENESS, range, script, stepsByAttempt } from "../harness/chaos-fleet.js";
import { isAlive } from "../harness/process-table.js";
import { roundsScript, useChaosFleet } from "./chaos-scenario.js";

const ROUNDS = 3;
const {
  ops,
  steps: STEPS,
  effectSteps,
  effectStep,
} = roundsScript({
  rounds: ROUNDS,
  file: "notes/progress.md",
  line: (n) => `- round ${n}\n`,
  effect: { kind: "webhook", payload: (n) => ({ round: n }) },
  // Long enough that the kill after round 2's effect lands in this sleep, even under load.
  sleepMs: (n) => (n === 2 ? 1000 : 200),
  tail: [
    { op: "read", path: "notes/progress.md" },
    { op: "reply", text: "all rounds" },
  ],
});
const KILL_AFTER = effectStep(2);

describe("chaos: an agent process killed mid-task", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a"],
    // Two warm containers, so the retry need not wait for a replacement to start.
    config: {
      ...FAST_LIVENESS,
      pools: [{ minIdle: 2, max: 2, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
    },
    idlePerNode: 2,
  });

  it("retries the task and resumes it after its last checkpoint, each effect once", async () => {
    const fleet = chaos();
    const session = "agent-kill";
    const key = "agent-kill-1";
    const taskId = taskIdForKey("default", key);
    const started = fleet.event(taskId, (e) => e.type === "started", "the start");
    const checkpointed = fleet.event(
      taskId,
      (e) => e.source === "task" && e.type === "step" && e.step === KILL_AFTER,
      `the checkpoint of step ${KILL_AFTER}`,
    );
    await fleet.client.submit({ session, input: script(...ops), idempotencyKey: key });
    const { container } = await started;
    const agent = await fleet.agentPid("node-a", container!);
    await checkpointed;
    process.kill(agent, "SIGKILL");

    const done = await fleet.finished(taskId);
    expect(await isAlive(agent)).toBe(false);
    expect(done).toMatchObject({
      status: "succeeded",
      output: "all rounds",
      attempts: 2,
      steps: STEPS,
    });
    expect(done.history.map((h) => [h.attempt, h.container === container, h.outcome])).toEqual([
      [1, true, "lost"],
      [2, false, "succeeded"],
    ]);
    expect(done.history[0]!.error?.code).toMatch(/^AGENT_(EXITED|HUNG)$/);

    const steps = stepsByAttempt(await fleet.storedEvents(taskId));
    const first = steps.get(1)!;
    expect(first).toEqual(range(1, first.length));
    expect(first.length).toBeGreaterThanOrEqual(KILL_AFTER);
    expect(steps.get(2)).toEqual(range(first.length + 1, STEPS));

    const progress = range(1, ROUNDS)
      .map((n) => `- round ${n}\n`)
      .join("");
    expect(await fleet.sessionFile(session, "notes/progress.md")).toBe(progress);

    const effects = await fleet.storedEffects(taskId);
    expect(effects.map((e) => [e.subject, e.step, e.payload])).toEqual(
      range(1, ROUNDS).map((n) => [
        "fleet.effects.default.webhook",
        effectSteps[n - 1],
        { round: n },
      ]),
    );
    await fleet.effects.waitFor(
      (e) => e.taskId === taskId && e.step === effectSteps.at(-1),
      "the last effect on core NATS",
    );
    const wire = fleet.effects.items.filter((e) => e.taskId === taskId).map((e) => e.step);
    expect(wire.sort((a, b) => a - b)).toEqual(effectSteps);

    // The pool replaced the dead container, and the session's turn was counted once.
    await fleet.waitNodes(["node-a"], 1);
    const again = await fleet.client.submit({ session, input: "again" });
    expect((await fleet.finished(again.taskId)).output).toBe("turn 2: again");
  });
});
