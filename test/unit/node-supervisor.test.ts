import { describe, expect, it } from "vitest";
import { createActor, createMachine, fromPromise, SimulatedClock, waitFor } from "xstate";
import { containerMachine } from "../../src/actors/container-machine.js";
import { poolMachine } from "../../src/actors/pool-machine.js";
import type { ContainerHandle } from "../../src/adapters/agent-link/pool-adapter.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import { nodeSupervisorMachine, poolActorId } from "../../src/supervisor/node-supervisor.js";

/** A pool with a bug: any BOOM event throws inside it. */
const buggyPool = createMachine({
  on: {
    BOOM: {
      actions: () => {
        throw new Error("a bug in the pool");
      },
    },
  },
});

function start(clock: SimulatedClock) {
  const crashed: { pool: string; error: string }[] = [];
  let gaveUp = 0;
  const { pools } = resolveFleetOptions({
    pools: [
      { name: "a", minIdle: 0, max: 1 },
      { name: "b", minIdle: 0, max: 1 },
    ],
  });
  const logic = nodeSupervisorMachine.provide({
    actors: { pool: buggyPool as never },
    actions: {
      poolCrashed: (_, params) => crashed.push(params),
      gaveUp: () => gaveUp++,
    },
  });
  const node = createActor(logic, {
    input: {
      profiles: pools,
      newId: () => "c",
      poolRestartMax: 2,
      windowMs: 60_000,
      now: () => clock.now(),
    },
  });
  node.start();
  return { node, crashed, gaveUp: () => gaveUp };
}

describe("nodeSupervisorMachine", () => {
  it("restarts a crashed pool, one for one, and gives up past the intensity", () => {
    const clock = new SimulatedClock();
    const { node, crashed, gaveUp } = start(clock);
    const pool = (name: string) => node.getSnapshot().context.pools[name]!;
    const first = pool("a");
    expect(first.id).toBe(poolActorId("a"));

    first.send({ type: "BOOM" } as never);
    expect(crashed).toEqual([{ pool: "a", error: "a bug in the pool" }]);
    expect(pool("a")).not.toBe(first);
    expect(pool("a").getSnapshot().status).toBe("active");
    expect(node.getSnapshot().context.poolCrashes).toEqual({ a: 1 });
    // The other pool never noticed.
    const b = pool("b");
    pool("b").send({ type: "BOOM" } as never);
    expect(pool("b")).not.toBe(b);
    expect(node.getSnapshot().value).toBe("supervising");

    // A third crash within the window: the node gives up.
    pool("a").send({ type: "BOOM" } as never);
    expect(node.getSnapshot().value).toBe("failed");
    expect(node.getSnapshot().context.failure).toMatch(/^pool a crashed 3 times within 60000 ms/);
    expect(gaveUp()).toBe(1);
  });

  it("forgets crashes older than the window", () => {
    const clock = new SimulatedClock();
    const { node } = start(clock);
    const pool = () => node.getSnapshot().context.pools.a!;
    pool().send({ type: "BOOM" } as never);
    pool().send({ type: "BOOM" } as never);
    clock.increment(60_001);
    pool().send({ type: "BOOM" } as never);
    expect(node.getSnapshot().value).toBe("supervising");
    expect(node.getSnapshot().context.poolCrashes).toEqual({ a: 3 });
  });
});

describe("nodeSupervisorMachine with real pools", () => {
  /** A pool whose CHECK handler has a bug once `armed`; its containers are real container actors. */
  function start(poolRestartMax: number) {
    const armed = { on: false };
    const stopped: string[] = [];
    const crashed: string[] = [];
    const handle = (id: string): ContainerHandle =>
      ({
        id,
        workspaceDir: `/nonexistent/${id}`,
        alive: true,
        onExit: () => () => {},
        logTail: () => [],
        runTurn: async () => "",
        stop: async () => {},
      }) as unknown as ContainerHandle;
    const pool = poolMachine.provide({
      actors: {
        container: containerMachine.provide({
          actors: {
            startContainer: fromPromise(async ({ input }) => handle(input.id)),
            stopContainer: fromPromise(async ({ input }) => {
              stopped.push(input!.id);
            }),
          },
        }),
      },
      actions: {
        replenish: () => {
          if (armed.on) throw new Error("a bug in replenish");
        },
      },
    });
    const { pools } = resolveFleetOptions({
      pools: [
        { name: "a", minIdle: 0, max: 2 },
        { name: "b", minIdle: 0, max: 2 },
      ],
    });
    let n = 0;
    const node = createActor(
      nodeSupervisorMachine.provide({
        actors: { pool },
        actions: { poolCrashed: (_, p) => crashed.push(p.pool) },
      }),
      {
        input: {
          profiles: pools,
          newId: () => `c${++n}`,
          poolRestartMax,
          windowMs: 60_000,
          now: () => 0,
        },
      },
    );
    node.start();
    const ref = (name: string) => node.getSnapshot().context.pools[name]!;
    return { node, ref, armed, stopped, crashed };
  }

  it("stops a crashed pool's containers before starting the pool again", async () => {
    const { ref, armed, stopped } = start(1);
    const old = ref("a");
    old.send({ type: "SPAWN", id: "c1" });
    old.send({ type: "SPAWN", id: "c2" });
    const containers = Object.values(old.getSnapshot().context.containers);
    await Promise.all(containers.map((c) => waitFor(c, (s) => s.matches("up"))));

    armed.on = true;
    old.send({ type: "CHECK" });
    armed.on = false;
    // XState stops an errored actor but not its children: the supervisor stops them.
    await Promise.all(containers.map((c) => waitFor(c, (s) => s.status === "done")));
    expect(stopped.sort()).toEqual(["c1", "c2"]);
    expect(ref("a")).not.toBe(old);
    expect(ref("a").getSnapshot().context.containers).toEqual({});
  });

  it("takes a crash after it gave up without failing itself", () => {
    const { node, ref, armed, crashed } = start(0);
    armed.on = true;
    ref("a").send({ type: "CHECK" });
    expect(node.getSnapshot().value).toBe("failed");
    // Another pool crashing now is noted, not a reason for the root to fail (and throw).
    ref("b").send({ type: "CHECK" });
    expect(crashed).toEqual(["a", "b"]);
    expect(node.getSnapshot().status).toBe("active");
    node.send({ type: "STOP" });
    expect(node.getSnapshot().value).toBe("stopping");
  });
});
