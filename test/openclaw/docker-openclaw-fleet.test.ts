/**
 * The real OpenClaw in a whole fleet on Docker: one docker pool of `runtime: "openclaw"`
 * (a warm OpenClaw gateway per container, from the OpenClaw agent image), real
 * nats-server, the model gateway holding the only key, and aimock as the upstream. A
 * session's conversation follows it to another container through its snapshot, and a
 * container has no network and no key. One fleet of two containers for the whole file.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS } from "../../src/adapters/docker/docker-container.js";
import { fleetFilter } from "../../src/adapters/docker/docker-pool.js";
import { buildRuntimeImage } from "../../src/adapters/docker/runtime-image.js";
import type { PoolProfileOptions } from "../../src/fleet-options.js";
import { uniqueFleet } from "../docker/docker-fixtures.js";
import { DockerEngine } from "../harness/docker-engine.js";
import { ModelStandIn } from "../harness/model-stand-in.js";
import { TestFleet } from "../harness/test-fleet.js";
import { treeText } from "../harness/tree-text.js";
import { openclawRuntime, seen } from "./openclaw-fixture.js";

const KEY_ENV = "CLAWFLEET_TEST_OPENCLAW_MODEL_KEY";
const KEY = `sk-test-${randomBytes(12).toString("hex")}`;

const pool: PoolProfileOptions = {
  kind: "docker",
  runtime: "openclaw",
  minIdle: 2,
  max: 2,
  reservedWindowMs: 0,
};

describe("an OpenClaw docker pool in a fleet, behind the model gateway", () => {
  let engine: DockerEngine;
  let model: ModelStandIn;
  let fleet: TestFleet;
  const prefix = uniqueFleet("openclaw");
  const times: Record<string, number> = {};

  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      times[name] = Date.now() - t0;
    }
  };

  /** The engine's container of fleet container `id`. */
  const engineContainer = async (id: string) => {
    const [c] = await engine.docker.listContainers({
      all: true,
      filters: { label: [`${LABELS.fleet}=${prefix}`, `${LABELS.container}=${id}`] },
    });
    if (!c) throw new Error(`no engine container for ${id}`);
    return engine.docker.getContainer(c.Id);
  };

  beforeAll(async () => {
    engine = await timed("engine", () => DockerEngine.start());
    await openclawRuntime();
    const built = await timed("image", () =>
      buildRuntimeImage(engine.docker, { runtime: "openclaw" }),
    );
    process.stderr.write(`${built.tag}: ${built.cached ? "up to date" : "built"}\n`);
    process.env[KEY_ENV] = KEY;
    model = await ModelStandIn.start();
    model.countUserMessages();
    fleet = await timed("fleet start", () =>
      TestFleet.start({
        prefix,
        pools: [pool],
        docker: { host: engine.host },
        retryBackoffMs: 50,
        maxAttempts: 3,
        models: { upstreams: { default: { baseUrl: model.openaiUrl, keyEnv: KEY_ENV } } },
      }),
    );
  }, 600_000);

  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
    await model?.stop();
    delete process.env[KEY_ENV];
    if (engine) {
      expect(
        await engine.docker.listContainers({ all: true, filters: fleetFilter(prefix) }),
      ).toEqual([]);
    }
    await engine?.[Symbol.asyncDispose]();
    console.log(`docker openclaw fleet timings (ms): ${JSON.stringify(times)}`);
  }, 120_000);

  it("carries a session's conversation to another container through its snapshot", async () => {
    const t1 = await timed("move: turn 1", () =>
      fleet.client.run({ session: "move", input: "remember the word pelican", waitMs: 240_000 }),
    );
    expect(t1.status, JSON.stringify(t1.history)).toBe("succeeded");
    const first = t1.container!;
    expect(first).toBeTruthy();

    // The container that holds the session warm goes away: the next turn must restore.
    const victim = await engineContainer(first);
    await victim.kill();
    await victim.wait();

    const t2 = await timed("move: turn 2 elsewhere", () =>
      fleet.client.run({ session: "move", input: "which word?", waitMs: 240_000 }),
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

  it("gives the container no network and no key, and keeps the key out of the data dir", async () => {
    const task = await fleet.client.run({
      session: "env",
      input: "hello from env",
      waitMs: 240_000,
    });
    expect(task.status, JSON.stringify(task.history)).toBe("succeeded");
    const info = await (await engineContainer(task.container!)).inspect();
    expect(info.HostConfig.NetworkMode).toBe("none");
    const env = info.Config.Env ?? [];
    expect(env.join("\n")).not.toContain(KEY);
    expect(env.filter((v) => v.startsWith(`${KEY_ENV}=`))).toEqual([]);
    expect(env.filter((v) => v.startsWith("OPENAI_API_KEY="))).toEqual([]);

    const timeline = await fleet.client.timeline(task.taskId);
    expect(JSON.stringify(timeline)).not.toContain(KEY);
    expect(await treeText(fleet.dataDir)).not.toContain(KEY);
  });
});
