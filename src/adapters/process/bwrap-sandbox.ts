/**
 * Confinement of one agent process with bubblewrap (`bwrap`): no network, no
 * view of other processes, a read-only system, the workspace as the only
 * writable place, and chosen host paths (the fleet's data dir) hidden.
 *
 * Identity: the agent runs as uid/gid {@link SANDBOX_UID} inside a new user
 * namespace that maps it to the caller's uid, with every capability dropped and
 * no further user namespaces allowed (`--disable-userns`, bwrap ≥ 0.8). Files
 * the agent writes are owned by the host user that runs the fleet, so restores
 * and snapshots made by the host keep working without chown; the agent can
 * write only inside /workspace and /tmp because everything else is mounted
 * read-only. The catch: host files owned by that user look owned by the agent,
 * so only paths that are fine to read are mounted (never /etc as a whole).
 */
import { spawn } from "node:child_process";
import {
  accessSync,
  constants,
  lstatSync,
  mkdtempSync,
  readlinkSync,
  realpathSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConfigError } from "../../errors.js";

/** Where the workspace appears inside the sandbox. */
export const SANDBOX_WORKSPACE = "/workspace";
/** The agent's uid and gid inside the sandbox. */
export const SANDBOX_UID = 1000;
/** PATH inside the sandbox. */
export const SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin";

/** Top-level system dirs: bound read-only, or recreated as symlinks on merged-/usr systems. */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** The few /etc files a runtime needs; none of them holds secrets. */
const ETC_FILES = [
  "/etc/ld.so.cache",
  "/etc/ld.so.conf",
  "/etc/ld.so.conf.d",
  "/etc/localtime",
  "/etc/nsswitch.conf",
  "/etc/passwd",
  "/etc/group",
  "/etc/hosts",
];

/** What to run in a sandbox and what it may see. */
export interface BwrapSpec {
  /** Host directory bound read-write at {@link SANDBOX_WORKSPACE}; also the working directory. */
  readonly workspaceDir: string;
  /** Program and arguments, as seen inside the sandbox. */
  readonly command: readonly string[];
  /** The complete environment of the program (the caller's is cleared). */
  readonly env: Readonly<Record<string, string>>;
  /** Host paths bound read-only at the same path (the runtime, the project). */
  readonly readOnlyPaths?: readonly string[];
  /** Host paths replaced by an empty read-only tmpfs; they must exist on the host if under a bound path. */
  readonly maskPaths?: readonly string[];
  readonly hostname?: string;
}

function isUnder(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

function systemMounts(): string[] {
  const args: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    let stat: ReturnType<typeof lstatSync>;
    try {
      stat = lstatSync(dir);
    } catch {
      continue;
    }
    if (stat.isSymbolicLink()) args.push("--symlink", readlinkSync(dir), dir);
    else if (stat.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  for (const file of ETC_FILES) args.push("--ro-bind-try", file, file);
  return args;
}

/**
 * The bwrap arguments (without the `bwrap` program itself) that run
 * `spec.command` confined as described in the module comment. Pure apart from
 * looking at the host's top-level system dirs.
 */
export function buildBwrapArgs(spec: BwrapSpec): string[] {
  const args = [
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--uid",
    String(SANDBOX_UID),
    "--gid",
    String(SANDBOX_UID),
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--new-session",
    "--hostname",
    spec.hostname ?? "clawfleet-agent",
    ...systemMounts(),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
  ];
  const bound: string[] = SYSTEM_DIRS.slice();
  for (const p of spec.readOnlyPaths ?? []) {
    if (bound.some((b) => isUnder(b, p))) continue;
    args.push("--ro-bind", p, p);
    bound.push(p);
  }
  // Masks come after the binds they cover; later mounts shadow earlier ones.
  for (const p of spec.maskPaths ?? []) args.push("--tmpfs", p, "--remount-ro", p);
  args.push("--bind", spec.workspaceDir, SANDBOX_WORKSPACE, "--chdir", SANDBOX_WORKSPACE);
  args.push("--remount-ro", "/", "--clearenv");
  for (const [key, value] of Object.entries(spec.env)) {
    if (key === "" || key.includes("="))
      throw new ConfigError(`invalid environment variable name: ${key}`);
    args.push("--setenv", key, value);
  }
  args.push("--", ...spec.command);
  return args;
}

/** The absolute path of `bwrap` on `searchPath`, if it is there. */
export function findBwrap(searchPath: string = process.env.PATH ?? ""): string | undefined {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, "bwrap");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this dir
    }
  }
  return undefined;
}

/**
 * Host paths the node runtime needs read-only in a sandbox: the install prefix
 * of the running node binary when it is not under /usr already.
 */
export function runtimeReadOnlyPaths(): string[] {
  const prefix = path.dirname(path.dirname(realpathSync(process.execPath)));
  return SYSTEM_DIRS.some((d) => isUnder(d, prefix)) ? [] : [prefix];
}

/** Outcome of trying bubblewrap once on this host. */
export interface BwrapProbe {
  readonly usable: boolean;
  /** Absolute path of bwrap when found. */
  readonly path?: string;
  /** Why it is not usable. */
  readonly reason?: string;
}

let probed: Promise<BwrapProbe> | undefined;

/**
 * Whether bubblewrap is installed and can build the sandbox this module builds
 * (user namespaces may be disabled in a container). Runs `node -e ""` in such a
 * sandbox once per process and caches the answer.
 */
export function probeBwrap(): Promise<BwrapProbe> {
  probed ??= runProbe();
  return probed;
}

async function runProbe(): Promise<BwrapProbe> {
  const bwrap = findBwrap();
  if (bwrap === undefined) return { usable: false, reason: "bwrap is not on PATH" };
  const workspaceDir = mkdtempSync(path.join(tmpdir(), "clawfleet-bwrap-probe-"));
  try {
    const args = buildBwrapArgs({
      workspaceDir,
      command: [realpathSync(process.execPath), "-e", ""],
      env: { PATH: SANDBOX_PATH },
      readOnlyPaths: runtimeReadOnlyPaths(),
    });
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>(
      (resolve) => {
        const child = spawn(bwrap, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 15_000 });
        let err = "";
        child.stderr.on("data", (chunk: Buffer) => {
          if (err.length < 4096) err += chunk.toString("utf8");
        });
        child.on("error", (e) => resolve({ code: null, stderr: e.message }));
        child.on("close", (c) => resolve({ code: c, stderr: err }));
      },
    );
    if (code === 0) return { usable: true, path: bwrap };
    return { usable: false, path: bwrap, reason: `bwrap test run failed: ${stderr.trim()}` };
  } finally {
    rmSync(workspaceDir, { recursive: true, force: true });
  }
}
