/**
 * Chaos, healing tier 1: the node restarts a dead agent in place. Real role
 * processes, real agent processes found through /proc, real SIGKILLs.
 *
 * 1. Between turns: the agent of the container that holds a session (reserved
 *    for it) is killed. The node starts a new agent process in the same
 *    container and workspace (same container id, `restarts` 1 in the tree, a
 *    new pid), keeps the session's working copy, and the session's next turn
 *    runs there, warm, with its turn counter going on. The session's ladder
 *    (tiers 2-4, the orchestrator's) is not involved.
 * 2. Mid-turn: the agent running a turn is killed after a checkpoint. The
 *    container restarts its agent in place (its working copy now suspect), the
 *    task finishes on a retry, and the counter still goes on.
 * 3. The limit: `maxAgentRestarts` (3 here) restarts within
 *    `agentRestartWindowMs` (5 min: the whole file); the death after that fails
 *    the container and the pool replaces it with a new one (new id, the pool's
 *    `restarts` in the tree). The session moves to another container, restored
 *    from its snapshot.
 */
import { describe, expect, it } from "vitest";
import type { ContainerInfo } from "../../src/protocol/fleet-messages.js";
import { FAST_LIVENESS, script } from "../harness/chaos-fleet.js";
import { killAgent } from "./chaos-faults.js";
import { useChaosFleet } from "./chaos-scenario.js";

const NODE = "node-a";
/** Above the restarts the first two tests may leave on one container, so the third still has some. */
const MAX_AGENT_RESTARTS = 3;

/** Up again: its agent answered `ready` and the container takes work. */
const up = (c: ContainerInfo | null) => c?.state === "idle" || c?.state === "reserved";

describe("chaos: tier 1, the node restarts a dead agent in its container", () => {
  const chaos = useChaosFleet({
    nodes: [NODE],
    config: {
      ...FAST_LIVENESS,
      // minIdle = max: a container that fails for good is replaced by a new one.
      pools: [
        {
          minIdle: 2,
          max: 2,
          maxAgentRestarts: MAX_AGENT_RESTARTS,
          agentHeartbeatMs: 200,
          missedHeartbeats: 5,
        },
      ],
    },
    idlePerNode: 2,
  });

  /** The container as the tree shows it now (`fleet.api.tree`). */
  const inTree = async (id: string) => {
    const pool = (await chaos().tree()).nodes.find((n) => n.id === NODE)!.pools[0]!;
    return { pool, container: pool.containers.find((c) => c.id === id) };
  };

  it("restarts an agent killed between turns in place; the next turn runs there, warm", async () => {
    const fleet = chaos();
    const session = "t1-idle";
    const first = await fleet.client.run({ session, input: "hello" });
    expect(first).toMatchObject({ status: "succeeded", output: "turn 1: hello", node: NODE });
    const container = first.container!;
    await fleet.container(NODE, container, (c) => c?.state === "reserved", "reserved");

    const killed = await killAgent(fleet, NODE, container);
    const back = await fleet.container(
      NODE,
      container,
      (c) => up(c) && c?.restarts === 1,
      "up again after one restart",
    );
    // Same container, same session's working copy, a new agent process.
    expect(back).toMatchObject({ id: container, session, restarts: 1 });
    const agent = await fleet.agentPid(NODE, container);
    expect(agent).not.toBe(killed);
    const tree = await inTree(container);
    expect(tree.container).toMatchObject({ id: container, session, restarts: 1 });
    expect(tree.pool.restarts).toBe(0);

    const next = await fleet.client.run({ session, input: "again" });
    expect(next).toMatchObject({
      status: "succeeded",
      output: "turn 2: again",
      attempts: 1,
      node: NODE,
      container,
    });
    // Placed on its warm container: the node kept the working copy across the restart.
    expect(next.history.map((h) => [h.container, h.rung, h.outcome])).toEqual([
      [container, "warm", "succeeded"],
    ]);
    // Served by the new agent; tier 1 is the node's alone: the session never climbed the ladder.
    expect(await fleet.agentPid(NODE, container)).toBe(agent);
    expect((await fleet.tree()).sessions.filter((s) => s.session === session)).toEqual([]);
  });

  it("restarts an agent killed mid-turn in place; the task finishes on a retry", async () => {
    const fleet = chaos();
    const session = "t1-busy";
    expect((await fleet.client.run({ session, input: "one" })).output).toBe("turn 1: one");
    const ops = [
      { op: "write", path: "work.md", text: "step one\n", append: true },
      // Killed in here, right after step 1's checkpoint.
      { op: "sleep", ms: 1000 },
      { op: "write", path: "work.md", text: "step three\n", append: true },
      { op: "reply", text: "worked" },
    ];
    const submitted = await fleet.client.submit({ session, input: script(...ops) });
    const taskId = submitted.taskId;
    const started = await fleet.event(taskId, (e) => e.type === "started", "the start");
    const container = started.container!;
    const before = (await inTree(container)).container!.restarts ?? 0;
    await fleet.event(taskId, (e) => e.type === "step" && e.step === 1, "step 1");
    const killed = await killAgent(fleet, NODE, container);

    const done = await fleet.finished(taskId);
    expect(done).toMatchObject({ status: "succeeded", output: "worked", attempts: 2 });
    expect(done.history[0]).toMatchObject({
      attempt: 1,
      node: NODE,
      container,
      outcome: "lost",
      // bwrap reports its child's SIGKILL as exit code 128 + 9.
      error: { code: "AGENT_EXITED", message: expect.stringMatching(/signal SIGKILL|code 137/) },
    });
    // Wherever the retry ran, the dead agent's container got a new agent, in place.
    const back = await fleet.container(
      NODE,
      container,
      (c) => up(c) && c?.restarts === before + 1,
      "up again after the restart",
    );
    expect(back?.id).toBe(container);
    expect(await fleet.agentPid(NODE, container)).not.toBe(killed);
    expect(await fleet.sessionFile(session, "work.md")).toBe("step one\nstep three\n");

    // The killed turn counted once: the counter goes on from it.
    const next = await fleet.client.run({ session, input: "three" });
    expect(next).toMatchObject({ status: "succeeded", output: "turn 3: three" });
  });

  it(`replaces the container after more than ${MAX_AGENT_RESTARTS} deaths within the window`, async () => {
    const fleet = chaos();
    const session = "t1-limit";
    const first = await fleet.client.run({ session, input: "first" });
    expect(first.output).toBe("turn 1: first");
    const container = first.container!;
    const { pool } = await inTree(container);
    const poolRestarts = pool.restarts;
    const base = pool.containers.find((c) => c.id === container)!.restarts ?? 0;
    const others = new Set(pool.containers.map((c) => c.id));

    // Restarts the earlier tests made count too (all within the window): each death still
    // within the limit brings the same container back with a new agent.
    expect(base).toBeLessThan(MAX_AGENT_RESTARTS);
    const pids = new Set<number>();
    for (let n = 1; base + n <= MAX_AGENT_RESTARTS; n++) {
      pids.add(await killAgent(fleet, NODE, container));
      await fleet.container(
        NODE,
        container,
        (c) => up(c) && c?.restarts === base + n,
        `up again after restart ${n}`,
      );
      expect(pids.has(await fleet.agentPid(NODE, container))).toBe(false);
    }
    // One more within the window: the container fails for good.
    await killAgent(fleet, NODE, container);
    await fleet.container(
      NODE,
      container,
      (c, hb) => c === null && hb.pools[0]!.restarts === poolRestarts + 1,
      "replaced by the pool",
    );
    // The pool tops itself up to minIdle with a new container (a new id).
    await fleet.heartbeat(
      NODE,
      (hb) => hb.containers.some((c) => !others.has(c.id) && up(c)),
      "a new container up",
    );
    const tree = await fleet.tree();
    const now = tree.nodes[0]!.pools[0]!;
    expect(now.restarts).toBe(poolRestarts + 1);
    expect(now.containers.map((c) => c.id)).not.toContain(container);
    expect(now.containers.some((c) => !others.has(c.id))).toBe(true);

    // The session's working copy died with the container: the next turn restores its
    // snapshot on another container, and the counter goes on.
    const next = await fleet.client.run({ session, input: "second" });
    expect(next).toMatchObject({ status: "succeeded", output: "turn 2: second", attempts: 1 });
    expect(next.container).not.toBe(container);
  });
});
