/**
 * The task commands: `send`, `submit`, `task`, `timeline`, `watch`, `cancel`
 * and `status`, each one request to the public API.
 */
import { type Command, Option } from "commander";
import { isTerminalItem, type TimelineItem } from "../adapters/records/task-timeline.js";
import { ClawfleetError, ErrorCodes } from "../errors.js";
import {
  type Priority,
  PrioritySchema,
  RunRequestSchema,
  SubmitRequestSchema,
  TaskIdRequestSchema,
  type TaskRecord,
} from "../protocol/api-schemas.js";
import { int, oneOf, printJson, withClient, withFleetFlags } from "./cli-common.js";
import type { LocatorFlags } from "./fleet-locator.js";
import { printStatus, printTask, printTimelineEvent } from "./print.js";
import { checkRequest, type FieldNames } from "./request-check.js";

interface SendFlags extends LocatorFlags {
  session: string;
  tenant?: string;
  json?: boolean;
  idempotencyKey?: string;
  priority?: Priority;
  timeout?: number;
  wait?: number;
}

/** The request fields by the flags that set them. */
const TASK_FIELDS: FieldNames = {
  tenant: { flag: "--tenant" },
  session: { flag: "--session" },
  input: { flag: "the input" },
  idempotencyKey: { flag: "--idempotency-key" },
  priority: { flag: "--priority" },
  timeoutMs: { flag: "--timeout", unit: "ms" },
  waitMs: { flag: "--wait", unit: "ms" },
  taskId: { flag: "the task id" },
};

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

/** A task id as given, checked as the API would. */
function taskId(id: string): string {
  checkRequest(TaskIdRequestSchema, { taskId: id }, TASK_FIELDS);
  return id;
}

function withTaskFlags(cmd: Command): Command {
  return withFleetFlags(cmd)
    .requiredOption("-s, --session <id>", "session id ([A-Za-z0-9_-], 1-128)")
    .option("-t, --tenant <id>", "tenant id (default: default)")
    .option("-k, --idempotency-key <key>", "the same key submits the same task once")
    .addOption(
      new Option("-p, --priority <p>", "scheduling priority")
        .choices(PrioritySchema.options)
        .argParser(oneOf("--priority", PrioritySchema.options)),
    )
    .option("--timeout <ms>", "turn deadline once running", int("--timeout", "number of ms"));
}

/** Registers the task commands. */
export function registerTaskCommands(program: Command): void {
  withTaskFlags(program.command("send"))
    .description("run a task and print its output")
    .argument("<input...>", "the input text")
    .option("--json", "print the task record as JSON")
    .option(
      "--wait <ms>",
      "how long to wait for the result (default 60000)",
      int("--wait", "number of ms"),
    )
    .action(async (input: string[], f: SendFlags) => {
      const req = { ...taskRequest(input, f), waitMs: f.wait };
      checkRequest(RunRequestSchema, req, TASK_FIELDS);
      const task = await withClient(f, (c) => c.run(req));
      if (f.json) printJson(task);
      else if (task.status === "succeeded") process.stdout.write(`${task.output ?? ""}\n`);
      if (task.status !== "succeeded") {
        throw new ClawfleetError(
          task.error?.code ?? ErrorCodes.FAILED,
          `task ${task.taskId} ${task.status}: ${task.error?.message ?? ""}`,
        );
      }
    });

  withTaskFlags(program.command("submit"))
    .description("submit a task and print its id")
    .argument("<input...>", "the input text")
    .action(async (input: string[], f: SendFlags) => {
      const req = taskRequest(input, f);
      checkRequest(SubmitRequestSchema, req, TASK_FIELDS);
      const r = await withClient(f, (c) => c.submit(req));
      process.stdout.write(`${r.taskId}\n`);
    });

  withFleetFlags(program.command("task"))
    .description("print a task's record")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (id: string, f: LocatorFlags & { json?: boolean }) => {
      const req = taskId(id);
      const task = await withClient(f, (c) => c.task(req));
      process.stdout.write(
        f.json ? `${JSON.stringify(task, null, 2)}\n` : printTask(task as TaskRecord),
      );
    });

  withFleetFlags(program.command("timeline"))
    .description("print a task's timeline: submitted, placed, steps, effects, retries, the end")
    .argument("<taskId>")
    .option("--json", "print JSON")
    .action(async (id: string, f: LocatorFlags & { json?: boolean }) => {
      const req = taskId(id);
      const t = await withClient(f, (c) => c.timeline(req));
      process.stdout.write(
        f.json ? `${JSON.stringify(t, null, 2)}\n` : t.events.map(printTimelineEvent).join(""),
      );
    });

  withFleetFlags(program.command("watch"))
    .description("follow a task's timeline live until it ends (exit 0 only if it succeeded)")
    .argument("<taskId>")
    .option("--json", "print one JSON line per event")
    .action(async (id: string, f: LocatorFlags & { json?: boolean }) => {
      const task = taskId(id);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        await withClient(f, async (c) => {
          let last: TimelineItem | undefined;
          for await (const e of c.watch(task, { signal: stop.signal })) {
            process.stdout.write(f.json ? `${JSON.stringify(e)}\n` : printTimelineEvent(e));
            last = e;
          }
          // Interrupted: the task goes on; exit as a shell expects after Ctrl-C.
          if (stop.signal.aborted) {
            process.exitCode = 130;
            return;
          }
          // Ended without its terminal line (lost): the record says how it ended.
          const ended = last && isTerminalItem(last) ? null : await c.task(task);
          const status = ended ? ended.status : last!.type;
          const error = ended ? ended.error : last?.error;
          if (status !== "succeeded") {
            throw new ClawfleetError(
              error?.code ?? (status === "canceled" ? ErrorCodes.CANCELED : ErrorCodes.FAILED),
              `task ${task} ${status}${error ? `: ${error.message}` : ""}`,
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
    .action(async (id: string, f: LocatorFlags) => {
      const req = taskId(id);
      const task = await withClient(f, (c) => c.cancel(req));
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
