/**
 * The checkpoints of a task: one KV key per task holding the outputs of the
 * steps done so far, written by compare-and-set. Opening the log for a new
 * attempt rewrites the key, so a previous attempt that is still running
 * (a stale lease holder) fails its next write instead of adding to the log.
 *
 * The log is also the turn's commit record. Once an attempt has saved the
 * session's files after its last step, it marks the log `committed` (with the
 * version it saved) before it reports success or drops the task's checkpoint
 * files. So a newer attempt that opens the log either finds it committed, and
 * restores exactly the committed files instead of running the turn again, or
 * finds it uncommitted, and then no older attempt can drop the files it
 * resumes from: a fenced-off attempt fails its commit and leaves them alone.
 */
import type { KV } from "@nats-io/kv";
import { ErrorCodes, TerminalError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";
import { LeaseLostError } from "./task-lease.js";

/** One checkpointed step. */
export interface CheckpointStep {
  readonly step: number;
  readonly name?: string;
  readonly output?: unknown;
  readonly at: string;
}

/** The stored value of a task's checkpoint log. */
export interface CheckpointValue {
  readonly taskId: string;
  readonly attempt: number;
  readonly owner: string;
  readonly steps: readonly CheckpointStep[];
  /** Set once the session's files after the last step are saved (`version`, if versioned). */
  readonly committed?: { readonly version?: number };
  /** The task has ended: no attempt may open the log again (see {@link CheckpointLog.close}). */
  readonly ended?: true;
}

/** Largest step output kept in a checkpoint (it is replayed to the agent on resume). */
export const MAX_STEP_OUTPUT_BYTES = 1024 * 1024;

/** A task's checkpoint log, opened by one attempt. */
export class CheckpointLog {
  private constructor(
    private readonly kv: KV,
    private value: CheckpointValue,
    private revision: number,
  ) {}

  /** Opens the log for `attempt`, keeping the steps earlier attempts checkpointed. */
  static async open(
    kv: KV,
    taskId: string,
    attempt: number,
    owner: string,
  ): Promise<CheckpointLog> {
    const entry = await kv.get(taskId);
    const prev = entry?.operation === "PUT" ? entry.json<CheckpointValue>() : null;
    if (prev?.ended) {
      throw new LeaseLostError(`task ${taskId} has ended: attempt ${attempt} comes too late`);
    }
    if (prev && prev.attempt > attempt) {
      throw new LeaseLostError(
        `task ${taskId}: attempt ${prev.attempt} already took over from ${attempt}`,
      );
    }
    const value: CheckpointValue = {
      taskId,
      attempt,
      owner,
      steps: prev?.steps ?? [],
      ...(prev?.committed ? { committed: prev.committed } : {}),
    };
    try {
      const revision = entry
        ? await kv.update(taskId, JSON.stringify(value), entry.revision)
        : await kv.create(taskId, JSON.stringify(value));
      return new CheckpointLog(kv, value, revision);
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      throw new LeaseLostError(`task ${taskId} attempt ${attempt}: checkpoint log taken over`);
    }
  }

  /** The steps done so far, in order. */
  get steps(): readonly CheckpointStep[] {
    return this.value.steps;
  }

  /** What an earlier attempt committed (the turn is done, its files saved), or undefined. */
  get committed(): CheckpointValue["committed"] {
    return this.value.committed;
  }

  /** Records the next step; throws {@link LeaseLostError} if a newer attempt owns the log. */
  async append(step: CheckpointStep): Promise<void> {
    const expected = this.value.steps.length + 1;
    if (step.step !== expected) {
      throw new TerminalError(
        ErrorCodes.AGENT_PROTOCOL,
        `step ${step.step} out of order: expected step ${expected}`,
      );
    }
    const size = Buffer.byteLength(JSON.stringify(step.output ?? null));
    if (size > MAX_STEP_OUTPUT_BYTES) {
      throw new TerminalError(
        ErrorCodes.STEP_OUTPUT_TOO_LARGE,
        `step ${step.step} output is ${size} bytes; the limit is ${MAX_STEP_OUTPUT_BYTES}`,
      );
    }
    await this.write({ ...this.value, steps: [...this.value.steps, step] });
  }

  /**
   * Compare-and-set write of the whole log. A conflict means another attempt
   * took the log over, unless the stored value is exactly ours (a retried write
   * whose first try landed). Other errors are rethrown for the caller to retry.
   */
  private async write(next: CheckpointValue): Promise<void> {
    const json = JSON.stringify(next);
    try {
      this.revision = await this.kv.update(next.taskId, json, this.revision);
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      const entry = await this.kv.get(next.taskId);
      if (entry?.operation !== "PUT" || entry.string() !== json) {
        throw new LeaseLostError(
          `task ${next.taskId} attempt ${next.attempt}: checkpoint log taken over`,
        );
      }
      this.revision = entry.revision;
    }
    this.value = next;
  }

  /**
   * Proves the log is still this attempt's (a compare-and-set rewrite of the same
   * value); throws {@link LeaseLostError} if a newer attempt opened it.
   */
  async hold(): Promise<void> {
    await this.write(this.value);
  }

  /**
   * Marks the turn committed: the session's files after the last step are saved
   * as `version`. Throws {@link LeaseLostError} if a newer attempt opened the log:
   * the task is that attempt's now, and so are the checkpoint files.
   */
  async commit(version: number | undefined): Promise<void> {
    await this.write({
      ...this.value,
      committed: version === undefined ? {} : { version },
    });
  }

  /** Forgets every step (their files are gone): the turn starts over. */
  async reset(): Promise<void> {
    const { committed: _, ...rest } = this.value;
    await this.write({ ...rest, steps: [] });
  }

  /**
   * Closes a task's log for good when the task ends (the orchestrator's last word). A
   * dispatch the task's record counts as spent may still reach a node after that; the
   * attempt it starts finds the log ended and stops before it touches the session,
   * where an absent log would have let it run the turn over again. The bucket's TTL
   * removes the small tombstone.
   */
  static async close(kv: KV, taskId: string): Promise<void> {
    const tombstone: CheckpointValue = { taskId, attempt: 0, owner: "", steps: [], ended: true };
    await kv.put(taskId, JSON.stringify(tombstone));
  }

  /** Reads a task's log without opening it. */
  static async read(kv: KV, taskId: string): Promise<CheckpointValue | null> {
    const entry = await kv.get(taskId);
    return entry?.operation === "PUT" ? entry.json<CheckpointValue>() : null;
  }
}
