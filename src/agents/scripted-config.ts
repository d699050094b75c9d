/**
 * The reference agent's session config: `agent.json` in the workspace, read at
 * the start of every turn. Like a real agent with a broken config file, the
 * scripted agent will not run a turn with an invalid one: it exits (code 78,
 * EX_CONFIG), so a bad config written by a turn that itself succeeded climbs
 * the healing ladder until tier 3 repairs it (see session-repair.ts).
 *
 * Its behaviour files get the same treatment: a `*.json` behaviour file that
 * does not parse, or any file holding a NUL character, stops the agent.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { MAX_SCRIPT_OPS } from "./scripted-script.js";

/** The session config file, relative to the workspace. */
export const SCRIPTED_CONFIG_FILE = "agent.json";

/** Exit code of an agent that refuses to run with an invalid config (sysexits EX_CONFIG). */
export const EXIT_CONFIG = 78;

/**
 * The config's fields, each with its default. Unknown fields are kept (another
 * version of the agent may know them) and never judged.
 */
export const ScriptedConfigSchema = z.looseObject({
  /** Put before every plain-text reply. Default none. */
  replyPrefix: z.string().max(256).default(""),
  /** Most ops one script may run in this session. Default {@link MAX_SCRIPT_OPS}. */
  maxSteps: z.number().int().min(1).max(MAX_SCRIPT_OPS).default(MAX_SCRIPT_OPS),
});
/** A valid config, defaults filled in. */
export type ScriptedConfig = z.output<typeof ScriptedConfigSchema>;

/** A behaviour file's text: never a NUL (a binary file pasted by mistake). */
const BehaviorText = z.string().refine((t) => !t.includes("\u0000"), "contains a NUL character");
const JsonText = BehaviorText.refine((t) => {
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
}, "is not valid JSON");

/** The scripted agent's rule for one behaviour file: a problem, or undefined when it is fine. */
export function checkScriptedBehaviorFile(name: string, text: string): string | undefined {
  const r = (name.endsWith(".json") ? JsonText : BehaviorText).safeParse(text);
  return r.success ? undefined : r.error.issues.map((i) => i.message).join("; ");
}

/** Why a config or behaviour stops the agent. */
export class InvalidAgentConfig extends Error {}

/** Reads `agent.json` (defaults when there is none); throws {@link InvalidAgentConfig} when it is invalid. */
export async function readScriptedConfig(workspace: string): Promise<ScriptedConfig> {
  let text: string;
  try {
    text = await readFile(path.join(workspace, SCRIPTED_CONFIG_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return ScriptedConfigSchema.parse({});
    throw new InvalidAgentConfig(`${SCRIPTED_CONFIG_FILE}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InvalidAgentConfig(`${SCRIPTED_CONFIG_FILE}: ${(err as Error).message}`);
  }
  const parsed = ScriptedConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new InvalidAgentConfig(`${SCRIPTED_CONFIG_FILE}: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

/** Throws {@link InvalidAgentConfig} on the first behaviour file the agent cannot use. */
export function checkScriptedBehavior(files: Readonly<Record<string, string>>): void {
  for (const [name, text] of Object.entries(files)) {
    const problem = checkScriptedBehaviorFile(name, text);
    if (problem) throw new InvalidAgentConfig(`behaviour file ${name} ${problem}`);
  }
}
