/**
 * Chaos: the node running a task is frozen (SIGSTOP) until its lease expires
 * and the task is retried and finished on the other node, and the session has
 * moved on with another task; then it is thawed (SIGCONT). The stale holder
 * wakes up mid-turn and must not be able to write anything: not the task's
 * record, not its checkpoints, not an effect, not the session's files.
 *
 * A stale write would be visible: the session's next task appends a line the
 * stale attempt's working copy does not have, so any session version the stale
 * holder wrote (a save, or a background sync) would lack it.
 *
 * The assertions marked "found here" guard fixes of bugs this scenario found: the
 * stale holder's background sync and its late checkpoint used to be unfenced.
 */
import { describe, expect, it } from "vitest";
import type { TaskLeaseValue } from "../../src/adapters/records/task-lease.js";
import type { VersionInfo } from "../../src/adapters/snapshots/snapshot-store.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import type { NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import { FAST_LIVENESS, script, stepsByAttempt } from "../harness/chaos-fleet.js";
import { useChaosFleet } from "./chaos-scenario.js";

const session = "stale";
const ops = [
  { op: "write", path: "story.txt", text: "one\n", append: true },
  // Frozen here: the stale agent finishes this sleep and waits for an ack that comes late.
  { op: "sleep", ms: 1500 },
  { op: "write", path: "story.txt", text: "two\n", append: true },
  { op: "effect", kind: "publish", payload: { chapter: 2 } },
  { op: "write", path: "story.txt", text: "three\n", append: true },
  { op: "reply", text: "story told" },
];

describe("chaos: a frozen lease holder that wakes up late", () => {
  const taskId = taskIdForKey("default", "stale-1");

  const chaos = useChaosFleet({
    nodes: ["node-a", "node-b"],
    config: {
      ...FAST_LIVENESS,
      // A lenient agent watchdog: on waking, the old holder must not first judge its own
      // agent hung (its heartbeats sat unread in the pipe) and so never try to write.
      pools: [{ minIdle: 1, max: 1, agentHeartbeatMs: 200, missedHeartbeats: 50 }],
      // Background sync of running turns, due again by the time the old holder wakes.
      syncIntervalMs: 500,
    },
  });

  // Each test below stands alone: run with -t, it sets up and checks its whole scenario.
  it("cannot write the record, checkpoints, effects, session files or versions after it was replaced", async () => {
    const fleet = chaos();
    const checkpointed = fleet.event(
      taskId,
      (e) => e.source === "task" && e.type === "step" && e.step === 1,
      "the first checkpoint",
    );
    await fleet.client.submit({ session, input: script(...ops), idempotencyKey: "stale-1" });
    const victim = (await checkpointed).node!;
    const survivor = victim === "node-a" ? "node-b" : "node-a";
    // Freeze it inside step 2's sleep, with step 1 acknowledged: after two more of its timers.
    await fleet.leaseRenewals(taskId, 2);
    fleet.signalNode(victim, "SIGSTOP");

    const done = await fleet.finished(taskId);
    expect(done).toMatchObject({
      status: "succeeded",
      output: "story told",
      attempts: 2,
      node: survivor,
    });
    expect(done.history.map((h) => [h.attempt, h.node, h.outcome])).toEqual([
      [1, victim, "lost"],
      [2, survivor, "succeeded"],
    ]);
    // The session moves on while the old holder is still frozen.
    const next = await fleet.client.submit({
      session,
      input: script({ op: "write", path: "story.txt", text: "four\n", append: true }),
    });
    expect((await fleet.finished(next.taskId)).status).toBe("succeeded");
    const story = "one\ntwo\nthree\nfour\n";
    expect(await fleet.sessionFile(session, "story.txt")).toBe(story);

    const before = (await fleet.taskRecord(taskId))!;
    /** The session's versions just before the old holder wakes, and just after it gave up. */
    const versions: { before: VersionInfo[]; after: VersionInfo[] } = { before: [], after: [] };
    versions.before = await fleet.sessionVersions(session);
    expect(versions.before.length).toBeGreaterThan(0);
    const eventsBefore = await fleet.storedEvents(taskId);
    const staleSteps = stepsByAttempt(eventsBefore).get(1);
    expect(staleSteps).toEqual([1]);

    // Thaw it, and wait until it has given the turn up and announced its container free.
    const staleEnd = fleet.event(
      taskId,
      (e) =>
        e.source === "task" && e.attempt === 1 && (e.type === "failed" || e.type === "succeeded"),
      "the stale attempt's end",
    );
    fleet.signalNode(victim, "SIGCONT");
    const end = await staleEnd;
    const nodes = await fleet.kv("fleet_nodes");
    await fleet.watchKey(
      nodes,
      victim,
      (v) => !!v && !(v as NodeHeartbeat).containers.some((c) => c.taskId === taskId),
      `node ${victim} to let go of the task`,
    );

    versions.after = await fleet.sessionVersions(session);
    expect(end.type).toBe("failed");
    expect(end.retryable).toBe(true);
    // The record is exactly as attempt 2 left it: not even rewritten.
    expect(await fleet.taskRecord(taskId)).toEqual(before);
    // No step of the stale attempt was checkpointed after it woke up, and its checkpoint log
    // is as the task's end left it: closed, with no steps.
    const eventsAfter = await fleet.storedEvents(taskId);
    expect(stepsByAttempt(eventsAfter).get(1)).toEqual(staleSteps);
    expect(eventsAfter.filter((e) => e.attempt === 1 && e.type === "succeeded")).toEqual([]);
    const log = await (await fleet.kv("fleet_checkpoints")).get(taskId);
    expect(log?.operation).toBe("PUT");
    expect(log!.json()).toMatchObject({ taskId, ended: true, steps: [] });
    // Its lease was not taken back.
    const lease = await (await fleet.kv("fleet_leases")).get(`task.${taskId}`);
    if (lease?.operation === "PUT") expect(lease.json<TaskLeaseValue>().attempt).not.toBe(1);
    // One effect, stored once and sent once.
    expect((await fleet.storedEffects(taskId)).map((e) => [e.step, e.payload])).toEqual([
      [4, { chapter: 2 }],
    ]);
    expect(fleet.effects.items.filter((e) => e.taskId === taskId).map((e) => e.step)).toEqual([4]);
    // The files the session's next turn gets are those of attempt 2 and the task after it;
    // both turns counted once.
    expect(await fleet.sessionFile(session, "story.txt")).toBe(story);
    expect(await fleet.turns(session)).toBe(2);

    // Found here: the old holder's overdue sync ticker fired before the renewal that tells it
    // the lease is gone, and made its working copy (only "one") the session's newest version.
    // Now every sync first renews the lease (turn-runner.ts `syncWhileRunning`).
    // A restore of the session as it is now gives the files of its last turn.
    expect(await fleet.sessionFile(session, "story.txt", "default", { at: new Date() })).toBe(
      "one\ntwo\nthree\nfour\n",
    );
    expect(versions.after.map((v) => [v.version, v.reason])).toEqual(
      versions.before.map((v) => [v.version, v.reason]),
    );

    // Found here: the checkpoint snapshot was stored before the fenced log append, so a holder
    // that lost the task still wrote one. Now the fenced append comes first (`onStep`).
    expect(await fleet.checkpointSnapshots(session, taskId)).toEqual([]);
  });

  it("stops a holder woken while its replacement runs, and a third attempt resumes after the last checkpoint", async () => {
    const fleet = chaos();
    const key = "stale-2";
    const id = taskIdForKey("default", key);
    const other = "stale-resume";
    await fleet.waitNodes(["node-a", "node-b"], 1);
    const first = fleet.event(
      id,
      (e) => e.source === "task" && e.type === "step" && e.step === 1,
      "the first checkpoint",
    );
    await fleet.client.submit({
      session: other,
      idempotencyKey: key,
      input: script(
        { op: "write", path: "log.txt", text: "one\n", append: true },
        { op: "sleep", ms: 1500 },
        { op: "write", path: "log.txt", text: "two\n", append: true },
        { op: "reply", text: "resumed" },
      ),
    });
    const a = (await first).node!;
    const b = a === "node-a" ? "node-b" : "node-a";
    // A freezes in step 2's sleep; its agent ends that sleep while A is frozen.
    await fleet.leaseRenewals(id, 2);
    fleet.signalNode(a, "SIGSTOP");
    // Attempt 2 takes over on B, resumes after step 1 and sleeps in step 2: freeze B too.
    await fleet.leaseRenewals(id, 3, 2);
    fleet.signalNode(b, "SIGSTOP");
    // B's lease expires (by then A's agent has long finished its 1.5 s sleep): wake A.
    await fleet.event(id, (e) => e.type === "requeued" && e.attempt === 2, "attempt 2 lost");
    fleet.signalNode(a, "SIGCONT");
    const done = await fleet.finished(id);
    fleet.signalNode(b, "SIGCONT");
    expect(done).toMatchObject({ status: "succeeded", output: "resumed", attempts: 3, node: a });
    expect(await fleet.sessionFile(other, "log.txt")).toBe("one\ntwo\n");
    // Found here, same cause as the late checkpoint above: the stale holder's late checkpoint
    // purged the one its replacement resumed from, so a third attempt started the turn over.
    // Each step checkpointed by exactly one attempt: nothing ran again after its checkpoint.
    const resumed = stepsByAttempt(await fleet.storedEvents(id));
    expect(Object.fromEntries(resumed)).toEqual({ 1: [1], 3: [2, 3, 4] });
  });
});
