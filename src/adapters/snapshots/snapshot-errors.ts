/**
 * Errors of the snapshot store: the argument checks of its public methods, the
 * SNAPSHOT_NOT_FOUND and SNAPSHOT_CORRUPT helpers, and {@link guard}, which turns
 * the stray errors of an operation (filesystem, NATS) into coded ones.
 */
import { z } from "zod";
import {
  ClawfleetError,
  ErrorCodes,
  RetryableError,
  TerminalError,
  ValidationError,
} from "../../errors.js";
import { isTransient } from "../nats/nats-retry.js";
import { ID_PATTERN } from "./snapshot-manifest.js";
import { ExcludePatternSchema } from "./workspace-exclude.js";

/** Runs `fn`, turning stray errors into coded ones. */
export async function guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asSnapshotError(op, err);
  }
}

export function checkIds(...ids: string[]): void {
  for (const id of ids) {
    if (!ID_PATTERN.test(id)) throw new ValidationError(`invalid id: ${JSON.stringify(id)}`);
  }
}

export function checkStep(step: number): void {
  if (!Number.isInteger(step) || step < 0 || step > 9_999_999_999)
    throw new ValidationError(`invalid step: ${step}`);
}

export function checkExclude(exclude: readonly string[] | undefined): readonly string[] {
  const parsed = z
    .array(ExcludePatternSchema)
    .max(1000)
    .safeParse(exclude ?? []);
  if (!parsed.success)
    throw new ValidationError(`invalid exclude patterns: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

export function notFound(message: string): TerminalError {
  return new TerminalError(ErrorCodes.SNAPSHOT_NOT_FOUND, message);
}

export function isCorrupt(err: unknown): boolean {
  return err instanceof ClawfleetError && err.code === ErrorCodes.SNAPSHOT_CORRUPT;
}

const RETRYABLE_FS = new Set(["ENOSPC", "EMFILE", "ENFILE", "EIO", "EAGAIN", "EBUSY"]);

/**
 * Our own errors pass; filesystem errors are WORKSPACE_ERROR; a NATS server out of
 * reach is a retryable SNAPSHOT_STORE_ERROR. Anything else (a refused request, a
 * bug) is terminal: retrying it would only meet it again.
 */
function asSnapshotError(op: string, err: unknown): ClawfleetError {
  if (err instanceof ClawfleetError) return err;
  const e = err as NodeJS.ErrnoException;
  const message = `${op} failed: ${e?.message ?? String(err)}`;
  if (typeof e?.code === "string" && typeof e.syscall === "string") {
    return RETRYABLE_FS.has(e.code)
      ? new RetryableError(ErrorCodes.WORKSPACE_ERROR, message, { cause: err })
      : new TerminalError(ErrorCodes.WORKSPACE_ERROR, message, { cause: err });
  }
  return isTransient(err)
    ? new RetryableError(ErrorCodes.SNAPSHOT_STORE_ERROR, message, { cause: err })
    : new TerminalError(ErrorCodes.SNAPSHOT_STORE_ERROR, message, { cause: err });
}
