/**
 * Messages between a node and the model gateway role. A node relays each model
 * call its agents make (agent-protocol.ts `model_request`) as one request on
 * `<prefix>.model.call` (queue group `model-gateway`); the gateway answers on the
 * request's reply subject with {@link ModelFrame}s in order — `head`, any number
 * of `chunk`s, `end` — and then one empty message (the sentinel nats.js'
 * `requestMany` stops on). `seq` numbers the frames from 0, so a receiver sees a
 * lost frame instead of relaying a torn answer.
 */
import { z } from "zod";
import { ErrorInfoSchema } from "./api-schemas.js";

/**
 * Credentials an agent may send with a model call: the shim drops them, and the
 * gateway drops them again before adding its own key.
 */
export const MODEL_CREDENTIAL_HEADERS: ReadonlySet<string> = new Set([
  "authorization",
  "proxy-authorization",
  "x-api-key",
  "api-key",
  "x-goog-api-key",
  "cookie",
]);

/** Queue group every gateway instance subscribes with: each call goes to one of them. */
export const MODEL_GATEWAY_QUEUE = "model-gateway";

const HeadersSchema = z.record(z.string().max(256), z.string().max(16_384));

/** Node → gateway: one model call, as the agent made it, plus who made it. */
export const ModelCallRequestSchema = z.object({
  upstream: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  method: z.enum(["GET", "POST", "PUT", "PATCH", "DELETE"]),
  /** Appended to the upstream's `baseUrl`. */
  path: z.string().startsWith("/").max(4096),
  /** The agent's headers, credentials already stripped (the gateway strips them again). */
  headers: HeadersSchema.default({}),
  body: z.string().default(""),
  /** Who is calling: the task (and attempt) the call belongs to. */
  tenant: z.string(),
  session: z.string(),
  taskId: z.string(),
  attempt: z.number().int().positive(),
  node: z.string(),
  container: z.string(),
});
export type ModelCallRequest = z.input<typeof ModelCallRequestSchema>;

/** Token counts of one call, as the upstream reported them (absent when it did not). */
export const ModelUsageSchema = z.object({
  input: z.number().int().nonnegative(),
  output: z.number().int().nonnegative(),
});
export type ModelUsage = z.infer<typeof ModelUsageSchema>;

/** What one call amounted to: the `model` event on the task's timeline. */
export const ModelCallSummarySchema = z.object({
  /** The upstream's name (the provider, as the fleet knows it). */
  provider: z.string(),
  /** The model the request asked for (the body's `model`), when it named one. */
  model: z.string().optional(),
  /** The upstream's HTTP status; 0 when no answer began. */
  status: z.number().int().min(0).max(599),
  usage: ModelUsageSchema.optional(),
  /** From the gateway receiving the call to the answer's end. */
  latencyMs: z.number().nonnegative(),
  /** Whether the upstream streamed its answer (SSE). */
  stream: z.boolean().default(false),
});
export type ModelCallSummary = z.infer<typeof ModelCallSummarySchema>;

const Seq = z.number().int().nonnegative();

/** Gateway → node: the answer's status and headers. */
export const ModelHeadFrameSchema = z.object({
  kind: z.literal("head"),
  seq: Seq,
  status: z.number().int().min(100).max(599),
  headers: HeadersSchema.default({}),
});

/** Gateway → node: a piece of the answer's body, as it arrived. */
export const ModelChunkFrameSchema = z.object({
  kind: z.literal("chunk"),
  seq: Seq,
  data: z.string(),
});

/** Gateway → node: the answer is complete (or failed, with `error`), and what it amounted to. */
export const ModelEndFrameSchema = z.object({
  kind: z.literal("end"),
  seq: Seq,
  summary: ModelCallSummarySchema,
  error: ErrorInfoSchema.optional(),
  /** With `error`: whether another call could succeed. */
  retryable: z.boolean().optional(),
});

export const ModelFrameSchema = z.discriminatedUnion("kind", [
  ModelHeadFrameSchema,
  ModelChunkFrameSchema,
  ModelEndFrameSchema,
]);
export type ModelFrame = z.infer<typeof ModelFrameSchema>;
