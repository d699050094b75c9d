/**
 * One orchestrator leads at a time; a standby takes over when the leader steps
 * down or dies, rebuilds its view from NATS, and finishes the work in flight.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import { FleetOrchestrator } from "../../src/roles/fleet-orchestrator.js";
import { TestFleet } from "../harness/test-fleet.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

describe("orchestrator failover", () => {
  let fleet: TestFleet;
  const conns: FleetNats[] = [];
  const orchestrators: FleetOrchestrator[] = [];

  const startOrchestrator = async (id: string) => {
    const options = resolveFleetOptions({
      nodeId: id,
      natsUrl: fleet.url,
      dataDir: fleet.dataDir,
      nodeTimeoutMs: 1000,
    });
    const nats = await connectFleet(fleet.url);
    conns.push(nats);
    const o = FleetOrchestrator.start(options, { nats });
    orchestrators.push(o);
    return { o, nats };
  };

  beforeAll(async () => {
    fleet = await TestFleet.start({
      roles: ["node", "gateway"],
      nodeHeartbeatMs: 200,
      nodeTimeoutMs: 1000,
      pools: [{ minIdle: 1, max: 2 }],
    });
  });
  afterAll(async () => {
    for (const o of orchestrators) await o.stop();
    for (const c of conns) await c.close();
    await fleet?.[Symbol.asyncDispose]();
  });

  it("has one leader, hands over on a clean stop, and on a crash", async () => {
    const a = await startOrchestrator("orch-a");
    await a.o.whenLeading();
    const b = await startOrchestrator("orch-b");
    expect(b.o.leading).toBe(false);
    expect((await fleet.client.status()).orchestrator?.id).toBe("orch-a");

    // A task in flight while the leader steps down finishes under the new leader.
    const slow = fleet.client.run({
      session: "handover",
      input: script({ op: "sleep", ms: 400 }, { op: "reply", text: "done" }),
    });
    await a.o.stop();
    await b.o.whenLeading();
    expect(await slow).toMatchObject({ status: "succeeded", output: "done", attempts: 1 });
    expect((await fleet.client.run({ session: "handover", input: "next" })).output).toBe(
      "turn 2: next",
    );

    // A leader that dies (its connection gone, lease not released) is replaced after expiry.
    const c = await startOrchestrator("orch-c");
    expect(c.o.leading).toBe(false);
    const queuedBehind = fleet.client.run({
      session: "crash",
      input: script({ op: "sleep", ms: 300 }, { op: "reply", text: "survived" }),
    });
    await b.nats.nc.close();
    await c.o.whenLeading();
    expect(await queuedBehind).toMatchObject({ status: "succeeded", output: "survived" });
    expect((await fleet.client.status()).orchestrator?.id).toBe("orch-c");
  });
});
