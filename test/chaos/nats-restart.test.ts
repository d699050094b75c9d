/**
 * Chaos: nats-server (file store) is restarted on the same port while tasks
 * run and just after more were submitted. Nothing may be lost: every task
 * ends succeeded, its record, result, session files and effects agree, and
 * each effect is stored once.
 */
import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import { FAST_LIVENESS, range, script } from "../harness/chaos-fleet.js";
import { roundsScript, useChaosFleet } from "./chaos-scenario.js";

const ROUNDS = 3;
const roundsFor = (session: string) =>
  roundsScript({
    rounds: ROUNDS,
    file: "journal.txt",
    line: (n) => `${session} ${n}\n`,
    effect: { kind: "notify", payload: (n) => ({ session, n }) },
    sleepMs: () => 300,
    tail: [{ op: "reply", text: `${session} done` }],
  });
const opsFor = (session: string) => roundsFor(session).ops;
const { steps: STEPS, effectSteps } = roundsFor("x");

describe("chaos: nats-server restarted mid-run", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a", "node-b"],
    config: {
      ...FAST_LIVENESS,
      pools: [{ minIdle: 2, max: 2, agentHeartbeatMs: 200, missedHeartbeats: 5 }],
    },
    idlePerNode: 2,
  });

  it("loses no task, no result and no effect, and sends none twice", async () => {
    const fleet = chaos();
    const running = ["run-1", "run-2", "run-3", "run-4"];
    const late = ["late-1", "late-2"];
    const ids = new Map<string, string>();
    for (const session of running) {
      const { taskId } = await fleet.client.submit({ session, input: script(...opsFor(session)) });
      ids.set(session, taskId);
    }
    // In flight: every one of them has checkpointed its first effect.
    await Promise.all(
      running.map((s) =>
        fleet.event(ids.get(s)!, (e) => e.type === "step" && e.step === 2, "the second step"),
      ),
    );
    for (const session of late) {
      const { taskId } = await fleet.client.submit({ session, input: script(...opsFor(session)) });
      ids.set(session, taskId);
    }

    await fleet.restartNats();

    const records = new Map<string, TaskRecord>();
    await Promise.all(
      [...ids].map(async ([session, taskId]) => {
        records.set(session, await fleet.finished(taskId, 25_000));
      }),
    );
    for (const [session, taskId] of ids) {
      const r = records.get(session)!;
      expect(r, session).toMatchObject({
        taskId,
        session,
        status: "succeeded",
        output: `${session} done`,
        steps: STEPS,
      });
      // The history agrees with the attempt count, and its last attempt is the one that won.
      const last = r.history.at(-1)!;
      expect(last, session).toMatchObject({
        attempt: r.attempts,
        outcome: "succeeded",
        node: r.node,
      });
      expect(
        r.history.slice(0, -1).every((h) => h.outcome === "lost"),
        session,
      ).toBe(true);
      expect(new Set(r.history.map((h) => h.attempt)).size, session).toBe(r.history.length);

      // The result was published (and stored) once, and says what the record says.
      const results = await fleet.readStream("FLEET_RESULTS", `fleet.results.${taskId}`);
      expect(
        results.map((m) => (m.data as TaskRecord).status),
        session,
      ).toEqual(["succeeded"]);

      // Each line of the session's file once, and the task counted as one turn.
      expect(await fleet.sessionFile(session, "journal.txt"), session).toBe(
        range(1, ROUNDS)
          .map((n) => `${session} ${n}\n`)
          .join(""),
      );
      expect(await fleet.turns(session), session).toBe(1);

      // Each effect stored once.
      const effects = await fleet.storedEffects(taskId);
      expect(
        effects.map((e) => [e.subject, e.step, e.payload]),
        session,
      ).toEqual(
        range(1, ROUNDS).map((n) => [
          "fleet.effects.default.notify",
          effectSteps[n - 1],
          { session, n },
        ]),
      );
    }
  });
});
