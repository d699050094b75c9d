/**
 * A throwaway redis-server for the BullMQ baseline: Debian's package, on a free loopback
 * port, with persistence off (`--save "" --appendonly no`) and its dir in a temp dir.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { promisify } from "node:util";
import { findExecutable } from "../../src/adapters/nats/nats-server-binary.js";

const run = promisify(execFile);
const INSTALL = "apt-get install -y redis-server";
const SEARCH_DIRS = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"];

/** A running redis-server. */
export interface RedisServer {
  readonly host: string;
  readonly port: number;
  readonly pid: number;
  /** SIGTERM, SIGKILL after 5 s; resolves once the process is gone. Idempotent. */
  stop(): Promise<void>;
}

/** The path of redis-server, or null. */
export function findRedisServer(): string | null {
  return findExecutable("redis-server", process.env.PATH ?? "", SEARCH_DIRS);
}

/**
 * The path of redis-server. When it is missing and we are root on Debian, installs it
 * with apt-get (saying so on stderr); otherwise throws with the exact install command.
 */
export async function ensureRedisServer(): Promise<string> {
  const found = findRedisServer();
  if (found !== null) return found;
  const debian = existsSync("/etc/debian_version");
  const root = process.getuid?.() === 0;
  if (!debian || !root) {
    throw new Error(
      debian
        ? `redis-server is not installed. Install it with \`sudo ${INSTALL}\` (Debian's package), then run the bench again.`
        : "redis-server is not installed. Install Redis ≥ 6.2 (for example your distribution's `redis-server` package) so `redis-server` is on PATH, then run the bench again.",
    );
  }
  process.stderr.write(
    `redis-server is missing; installing it as root: apt-get update && ${INSTALL}\n`,
  );
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  try {
    await run("apt-get", ["update"], { env, maxBuffer: 16 << 20 });
    await run("apt-get", ["install", "-y", "redis-server"], { env, maxBuffer: 16 << 20 });
  } catch (err) {
    throw new Error(
      `\`${INSTALL}\` failed: ${(err as Error).message.split("\n").slice(-3).join(" ")}`,
    );
  }
  const installed = findRedisServer();
  if (installed === null) throw new Error(`\`${INSTALL}\` ran but redis-server is still missing`);
  process.stderr.write(`installed ${installed}\n`);
  return installed;
}

/** `redis-server --version`'s `v=` field, or null. */
export async function redisVersion(binary: string): Promise<string | null> {
  try {
    const { stdout } = await run(binary, ["--version"], { timeout: 5_000 });
    return /v=(\S+)/.exec(stdout)?.[1] ?? stdout.trim();
  } catch {
    return null;
  }
}

/** Starts redis-server in `dir` on a free loopback port (a few tries if the port is taken). */
export async function startRedisServer(binary: string, dir: string): Promise<RedisServer> {
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await startOnPort(binary, dir, port);
    } catch (err) {
      lastError = err as Error;
      if (!/Address already in use/i.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error("redis-server did not start");
}

function startOnPort(binary: string, dir: string, port: number): Promise<RedisServer> {
  const host = "127.0.0.1";
  const args = [
    ...["--port", String(port), "--bind", host, "--protected-mode", "yes"],
    ...["--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"],
    ...["--logfile", "", "--loglevel", "notice"],
  ];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const exited = new Promise<void>((resolve) => {
    child.once("close", () => {
      process.off("exit", killOnExit);
      resolve();
    });
  });
  let output = "";
  let settled = false;
  return new Promise<RedisServer>((resolve, reject) => {
    const timer = setTimeout(() => fail("redis-server did not become ready within 10 s"), 10_000);
    function fail(reason: string) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      const tail = output.trim().split("\n").slice(-5).join(" | ");
      void exited.then(() => reject(new Error(`${reason}; last output: ${tail}`)));
    }
    // Keeps reading (a full pipe would stall the server) and keeps a tail for errors.
    const onData = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-8_000);
      if (!settled && /Ready to accept connections/.test(output)) {
        settled = true;
        clearTimeout(timer);
        resolve({ host, port, pid: child.pid ?? -1, stop: stopper(child, exited) });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("error", (err) => fail(`cannot run ${binary}: ${err.message}`));
    void exited.then(() => fail(`redis-server exited (code ${child.exitCode})`));
  });
}

function stopper(child: ChildProcess, exited: Promise<void>): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };
}

/** A loopback port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}
