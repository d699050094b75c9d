/**
 * `clawfleet runtime install openclaw`: puts the pinned Node 24 and OpenClaw
 * into `<runtimesDir>/openclaw-<version>/` with the system npm.
 *
 * Atomic and idempotent: everything goes into a fresh temporary directory
 * beside the target, the marker is written last, and one rename publishes the
 * whole. So the target either does not exist or is complete; a crashed install
 * leaves only a temporary directory, which a later install removes once it is
 * old. Two installs racing both finish; the second rename fails on the
 * existing target and that install reports "already installed".
 *
 * npm runs with Node 24 first on PATH (OpenClaw's own scripts would check the
 * Node they run on) and with install scripts off: npm 11 already skips them
 * for these packages, OpenClaw works without them (docs/plans/real-agents.md),
 * and an older npm must not behave differently.
 */
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { ClawfleetError, ErrorCodes } from "../../errors.js";
import {
  defaultRuntimesDir,
  type InstalledOpenClaw,
  locateOpenClaw,
  nodePackageFor,
  OPENCLAW_BIN,
  OPENCLAW_NODE_VERSION,
  OPENCLAW_VERSION,
  openclawDir,
  RUNTIME_MARKER,
  type RuntimeMarker,
  readMarker,
} from "./openclaw-runtime.js";

/** Options of {@link installOpenClaw}. */
export interface InstallOptions {
  /** Default {@link defaultRuntimesDir}. */
  readonly runtimesDir?: string;
  /** One line per step, for a person watching (stderr in the CLI). */
  readonly progress?: (line: string) => void;
  /** The npm program. Default `npm` from PATH. */
  readonly npm?: string;
  /** Environment npm starts from. Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
}

/** What {@link installOpenClaw} did. */
export interface InstallResult extends InstalledOpenClaw {
  /** True when the install was there already and nothing was done. */
  readonly alreadyInstalled: boolean;
}

/** A temporary directory older than this belongs to a crashed install. */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** Lines of npm's output kept for an error message. */
const TAIL_LINES = 20;

/** Installs the pinned OpenClaw (see the module comment); resolves with where it is. */
export async function installOpenClaw(options: InstallOptions = {}): Promise<InstallResult> {
  const progress = options.progress ?? (() => {});
  const runtimesDir = path.resolve(options.runtimesDir ?? defaultRuntimesDir(options.env));
  const dir = openclawDir(runtimesDir);
  if ((await readMarker(dir)) !== null) {
    const found = await locateOpenClaw(runtimesDir);
    progress(`OpenClaw ${found.version} is already installed in ${dir}`);
    return { ...found, alreadyInstalled: true };
  }
  const nodePackage = nodePackageFor();
  await mkdir(runtimesDir, { recursive: true });
  await removeLeftovers(runtimesDir, dir);
  const tmp = await mkdtemp(path.join(runtimesDir, `.openclaw-${OPENCLAW_VERSION}.tmp-`));
  const started = Date.now();
  try {
    await writeFile(
      path.join(tmp, "package.json"),
      `${JSON.stringify({ name: "clawfleet-openclaw-runtime", private: true }, null, 2)}\n`,
    );
    const npm = (args: string[], env: NodeJS.ProcessEnv) =>
      runNpm(options.npm ?? "npm", args, { cwd: tmp, env, progress });
    const flags = ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact"];
    const baseEnv: NodeJS.ProcessEnv = {
      ...(options.env ?? process.env),
      npm_config_update_notifier: "false",
    };
    progress(`installing Node ${OPENCLAW_NODE_VERSION} (${nodePackage}) into ${dir}`);
    await npm([...flags, `${nodePackage}@${OPENCLAW_NODE_VERSION}`], baseEnv);
    const nodeBin = path.dirname(path.join(tmp, OPENCLAW_BIN.node));
    progress(`installing OpenClaw ${OPENCLAW_VERSION} (about 650 MB; ~30 s on a fast link)`);
    await npm([...flags, `openclaw@${OPENCLAW_VERSION}`], {
      ...baseEnv,
      PATH: [nodeBin, baseEnv.PATH ?? ""].join(path.delimiter),
      OPENCLAW_DISABLE_BUNDLED_PLUGIN_POSTINSTALL: "1",
    });
    const marker: RuntimeMarker = {
      runtime: "openclaw",
      version: OPENCLAW_VERSION,
      node: OPENCLAW_NODE_VERSION,
      nodePackage,
      installedAt: new Date().toISOString(),
    };
    await writeFile(path.join(tmp, RUNTIME_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
    // mkdtemp makes it private; sandboxed agents (another uid in a container) must read it.
    await chmod(tmp, 0o755);
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== "EEXIST" && code !== "ENOTEMPTY") || (await readMarker(dir)) === null)
        throw err;
      // Another install finished first: theirs is as good as ours.
      await rm(tmp, { recursive: true, force: true });
      progress(`OpenClaw ${OPENCLAW_VERSION} was installed meanwhile in ${dir}`);
      return { ...(await locateOpenClaw(runtimesDir)), alreadyInstalled: true };
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  // Checks the bin links resolve, so a broken package fails here, not in a pool.
  const found = await locateOpenClaw(runtimesDir);
  progress(
    `installed OpenClaw ${found.version} on Node ${found.nodeVersion} in ${
      Math.round((Date.now() - started) / 100) / 10
    } s: ${dir}`,
  );
  return { ...found, alreadyInstalled: false };
}

/**
 * Removes what earlier installs left: temporary directories of crashed ones
 * (once old: a young one may be a concurrent install at work) and a target
 * without a marker (not an install; nothing can be using it).
 */
async function removeLeftovers(runtimesDir: string, dir: string): Promise<void> {
  const prefix = `.openclaw-${OPENCLAW_VERSION}.tmp-`;
  for (const name of await readdir(runtimesDir)) {
    if (!name.startsWith(prefix)) continue;
    const p = path.join(runtimesDir, name);
    const st = await stat(p).catch(() => null);
    if (st !== null && Date.now() - st.mtimeMs > STALE_TEMP_MS)
      await rm(p, { recursive: true, force: true });
  }
  const st = await stat(dir).catch(() => null);
  if (st !== null) await rm(dir, { recursive: true, force: true });
}

/** Runs npm, passing its output on as progress lines; fails with the tail of it. */
function runNpm(
  npm: string,
  args: readonly string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; progress: (line: string) => void },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(npm, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const tail: string[] = [];
    let partial = "";
    const onData = (chunk: Buffer) => {
      const lines = (partial + chunk.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (line.trim() === "") continue;
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
        opts.progress(`npm: ${line}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (err) => {
      const why =
        (err as NodeJS.ErrnoException).code === "ENOENT" ? `${npm} is not on PATH` : err.message;
      reject(new ClawfleetError(ErrorCodes.RUNTIME_NOT_INSTALLED, `cannot run npm: ${why}`));
    });
    child.on("close", (code, signal) => {
      if (code === 0) return resolve();
      if (partial.trim() !== "") tail.push(partial);
      reject(
        new ClawfleetError(
          ErrorCodes.RUNTIME_NOT_INSTALLED,
          `npm ${args.join(" ")} failed (${signal ?? `exit ${code}`}): ${tail.join("\n")}`,
          // A registry or network hiccup may pass; a missing package will not, but costs one try.
          { retryable: true },
        ),
      );
    });
  });
}
