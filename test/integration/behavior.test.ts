/**
 * Behaviour as text: files stored per tenant and runtime profile, read fresh by
 * every turn, so a change applies at the next turn with no restart.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { BehaviorStore, hashFiles } from "../../src/adapters/records/behavior-store.js";
import { runCli } from "../harness/cli-process.js";
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

  it("is managed from the CLI and the API without a restart", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "clawfleet-behavior-"));
    try {
      const soul = path.join(dir, "SOUL.md");
      await writeFile(soul, "from the cli");
      const cli = (...args: string[]) => runCli([...args, "--nats", fleet.url]);
      const set = await cli("behavior", "set", "-t", "cli", soul);
      expect(set).toMatchObject({ code: 0 });
      expect(set.stdout).toMatch(/^version \d+ sha256:[0-9a-f]+: SOUL\.md\n$/);
      expect(await cli("behavior", "get", "-t", "cli", "SOUL.md")).toMatchObject({
        code: 0,
        stdout: "from the cli",
      });
      const turn = await fleet.client.run({ tenant: "cli", session: "c1", input: recite });
      expect(turn.output).toBe("from the cli");

      const api = await fleet.client.request<{ behavior: { hash: string } }>("behavior.set", {
        tenant: "cli",
        files: { "SOUL.md": "from the api" },
      });
      expect(
        (await fleet.client.run({ tenant: "cli", session: "c1", input: recite })).behavior,
      ).toBe(api.behavior.hash);
      const history = await cli("behavior", "history", "-t", "cli", "--json");
      expect((JSON.parse(history.stdout) as unknown[]).length).toBe(2);
      const bad = await cli("behavior", "get", "-t", "cli", "--version", "999");
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^clawfleet: NOT_FOUND: /);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
