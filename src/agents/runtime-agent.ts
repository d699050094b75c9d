/**
 * The program a pool of real agents runs in each container: the agent host
 * (agent-host.ts) around the pool's runtime driver. Started by the pool with
 * `CLAWFLEET_AGENT_CONFIG` (JSON, see {@link AgentHostConfigSchema}) and
 * `CLAWFLEET_WORKSPACE` in its environment; nothing else of the node's
 * environment reaches it but the variables a `command` profile passes through.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { AgentHost, EXIT_START_FAILED } from "./agent-host.js";
import { CommandDriver } from "./command-driver.js";
import type { ModelEndpoint, RuntimeDriver } from "./runtime-driver.js";
import { type AgentHostConfig, AgentHostConfigSchema } from "./runtime-driver.js";

/** The driver for `config`'s runtime. */
async function driverFor(
  config: AgentHostConfig,
  workspace: string,
  model: ModelEndpoint,
  log: (msg: string) => void,
): Promise<RuntimeDriver> {
  if (config.runtime === "command") {
    const profile = config.command!;
    // Only the allow-listed names, read from what the pool passed us.
    const env: Record<string, string> = {};
    for (const name of profile.passEnv) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    return new CommandDriver(profile, workspace, { env });
  }
  const { OpenClawDriver } = await import("./openclaw-driver.js");
  return new OpenClawDriver(config, workspace, model, log);
}

async function main(): Promise<void> {
  const diag = (line: string) => process.stderr.write(`[agent-host] ${line}\n`);
  let config: AgentHostConfig;
  try {
    config = AgentHostConfigSchema.parse(JSON.parse(process.env.CLAWFLEET_AGENT_CONFIG ?? ""));
  } catch (err) {
    const why = err instanceof z.ZodError ? z.prettifyError(err) : String(err);
    diag(`CONFIG_INVALID: CLAWFLEET_AGENT_CONFIG: ${why}`);
    process.exit(EXIT_START_FAILED);
  }
  const workspace = path.resolve(process.env.CLAWFLEET_WORKSPACE ?? process.cwd());
  process.stdout.on("error", () => process.exit(0));
  // The driver is built once the shim listens: it needs the endpoint's URL.
  const host = new AgentHost(
    config,
    workspace,
    (model) => driverFor(config, workspace, model, diag),
    {
      input: process.stdin,
      write: (line) => process.stdout.write(line),
      diag,
      exit: (code) => process.exit(code),
    },
  );
  await host.start();
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(path.resolve(entry)).href) {
  void main();
}
