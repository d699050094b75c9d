/**
 * A typed client of the public API, used by the CLI and tests. Any NATS client
 * in any language can do the same with plain JSON requests on `<prefix>.api.*`.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { isNoResponders, isRequestTimeout } from "../adapters/nats/nats-retry.js";
import {
  isTaskIdToken,
  isTerminalItem,
  parseTimelineMessage,
  type TaskTimeline,
  TaskTimelineSchema,
  type TimelineItem,
  TimelineOrder,
  timelineKey,
} from "../adapters/records/task-timeline.js";
import {
  ConfigError,
  ErrorCodes,
  type ErrorInfo,
  InternalError,
  RetryableError,
  TerminalError,
  TimeoutError,
} from "../errors.js";
import {
  ApiFailureSchema,
  type FleetStatus,
  isTerminal,
  type RunRequest,
  type SubmitRequest,
  type TaskRecord,
  type TaskStatus,
} from "../protocol/api-schemas.js";
import { type FleetSubjects, fleetSubjects } from "../protocol/fleet-subjects.js";

/** Options of {@link FleetClient.connect}. */
export interface FleetClientOptions {
  /** Subject prefix of the fleet. Default `fleet`. */
  prefix?: string;
  /** Per-request timeout for calls that do not wait on a task. Default 10 000 ms. */
  timeoutMs?: number;
}

/** Options of {@link FleetClient.watch}. */
export interface WatchOptions {
  /** Ends the watch (without an error) when aborted. */
  signal?: AbortSignal;
}

type Reply<T> = ({ ok: true } & T) | { ok: false; error: ErrorInfo };

/** A connection to a fleet's API. */
export class FleetClient {
  private readonly api: string;
  private readonly subjects: FleetSubjects;
  private readonly timeoutMs: number;

  constructor(
    readonly nc: NatsConnection,
    options: FleetClientOptions = {},
    private readonly owned = false,
  ) {
    this.subjects = fleetSubjects(options.prefix ?? "fleet");
    this.api = this.subjects.api;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Connects to the NATS server at `url`. */
  static async connect(url: string, options: FleetClientOptions = {}): Promise<FleetClient> {
    try {
      const nc = await connect({ servers: url, name: "clawfleet-client", maxReconnectAttempts: 2 });
      return new FleetClient(nc, options, true);
    } catch (err) {
      throw new ConfigError(`cannot reach NATS at ${url}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Submits a task and returns its id at once. */
  async submit(req: SubmitRequest): Promise<{ taskId: string; status: TaskStatus }> {
    return this.call("submit", req);
  }

  /** Submits a task and waits for its end (at most `waitMs`, default 60 s). */
  async run(req: RunRequest): Promise<TaskRecord> {
    const wait = req.waitMs ?? 60_000;
    return (await this.call<{ task: TaskRecord }>("run", req, wait + 5_000)).task;
  }

  /** The task's current record. */
  async task(taskId: string): Promise<TaskRecord> {
    return (await this.call<{ task: TaskRecord }>("task", { taskId })).task;
  }

  /** Cancels a task; returns its record after the cancel took effect. */
  async cancel(taskId: string): Promise<TaskRecord> {
    return (await this.call<{ task: TaskRecord }>("cancel", { taskId })).task;
  }

  /** The task's timeline so far, in order (`NOT_FOUND` for an unknown task). */
  async timeline(taskId: string): Promise<TaskTimeline> {
    const reply = await this.call<TaskTimeline>("timeline", { taskId });
    return TaskTimelineSchema.parse(reply);
  }

  /**
   * The task's timeline so far, then its lines as they happen; ends after the
   * terminal line (succeeded, failed or canceled), or when `signal` aborts.
   *
   * Plain NATS, so any client can do the same: subscribe to the core subject
   * `<prefix>.events.*.<taskId>` (a core subscriber gets every line the events
   * stream stores, as it is published) and to `<prefix>.results.<taskId>`, *then* ask
   * `<prefix>.api.timeline` for the history. A line published after the gateway
   * read the stream reaches the subscription; one published before is in the
   * history, and may reach the subscription too, so live lines already seen are
   * dropped by their identity (source, type, attempt, step, `at`). Live lines go
   * through the same causal ordering as the history. The result message is a
   * fallback end: the orchestrator publishes it after the terminal line, so a
   * watch never waits forever on a terminal line that was lost. Live lines carry
   * no `seq` (a core subscription does not see stream sequences).
   */
  async *watch(
    taskId: string,
    options: WatchOptions = {},
  ): AsyncGenerator<TimelineItem, void, undefined> {
    const { signal } = options;
    // Not a subject token: no lines can exist; the endpoint answers NOT_FOUND.
    if (!isTaskIdToken(taskId)) return void (await this.timeline(taskId));
    type Arrival = { item: TimelineItem } | { end: true };
    const inbox: Arrival[] = [];
    let wake: (() => void) | undefined;
    const arrive = (a: Arrival) => {
      inbox.push(a);
      wake?.();
      wake = undefined;
    };
    const end = () => arrive({ end: true });
    const lines = this.nc.subscribe(this.subjects.taskHistory(taskId), {
      callback: (err, m) => {
        if (err) return end();
        const item = parseTimelineMessage(this.subjects, taskId, m.subject, m.data);
        if (item) arrive({ item });
      },
    });
    const results = this.nc.subscribe(this.subjects.result(taskId), { callback: end });
    signal?.addEventListener("abort", end, { once: true });
    // Ends with the connection (a closed connection closes its subscriptions).
    void lines.closed.then(end);
    try {
      if (signal?.aborted) return;
      const history = await this.timeline(taskId);
      if (signal?.aborted) return;
      const seen = new Set(history.events.map(timelineKey));
      const order = new TimelineOrder();
      for (const item of history.events) {
        for (const out of order.push(item)) {
          yield out;
          if (isTerminalItem(out)) return;
        }
      }
      // Final without a terminal line: that line was lost (it is published before the
      // record is written), so there is nothing more to wait for.
      if (history.status && isTerminal(history.status)) {
        yield* order.flush();
        return;
      }
      for (;;) {
        while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
        const next = inbox.shift()!;
        if ("end" in next) {
          yield* order.flush();
          return;
        }
        const key = timelineKey(next.item);
        if (seen.has(key)) continue;
        seen.add(key);
        for (const out of order.push(next.item)) {
          yield out;
          if (isTerminalItem(out)) return;
        }
      }
    } finally {
      signal?.removeEventListener("abort", end);
      lines.unsubscribe();
      results.unsubscribe();
      inbox.length = 0;
    }
  }

  /** Nodes, pools, containers by state and queue depth. */
  async status(): Promise<FleetStatus> {
    const { ok: _ok, ...status } = await this.call<FleetStatus & { ok: true }>("status", {});
    return status;
  }

  /** Sends a raw JSON body to an endpoint and returns the parsed reply (for any client's view). */
  async raw(
    endpoint: string,
    body: string | Uint8Array,
    timeoutMs = this.timeoutMs,
  ): Promise<unknown> {
    const m = await this.nc.request(`${this.api}.${endpoint}`, body, { timeout: timeoutMs });
    return m.json();
  }

  /** Closes the connection if this client opened it. */
  async close(): Promise<void> {
    if (this.owned) await this.nc.close();
  }

  /**
   * Calls any endpoint (`behavior.set`, …) with a JSON body; resolves with the
   * reply's fields, or rejects with its coded error.
   */
  request<T extends object>(
    endpoint: string,
    body: unknown,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    return this.call<T>(endpoint, body, timeoutMs);
  }

  private async call<T extends object>(
    endpoint: string,
    body: unknown,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    let reply: Reply<T>;
    try {
      reply = (await this.raw(endpoint, JSON.stringify(body), timeoutMs)) as Reply<T>;
    } catch (err) {
      if (isNoResponders(err)) {
        throw new RetryableError(
          ErrorCodes.NO_GATEWAY,
          "no clawfleet gateway is answering on this NATS server",
        );
      }
      if (isRequestTimeout(err))
        throw new TimeoutError(`no reply to ${endpoint} within ${timeoutMs} ms`);
      throw err;
    }
    if (!reply.ok) {
      const failure = ApiFailureSchema.safeParse(reply);
      if (!failure.success) throw new InternalError(`malformed reply from ${endpoint}`);
      throw new TerminalError(failure.data.error.code, failure.data.error.message);
    }
    return reply as T;
  }
}
