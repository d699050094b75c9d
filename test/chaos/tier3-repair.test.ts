/**
 * Chaos, healing tier 3: a session its own agent cannot serve. A turn that
 * succeeds writes an invalid session config (`agent.json`), so the session's
 * last known-good version holds it; then a person saves a behaviour file that
 * does not parse. The reference agent, like a real one, exits at the start of
 * every turn after that (code 78). Restarting it (tier 1) and recreating the
 * session elsewhere (tier 2, twice) change nothing; tier 3 restores the
 * known-good version and repairs both, and the turn succeeds. Real processes,
 * a real nats-server, real agent exits.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";
import { FAST_LIVENESS, script } from "../harness/chaos-fleet.js";
import { runCli } from "../harness/cli-process.js";
import { useChaosFleet } from "./chaos-scenario.js";

describe("chaos: tier 3 repairs a session whose config and behaviour stop its agent", () => {
  const chaos = useChaosFleet({
    nodes: ["node-a"],
    config: {
      ...FAST_LIVENESS,
      maxAttempts: 10,
      pools: [{ minIdle: 2, max: 2 }],
      healing: { recreateMax: 2, repairMax: 1, windowMs: 60_000 },
    },
    idlePerNode: 2,
  });
  let behaviorDir: string;
  beforeAll(async () => {
    behaviorDir = await mkdtemp(path.join(chaos().dir, "behavior-"));
  });

  const setBehavior = async (name: string, text: string) => {
    const file = path.join(behaviorDir, name);
    await writeFile(file, text);
    const r = await runCli(["behavior", "set", file, "--nats", chaos().nats.url]);
    expect(r.code, r.stderr).toBe(0);
  };

  it("restores the known-good version, resets what is invalid, and the turn succeeds", async () => {
    const fleet = chaos();
    await setBehavior("tools.json", '{"tools":["search"]}');
    expect((await fleet.client.run({ session: "s3", input: "hello" })).output).toBe(
      "turn 1: hello",
    );
    // A turn that succeeds, leaving a config with one bad field behind in the known-good version.
    const configured = await fleet.client.run({
      session: "s3",
      input: script(
        { op: "write", path: "agent.json", text: '{"replyPrefix": 42, "maxSteps": 50}' },
        { op: "reply", text: "configured" },
      ),
    });
    expect(configured).toMatchObject({ status: "succeeded", output: "configured" });
    expect(await fleet.sessionFile("s3", "agent.json")).toContain('"replyPrefix": 42');
    await setBehavior("tools.json", '{"tools": [');

    const healed = await fleet.client.run({ session: "s3", input: "after", waitMs: 60_000 });
    expect(healed).toMatchObject({ status: "succeeded", output: "turn 3: after", attempts: 4 });
    expect(healed.history.map((h) => [h.outcome, h.error?.code])).toEqual([
      ["lost", "AGENT_EXITED"],
      ["lost", "AGENT_EXITED"],
      ["lost", "AGENT_EXITED"],
      ["succeeded", undefined],
    ]);

    // The timeline tells the climb and what the repair reset.
    const { events } = await fleet.client.timeline(healed.taskId);
    const healing = events.filter((e) => e.source === "fleet" && e.type === "healing");
    expect(healing.map((e) => [e.attempt, e.source === "fleet" && e.tier])).toEqual([
      [1, 2],
      [2, 2],
      [3, 3],
    ]);
    const repaired = events.find((e) => e.type === "repaired");
    expect(repaired).toMatchObject({ source: "node", attempt: 4 });
    expect(repaired?.message).toMatch(/^repair: agent\.json: replyPrefix reset to defaults; /);
    expect(repaired?.message).toMatch(/behaviour tools\.json reset to its version \d+/);

    // The session's new version holds the repaired config; the good field was kept.
    expect(JSON.parse((await fleet.sessionFile("s3", "agent.json"))!)).toEqual({
      replyPrefix: "",
      maxSteps: 50,
    });
    // The behaviour was repaired as a new version (the broken one stays in the history), and
    // the healed turn ran with it.
    const got = await runCli(["behavior", "get", "tools.json", "--nats", chaos().nats.url]);
    expect(got.stdout).toBe('{"tools":["search"]}');
    const history = await runCli(["behavior", "history", "--json", "--nats", chaos().nats.url]);
    const versions = JSON.parse(history.stdout) as { hash: string }[];
    expect(versions).toHaveLength(3);
    expect(healed.behavior).toBe(versions.at(-1)!.hash);

    // The tree shows the session recovered, with the tiers it took.
    const tree = JSON.parse(
      (await runCli(["tree", "--json", "--nats", chaos().nats.url])).stdout,
    ) as FleetTree;
    const s3 = tree.sessions.find((s) => s.session === "s3");
    expect(s3).toMatchObject({ tier: 0, restarts: { recreate: 2, repair: 1 } });
    expect(s3?.recoveredAt).toEqual(expect.any(String));
    expect(s3?.history.map((h) => [h.tier, h.remedy])).toEqual([
      [2, "recreate"],
      [2, "recreate"],
      [3, "repair"],
    ]);
    const text = (await runCli(["tree", "--nats", chaos().nats.url])).stdout;
    expect(text).toContain("default/s3  healthy since");
    // Tier 1 ran too: the node restarted the agents that exited, in their containers.
    const restarts = tree.nodes[0]!.pools[0]!.containers.reduce((n, c) => n + (c.restarts ?? 0), 0);
    expect(restarts + tree.nodes[0]!.pools[0]!.restarts).toBeGreaterThanOrEqual(1);

    // And the session goes on as if nothing happened.
    const next = await fleet.client.run({ session: "s3", input: "again" });
    expect(next).toMatchObject({ status: "succeeded", output: "turn 4: again", attempts: 1 });
  });
});
