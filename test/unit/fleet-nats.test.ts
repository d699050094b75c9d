import { describe, expect, it } from "vitest";
import { bucketKeys, connectFleet } from "../../src/adapters/nats/fleet-nats.js";
import { NatsServer } from "../harness/nats-server.js";

describe("connectFleet", () => {
  it("provisions streams and buckets once when many roles start together", async () => {
    await using nats = await NatsServer.start();
    const fleets = await Promise.all(Array.from({ length: 6 }, () => connectFleet(nats.url)));
    try {
      const names: string[] = [];
      for await (const s of fleets[0]!.jsm.streams.list()) names.push(s.config.name);
      expect(names).toEqual(
        expect.arrayContaining(["FLEET_TASKS", "FLEET_EVENTS", "FLEET_RESULTS", "FLEET_EFFECTS"]),
      );
      await fleets[0]!.kv.nodes.put("n1", "{}");
      await fleets[1]!.kv.nodes.put("n2", "{}");
      await fleets[1]!.kv.nodes.delete("n2");
      // Deleted keys still have a marker message; readers skip them by their operation.
      expect(await bucketKeys(fleets[2]!.jsm, "fleet_nodes")).toEqual(["n1", "n2"]);
    } finally {
      await Promise.all(fleets.map((f) => f.close()));
    }
  });

  it("brings an existing bucket's TTL to what the fleet wants", async () => {
    await using nats = await NatsServer.start();
    const first = await connectFleet(nats.url);
    // A leases bucket as an older fleet made it: no TTL.
    const stream = "KV_fleet_leases";
    const c = (await first.jsm.streams.info(stream)).config;
    await first.jsm.streams.update(stream, { ...c, max_age: 0 });
    await first.close();
    const again = await connectFleet(nats.url);
    try {
      expect((await again.jsm.streams.info(stream)).config.max_age).toBe(60 * 60_000 * 1e6);
    } finally {
      await again.close();
    }
  });
});
