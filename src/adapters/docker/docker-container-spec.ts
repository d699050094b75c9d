/**
 * How a clawfleet container is made and recognised: its labels, its name, the
 * create request that carries all of its hardening, and two host-side helpers
 * (workspace ownership, the container's memory cgroup).
 */
import { access, lchown, lstat, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import type Docker from "dockerode";
import type { AgentLaunch } from "../agent-link/agent-launch.js";
import type { ContainerSpec } from "../agent-link/pool-adapter.js";
import { IMAGE_PROGRAMS, IMAGE_WORKSPACE } from "./docker-image.js";

/** Label keys every clawfleet container carries. */
export const LABELS = {
  fleet: "io.clawfleet.fleet",
  node: "io.clawfleet.node",
  pool: "io.clawfleet.pool",
  container: "io.clawfleet.container",
  instance: "io.clawfleet.instance",
} as const;

/** Who a container belongs to, written into its labels. */
export interface ContainerOwner {
  readonly fleet: string;
  readonly node: string;
  /** This pool adapter's run: containers of the same node but another instance are stale. */
  readonly instance: string;
  /** `uid:gid` the agent runs as; never root. */
  readonly user: string;
}

/** The Docker name of a container: unique per fleet, since container ids are. */
export function containerName(fleet: string, id: string): string {
  return `clawfleet.${fleet}.${id}`.replace(/[^A-Za-z0-9_.-]/g, "_");
}

/**
 * The create request for `spec`: non-root user, read-only root with a tmpfs
 * /tmp, the workspace as the only writable mount, no network unless the
 * profile names one, no IPC namespace to share (so no /dev/shm), memory (no
 * swap), pids and cpu limits, no-new-privileges, every capability dropped, an
 * init process, no log driver (the host keeps the log tail), and labels.
 */
export function containerCreateOptions(
  spec: ContainerSpec,
  workspaceDir: string,
  owner: ContainerOwner,
  launch: AgentLaunch = { program: "scripted-agent", env: {} },
): Docker.ContainerCreateOptions {
  const d = spec.profile.docker;
  const env = {
    ...spec.env,
    ...launch.env,
    CLAWFLEET_WORKSPACE: IMAGE_WORKSPACE,
    CLAWFLEET_HEARTBEAT_MS: String(spec.profile.agentHeartbeatMs),
    HOME: "/tmp",
    // V8 collects before the cgroup limit would kill the agent.
    NODE_OPTIONS: `--max-old-space-size=${Math.max(16, Math.floor(d.memoryMb * 0.75))}`,
  };
  return {
    name: containerName(owner.fleet, spec.id),
    Image: d.image,
    Cmd: [IMAGE_PROGRAMS[launch.program]],
    User: owner.user,
    WorkingDir: IMAGE_WORKSPACE,
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Labels: {
      [LABELS.fleet]: owner.fleet,
      [LABELS.node]: owner.node,
      [LABELS.pool]: spec.profile.name,
      [LABELS.container]: spec.id,
      [LABELS.instance]: owner.instance,
    },
    Hostname: spec.id.slice(0, 63),
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: true,
    StdinOnce: true,
    Tty: false,
    NetworkDisabled: d.network === "none",
    HostConfig: {
      Init: true,
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": `rw,noexec,nosuid,nodev,size=${d.tmpfsMb}m,mode=1777` },
      Mounts: [{ Type: "bind", Source: workspaceDir, Target: IMAGE_WORKSPACE, ReadOnly: false }],
      NetworkMode: d.network,
      IpcMode: "none",
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Privileged: false,
      Memory: d.memoryMb * 2 ** 20,
      MemorySwap: d.memoryMb * 2 ** 20,
      PidsLimit: d.pids,
      NanoCpus: Math.round(d.cpus * 1e9),
      Ulimits: [{ Name: "nofile", Soft: 1024, Hard: 4096 }],
      // If the host ever runs short after all, the kernel kills agents before the node.
      OomScoreAdj: 500,
      LogConfig: { Type: "none", Config: {} },
      RestartPolicy: { Name: "no", MaximumRetryCount: 0 },
    },
  };
}

/** Gives every entry under `dir` (and `dir`) to `uid:gid`, never following symlinks. */
export async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  const st = await lstat(dir);
  if (st.uid !== uid || st.gid !== gid) await lchown(dir, uid, gid);
  if (!st.isDirectory()) return;
  for (const name of await readdir(dir)) await chownTree(path.join(dir, name), uid, gid);
}

/**
 * The `memory.stat` file of the memory cgroup of process `pid`, when this host
 * can read it (the engine is local): stats straight from the kernel, without
 * the engine's once-a-second stats collector in the way.
 */
export async function cgroupMemoryStatPath(pid: number): Promise<string | undefined> {
  try {
    const lines = (await readFile(`/proc/${pid}/cgroup`, "utf8")).split("\n");
    const v1 = lines
      .map((l) => /^\d+:([^:]*):(.*)$/.exec(l))
      .find((m) => m?.[1]?.split(",").includes("memory"));
    const v2 = lines.map((l) => /^0::(.*)$/.exec(l)).find((m) => m !== null);
    const file = v1
      ? `/sys/fs/cgroup/memory${v1[2]}/memory.stat`
      : v2
        ? `/sys/fs/cgroup${v2[1]}/memory.stat`
        : undefined;
    if (file === undefined) return undefined;
    await access(file);
    return file;
  } catch {
    return undefined;
  }
}
