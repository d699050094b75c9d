/**
 * A typed client of the public API, used by the CLI and tests. Any NATS client
 * in any language can do the same with plain JSON requests on `<prefix>.api.*`.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { ClawfleetError, ConfigError, TimeoutError } from "../errors.js";
import type {
  FleetStatus,
  RunRequest,
  SubmitRequest,
  TaskRecord,
  TaskStatus,
} from "../protocol/api-schemas.js";
import { fleetSubjects } from "../protocol/fleet-subjects.js";

/** Options of {@link FleetClient.connect}. */
export interface FleetClientOptions {
  /** Subject prefix of the fleet. Default `fleet`. */
  prefix?: string;
  /** Per-request timeout for calls that do not wait on a task. Default 10 000 ms. */
  timeoutMs?: number;
}

type Reply<T> = ({ ok: true } & T) | { ok: false; error: { code: string; message: string } };

/** A connection to a fleet's API. */
export class FleetClient {
  private readonly api: string;
  private readonly timeoutMs: number;

  constructor(
    readonly nc: NatsConnection,
    options: FleetClientOptions = {},
    private readonly owned = false,
  ) {
    this.api = fleetSubjects(options.prefix ?? "fleet").api;
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

  private async call<T extends object>(
    endpoint: string,
    body: unknown,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    let reply: Reply<T>;
    try {
      reply = (await this.raw(endpoint, JSON.stringify(body), timeoutMs)) as Reply<T>;
    } catch (err) {
      const msg = (err as Error).message ?? String(err);
      if (/no responders/i.test(msg)) {
        throw new ClawfleetError(
          "NO_GATEWAY",
          "no clawfleet gateway is answering on this NATS server",
          {
            retryable: true,
          },
        );
      }
      if (/timeout/i.test(msg))
        throw new TimeoutError(`no reply to ${endpoint} within ${timeoutMs} ms`);
      throw err;
    }
    if (!reply.ok) throw new ClawfleetError(reply.error.code, reply.error.message);
    return reply as T;
  }
}
