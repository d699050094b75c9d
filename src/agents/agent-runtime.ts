/**
 * What the host knows of an agent runtime beyond the protocol: where its
 * session config lives and what makes it valid, and how it judges behaviour
 * files. Healing tier 3 uses both to repair a session (session-repair.ts).
 */
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import { openclawRuntime } from "./openclaw-config.js";
import {
  checkScriptedBehaviorFile,
  SCRIPTED_CONFIG_FILE,
  ScriptedConfigSchema,
} from "./scripted-config.js";

/** A runtime's session config: a JSON object in the workspace, each field with a default. */
export interface RuntimeConfigSpec {
  /** Path relative to the workspace. */
  readonly file: string;
  /** One schema per field; a field that fails its own is reset to its default. */
  readonly schema: z.ZodObject;
}

/** The host's view of one agent runtime. */
export interface AgentRuntime {
  readonly name: string;
  /** Its session config, when it has one. */
  readonly config?: RuntimeConfigSpec;
  /** Judges one behaviour file: what is wrong with it, or undefined when it is fine. */
  checkBehaviorFile(name: string, text: string): string | undefined;
  /**
   * Workspace paths its snapshots leave out beyond SQLite's live side files
   * (exclude patterns: workspace-exclude.ts), e.g. lock and scratch databases.
   */
  readonly snapshotExclude?: readonly string[];
}

/** The reference scripted agent. */
export const scriptedRuntime: AgentRuntime = {
  name: "scripted",
  config: { file: SCRIPTED_CONFIG_FILE, schema: ScriptedConfigSchema },
  checkBehaviorFile: checkScriptedBehaviorFile,
};

/** Behaviour files a CLI agent reads from its workspace: any text, bounded in size. */
const MAX_BEHAVIOR_BYTES = 256 * 1024;

/**
 * Any CLI agent run once per turn: clawfleet manages no config of its own in
 * the workspace, and behaviour files are the agent's business (size-capped).
 */
export const commandRuntime: AgentRuntime = {
  name: "command",
  checkBehaviorFile: (name, text) =>
    Buffer.byteLength(text) > MAX_BEHAVIOR_BYTES
      ? `${name} is over ${MAX_BEHAVIOR_BYTES} bytes`
      : undefined,
};

const RUNTIMES: Readonly<Record<string, AgentRuntime>> = {
  scripted: scriptedRuntime,
  command: commandRuntime,
  openclaw: openclawRuntime,
};

/** The runtime named `name` (pool profiles name one; options validation keeps them known). */
export function agentRuntime(name: string): AgentRuntime {
  const runtime = RUNTIMES[name];
  if (!runtime) throw new ConfigError(`unknown agent runtime: ${name}`);
  return runtime;
}
