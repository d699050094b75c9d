/**
 * Finds nats-server on this machine and, when asked, installs it with apt-get: the
 * binary the embedded server of `clawfleet up` and every test runs (see
 * {@link ensureNatsServer}).
 */
import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import path from "node:path";
import { NatsServerError } from "../../errors.js";
import { type Logger, silentLogger } from "../../logger.js";

/** Directories searched after `PATH`: Debian puts nats-server in /usr/sbin, often not on PATH. */
const EXTRA_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"] as const;
const RELEASES_URL = "https://github.com/nats-io/nats-server/releases";

/** Where {@link findNatsServer} looks; the defaults are the real environment. */
export interface FindNatsServerOptions {
  /** A `PATH`-style list of directories. Default `process.env.PATH`. */
  pathEnv?: string;
  /** Directories searched after `pathEnv`. Default /usr/sbin, /usr/local/sbin, /usr/local/bin. */
  dirs?: readonly string[];
}

/** The absolute path of an executable nats-server, or null when none is installed. */
export function findNatsServer(options: FindNatsServerOptions = {}): string | null {
  return findExecutable("nats-server", options.pathEnv ?? process.env.PATH ?? "", [
    ...(options.dirs ?? EXTRA_DIRS),
  ]);
}

/** How to install nats-server on this machine, as one sentence for an error message. */
export function installHint(): string {
  if (isDebian()) {
    return "Install it with `apt-get install -y nats-server` (as root).";
  }
  return `Download a nats-server release for this platform from ${RELEASES_URL} and put the binary on PATH.`;
}

/** Options of {@link ensureNatsServer}. */
export interface EnsureNatsServerOptions {
  /** Install with apt-get when missing (root on Debian only). Default false. */
  autoInstall?: boolean;
  logger?: Logger;
  search?: FindNatsServerOptions;
}

/**
 * The path of nats-server, installing it first when it is missing, `autoInstall` is set
 * and we are root on Debian. Throws {@link NatsServerError} carrying the install hint.
 */
export async function ensureNatsServer(options: EnsureNatsServerOptions = {}): Promise<string> {
  const logger = options.logger ?? silentLogger;
  const found = findNatsServer(options.search);
  if (found !== null) return found;
  const aptGet = findExecutable("apt-get", process.env.PATH ?? "", ["/usr/bin", "/bin"]);
  const isRoot = process.getuid?.() === 0;
  if (!options.autoInstall || aptGet === null || !isRoot) {
    const why = !options.autoInstall ? "" : " (automatic install needs root and apt-get)";
    throw new NatsServerError(`nats-server is not installed${why}. ${installHint()}`);
  }
  logger.info({ command: "apt-get install -y nats-server" }, "nats-server missing; installing it");
  let result = await runCommand(aptGet, ["install", "-y", "nats-server"]);
  if (result.code !== 0) {
    // A fresh image has no package lists yet ("Unable to locate package").
    logger.info({ command: "apt-get update" }, "apt-get install failed; updating package lists");
    await runCommand(aptGet, ["update"]);
    result = await runCommand(aptGet, ["install", "-y", "nats-server"]);
  }
  const installed = findNatsServer(options.search);
  if (result.code !== 0 || installed === null) {
    throw new NatsServerError(
      `apt-get install -y nats-server failed (exit ${result.code}): ${result.tail.join(" | ")}. ${installHint()}`,
    );
  }
  logger.info({ path: installed }, "nats-server installed");
  return installed;
}

type CommandResult = { code: number | null; tail: string[] };

function runCommand(command: string, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    let output = "";
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.once("error", (err) => resolve({ code: null, tail: [err.message] }));
    child.once("close", (code) => {
      const lines = output.split("\n").filter((l) => l.trim() !== "");
      resolve({ code, tail: lines.slice(-5) });
    });
  });
}

/** The first executable file `name` on `pathEnv` (a PATH string), then in `extraDirs`; or null. */
export function findExecutable(
  name: string,
  pathEnv: string,
  extraDirs: readonly string[],
): string | null {
  const dirs = [...pathEnv.split(path.delimiter).filter(Boolean), ...extraDirs];
  for (const dir of dirs) {
    const candidate = path.resolve(dir, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return null;
}

function isDebian(): boolean {
  return existsSync("/etc/debian_version") || findExecutable("apt-get", "", ["/usr/bin"]) !== null;
}
