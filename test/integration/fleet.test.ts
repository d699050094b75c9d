/**
 * The backbone end to end, in one process: a real nats-server, the orchestrator,
 * a node with a process pool running the reference agent, and the gateway, each
 * on its own NATS connection, driven through the public API.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClawfleetError } from "../../src/errors.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import { TestFleet } from "../harness/test-fleet.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

/** Resolves with the first event of `type` the node publishes for `taskId`. */
function nextEvent(nc: NatsConnection, taskId: string, type: string): Promise<void> {
  const sub = nc.subscribe(`fleet.events.task.${taskId}`);
  return (async () => {
    for await (const m of sub) {
      if (m.json<{ type: string }>().type === type) {
        sub.unsubscribe();
        return;
      }
    }
  })();
}

describe("a one-node fleet", () => {
  let fleet: TestFleet;

  beforeAll(async () => {
    fleet = await TestFleet.start({
      pools: [{ minIdle: 1, max: 2, agentHeartbeatMs: 100, missedHeartbeats: 3 }],
      retryBackoffMs: 50,
    });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  it("answers a send with the agent's reply, and counts turns per session", async () => {
    const first = await fleet.client.run({ session: "demo", input: "hello" });
    expect(first).toMatchObject({
      status: "succeeded",
      output: "turn 1: hello",
      attempts: 1,
      node: "node-a",
    });
    const second = await fleet.client.run({ session: "demo", input: "hello" });
    expect(second.output).toBe("turn 2: hello");
    // The follow-up lands where the session's state already is.
    expect(second.rung).toBe("reserved");
    expect(second.container).toBe(first.container);
  });

  it("answers three sessions at once on a pool of two, none failed", async () => {
    const slow = (text: string) => script({ op: "sleep", ms: 200 }, { op: "reply", text });
    const tasks = await Promise.all(
      ["s1", "s2", "s3"].map((session) => fleet.client.run({ session, input: slow(session) })),
    );
    expect(tasks.map((t) => [t.status, t.output])).toEqual([
      ["succeeded", "s1"],
      ["succeeded", "s2"],
      ["succeeded", "s3"],
    ]);
    const status = await fleet.client.status();
    expect(status.pools[0]!.size).toBeLessThanOrEqual(2);
    expect(new Set(tasks.map((t) => t.container)).size).toBeLessThanOrEqual(2);
  });

  it("keeps one session's tasks in submit order, one at a time", async () => {
    const ids = [];
    for (let i = 1; i <= 4; i++) {
      const input = script(
        { op: "sleep", ms: 20 },
        { op: "write", path: "log.txt", text: `${i}\n`, append: true },
      );
      ids.push((await fleet.client.submit({ session: "ordered", input })).taskId);
    }
    // A task submitted after the four runs after them and sees all four lines, in order.
    const last = await fleet.client.run({
      session: "ordered",
      input: script({ op: "read", path: "log.txt" }, { op: "reply", text: "read" }),
    });
    expect(last.status).toBe("succeeded");
    const records = await Promise.all(ids.map((id) => fleet.client.task(id)));
    expect(records.map((r) => r.status)).toEqual(Array(4).fill("succeeded"));
    expect(await fleet.sessionFile("ordered", "log.txt")).toBe("1\n2\n3\n4\n");
    for (let i = 1; i < records.length; i++) {
      expect(Date.parse(records[i]!.startedAt!)).toBeGreaterThanOrEqual(
        Date.parse(records[i - 1]!.finishedAt!),
      );
    }
  });

  it("runs a script's steps and publishes its effects", async () => {
    const effects: unknown[] = [];
    const sub = fleet.client.nc.subscribe("fleet.effects.default.email");
    const got = (async () => {
      for await (const m of sub) {
        effects.push(m.json());
        sub.unsubscribe();
      }
    })();
    const t = await fleet.client.run({
      session: "fx",
      input: script(
        { op: "write", path: "notes/a.txt", text: "alpha" },
        { op: "effect", kind: "email", payload: { to: "a@example.com" } },
        { op: "read", path: "notes/a.txt" },
        { op: "reply", text: "sent" },
      ),
    });
    await got;
    expect(t).toMatchObject({ status: "succeeded", output: "sent", steps: 4 });
    expect(effects).toEqual([{ taskId: t.taskId, step: 2, payload: { to: "a@example.com" } }]);
  });

  it("answers malformed requests with coded errors and keeps serving", async () => {
    const raw = (endpoint: string, body: string) => fleet.client.raw(endpoint, body);
    expect(await raw("submit", "{not json")).toMatchObject({
      ok: false,
      error: { code: "INVALID_REQUEST" },
    });
    expect(await raw("submit", JSON.stringify({ input: "x" }))).toMatchObject({
      ok: false,
      error: { code: "INVALID_REQUEST" },
    });
    expect(await raw("run", JSON.stringify({ session: "a b", input: "x" }))).toMatchObject({
      ok: false,
      error: { code: "INVALID_REQUEST" },
    });
    expect(
      await raw("submit", JSON.stringify({ session: "s", input: "x", extra: 1 })),
    ).toMatchObject({
      ok: false,
      error: { code: "INVALID_REQUEST" },
    });
    expect(await raw("task", JSON.stringify({ taskId: "t-none" }))).toMatchObject({
      ok: false,
      error: { code: "NOT_FOUND" },
    });
    const big = "x".repeat(1024 * 1024 + 1);
    await expect(fleet.client.submit({ session: "big", input: big })).rejects.toMatchObject({
      code: "INPUT_TOO_LARGE",
    });

    const unknown = await fleet.client.run({ session: "bad", input: script({ op: "teleport" }) });
    expect(unknown).toMatchObject({ status: "failed", attempts: 1, error: { code: "UNKNOWN_OP" } });
    const malformed = await fleet.client.run({
      session: "bad",
      input: JSON.stringify({ script: "nope" }),
    });
    expect(malformed).toMatchObject({ status: "failed", error: { code: "INVALID_SCRIPT" } });

    const after = await fleet.client.run({ session: "bad", input: "still here" });
    expect(after).toMatchObject({ status: "succeeded", output: "turn 1: still here" });
  });

  it("runs an idempotency key once and answers its task again", async () => {
    const a = await fleet.client.submit({ session: "idem", input: "once", idempotencyKey: "k-1" });
    const b = await fleet.client.submit({ session: "idem", input: "once", idempotencyKey: "k-1" });
    expect(b.taskId).toBe(a.taskId);
    const done = await fleet.client.run({ session: "idem", input: "once", idempotencyKey: "k-1" });
    expect(done).toMatchObject({ taskId: a.taskId, status: "succeeded", output: "turn 1: once" });
    const next = await fleet.client.run({ session: "idem", input: "next" });
    expect(next.output).toBe("turn 2: next");
  });

  it("retries an attempt whose agent crashed, and one whose agent hung", async () => {
    const crashed = await fleet.client.run({
      session: "crashy",
      input: script({ op: "reply", text: "survived" }, { op: "crash", mode: "exit" }),
    });
    expect(crashed).toMatchObject({ status: "succeeded", attempts: 2, output: "survived" });
    const hung = await fleet.client.run({
      session: "hangs",
      input: script({ op: "crash", mode: "hang" }, { op: "reply", text: "woke" }),
    });
    expect(hung).toMatchObject({ status: "succeeded", attempts: 2, output: "woke" });
  });

  it("fails a turn past its deadline with TURN_TIMEOUT", async () => {
    const t = await fleet.client.run({
      session: "slow",
      input: script({ op: "sleep", ms: 30_000 }),
      timeoutMs: 300,
    });
    expect(t).toMatchObject({ status: "failed", error: { code: "TURN_TIMEOUT" } });
  });

  it("cancels a running task, and the session goes on", async () => {
    const key = "cancel-1";
    const taskId = taskIdForKey("default", key);
    const started = nextEvent(fleet.client.nc, taskId, "started");
    await fleet.client.submit({
      session: "cancel-me",
      input: script({ op: "sleep", ms: 30_000 }),
      idempotencyKey: key,
    });
    await started;
    const canceled: TaskRecord = await fleet.client.cancel(taskId);
    expect(canceled).toMatchObject({ taskId, status: "canceled", error: { code: "CANCELED" } });
    const next = await fleet.client.run({ session: "cancel-me", input: "after" });
    expect(next).toMatchObject({ status: "succeeded", output: "turn 1: after" });
  });

  it("run answers TIMEOUT when the wait ends first, and the task goes on", async () => {
    const input = script({ op: "sleep", ms: 600 }, { op: "reply", text: "late" });
    const err = await fleet.client
      .run({ session: "waiter", input, waitMs: 50 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClawfleetError);
    expect((err as ClawfleetError).code).toBe("TIMEOUT");
    const follow = await fleet.client.run({
      session: "waiter",
      input: script({ op: "reply", text: "next" }),
    });
    expect(follow.output).toBe("next");
  });

  it("reports status", async () => {
    const s = await fleet.client.status();
    expect(s.nodes.map((n) => n.id)).toEqual(["node-a"]);
    expect(s.orchestrator?.id).toBe("node-a");
    expect(s.queueDepth).toBe(0);
    // Every attempt's rung is counted; follow-ups of one session land on its reservation.
    expect(s.placements.reserved).toBeGreaterThan(0);
    expect(s.placements.new).toBeGreaterThan(0);
    expect(Object.values(s.containers).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
});
