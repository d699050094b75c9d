/**
 * What every pool adapter needs to launch a pool's agent program: which program
 * (the reference agent, or the agent host of a real runtime), the host config
 * handed to the agent host, and the host paths its sandbox must show read-only.
 * Shared by the process and Docker pools so both launch the same thing.
 */

import type { AgentHostConfigInput } from "../../agent-host-config.js";
import type { PoolProfile } from "../../fleet-options.js";
import type { ModelGatewaySettings } from "../../model-gateway-options.js";
import type { AgentProgram } from "./agent-bundle.js";

/** The model shim's port inside a private network namespace (sandboxed agents). */
export const SANDBOX_SHIM_PORT = 18_790;

/** How a pool's agents are launched, beyond the sandbox itself. */
export interface AgentLaunch {
  readonly program: AgentProgram;
  /** The environment the agent program needs (no secrets). */
  readonly env: Readonly<Record<string, string>>;
}

/** Where a real runtime's own files are, when it has any (OpenClaw: Node 24 and the package). */
export interface RuntimeFiles {
  /** The runtime's directory as the agent sees it. */
  readonly dir: string;
}

/**
 * The launch of `profile`'s agents: the scripted agent as before, or the agent
 * host with its config (runtime settings, the upstream the model endpoint stands
 * for, the shim's port and limits). `passEnv` values come from `hostEnv`.
 */
export function agentLaunch(
  profile: PoolProfile,
  options: {
    readonly models?: ModelGatewaySettings;
    /** True when the agent has its own network namespace, so a fixed shim port is free. */
    readonly privateNetwork: boolean;
    readonly runtime?: RuntimeFiles;
    readonly hostEnv?: NodeJS.ProcessEnv;
  },
): AgentLaunch {
  if (profile.runtime === "scripted") return { program: "scripted-agent", env: {} };
  const upstream = options.models?.upstreams[profile.model.upstream];
  const config: AgentHostConfigInput = {
    runtime: profile.runtime,
    ...(profile.runtime === "command" ? { command: profile.command } : {}),
    ...(profile.runtime === "openclaw" ? { openclaw: profile.openclaw } : {}),
    model: { ...profile.model, api: upstream?.api ?? "openai" },
    shimPort: options.privateNetwork ? SANDBOX_SHIM_PORT : 0,
    ...(options.models ? { maxRequestBytes: options.models.maxRequestBytes } : {}),
    heartbeatMs: profile.agentHeartbeatMs,
    ...(options.runtime ? { runtimeDir: options.runtime.dir } : {}),
  };
  const env: Record<string, string> = { CLAWFLEET_AGENT_CONFIG: JSON.stringify(config) };
  // The allow-list is checked against credential-looking names when options are resolved.
  const hostEnv = options.hostEnv ?? process.env;
  for (const name of profile.command?.passEnv ?? []) {
    const value = hostEnv[name];
    if (value !== undefined) env[name] = value;
  }
  return { program: "runtime-agent", env };
}
