/**
 * `clawfleet model-gateway` as its own process: it serves the upstream
 * `--model-url` names with the key from the variable `--model-key-env` names,
 * and refuses to start, in one line, when that variable is not set.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callModel } from "../../src/adapters/model/model-client.js";
import { fleetSubjects } from "../../src/protocol/fleet-subjects.js";
import type { ModelCallRequest } from "../../src/protocol/model-messages.js";
import { CliProcess, runCli } from "../harness/cli-process.js";
import { ModelStandIn, userCountAnswer } from "../harness/model-stand-in.js";
import { NatsServer } from "../harness/nats-server.js";

const KEY = "sk-cli-5d1f3b7a9e2c4d6f8a0b";

const chat = (...users: string[]) =>
  JSON.stringify({ model: "m1", messages: users.map((content) => ({ role: "user", content })) });

describe("clawfleet model-gateway", () => {
  let nats: NatsServer;
  let model: ModelStandIn;
  let dir: string;

  beforeAll(async () => {
    nats = await NatsServer.start();
    model = await ModelStandIn.start();
    model.countUserMessages();
    dir = await mkdtemp(path.join(tmpdir(), "clawfleet-model-cli-"));
  });

  afterAll(async () => {
    await model?.stop();
    await nats?.[Symbol.asyncDispose]();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const flags = () => [
    "--nats",
    nats.url,
    "--data-dir",
    dir,
    "--log-level",
    "warn",
    "--model-url",
    model.openaiUrl,
    "--model-key-env",
    "CF_TEST_MODEL_KEY",
  ];

  it("serves the upstream --model-url names, with the key from --model-key-env", async () => {
    await using role = await CliProcess.start(["model-gateway", ...flags()], "connected to", {
      env: { CF_TEST_MODEL_KEY: KEY },
    });
    const nc = await nats.connect();
    const request: ModelCallRequest = {
      upstream: "default",
      method: "POST",
      path: "/chat/completions",
      headers: { "content-type": "application/json" },
      body: chat("a", "b", "c"),
      tenant: "t1",
      session: "s1",
      taskId: "task-1",
      attempt: 1,
      node: "node-a",
      container: "c1",
    };
    const chunks: string[] = [];
    const outcome = await callModel(
      { nc, subjects: fleetSubjects() },
      request,
      { head: () => {}, chunk: (d) => chunks.push(d) },
      {
        signal: new AbortController().signal,
        maxWaitMs: 10_000,
        stallMs: 5_000,
        maxRequestBytes: 1 << 20,
      },
    );
    expect(outcome.error).toBeUndefined();
    expect(chunks.join("")).toContain(userCountAnswer(3));
    expect(model.lastRequest().headers.authorization).toBe("[REDACTED]");
    expect(await role.stop("SIGTERM")).toBe(0);
    expect(role.stderr).not.toContain(KEY);
  });

  it("refuses to start when the key's variable is not set", async () => {
    const env = { ...process.env };
    delete env.CF_TEST_MODEL_KEY;
    const r = await runCli(["model-gateway", ...flags()], { env });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/CONFIG_INVALID: .*CF_TEST_MODEL_KEY/);
  });
});
