/**
 * Runs one task attempt in a container, durably:
 *
 * 1. takes the task's lease (compare-and-set) and renews it while the turn runs;
 *    losing it stops the turn at once;
 * 2. opens the task's checkpoint log, which fences off any older attempt, and
 *    resumes after the last checkpointed step, with the workspace as it was
 *    right after that step (or, if an older attempt already committed the
 *    turn, with the files it saved: a committed turn is never run again);
 * 3. for every step the agent reports: saves the workspace as of that step,
 *    appends the step to the log, publishes a step event, and only then lets
 *    the agent go on; effects go through the outbox, once per `taskId/step`;
 * 4. after a success, checks the lease once more, saves the session's files
 *    (only if no newer attempt opened the log meanwhile), marks the log
 *    committed, publishes the result and only then drops the checkpoints. A
 *    failed turn leaves the session's files as they were; a retryable one keeps
 *    its checkpoints for the next attempt. Why this applies each turn once when
 *    attempts overlap: `checkpoint-log.ts`.
 *
 * An attempt sent to repair (healing tier 3) drops the checkpoints, repairs the
 * behaviour files and, once the last known-good version is restored, the
 * session config (see session-repair.ts).
 */
import type { RunTaskInput, TaskOutcome } from "../actors/container-machine.js";
import type { ModelCallHook, TurnHooks } from "../adapters/agent-link/pool-adapter.js";
import { callModel } from "../adapters/model/model-client.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { retryTransient } from "../adapters/nats/nats-retry.js";
import { BehaviorStore } from "../adapters/records/behavior-store.js";
import { CheckpointLog } from "../adapters/records/checkpoint-log.js";
import { EffectOutbox } from "../adapters/records/effect-outbox.js";
import { LeaseLostError, TaskLease } from "../adapters/records/task-lease.js";
import type { WorkspaceStore } from "../adapters/workspace/workspace-store.js";
import { agentRuntime } from "../agents/agent-runtime.js";
import { type Clock, every, isoNow } from "../clock.js";
import { ClawfleetError, ErrorCodes, RetryableError, toErrorInfo } from "../errors.js";
import type { PoolProfile, ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import type { SessionEntry, TaskEvent } from "../protocol/fleet-messages.js";
import type { ModelCallSummary } from "../protocol/model-messages.js";
import {
  type BehaviorRepair,
  describeRepair,
  repairBehavior,
  repairConfig,
} from "../supervisor/session-repair.js";

const RETRY_ATTEMPTS = 20;

/** Turns and their events for one node. */
export class TurnRunner {
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly outbox: EffectOutbox;
  private readonly behaviors: BehaviorStore;

  constructor(
    private readonly nats: FleetNats,
    private readonly nodeId: string,
    private readonly options: Pick<
      ResolvedFleetOptions,
      "leaseRenewMs" | "leaseTtlMs" | "syncIntervalMs" | "models"
    >,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.outbox = new EffectOutbox(nats.kv.outbox, nats.js, nats.subjects);
    this.behaviors = new BehaviorStore(nats.kv.behaviors);
  }

  /** The container machine's `runTask` logic. */
  async runTask(
    input: RunTaskInput,
    profile: PoolProfile,
    store: WorkspaceStore,
  ): Promise<TaskOutcome> {
    const { handle, task, containerId } = input;
    const { tenant, session, taskId, attempt } = task;
    const base = { taskId, attempt, node: this.nodeId, container: containerId };
    const event = (e: Omit<TaskEvent, keyof typeof base | "at">) =>
      this.publishEvent({ ...base, ...e, at: isoNow(this.clock) } as TaskEvent);
    const log = this.log.child({ taskId, attempt, container: containerId });
    const leaseLost = new AbortController();
    const signal = AbortSignal.any([input.signal, leaseLost.signal]);
    let lease: TaskLease | null = null;
    let checkpointLog: CheckpointLog | null = null;
    let stopRenewing = () => {};

    try {
      const owner = `${this.nodeId}/${containerId}`;
      // Both fence older attempts off on their own, so they need not wait for each other.
      const [held, checkpoints, latestBehavior] = await Promise.all([
        this.retry(() =>
          TaskLease.acquire(
            this.nats.kv.leases,
            taskId,
            attempt,
            owner,
            this.options.leaseTtlMs,
            this.clock,
          ),
        ),
        this.retry(() => CheckpointLog.open(this.nats.kv.checkpoints, taskId, attempt, owner)),
        // Behaviour is read fresh for every turn: a change applies from the next turn on.
        this.retry(() => this.behaviors.get(tenant, profile.name)),
      ]);
      lease = held;
      checkpointLog = checkpoints;
      stopRenewing = this.keepRenewing(lease, () => leaseLost.abort("lease-lost"));
      const runtime = agentRuntime(profile.runtime);
      let behavior = latestBehavior;
      let behaviorRepair: BehaviorRepair | null = null;
      if (task.repair) {
        behaviorRepair = await this.retry(() =>
          repairBehavior(
            this.behaviors,
            runtime,
            { tenant, profile: profile.name },
            latestBehavior,
            isoNow(this.clock),
          ),
        );
        if (behaviorRepair) behavior = behaviorRepair.behavior;
      }
      await event({ type: "started", behavior: behavior.hash });

      const committed = checkpoints.committed;
      // Healing tier 3: the checkpoints may be what keeps failing; start over from the last good
      // version. Not a committed turn: its files are saved, and running it again would apply it twice.
      if (task.repair && !committed && checkpoints.steps.length > 0) {
        log.warn(
          { steps: checkpoints.steps.length },
          "repair: dropping checkpoints, starting the turn over",
        );
        await this.retry(() => checkpoints.reset());
        await store.dropCheckpoints(tenant, session, taskId);
      }
      let resumeAfter = checkpoints.steps.length;
      if (committed) {
        // An earlier attempt saved the turn's files and then lost the task: those files are the
        // turn's result (its checkpoint files may be gone already). Replay every step on them.
        log.info({ version: committed.version }, "turn already committed; replaying its steps");
        await handle.release?.();
        await this.retry(() =>
          store.restore(tenant, session, handle.workspaceDir, committed.version),
        );
      } else if (resumeAfter > 0) {
        // The agent lets go of the workspace first: its files are about to be replaced.
        await handle.release?.();
        if (
          !(await store.restoreCheckpoint(
            tenant,
            session,
            taskId,
            resumeAfter,
            handle.workspaceDir,
          ))
        ) {
          // The files of the last checkpoint are gone: resuming would run on the wrong state. The
          // turn is not committed, so no attempt's save of it can be the session's latest version.
          log.warn({ resumeAfter }, "checkpoint files missing; starting the turn over");
          await checkpoints.reset();
          resumeAfter = 0;
        }
      }
      if (resumeAfter === 0 && !committed) {
        const warm = input.warm;
        const current =
          !task.repair &&
          warm?.tenant === tenant &&
          warm.session === session &&
          (await this.retry(() => store.isCurrent(tenant, session, handle.workspaceDir)));
        if (!current) {
          await handle.release?.();
          await this.retry(() => store.restore(tenant, session, handle.workspaceDir));
        }
      }
      if (task.repair) {
        // The workspace is the last known-good version now; its config may still be bad.
        const configRepair = runtime.config
          ? await repairConfig(handle.workspaceDir, runtime.config)
          : null;
        const message = describeRepair(configRepair, behaviorRepair);
        log.warn({ repair: message }, "repaired the session");
        await event({ type: "repaired", message });
      }

      const hooks: TurnHooks = {
        onStep: async (s) => {
          const at = isoNow(this.clock);
          // The fenced log append comes first: a holder that lost the task fails here and
          // never stores a checkpoint (which would replace the newer attempt's). A crash
          // between the two leaves a logged step without its files: resume then starts over.
          await this.retry(() =>
            checkpoints.append({ step: s.step, name: s.name, output: s.output, at }),
          );
          await store.saveCheckpoint(tenant, session, taskId, s.step, handle.workspaceDir);
          await event({ type: "step", step: s.step, message: s.name });
        },
        onEffect: async (e) => {
          const result = await this.retry(() =>
            this.outbox.deliver({ tenant, taskId, step: e.step, kind: e.kind, payload: e.payload }),
          );
          await event({ type: "effect", step: e.step, message: `${e.kind} (${result})` });
        },
        onLog: (l) => log.debug({ agent: l.level }, l.msg),
        onModelCall: this.modelCalls(task, containerId, (call, summary, error) =>
          event({
            type: "model",
            call,
            model: summary,
            ...(error ? { error: error.toInfo(), retryable: error.retryable } : {}),
          }),
        ),
      };
      const syncing = this.syncWhileRunning(
        store,
        tenant,
        session,
        handle.workspaceDir,
        log,
        async () => {
          // A sync writes a session version: only while the task is still ours.
          if (leaseLost.signal.aborted) throw new LeaseLostError("lease lost: no more syncs");
          await held.renew();
        },
      );
      const output = await handle
        .runTurn(
          {
            type: "turn",
            taskId,
            attempt,
            tenant,
            session,
            input: task.input,
            behavior: behavior.files,
            resumeAfter,
            steps: checkpoints.steps.slice(0, resumeAfter).map((s) => s.output),
          },
          hooks,
          { timeoutMs: task.timeoutMs ?? profile.turnTimeoutMs, signal },
        )
        .finally(() => syncing.stop());
      // Still ours? A holder that lost its lease must not overwrite the session's files; and
      // right before the save lands, no newer attempt may have opened the checkpoint log.
      await this.retry(() => lease!.renew());
      // The version lands pending: until the commit below it is not the session's files, so
      // a newer attempt that opens the log meanwhile starts from what this turn started from,
      // even with no step checkpointed, never from this turn's own writes.
      const version =
        (await this.retry(() =>
          store.save(tenant, session, handle.workspaceDir, {
            precommit: () => this.retry(() => checkpoints.hold()),
            pending: true,
          }),
        )) ?? undefined;
      // The commit point. A newer attempt that opened the log since fails this (LEASE_LOST): the
      // task and its checkpoint files are that attempt's, and it resumes from them.
      await this.retry(() => checkpoints.commit(version));
      // Committed: the version is the session's files. A crash before this is covered: an
      // attempt that finds the log committed restores exactly that version.
      if (version !== undefined && store.confirm) {
        await this.retry(() => store.confirm!(tenant, session, version));
      }
      await this.register({
        tenant,
        session,
        node: this.nodeId,
        container: containerId,
        version,
        taskId,
      });
      await event({
        type: "succeeded",
        output,
        message: version === undefined ? undefined : `version ${version}`,
      });
      // Only after the commit: until then a newer attempt may still need these files.
      await store.dropCheckpoints(tenant, session, taskId);
      return { ok: true, agentAlive: handle.alive };
    } catch (err) {
      const e = asTurnError(err, input.signal, leaseLost.signal);
      log.info({ error: e.toInfo(), retryable: e.retryable }, "turn failed");
      const logTail = handle.logTail().slice(-20);
      await event({ type: "failed", error: e.toInfo(), retryable: e.retryable, logTail }).catch(
        (pubErr) => log.error({ err: toErrorInfo(pubErr) }, "could not report a failed turn"),
      );
      if (!e.retryable) {
        // Not if a newer attempt opened the log: the checkpoints are that attempt's.
        await (checkpointLog ? this.retry(() => checkpointLog!.hold()) : Promise.resolve())
          .then(() => store.dropCheckpoints(tenant, session, taskId))
          .catch(() => {});
      }
      return { ok: false, agentAlive: handle.alive };
    } finally {
      stopRenewing();
      await lease?.release();
    }
  }

  /**
   * The turn's model calls, relayed to the model gateway; each call lands on the
   * task's timeline as a `model` event (numbered within the attempt), failed or not.
   */
  private modelCalls(
    task: RunTaskInput["task"],
    container: string,
    record: (
      call: number,
      summary: ModelCallSummary,
      error: ClawfleetError | undefined,
    ) => Promise<void>,
  ): ModelCallHook {
    let calls = 0;
    const models = this.options.models;
    // A bound on the whole call beyond the upstream's own, for a gateway that vanished mid-answer.
    const longest = Math.max(0, ...Object.values(models.upstreams).map((u) => u.timeoutMs));
    const idle = Math.max(0, ...Object.values(models.upstreams).map((u) => u.idleTimeoutMs));
    return async (request, sink, signal) => {
      const call = ++calls;
      const outcome = await callModel(
        this.nats,
        {
          ...request,
          headers: { ...request.headers },
          tenant: task.tenant,
          session: task.session,
          taskId: task.taskId,
          attempt: task.attempt,
          node: this.nodeId,
          container,
        },
        sink,
        {
          signal,
          maxWaitMs: (longest || 300_000) + 10_000,
          stallMs: (idle || 60_000) + 10_000,
          maxRequestBytes: models.maxRequestBytes,
        },
      );
      await record(call, outcome.summary, outcome.error).catch((err) =>
        this.log.warn({ err: toErrorInfo(err) }, "could not record a model call"),
      );
      return outcome.error;
    };
  }

  /**
   * Syncs the workspace every `syncIntervalMs` while a turn runs (one sync at a time;
   * a failed sync is logged and the next one tries again). `stop` waits for the sync
   * in flight, so the turn's own version is always the newer one.
   */
  private syncWhileRunning(
    store: WorkspaceStore,
    tenant: string,
    session: string,
    dir: string,
    log: Logger,
    stillOurs: () => Promise<void>,
  ) {
    if (!store.sync || this.options.syncIntervalMs <= 0) return { stop: async () => {} };
    let inFlight: Promise<unknown> | null = null;
    const stopTicker = every(this.clock, this.options.syncIntervalMs, () => {
      if (inFlight) return;
      // Checked before (no upload for a lost task) and again right before the commit.
      inFlight = stillOurs()
        .then(() => store.sync!(tenant, session, dir, stillOurs))
        .then((version) => log.debug({ version }, "workspace synced"))
        .catch((err) => log.info({ err: toErrorInfo(err) }, "workspace sync skipped"))
        .finally(() => {
          inFlight = null;
        });
    });
    return {
      stop: async () => {
        stopTicker();
        await inFlight;
      },
    };
  }

  /** Records where the session was served and which version it is at (best effort: it is a hint). */
  private async register(entry: Omit<SessionEntry, "updatedAt">): Promise<void> {
    const value: SessionEntry = { ...entry, updatedAt: isoNow(this.clock) };
    await this.nats.kv.sessions
      .put(`${entry.tenant}.${entry.session}`, JSON.stringify(value))
      .catch((err) => this.log.warn({ err: toErrorInfo(err) }, "session registry write failed"));
  }

  /** Publishes a task event durably (stored in the events stream) with retries. */
  publishEvent(event: TaskEvent): Promise<void> {
    const subject = this.nats.subjects.taskEvent(event.taskId);
    const msgID = `${event.taskId}/${event.attempt}/${event.type}/${event.step ?? 0}${event.call ? `.${event.call}` : ""}`;
    const p = this.retry(() =>
      this.nats.js.publish(subject, JSON.stringify(event), { msgID }),
    ).then(() => {});
    this.inflight.add(p);
    return p.finally(() => this.inflight.delete(p));
  }

  /** Waits for every event still being published. */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }

  /** Retries NATS operations through a server restart or a brief disconnect. */
  private retry<T>(fn: () => Promise<T>): Promise<T> {
    return retryTransient(fn, {
      clock: this.clock,
      attempts: RETRY_ATTEMPTS,
      stopped: () => this.nats.nc.isClosed(),
    });
  }

  /**
   * Renews `lease` every `leaseRenewMs` until stopped. A takeover ends the turn
   * at once; a failing connection ends it shortly before the lease could expire
   * (after that the orchestrator may give the task to someone else).
   */
  private keepRenewing(lease: TaskLease, lost: () => void): () => void {
    let lastOk = this.clock.now();
    return every(this.clock, this.options.leaseRenewMs, () => {
      lease.renew().then(
        () => {
          lastOk = this.clock.now();
        },
        (err) => {
          if (
            err instanceof LeaseLostError ||
            this.clock.now() - lastOk >= 0.8 * this.options.leaseTtlMs
          )
            lost();
        },
      );
    });
  }
}

/** The error a turn ended with; why the turn was stopped wins over how it surfaced. */
function asTurnError(err: unknown, stop: AbortSignal, lease: AbortSignal): ClawfleetError {
  if (stop.aborted && stop.reason === "shutdown") {
    return new RetryableError(ErrorCodes.NODE_STOPPING, "the node stopped while running the turn");
  }
  if (lease.aborted)
    return new LeaseLostError("the task's lease was taken over while the turn ran");
  if (err instanceof ClawfleetError) return err;
  // Retryable, but bounded: the task's attempts run out (ATTEMPTS_EXHAUSTED) if it recurs.
  return new RetryableError(ErrorCodes.INTERNAL, (err as Error)?.message ?? String(err), {
    cause: err,
  });
}
