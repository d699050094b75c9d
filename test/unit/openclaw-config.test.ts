/**
 * OpenClaw's session config as clawfleet manages it (openclaw-config.ts) and
 * what the driver writes into a workspace (openclaw-workspace.ts): managed
 * fields merged over the user's, repair by the config spec, behaviour files,
 * and the databases a quiesce covers agreeing with the snapshot excludes.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  compileExclude,
  SQLITE_LIVE_FILES,
} from "../../src/adapters/snapshots/workspace-exclude.js";
import {
  checkOpenClawBehaviorFile,
  type ManagedConfigInput,
  managedConfig,
  mergeManaged,
  OPENCLAW_CONFIG_FILE,
  OPENCLAW_SNAPSHOT_EXCLUDE,
  OPENCLAW_STATE_DIR,
  openclawRuntime,
  openclawSessionKey,
} from "../../src/agents/openclaw-config.js";
import {
  BEHAVIOR_MANIFEST,
  isSnapshotDatabase,
  snapshotDatabases,
  writeBehaviorFiles,
  writeOpenClawConfig,
} from "../../src/agents/openclaw-workspace.js";
import { repairConfig } from "../../src/supervisor/session-repair.js";

const input: ManagedConfigInput = {
  workspace: "/workspace",
  stateDir: "/workspace/.openclaw/state",
  port: 18789,
  model: {
    baseUrl: "http://127.0.0.1:4000/default",
    api: "openai",
    model: "gpt-x",
    contextWindow: 128_000,
    maxTokens: 4096,
  },
};

/** The value at a dotted path of a JSON object (undefined when absent). */
const at = (v: unknown, dotted: string): unknown =>
  dotted.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], v);

describe("managed config", () => {
  it("points OpenClaw at the endpoint, off the network, and at nothing outside a turn", () => {
    const c = managedConfig(input);
    expect(at(c, "models.providers.clawfleet")).toMatchObject({
      baseUrl: "http://127.0.0.1:4000/default",
      api: "openai-completions",
      models: [{ id: "gpt-x", contextWindow: 128_000, maxTokens: 4096 }],
    });
    expect(at(c, "agents.defaults")).toMatchObject({
      workspace: "/workspace",
      model: { primary: "clawfleet/gpt-x" },
      heartbeat: { every: "0m" },
    });
    expect(at(c, "gateway")).toMatchObject({ mode: "local", bind: "loopback", port: 18789 });
    expect(at(c, "cron")).toEqual({ enabled: false });
    expect(at(c, "update")).toEqual({ checkOnStart: false });
    expect(at(c, "models.catalogRefresh")).toEqual({ enabled: false });
    const anthropic = managedConfig({
      ...input,
      model: { ...input.model, api: "anthropic" },
    });
    expect(at(anthropic, "models.providers.clawfleet.api")).toBe("anthropic-messages");
  });

  it("keeps the user's fields, overwrites the managed ones, and removes a written token", () => {
    const user = {
      channels: { telegram: { enabled: true } },
      agents: { defaults: { model: { primary: "other/x", fallbacks: ["a/b"] }, timezone: "UTC" } },
      gateway: { port: 1, auth: { mode: "password", token: "leaked", password: "pw" } },
      cron: "nonsense",
      models: { providers: { mine: { baseUrl: "http://x" }, "clawfleet-warmup": {} } },
    };
    const merged = mergeManaged(user, managedConfig(input));
    expect(at(merged, "channels")).toEqual({ telegram: { enabled: true } });
    expect(at(merged, "agents.defaults.timezone")).toBe("UTC");
    expect(at(merged, "agents.defaults.model")).toEqual({
      primary: "clawfleet/gpt-x",
      fallbacks: ["a/b"],
    });
    expect(at(merged, "gateway.port")).toBe(18789);
    expect(at(merged, "gateway.auth")).toEqual({ mode: "token" });
    expect(at(merged, "cron")).toEqual({ enabled: false });
    expect(at(merged, "models.providers.mine")).toEqual({ baseUrl: "http://x" });
    expect(at(merged, "models.providers")).not.toHaveProperty("clawfleet-warmup");
    expect(mergeManaged("not an object", { a: 1 })).toEqual({ a: 1 });
  });
});

describe("config spec (healing tier 3)", () => {
  let ws: string;
  beforeAll(async () => {
    ws = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-config-"));
  });
  afterAll(async () => {
    if (ws) await rm(ws, { recursive: true, force: true });
  });

  it("resets managed fields that are not objects and keeps everything else", async () => {
    const spec = openclawRuntime.config!;
    expect(spec.file).toBe(OPENCLAW_CONFIG_FILE);
    await mkdir(path.join(ws, ".openclaw"), { recursive: true });
    const file = path.join(ws, spec.file);
    await writeFile(
      file,
      JSON.stringify({
        gateway: "broken",
        cron: [],
        update: { checkOnStart: true },
        channels: { x: 1 },
      }),
    );
    const repair = await repairConfig(ws, spec);
    expect([...(repair?.reset ?? [])].sort()).toEqual(["cron", "gateway"]);
    const fixed = JSON.parse(await readFile(file, "utf8"));
    expect(fixed).toEqual({
      gateway: {},
      cron: { enabled: false },
      update: { checkOnStart: true },
      channels: { x: 1 },
    });
    expect(await repairConfig(ws, spec)).toBeNull();
  });
});

describe("behaviour files", () => {
  it("accepts markdown anywhere in the workspace but OpenClaw's own directory", () => {
    const ok = (n: string, t = "# hi\n") => checkOpenClawBehaviorFile(n, t);
    expect(ok("AGENTS.md")).toBeUndefined();
    expect(ok("skills/review/SKILL.md")).toBeUndefined();
    expect(ok("SOUL.md", "  \n")).toBe("is empty");
    expect(ok("notes.md", "")).toBeUndefined();
    expect(ok("USER.md", "a\0b")).toBe("contains a NUL character");
    expect(ok("AGENTS.md", "x".repeat(300 * 1024))).toMatch(/over/);
    for (const bad of [
      "../AGENTS.md",
      "/etc/passwd",
      "a//b.md",
      "./x.md",
      ".openclaw/openclaw.json",
    ])
      expect(ok(bad)).toBeDefined();
  });

  it("writes changed files only and removes the ones a turn no longer has", async () => {
    const ws = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-behavior-"));
    try {
      await writeBehaviorFiles(ws, { "AGENTS.md": "a\n", "skills/x/SKILL.md": "s\n" });
      expect(await readFile(path.join(ws, "skills/x/SKILL.md"), "utf8")).toBe("s\n");
      expect(JSON.parse(await readFile(path.join(ws, BEHAVIOR_MANIFEST), "utf8"))).toEqual([
        "AGENTS.md",
        "skills/x/SKILL.md",
      ]);
      await writeFile(path.join(ws, "MEMORY.md"), "the agent's own\n");
      await writeBehaviorFiles(ws, { "AGENTS.md": "b\n" });
      expect(await readFile(path.join(ws, "AGENTS.md"), "utf8")).toBe("b\n");
      await expect(readFile(path.join(ws, "skills/x/SKILL.md"))).rejects.toThrow();
      expect(await readFile(path.join(ws, "MEMORY.md"), "utf8")).toBe("the agent's own\n");
      await expect(writeBehaviorFiles(ws, { "SOUL.md": "" })).rejects.toMatchObject({
        code: "CONFIG_INVALID",
        retryable: true,
      });
    } finally {
      await rm(ws, { recursive: true, force: true });
    }
  });
});

describe("workspace files", () => {
  it("merges the managed fields into openclaw.json and says when it replaced garbage", async () => {
    const ws = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-json-"));
    try {
      const file = path.join(ws, OPENCLAW_CONFIG_FILE);
      expect(await writeOpenClawConfig(ws, input)).toBeUndefined();
      const first = JSON.parse(await readFile(file, "utf8"));
      await writeFile(file, JSON.stringify({ ...first, channels: { y: 2 } }));
      await writeOpenClawConfig(ws, { ...input, port: 20000 });
      const second = JSON.parse(await readFile(file, "utf8"));
      expect(second.channels).toEqual({ y: 2 });
      expect(second.gateway.port).toBe(20000);
      await writeFile(file, "{ json5: 'comments' }");
      expect(await writeOpenClawConfig(ws, input)).toMatch(/not JSON/);
    } finally {
      await rm(ws, { recursive: true, force: true });
    }
  });

  it("quiesces exactly the databases a snapshot keeps", async () => {
    const excluded = compileExclude([...SQLITE_LIVE_FILES, ...OPENCLAW_SNAPSHOT_EXCLUDE]);
    // A path is left out when it or any directory above it is excluded.
    const kept = (rel: string) => {
      const parts = rel.split("/");
      return parts.every(
        (_, i) => !excluded(parts.slice(0, i + 1).join("/"), i < parts.length - 1),
      );
    };
    const samples = [
      "state/openclaw.sqlite",
      "state/openclaw-quarantine.sqlite",
      "agents/main/agent/openclaw-agent.sqlite",
      "agents/main/agent/openclaw-agent.sqlite.reindex-lock.sqlite",
      "agents/main/agent/openclaw-agent.sqlite.generation-lock.sqlite",
      "agents/main/agent/openclaw-agent.sqlite.generation-writer.sqlite",
      "agents/main/agent/openclaw-agent.sqlite.memory-reindex-4443bccf-4ac6.sqlite",
      "tmp/openclaw-0/gateway.state.lock.sqlite",
      "tmp/openclaw-0/device-identity.dbecc432.lock.sqlite",
      "logs/x.sqlite",
      "cache/y.sqlite",
      "plugin-skills/z.sqlite",
    ];
    for (const rel of samples)
      expect([rel, isSnapshotDatabase(rel)]).toEqual([rel, kept(`${OPENCLAW_STATE_DIR}/${rel}`)]);

    const ws = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-dbs-"));
    try {
      for (const rel of samples) {
        const p = path.join(ws, OPENCLAW_STATE_DIR, rel);
        await mkdir(path.dirname(p), { recursive: true });
        await writeFile(p, "");
      }
      const found = (await snapshotDatabases(ws)).map((p) =>
        path.relative(path.join(ws, OPENCLAW_STATE_DIR), p),
      );
      expect(found).toEqual(samples.filter(isSnapshotDatabase).sort());
    } finally {
      await rm(ws, { recursive: true, force: true });
    }
  });

  it("keys OpenClaw sessions by tenant and session, clear of its reserved namespaces", () => {
    expect(openclawSessionKey("acme", "cron")).toBe("clawfleet.acme.cron");
    expect(openclawSessionKey("a", "b")).not.toBe(openclawSessionKey("a.b", ""));
  });
});
