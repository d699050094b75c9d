/**
 * Chaos: the node running a task is killed with SIGKILL right after a step's
 * checkpoint. The task must finish on the other node from that checkpoint:
 * no step runs twice, each effect is published once, and the record keeps the
 * lost attempt in its history.
 */
import { describe, expect, it } from "vitest";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import { FAST_LIVENESS, range, script, stepsByAttempt } from "../harness/chaos-fleet.js";
import { roundsScript, useChaosFleet } from "./chaos-scenario.js";

const ROUNDS = 4;
/** Three steps per round: append a line, send an effect, sleep; then one reply. */
const {
  ops,
  steps: STEPS,
  effectSteps,
  effectStep,
} = roundsScript({
  rounds: ROUNDS,
  file: "steps.log",
  line: (n) => `line ${n}\n`,
  effect: { kind: "mail", payload: (n) => ({ n }) },
  // The kill after round 2's effect lands in this sleep, even under load.
  sleepMs: (n) => (n === 2 ? 1000 : 250),
  tail: [{ op: "reply", text: "done" }],
});
/** Killed right after round 2's effect is checkpointed, while the agent sleeps. */
const KILL_AFTER = effectStep(2);

describe("chaos: a node killed mid-task", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a", "node-b"],
    config: {
      ...FAST_LIVENESS,
      pools: [{ minIdle: 1, max: 1, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
    },
  });

  it("finishes on the other node from its last checkpoint, each effect once", async () => {
    const fleet = chaos();
    const session = "node-kill";
    const key = "node-kill-1";
    const taskId = taskIdForKey("default", key);
    const checkpointed = fleet.event(
      taskId,
      (e) => e.source === "task" && e.type === "step" && e.step === KILL_AFTER,
      `the checkpoint of step ${KILL_AFTER}`,
    );
    const submitted = await fleet.client.submit({
      session,
      input: script(...ops),
      idempotencyKey: key,
    });
    expect(submitted.taskId).toBe(taskId);

    const victim = (await checkpointed).node!;
    const survivor = victim === "node-a" ? "node-b" : "node-a";
    await fleet.killNode(victim);

    const done = await fleet.finished(taskId);
    expect(done).toMatchObject({
      status: "succeeded",
      output: "done",
      attempts: 2,
      node: survivor,
      steps: STEPS,
    });
    expect(done.history.map((h) => [h.attempt, h.node, h.outcome])).toEqual([
      [1, victim, "lost"],
      [2, survivor, "succeeded"],
    ]);
    expect(["LEASE_LOST", "NODE_LOST"]).toContain(done.history[0]!.error?.code);
    const requeued = await fleet.event(
      taskId,
      (e) => e.source === "timeline" && e.type === "requeued",
      "the requeued line",
    );
    expect(requeued.attempt).toBe(1);

    // Resumed right after the last checkpoint of the lost attempt: no step ran twice.
    const stored = await fleet.storedEvents(taskId);
    const steps = stepsByAttempt(stored);
    const first = steps.get(1)!;
    const second = steps.get(2)!;
    expect(first).toEqual(range(1, first.length));
    expect(first.length).toBeGreaterThanOrEqual(KILL_AFTER);
    expect(second).toEqual(range(first.length + 1, STEPS));
    expect(stepsByAttempt(fleet.taskEvents(taskId))).toEqual(steps);

    // The session's files: each appended line once, though the task ran on two nodes.
    expect(await fleet.sessionFile(session, "steps.log")).toBe(
      range(1, ROUNDS)
        .map((n) => `line ${n}\n`)
        .join(""),
    );

    // Each effect once, in the stream and on the wire.
    const effects = await fleet.storedEffects(taskId);
    expect(effects.map((e) => [e.subject, e.step, e.payload])).toEqual(
      range(1, ROUNDS).map((n) => ["fleet.effects.default.mail", effectSteps[n - 1], { n }]),
    );
    await fleet.effects.waitFor(
      (e) => e.taskId === taskId && e.step === effectSteps.at(-1),
      "the last effect on core NATS",
    );
    const wire = fleet.effects.items.filter((e) => e.taskId === taskId).map((e) => e.step);
    expect(wire.sort((a, b) => a - b)).toEqual(effectSteps);

    // The session's turn count moved with it and counted the task once.
    const again = await fleet.client.submit({ session, input: "again" });
    const next = await fleet.finished(again.taskId);
    expect(next.output).toBe("turn 2: again");
  });
});
