/**
 * Healing tier 3's repair on its own: the session config validated field by
 * field with the runtime's zod schema, and behaviour files reset to their
 * newest valid earlier version (in a real KV bucket), never over a newer change.
 */
import { execFileSync } from "node:child_process";
import { lstat, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { BehaviorStore } from "../../src/adapters/records/behavior-store.js";
import { scriptedRuntime } from "../../src/agents/agent-runtime.js";
import { MAX_SCRIPT_OPS } from "../../src/agents/scripted-script.js";
import {
  describeRepair,
  repairBehavior,
  repairConfig,
} from "../../src/supervisor/session-repair.js";
import { NatsServer } from "../harness/nats-server.js";

const spec = scriptedRuntime.config!;
const now = () => new Date().toISOString();

describe("config repair", () => {
  let dir: string;
  const file = () => path.join(dir, spec.file);
  const read = async () => JSON.parse(await readFile(file(), "utf8")) as Record<string, unknown>;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "clawfleet-repair-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("leaves a valid or absent config alone", async () => {
    expect(await repairConfig(dir, spec)).toBeNull();
    await writeFile(file(), JSON.stringify({ replyPrefix: "> ", future: [1] }));
    expect(await repairConfig(dir, spec)).toBeNull();
  });

  it("resets only the invalid fields to their defaults and keeps unknown ones", async () => {
    await writeFile(file(), JSON.stringify({ replyPrefix: 42, maxSteps: 5, future: "kept" }));
    expect(await repairConfig(dir, spec)).toEqual({ file: "agent.json", reset: ["replyPrefix"] });
    expect(await read()).toEqual({ replyPrefix: "", maxSteps: 5, future: "kept" });

    await writeFile(file(), JSON.stringify({ maxSteps: -1 }));
    expect((await repairConfig(dir, spec))?.reset).toEqual(["maxSteps"]);
    expect(await read()).toEqual({ maxSteps: MAX_SCRIPT_OPS });
  });

  it("replaces an unreadable file, or one that is not a file, with all defaults", async () => {
    const defaults = { replyPrefix: "", maxSteps: MAX_SCRIPT_OPS };
    for (const text of ["{not json", "[1,2]", "null"]) {
      await writeFile(file(), text);
      expect(await repairConfig(dir, spec)).toEqual({ file: "agent.json", reset: ["*"] });
      expect(await read()).toEqual(defaults);
    }
    // A symlink (here, out of the workspace) is replaced, never written through.
    const outside = path.join(dir, "..", `${path.basename(dir)}-outside.json`);
    await writeFile(outside, "{}");
    await rm(file());
    await symlink(outside, file());
    expect((await repairConfig(dir, spec))?.reset).toEqual(["*"]);
    expect((await lstat(file())).isFile()).toBe(true);
    expect(await readFile(outside, "utf8")).toBe("{}");
    await rm(outside);
    // A FIFO (the agent may plant one) is neither read nor waited on: it is replaced.
    await rm(file());
    execFileSync("mkfifo", [file()]);
    expect((await repairConfig(dir, spec))?.reset).toEqual(["*"]);
    expect((await lstat(file())).isFile()).toBe(true);
    // Nothing is left behind beside it.
    expect((await readdir(dir)).sort()).toEqual(["agent.json"]);
  });
});

describe("behaviour repair", () => {
  let nats: NatsServer;
  let fleet: FleetNats;
  let store: BehaviorStore;
  const where = { tenant: "acme", profile: "default" };

  beforeAll(async () => {
    nats = await NatsServer.start();
    fleet = await connectFleet(nats.url);
    store = new BehaviorStore(fleet.kv.behaviors);
  });
  afterAll(async () => {
    await fleet?.close();
    await nats?.[Symbol.asyncDispose]();
  });

  it("resets each invalid file to its newest valid version, removes one that never was", async () => {
    const v1 = await store.change("acme", "default", { set: { "tools.json": '{"v":1}' } }, now());
    await store.change("acme", "default", { set: { "tools.json": '{"v":2}' } }, now());
    const broken = await store.change(
      "acme",
      "default",
      { set: { "tools.json": "{oops", "SOUL.md": "calm", "bad.md": "a\u0000b" } },
      now(),
    );
    const fixed = await repairBehavior(store, scriptedRuntime, where, broken, now());
    expect(fixed).not.toBeNull();
    expect(fixed!.reset).toEqual({ "tools.json": v1.version + 1 });
    expect(fixed!.removed).toEqual(["bad.md"]);
    expect(fixed!.behavior.files).toEqual({ "tools.json": '{"v":2}', "SOUL.md": "calm" });
    // Written as a new version; the broken one stays in the history.
    const latest = await store.get("acme", "default");
    expect(latest).toEqual(fixed!.behavior);
    expect((await store.history("acme", "default")).map((h) => h.version)).toContain(
      broken.version,
    );
    expect(describeRepair(null, fixed)).toBe(
      `repair: behaviour tools.json reset to its version ${v1.version + 1}; behaviour bad.md removed; behaviour is now version ${latest.version}`,
    );
    // Nothing left to repair.
    expect(await repairBehavior(store, scriptedRuntime, where, latest, now())).toBeNull();
  });

  it("never undoes a newer change: it judges that one instead", async () => {
    const broken = await store.change("acme", "p2", { set: { "a.json": "{" } }, now());
    // A person fixed it after the turn read the broken version.
    const fix = await store.change("acme", "p2", { set: { "a.json": "[]" } }, now());
    const p2 = { tenant: "acme", profile: "p2" };
    const result = await repairBehavior(store, scriptedRuntime, p2, broken, now());
    // Nothing reset; the turn runs with the person's fix, which stays the latest.
    expect(result).toEqual({ reset: {}, removed: [], behavior: fix });
    expect(await store.get("acme", "p2")).toEqual(fix);
    expect(describeRepair(null, result)).toBe(
      `repair: behaviour was fixed meanwhile: running with version ${fix.version}`,
    );
  });
});
