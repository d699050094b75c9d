/**
 * The CLI with every role in its own process: an orchestrator, two nodes and a
 * gateway that share nothing but a nats-server; and `clawfleet up` as a user
 * runs it from a fresh directory.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SnapshotStore } from "../../src/adapters/snapshots/snapshot-store.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import { CliProcess, runCli } from "../harness/cli-process.js";
import { NatsServer } from "../harness/nats-server.js";

const script = (...ops: object[]) => JSON.stringify({ script: ops });

describe("roles as separate processes", () => {
  let nats: NatsServer;
  let dir: string;
  const roles: CliProcess[] = [];
  const nodes: Record<string, CliProcess> = {};

  beforeAll(async () => {
    nats = await NatsServer.start();
    dir = await mkdtemp(path.join(tmpdir(), "clawfleet-cli-"));
    const config = path.join(dir, "fleet.config.json");
    await writeFile(
      config,
      JSON.stringify({
        nodeHeartbeatMs: 200,
        nodeTimeoutMs: 1500,
        retryBackoffMs: 50,
        pools: [{ minIdle: 1, max: 1 }],
      }),
    );
    const common = [
      "--nats",
      nats.url,
      "--data-dir",
      path.join(dir, "data"),
      "--config",
      config,
      "--log-level",
      "warn",
    ];
    roles.push(
      await CliProcess.start(["orchestrator", ...common, "--id", "orch-1"], "connected to"),
    );
    for (const id of ["node-a", "node-b"]) {
      nodes[id] = await CliProcess.start(["node", ...common, "--id", id], "connected to");
      roles.push(nodes[id]);
    }
    roles.push(await CliProcess.start(["gateway", ...common, "--id", "gw-1"], "connected to"));
  });

  afterAll(async () => {
    for (const r of roles.reverse()) await r.stop("SIGTERM");
    await nats?.[Symbol.asyncDispose]();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const cli = (...args: string[]) => runCli([...args, "--nats", nats.url]);

  it("sends and counts turns across processes", async () => {
    const one = await cli("send", "--session", "demo", "hello");
    expect(one).toMatchObject({ code: 0, stdout: "turn 1: hello\n" });
    const two = await cli("send", "--session", "demo", "hello");
    expect(two).toMatchObject({ code: 0, stdout: "turn 2: hello\n" });
  });

  it("spreads sessions over both nodes and reports them in status", async () => {
    const input = script({ op: "sleep", ms: 300 }, { op: "reply", text: "ok" });
    const runs = await Promise.all(
      ["a", "b", "c"].map((s) => cli("send", "--json", "--session", `spread-${s}`, input)),
    );
    const records = runs.map((r) => JSON.parse(r.stdout) as TaskRecord);
    expect(records.map((r) => r.status)).toEqual(["succeeded", "succeeded", "succeeded"]);
    expect(new Set(records.map((r) => r.node))).toEqual(new Set(["node-a", "node-b"]));

    const status = await cli("status", "--json");
    const body = JSON.parse(status.stdout) as {
      nodes: Array<{ id: string }>;
      orchestrator: { id: string };
    };
    expect(body.nodes.map((n) => n.id).sort()).toEqual(["node-a", "node-b"]);
    expect(body.orchestrator.id).toBe("orch-1");
  });

  it("submits, reads and cancels by id, and prints one-line errors", async () => {
    const sub = await cli("submit", "--session", "ids", script({ op: "sleep", ms: 20_000 }));
    expect(sub.code).toBe(0);
    const taskId = sub.stdout.trim();
    const task = await cli("task", taskId, "--json");
    expect(JSON.parse(task.stdout)).toMatchObject({ taskId, session: "ids" });
    const canceled = await cli("cancel", taskId);
    expect(canceled.stdout).toMatch(/status\s+canceled/);

    const bad = await cli("send", "--session", "ids", script({ op: "warp" }));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toMatch(/^clawfleet: UNKNOWN_OP: /);
    const missing = await cli("task", "t-missing");
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.stderr).toMatch(/^clawfleet: NOT_FOUND: /);
  });

  it("finishes a task on the other node when its node is killed, from its last checkpoint", async () => {
    const first = JSON.parse(
      (await cli("send", "--json", "--session", "survivor", "hi")).stdout,
    ) as TaskRecord;
    const victim = first.node!;
    const other = victim === "node-a" ? "node-b" : "node-a";
    const key = "survivor-2";
    const taskId = taskIdForKey("default", key);
    const nc = await nats.connect();
    const checkpointed = firstEvent(
      nc,
      `fleet.events.task.${taskId}`,
      (e) => e.type === "step" && e.step === 1,
    );
    const input = script(
      { op: "write", path: "steps.log", text: "one\n", append: true },
      { op: "sleep", ms: 1500 },
      { op: "reply", text: "made it" },
    );
    const pending = cli(
      "send",
      "--json",
      "--session",
      "survivor",
      "--wait",
      "30000",
      "-k",
      key,
      input,
    );
    await checkpointed;
    await nodes[victim]!.stop("SIGKILL");
    const done = JSON.parse((await pending).stdout) as TaskRecord;
    expect(done).toMatchObject({
      status: "succeeded",
      output: "made it",
      node: other,
      attempts: 2,
    });
    // Step 1 ran once: the second attempt resumed after its checkpoint, with its files.
    const snapshots = await SnapshotStore.open(nc);
    const restored = path.join(dir, "restored");
    await snapshots.restore("default", "survivor", restored);
    expect(await readFile(path.join(restored, "steps.log"), "utf8")).toBe("one\n");
    const history = await cli("task", taskId, "--json");
    expect(
      (JSON.parse(history.stdout) as TaskRecord).history.map((h) => [h.node, h.outcome]),
    ).toEqual([
      [victim, "lost"],
      [other, "succeeded"],
    ]);
    // The session's state moved with it: its turn count goes on.
    const next = await cli("send", "--session", "survivor", "again");
    expect(next.stdout).toBe("turn 3: again\n");
  });
});

/** Resolves with the first message on `subject` that `match` accepts. */
async function firstEvent(
  nc: NatsConnection,
  subject: string,
  match: (e: { type: string; step?: number }) => boolean,
): Promise<void> {
  const sub = nc.subscribe(subject);
  for await (const m of sub) {
    if (match(m.json())) {
      sub.unsubscribe();
      return;
    }
  }
}

describe("clawfleet up", () => {
  it("serves from a fresh directory, answers send, and stops cleanly", async () => {
    const cwd = await mkdtemp(path.join(tmpdir(), "clawfleet-up-"));
    try {
      const up = await CliProcess.start(["up", "--log-level", "warn"], "Ctrl-C stops the fleet.", {
        cwd,
      });
      expect(up.stdout).toContain("npx clawfleet send --session demo hello");
      const fleetFile = JSON.parse(
        await readFile(path.join(cwd, ".clawfleet", "fleet.json"), "utf8"),
      );
      expect(fleetFile.natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);

      expect(await runCli(["send", "--session", "demo", "hello"], { cwd })).toMatchObject({
        stdout: "turn 1: hello\n",
      });
      expect(await runCli(["send", "--session", "demo", "hello"], { cwd })).toMatchObject({
        stdout: "turn 2: hello\n",
      });

      expect(await up.stop("SIGINT")).toBe(0);
      expect(existsSync(path.join(cwd, ".clawfleet", "fleet.json"))).toBe(false);
      const after = await runCli(["status"], { cwd });
      expect(after.code).toBe(1);
      expect(after.stderr).toMatch(/^clawfleet: .*no fleet found/);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
