/**
 * A turn's files are committed once, even when two attempts of one task overlap
 * (the orchestrator requeued the task, say after a nats-server restart, while
 * the first attempt was still finishing). Two real turn runners, two real agent
 * processes, one real snapshot store; the store is wrapped so that each attempt
 * pauses at the exact call the interleaving needs:
 *
 * - attempt 1 has run every step and saved the session's files (a known-good
 *   version holding the turn's writes);
 * - attempt 2 opens the task's checkpoint log (all steps logged) and is about
 *   to restore the workspace;
 * - attempt 1 finishes (and, before the fix, drops the task's checkpoints);
 * - attempt 2 restores: before the fix it found no checkpoint, started the turn
 *   over from the session's latest version, which already held the writes, and
 *   applied them a second time.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type KV, Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TaskOutcome } from "../../src/actors/container-machine.js";
import type { ContainerHandle } from "../../src/adapters/agent-link/pool-adapter.js";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { ProcessPool } from "../../src/adapters/process/process-pool.js";
import { CheckpointLog } from "../../src/adapters/records/checkpoint-log.js";
import { SnapshotStore } from "../../src/adapters/snapshots/snapshot-store.js";
import { ObjectWorkspaceStore } from "../../src/adapters/workspace/object-workspace-store.js";
import type { SaveOptions, WorkspaceStore } from "../../src/adapters/workspace/workspace-store.js";
import { systemClock } from "../../src/clock.js";
import { resolveFleetOptions, resolvePoolProfile } from "../../src/fleet-options.js";
import { silentLogger } from "../../src/logger.js";
import type { DispatchRequest } from "../../src/protocol/fleet-messages.js";
import { TurnRunner } from "../../src/roles/turn-runner.js";
import { type Deferred, deferred } from "../harness/deferred.js";
import { NatsServer } from "../harness/nats-server.js";

const TENANT = "default";
const profile = resolvePoolProfile({ sandbox: "none", agentHeartbeatMs: 200, missedHeartbeats: 5 });
const options = {
  leaseRenewMs: 200,
  leaseTtlMs: 5000,
  syncIntervalMs: 0,
  models: resolveFleetOptions().models,
};
const script = (session: string, checkpoint = true) =>
  JSON.stringify({
    ...(checkpoint ? {} : { checkpoint: false }),
    script: [
      { op: "write", path: "journal.txt", text: `${session} 1\n`, append: true },
      { op: "effect", kind: "notify", payload: { n: 1 } },
      { op: "write", path: "journal.txt", text: `${session} 2\n`, append: true },
      { op: "reply", text: `${session} done` },
    ],
  });

type Op = "save" | "restore" | "restoreCheckpoint" | "dropCheckpoints";
interface Gate {
  readonly ops: readonly Op[];
  readonly when: "before" | "after";
  /** Resolves when the call reaches the gate. */
  readonly reached: Deferred<void>;
  /** The test resolves it to let the call go on. */
  readonly release: Deferred<void>;
}

/** A real store that pauses the first matching call of one container at a gate. */
class GatedStore implements WorkspaceStore {
  private readonly gates: Gate[] = [];

  constructor(private readonly inner: WorkspaceStore) {}

  /** Pauses the next call of one of `ops` `when` it reaches the inner store (before or after it). */
  gate(ops: readonly Op[], when: "before" | "after"): Gate {
    const g: Gate = { ops, when, reached: deferred(), release: deferred() };
    this.gates.push(g);
    return g;
  }

  private async pass<T>(op: Op, call: () => Promise<T>): Promise<T> {
    const i = this.gates.findIndex((g) => g.ops.includes(op));
    const g = i >= 0 ? this.gates.splice(i, 1)[0] : undefined;
    const stop = async () => {
      g!.reached.resolve();
      await g!.release.promise;
    };
    if (g?.when === "before") await stop();
    const result = await call();
    if (g?.when === "after") await stop();
    return result;
  }

  restore(tenant: string, session: string, dir: string, version?: number) {
    return this.pass("restore", () => this.inner.restore(tenant, session, dir, version));
  }
  save(tenant: string, session: string, dir: string, options?: SaveOptions) {
    return this.pass("save", () => this.inner.save(tenant, session, dir, options));
  }
  confirm(tenant: string, session: string, version: number) {
    return this.inner.confirm!(tenant, session, version);
  }
  isCurrent(tenant: string, session: string, dir: string) {
    return this.inner.isCurrent(tenant, session, dir);
  }
  saveCheckpoint(tenant: string, session: string, taskId: string, step: number, dir: string) {
    return this.inner.saveCheckpoint(tenant, session, taskId, step, dir);
  }
  restoreCheckpoint(tenant: string, session: string, taskId: string, step: number, dir: string) {
    return this.pass("restoreCheckpoint", () =>
      this.inner.restoreCheckpoint(tenant, session, taskId, step, dir),
    );
  }
  dropCheckpoints(tenant: string, session: string, taskId: string) {
    return this.pass("dropCheckpoints", () => this.inner.dropCheckpoints(tenant, session, taskId));
  }
}

/** One node's side: its turn runner, its store and one container. */
interface Side {
  readonly runner: TurnRunner;
  readonly store: GatedStore;
  readonly handle: ContainerHandle;
}

describe("a turn whose attempts overlap", () => {
  let nats: NatsServer;
  let fleet: FleetNats;
  let snapshots: SnapshotStore;
  let snapshotKv: KV;
  let pool: ProcessPool;
  let scratch: string;
  let seq = 0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    fleet = await connectFleet(nats.url, { name: "turn-commit" });
    snapshots = await SnapshotStore.open(fleet.nc);
    snapshotKv = await new Kvm(fleet.nc).open("fleet_snapshots");
    pool = new ProcessPool();
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-turn-commit-"));
  });
  afterAll(async () => {
    await pool?.close();
    await fleet?.close();
    await nats?.[Symbol.asyncDispose]();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const side = async (node: string): Promise<Side> => {
    const id = `${node}-c${++seq}`;
    const handle = await pool.start({ id, profile, workspaceDir: path.join(scratch, id) });
    return {
      runner: new TurnRunner(fleet, node, options, systemClock, silentLogger),
      store: new GatedStore(new ObjectWorkspaceStore(snapshots)),
      handle,
    };
  };

  const run = (s: Side, task: DispatchRequest): Promise<TaskOutcome> =>
    s.runner.runTask(
      {
        handle: s.handle,
        containerId: s.handle.id,
        task,
        warm: null,
        signal: new AbortController().signal,
      },
      profile,
      s.store,
    );

  const task = (session: string, attempt: number, checkpoint = true): DispatchRequest => ({
    taskId: `task-${session}`,
    attempt,
    tenant: TENANT,
    session,
    input: script(session, checkpoint),
    rung: "idle",
    pool: profile.name,
  });

  /** The session's files as its next turn gets them, and what is left of the task. */
  const settled = async (session: string) => {
    const peek = await mkdtemp(path.join(scratch, "peek-"));
    await snapshots.restore(TENANT, session, peek, { knownGood: true });
    const state = JSON.parse(await readFile(path.join(peek, ".agent-state.json"), "utf8"));
    const effects: string[] = [];
    for await (const k of await fleet.kv.outbox.keys(`task-${session}.*`)) effects.push(k);
    const checkpoints: string[] = [];
    for await (const k of await snapshotKv.keys(`ck.${TENANT}.${session}.>`)) checkpoints.push(k);
    return {
      journal: await readFile(path.join(peek, "journal.txt"), "utf8"),
      turns: (state as { turns: number }).turns,
      versions: (await snapshots.versions(TENANT, session)).map((v) => v.version),
      effects,
      checkpoints,
    };
  };

  /**
   * Attempt 1 runs until `first` holds it; attempt 2 then starts (which opens
   * the checkpoint log) and is held right before it restores the workspace;
   * attempt 1 runs to its end; then attempt 2 does.
   */
  const overlap = async (
    session: string,
    first: (store: GatedStore) => Gate,
    checkpoint = true,
  ) => {
    const [a, b] = await Promise.all([side("node-a"), side("node-b")]);
    const held = first(a.store);
    const one = run(a, task(session, 1, checkpoint));
    await held.reached.promise;
    const restoring = b.store.gate(["restore", "restoreCheckpoint"], "before");
    const two = run(b, task(session, 2, checkpoint));
    await restoring.reached.promise;
    held.release.resolve();
    const outcome1 = await one;
    restoring.release.resolve();
    const outcome2 = await two;
    return { outcome1, outcome2, settled: await settled(session) };
  };

  const once = (session: string) => ({
    journal: `${session} 1\n${session} 2\n`,
    turns: 1,
    effects: [`task-${session}.2`],
    checkpoints: [],
  });

  it("attempt 2 opened the log while attempt 1 was saving: attempt 1's save never lands", async () => {
    const r = await overlap("s1", (store) => store.gate(["save"], "before"));
    // Fenced off right before its version would have been created.
    expect(r.outcome1.ok).toBe(false);
    expect(r.outcome2.ok).toBe(true);
    expect(r.settled).toMatchObject({ ...once("s1"), versions: [1] });
  });

  it("attempt 1 saved the session's files, then attempt 2 opened the log: each write once", async () => {
    const r = await overlap("s2", (store) => store.gate(["save"], "after"));
    // Its commit fails: the task, and the checkpoint files attempt 2 resumes from, are not its.
    expect(r.outcome1.ok).toBe(false);
    expect(r.outcome2.ok).toBe(true);
    expect(r.settled).toMatchObject({ ...once("s2"), versions: [1, 2] });
  });

  it("attempt 1 committed the turn, then attempt 2 opened the log: the turn is not run again", async () => {
    const r = await overlap("s3", (store) => store.gate(["dropCheckpoints"], "before"));
    expect(r.outcome1.ok).toBe(true);
    expect(r.outcome2.ok).toBe(true);
    expect(r.settled).toMatchObject({ ...once("s3"), versions: [1, 2] });
    expect(await CheckpointLog.read(fleet.kv.checkpoints, "task-s3")).toMatchObject({
      attempt: 2,
      committed: { version: 2 },
    });
  });

  // An agent that checkpoints no step (a one-shot CLI agent) leaves attempt 2 nothing to resume
  // from: it starts the turn over. Attempt 1's version is still pending then (not the session's
  // files until its commit), so attempt 2 starts from what attempt 1 started from.
  it("a turn with no checkpointed step: attempt 1 saved, then attempt 2 opened the log: each write once", async () => {
    const r = await overlap("s5", (store) => store.gate(["save"], "after"), false);
    expect(r.outcome1.ok).toBe(false);
    expect(r.outcome2.ok).toBe(true);
    expect(r.settled).toMatchObject({ ...once("s5"), versions: [1, 2] });
    const pending = (await snapshots.versions(TENANT, "s5")).find((v) => v.version === 1);
    expect(pending?.knownGood).toBe(false);
  });

  // A dispatch that got no answer counts as a spent attempt, and the next one may finish the
  // task; the node can still start the spent one afterwards. The orchestrator closes the log
  // when the task ends (an absent log would have let that attempt run the turn over again).
  it("an attempt that starts after its task ended finds the log closed and leaves the session alone", async () => {
    const [a, b] = await Promise.all([side("node-a"), side("node-b")]);
    expect((await run(b, task("s4", 2))).ok).toBe(true);
    await CheckpointLog.close(fleet.kv.checkpoints, "task-s4");
    const late = await run(a, task("s4", 1));
    expect(late.ok).toBe(false);
    expect(await settled("s4")).toMatchObject({ ...once("s4"), versions: [1] });
  });
});
