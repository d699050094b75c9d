/**
 * The JSON-lines protocol between a host (the container actor) and the agent
 * process in the container, one JSON object per line on stdio. Both sides
 * validate every line; a line that does not parse is a protocol error.
 */
import { z } from "zod";
import { ErrorInfoSchema } from "./api-schemas.js";

/** Host → agent: run one turn. */
export const TurnMessageSchema = z.object({
  type: z.literal("turn"),
  taskId: z.string(),
  attempt: z.number().int().positive(),
  tenant: z.string(),
  session: z.string(),
  input: z.string(),
  /** Behaviour files (name → markdown) for this turn. */
  behavior: z.record(z.string(), z.string()).default({}),
  /** Steps up to and including this index are already checkpointed: skip them. */
  resumeAfter: z.number().int().min(0).default(0),
  /** Outputs of the checkpointed steps, in order (index 0 is step 1). */
  steps: z.array(z.unknown()).default([]),
});
export type TurnMessage = z.input<typeof TurnMessageSchema>;

/** Host → agent: the checkpoint of step `step` is durable; the agent may go on. */
export const AckMessageSchema = z.object({
  type: z.literal("ack"),
  step: z.number().int().positive(),
});

/** Host → agent: stop the current turn now. */
export const CancelMessageSchema = z.object({ type: z.literal("cancel") });

/**
 * Host → agent: make the workspace safe to copy (e.g. checkpoint SQLite's WAL into
 * the database file), then answer `quiesced` with the same id. Sent only to agents
 * that announced the `quiesce` capability, and only while they wait (for an ack,
 * or between turns).
 */
export const QuiesceMessageSchema = z.object({
  type: z.literal("quiesce"),
  id: z.number().int().nonnegative(),
});

/**
 * Host → agent: the workspace is about to be replaced (another session's files are
 * restored into it): close everything open in it, then answer `released` with the
 * same id. Sent only to agents that announced the `release` capability, between turns.
 */
export const ReleaseMessageSchema = z.object({
  type: z.literal("release"),
  id: z.number().int().nonnegative(),
});

/** Header names and values of a relayed HTTP exchange. */
const HttpHeadersSchema = z.record(z.string().max(256), z.string().max(16_384));

/**
 * Host → agent: the answer to `model_request` `id` begins: HTTP status and
 * headers. Chunks of its body follow, then `model_end`.
 */
export const ModelResponseMessageSchema = z.object({
  type: z.literal("model_response"),
  id: z.number().int().nonnegative(),
  status: z.number().int().min(100).max(599),
  headers: HttpHeadersSchema.default({}),
});

/** Host → agent: a piece of the body of answer `id`, as it arrived (SSE events stay whole or split). */
export const ModelChunkMessageSchema = z.object({
  type: z.literal("model_chunk"),
  id: z.number().int().nonnegative(),
  data: z.string(),
});

/**
 * Host → agent: answer `id` is complete. With `error`, it failed; if no
 * `model_response` came first, the shim answers the agent's client with the
 * error's HTTP status and a JSON body naming its code.
 */
export const ModelEndMessageSchema = z.object({
  type: z.literal("model_end"),
  id: z.number().int().nonnegative(),
  error: ErrorInfoSchema.optional(),
});

export const HostMessageSchema = z.discriminatedUnion("type", [
  TurnMessageSchema,
  AckMessageSchema,
  CancelMessageSchema,
  QuiesceMessageSchema,
  ReleaseMessageSchema,
  ModelResponseMessageSchema,
  ModelChunkMessageSchema,
  ModelEndMessageSchema,
]);
export type HostMessage = z.input<typeof HostMessageSchema>;

/** Agent → host: ready for a turn (sent once after start). */
export const ReadyMessageSchema = z.object({
  type: z.literal("ready"),
  agent: z.string().optional(),
  /** Optional protocol features the agent supports: `quiesce`, `release`. */
  capabilities: z.array(z.string()).default([]),
});

/** Agent → host: the workspace is safe to copy (answers `quiesce`). */
export const QuiescedMessageSchema = z.object({
  type: z.literal("quiesced"),
  id: z.number().int().nonnegative(),
});

/** Agent → host: checkpoint of step `step` (1-based); the agent waits for its ack. */
export const StepMessageSchema = z.object({
  type: z.literal("step"),
  step: z.number().int().positive(),
  name: z.string().optional(),
  output: z.unknown().optional(),
});

/** Agent → host: a side effect to deliver through the outbox (keyed taskId/step). */
export const EffectMessageSchema = z.object({
  type: z.literal("effect"),
  step: z.number().int().positive(),
  kind: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  payload: z.unknown(),
});

export const LogMessageSchema = z.object({
  type: z.literal("log"),
  level: z.enum(["debug", "info", "warn", "error"]).default("info"),
  msg: z.string(),
});

export const HeartbeatMessageSchema = z.object({ type: z.literal("heartbeat") });

export const ResultMessageSchema = z.object({
  type: z.literal("result"),
  taskId: z.string(),
  output: z.string(),
});

export const ErrorMessageSchema = z.object({
  type: z.literal("error"),
  taskId: z.string(),
  error: ErrorInfoSchema,
  /** Whether another attempt could succeed; agents report bad input as terminal. */
  retryable: z.boolean().default(false),
});

/** Agent → host: the workspace is released (answers `release`). */
export const ReleasedMessageSchema = z.object({
  type: z.literal("released"),
  id: z.number().int().nonnegative(),
});

/**
 * Agent → host: one HTTP request the agent made to its model endpoint (the shim
 * on its loopback), to be relayed to the model gateway. `upstream` is the first
 * path segment of the agent's URL, `path` the rest. Credentials are stripped by
 * the shim; the body is text (model APIs speak JSON).
 */
export const ModelRequestMessageSchema = z.object({
  type: z.literal("model_request"),
  id: z.number().int().nonnegative(),
  upstream: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  method: z.enum(["GET", "POST", "PUT", "PATCH", "DELETE"]),
  path: z.string().startsWith("/").max(4096),
  headers: HttpHeadersSchema.default({}),
  body: z.string().default(""),
  /** Set (with an empty `body`) when the shim refused a body over its cap: its size. */
  bodyBytes: z.number().int().nonnegative().optional(),
});

/** Agent → host: the agent's client went away; stop relaying answer `id`. */
export const ModelAbortMessageSchema = z.object({
  type: z.literal("model_abort"),
  id: z.number().int().nonnegative(),
});

export const AgentMessageSchema = z.discriminatedUnion("type", [
  ReadyMessageSchema,
  QuiescedMessageSchema,
  ReleasedMessageSchema,
  ModelRequestMessageSchema,
  ModelAbortMessageSchema,
  StepMessageSchema,
  EffectMessageSchema,
  LogMessageSchema,
  HeartbeatMessageSchema,
  ResultMessageSchema,
  ErrorMessageSchema,
]);
export type AgentMessage = z.output<typeof AgentMessageSchema>;

/** Serialises one protocol message as a line. */
export function encodeLine(msg: unknown): string {
  return `${JSON.stringify(msg)}\n`;
}
