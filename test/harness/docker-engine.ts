/**
 * A Docker engine for tests:
 *
 * ```ts
 * await using engine = await DockerEngine.start();
 * await engine.ensureAgentImage();
 * ```
 *
 * It reuses a running engine (`$DOCKER_HOST` or /var/run/docker.sock) when one
 * answers. Otherwise it starts a private dockerd (Debian's docker.io) with its
 * own data root, exec root and socket, no bridge and no iptables, shared by the
 * test files that run at the same time: each holds a reference, and the last
 * one to dispose stops dockerd and removes its directory. No engine at all is a
 * failure, not a skip.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, openSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Docker from "dockerode";
import { type BuiltAgentImage, buildAgentImage } from "../../src/adapters/docker/docker-image.js";

(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for("Symbol.asyncDispose");

const DIR = path.join(tmpdir(), `clawfleet-dockerd-${process.getuid?.() ?? 0}`);
const LOCK = `${DIR}.lock`;
const SOCKET = path.join(DIR, "docker.sock");
const PIDFILE = path.join(DIR, "dockerd.pid");
const REFS = path.join(DIR, "refs");
const DOCKERD_CANDIDATES = ["/usr/sbin/dockerd", "/usr/bin/dockerd", "/usr/local/bin/dockerd"];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function answers(docker: Docker): Promise<boolean> {
  return docker.ping().then(
    () => true,
    () => false,
  );
}

/** Runs `fn` holding a lock directory shared by every test process. */
async function locked<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await mkdir(LOCK);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const age = await stat(LOCK).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 180_000) await rm(LOCK, { recursive: true, force: true });
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(LOCK, { recursive: true, force: true });
  }
}

/** References of live test processes; stale ones are dropped. */
async function liveRefs(): Promise<string[]> {
  const names = await readdir(REFS).catch(() => [] as string[]);
  const out: string[] = [];
  for (const name of names) {
    if (alive(Number(name.split("-")[0]))) out.push(name);
    else await unlink(path.join(REFS, name)).catch(() => {});
  }
  return out;
}

async function startDockerd(): Promise<number> {
  const binary = DOCKERD_CANDIDATES.find((p) => existsSync(p));
  if (!binary)
    throw new Error("no Docker engine: install Debian's docker.io (apt-get install -y docker.io)");
  await rm(DIR, { recursive: true, force: true });
  await mkdir(REFS, { recursive: true });
  const log = openSync(path.join(DIR, "dockerd.log"), "a");
  const child: ChildProcess = spawn(
    binary,
    [
      "--bridge=none",
      "--iptables=false",
      "--ip6tables=false",
      `--data-root=${path.join(DIR, "root")}`,
      `--exec-root=${path.join(DIR, "exec")}`,
      `--pidfile=${PIDFILE}`,
      `--host=unix://${SOCKET}`,
    ],
    { detached: true, stdio: ["ignore", log, log] },
  );
  child.unref();
  const docker = new Docker({ socketPath: SOCKET });
  for (const t0 = Date.now(); Date.now() - t0 < 60_000; await sleep(100)) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (existsSync(SOCKET) && (await answers(docker))) return child.pid!;
  }
  const tail = await readFile(path.join(DIR, "dockerd.log"), "utf8").catch(() => "");
  throw new Error(`dockerd did not come up:\n${tail.split("\n").slice(-15).join("\n")}`);
}

async function stopDockerd(): Promise<void> {
  const pid = Number(await readFile(PIDFILE, "utf8").catch(() => "0"));
  if (pid > 0 && alive(pid)) {
    process.kill(pid, "SIGTERM");
    for (const t0 = Date.now(); alive(pid) && Date.now() - t0 < 30_000; ) await sleep(100);
    if (alive(pid)) process.kill(pid, "SIGKILL");
  }
  await rm(DIR, { recursive: true, force: true });
}

/** A Docker engine held by one test file; see the module comment. */
export class DockerEngine implements AsyncDisposable {
  private disposed = false;

  private constructor(
    readonly docker: Docker,
    /** Set when this harness started (or shares) a private dockerd. */
    private readonly ref: string | undefined,
  ) {}

  static async start(): Promise<DockerEngine> {
    const external = process.env.DOCKER_HOST
      ? new Docker()
      : new Docker({ socketPath: "/var/run/docker.sock" });
    if (await answers(external)) return new DockerEngine(external, undefined);
    const ref = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    await locked(async () => {
      const pid = Number(await readFile(PIDFILE, "utf8").catch(() => "0"));
      const running = pid > 0 && alive(pid) && (await answers(new Docker({ socketPath: SOCKET })));
      if (!running) {
        if ((await liveRefs()).length > 0)
          throw new Error(`dockerd in ${DIR} died under its users`);
        await stopDockerd();
        await startDockerd();
      }
      await mkdir(REFS, { recursive: true });
      await writeFile(path.join(REFS, ref), "");
    });
    return new DockerEngine(new Docker({ socketPath: SOCKET }), ref);
  }

  /** The engine's socket, as `DOCKER_HOST` would name it. */
  get host(): string {
    const modem = this.docker.modem as { socketPath?: string };
    return `unix://${modem.socketPath ?? "/var/run/docker.sock"}`;
  }

  /** Builds the agent image unless it is up to date (one build at a time across processes). */
  ensureAgentImage(tag?: string): Promise<BuiltAgentImage> {
    return locked(() => buildAgentImage(this.docker, { tag }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed || this.ref === undefined) return;
    this.disposed = true;
    await locked(async () => {
      await unlink(path.join(REFS, this.ref!)).catch(() => {});
      if ((await liveRefs()).length === 0) await stopDockerd();
    });
  }
}
