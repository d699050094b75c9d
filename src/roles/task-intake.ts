/**
 * Intake: a submission from the tasks stream becomes an open task. The record
 * in KV is created on first sight (compare-and-set, so two leaders of
 * overlapping terms agree on one) or reloaded as it stands; a task that has
 * already ended is acked and never opened again. Invalid submissions are
 * terminated, not retried: no redelivery can make them valid.
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { isCasConflict } from "../adapters/nats/nats-retry.js";
import { InternalError, toErrorInfo } from "../errors.js";
import type { Logger } from "../logger.js";
import { isTerminal, type TaskRecord, TaskRecordSchema } from "../protocol/api-schemas.js";
import { type Submission, SubmissionSchema } from "../protocol/fleet-messages.js";
import { endTask } from "./task-persistence.js";
import { newRecord, safeJson } from "./task-records.js";

/** A submission to open: its record as it stands, its input and the record's revision. */
export interface Intake {
  readonly record: TaskRecord;
  readonly input: string;
  readonly revision: number;
}

/** The submission a message carries, or null after terminating an invalid one. */
export function parseSubmission(m: JsMsg, log: Logger): Submission | null {
  const parsed = SubmissionSchema.safeParse(safeJson(m));
  if (parsed.success) return parsed.data;
  log.warn({ subject: m.subject }, "dropping an invalid submission");
  m.term();
  return null;
}

/**
 * The record of a submission, created on first sight. Resolves with what to open,
 * or null when the task has already ended: then its end is made sure of (the term
 * that ended it may have stopped between the record and the result) and the
 * submission acked.
 */
export async function loadSubmission(
  nats: FleetNats,
  m: JsMsg,
  sub: Submission,
  retry: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<Intake | null> {
  const kv = nats.kv.tasks;
  const entry = await kv.get(sub.taskId);
  let intake: Intake;
  if (entry?.operation === "PUT") {
    intake = {
      record: TaskRecordSchema.parse(entry.json()),
      input: sub.input,
      revision: entry.revision,
    };
  } else {
    const record = newRecord(sub);
    try {
      intake = {
        record,
        input: sub.input,
        revision: await kv.create(sub.taskId, JSON.stringify(record)),
      };
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      // Created meanwhile (another term's intake): take it as it is.
      const now = await kv.get(sub.taskId);
      if (now?.operation !== "PUT") {
        throw new InternalError(`task ${sub.taskId}: record created and gone again`);
      }
      intake = {
        record: TaskRecordSchema.parse(now.json()),
        input: sub.input,
        revision: now.revision,
      };
    }
  }
  if (isTerminal(intake.record.status)) {
    await endTask(nats, intake.record, retry);
    m.ack();
    return null;
  }
  return intake;
}

/**
 * Hands every message of a durable consumer to `handle`, one at a time, until
 * `stopped()`; a message whose handling failed is redelivered after a second.
 */
export async function drainConsumer(
  messages: ConsumerMessages,
  handle: (m: JsMsg) => Promise<void>,
  stopped: () => boolean,
  log: Logger,
): Promise<void> {
  for await (const m of messages) {
    if (stopped()) return;
    await handle(m).catch((err) => {
      log.error({ err: toErrorInfo(err), subject: m.subject }, "message handling failed");
      m.nak(1000);
    });
  }
}
