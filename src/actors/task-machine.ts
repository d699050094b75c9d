/**
 * The task actor: one per open task, owned by the leading orchestrator.
 *
 * `queued → placing → running → succeeded | failed | canceled`, with
 * `running → judging → retrying → queued` when an attempt is lost in a way
 * another attempt may survive (agent crash or hang, node lost, lease expired),
 * or `judging → failed` with `ATTEMPTS_EXHAUSTED`. Events from another attempt
 * are ignored, which fences a late or stale node off the record. Every attempt
 * gets a history entry; timeline lines are emitted for the runtime to publish.
 *
 * A supervised task (the orchestrator's) does not go back to `queued` after a loss
 * that may be the session's own fault until its supervisor has decided how the next
 * attempt runs: the machine emits `heal` and waits, alongside the backoff, for
 * `HEALED`. What that decision changes (start over from known-good, keep away from
 * the containers the task died in) lives in the context, so every placement and
 * dispatch reads it from one place. Losses of the fleet's own making (a lost node,
 * lease or dispatch, a node stopping) are retried elsewhere without asking.
 *
 * The machine decides; it performs no I/O itself. Dispatching goes through the
 * named `dispatch` actor and the runtime persists the record it derives from
 * each snapshot ({@link taskRecordOf}), so the machine is testable without NATS.
 */
import { assign, emit, enqueueActions, fromPromise, setup } from "xstate";
import { ErrorCodes, type ErrorInfo, InternalError } from "../errors.js";
import type { AttemptRecord, TaskRecord } from "../protocol/api-schemas.js";
import type { DispatchReply } from "../protocol/fleet-messages.js";
import {
  type DispatchInput,
  INFRASTRUCTURE_FAILURES,
  type TaskContext,
  type TaskEmitted,
  type TaskEvent,
  type TaskMachineInput,
  type TimelineEntry,
} from "./task-types.js";

// The machine's vocabulary lives in task-types.ts; its users import it from here too.
export {
  type DispatchInput,
  dispatchRequestOf,
  type HealingDecision,
  INFRASTRUCTURE_FAILURES,
  type LostAttemptInfo,
  type Placement,
  priorityRank,
  statusOfState,
  type TaskContext,
  type TaskEmitted,
  type TaskEvent,
  type TaskMachineInput,
  type TimelineEntry,
  taskRecordOf,
} from "./task-types.js";

const MAX_BACKOFF_MS = 30_000;

const forAttempt = ({ context, event }: { context: TaskContext; event: TaskEvent }) =>
  "attempt" in event && event.attempt === context.record.attempts;

/** The delay before attempt `attempts + 1`: doubling from the base, capped. */
export function backoffDelay(context: Pick<TaskContext, "retryBackoffMs" | "record">): number {
  return Math.min(
    context.retryBackoffMs * 2 ** Math.max(0, context.record.attempts - 1),
    MAX_BACKOFF_MS,
  );
}

/** The record with the current attempt's history entry closed. */
function endAttempt(
  record: TaskRecord,
  outcome: AttemptRecord["outcome"],
  at: string,
  error?: ErrorInfo,
): TaskRecord {
  const history = record.history.map((h) =>
    h.attempt === record.attempts && h.outcome === "running"
      ? { ...h, outcome, endedAt: at, error }
      : h,
  );
  return { ...record, history };
}

const exhausted = (attempts: number, last: ErrorInfo): ErrorInfo => ({
  code: ErrorCodes.ATTEMPTS_EXHAUSTED,
  message: `gave up after ${attempts} attempts; last: ${last.code}: ${last.message}`,
});

/** Why the running attempt was lost, for any of the events that lose it. */
function lossOf(context: TaskContext, event: TaskEvent): { error: ErrorInfo; at: string } {
  const at = "at" in event ? event.at : context.now();
  switch (event.type) {
    case "FAILED":
      return { error: event.error, at };
    case "NODE_LOST":
      return {
        error: { code: ErrorCodes.NODE_LOST, message: `node ${event.node} stopped answering` },
        at,
      };
    default:
      return { error: { code: ErrorCodes.LEASE_LOST, message: "the attempt's lease expired" }, at };
  }
}

/** The task machine; `dispatch` must be provided by the runtime (`taskMachine.provide`). */
export const taskMachine = setup({
  types: {
    context: {} as TaskContext,
    events: {} as TaskEvent,
    input: {} as TaskMachineInput,
    emitted: {} as TaskEmitted,
  },
  actors: {
    dispatch: fromPromise<DispatchReply, DispatchInput>(async () => {
      throw new InternalError("dispatch is provided by the orchestrator runtime");
    }),
  },
  guards: {
    resumedRunning: ({ context }) => context.record.status === "running" && !!context.record.node,
    forAttempt,
    cancelRequested: ({ context }) => context.cancelRequested,
    canRetry: ({ context }) => context.record.attempts < context.maxAttempts,
    healing: ({ context }) => context.healing,
    backoffElapsed: ({ context }) => context.backoffElapsed,
    /** FAILED for this attempt that another attempt may survive, NODE_LOST for our node, or LEASE_LOST for this attempt. */
    attemptLost: ({ context, event }) => {
      if (event.type === "FAILED") return forAttempt({ context, event }) && event.retryable;
      if (event.type === "NODE_LOST") return event.node === context.record.node;
      if (event.type === "LEASE_LOST") return forAttempt({ context, event });
      return false;
    },
  },
  actions: {
    cancelOnNode: emit(({ context }: { context: TaskContext }) => ({
      type: "cancelOnNode" as const,
      node: context.record.node ?? context.placement?.node ?? "",
      taskId: context.record.taskId,
      attempt: context.record.attempts,
    })),
    recordLoss: assign(({ context, event }) => {
      const { error, at } = lossOf(context, event);
      return {
        lastError: error,
        record: endAttempt(context.record, "lost", at, error),
        logTail: event.type === "FAILED" ? (event.logTail ?? []) : [],
      };
    }),
    askSupervisor: enqueueActions(({ context, enqueue }) => {
      const error = context.lastError;
      const needed =
        context.supervised && error !== null && !INFRASTRUCTURE_FAILURES.has(error.code);
      enqueue.assign({ healing: needed, backoffElapsed: false });
      if (!needed) return;
      const r = context.record;
      enqueue.emit({
        type: "heal" as const,
        lost: {
          tenant: r.tenant,
          session: r.session,
          taskId: r.taskId,
          attempt: r.attempts,
          error,
          logTail: context.logTail,
        },
      });
    }),
    applyHealing: assign(({ context, event }) => {
      if (event.type !== "HEALED" || !context.healing) return {};
      const decision = event.decision;
      const died = context.record.history.find(
        (h) => h.attempt === context.record.attempts,
      )?.container;
      const keepAway = died !== undefined && decision !== null && decision !== "quarantined";
      return {
        healing: false,
        repair: context.repair || decision === "repair",
        avoid: keepAway && !context.avoid.includes(died) ? [...context.avoid, died] : context.avoid,
      };
    }),
    timeline: emit((_, entry: TimelineEntry) => ({ type: "timeline" as const, entry })),
    quarantine: assign(({ context, event }) => ({
      record: {
        ...context.record,
        finishedAt: context.now(),
        error: {
          code: ErrorCodes.SESSION_QUARANTINED,
          message: event.type === "QUARANTINE" ? event.reason : "the session is quarantined",
        },
      },
    })),
  },
  delays: { backoff: ({ context }) => backoffDelay(context) },
}).createMachine({
  id: "task",
  context: ({ input }) => ({
    record: { ...input.record, history: input.record.history ?? [] },
    input: input.input,
    maxAttempts: input.maxAttempts,
    retryBackoffMs: input.retryBackoffMs,
    now: input.now,
    placement: null,
    cancelRequested: false,
    lastError: null,
    supervised: input.supervised ?? false,
    healing: false,
    backoffElapsed: false,
    repair: false,
    avoid: [],
    logTail: [],
  }),
  initial: "init",
  states: {
    // A reloaded record may already be running on a node: resume watching it.
    init: { always: [{ guard: "resumedRunning", target: "running" }, { target: "queued" }] },
    queued: {
      on: {
        PLACE: {
          target: "placing",
          actions: assign({ placement: ({ event }) => event.placement }),
        },
        CANCEL: "canceled",
        QUARANTINE: { target: "failed", actions: "quarantine" },
      },
    },
    placing: {
      invoke: {
        src: "dispatch",
        input: ({ context }) => ({
          record: context.record,
          input: context.input,
          placement: context.placement!,
          attempt: context.record.attempts + 1,
          repair: context.repair,
        }),
        onDone: [
          {
            guard: ({ event }) => event.output.accepted,
            target: "running",
            actions: [
              assign({ repair: false }),
              assign({
                record: ({ context, event }) => {
                  const p = context.placement!;
                  const at = context.now();
                  const attempt = context.record.attempts + 1;
                  const container = event.output.accepted ? event.output.container : p.container;
                  return {
                    ...context.record,
                    attempts: attempt,
                    node: p.node,
                    container,
                    rung: p.rung,
                    startedAt: context.record.startedAt ?? at,
                    history: [
                      ...context.record.history,
                      {
                        attempt,
                        node: p.node,
                        container,
                        rung: p.rung,
                        startedAt: at,
                        outcome: "running" as const,
                      },
                    ],
                  };
                },
              }),
              {
                type: "timeline",
                params: ({ context }) => ({
                  type: "placed" as const,
                  attempt: context.record.attempts,
                  node: context.record.node,
                  container: context.record.container,
                  rung: context.record.rung,
                }),
              },
            ],
          },
          // Refused: nothing runs on the node, so a cancel asked for meanwhile ends the task here.
          { guard: "cancelRequested", target: "canceled" },
          {
            target: "queued",
            actions: emit(({ context, event }) => ({
              type: "placementRejected" as const,
              placement: context.placement!,
              reason: event.output.accepted ? "" : event.output.reason,
            })),
          },
        ],
        // No answer is not a refusal: the node may have started the attempt. Count it as
        // spent, so anything that attempt still reports is fenced off as stale.
        onError: [
          {
            guard: "cancelRequested",
            target: "canceled",
            actions: [
              assign({
                record: ({ context }) => ({
                  ...context.record,
                  attempts: context.record.attempts + 1,
                }),
              }),
              "cancelOnNode",
            ],
          },
          {
            target: "judging",
            actions: assign({
              record: ({ context }) => ({
                ...context.record,
                attempts: context.record.attempts + 1,
              }),
              // The node may have started it: that attempt had its repair.
              repair: false,
              lastError: ({ event }) => ({
                code: ErrorCodes.DISPATCH_FAILED,
                message: errorMessage(event.error),
              }),
            }),
          },
        ],
      },
      on: { CANCEL: { actions: assign({ cancelRequested: true }) } },
    },
    running: {
      always: { guard: "cancelRequested", target: "canceled", actions: "cancelOnNode" },
      on: {
        STARTED: {
          guard: "forAttempt",
          actions: assign({
            record: ({ context, event }) => ({
              ...context.record,
              behavior: event.behavior,
              history: context.record.history.map((h) =>
                h.attempt === event.attempt ? { ...h, behavior: event.behavior } : h,
              ),
            }),
          }),
        },
        STEP: {
          guard: "forAttempt",
          actions: assign({
            record: ({ context, event }) => ({
              ...context.record,
              steps: Math.max(context.record.steps, event.step),
            }),
          }),
        },
        SUCCEEDED: {
          guard: "forAttempt",
          target: "succeeded",
          actions: assign({
            record: ({ context, event }) => ({
              ...endAttempt(context.record, "succeeded", event.at),
              output: event.output,
              finishedAt: event.at,
            }),
          }),
        },
        FAILED: [
          { guard: "attemptLost", target: "judging", actions: "recordLoss" },
          {
            guard: "forAttempt",
            target: "failed",
            actions: assign({
              record: ({ context, event }) => ({
                ...endAttempt(context.record, "failed", event.at, event.error),
                finishedAt: event.at,
                error: event.error,
              }),
            }),
          },
        ],
        NODE_LOST: { guard: "attemptLost", target: "judging", actions: "recordLoss" },
        LEASE_LOST: { guard: "attemptLost", target: "judging", actions: "recordLoss" },
        CANCEL: { target: "canceled", actions: "cancelOnNode" },
      },
    },
    // An attempt was lost: try again after a backoff, or give up.
    judging: {
      always: [
        { guard: "canRetry", target: "retrying" },
        {
          target: "failed",
          actions: assign({
            record: ({ context }) => ({
              ...context.record,
              // The time the last attempt was lost, when it ran at all.
              finishedAt: context.record.history.at(-1)?.endedAt ?? context.now(),
              error: exhausted(context.record.attempts, context.lastError!),
            }),
          }),
        },
      ],
    },
    // Back to the queue once the backoff has run out and, for a supervised task, the
    // supervisor has answered; either may come first.
    retrying: {
      entry: [
        assign({
          record: ({ context }) => ({ ...context.record, node: undefined, container: undefined }),
        }),
        "askSupervisor",
        {
          type: "timeline",
          params: ({ context }) => ({
            type: "requeued" as const,
            attempt: context.record.attempts,
            delayMs: backoffDelay(context),
            error: context.lastError ?? undefined,
          }),
        },
      ],
      after: {
        backoff: [
          { guard: "healing", actions: assign({ backoffElapsed: true }) },
          { target: "queued" },
        ],
      },
      on: {
        HEALED: [
          { guard: "backoffElapsed", target: "queued", actions: "applyHealing" },
          { actions: "applyHealing" },
        ],
        CANCEL: "canceled",
        QUARANTINE: { target: "failed", actions: "quarantine" },
      },
    },
    succeeded: {
      type: "final",
      entry: {
        type: "timeline",
        params: ({ context }) => ({ type: "succeeded" as const, attempt: context.record.attempts }),
      },
    },
    failed: {
      type: "final",
      entry: {
        type: "timeline",
        params: ({ context }) => ({
          type: "failed" as const,
          attempt: context.record.attempts,
          error: context.record.error,
        }),
      },
    },
    canceled: {
      type: "final",
      entry: [
        assign({
          record: ({ context }) => {
            const at = context.now();
            const error = { code: ErrorCodes.CANCELED, message: "canceled by request" };
            return { ...endAttempt(context.record, "canceled", at, error), finishedAt: at, error };
          },
        }),
        {
          type: "timeline",
          params: ({ context }) => ({
            type: "canceled" as const,
            attempt: context.record.attempts,
          }),
        },
      ],
    },
  },
});

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
