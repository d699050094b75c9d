import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createActor, fromCallback } from "xstate";
import {
  type OrchestratorEvent,
  orchestratorMachine,
} from "../../src/actors/orchestrator-machine.js";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { LeaderLease } from "../../src/adapters/records/leader-lease.js";
import type { Clock } from "../../src/clock.js";
import { NatsServer } from "../harness/nats-server.js";

/** A clock the test moves by hand; leases only read `now()`. */
class ManualClock implements Clock {
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  setTimeout(): unknown {
    throw new Error("LeaderLease sets no timers");
  }
  clearTimeout(): void {}
}

const TTL = 5_000;
const T0 = Date.UTC(2030, 0, 1);

describe("LeaderLease", () => {
  let nats: NatsServer;
  // Two contenders, each on its own connection, as two orchestrator processes would be.
  let fleetA: FleetNats;
  let fleetB: FleetNats;
  let keyNo = 0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    fleetA = await connectFleet(nats.url, { name: "contender-a" });
    fleetB = await connectFleet(nats.url, { name: "contender-b" });
  });

  afterAll(async () => {
    await fleetA?.close();
    await fleetB?.close();
    await nats?.[Symbol.asyncDispose]();
  });

  /** Two contenders for a fresh key, sharing one manual clock. */
  function contenders() {
    const key = `lease-${++keyNo}`;
    const clock = new ManualClock(T0);
    const a = new LeaderLease(fleetA.kv.leases, key, "a", TTL, clock);
    const b = new LeaderLease(fleetB.kv.leases, key, "b", TTL, clock);
    const read = () => LeaderLease.read(fleetA.kv.leases, key);
    return { key, clock, a, b, read };
  }

  it("lets exactly one of two racing contenders acquire", async () => {
    const { a, b, read } = contenders();
    const [wonA, wonB] = await Promise.all([a.tryAcquire(), b.tryAcquire()]);
    expect([wonA, wonB].filter(Boolean)).toHaveLength(1);
    const winner = wonA ? a : b;
    const loser = wonA ? b : a;
    expect(await read()).toEqual({
      owner: winner.owner,
      expiresAt: T0 + TTL,
      since: new Date(T0).toISOString(),
    });
    expect(winner.heldSince).toBe(new Date(T0).toISOString());
    // Still held and unexpired: the loser keeps losing, the winner keeps it.
    expect(await loser.tryAcquire()).toBe(false);
    expect(await winner.tryAcquire()).toBe(true);
    expect((await read())?.owner).toBe(winner.owner);
  });

  it("passes to the other contender only once the holder's lease has expired", async () => {
    const { clock, a, b, read } = contenders();
    expect(await a.tryAcquire()).toBe(true);
    const held = await read();
    expect(held).toMatchObject({ owner: "a", expiresAt: T0 + TTL });

    clock.t = held!.expiresAt - 1;
    expect(await b.tryAcquire()).toBe(false);
    expect((await read())?.owner).toBe("a");

    clock.t = held!.expiresAt + 1;
    expect(await b.tryAcquire()).toBe(true);
    expect(await read()).toEqual({
      owner: "b",
      expiresAt: clock.t + TTL,
      since: new Date(clock.t).toISOString(),
    });
    expect(b.heldSince).toBe(new Date(clock.t).toISOString());

    // The old holder is fenced off: its renewal fails and it cannot take the lease back.
    expect(await a.renew()).toBe(false);
    expect(await a.tryAcquire()).toBe(false);
    expect((await read())?.owner).toBe("b");
    expect(await b.renew()).toBe(true);
  });

  it("keeps the lease while the holder renews it", async () => {
    const { clock, a, b, read } = contenders();
    expect(await a.tryAcquire()).toBe(true);
    clock.t = T0 + TTL - 1_000;
    expect(await a.renew()).toBe(true);
    expect(await read()).toEqual({
      owner: "a",
      expiresAt: clock.t + TTL,
      since: new Date(T0).toISOString(), // renewing does not restart the term
    });
    clock.t = T0 + TTL + 1; // past the first expiry, within the renewed one
    expect(await b.tryAcquire()).toBe(false);
    expect(await a.renew()).toBe(true);
  });

  it("lets the other contender acquire at once after a release", async () => {
    const { a, b, read } = contenders();
    expect(await a.tryAcquire()).toBe(true);
    expect(await b.tryAcquire()).toBe(false);
    await a.release();
    expect(await read()).toBeNull();
    // Same instant, long before expiry.
    expect(await b.tryAcquire()).toBe(true);
    expect((await read())?.owner).toBe("b");
    expect(await a.renew()).toBe(false);
  });

  it("does not let a deposed holder's release drop the new holder's lease", async () => {
    const { clock, a, b, read } = contenders();
    expect(await a.tryAcquire()).toBe(true);
    clock.t = T0 + TTL + 1;
    expect(await b.tryAcquire()).toBe(true);
    await a.release(); // stale revision: must be a no-op
    expect((await read())?.owner).toBe("b");
    expect(await b.renew()).toBe(true);
  });

  it("can be taken again by the same contender after releasing it", async () => {
    const { clock, a, b, read } = contenders();
    expect(await a.tryAcquire()).toBe(true);
    await a.release();
    clock.t = T0 + 10;
    expect(await a.tryAcquire()).toBe(true);
    expect(await read()).toEqual({
      owner: "a",
      expiresAt: T0 + 10 + TTL,
      since: new Date(T0 + 10).toISOString(),
    });
    expect(await b.tryAcquire()).toBe(false);
  });
});

describe("orchestratorMachine", () => {
  /** Provides `campaign` and `lead` callbacks that log their lifecycle and expose `sendBack`. */
  function start() {
    const log: string[] = [];
    const send: {
      campaign?: (e: OrchestratorEvent) => void;
      lead?: (e: OrchestratorEvent) => void;
    } = {};
    const campaign = fromCallback<OrchestratorEvent>(({ sendBack }) => {
      log.push("campaign started");
      send.campaign = sendBack;
      return () => log.push("campaign stopped");
    });
    const lead = fromCallback<OrchestratorEvent>(({ sendBack }) => {
      log.push("lead started");
      send.lead = sendBack;
      return () => log.push("lead stopped");
    });
    const actor = createActor(orchestratorMachine.provide({ actors: { campaign, lead } }));
    actor.start();
    return { actor, log, send };
  }

  it("campaigns, leads once elected, stands by when deposed, and stops", () => {
    const { actor, log, send } = start();
    expect(actor.getSnapshot().value).toBe("standby");
    expect(log).toEqual(["campaign started"]);

    // Leading only happens on ELECTED; a stray DEPOSED while standing by changes nothing.
    actor.send({ type: "DEPOSED", reason: "stray" });
    expect(actor.getSnapshot().value).toBe("standby");

    send.campaign!({ type: "ELECTED" });
    expect(actor.getSnapshot().value).toBe("leading");
    expect(log).toEqual(["campaign started", "campaign stopped", "lead started"]);

    send.lead!({ type: "DEPOSED", reason: "lease lost" });
    expect(actor.getSnapshot().value).toBe("standby");
    expect(log.slice(3)).toEqual(["lead stopped", "campaign started"]);

    send.campaign!({ type: "ELECTED" });
    expect(actor.getSnapshot().value).toBe("leading");
    actor.send({ type: "STOP" });
    const snap = actor.getSnapshot();
    expect(snap.value).toBe("stopped");
    expect(snap.status).toBe("done");
    expect(log.slice(5)).toEqual(["campaign stopped", "lead started", "lead stopped"]);
  });

  it("stops from standby, ending the campaign", () => {
    const { actor, log } = start();
    actor.send({ type: "STOP" });
    expect(actor.getSnapshot().status).toBe("done");
    expect(log).toEqual(["campaign started", "campaign stopped"]);
  });
});
