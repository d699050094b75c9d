/**
 * The real OpenClaw in a whole fleet: a process pool of `runtime: "openclaw"` (one warm
 * OpenClaw gateway per container, in the bubblewrap sandbox), real nats-server, the model
 * gateway holding the only key, and aimock as the upstream. A session's conversation
 * follows it to another container through the snapshot of `.openclaw/state`, a tool's
 * file lands in the session's next version, and a container killed mid-turn costs an
 * attempt, not the task. One fleet of two containers for the whole file (each gateway
 * start is ~10 s and ~1.2 GB); every test uses sessions of its own.
 */
import { randomBytes } from "node:crypto";
import { readFile, readlink } from "node:fs/promises";
import path from "node:path";
import type { ChatCompletionRequest } from "@copilotkit/aimock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PoolProfileOptions } from "../../src/fleet-options.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import { ModelStandIn, STAND_IN_USAGE } from "../harness/model-stand-in.js";
import { descendantsOf, isAlive, processTable } from "../harness/process-table.js";
import { TestFleet } from "../harness/test-fleet.js";
import { treeText } from "../harness/tree-text.js";
import { openclawRuntime, seen, userText } from "./openclaw-fixture.js";

const KEY_ENV = "CLAWFLEET_TEST_OPENCLAW_MODEL_KEY";
const KEY = `sk-test-${randomBytes(12).toString("hex")}`;
const NODE = "node-a";
/** Bound of every wait on the fleet (a gateway start is ~10 s, on a busy box more). */
const WAIT_MS = 120_000;

const pool: PoolProfileOptions = {
  runtime: "openclaw",
  minIdle: 2,
  max: 2,
  // CI has bubblewrap; the sandbox is part of what is tested (no route off the box).
  sandbox: process.env.CI ? "bwrap" : "auto",
  reservedWindowMs: 0,
  // A dead agent's container is replaced (a new id, an empty workspace), not restarted in place.
  maxAgentRestarts: 0,
};

/** Resolves once `check` holds, polling; fails naming `what` after `timeoutMs`. */
async function until<T>(
  check: () => Promise<T | undefined | null | false>,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether a request's messages mention `marker` anywhere. */
const mentions = (req: ChatCompletionRequest, marker: string) =>
  JSON.stringify(req.messages).includes(marker);

/** Whether a tool already answered after the user's latest text. */
const toolAnswered = (req: ChatCompletionRequest) => {
  const last = req.messages.findLastIndex(
    (m) => m.role === "user" && !JSON.stringify(m.content).includes("OPENCLAW_INTERNAL_CONTEXT"),
  );
  return req.messages.slice(last + 1).some((m) => m.role === "tool");
};

describe("an OpenClaw pool in a fleet, sandboxed, behind the model gateway", () => {
  let model: ModelStandIn;
  let fleet: TestFleet;
  const times: Record<string, number> = {};

  /** The node's child process for container `id` (the sandbox, or the agent host without one). */
  const containerRoot = async (id: string): Promise<number> => {
    const workspace = path.join(fleet.dataDir, "nodes", NODE, "containers", id);
    const table = await processTable();
    const roots: number[] = [];
    for (const p of table.values()) {
      if (p.ppid !== process.pid) continue;
      const cwd = await readlink(`/proc/${p.pid}/cwd`).catch(() => "");
      if (p.argv.includes(workspace) || cwd === workspace) roots.push(p.pid);
    }
    if (roots.length !== 1) {
      throw new Error(`expected one process for container ${id}, found ${roots.length}`);
    }
    return roots[0]!;
  };

  /** The pid of container `id`'s OpenClaw gateway (the process given the gateway's token). */
  const gatewayPid = async (id: string): Promise<number> => {
    const root = await containerRoot(id);
    const table = await processTable();
    for (const p of [table.get(root)!, ...descendantsOf(table, root)]) {
      const environ = await readFile(`/proc/${p.pid}/environ`, "utf8").catch(() => "");
      if (environ.split("\0").some((v) => v.startsWith("OPENCLAW_GATEWAY_TOKEN="))) return p.pid;
    }
    throw new Error(`no OpenClaw gateway under container ${id}`);
  };

  /** Waits for the `started` line of the task's current run; resolves with its container. */
  const startedOn = async (taskId: string): Promise<string> => {
    for await (const item of fleet.client.watch(taskId, { signal: AbortSignal.timeout(WAIT_MS) })) {
      const e = item as { source?: string; type?: string; container?: string };
      if (e.source === "node" && e.type === "started" && e.container) return e.container;
    }
    throw new Error(`task ${taskId} ended without starting`);
  };

  /** Resolves with the task's record once it is final. */
  const finished = (taskId: string): Promise<TaskRecord> =>
    until(async () => {
      const t = await fleet.client.task(taskId);
      return ["succeeded", "failed", "canceled"].includes(t.status) ? t : null;
    }, `task ${taskId} to end`);

  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      times[name] = Date.now() - t0;
    }
  };

  beforeAll(async () => {
    await openclawRuntime();
    process.env[KEY_ENV] = KEY;
    model = await ModelStandIn.start();
    // A turn that writes a file: a `write` tool call, then an answer after the tool's result.
    model.mock.on(
      { predicate: (req) => userText(req).includes("TOOLWRITE") && !toolAnswered(req) },
      {
        toolCalls: [
          {
            name: "write",
            arguments: JSON.stringify({ path: "notes/hello.txt", content: "hi from openclaw" }),
          },
        ],
      },
    );
    model.mock.on(
      { predicate: (req) => userText(req).includes("TOOLWRITE") },
      { content: "written" },
    );
    // A slow turn: one character every 100 ms (~4 s when streamed).
    model.mock.on(
      { predicate: (req) => userText(req).includes("SLOWTURN") },
      { content: "a slow answer, one chunk at a time" },
      { latency: 100, chunkSize: 1 },
    );
    model.countUserMessages();
    fleet = await timed("fleet start", () =>
      TestFleet.start({
        pools: [pool],
        retryBackoffMs: 50,
        maxAttempts: 3,
        models: { upstreams: { default: { baseUrl: model.openaiUrl, keyEnv: KEY_ENV } } },
      }),
    );
  }, 300_000);

  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
    await model?.stop();
    delete process.env[KEY_ENV];
    console.log(`openclaw fleet timings (ms): ${JSON.stringify(times)}`);
  });

  it("carries a session's conversation to another container through its snapshot", async () => {
    const t1 = await timed("move: turn 1", () =>
      fleet.client.run({ session: "move", input: "remember the word pelican" }),
    );
    expect(t1.status, JSON.stringify(t1.history)).toBe("succeeded");
    const first = t1.container!;
    expect(first).toBeTruthy();

    // The container that holds the session warm goes away: the next turn must restore.
    const root = await containerRoot(first);
    process.kill(-root, "SIGKILL");
    await until(async () => !(await isAlive(root)), `container ${first} to die`);

    const t2 = await timed("move: turn 2 elsewhere", () =>
      fleet.client.run({ session: "move", input: "which word?" }),
    );
    expect(t2.status, JSON.stringify(t2.history)).toBe("succeeded");
    expect(t2.container).toBeTruthy();
    expect(t2.container).not.toBe(first);
    expect(seen(t2.output!)).toBe(seen(t1.output!) + 1);
    const history = JSON.stringify(model.lastRequest().body);
    expect(history).toContain("remember the word pelican");
    expect(history).toContain(t1.output!);
    expect(history).toContain("which word?");
  });

  it("saves a file an OpenClaw tool wrote in the session's next version", async () => {
    const task = await timed("tool turn", () =>
      fleet.client.run({ session: "tool", input: "TOOLWRITE: please write the note" }),
    );
    expect(task.status, JSON.stringify(task.history)).toBe("succeeded");
    expect(task.output).toBe("written");
    expect(await fleet.sessionFile("tool", "notes/hello.txt")).toBe("hi from openclaw");
  });

  it("retries a turn whose OpenClaw gateway was killed mid-turn, and succeeds", async () => {
    const before = model.requests().length;
    const { taskId } = await fleet.client.submit({ session: "kill", input: "SLOWTURN: take time" });
    const container = await startedOn(taskId);
    // Killed once the model call is under way (the gateway is then mid-request).
    await until(
      async () =>
        model
          .requests()
          .slice(before)
          .some((r) => mentions(r.body as never, "SLOWTURN")),
      "the slow turn's model call",
    );
    const gw = await gatewayPid(container);
    process.kill(gw, "SIGKILL");

    const done = await timed("killed turn to succeed", () => finished(taskId));
    expect(done.status, JSON.stringify(done.history)).toBe("succeeded");
    expect(done.output).toBe("a slow answer, one chunk at a time");
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(done.history[0]?.container).toBe(container);
    expect(done.history[0]?.outcome).not.toBe("succeeded");
  });

  it("gives OpenClaw no key and no network, and keeps the key out of everything", async () => {
    const task = await fleet.client.run({ session: "env", input: "hello from env" });
    expect(task.status, JSON.stringify(task.history)).toBe("succeeded");
    const gw = await gatewayPid(task.container!);
    const environ = (await readFile(`/proc/${gw}/environ`, "utf8")).split("\0");
    expect(environ.join("\n")).not.toContain(KEY);
    expect(environ.filter((v) => v.startsWith(`${KEY_ENV}=`))).toEqual([]);
    expect(environ.filter((v) => v.startsWith("OPENAI_API_KEY="))).toEqual([]);
    // In the sandbox, a network namespace of its own (only loopback: no route off the box).
    const sandboxed =
      (await readlink(`/proc/${gw}/ns/net`)) !== (await readlink("/proc/self/ns/net"));
    if (process.env.CI) expect(sandboxed).toBe(true);
    if (sandboxed) {
      const dev = await readFile(`/proc/${gw}/net/dev`, "utf8");
      const ifaces = dev
        .split("\n")
        .slice(2)
        .map((l) => l.trim().split(":")[0])
        .filter((n) => n !== "");
      expect(ifaces).toEqual(["lo"]);
    }

    const timeline = await fleet.client.timeline(task.taskId);
    expect(JSON.stringify(timeline)).not.toContain(KEY);
    expect(await treeText(fleet.dataDir)).not.toContain(KEY);
  });

  it("puts an OpenClaw turn's model calls on the timeline", async () => {
    const task = await fleet.client.run({ session: "timeline", input: "hello timeline" });
    expect(task.status, JSON.stringify(task.history)).toBe("succeeded");
    const timeline = await fleet.client.timeline(task.taskId);
    const calls = timeline.events.filter((e) => e.source === "node" && e.type === "model");
    expect(calls.length).toBeGreaterThanOrEqual(1);
    for (const call of calls) {
      expect(call).toMatchObject({ model: { provider: "default", status: 200 } });
    }
    expect(calls.at(-1)).toMatchObject({ model: { usage: STAND_IN_USAGE } });
  });
});
