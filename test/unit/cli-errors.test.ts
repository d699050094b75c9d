/**
 * How a failed `clawfleet` command reads: one line with a stable code and the user's own
 * words, exit 2 for a wrong command line, 1 otherwise. The command tree is the real one;
 * every case here fails before the command would reach a fleet.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CommanderError } from "commander";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { failureOf, UsageError } from "../../src/cli/cli-errors.js";
import { buildProgram } from "../../src/cli/program.js";
import { checkRequest, describeIssue } from "../../src/cli/request-check.js";
import { ClawfleetError, ErrorCodes, NotFoundError } from "../../src/errors.js";
import { RunRequestSchema } from "../../src/protocol/api-schemas.js";

/** Parses `args` with the real command tree and returns how the command failed. */
async function fail(...args: string[]) {
  // A data dir with no fleet.json: a command that got past its checks would fail on that.
  const dir = await mkdtemp(path.join(tmpdir(), "clawfleet-cli-errors-"));
  try {
    await buildProgram().parseAsync([...args, "--data-dir", dir], { from: "user" });
  } catch (err) {
    return failureOf(err);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  throw new Error(`clawfleet ${args.join(" ")} did not fail`);
}

describe("the error line", () => {
  it("is one line with the code, whatever the message holds", () => {
    expect(failureOf(new NotFoundError("no task t-1"))).toEqual({
      line: "clawfleet: NOT_FOUND: no task t-1\n",
      exitCode: 1,
    });
    expect(failureOf(new ClawfleetError(ErrorCodes.CONFIG_INVALID, "bad:\n  a\n\n  b\n"))).toEqual({
      line: "clawfleet: CONFIG_INVALID: bad:; a; b\n",
      exitCode: 1,
    });
    // Anything else is a bug: it still has a code.
    expect(failureOf(new TypeError("x is undefined")).line).toBe(
      "clawfleet: INTERNAL: x is undefined\n",
    );
    expect(failureOf(new UsageError("--wait must be a whole number"))).toEqual({
      line: "clawfleet: USAGE: --wait must be a whole number\n",
      exitCode: 2,
    });
  });

  it("is nothing, with exit 0, when help or the version was asked for", () => {
    const help = new CommanderError(0, "commander.helpDisplayed", "(outputHelp)");
    expect(failureOf(help)).toEqual({ exitCode: 0 });
    expect(failureOf(new CommanderError(0, "commander.version", "0.1.0"))).toEqual({
      exitCode: 0,
    });
    expect(failureOf(new CommanderError(0, "commander.help", "(outputHelp)"))).toEqual({
      exitCode: 0,
    });
    // `clawfleet behavior` (no subcommand): help on stderr, a usage error.
    expect(failureOf(new CommanderError(1, "commander.help", "(outputHelp)"))).toEqual({
      exitCode: 2,
    });
  });
});

describe("a wrong command line", () => {
  it("names the unknown command or option, without the help, and exits 2", async () => {
    expect(await fail("bogus")).toEqual({
      line: "clawfleet: USAGE: unknown command 'bogus' (see clawfleet --help)\n",
      exitCode: 2,
    });
    expect(await fail("send", "-s", "x", "--bogus", "hi")).toEqual({
      line: "clawfleet: USAGE: unknown option '--bogus' (see clawfleet send --help)\n",
      exitCode: 2,
    });
    expect((await fail("behavior", "get", "--bogus")).line).toContain(
      "(see clawfleet behavior get --help)",
    );
  });

  it("names the missing argument or option", async () => {
    expect((await fail("task")).line).toBe(
      "clawfleet: USAGE: missing required argument 'taskId' (see clawfleet task --help)\n",
    );
    expect((await fail("send", "hi")).line).toMatch(
      /^clawfleet: USAGE: required option '-s, --session <id>' not specified/,
    );
  });

  it("refuses a flag's value by the flag's name", async () => {
    expect(await fail("send", "-s", "x", "--timeout", "abc", "hi")).toEqual({
      line: "clawfleet: USAGE: --timeout must be a whole number of ms, got 'abc'\n",
      exitCode: 2,
    });
    expect((await fail("send", "-s", "x", "-p", "urgent", "hi")).line).toBe(
      "clawfleet: USAGE: --priority must be one of low, normal, high, got 'urgent'\n",
    );
    expect((await fail("restore", "demo", "--at", "noon")).line).toBe(
      "clawfleet: USAGE: --at must be a time, e.g. 2026-11-23T10:00:00Z, got 'noon'\n",
    );
    expect((await fail("behavior", "get", "--version", "v2")).line).toBe(
      "clawfleet: USAGE: --version must be a whole number, got 'v2'\n",
    );
  });

  it("refuses what the API would refuse, in flags, not wire fields", async () => {
    expect(await fail("send", "-s", "x", "--timeout", "0", "hi")).toEqual({
      line: "clawfleet: USAGE: --timeout must be at least 100 ms, got 0\n",
      exitCode: 2,
    });
    expect((await fail("submit", "-s", "a b", "hi")).line).toBe(
      "clawfleet: USAGE: --session must be 1-128 characters of [A-Za-z0-9_-], got 'a b'\n",
    );
    expect((await fail("task", "")).line).toBe("clawfleet: USAGE: the task id must not be empty\n");
    expect((await fail("snapshots", "s", "-t", "a/b")).line).toMatch(
      /^clawfleet: USAGE: --tenant /,
    );
    expect((await fail("restore", "demo")).line).toBe(
      "clawfleet: USAGE: give one of --version N or --at TIME\n",
    );
  });

  it("says a named file is missing with its own code", async () => {
    expect(await fail("behavior", "set", "/nonexistent/SOUL.md")).toEqual({
      line: "clawfleet: FILE_NOT_FOUND: no such file: /nonexistent/SOUL.md\n",
      exitCode: 1,
    });
    expect((await fail("behavior", "set", tmpdir())).line).toBe(
      `clawfleet: FILE_UNREADABLE: cannot read ${tmpdir()}: it is a directory\n`,
    );
  });
});

describe("a zod issue as a sentence", () => {
  const names = {
    timeoutMs: { flag: "--timeout", unit: "ms" },
    session: { flag: "--session" },
    priority: { flag: "--priority" },
  };
  const issues = (body: unknown) => {
    const r = RunRequestSchema.safeParse(body);
    if (r.success) throw new Error("expected a refusal");
    return r.error.issues.map((i) => describeIssue(i, names, body));
  };

  it("speaks of the flag, its bound and the value given", () => {
    expect(issues({ session: "s", input: "", timeoutMs: 10 ** 9 })).toEqual([
      "--timeout must be at most 86400000 ms, got 1000000000",
    ]);
    expect(issues({ session: "s", input: "", timeoutMs: 1.5 })).toEqual([
      "--timeout must be a whole number, got 1.5",
    ]);
    expect(issues({ session: "s", input: "", priority: "urgent" })).toEqual([
      "--priority must be one of low, normal, high, got 'urgent'",
    ]);
    expect(issues({ input: "" })).toEqual(["--session must be a string"]);
  });

  it("names each refused flag once, and falls back to the field's path", () => {
    expect(() =>
      checkRequest(RunRequestSchema, { session: "", input: "", timeoutMs: 0 }, names),
    ).toThrow(
      new UsageError("--session must not be empty; --timeout must be at least 100 ms, got 0"),
    );
    const nested = z.object({ files: z.record(z.string(), z.string().max(2)) });
    expect(() => checkRequest(nested, { files: { "a.md": "long" } }, {})).toThrow(
      "files.a.md must be at most 2 characters",
    );
  });
});
