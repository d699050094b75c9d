/**
 * A fleet of real role processes for chaos tests: a real nats-server (see
 * {@link NatsServer}), an orchestrator, a gateway and any number of nodes, each a
 * `clawfleet` CLI process sharing one data dir, seen through a test-side NATS
 * connection ({@link FleetObserver}: events, effects, streams, KV, snapshots);
 * and the small helpers the chaos tests share.
 *
 * Disposal SIGKILLs every role process and every agent process they started
 * (found through /proc), stops nats-server and removes the temporary directories.
 */
import { mkdtemp, readlink, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/nats-core";
import { connectFleet } from "../../src/adapters/nats/fleet-nats.js";
import type { FleetOptions } from "../../src/fleet-options.js";
import { FleetClient } from "../../src/gateway/fleet-client.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import type { NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import { retrying, WAIT_MS } from "./arrivals.js";
import { type FleetEvent, FleetObserver } from "./fleet-observer.js";
import { NatsServer } from "./nats-server.js";
import { descendantsOf, type ProcInfo, processTable, signalQuietly } from "./process-table.js";
import { RoleProcess } from "./role-process.js";

/** A script input for the reference agent. */
export const script = (...ops: object[]): string => JSON.stringify({ script: ops });

/** Options of {@link ChaosFleet.start}. */
export interface ChaosFleetOptions {
  /** Ids of the node processes to start. */
  readonly nodes: readonly string[];
  /** Fleet options written to the `--config` file all roles share. */
  readonly config: Omit<FleetOptions, "natsUrl" | "dataDir" | "nodeId">;
  /** Free (idle or reserved) containers each node must report before the fleet counts as ready. Default 1. */
  readonly idlePerNode?: number;
}

/** A running fleet of role processes owned by one test file. */
export class ChaosFleet extends FleetObserver implements AsyncDisposable {
  readonly nodes = new Map<string, RoleProcess>();
  private readonly others: RoleProcess[] = [];
  /** Node processes replaced by {@link restartNode} (dead, but disposal makes sure). */
  private readonly retired: RoleProcess[] = [];
  /** Arguments every role shares (data dir, config, log level). */
  private common: string[] = [];

  private constructor(
    readonly nats: NatsServer,
    dir: string,
    readonly dataDir: string,
    nc: NatsConnection,
    client: FleetClient,
  ) {
    super(dir, nc, client);
  }

  /** Starts nats-server and the roles, and resolves once every node has free containers. */
  static async start(options: ChaosFleetOptions): Promise<ChaosFleet> {
    const nats = await NatsServer.start();
    const dir = await realpath(await mkdtemp(path.join(tmpdir(), "clawfleet-chaos-")));
    const dataDir = path.join(dir, "data");
    const nc = await nats.connect();
    const fleet = new ChaosFleet(
      nats,
      dir,
      dataDir,
      nc,
      new FleetClient(nc, { timeoutMs: 15_000 }),
    );
    try {
      fleet.listen();
      const config = path.join(dir, "fleet.config.json");
      await writeFile(config, JSON.stringify(options.config));
      // Streams and buckets first: roles that all create them at once on a fresh server
      // may fail ("subjects overlap with an existing stream"); that race is not under test here.
      await (await connectFleet(nats.url, { name: "chaos-provision" })).close();
      fleet.common = ["--data-dir", dataDir, "--config", config, "--log-level", "warn"];
      const roles = [
        fleet.role("orchestrator", "orch-1"),
        fleet.role("gateway", "gw-1"),
        ...options.nodes.map((id) => fleet.role("node", id)),
      ];
      await Promise.all(roles.map((r) => r.ready("connected to")));
      await fleet.ready(options.nodes, options.idlePerNode ?? 1);
      return fleet;
    } catch (err) {
      await fleet[Symbol.asyncDispose]();
      throw err;
    }
  }

  private role(kind: "orchestrator" | "gateway" | "node", id: string) {
    const p = RoleProcess.spawn(id, [kind, "--nats", this.nats.url, "--id", id, ...this.common]);
    if (kind === "node") this.nodes.set(id, p);
    else this.others.push(p);
    return p;
  }

  /** Waits until the orchestrator leads and each node announces `idle` free containers. */
  private async ready(nodes: readonly string[], idle: number): Promise<void> {
    const leases = await this.kv("fleet_leases");
    await this.watchKey(leases, "orchestrator", (v) => v !== null, "an orchestrator leader");
    await this.waitNodes(nodes, idle);
  }

  /**
   * Restarts nats-server on the same port and store, and resolves once this
   * connection is back and JetStream answers again (it recovers its streams first).
   */
  async restartNats(): Promise<void> {
    await this.nats.restart();
    await retrying(
      () => this.js.streams.get("FLEET_TASKS").then((s) => s.info()),
      "JetStream after the restart",
    );
  }

  /** Waits until the task's record (in KV) is terminal and returns it. */
  async finished(taskId: string, timeoutMs = WAIT_MS): Promise<TaskRecord> {
    const kv = await this.kv("fleet_tasks");
    try {
      return (await this.watchKey(
        kv,
        taskId,
        (v) => ["succeeded", "failed", "canceled"].includes((v as TaskRecord | null)?.status ?? ""),
        `task ${taskId} to end`,
        timeoutMs,
      )) as TaskRecord;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await this.diagnose(taskId)}`);
    }
  }

  /** What the fleet knows about a task, and the roles' recent logs, for a failure message. */
  async diagnose(taskId: string): Promise<string> {
    const lines = [
      `record: ${JSON.stringify((await this.taskRecord(taskId).catch(() => null))?.record)}`,
    ];
    const seen = this.events.items.filter((e) => e.taskId === taskId);
    lines.push(
      `events: ${seen.map((e) => `${e.source}/${e.type}#${e.attempt}${e.step ? `.${e.step}` : ""}@${e.node ?? ""}`).join(" ")}`,
    );
    const nodes = await (await this.kv("fleet_nodes")).keys().catch(() => null);
    if (nodes) {
      for await (const k of nodes) {
        const hb = (await (await this.kv("fleet_nodes")).get(k))?.json<NodeHeartbeat>();
        lines.push(
          `node ${k}: ${hb?.containers.map((c) => `${c.id}=${c.state}${c.session ? `(${c.session})` : ""}`).join(" ")}`,
        );
      }
    }
    for (const [name, p] of [
      ...this.nodes,
      ...this.others.map((o, i) => [`role${i}`, o] as const),
    ]) {
      const tail = p.stderr.split("\n").slice(-15).join("\n");
      if (tail.trim() !== "") lines.push(`--- ${name} stderr:\n${tail}`);
    }
    return lines.join("\n");
  }

  /** The pid of a node process. */
  pidOf(nodeId: string): number {
    const pid = this.nodes.get(nodeId)?.child.pid;
    if (pid === undefined) throw new Error(`no node ${nodeId}`);
    return pid;
  }

  /** SIGKILLs a node process and waits for it to exit. */
  async killNode(nodeId: string): Promise<void> {
    await this.nodes.get(nodeId)!.stop("SIGKILL");
  }

  /**
   * Starts node `nodeId` again under the same id (SIGKILLing the old process
   * first if it still runs), and resolves once the new process has announced
   * itself (a heartbeat of a new `startedAt`) with `idle` free containers.
   */
  async restartNode(nodeId: string, idle = 1, timeoutMs = WAIT_MS): Promise<void> {
    const old = this.nodes.get(nodeId);
    if (old) {
      await old.stop("SIGKILL");
      this.retired.push(old);
    }
    const kv = await this.kv("fleet_nodes");
    const before = (await kv.get(nodeId))?.json<NodeHeartbeat>().startedAt;
    const p = this.role("node", nodeId);
    await p.ready("connected to", timeoutMs);
    await this.watchKey(
      kv,
      nodeId,
      (v) => {
        const hb = v as NodeHeartbeat | null;
        return (
          !!hb &&
          hb.startedAt !== before &&
          hb.containers.filter((c) => c.state === "idle" || c.state === "reserved").length >= idle
        );
      },
      `restarted node ${nodeId} with ${idle} free container(s)`,
      timeoutMs,
    );
  }

  /** Sends `signal` to a node process (SIGSTOP / SIGCONT). */
  signalNode(nodeId: string, signal: "SIGSTOP" | "SIGCONT"): void {
    process.kill(this.pidOf(nodeId), signal);
  }

  /**
   * The agent process of container `containerId` on `nodeId`: the deepest `node`
   * process running `scripted-agent` under the node's child for that container
   * (bwrap → bwrap → node with bubblewrap; the agent itself without).
   */
  async agentPid(nodeId: string, containerId: string): Promise<number> {
    return (await this.containerProcesses(nodeId, containerId)).agent;
  }

  /**
   * The processes of container `containerId` on `nodeId`. `root` is the node's
   * child for it, which leads the container's process group: the outer bwrap,
   * the sandbox, when bubblewrap confines it (its `--die-with-parent` children,
   * the inner bwrap and the agent, die with it); the agent itself without.
   */
  async containerProcesses(
    nodeId: string,
    containerId: string,
  ): Promise<{ root: number; agent: number; sandboxed: boolean }> {
    const workspace = path.join(this.dataDir, "nodes", nodeId, "containers", containerId);
    const table = await processTable();
    const nodePid = this.pidOf(nodeId);
    const roots: ProcInfo[] = [];
    for (const p of table.values()) {
      if (p.ppid !== nodePid) continue;
      const cwd = await readlink(`/proc/${p.pid}/cwd`).catch(() => "");
      if (p.argv.includes(workspace) || cwd === workspace) roots.push(p);
    }
    if (roots.length !== 1) {
      throw new Error(`expected one process for container ${containerId}, found ${roots.length}`);
    }
    let best: { pid: number; depth: number } | undefined;
    const visit = (p: ProcInfo, depth: number) => {
      const isAgent =
        path.basename(p.argv[0] ?? "") === "node" &&
        p.argv.some((a) => a.includes("scripted-agent"));
      if (isAgent && (!best || depth > best.depth)) best = { pid: p.pid, depth };
      for (const c of table.values()) if (c.ppid === p.pid) visit(c, depth + 1);
    };
    const root = roots[0]!;
    visit(root, 0);
    if (!best) throw new Error(`no scripted-agent process under container ${containerId}`);
    return { root: root.pid, agent: best.pid, sandboxed: best.pid !== root.pid };
  }

  /**
   * This fleet's processes besides the roles: any process whose arguments or
   * working directory lie in the data dir (an agent, or bwrap around one, even
   * if its node is gone), and everything below those and below the roles.
   */
  private async strays(): Promise<ProcInfo[]> {
    const table = await processTable();
    const roots = new Set<number>();
    for (const r of [...this.nodes.values(), ...this.others, ...this.retired]) {
      // An exited role's pid may since belong to anyone (another test file's process).
      const running = r.child.exitCode === null && r.child.signalCode === null;
      if (running && r.child.pid !== undefined) roots.add(r.child.pid);
    }
    const inData = (p: string) => p === this.dataDir || p.startsWith(`${this.dataDir}/`);
    for (const p of table.values()) {
      if (p.pid === process.pid) continue;
      const cwd = await readlink(`/proc/${p.pid}/cwd`).catch(() => "");
      if (p.argv.some(inData) || inData(cwd)) roots.add(p.pid);
    }
    const out = new Map<number, ProcInfo>();
    for (const pid of roots) {
      const self = table.get(pid);
      if (self) out.set(pid, self);
      for (const d of descendantsOf(table, pid)) out.set(d.pid, d);
    }
    return [...out.values()];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.stopListening();
    const strays = await this.strays();
    const roles = [...this.nodes.values(), ...this.others, ...this.retired];
    for (const r of roles) {
      // A stopped process takes SIGKILL too, but resume it so nothing lingers half-frozen.
      const running = r.child.exitCode === null && r.child.signalCode === null;
      if (running && r.child.pid !== undefined) signalQuietly(r.child.pid, "SIGCONT");
    }
    await Promise.all(roles.map((r) => r.stop("SIGKILL")));
    // Agents and sandboxes: kill them by pid if they are still the processes we saw.
    const table = await processTable();
    for (const p of strays) {
      if (table.get(p.pid)?.argv.join("\0") === p.argv.join("\0")) signalQuietly(p.pid, "SIGKILL");
    }
    await this.nats[Symbol.asyncDispose]();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Short liveness timeouts, so a lost node or lease is noticed within about a second. */
export const FAST_LIVENESS = {
  nodeHeartbeatMs: 200,
  nodeTimeoutMs: 1500,
  leaseRenewMs: 200,
  leaseTtlMs: 1000,
  retryBackoffMs: 50,
  maxAttempts: 5,
} as const;

/** Steps of `taskId`'s node events of `type`, per attempt, in arrival order. */
export function stepsByAttempt(
  events: readonly FleetEvent[],
  type = "step",
): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const e of events) {
    if (e.type !== type || e.step === undefined) continue;
    out.set(e.attempt, [...(out.get(e.attempt) ?? []), e.step]);
  }
  return out;
}

/** The integers from..to, inclusive. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}
