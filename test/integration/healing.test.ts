/**
 * The healing ladder end to end: a session whose agent keeps dying climbs from
 * recreating its container (resuming from checkpoints), to repairing (starting
 * the turn over from the last known-good version), to a critical alert with a
 * post-mortem and a quarantine that only a person lifts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PostMortem } from "../../src/adapters/records/quarantine-registry.js";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";
import { runCli } from "../harness/cli-process.js";
import { TestFleet } from "../harness/test-fleet.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });
const crashOn = (attempt: number) => ({ op: "crash", mode: "exit", onAttempt: attempt });

describe("the healing ladder", () => {
  let fleet: TestFleet;

  beforeAll(async () => {
    fleet = await TestFleet.start({
      pools: [{ minIdle: 1, max: 1 }],
      retryBackoffMs: 10,
      maxAttempts: 10,
      healing: { recreateMax: 2, repairMax: 1, windowMs: 60_000 },
    });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  it("climbs recreate → repair → alert, quarantines the session, and lets a person release it", async () => {
    await fleet.client.run({ session: "doomed", input: "a good turn first" });
    const alerts = fleet.client.nc.subscribe("fleet.alerts.critical", { max: 1 });
    const alert = (async () => {
      for await (const m of alerts) return m.json<PostMortem>();
      throw new Error("no alert");
    })();

    // Each attempt dies one step further on; only a turn started over reaches attempt 4's crash.
    const doomed = await fleet.client.run({
      session: "doomed",
      input: script(
        { op: "write", path: "a.txt", text: "a" },
        crashOn(1),
        crashOn(2),
        crashOn(3),
        crashOn(4),
        {
          op: "reply",
          text: "never",
        },
      ),
    });
    expect(doomed).toMatchObject({
      status: "failed",
      attempts: 4,
      error: { code: "SESSION_QUARANTINED" },
    });

    const pm = await alert;
    expect(pm).toMatchObject({
      severity: "critical",
      tenant: "default",
      session: "doomed",
      taskId: doomed.taskId,
    });
    expect(pm.tiers.map((t) => [t.tier, t.remedy, t.attempt])).toEqual([
      [2, "recreate", 1],
      [2, "recreate", 2],
      [3, "repair", 3],
      [4, "alert", 4],
    ]);
    expect(pm.lastErrors.every((e) => e.code === "AGENT_EXITED")).toBe(true);
    expect(pm.logTail.join("\n")).toContain("crashing on purpose");
    expect(pm.timeline.length).toBeGreaterThan(0);

    // Attempts 2 and 3 resumed after their checkpoints; the repair (attempt 4) started over.
    const { events } = await fleet.client.timeline(doomed.taskId);
    const firstSteps = events
      .filter((e) => e.source === "node" && e.type === "step" && e.step === 1)
      .map((e) => e.attempt);
    expect(firstSteps).toEqual([1, 4]);

    // Quarantined: new work fails at once, without running.
    const refused = await fleet.client.run({ session: "doomed", input: "hello?" });
    expect(refused).toMatchObject({
      status: "failed",
      attempts: 0,
      error: { code: "SESSION_QUARANTINED" },
    });
    const listed = await runCli(["alerts", "--nats", fleet.url]);
    expect(listed.stdout).toContain(`${pm.alertId}  default/doomed  [quarantined]`);
    expect(listed.stdout).toContain("tier 3 repair");

    // The tree shows the climb and the containers the pool replaced.
    const tree = JSON.parse(
      (await runCli(["tree", "--json", "--nats", fleet.url])).stdout,
    ) as FleetTree;
    expect(tree.sessions).toEqual([
      expect.objectContaining({
        tenant: "default",
        session: "doomed",
        tier: 4,
        restarts: { recreate: 2, repair: 1 },
      }),
    ]);
    // Four agent deaths, healed on the node by restarts in place (tier 1) or new containers.
    const pool = tree.nodes[0]!.pools[0]!;
    const agentRestarts = pool.containers.reduce((n, c) => n + (c.restarts ?? 0), 0);
    expect(pool.restarts + agentRestarts).toBeGreaterThanOrEqual(2);
    const text = (await runCli(["tree", "--nats", fleet.url])).stdout;
    expect(text).toMatch(/└─ node node-a/);
    expect(text).toContain("default/doomed  tier 4  recreated 2, repaired 1");

    // Other sessions never noticed.
    expect((await fleet.client.run({ session: "bystander", input: "hi" })).status).toBe(
      "succeeded",
    );

    const released = await runCli(["session", "release", "doomed", "--nats", fleet.url]);
    expect(released).toMatchObject({ code: 0, stdout: "released default/doomed\n" });
    // Released: it works again, from its last known-good state (one good turn before).
    const back = await fleet.client.run({ session: "doomed", input: "back" });
    expect(back).toMatchObject({ status: "succeeded", output: "turn 2: back" });
  });
});
