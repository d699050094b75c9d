/**
 * The simulated orchestrator: the real task machine, one actor per task on the simulated
 * clock, with its `dispatch` actor provided (a request to the simulated node after
 * `dispatchLatencyMs`), driven the way `TaskScheduler` drives it (`src/roles/task-scheduler.ts`):
 *
 * - a session's tasks run one at a time, in submit order (a queue per session);
 * - only a session's head task is placed; heads are sorted by priority, then submit order;
 * - a placement pass runs after every task or fleet change (coalesced in a microtask);
 * - claims are taken on `PLACE`, dropped when the task leaves `placing`/`running` or a
 *   heartbeat shows the container running it; a refusal marks the target until the next
 *   heartbeat;
 * - the ladder places warm rungs in a pass before the cold ones.
 *
 * Without NATS there is nothing to persist: records live only in the actors.
 */
import { type Actor, createActor, fromPromise } from "xstate";
import {
  type DispatchInput,
  dispatchRequestOf,
  priorityRank,
  taskMachine,
  taskRecordOf,
} from "../actors/task-machine.js";
import { type Clock, isoNow } from "../clock.js";
import type { TaskRecord } from "../protocol/api-schemas.js";
import type { DispatchReply, NodeHeartbeat } from "../protocol/fleet-messages.js";
import type { Recorder } from "./metrics.js";
import type { PlacementPolicy } from "./policies.js";
import type { SimNode } from "./sim-node.js";
import type { ResolvedSimOptions } from "./sim-options.js";
import type { SimMessage } from "./workload.js";

interface OpenTask {
  readonly actor: Actor<typeof taskMachine>;
  readonly seq: number;
  readonly sessionKey: string;
}

/** Defaults of the real fleet for retries (never needed here: simulated agents do not fail). */
const MAX_ATTEMPTS = 5;
const RETRY_BACKOFF_MS = 500;

/** One orchestrator term over one simulated node, placing with one policy. */
export class SimOrchestrator {
  private readonly tasks = new Map<string, OpenTask>();
  private readonly sessions = new Map<string, string[]>();
  private readonly nodes = new Map<string, NodeHeartbeat>();
  private readonly view = { nodes: this.nodes };
  private readonly logic;
  private seq = 0;
  private running = 0;
  private scheduleQueued = false;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly o: ResolvedSimOptions,
    private readonly node: SimNode,
    private readonly policy: PlacementPolicy,
    private readonly recorder: Recorder,
  ) {
    this.logic = taskMachine.provide({
      actors: {
        dispatch: fromPromise<DispatchReply, DispatchInput>(
          ({ input }) =>
            new Promise((resolve) => {
              this.clock.setTimeout(() => resolve(this.dispatch(input)), this.o.dispatchLatencyMs);
            }),
        ),
      },
    });
  }

  /** Tasks submitted and not finished. */
  get open(): number {
    return this.tasks.size;
  }

  /** A user sent a message: a new task. */
  submit(m: SimMessage): void {
    const record: TaskRecord = {
      taskId: m.taskId,
      tenant: m.tenant,
      session: m.session,
      status: "queued",
      priority: "normal",
      attempts: 0,
      steps: 0,
      createdAt: isoNow(this.clock),
      history: [],
    };
    const actor = createActor(this.logic, {
      input: {
        record,
        input: "",
        maxAttempts: MAX_ATTEMPTS,
        retryBackoffMs: RETRY_BACKOFF_MS,
        now: () => isoNow(this.clock),
      },
      clock: this.clock,
    });
    const sessionKey = `${m.tenant}/${m.session}`;
    const t: OpenTask = { actor, seq: ++this.seq, sessionKey };
    this.tasks.set(m.taskId, t);
    const queue = this.sessions.get(sessionKey) ?? [];
    queue.push(m.taskId); // submit order is seq order: append
    this.sessions.set(sessionKey, queue);
    this.recorder.submitted(m);

    actor.on("placementRejected", (e) => {
      this.policy.refuse(e.placement);
      this.policy.release(m.taskId);
      this.node.periodicHeartbeat();
      this.recorder.refusal();
    });
    let last: unknown = "queued";
    actor.subscribe((snap) => {
      if (this.stopped) return;
      const value = snap.value;
      if (value === "running" && last !== "running") {
        this.running++;
        const r = snap.context.record;
        this.policy.accepted(m.taskId, r.container ?? "");
        this.recorder.placed(m.taskId, r.rung ?? "idle", r.container ?? "");
      } else if (last === "running" && value !== "running") this.running--;
      last = value;
      if (snap.status === "done") {
        this.policy.release(m.taskId);
        this.finish(t, m.taskId, taskRecordOf(snap));
      } else if (value !== "placing" && value !== "running") {
        this.policy.release(m.taskId);
      }
      this.recorder.queueDepth(this.tasks.size - this.running);
      this.schedule();
    });
    actor.start();
    this.recorder.queueDepth(this.tasks.size - this.running);
  }

  /** A heartbeat arrived: the fleet view and the claims are current again. */
  heartbeat(hb: NodeHeartbeat): void {
    this.nodes.set(hb.id, hb);
    this.policy.observe(hb);
    this.schedule();
  }

  /** A node event (`started`, `succeeded`) for a task's attempt. */
  started(taskId: string, attempt: number): void {
    this.tasks.get(taskId)?.actor.send({ type: "STARTED", attempt });
  }

  succeeded(taskId: string, attempt: number): void {
    this.tasks
      .get(taskId)
      ?.actor.send({ type: "SUCCEEDED", attempt, output: "", at: isoNow(this.clock) });
  }

  /** Stops every task actor (the run is over). */
  stop(): void {
    this.stopped = true;
    for (const t of this.tasks.values()) t.actor.stop();
  }

  private finish(t: OpenTask, taskId: string, record: TaskRecord): void {
    this.tasks.delete(taskId);
    const queue = this.sessions.get(t.sessionKey);
    if (queue) {
      const i = queue.indexOf(taskId);
      if (i >= 0) queue.splice(i, 1);
      if (queue.length === 0) this.sessions.delete(t.sessionKey);
    }
    this.recorder.finished(taskId, record.status);
  }

  private schedule(): void {
    if (this.scheduleQueued || this.stopped) return;
    this.scheduleQueued = true;
    queueMicrotask(() => {
      this.scheduleQueued = false;
      if (!this.stopped) this.placeQueued();
    });
  }

  /** Places the head task of every session that waits (as `TaskScheduler.placeQueued`). */
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
    const passes = this.policy.warmFirst ? [true, false] : [null];
    for (const warmPass of passes) {
      for (const t of heads) {
        if (t.actor.getSnapshot().value !== "queued") continue;
        const r = t.actor.getSnapshot().context.record;
        const d = this.policy.decide(r.tenant, r.session, this.view);
        if (d.kind !== "place") continue;
        const warm = d.placement.rung === "warm" || d.placement.rung === "reserved";
        if (warmPass !== null && warm !== warmPass) continue;
        this.policy.claim(r.taskId, d.placement, r.tenant, r.session);
        t.actor.send({ type: "PLACE", placement: d.placement });
      }
    }
  }

  private dispatch(input: DispatchInput): DispatchReply {
    return this.node.dispatch(dispatchRequestOf(input));
  }
}
