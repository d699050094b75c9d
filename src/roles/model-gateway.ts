/**
 * The model gateway role: the one place upstream keys live. Nodes relay their
 * agents' model calls to `<prefix>.model.call` (queue group `model-gateway`, so
 * each call reaches one gateway of however many run); the gateway calls the
 * upstream the request names and streams the answer back as frames: `head`,
 * `chunk`*, `end`, then an empty sentinel (model-messages.ts).
 *
 * Every request gets exactly one `end` and one sentinel, whatever happens — a
 * malformed request, an unknown upstream, an upstream that hangs, the gateway
 * stopping — so the node's `requestMany` never waits out its deadline for an
 * answer that is not coming. Keys are read once, at start: a missing one is a
 * configuration mistake to report before the first turn, not a failure of
 * some call at three in the morning. No key reaches a log line, an error
 * message, a frame or a summary (upstream-call.ts redacts an echoed one).
 */
import { readFile } from "node:fs/promises";
import { Empty, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { requestedModel } from "../adapters/model/model-usage.js";
import {
  callUpstream,
  type ModelAnswerSink,
  type UpstreamOutcome,
} from "../adapters/model/upstream-call.js";
import { type Clock, systemClock } from "../clock.js";
import { ConfigError, ErrorCodes, ModelError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import type { ModelGatewaySettings } from "../model-gateway-options.js";
import type { FleetSubjects } from "../protocol/fleet-subjects.js";
import {
  MODEL_GATEWAY_QUEUE,
  ModelCallRequestSchema,
  type ModelCallSummary,
  type ModelFrame,
} from "../protocol/model-messages.js";

/** What a gateway needs. */
export interface ModelGatewayDeps {
  /** The role's NATS connection and subjects (a `FleetNats` will do). */
  readonly nats: { readonly nc: NatsConnection; readonly subjects: FleetSubjects };
  /** The fleet options' `models`. */
  readonly settings: ModelGatewaySettings;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Where `keyEnv` names are looked up. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * Chunk frames carry at most this many UTF-16 units: JSON-escaped (at worst six
 * bytes each) they stay well under NATS' default 1 MiB payload.
 */
const MAX_CHUNK_CHARS = 64 * 1024;

/** The running model gateway of one process; see the module comment. */
export class ModelGateway {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly keys = new Map<string, string | undefined>();
  private readonly calls = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private sub: Subscription | undefined;

  constructor(private readonly deps: ModelGatewayDeps) {
    this.clock = deps.clock ?? systemClock;
    this.logger = (deps.logger ?? silentLogger).child({ role: "model-gateway" });
  }

  /** Calls in flight. */
  get inflight(): number {
    return this.calls.size;
  }

  /**
   * Reads every upstream's key (a `ConfigError` if one is missing), then serves
   * calls; resolves once the server knows the subscription. A stopped gateway
   * is not started again: make a new one.
   */
  async start(): Promise<void> {
    if (this.sub) return;
    await this.readKeys();
    const { nc, subjects } = this.deps.nats;
    // A callback, not an iterator: each call runs on its own, however long another streams.
    this.sub = nc.subscribe(subjects.modelCall, {
      queue: MODEL_GATEWAY_QUEUE,
      callback: (_err, msg) => this.track(this.serve(msg)),
    });
    // Once start resolves the server routes calls here: a node asking a moment later
    // must not be told no gateway runs.
    await nc.flush();
    const names = Object.keys(this.deps.settings.upstreams);
    this.logger.info({ subject: subjects.modelCall, upstreams: names }, "model gateway serving");
  }

  /**
   * Stops taking calls, ends those in flight (they end `MODEL_GATEWAY_UNAVAILABLE`,
   * which the node may retry elsewhere) and waits until each has sent its end.
   */
  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = undefined;
    if (sub && !sub.isClosed()) await sub.drain().catch(() => sub.unsubscribe());
    this.stopping.abort(
      new ModelError(
        ErrorCodes.MODEL_GATEWAY_UNAVAILABLE,
        "the model gateway stopped during the call",
      ),
    );
    await Promise.allSettled([...this.calls]);
  }

  /** Reads the keys (and refuses a baseUrl with credentials in it). */
  private async readKeys(): Promise<void> {
    const env = this.deps.env ?? process.env;
    for (const [name, upstream] of Object.entries(this.deps.settings.upstreams)) {
      const url = new URL(upstream.baseUrl);
      // fetch refuses such URLs with an error that quotes them: say so now, quoting nothing.
      if (url.username || url.password)
        throw new ConfigError(
          `model upstream ${name}: its baseUrl holds credentials; give the key in keyEnv or keyFile`,
        );
      let key: string | undefined;
      if (upstream.keyEnv !== undefined) {
        key = env[upstream.keyEnv]?.trim();
        if (!key)
          throw new ConfigError(
            `model upstream ${name}: environment variable ${upstream.keyEnv} (its keyEnv) is not set`,
          );
      } else if (upstream.keyFile !== undefined) {
        try {
          key = (await readFile(upstream.keyFile, "utf8")).trim();
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
          throw new ConfigError(
            `model upstream ${name}: cannot read its keyFile ${upstream.keyFile} (${code})`,
          );
        }
        if (!key)
          throw new ConfigError(`model upstream ${name}: its keyFile ${upstream.keyFile} is empty`);
      }
      this.keys.set(name, key);
    }
  }

  private track(call: Promise<void>): void {
    this.calls.add(call);
    void call.finally(() => this.calls.delete(call));
  }

  /** Answers one request: never throws, and always ends with an `end` frame and the sentinel. */
  private async serve(msg: Msg): Promise<void> {
    const received = this.clock.now();
    if (!msg.reply) {
      this.logger.warn({ subject: msg.subject }, "model call without a reply subject dropped");
      return;
    }
    const frames = new FrameWriter(msg);
    let raw: unknown;
    try {
      raw = msg.json();
    } catch {
      raw = undefined;
    }
    const provider =
      typeof (raw as { upstream?: unknown })?.upstream === "string"
        ? (raw as { upstream: string }).upstream
        : "";
    const summary = (outcome: Partial<UpstreamOutcome>, model?: string): ModelCallSummary => ({
      provider,
      ...(model === undefined ? {} : { model }),
      status: outcome.status ?? 0,
      ...(outcome.usage ? { usage: outcome.usage } : {}),
      latencyMs: Math.max(0, this.clock.now() - received),
      stream: outcome.stream ?? false,
    });
    try {
      const parsed = ModelCallRequestSchema.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const where = issue?.path.length ? ` at ${issue.path.join(".")}` : "";
        const err = new ModelError(
          ErrorCodes.INVALID_REQUEST,
          `malformed model call request${where}: ${issue?.message ?? "not JSON"}`,
          { retryable: false },
        );
        return this.finish(frames, summary({}), err, {});
      }
      const request = parsed.data;
      const who = {
        tenant: request.tenant,
        session: request.session,
        taskId: request.taskId,
        attempt: request.attempt,
        node: request.node,
        upstream: request.upstream,
      };
      const model = requestedModel(request.body);
      const { upstreams } = this.deps.settings;
      // Own names only: `constructor` is a valid upstream name, and not one we have.
      const upstream = Object.hasOwn(upstreams, request.upstream)
        ? upstreams[request.upstream]
        : undefined;
      const max = this.deps.settings.maxRequestBytes;
      if (Buffer.byteLength(request.body, "utf8") > max) {
        const err = new ModelError(
          ErrorCodes.MODEL_REQUEST_TOO_LARGE,
          `model request body is over ${max} bytes`,
        );
        return this.finish(frames, summary({}, model), err, who);
      }
      if (upstream === undefined) {
        const err = new ModelError(
          ErrorCodes.MODEL_UPSTREAM_UNKNOWN,
          `no model upstream named ${request.upstream}`,
        );
        return this.finish(frames, summary({}, model), err, who);
      }
      const outcome = await callUpstream(request, frames, {
        name: request.upstream,
        upstream,
        key: this.keys.get(request.upstream),
        maxResponseBytes: this.deps.settings.maxResponseBytes,
        clock: this.clock,
        signal: this.stopping.signal,
      });
      this.finish(frames, summary(outcome, model), outcome.error, who);
    } catch (err) {
      // Only sending a frame throws here (the connection closed under us): nobody to tell.
      this.logger.error({ err: (err as Error).message, provider }, "model call not answered");
    }
  }

  private finish(
    frames: FrameWriter,
    summary: ModelCallSummary,
    error: ModelError | undefined,
    who: Record<string, unknown>,
  ): void {
    frames.end(summary, error);
    const line = {
      ...who,
      model: summary.model,
      status: summary.status,
      latencyMs: summary.latencyMs,
    };
    if (error)
      this.logger.warn({ ...line, code: error.code, err: error.message }, "model call failed");
    else this.logger.debug({ ...line, stream: summary.stream, usage: summary.usage }, "model call");
  }
}

/** The frames of one answer, numbered from 0, then the sentinel. */
class FrameWriter implements ModelAnswerSink {
  private seq = 0;

  constructor(private readonly msg: Msg) {}

  head(status: number, headers: Record<string, string>): void {
    this.send({ kind: "head", seq: this.seq, status, headers });
  }

  chunk(data: string): void {
    for (let at = 0; at < data.length; ) {
      let end = Math.min(at + MAX_CHUNK_CHARS, data.length);
      // Never split a surrogate pair: each chunk must be valid UTF-16 on its own.
      if (end < data.length && isHighSurrogate(data.charCodeAt(end - 1))) end--;
      this.send({ kind: "chunk", seq: this.seq, data: data.slice(at, end) });
      at = end;
    }
  }

  end(summary: ModelCallSummary, error: ModelError | undefined): void {
    this.send({
      kind: "end",
      seq: this.seq,
      summary,
      ...(error ? { error: error.toInfo(), retryable: error.retryable } : {}),
    });
    this.msg.respond(Empty);
  }

  private send(frame: ModelFrame): void {
    this.seq++;
    this.msg.respond(JSON.stringify(frame));
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
