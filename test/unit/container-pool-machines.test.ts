import { describe, expect, it } from "vitest";
import { type AnyActorRef, createActor, fromPromise, SimulatedClock } from "xstate";
import {
  type ContainerContext,
  containerMachine,
  containerStateOf,
  type RunTaskInput,
  type TaskOutcome,
} from "../../src/actors/container-machine.js";
import { poolMachine, poolStates, refuseStart } from "../../src/actors/pool-machine.js";
import type { ContainerHandle, ExitInfo } from "../../src/adapters/agent-link/pool-adapter.js";
import { ErrorCodes, RetryableError } from "../../src/errors.js";
import { type PoolProfile, resolvePoolProfile } from "../../src/fleet-options.js";
import type { ContainerState, DispatchRequest } from "../../src/protocol/fleet-messages.js";
import { type Deferred, deferred } from "../harness/deferred.js";

/** A container handle that runs nothing: the test's `runTask` decides how turns end. */
class FakeHandle implements ContainerHandle {
  readonly workspaceDir: string;
  alive = true;
  stops = 0;
  readonly #listeners = new Set<(info: ExitInfo) => void>();

  constructor(readonly id: string) {
    this.workspaceDir = `/nonexistent/${id}`;
  }

  async runTurn(): Promise<string> {
    throw new Error("turns go through the provided runTask");
  }

  onExit(listener: (info: ExitInfo) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  logTail(): string[] {
    return [];
  }

  async stop(): Promise<void> {
    this.stops++;
    this.alive = false;
  }

  /** The agent dies on its own. */
  crash(): void {
    this.alive = false;
    const info: ExitInfo = {
      code: 1,
      signal: null,
      error: new RetryableError(ErrorCodes.AGENT_EXITED, "agent exited with code 1"),
    };
    for (const l of [...this.#listeners]) l(info);
  }
}

function profile(p: Partial<PoolProfile>): PoolProfile {
  const { name, runtime: _runtime, ...rest } = p;
  return resolvePoolProfile({
    name: name ?? "default",
    sandbox: "none",
    turnTimeoutMs: 10_000,
    startTimeoutMs: 5_000,
    ...rest,
  });
}

function dispatch(taskId: string, session = "s1", attempt = 1): DispatchRequest {
  return {
    taskId,
    attempt,
    tenant: "acme",
    session,
    input: `input of ${taskId}`,
    rung: "new",
    pool: "default",
  };
}

/**
 * A pool actor on a simulated clock whose container starts and turns the test completes by
 * hand (deferred promises), with a way to wait until any condition on the pool or its
 * containers holds.
 */
function startPool(p: PoolProfile) {
  const clock = new SimulatedClock();
  const starts = new Map<string, Deferred<ContainerHandle>>();
  const handles = new Map<string, FakeHandle>();
  const turns: Array<{ input: RunTaskInput; outcome: Deferred<TaskOutcome> }> = [];
  const stopped: Array<string | null> = [];
  const restarted: string[] = [];
  /** The states each container went through, in order, as the fleet would see them. */
  const history = new Map<string, ContainerState[]>();
  const waiters = new Set<() => void>();

  const logic = poolMachine.provide({
    actors: {
      container: containerMachine.provide({
        actors: {
          startContainer: fromPromise<ContainerHandle, { id: string; pool: string }>(
            ({ input }) => {
              expect(input.pool).toBe(p.name);
              const d = deferred<ContainerHandle>();
              starts.set(input.id, d);
              return d.promise;
            },
          ),
          runTask: fromPromise<TaskOutcome, RunTaskInput>(({ input }) => {
            const outcome = deferred<TaskOutcome>();
            turns.push({ input, outcome });
            return outcome.promise;
          }),
          stopContainer: fromPromise<void, ContainerHandle | null>(async ({ input }) => {
            stopped.push(input?.id ?? null);
            await input?.stop();
          }),
          restartAgent: fromPromise<
            ContainerHandle,
            { id: string; pool: string; handle: ContainerHandle | null }
          >(async ({ input }) => {
            await input.handle?.stop();
            const h = new FakeHandle(input.id);
            restarted.push(input.id);
            handles.set(input.id, h);
            return h;
          }),
        },
      }),
    },
  });

  let n = 0;
  const actor = createActor(logic, {
    clock,
    input: { name: p.name, profile: p, newId: () => `c${++n}` },
    inspect: (ev) => {
      if (ev.type !== "@xstate.snapshot") return;
      const snap = ev.snapshot as unknown as { value: unknown; machine?: { id: string } };
      if (snap.machine?.id === "container") {
        const { id } = ev.actorRef as AnyActorRef;
        const s = containerStateOf(snap);
        const h = history.get(id) ?? [];
        if (h.at(-1) !== s) h.push(s);
        history.set(id, h);
      }
      for (const w of [...waiters]) w();
    },
  });

  const ctx = () => actor.getSnapshot().context;
  const ids = () => Object.keys(ctx().containers);
  const count = (s: ContainerState) => poolStates(ctx())[s] ?? 0;
  const container = (id: string) => {
    const ref = ctx().containers[id];
    if (!ref) throw new Error(`no container ${id}`);
    return ref;
  };
  const stateOf = (id: string) => containerStateOf(container(id).getSnapshot());
  const contextOf = (id: string): ContainerContext => container(id).getSnapshot().context;

  /** Resolves once `pred` holds, re-checked on every snapshot of the pool and its containers. */
  const until = (what: string, pred: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      if (pred()) return resolve();
      const check = () => {
        if (!pred()) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(`timed out waiting for ${what}; pool ${JSON.stringify(poolStates(ctx()))}`),
        );
      }, 2_000);
      waiters.add(check);
    });

  /** Lets the start of `id` succeed and waits until the container is up. */
  const up = async (id: string) => {
    const d = starts.get(id);
    if (!d) throw new Error(`${id} was never started`);
    const h = new FakeHandle(id);
    handles.set(id, h);
    d.resolve(h);
    await until(`${id} up`, () => stateOf(id) !== "starting");
    return h;
  };

  /** The turn `taskId` runs as (the last one started). */
  const turnOf = (taskId: string) => {
    const t = turns.filter((x) => x.input.task.taskId === taskId).at(-1);
    if (!t) throw new Error(`no turn for ${taskId}`);
    return t;
  };

  actor.start();
  return {
    actor,
    clock,
    starts,
    handles,
    turns,
    stopped,
    restarted,
    history,
    ids,
    count,
    stateOf,
    contextOf,
    until,
    up,
    turnOf,
  };
}

type Pool = ReturnType<typeof startPool>;
const poolValue = (pool: Pool) => pool.actor.getSnapshot().value;
const check = (pool: Pool) => pool.actor.send({ type: "CHECK" });

describe("pool machine", () => {
  it("starts minIdle containers and tops back up when one goes busy", async () => {
    const pool = startPool(profile({ minIdle: 2, max: 4, maxConcurrentStarts: 2 }));
    expect(pool.ids()).toEqual(["c1", "c2"]);
    expect(pool.count("starting")).toBe(2);
    expect([...pool.starts.keys()]).toEqual(["c1", "c2"]);

    await pool.up("c1");
    await pool.up("c2");
    expect(pool.count("idle")).toBe(2);
    check(pool);
    expect(pool.ids()).toEqual(["c1", "c2"]); // minIdle met: nothing more to start

    const ref = pool.actor.getSnapshot().context.containers.c1!;
    ref.send({ type: "ASSIGN", task: dispatch("t1") });
    expect(pool.stateOf("c1")).toBe("busy");
    check(pool);
    expect(pool.ids()).toEqual(["c1", "c2", "c3"]);
    await pool.up("c3");
    expect(poolStates(pool.actor.getSnapshot().context)).toEqual({ busy: 1, idle: 2 });
  });

  it("never holds more than max containers", async () => {
    const pool = startPool(profile({ minIdle: 5, max: 3, maxConcurrentStarts: 5 }));
    expect(pool.ids()).toEqual(["c1", "c2", "c3"]);
    expect(refuseStart(pool.actor.getSnapshot().context)).toBe("POOL_FULL");
    for (const id of ["c1", "c2", "c3"]) await pool.up(id);
    check(pool);
    pool.actor.send({ type: "SPAWN", id: "extra", task: dispatch("t1") });
    expect(pool.ids()).toEqual(["c1", "c2", "c3"]);
    expect(pool.starts.has("extra")).toBe(false);
    expect(pool.count("idle")).toBe(3);
    expect(refuseStart(pool.actor.getSnapshot().context)).toBe("POOL_FULL");
  });

  it("throttles concurrent starts to maxConcurrentStarts", async () => {
    const pool = startPool(profile({ minIdle: 3, max: 4, maxConcurrentStarts: 1 }));
    const refusal = () => refuseStart(pool.actor.getSnapshot().context);
    expect(pool.ids()).toEqual(["c1"]);
    expect(refusal()).toBe("POOL_THROTTLED");
    check(pool);
    expect(pool.ids()).toEqual(["c1"]);

    for (const [id, next] of [
      ["c1", "c2"],
      ["c2", "c3"],
    ] as const) {
      await pool.up(id);
      expect(refusal()).toBeNull();
      check(pool);
      expect(pool.ids().at(-1)).toBe(next);
      expect(pool.count("starting")).toBe(1);
      expect(refusal()).toBe("POOL_THROTTLED");
    }
    await pool.up("c3");
    check(pool);
    expect(pool.ids()).toEqual(["c1", "c2", "c3"]);
    expect(pool.count("idle")).toBe(3);
    expect(refusal()).toBeNull();
  });

  it("runs a spawned task at once, then keeps the session warm after a successful turn", async () => {
    const pool = startPool(profile({ minIdle: 0, max: 2 }));
    expect(pool.ids()).toEqual([]);
    expect(refuseStart(pool.actor.getSnapshot().context)).toBeNull();

    const t1 = dispatch("t1", "s1");
    pool.actor.send({ type: "SPAWN", id: "x1", task: t1 });
    expect(pool.stateOf("x1")).toBe("starting");
    expect(pool.contextOf("x1").task).toEqual(t1);
    const handle = await pool.up("x1");
    expect(pool.stateOf("x1")).toBe("busy");

    const turn1 = pool.turnOf("t1");
    expect(turn1.input).toMatchObject({ containerId: "x1", task: t1, warm: null });
    expect(turn1.input.handle).toBe(handle);
    expect(turn1.input.signal.aborted).toBe(false);

    turn1.outcome.resolve({ ok: true, agentAlive: true });
    await pool.until("x1 reserved", () => pool.stateOf("x1") === "reserved");
    // Never idle before its task; reserved for the session it just served.
    expect(pool.history.get("x1")).toEqual(["starting", "busy", "reserved"]);
    expect(pool.contextOf("x1")).toMatchObject({
      warm: { tenant: "acme", session: "s1" },
      task: null,
    });
    // The reservation lapses after the window; the container stays warm for the session.
    pool.clock.increment(59_999);
    expect(pool.stateOf("x1")).toBe("reserved");
    pool.clock.increment(1);
    await pool.until("x1 idle", () => pool.stateOf("x1") === "idle");
    expect(pool.contextOf("x1").warm).toEqual({ tenant: "acme", session: "s1" });

    // The next turn of the session is told the working copy is already there.
    const t2 = dispatch("t2", "s1");
    pool.actor.getSnapshot().context.containers.x1!.send({ type: "ASSIGN", task: t2 });
    const turn2 = pool.turnOf("t2");
    expect(turn2.input.warm).toEqual({ tenant: "acme", session: "s1" });

    // A failed turn leaves the copy suspect: the container holds no warm state afterwards.
    turn2.outcome.resolve({ ok: false, agentAlive: true });
    await pool.until("x1 idle again", () => pool.stateOf("x1") === "idle");
    expect(pool.contextOf("x1")).toMatchObject({ warm: null, task: null });
    expect(handle.stops).toBe(0);
  });

  it("cancels only the matching task and attempt of a busy container", async () => {
    const pool = startPool(profile({ minIdle: 0, max: 1 }));
    pool.actor.send({ type: "SPAWN", id: "x1", task: dispatch("t1", "s1", 2) });
    await pool.up("x1");
    const { signal } = pool.turnOf("t1").input;
    const ref = pool.actor.getSnapshot().context.containers.x1!;
    ref.send({ type: "CANCEL", taskId: "t1", attempt: 1 });
    ref.send({ type: "CANCEL", taskId: "t9", attempt: 2 });
    expect(signal.aborted).toBe(false);
    ref.send({ type: "CANCEL", taskId: "t1", attempt: 2 });
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe("cancel");
  });

  it("replaces a container whose agent died during a turn", async () => {
    const pool = startPool(profile({ minIdle: 1, max: 2, maxAgentRestarts: 0 }));
    const h1 = await pool.up("c1");
    pool.actor.getSnapshot().context.containers.c1!.send({ type: "ASSIGN", task: dispatch("t1") });
    pool.turnOf("t1").outcome.resolve({ ok: false, agentAlive: false });

    await pool.until(
      "c1 gone and c2 started",
      () => !pool.ids().includes("c1") && pool.ids().includes("c2"),
    );
    expect(pool.history.get("c1")).toEqual(["starting", "idle", "busy", "failed"]);
    expect(h1.stops).toBe(1); // the dead container was released
    expect(pool.stopped).toEqual(["c1"]);
    expect(pool.ids()).toEqual(["c2"]);
    expect(poolValue(pool)).toBe("running"); // not a start failure: no backoff
    await pool.up("c2");
    expect(pool.count("idle")).toBe(1);
  });

  it("restarts a dead agent in place, then replaces the container when that keeps failing", async () => {
    const pool = startPool(profile({ minIdle: 0, max: 1, maxAgentRestarts: 1 }));
    pool.actor.send({ type: "SPAWN", id: "c1", task: dispatch("t1") });
    const h1 = await pool.up("c1");
    pool.turnOf("t1").outcome.resolve({ ok: false, agentAlive: false });
    // Tier 1: the same container with a new agent; its working copy is suspect, so not warm.
    await pool.until(
      "c1 restarted",
      () => pool.restarted.length === 1 && pool.stateOf("c1") === "idle",
    );
    expect(h1.stops).toBe(1);
    expect(pool.contextOf("c1")).toMatchObject({ warm: null, agentRestarts: 1, recentRestarts: 1 });
    expect(pool.ids()).toEqual(["c1"]);

    // Dies again within the window: past the intensity, the pool recreates the container.
    pool.actor.getSnapshot().context.containers.c1!.send({ type: "ASSIGN", task: dispatch("t2") });
    pool.turnOf("t2").outcome.resolve({ ok: false, agentAlive: false });
    await pool.until("c1 replaced", () => !pool.ids().includes("c1"));
    expect(pool.restarted).toEqual(["c1"]);
    expect(pool.history.get("c1")).toEqual([
      "starting",
      "busy",
      "starting",
      "idle",
      "busy",
      "failed",
    ]);
  });

  it("forgets restarts older than the window (OTP restart intensity, on the injected clock)", async () => {
    const pool = startPool(
      profile({ minIdle: 0, max: 1, maxAgentRestarts: 1, agentRestartWindowMs: 60_000 }),
    );
    pool.actor.send({ type: "SPAWN", id: "c1", task: dispatch("t1") });
    await pool.up("c1");
    pool.turnOf("t1").outcome.resolve({ ok: false, agentAlive: false });
    await pool.until("c1 restarted", () => pool.stateOf("c1") === "idle");
    expect(pool.contextOf("c1")).toMatchObject({ recentRestarts: 1 });

    pool.clock.increment(60_000);
    expect(pool.contextOf("c1")).toMatchObject({ recentRestarts: 0, agentRestarts: 1 });
    // A death after the window is restarted in place again, not a reason to recreate.
    pool.actor.getSnapshot().context.containers.c1!.send({ type: "ASSIGN", task: dispatch("t2") });
    pool.turnOf("t2").outcome.resolve({ ok: false, agentAlive: false });
    await pool.until("c1 restarted twice", () => pool.restarted.length === 2);
    await pool.until("c1 idle", () => pool.stateOf("c1") === "idle");
    expect(pool.ids()).toEqual(["c1"]);
    expect(pool.contextOf("c1")).toMatchObject({ recentRestarts: 1, agentRestarts: 2 });
  });

  it("replaces an idle container whose agent exits on its own", async () => {
    const pool = startPool(profile({ minIdle: 1, max: 2, maxAgentRestarts: 0 }));
    const h1 = await pool.up("c1");
    h1.crash();
    await pool.until("c1 replaced", () => pool.ids().join() === "c2");
    expect(h1.stops).toBe(1);
    expect(poolValue(pool)).toBe("running");
  });

  it("backs off after a failed start and retries after a growing delay", async () => {
    const pool = startPool(profile({ minIdle: 1, max: 2, maxConcurrentStarts: 1 }));
    const fail = async (id: string) => {
      pool.starts.get(id)!.reject(new Error("image missing"));
      await pool.until(`${id} gone`, () => !pool.ids().includes(id));
    };

    await fail("c1");
    expect(poolValue(pool)).toBe("backoff");
    expect(pool.actor.getSnapshot().context.startFailures).toBe(1);
    expect(pool.stopped).toEqual([null]); // nothing to stop: it never came up
    check(pool);
    expect(pool.ids()).toEqual([]);

    pool.clock.increment(249);
    expect(poolValue(pool)).toBe("backoff");
    expect(pool.ids()).toEqual([]);
    pool.clock.increment(1);
    expect(poolValue(pool)).toBe("running");
    expect(pool.ids()).toEqual(["c2"]);

    await fail("c2");
    expect(poolValue(pool)).toBe("backoff");
    expect(pool.actor.getSnapshot().context.startFailures).toBe(2);
    pool.clock.increment(499);
    expect(pool.ids()).toEqual([]);
    pool.clock.increment(1);
    expect(pool.ids()).toEqual(["c3"]);

    await pool.up("c3");
    expect(pool.actor.getSnapshot().context.startFailures).toBe(0);
    expect(poolValue(pool)).toBe("running");
    expect(pool.count("idle")).toBe(1);
  });

  it("stops every container and ends when all are gone", async () => {
    const pool = startPool(profile({ minIdle: 2, max: 4, maxConcurrentStarts: 3 }));
    const h1 = await pool.up("c1");
    const h2 = await pool.up("c2");
    pool.actor.getSnapshot().context.containers.c1!.send({ type: "ASSIGN", task: dispatch("t1") });
    check(pool); // c3 starts to keep two spare
    expect(pool.stateOf("c3")).toBe("starting");
    const { signal } = pool.turnOf("t1").input;

    pool.actor.send({ type: "STOP" });
    await pool.until("pool stopped", () => poolValue(pool) === "stopped");
    expect(pool.ids()).toEqual([]);
    // The running turn was ended as a shutdown; every container was released.
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe("shutdown");
    expect(h1.stops).toBe(1);
    expect(h2.stops).toBe(1);
    expect(new Set(pool.stopped)).toEqual(new Set(["c1", "c2", null]));
    for (const id of ["c1", "c2", "c3"]) expect(pool.history.get(id)!.at(-1)).toBe("stopped");
  });

  it("stops at once when it holds no containers, and starts nothing afterwards", () => {
    const pool = startPool(profile({ minIdle: 0 }));
    pool.actor.send({ type: "STOP" });
    expect(poolValue(pool)).toBe("stopped");
    pool.actor.send({ type: "SPAWN", id: "late", task: dispatch("t1") });
    pool.actor.send({ type: "CHECK" });
    expect(pool.ids()).toEqual([]);
    expect(pool.starts.size).toBe(0);
  });
});
