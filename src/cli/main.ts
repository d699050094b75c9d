/**
 * The `clawfleet` command. Role commands (`up`, `node`, `orchestrator`,
 * `gateway`) run until SIGINT/SIGTERM; client commands talk to the public API
 * and exit. Every failure prints one line, `clawfleet: <reason>`, and exits 1.
 */
import { Command } from "commander";
import { toErrorInfo } from "../errors.js";
import { SERVICE_VERSION } from "../gateway/api-service.js";
import { registerBehaviorCommands } from "./behavior-commands.js";
import { registerImageCommands } from "./image-commands.js";
import { registerRoleCommands } from "./role-commands.js";
import { registerSimCommand } from "./sim-command.js";
import { registerStateCommands } from "./state-commands.js";
import { registerSupervisionCommands } from "./supervision-commands.js";
import { registerTaskCommands } from "./task-commands.js";
import { registerTreeCommand } from "./tree-command.js";

/** Builds the command tree. */
export function buildProgram(): Command {
  const program = new Command("clawfleet")
    .description(
      "Host long-running, stateful AI agents for many users on a fixed pool of containers.",
    )
    .version(SERVICE_VERSION)
    // `--version` after a command belongs to that command (`restore --version 3`).
    .enablePositionalOptions()
    .showHelpAfterError();
  registerRoleCommands(program);
  registerTaskCommands(program);
  registerBehaviorCommands(program);
  registerImageCommands(program);
  registerSimCommand(program);
  registerStateCommands(program);
  registerSupervisionCommands(program);
  registerTreeCommand(program);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  const info = toErrorInfo(err);
  process.stderr.write(
    `clawfleet: ${info.code === "INTERNAL" ? "" : `${info.code}: `}${info.message}\n`,
  );
  process.exitCode = 1;
}
