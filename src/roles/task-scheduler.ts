/**
 * What the leading orchestrator runs: it takes submissions from the tasks
 * stream, keeps one task actor per open task, places the head task of each
 * session by the preference ladder, applies node events to the actors, and
 * writes every record change to KV. It is rebuilt entirely from NATS when a
 * new leader takes over: unacknowledged submissions are delivered again and
 * each record in KV says where its task stands.
 */
import { AckPolicy, type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import type { Msg, Subscription } from "@nats-io/nats-core";
import { type Actor, createActor, fromPromise } from "xstate";
import type { FleetView } from "../actors/placement-ladder.js";
import {
  type DispatchInput,
  priorityRank,
  taskMachine,
  taskRecordOf,
} from "../actors/task-machine.js";
import { type FleetNats, isNotFound } from "../adapters/fleet-nats.js";
import { type Clock, every, isoNow } from "../clock.js";
import { NotFoundError, toErrorInfo } from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import { isTerminal, type TaskRecord, TaskRecordSchema } from "../protocol/api-schemas.js";
import {
  type DispatchReply,
  DispatchReplySchema,
  type DispatchRequest,
  NodeHeartbeatSchema,
  type OrchestratorStatus,
  type Submission,
  SubmissionSchema,
  TaskEventSchema,
} from "../protocol/fleet-messages.js";
import { PlacementClaims } from "./placement-claims.js";

const NS_PER_MS = 1_000_000;
const INTAKE_ACK_WAIT_MS = 60_000;

interface OpenTask {
  readonly actor: Actor<typeof taskMachine>;
  readonly seq: number;
  readonly sessionKey: string;
  msg: JsMsg | null;
  revision: number;
  written: string;
  writing: Promise<void>;
  readonly done: Promise<TaskRecord>;
}

/** The scheduler of one leadership term. */
export class TaskScheduler {
  private readonly tasks = new Map<string, OpenTask>();
  private readonly sessions = new Map<string, string[]>();
  private readonly view = { nodes: new Map() } satisfies FleetView;
  private readonly lastSeen = new Map<string, number>();
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
    this.logic = taskMachine.provide({
      actors: {
        dispatch: fromPromise<DispatchReply, DispatchInput>(({ input }) => this.dispatch(input)),
      },
    });
  }

  /** Opens the streams and watches and starts placing tasks. */
  async start(): Promise<void> {
    const { nc, subjects } = this.nats;
    this.subs.push(
      nc.subscribe(subjects.ctl("cancel"), {
        queue: "orchestrator",
        callback: (_e, m) => this.onCancel(m),
      }),
    );
    this.subs.push(
      nc.subscribe(subjects.ctl("status"), {
        queue: "orchestrator",
        callback: (_e, m) => this.onStatus(m),
      }),
    );
    await this.watchNodes();
    this.consumers.push(await this.openIntake());
    this.consumers.push(await this.openEvents());
    this.stoppers.push(
      every(this.clock, Math.max(50, this.options.nodeTimeoutMs / 4), () => this.checkNodes()),
    );
    this.stoppers.push(every(this.clock, INTAKE_ACK_WAIT_MS / 3, () => this.keepAlive()));
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
    return { id: this.id, since, queueDepth: queued, running };
  }

  // ---- intake -------------------------------------------------------------------------

  /** (Re)creates the durable intake consumer from its ack floor, so a new term sees every open task at once. */
  private async openIntake(): Promise<ConsumerMessages> {
    const { jsm, js, subjects } = this.nats;
    const stream = subjects.streams.tasks;
    const name = subjects.consumers.tasks;
    let startSeq = 1;
    try {
      const info = await jsm.consumers.info(stream, name);
      startSeq = info.ack_floor.stream_seq + 1;
      await jsm.consumers.delete(stream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await jsm.consumers.add(stream, {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      ack_wait: INTAKE_ACK_WAIT_MS * NS_PER_MS,
      max_ack_pending: 100_000,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: startSeq,
      filter_subject: subjects.tasksWildcard,
    });
    const messages = await (await js.consumers.get(stream, name)).consume({ max_messages: 512 });
    void this.drain(messages, (m) => this.ingest(m));
    return messages;
  }

  private async openEvents(): Promise<ConsumerMessages> {
    const { jsm, js, subjects } = this.nats;
    const stream = subjects.streams.events;
    const name = subjects.consumers.events;
    try {
      await jsm.consumers.info(stream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await jsm.consumers.add(stream, {
        durable_name: name,
        ack_policy: AckPolicy.Explicit,
        ack_wait: 10_000 * NS_PER_MS,
        max_ack_pending: 100_000,
        deliver_policy: DeliverPolicy.All,
        filter_subject: subjects.taskEventsWildcard,
      });
    }
    const messages = await (await js.consumers.get(stream, name)).consume({ max_messages: 512 });
    void this.drain(messages, (m) => this.applyEvent(m));
    return messages;
  }

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
      done,
    };
    this.tasks.set(record.taskId, t);
    const queue = this.sessions.get(sessionKey) ?? [];
    let i = queue.length;
    while (i > 0 && this.tasks.get(queue[i - 1]!)!.seq > t.seq) i--;
    queue.splice(i, 0, record.taskId);
    this.sessions.set(sessionKey, queue);

    actor.on("cancelOnNode", (e) => {
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
    actor.subscribe((snap) => {
      if (this.stopped) return;
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
  }

  /** Writes the record if it changed, in order, by compare-and-set on its revision. */
  private persist(t: OpenTask, record: TaskRecord): void {
    const json = JSON.stringify(record);
    if (json === t.written) return;
    t.written = json;
    const kv = this.nats.kv.tasks;
    t.writing = t.writing.then(async () => {
      try {
        t.revision = await kv.update(record.taskId, json, t.revision);
      } catch (err) {
        // Someone else wrote the record (a previous leader finishing a write): ours is newer.
        this.log.warn(
          { taskId: record.taskId, err: toErrorInfo(err) },
          "record revision moved; overwriting",
        );
        t.revision = await kv.put(record.taskId, json);
      }
    });
  }

  private async finish(t: OpenTask, record: TaskRecord): Promise<void> {
    const { js, subjects } = this.nats;
    await js.publish(subjects.result(record.taskId), JSON.stringify(record), {
      msgID: record.taskId,
    });
    t.msg?.ack();
    this.tasks.delete(record.taskId);
    const queue = this.sessions.get(t.sessionKey);
    if (queue) {
      const i = queue.indexOf(record.taskId);
      if (i >= 0) queue.splice(i, 1);
      if (queue.length === 0) this.sessions.delete(t.sessionKey);
    }
    this.schedule();
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
      if (head && head.actor.getSnapshot().value === "queued") heads.push(head);
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
        const d = this.claims.decide(r.tenant, r.session, this.view);
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
      taskId: record.taskId,
      attempt: input.attempt,
      tenant: record.tenant,
      session: record.session,
      input: input.input,
      timeoutMs: record.timeoutMs,
      rung: placement.rung,
      pool: placement.pool,
      container: placement.container,
    };
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
    const state = t.actor.getSnapshot().value;
    // The node may report before we processed its dispatch reply.
    if (state === "placing" || state === "init") return void m.nak(50);
    switch (ev.type) {
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

  private async watchNodes(): Promise<void> {
    const watch = await this.nats.kv.nodes.watch({ key: ">" });
    this.stoppers.push(() => watch.stop());
    void (async () => {
      for await (const e of watch) {
        if (this.stopped) return;
        if (e.operation !== "PUT") {
          this.nodeLost(e.key);
          continue;
        }
        const hb = NodeHeartbeatSchema.safeParse(safeJson(e));
        if (!hb.success) continue;
        const prev = this.view.nodes.get(hb.data.id);
        if (prev && prev.startedAt === hb.data.startedAt && prev.seq >= hb.data.seq) continue;
        this.view.nodes.set(hb.data.id, hb.data);
        this.lastSeen.set(hb.data.id, this.clock.now());
        this.claims.observe(hb.data);
        this.schedule();
      }
    })();
  }

  /** Declares nodes whose heartbeat went stale lost, and running tasks on unknown nodes orphaned. */
  private checkNodes(): void {
    const now = this.clock.now();
    for (const [id, seen] of this.lastSeen) {
      if (now - seen > this.options.nodeTimeoutMs) this.nodeLost(id);
    }
    if (now - this.leadingSince <= this.options.nodeTimeoutMs) return;
    for (const t of this.tasks.values()) {
      const snap = t.actor.getSnapshot();
      const node = snap.context.record.node;
      if (snap.value === "running" && node && !this.view.nodes.has(node))
        t.actor.send({ type: "NODE_LOST", node });
    }
  }

  private nodeLost(id: string): void {
    const known = this.view.nodes.delete(id);
    this.lastSeen.delete(id);
    if (known) this.log.warn({ node: id }, "node lost");
    for (const t of this.tasks.values()) t.actor.send({ type: "NODE_LOST", node: id });
    this.schedule();
  }

  // ---- control requests ---------------------------------------------------------------

  private onStatus(m: Msg): void {
    m.respond(JSON.stringify(this.status(new Date(this.leadingSince).toISOString())));
  }

  private onCancel(m: Msg): void {
    const reply = (body: unknown) => m.respond(JSON.stringify(body));
    const taskId = (safeJson(m) as { taskId?: unknown } | undefined)?.taskId;
    if (typeof taskId !== "string")
      return void reply({
        ok: false,
        error: { code: "INVALID_REQUEST", message: "taskId required" },
      });
    this.cancel(taskId)
      .then((task) => reply({ ok: true, task }))
      .catch((err) => reply({ ok: false, error: toErrorInfo(err) }));
  }

  private async cancel(taskId: string): Promise<TaskRecord> {
    const t = this.tasks.get(taskId);
    if (t) {
      t.actor.send({ type: "CANCEL" });
      return t.done;
    }
    const kv = this.nats.kv.tasks;
    const entry = await kv.get(taskId);
    if (entry?.operation !== "PUT") throw new NotFoundError(`no task ${taskId}`);
    const record = TaskRecordSchema.parse(entry.json());
    if (isTerminal(record.status)) return record;
    // Submitted but not taken in yet: end it here; intake will find it finished.
    const canceled: TaskRecord = {
      ...record,
      status: "canceled",
      finishedAt: isoNow(this.clock),
      error: { code: "CANCELED", message: "canceled by request" },
    };
    await kv.update(taskId, JSON.stringify(canceled), entry.revision);
    await this.nats.js.publish(this.nats.subjects.result(taskId), JSON.stringify(canceled), {
      msgID: taskId,
    });
    return canceled;
  }
}

function newRecord(sub: Submission): TaskRecord {
  return {
    taskId: sub.taskId,
    tenant: sub.tenant,
    session: sub.session,
    status: "queued",
    priority: sub.priority,
    attempts: 0,
    steps: 0,
    timeoutMs: sub.timeoutMs,
    createdAt: sub.createdAt,
    history: [],
  };
}

function safeJson(m: { json<T>(): T }): unknown {
  try {
    return m.json();
  } catch {
    return undefined;
  }
}
