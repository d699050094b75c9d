/**
 * The leading orchestrator's control subjects: `<prefix>.ctl.status` and
 * `<prefix>.ctl.cancel` (the gateway's `status` and `cancel` ask them). Queue
 * subscriptions, held only while leading, so exactly the leader answers.
 */
import type { Subscription } from "@nats-io/nats-core";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { ErrorCodes, toErrorInfo } from "../errors.js";
import type { TaskRecord } from "../protocol/api-schemas.js";
import type { OrchestratorStatus } from "../protocol/fleet-messages.js";
import { safeJson } from "./task-records.js";

/** What the control subjects ask of the leader. */
export interface ControlHandlers {
  status(): OrchestratorStatus;
  /** Resolves with the record once the cancel took effect. */
  cancel(taskId: string): Promise<TaskRecord>;
}

/** Subscribes the control subjects; unsubscribe the returned subscriptions to stop. */
export function serveControlRequests(nats: FleetNats, handlers: ControlHandlers): Subscription[] {
  const { nc, subjects } = nats;
  return [
    nc.subscribe(subjects.ctl("status"), {
      queue: "orchestrator",
      callback: (_e, m) => {
        m.respond(JSON.stringify(handlers.status()));
      },
    }),
    nc.subscribe(subjects.ctl("cancel"), {
      queue: "orchestrator",
      callback: (_e, m) => {
        const reply = (body: unknown) => m.respond(JSON.stringify(body));
        const taskId = (safeJson(m) as { taskId?: unknown } | undefined)?.taskId;
        if (typeof taskId !== "string") {
          return void reply({
            ok: false,
            error: { code: ErrorCodes.INVALID_REQUEST, message: "taskId required" },
          });
        }
        handlers.cancel(taskId).then(
          (task) => reply({ ok: true, task }),
          (err) => reply({ ok: false, error: toErrorInfo(err) }),
        );
      },
    }),
  ];
}
