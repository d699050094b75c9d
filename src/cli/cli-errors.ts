/**
 * How a failed command reads: one line on stderr, `clawfleet: CODE: reason`, whatever
 * failed (commander's parser, a flag's value, the fleet's reply, a file). Exit status 2
 * when the command line itself is wrong (`USAGE`: an unknown command or option, a missing
 * or malformed argument, a flag value the API would refuse), 1 for everything else, so a
 * script can tell "I called it wrong" from "it failed".
 */
import { type Command, CommanderError } from "commander";
import { ErrorCodes, TerminalError, toErrorInfo } from "../errors.js";

/** Exit status of a command line that does not parse. */
export const USAGE_EXIT = 2;

/** The command line is wrong; the message names the flag or argument as the user typed it. */
export class UsageError extends TerminalError {
  constructor(message: string) {
    super(ErrorCodes.USAGE, message);
  }
}

/** Commander's parse failure, with the command it happened in (for the help hint). */
export class CommandLineError extends Error {
  constructor(
    readonly error: CommanderError,
    readonly command: string,
  ) {
    super(error.message);
  }
}

/** What to print (nothing when help or the version was printed) and the exit status. */
export interface Failure {
  readonly line?: string;
  readonly exitCode: number;
}

/** The one error line: code, then the reason with any line breaks folded into one line. */
export function errorLine(code: string, reason: string): string {
  const text = reason
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .join("; ");
  return `clawfleet: ${code}: ${text}\n`;
}

/** Turns anything a command threw into its line and exit status. */
export function failureOf(err: unknown): Failure {
  if (err instanceof CommandLineError) return commanderFailure(err.error, err.command);
  if (err instanceof CommanderError) return commanderFailure(err, "clawfleet");
  const info = toErrorInfo(err);
  return {
    line: errorLine(info.code, info.message),
    exitCode: info.code === ErrorCodes.USAGE ? USAGE_EXIT : 1,
  };
}

function commanderFailure(err: CommanderError, command: string): Failure {
  // Help or the version was asked for and printed: not a failure.
  if (err.code === "commander.helpDisplayed" || err.code === "commander.version")
    return { exitCode: 0 };
  // Help printed by `clawfleet help` (exit 0), or on stderr for a command that needs a
  // subcommand and was given none (commander says 1: a usage error).
  if (err.code === "commander.help") return { exitCode: err.exitCode === 0 ? 0 : USAGE_EXIT };
  // Commander prefixes every message of its own with "error: "; the code says it already.
  const reason = err.message.replace(/^error: /, "");
  return {
    line: errorLine(ErrorCodes.USAGE, `${reason} (see ${command} --help)`),
    exitCode: USAGE_EXIT,
  };
}

/**
 * Makes every command of `program` throw its parse failures as {@link CommandLineError}
 * instead of printing them with its help and exiting. Call after all commands exist.
 */
export function throwParseFailures(program: Command): void {
  const visit = (cmd: Command, path: string) => {
    cmd
      .exitOverride((err) => {
        throw new CommandLineError(err, path);
      })
      .showHelpAfterError(false)
      .configureOutput({ outputError: () => {} });
    for (const sub of cmd.commands) visit(sub, `${path} ${sub.name()}`);
  };
  visit(program, program.name());
}
