/**
 * The test side of a chaos fleet: one NATS connection that records every task
 * event, timeline line, effect and alert published on core NATS from the moment
 * it listens, and reads the fleet's streams, KV buckets and the sessions'
 * snapshots for the checks. `ChaosFleet` (chaos-fleet.ts) is one, plus the role
 * processes it owns.
 *
 * Everything a test waits for is an event (a NATS message, a KV update), never a
 * fixed sleep; every wait is bounded and fails with a message naming what it
 * waited for.
 */
import { DeliverPolicy, type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { PostMortem } from "../../src/adapters/records/quarantine-registry.js";
import {
  type RestoreSelector,
  SnapshotStore,
  type VersionInfo,
} from "../../src/adapters/snapshots/snapshot-store.js";
import type { FleetClient } from "../../src/gateway/fleet-client.js";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import type { ContainerInfo, NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import { Arrivals, retrying, WAIT_MS, withTimeout } from "./arrivals.js";
import { readSessionFile } from "./session-file.js";

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

/** What a chaos test sees of a fleet through its own NATS connection. */
export class FleetObserver {
  /** Task events and timeline lines, in arrival order (core subscription). */
  readonly events = new Arrivals<FleetEvent>();
  /** Every effect publish seen on core NATS, duplicates included. */
  readonly effects = new Arrivals<EffectMessage>();
  /** Post-mortems published on `fleet.alerts.critical`. */
  readonly alerts = new Arrivals<PostMortem>();
  private readonly subs: Subscription[] = [];
  readonly js: JetStreamClient;
  private readonly kvm: Kvm;
  private snapshotStore: Promise<SnapshotStore> | undefined;

  protected constructor(
    /** The fleet's temporary directory; {@link sessionFile} unpacks snapshots below it. */
    readonly dir: string,
    readonly nc: NatsConnection,
    readonly client: FleetClient,
  ) {
    this.js = jetstream(nc);
    this.kvm = new Kvm(this.js);
  }

  /** Starts recording events, effects and alerts. */
  protected listen(): void {
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

  /** Stops recording (what has arrived stays). */
  protected stopListening(): void {
    for (const s of this.subs) s.unsubscribe();
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
    return readSessionFile(await this.snapshots(), this.dir, tenant, session, file, select);
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
}
