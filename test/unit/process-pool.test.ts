import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readFile, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ExitInfo, TurnHooks } from "../../src/adapters/agent-link/pool-adapter.js";
import {
  buildBwrapArgs,
  findBwrap,
  runtimeReadOnlyPaths,
  SANDBOX_UID,
} from "../../src/adapters/process/bwrap-sandbox.js";
import {
  ProcessPool,
  processPoolAvailableSandbox,
} from "../../src/adapters/process/process-pool.js";
import { ErrorCodes } from "../../src/errors.js";
import { resolvePoolProfile } from "../../src/fleet-options.js";
import type { TurnMessage } from "../../src/protocol/agent-protocol.js";

const bwrapUsable = (await processPoolAvailableSandbox()) === "bwrap";
// CI installs bubblewrap, so there a missing or unusable sandbox fails these tests instead of
// skipping them; a developer without it sees them skipped.
const runConfinementTests = bwrapUsable || process.env.CI === "true";
const PROJECT_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const hooks: TurnHooks = { async onStep() {}, async onEffect() {}, onLog() {} };
const noSignal = () => new AbortController().signal;

function turn(taskId: string, input: unknown): TurnMessage {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  return { type: "turn", taskId, attempt: 1, tenant: "t", session: "s", input: text };
}

/** Runs a program to its end and collects its output. */
async function run(file: string, args: readonly string[], env: Record<string, string> = {}) {
  const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stdout: stdout.trim(), stderr };
}

function gone(pid: number | undefined): boolean {
  try {
    process.kill(pid ?? -1, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

let scratch: string;
let pool: ProcessPool;
beforeEach(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-pool-"));
  pool = new ProcessPool();
});
afterEach(async () => {
  await pool.close();
  await rm(scratch, { recursive: true, force: true });
});

describe("ProcessPool without a sandbox", () => {
  const profile = resolvePoolProfile({
    sandbox: "none",
    agentHeartbeatMs: 200,
    missedHeartbeats: 5,
  });

  it("passes no host environment and stops idempotently without reporting an exit", async () => {
    process.env.CLAWFLEET_TEST_SECRET = "hunter2";
    const spec = { id: "c1", profile, workspaceDir: path.join(scratch, "ws"), env: { FOO: "bar" } };
    const cmd = await pool.launchCommand(spec);
    delete process.env.CLAWFLEET_TEST_SECRET;
    expect(cmd.sandbox).toBe("none");
    // Plain node on the agent's bundle: no TypeScript loader on the start path.
    expect(cmd.args).toEqual([
      expect.stringMatching(/node_modules\/\.cache\/clawfleet\/scripted-agent-[0-9a-f]{16}\.mjs$/),
    ]);
    expect(Object.keys(cmd.env).sort()).toEqual(
      ["CLAWFLEET_HEARTBEAT_MS", "CLAWFLEET_WORKSPACE", "FOO", "HOME", "PATH"].sort(),
    );
    const h = await pool.start(spec);
    const exits: ExitInfo[] = [];
    h.onExit((i) => exits.push(i));
    await expect(
      h.runTurn(turn("t1", "hi"), hooks, { timeoutMs: 20_000, signal: noSignal() }),
    ).resolves.toBe("turn 1: hi");
    const first = h.stop();
    expect(h.stop()).toBe(first);
    await first;
    expect(h.alive).toBe(false);
    expect(gone(h.pid)).toBe(true);
    expect(exits).toEqual([]);
  });

  it("fails the start when the agent exits before it is ready", async () => {
    const env = { NODE_OPTIONS: `--require ${path.join(scratch, "missing.cjs")}` };
    const started = pool.start({ id: "c1", profile, workspaceDir: path.join(scratch, "ws"), env });
    await expect(started).rejects.toMatchObject({
      code: ErrorCodes.AGENT_START_FAILED,
      retryable: true,
      message: expect.stringMatching(/exited with code 1/),
    });
  });

  it("fails the start and kills the agent when it is not ready in time", async () => {
    const blocker = path.join(scratch, "block.cjs");
    const pidFile = path.join(scratch, "pid");
    await writeFile(
      blocker,
      `require("fs").writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);`,
    );
    const slow = resolvePoolProfile({ sandbox: "none", startTimeoutMs: 300 });
    const env = { NODE_OPTIONS: `--require ${blocker}` };
    const started = pool.start({
      id: "c1",
      profile: slow,
      workspaceDir: path.join(scratch, "ws"),
      env,
    });
    await expect(started).rejects.toMatchObject({
      code: ErrorCodes.AGENT_START_FAILED,
      message: expect.stringMatching(/not ready within 300 ms/),
    });
    expect(gone(Number(await readFile(pidFile, "utf8")))).toBe(true);
  });
});

describe.runIf(runConfinementTests)("ProcessPool with bubblewrap", () => {
  it("has a usable bubblewrap", () => {
    expect(bwrapUsable).toBe(true);
  });

  const profile = resolvePoolProfile({
    sandbox: "bwrap",
    agentHeartbeatMs: 200,
    missedHeartbeats: 5,
  });

  it("runs the agent confined, with the workspace as its only writable place", async () => {
    const ws = path.join(scratch, "ws");
    const h = await pool.start({ id: "c1", profile, workspaceDir: ws });
    expect(h.sandbox).toBe("bwrap");
    const script = {
      script: [
        { op: "write", path: "out/f.txt", text: "x" },
        { op: "reply", text: "ok" },
      ],
    };
    await expect(
      h.runTurn(turn("t1", script), hooks, { timeoutMs: 20_000, signal: noSignal() }),
    ).resolves.toBe("ok");
    // The agent's uid maps to ours, so the host can snapshot and restore its files.
    expect((await stat(path.join(ws, "out/f.txt"))).uid).toBe(process.getuid?.());
    const args = (await pool.launchCommand({ id: "c1", profile, workspaceDir: ws })).args;
    for (const flag of [
      "--unshare-all",
      "--unshare-user",
      "--die-with-parent",
      "--new-session",
      "--clearenv",
    ]) {
      expect(args).toContain(flag);
    }
  });

  it("detects a hung agent, kills it and reports AGENT_HUNG", async () => {
    // A short heartbeat, so the silence is noticed fast.
    const fast = resolvePoolProfile({ sandbox: "bwrap", agentHeartbeatMs: 50 });
    const h = await pool.start({ id: "c1", profile: fast, workspaceDir: path.join(scratch, "ws") });
    const exited = new Promise<ExitInfo>((resolve) => h.onExit(resolve));
    const script = { script: [{ op: "crash", mode: "hang" }] };
    const result = h.runTurn(turn("t1", script), hooks, { timeoutMs: 60_000, signal: noSignal() });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.AGENT_HUNG, retryable: true });
    expect((await exited).error.code).toBe(ErrorCodes.AGENT_HUNG);
    expect(h.alive).toBe(false);
    expect(gone(h.pid)).toBe(true);
  });

  it("reports a crash with the agent's exit code", async () => {
    const h = await pool.start({ id: "c1", profile, workspaceDir: path.join(scratch, "ws") });
    const exited = new Promise<ExitInfo>((resolve) => h.onExit(resolve));
    const script = { script: [{ op: "crash", mode: "exit" }] };
    const result = h.runTurn(turn("t1", script), hooks, { timeoutMs: 60_000, signal: noSignal() });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.AGENT_EXITED });
    expect(await exited).toMatchObject({ code: 1, error: { code: ErrorCodes.AGENT_EXITED } });
  });

  it("leaves the sandbox without network, even to loopback", async () => {
    const server: Server = createServer((socket) => socket.end());
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    const probe = `const s = require("net").connect(${port}, "127.0.0.1");
      s.on("connect", () => { console.log("connected"); process.exit(0); });
      s.on("error", (e) => { console.log(e.code); process.exit(0); });`;
    try {
      // The same probe outside the sandbox connects, so a failure inside means the sandbox.
      expect((await run(process.execPath, ["-e", probe])).stdout).toBe("connected");
      const args = buildBwrapArgs({
        workspaceDir: scratch,
        command: [process.execPath, "-e", probe],
        env: { PATH: "/usr/bin:/bin" },
        readOnlyPaths: runtimeReadOnlyPaths(),
      });
      const inside = await run(findBwrap()!, args);
      expect(inside.code).toBe(0);
      expect(inside.stdout).toMatch(/^E(CONNREFUSED|NETUNREACH|ADDRNOTAVAIL)$/);
    } finally {
      server.close();
    }
  });

  it("hides masked paths, keeps bound paths read-only and clears the environment", async () => {
    const project = path.join(scratch, "project");
    await mkdir(path.join(project, "data"), { recursive: true });
    await writeFile(path.join(project, "public.txt"), "pub");
    await writeFile(path.join(project, "data", "secret.txt"), "secret");
    const probe = `const fs = require("fs");
      const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } };
      console.log(JSON.stringify({
        pub: tryIt(() => fs.readFileSync(${JSON.stringify(path.join(project, "public.txt"))}, "utf8")),
        secret: tryIt(() => fs.readFileSync(${JSON.stringify(path.join(project, "data", "secret.txt"))}, "utf8")),
        writeProject: tryIt(() => fs.writeFileSync(${JSON.stringify(path.join(project, "x"))}, "x")),
        writeWorkspace: tryIt(() => fs.writeFileSync("/workspace/w.txt", "w")),
        uid: process.getuid(),
        env: Object.keys(process.env).sort(),
      }));`;
    process.env.CLAWFLEET_TEST_SECRET = "hunter2";
    const args = buildBwrapArgs({
      workspaceDir: path.join(scratch),
      command: [process.execPath, "-e", probe],
      env: { PATH: "/usr/bin:/bin", ONLY: "1" },
      readOnlyPaths: [project, ...runtimeReadOnlyPaths()],
      maskPaths: [path.join(project, "data")],
    });
    const out = await run(findBwrap()!, args, { ...process.env } as Record<string, string>);
    delete process.env.CLAWFLEET_TEST_SECRET;
    expect(JSON.parse(out.stdout)).toEqual({
      pub: "pub",
      secret: "ENOENT",
      writeProject: "EROFS",
      uid: SANDBOX_UID,
      // bwrap itself sets PWD for --chdir; nothing of the caller's environment gets through.
      env: ["ONLY", "PATH", "PWD"],
    });
    expect(await readFile(path.join(scratch, "w.txt"), "utf8")).toBe("w");
  });

  it("masks the fleet data dir in the pool's own launch command", async () => {
    // A data dir inside the project root, like the default `.clawfleet`, is visible through
    // the project's read-only bind unless masked.
    await mkdir(path.join(PROJECT_ROOT, ".clawfleet"), { recursive: true });
    const dataDir = await mkdtemp(path.join(PROJECT_ROOT, ".clawfleet", "pool-test-"));
    try {
      const other = path.join(dataDir, "workspaces", "c2", "secret.txt");
      await mkdir(path.dirname(other), { recursive: true });
      await writeFile(other, "other session");
      const masked = new ProcessPool({ maskPaths: [dataDir] });
      const ws = path.join(dataDir, "workspaces", "c1");
      const cmd = await masked.launchCommand({ id: "c1", profile, workspaceDir: ws });
      const probe = `const fs = require("fs");
        const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } };
        console.log(JSON.stringify([
          tryIt(() => fs.readFileSync(${JSON.stringify(other)}, "utf8")),
          tryIt(() => fs.readFileSync(${JSON.stringify(path.join(PROJECT_ROOT, "package.json"))}, "utf8").length > 0),
        ]));`;
      const args = [
        ...cmd.args.slice(0, cmd.args.indexOf("--") + 1),
        process.execPath,
        "-e",
        probe,
      ];
      const out = await run(cmd.file, args, { ...cmd.env });
      expect(JSON.parse(out.stdout)).toEqual(["ENOENT", true]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
      await rmdir(path.join(PROJECT_ROOT, ".clawfleet")).catch(() => {});
    }
  });
});
