/**
 * One model call from the gateway to an upstream provider, over the global fetch
 * (undici), with the answer handed to a sink as it arrives.
 *
 * What the agent sees is decided here, so the rules are strict:
 * - an upstream's own HTTP answer, errors included (a 429 with `retry-after`, a
 *   400 about the prompt), is relayed as it is: the agent's client knows how to
 *   handle it, and the gateway is not the place to retry a call that is not
 *   idempotent. Only what no client could make sense of is a gateway error;
 * - a non-streamed answer is buffered whole (it is small) and checked before
 *   its head is sent, so a JSON answer that does not parse becomes a clean
 *   `MODEL_UPSTREAM_FAILED` instead of a 200 the agent chokes on;
 * - a streamed (SSE) answer is relayed chunk by chunk and checked on the side;
 *   once its head is sent, a problem can only end it early, with an error;
 * - every timer runs on the injected clock, and every way the call ends
 *   (timeout, the gateway stopping, a size limit) goes through one `fail()` that
 *   aborts the fetch, so the upstream connection is never left running.
 */
import type { Clock } from "../../clock.js";
import { ErrorCodes, ModelError } from "../../errors.js";
import type { ModelUpstream } from "../../model-gateway-options.js";
import type { ModelUsage } from "../../protocol/model-messages.js";
import { relayedAnswerHeaders, upstreamRequestHeaders } from "./model-headers.js";
import { SseAnswerReader, usageOfAnswer } from "./model-usage.js";

/** The agent's request, as the gateway forwards it. */
export interface UpstreamRequest {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Appended to the upstream's `baseUrl`; starts with `/`. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** Where an answer goes as it arrives: its head once, then pieces of its body (never before the head). */
export interface ModelAnswerSink {
  head(status: number, headers: Record<string, string>): void;
  chunk(data: string): void;
}

/** How to make one call. */
export interface UpstreamCallOptions {
  /** The upstream's name, used in messages (never its URL, which may hold credentials). */
  readonly name: string;
  readonly upstream: ModelUpstream;
  /** The upstream's key, sent in the header its `api` names; none for local endpoints. */
  readonly key?: string;
  readonly maxResponseBytes: number;
  readonly clock: Clock;
  /**
   * Aborts the call (the gateway is stopping). It ends with the signal's reason
   * when that is a {@link ModelError}, else with `MODEL_UPSTREAM_FAILED`.
   */
  readonly signal?: AbortSignal;
}

/** How a call ended. */
export interface UpstreamOutcome {
  /** The status relayed in the head; 0 when no head was sent. */
  readonly status: number;
  /** Whether the answer was streamed (SSE). */
  readonly stream: boolean;
  readonly usage?: ModelUsage;
  /** Set when the call failed at the gateway (not for an upstream's own HTTP errors). */
  readonly error?: ModelError;
}

/**
 * Calls the upstream and relays its answer into `sink`; see the module comment.
 * Resolves with the outcome; rejects only when the sink throws.
 */
export function callUpstream(
  request: UpstreamRequest,
  sink: ModelAnswerSink,
  options: UpstreamCallOptions,
): Promise<UpstreamOutcome> {
  return new UpstreamCall(request, sink, options).run();
}

class UpstreamCall {
  private readonly controller = new AbortController();
  private failure: ModelError | undefined;
  private idleTimer: unknown;
  private status = 0;
  private stream = false;
  private usage: ModelUsage | undefined;
  private bytes = 0;

  constructor(
    private readonly request: UpstreamRequest,
    private readonly sink: ModelAnswerSink,
    private readonly options: UpstreamCallOptions,
  ) {}

  async run(): Promise<UpstreamOutcome> {
    const { upstream, clock, signal, name } = this.options;
    const onAbort = () => this.fail(abortError(signal!, name));
    if (signal?.aborted) return this.outcome(abortError(signal, name));
    signal?.addEventListener("abort", onAbort, { once: true });
    const overall = clock.setTimeout(
      () => this.fail(timeout(`upstream ${name} did not finish within ${upstream.timeoutMs} ms`)),
      upstream.timeoutMs,
    );
    this.armIdle("begin answering");
    try {
      const init = this.requestInit();
      const response = await this.network(() =>
        fetch(`${upstream.baseUrl}${this.request.path}`, init),
      );
      this.armIdle("go on answering");
      const mime = (response.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      const headers = relayedAnswerHeaders(response.headers);
      const reader = response.body?.getReader();
      if (mime === "text/event-stream" && reader)
        await this.relayStream(reader, response.status, headers);
      else await this.relayWhole(reader, response.status, headers, mime);
      return this.outcome(undefined);
    } catch (err) {
      if (err instanceof ModelError) return this.outcome(this.failure ?? err);
      throw err;
    } finally {
      clock.clearTimeout(overall);
      clock.clearTimeout(this.idleTimer);
      signal?.removeEventListener("abort", onAbort);
      // Frees the connection when the call ended early; a no-op once the body was read.
      this.controller.abort();
    }
  }

  private requestInit(): RequestInit {
    const { method, headers, body } = this.request;
    const { upstream, key } = this.options;
    let sent: Headers;
    try {
      sent = new Headers(upstreamRequestHeaders(headers, upstream.api, key));
    } catch {
      // Say which header without echoing values: one of them is the key.
      throw new ModelError(ErrorCodes.INVALID_REQUEST, "the request has a malformed header", {
        retryable: false,
      });
    }
    return {
      method,
      headers: sent,
      body: method === "GET" || body === "" ? undefined : body,
      // A redirect would carry the key header to wherever it points (fetch strips
      // `authorization` across origins, not `x-api-key`): no model API redirects.
      redirect: "error",
      signal: this.controller.signal,
    };
  }

  /** A non-streamed answer: read whole, checked, then relayed as head and one chunk. */
  private async relayWhole(
    reader: ReadableStreamDefaultReader<Uint8Array> | undefined,
    status: number,
    headers: Record<string, string>,
    mime: string,
  ): Promise<void> {
    const decoder = new TextDecoder();
    const parts: string[] = [];
    while (reader) {
      const { done, value } = await this.read(reader);
      if (done) break;
      parts.push(decoder.decode(value, { stream: true }));
    }
    parts.push(decoder.decode());
    let text = parts.join("");
    if (status >= 200 && status < 300 && isJson(mime) && text.trim() !== "") {
      try {
        this.usage = usageOfAnswer(JSON.parse(text));
      } catch {
        throw new ModelError(
          ErrorCodes.MODEL_UPSTREAM_FAILED,
          `upstream ${this.options.name} answered ${status} with content-type ${mime} that is not JSON`,
        );
      }
    }
    const { key } = this.options;
    // An upstream may quote the key it was sent (an "invalid key" error): never relay it.
    if (key && key.length >= 8 && text.includes(key)) text = text.replaceAll(key, "[redacted]");
    this.head(status, headers);
    if (text !== "") this.sink.chunk(text);
  }

  /** A streamed answer: head at once, then each piece as it arrives, checked on the side. */
  private async relayStream(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    status: number,
    headers: Record<string, string>,
  ): Promise<void> {
    this.stream = true;
    this.head(status, headers);
    const decoder = new TextDecoder();
    const sse = new SseAnswerReader();
    const relay = (text: string, last: boolean) => {
      const bad = sse.push(text) ?? (last ? sse.end() : undefined);
      this.usage = sse.usage;
      if (bad)
        throw new ModelError(
          ErrorCodes.MODEL_UPSTREAM_FAILED,
          `upstream ${this.options.name}: ${bad}`,
        );
      if (text !== "") this.sink.chunk(text);
    };
    for (;;) {
      const { done, value } = await this.read(reader);
      if (done) break;
      relay(decoder.decode(value, { stream: true }), false);
    }
    relay(decoder.decode(), true);
  }

  /** One read of the body, under the idle timer and the size limit. */
  private async read(
    reader: ReadableStreamDefaultReader<Uint8Array>,
  ): Promise<Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>>> {
    const result = await this.network(() => reader.read());
    this.armIdle("go on answering");
    if (!result.done) {
      this.bytes += result.value.byteLength;
      const max = this.options.maxResponseBytes;
      if (this.bytes > max)
        throw new ModelError(
          ErrorCodes.MODEL_RESPONSE_TOO_LARGE,
          `upstream ${this.options.name}'s answer is over ${max} bytes`,
        );
    }
    return result;
  }

  /** Runs a fetch step; whatever it throws is the upstream's failure (or ours, when we aborted it). */
  private async network<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (err) {
      if (this.failure) throw this.failure;
      throw new ModelError(
        ErrorCodes.MODEL_UPSTREAM_FAILED,
        `upstream ${this.options.name} failed: ${describe(err)}`,
        { cause: err },
      );
    }
  }

  private head(status: number, headers: Record<string, string>): void {
    this.status = status;
    this.sink.head(status, headers);
  }

  private armIdle(what: string): void {
    const { clock, upstream, name } = this.options;
    clock.clearTimeout(this.idleTimer);
    this.idleTimer = clock.setTimeout(
      () =>
        this.fail(timeout(`upstream ${name} did not ${what} within ${upstream.idleTimeoutMs} ms`)),
      upstream.idleTimeoutMs,
    );
  }

  /** The one way a call is cut short: the first reason wins, and the fetch is aborted. */
  private fail(err: ModelError): void {
    this.failure ??= err;
    this.controller.abort(this.failure);
  }

  private outcome(error: ModelError | undefined): UpstreamOutcome {
    return {
      status: this.status,
      stream: this.stream,
      ...(this.usage ? { usage: this.usage } : {}),
      ...(error ? { error } : {}),
    };
  }
}

function isJson(mime: string): boolean {
  return mime === "application/json" || mime.endsWith("+json");
}

function timeout(message: string): ModelError {
  return new ModelError(ErrorCodes.MODEL_UPSTREAM_TIMEOUT, message);
}

function abortError(signal: AbortSignal, name: string): ModelError {
  return signal.reason instanceof ModelError
    ? signal.reason
    : new ModelError(ErrorCodes.MODEL_UPSTREAM_FAILED, `the call to upstream ${name} was aborted`);
}

/** A fetch failure in a few words: undici hides the system error (ECONNREFUSED…) in `cause`. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = typeof cause?.code === "string" ? cause.code : cause?.message;
  return typeof detail === "string" && detail !== "" ? `${err.message} (${detail})` : err.message;
}
