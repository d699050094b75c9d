/**
 * A fleet of real role processes for chaos tests: a real nats-server (see
 * {@link NatsServer}), an orchestrator, a gateway and any number of nodes, each a
 * `clawfleet` CLI process sharing one data dir, plus a test-side NATS connection
 * that records every task event, timeline line and effect published on core NATS
 * from the moment the fleet is up, and reads streams, KV buckets and the
 * sessions' snapshots for the checks.
 *
 * Everything a test waits for is an event (a NATS message, a KV update, a
 * process exit), never a fixed sleep; every wait is bounded and fails with a
 * message naming what it waited for. Disposal SIGKILLs every role process and
 * every agent process they started (found through /proc), stops nats-server and
 * removes the temporary directories.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, readlink, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DeliverPolicy, type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { connectFleet } from "../../src/adapters/fleet-nats.js";
import {
  type RestoreSelector,
  SnapshotStore,
  type VersionInfo,
} from "../../src/adapters/snapshot-store.js";
import type { FleetOptions } from "../../src/fleet-options.js";
import { FleetClient } from "../../src/gateway/fleet-client.js";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import type { ContainerInfo, NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import type { PostMortem } from "../../src/supervisor/quarantine-registry.js";
import { CLI } from "../harness/cli-process.js";
import { NatsServer } from "../harness/nats-server.js";

/** A script input for the reference agent. */
export const script = (...ops: object[]): string => JSON.stringify({ script: ops });

/** A line of a task's history as published on `fleet.events.<source>.<taskId>`. */
export interface FleetEvent {
  /** `task` (node events) or `timeline` (orchestrator and gateway lines). */
  readonly source: string;
  readonly taskId: string;
  readonly type: string;
  readonly attempt: number;
  readonly node?: string;
  readonly container?: string;
  readonly step?: number;
  readonly output?: string;
  readonly message?: string;
  readonly retryable?: boolean;
  readonly error?: { code: string; message: string };
}

/** An effect as the effect outbox publishes it. */
export interface EffectMessage {
  readonly subject: string;
  readonly taskId: string;
  readonly step: number;
  readonly payload: unknown;
}

/** A process as /proc shows it. */
export interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly argv: readonly string[];
}

/** Options of {@link ChaosFleet.start}. */
export interface ChaosFleetOptions {
  /** Ids of the node processes to start. */
  readonly nodes: readonly string[];
  /** Fleet options written to the `--config` file all roles share. */
  readonly config: Omit<FleetOptions, "natsUrl" | "dataDir" | "nodeId">;
  /** Free (idle or reserved) containers each node must report before the fleet counts as ready. Default 1. */
  readonly idlePerNode?: number;
}

/** Default bound of every wait, well under the per-file budget. */
export const WAIT_MS = 20_000;

/** Items that arrive over time, and waits for the first one that matches. */
export class Arrivals<T> {
  readonly items: T[] = [];
  private readonly waiters = new Set<{ match: (t: T) => boolean; resolve: (t: T) => void }>();

  push(item: T): void {
    this.items.push(item);
    for (const w of [...this.waiters]) {
      if (w.match(item)) {
        this.waiters.delete(w);
        w.resolve(item);
      }
    }
  }

  /**
   * The first item (already arrived or still to come) that `match` accepts;
   * rejects after `timeoutMs`, or at once when `signal` aborts (the caller lost interest).
   */
  waitFor(
    match: (t: T) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
    signal?: AbortSignal,
  ): Promise<T> {
    const found = this.items.find(match);
    if (found !== undefined) return Promise.resolve(found);
    const waiter = { match, resolve: (_: T) => {} };
    let onAbort = () => {};
    const arrived = new Promise<T>((resolve, reject) => {
      waiter.resolve = resolve;
      this.waiters.add(waiter);
      onAbort = () => reject(new Error(`stopped waiting for ${what}`));
      if (signal?.aborted) onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    return withTimeout(arrived, timeoutMs, what).finally(() => {
      this.waiters.delete(waiter);
      signal?.removeEventListener("abort", onAbort);
    });
  }
}

/** Rejects with a message naming `what` when `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** util-linux `setpriv`, if installed. */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

/** How long a role process may take to say it is connected. */
const ROLE_START_MS = 30_000;

/**
 * A `clawfleet <role>` child process. Unlike the shared harness's CliProcess it
 * is usable before it is ready, so a role that never gets ready is still killed
 * at disposal, and its stderr explains why.
 */
export class RoleProcess {
  private out = "";
  private err = "";
  readonly exited: Promise<number | null>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on("data", (d: Buffer) => {
      this.out += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      this.err += d.toString();
    });
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  /**
   * Spawns `clawfleet ...args` (see {@link ready}); through `setpriv --pdeathsig`
   * where there is one, so the role dies with the test process even if that is
   * killed before it can clean up.
   */
  static spawn(name: string, args: string[]): RoleProcess {
    const command = [process.execPath, CLI, ...args];
    const [file, ...argv] = SETPRIV ? [SETPRIV, "--pdeathsig", "KILL", "--", ...command] : command;
    const child = spawn(file!, argv, { stdio: ["ignore", "pipe", "pipe"] });
    return new RoleProcess(name, child);
  }

  /** Resolves once stdout says `readyText`; rejects if the process exits or takes too long. */
  async ready(readyText: string, timeoutMs = ROLE_START_MS): Promise<void> {
    let onData = () => {};
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          onData = () => {
            if (this.out.includes(readyText)) resolve();
          };
          this.child.stdout?.on("data", onData);
          onData();
          void this.exited.then((code) =>
            reject(new Error(`${this.name} exited ${code} before ready:\n${this.err}`)),
          );
        }),
        timeoutMs,
        `${this.name} to connect; stderr:\n${this.err.split("\n").slice(-20).join("\n")}`,
      );
    } finally {
      this.child.stdout?.off("data", onData);
    }
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  /** Sends `signal` (unless it already exited) and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** A running fleet of role processes owned by one test file. */
export class ChaosFleet implements AsyncDisposable {
  /** Task events and timeline lines, in arrival order (core subscription). */
  readonly events = new Arrivals<FleetEvent>();
  /** Every effect publish seen on core NATS, duplicates included. */
  readonly effects = new Arrivals<EffectMessage>();
  /** Post-mortems published on `fleet.alerts.critical`. */
  readonly alerts = new Arrivals<PostMortem>();
  readonly nodes = new Map<string, RoleProcess>();
  private readonly others: RoleProcess[] = [];
  /** Node processes replaced by {@link restartNode} (dead, but disposal makes sure). */
  private readonly retired: RoleProcess[] = [];
  /** Arguments every role shares (data dir, config, log level). */
  private common: string[] = [];
  private readonly subs: Subscription[] = [];
  readonly js: JetStreamClient;
  private readonly kvm: Kvm;
  private snapshotStore: Promise<SnapshotStore> | undefined;

  private constructor(
    readonly nats: NatsServer,
    readonly dir: string,
    readonly dataDir: string,
    readonly nc: NatsConnection,
    readonly client: FleetClient,
  ) {
    this.js = jetstream(nc);
    this.kvm = new Kvm(this.js);
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

  private listen(): void {
    const events = this.nc.subscribe("fleet.events.>", {
      callback: (_e, m) => {
        const [, , source, taskId] = m.subject.split(".");
        const body = m.json<Omit<FleetEvent, "source" | "taskId">>();
        this.events.push({ ...body, source: source!, taskId: taskId! });
      },
    });
    const effects = this.nc.subscribe("fleet.effects.>", {
      callback: (_e, m) => {
        const body = m.json<Omit<EffectMessage, "subject">>();
        this.effects.push({ ...body, subject: m.subject });
      },
    });
    const alerts = this.nc.subscribe("fleet.alerts.critical", {
      callback: (_e, m) => this.alerts.push(m.json<PostMortem>()),
    });
    this.subs.push(events, effects, alerts);
  }

  /** Waits until the orchestrator leads and each node announces `idle` free containers. */
  private async ready(nodes: readonly string[], idle: number): Promise<void> {
    const leases = await this.kv("fleet_leases");
    await this.watchKey(leases, "orchestrator", (v) => v !== null, "an orchestrator leader");
    await this.waitNodes(nodes, idle);
  }

  /** Waits until each of `nodes` announces at least `idle` free (idle or reserved) containers. */
  async waitNodes(nodes: readonly string[], idle: number, timeoutMs = WAIT_MS): Promise<void> {
    const kv = await this.kv("fleet_nodes");
    await Promise.all(
      nodes.map((id) =>
        this.watchKey(
          kv,
          id,
          (v) => {
            const hb = v as NodeHeartbeat | null;
            return (
              !!hb &&
              hb.containers.filter((c) => c.state === "idle" || c.state === "reserved").length >=
                idle
            );
          },
          `node ${id} with ${idle} free container(s)`,
          timeoutMs,
        ),
      ),
    );
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

  /** A KV bucket of the fleet. */
  kv(bucket: string): Promise<KV> {
    return this.kvm.open(bucket);
  }

  /** Resolves with the first value of `key` (now or later) that `match` accepts; null is a deleted key. */
  async watchKey(
    kv: KV,
    key: string,
    match: (value: unknown) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
    onRevision?: (revision: number) => void,
  ): Promise<unknown> {
    const watch = await retrying(() => kv.watch({ key }), `a watch of ${key}`);
    try {
      return await withTimeout(
        (async () => {
          for await (const e of watch) {
            onRevision?.(e.revision);
            const value = e.operation === "PUT" ? e.json() : null;
            if (match(value)) return value;
          }
          throw new Error(`watch of ${key} ended`);
        })(),
        timeoutMs,
        what,
      );
    } finally {
      watch.stop();
    }
  }

  /**
   * Resolves once `taskId`'s lease has been written `count` times after this call
   * by the holder of `attempt` (default: whichever attempt holds it first):
   * proof that the holder's node has run for a while since, as every renewal is
   * a timer of that node, issued after whatever it was doing when the call began.
   */
  async leaseRenewals(
    taskId: string,
    count: number,
    attempt?: number,
    timeoutMs = WAIT_MS,
  ): Promise<void> {
    const kv = await this.kv("fleet_leases");
    const key = `task.${taskId}`;
    const from = (await kv.get(key))?.revision ?? 0;
    const seen = new Set<number>();
    let holder = attempt;
    let revision = 0;
    await this.watchKey(
      kv,
      key,
      (v) => {
        const lease = v as { attempt: number; revoked?: boolean } | null;
        if (!lease || lease.revoked || revision <= from) return false;
        holder ??= lease.attempt;
        if (lease.attempt === holder) seen.add(revision);
        return seen.size >= count;
      },
      `${count} writes of the lease of ${taskId} by attempt ${attempt ?? "(first seen)"}`,
      timeoutMs,
      (r) => {
        revision = r;
      },
    );
  }

  /** The stored record of a task and its KV revision, or null. */
  async taskRecord(taskId: string): Promise<{ record: TaskRecord; revision: number } | null> {
    const e = await (await this.kv("fleet_tasks")).get(taskId);
    return e?.operation === "PUT" ? { record: e.json<TaskRecord>(), revision: e.revision } : null;
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

  /** Waits for the first event of `taskId` that `match` accepts. */
  event(
    taskId: string,
    match: (e: FleetEvent) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
  ): Promise<FleetEvent> {
    return this.events.waitFor(
      (e) => e.taskId === taskId && match(e),
      `${what} of task ${taskId}`,
      timeoutMs,
    );
  }

  /** Node events (`fleet.events.task.<id>`) of a task seen so far. */
  taskEvents(taskId: string): FleetEvent[] {
    return this.events.items.filter((e) => e.taskId === taskId && e.source === "task");
  }

  /** Every message stored in `stream` on `subject` (a filter), read with an ordered consumer. */
  async readStream(
    stream: string,
    subject: string,
  ): Promise<Array<{ subject: string; seq: number; data: unknown }>> {
    // A string filter (not an array) becomes `filter_subject`, which nats-server 2.9 understands.
    const consumer = await this.js.consumers.get(stream, {
      filter_subjects: subject,
      deliver_policy: DeliverPolicy.All,
      inactive_threshold: 30_000,
    });
    const out: Array<{ subject: string; seq: number; data: unknown }> = [];
    try {
      if ((await consumer.info(true)).num_pending === 0) return out;
      const messages = await consumer.consume();
      for await (const m of messages) {
        out.push({ subject: m.subject, seq: m.seq, data: m.json() });
        if (m.info.pending === 0) break;
      }
      await messages.close().catch(() => {});
    } finally {
      await consumer.delete().catch(() => {});
    }
    return out;
  }

  /** The effects of `taskId` stored in the effects stream. */
  async storedEffects(taskId: string): Promise<EffectMessage[]> {
    const all = await this.readStream("FLEET_EFFECTS", "fleet.effects.>");
    return all
      .map((m) => ({ ...(m.data as Omit<EffectMessage, "subject">), subject: m.subject }))
      .filter((e) => e.taskId === taskId);
  }

  /** The node events of `taskId` stored in the events stream. */
  async storedEvents(taskId: string): Promise<FleetEvent[]> {
    const all = await this.readStream("FLEET_EVENTS", `fleet.events.task.${taskId}`);
    return all.map((m) => ({ ...(m.data as FleetEvent), source: "task", taskId }));
  }

  /** The snapshot store the nodes keep sessions' files in (opened on first use). */
  snapshots(): Promise<SnapshotStore> {
    this.snapshotStore ??= SnapshotStore.open(this.nc, { prefix: "fleet" });
    return this.snapshotStore;
  }

  /**
   * A file of the session's files as the next turn gets them: its latest
   * known-good version (the state plane keeps a session's files as snapshots in
   * NATS), or the version `select` picks; null when the session has no such
   * version or it no such file.
   */
  async sessionFile(
    session: string,
    file: string,
    tenant = "default",
    select: RestoreSelector = { knownGood: true },
  ): Promise<string | null> {
    const store = await this.snapshots();
    const dir = await mkdtemp(path.join(this.dir, "peek-"));
    try {
      try {
        await store.restore(tenant, session, dir, select);
      } catch (err) {
        if ((err as { code?: string }).code === "SNAPSHOT_NOT_FOUND") return null;
        throw err;
      }
      return await readFile(path.join(dir, file), "utf8").catch(() => null);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Every stored version of the session, oldest first. */
  async sessionVersions(session: string, tenant = "default"): Promise<VersionInfo[]> {
    return (await this.snapshots()).versions(tenant, session);
  }

  /** The session's turn count kept by the reference agent. */
  async turns(session: string, tenant = "default"): Promise<number> {
    const text = await this.sessionFile(session, ".agent-state.json", tenant);
    return text === null ? 0 : (JSON.parse(text) as { turns: number }).turns;
  }

  /** Keys of the task's checkpoint snapshots still stored (`ck.<tenant>.<session>.<taskId>.<step>`). */
  async checkpointSnapshots(
    session: string,
    taskId: string,
    tenant = "default",
  ): Promise<string[]> {
    const kv = await this.kv("fleet_snapshots");
    const keys: string[] = [];
    for await (const k of await kv.keys(`ck.${tenant}.${session}.${taskId}.*`)) keys.push(k);
    return keys.sort();
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

  /** The supervision tree (`fleet.api.tree`, what `clawfleet tree --json` prints). */
  async tree(): Promise<FleetTree> {
    const { ok: _ok, ...tree } = await this.client.request<FleetTree & { ok: true }>("tree", {});
    return tree;
  }

  /** Resolves with the first heartbeat of node `nodeId` (its latest, or a later one) that `match` accepts. */
  async heartbeat(
    nodeId: string,
    match: (hb: NodeHeartbeat) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
  ): Promise<NodeHeartbeat> {
    const kv = await this.kv("fleet_nodes");
    return (await this.watchKey(
      kv,
      nodeId,
      (v) => v !== null && match(v as NodeHeartbeat),
      `node ${nodeId}: ${what}`,
      timeoutMs,
    )) as NodeHeartbeat;
  }

  /**
   * Resolves with container `containerId` as node `nodeId` announces it (now or
   * later) in a state `match` accepts; `null` is "not in the heartbeat".
   */
  async container(
    nodeId: string,
    containerId: string,
    match: (c: ContainerInfo | null, hb: NodeHeartbeat) => boolean,
    what: string,
    timeoutMs = WAIT_MS,
  ): Promise<ContainerInfo | null> {
    const find = (hb: NodeHeartbeat) => hb.containers.find((c) => c.id === containerId) ?? null;
    const hb = await this.heartbeat(
      nodeId,
      (b) => match(find(b), b),
      `container ${containerId} ${what}`,
      timeoutMs,
    );
    return find(hb);
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
      if (r.child.pid !== undefined) roots.add(r.child.pid);
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
    for (const s of this.subs) s.unsubscribe();
    const strays = await this.strays();
    const roles = [...this.nodes.values(), ...this.others, ...this.retired];
    for (const r of roles) {
      // A stopped process takes SIGKILL too, but resume it so nothing lingers half-frozen.
      if (r.child.pid !== undefined) signalQuietly(r.child.pid, "SIGCONT");
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

/**
 * Runs `fn` until it succeeds, backing off from 25 ms to 400 ms, for at most
 * `timeoutMs`: for requests that fail while nats-server (re)starts.
 */
export async function retrying<T>(
  fn: () => Promise<T>,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 25; ; delay = Math.min(delay * 2, 400)) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() + delay > deadline) {
        throw new Error(`gave up on ${what} after ${timeoutMs} ms: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Every process of this host, by pid. */
export async function processTable(): Promise<Map<number, ProcInfo>> {
  const table = new Map<number, ProcInfo>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const argv = (await readFile(`/proc/${name}/cmdline`, "utf8"))
        .split("\0")
        .filter((a) => a !== "");
      table.set(Number(name), { pid: Number(name), ppid: Number(fields[1]), argv });
    } catch {
      // Exited while we looked.
    }
  }
  return table;
}

/** The processes below `pid`, nearest first. */
export function descendantsOf(table: Map<number, ProcInfo>, pid: number): ProcInfo[] {
  const out: ProcInfo[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const p of table.values()) {
      if (p.ppid === parent) {
        out.push(p);
        queue.push(p.pid);
      }
    }
  }
  return out;
}

/** Whether a process is alive (a zombie counts as gone). */
export async function isAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return false;
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
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
