/**
 * The script language of the reference scripted agent: a turn whose input is a
 * JSON object `{"script":[...]}` runs its ops in order, one checkpointed step
 * each; any other input is plain text. Also the workspace path rules every op
 * that touches a file must pass (see DESIGN.md, "Workspace rules").
 */
import { lstat, realpath } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ErrorCodes, TerminalError } from "../errors.js";

/** Error code of a path that is absolute, unnormalised, or leaves the workspace. */
export const PATH_ESCAPE = "PATH_ESCAPE";

/** Most ops one script may hold; a bound keeps a bad input from pinning an agent. */
export const MAX_SCRIPT_OPS = 10_000;

const PathField = z.string().min(1).max(4096);

const WriteOpSchema = z.strictObject({
  op: z.literal("write"),
  path: PathField,
  text: z.string(),
  append: z.boolean().optional(),
});
const ReadOpSchema = z.strictObject({ op: z.literal("read"), path: PathField });
const SleepOpSchema = z.strictObject({
  op: z.literal("sleep"),
  ms: z
    .number()
    .int()
    .min(0)
    .max(24 * 3600 * 1000),
});
/**
 * Waits until the workspace file `path` exists: a barrier whoever holds the
 * workspace releases (a test keeps a turn busy exactly as long as it needs).
 * The turn's timeout bounds it; a cancel ends it.
 */
const WaitOpSchema = z.strictObject({ op: z.literal("wait"), path: PathField });
const EffectOpSchema = z.strictObject({
  op: z.literal("effect"),
  // Same rule as the protocol's effect kind, so a script cannot make the agent send an invalid line.
  kind: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 characters of [A-Za-z0-9_-]"),
  payload: z.unknown(),
});
const CrashOpSchema = z.strictObject({
  op: z.literal("crash"),
  mode: z.enum(["exit", "hang"]),
  /** The attempt on which the crash happens; other attempts pass the op. Default 1. */
  onAttempt: z.number().int().positive().optional(),
});
const AllocOpSchema = z.strictObject({
  op: z.literal("alloc"),
  mb: z.number().int().min(1).max(16_384),
});
const ReplyOpSchema = z.strictObject({ op: z.literal("reply"), text: z.string() });
/**
 * Runs SQL on a SQLite database in the workspace (WAL mode; opened on first use
 * and held open until the turn ends, like a real agent's state database).
 * `query` rows become the step's output.
 */
const SqliteOpSchema = z
  .strictObject({
    op: z.literal("sqlite"),
    db: PathField,
    exec: z.string().optional(),
    query: z.string().optional(),
  })
  .refine(
    (o) => (o.exec === undefined) !== (o.query === undefined),
    "give exactly one of exec or query",
  );
/** Replies with the text of one of the turn's behaviour files (empty if it has none by that name). */
const BehaviorOpSchema = z.strictObject({
  op: z.literal("behavior"),
  name: z.string().min(1).max(128),
});

const OP_SCHEMAS = {
  write: WriteOpSchema,
  read: ReadOpSchema,
  sleep: SleepOpSchema,
  wait: WaitOpSchema,
  effect: EffectOpSchema,
  crash: CrashOpSchema,
  alloc: AllocOpSchema,
  reply: ReplyOpSchema,
  behavior: BehaviorOpSchema,
  sqlite: SqliteOpSchema,
} as const;

/** Names of the ops a script may use. */
export type ScriptOpName = keyof typeof OP_SCHEMAS;

/** The op names, in documentation order. */
export const SCRIPT_OP_NAMES = Object.keys(OP_SCHEMAS) as readonly ScriptOpName[];

/** Schema of one op; `parseAgentInput` gives sharper errors than parsing with it directly. */
export const ScriptOpSchema = z.discriminatedUnion("op", [
  WriteOpSchema,
  ReadOpSchema,
  SleepOpSchema,
  WaitOpSchema,
  EffectOpSchema,
  CrashOpSchema,
  AllocOpSchema,
  ReplyOpSchema,
  BehaviorOpSchema,
  SqliteOpSchema,
]);

/** One validated op of a script. */
export type ScriptOp = z.output<typeof ScriptOpSchema>;

/** Schema of a whole script input. */
export const ScriptInputSchema = z.object({ script: z.array(ScriptOpSchema).max(MAX_SCRIPT_OPS) });

/** What a turn's input turned out to be. */
export type AgentInput =
  | { kind: "text"; text: string }
  /**
   * `checkpoint: false` (the script's `"checkpoint": false`) runs the ops without
   * reporting steps, as a one-shot CLI agent would: nothing is checkpointed, and a
   * resumed attempt runs the whole script again.
   */
  | { kind: "script"; ops: ScriptOp[]; checkpoint: boolean };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isOpName(name: string): name is ScriptOpName {
  return Object.hasOwn(OP_SCHEMAS, name);
}

/**
 * Classifies a turn input. Anything that is not a JSON object with a `script`
 * key is plain text, so ordinary chat messages never trip the script parser.
 * Throws {@link TerminalError} `UNKNOWN_OP` or `INVALID_SCRIPT`; messages name
 * the op by its 1-based step number and its array index.
 */
export function parseAgentInput(input: string): AgentInput {
  let json: unknown;
  try {
    json = JSON.parse(input);
  } catch {
    return { kind: "text", text: input };
  }
  if (!isRecord(json) || !Object.hasOwn(json, "script")) return { kind: "text", text: input };
  const script = json.script;
  if (!Array.isArray(script)) {
    throw new TerminalError(ErrorCodes.INVALID_SCRIPT, "script must be an array of ops");
  }
  if (script.length > MAX_SCRIPT_OPS) {
    throw new TerminalError(
      ErrorCodes.INVALID_SCRIPT,
      `script has ${script.length} ops; at most ${MAX_SCRIPT_OPS} are allowed`,
    );
  }
  if (Object.hasOwn(json, "checkpoint") && typeof json.checkpoint !== "boolean") {
    throw new TerminalError(ErrorCodes.INVALID_SCRIPT, '"checkpoint" must be true or false');
  }
  const ops = script.map((raw: unknown, index) => parseOp(raw, index));
  return { kind: "script", ops, checkpoint: json.checkpoint !== false };
}

function parseOp(raw: unknown, index: number): ScriptOp {
  const where = `op ${index + 1} (script[${index}])`;
  if (!isRecord(raw))
    throw new TerminalError(ErrorCodes.INVALID_SCRIPT, `${where}: must be an object`);
  const name = raw.op;
  if (typeof name !== "string") {
    throw new TerminalError(ErrorCodes.INVALID_SCRIPT, `${where}: "op" must be a string`);
  }
  if (!isOpName(name)) {
    throw new TerminalError(
      ErrorCodes.UNKNOWN_OP,
      `${where}: unknown op "${name}"; known ops: ${SCRIPT_OP_NAMES.join(", ")}`,
    );
  }
  const parsed = OP_SCHEMAS[name].safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => (i.path.length > 0 ? `${i.path.join(".")}: ${i.message}` : i.message))
      .join("; ");
    throw new TerminalError(ErrorCodes.INVALID_SCRIPT, `${where} "${name}": ${problems}`);
  }
  return parsed.data;
}

function pathEscape(relPath: string, why: string): TerminalError {
  return new TerminalError(PATH_ESCAPE, `path ${JSON.stringify(relPath)} ${why}`);
}

/**
 * Lexical path rules: relative, POSIX-normalised, no `..` segment, no NUL.
 * Returns the path unchanged; throws {@link TerminalError} `PATH_ESCAPE`.
 */
export function checkRelativePath(relPath: string): string {
  if (relPath.length === 0) throw pathEscape(relPath, "is empty");
  if (relPath.includes("\0")) throw pathEscape(relPath, "contains a NUL byte");
  if (relPath.startsWith("/") || relPath.startsWith("\\") || path.isAbsolute(relPath)) {
    throw pathEscape(relPath, "is absolute");
  }
  if (relPath.split(/[/\\]/).includes("..")) throw pathEscape(relPath, "has a '..' segment");
  const normal = path.posix.normalize(relPath);
  if (normal !== relPath || normal === "." || normal.endsWith("/")) {
    throw pathEscape(relPath, "is not normalised");
  }
  return relPath;
}

function isInside(root: string, candidate: string): boolean {
  const rel = path.relative(root, candidate);
  return rel !== ".." && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

async function realpathOrUndefined(p: string): Promise<string | undefined> {
  try {
    return await realpath(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function existsNoFollow(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * Resolves `relPath` inside `workspace` after {@link checkRelativePath}, and
 * checks that symlinks do not lead out: the deepest existing ancestor (or the
 * path itself) is resolved with `realpath` and must lie inside the workspace's
 * real path. A dangling symlink on the way counts as an escape, since writing
 * through it would create a file wherever it points. Returns the resolved
 * absolute path to use for the file operation.
 */
export async function resolveWorkspacePath(workspace: string, relPath: string): Promise<string> {
  checkRelativePath(relPath);
  const root = await realpath(workspace);
  const rest: string[] = [];
  let probe = path.join(root, relPath);
  for (;;) {
    const real = await realpathOrUndefined(probe);
    if (real !== undefined) {
      if (!isInside(root, real)) throw pathEscape(relPath, "leads out through a symlink");
      return rest.length === 0 ? real : path.join(real, ...rest.reverse());
    }
    if (await existsNoFollow(probe)) throw pathEscape(relPath, "runs through a dangling symlink");
    rest.push(path.basename(probe));
    const parent = path.dirname(probe);
    // The root exists (realpath succeeded above), so the walk stops there at the latest.
    if (parent === probe) throw pathEscape(relPath, "has no existing ancestor");
    probe = parent;
  }
}
