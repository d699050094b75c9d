/**
 * The configuration a node hands the agent host of a real runtime (in
 * `CLAWFLEET_AGENT_CONFIG`, JSON): the pool's runtime settings, which upstream
 * the model endpoint stands for, and where the shim listens. Nothing secret is
 * in it. Validated by the agent host at start (src/agents/runtime-agent.ts).
 */
import { z } from "zod";
import {
  CommandProfileSchema,
  ModelBindingSchema,
  OpenClawProfileSchema,
} from "./runtime-options.js";

/** See the module comment. */
export const AgentHostConfigSchema = z.object({
  runtime: z.enum(["command", "openclaw"]),
  command: CommandProfileSchema.optional(),
  openclaw: OpenClawProfileSchema.optional(),
  model: ModelBindingSchema.extend({ api: z.enum(["openai", "anthropic"]).default("openai") }),
  /** The shim's port on the container's loopback; 0 picks a free one (unsandboxed processes). */
  shimPort: z.number().int().min(0).max(65_535).default(0),
  /** Requests over this are refused by the shim and fail the turn `MODEL_REQUEST_TOO_LARGE`. */
  maxRequestBytes: z
    .number()
    .int()
    .min(1024)
    .default(4 * 1024 * 1024),
  heartbeatMs: z.number().int().min(10).default(1000),
  /** Where the runtime's own files live (OpenClaw: Node 24 and the package), as the driver sees them. */
  runtimeDir: z.string().optional(),
});
export type AgentHostConfig = z.output<typeof AgentHostConfigSchema>;
export type AgentHostConfigInput = z.input<typeof AgentHostConfigSchema>;
