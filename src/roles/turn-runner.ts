/**
 * Runs one task attempt in a container and reports it: puts the session's
 * files in place, drives the turn, saves the files after a success, and
 * publishes each step, effect and the outcome to JetStream. A step is
 * acknowledged to the agent only after its event is stored, so a checkpoint
 * the agent saw acked is durable.
 */
import type { RunTaskInput, TaskOutcome } from "../actors/container-machine.js";
import type { FleetNats } from "../adapters/fleet-nats.js";
import type { WorkspaceStore } from "../adapters/local-workspace-store.js";
import type { TurnHooks } from "../adapters/pool-adapter.js";
import { type Clock, isoNow } from "../clock.js";
import { ClawfleetError, RetryableError, toErrorInfo } from "../errors.js";
import type { PoolProfile } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import type { TaskEvent } from "../protocol/fleet-messages.js";

const PUBLISH_ATTEMPTS = 20;

/** Turns and their events for one node. */
export class TurnRunner {
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    private readonly nats: FleetNats,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** The container machine's `runTask` logic. */
  async runTask(
    input: RunTaskInput,
    profile: PoolProfile,
    store: WorkspaceStore,
  ): Promise<TaskOutcome> {
    const { handle, task, containerId, signal } = input;
    const base = {
      taskId: task.taskId,
      attempt: task.attempt,
      node: this.nodeId,
      container: containerId,
    };
    const event = (e: Omit<TaskEvent, keyof typeof base | "at">) =>
      this.publishEvent({ ...base, ...e, at: isoNow(this.clock) } as TaskEvent);
    const log = this.log.child({
      taskId: task.taskId,
      attempt: task.attempt,
      container: containerId,
    });

    await event({ type: "started" });
    try {
      const warm = input.warm;
      if (!warm || warm.tenant !== task.tenant || warm.session !== task.session) {
        await store.restore(task.tenant, task.session, handle.workspaceDir);
      }
      const hooks: TurnHooks = {
        onStep: async (s) => {
          await event({ type: "step", step: s.step, message: s.name });
        },
        onEffect: async (e) => {
          const subject = this.nats.subjects.effect(task.tenant, e.kind);
          // The message id makes a replayed step's effect a duplicate the stream drops.
          await this.withRetry(() =>
            this.nats.js.publish(
              subject,
              JSON.stringify({ taskId: task.taskId, step: e.step, payload: e.payload }),
              {
                msgID: `${task.taskId}/${e.step}`,
              },
            ),
          );
          await event({ type: "effect", step: e.step, message: e.kind });
        },
        onLog: (l) => log.debug({ agent: l.level }, l.msg),
      };
      const output = await handle.runTurn(
        {
          type: "turn",
          taskId: task.taskId,
          attempt: task.attempt,
          tenant: task.tenant,
          session: task.session,
          input: task.input,
          behavior: {},
          resumeAfter: 0,
          steps: [],
        },
        hooks,
        { timeoutMs: task.timeoutMs ?? profile.turnTimeoutMs, signal },
      );
      // The result is published only once the session's files are saved.
      await store.save(task.tenant, task.session, handle.workspaceDir);
      await event({ type: "succeeded", output });
      return { ok: true, agentAlive: handle.alive };
    } catch (err) {
      const e = asTurnError(err, signal);
      log.info({ error: e.toInfo(), retryable: e.retryable }, "turn failed");
      await event({ type: "failed", error: e.toInfo(), retryable: e.retryable }).catch((pubErr) =>
        log.error({ err: toErrorInfo(pubErr) }, "could not report a failed turn"),
      );
      return { ok: false, agentAlive: handle.alive };
    }
  }

  /** Publishes a task event durably (stored in the events stream) with retries. */
  publishEvent(event: TaskEvent): Promise<void> {
    const subject = this.nats.subjects.taskEvent(event.taskId);
    const msgID = `${event.taskId}/${event.attempt}/${event.type}/${event.step ?? 0}`;
    const p = this.withRetry(() =>
      this.nats.js.publish(subject, JSON.stringify(event), { msgID }),
    ).then(() => {});
    this.inflight.add(p);
    return p.finally(() => this.inflight.delete(p));
  }

  /** Waits for every event still being published. */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }

  private async withRetry<T>(fn: () => Promise<T>): Promise<T> {
    let delay = 100;
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (err) {
        if (i >= PUBLISH_ATTEMPTS || this.nats.nc.isClosed()) throw err;
        await new Promise((r) => this.clock.setTimeout(r, delay));
        delay = Math.min(delay * 2, 2000);
      }
    }
  }
}

/** The error a turn ended with; a node shutdown is retryable wherever it surfaced. */
function asTurnError(err: unknown, signal: AbortSignal): ClawfleetError {
  if (signal.aborted && signal.reason === "shutdown") {
    return new RetryableError("NODE_STOPPING", "the node stopped while running the turn");
  }
  if (err instanceof ClawfleetError) return err;
  return new RetryableError("INTERNAL", (err as Error)?.message ?? String(err), { cause: err });
}
