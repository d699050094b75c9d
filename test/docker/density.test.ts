/**
 * Safe density against a real engine: a fleet whose docker pool may hold
 * containers with memory limits adding up to twice its memory budget, driven by
 * scripted alloc steps. Starts are admitted only within the budget, idle and
 * reserved containers are shed lowest priority first (each snapshotted first,
 * by a local workspace store), every task ends well, and nothing comes near
 * running the host (or a container) out of memory.
 *
 * The allocations are sized at run time from the measured footprint of an idle
 * agent, so that the start of task E needs about half an idle container freed
 * and E's own allocation then overshoots by about as much again. Together with
 * a wave of mixed priorities, the scripted allocations add up to about twice
 * the budget.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { LABELS } from "../../src/adapters/docker/docker-container.js";
import type { DockerPool, ShedContainer } from "../../src/adapters/docker/docker-pool.js";
import { fleetFilter } from "../../src/adapters/docker/docker-pool.js";
import { openNodeDockerPool } from "../../src/adapters/docker/docker-pool-wiring.js";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { LocalWorkspaceStore } from "../../src/adapters/workspace/local-workspace-store.js";
import { systemClock } from "../../src/clock.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import { FleetClient } from "../../src/gateway/fleet-client.js";
import { silentLogger } from "../../src/logger.js";
import type { Priority, TaskRecord } from "../../src/protocol/api-schemas.js";
import { type LocalFleet, startLocalFleet } from "../../src/roles/fleet-roles.js";
import { DockerEngine } from "../harness/docker-engine.js";
import { NatsServer } from "../harness/nats-server.js";
import { EventLog, uniqueFleet } from "./docker-fixtures.js";

const HOST_MB = 568;
const HEADROOM_MB = 120;
const LIMIT_MB = HOST_MB - HEADROOM_MB; // 448: the budget
const RESERVE_MB = 80; // charged at least to a container starting or running a turn
const CONTAINER_MB = 112;
const MAX = 8; // 8 × 112 MiB = 896 MiB of limits: twice the budget

let engine: DockerEngine;
let nats: NatsServer;
let fleetNats: FleetNats;
let pool: DockerPool;
let fleet: LocalFleet;
let client: FleetClient;
let dataDir: string;
const prefix = uniqueFleet("dens");
const events = new EventLog();
const shed: (ShedContainer & { running: boolean })[] = [];
const ooms: string[] = [];
let stopOomWatch = () => {};

beforeAll(async () => {
  engine = await DockerEngine.start();
  await engine.ensureAgentImage();
  nats = await NatsServer.start();
  dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-density-"));
  const options = resolveFleetOptions({
    nodeId: "node-a",
    prefix,
    natsUrl: nats.url,
    dataDir,
    leaseRenewMs: 1000,
    leaseTtlMs: 15_000,
    retryBackoffMs: 100,
    pools: [
      {
        kind: "docker",
        minIdle: 0,
        max: MAX,
        // The node-wide docker throttle (2) paces starts; a pool-level refusal would make the
        // orchestrator take another session's reservation instead, muddling the scenario.
        maxConcurrentStarts: MAX,
        agentHeartbeatMs: 250,
        missedHeartbeats: 12,
        docker: { memoryMb: CONTAINER_MB },
      },
    ],
    docker: {
      host: engine.host,
      hostMemoryMb: HOST_MB,
      headroomMb: HEADROOM_MB,
      startReserveMb: RESERVE_MB,
      statsIntervalMs: 100,
      maxConcurrentStarts: 2,
    },
  });
  const oomStream = await engine.docker.getEvents({
    filters: { type: ["container"], event: ["oom"], label: [`${LABELS.fleet}=${prefix}`] },
  });
  oomStream.on("data", (chunk: Buffer) => ooms.push(chunk.toString()));
  stopOomWatch = () => (oomStream as unknown as { destroy(): void }).destroy();
  const snapshots = new LocalWorkspaceStore(path.join(dataDir, "shed-snapshots"));
  fleetNats = await connectFleet(nats.url, { prefix });
  pool = await openNodeDockerPool(options, fleetNats, {
    clock: systemClock,
    logger: silentLogger,
    onEvent: events.push,
    onShed: async (c) => {
      const state = await engine.docker
        .getContainer(pool.containers.find((h) => h.id === c.id)!.container.id)
        .inspect();
      shed.push({ ...c, running: state.State.Running });
      if (c.session) await snapshots.save(c.session.tenant, c.session.session, c.workspaceDir);
    },
  });
  fleet = await startLocalFleet(options, { adapter: pool });
  client = new FleetClient(await nats.connect(), { prefix });
});

afterAll(async () => {
  stopOomWatch();
  await fleet?.stop();
  await pool?.close();
  await fleetNats?.close();
  await nats?.[Symbol.asyncDispose]();
  const left = await engine?.docker.listContainers({ all: true, filters: fleetFilter(prefix) });
  await engine?.[Symbol.asyncDispose]();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  expect(left ?? []).toEqual([]);
});

const script = (...ops: object[]) => JSON.stringify({ script: ops });
const run = (session: string, input: string, priority: Priority) =>
  client.run({ session, input, priority, waitMs: 90_000 });

/** Resolves when the node reports step `step` of each task (the step ran and was checkpointed). */
function stepsDone(nc: NatsConnection, count: number) {
  const seen = new Set<string>();
  const sub = nc.subscribe(`${prefix}.events.task.>`);
  return (async () => {
    for await (const m of sub) {
      const e = m.json<{ type: string; taskId: string; step?: number }>();
      if (e.type === "step" && e.step === 1) seen.add(e.taskId);
      if (seen.size === count) break;
    }
    sub.unsubscribe();
  })();
}

it("admits starts within the budget, sheds lowest priority first, loses no task, never runs short", async () => {
  // 1. Three sessions, one of each priority, leave reserved containers with an idle agent each.
  const a = await run("a", "hello", "low");
  const b = await run("b", "hello", "normal");
  const c = await run("c", "hello", "high");
  for (const t of [a, b, c]) expect(t.status).toBe("succeeded");
  await pool.refresh();
  const idleMb = [a, b, c].map((t) => pool.budget.chargeOf(t.container!));
  const agentMb = idleMb.reduce((x, y) => x + y) / 3;
  const half = agentMb / 2;

  // 2. Four busy tasks take the budget to within half an agent of admitting one more start.
  //    Three go first; the fourth's allocation is sized from what they were measured to hold,
  //    so that only one agent's footprint is an estimate (footprints vary by a MiB or two
  //    under load, and the window is one idle agent wide).
  const busyScript = (s: string, mb: number) =>
    script({ op: "alloc", mb }, { op: "sleep", ms: 10_000 }, { op: "reply", text: s });
  const busyRun = (s: string, mb: number) => run(s, busyScript(s, mb), "high");
  const target = LIMIT_MB - RESERVE_MB + half; // what the account should hold once all four run
  const allocMb = Math.round((target - pool.budget.usedMb - 4 * agentMb) / 4);
  const firstThree = stepsDone(await nats.connect(), 3);
  const busy = ["d1", "d2", "d3"].map((s) => busyRun(s, allocMb));
  await firstThree;
  await pool.refresh();
  const lastMb = Math.round(target - pool.budget.usedMb - agentMb);
  for (const mb of [allocMb, lastMb]) {
    expect(mb + agentMb).toBeGreaterThan(RESERVE_MB); // charged what they hold
    expect(mb + agentMb).toBeLessThan(CONTAINER_MB - 16); // and within their own limit
  }
  const fourth = stepsDone(await nats.connect(), 1);
  busy.push(busyRun("d4", lastMb));
  await fourth;
  await pool.refresh();
  const over = pool.budget.usedMb + RESERVE_MB - LIMIT_MB;
  expect(over).toBeGreaterThan(0);
  expect(over).toBeLessThan(Math.min(...idleMb));

  // 3. E's start must shed one container: the low-priority one. E's allocation then
  //    overshoots by about half an agent: the normal one goes too; the high one stays.
  const eAlloc = Math.round(RESERVE_MB + idleMb[0]! - agentMb);
  const e = await run("e", script({ op: "alloc", mb: eAlloc }, { op: "sleep", ms: 600 }), "high");
  expect(e.status).toBe("succeeded");
  expect([a, b, c, e].map((t) => t.attempts)).toEqual([1, 1, 1, 1]);
  expect(shed.slice(0, 2).map((s) => [s.id, s.reason])).toEqual([
    [a.container, "start"],
    [b.container, "pressure"],
  ]);
  for (const d of await Promise.all(busy)) {
    expect(d.status).toBe("succeeded");
    expect(d.attempts).toBe(1); // busy containers are never shed
  }

  // 4. A wave of mixed priorities, two at a time, whose allocations with the ones above add up
  //    to twice the budget: every start needs sheds, and the wave's own low ones go first.
  const waveDone: TaskRecord[] = [];
  const lane = async (first: number) => {
    for (let i = first; i < 8; i += 2) {
      const priority = (["low", "normal", "high"] as const)[i % 3]!;
      const ops = [
        { op: "alloc", mb: 64 },
        { op: "sleep", ms: 200 },
        { op: "reply", text: `w${i}` },
      ];
      waveDone[i] = await run(`w${i}`, script(...ops), priority);
    }
  };
  await Promise.all([lane(0), lane(1)]);
  expect(waveDone.map((t) => t.status)).toEqual(Array(8).fill("succeeded"));
  expect(waveDone.map((t) => t.output)).toEqual(waveDone.map((_, i) => `w${i}`));
  // A wave task may be placed on a container the pool is shedding at that moment; it is
  // then retried, never lost.
  for (const t of waveDone)
    for (const h of t.history.slice(0, -1)) expect(h.error?.code).toBe("AGENT_EXITED");

  // 5. A shed session lost nothing: its next turn continues from its files.
  const again = await run("a", "hello", "low");
  expect(again.output).toBe("turn 2: hello");

  // Every start was admitted within the budget, on fresh figures.
  const admitted = events.of("admitted");
  expect(admitted.length).toBeGreaterThanOrEqual(8); // a, b, c, d1-d4, e; the wave's vary
  for (const ev of admitted) expect(ev.usedMb + ev.reserveMb).toBeLessThanOrEqual(LIMIT_MB);
  // Every shed took the lowest priority on offer, and was snapshotted while still running.
  const sheds = events.of("shed");
  expect(sheds.length).toBe(shed.length);
  for (const ev of sheds) expect(ev.priority).toBeLessThanOrEqual(Math.min(...ev.keptPriorities));
  expect(shed.every((s) => s.running)).toBe(true);
  const snapshot = await readFile(
    path.join(dataDir, "shed-snapshots", "default", "a", "memory.md"),
    "utf8",
  ).catch(() => "");
  expect(snapshot).toContain("hello");
  // The host was never short: what the containers held stayed under the hard limit (well
  // inside host memory), no busy container had to go, and none was OOM-killed.
  const samples = events.of("sample");
  expect(Math.max(...samples.map((s) => s.measuredMb))).toBeLessThan(pool.budget.hardLimitMb);
  expect(sheds.filter((e) => e.reason === "hard-limit")).toEqual([]);
  expect(Math.min(...samples.map((s) => s.hostAvailableMb ?? Infinity))).toBeGreaterThan(
    pool.budget.hostFloorMb,
  );
  expect(ooms).toEqual([]);
});
