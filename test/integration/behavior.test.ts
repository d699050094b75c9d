/**
 * Behaviour as text: files stored per tenant and runtime profile, read fresh by
 * every turn, so a change applies at the next turn with no restart.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BehaviorStore, hashFiles } from "../../src/adapters/behavior-store.js";
import { connectFleet, type FleetNats } from "../../src/adapters/fleet-nats.js";
import { TestFleet } from "../harness/test-fleet.js";

const recite = JSON.stringify({ script: [{ op: "behavior", name: "SOUL.md" }] });

describe("behaviour files", () => {
  let fleet: TestFleet;
  let nats: FleetNats;
  let store: BehaviorStore;

  beforeAll(async () => {
    fleet = await TestFleet.start({ pools: [{ minIdle: 1, max: 1 }] });
    nats = await connectFleet(fleet.url);
    store = new BehaviorStore(nats.kv.behaviors);
  });
  afterAll(async () => {
    await nats?.close();
    await fleet?.[Symbol.asyncDispose]();
  });

  it("gives each turn the latest version and records its hash", async () => {
    const none = await fleet.client.run({ session: "b1", input: recite });
    expect(none).toMatchObject({ status: "succeeded", output: "", behavior: hashFiles({}) });

    const v1 = await store.change(
      "default",
      "default",
      { set: { "SOUL.md": "calm" } },
      new Date().toISOString(),
    );
    const first = await fleet.client.run({ session: "b1", input: recite });
    expect(first).toMatchObject({ output: "calm", behavior: v1.hash });
    expect(first.history[0]?.behavior).toBe(v1.hash);

    // Changed while the container is warm: the very next turn sees it.
    const v2 = await store.change(
      "default",
      "default",
      { set: { "SOUL.md": "bold", "AGENTS.md": "x" } },
      new Date().toISOString(),
    );
    const second = await fleet.client.run({ session: "b1", input: recite });
    expect(second).toMatchObject({ output: "bold", behavior: v2.hash, container: first.container });
    expect(v2.hash).not.toBe(v1.hash);

    await store.change("default", "default", { remove: ["AGENTS.md"] }, new Date().toISOString());
    const history = await store.history("default", "default");
    expect(history.map((h) => Object.keys(h.files).sort())).toEqual([
      ["SOUL.md"],
      ["AGENTS.md", "SOUL.md"],
      ["SOUL.md"],
    ]);
    expect(history[2]!.hash).toBe(hashFiles({ "SOUL.md": "bold" }));
  });

  it("keeps tenants and profiles apart, and refuses bad names and sizes", async () => {
    await store.change(
      "other",
      "default",
      { set: { "SOUL.md": "theirs" } },
      new Date().toISOString(),
    );
    const mine = await fleet.client.run({ session: "b2", input: recite });
    expect(mine.output).toBe("bold");
    const theirs = await fleet.client.run({ tenant: "other", session: "b2", input: recite });
    expect(theirs.output).toBe("theirs");
    await expect(
      store.change("default", "default", { set: { "../x": "no" } }, ""),
    ).rejects.toMatchObject({
      code: "INVALID_REQUEST",
    });
    await expect(
      store.change("default", "default", { set: { "BIG.md": "x".repeat(300 * 1024) } }, ""),
    ).rejects.toMatchObject({ code: "BEHAVIOR_TOO_LARGE" });
  });
});
