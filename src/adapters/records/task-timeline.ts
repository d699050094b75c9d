/**
 * One task's timeline, read back from the events stream (`<PREFIX>_EVENTS`).
 *
 * Two kinds of lines share the stream: what nodes report about an attempt
 * (`<prefix>.events.task.<taskId>`: started, step, effect, log, succeeded,
 * failed) and what the gateway and orchestrator decided (`<prefix>.events.timeline.<taskId>`:
 * submitted, placed, requeued, succeeded, failed, canceled). One wildcard,
 * `<prefix>.events.*.<taskId>`, covers both, so a single ordered consumer with
 * that one filter subject (all nats-server 2.9 supports) reads them in stream
 * order, each validated and tagged with its source and stream sequence.
 *
 * Stream order is the order the server stored the lines in, which is causal for
 * almost every pair (a node's `failed` before the orchestrator's `requeued`, a
 * node's `succeeded` before the orchestrator's). One pair is a race: the node
 * starts a turn on a warm container before it answers the dispatch, and the
 * orchestrator publishes `placed` only on that answer, so a node's `started` can
 * be stored before `placed`. {@link TimelineOrder} restores the causal order:
 * a node's line of attempt n is shown after the fleet's first line of attempt n
 * (after `placed`, or before the `requeued`/`failed`/`canceled` that ended an
 * attempt whose dispatch went unanswered). Every line keeps its `seq`, so the
 * raw stream order stays visible.
 */
import { DeliverPolicy } from "@nats-io/jetstream";
import { z } from "zod";
import { TaskStatusSchema } from "../../protocol/api-schemas.js";
import { TaskEventSchema, TimelineEventSchema } from "../../protocol/fleet-messages.js";
import type { FleetSubjects } from "../../protocol/fleet-subjects.js";
import type { FleetNats } from "../nats/fleet-nats.js";

/** A node's line (`<prefix>.events.task.<taskId>`). */
export const NodeTimelineItemSchema = TaskEventSchema.extend({
  source: z.literal("node"),
  /** Stream sequence; absent on a line a watcher saw live, before it was read back. */
  seq: z.number().int().positive().optional(),
});
/** A gateway's or orchestrator's line (`<prefix>.events.timeline.<taskId>`). */
export const FleetTimelineItemSchema = TimelineEventSchema.extend({
  source: z.literal("fleet"),
  seq: z.number().int().positive().optional(),
});
/** One line of a task's timeline as `fleet.api.timeline` answers it. */
export const TimelineItemSchema = z.discriminatedUnion("source", [
  NodeTimelineItemSchema,
  FleetTimelineItemSchema,
]);
export type TimelineItem = z.infer<typeof TimelineItemSchema>;

/** The reply body of `fleet.api.timeline` (besides `ok`). */
export const TaskTimelineSchema = z.object({
  taskId: z.string(),
  /** The task record's status; absent when the record has expired but lines remain. */
  status: TaskStatusSchema.optional(),
  events: z.array(TimelineItemSchema),
});
export type TaskTimeline = z.infer<typeof TaskTimelineSchema>;

/** Task ids are one subject token; anything else has no events (and no wildcard may leak in). */
const TASK_TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/** Whether `taskId` can name a task's events (one subject token). */
export function isTaskIdToken(taskId: string): boolean {
  return TASK_TOKEN.test(taskId);
}

/** Whether this line ends the task: the orchestrator's (or gateway's) succeeded, failed or canceled. */
export function isTerminalItem(item: TimelineItem): boolean {
  return (
    item.source === "fleet" &&
    (item.type === "succeeded" || item.type === "failed" || item.type === "canceled")
  );
}

/**
 * Identity of a line, the same whether it was read from the stream or seen live
 * on the core subject: publishers stamp every line with its `at`, and the
 * stream's message-id dedupe keeps one copy per source/type/attempt/step.
 */
export function timelineKey(item: TimelineItem): string {
  const step = item.source === "node" ? (item.step ?? 0) : 0;
  const call = item.source === "node" && item.call !== undefined ? `.${item.call}` : "";
  return `${item.source}/${item.type}/${item.attempt}/${step}${call}/${item.at}`;
}

/**
 * Parses one message of `<prefix>.events.{task|timeline}.<taskId>`; null when it
 * is not a valid line of `taskId` (a malformed line never breaks a timeline).
 */
export function parseTimelineMessage(
  subjects: FleetSubjects,
  taskId: string,
  subject: string,
  data: Uint8Array,
  seq?: number,
): TimelineItem | null {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(data));
  } catch {
    return null;
  }
  const withSeq = seq === undefined ? {} : { seq };
  if (subject === subjects.taskEvent(taskId)) {
    const r = TaskEventSchema.safeParse(body);
    if (!r.success || r.data.taskId !== taskId) return null;
    return { ...r.data, source: "node", ...withSeq };
  }
  if (subject === subjects.timelineEvent(taskId)) {
    const r = TimelineEventSchema.safeParse(body);
    if (!r.success || r.data.taskId !== taskId) return null;
    return { ...r.data, source: "fleet", ...withSeq };
  }
  return null;
}

/**
 * Puts lines into causal order as they arrive (see the module comment): a
 * node's line of an attempt the fleet has not spoken of yet is held until the
 * fleet's first line of that attempt. Everything else passes straight through.
 */
export class TimelineOrder {
  private fleetAttempt = -1;
  private held: TimelineItem[] = [];

  /** The lines to show now, in order, after `item` arrived. */
  push(item: TimelineItem): TimelineItem[] {
    if (item.source === "node") {
      if (item.attempt <= this.fleetAttempt) return [item];
      this.held.push(item);
      return [];
    }
    this.fleetAttempt = Math.max(this.fleetAttempt, item.attempt);
    const before: TimelineItem[] = [];
    const after: TimelineItem[] = [];
    const keep: TimelineItem[] = [];
    for (const h of this.held) {
      if (h.attempt > item.attempt) keep.push(h);
      else if (h.attempt === item.attempt && item.type === "placed") after.push(h);
      else before.push(h);
    }
    this.held = keep;
    return [...before, item, ...after];
  }

  /** Lines still held (their fleet line never came): shown in stream order. */
  flush(): TimelineItem[] {
    const rest = this.held;
    this.held = [];
    return rest;
  }
}

/** Lines in stream order → lines in causal order (see {@link TimelineOrder}). */
export function orderTimeline(items: readonly TimelineItem[]): TimelineItem[] {
  const order = new TimelineOrder();
  return [...items.flatMap((i) => order.push(i)), ...order.flush()];
}

type TimelineNats = Pick<FleetNats, "js" | "subjects">;

/** An ordered consumer on the events stream, filtered to one task, from its first line. */
async function taskConsumer(nats: TimelineNats, taskId: string) {
  return nats.js.consumers.get(nats.subjects.streams.events, {
    // A string (not an array) becomes `filter_subject`, which nats-server 2.9 understands.
    filter_subjects: nats.subjects.taskHistory(taskId),
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: 30_000,
  });
}

/**
 * Every line of `taskId`'s timeline stored so far, in causal order (each with its
 * stream `seq`). An unknown task (or an id that is not a subject token) has none.
 */
export async function readTimeline(nats: TimelineNats, taskId: string): Promise<TimelineItem[]> {
  if (!isTaskIdToken(taskId)) return [];
  const consumer = await taskConsumer(nats, taskId);
  const items: TimelineItem[] = [];
  try {
    // The consumer's pending count at creation says whether there is anything to read.
    if ((await consumer.info(true)).num_pending === 0) return items;
    const messages = await consumer.consume();
    for await (const m of messages) {
      const item = parseTimelineMessage(nats.subjects, taskId, m.subject, m.data, m.seq);
      if (item) items.push(item);
      if (m.info.pending === 0) break;
    }
    await messages.close().catch(() => {});
  } finally {
    await consumer.delete().catch(() => {});
  }
  return orderTimeline(items);
}

/** Options of {@link followTimeline}. */
export interface FollowTimelineOptions {
  /** Ends the iteration (without an error) when aborted. */
  readonly signal?: AbortSignal;
}

/**
 * `taskId`'s timeline from its first line, then live as lines are stored, in
 * causal order; ends after the terminal line (the fleet's succeeded, failed or
 * canceled) or when `signal` aborts. One ordered consumer delivers history and
 * live lines alike, so nothing is missed or repeated between the two.
 */
export async function* followTimeline(
  nats: TimelineNats,
  taskId: string,
  options: FollowTimelineOptions = {},
): AsyncGenerator<TimelineItem, void, undefined> {
  const { signal } = options;
  if (signal?.aborted) return;
  if (!isTaskIdToken(taskId)) {
    // No line can ever arrive: wait for the abort, as for a task not submitted yet.
    if (signal) await new Promise<void>((r) => signal.addEventListener("abort", () => r()));
    return;
  }
  const consumer = await taskConsumer(nats, taskId);
  const messages = await consumer.consume();
  const stop = () => void messages.close().catch(() => {});
  signal?.addEventListener("abort", stop, { once: true });
  const order = new TimelineOrder();
  try {
    if (signal?.aborted) return;
    for await (const m of messages) {
      const item = parseTimelineMessage(nats.subjects, taskId, m.subject, m.data, m.seq);
      if (!item) continue;
      for (const out of order.push(item)) {
        yield out;
        if (isTerminalItem(out)) return;
      }
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    stop();
    await consumer.delete().catch(() => {});
  }
}
