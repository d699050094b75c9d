/**
 * Task timelines end to end: the lines nodes and the orchestrator publish to the
 * events stream, read back by `fleet.api.timeline`, followed live by
 * `FleetClient.watch` and `followTimeline`, and printed by `clawfleet timeline`
 * and `clawfleet watch`. Every wait is on an event, never on a fixed delay.
 */
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  followTimeline,
  readTimeline,
  type TimelineItem,
} from "../../src/adapters/records/task-timeline.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import { fleetSubjects } from "../../src/protocol/fleet-subjects.js";
import { runCli } from "../harness/cli-process.js";
import { TestFleet } from "../harness/test-fleet.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

/** `source:type`, with the step for node steps and effects, e.g. `node:step/2`. */
const shape = (e: TimelineItem) =>
  e.source === "node" && e.step !== undefined
    ? `${e.source}:${e.type}/${e.step}`
    : `${e.source}:${e.type}`;

describe("task timelines", () => {
  let fleet: TestFleet;
  let streams: Parameters<typeof followTimeline>[0];

  /** Every line of the task's timeline, once its terminal line is in the stream. */
  async function untilEnd(taskId: string): Promise<TimelineItem[]> {
    const lines: TimelineItem[] = [];
    for await (const e of followTimeline(streams, taskId)) lines.push(e);
    return lines;
  }

  beforeAll(async () => {
    fleet = await TestFleet.start({
      pools: [{ minIdle: 1, max: 2, agentHeartbeatMs: 100, missedHeartbeats: 3 }],
      retryBackoffMs: 50,
    });
    streams = { js: jetstream(fleet.client.nc), subjects: fleetSubjects() };
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  it("lists a task's lines in order: submitted, placed, started, steps and effects, succeeded", async () => {
    const { taskId } = await fleet.client.submit({
      session: "tl-ok",
      input: script(
        { op: "write", path: "a.txt", text: "alpha" },
        { op: "effect", kind: "email", payload: { to: "a@example.com" } },
        { op: "reply", text: "done" },
      ),
    });
    const followed = await untilEnd(taskId);
    const timeline = await fleet.client.timeline(taskId);
    expect(timeline).toMatchObject({ taskId, status: "succeeded" });
    expect(timeline.events.map(shape)).toEqual([
      "fleet:submitted",
      "fleet:placed",
      "node:started",
      "node:step/1",
      "node:effect/2",
      "node:step/2",
      "node:step/3",
      "node:succeeded",
      "fleet:succeeded",
    ]);
    // The follower read the same lines from the stream, each with its sequence.
    expect(followed).toEqual(timeline.events);
    expect(timeline.events.every((e) => typeof e.seq === "number")).toBe(true);
    expect(new Set(timeline.events.map((e) => e.seq)).size).toBe(timeline.events.length);
    expect(timeline.events.map((e) => e.attempt)).toEqual([0, 1, 1, 1, 1, 1, 1, 1, 1]);
    const placed = timeline.events[1]!;
    expect(placed).toMatchObject({ source: "fleet", node: "node-a", attempt: 1 });
    expect(placed.source === "fleet" && placed.rung).toBeTruthy();
    expect(timeline.events[4]).toMatchObject({ message: expect.stringContaining("email") });
    // Node lines name where the attempt ran, as placed said.
    const node = timeline.events.filter((e) => e.source === "node");
    expect(new Set(node.map((e) => `${e.node}/${e.container}`))).toEqual(
      new Set([`${placed.node}/${placed.container}`]),
    );
  });

  it("shows a crashed attempt: its failure, the requeue, the second attempt, success", async () => {
    const { taskId } = await fleet.client.submit({
      session: "tl-crash",
      input: script({ op: "reply", text: "survived" }, { op: "crash", mode: "exit" }),
    });
    await untilEnd(taskId);
    const { events, status } = await fleet.client.timeline(taskId);
    expect(status).toBe("succeeded");
    expect(events.map((e) => `${shape(e)}@${e.attempt}`)).toEqual([
      "fleet:submitted@0",
      "fleet:placed@1",
      "node:started@1",
      "node:step/1@1",
      "node:failed@1",
      "fleet:requeued@1",
      // The session's healing ladder judged the loss before the task was placed again.
      "fleet:healing@1",
      "fleet:placed@2",
      "node:started@2",
      // Attempt 2 resumes after the checkpointed step 1.
      "node:step/2@2",
      "node:succeeded@2",
      "fleet:succeeded@2",
    ]);
    expect(events[4]).toMatchObject({ retryable: true, error: { code: "AGENT_EXITED" } });
    expect(events[5]).toMatchObject({
      delayMs: expect.any(Number),
      error: { code: "AGENT_EXITED" },
    });
    expect(events[6]).toMatchObject({
      tier: 2,
      message: expect.stringMatching(/^tier 2 recreate/),
    });
  });

  it("watches a task live until it ends, and one that is canceled", async () => {
    // B waits behind A in the same session, so everything after its submit happens live.
    const a = await fleet.client.submit({
      session: "tl-live",
      input: script({ op: "sleep", ms: 60_000 }),
    });
    const b = await fleet.client.submit({
      session: "tl-live",
      input: script({ op: "write", path: "b.txt", text: "b" }, { op: "reply", text: "b" }),
    });
    const seenA: TimelineItem[] = [];
    const seenB: TimelineItem[] = [];
    let watchingB: () => void = () => {};
    const bReady = new Promise<void>((r) => {
      watchingB = r;
    });
    const watchA = (async () => {
      for await (const e of fleet.client.watch(a.taskId)) seenA.push(e);
    })();
    const watchB = (async () => {
      for await (const e of fleet.client.watch(b.taskId)) {
        seenB.push(e);
        watchingB();
      }
    })();
    await bReady;
    expect(seenB.map(shape)).toEqual(["fleet:submitted"]);
    // A is running (or about to): cancel it, and B runs.
    await fleet.client.cancel(a.taskId);
    await Promise.all([watchA, watchB]);

    expect(seenA.at(-1)).toMatchObject({ source: "fleet", type: "canceled" });
    expect(seenB.map(shape)).toEqual([
      "fleet:submitted",
      "fleet:placed",
      "node:started",
      "node:step/1",
      "node:step/2",
      "node:succeeded",
      "fleet:succeeded",
    ]);
    // Lines after the history came live (no stream sequence), and the stream agrees.
    expect(seenB.slice(1).every((e) => e.seq === undefined)).toBe(true);
    await untilEnd(b.taskId);
    const stored = await fleet.client.timeline(b.taskId);
    expect(stored.events.map(({ seq: _seq, ...e }) => e)).toEqual(
      seenB.map(({ seq: _seq, ...e }) => e),
    );

    // Watching a finished task replays its lines and ends at once.
    const again: TimelineItem[] = [];
    for await (const e of fleet.client.watch(b.taskId)) again.push(e);
    expect(again).toEqual(stored.events);
  });

  it("answers NOT_FOUND for an unknown task, and INVALID_REQUEST without an id", async () => {
    const raw = (body: object) => fleet.client.raw("timeline", JSON.stringify(body));
    expect(await raw({ taskId: "t-none" })).toMatchObject({
      ok: false,
      error: { code: "NOT_FOUND" },
    });
    // Not a subject token: no wildcard reaches the stream.
    expect(await raw({ taskId: "*" })).toMatchObject({ ok: false, error: { code: "NOT_FOUND" } });
    expect(await raw({ taskId: "t.>" })).toMatchObject({ ok: false, error: { code: "NOT_FOUND" } });
    expect(await raw({})).toMatchObject({ ok: false, error: { code: "INVALID_REQUEST" } });
    expect(await readTimeline(streams, "t-none")).toEqual([]);
    await expect(fleet.client.timeline("t-none")).rejects.toMatchObject({ code: "NOT_FOUND" });
    const watch = fleet.client.watch("t-none");
    await expect(watch.next()).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("stops following when aborted", async () => {
    const stop = new AbortController();
    const lines: TimelineItem[] = [];
    const following = (async () => {
      for await (const e of followTimeline(streams, "t-never", { signal: stop.signal })) {
        lines.push(e);
      }
    })();
    stop.abort();
    await following;
    expect(lines).toEqual([]);
  });

  it("prints timelines and watches from the CLI", async () => {
    const key = "tl-cli-1";
    const taskId = taskIdForKey("default", key);
    await fleet.client.run({
      session: "tl-cli",
      input: script({ op: "reply", text: "cli" }),
      idempotencyKey: key,
    });
    await untilEnd(taskId);
    const flags = ["--nats", fleet.url];

    const text = await runCli(["timeline", taskId, ...flags]);
    expect(text).toMatchObject({ code: 0, stderr: "" });
    const lines = text.stdout.trimEnd().split("\n");
    expect(lines.map((l) => l.split(/\s+/)[3])).toEqual([
      "submitted",
      "placed",
      "started",
      "step",
      "succeeded",
      "succeeded",
    ]);
    expect(lines[1]).toMatch(/^\S+Z\s+fleet\s+#1\s+placed\s+node-a\/\S+ rung=\w+/);
    expect(lines[3]).toMatch(/\s+node\s+#1\s+step\s+node-a\/\S+ step=1/);

    const json = await runCli(["timeline", taskId, "--json", ...flags]);
    expect(JSON.parse(json.stdout)).toEqual(await fleet.client.timeline(taskId));

    const watched = await runCli(["watch", taskId, ...flags]);
    expect(watched).toMatchObject({ code: 0, stdout: text.stdout });

    const missing = await runCli(["timeline", "t-none", ...flags]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^clawfleet: NOT_FOUND: /);

    // A task that did not succeed: its lines, then one error line and exit 1.
    const failKey = "tl-cli-2";
    const failed = await fleet.client.run({
      session: "tl-cli",
      input: script({ op: "teleport" }),
      idempotencyKey: failKey,
    });
    expect(failed.status).toBe("failed");
    await untilEnd(failed.taskId);
    const watchFailed = await runCli(["watch", failed.taskId, "--json", ...flags]);
    expect(watchFailed.code).toBe(1);
    const last = JSON.parse(watchFailed.stdout.trimEnd().split("\n").at(-1)!);
    expect(last).toMatchObject({ source: "fleet", type: "failed" });
    expect(watchFailed.stderr).toMatch(/^clawfleet: UNKNOWN_OP: task \S+ failed/);
  });
});
