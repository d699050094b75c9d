/**
 * The task commands: `send`, `submit`, `task`, `timeline`, `watch`, `cancel`
 * and `status`, each one request to the public API.
 */
import { type Command, Option } from "commander";
import { ClawfleetError } from "../errors.js";
import { isTerminalItem, type TimelineItem } from "../adapters/records/task-timeline.js";
import type { Priority, TaskRecord } from "../protocol/api-schemas.js";
import { int, printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";
import { printStatus, printTask, printTimelineEvent } from "./print.js";

interface SendFlags extends LocatorFlags {
  session: string;
  tenant?: string;
  json?: boolean;
  idempotencyKey?: string;
  priority?: Priority;
  timeout?: number;
  wait?: number;
}

function taskRequest(input: string[], f: SendFlags) {
  return {
    tenant: f.tenant,
    session: f.session,
    input: input.join(" "),
    idempotencyKey: f.idempotencyKey,
    priority: f.priority,
    timeoutMs: f.timeout,
  };
}

function withTaskFlags(cmd: Command): Command {
  return withFleetFlags(cmd)
    .requiredOption("-s, --session <id>", "session id ([A-Za-z0-9_-], 1-128)")
    .option("-t, --tenant <id>", "tenant id (default: default)")
    .option("-k, --idempotency-key <key>", "the same key submits the same task once")
    .addOption(
      new Option("-p, --priority <p>", "scheduling priority").choices(["low", "normal", "high"]),
    )
    .option("--timeout <ms>", "turn deadline once running", int("--timeout"));
}

/** Registers the task commands. */
export function registerTaskCommands(program: Command): void {
  withTaskFlags(program.command("send"))
    .description("run a task and print its output")
    .argument("<input...>", "the input text")
    .option("--json", "print the task record as JSON")
    .option("--wait <ms>", "how long to wait for the result (default 60000)", int("--wait"))
    .action(async (input: string[], f: SendFlags) => {
      const task = await withClient(f, (c) => c.run({ ...taskRequest(input, f), waitMs: f.wait }));
      if (f.json) printJson(task);
      else if (task.status === "succeeded") process.stdout.write(`${task.output ?? ""}\n`);
      if (task.status !== "succeeded") {
        throw new ClawfleetError(
          task.error?.code ?? "FAILED",
          `task ${task.taskId} ${task.status}: ${task.error?.message ?? ""}`,
        );
      }
    });

  withTaskFlags(program.command("submit"))
    .description("submit a task and print its id")
    .argument("<input...>", "the input text")
    .action(async (input: string[], f: SendFlags) => {
      const r = await withClient(f, (c) => c.submit(taskRequest(input, f)));
      process.stdout.write(`${r.taskId}\n`);
    });

  withFleetFlags(program.command("task"))
    .description("print a task's record")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const task = await withClient(f, (c) => c.task(taskId));
      process.stdout.write(
        f.json ? `${JSON.stringify(task, null, 2)}\n` : printTask(task as TaskRecord),
      );
    });

  withFleetFlags(program.command("timeline"))
    .description("print a task's timeline: submitted, placed, steps, effects, retries, the end")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const t = await withClient(f, (c) => c.timeline(taskId));
      process.stdout.write(
        f.json ? `${JSON.stringify(t, null, 2)}\n` : t.events.map(printTimelineEvent).join(""),
      );
    });

  withFleetFlags(program.command("watch"))
    .description("follow a task's timeline live until it ends (exit 0 only if it succeeded)")
    .argument("<taskId>")
    .option("--json", "print one JSON line per event")
    .action(async (taskId: string, f: LocatorFlags & { json?: boolean }) => {
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        await withClient(f, async (c) => {
          let last: TimelineItem | undefined;
          for await (const e of c.watch(taskId, { signal: stop.signal })) {
            process.stdout.write(f.json ? `${JSON.stringify(e)}\n` : printTimelineEvent(e));
            last = e;
          }
          // Interrupted: the task goes on; exit as a shell expects after Ctrl-C.
          if (stop.signal.aborted) {
            process.exitCode = 130;
            return;
          }
          // Ended without its terminal line (lost): the record says how it ended.
          const ended = last && isTerminalItem(last) ? null : await c.task(taskId);
          const status = ended ? ended.status : last!.type;
          const error = ended ? ended.error : last?.error;
          if (status !== "succeeded") {
            throw new ClawfleetError(
              error?.code ?? status.toUpperCase(),
              `task ${taskId} ${status}${error ? `: ${error.message}` : ""}`,
            );
          }
        });
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });

  withFleetFlags(program.command("cancel"))
    .description("cancel a task")
    .argument("<taskId>")
    .action(async (taskId: string, f: LocatorFlags) => {
      const task = await withClient(f, (c) => c.cancel(taskId));
      process.stdout.write(printTask(task));
    });

  withFleetFlags(program.command("status"))
    .description("print nodes, pools, containers and queue depth")
    .option("--json", "print JSON")
    .action(async (f: LocatorFlags & { json?: boolean }) => {
      const s = await withClient(f, (c) => c.status());
      process.stdout.write(f.json ? `${JSON.stringify(s, null, 2)}\n` : printStatus(s));
    });
}
