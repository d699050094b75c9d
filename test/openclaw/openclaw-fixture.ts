/**
 * What the tests with the real OpenClaw share: the runtime (installed once into
 * the runtimes cache, `$CLAWFLEET_RUNTIMES_DIR` or ~/.cache/clawfleet/runtimes;
 * CI runs `clawfleet runtime install openclaw` first), an aimock stand-in for
 * the model with fixtures that fit OpenClaw's requests, a driver context that
 * records steps, and an integrity check run with OpenClaw's own Node 24.
 */
import { execFile } from "node:child_process";
import { cp, stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { type ChatCompletionRequest, LLMock } from "@copilotkit/aimock";
import {
  defaultRuntimesDir,
  type InstalledOpenClaw,
  locateOpenClaw,
} from "../../src/adapters/runtimes/openclaw-runtime.js";
import { installOpenClaw } from "../../src/adapters/runtimes/runtime-install.js";
import {
  compileExclude,
  SQLITE_LIVE_FILES,
} from "../../src/adapters/snapshots/workspace-exclude.js";
import { OPENCLAW_SNAPSHOT_EXCLUDE } from "../../src/agents/openclaw-config.js";
import type { DriverContext, ModelEndpoint } from "../../src/agents/runtime-driver.js";

/** The installed runtime; installs it first when it is missing (~30 s, once per machine). */
export async function openclawRuntime(): Promise<InstalledOpenClaw> {
  const dir = defaultRuntimesDir();
  try {
    return await locateOpenClaw(dir);
  } catch {
    return await installOpenClaw({
      runtimesDir: dir,
      progress: (line) => process.stderr.write(`runtime: ${line}\n`),
    });
  }
}

/** How OpenClaw shows the next turn the input of a turn that was aborted. */
export const QUEUED = "Queued user message from a previous active turn";

/** Whether a message is OpenClaw's own context block (it sends one as the last user message). */
function isInternal(m: { role: string; content?: unknown }): boolean {
  const text = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
  return m.role === "user" && text.includes("OPENCLAW_INTERNAL_CONTEXT");
}

/** Index of the latest message the user typed (not OpenClaw's context block); -1 when none. */
function lastUserIndex(req: ChatCompletionRequest): number {
  return req.messages.findLastIndex((m) => m.role === "user" && !isInternal(m));
}

/** The latest text the user typed. */
export function userText(req: ChatCompletionRequest): string {
  const m = req.messages[lastUserIndex(req)];
  if (m === undefined) return "";
  return typeof m.content === "string" ? m.content : JSON.stringify(m.content);
}

/** Whether a tool already answered in this turn (after the user's latest text). */
function toolAnswered(req: ChatCompletionRequest): boolean {
  return req.messages.slice(lastUserIndex(req) + 1).some((m) => m.role === "tool");
}

/**
 * An aimock LLMock answering OpenClaw: "please write a file" → a `write` tool
 * call, then "done"; "fail the model" → the model endpoint's coded error; "slow
 * please" → a slow stream; anything else → "I see N user messages".
 */
export async function startModelMock(): Promise<{ mock: LLMock; endpoint: ModelEndpoint }> {
  const mock = new LLMock({ port: 0, host: "127.0.0.1" });
  mock.on(
    { predicate: (req) => userText(req).includes("please write a file") && !toolAnswered(req) },
    {
      toolCalls: [
        {
          name: "write",
          arguments: JSON.stringify({ path: "hello.txt", content: "written by a tool" }),
        },
      ],
    },
  );
  mock.on(
    { predicate: (req) => userText(req).includes("please write a file") },
    { content: "done" },
  );
  mock.on(
    { predicate: (req) => userText(req).includes("fail the model") },
    {
      error: {
        message: "MODEL_UPSTREAM_FAILED: the upstream is down",
        type: "clawfleet_error",
        code: "MODEL_UPSTREAM_FAILED",
      },
      status: 400,
    },
  );
  mock.on(
    // Not when it comes back as context of the next turn (see the abort test).
    {
      predicate: (req) => userText(req).includes("slow please") && !userText(req).includes(QUEUED),
    },
    { content: "a slow answer that takes many chunks to arrive" },
    { latency: 250, chunkSize: 1 },
  );
  mock.on({ predicate: () => true }, (req) => ({
    content: `I see ${req.messages.filter((m) => m.role === "user").length} user messages`,
  }));
  const url = await mock.start();
  return { mock, endpoint: { url, baseUrl: `${url}/v1`, env: { CLAWFLEET_MODEL_URL: url } } };
}

/** The N of "I see N user messages". */
export function seen(answer: string): number {
  const m = /I see (\d+) user messages/.exec(answer);
  if (!m) throw new Error(`not a counting answer: ${answer}`);
  return Number(m[1]);
}

/** A driver context that records steps and logs; `signal` may be given. */
export function turnContext(workspace: string, model: ModelEndpoint, signal?: AbortSignal) {
  const steps: { step: number; name?: string; output?: unknown }[] = [];
  const ctx: DriverContext = {
    signal: signal ?? new AbortController().signal,
    workspace,
    model,
    log: () => {},
    step: async (s) => {
      steps.push(s);
    },
  };
  return { ctx, steps };
}

/** Copies a workspace as a snapshot would: without SQLite's live files and OpenClaw's excludes. */
export async function copyAsSnapshot(from: string, to: string): Promise<void> {
  const excluded = compileExclude([...SQLITE_LIVE_FILES, ...OPENCLAW_SNAPSHOT_EXCLUDE]);
  await cp(from, to, {
    recursive: true,
    filter: async (src) => {
      const rel = path.relative(from, src);
      if (rel === "") return true;
      return !excluded(rel.split(path.sep).join("/"), (await stat(src)).isDirectory());
    },
  });
}

/** `PRAGMA integrity_check` of each database, run with OpenClaw's Node 24 (`node:sqlite`). */
export async function integrity(node: string, files: readonly string[]): Promise<string[]> {
  const script = `
    const { DatabaseSync } = require("node:sqlite");
    for (const f of process.argv.slice(1)) {
      const db = new DatabaseSync(f);
      console.log(f + ": " + db.prepare("PRAGMA integrity_check").all().map((r) => r.integrity_check).join(","));
      db.close();
    }`;
  const { stdout } = await promisify(execFile)(node, ["--no-warnings", "-e", script, ...files]);
  return stdout.trim().split("\n");
}
