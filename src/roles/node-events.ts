/**
 * What nodes report about attempts (started, step, succeeded, failed), taken
 * from the events stream and turned into task-actor events. The actor fences
 * off anything from an attempt that is not its current one; this module only
 * decides when an event cannot be applied yet (redeliver it) or never (ack it).
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { TaskEvent as MachineEvent } from "../actors/task-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { ErrorCodes } from "../errors.js";
import { isTerminal, TaskRecordSchema } from "../protocol/api-schemas.js";
import { type TaskEvent, TaskEventSchema } from "../protocol/fleet-messages.js";
import type { OpenTasks } from "./open-tasks.js";
import { safeJson } from "./task-records.js";

/** The task-actor event for a node's report, or null for reports the actor does not take. */
export function machineEventOf(ev: TaskEvent): MachineEvent | null {
  switch (ev.type) {
    case "started":
      return { type: "STARTED", attempt: ev.attempt, behavior: ev.behavior };
    case "step":
      return { type: "STEP", attempt: ev.attempt, step: ev.step ?? 0 };
    case "succeeded":
      return { type: "SUCCEEDED", attempt: ev.attempt, output: ev.output ?? "", at: ev.at };
    case "failed":
      return {
        type: "FAILED",
        attempt: ev.attempt,
        error: ev.error ?? { code: ErrorCodes.INTERNAL, message: "failed without an error" },
        retryable: ev.retryable ?? false,
        at: ev.at,
        logTail: ev.logTail ?? [],
      };
    default:
      return null;
  }
}

/** Applies one message of the events stream to the open task it is about. */
export async function applyNodeEvent(nats: FleetNats, tasks: OpenTasks, m: JsMsg): Promise<void> {
  const parsed = TaskEventSchema.safeParse(safeJson(m));
  if (!parsed.success) return void m.term();
  const ev = parsed.data;
  const t = tasks.get(ev.taskId);
  if (!t) {
    const entry = await nats.kv.tasks.get(ev.taskId);
    const record = entry?.operation === "PUT" ? TaskRecordSchema.safeParse(entry.json()) : null;
    // Not loaded yet (a new term is replaying intake): try again shortly.
    if (record?.success && !isTerminal(record.data.status)) return void m.nak(250);
    return void m.ack();
  }
  const snap = t.actor.getSnapshot();
  // Finished (its record and result are on their way): late events change nothing.
  if (snap.status !== "active") return void m.ack();
  // The node may report before we processed its dispatch reply.
  if (snap.value === "placing" || snap.value === "init") return void m.nak(50);
  const event = machineEventOf(ev);
  if (event) t.actor.send(event);
  m.ack();
}
