/**
 * The `command` presets with the real programs, end to end: a fleet whose pool
 * runs the `claude-code` or the `codex` preset's command, the real program, in the
 * bubblewrap sandbox, no network, calling aimock through the model bridge.
 *
 * The packages are pinned and installed once into node_modules/.cache (~400 MB
 * each, a few seconds from the registry): by this file under CI or with
 * CLAWFLEET_TEST_INSTALL_PRESETS=1, else the tests are skipped with the command
 * that installs them. The program is found on the PATH the pool's profile sets
 * (Claude Code by its absolute path: see the preflight note below).
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, realpath, rename, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { ChatCompletionRequest } from "@copilotkit/aimock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PoolProfileOptions } from "../../src/fleet-options.js";
import { COMMAND_PRESETS } from "../../src/runtime-options.js";
import { ModelStandIn, STAND_IN_USAGE } from "../harness/model-stand-in.js";
import { TestFleet } from "../harness/test-fleet.js";

const run = promisify(execFile);
const CACHE = fileURLToPath(
  new URL("../../node_modules/.cache/clawfleet-presets", import.meta.url),
);
const INSTALL = Boolean(process.env.CI) || process.env.CLAWFLEET_TEST_INSTALL_PRESETS === "1";

interface PresetCase {
  readonly preset: "claude-code" | "codex";
  readonly pkg: string;
  readonly version: string;
  readonly bin: string;
  /** The upstream's wire format, and the path the stand-in sees the call on. */
  readonly api: "anthropic" | "openai";
  readonly path: string;
}

const CASES: readonly PresetCase[] = [
  {
    preset: "claude-code",
    pkg: "@anthropic-ai/claude-code",
    // Pinned: on Node 20 npm would pick 2.1.197, the last release whose engines allow it
    // (the program is a native binary and does not run on Node).
    version: "2.1.332",
    bin: "claude",
    api: "anthropic",
    path: "/v1/messages",
  },
  {
    preset: "codex",
    pkg: "@openai/codex",
    version: "0.171.0",
    bin: "codex",
    api: "openai",
    path: "/v1/responses",
  },
];

function installDir(c: PresetCase): string {
  return path.join(CACHE, `${c.preset}-${c.version}`);
}

function binPath(c: PresetCase): string {
  return path.join(installDir(c), "node_modules", ".bin", c.bin);
}

function installCommand(c: PresetCase): string {
  return `npm install --prefix ${path.relative(process.cwd(), installDir(c))} ${c.pkg}@${c.version}`;
}

/** Installs the package into its cache dir unless it is there; whole or not at all. */
async function ensureInstalled(c: PresetCase): Promise<void> {
  if (existsSync(binPath(c))) return;
  await mkdir(CACHE, { recursive: true });
  const partial = await mkdtemp(`${installDir(c)}.partial-`);
  try {
    // Claude Code's postinstall puts the native binary in place: scripts must run.
    await run(
      "npm",
      ["install", "--prefix", partial, "--no-audit", "--no-fund", `${c.pkg}@${c.version}`],
      { timeout: 280_000 },
    );
    try {
      await rename(partial, installDir(c));
    } catch (err) {
      // Another run installed it first.
      if (!existsSync(binPath(c))) throw err;
    }
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
}

/** The text of a request's user messages, in order (content parts flattened to JSON). */
function userText(req: ChatCompletionRequest): string {
  return req.messages
    .filter((m) => m.role === "user")
    .map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content)))
    .join("\n");
}

/** The stand-in's answer: every token (`tok-<hex>`) the user sent so far, in order. */
function heard(tokens: readonly string[]): string {
  return `heard ${tokens.join(" ")}`;
}

function token(): string {
  return `tok-${randomBytes(4).toString("hex")}`;
}

let model: ModelStandIn;

beforeAll(async () => {
  model = await ModelStandIn.start();
  // "please write": a shell command that writes a file in the workspace, then "wrote it".
  const wants = (req: ChatCompletionRequest) => userText(req).includes("please write");
  const toolDone = (req: ChatCompletionRequest) => req.messages.some((m) => m.role === "tool");
  model.mock.on(
    { predicate: (req) => wants(req) && !toolDone(req) },
    {
      toolCalls: [
        {
          name: "Bash",
          arguments: JSON.stringify({
            command: "printf 'written by the agent' > hello.txt",
            description: "Write hello.txt",
          }),
        },
      ],
    },
  );
  model.mock.on({ predicate: wants }, { content: "wrote it" });
  model.mock.on({ predicate: () => true }, (req: ChatCompletionRequest) => ({
    content: heard([...new Set(userText(req).match(/tok-[0-9a-f]{8}/g) ?? [])]),
    usage: {
      prompt_tokens: STAND_IN_USAGE.input,
      completion_tokens: STAND_IN_USAGE.output,
      input_tokens: STAND_IN_USAGE.input,
      output_tokens: STAND_IN_USAGE.output,
    },
  }));
});
afterAll(async () => {
  await model?.stop();
});

for (const c of CASES) {
  if (!existsSync(binPath(c)) && !INSTALL) {
    describe(`the ${c.preset} preset`, () => {
      it.skip(`needs ${c.pkg}@${c.version}: ${installCommand(c)} (or set CLAWFLEET_TEST_INSTALL_PRESETS=1)`, () => {});
    });
    continue;
  }

  describe(`the ${c.preset} preset`, () => {
    let fleet: TestFleet;

    beforeAll(async () => {
      await ensureInstalled(c);
      // The sandbox binds real paths; the program is found on the PATH the profile sets.
      const dir = await realpath(installDir(c));
      // The node's preflight (pool-preflight.ts) looks for argv[0] on the sandbox's PATH,
      // not on the one the profile sets: a program there is given by its absolute path.
      const { argv, input } = COMMAND_PRESETS[c.preset];
      const program =
        argv[0] === c.bin
          ? { argv: [path.join(dir, "node_modules", ".bin", c.bin), ...argv.slice(1)], input }
          : { preset: c.preset };
      const pool: PoolProfileOptions = {
        runtime: "command",
        command: {
          ...program,
          env: {
            PATH: [
              path.join(dir, "node_modules", ".bin"),
              path.dirname(await realpath(process.execPath)),
              "/usr/local/bin:/usr/bin:/bin",
            ].join(":"),
          },
          readOnlyPaths: [dir],
        },
        model: { upstream: c.api },
        minIdle: 1,
        max: 1,
        // CI has bubblewrap; the sandbox is part of what is tested (no network).
        sandbox: process.env.CI ? "bwrap" : "auto",
        agentHeartbeatMs: 200,
      };
      fleet = await TestFleet.start({
        pools: [pool],
        retryBackoffMs: 50,
        maxAttempts: 1,
        models: {
          upstreams: {
            anthropic: { baseUrl: model.url, api: "anthropic" },
            openai: { baseUrl: model.openaiUrl },
          },
        },
      });
    }, 300_000);
    afterAll(async () => {
      await fleet?.[Symbol.asyncDispose]();
    });

    it("answers a turn from the model through the bridge", async () => {
      const before = model.requests().length;
      const tok = token();
      const task = await fleet.client.run({
        session: "first",
        input: `Say the token ${tok}.`,
      });
      expect(task.error).toBeUndefined();
      expect(task.status).toBe("succeeded");
      expect(task.output).toBe(heard([tok]));

      const calls = model.requests().slice(before);
      expect(calls.length).toBeGreaterThanOrEqual(1);
      for (const call of calls) {
        expect(call).toMatchObject({ method: "POST", response: { status: 200 } });
        expect(call.path.split("?")[0]).toBe(c.path);
      }

      const timeline = await fleet.client.timeline(task.taskId);
      const events = timeline.events.filter((e) => e.source === "node" && e.type === "model");
      expect(events).toHaveLength(calls.length);
      for (const e of events) {
        expect(e).toMatchObject({ model: { provider: c.api, status: 200, usage: STAND_IN_USAGE } });
      }
    });

    it("goes on with the session's conversation, and takes an input that starts with -", async () => {
      const first = token();
      const second = token();
      const one = await fleet.client.run({ session: "chat", input: `Remember ${first}.` });
      expect(one.output).toBe(heard([first]));
      // Read as an option, `--version` would print the program's version instead.
      const two = await fleet.client.run({ session: "chat", input: `--version ${second}` });
      expect(two.error).toBeUndefined();
      expect(two.output).toBe(heard([first, second]));

      // Another session starts its own conversation.
      const third = token();
      const other = await fleet.client.run({ session: "other", input: `Hello ${third}.` });
      expect(other.output).toBe(heard([third]));
    });

    // Codex's tools go through its JavaScript "code mode", which the stand-in does not speak.
    it.runIf(c.preset === "claude-code")("changes the workspace without asking", async () => {
      const task = await fleet.client.run({ session: "write", input: "please write hello.txt" });
      expect(task.error).toBeUndefined();
      expect(task.output).toBe("wrote it");
      expect(await fleet.sessionFile("write", "hello.txt")).toBe("written by the agent");
    });
  });
}
