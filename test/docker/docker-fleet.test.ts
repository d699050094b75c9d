/**
 * A fleet whose node runs its agents in Docker containers, end to end through
 * the public API and the CLI, against a real engine.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS } from "../../src/adapters/docker/docker-container.js";
import { fleetFilter } from "../../src/adapters/docker/docker-pool.js";
import { connectFleet } from "../../src/adapters/nats/fleet-nats.js";
import { ErrorCodes } from "../../src/errors.js";
import { NodeHeartbeatSchema } from "../../src/protocol/fleet-messages.js";
import { CliProcess, runCli } from "../harness/cli-process.js";
import { DockerEngine } from "../harness/docker-engine.js";
import { TestFleet } from "../harness/test-fleet.js";
import { uniqueFleet } from "./docker-fixtures.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

let engine: DockerEngine;
beforeAll(async () => {
  engine = await DockerEngine.start();
  await engine.ensureAgentImage();
});
afterAll(async () => {
  await engine?.[Symbol.asyncDispose]();
});

/** Polls `probe` until it returns a value (a condition on engine or fleet state, not a fixed wait). */
async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await sleep(50)) {
    const v = await probe();
    if (v !== undefined) return v;
  }
  throw new Error("condition not met in time");
}

describe("a fleet on a docker pool", () => {
  let fleet: TestFleet;
  const prefix = uniqueFleet("fleet");
  const running = () =>
    engine.docker.listContainers({ filters: { ...fleetFilter(prefix), status: ["running"] } });

  beforeAll(async () => {
    fleet = await TestFleet.start({
      prefix,
      pools: [
        {
          kind: "docker",
          minIdle: 1,
          max: 2,
          agentHeartbeatMs: 250,
          missedHeartbeats: 8,
          docker: { memoryMb: 192 },
        },
      ],
      docker: { host: engine.host, statsIntervalMs: 250 },
      retryBackoffMs: 50,
    });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
    // Stopping the node removed every container it started.
    expect(await engine.docker.listContainers({ all: true, filters: fleetFilter(prefix) })).toEqual(
      [],
    );
  });

  it("runs a session's tasks in a labelled container, with its files carried between turns", async () => {
    const first = await fleet.client.run({ session: "s1", input: "hello", waitMs: 30_000 });
    expect(first.status).toBe("succeeded");
    expect(first.output).toBe("turn 1: hello");
    const [c] = await engine.docker.listContainers({
      filters: { label: [`${LABELS.fleet}=${prefix}`, `${LABELS.container}=${first.container}`] },
    });
    expect(c?.Labels).toMatchObject({
      [LABELS.fleet]: prefix,
      [LABELS.node]: "node-a",
      [LABELS.pool]: "default",
    });
    const second = await fleet.client.run({ session: "s1", input: "again", waitMs: 30_000 });
    expect(second.output).toBe("turn 2: again");
    expect(second.rung).toBe("reserved");
    expect(second.container).toBe(first.container);
  });

  it("retries a task whose container died under it, on another container", async () => {
    const task = await fleet.client.run({
      session: "s2",
      input: script({ op: "crash", mode: "exit" }, { op: "reply", text: "survived" }),
      waitMs: 30_000,
    });
    expect(task.status).toBe("succeeded");
    expect(task.output).toBe("survived");
    expect(task.attempts).toBe(2);
    expect(task.history[0]?.error?.code).toBe(ErrorCodes.AGENT_EXITED);
    expect(task.history[1]?.container).not.toBe(task.history[0]?.container);
  });

  it("replaces an idle container killed from outside", async () => {
    const nats = await connectFleet(fleet.url, { prefix });
    const containers = async () => {
      const entry = await nats.kv.nodes.get("node-a");
      return entry ? NodeHeartbeatSchema.parse(entry.json()).containers : [];
    };
    const idle = await until(async () => (await containers()).find((c) => c.state === "idle"));
    const [victim] = await engine.docker.listContainers({
      filters: { label: [`${LABELS.fleet}=${prefix}`, `${LABELS.container}=${idle.id}`] },
    });
    await engine.docker.getContainer(victim!.Id).kill();
    const replaced = await until(async () => {
      const now = await containers();
      const ids = now.map((c) => c.id);
      return !ids.includes(idle.id) && now.some((c) => c.state === "idle") ? ids : undefined;
    });
    await nats.close();
    expect(replaced).not.toContain(idle.id);
    expect((await running()).map((c) => c.Labels[LABELS.container])).not.toContain(idle.id);
  });
});

describe("the CLI with a docker pool", () => {
  it("`image build` is up to date, `up --pool docker` serves tasks, and stopping removes its containers", async () => {
    const env = { DOCKER_HOST: engine.host };
    const build = await runCli(["image", "build"], { env });
    expect(build.code, build.stderr).toBe(0);
    expect(build.stdout).toMatch(/^clawfleet-agent:local sha256:[0-9a-f]{64} \(up to date\)\n$/);
    expect(build.stderr).toMatch(/image: bundling the reference agent/);

    const dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-cli-docker-"));
    const prefix = uniqueFleet("cli");
    const flags = ["--data-dir", dataDir, "--prefix", prefix];
    try {
      await using up = await CliProcess.start(
        ["up", "--pool", "docker", "--min-idle", "1", "--max", "2", ...flags],
        "clawfleet is up",
        { env },
      );
      expect(up.stdout).toContain("docker image clawfleet-agent:local");
      const sent = await runCli(["send", "--session", "demo", "hello", ...flags], { env });
      expect(sent.stdout, sent.stderr).toBe("turn 1: hello\n");
      expect(await up.stop("SIGTERM")).toBe(0);
      expect(
        await engine.docker.listContainers({ all: true, filters: fleetFilter(prefix) }),
      ).toEqual([]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("a node killed outright takes its agents down with it, and its next run removes the remains", async () => {
    const env = { DOCKER_HOST: engine.host };
    const dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-cli-crash-"));
    const prefix = uniqueFleet("crash");
    const args = ["up", "--pool", "docker", "--min-idle", "2", "--max", "2", "--id", "crashy"];
    const flags = ["--data-dir", dataDir, "--prefix", prefix];
    try {
      const first = await CliProcess.start([...args, ...flags], "clawfleet is up", { env });
      const before = await until(async () => {
        const list = await engine.docker.listContainers({ filters: fleetFilter(prefix) });
        return list.length === 2 ? list : undefined;
      });
      await first.stop("SIGKILL");
      // The agents' stdin closed with the node's attach connections: they exit on their own.
      for (const c of before) {
        expect((await engine.docker.getContainer(c.Id).wait()).StatusCode).toBe(0);
      }
      await using second = await CliProcess.start([...args, ...flags], "clawfleet is up", { env });
      const left = await engine.docker.listContainers({ all: true, filters: fleetFilter(prefix) });
      const old = new Set(before.map((c) => c.Id));
      expect(left.filter((c) => old.has(c.Id))).toEqual([]);
      const code = await second.stop("SIGTERM");
      expect({ code, signal: second.exitSignal }, second.stderr).toEqual({ code: 0, signal: null });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
