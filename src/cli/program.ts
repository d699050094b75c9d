/**
 * The `clawfleet` command tree, and how a run of it ends: every failure prints one line,
 * `clawfleet: CODE: reason`, and exits 1 (2 when the command line is wrong); `--help`
 * prints help (see cli-errors.ts).
 */
import { Command } from "commander";
import { SERVICE_VERSION } from "../gateway/api-service.js";
import { registerBehaviorCommands } from "./behavior-commands.js";
import { failureOf, throwParseFailures } from "./cli-errors.js";
import { registerImageCommands } from "./image-commands.js";
import { registerRoleCommands } from "./role-commands.js";
import { registerRuntimeCommands } from "./runtime-commands.js";
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
    .enablePositionalOptions();
  registerRoleCommands(program);
  registerTaskCommands(program);
  registerBehaviorCommands(program);
  registerImageCommands(program);
  registerRuntimeCommands(program);
  registerSimCommand(program);
  registerStateCommands(program);
  registerSupervisionCommands(program);
  registerTreeCommand(program);
  throwParseFailures(program);
  return program;
}

/** Runs the command `argv` names (as `process.argv`); a failure sets the exit status. */
export async function runProgram(argv: readonly string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv as string[]);
  } catch (err) {
    const failure = failureOf(err);
    if (failure.line) process.stderr.write(failure.line);
    process.exitCode = failure.exitCode;
  }
}
