import { describe, expect, it } from "vitest";
import { type Actor, createActor, fromPromise, SimulatedClock, waitFor } from "xstate";
import {
  type DispatchInput,
  dispatchRequestOf,
  type Placement,
  type TaskEmitted,
  type TimelineEntry,
  taskMachine,
  taskRecordOf,
} from "../../src/actors/task-machine.js";
import { ErrorCodes } from "../../src/errors.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import type { DispatchReply } from "../../src/protocol/fleet-messages.js";
import { type Deferred, deferred } from "../harness/deferred.js";

const T0 = Date.UTC(2030, 0, 1);
const BACKOFF = 100;

function newRecord(overrides: Partial<TaskRecord> = {}): TaskRecord {
  return {
    taskId: "task-1",
    tenant: "acme",
    session: "s1",
    status: "queued",
    priority: "normal",
    attempts: 0,
    steps: 0,
    history: [],
    createdAt: new Date(T0).toISOString(),
    ...overrides,
  };
}

const toC1: Placement = { node: "n1", pool: "default", container: "c1", rung: "warm" };
const toNew: Placement = { node: "n2", pool: "default", rung: "new" };

/** A task actor on a simulated clock whose dispatches the test answers by hand. */
function startTask(
  options: { record?: TaskRecord; maxAttempts?: number; supervised?: boolean } = {},
) {
  const clock = new SimulatedClock();
  clock.set(T0);
  const dispatches: Array<{ input: DispatchInput; reply: Deferred<DispatchReply> }> = [];
  const logic = taskMachine.provide({
    actors: {
      dispatch: fromPromise<DispatchReply, DispatchInput>(({ input }) => {
        const reply = deferred<DispatchReply>();
        dispatches.push({ input, reply });
        return reply.promise;
      }),
    },
  });
  const actor = createActor(logic, {
    clock,
    input: {
      record: options.record ?? newRecord(),
      input: "hello",
      maxAttempts: options.maxAttempts ?? 3,
      retryBackoffMs: BACKOFF,
      now: () => new Date(clock.now()).toISOString(),
      supervised: options.supervised,
    },
  });
  const emitted: TaskEmitted[] = [];
  const timeline: TimelineEntry[] = [];
  actor.on("*", (e) => (e.type === "timeline" ? timeline.push(e.entry) : emitted.push(e)));
  actor.start();
  return { actor, clock, dispatches, emitted, timeline };
}

type TaskActor = Actor<typeof taskMachine>;

const stateOf = (actor: TaskActor) => actor.getSnapshot().value;
const recordOf = (actor: TaskActor) => taskRecordOf(actor.getSnapshot());
const reached = (actor: TaskActor, state: string) =>
  waitFor(actor, (s) => s.value === state, { timeout: 2_000 });

/** PLACE the task, answer the dispatch with `reply`, and wait for the state it leads to. */
async function place(
  t: ReturnType<typeof startTask>,
  placement: Placement,
  reply: DispatchReply,
  expected: string,
) {
  t.actor.send({ type: "PLACE", placement });
  expect(stateOf(t.actor)).toBe("placing");
  const d = t.dispatches.at(-1)!;
  d.reply.resolve(reply);
  await reached(t.actor, expected);
  return d.input;
}

/** Place and start the next attempt on c1. */
const run = (t: ReturnType<typeof startTask>) =>
  place(t, toC1, { accepted: true, container: "c1" }, "running");

const at = () => new Date(T0).toISOString();

describe("taskMachine", () => {
  it("runs an accepted placement to success, recording node, container, rung and steps", async () => {
    const t = startTask();
    expect(stateOf(t.actor)).toBe("queued");
    expect(recordOf(t.actor).status).toBe("queued");

    const input = await place(t, toNew, { accepted: true, container: "n2-7" }, "running");
    expect(input).toMatchObject({ attempt: 1, input: "hello", placement: toNew });
    expect(input.record.taskId).toBe("task-1");

    const running = recordOf(t.actor);
    expect(running).toMatchObject({
      status: "running",
      node: "n2",
      container: "n2-7", // the node's answer names the container it started
      rung: "new",
      attempts: 1,
      startedAt: new Date(T0).toISOString(),
    });

    t.actor.send({ type: "STEP", attempt: 1, step: 2 });
    expect(recordOf(t.actor).steps).toBe(2);
    // Steps only ever move forward (a replayed checkpoint does not rewind the record).
    t.actor.send({ type: "STEP", attempt: 1, step: 1 });
    expect(recordOf(t.actor).steps).toBe(2);

    const finishedAt = new Date(T0 + 5_000).toISOString();
    t.actor.send({ type: "SUCCEEDED", attempt: 1, output: "done!", at: finishedAt });
    const snap = t.actor.getSnapshot();
    expect(snap.value).toBe("succeeded");
    expect(snap.status).toBe("done");
    expect(taskRecordOf(snap)).toMatchObject({
      status: "succeeded",
      output: "done!",
      finishedAt,
      attempts: 1,
      steps: 2,
    });
    expect(taskRecordOf(snap).error).toBeUndefined();
    expect(t.emitted).toEqual([]);
    expect(taskRecordOf(snap).history).toEqual([
      {
        attempt: 1,
        node: "n2",
        container: "n2-7",
        rung: "new",
        startedAt: new Date(T0).toISOString(),
        endedAt: finishedAt,
        outcome: "succeeded",
      },
    ]);
    expect(t.timeline).toEqual([
      { type: "placed", attempt: 1, node: "n2", container: "n2-7", rung: "new" },
      { type: "succeeded", attempt: 1 },
    ]);
  });

  it("goes back to queued and emits placementRejected when the node refuses", async () => {
    const t = startTask();
    await place(t, toC1, { accepted: false, reason: "CONTAINER_BUSY" }, "queued");
    expect(t.emitted).toEqual([
      { type: "placementRejected", placement: toC1, reason: "CONTAINER_BUSY" },
    ]);
    // A refusal spends no attempt: the next dispatch is still attempt 1.
    const rec = recordOf(t.actor);
    expect(rec).toMatchObject({ status: "queued", attempts: 0 });
    expect(rec.node).toBeUndefined();

    const input = await run(t);
    expect(input.attempt).toBe(1);
    expect(recordOf(t.actor)).toMatchObject({ attempts: 1, node: "n1", container: "c1" });
  });

  it("counts an unanswered dispatch as an attempt and retries after the backoff", async () => {
    const t = startTask();
    t.actor.send({ type: "PLACE", placement: toC1 });
    t.dispatches[0]!.reply.reject(new Error("request timed out"));
    await reached(t.actor, "retrying");
    expect(t.actor.getSnapshot().context.lastError).toEqual({
      code: "DISPATCH_FAILED",
      message: "request timed out",
    });
    expect(recordOf(t.actor)).toMatchObject({ status: "queued", attempts: 1 });

    t.clock.increment(BACKOFF - 1);
    expect(stateOf(t.actor)).toBe("retrying");
    t.clock.increment(1);
    expect(stateOf(t.actor)).toBe("queued");

    // The spent attempt fences the unanswered one off: the next dispatch is attempt 2.
    const input = await run(t);
    expect(input.attempt).toBe(2);
    t.actor.send({ type: "SUCCEEDED", attempt: 1, output: "stale", at: at() });
    expect(stateOf(t.actor)).toBe("running");
  });

  it("fails with ATTEMPTS_EXHAUSTED when the last dispatch goes unanswered", async () => {
    const t = startTask({ maxAttempts: 1 });
    t.actor.send({ type: "PLACE", placement: toC1 });
    t.dispatches[0]!.reply.reject(new Error("no responders"));
    await reached(t.actor, "failed");
    expect(recordOf(t.actor)).toMatchObject({ status: "failed", attempts: 1 });
    expect(recordOf(t.actor).error?.code).toBe("ATTEMPTS_EXHAUSTED");
    expect(recordOf(t.actor).error?.message).toContain("DISPATCH_FAILED: no responders");
  });

  it("retries a retryable failure with a backoff that doubles per attempt", async () => {
    const t = startTask({ maxAttempts: 4 });
    const crash = { code: ErrorCodes.AGENT_EXITED, message: "agent exited with code 1" };
    for (const attempt of [1, 2, 3]) {
      await run(t);
      expect(recordOf(t.actor).attempts).toBe(attempt);
      t.actor.send({ type: "FAILED", attempt, error: crash, retryable: true, at: at() });
      expect(stateOf(t.actor)).toBe("retrying");
      const rec = recordOf(t.actor);
      expect(rec).toMatchObject({ status: "queued", attempts: attempt });
      expect(rec.node).toBeUndefined();
      expect(rec.container).toBeUndefined();
      expect(t.actor.getSnapshot().context.lastError).toEqual(crash);

      const delay = BACKOFF * 2 ** (attempt - 1);
      t.clock.increment(delay - 1);
      expect(stateOf(t.actor)).toBe("retrying");
      t.clock.increment(1);
      expect(stateOf(t.actor)).toBe("queued");
    }
  });

  it("caps the backoff at 30 s", async () => {
    const clock = new SimulatedClock();
    const logic = taskMachine.provide({
      actors: {
        dispatch: fromPromise<DispatchReply, DispatchInput>(async () => ({
          accepted: true,
          container: "c1",
        })),
      },
    });
    const actor = createActor(logic, {
      clock,
      input: {
        record: newRecord({ status: "running", node: "n1", container: "c1", attempts: 3 }),
        input: "x",
        maxAttempts: 10,
        retryBackoffMs: 20_000,
        now: () => new Date(clock.now()).toISOString(),
      },
    }).start();
    const error = { code: ErrorCodes.AGENT_HUNG, message: "missed heartbeats" };
    actor.send({ type: "FAILED", attempt: 3, error, retryable: true, at: at() });
    expect(actor.getSnapshot().value).toBe("retrying");
    clock.increment(30_000 - 1); // uncapped it would be 80 s
    expect(actor.getSnapshot().value).toBe("retrying");
    clock.increment(1);
    expect(actor.getSnapshot().value).toBe("queued");
  });

  it("fails with ATTEMPTS_EXHAUSTED when the last attempt fails retryably", async () => {
    const t = startTask({ maxAttempts: 2 });
    const crash = { code: ErrorCodes.AGENT_EXITED, message: "boom" };
    await run(t);
    t.actor.send({ type: "FAILED", attempt: 1, error: crash, retryable: true, at: at() });
    t.clock.increment(BACKOFF);
    await run(t);
    const finishedAt = new Date(T0 + 9_000).toISOString();
    t.actor.send({ type: "FAILED", attempt: 2, error: crash, retryable: true, at: finishedAt });
    const snap = t.actor.getSnapshot();
    expect(snap.value).toBe("failed");
    expect(snap.status).toBe("done");
    const rec = taskRecordOf(snap);
    expect(rec).toMatchObject({ status: "failed", attempts: 2, finishedAt });
    expect(rec.error).toEqual({
      code: "ATTEMPTS_EXHAUSTED",
      message: "gave up after 2 attempts; last: AGENT_EXITED: boom",
    });
  });

  it("fails at once with the agent's error when the failure is terminal", async () => {
    const t = startTask({ maxAttempts: 5 });
    await run(t);
    const error = { code: ErrorCodes.SCRIPT_FAILED, message: "bad script" };
    t.actor.send({ type: "FAILED", attempt: 1, error, retryable: false, at: at() });
    expect(stateOf(t.actor)).toBe("failed");
    expect(recordOf(t.actor)).toMatchObject({ status: "failed", attempts: 1, error });
  });

  it("ignores events of another attempt (fencing)", async () => {
    const t = startTask({ maxAttempts: 5 });
    await run(t);
    t.actor.send({
      type: "FAILED",
      attempt: 1,
      error: { code: ErrorCodes.INTERNAL, message: "x" },
      retryable: true,
      at: at(),
    });
    t.clock.increment(BACKOFF);
    await run(t);
    expect(recordOf(t.actor).attempts).toBe(2);

    for (const attempt of [1, 3]) {
      t.actor.send({ type: "STEP", attempt, step: 9 });
      t.actor.send({ type: "SUCCEEDED", attempt, output: "stale", at: at() });
      t.actor.send({
        type: "FAILED",
        attempt,
        error: { code: ErrorCodes.INTERNAL, message: "x" },
        retryable: false,
        at: at(),
      });
    }
    expect(stateOf(t.actor)).toBe("running");
    expect(recordOf(t.actor)).toMatchObject({ status: "running", steps: 0, attempts: 2 });
    expect(recordOf(t.actor).output).toBeUndefined();

    t.actor.send({ type: "SUCCEEDED", attempt: 2, output: "fresh", at: at() });
    expect(recordOf(t.actor)).toMatchObject({ status: "succeeded", output: "fresh" });
  });

  it("retries when the task's node is lost and ignores other nodes", async () => {
    const t = startTask();
    await run(t);
    t.actor.send({ type: "NODE_LOST", node: "n2" });
    expect(stateOf(t.actor)).toBe("running");
    t.actor.send({ type: "NODE_LOST", node: "n1" });
    expect(stateOf(t.actor)).toBe("retrying");
    expect(t.actor.getSnapshot().context.lastError?.code).toBe("NODE_LOST");
    expect(recordOf(t.actor)).toMatchObject({ status: "queued", attempts: 1 });
    expect(recordOf(t.actor).node).toBeUndefined();
  });

  it("fails with ATTEMPTS_EXHAUSTED when the node of the last attempt is lost", async () => {
    const t = startTask({ maxAttempts: 1 });
    await run(t);
    t.actor.send({ type: "NODE_LOST", node: "n1" });
    expect(stateOf(t.actor)).toBe("failed");
    expect(recordOf(t.actor).error?.code).toBe("ATTEMPTS_EXHAUSTED");
    expect(recordOf(t.actor).error?.message).toContain("NODE_LOST");
  });

  it("cancels a queued task without touching any node", () => {
    const t = startTask();
    t.actor.send({ type: "CANCEL" });
    const snap = t.actor.getSnapshot();
    expect(snap.value).toBe("canceled");
    expect(snap.status).toBe("done");
    expect(taskRecordOf(snap)).toMatchObject({
      status: "canceled",
      finishedAt: new Date(T0).toISOString(),
      error: { code: "CANCELED", message: "canceled by request" },
    });
    expect(t.emitted).toEqual([]);
    expect(t.dispatches).toHaveLength(0);
  });

  it("cancels a retrying task before its backoff ends", async () => {
    const t = startTask();
    await run(t);
    t.actor.send({ type: "NODE_LOST", node: "n1" });
    t.actor.send({ type: "CANCEL" });
    expect(stateOf(t.actor)).toBe("canceled");
    t.clock.increment(BACKOFF * 10);
    expect(stateOf(t.actor)).toBe("canceled");
    expect(t.emitted).toEqual([]);
  });

  it("cancels a running task and asks its node to stop the attempt", async () => {
    const t = startTask({ maxAttempts: 5 });
    await run(t);
    t.actor.send({ type: "NODE_LOST", node: "n1" });
    t.clock.increment(BACKOFF);
    await run(t);
    t.actor.send({ type: "CANCEL" });
    expect(stateOf(t.actor)).toBe("canceled");
    expect(recordOf(t.actor).status).toBe("canceled");
    expect(t.emitted).toEqual([{ type: "cancelOnNode", node: "n1", taskId: "task-1", attempt: 2 }]);
  });

  it("finishes a dispatch in flight when canceled while placing, then cancels on the node", async () => {
    const t = startTask();
    t.actor.send({ type: "PLACE", placement: toC1 });
    t.actor.send({ type: "CANCEL" });
    expect(stateOf(t.actor)).toBe("placing");
    t.dispatches[0]!.reply.resolve({ accepted: true, container: "c1" });
    await reached(t.actor, "canceled");
    expect(recordOf(t.actor)).toMatchObject({ status: "canceled", attempts: 1, node: "n1" });
    expect(t.emitted).toEqual([{ type: "cancelOnNode", node: "n1", taskId: "task-1", attempt: 1 }]);
  });

  // A cancel during placing must end the task whatever the dispatch's answer: otherwise a
  // refused placement would leave it queued and the cancel request waiting for capacity.
  it("ends canceled when canceled while placing and the node refuses", async () => {
    const t = startTask();
    t.actor.send({ type: "PLACE", placement: toC1 });
    t.actor.send({ type: "CANCEL" });
    t.dispatches[0]!.reply.resolve({ accepted: false, reason: "CONTAINER_BUSY" });
    await waitFor(t.actor, (s) => s.value !== "placing", { timeout: 2_000 });
    expect(stateOf(t.actor)).toBe("canceled");
  });

  // BUG: same as above when the dispatch gets no answer: the task goes to `retrying` and then
  // `queued` instead of ending canceled.
  it("ends canceled when canceled while placing and the dispatch gets no answer", async () => {
    const t = startTask();
    t.actor.send({ type: "PLACE", placement: toC1 });
    t.actor.send({ type: "CANCEL" });
    t.dispatches[0]!.reply.reject(new Error("timeout"));
    await waitFor(t.actor, (s) => s.value !== "placing", { timeout: 2_000 });
    expect(stateOf(t.actor)).toBe("canceled");
  });

  it("resumes watching a reloaded record that is running on a node", () => {
    const record = newRecord({
      status: "running",
      node: "n3",
      container: "c9",
      rung: "idle",
      attempts: 2,
      steps: 4,
      startedAt: new Date(T0 - 60_000).toISOString(),
    });
    const t = startTask({ record });
    expect(stateOf(t.actor)).toBe("running");
    expect(recordOf(t.actor)).toEqual(record);
    expect(t.dispatches).toHaveLength(0);

    t.actor.send({ type: "STEP", attempt: 2, step: 5 });
    expect(recordOf(t.actor).steps).toBe(5);
    t.actor.send({ type: "SUCCEEDED", attempt: 2, output: "resumed", at: at() });
    expect(recordOf(t.actor)).toMatchObject({ status: "succeeded", output: "resumed" });
  });

  it("starts queued from a reloaded running record that names no node", () => {
    const t = startTask({ record: newRecord({ status: "running", attempts: 1 }) });
    expect(stateOf(t.actor)).toBe("queued");
    expect(recordOf(t.actor).status).toBe("queued");
  });

  it("keeps the first startedAt across attempts", async () => {
    const t = startTask({ maxAttempts: 5 });
    await run(t);
    const first = recordOf(t.actor).startedAt;
    t.actor.send({ type: "NODE_LOST", node: "n1" });
    t.clock.increment(BACKOFF);
    await run(t);
    expect(recordOf(t.actor).startedAt).toBe(first);
  });

  describe("supervised (healing)", () => {
    const crash = { code: ErrorCodes.AGENT_EXITED, message: "agent exited with code 1" };
    const fail = (t: ReturnType<typeof startTask>, attempt: number, logTail?: string[]) =>
      t.actor.send({ type: "FAILED", attempt, error: crash, retryable: true, at: at(), logTail });
    const context = (t: ReturnType<typeof startTask>) => t.actor.getSnapshot().context;

    it("asks its supervisor about a session's own failure and is placed only after both the answer and the backoff", async () => {
      const t = startTask({ supervised: true });
      await run(t);
      fail(t, 1, ["boom"]);
      expect(t.emitted).toEqual([
        {
          type: "heal",
          lost: {
            tenant: "acme",
            session: "s1",
            taskId: "task-1",
            attempt: 1,
            error: crash,
            logTail: ["boom"],
          },
        },
      ]);
      t.clock.increment(BACKOFF * 10);
      expect(stateOf(t.actor)).toBe("retrying");
      t.actor.send({ type: "HEALED", decision: "recreate" });
      expect(stateOf(t.actor)).toBe("queued");
      // Tier 2 keeps the next attempt away from the container the task died in.
      expect(context(t)).toMatchObject({ avoid: ["c1"], repair: false, healing: false });
    });

    it("waits out the backoff when the answer comes first; a repair goes with the next dispatch only", async () => {
      const t = startTask({ supervised: true });
      await run(t);
      fail(t, 1);
      t.actor.send({ type: "HEALED", decision: "repair" });
      expect(stateOf(t.actor)).toBe("retrying");
      t.clock.increment(BACKOFF - 1);
      expect(stateOf(t.actor)).toBe("retrying");
      t.clock.increment(1);
      expect(stateOf(t.actor)).toBe("queued");
      // Refused: the repair waits for an attempt that really starts.
      const refused = await place(t, toNew, { accepted: false, reason: "full" }, "queued");
      expect(refused.repair).toBe(true);
      const second = await run(t);
      expect(second.repair).toBe(true);
      expect(dispatchRequestOf(second).repair).toBe(true);
      expect(context(t).repair).toBe(false);
      fail(t, 2);
      t.actor.send({ type: "HEALED", decision: "recreate" });
      t.clock.increment(BACKOFF * 2);
      expect(stateOf(t.actor)).toBe("queued");
      const third = await run(t);
      expect(third.repair).toBe(false);
      expect(dispatchRequestOf(third)).not.toHaveProperty("repair");
    });

    it("does not ask about losses of the fleet's own making", async () => {
      const t = startTask({ supervised: true });
      await run(t);
      t.actor.send({ type: "NODE_LOST", node: "n1" });
      t.clock.increment(BACKOFF);
      expect(stateOf(t.actor)).toBe("queued");
      expect(t.emitted).toEqual([]);
      expect(context(t).avoid).toEqual([]);
    });

    it("fails when its session is quarantined while the supervisor decides", async () => {
      const t = startTask({ supervised: true });
      await run(t);
      fail(t, 1);
      // The supervisor quarantines the session (and so fails its open tasks) before it answers.
      t.actor.send({ type: "QUARANTINE", reason: "quarantined" });
      expect(stateOf(t.actor)).toBe("failed");
      expect(recordOf(t.actor).error?.code).toBe(ErrorCodes.SESSION_QUARANTINED);
    });

    it("goes on without a decision when the supervisor could not answer", async () => {
      const t = startTask({ supervised: true });
      await run(t);
      fail(t, 1);
      t.clock.increment(BACKOFF);
      t.actor.send({ type: "HEALED", decision: null });
      expect(stateOf(t.actor)).toBe("queued");
      expect(context(t)).toMatchObject({ avoid: [], repair: false });
    });
  });
});
