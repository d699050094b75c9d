/**
 * What the leading orchestrator runs: it takes submissions from the tasks
 * stream, keeps one task actor per open task, places the head task of each
 * session by the preference ladder, applies node events to the actors, and
 * writes every record change to KV. It is rebuilt entirely from NATS when a
 * new leader takes over: unacknowledged submissions are delivered again and
 * each record in KV says where its task stands.
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/nats-core";
import { type Actor, createActor, fromPromise } from "xstate";
import {
  type DispatchInput,
  dispatchRequestOf,
  priorityRank,
  taskMachine,
  taskRecordOf,
} from "../actors/task-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { isCasConflict, retryTransient } from "../adapters/nats/nats-retry.js";
import { TaskLease, taskLeaseKey } from "../adapters/records/task-lease.js";
import { type Clock, every, isoNow } from "../clock.js";
import { type ErrorInfo, toErrorInfo } from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import { isTerminal, type TaskRecord, TaskRecordSchema } from "../protocol/api-schemas.js";
import {
  type DispatchReply,
  DispatchReplySchema,
  type DispatchRequest,
  type OrchestratorStatus,
  SubmissionSchema,
  TaskEventSchema,
  type TimelineEvent,
} from "../protocol/fleet-messages.js";
import { HEALING_TIERS, Healer } from "../supervisor/healer.js";
import { serveControlRequests } from "./control-requests.js";
import { INTAKE_ACK_WAIT_MS, openEvents, openIntake } from "./durable-consumers.js";
import { LivenessMonitor, type RunningAttempt } from "./liveness-monitor.js";
import { PlacementClaims } from "./placement-claims.js";
import { startSnapshotJanitor } from "./snapshot-janitor.js";
import { cancelUnopened, newRecord, safeJson } from "./task-records.js";

/** Codes of lost attempts that say nothing about the session itself. */
const INFRASTRUCTURE_FAILURES = new Set([
  "NODE_LOST",
  "LEASE_LOST",
  "DISPATCH_FAILED",
  "NODE_STOPPING",
]);

interface OpenTask {
  readonly actor: Actor<typeof taskMachine>;
  readonly seq: number;
  readonly sessionKey: string;
  msg: JsMsg | null;
  revision: number;
  written: string;
  writing: Promise<void>;
  /** When this term saw the current attempt start running (for lease expiry). */
  runningSince: number;
  /** The healing ladder is deciding about the last lost attempt: do not place meanwhile. */
  healing: boolean;
  /** Healing tier 3 asked that the next attempt start over from the last known-good version. */
  repair: boolean;
  /** Containers its attempts died in (healing tiers 2 and 3 place the next one elsewhere). */
  readonly avoid: Set<string>;
  /** The agent's last log lines from the last failed attempt. */
  logTail: string[];
  readonly done: Promise<TaskRecord>;
}

/** The scheduler of one leadership term. */
export class TaskScheduler {
  private readonly tasks = new Map<string, OpenTask>();
  private readonly sessions = new Map<string, string[]>();
  private readonly liveness: LivenessMonitor;
  private readonly healer: Healer;
  private readonly placements: Record<string, number> = {};
  private readonly claims = new PlacementClaims();
  private readonly stoppers: Array<() => void> = [];
  private readonly subs: Subscription[] = [];
  private consumers: ConsumerMessages[] = [];
  private scheduleQueued = false;
  private stopped = false;
  private readonly leadingSince: number;
  private readonly logic;

  constructor(
    private readonly id: string,
    private readonly nats: FleetNats,
    private readonly options: ResolvedFleetOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.leadingSince = clock.now();
    this.healer = new Healer(nats, options, clock, log);
    this.liveness = new LivenessMonitor(nats, options, clock, log, {
      nodeSeen: (hb) => {
        this.claims.observe(hb);
        this.schedule();
      },
      nodeLost: (node) => {
        for (const t of this.tasks.values()) t.actor.send({ type: "NODE_LOST", node });
        this.schedule();
      },
      leaseExpired: (taskId, attempt) => {
        const t = this.tasks.get(taskId);
        if (!t) return;
        // Revoke first: the holder, should it wake up, finds its lease gone and stops.
        void TaskLease.revoke(this.nats.kv.leases, taskId, attempt)
          .catch((err) => this.log.warn({ err: toErrorInfo(err), taskId }, "lease revoke failed"))
          .finally(() => t.actor.send({ type: "LEASE_LOST", attempt }));
      },
      running: () => this.runningAttempts(),
    });
    this.logic = taskMachine.provide({
      actors: {
        dispatch: fromPromise<DispatchReply, DispatchInput>(({ input }) => this.dispatch(input)),
      },
    });
  }

  /** Opens the streams and watches and starts placing tasks. */
  async start(): Promise<void> {
    this.subs.push(
      ...serveControlRequests(this.nats, {
        status: () => this.status(new Date(this.leadingSince).toISOString()),
        cancel: (taskId) => this.cancel(taskId),
      }),
    );
    await this.healer.start((tenant, session, on) => {
      if (on) this.quarantineOpen(`${tenant}/${session}`);
      this.schedule();
    });
    this.stoppers.push(() => this.healer.stop());
    await this.liveness.start();
    this.stoppers.push(() => this.liveness.stop());
    const intake = await openIntake(this.nats);
    this.consumers.push(intake);
    void this.drain(intake, (m) => this.ingest(m));
    const events = await openEvents(this.nats);
    this.consumers.push(events);
    void this.drain(events, (m) => this.applyEvent(m));
    this.stoppers.push(every(this.clock, INTAKE_ACK_WAIT_MS / 3, () => this.keepAlive()));
    this.stoppers.push(
      startSnapshotJanitor(
        this.nats,
        this.options.prefix,
        this.options.snapshotGcIntervalMs,
        this.clock,
        this.log,
      ),
    );
  }

  /** Stops this term's work; records stay as they are for the next leader. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const s of this.stoppers) s();
    for (const s of this.subs) s.unsubscribe();
    await Promise.allSettled(this.consumers.map((c) => c.close()));
    await Promise.allSettled([...this.tasks.values()].map((t) => t.writing));
    for (const t of this.tasks.values()) t.actor.stop();
    this.tasks.clear();
    this.sessions.clear();
  }

  /** Queue depth and running count for `status`. */
  status(since: string): OrchestratorStatus {
    let queued = 0;
    let running = 0;
    for (const t of this.tasks.values()) {
      if (t.actor.getSnapshot().value === "running") running++;
      else queued++;
    }
    return {
      id: this.id,
      since,
      queueDepth: queued,
      running,
      placements: { ...this.placements },
      sessions: this.healer
        .view()
        .map((v) => ({ ...v, history: v.history.map((h) => ({ ...h })) })),
    };
  }

  // ---- intake -------------------------------------------------------------------------

  private async drain(
    messages: ConsumerMessages,
    handle: (m: JsMsg) => Promise<void>,
  ): Promise<void> {
    for await (const m of messages) {
      if (this.stopped) return;
      await handle(m).catch((err) => {
        this.log.error({ err: toErrorInfo(err), subject: m.subject }, "message handling failed");
        m.nak(1000);
      });
    }
  }

  private async ingest(m: JsMsg): Promise<void> {
    const parsed = SubmissionSchema.safeParse(safeJson(m));
    if (!parsed.success) {
      this.log.warn({ subject: m.subject }, "dropping an invalid submission");
      return void m.term();
    }
    const sub = parsed.data;
    const open = this.tasks.get(sub.taskId);
    if (open) {
      open.msg = m;
      return;
    }
    const kv = this.nats.kv.tasks;
    let entry = await kv.get(sub.taskId);
    let record: TaskRecord;
    let revision: number;
    if (entry?.operation === "PUT") {
      record = TaskRecordSchema.parse(entry.json());
      revision = entry.revision;
    } else {
      record = newRecord(sub);
      try {
        revision = await kv.create(sub.taskId, JSON.stringify(record));
      } catch {
        entry = await kv.get(sub.taskId);
        if (!entry) throw new Error(`task ${sub.taskId} record vanished`);
        record = TaskRecordSchema.parse(entry.json());
        revision = entry.revision;
      }
    }
    if (isTerminal(record.status)) return void m.ack();
    this.open(record, sub.input, revision, m);
  }

  private open(record: TaskRecord, input: string, revision: number, msg: JsMsg): void {
    const actor = createActor(this.logic, {
      input: {
        record,
        input,
        maxAttempts: this.options.maxAttempts,
        retryBackoffMs: this.options.retryBackoffMs,
        now: () => isoNow(this.clock),
      },
      clock: this.clock,
    });
    let resolveDone: (r: TaskRecord) => void = () => {};
    const done = new Promise<TaskRecord>((r) => {
      resolveDone = r;
    });
    const sessionKey = `${record.tenant}/${record.session}`;
    const t: OpenTask = {
      actor,
      seq: msg.seq,
      sessionKey,
      msg,
      revision,
      written: JSON.stringify(record),
      writing: Promise.resolve(),
      runningSince: this.clock.now(),
      healing: false,
      repair: false,
      avoid: new Set(),
      logTail: [],
      done,
    };
    this.tasks.set(record.taskId, t);
    const queue = this.sessions.get(sessionKey) ?? [];
    let i = queue.length;
    while (i > 0 && this.tasks.get(queue[i - 1]!)!.seq > t.seq) i--;
    queue.splice(i, 0, record.taskId);
    this.sessions.set(sessionKey, queue);

    actor.on("timeline", (e) => {
      // Lost nodes, leases and dispatches are the fleet's failures, not the session's:
      // a retry elsewhere is the whole remedy, and the session's ladder is not climbed.
      if (e.entry.type === "requeued" && !INFRASTRUCTURE_FAILURES.has(e.entry.error?.code ?? "")) {
        this.heal(t, e.entry.attempt, e.entry.error);
      } else if (e.entry.type === "succeeded") this.healer.healthy(record.tenant, record.session);
    });
    actor.on("timeline", (e) => {
      if (e.entry.type === "placed" && e.entry.rung) {
        this.placements[e.entry.rung] = (this.placements[e.entry.rung] ?? 0) + 1;
      }
    });
    actor.on("timeline", (e) =>
      this.publishTimeline({ ...e.entry, taskId: record.taskId, at: isoNow(this.clock) }),
    );
    actor.on("cancelOnNode", (e) => {
      void TaskLease.revoke(this.nats.kv.leases, e.taskId, e.attempt).catch(() => {});
      this.nats.nc
        .request(
          this.nats.subjects.node(e.node, "cancel"),
          JSON.stringify({ taskId: e.taskId, attempt: e.attempt }),
          {
            timeout: 2000,
          },
        )
        .catch((err) =>
          this.log.warn({ err: toErrorInfo(err), taskId: e.taskId }, "cancel on node failed"),
        );
    });
    actor.on("placementRejected", (e) => {
      this.claims.refuse(e.placement);
      this.claims.release(record.taskId);
      this.log.debug({ taskId: record.taskId, reason: e.reason }, "placement refused");
    });
    let lastState: unknown = null;
    actor.subscribe((snap) => {
      if (this.stopped) return;
      if (snap.value === "running" && lastState !== "running") t.runningSince = this.clock.now();
      lastState = snap.value;
      this.persist(t, taskRecordOf(snap));
      if (snap.status === "done") {
        this.claims.release(record.taskId);
        t.writing = t.writing.then(() => this.finish(t, taskRecordOf(snap)));
        void t.writing.then(() => resolveDone(taskRecordOf(snap)));
      } else if (snap.value !== "placing" && snap.value !== "running") {
        this.claims.release(record.taskId);
      }
      this.schedule();
    });
    actor.start();
    if (this.healer.isQuarantined(record.tenant, record.session)) this.quarantineOpen(sessionKey);
  }

  /** Writes the record if it changed, in order, by compare-and-set on its revision. */
  private persist(t: OpenTask, record: TaskRecord): void {
    const json = JSON.stringify(record);
    if (json === t.written) return;
    t.written = json;
    const kv = this.nats.kv.tasks;
    t.writing = t.writing.then(() =>
      this.retry(async () => {
        try {
          t.revision = await kv.update(record.taskId, json, t.revision);
        } catch (err) {
          if (!isCasConflict(err)) throw err;
          // Someone else wrote the record (a previous leader finishing a write): ours is newer.
          this.log.warn({ taskId: record.taskId }, "record revision moved; overwriting");
          t.revision = await kv.put(record.taskId, json);
        }
      }).catch((err) =>
        this.log.error({ err: toErrorInfo(err), taskId: record.taskId }, "record write failed"),
      ),
    );
  }

  /** Retries NATS calls through a disconnect or a server restart, until this term ends. */
  private retry<T>(fn: () => Promise<T>): Promise<T> {
    return retryTransient(fn, {
      clock: this.clock,
      stopped: () => this.stopped || this.nats.nc.isClosed(),
    });
  }

  private async finish(t: OpenTask, record: TaskRecord): Promise<void> {
    const { js, kv, subjects } = this.nats;
    await this.retry(() =>
      js.publish(subjects.result(record.taskId), JSON.stringify(record), { msgID: record.taskId }),
    );
    t.msg?.ack();
    // The task is over: its lease and checkpoints have nothing left to guard.
    await kv.leases.delete(taskLeaseKey(record.taskId)).catch(() => {});
    await kv.checkpoints.delete(record.taskId).catch(() => {});
    this.tasks.delete(record.taskId);
    const queue = this.sessions.get(t.sessionKey);
    if (queue) {
      const i = queue.indexOf(record.taskId);
      if (i >= 0) queue.splice(i, 1);
      if (queue.length === 0) this.sessions.delete(t.sessionKey);
    }
    this.schedule();
  }

  /** Publishes a line of the task's timeline; losing one is logged, never fatal. */
  private publishTimeline(event: TimelineEvent): void {
    const msgID = `${event.taskId}/${event.attempt}/${event.type}`;
    this.nats.js
      .publish(this.nats.subjects.timelineEvent(event.taskId), JSON.stringify(event), { msgID })
      .catch((err) =>
        this.log.warn({ err: toErrorInfo(err), taskId: event.taskId }, "timeline publish failed"),
      );
  }

  /** Keeps the submissions of open tasks from being redelivered while we hold them. */
  private keepAlive(): void {
    for (const t of this.tasks.values()) t.msg?.working();
  }

  // ---- placement ----------------------------------------------------------------------

  private schedule(): void {
    if (this.scheduleQueued || this.stopped) return;
    this.scheduleQueued = true;
    queueMicrotask(() => {
      this.scheduleQueued = false;
      this.placeQueued();
    });
  }

  /** Places the head task of every session that waits, warm placements first. */
  private placeQueued(): void {
    const heads: OpenTask[] = [];
    for (const queue of this.sessions.values()) {
      const head = this.tasks.get(queue[0]!);
      if (head && !head.healing && head.actor.getSnapshot().value === "queued") heads.push(head);
    }
    if (heads.length === 0) return;
    heads.sort((a, b) => {
      const pa = priorityRank(a.actor.getSnapshot().context.record.priority);
      const pb = priorityRank(b.actor.getSnapshot().context.record.priority);
      return pb - pa || a.seq - b.seq;
    });
    const decisions = heads.map((t) => {
      const r = t.actor.getSnapshot().context.record;
      return { t, r };
    });
    // Two passes, so a cold task never takes the idle container a warm session is waiting for.
    for (const warmPass of [true, false]) {
      for (const { t, r } of decisions) {
        if (t.actor.getSnapshot().value !== "queued") continue;
        const d = this.claims.decide(r.tenant, r.session, this.liveness.view, {
          taskId: r.taskId,
          avoid: t.avoid,
        });
        if (d.kind !== "place") continue;
        const warm = d.placement.rung === "warm" || d.placement.rung === "reserved";
        if (warm !== warmPass) continue;
        this.claims.claim(r.taskId, d.placement);
        t.actor.send({ type: "PLACE", placement: d.placement });
      }
    }
  }

  private async dispatch(input: DispatchInput): Promise<DispatchReply> {
    const { record, placement } = input;
    const req: DispatchRequest = {
      ...dispatchRequestOf(input),
      repair: this.tasks.get(record.taskId)?.repair || undefined,
    };
    const open = this.tasks.get(record.taskId);
    if (open) open.repair = false;
    const reply = await this.nats.nc.request(
      this.nats.subjects.node(placement.node, "dispatch"),
      JSON.stringify(req),
      {
        timeout: 5000,
      },
    );
    return DispatchReplySchema.parse(reply.json());
  }

  // ---- node events --------------------------------------------------------------------

  private async applyEvent(m: JsMsg): Promise<void> {
    const parsed = TaskEventSchema.safeParse(safeJson(m));
    if (!parsed.success) return void m.term();
    const ev = parsed.data;
    const t = this.tasks.get(ev.taskId);
    if (!t) {
      const entry = await this.nats.kv.tasks.get(ev.taskId);
      const record = entry?.operation === "PUT" ? TaskRecordSchema.safeParse(entry.json()) : null;
      // Not loaded yet (a new term is replaying intake): try again shortly.
      if (record?.success && !isTerminal(record.data.status)) return void m.nak(250);
      return void m.ack();
    }
    const snap = t.actor.getSnapshot();
    // Finished (its record and result are on their way): late events change nothing.
    if (snap.status !== "active") return void m.ack();
    const state = snap.value;
    // The node may report before we processed its dispatch reply.
    if (state === "placing" || state === "init") return void m.nak(50);
    switch (ev.type) {
      case "started":
        t.actor.send({ type: "STARTED", attempt: ev.attempt, behavior: ev.behavior });
        break;
      case "step":
        t.actor.send({ type: "STEP", attempt: ev.attempt, step: ev.step ?? 0 });
        break;
      case "succeeded":
        t.actor.send({
          type: "SUCCEEDED",
          attempt: ev.attempt,
          output: ev.output ?? "",
          at: ev.at,
        });
        break;
      case "failed":
        t.logTail = ev.logTail ?? [];
        t.actor.send({
          type: "FAILED",
          attempt: ev.attempt,
          error: ev.error ?? { code: "INTERNAL", message: "failed without an error" },
          retryable: ev.retryable ?? false,
          at: ev.at,
        });
        break;
      default:
        break;
    }
    m.ack();
  }

  /** Applies the healing ladder to a lost attempt before the task may be placed again. */
  private heal(t: OpenTask, attempt: number, error: ErrorInfo | undefined): void {
    const r = t.actor.getSnapshot().context.record;
    t.healing = true;
    void this.healer
      .attemptLost({
        tenant: r.tenant,
        session: r.session,
        taskId: r.taskId,
        attempt,
        error: error ?? { code: "INTERNAL", message: "attempt lost" },
        logTail: t.logTail,
      })
      .then(
        (decision) => {
          if (decision === "repair") t.repair = true;
          const died = r.history.find((h) => h.attempt === attempt)?.container;
          if (died && decision !== "quarantined") t.avoid.add(died);
          if (decision === "quarantined") this.quarantineOpen(t.sessionKey);
          const tier = HEALING_TIERS[decision];
          this.publishTimeline({
            type: "healing",
            taskId: r.taskId,
            attempt,
            at: isoNow(this.clock),
            tier: tier.tier,
            message: tier.message,
            ...(error ? { error } : {}),
          });
        },
        (err) => this.log.error({ err: toErrorInfo(err), taskId: r.taskId }, "healing failed"),
      )
      .finally(() => {
        t.healing = false;
        this.schedule();
      });
  }

  /** Fails every task of a quarantined session that is not running now. */
  private quarantineOpen(sessionKey: string): void {
    for (const id of this.sessions.get(sessionKey) ?? []) {
      this.tasks.get(id)?.actor.send({
        type: "QUARANTINE",
        reason: `session ${sessionKey} is quarantined after repeated failures; release it with \`clawfleet session release\``,
      });
    }
  }

  private *runningAttempts(): Iterable<RunningAttempt> {
    for (const t of this.tasks.values()) {
      const snap = t.actor.getSnapshot();
      if (snap.value !== "running") continue;
      const r = snap.context.record;
      yield { taskId: r.taskId, attempt: r.attempts, node: r.node, since: t.runningSince };
    }
  }

  // ---- control requests ---------------------------------------------------------------

  private async cancel(taskId: string): Promise<TaskRecord> {
    const t = this.tasks.get(taskId);
    if (t) {
      t.actor.send({ type: "CANCEL" });
      return t.done;
    }
    return cancelUnopened(this.nats, this.clock, taskId);
  }
}
