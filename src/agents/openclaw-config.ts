/**
 * OpenClaw's session config as clawfleet manages it: where its files live in a
 * session's workspace, the fields of `openclaw.json` clawfleet owns, and what
 * the host knows of the runtime for healing (config spec, behaviour files,
 * snapshot excludes).
 *
 * Layout: OpenClaw's workspace is the session workspace itself (files its tools
 * write are the session's files); its state dir is `.openclaw/state` and its
 * config `.openclaw/openclaw.json`, so one snapshot holds all of a session.
 *
 * Managed fields are merged over whatever else the file holds on every gateway
 * start: a user (or the agent) may add fields, never change these. They point
 * OpenClaw at the container's model endpoint and nothing else, and switch off
 * everything that would call the model outside a turn (the fleet refuses those
 * calls: heartbeats, cron, dreaming, exec completion turns, remote embeddings)
 * or reach the network at start (update check, model catalog, Control UI).
 */
import { z } from "zod";
import type { AgentRuntime } from "./agent-runtime.js";

/** Relative to the workspace: OpenClaw's own directory. */
export const OPENCLAW_DIR = ".openclaw";
/** Relative to the workspace: the config file (`OPENCLAW_CONFIG_PATH`). */
export const OPENCLAW_CONFIG_FILE = `${OPENCLAW_DIR}/openclaw.json`;
/** Relative to the workspace: the state dir (`OPENCLAW_STATE_DIR`), SQLite inside. */
export const OPENCLAW_STATE_DIR = `${OPENCLAW_DIR}/state`;
/** The model provider clawfleet configures: the container's model endpoint. */
export const OPENCLAW_PROVIDER = "clawfleet";
/** A provider answered by the driver itself, used only to warm a fresh gateway up. */
export const OPENCLAW_WARMUP_PROVIDER = "clawfleet-warmup";
/** The warm-up provider's one model id. */
export const OPENCLAW_WARMUP_MODEL = "warmup";

/**
 * What a snapshot of an OpenClaw workspace leaves out, beside SQLite's live
 * `-wal`/`-shm`/`-journal` files: lock databases and lock files (their holder
 * is the process that made them), scratch databases of a memory re-index in
 * progress (with their own WALs), the log, caches and temporary files. All of
 * them are rebuilt or unneeded by a fresh gateway on the restored state.
 */
export const OPENCLAW_SNAPSHOT_EXCLUDE: readonly string[] = Object.freeze([
  `${OPENCLAW_STATE_DIR}/tmp/`,
  `${OPENCLAW_STATE_DIR}/logs/`,
  `${OPENCLAW_STATE_DIR}/cache/`,
  // Links into the runtime's own bundled skills, made again at every gateway start.
  `${OPENCLAW_STATE_DIR}/plugin-skills/`,
  "*.lock",
  "*.lock.sqlite",
  "*.generation-lock.sqlite",
  "*.generation-writer.sqlite",
  "*.reindex-lock.sqlite",
  "*.memory-reindex-*",
]);

/** The model as OpenClaw is told of it. */
export interface OpenClawModelSettings {
  /** The endpoint's base URL: OpenClaw appends `/chat/completions` (or `/v1/messages`). */
  readonly baseUrl: string;
  readonly api: "openai" | "anthropic";
  /** The model id OpenClaw asks for. */
  readonly model: string;
  readonly contextWindow: number;
  readonly maxTokens: number;
}

/** The values of one gateway start that the managed fields depend on. */
export interface ManagedConfigInput {
  /** Absolute path of the workspace as OpenClaw sees it. */
  readonly workspace: string;
  /** Absolute path of the state dir. */
  readonly stateDir: string;
  readonly model: OpenClawModelSettings;
  /** The gateway's port on loopback. */
  readonly port: number;
  /** Base URL of the driver's warm-up stand-in, when there is one. */
  readonly warmupBaseUrl?: string;
}

type Json = Record<string, unknown>;

/** A value in a managed tree that removes the user's field instead of setting it. */
export const REMOVE = Symbol("remove");

function providerModel(id: string, contextWindow: number, maxTokens: number): Json {
  return {
    id,
    name: id,
    reasoning: false,
    input: ["text"],
    cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
    contextWindow,
    maxTokens,
  };
}

/** The managed fields that never depend on a start: what a repair resets to. */
export const STATIC_MANAGED: Readonly<Json> = Object.freeze({
  update: { checkOnStart: false },
  telemetry: { enabled: false },
  cron: { enabled: false },
  memory: { search: { provider: "none" } },
  plugins: { entries: { "memory-core": { config: { dreaming: { enabled: false } } } } },
  tools: { exec: { notifyOnExit: false } },
});

/** Every managed field for one gateway start; {@link REMOVE} marks fields taken out. */
export function managedConfig(input: ManagedConfigInput): Json {
  const m = input.model;
  const providers: Json = {
    [OPENCLAW_PROVIDER]: {
      baseUrl: m.baseUrl,
      api: m.api === "anthropic" ? "anthropic-messages" : "openai-completions",
      // The endpoint drops it: real keys live at the fleet's model gateway only.
      apiKey: "clawfleet-no-key",
      models: [providerModel(m.model, m.contextWindow, m.maxTokens)],
    },
    [OPENCLAW_WARMUP_PROVIDER]:
      input.warmupBaseUrl === undefined
        ? REMOVE
        : {
            baseUrl: input.warmupBaseUrl,
            api: "openai-completions",
            apiKey: "clawfleet-no-key",
            models: [providerModel(OPENCLAW_WARMUP_MODEL, 8192, 256)],
          },
  };
  return {
    ...structuredClone(STATIC_MANAGED),
    models: { catalogRefresh: { enabled: false }, providers },
    agents: {
      defaults: {
        workspace: input.workspace,
        model: { primary: `${OPENCLAW_PROVIDER}/${m.model}` },
        // Behaviour files come from the fleet with every turn, not from OpenClaw's templates.
        skipBootstrap: true,
        heartbeat: { every: "0m" },
      },
    },
    logging: { file: `${input.stateDir}/logs/openclaw.log` },
    gateway: {
      mode: "local",
      bind: "loopback",
      port: input.port,
      // The token comes in OPENCLAW_GATEWAY_TOKEN, never written into the workspace.
      auth: { mode: "token", token: REMOVE, password: REMOVE },
      controlUi: { enabled: false },
      http: { endpoints: { chatCompletions: { enabled: true } } },
    },
  };
}

function isPlainObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * `managed` merged over `current` (a parsed config; anything else counts as
 * empty): objects merge key by key, every other managed value replaces the
 * user's, {@link REMOVE} deletes it. Fields the user added survive.
 */
export function mergeManaged(current: unknown, managed: Json): Json {
  const out: Json = isPlainObject(current) ? { ...current } : {};
  for (const [key, value] of Object.entries(managed)) {
    if (value === REMOVE) delete out[key];
    else if (isPlainObject(value)) out[key] = mergeManaged(out[key], value);
    else out[key] = value;
  }
  return out;
}

/** A field that must be a JSON object for OpenClaw to start at all. */
const ObjectField = z.record(z.string(), z.unknown());

/**
 * The managed top-level fields for healing tier 3: each must be an object (or
 * absent); an invalid one is reset to its static managed part (`{}` for those
 * rebuilt at every start). Other fields are kept as they are.
 */
export const OpenClawConfigSchema = z.looseObject(
  Object.fromEntries(
    ["models", "agents", "logging", "gateway", ...Object.keys(STATIC_MANAGED)].map((key) => [
      key,
      ObjectField.default(() => structuredClone((STATIC_MANAGED[key] as Json | undefined) ?? {})),
    ]),
  ),
);

/** The bootstrap files OpenClaw injects into every run: an empty one is a mistake. */
export const OPENCLAW_BOOTSTRAP_FILES: readonly string[] = Object.freeze([
  "AGENTS.md",
  "SOUL.md",
  "IDENTITY.md",
  "USER.md",
  "TOOLS.md",
  "HEARTBEAT.md",
  "BOOTSTRAP.md",
  "MEMORY.md",
]);

/** Largest behaviour file accepted (OpenClaw injects at most 20 000 characters of one). */
export const MAX_OPENCLAW_BEHAVIOR_BYTES = 256 * 1024;

/** Why `name` cannot be a behaviour file's path in the workspace; undefined when it can. */
export function behaviorPathProblem(name: string): string | undefined {
  const parts = name.split("/");
  if (name === "" || name.startsWith("/") || name.includes("\\") || name.includes("\0"))
    return "is not a relative path";
  if (parts.some((p) => p === "" || p === "." || p === "..")) return "is not a normalised path";
  if (parts[0] === OPENCLAW_DIR) return `is inside ${OPENCLAW_DIR}/, which clawfleet manages`;
  return undefined;
}

/** OpenClaw's rule for one behaviour file: a problem, or undefined when it is fine. */
export function checkOpenClawBehaviorFile(name: string, text: string): string | undefined {
  const where = behaviorPathProblem(name);
  if (where) return where;
  if (text.includes("\0")) return "contains a NUL character";
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_OPENCLAW_BEHAVIOR_BYTES)
    return `is ${bytes} bytes, over ${MAX_OPENCLAW_BEHAVIOR_BYTES}`;
  if (OPENCLAW_BOOTSTRAP_FILES.includes(name) && text.trim() === "") return "is empty";
  return undefined;
}

/**
 * OpenClaw's session key for a clawfleet session: the tenant is part of it,
 * and the `.` (never in ids) keeps it clear of OpenClaw's reserved `cron:`,
 * `subagent:` and `acp:` namespaces.
 */
export function openclawSessionKey(tenant: string, session: string): string {
  return `clawfleet.${tenant}.${session}`;
}

/** OpenClaw as the host knows it (register it in agent-runtime.ts). */
export const openclawRuntime: AgentRuntime = {
  name: "openclaw",
  config: { file: OPENCLAW_CONFIG_FILE, schema: OpenClawConfigSchema },
  checkBehaviorFile: checkOpenClawBehaviorFile,
  snapshotExclude: OPENCLAW_SNAPSHOT_EXCLUDE,
};
