/**
 * Chaos, healing tier 2: a session's attempt is lost to its agent, and the
 * leading orchestrator's session ladder remedies it by recreating: the next
 * attempt restores the session and resumes after its last checkpoint. Real
 * role processes on two nodes, real agent processes, real signals.
 *
 * 1. An agent is SIGKILLed mid-turn, right after a step's checkpoint (an
 *    effect's): the ladder records tier 2 "recreate" for attempt 1
 *    (`AGENT_EXITED`), visible in the tree while attempt 2 runs and in the
 *    task's timeline; attempt 2 starts after the checkpoint, no step runs
 *    twice, each effect reaches the wire and the stream once, and the session
 *    goes back to the bottom of the ladder when the turn succeeds.
 * 2. An agent is frozen with SIGSTOP mid-turn: the node hears no heartbeat,
 *    calls it `AGENT_HUNG`, kills it, and the ladder recreates the same way.
 */
import { describe, expect, it } from "vitest";
import { FAST_LIVENESS, range, script, stepsByAttempt } from "../harness/chaos-fleet.js";
import { waitGone } from "./chaos-faults.js";
import { roundsScript, useChaosFleet } from "./chaos-scenario.js";

const ROUNDS = 3;
/** Three steps per round (append a line, an effect, a sleep), then a read and a reply. */
const {
  ops,
  steps: STEPS,
  effectSteps,
  effectStep,
} = roundsScript({
  rounds: ROUNDS,
  file: "notes.md",
  line: (n) => `- round ${n}\n`,
  effect: { kind: "webhook", payload: (n) => ({ round: n }) },
  // The kill after round 2's effect lands in this sleep, and attempt 2 runs it again:
  // long enough to read the tree while attempt 2 is under way, even under load.
  sleepMs: (n) => (n === 2 ? 1500 : 100),
  tail: [
    { op: "read", path: "notes.md" },
    { op: "reply", text: "all rounds" },
  ],
});
/** Round 2's effect. */
const KILL_AFTER = effectStep(2);

describe("chaos: tier 2, a session's lost attempt is recreated from its checkpoint", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a", "node-b"],
    config: {
      ...FAST_LIVENESS,
      pools: [{ minIdle: 1, max: 2, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
      healing: { recreateMax: 2, repairMax: 1, windowMs: 60_000 },
    },
  });

  /** The session's entry on the ladder as the tree shows it once attempt 2 has started. */
  const ladderDuringRetry = async (taskId: string, session: string) => {
    await chaos().event(
      taskId,
      (e) => e.type === "started" && e.attempt === 2,
      "attempt 2's start",
    );
    return (await chaos().tree()).sessions.find((s) => s.session === session);
  };

  it("records tier 2 for an agent killed after a checkpoint; resumes there, effects once", async () => {
    const fleet = chaos();
    const session = "t2-kill";
    expect((await fleet.client.run({ session, input: "hello" })).output).toBe("turn 1: hello");
    const { taskId } = await fleet.client.submit({ session, input: script(...ops) });
    const started = await fleet.event(taskId, (e) => e.type === "started", "the start");
    const agent = await fleet.agentPid(started.node!, started.container!);
    await fleet.event(taskId, (e) => e.type === "step" && e.step === KILL_AFTER, "the checkpoint");
    process.kill(agent, "SIGKILL");

    // While attempt 2 runs, the session is at tier 2 with one recreate behind it.
    const ladder = await ladderDuringRetry(taskId, session);
    expect(ladder).toMatchObject({ tenant: "default", session, tier: 2 });
    expect(ladder?.restarts).toEqual({ recreate: 1, repair: 0 });
    expect(ladder?.history).toEqual([
      expect.objectContaining({
        tier: 2,
        remedy: "recreate",
        taskId,
        attempt: 1,
        error: expect.objectContaining({ code: "AGENT_EXITED" }),
      }),
    ]);

    const done = await fleet.finished(taskId);
    await waitGone(agent, "the killed agent");
    expect(done).toMatchObject({
      status: "succeeded",
      output: "all rounds",
      attempts: 2,
      steps: STEPS,
    });
    expect(done.history.map((h) => [h.attempt, h.outcome, h.error?.code])).toEqual([
      [1, "lost", "AGENT_EXITED"],
      [2, "succeeded", undefined],
    ]);
    expect(done.history[0]).toMatchObject({ node: started.node, container: started.container });
    // Recreate means elsewhere: the container it died in is passed over (another is free).
    expect(done.history[1]!.container).not.toBe(started.container);

    // The timeline tells it: attempt 1 lost to its agent, the ladder's tier 2, attempt 2 placed.
    const { events } = await fleet.client.timeline(taskId);
    const fleetLines = events.filter((e) => e.source === "fleet").map((e) => [e.type, e.attempt]);
    expect(fleetLines).toEqual([
      ["submitted", 0],
      ["placed", 1],
      ["requeued", 1],
      ["healing", 1],
      ["placed", 2],
      ["succeeded", 2],
    ]);
    const healing = events.find((e) => e.type === "healing");
    expect(healing).toMatchObject({ tier: 2, error: { code: "AGENT_EXITED" } });
    expect(healing?.message).toMatch(/^tier 2 recreate/);

    // Resumed right after the checkpoint: no step ran twice.
    const steps = stepsByAttempt(await fleet.storedEvents(taskId));
    const first = steps.get(1)!;
    expect(first).toEqual(range(1, first.length));
    expect(first.length).toBeGreaterThanOrEqual(KILL_AFTER);
    expect(steps.get(2)).toEqual(range(first.length + 1, STEPS));
    expect(await fleet.sessionFile(session, "notes.md")).toBe(
      range(1, ROUNDS)
        .map((n) => `- round ${n}\n`)
        .join(""),
    );

    // Each effect once: in the stream, and on the wire.
    const effects = await fleet.storedEffects(taskId);
    expect(effects.map((e) => [e.step, e.payload])).toEqual(
      range(1, ROUNDS).map((n) => [effectSteps[n - 1], { round: n }]),
    );
    await fleet.effects.waitFor(
      (e) => e.taskId === taskId && e.step === effectSteps.at(-1),
      "the last effect on core NATS",
    );
    const wire = fleet.effects.items.filter((e) => e.taskId === taskId).map((e) => e.step);
    expect(wire.sort((a, b) => a - b)).toEqual(effectSteps);

    // The success put the session back at the bottom of the ladder (shown as recovered).
    const after = (await fleet.tree()).sessions.find((s) => s.session === session);
    expect(after).toMatchObject({ tier: 0, recoveredAt: expect.any(String) });
    const next = await fleet.client.run({ session, input: "again" });
    expect(next).toMatchObject({ status: "succeeded", output: "turn 3: again", attempts: 1 });
  });

  it("records tier 2 for an agent frozen with SIGSTOP (AGENT_HUNG)", async () => {
    const fleet = chaos();
    const session = "t2-hang";
    const hangOps = [
      { op: "write", path: "hang.md", text: "before\n", append: true },
      // Frozen in here; attempt 2 runs it again (long enough to read the tree meanwhile).
      { op: "sleep", ms: 1500 },
      { op: "write", path: "hang.md", text: "after\n", append: true },
      { op: "reply", text: "thawed" },
    ];
    const { taskId } = await fleet.client.submit({ session, input: script(...hangOps) });
    const started = await fleet.event(taskId, (e) => e.type === "started", "the start");
    const agent = await fleet.agentPid(started.node!, started.container!);
    await fleet.event(taskId, (e) => e.type === "step" && e.step === 1, "step 1");
    process.kill(agent, "SIGSTOP");

    const ladder = await ladderDuringRetry(taskId, session);
    expect(ladder).toMatchObject({ tier: 2, restarts: { recreate: 1, repair: 0 } });
    expect(ladder?.history).toEqual([
      expect.objectContaining({
        tier: 2,
        remedy: "recreate",
        attempt: 1,
        error: expect.objectContaining({ code: "AGENT_HUNG" }),
      }),
    ]);
    // The node killed the frozen agent (SIGKILL needs no SIGCONT).
    await waitGone(agent, "the frozen agent");

    const done = await fleet.finished(taskId);
    expect(done).toMatchObject({ status: "succeeded", output: "thawed", attempts: 2 });
    expect(done.history[0]).toMatchObject({
      outcome: "lost",
      node: started.node,
      container: started.container,
      error: { code: "AGENT_HUNG", message: expect.stringMatching(/missed heartbeats/) },
    });
    expect(done.history[1]!.container).not.toBe(started.container);
    const steps = stepsByAttempt(await fleet.storedEvents(taskId));
    expect(steps.get(1)).toEqual([1]);
    expect(steps.get(2)).toEqual([2, 3, 4]);
    expect(await fleet.sessionFile(session, "hang.md")).toBe("before\nafter\n");
  });
});
