/**
 * Where an installed OpenClaw runtime lives and how to find it. One install is
 * a directory `<runtimesDir>/openclaw-<version>/` holding a plain npm prefix:
 * Node 24 (the `node-linux-<arch>` package) and the `openclaw` package, both
 * pinned here, plus a marker file written last by the installer
 * (runtime-install.ts). A directory without a valid marker is not an install.
 *
 * The programs are found through npm's own bin links, `node_modules/.bin/node`
 * and `node_modules/.bin/openclaw`, so the layout is npm's, not ours: the
 * OpenClaw driver inside a sandbox finds them the same way from the runtime
 * directory it is given (openclaw-driver.ts), without importing this module.
 */
import { access, constants, lstat, readdir, readFile, realpath } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { z } from "zod";
import { ClawfleetError, ConfigError, ErrorCodes } from "../../errors.js";

/** The OpenClaw release clawfleet runs (npm `openclaw`). */
export const OPENCLAW_VERSION = "2026.9.6";
/** The Node release OpenClaw runs on (OpenClaw needs ≥ 24.16; npm `node-linux-<arch>`). */
export const OPENCLAW_NODE_VERSION = "24.22.3";

/** The marker file in an install directory, written last. */
export const RUNTIME_MARKER = "clawfleet-runtime.json";

/** What the installer records about one install. */
export const RuntimeMarkerSchema = z.object({
  runtime: z.literal("openclaw"),
  version: z.string().min(1),
  node: z.string().min(1),
  nodePackage: z.string().min(1),
  installedAt: z.string(),
});
export type RuntimeMarker = z.output<typeof RuntimeMarkerSchema>;

/** An installed OpenClaw, as the host sees it. */
export interface InstalledOpenClaw {
  /** The install directory (`<runtimesDir>/openclaw-<version>`): bind this read-only into sandboxes. */
  readonly dir: string;
  /** Absolute path of the Node 24 binary (symlinks resolved). */
  readonly node: string;
  /** Absolute path of OpenClaw's `openclaw.mjs` (symlinks resolved). */
  readonly entry: string;
  /** OpenClaw's version. */
  readonly version: string;
  /** Node's version. */
  readonly nodeVersion: string;
}

/** `$CLAWFLEET_RUNTIMES_DIR`, else `~/.cache/clawfleet/runtimes`. */
export function defaultRuntimesDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.CLAWFLEET_RUNTIMES_DIR;
  if (fromEnv !== undefined && fromEnv !== "") return path.resolve(fromEnv);
  return path.join(homedir(), ".cache", "clawfleet", "runtimes");
}

/** The npm package that carries Node for this CPU; a ConfigError elsewhere. */
export function nodePackageFor(platform: string = process.platform, arch: string = process.arch) {
  if (platform === "linux" && (arch === "x64" || arch === "arm64")) return `node-linux-${arch}`;
  throw new ConfigError(
    `OpenClaw runtimes are built for Linux on x64 or arm64, not ${platform}-${arch}`,
  );
}

/** The install directory of the pinned OpenClaw under `runtimesDir`. */
export function openclawDir(runtimesDir: string): string {
  return path.join(path.resolve(runtimesDir), `openclaw-${OPENCLAW_VERSION}`);
}

/** The command that installs the pinned OpenClaw into `runtimesDir`, for messages. */
export function installCommand(runtimesDir?: string): string {
  return runtimesDir === undefined
    ? "clawfleet runtime install openclaw"
    : `clawfleet runtime install openclaw --dir ${runtimesDir}`;
}

/** The marker of the install in `dir`; null when there is none or it is unreadable. */
export async function readMarker(dir: string): Promise<RuntimeMarker | null> {
  let text: string;
  try {
    text = await readFile(path.join(dir, RUNTIME_MARKER), "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw err;
  }
  try {
    const parsed = RuntimeMarkerSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    // A marker that does not parse is no marker: the install never finished.
    return null;
  }
}

/** The npm bin links of an install, relative to its directory. */
export const OPENCLAW_BIN = {
  node: path.join("node_modules", ".bin", "node"),
  openclaw: path.join("node_modules", ".bin", "openclaw"),
} as const;

/**
 * The pinned OpenClaw installed under `runtimesDir` (default
 * {@link defaultRuntimesDir}); throws `RUNTIME_NOT_INSTALLED`, naming the
 * install command, when it is not there or incomplete.
 */
export async function locateOpenClaw(
  runtimesDir: string = defaultRuntimesDir(),
): Promise<InstalledOpenClaw> {
  const dir = openclawDir(runtimesDir);
  const missing = (why: string) =>
    new ClawfleetError(
      ErrorCodes.RUNTIME_NOT_INSTALLED,
      `OpenClaw ${OPENCLAW_VERSION} ${why} in ${dir}; install it with: ${installCommand(runtimesDir)}`,
    );
  const marker = await readMarker(dir);
  if (marker === null) throw missing("is not installed");
  let node: string;
  let entry: string;
  try {
    node = await realpath(path.join(dir, OPENCLAW_BIN.node));
    entry = await realpath(path.join(dir, OPENCLAW_BIN.openclaw));
    await access(node, constants.X_OK);
  } catch (err) {
    throw missing(`is incomplete (${(err as Error).message})`);
  }
  return { dir, node, entry, version: marker.version, nodeVersion: marker.node };
}

/** One runtime found by {@link listRuntimes}. */
export interface RuntimeListing {
  readonly runtime: string;
  readonly version: string;
  readonly node: string;
  readonly dir: string;
  readonly installedAt: string;
  /** Bytes on disk (file sizes summed). */
  readonly bytes: number;
}

/** Every finished install under `runtimesDir` (in-progress and broken ones are left out). */
export async function listRuntimes(runtimesDir: string): Promise<RuntimeListing[]> {
  let names: string[];
  try {
    names = await readdir(runtimesDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const out: RuntimeListing[] = [];
  for (const name of names.sort()) {
    if (name.startsWith(".")) continue;
    const dir = path.join(runtimesDir, name);
    const marker = await readMarker(dir);
    if (marker === null) continue;
    out.push({
      runtime: marker.runtime,
      version: marker.version,
      node: marker.node,
      dir,
      installedAt: marker.installedAt,
      bytes: await treeBytes(dir),
    });
  }
  return out;
}

/** Sum of the sizes of the regular files under `dir` (symlinks not followed). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  for (const e of entries) {
    if (!e.isFile()) continue;
    total += (await lstat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}
