/**
 * The OpenClaw driver with the real OpenClaw (unsandboxed: the sandbox is the
 * pool's job) against an aimock stand-in for the model. One driver runs a
 * session's turns; its workspace, copied as a snapshot right after a quiesce
 * while its gateway still runs, must hold sound databases and let a second
 * driver carry on the same conversation. Slow (two gateway starts, ~10 s each).
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { LLMock } from "@copilotkit/aimock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstalledOpenClaw } from "../../src/adapters/runtimes/openclaw-runtime.js";
import { OpenClawDriver } from "../../src/agents/openclaw-driver.js";
import { snapshotDatabases } from "../../src/agents/openclaw-workspace.js";
import {
  type AgentHostConfig,
  AgentHostConfigSchema,
  type DriverTurn,
  type ModelEndpoint,
} from "../../src/agents/runtime-driver.js";
import { ClawfleetError } from "../../src/errors.js";
import {
  copyAsSnapshot,
  integrity,
  openclawRuntime,
  QUEUED,
  seen,
  startModelMock,
  turnContext,
  userText,
} from "./openclaw-fixture.js";

let n = 0;
const turn = (input: string, extra: Partial<DriverTurn> = {}): DriverTurn => ({
  type: "turn",
  taskId: `t${++n}`,
  attempt: 1,
  tenant: "acme",
  session: "s1",
  input,
  behavior: {},
  resumeAfter: 0,
  steps: [],
  ...extra,
});

const alive = (pid: number | undefined) => {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("OpenClaw driver with the real OpenClaw", () => {
  let runtime: InstalledOpenClaw;
  let mock: LLMock;
  let endpoint: ModelEndpoint;
  let scratch: string;
  let config: AgentHostConfig;
  const drivers: OpenClawDriver[] = [];
  const logs: string[] = [];
  const times: Record<string, number> = {};

  const driverIn = async (workspace: string) => {
    await mkdir(workspace, { recursive: true });
    const d = new OpenClawDriver(config, workspace, endpoint, (m) => logs.push(m), {
      scratchDir: scratch,
    });
    drivers.push(d);
    await d.start();
    return d;
  };
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      times[name] = Date.now() - t0;
    }
  };

  beforeAll(async () => {
    runtime = await openclawRuntime();
    ({ mock, endpoint } = await startModelMock());
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-test-"));
    config = AgentHostConfigSchema.parse({
      runtime: "openclaw",
      openclaw: {},
      model: { upstream: "default", model: "mock-1" },
      runtimeDir: runtime.dir,
    });
  }, 300_000);

  afterAll(async () => {
    await Promise.allSettled(drivers.map((d) => d.stop()));
    await mock?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
    console.log(`openclaw driver timings (ms): ${JSON.stringify(times)}`);
  });

  it("runs a session's turns on one gateway that keeps the history, and writes files with tools", async () => {
    const ws = path.join(scratch, "ws1");
    const driver = await timed("start", () => driverIn(ws));
    // start() only checks that OpenClaw runs: the node restores the session's files next.
    expect(driver.gatewayPid).toBeUndefined();
    expect(await readdir(ws)).toEqual([]);
    expect(mock.getRequests()).toHaveLength(0);

    const behavior = { "AGENTS.md": "# Rules\nAlways mention marker-4711.\n" };
    const t1 = turnContext(ws, endpoint);
    const a1 = await timed("turn1 (gateway start + first turn)", () =>
      driver.runTurn(turn("hello", { behavior }), t1.ctx),
    );
    expect(t1.steps).toEqual([{ step: 1, name: "openclaw", output: a1 }]);
    expect(await readFile(path.join(ws, "AGENTS.md"), "utf8")).toBe(behavior["AGENTS.md"]);
    // OpenClaw injects the behaviour file into the model's prompt.
    expect(JSON.stringify(mock.getLastRequest()?.body)).toContain("marker-4711");

    const a2 = await timed("turn2", () =>
      driver.runTurn(turn("again", { behavior }), turnContext(ws, endpoint).ctx),
    );
    const a3 = await timed("turn3", () =>
      driver.runTurn(turn("and again", { behavior }), turnContext(ws, endpoint).ctx),
    );
    expect(seen(a2)).toBe(seen(a1) + 1);
    expect(seen(a3)).toBe(seen(a2) + 1);

    const a4 = await timed("tool turn", () =>
      driver.runTurn(turn("please write a file", { behavior }), turnContext(ws, endpoint).ctx),
    );
    expect(a4).toBe("done");
    expect(await readFile(path.join(ws, "hello.txt"), "utf8")).toBe("written by a tool");

    // A behaviour file the turn no longer has is taken out of the workspace.
    await driver.runTurn(turn("one more"), turnContext(ws, endpoint).ctx);
    expect(existsSync(path.join(ws, "AGENTS.md"))).toBe(false);
  });

  it("hands a resumed turn its checkpointed answer without asking the model", async () => {
    const driver = drivers[0]!;
    const before = mock.getRequests().length;
    const { ctx, steps } = turnContext(path.join(scratch, "ws1"), endpoint);
    const out = await driver.runTurn(
      turn("hello", { resumeAfter: 1, steps: ["saved answer"] }),
      ctx,
    );
    expect(out).toBe("saved answer");
    expect(steps).toEqual([]);
    expect(mock.getRequests().length).toBe(before);
  });

  it("a copy taken after quiesce, gateway running, has sound databases and carries the conversation on", async () => {
    const ws1 = path.join(scratch, "ws1");
    const ws2 = path.join(scratch, "ws2");
    const driver1 = drivers[0]!;
    const last = await driver1.runTurn(turn("count now"), turnContext(ws1, endpoint).ctx);
    await timed("quiesce", () => driver1.quiesce());
    await copyAsSnapshot(ws1, ws2);
    const dbs = await snapshotDatabases(ws2);
    expect(dbs.length).toBeGreaterThan(0);
    for (const line of await integrity(runtime.node, dbs)) expect(line).toMatch(/: ok$/);

    const pid = driver1.gatewayPid;
    expect(alive(pid)).toBe(true);
    await timed("release", () => driver1.release());
    expect(alive(pid)).toBe(false);

    const driver2 = await driverIn(ws2);
    const next = await timed("turn on the copy (gateway start + first turn)", () =>
      driver2.runTurn(turn("count again"), turnContext(ws2, endpoint).ctx),
    );
    expect(seen(next)).toBe(seen(last) + 1);
    expect(userText(mock.getLastRequest()!.body as never)).toContain("count again");
  });

  it("stops OpenClaw's run when the turn is aborted, and fails a turn whose model call failed", async () => {
    const ws2 = path.join(scratch, "ws2");
    const driver2 = drivers[1]!;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 1500);
    const t0 = Date.now();
    await expect(
      driver2.runTurn(turn("slow please"), turnContext(ws2, endpoint, controller.signal).ctx),
    ).rejects.toThrow();
    expect(Date.now() - t0).toBeLessThan(5000);
    // The gateway lives on and answers the next turn, showing the model the aborted input
    // again, as context only (OpenClaw's repair of a user message left without an answer).
    const after = await driver2.runTurn(turn("still there?"), turnContext(ws2, endpoint).ctx);
    expect(seen(after)).toBeGreaterThan(0);
    expect(userText(mock.getLastRequest()!.body as never)).toContain(QUEUED);

    const failed = await timed("turn with a failed model call", () =>
      driver2.runTurn(turn("fail the model"), turnContext(ws2, endpoint).ctx).then(
        () => null,
        (err: unknown) => err,
      ),
    );
    expect(failed).toBeInstanceOf(ClawfleetError);
    expect((failed as ClawfleetError).code).toBe("MODEL_UPSTREAM_FAILED");
  });

  it("restarts a gateway grown past recycleRssMb before the next turn, history intact", async () => {
    const ws2 = path.join(scratch, "ws2");
    const driver2 = drivers[1]!;
    // The threshold lowered for this test: any gateway is over 64 MiB.
    const lowered = { ...config.openclaw!, recycleRssMb: 64 };
    (driver2 as unknown as { profile: typeof lowered }).profile = lowered;
    const before = await driver2.runTurn(turn("how many now?"), turnContext(ws2, endpoint).ctx);
    const pid = driver2.gatewayPid;
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    times["gateway VmRSS (MiB)"] = Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024);
    const after = await timed("turn after a recycle", () =>
      driver2.runTurn(turn("and now?"), turnContext(ws2, endpoint).ctx),
    );
    expect(driver2.gatewayPid).not.toBe(pid);
    expect(alive(pid)).toBe(false);
    // The new gateway's first request carries the turn before the restart and its answer.
    // (Counting user messages would not do: OpenClaw folds the failed turn's orphaned
    // input into the next user message when it repairs the transcript at start.)
    const history = JSON.stringify(mock.getLastRequest()!.body);
    expect(history).toContain("how many now?");
    expect(history).toContain(before);
    expect(seen(after)).toBeGreaterThanOrEqual(seen(before));
    expect(logs.some((l) => /restarts before the next turn/.test(l))).toBe(true);
  });
});
