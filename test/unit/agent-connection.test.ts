import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentConnection, LineFramer } from "../../src/adapters/agent-link/agent-connection.js";
import type { TurnHooks } from "../../src/adapters/agent-link/pool-adapter.js";
import { type ClawfleetError, ErrorCodes, TerminalError } from "../../src/errors.js";
import type { TurnMessage } from "../../src/protocol/agent-protocol.js";
import { agentPeer as peer } from "../harness/agent-peer.js";

const AGENT = fileURLToPath(new URL("../../src/agents/scripted-agent.ts", import.meta.url));
const TSX = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

function turn(taskId: string, input: unknown): TurnMessage {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  return { type: "turn", taskId, attempt: 1, tenant: "t", session: "s", input: text };
}

const quietHooks: TurnHooks = { async onStep() {}, async onEffect() {}, onLog() {} };
const noSignal = () => new AbortController().signal;

describe("LineFramer", () => {
  function frame(max: number) {
    const lines: string[] = [];
    let overflows = 0;
    const framer = new LineFramer(
      max,
      (l) => lines.push(l),
      () => overflows++,
    );
    return { framer, lines, overflows: () => overflows };
  }

  it("joins partial chunks, splits joined lines and keeps split UTF-8 intact", () => {
    const f = frame(1024);
    f.framer.push("ab");
    f.framer.push("c\nde");
    f.framer.push("f\n\ng\r\n");
    f.framer.push(Buffer.from([0x61, 0xc3]));
    f.framer.push(Buffer.from([0xa9, 0x0a]));
    expect(f.lines).toEqual(["abc", "def", "", "g", "aé"]);
  });

  it("drops an over-long line once and recovers at the next newline", () => {
    const f = frame(8);
    f.framer.push("0123456789");
    f.framer.push("more\nok\n");
    f.framer.push("0123456789abc\nfine\n");
    expect(f.lines).toEqual(["ok", "fine"]);
    expect(f.overflows()).toBe(2);
  });
});

describe("AgentConnection (protocol peer)", () => {
  it("frames a multi-MiB step split in chunks and acks only after onStep", async () => {
    const p = peer();
    await p.send({ type: "ready" });
    await p.conn.waitReady(1000);
    const steps: unknown[] = [];
    let releaseStep = () => {};
    const hooks: TurnHooks = {
      ...quietHooks,
      onStep: (s) =>
        new Promise<void>((resolve) => {
          steps.push(s.output);
          releaseStep = resolve;
        }),
    };
    const result = p.conn.runTurn(turn("t1", "x"), hooks, {
      timeoutMs: 60_000,
      signal: noSignal(),
    });
    expect(await p.next("turn")).toMatchObject({ taskId: "t1", resumeAfter: 0, steps: [] });
    const big = "é".repeat(1_500_000);
    const line = Buffer.from(`${JSON.stringify({ type: "step", step: 1, output: big })}\n`);
    for (let i = 0; i < line.length; i += 65_537) p.fromAgent.write(line.subarray(i, i + 65_537));
    const ack = p.next("ack");
    await expect.poll(() => steps.length).toBe(1);
    expect(steps[0]).toBe(big);
    releaseStep();
    expect(await ack).toEqual({ type: "ack", step: 1 });
    await p.send({ type: "result", taskId: "t1", output: "done" });
    await expect(result).resolves.toBe("done");
  });

  it("fails with AGENT_PROTOCOL on an invalid line and rejects the running turn", async () => {
    const p = peer();
    const failures: string[] = [];
    p.conn.onFailure((e) => failures.push(e.code));
    const result = p.conn.runTurn(turn("t1", "x"), quietHooks, {
      timeoutMs: 1000,
      signal: noSignal(),
    });
    await p.send({ type: "bogus" });
    await expect(result).rejects.toMatchObject({
      code: ErrorCodes.AGENT_PROTOCOL,
      retryable: true,
    });
    expect(p.conn.alive).toBe(false);
    expect(failures).toEqual([ErrorCodes.AGENT_PROTOCOL]);
  });

  it("treats an answer for another task as a protocol error", async () => {
    const p = peer();
    const result = p.conn.runTurn(turn("t1", "x"), quietHooks, {
      timeoutMs: 1000,
      signal: noSignal(),
    });
    await p.send({ type: "result", taskId: "t2", output: "" });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.AGENT_PROTOCOL });
  });

  it("declares the agent hung after missed heartbeats on the injected clock", async () => {
    const p = peer();
    await p.send({ type: "ready" });
    p.clock.increment(299);
    await p.send({ type: "heartbeat" });
    p.clock.increment(299);
    expect(p.conn.alive).toBe(true);
    p.clock.increment(1);
    expect(p.conn.failure).toMatchObject({ code: ErrorCodes.AGENT_HUNG, retryable: true });
  });

  it("times a turn out, cancels it and stays usable", async () => {
    const p = peer();
    const result = p.conn.runTurn(turn("t1", "x"), quietHooks, {
      timeoutMs: 500,
      signal: noSignal(),
    });
    await p.next("turn");
    p.clock.increment(500);
    await p.next("cancel");
    const error = { code: ErrorCodes.CANCELED, message: "canceled" };
    await p.send({ type: "error", taskId: "t1", error, retryable: false });
    await expect(result).rejects.toBeInstanceOf(TerminalError);
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.TURN_TIMEOUT });
    expect(p.conn.alive).toBe(true);
    const again = p.conn.runTurn(turn("t2", "y"), quietHooks, {
      timeoutMs: 500,
      signal: noSignal(),
    });
    await p.send({ type: "result", taskId: "t2", output: "ok" });
    await expect(again).resolves.toBe("ok");
  });

  it("gives a canceled agent a grace on the clock, then counts it as hung", async () => {
    // A watchdog longer than the grace, so only the grace can end this turn.
    const p = peer({ cancelGraceMs: 2000, missedHeartbeats: 100 });
    const abort = new AbortController();
    const result = p.conn.runTurn(turn("t1", "x"), quietHooks, {
      timeoutMs: 60_000,
      signal: abort.signal,
    });
    await p.next("turn");
    abort.abort();
    await p.next("cancel");
    // Steps after the cancel are neither recorded nor acked.
    await p.send({ type: "step", step: 1 });
    p.clock.increment(1999);
    expect(p.conn.alive).toBe(true);
    p.clock.increment(1);
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.CANCELED, retryable: false });
    expect(p.conn.failure?.code).toBe(ErrorCodes.AGENT_HUNG);
  });

  it("cancels the turn when a hook fails, and reports the hook's error", async () => {
    const p = peer();
    const hooks: TurnHooks = {
      ...quietHooks,
      onStep: async () => {
        throw new TerminalError(ErrorCodes.STEP_OUTPUT_TOO_LARGE, "no");
      },
    };
    const result = p.conn.runTurn(turn("t1", "x"), hooks, { timeoutMs: 1000, signal: noSignal() });
    await p.send({ type: "step", step: 1 });
    await p.next("cancel");
    const error = { code: ErrorCodes.CANCELED, message: "canceled" };
    await p.send({ type: "error", taskId: "t1", error, retryable: false });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.STEP_OUTPUT_TOO_LARGE });
  });

  it("rejects waitReady on timeout and on the end of the agent's output", async () => {
    const p = peer();
    const ready = p.conn.waitReady(1000);
    p.clock.increment(1000);
    await expect(ready).rejects.toMatchObject({ code: ErrorCodes.AGENT_START_FAILED });
    const again = p.conn.waitReady(1000);
    p.fromAgent.end();
    await expect(again).rejects.toMatchObject({ code: ErrorCodes.AGENT_START_FAILED });
    expect(p.conn.failure?.code).toBe(ErrorCodes.AGENT_EXITED);
  });
});

describe("AgentConnection (scripted agent process)", () => {
  let scratch: string;
  const children: ChildProcessWithoutNullStreams[] = [];
  beforeEach(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-conn-"));
  });
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) {
        const closed = once(c, "close");
        c.kill("SIGKILL");
        await closed;
      }
    }
    await rm(scratch, { recursive: true, force: true });
  });

  async function agent(heartbeatMs: number, missedHeartbeats = 5) {
    const child = spawn(process.execPath, ["--import", TSX, AGENT], {
      cwd: scratch,
      env: { PATH: process.env.PATH ?? "", CLAWFLEET_HEARTBEAT_MS: String(heartbeatMs) },
    });
    children.push(child);
    const conn = new AgentConnection({
      input: child.stdout,
      output: child.stdin,
      stderr: child.stderr,
      heartbeatMs,
      missedHeartbeats,
    });
    await conn.waitReady(20_000);
    return conn;
  }

  it("detects a hung agent by its missing heartbeats", async () => {
    const conn = await agent(50, 3);
    const failed = new Promise<ClawfleetError>((resolve) => conn.onFailure(resolve));
    const script = {
      script: [
        { op: "reply", text: "a" },
        { op: "crash", mode: "hang" },
      ],
    };
    const result = conn.runTurn(turn("t1", script), quietHooks, {
      timeoutMs: 60_000,
      signal: noSignal(),
    });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.AGENT_HUNG, retryable: true });
    expect((await failed).code).toBe(ErrorCodes.AGENT_HUNG);
    expect(conn.logTail().join("\n")).toContain("hanging on purpose");
  });

  it("cancels a sleeping turn and runs the next one", async () => {
    const conn = await agent(200);
    const abort = new AbortController();
    const hooks: TurnHooks = {
      ...quietHooks,
      // Abort once step 1 is acked, i.e. while the agent goes into its long sleep.
      onStep: async () => void setImmediate(() => abort.abort()),
    };
    const script = {
      script: [
        { op: "reply", text: "a" },
        { op: "sleep", ms: 600_000 },
      ],
    };
    const result = conn.runTurn(turn("t1", script), hooks, {
      timeoutMs: 60_000,
      signal: abort.signal,
    });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.CANCELED, retryable: false });
    expect(conn.alive).toBe(true);
    await expect(
      conn.runTurn(turn("t2", "hi"), quietHooks, { timeoutMs: 60_000, signal: noSignal() }),
    ).resolves.toBe("turn 2: hi");
  });

  it("times out a turn with TURN_TIMEOUT and keeps the agent", async () => {
    const conn = await agent(200);
    const script = { script: [{ op: "sleep", ms: 600_000 }] };
    const result = conn.runTurn(turn("t1", script), quietHooks, {
      timeoutMs: 300,
      signal: noSignal(),
    });
    await expect(result).rejects.toMatchObject({ code: ErrorCodes.TURN_TIMEOUT, retryable: false });
    expect(conn.alive).toBe(true);
    const ok = { script: [{ op: "reply", text: "ok" }] };
    await expect(
      conn.runTurn(turn("t2", ok), quietHooks, { timeoutMs: 60_000, signal: noSignal() }),
    ).resolves.toBe("ok");
  });
});
