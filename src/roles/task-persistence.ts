/**
 * Where a task actor's state becomes durable: its record in KV (written in
 * order, by compare-and-set on the revision), its timeline lines on the events
 * stream, and at its end the result on the results subject, after which the
 * submission is acked and the task's lease and checkpoint log are removed.
 *
 * The actor's snapshot is never the durable record: a new leader rebuilds each
 * actor from what is written here.
 */
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { isCasConflict } from "../adapters/nats/nats-retry.js";
import { CheckpointLog } from "../adapters/records/checkpoint-log.js";
import { taskLeaseKey } from "../adapters/records/task-lease.js";
import { toErrorInfo } from "../errors.js";
import type { Logger } from "../logger.js";
import type { TaskRecord } from "../protocol/api-schemas.js";
import type { TimelineEvent } from "../protocol/fleet-messages.js";
import type { OpenTask } from "./open-tasks.js";

/** Writes of one term; `retry` rides out NATS outages until the term ends. */
export class TaskPersistence {
  constructor(
    private readonly nats: FleetNats,
    private readonly retry: <T>(fn: () => Promise<T>) => Promise<T>,
    private readonly log: Logger,
  ) {}

  /** Writes the record if it changed, after the task's earlier writes. */
  persist(t: OpenTask, record: TaskRecord): void {
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

  /** After the record's last write: publishes the result, acks, and clears the task's guards. */
  finish(t: OpenTask, record: TaskRecord): Promise<void> {
    t.writing = t.writing.then(async () => {
      const { js, kv, subjects } = this.nats;
      await this.retry(() =>
        js.publish(subjects.result(record.taskId), JSON.stringify(record), {
          msgID: record.taskId,
        }),
      );
      t.msg?.ack();
      t.msg = null;
      // The task is over: its lease has nothing left to guard, and its checkpoint log is
      // closed, so an attempt dispatched too late cannot run the turn again.
      await kv.leases.delete(taskLeaseKey(record.taskId)).catch(() => {});
      await this.retry(() => CheckpointLog.close(kv.checkpoints, record.taskId)).catch((err) =>
        this.log.warn({ err: toErrorInfo(err), taskId: record.taskId }, "checkpoint close failed"),
      );
    });
    return t.writing;
  }

  /** Publishes a line of the task's timeline; losing one is logged, never fatal. */
  publishTimeline(event: TimelineEvent): void {
    const msgID = `${event.taskId}/${event.attempt}/${event.type}`;
    this.nats.js
      .publish(this.nats.subjects.timelineEvent(event.taskId), JSON.stringify(event), { msgID })
      .catch((err) =>
        this.log.warn({ err: toErrorInfo(err), taskId: event.taskId }, "timeline publish failed"),
      );
  }
}
