/**
 * Any CLI agent through the `command` runtime, end to end: a real fleet (nats-server,
 * orchestrator, node, API gateway, model gateway), a process pool whose agent is a
 * small CLI program (test/harness/model-caller.mjs) run once per turn in the
 * bubblewrap sandbox, and aimock as the model upstream. The program calls its model
 * the way an OpenAI SDK does, through OPENAI_BASE_URL, which points at the shim in
 * its sandbox; the key exists only at the model gateway.
 */
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCodes } from "../../src/errors.js";
import type { PoolProfileOptions } from "../../src/fleet-options.js";
import { ModelStandIn, STAND_IN_USAGE, userCountAnswer } from "../harness/model-stand-in.js";
import { TestFleet } from "../harness/test-fleet.js";
import { treeText } from "../harness/tree-text.js";

const CALLER = fileURLToPath(new URL("../harness/model-caller.mjs", import.meta.url));
const KEY_ENV = "CLAWFLEET_TEST_COMMAND_MODEL_KEY";
const KEY = `sk-test-${randomBytes(12).toString("hex")}`;

const pool: PoolProfileOptions = {
  runtime: "command",
  command: { argv: [process.execPath, CALLER], input: "stdin" },
  minIdle: 1,
  max: 2,
  // CI has bubblewrap; the sandbox is part of what is tested (no route off the box).
  sandbox: process.env.CI ? "bwrap" : "auto",
  agentHeartbeatMs: 200,
};

describe("a command pool calling its model through the bridge", () => {
  let model: ModelStandIn;
  let fleet: TestFleet;

  beforeAll(async () => {
    process.env[KEY_ENV] = KEY;
    model = (await ModelStandIn.start()).countUserMessages();
    fleet = await TestFleet.start({
      pools: [pool],
      retryBackoffMs: 50,
      maxAttempts: 2,
      models: { upstreams: { default: { baseUrl: model.openaiUrl, keyEnv: KEY_ENV } } },
    });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
    await model?.stop();
    delete process.env[KEY_ENV];
  });

  it("answers from the model, records the call on the timeline, and saves the workspace", async () => {
    const task = await fleet.client.run({ session: "ask", input: "ask: hello" });
    expect(task.status).toBe("succeeded");
    expect(task.output).toBe(userCountAnswer(1));
    // The key the gateway adds is checked byte for byte in model-gateway.test.ts (aimock's
    // journal masks credential headers).
    expect(model.lastRequest().body).toMatchObject({ model: "test-model" });

    const timeline = await fleet.client.timeline(task.taskId);
    const calls = timeline.events.filter((e) => e.source === "node" && e.type === "model");
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({
      call: 1,
      model: {
        provider: "default",
        model: "test-model",
        status: 200,
        usage: STAND_IN_USAGE,
        stream: false,
      },
    });
    expect(await fleet.sessionFile("ask", "turns.md")).toBe(`hello -> ${userCountAnswer(1)}\n`);
  });

  it("relays a streamed answer", async () => {
    const task = await fleet.client.run({ session: "stream", input: "stream: hi there" });
    expect(task.status).toBe("succeeded");
    expect(task.output).toBe(userCountAnswer(1));
    const timeline = await fleet.client.timeline(task.taskId);
    const call = timeline.events.find((e) => e.source === "node" && e.type === "model");
    expect(call).toMatchObject({ model: { stream: true, status: 200, usage: STAND_IN_USAGE } });
  });

  it("gives the agent no key, no route off the box, and keeps the key out of everything", async () => {
    const env = await fleet.client.run({ session: "env", input: "env" });
    expect(env.status).toBe("succeeded");
    const vars = Object.fromEntries(
      env.output!.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(vars.OPENAI_API_KEY).toBe("clawfleet-no-key");
    expect(vars.OPENAI_BASE_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/default$/);
    expect(vars[KEY_ENV]).toBeUndefined();
    expect(env.output).not.toContain(KEY);

    // The stand-in listens on the host's loopback; the sandbox has its own.
    const reach = await fleet.client.run({
      session: "env",
      input: `reach: ${model.url}/v1/models`,
    });
    expect(reach.status).toBe("succeeded");
    if (process.env.CI) expect(reach.output).toMatch(/^unreachable: /);

    const timeline = await fleet.client.timeline(env.taskId);
    expect(JSON.stringify(timeline)).not.toContain(KEY);
    expect(await treeText(fleet.dataDir)).not.toContain(KEY);
  });

  it("fails a non-zero exit with AGENT_FAILED and the agent's stderr", async () => {
    const task = await fleet.client.run({ session: "fail", input: "fail: the disk is on fire" });
    expect(task.status).toBe("failed");
    expect(task.error?.code).toBe(ErrorCodes.AGENT_FAILED);
    expect(task.error?.message).toContain("the disk is on fire");
    expect(task.attempts).toBe(1);
  });

  it("stops a hanging agent at the turn's deadline", async () => {
    const task = await fleet.client.run({ session: "hang", input: "hang", timeoutMs: 1500 });
    expect(task.status).toBe("failed");
    expect(task.error?.code).toBe(ErrorCodes.TURN_TIMEOUT);
  });

  it("fails a model request over the limit with MODEL_REQUEST_TOO_LARGE, nothing sent", async () => {
    const before = model.requests().length;
    const task = await fleet.client.run({ session: "big", input: `big: ${5 * 1024 * 1024}` });
    expect(task.status).toBe("failed");
    expect(task.error?.code).toBe(ErrorCodes.MODEL_REQUEST_TOO_LARGE);
    expect(model.requests().length).toBe(before);
  });
});

describe("a command pool whose model gateway is down", () => {
  it("fails the turn with MODEL_GATEWAY_UNAVAILABLE at once, not after the agent's retries", async () => {
    await using fleet = await TestFleet.start({
      roles: ["node", "orchestrator", "gateway"],
      pools: [pool],
      retryBackoffMs: 50,
      maxAttempts: 1,
      models: { upstreams: { default: { baseUrl: "http://127.0.0.1:9/v1" } } },
    });
    const task = await fleet.client.run({ session: "down", input: "ask: anyone?" });
    expect(task.status).toBe("failed");
    // Retryable (a gateway may come back), so the one attempt allowed is spent.
    expect(task.error?.code).toBe(ErrorCodes.ATTEMPTS_EXHAUSTED);
    expect(task.error?.message).toContain(ErrorCodes.MODEL_GATEWAY_UNAVAILABLE);
    expect(task.history[0]?.error?.code).toBe(ErrorCodes.MODEL_GATEWAY_UNAVAILABLE);
    expect(await fleet.sessionFile("down", "turns.md")).toBeNull();
  });
});

describe("a command pool whose program is not installed", () => {
  it("fails the node's start once with RUNTIME_NOT_INSTALLED instead of crash-looping", async () => {
    const start = TestFleet.start({
      roles: ["node"],
      pools: [{ runtime: "command", command: { argv: ["clawfleet-no-such-agent-cli"] } }],
    });
    await expect(start).rejects.toMatchObject({
      code: ErrorCodes.RUNTIME_NOT_INSTALLED,
      message: expect.stringContaining("clawfleet-no-such-agent-cli"),
    });
  });
});
