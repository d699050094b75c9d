/**
 * Chaos: one idempotency key submitted many times at once, and a task
 * canceled while its agent works.
 *
 * - Duplicates: one task id, one execution (one start, one turn counted, one
 *   effect), however many submits and runs race, before and after it ends.
 * - Cancel: the task ends `canceled`, its agent stops at once (the next task
 *   of the session runs on the only container without waiting for the
 *   canceled script's long sleep), its lease is gone or revoked, and nothing
 *   of the canceled turn reaches the session's files or the effects stream
 *   past the point of cancel.
 */
import { describe, expect, it } from "vitest";
import type { TaskLeaseValue } from "../../src/adapters/records/task-lease.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import { FAST_LIVENESS, range, script } from "../harness/chaos-fleet.js";
import { useChaosFleet } from "./chaos-scenario.js";

describe("chaos: duplicate submissions and cancel", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a"],
    // One container: a canceled agent that kept running would block the next task.
    config: {
      ...FAST_LIVENESS,
      pools: [{ minIdle: 1, max: 1, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
    },
  });

  it("runs a key submitted many times concurrently exactly once", async () => {
    const fleet = chaos();
    const session = "dup";
    const warmup = await fleet.client.submit({ session, input: "hello" });
    expect((await fleet.finished(warmup.taskId)).output).toBe("turn 1: hello");
    const turnsBefore = await fleet.turns(session);

    const key = "charge-42";
    const taskId = taskIdForKey("default", key);
    const input = script(
      { op: "write", path: "ledger.txt", text: "charged 42\n", append: true },
      { op: "effect", kind: "charge", payload: { amount: 42 } },
      { op: "sleep", ms: 300 },
      { op: "reply", text: "charged" },
    );
    const req = { session, input, idempotencyKey: key };
    const [submits, runs] = await Promise.all([
      Promise.all(range(1, 20).map(() => fleet.client.submit(req))),
      Promise.all(range(1, 5).map(() => fleet.client.run({ ...req, waitMs: 15_000 }))),
    ]);
    expect(new Set(submits.map((s) => s.taskId))).toEqual(new Set([taskId]));
    for (const r of runs)
      expect(r).toMatchObject({ taskId, status: "succeeded", output: "charged" });

    // After the end, the key still names the same finished task and runs nothing.
    const after = await Promise.all(range(1, 3).map(() => fleet.client.submit(req)));
    for (const a of after) expect(a).toMatchObject({ taskId, status: "succeeded" });
    const done = await fleet.finished(taskId);
    expect(done).toMatchObject({ status: "succeeded", attempts: 1, output: "charged" });
    expect(done.history).toHaveLength(1);

    // One submission stored, one start, one turn counted, one effect.
    const submissions = await fleet.readStream("FLEET_TASKS", `fleet.tasks.default.${session}`);
    expect(
      submissions.filter((m) => (m.data as { taskId: string }).taskId === taskId),
    ).toHaveLength(1);
    const stored = await fleet.storedEvents(taskId);
    expect(stored.filter((e) => e.type === "started")).toHaveLength(1);
    expect(fleet.taskEvents(taskId).filter((e) => e.type === "started")).toHaveLength(1);
    expect(await fleet.turns(session)).toBe(turnsBefore + 1);
    expect(await fleet.sessionFile(session, "ledger.txt")).toBe("charged 42\n");
    expect((await fleet.storedEffects(taskId)).map((e) => e.payload)).toEqual([{ amount: 42 }]);
    expect(fleet.effects.items.filter((e) => e.taskId === taskId)).toHaveLength(1);
  });

  it("cancels a running task: its agent stops, its lease goes, its turn leaves no trace", async () => {
    const fleet = chaos();
    const session = "cancel";
    const key = "cancel-1";
    const taskId = taskIdForKey("default", key);
    const input = script(
      { op: "write", path: "work.txt", text: "before\n", append: true },
      { op: "effect", kind: "alert", payload: { when: "before" } },
      { op: "sleep", ms: 60_000 },
      { op: "write", path: "work.txt", text: "after\n", append: true },
      { op: "effect", kind: "alert", payload: { when: "after" } },
    );
    const midway = fleet.event(taskId, (e) => e.type === "step" && e.step === 2, "the second step");
    await fleet.client.submit({ session, input, idempotencyKey: key });
    const { attempt, node } = await midway;
    const nodeEnded = fleet.event(
      taskId,
      (e) => e.source === "task" && e.type === "failed",
      "the node ending the turn",
    );

    const canceled = await fleet.client.cancel(taskId);
    expect(canceled).toMatchObject({ taskId, status: "canceled", error: { code: "CANCELED" } });
    expect(canceled.history.map((h) => [h.attempt, h.node, h.outcome])).toEqual([
      [attempt, node, "canceled"],
    ]);
    expect((await fleet.finished(taskId)).status).toBe("canceled");

    // The lease is gone, or revoked so its holder cannot renew it.
    const lease = await (await fleet.kv("fleet_leases")).get(`task.${taskId}`);
    if (lease?.operation === "PUT") expect(lease.json<TaskLeaseValue>().revoked).toBe(true);

    // The node stopped the turn; the only container takes the session's next task at once.
    expect((await nodeEnded).attempt).toBe(attempt);
    const next = await fleet.client.submit({ session, input: "next" });
    const nextDone = await fleet.finished(next.taskId, 8_000);
    // The canceled turn was never saved: the session's first counted turn is this one.
    expect(nextDone).toMatchObject({ status: "succeeded", output: "turn 1: next" });
    expect(await fleet.sessionFile(session, "work.txt")).toBeNull();

    // Nothing after the cancel point happened.
    expect((await fleet.storedEffects(taskId)).map((e) => e.payload)).toEqual([{ when: "before" }]);
    const steps = (await fleet.storedEvents(taskId)).filter((e) => e.type === "step");
    expect(Math.max(...steps.map((e) => e.step!))).toBeLessThan(3);
  });
});
