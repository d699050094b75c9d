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

/**
 * Ends a task whose record is final: closes its checkpoint log (so an attempt dispatched
 * too late cannot run the turn again), then publishes its result (deduplicated by task
 * id, so a second publish by a later term is dropped). Closing comes first: whatever
 * stops after it, a later term repeats both.
 */
export async function endTask(
  nats: FleetNats,
  record: TaskRecord,
  retry: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<void> {
  await retry(() => CheckpointLog.close(nats.kv.checkpoints, record.taskId));
  await retry(() =>
    nats.js.publish(nats.subjects.result(record.taskId), JSON.stringify(record), {
      msgID: record.taskId,
    }),
  );
}

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
      }).catch((err) => {
        t.writeFailed = true;
        this.log.error({ err: toErrorInfo(err), taskId: record.taskId }, "record write failed");
      }),
    );
  }

  /**
   * After the record's last write: ends the task ({@link endTask}) and acks its
   * submission. When a write failed for good the submission stays unacked: whoever
   * takes it next (this term after the ack wait, or the next leader) finds the record
   * as it is in KV and ends or resumes the task from it. Never rejects: a failure here
   * must not take the process down.
   */
  finish(t: OpenTask, record: TaskRecord): Promise<void> {
    t.writing = t.writing
      .then(async () => {
        if (t.writeFailed) return;
        await endTask(this.nats, record, this.retry);
        t.msg?.ack();
        t.msg = null;
        // Nothing left to guard; the lease bucket's TTL sweeps it should this fail.
        await this.nats.kv.leases.delete(taskLeaseKey(record.taskId)).catch(() => {});
      })
      .catch((err) =>
        this.log.error({ err: toErrorInfo(err), taskId: record.taskId }, "could not end the task"),
      );
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
