/**
 * The bridge between a task actor and the session supervisor: a `heal` the actor
 * emits after a lost attempt goes to the {@link Healer}, whose decision comes back
 * to the actor as `HEALED` (or `HEALED` with no decision when the healer failed,
 * so the task is never left waiting). The decision's tier is written on the task's
 * timeline, and a quarantine fails the session's other open tasks at once.
 */
import type { Actor } from "xstate";
import type { HealingDecision, LostAttemptInfo, taskMachine } from "../actors/task-machine.js";
import { type Clock, isoNow } from "../clock.js";
import { toErrorInfo } from "../errors.js";
import type { Logger } from "../logger.js";
import type { TimelineEvent } from "../protocol/fleet-messages.js";
import { HEALING_TIERS, type Healer } from "../supervisor/healer.js";
import type { OpenTasks } from "./open-tasks.js";

/** What healing needs from the rest of the term. */
export interface TaskHealingDeps {
  readonly healer: Healer;
  readonly tasks: OpenTasks;
  readonly publishTimeline: (event: TimelineEvent) => void;
  readonly clock: Clock;
  readonly log: Logger;
}

/** Asks the healer about `lost` and answers `actor` with its decision. */
export async function heal(
  deps: TaskHealingDeps,
  actor: Actor<typeof taskMachine>,
  lost: LostAttemptInfo,
): Promise<void> {
  let decision: HealingDecision | null = null;
  try {
    decision = await deps.healer.attemptLost(lost);
    const tier = HEALING_TIERS[decision];
    deps.publishTimeline({
      type: "healing",
      taskId: lost.taskId,
      attempt: lost.attempt,
      at: isoNow(deps.clock),
      tier: tier.tier,
      message: tier.message,
      error: lost.error,
    });
    if (decision === "quarantined") quarantineOpen(deps.tasks, `${lost.tenant}/${lost.session}`);
  } catch (err) {
    deps.log.error({ err: toErrorInfo(err), taskId: lost.taskId }, "healing failed");
  }
  if (actor.getSnapshot().status === "active") actor.send({ type: "HEALED", decision });
}

/** Fails every task of a quarantined session that is not running now. */
export function quarantineOpen(tasks: OpenTasks, sessionKey: string): void {
  for (const t of tasks.ofSession(sessionKey)) {
    if (t.actor.getSnapshot().status !== "active") continue;
    t.actor.send({
      type: "QUARANTINE",
      reason: `session ${sessionKey} is quarantined after repeated failures; release it with \`clawfleet session release\``,
    });
  }
}
