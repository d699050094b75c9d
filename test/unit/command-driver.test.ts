/**
 * The `command` driver against real processes: Node and sh scripts as the CLI
 * agent, a temp workspace, and a driver context built here (no agent host).
 * Waits are on markers the programs write, polled under a deadline.
 */
import { readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CommandDriver, type CommandDriverOptions } from "../../src/agents/command-driver.js";
import type { DriverContext, DriverTurn } from "../../src/agents/runtime-driver.js";
import { AgentError, ClawfleetError, ErrorCodes } from "../../src/errors.js";
import { type TurnMessage, TurnMessageSchema } from "../../src/protocol/agent-protocol.js";
import { type CommandProfileOptions, CommandProfileSchema } from "../../src/runtime-options.js";

const NODE = process.execPath;
const MODEL_ENV = { OPENAI_BASE_URL: "http://127.0.0.1:9/x/v1", OPENAI_API_KEY: "clawfleet-dummy" };
let ws: string;
const dirs: string[] = [];

beforeEach(async () => {
  ws = await tempDir();
});
afterEach(async () => {
  delete process.env.TEST_SECRET_KEY;
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "clawfleet-command-"));
  dirs.push(dir);
  return dir;
}

function driver(options: CommandProfileOptions, driverOptions?: CommandDriverOptions) {
  return new CommandDriver(CommandProfileSchema.parse(options), ws, driverOptions);
}

/** A Node program: `argv` for `node -e script ...args`. */
function node(script: string, ...args: string[]): string[] {
  return [NODE, "-e", `const fs = require("node:fs");\n${script}`, ...args];
}

function turn(input: string, extra: Partial<TurnMessage> = {}): DriverTurn {
  return TurnMessageSchema.parse({
    type: "turn",
    taskId: "task-1",
    attempt: 1,
    tenant: "acme",
    session: "s1",
    input,
    ...extra,
  });
}

function context() {
  const controller = new AbortController();
  const steps: unknown[] = [];
  const logs: string[] = [];
  const ctx: DriverContext = {
    signal: controller.signal,
    workspace: ws,
    model: { url: "http://127.0.0.1:9", baseUrl: "http://127.0.0.1:9/x", env: MODEL_ENV },
    log: (level, msg) => logs.push(`${level} ${msg}`),
    step: async (s) => {
      steps.push(s);
    },
  };
  return { ctx, controller, steps, logs };
}

async function rejection(p: Promise<unknown>): Promise<ClawfleetError> {
  const err = await p.then(
    () => expect.fail("expected the turn to fail"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClawfleetError);
  return err as ClawfleetError;
}

/** Polls `probe` until it answers, failing after a deadline. */
async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The pid a program wrote to `file` in the workspace, once it has. */
function pidFile(file: string): Promise<number> {
  return until(file, () => {
    try {
      const pid = Number.parseInt(readFileSync(path.join(ws, file), "utf8"), 10);
      return Number.isNaN(pid) ? undefined : pid;
    } catch {
      return undefined;
    }
  });
}

/** No such process, or only a zombie nobody reaped yet (an orphan whose init does not reap). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return true;
    throw err;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z") ?? false;
  } catch {
    return true;
  }
}

describe("command driver", () => {
  it("passes the input on stdin and answers stdout, checkpointed as one step", async () => {
    const d = driver({
      argv: node(`process.stdout.write("got:" + fs.readFileSync(0, "utf8") + "\\n")`),
    });
    await d.start();
    const { ctx, steps } = context();
    expect(await d.runTurn(turn("hello"), ctx)).toBe("got:hello");
    expect(steps).toEqual([{ step: 1, name: "command", output: "got:hello" }]);
    expect(d.name).toBe("command");
    expect(d.capabilities).toEqual([]);
  });

  it("puts the input in place of {input}, or appends it, with input: arg", async () => {
    const show = `process.stdout.write(JSON.stringify(process.argv.slice(1)))`;
    const input = "a $1 $& {inputFile} b";
    const placed = driver({ argv: node(show, "first", "{input}!"), input: "arg" });
    expect(JSON.parse(await placed.runTurn(turn(input), context().ctx))).toEqual([
      "first",
      `${input}!`,
    ]);
    const appended = driver({ argv: node(show, "fixed"), input: "arg" });
    expect(JSON.parse(await appended.runTurn(turn(input), context().ctx))).toEqual([
      "fixed",
      input,
    ]);
  });

  it("writes the input file inside the workspace with input: file", async () => {
    const d = driver({
      argv: node(
        `process.stdout.write(fs.readFileSync(process.argv[1], "utf8").toUpperCase())`,
        "{inputFile}",
      ),
      input: "file",
      inputFile: "in/deep/prompt.txt",
    });
    expect(await d.runTurn(turn("from a file"), context().ctx)).toBe("FROM A FILE");
    expect(await readFile(path.join(ws, "in/deep/prompt.txt"), "utf8")).toBe("from a file");
  });

  it("refuses an input file that leads out of the workspace through a symlink", async () => {
    const outside = await tempDir();
    await symlink(outside, path.join(ws, "link"));
    const d = driver({ argv: node(""), input: "file", inputFile: "link/input.txt" });
    const err = await rejection(d.runTurn(turn("x"), context().ctx));
    expect(err.code).toBe(ErrorCodes.PATH_ESCAPE);
    expect(await readdir(outside)).toEqual([]);
  });

  it("answers the output file, logs stdout, and never a stale one", async () => {
    const d = driver({
      argv: node(
        `console.log("working...");
         if (process.env.WRITE) { fs.mkdirSync("out", { recursive: true }); fs.writeFileSync("out/answer.md", "the answer\\n"); }`,
      ),
      outputFile: "out/answer.md",
      env: { WRITE: "1" },
    });
    const { ctx, logs } = context();
    expect(await d.runTurn(turn("q"), ctx)).toBe("the answer");
    expect(logs).toContain("info working...");

    const silent = driver({ argv: node(`console.log("forgot")`), outputFile: "out/answer.md" });
    const err = await rejection(silent.runTurn(turn("q"), context().ctx));
    expect(err.code).toBe(ErrorCodes.AGENT_FAILED);
    expect(err.message).toMatch(/wrote no out\/answer\.md/);
  });

  it("builds the environment: model endpoint, allow-listed values, never the host's", async () => {
    process.env.TEST_SECRET_KEY = "do-not-leak";
    const d = driver(
      { argv: node(`process.stdout.write(JSON.stringify(process.env))`), env: { FIXED: "1" } },
      { env: { MY_ALLOWED: "yes" } },
    );
    const seen = JSON.parse(await d.runTurn(turn("x"), context().ctx)) as Record<string, string>;
    expect(seen.TEST_SECRET_KEY).toBeUndefined();
    expect(seen).toEqual({
      PATH: process.env.PATH,
      HOME: path.join(ws, ".clawfleet/home"),
      LANG: "C.UTF-8",
      FIXED: "1",
      MY_ALLOWED: "yes",
      ...MODEL_ENV,
      CLAWFLEET_TASK_ID: "task-1",
      CLAWFLEET_SESSION: "s1",
      CLAWFLEET_TENANT: "acme",
    });
  });

  it("fails AGENT_FAILED on a non-zero exit with the tail of stderr", async () => {
    const d = driver({
      argv: ["sh", "-c", 'for i in $(seq 1 50); do echo "line $i" >&2; done; exit 3'],
    });
    const { ctx, logs, steps } = context();
    const err = await rejection(d.runTurn(turn("x"), ctx));
    expect(err.code).toBe(ErrorCodes.AGENT_FAILED);
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/^"sh" exited with code 3: line 31\n/);
    expect(err.message).toMatch(/line 50$/);
    expect(err.message).not.toMatch(/line 30\n/);
    expect(logs).toContain("info line 1");
    expect(steps).toEqual([]);
  });

  it("kills a program whose answer passes maxOutputBytes: OUTPUT_TOO_LARGE", async () => {
    const d = driver({
      argv: node(`fs.writeFileSync("pid", String(process.pid));
        const chunk = Buffer.alloc(65536, 97);
        for (;;) fs.writeSync(1, chunk);`),
      maxOutputBytes: 1000,
    });
    const err = await rejection(d.runTurn(turn("x"), context().ctx));
    expect(err.code).toBe(ErrorCodes.OUTPUT_TOO_LARGE);
    expect(gone(await pidFile("pid"))).toBe(true);
  });

  it("cancels: SIGTERM to the whole process group, then CANCELED", async () => {
    const d = driver({
      argv: ["sh", "-c", "sleep 30 & echo $! > child.pid; echo $$ > leader.pid; wait"],
    });
    const { ctx, controller } = context();
    const running = d.runTurn(turn("x"), ctx);
    const leader = await pidFile("leader.pid");
    const child = await pidFile("child.pid");
    controller.abort();
    const err = await rejection(running);
    expect(err.code).toBe(ErrorCodes.CANCELED);
    expect(gone(leader)).toBe(true);
    await until("the group's other process to go", () => (gone(child) ? true : undefined));
  });

  it("cancels a program that ignores SIGTERM with SIGKILL after the grace", async () => {
    const d = driver(
      {
        argv: node(`process.on("SIGTERM", () => {});
          fs.writeFileSync("pid", String(process.pid));
          setInterval(() => {}, 1000);`),
      },
      { killGraceMs: 50 },
    );
    const { ctx, controller } = context();
    const running = d.runTurn(turn("x"), ctx);
    const pid = await pidFile("pid");
    controller.abort();
    expect((await rejection(running)).code).toBe(ErrorCodes.CANCELED);
    expect(gone(pid)).toBe(true);
  });

  it("stop() kills a running turn", async () => {
    const d = driver({
      argv: node(`fs.writeFileSync("pid", String(process.pid)); setInterval(() => {}, 1000);`),
    });
    const running = d.runTurn(turn("x"), context().ctx);
    const pid = await pidFile("pid");
    await d.stop();
    expect((await rejection(running)).code).toBe(ErrorCodes.CANCELED);
    expect(gone(pid)).toBe(true);
  });

  it("is retryable AGENT_EXITED when killed by a signal it was not sent by us", async () => {
    const d = driver({
      argv: node(`fs.writeFileSync("pid", String(process.pid)); setInterval(() => {}, 1000);`),
    });
    const running = d.runTurn(turn("x"), context().ctx);
    process.kill(await pidFile("pid"), "SIGKILL");
    const err = await rejection(running);
    expect(err).toBeInstanceOf(AgentError);
    expect(err.code).toBe(ErrorCodes.AGENT_EXITED);
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/killed by SIGKILL/);
  });

  it("reports a missing program as RUNTIME_NOT_INSTALLED, at start and at a turn", async () => {
    const missing = driver({ argv: ["clawfleet-no-such-program", "-p"] });
    const atStart = await rejection(missing.start());
    expect(atStart.code).toBe(ErrorCodes.RUNTIME_NOT_INSTALLED);
    expect(atStart.retryable).toBe(false);
    expect(atStart.message).toMatch(/"clawfleet-no-such-program"/);
    const atTurn = await rejection(missing.runTurn(turn("x"), context().ctx));
    expect(atTurn.code).toBe(ErrorCodes.RUNTIME_NOT_INSTALLED);

    await writeFile(path.join(ws, "tool.sh"), "#!/bin/sh\necho tool\n");
    const tool = driver({ argv: ["./tool.sh"] });
    expect((await rejection(tool.start())).code).toBe(ErrorCodes.RUNTIME_NOT_INSTALLED);
    await chmod(path.join(ws, "tool.sh"), 0o755);
    await tool.start();
    expect(await tool.runTurn(turn("x"), context().ctx)).toBe("tool");
    await driver({ argv: ["sh", "-c", "true"] }).start();
  });

  it("answers a resumed turn from its checkpoint without running the program", async () => {
    await mkdir(path.join(ws, "logs"));
    const d = driver({ argv: ["sh", "-c", "echo ran >> logs/ran.txt; echo fresh"] });
    const { ctx, steps } = context();
    const resumed = turn("x", { resumeAfter: 1, steps: ["saved answer"] });
    expect(await d.runTurn(resumed, ctx)).toBe("saved answer");
    expect(steps).toEqual([]);
    expect(await readdir(path.join(ws, "logs"))).toEqual([]);

    expect(await d.runTurn(turn("x"), ctx)).toBe("fresh");
    expect(await readFile(path.join(ws, "logs/ran.txt"), "utf8")).toBe("ran\n");
  });
});
