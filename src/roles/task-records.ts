/**
 * Small pieces of the task record's life outside a task actor: the record of a
 * fresh submission, and the cancel of a task submitted but not yet taken in.
 */
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { type Clock, isoNow } from "../clock.js";
import { ErrorCodes, NotFoundError } from "../errors.js";
import { isTerminal, type TaskRecord, TaskRecordSchema } from "../protocol/api-schemas.js";
import type { Submission } from "../protocol/fleet-messages.js";

/** The record of a submission nobody recorded yet (a raw publish, or an expired record). */
export function newRecord(sub: Submission): TaskRecord {
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

/**
 * Cancels a task the leader holds no actor for: finished ones are answered as they are;
 * one submitted but not taken in yet is ended here, and intake will find it finished.
 */
export async function cancelUnopened(
  nats: FleetNats,
  clock: Clock,
  taskId: string,
): Promise<TaskRecord> {
  const kv = nats.kv.tasks;
  const entry = await kv.get(taskId);
  if (entry?.operation !== "PUT") throw new NotFoundError(`no task ${taskId}`);
  const record = TaskRecordSchema.parse(entry.json());
  if (isTerminal(record.status)) return record;
  const canceled: TaskRecord = {
    ...record,
    status: "canceled",
    finishedAt: isoNow(clock),
    error: { code: ErrorCodes.CANCELED, message: "canceled by request" },
  };
  await kv.update(taskId, JSON.stringify(canceled), entry.revision);
  await nats.js.publish(nats.subjects.result(taskId), JSON.stringify(canceled), { msgID: taskId });
  return canceled;
}

/** A message's JSON body, or undefined when it is not JSON. */
export function safeJson(m: { json<T>(): T }): unknown {
  try {
    return m.json();
  } catch {
    return undefined;
  }
}
