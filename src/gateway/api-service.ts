/**
 * The public API: a `@nats-io/services` micro service named `clawfleet` on
 * `<prefix>.api.*`, JSON in and out. Every request is validated with zod;
 * every reply is `{ok: true, ...}` or `{ok: false, error: {code, message}}`.
 * The gateway holds nothing: it writes tasks to NATS and reads them back.
 */
import type { Msg } from "@nats-io/nats-core";
import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import { z } from "zod";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { readTimeline } from "../adapters/records/task-timeline.js";
import { type Clock, systemClock } from "../clock.js";
import {
  ClawfleetError,
  ErrorCodes,
  NotFoundError,
  RetryableError,
  TerminalError,
  TimeoutError,
  toErrorInfo,
  ValidationError,
} from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import { type Logger, silentLogger } from "../logger.js";
import {
  isTerminal,
  RunRequestSchema,
  SubmitRequestSchema,
  TaskIdRequestSchema,
  type TaskRecord,
  TaskRecordSchema,
} from "../protocol/api-schemas.js";
import { CancelReplySchema } from "../protocol/fleet-messages.js";
import { behaviorEndpoints } from "./behavior-endpoints.js";
import { readFleetStatus } from "./fleet-status.js";
import { readFleetTree } from "./fleet-tree.js";
import { snapshotEndpoints } from "./snapshot-endpoints.js";
import { supervisionEndpoints } from "./supervision-endpoints.js";
import { TaskSubmitter } from "./task-submitter.js";

/** Package version reported by the service's INFO. */
export const SERVICE_VERSION = "0.1.0";

const DEFAULT_WAIT_MS = 60_000;

export interface ApiServiceDeps {
  readonly nats: FleetNats;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

type Handler = (body: unknown) => Promise<object>;

/** The running API service of one gateway process. */
export class ApiService {
  private constructor(private readonly service: Service) {}

  /** Registers the endpoints; any number of gateways may run (they share a queue group). */
  static async start(options: ResolvedFleetOptions, deps: ApiServiceDeps): Promise<ApiService> {
    const { nats } = deps;
    const clock = deps.clock ?? systemClock;
    const log = (deps.logger ?? silentLogger).child({ role: "gateway" });
    const submitter = new TaskSubmitter(nats, clock);

    const endpoints: Record<string, Handler> = {
      submit: async (body) => {
        const req = parse(SubmitRequestSchema, body);
        const task = await submitter.submit(req);
        return { taskId: task.taskId, status: task.status };
      },
      run: async (body) => {
        const { waitMs, ...rest } = parse(RunRequestSchema, body);
        const taskId = submitter.taskIdFor(rest);
        // Subscribe before submitting, so a fast result cannot slip past.
        const result = waitForResult(nats, taskId, waitMs ?? DEFAULT_WAIT_MS);
        try {
          const submitted = await submitter.submit(rest, taskId);
          if (isTerminal(submitted.status)) return { task: submitted };
          const stored = await submitter.get(taskId);
          if (stored && isTerminal(stored.status)) return { task: stored };
          return { task: await result.promise };
        } finally {
          result.cancel();
        }
      },
      task: async (body) => {
        const { taskId } = parse(TaskIdRequestSchema, body);
        const task = await submitter.get(taskId);
        if (!task) throw new NotFoundError(`no task ${taskId}`);
        return { task };
      },
      timeline: async (body) => {
        const { taskId } = parse(TaskIdRequestSchema, body);
        // The record first: once it is final, the terminal line (published before the
        // record is written) is already in the stream, so a watcher can stop at this answer.
        const task = await submitter.get(taskId);
        const events = await readTimeline(nats, taskId);
        if (!task && events.length === 0) throw new NotFoundError(`no task ${taskId}`);
        return { taskId, ...(task ? { status: task.status } : {}), events };
      },
      cancel: async (body) => {
        const req = parse(TaskIdRequestSchema, body);
        const reply = await nats.nc
          .request(nats.subjects.ctl("cancel"), JSON.stringify(req), { timeout: 10_000 })
          .catch((err) => {
            throw new RetryableError(
              ErrorCodes.NO_ORCHESTRATOR,
              `no orchestrator answered: ${(err as Error).message}`,
            );
          });
        const body2 = CancelReplySchema.parse(reply.json());
        if (!body2.ok) {
          throw new TerminalError(
            body2.error?.code ?? ErrorCodes.INTERNAL,
            body2.error?.message ?? "cancel failed",
          );
        }
        return { task: body2.task };
      },
      status: async () => readFleetStatus(nats, options, clock),
      tree: async () => readFleetTree(nats, options, clock),
      ...behaviorEndpoints(nats, clock, parse),
      ...snapshotEndpoints(nats, clock, parse),
      ...supervisionEndpoints(nats, parse),
    };

    const service = await new Svcm(nats.nc).add({
      name: "clawfleet",
      version: SERVICE_VERSION,
      description: "clawfleet: durable tasks for stateful agents",
      queue: "clawfleet-gateway",
    });
    const group = service.addGroup(nats.subjects.api);
    for (const [name, handler] of Object.entries(endpoints)) {
      // Endpoint names may not contain dots; their subjects may.
      group.addEndpoint(name.replaceAll(".", "_"), {
        subject: name,
        handler: (err, msg) => {
          if (err) return void log.error({ err: toErrorInfo(err) }, "endpoint error");
          void respond(msg, handler, log);
        },
        metadata: { schema: "json" },
      });
    }
    // Up means answering: once the server has our subscriptions (a flush round trip), a
    // request from any other connection finds them instead of "no responders".
    await nats.nc.flush();
    log.info({ subject: `${nats.subjects.api}.*` }, "api service up");
    return new ApiService(service);
  }

  /** Stops answering requests. */
  async stop(): Promise<void> {
    await this.service.stop().catch(() => {});
  }
}

async function respond(msg: ServiceMsg, handler: Handler, log: Logger): Promise<void> {
  try {
    const body = decodeBody(msg);
    const result = await handler(body);
    msg.respond(JSON.stringify({ ok: true, ...result }));
  } catch (err) {
    const info = toErrorInfo(err);
    if (!(err instanceof ClawfleetError))
      log.error({ err: info, subject: msg.subject }, "unexpected error");
    msg.respondError(
      err instanceof ValidationError ? 400 : 500,
      info.message,
      JSON.stringify({ ok: false, error: info }),
    );
  }
}

function decodeBody(msg: Msg): unknown {
  if (msg.data.length === 0) return {};
  try {
    return msg.json();
  } catch {
    throw new ValidationError("request body is not valid JSON");
  }
}

function parse<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new ValidationError(z.prettifyError(r.error).replaceAll("\n", "; "));
  return r.data;
}

/** Resolves with the task's final record when it is published on its results subject. */
function waitForResult(nats: FleetNats, taskId: string, waitMs: number) {
  let timer: NodeJS.Timeout | undefined;
  const sub = nats.nc.subscribe(nats.subjects.result(taskId), { max: 1 });
  const promise = new Promise<TaskRecord>((resolve, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new TimeoutError(
            `task ${taskId} did not finish within ${waitMs} ms; it goes on (fleet.api.task to follow it)`,
          ),
        ),
      waitMs,
    );
    void (async () => {
      for await (const m of sub) {
        const r = TaskRecordSchema.safeParse(m.json());
        if (r.success) resolve(r.data);
      }
    })();
  });
  promise.catch(() => {});
  return {
    promise,
    cancel() {
      clearTimeout(timer);
      sub.unsubscribe();
    },
  };
}
