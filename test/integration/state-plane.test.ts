/**
 * The state plane end to end: a session's files live as versioned snapshots in
 * NATS, follow the session to whatever container serves it, can be taken back
 * to any version, and are never harmed by a turn that breaks the rules.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli-process.js";
import { TestFleet } from "../harness/test-fleet.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

interface VersionView {
  version: number;
  knownGood: boolean;
  reason?: string;
  parent?: number;
  createdAt: string;
}

describe("the state plane", () => {
  let fleet: TestFleet;
  const versions = async (session: string) =>
    (await fleet.client.request<{ versions: VersionView[] }>("snapshots", { session })).versions;

  beforeAll(async () => {
    fleet = await TestFleet.start({
      // One container at a time, no reservations: sessions must share and swap it.
      // No agent restarts in place: a crash must replace the container.
      pools: [{ minIdle: 1, max: 1, reservedWindowMs: 0, maxAgentRestarts: 0 }],
      workspaceLimits: { maxFileBytes: 64 * 1024 },
      retryBackoffMs: 20,
    });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  it("moves a session between containers with its state", async () => {
    const first = await fleet.client.run({ session: "mover", input: "hello" });
    expect(first.output).toBe("turn 1: hello");
    // Another session crashes the only container's agent: the pool replaces the container.
    const crash = await fleet.client.run({
      session: "crasher",
      input: script({ op: "crash", mode: "exit" }),
    });
    expect(crash).toMatchObject({ status: "succeeded", attempts: 2 });
    const second = await fleet.client.run({ session: "mover", input: "again" });
    expect(second.container).not.toBe(first.container);
    expect(second.rung).toBe("idle");
    expect(second.output).toBe("turn 2: again");
  });

  it("keeps a version per successful turn and takes a session back to an older one", async () => {
    for (const word of ["a", "b", "c"]) await fleet.client.run({ session: "timey", input: word });
    const saved = await versions("timey");
    expect(saved.map((v) => [v.version, v.knownGood])).toEqual([
      [1, true],
      [2, true],
      [3, true],
    ]);
    const restored = await fleet.client.request<{ from: VersionView; version: VersionView }>(
      "restore",
      {
        session: "timey",
        version: 1,
      },
    );
    expect(restored).toMatchObject({ from: { version: 1 }, version: { version: 4, parent: 1 } });
    // The next turn starts from version 1 (one turn counted), though a container held version 3.
    expect((await fleet.client.run({ session: "timey", input: "d" })).output).toBe("turn 2: d");

    // By time, from the CLI: the newest version at or before version 2's commit.
    const at = saved[1]!.createdAt;
    const cli = await runCli(["restore", "timey", "--at", at, "--nats", fleet.url]);
    expect(cli).toMatchObject({ code: 0, stdout: "restored version 2 as version 6\n" });
    expect((await fleet.client.run({ session: "timey", input: "e" })).output).toBe("turn 3: e");
    const listed = await runCli(["snapshots", "timey", "--nats", fleet.url]);
    // One row per version (whatever header the table has).
    const rows = listed.stdout.split("\n").filter((l) => /^\s*\d+\s/.test(l));
    expect(rows).toHaveLength(7);
    expect(listed.stdout).toContain("restore of version 2");
  });

  it("runs a task without listing any keys, so its cost does not grow with the fleet's history", async () => {
    // Warm: the session has versions, the orchestrator its consumers.
    await fleet.client.run({ session: "lister", input: "one" });
    const requests: string[] = [];
    const sub = fleet.client.nc.subscribe("$JS.API.>", {
      callback: (_err, m) => {
        requests.push(m.subject);
      },
    });
    await fleet.client.nc.flush();
    // A step (checkpoint saved, then dropped), a turn's version, a restore on the next task.
    const done = await fleet.client.run({
      session: "lister",
      input: script({ op: "write", path: "f.txt", text: "x" }, { op: "reply", text: "ok" }),
    });
    await fleet.client.run({ session: "mover", input: "swap" });
    await fleet.client.run({ session: "lister", input: "three" });
    await fleet.client.nc.flush();
    sub.unsubscribe();
    expect(done.status).toBe("succeeded");
    // Key listings and watches are consumers on 2.9 (and filtered stream infos): none per task.
    expect(requests.filter((s) => /CONSUMER\.(DURABLE\.)?CREATE|STREAM\.INFO/.test(s))).toEqual([]);
    expect(requests.length).toBeGreaterThan(0);
  });

  it("fails a turn that breaks the workspace rules, leaving the stored state as it was", async () => {
    await fleet.client.run({ session: "rules", input: "keep me" });
    const before = await versions("rules");

    const escaped = await fleet.client.run({
      session: "rules",
      input: script({ op: "write", path: "../../outside.txt", text: "x" }),
    });
    expect(escaped).toMatchObject({ status: "failed", error: { code: "PATH_ESCAPE" } });
    const big = await fleet.client.run({
      session: "rules",
      input: script({ op: "write", path: "big.bin", text: "x".repeat(100 * 1024) }),
    });
    expect(big).toMatchObject({ status: "failed", error: { code: "FILE_TOO_LARGE" } });

    expect(await versions("rules")).toEqual(before);
    // The failed turns left no trace: the next turn counts from the last good one.
    expect((await fleet.client.run({ session: "rules", input: "still" })).output).toBe(
      "turn 2: still",
    );
    const bad = await fleet.client
      .request("restore", { session: "rules", version: 99 })
      .catch((e: { code: string }) => e.code);
    expect(bad).toBe("SNAPSHOT_NOT_FOUND");
  });
});

describe("background sync", () => {
  let fleet: TestFleet;

  beforeAll(async () => {
    fleet = await TestFleet.start({ pools: [{ minIdle: 1, max: 1 }], syncIntervalMs: 100 });
  });
  afterAll(async () => {
    await fleet?.[Symbol.asyncDispose]();
  });

  it("syncs a running turn's files, while turns go on only from known-good versions", async () => {
    expect((await fleet.client.run({ session: "sync", input: "hello" })).output).toBe(
      "turn 1: hello",
    );
    const failed = await fleet.client.run({
      session: "sync",
      input: script(
        { op: "write", path: "notes.txt", text: "draft" },
        { op: "sleep", ms: 600 },
        { op: "read", path: "gone.txt" },
      ),
    });
    expect(failed).toMatchObject({ status: "failed", error: { code: "SCRIPT_FAILED" } });
    const { versions } = await fleet.client.request<{ versions: VersionView[] }>("snapshots", {
      session: "sync",
    });
    // Syncs of the failed turn: after the first turn's known-good version, not known-good themselves.
    const good = versions.find((v) => v.knownGood)!;
    const syncs = versions.filter((v) => v.reason === "sync" && v.version > good.version);
    expect(syncs.length).toBeGreaterThan(0);
    expect(syncs.map((v) => [v.knownGood, v.parent])).toEqual(
      syncs.map(() => [false, good.version]),
    );
    expect(versions.filter((v) => v.knownGood)).toEqual([good]);

    // The failed turn's work is kept, but the next turn starts from the last good version.
    expect((await fleet.client.run({ session: "sync", input: "next" })).output).toBe(
      "turn 2: next",
    );
    // A person can still go back to the synced work in progress: its turn counter came along.
    const last = syncs.at(-1)!;
    await fleet.client.request("restore", { session: "sync", version: last.version });
    const after = await fleet.client.run({
      session: "sync",
      input: script({ op: "read", path: "notes.txt" }, { op: "reply", text: "found" }),
    });
    expect(after).toMatchObject({ status: "succeeded", output: "found" });
  });
});
