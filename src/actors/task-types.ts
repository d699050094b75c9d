/**
 * The task actor's vocabulary, apart from its machine (`task-machine.ts`): what
 * it is created from, its context, the events it takes and emits, the dispatch it
 * asks for, and the projections the runtime reads off a snapshot (the durable
 * record, the client's status, priority order).
 */
import { ErrorCodes, type ErrorInfo } from "../errors.js";
import type { Priority, Rung, TaskRecord } from "../protocol/api-schemas.js";
import type { DispatchRequest } from "../protocol/fleet-messages.js";

/** Where the orchestrator decided to run the next attempt. */
export interface Placement {
  readonly node: string;
  readonly pool: string;
  readonly rung: Rung;
  /** A specific container, or none to start a new one in `pool`. */
  readonly container?: string;
}

/** How a supervisor answered a lost attempt (healing tiers 2, 3 and 4). */
export type HealingDecision = "recreate" | "repair" | "quarantined";

/** Codes of lost attempts that say nothing about the session itself: no tier is climbed. */
export const INFRASTRUCTURE_FAILURES: ReadonlySet<string> = new Set([
  ErrorCodes.NODE_LOST,
  ErrorCodes.LEASE_LOST,
  ErrorCodes.DISPATCH_FAILED,
  ErrorCodes.NODE_STOPPING,
]);

/** Everything the task actor is created from: a record (new or reloaded) and its input. */
export interface TaskMachineInput {
  /** The record; `history` may be missing on records written before it existed. */
  readonly record: Omit<TaskRecord, "history"> & { history?: TaskRecord["history"] };
  readonly input: string;
  readonly maxAttempts: number;
  readonly retryBackoffMs: number;
  /** ISO time now, from the runtime's injected clock. */
  readonly now: () => string;
  /**
   * Whether a supervisor answers each `heal` with `HEALED` (the orchestrator's tasks).
   * Default false: a lost attempt is retried after the backoff alone.
   */
  readonly supervised?: boolean;
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
  supervised: boolean;
  /** A `heal` was emitted and its `HEALED` has not come: the task is not placed meanwhile. */
  healing: boolean;
  /** The backoff of the current retry has run out (placement waits for healing too). */
  backoffElapsed: boolean;
  /** Healing tier 3 asked that the next attempt start over from the last known-good version. */
  repair: boolean;
  /** Containers this task's attempts died in: the next placement keeps away from them. */
  avoid: readonly string[];
  /** The agent's last log lines from the last failed attempt (for a post-mortem). */
  logTail: readonly string[];
}

export type TaskEvent =
  | { type: "PLACE"; placement: Placement }
  | { type: "STARTED"; attempt: number; behavior?: string }
  | { type: "STEP"; attempt: number; step: number }
  | { type: "SUCCEEDED"; attempt: number; output: string; at: string }
  | {
      type: "FAILED";
      attempt: number;
      error: ErrorInfo;
      retryable: boolean;
      at: string;
      logTail?: readonly string[];
    }
  | { type: "NODE_LOST"; node: string }
  | { type: "LEASE_LOST"; attempt: number }
  | { type: "QUARANTINE"; reason: string }
  | { type: "HEALED"; decision: HealingDecision | null }
  | { type: "CANCEL" };

/** A line of the task's timeline, as the orchestrator sees it. */
export interface TimelineEntry {
  readonly type: "placed" | "requeued" | "succeeded" | "failed" | "canceled";
  readonly attempt: number;
  readonly node?: string;
  readonly container?: string;
  readonly rung?: Rung;
  readonly delayMs?: number;
  readonly error?: ErrorInfo;
}

/** Events the task actor emits for its runtime to act on. */
export type TaskEmitted =
  | { type: "cancelOnNode"; node: string; taskId: string; attempt: number }
  | { type: "placementRejected"; placement: Placement; reason: string }
  | { type: "heal"; lost: LostAttemptInfo }
  | { type: "timeline"; entry: TimelineEntry };

/** The lost attempt a `heal` asks a supervisor about. */
export interface LostAttemptInfo {
  readonly tenant: string;
  readonly session: string;
  readonly taskId: string;
  readonly attempt: number;
  readonly error: ErrorInfo;
  readonly logTail: readonly string[];
}

export interface DispatchInput {
  readonly record: TaskRecord;
  readonly input: string;
  readonly placement: Placement;
  readonly attempt: number;
  /** Start over from the last known-good version with config and behaviour repaired (tier 3). */
  readonly repair?: boolean;
}

/** The node's view of one dispatch: what the runtime sends for `input`. */
export function dispatchRequestOf(input: DispatchInput): DispatchRequest {
  const { record, placement } = input;
  return {
    taskId: record.taskId,
    attempt: input.attempt,
    tenant: record.tenant,
    session: record.session,
    input: input.input,
    timeoutMs: record.timeoutMs,
    rung: placement.rung,
    pool: placement.pool,
    container: placement.container,
    ...(input.repair ? { repair: true } : {}),
  };
}

/** Maps a machine state to the status clients see. */
export function statusOfState(value: string): TaskRecord["status"] {
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
