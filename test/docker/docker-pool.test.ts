/**
 * The Docker pool adapter against a real engine: the hardening of each
 * container (docker inspect, and from inside), turns over attached stdio, a
 * container's death reaching its owner, the start throttle, orphan removal and
 * idle reaping.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ExitInfo } from "../../src/adapters/agent-link/pool-adapter.js";
import { LABELS } from "../../src/adapters/docker/docker-container.js";
import { AGENT_UID, DEFAULT_AGENT_IMAGE } from "../../src/adapters/docker/docker-image.js";
import { DockerPool, fleetFilter } from "../../src/adapters/docker/docker-pool.js";
import { ErrorCodes } from "../../src/errors.js";
import { resolvePoolProfile } from "../../src/fleet-options.js";
import { DockerEngine } from "../harness/docker-engine.js";
import {
  dockerSettings,
  EventLog,
  execIn,
  MiB,
  quietHooks,
  turn,
  uniqueFleet,
} from "./docker-fixtures.js";

let engine: DockerEngine;
let scratch: string;
const pools: DockerPool[] = [];

beforeAll(async () => {
  engine = await DockerEngine.start();
  await engine.ensureAgentImage();
});
afterAll(async () => {
  await engine?.[Symbol.asyncDispose]();
});
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function openPool(over: Partial<Parameters<typeof DockerPool.open>[0]> = {}) {
  scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-dpool-"));
  const pool = await DockerPool.open({
    docker: engine.docker,
    fleet: uniqueFleet("pool"),
    nodeId: "node-a",
    settings: dockerSettings(),
    ...over,
  });
  pools.push(pool);
  return pool;
}

const profile = resolvePoolProfile({
  kind: "docker",
  agentHeartbeatMs: 200,
  missedHeartbeats: 10,
  docker: { memoryMb: 160, pids: 64, cpus: 0.5, tmpfsMb: 16 },
});

describe("DockerPool containers", () => {
  it("are hardened: non-root, read-only root, tmpfs /tmp, one writable mount, no network, limits, no caps", async () => {
    const pool = await openPool();
    const c = await pool.start({ id: "c1", profile, workspaceDir: path.join(scratch, "ws1") });
    const info = await engine.docker.getContainer(c.container.id).inspect();
    expect(info.Config.Image).toBe(DEFAULT_AGENT_IMAGE);
    expect(info.Config.User).toBe(`${AGENT_UID}:${AGENT_UID}`);
    expect(info.Config.Labels).toMatchObject({
      [LABELS.fleet]: pool.owner.fleet,
      [LABELS.node]: "node-a",
      [LABELS.pool]: "default",
      [LABELS.container]: "c1",
    });
    const host = info.HostConfig;
    expect(host.ReadonlyRootfs).toBe(true);
    expect(host.NetworkMode).toBe("none");
    expect(host.IpcMode).toBe("none");
    expect(host.Memory).toBe(160 * MiB);
    expect(host.MemorySwap).toBe(160 * MiB);
    expect(host.PidsLimit).toBe(64);
    expect(host.NanoCpus).toBe(0.5e9);
    expect(host.CapDrop).toEqual(["ALL"]);
    expect(host.CapAdd ?? []).toEqual([]);
    expect(host.Privileged).toBe(false);
    expect(host.SecurityOpt).toEqual(["no-new-privileges"]);
    expect(host.Tmpfs).toEqual({ "/tmp": expect.stringMatching(/size=16m/) });
    expect(info.Mounts.map((m) => [m.Type, m.Destination, m.RW])).toEqual([
      ["bind", "/workspace", true],
    ]);
    expect(Object.keys(info.NetworkSettings.Networks).filter((n) => n !== "none")).toEqual([]);

    // The same, seen from inside by the agent's user.
    const probe = await execIn(engine.docker, c.container.id, [
      "/usr/local/bin/node",
      "-e",
      `const fs = require("node:fs"), os = require("node:os");
       const status = fs.readFileSync("/proc/self/status", "utf8");
       const field = (k) => status.match(new RegExp("^" + k + ":\\\\s+(\\\\S+)", "m"))[1];
       const canWrite = (p) => { try { fs.writeFileSync(p, "x"); fs.rmSync(p); return true; } catch { return false; } };
       console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(),
         capEff: field("CapEff"), capBnd: field("CapBnd"), noNewPrivs: field("NoNewPrivs"),
         interfaces: Object.keys(os.networkInterfaces()), shm: fs.existsSync("/dev/shm"),
         root: canWrite("/probe"), etc: canWrite("/etc/probe"), tmp: canWrite("/tmp/probe"),
         workspace: canWrite("/workspace/probe") }));`,
    ]);
    expect(JSON.parse(probe)).toEqual({
      uid: AGENT_UID,
      gid: AGENT_UID,
      capEff: "0000000000000000",
      capBnd: "0000000000000000",
      noNewPrivs: "1",
      interfaces: ["lo"],
      shm: false,
      root: false,
      etc: false,
      tmp: true,
      workspace: true,
    });
  });

  it("run turns over the attached stdio, in the workspace, keeping state across turns", async () => {
    const pool = await openPool();
    const workspaceDir = path.join(scratch, "ws");
    const c = await pool.start({ id: "c1", profile, workspaceDir });
    const steps: unknown[] = [];
    const hooks = {
      ...quietHooks,
      onStep: async (s: { output?: unknown }) => void steps.push(s.output),
    };
    const opts = { timeoutMs: 10_000, signal: new AbortController().signal };
    expect(await c.runTurn(turn("t1", "hello"), hooks, opts)).toBe("turn 1: hello");
    const script = {
      script: [
        { op: "write", path: "notes/a.txt", text: "A" },
        { op: "reply", text: "done" },
      ],
    };
    expect(await c.runTurn(turn("t2", script), hooks, opts)).toBe("done");
    expect(steps).toEqual(["turn 1: hello", { path: "notes/a.txt", bytes: 1 }, "done"]);
    expect(await readFile(path.join(workspaceDir, "memory.md"), "utf8")).toContain("hello");
    expect(await readFile(path.join(workspaceDir, "notes/a.txt"), "utf8")).toBe("A");
    expect(c.alive).toBe(true);
  });

  it("report a container's death to its owner: killed from outside, and out of memory", async () => {
    const pool = await openPool();
    const a = await pool.start({ id: "a", profile, workspaceDir: path.join(scratch, "a") });
    const died = new Promise<ExitInfo>((resolve) => a.onExit(resolve));
    await engine.docker.getContainer(a.container.id).kill();
    const info = await died;
    expect(info.error.code).toBe(ErrorCodes.AGENT_EXITED);
    expect(info.error.retryable).toBe(true);
    expect(a.alive).toBe(false);

    // A turn allocating past the memory limit: the kernel kills the agent, the turn is retryable.
    const b = await pool.start({ id: "b", profile, workspaceDir: path.join(scratch, "b") });
    const oom = new Promise<ExitInfo>((resolve) => b.onExit(resolve));
    const opts = { timeoutMs: 20_000, signal: new AbortController().signal };
    const turnDone = b.runTurn(
      turn("t1", { script: [{ op: "alloc", mb: 400 }] }),
      quietHooks,
      opts,
    );
    await expect(turnDone).rejects.toMatchObject({ retryable: true });
    expect((await oom).error.message).toMatch(/out of memory/);
  });

  it("start at most maxConcurrentStarts at once; the others wait their turn", async () => {
    const events = new EventLog();
    const pool = await openPool({
      settings: dockerSettings({ maxConcurrentStarts: 2 }),
      onEvent: events.push,
    });
    const ids = ["s1", "s2", "s3", "s4"];
    const handles = await Promise.all(
      ids.map((id) => pool.start({ id, profile, workspaceDir: path.join(scratch, id) })),
    );
    expect(handles.every((h) => h.alive)).toBe(true);
    const admitted = events.of("admitted");
    expect(admitted.map((e) => e.id).sort()).toEqual(ids);
    expect(Math.max(...admitted.map((e) => e.starting))).toBe(2);
    // The last two were admitted only once one of the first two had finished starting.
    expect(admitted.slice(2).every((e) => e.waitedMs > 0)).toBe(true);
  });
});

describe("DockerPool memory", () => {
  it("removes a busy container past the hard limit when nothing idle is left (the host comes first)", async () => {
    const events = new EventLog();
    // Budget 80 MiB, hard limit 80 + 80/2 = 120 MiB of memory really held.
    const settings = dockerSettings({ hostMemoryMb: 160, headroomMb: 80, startReserveMb: 16 });
    const pool = await openPool({ settings, onEvent: events.push });
    const big = resolvePoolProfile({ ...profile, docker: { ...profile.docker, memoryMb: 192 } });
    const hog = await pool.start({
      id: "hog",
      profile: big,
      workspaceDir: path.join(scratch, "h"),
    });
    const died = new Promise<ExitInfo>((resolve) => hog.onExit(resolve));
    const opts = { timeoutMs: 30_000, signal: new AbortController().signal };
    const ops = [
      { op: "alloc", mb: 130 },
      { op: "sleep", ms: 25_000 },
    ];
    const turnDone = hog.runTurn(turn("t1", { script: ops }), quietHooks, opts);
    await expect(turnDone).rejects.toMatchObject({
      code: ErrorCodes.AGENT_EXITED,
      retryable: true,
    });
    const shed = await events.wait("shed", (e) => e.reason === "hard-limit");
    expect(shed).toMatchObject({ id: "hog", state: "busy" });
    expect(shed.usageMb).toBeGreaterThan(pool.budget.hardLimitMb);
    expect((await died).error.message).toMatch(/hard memory limit/);
  });
});

describe("DockerPool cleanup", () => {
  it("removes orphans on open: stale containers of its own node and of dead nodes, not of live ones", async () => {
    const fleet = uniqueFleet("orphan");
    const make = (node: string, name: string) =>
      engine.docker.createContainer({
        name: `${fleet}-${name}`,
        Image: DEFAULT_AGENT_IMAGE,
        Labels: { [LABELS.fleet]: fleet, [LABELS.node]: node, [LABELS.instance]: "old" },
        HostConfig: { NetworkMode: "none" },
      });
    await make("node-a", "stale");
    await make("node-dead", "dead");
    const kept = await make("node-live", "live");
    const events = new EventLog();
    await openPool({
      fleet,
      onEvent: events.push,
      liveNodes: async () => new Set(["node-live"]),
      orphanGraceMs: 0,
    });
    expect(
      events
        .of("orphan-removed")
        .map((e) => e.node)
        .sort(),
    ).toEqual(["node-a", "node-dead"]);
    const left = await engine.docker.listContainers({ all: true, filters: fleetFilter(fleet) });
    expect(left.map((c) => c.Id)).toEqual([kept.id]);
    await kept.remove({ force: true });
  });

  it("reaps containers idle past the TTL beyond the pool's minIdle, as a death of the container", async () => {
    const events = new EventLog();
    const pool = await openPool({
      settings: dockerSettings({ idleTtlMs: 300, statsIntervalMs: 100 }),
      onEvent: events.push,
    });
    const keepOne = resolvePoolProfile({ ...profile, minIdle: 1 });
    const a = await pool.start({
      id: "a",
      profile: keepOne,
      workspaceDir: path.join(scratch, "a"),
    });
    const b = await pool.start({
      id: "b",
      profile: keepOne,
      workspaceDir: path.join(scratch, "b"),
    });
    const deaths = await Promise.race([
      new Promise<string>((r) => a.onExit(() => r("a"))),
      new Promise<string>((r) => b.onExit(() => r("b"))),
    ]);
    const reaped = await events.wait("reaped");
    expect(reaped.id).toBe(deaths);
    await events.wait("removed", (e) => e.id === reaped.id);
    expect(reaped.idleMs).toBeGreaterThan(300);
    const left = await engine.docker.listContainers({
      all: true,
      filters: fleetFilter(pool.owner.fleet),
    });
    expect(left).toHaveLength(1);
    expect(events.of("reaped")).toHaveLength(1);
  });
});
