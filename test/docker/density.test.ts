/**
 * Safe density against a real engine: a fleet whose docker pool may hold
 * containers with memory limits adding up to more than twice its memory budget, driven by
 * scripted alloc steps. Starts are admitted only within the budget, idle and
 * reserved containers are shed lowest priority first (each snapshotted first,
 * by a local workspace store), every task ends well, and nothing comes near
 * running the host (or a container) out of memory.
 *
 * The allocations are sized at run time from measured use, each by the turn
 * that makes it on a container whose own footprint was measured just before
 * (a first turn of its session starts it), so every estimate is a measurement
 * of the same agent process: the start of task E needs about half an idle
 * container freed, and E's session's next turn then overshoots the budget by
 * about as much again. Busy turns hold their memory at a barrier (the agent's
 * `wait` op) until the test has seen what it waits for, never for a fixed
 * time. Together with a wave of mixed priorities, the scripted allocations add
 * up to about twice the budget.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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
const CONTAINER_MB = 144;
// A container limit far above any one allocation here: what the scenario measures is the
// node budget, never a container running out of its own memory.
const MAX = 8; // 8 × 144 MiB = 1152 MiB of limits: more than twice the budget

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

/** Lets the busy turn of `session` past its `wait` op (see {@link held}). */
async function release(session: string): Promise<void> {
  const h = pool.containers.find((c) => c.use.busy && c.use.session?.session === session);
  if (h) await writeFile(path.join(h.workspaceDir, RELEASE), "");
}

/** A script that holds `mb` MiB until the test releases it, then replies `text`. */
const held = (mb: number, text: string) =>
  script({ op: "alloc", mb }, { op: "wait", path: RELEASE }, { op: "reply", text });

const RELEASE = "release";

/** `p`, or a failure saying `why` if it has not settled within `ms` (a verdict, never a pacing). */
function failAfter<T>(p: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(why())), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
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
  const fits = (mb: number, footprint: number) => {
    expect(mb + footprint).toBeGreaterThan(RESERVE_MB); // charged what it holds
    expect(mb + footprint).toBeLessThan(CONTAINER_MB - 16); // and within its own limit
  };

  // Busy turns are released and awaited whatever happens: a failure never leaves them to
  // reject unseen when the fleet stops.
  const busy: Promise<TaskRecord>[] = [];
  const hold = (session: string, mb: number) => {
    const p = run(session, held(mb, session), "high");
    p.catch(() => {});
    busy.push(p);
    return p;
  };
  const busySessions = ["d1", "d2", "d3", "d4", "e"];
  try {
    // 2. Four busy tasks take the budget to within half an agent of admitting one more start.
    //    Three go first; the fourth runs on a container whose idle footprint was measured (its
    //    session's first turn started it), with an allocation sized from the account, so no
    //    footprint is an estimate.
    const target = LIMIT_MB - RESERVE_MB + half; // what the account should hold once all four run
    const allocMb = Math.round((target - pool.budget.usedMb - 4 * agentMb) / 4);
    const firstThree = stepsDone(await nats.connect(), 3);
    for (const s of ["d1", "d2", "d3"]) hold(s, allocMb);
    await firstThree;
    const d4 = await run("d4", "hello", "high");
    await pool.refresh();
    const d4Mb = pool.budget.chargeOf(d4.container!);
    const lastMb = Math.round(target - pool.budget.usedMb);
    fits(allocMb, agentMb);
    fits(lastMb, d4Mb);
    const fourth = stepsDone(await nats.connect(), 1);
    hold("d4", lastMb);
    await fourth;
    await pool.refresh();
    const over = pool.budget.usedMb + RESERVE_MB - LIMIT_MB;
    expect(over).toBeGreaterThan(0);
    expect(over).toBeLessThan(Math.min(...idleMb));

    // 3. E's start must shed one container: the low-priority one. E's session's next turn, on
    //    the same container, allocates what takes the account half an agent past the budget:
    //    the normal one goes too; the high one stays.
    const e = await run("e", "hello", "high");
    expect(e.status).toBe("succeeded");
    expect(shed.map((s) => [s.id, s.reason])).toEqual([[a.container, "start"]]);
    await pool.refresh();
    const eMb = pool.budget.chargeOf(e.container!);
    const eAlloc = Math.round(LIMIT_MB + half - pool.budget.usedMb);
    fits(eAlloc, eMb);
    const pressured = events.wait("shed", (ev) => ev.reason === "pressure");
    const f = hold("e", eAlloc);
    await failAfter(pressured, 30_000, () => `no pressure shed; sheds ${JSON.stringify(shed)}`);
    for (const s of busySessions) await release(s);
    const fDone = await f;
    expect(fDone).toMatchObject({ status: "succeeded", container: e.container, attempts: 1 });
    expect([a, b, c, d4, e].map((t) => t.attempts)).toEqual([1, 1, 1, 1, 1]);
    expect(shed.map((s) => [s.id, s.reason])).toEqual([
      [a.container, "start"],
      [b.container, "pressure"],
    ]);
    for (const d of await Promise.all(busy)) {
      expect(d.status).toBe("succeeded");
      expect(d.attempts).toBe(1); // busy containers are never shed
    }
  } finally {
    for (const s of busySessions) await release(s).catch(() => {});
    await Promise.allSettled(busy);
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
