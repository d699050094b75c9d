/**
 * The CLI with every role in its own process: an orchestrator, two nodes and a
 * gateway that share nothing but a nats-server; and `clawfleet up` as a user
 * runs it from a fresh directory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SnapshotStore } from "../../src/adapters/snapshots/snapshot-store.js";
import { taskIdForKey } from "../../src/gateway/task-submitter.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import { retrying } from "../harness/arrivals.js";
import { CLI, CliProcess, runCli } from "../harness/cli-process.js";
import { NatsServer } from "../harness/nats-server.js";
import { isAlive } from "../harness/process-table.js";

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

  it("says what is wrong with a command in one line, in the user's words", async () => {
    // A wrong command line exits 2, with no help after it.
    expect(await cli("bogus")).toMatchObject({
      code: 2,
      stdout: "",
      stderr: "clawfleet: USAGE: unknown command 'bogus' (see clawfleet --help)\n",
    });
    expect(await cli("task")).toMatchObject({
      code: 2,
      stderr: "clawfleet: USAGE: missing required argument 'taskId' (see clawfleet task --help)\n",
    });
    // A value the API refuses is named by the flag typed, not the request field.
    expect(await cli("send", "-s", "x", "--timeout", "0", "hi")).toMatchObject({
      code: 2,
      stderr: "clawfleet: USAGE: --timeout must be at least 100 ms, got 0\n",
    });
    expect(await cli("send", "-s", "bad session", "hi")).toMatchObject({
      code: 2,
      stderr:
        "clawfleet: USAGE: --session must be 1-128 characters of [A-Za-z0-9_-], got 'bad session'\n",
    });
    expect(await cli("behavior", "set", "/nonexistent")).toMatchObject({
      code: 1,
      stderr: "clawfleet: FILE_NOT_FOUND: no such file: /nonexistent\n",
    });
    // Help is still help.
    const help = await cli("send", "--help");
    expect(help).toMatchObject({ code: 0, stderr: "" });
    expect(help.stdout).toMatch(/^Usage: clawfleet send \[options\] <input\.\.\.>/);
  });

  it("names where it looked when no gateway answers", async () => {
    const r = await cli("status", "--prefix", "nobody");
    expect(r).toMatchObject({
      code: 1,
      stderr: `clawfleet: NO_GATEWAY: no clawfleet gateway answers on ${nats.url} (prefix nobody); start one with clawfleet up, or clawfleet gateway --nats URL\n`,
    });
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
      await using up = await InTerminal.start(["up", "--log-level", "warn"], cwd);
      expect(up.stdout).toContain("npx clawfleet send --session demo hello");
      const fleetFile = JSON.parse(
        await readFile(path.join(cwd, ".clawfleet", "fleet.json"), "utf8"),
      );
      expect(fleetFile.natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
      // The banner's NATS command names the server: the embedded one listens on a free port.
      expect(up.stdout).toContain(
        `nats --server ${fleetFile.natsUrl} req fleet.api.run '{"session":"demo","input":"hello"}'`,
      );

      expect(await runCli(["send", "--session", "demo", "hello"], { cwd })).toMatchObject({
        stdout: "turn 1: hello\n",
      });
      expect(await runCli(["send", "--session", "demo", "hello"], { cwd })).toMatchObject({
        stdout: "turn 2: hello\n",
      });

      // Ctrl-C while a turn runs: the fleet stops without a warning about itself (no
      // "node lost", no "heartbeat failed"), and leaves no workspaces behind.
      const nc = await connect({ servers: fleetFile.natsUrl });
      try {
        const taskId = taskIdForKey("default", "busy-1");
        const stepped = firstEvent(
          nc,
          `fleet.events.task.${taskId}`,
          (e) => e.type === "step" && e.step === 1,
        );
        const input = script({ op: "reply", text: "busy" }, { op: "sleep", ms: 10_000 });
        const busy = await runCli(["submit", "-s", "busy", "-k", "busy-1", input], { cwd });
        expect(busy).toMatchObject({ code: 0, stdout: `${taskId}\n` });
        await stepped;
      } finally {
        await nc.close();
      }
      // The embedded server is not in the terminal's process group: Ctrl-C reaches the
      // fleet, which stops it last, instead of racing its clean stop against the server.
      const serverPid = Number(
        await readFile(path.join(cwd, ".clawfleet", "nats", "nats-server.pid"), "utf8"),
      );
      expect(await processGroupOf(serverPid)).not.toBe(up.pid);
      expect(await up.ctrlC()).toBe(0);
      expect(up.stderr).toBe("");
      expect(await readdir(path.join(cwd, ".clawfleet", "nodes"))).toEqual([]);
      expect(existsSync(path.join(cwd, ".clawfleet", "fleet.json"))).toBe(false);
      const after = await runCli(["status"], { cwd });
      expect(after.code).toBe(1);
      expect(after.stderr).toMatch(/^clawfleet: .*no fleet found/);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });

  it("says the fleet is down after up was killed, and a new up cleans up after it", async () => {
    const cwd = await mkdtemp(path.join(tmpdir(), "clawfleet-up-killed-"));
    const ready = "Ctrl-C stops the fleet.";
    try {
      const first = await CliProcess.start(["up", "--log-level", "warn"], ready, { cwd });
      expect(await runCli(["send", "--session", "s", "hello"], { cwd })).toMatchObject({
        stdout: "turn 1: hello\n",
      });
      const pid = first.child.pid!;
      const nodes = path.join(cwd, ".clawfleet", "nodes");
      const killedNode = (await readdir(nodes)).filter((n) => n.endsWith(`-${pid}`));
      expect(killedNode).toHaveLength(1);
      await first.stop("SIGKILL");

      // Its nats-server outlives it; the CLI still knows nobody is home.
      expect(await runCli(["send", "--session", "s", "again"], { cwd })).toMatchObject({
        code: 1,
        stderr: `clawfleet: FLEET_DOWN: the fleet in .clawfleet (pid ${pid}) is not running; start it with clawfleet up\n`,
      });

      // A chosen node id's directory may belong to a node running elsewhere: it stays.
      await mkdir(path.join(nodes, "node-kept"), { recursive: true });
      const second = await CliProcess.start(["up", "--log-level", "warn"], ready, { cwd });
      try {
        expect(await runCli(["send", "--session", "s", "again"], { cwd })).toMatchObject({
          stdout: "turn 2: again\n",
        });
        const left = await readdir(nodes);
        expect(left).not.toContain(killedNode[0]);
        expect(left).toContain("node-kept");
      } finally {
        expect(await second.stop("SIGINT")).toBe(0);
      }
      expect(await readdir(nodes)).toEqual(["node-kept"]);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe("clawfleet up and its stop signals", () => {
  // A signal may come the moment `up` shows a sign of life (a supervisor that gave up
  // waiting, a test that saw the ready line): it must stop the fleet, never kill it.
  it("stops cleanly when signalled while it is still starting", async () => {
    const cwd = await mkdtemp(path.join(tmpdir(), "clawfleet-up-early-"));
    try {
      const up = await CliProcess.start(["up", "--log-level", "info"], "nats-server ready", {
        cwd,
        readyOn: "stderr",
      });
      expect(await up.stop("SIGTERM")).toBe(0);
      expect(up.exitSignal).toBeNull();
      expect(up.stderr).toContain('"msg":"stopping"');
      expect(existsSync(path.join(cwd, ".clawfleet", "fleet.json"))).toBe(false);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });

  it("exits at once on a second signal, leaving no nats-server behind", async () => {
    const cwd = await mkdtemp(path.join(tmpdir(), "clawfleet-up-twice-"));
    try {
      const up = await CliProcess.start(["up", "--log-level", "info"], "Ctrl-C stops the fleet.", {
        cwd,
      });
      const serverPid = Number(
        await readFile(path.join(cwd, ".clawfleet", "nats", "nats-server.pid"), "utf8"),
      );
      const stopping = new Promise<void>((resolve) =>
        up.child.stderr?.on("data", () => {
          if (up.stderr.includes('"msg":"stopping"')) resolve();
        }),
      );
      up.child.kill("SIGTERM");
      await stopping;
      const code = await up.stop("SIGTERM");
      // What matters: it exits (no signal kills it), and leaves no server behind. Which code
      // depends on whether the clean stop won the race (0) or the second signal did (130).
      expect([0, 130]).toContain(code);
      expect(up.exitSignal).toBeNull();
      await retrying(async () => {
        if (await isAlive(serverPid)) throw new Error(`nats-server ${serverPid} still runs`);
      }, "the embedded nats-server to stop");
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe("clawfleet sim", () => {
  it("reports its progress on stderr, its table on stdout", async () => {
    const r = await runCli(["sim", "--users", "3", "--hours", "1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^default: 3 users, 10 containers, 1 h, seed 1;/);
    expect(r.stderr.split("\n").filter(Boolean)).toEqual([
      "sim: ladder (1/3) running",
      expect.stringMatching(/^sim: ladder \(1\/3\) done in \d+\.\d s$/),
      "sim: any-free (2/3) running",
      expect.stringMatching(/^sim: any-free \(2\/3\) done in \d+\.\d s$/),
      "sim: pinned (3/3) running",
      expect.stringMatching(/^sim: pinned \(3\/3\) done in \d+\.\d s$/),
    ]);
  });
});

/**
 * `clawfleet up` as in a terminal: it leads its own process group, and Ctrl-C signals
 * the whole group (what it spawned without a group of its own gets the SIGINT too).
 */
class InTerminal implements AsyncDisposable {
  stdout = "";
  stderr = "";
  private readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcess) {
    child.stdout?.on("data", (d: Buffer) => {
      this.stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  static async start(args: string[], cwd: string): Promise<InTerminal> {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const t = new InTerminal(child);
    await new Promise<void>((resolve, reject) => {
      const onData = () => {
        if (t.stdout.includes("Ctrl-C stops the fleet.")) resolve();
      };
      child.stdout?.on("data", onData);
      void t.exited.then((code) => reject(new Error(`up exited ${code}:\n${t.stderr}`)));
    });
    return t;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** SIGINT to the process group, as a terminal's Ctrl-C; resolves with the exit code. */
  async ctrlC(): Promise<number | null> {
    process.kill(-this.child.pid!, "SIGINT");
    return this.exited;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null)
      process.kill(-this.child.pid!, "SIGKILL");
    await this.exited;
  }
}

/** The process group of `pid` (Linux: field 5 of /proc/<pid>/stat, after the command's parentheses). */
async function processGroupOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
}
