import { describe, expect, it } from "vitest";
import { createActor, createMachine, SimulatedClock } from "xstate";
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
