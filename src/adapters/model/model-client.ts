/**
 * The node's end of a model call: one `requestMany` to the model gateway, whose
 * frames are checked and handed to a sink as they arrive.
 *
 * It always resolves with an outcome, never throws: the caller records every
 * call (the timeline, metering), including those that never reached a gateway,
 * and a summary with status 0 says no answer began. A call is never retried
 * here: a model call is not idempotent (it costs tokens, and a tool call it
 * returns may already be acted on), so whether to try again is the agent's
 * decision, told by the error's `retryable`.
 *
 * The frames are numbered; a gap, a frame that does not parse, or a frame out
 * of place (a chunk before the head) means the relay is torn, and the call ends
 * `MODEL_BRIDGE_FAILED` rather than handing the agent a corrupt answer.
 */
import type { Msg, NatsConnection, QueuedIterator } from "@nats-io/nats-core";
import { type Clock, systemClock } from "../../clock.js";
import { ErrorCodes, ModelError } from "../../errors.js";
import type { FleetSubjects } from "../../protocol/fleet-subjects.js";
import {
  type ModelCallRequest,
  type ModelCallSummary,
  type ModelFrame,
  ModelFrameSchema,
} from "../../protocol/model-messages.js";
import { isNoResponders } from "../nats/nats-retry.js";
import { requestedModel } from "./model-usage.js";
import type { ModelAnswerSink } from "./upstream-call.js";

export type { ModelAnswerSink };

/** What {@link callModel} needs. */
export interface ModelClientDeps {
  readonly nc: NatsConnection;
  readonly subjects: Pick<FleetSubjects, "modelCall">;
  /** Runs the stall timer and measures latency. Default the system clock. */
  readonly clock?: Clock;
}

/** Limits of one call. */
export interface ModelCallOptions {
  /** Stops the call (the agent's client went away, the turn ended): it ends `CANCELED`. */
  readonly signal: AbortSignal;
  /**
   * Longest the whole answer may take; past it the call ends `MODEL_UPSTREAM_TIMEOUT`.
   * Set it above the upstream's `timeoutMs`, so the gateway's own timeout, which
   * says more, comes first.
   */
  readonly maxWaitMs: number;
  /**
   * Longest silence between two frames before the link counts as broken
   * (`MODEL_BRIDGE_FAILED`). Set it above the upstream's `idleTimeoutMs`: a slow
   * upstream is the gateway's to report.
   */
  readonly stallMs: number;
  /** Largest request body sent; a larger one ends the call before anything is published. */
  readonly maxRequestBytes: number;
}

/** How a call ended: its summary, and the error when it failed short of an answer's end. */
export interface ModelCallOutcome {
  readonly summary: ModelCallSummary;
  readonly error?: ModelError;
}

/** Sends `request` to the model gateway and relays its answer into `sink`; see the module comment. */
export async function callModel(
  deps: ModelClientDeps,
  request: ModelCallRequest,
  sink: ModelAnswerSink,
  options: ModelCallOptions,
): Promise<ModelCallOutcome> {
  const clock = deps.clock ?? systemClock;
  const started = clock.now();
  const model = requestedModel(request.body);
  let status = 0;
  let stream = false;
  const local = (error: ModelError): ModelCallOutcome => ({
    summary: {
      provider: request.upstream,
      ...(model === undefined ? {} : { model }),
      status,
      latencyMs: Math.max(0, clock.now() - started),
      stream,
    },
    error,
  });

  const bodyBytes = Buffer.byteLength(request.body ?? "", "utf8");
  if (bodyBytes > options.maxRequestBytes)
    return local(
      tooLarge(`model request body of ${bodyBytes} bytes is over ${options.maxRequestBytes}`),
    );
  const payload = JSON.stringify(request);
  const maxPayload = deps.nc.info?.max_payload;
  if (maxPayload !== undefined && Buffer.byteLength(payload, "utf8") > maxPayload)
    return local(
      tooLarge(`model request is over the NATS server's max payload (${maxPayload} bytes)`),
    );
  if (options.signal.aborted) return local(canceled());

  let frames: QueuedIterator<Msg>;
  try {
    // Its own inbox (noMux): a "no responders" status comes back on it at once, so a
    // fleet without a gateway fails the call now instead of after maxWaitMs.
    // (`requestMany` returns its QueuedIterator typed as a bare AsyncIterable.)
    frames = (await deps.nc.requestMany(deps.subjects.modelCall, payload, {
      strategy: "sentinel",
      noMux: true,
      maxWait: options.maxWaitMs,
    })) as QueuedIterator<Msg>;
  } catch (err) {
    return local(linkError(err));
  }

  // Whichever comes first of the next frame, a stall and the signal; the loser is dropped.
  let interrupt: (err: ModelError) => void = () => {};
  const interrupted = new Promise<ModelError>((resolve) => {
    interrupt = resolve;
  });
  const onAbort = () => interrupt(canceled());
  options.signal.addEventListener("abort", onAbort, { once: true });
  let stall: unknown;
  const armStall = () => {
    clock.clearTimeout(stall);
    stall = clock.setTimeout(
      () => interrupt(bridge(`no frame from the model gateway for ${options.stallMs} ms`)),
      options.stallMs,
    );
  };

  const iterator = frames[Symbol.asyncIterator]();
  let seq = 0;
  try {
    for (;;) {
      armStall();
      const next = iterator.next();
      next.catch(() => {});
      const step = await Promise.race([next, interrupted]);
      if (step instanceof ModelError) return local(step);
      if (step.done) {
        const late = clock.now() - started >= options.maxWaitMs;
        return local(
          late
            ? new ModelError(
                ErrorCodes.MODEL_UPSTREAM_TIMEOUT,
                `the model call did not end within ${options.maxWaitMs} ms`,
              )
            : bridge("the model gateway's answer ended without its end frame"),
        );
      }
      if (step.value.data.length === 0)
        return local(bridge("the model gateway's answer ended without its end frame"));
      const frame = parseFrame(step.value);
      if (frame === undefined)
        return local(bridge("a frame from the model gateway does not parse"));
      if (frame.seq !== seq)
        return local(bridge(`frame ${frame.seq} from the model gateway where ${seq} was due`));
      seq++;
      switch (frame.kind) {
        case "head":
          if (seq !== 1) return local(bridge("a second head frame from the model gateway"));
          status = frame.status;
          stream = (frame.headers["content-type"] ?? "").includes("text/event-stream");
          sink.head(frame.status, frame.headers);
          break;
        case "chunk":
          if (status === 0) return local(bridge("a chunk frame before the head"));
          sink.chunk(frame.data);
          break;
        case "end":
          return endOf(frame);
      }
    }
  } catch (err) {
    return local(linkError(err));
  } finally {
    clock.clearTimeout(stall);
    options.signal.removeEventListener("abort", onAbort);
    // Unsubscribes the inbox: late frames (and the sentinel after an end) are dropped.
    frames.stop();
  }
}

/** The outcome an `end` frame says. */
function endOf(frame: Extract<ModelFrame, { kind: "end" }>): ModelCallOutcome {
  if (!frame.error) return { summary: frame.summary };
  const error = new ModelError(frame.error.code, frame.error.message, {
    retryable: frame.retryable ?? false,
  });
  return { summary: frame.summary, error };
}

function parseFrame(msg: Msg): ModelFrame | undefined {
  let raw: unknown;
  try {
    raw = msg.json();
  } catch {
    return undefined;
  }
  const parsed = ModelFrameSchema.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** What the NATS client threw: nobody listening, or a broken link. */
function linkError(err: unknown): ModelError {
  if (isNoResponders(err))
    return new ModelError(ErrorCodes.MODEL_GATEWAY_UNAVAILABLE, "no model gateway is running");
  const reason = err instanceof Error ? err.message : String(err);
  return bridge(`the link to the model gateway failed: ${reason}`, err);
}

function bridge(message: string, cause?: unknown): ModelError {
  return new ModelError(ErrorCodes.MODEL_BRIDGE_FAILED, message, { cause });
}

function tooLarge(message: string): ModelError {
  return new ModelError(ErrorCodes.MODEL_REQUEST_TOO_LARGE, message);
}

function canceled(): ModelError {
  return new ModelError(ErrorCodes.CANCELED, "the model call was canceled", { retryable: false });
}
