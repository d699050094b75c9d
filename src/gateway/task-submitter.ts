/**
 * Turns a validated request into a durable task: the record goes into the task
 * bucket (created only once per task id), the submission into the tasks stream
 * with the task id as message id. An idempotency key maps to one task id, so
 * the same key submitted twice yields the same task and one execution.
 */
import { createHash, randomBytes } from "node:crypto";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { type Clock, isoNow } from "../clock.js";
import { ErrorCodes, ValidationError } from "../errors.js";
import {
  isTerminal,
  MAX_INPUT_BYTES,
  type ParsedSubmitRequest,
  type TaskRecord,
  TaskRecordSchema,
} from "../protocol/api-schemas.js";
import type { Submission, TimelineEvent } from "../protocol/fleet-messages.js";

/** The task id an idempotency key stands for, stable across gateways and restarts. */
export function taskIdForKey(tenant: string, key: string): string {
  return `t${createHash("sha256").update(`${tenant}\u0000${key}`).digest("hex").slice(0, 26)}`;
}

/** A fresh, roughly time-ordered task id. */
export function newTaskId(clock: Clock): string {
  return `t${clock.now().toString(36).padStart(9, "0")}${randomBytes(9).toString("hex")}`;
}

/** Submits tasks for the gateway. */
export class TaskSubmitter {
  constructor(
    private readonly nats: FleetNats,
    private readonly clock: Clock,
  ) {}

  /** The id `req` will get (so a caller can subscribe to its result first). */
  taskIdFor(req: ParsedSubmitRequest): string {
    return req.idempotencyKey
      ? taskIdForKey(req.tenant, req.idempotencyKey)
      : newTaskId(this.clock);
  }

  /** Stores and enqueues the task; for a known idempotency key, returns the existing record. */
  async submit(req: ParsedSubmitRequest, taskId = this.taskIdFor(req)): Promise<TaskRecord> {
    const bytes = Buffer.byteLength(req.input, "utf8");
    if (bytes > MAX_INPUT_BYTES) {
      throw new ValidationError(`input is ${bytes} bytes; the limit is ${MAX_INPUT_BYTES}`, {
        code: ErrorCodes.INPUT_TOO_LARGE,
      });
    }
    const createdAt = isoNow(this.clock);
    let record: TaskRecord = {
      taskId,
      tenant: req.tenant,
      session: req.session,
      status: "queued",
      priority: req.priority,
      attempts: 0,
      steps: 0,
      idempotencyKey: req.idempotencyKey,
      timeoutMs: req.timeoutMs,
      createdAt,
      history: [],
    };
    const kv = this.nats.kv.tasks;
    let created = false;
    try {
      await kv.create(taskId, JSON.stringify(record));
      created = true;
    } catch (err) {
      const existing = await kv.get(taskId);
      if (existing?.operation !== "PUT") throw err;
      record = TaskRecordSchema.parse(existing.json());
      // A finished duplicate needs nothing; an open one is re-published in case the
      // first submit died between the record and the stream (the stream drops a duplicate).
      if (isTerminal(record.status)) return record;
    }
    const submission: Submission = {
      taskId,
      tenant: record.tenant,
      session: record.session,
      input: req.input,
      priority: record.priority,
      timeoutMs: record.timeoutMs,
      createdAt: record.createdAt,
    };
    if (created) {
      // First in the task's timeline, so it is published before the task can be placed.
      const line: TimelineEvent = {
        type: "submitted",
        taskId,
        attempt: 0,
        at: createdAt,
        message: `${record.tenant}/${record.session}`,
      };
      await this.nats.js.publish(this.nats.subjects.timelineEvent(taskId), JSON.stringify(line), {
        msgID: `${taskId}/0/submitted`,
      });
    }
    await this.nats.js.publish(
      this.nats.subjects.task(record.tenant, record.session),
      JSON.stringify(submission),
      { msgID: taskId },
    );
    return record;
  }

  /** The stored record of a task, or null. */
  async get(taskId: string): Promise<TaskRecord | null> {
    const entry = await this.nats.kv.tasks.get(taskId).catch(() => null);
    if (entry?.operation !== "PUT") return null;
    return TaskRecordSchema.parse(entry.json());
  }
}
