/**
 * The task actor: one per open task, owned by the leading orchestrator.
 *
 * `queued → placing → running → succeeded | failed | canceled`, with
 * `running → retrying → queued` when an attempt fails in a way another attempt
 * may survive (agent crash or hang, node lost). Events from an older attempt
 * are ignored, which fences a late or stale node off the record.
 *
 * The machine decides; it performs no I/O itself. Dispatching goes through the
 * named `dispatch` actor and the runtime persists the record it derives from
 * each snapshot ({@link taskRecordOf}), so the machine is testable without NATS.
 */
import { assign, emit, fromPromise, setup } from "xstate";
import type { ErrorInfo } from "../errors.js";
import type { Priority, Rung, TaskRecord, TaskStatus } from "../protocol/api-schemas.js";
import type { DispatchReply } from "../protocol/fleet-messages.js";

/** Where the orchestrator decided to run the next attempt. */
export interface Placement {
  readonly node: string;
  readonly pool: string;
  readonly rung: Rung;
  /** A specific container, or none to start a new one in `pool`. */
  readonly container?: string;
}

/** Everything the task actor is created from: a record (new or reloaded) and its input. */
export interface TaskMachineInput {
  readonly record: TaskRecord;
  readonly input: string;
  readonly maxAttempts: number;
  readonly retryBackoffMs: number;
  /** ISO time now, from the runtime's injected clock. */
  readonly now: () => string;
}

export interface TaskContext {
  record: TaskRecord;
  input: string;
  maxAttempts: number;
  retryBackoffMs: number;
  now: () => string;
  placement: Placement | null;
  cancelRequested: boolean;
  lastError: ErrorInfo | null;
}

export type TaskEvent =
  | { type: "PLACE"; placement: Placement }
  | { type: "STEP"; attempt: number; step: number }
  | { type: "SUCCEEDED"; attempt: number; output: string; at: string }
  | { type: "FAILED"; attempt: number; error: ErrorInfo; retryable: boolean; at: string }
  | { type: "NODE_LOST"; node: string }
  | { type: "CANCEL" };

/** Events the task actor emits for its runtime to act on. */
export type TaskEmitted =
  | { type: "cancelOnNode"; node: string; taskId: string; attempt: number }
  | { type: "placementRejected"; placement: Placement; reason: string };

export interface DispatchInput {
  readonly record: TaskRecord;
  readonly input: string;
  readonly placement: Placement;
  readonly attempt: number;
}

const MAX_BACKOFF_MS = 30_000;

const forAttempt = ({ context, event }: { context: TaskContext; event: TaskEvent }) =>
  "attempt" in event && event.attempt === context.record.attempts;

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
      throw new Error("dispatch is provided by the orchestrator runtime");
    }),
  },
  guards: {
    resumedRunning: ({ context }) => context.record.status === "running" && !!context.record.node,
    forAttempt,
    lostOurNode: ({ context, event }) =>
      event.type === "NODE_LOST" && event.node === context.record.node,
    cancelRequested: ({ context }) => context.cancelRequested,
  },
  actions: {
    cancelOnNode: emit(({ context }: { context: TaskContext }) => ({
      type: "cancelOnNode" as const,
      node: context.record.node ?? "",
      taskId: context.record.taskId,
      attempt: context.record.attempts,
    })),
  },
  delays: {
    backoff: ({ context }) =>
      Math.min(
        context.retryBackoffMs * 2 ** Math.max(0, context.record.attempts - 1),
        MAX_BACKOFF_MS,
      ),
  },
}).createMachine({
  id: "task",
  context: ({ input }) => ({
    record: input.record,
    input: input.input,
    maxAttempts: input.maxAttempts,
    retryBackoffMs: input.retryBackoffMs,
    now: input.now,
    placement: null,
    cancelRequested: false,
    lastError: null,
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
        }),
        onDone: [
          {
            guard: ({ event }) => event.output.accepted,
            target: "running",
            actions: assign({
              record: ({ context, event }) => ({
                ...context.record,
                status: "running" as TaskStatus,
                attempts: context.record.attempts + 1,
                node: context.placement!.node,
                container: event.output.accepted
                  ? event.output.container
                  : context.placement!.container,
                rung: context.placement!.rung,
                startedAt: context.record.startedAt ?? context.now(),
              }),
            }),
          },
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
            guard: ({ context }) => context.record.attempts + 1 < context.maxAttempts,
            target: "retrying",
            actions: assign({
              record: ({ context }) => ({
                ...context.record,
                attempts: context.record.attempts + 1,
              }),
              lastError: ({ event }) => ({
                code: "DISPATCH_FAILED",
                message: errorMessage(event.error),
              }),
            }),
          },
          {
            target: "failed",
            actions: assign({
              record: ({ context, event }) => ({
                ...context.record,
                attempts: context.record.attempts + 1,
                finishedAt: context.now(),
                error: {
                  code: "ATTEMPTS_EXHAUSTED",
                  message: `gave up after ${context.record.attempts + 1} attempts; last: DISPATCH_FAILED: ${errorMessage(event.error)}`,
                },
              }),
            }),
          },
        ],
      },
      // The dispatch may already be accepted by the node: finish it, then cancel there.
      on: { CANCEL: { actions: assign({ cancelRequested: true }) } },
    },
    running: {
      always: { guard: "cancelRequested", target: "canceled", actions: "cancelOnNode" },
      on: {
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
              ...context.record,
              output: event.output,
              finishedAt: event.at,
            }),
          }),
        },
        FAILED: [
          {
            guard: ({ context, event }) =>
              forAttempt({ context, event }) &&
              event.retryable &&
              context.record.attempts < context.maxAttempts,
            target: "retrying",
            actions: assign({ lastError: ({ event }) => event.error }),
          },
          {
            guard: "forAttempt",
            target: "failed",
            actions: assign({
              record: ({ context, event }) => ({
                ...context.record,
                finishedAt: event.at,
                error: event.retryable
                  ? {
                      code: "ATTEMPTS_EXHAUSTED",
                      message: `gave up after ${context.record.attempts} attempts; last: ${event.error.code}: ${event.error.message}`,
                    }
                  : event.error,
              }),
            }),
          },
        ],
        NODE_LOST: [
          {
            guard: ({ context, event }) =>
              event.node === context.record.node && context.record.attempts < context.maxAttempts,
            target: "retrying",
            actions: assign({
              lastError: ({ event }) => ({
                code: "NODE_LOST",
                message: `node ${event.node} stopped answering`,
              }),
            }),
          },
          {
            guard: "lostOurNode",
            target: "failed",
            actions: assign({
              record: ({ context, event }) => ({
                ...context.record,
                finishedAt: context.now(),
                error: {
                  code: "ATTEMPTS_EXHAUSTED",
                  message: `gave up after ${context.record.attempts} attempts; last: NODE_LOST: node ${event.node} stopped answering`,
                },
              }),
            }),
          },
        ],
        CANCEL: { target: "canceled", actions: "cancelOnNode" },
      },
    },
    retrying: {
      entry: assign({
        record: ({ context }) => ({
          ...context.record,
          status: "queued" as TaskStatus,
          node: undefined,
          container: undefined,
        }),
      }),
      after: { backoff: "queued" },
      on: { CANCEL: "canceled" },
    },
    succeeded: { type: "final" },
    failed: { type: "final" },
    canceled: {
      type: "final",
      entry: assign({
        record: ({ context }) => ({
          ...context.record,
          finishedAt: context.now(),
          error: { code: "CANCELED", message: "canceled by request" },
        }),
      }),
    },
  },
});

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps a machine state to the status clients see. */
export function statusOfState(value: string): TaskStatus {
  switch (value) {
    case "running":
    case "succeeded":
    case "failed":
    case "canceled":
      return value;
    default:
      return "queued";
  }
}

/** The durable record for a task actor's snapshot. */
export function taskRecordOf(snapshot: { value: unknown; context: TaskContext }): TaskRecord {
  const status = statusOfState(String(snapshot.value));
  return { ...snapshot.context.record, status };
}

/** Typed helper for the runtime: a task's priority as a number (higher first). */
export function priorityRank(priority: Priority): number {
  return priority === "high" ? 2 : priority === "normal" ? 1 : 0;
}
