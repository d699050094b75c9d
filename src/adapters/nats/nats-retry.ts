/**
 * Telling NATS failures apart, and riding out the transient ones. A
 * compare-and-set conflict is an answer (someone else wrote first); a timeout,
 * a disconnect, a server restart or a JetStream election is not, and the same
 * call may succeed a moment later. Anything else (a refused request, a
 * `TypeError`, a `ZodError`) is a bug or a verdict: it surfaces at once, so a
 * caller that retries without limit cannot loop on it.
 *
 * Classified by the client's own error classes and API codes (nats.js v3),
 * never by message text.
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { ConnectionError, errors, NoRespondersError, RequestError } from "@nats-io/nats-core";
import type { Clock } from "../../clock.js";
import { ClawfleetError } from "../../errors.js";

/** nats-server API error codes the client names no constant for (server/errors.json). */
export const ServerApiCodes = {
  /** JSClusterNotAvailErr, 503: "JetStream system temporarily unavailable" (an election). */
  ClusterNotAvailable: 10008,
  /** JSSequenceNotFoundErrF, 400: a delete by sequence of a message no longer there. */
  SequenceNotFound: 10043,
  /** JSStreamMsgDeleteFailedF, 500: a delete by sequence the store refused (below the first, past the last). */
  StreamMsgDeleteFailed: 10057,
} as const;

/** Whether `err` is a JetStream API error with one of `codes`. */
export function hasApiCode(err: unknown, ...codes: number[]): boolean {
  return err instanceof JetStreamApiError && codes.includes(err.code);
}

/** Whether `err` is a compare-and-set conflict (wrong last sequence). */
export function isCasConflict(err: unknown): boolean {
  return hasApiCode(
    err,
    JetStreamApiCodes.StreamWrongLastSequence,
    JetStreamApiCodes.StreamWrongLastSequenceUnknown,
  );
}

/** Whether `err` says a stream or consumer does not exist. */
export function isNotFound(err: unknown): boolean {
  return hasApiCode(err, JetStreamApiCodes.StreamNotFound, JetStreamApiCodes.ConsumerNotFound);
}

/** Whether a request found nobody listening on its subject. */
export function isNoResponders(err: unknown): boolean {
  return err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders());
}

/** Whether a request got no reply in time. */
export function isRequestTimeout(err: unknown): boolean {
  return err instanceof errors.TimeoutError;
}

/**
 * Whether retrying `err` may help: the server was unreachable, restarting or
 * electing a leader. Not our own typed errors (they carry their own verdict),
 * not CAS conflicts, not a connection closed for good (no retry on it can
 * succeed), not bugs.
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof ClawfleetError) return false;
  if (isUnavailable(err)) return true;
  // JetStream wraps a no-responders reply (a restart, an election) in an error of
  // its own, `JetStreamNotEnabled`, which it does not export: judge by its cause.
  return (
    err instanceof Error &&
    !(err instanceof RequestError) &&
    !(err instanceof JetStreamApiError) &&
    isUnavailable(err.cause)
  );
}

/** The client's signs of a server that is (for now) out of reach. */
function isUnavailable(err: unknown): boolean {
  if (err instanceof errors.TimeoutError) return true;
  if (err instanceof NoRespondersError) return true;
  if (err instanceof ConnectionError) return true;
  // Without a cause: the connection dropped ("connection disconnected") under the request.
  if (err instanceof RequestError) return err.cause === undefined || isUnavailable(err.cause);
  return hasApiCode(err, ServerApiCodes.ClusterNotAvailable);
}

/** Options of {@link retryTransient}. */
export interface RetryOptions {
  readonly clock: Clock;
  /** Give up after this many tries (default: never). */
  readonly attempts?: number;
  /** Stop retrying when this turns true (the owner is shutting down). */
  readonly stopped?: () => boolean;
  /** Longest pause between tries. Default 2000 ms. */
  readonly maxDelayMs?: number;
}

/** Runs `fn`, retrying transient failures with a doubling delay; anything else surfaces. */
export async function retryTransient<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  let delay = 50;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (
        !isTransient(err) ||
        i >= (options.attempts ?? Number.POSITIVE_INFINITY) ||
        options.stopped?.()
      ) {
        throw err;
      }
      await new Promise((r) => options.clock.setTimeout(r, delay));
      delay = Math.min(delay * 2, options.maxDelayMs ?? 2000);
    }
  }
}
