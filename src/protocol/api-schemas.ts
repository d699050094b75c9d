/**
 * The public API's wire format (`<prefix>.api.*`), validated with zod at the
 * boundary. Clients in any language send and receive exactly these JSON shapes.
 */
import { z } from "zod";
import { type ErrorCode, ErrorCodes, type ErrorInfo } from "../errors.js";

/** Tenant and session ids: 1–128 chars of `[A-Za-z0-9_-]` (they become subject tokens). */
export const IdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_-]+$/, "must be 1-128 characters of [A-Za-z0-9_-]");

/** Largest accepted input, in bytes of UTF-8. */
export const MAX_INPUT_BYTES = 1024 * 1024;

export const PrioritySchema = z.enum(["low", "normal", "high"]);
/** Scheduling priority of a task; higher runs first when capacity is short. */
export type Priority = z.infer<typeof PrioritySchema>;

export const SubmitRequestSchema = z.strictObject({
  tenant: IdSchema.default("default"),
  session: IdSchema,
  input: z.string(),
  idempotencyKey: z.string().min(1).max(256).optional(),
  priority: PrioritySchema.default("normal"),
  /** Deadline of the turn once it runs; past it the agent is stopped (`TURN_TIMEOUT`). */
  timeoutMs: z
    .number()
    .int()
    .min(100)
    .max(24 * 3600 * 1000)
    .optional(),
});
/** Body of `submit`; `run` takes the same plus `waitMs`. */
export type SubmitRequest = z.input<typeof SubmitRequestSchema>;
export type ParsedSubmitRequest = z.output<typeof SubmitRequestSchema>;

export const RunRequestSchema = SubmitRequestSchema.extend({
  /** How long `run` waits for the task to end before answering `TIMEOUT` (default 60 s). */
  waitMs: z
    .number()
    .int()
    .min(1)
    .max(15 * 60 * 1000)
    .optional(),
});
export type RunRequest = z.input<typeof RunRequestSchema>;

export const TaskIdRequestSchema = z.strictObject({ taskId: z.string().min(1).max(256) });
export type TaskIdRequest = z.infer<typeof TaskIdRequestSchema>;

export const TaskStatusSchema = z.enum(["queued", "running", "succeeded", "failed", "canceled"]);
/** Lifecycle status of a task as clients see it. */
export type TaskStatus = z.infer<typeof TaskStatusSchema>;

/** Placement rung of the preference ladder (see DESIGN.md). */
export const RungSchema = z.enum(["own-busy", "reserved", "warm", "idle", "new"]);
export type Rung = z.infer<typeof RungSchema>;

/** A code of the one registry in errors.ts; an unknown code is refused at the boundary. */
export const ErrorCodeSchema: z.ZodType<ErrorCode> = z.enum(ErrorCodes);

export const ErrorInfoSchema = z.object({ code: ErrorCodeSchema, message: z.string() });

/** How one attempt ended: `lost` covers a lost lease, a lost node and an unanswered dispatch. */
export const AttemptOutcomeSchema = z.enum(["running", "succeeded", "failed", "canceled", "lost"]);

/** One attempt of a task: where it ran and why it ended. */
export const AttemptRecordSchema = z.object({
  attempt: z.number().int().positive(),
  node: z.string(),
  container: z.string().optional(),
  rung: RungSchema,
  startedAt: z.string(),
  endedAt: z.string().optional(),
  outcome: AttemptOutcomeSchema,
  error: ErrorInfoSchema.optional(),
  /** Hash of the behaviour files this attempt ran with. */
  behavior: z.string().optional(),
});
export type AttemptRecord = z.infer<typeof AttemptRecordSchema>;

export const TaskRecordSchema = z.object({
  taskId: z.string(),
  tenant: z.string(),
  session: z.string(),
  status: TaskStatusSchema,
  priority: PrioritySchema,
  attempts: z.number().int().nonnegative(),
  steps: z.number().int().nonnegative(),
  rung: RungSchema.optional(),
  node: z.string().optional(),
  container: z.string().optional(),
  output: z.string().optional(),
  error: ErrorInfoSchema.optional(),
  /** Hash of the behaviour files of the latest attempt. */
  behavior: z.string().optional(),
  idempotencyKey: z.string().optional(),
  timeoutMs: z.number().optional(),
  createdAt: z.string(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  /** One entry per attempt, oldest first. */
  history: z.array(AttemptRecordSchema).default([]),
});
/** The durable record of a task, stored in KV and returned by the API. */
export type TaskRecord = z.output<typeof TaskRecordSchema>;

/** Whether a status is final. */
export function isTerminal(status: TaskStatus): boolean {
  return status === "succeeded" || status === "failed" || status === "canceled";
}

/** `fleet.api.status` reply body. */
export interface FleetStatus {
  nodes: Array<{ id: string; startedAt: string; lastSeen: string; pools: PoolSummary[] }>;
  pools: PoolSummary[];
  containers: Record<string, number>;
  queueDepth: number | null;
  /** Attempts placed by the current leader, by ladder rung (`own-busy` never places). */
  placements: Record<string, number>;
  orchestrator: { id: string; since: string } | null;
}

/** One pool as reported by its node's heartbeat. */
export interface PoolSummary {
  node: string;
  name: string;
  runtime: string;
  minIdle: number;
  max: number;
  size: number;
  states: Record<string, number>;
  restarts: number;
}

/** A failed reply, as clients validate it. */
export const ApiFailureSchema = z.object({ ok: z.literal(false), error: ErrorInfoSchema });

/** Success replies carry `ok: true` and their fields; failures carry a coded error. */
export type ApiReply<T extends object> = ({ ok: true } & T) | { ok: false; error: ErrorInfo };
