/**
 * What the leading orchestrator runs: it takes submissions from the tasks
 * stream, keeps one task actor per open task, places the head task of each
 * session by the preference ladder, applies node events to the actors, and
 * writes every record change to KV. It is rebuilt entirely from NATS when a
 * new leader takes over: unacknowledged submissions are delivered again and
 * each record in KV says where its task stands.
 *
 * This module wires the term's parts together; each concern has its own:
 * intake (`task-intake`), the open tasks and session queues (`open-tasks`),
 * records, results and timelines (`task-persistence`), placement
 * (`task-placer`), node reports (`node-events`) and healing (`task-healing`).
 * Every decision about a task is its actor's (`actors/task-machine`).
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/nats-core";
import { createActor, fromPromise } from "xstate";
import { type DispatchInput, taskMachine, taskRecordOf } from "../actors/task-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { retryTransient } from "../adapters/nats/nats-retry.js";
import { TaskLease } from "../adapters/records/task-lease.js";
import { type Clock, every, isoNow } from "../clock.js";
import { toErrorInfo } from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import type { TaskRecord } from "../protocol/api-schemas.js";
import type { DispatchReply, OrchestratorStatus } from "../protocol/fleet-messages.js";
import { Healer } from "../supervisor/healer.js";
import { serveControlRequests } from "./control-requests.js";
import { INTAKE_ACK_WAIT_MS, openEvents, openIntake } from "./durable-consumers.js";
import { LivenessMonitor, type RunningAttempt } from "./liveness-monitor.js";
import { applyNodeEvent } from "./node-events.js";
import { type OpenTask, OpenTasks } from "./open-tasks.js";
import { PlacementClaims } from "./placement-claims.js";
import { startSnapshotJanitor } from "./snapshot-janitor.js";
import { heal, quarantineOpen, type TaskHealingDeps } from "./task-healing.js";
import { drainConsumer, type Intake, loadSubmission, parseSubmission } from "./task-intake.js";
import { TaskPersistence } from "./task-persistence.js";
import { TaskPlacer } from "./task-placer.js";
import { cancelUnopened } from "./task-records.js";

/** The scheduler of one leadership term. */
export class TaskScheduler {
  private readonly tasks = new OpenTasks();
  private readonly liveness: LivenessMonitor;
  private readonly healer: Healer;
  private readonly claims = new PlacementClaims();
  private readonly placer: TaskPlacer;
  private readonly records: TaskPersistence;
  private readonly healing: TaskHealingDeps;
  private readonly stoppers: Array<() => void> = [];
  private readonly subs: Subscription[] = [];
  private consumers: ConsumerMessages[] = [];
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
    this.records = new TaskPersistence(nats, (fn) => this.retry(fn), log);
    this.healing = {
      healer: this.healer,
      tasks: this.tasks,
      publishTimeline: (ev) => this.records.publishTimeline(ev),
      clock,
      log,
    };
    this.liveness = new LivenessMonitor(nats, options, clock, log, {
      nodeSeen: (hb) => {
        this.claims.observe(hb);
        this.placer.schedule();
      },
      nodeLost: (node) => {
        for (const t of this.tasks.values()) t.actor.send({ type: "NODE_LOST", node });
        this.placer.schedule();
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
    this.placer = new TaskPlacer(nats, this.tasks, this.claims, () => this.liveness.view);
    this.logic = taskMachine.provide({
      actors: {
        dispatch: fromPromise<DispatchReply, DispatchInput>(({ input }) =>
          this.placer.dispatch(input),
        ),
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
      if (on) quarantineOpen(this.tasks, `${tenant}/${session}`);
      this.placer.schedule();
    });
    this.stoppers.push(() => this.healer.stop());
    await this.liveness.start();
    this.stoppers.push(() => this.liveness.stop());
    const intake = await openIntake(this.nats);
    this.consumers.push(intake);
    const stopped = () => this.stopped;
    void drainConsumer(intake, (m) => this.ingest(m), stopped, this.log);
    const events = await openEvents(this.nats);
    this.consumers.push(events);
    void drainConsumer(events, (m) => applyNodeEvent(this.nats, this.tasks, m), stopped, this.log);
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
    this.placer.stop();
    for (const s of this.stoppers) s();
    for (const s of this.subs) s.unsubscribe();
    await Promise.allSettled(this.consumers.map((c) => c.close()));
    await Promise.allSettled([...this.tasks.values()].map((t) => t.writing));
    for (const t of this.tasks.values()) t.actor.stop();
    this.tasks.clear();
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
      placements: { ...this.placer.placements },
      sessions: this.healer
        .view()
        .map((v) => ({ ...v, history: v.history.map((h) => ({ ...h })) })),
    };
  }

  /** Opens a task for a submission, unless it is open already or over. */
  private async ingest(m: JsMsg): Promise<void> {
    const sub = parseSubmission(m, this.log);
    if (!sub) return;
    const open = this.tasks.get(sub.taskId);
    if (open) {
      // Redelivered while we hold it: ack the newest copy when the task ends.
      open.msg = m;
      return;
    }
    const intake = await loadSubmission(this.nats, m, sub, (fn) => this.retry(fn));
    if (intake) this.open(intake, m);
  }

  private open({ record, input, revision }: Intake, msg: JsMsg): void {
    const actor = createActor(this.logic, {
      input: {
        record,
        input,
        maxAttempts: this.options.maxAttempts,
        retryBackoffMs: this.options.retryBackoffMs,
        now: () => isoNow(this.clock),
        supervised: true,
      },
      clock: this.clock,
    });
    let resolveDone: (r: TaskRecord) => void = () => {};
    const t: OpenTask = {
      actor,
      seq: msg.seq,
      sessionKey: `${record.tenant}/${record.session}`,
      msg,
      revision,
      written: JSON.stringify(record),
      writing: Promise.resolve(),
      writeFailed: false,
      runningSince: this.clock.now(),
      done: new Promise<TaskRecord>((r) => {
        resolveDone = r;
      }),
    };
    this.tasks.add(record.taskId, t);

    actor.on("timeline", (e) => {
      if (e.entry.type === "placed" && e.entry.rung) this.placer.placed(e.entry.rung);
      if (e.entry.type === "succeeded") this.healer.healthy(record.tenant, record.session);
      this.records.publishTimeline({ ...e.entry, taskId: record.taskId, at: isoNow(this.clock) });
    });
    actor.on("heal", (e) => {
      void heal(this.healing, actor, e.lost);
    });
    actor.on("cancelOnNode", (e) => this.cancelOnNode(e.node, e.taskId, e.attempt));
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
      const current = taskRecordOf(snap);
      this.records.persist(t, current);
      if (snap.status === "done") {
        this.claims.release(record.taskId);
        // Ended or not (see `finish`), this term is done with it: a submission left unacked
        // comes back to whoever leads after the ack wait.
        void this.records.finish(t, current).then(() => {
          this.tasks.remove(record.taskId);
          resolveDone(current);
          this.placer.schedule();
        });
      } else if (snap.value !== "placing" && snap.value !== "running") {
        this.claims.release(record.taskId);
      }
      this.placer.schedule();
    });
    actor.start();
    if (this.healer.isQuarantined(record.tenant, record.session)) {
      quarantineOpen(this.tasks, t.sessionKey);
    }
  }

  /** Asks a node to stop an attempt; the lease goes first, so the attempt stops either way. */
  private cancelOnNode(node: string, taskId: string, attempt: number): void {
    void TaskLease.revoke(this.nats.kv.leases, taskId, attempt).catch(() => {});
    this.nats.nc
      .request(this.nats.subjects.node(node, "cancel"), JSON.stringify({ taskId, attempt }), {
        timeout: 2000,
      })
      .catch((err) => this.log.warn({ err: toErrorInfo(err), taskId }, "cancel on node failed"));
  }

  /** Retries NATS calls through a disconnect or a server restart, until this term ends. */
  private retry<T>(fn: () => Promise<T>): Promise<T> {
    return retryTransient(fn, {
      clock: this.clock,
      stopped: () => this.stopped || this.nats.nc.isClosed(),
    });
  }

  /** Keeps the submissions of open tasks from being redelivered while we hold them. */
  private keepAlive(): void {
    for (const t of this.tasks.values()) t.msg?.working();
  }

  private *runningAttempts(): Iterable<RunningAttempt> {
    for (const t of this.tasks.values()) {
      const snap = t.actor.getSnapshot();
      if (snap.value !== "running") continue;
      const r = snap.context.record;
      yield { taskId: r.taskId, attempt: r.attempts, node: r.node, since: t.runningSince };
    }
  }

  private async cancel(taskId: string): Promise<TaskRecord> {
    const t = this.tasks.get(taskId);
    if (t) {
      t.actor.send({ type: "CANCEL" });
      return t.done;
    }
    return cancelUnopened(this.nats, this.clock, taskId);
  }
}
