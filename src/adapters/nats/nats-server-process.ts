/**
 * Runs nats-server as a child process: the embedded server of `clawfleet up` and of
 * every test. The configuration comes from the template `nats/server.conf` (see
 * {@link renderNatsConfig}); the bound port is read from the ports file nats-server
 * writes, so port 0 can mean "any free port" without a race. Stale-process handling
 * reads `/proc`, so it is Linux-only; elsewhere it does nothing.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { ConfigError, NatsServerError } from "../../errors.js";
import { type Logger, silentLogger } from "../../logger.js";
import { DEFAULT_CONFIG_TEMPLATE, renderNatsConfig } from "./nats-config.js";
import { findNatsServer, installHint } from "./nats-server-binary.js";

/** Lines of output kept for error messages. */
const TAIL_LINES = 15;
const POLL_MS = 10;

/** Options of {@link startNatsServer}. */
export interface StartNatsServerOptions {
  /** JetStream store directory; also holds the rendered config and the ports file. */
  storeDir: string;
  /** Client listen address. Default 127.0.0.1. */
  host?: string;
  /** Client port; 0 picks a free one. Pass a previous handle's port to restart in place. */
  port?: number;
  /** Records the server's pid; a live nats-server named here is stopped before starting. */
  pidFile?: string;
  /** nats-server writes its log here instead of stderr. */
  logFile?: string;
  logger?: Logger;
  /** The nats-server executable. Default {@link findNatsServer}. */
  binary?: string;
  /** Config template path. Default {@link DEFAULT_CONFIG_TEMPLATE}. */
  configTemplate?: string;
  /** HTTP monitoring port (0 picks a free one); no monitoring when unset. */
  monitorPort?: number;
  /** How long the server may take to accept clients. Default 10 000 ms. */
  startTimeoutMs?: number;
  /** How long stop waits after SIGTERM before SIGKILL. Default 5 000 ms. */
  stopGraceMs?: number;
  /**
   * Runs the server in its own process group, so a terminal's Ctrl-C (sent to the whole
   * foreground group) does not reach it: for an owner that stops it itself on SIGINT,
   * after its clients (`clawfleet up`). Default false: it gets its parent's signals.
   */
  ownProcessGroup?: boolean;
}

/**
 * How a nats-server process ended. nats-server 2.9 exits with code 1 even after a
 * requested SIGTERM, so whether an exit was a crash is known only to whoever called stop.
 */
export interface NatsServerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running nats-server that accepts clients. */
export interface NatsServerHandle {
  /** Client URL, e.g. `nats://127.0.0.1:4222`. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly storeDir: string;
  /** The rendered config the server runs with. */
  readonly configFile: string;
  /** Monitoring URL when `monitorPort` was given. */
  readonly monitorUrl: string | undefined;
  /** Settles when the process ends, whether stopped or crashed. */
  readonly exited: Promise<NatsServerExit>;
  /** SIGTERM, then SIGKILL after the grace; idempotent, resolves once the process is gone. */
  stop(): Promise<void>;
}

/**
 * Starts nats-server and resolves once it accepts clients. Every failure is a
 * {@link NatsServerError} carrying the server's own reason and last output: an exit
 * before it is ready fails at once, a server that never accepts clients fails after
 * `startTimeoutMs` (and is killed).
 */
export async function startNatsServer(options: StartNatsServerOptions): Promise<NatsServerHandle> {
  const logger = options.logger ?? silentLogger;
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 0;
  const storeDir = path.resolve(options.storeDir);
  const timeoutMs = options.startTimeoutMs ?? 10_000;
  const graceMs = options.stopGraceMs ?? 5_000;
  checkPort("port", port);
  if (options.monitorPort !== undefined) checkPort("monitorPort", options.monitorPort);
  const binary = options.binary ?? findNatsServer();
  if (binary === null) throw new NatsServerError(`nats-server is not installed. ${installHint()}`);
  if (options.pidFile !== undefined) await stopStaleServer(options.pidFile, graceMs, logger);

  const configFile = path.join(storeDir, "nats-server.conf");
  try {
    const template = await readFile(options.configTemplate ?? DEFAULT_CONFIG_TEMPLATE, "utf8");
    const config = renderNatsConfig(template, {
      HOST: host,
      PORT: port === 0 ? -1 : port,
      STORE_DIR: storeDir,
      PORTS_FILE_DIR: storeDir,
    });
    await mkdir(storeDir, { recursive: true });
    await writeFile(configFile, config);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new NatsServerError(`cannot prepare nats-server in ${storeDir}: ${errText(err)}`, {
      cause: err,
    });
  }

  const args = ["-c", configFile];
  if (options.logFile !== undefined) args.push("-l", path.resolve(options.logFile));
  if (options.monitorPort !== undefined) {
    args.push("-m", String(options.monitorPort === 0 ? -1 : options.monitorPort));
  }
  const child = spawn(binary, args, {
    stdio: ["ignore", "ignore", "pipe"],
    detached: options.ownProcessGroup ?? false,
  });
  // Dying with our process beats leaving a server that holds the port and the store.
  const killOnParentExit = () => child.kill("SIGTERM");
  process.once("exit", killOnParentExit);
  const stderr = collectStderr(child, logger);
  const processExited = watchExit(child);
  let exit: NatsServerExit | undefined;
  void processExited.then((e) => {
    exit = e;
    process.off("exit", killOnParentExit);
  });
  const pid = await spawnedPid(child, processExited);
  if (pid === undefined) {
    throw new NatsServerError(`cannot run ${binary}: ${stderr.spawnError ?? "spawn failed"}`);
  }
  if (options.pidFile !== undefined) await writePidFile(options.pidFile, pid);
  // Settles only after the pid file and ports file are gone, so stop() leaves nothing.
  const exited = processExited.then(async (e) => {
    await cleanupAfterExit(storeDir, pid, options.pidFile).catch(() => {});
    return e;
  });

  let ports: BoundPorts;
  try {
    ports = await waitUntilReady(host, storeDir, pid, timeoutMs, processExited, () => exit);
  } catch (err) {
    if (exit === undefined) child.kill("SIGKILL");
    await exited;
    const lines = [...stderr.lines];
    if (options.logFile !== undefined) lines.push(...(await tailOfFile(options.logFile)));
    throw new NatsServerError(
      `${errText(err)}: ${failureReason(lines)} (pid ${pid}, config ${configFile}); last output:\n${lines.slice(-TAIL_LINES).join("\n")}`,
      { cause: err },
    );
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (exit === undefined) child.kill("SIGTERM");
      const timer = setTimeout(() => {
        logger.warn({ pid, graceMs }, "nats-server ignored SIGTERM; killing it");
        child.kill("SIGKILL");
      }, graceMs);
      await exited;
      clearTimeout(timer);
      logger.info({ pid, storeDir }, "nats-server stopped");
    })();
    return stopping;
  };
  const url = `nats://${urlHost(host)}:${ports.port}`;
  logger.info({ url, pid, storeDir }, "nats-server ready");
  return {
    url,
    port: ports.port,
    pid,
    storeDir,
    configFile,
    monitorUrl: ports.monitorUrl,
    exited,
    stop,
  };
}

/** Polls the ports file until the server accepts clients; throws on exit or timeout. */
async function waitUntilReady(
  host: string,
  dir: string,
  pid: number,
  timeoutMs: number,
  exited: Promise<NatsServerExit>,
  exitOf: () => NatsServerExit | undefined,
): Promise<BoundPorts> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exit = exitOf();
    if (exit !== undefined)
      throw new NatsServerError(`nats-server exited before it was ready (${exitText(exit)})`);
    if (Date.now() > deadline)
      throw new NatsServerError(`nats-server did not accept clients within ${timeoutMs} ms`);
    const found = await readPortsFile(dir, pid);
    if (found !== undefined && (await acceptsClients(host, found.port))) return found;
    await Promise.race([delay(POLL_MS), exited]);
  }
}

/**
 * Stops the nats-server a pid file names, if it still runs: a crashed previous run
 * leaves its server (and its port and store) behind. Any other process is left alone.
 */
async function stopStaleServer(pidFile: string, graceMs: number, logger: Logger): Promise<void> {
  let text: string;
  try {
    text = await readFile(pidFile, "utf8");
  } catch {
    return;
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) {
    logger.warn(
      { pidFile, content: text.slice(0, 40) },
      "ignoring unreadable nats-server pid file",
    );
    return;
  }
  const argv = liveCommand(pid);
  if (argv === null) {
    logger.info({ pidFile, pid }, "previous nats-server is no longer running");
    return;
  }
  if (!path.basename(argv[0] ?? "").startsWith("nats-server")) {
    logger.warn({ pidFile, pid, command: argv.join(" ") }, "pid file names a non-nats process");
    return;
  }
  logger.warn({ pidFile, pid, command: argv.join(" ") }, "stopping stale nats-server");
  killQuietly(pid, "SIGTERM");
  if (!(await waitGone(pid, graceMs))) {
    logger.warn({ pid, graceMs }, "stale nats-server ignored SIGTERM; killing it");
    killQuietly(pid, "SIGKILL");
    if (!(await waitGone(pid, graceMs))) {
      throw new NatsServerError(`stale nats-server ${pid} (from ${pidFile}) would not exit`);
    }
  }
  logger.info({ pid }, "stale nats-server stopped");
}

/** The argv of a live (not zombie) process, or null when there is none. */
function liveCommand(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state letter follows the parenthesised command name, which may itself hold ")".
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z" || state === "X") return null;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return null;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (liveCommand(pid) !== null) {
    if (Date.now() > deadline) return false;
    await delay(POLL_MS);
  }
  return true;
}

interface BoundPorts {
  port: number;
  monitorUrl: string | undefined;
}

/** Reads `<exe>_<pid>.ports`; undefined until nats-server has written it completely. */
async function readPortsFile(dir: string, pid: number): Promise<BoundPorts | undefined> {
  const name = (await readdir(dir)).find((f) => f.endsWith(`_${pid}.ports`));
  if (name === undefined) return undefined;
  try {
    const parsed = JSON.parse(await readFile(path.join(dir, name), "utf8")) as {
      nats?: string[];
      monitoring?: string[];
    };
    const port = Number(new URL(parsed.nats?.[0] ?? "").port);
    return port > 0 ? { port, monitorUrl: parsed.monitoring?.[0] } : undefined;
  } catch {
    return undefined; // seen mid-write; the next poll reads it whole
  }
}

/** True once a TCP client gets the server's INFO line: the server is accepting clients. */
function acceptsClients(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: connectHost(host), port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once("error", () => done(false));
    socket.once("data", (chunk) => done(chunk.toString("latin1").startsWith("INFO ")));
  });
}

function collectStderr(child: ChildProcess, logger: Logger) {
  const state = { lines: [] as string[], spawnError: undefined as string | undefined };
  let partial = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      if (line.trim() === "") continue;
      state.lines.push(line);
      if (state.lines.length > TAIL_LINES) state.lines.shift();
      const level = /\[(FTL|ERR)\]/.test(line) ? "error" : /\[WRN\]/.test(line) ? "warn" : "debug";
      logger[level]({ line }, "nats-server");
    }
  });
  child.stderr?.on("end", () => {
    if (partial.trim() !== "") state.lines.push(partial);
  });
  child.once("error", (err) => {
    state.spawnError = err.message;
  });
  return state;
}

function watchExit(child: ChildProcess): Promise<NatsServerExit> {
  return new Promise((resolve) => {
    // "close" waits for stderr to drain, so an early-exit message has the last lines.
    child.once("close", (code, signal) => resolve({ code, signal }));
    child.once("error", () => {
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });
}

/** The pid once spawned, or undefined when the executable could not be run. */
async function spawnedPid(child: ChildProcess, exited: Promise<NatsServerExit>) {
  if (child.pid !== undefined) return child.pid;
  const spawned = new Promise<void>((resolve) => child.once("spawn", resolve));
  await Promise.race([spawned, exited]);
  return child.pid;
}

async function cleanupAfterExit(dir: string, pid: number, pidFile: string | undefined) {
  // After SIGKILL nats-server cannot remove its ports file; a later pid could match it.
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names.filter((f) => f.endsWith(`_${pid}.ports`))) {
    await rm(path.join(dir, name), { force: true });
  }
  if (pidFile === undefined) return;
  // Check and remove in one step: a new server may be writing its own pid there right now
  // (it stopped this one), and a read-then-remove would take that file away. Move the file
  // aside first; it goes only if it names this process, else it is put back.
  const aside = `${pidFile}.${pid}.exited`;
  if (
    !(await rename(pidFile, aside).then(
      () => true,
      () => false,
    ))
  )
    return;
  const recorded = await readFile(aside, "utf8").catch(() => "");
  if (recorded.trim() === String(pid)) await rm(aside, { force: true });
  else await rename(aside, pidFile).catch(() => {});
}

async function writePidFile(pidFile: string, pid: number): Promise<void> {
  await mkdir(path.dirname(path.resolve(pidFile)), { recursive: true });
  await writeFile(pidFile, `${pid}\n`);
}

async function tailOfFile(file: string): Promise<string[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-TAIL_LINES);
}

function checkPort(name: string, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new ConfigError(`nats-server ${name} must be an integer from 0 to 65535, got ${port}`);
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {}
}

/** Where a client connects when the server listens on every address. */
function connectHost(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "::1";
  return host;
}

function urlHost(host: string): string {
  const h = connectHost(host);
  return h.includes(":") ? `[${h}]` : h;
}

/** The server's own words for a failure: its last fatal or error line, without the prefix. */
function failureReason(lines: readonly string[]): string {
  const tagged = lines.filter((l) => /\[(FTL|ERR)\]/.test(l)).at(-1);
  // Config parse errors are printed untagged ("nats-server: Parse error on line 2: ...").
  const line = tagged ?? lines.at(-1) ?? "no output";
  return line.replace(/^\[\d+\] \S+ \S+ \[(FTL|ERR)\] /, "").replace(/^nats-server: /, "");
}

function exitText(exit: NatsServerExit): string {
  return exit.signal !== null ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
