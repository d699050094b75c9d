/**
 * Options of the model gateway: the upstream model providers agents' calls are
 * forwarded to, and the limits on one call. Part of {@link FleetOptions} (`models`),
 * so every role sees the same upstream names; the keys themselves are read only
 * by the gateway, from an environment variable or a file, never from options.
 */
import { z } from "zod";

/** One model provider the gateway forwards calls to. */
export interface ModelUpstreamOptions {
  /**
   * What the agent's base URL stands for, e.g. `https://api.openai.com/v1` for an
   * OpenAI-compatible upstream or `https://api.anthropic.com` for an Anthropic one:
   * a path the agent calls below its own base URL is appended to this.
   */
  baseUrl: string;
  /** Wire format, which also names the key header and the agent's variables. Default `openai`. */
  api?: "openai" | "anthropic";
  /** Environment variable holding the key, read by the gateway at start. */
  keyEnv?: string;
  /** File holding the key (trimmed), read by the gateway at start. */
  keyFile?: string;
  /** Longest a whole call may take, streaming included. Default 300 000 ms. */
  timeoutMs?: number;
  /** Longest wait for the answer to begin, and between two streamed chunks. Default 60 000 ms. */
  idleTimeoutMs?: number;
}

/** The model gateway's settings (`FleetOptions.models`). */
export interface ModelGatewayOptions {
  /** Upstreams by name; a pool's `model.upstream` names one. Default none (every call fails `MODEL_UPSTREAM_UNKNOWN`). */
  upstreams?: Record<string, ModelUpstreamOptions>;
  /** Largest request body an agent may send. Default 4 MiB (capped by NATS' max payload). */
  maxRequestBytes?: number;
  /** Largest answer relayed back to the agent. Default 32 MiB. */
  maxResponseBytes?: number;
}

/** Upstream names are path segments of the agent's model URL and NATS-safe tokens. */
export const UpstreamName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 characters of [A-Za-z0-9_-]");

const EnvName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");

export const ModelUpstreamSchema = z
  .strictObject({
    baseUrl: z.url({ protocol: /^https?$/ }).transform((u) => u.replace(/\/+$/, "")),
    api: z.enum(["openai", "anthropic"]).default("openai"),
    keyEnv: EnvName.optional(),
    keyFile: z.string().min(1).optional(),
    timeoutMs: z.number().int().min(100).default(300_000),
    idleTimeoutMs: z.number().int().min(100).default(60_000),
  })
  .refine((u) => !(u.keyEnv && u.keyFile), "give keyEnv or keyFile, not both");

export const ModelGatewaySchema = z.strictObject({
  upstreams: z.record(UpstreamName, ModelUpstreamSchema).default({}),
  maxRequestBytes: z
    .number()
    .int()
    .min(1024)
    .default(4 * 1024 * 1024),
  maxResponseBytes: z
    .number()
    .int()
    .min(1024)
    .default(32 * 1024 * 1024),
});

/** One upstream with every default applied. */
export type ModelUpstream = Readonly<z.output<typeof ModelUpstreamSchema>>;

/** The model gateway's settings with every default applied. */
export type ModelGatewaySettings = Readonly<z.output<typeof ModelGatewaySchema>>;
