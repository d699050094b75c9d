/**
 * Telling NATS failures apart, and riding out the transient ones. A
 * compare-and-set conflict is an answer (someone else wrote first); a timeout,
 * a disconnect or a server restart is not, and the same call may succeed a
 * moment later.
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { Clock } from "../../clock.js";
import { ClawfleetError } from "../../errors.js";

/** Whether `err` is a compare-and-set conflict (wrong last sequence). */
export function isCasConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === 10164)
  );
}

/** Whether `err` says a stream, consumer or key does not exist. */
export function isNotFound(err: unknown): boolean {
  if (err instanceof JetStreamApiError) {
    return (
      err.code === JetStreamApiCodes.StreamNotFound ||
      err.code === JetStreamApiCodes.ConsumerNotFound
    );
  }
  return /not found/i.test((err as Error)?.message ?? "");
}

/** Whether retrying `err` may help: not our own typed errors, not CAS conflicts. */
export function isTransient(err: unknown): boolean {
  return !(err instanceof ClawfleetError) && !isCasConflict(err);
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

/** Runs `fn`, retrying transient failures with a doubling delay. */
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
