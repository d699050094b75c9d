/**
 * What a pool runs: the agent runtime of its profile and that runtime's settings
 * (`command`, `openclaw`), plus which model upstream its agents' model endpoint
 * stands for. Part of a pool profile (fleet-options.ts).
 *
 * Runtimes:
 * - `scripted`: the reference agent (src/agents/scripted-agent.ts);
 * - `command`: any CLI agent, one process per turn (src/agents/command-driver.ts);
 * - `openclaw`: OpenClaw kept warm in its container (src/agents/openclaw-driver.ts).
 */
import { z } from "zod";
import { UpstreamName } from "./model-gateway-options.js";

/** The agent runtimes a pool can run. */
export const RUNTIME_NAMES = ["scripted", "command", "openclaw"] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

/** Which upstream a pool's agents call, and as which model. */
export interface ModelBindingOptions {
  /** The gateway upstream (`FleetOptions.models.upstreams`) the agent's endpoint stands for. Default `default`. */
  upstream?: string;
  /** The model id runtimes that must name one ask for (OpenClaw's primary model). Default `default`. */
  model?: string;
}

/** A CLI agent run once per turn (`runtime: "command"`). */
export interface CommandProfileOptions {
  /**
   * Program and arguments. `{input}` in an argument is replaced by the turn's
   * input (with `input: "arg"`); `{inputFile}` by the input file's path. A
   * `preset` fills this in.
   */
  argv?: string[];
  /** A documented preset: `claude-code` (`claude -p`) or `codex` (`codex exec`). */
  preset?: "claude-code" | "codex";
  /** How the input reaches the program: an argument, its stdin, or a file. Default `stdin`. */
  input?: "arg" | "stdin" | "file";
  /** The input file, relative to the workspace (with `input: "file"`). Default `.clawfleet/input.txt`. */
  inputFile?: string;
  /** Where the answer is: the program's stdout, or this file relative to the workspace. Default stdout. */
  outputFile?: string;
  /** Largest answer accepted; more fails the turn `OUTPUT_TOO_LARGE`. Default 1 MiB. */
  maxOutputBytes?: number;
  /** Fixed, non-secret environment variables for the program. */
  env?: Record<string, string>;
  /**
   * Names of the node's environment variables passed through (an allow-list).
   * Names that look like credentials (`*KEY*`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`) are refused.
   */
  passEnv?: string[];
  /** Extra host paths the sandbox shows read-only (where the program is installed). */
  readOnlyPaths?: string[];
}

/** OpenClaw kept warm (`runtime: "openclaw"`). */
export interface OpenClawProfileOptions {
  /**
   * Where `clawfleet runtime install openclaw` put Node 24 and OpenClaw. Default
   * `~/.cache/clawfleet/runtimes` (or `$CLAWFLEET_RUNTIMES_DIR`).
   */
  runtimesDir?: string;
  /** Grace for OpenClaw's gateway to become ready after a (re)start. Default 120 000 ms. */
  readyTimeoutMs?: number;
  /** The OpenClaw process is restarted between turns once its resident memory passes this. Default 1800 MiB. */
  recycleRssMb?: number;
  /** Context window of the model, as OpenClaw is told. Default 128 000 tokens. */
  contextWindow?: number;
  /** Most tokens of one answer, as OpenClaw is told. Default 4096. */
  maxTokens?: number;
}

const CREDENTIAL_NAME = /KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL/i;
const EnvName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");
const RelativePath = z
  .string()
  .min(1)
  .refine(
    (p) => !p.startsWith("/") && !p.split("/").includes(".."),
    "must be a path inside the workspace",
  );

export const ModelBindingSchema = z.strictObject({
  upstream: UpstreamName.default("default"),
  model: z.string().min(1).max(256).default("default"),
});

/**
 * What the presets stand for; documented in the README, tested against a model
 * stand-in in test/integration/command-presets.test.ts (Claude Code 2.1.332,
 * Codex 0.171.0). Both go on with the session's conversation (kept under HOME,
 * in the workspace), may change the workspace without asking (nobody is there
 * to answer; the sandbox is the boundary), and take the input after `--`, so
 * an input that starts with `-` is not read as an option.
 *
 * - `claude-code`: `claude -p --continue` with `--permission-mode acceptEdits`
 *   (file edits and commands in the workspace; `bypassPermissions` refuses to
 *   run as root). Reads `ANTHROPIC_BASE_URL`: the upstream needs `api: "anthropic"`.
 * - `codex`: `codex exec resume --last`, run through `sh` because Codex ignores
 *   `OPENAI_BASE_URL`: `-c` defines a provider at that URL (Responses API, so
 *   the upstream needs `api: "openai"` and `/responses`). Codex's own sandbox
 *   cannot start inside bubblewrap (nested namespaces are refused), hence
 *   `--sandbox danger-full-access`; its analytics and plugin sync, which call
 *   chatgpt.com and api.github.com, are off.
 */
export const COMMAND_PRESETS = {
  "claude-code": {
    argv: [
      "claude",
      "-p",
      "--continue",
      "--output-format",
      "text",
      "--permission-mode",
      "acceptEdits",
      "--",
      "{input}",
    ],
    input: "arg",
  },
  codex: {
    argv: [
      "sh",
      "-c",
      [
        "exec codex exec --skip-git-repo-check --sandbox danger-full-access",
        "-c model_provider=clawfleet",
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
        '-c "model_providers.clawfleet={name=\\"clawfleet\\",base_url=\\"${OPENAI_BASE_URL:?the codex preset needs an upstream with api openai}\\",env_key=\\"OPENAI_API_KEY\\",wire_api=\\"responses\\"}"',
        "-c analytics.enabled=false -c features.plugins=false",
        'resume --last -- "$1"',
      ].join(" "),
      "codex",
      "{input}",
    ],
    input: "arg",
  },
} as const;

export const CommandProfileSchema = z
  .strictObject({
    argv: z.array(z.string().min(1)).min(1).optional(),
    preset: z.enum(["claude-code", "codex"]).optional(),
    input: z.enum(["arg", "stdin", "file"]).optional(),
    inputFile: RelativePath.default(".clawfleet/input.txt"),
    outputFile: RelativePath.optional(),
    maxOutputBytes: z
      .number()
      .int()
      .min(1)
      .default(1024 * 1024),
    env: z.record(EnvName, z.string()).default({}),
    passEnv: z
      .array(EnvName.refine((n) => !CREDENTIAL_NAME.test(n), "looks like a credential"))
      .default([]),
    readOnlyPaths: z.array(z.string().startsWith("/")).default([]),
  })
  .refine((c) => c.argv !== undefined || c.preset !== undefined, "give argv or a preset")
  .transform((c) => {
    const preset = c.preset ? COMMAND_PRESETS[c.preset] : undefined;
    return {
      ...c,
      argv: c.argv ?? [...preset!.argv],
      input: c.input ?? preset?.input ?? "stdin",
    };
  });

export const OpenClawProfileSchema = z.strictObject({
  runtimesDir: z.string().min(1).optional(),
  readyTimeoutMs: z.number().int().min(1000).default(120_000),
  recycleRssMb: z.number().int().min(64).default(1800),
  contextWindow: z.number().int().min(1024).default(128_000),
  maxTokens: z.number().int().min(1).default(4096),
});

/** A command profile with every default applied (argv and input filled in from a preset). */
export type CommandProfile = Readonly<z.output<typeof CommandProfileSchema>>;
/** OpenClaw settings with every default applied. */
export type OpenClawProfile = Readonly<z.output<typeof OpenClawProfileSchema>>;
/** A model binding with every default applied. */
export type ModelBinding = Readonly<z.output<typeof ModelBindingSchema>>;

/** The image `clawfleet image build --runtime openclaw` makes, and OpenClaw pools run by default. */
export const OPENCLAW_AGENT_IMAGE = "clawfleet-agent-openclaw:local";

/**
 * Defaults that differ by runtime, applied under what the profile sets. OpenClaw
 * needs ~10 s to become ready and ~1.35 GB at its peak (measured:
 * docs/plans/real-agents.md), so it gets a longer start and a bigger container.
 */
export const RUNTIME_PROFILE_DEFAULTS: Readonly<
  Record<
    RuntimeName,
    {
      startTimeoutMs?: number;
      docker?: { image?: string; memoryMb?: number; pids?: number; tmpfsMb?: number };
    }
  >
> = {
  scripted: {},
  command: {},
  openclaw: {
    startTimeoutMs: 180_000,
    docker: {
      image: OPENCLAW_AGENT_IMAGE,
      memoryMb: 2048,
      pids: 512,
      tmpfsMb: 512,
    },
  },
};
