import { cp, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ExitInfo, TurnHooks } from "../../src/adapters/agent-link/pool-adapter.js";
import { type ProcessContainer, ProcessPool } from "../../src/adapters/process/process-pool.js";
import { AGENT_STATE_FILE, MEMORY_FILE } from "../../src/agents/scripted-agent.js";
import {
  checkRelativePath,
  PATH_ESCAPE,
  parseAgentInput,
  resolveWorkspacePath,
} from "../../src/agents/scripted-script.js";
import { ErrorCodes, TerminalError } from "../../src/errors.js";
import { resolvePoolProfile } from "../../src/fleet-options.js";
import type { TurnMessage } from "../../src/protocol/agent-protocol.js";

const profile = resolvePoolProfile({ sandbox: "none", agentHeartbeatMs: 200, missedHeartbeats: 5 });
const pool = new ProcessPool();
let scratch: string;
let seq = 0;

beforeEach(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-agent-"));
});
afterEach(async () => {
  await pool.close();
  await rm(scratch, { recursive: true, force: true });
});
afterAll(() => pool.close());

function start(workspaceDir: string): Promise<ProcessContainer> {
  seq += 1;
  return pool.start({ id: `agent-${seq}`, profile, workspaceDir });
}

/** Hooks that log what the agent reported, in order, as compact strings. */
function recorder() {
  const events: string[] = [];
  const outputs = new Map<number, unknown>();
  const hooks: TurnHooks = {
    async onStep(s) {
      events.push(`step ${s.step} ${s.name}`);
      outputs.set(s.step, s.output);
    },
    async onEffect(e) {
      events.push(`effect ${e.step} ${e.kind} ${JSON.stringify(e.payload)}`);
    },
    onLog() {},
  };
  return { events, outputs, hooks };
}

function turn(taskId: string, input: unknown, extra: Partial<TurnMessage> = {}): TurnMessage {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  return { type: "turn", taskId, attempt: 1, tenant: "t", session: "s", input: text, ...extra };
}

async function run(h: ProcessContainer, t: TurnMessage) {
  const rec = recorder();
  const signal = new AbortController().signal;
  const output = await h.runTurn(t, rec.hooks, { timeoutMs: 20_000, signal });
  return { output, ...rec };
}

async function state(ws: string): Promise<unknown> {
  return JSON.parse(await readFile(path.join(ws, AGENT_STATE_FILE), "utf8"));
}

describe("scripted agent", () => {
  it("counts plain-text turns in the workspace, across agent processes", async () => {
    const ws1 = path.join(scratch, "ws1");
    const first = await start(ws1);
    const a = await run(first, turn("t1", "hello"));
    expect(a.output).toBe("turn 1: hello");
    expect(a.events).toEqual(["step 1 text"]);
    await first.stop();

    const ws2 = path.join(scratch, "ws2");
    await cp(ws1, ws2, { recursive: true });
    const second = await start(ws2);
    expect((await run(second, turn("t2", "again"))).output).toBe("turn 2: again");
    const memory = await readFile(path.join(ws2, MEMORY_FILE), "utf8");
    expect(memory).toContain("hello");
    expect(memory).toContain("again");
    expect(await state(ws2)).toEqual({ turns: 2, lastTaskId: "t2" });
  });

  it("runs script ops in order and reports each effect before its step", async () => {
    const ws = path.join(scratch, "ws");
    const h = await start(ws);
    const r = await run(
      h,
      turn("t1", {
        script: [
          { op: "write", path: "notes/a.txt", text: "one" },
          { op: "write", path: "notes/a.txt", text: "+two", append: true },
          { op: "effect", kind: "email", payload: { to: "x" } },
          { op: "read", path: "notes/a.txt" },
          { op: "reply", text: "first" },
          { op: "alloc", mb: 4 },
          { op: "sleep", ms: 5 },
          { op: "reply", text: "second" },
        ],
      }),
    );
    expect(r.output).toBe("first\nsecond");
    expect(r.events).toEqual([
      "step 1 write",
      "step 2 write",
      'effect 3 email {"to":"x"}',
      "step 3 effect",
      "step 4 read",
      "step 5 reply",
      "step 6 alloc",
      "step 7 sleep",
      "step 8 reply",
    ]);
    expect(r.outputs.get(4)).toBe("one+two");
    expect(await readFile(path.join(ws, "notes/a.txt"), "utf8")).toBe("one+two");
    expect(await state(ws)).toEqual({ turns: 1, lastTaskId: "t1" });
  });

  it("resumes after the last checkpoint without running earlier steps again", async () => {
    const ws = path.join(scratch, "ws");
    await mkdir(ws);
    await writeFile(path.join(ws, "a.txt"), "old");
    // As if attempt 1 of t-resume had counted the turn and checkpointed three steps.
    await writeFile(
      path.join(ws, AGENT_STATE_FILE),
      JSON.stringify({ turns: 4, lastTaskId: "t-resume" }),
    );
    const h = await start(ws);
    const script = {
      script: [
        { op: "write", path: "a.txt", text: "fresh" },
        { op: "reply", text: "r1" },
        { op: "read", path: "a.txt" },
        { op: "reply", text: "r2" },
        { op: "write", path: "b.txt", text: "after" },
      ],
    };
    const steps = [{ path: "a.txt", bytes: 5 }, "r1", "old"];
    const r = await run(h, turn("t-resume", script, { attempt: 2, resumeAfter: 3, steps }));
    expect(r.output).toBe("r1\nr2");
    expect(r.events).toEqual(["step 4 reply", "step 5 write"]);
    expect(await readFile(path.join(ws, "a.txt"), "utf8")).toBe("old");
    expect(await readFile(path.join(ws, "b.txt"), "utf8")).toBe("after");
    expect(await state(ws)).toEqual({ turns: 4, lastTaskId: "t-resume" });

    // A resumed text turn answers from its checkpoint and appends nothing.
    const text = await run(h, turn("t-text", "hi", { resumeAfter: 1, steps: ["turn 5: hi"] }));
    expect(text.output).toBe("turn 5: hi");
    expect(text.events).toEqual([]);
    await expect(stat(path.join(ws, MEMORY_FILE))).rejects.toThrow(/ENOENT/);
  });

  it("crashes with exit on attempt 1 only, and counts the task once", async () => {
    const ws = path.join(scratch, "ws");
    const script = {
      script: [
        { op: "write", path: "before.txt", text: "x" },
        { op: "crash", mode: "exit" },
        { op: "reply", text: "survived" },
      ],
    };
    const first = await start(ws);
    const exited = new Promise<ExitInfo>((resolve) => first.onExit(resolve));
    const rec = recorder();
    const attempt1 = first.runTurn(turn("t1", script), rec.hooks, {
      timeoutMs: 20_000,
      signal: new AbortController().signal,
    });
    await expect(attempt1).rejects.toMatchObject({
      code: ErrorCodes.AGENT_EXITED,
      retryable: true,
    });
    const info = await exited;
    expect(info.code).toBe(1);
    expect(info.error.code).toBe(ErrorCodes.AGENT_EXITED);
    expect(rec.events).toEqual(["step 1 write"]);
    expect(first.alive).toBe(false);

    const second = await start(ws);
    const steps = [rec.outputs.get(1)];
    const r = await run(second, turn("t1", script, { attempt: 2, resumeAfter: 1, steps }));
    expect(r.output).toBe("survived");
    expect(r.events).toEqual(["step 2 crash", "step 3 reply"]);
    expect(await state(ws)).toEqual({ turns: 1, lastTaskId: "t1" });
  });

  it("runs a script with checkpoint false as one step-less turn: effects, no steps", async () => {
    const h = await start(path.join(scratch, "ws"));
    const r = await run(
      h,
      turn("no-steps", {
        checkpoint: false,
        script: [
          { op: "write", path: "a.txt", text: "x" },
          { op: "effect", kind: "mail", payload: 1 },
          { op: "reply", text: "done" },
        ],
      }),
    );
    expect(r.events).toEqual(["effect 2 mail 1"]);
    expect(await readFile(path.join(scratch, "ws", "a.txt"), "utf8")).toBe("x");
  });

  it("answers bad scripts with coded terminal errors and stays usable", async () => {
    const ws = path.join(scratch, "ws");
    const h = await start(ws);
    const bad: [unknown, string, RegExp][] = [
      [{ script: [{ op: "explode" }] }, ErrorCodes.UNKNOWN_OP, /op 1 .*explode/],
      [{ script: "nope" }, ErrorCodes.INVALID_SCRIPT, /array/],
      [{ script: [{ op: "write", path: "a" }] }, ErrorCodes.INVALID_SCRIPT, /op 1 .*text/],
      [
        { script: [{ op: "reply", text: "x" }, { op: "sleep" }] },
        ErrorCodes.INVALID_SCRIPT,
        /op 2/,
      ],
      [{ script: [{ op: "read", path: "missing.txt" }] }, ErrorCodes.SCRIPT_FAILED, /no such file/],
      [{ script: [{ op: "write", path: "../x", text: "" }] }, PATH_ESCAPE, /\.\./],
      [{ script: [{ op: "read", path: "/etc/hostname" }] }, PATH_ESCAPE, /absolute/],
    ];
    for (const [i, [input, code, message]] of bad.entries()) {
      const failed = run(h, turn(`bad-${i}`, input));
      await expect(failed).rejects.toBeInstanceOf(TerminalError);
      await expect(failed).rejects.toMatchObject({
        code,
        retryable: false,
        message: expect.stringMatching(message),
      });
    }
    expect(h.alive).toBe(true);
    // Scripts that parsed count as turns even when an op failed (three here); rejected ones do not.
    expect((await run(h, turn("ok", { hello: 1 }))).output).toBe('turn 4: {"hello":1}');
  });

  it("refuses paths that leave the workspace through a symlink", async () => {
    const ws = path.join(scratch, "ws");
    const outside = path.join(scratch, "outside");
    await mkdir(ws);
    await mkdir(outside);
    await writeFile(path.join(outside, "secret.txt"), "secret");
    await symlink(outside, path.join(ws, "out"));
    await symlink(path.join(outside, "secret.txt"), path.join(ws, "secret-link"));
    await mkdir(path.join(ws, "real"));
    await symlink("real", path.join(ws, "inside"));
    const h = await start(ws);
    for (const [i, op] of [
      { op: "write", path: "out/new.txt", text: "x" },
      { op: "read", path: "out/secret.txt" },
      { op: "read", path: "secret-link" },
    ].entries()) {
      const failed = run(h, turn(`esc-${i}`, { script: [op] }));
      await expect(failed).rejects.toMatchObject({
        code: PATH_ESCAPE,
        message: expect.stringMatching(/symlink/),
      });
    }
    await expect(stat(path.join(outside, "new.txt"))).rejects.toThrow(/ENOENT/);
    const ok = await run(
      h,
      turn("in", { script: [{ op: "write", path: "inside/f.txt", text: "y" }] }),
    );
    expect(ok.events).toEqual(["step 1 write"]);
    expect(await readFile(path.join(ws, "real/f.txt"), "utf8")).toBe("y");
  });
});

describe("scripted-script", () => {
  it("treats anything but a JSON object with a script key as text", () => {
    for (const input of ["hello", "", "[1,2]", "null", '{"scripts":[]}', "{bad json"]) {
      expect(parseAgentInput(input)).toEqual({ kind: "text", text: input });
    }
    expect(parseAgentInput('{"script":[]}')).toEqual({ kind: "script", ops: [], checkpoint: true });
    expect(parseAgentInput('{"script":[],"checkpoint":false}')).toMatchObject({
      checkpoint: false,
    });
    expect(() => parseAgentInput('{"script":[],"checkpoint":"no"}')).toThrow(/checkpoint/);
  });

  it("checks paths lexically", () => {
    expect(checkRelativePath("a/b.txt")).toBe("a/b.txt");
    for (const bad of ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", ".", "a\0b"]) {
      expect(() => checkRelativePath(bad), bad).toThrow(
        expect.objectContaining({ code: PATH_ESCAPE }),
      );
    }
  });

  it("treats a dangling symlink as an escape", async () => {
    await symlink(path.join(scratch, "nowhere", "file"), path.join(scratch, "dangling"));
    await expect(resolveWorkspacePath(scratch, "dangling")).rejects.toMatchObject({
      code: PATH_ESCAPE,
    });
    await expect(resolveWorkspacePath(scratch, "new/dir/f.txt")).resolves.toBe(
      path.join(scratch, "new/dir/f.txt"),
    );
  });
});
