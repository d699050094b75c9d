/**
 * Messages between roles (gateway, orchestrator, node). They cross process
 * boundaries, so each has a zod schema and every receiver validates it.
 */
import { z } from "zod";
import { ErrorInfoSchema, PrioritySchema, RungSchema, TaskRecordSchema } from "./api-schemas.js";
import { ModelCallSummarySchema } from "./model-messages.js";

/** The leading orchestrator's answer to `<prefix>.ctl.cancel`. */
export const CancelReplySchema = z.object({
  ok: z.boolean(),
  task: TaskRecordSchema.optional(),
  error: ErrorInfoSchema.optional(),
});

/** A submitted task as stored in the tasks stream (the durable copy of its input). */
export const SubmissionSchema = z.object({
  taskId: z.string(),
  tenant: z.string(),
  session: z.string(),
  input: z.string(),
  priority: PrioritySchema,
  timeoutMs: z.number().optional(),
  createdAt: z.string(),
});
export type Submission = z.infer<typeof SubmissionSchema>;

export const ContainerStateSchema = z.enum([
  "starting",
  "idle",
  "busy",
  "reserved",
  "restoring",
  "syncing",
  "draining",
  "failed",
  "stopped",
]);
/** Container lifecycle states (DESIGN.md); the process pool uses a subset. */
export type ContainerState = z.infer<typeof ContainerStateSchema>;

/** One container as its node publishes it in the containers bucket. */
export const ContainerInfoSchema = z.object({
  id: z.string(),
  node: z.string(),
  pool: z.string(),
  runtime: z.string(),
  state: ContainerStateSchema,
  /** The session whose working copy the container holds (busy with it, or warm). */
  tenant: z.string().optional(),
  session: z.string().optional(),
  taskId: z.string().optional(),
  /** Times its agent was restarted in place (healing tier 1). */
  restarts: z.number().int().nonnegative().optional(),
  updatedAt: z.string(),
});
export type ContainerInfo = z.infer<typeof ContainerInfoSchema>;

export const PoolSummarySchema = z.object({
  node: z.string(),
  name: z.string(),
  runtime: z.string(),
  minIdle: z.number(),
  max: z.number(),
  size: z.number(),
  states: z.record(z.string(), z.number()),
  /** Containers this pool replaced after they failed or died (its restart count). */
  restarts: z.number().default(0),
  /** Times the pool actor itself crashed and the node's root supervisor restarted it. */
  crashes: z.number().int().nonnegative().default(0),
});

/** A node's heartbeat in the nodes bucket; stale past the node timeout means dead. */
export const NodeHeartbeatSchema = z.object({
  id: z.string(),
  startedAt: z.string(),
  at: z.string(),
  /** Increases with every heartbeat of this node process, so stale puts are recognisable. */
  seq: z.number().int().nonnegative(),
  /** Set on a clean shutdown: the node takes no more work. */
  stopping: z.boolean().optional(),
  /** Why the node's root supervisor gave up (it takes no more work; see node-supervisor.ts). */
  failure: z.string().optional(),
  pools: z.array(PoolSummarySchema),
  containers: z.array(ContainerInfoSchema),
});
export type NodeHeartbeat = z.infer<typeof NodeHeartbeatSchema>;

/** Orchestrator → node: run this attempt on `container`, or on a new container of `pool`. */
export const DispatchRequestSchema = z.object({
  taskId: z.string(),
  attempt: z.number().int().positive(),
  tenant: z.string(),
  session: z.string(),
  input: z.string(),
  timeoutMs: z.number().optional(),
  rung: RungSchema,
  pool: z.string(),
  container: z.string().optional(),
  /** Healing tier 3: start the turn over from the last known-good version, dropping checkpoints. */
  repair: z.boolean().optional(),
});
export type DispatchRequest = z.infer<typeof DispatchRequestSchema>;

export const DispatchReplySchema = z.discriminatedUnion("accepted", [
  z.object({ accepted: z.literal(true), container: z.string() }),
  z.object({ accepted: z.literal(false), reason: z.string() }),
]);
export type DispatchReply = z.infer<typeof DispatchReplySchema>;

/** Orchestrator → node: stop this attempt of a task. */
export const NodeCancelSchema = z.object({
  taskId: z.string(),
  attempt: z.number().int().positive(),
});
export type NodeCancel = z.infer<typeof NodeCancelSchema>;

export const TaskEventTypeSchema = z.enum([
  "started",
  "step",
  "effect",
  "log",
  "succeeded",
  "failed",
  /** Healing tier 3: what the repair reset before the turn started over. */
  "repaired",
  /** One model call of the agent: provider, model, tokens, latency, status (`model`, `call`). */
  "model",
]);

/** Node → orchestrator (through the events stream): what happened to one attempt. */
export const TaskEventSchema = z.object({
  type: TaskEventTypeSchema,
  taskId: z.string(),
  attempt: z.number().int().positive(),
  node: z.string(),
  container: z.string(),
  at: z.string(),
  step: z.number().int().positive().optional(),
  output: z.string().optional(),
  error: ErrorInfoSchema.optional(),
  retryable: z.boolean().optional(),
  message: z.string().optional(),
  /** On `failed`: the agent's last log lines, for a post-mortem. */
  logTail: z.array(z.string()).optional(),
  /** On `started`: the hash of the behaviour files the turn runs with. */
  behavior: z.string().optional(),
  /** On `model`: the call's number within the attempt (from 1). */
  call: z.number().int().positive().optional(),
  /** On `model`: what the call amounted to (`error` says how it failed, if it did). */
  model: ModelCallSummarySchema.optional(),
});
export type TaskEvent = z.infer<typeof TaskEventSchema>;

/** The leading orchestrator's answer to `<prefix>.ctl.status`. */
export const OrchestratorStatusSchema = z.object({
  id: z.string(),
  since: z.string(),
  queueDepth: z.number(),
  running: z.number(),
  /** Attempts placed this leadership term, by ladder rung. */
  placements: z.record(z.string(), z.number()),
  /** Sessions on the healing ladder this term (see src/supervisor/session-supervisor.ts). */
  sessions: z
    .array(
      z.object({
        tenant: z.string(),
        session: z.string(),
        /** 0 once it recovered (kept in view for one healing window), else its tier. */
        tier: z.number(),
        restarts: z.object({ recreate: z.number(), repair: z.number() }),
        history: z.array(z.record(z.string(), z.unknown())),
        recoveredAt: z.string().optional(),
      }),
    )
    .default([]),
});
export type OrchestratorStatus = z.infer<typeof OrchestratorStatusSchema>;

/** Orchestrator- and gateway-side lines of a task's timeline (`<prefix>.events.timeline.<taskId>`). */
export const TimelineEventSchema = z.object({
  type: z.enum([
    "submitted",
    "placed",
    "requeued",
    /** The session's healing ladder judged a lost attempt: `tier` and its remedy. */
    "healing",
    "succeeded",
    "failed",
    "canceled",
  ]),
  taskId: z.string(),
  attempt: z.number().int().nonnegative(),
  at: z.string(),
  node: z.string().optional(),
  container: z.string().optional(),
  rung: RungSchema.optional(),
  tier: z.number().int().min(1).max(4).optional(),
  delayMs: z.number().optional(),
  error: ErrorInfoSchema.optional(),
  message: z.string().optional(),
});
export type TimelineEvent = z.infer<typeof TimelineEventSchema>;

/** The session registry (`<prefix>_sessions`, key `<tenant>.<session>`): where a session was last served. */
export const SessionEntrySchema = z.object({
  tenant: z.string(),
  session: z.string(),
  node: z.string(),
  container: z.string(),
  /** The snapshot version its last successful turn saved (absent with an unversioned store). */
  version: z.number().int().positive().optional(),
  taskId: z.string(),
  updatedAt: z.string(),
});
export type SessionEntry = z.infer<typeof SessionEntrySchema>;
