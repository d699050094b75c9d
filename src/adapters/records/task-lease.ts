/**
 * The lease a running attempt holds on its task: `task.<taskId>` in the leases
 * bucket, taken and renewed by compare-and-set on the key's revision. Expiry
 * lives in the value (nats-server 2.9 has no per-key TTL); the orchestrator
 * judges expiry by when it last saw a renewal, so clocks need not agree.
 * Whoever writes the key next (a newer attempt, or the orchestrator revoking
 * it) fences the old holder off: its next renewal fails and it stops.
 */
import type { KV } from "@nats-io/kv";
import type { Clock } from "../../clock.js";
import { ErrorCodes, RetryableError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";

/** The stored value of a task lease. */
export interface TaskLeaseValue {
  readonly owner: string;
  readonly attempt: number;
  readonly expiresAt: number;
  /** Set by the orchestrator when it takes the task back. */
  readonly revoked?: boolean;
}

/** The holder lost its lease (or never got it): it must stop and write nothing more. */
export class LeaseLostError extends RetryableError {
  constructor(message: string) {
    super(ErrorCodes.LEASE_LOST, message);
  }
}

/** The key of a task's lease. */
export function taskLeaseKey(taskId: string): string {
  return `task.${taskId}`;
}

/** A held task lease. */
export class TaskLease {
  private constructor(
    private readonly kv: KV,
    readonly taskId: string,
    readonly attempt: number,
    readonly owner: string,
    private readonly ttlMs: number,
    private readonly clock: Clock,
    private revision: number,
  ) {}

  /** Takes the lease for `attempt`; fails if a newer attempt holds it or it was revoked for this one. */
  static async acquire(
    kv: KV,
    taskId: string,
    attempt: number,
    owner: string,
    ttlMs: number,
    clock: Clock,
  ): Promise<TaskLease> {
    const key = taskLeaseKey(taskId);
    const value = (): string =>
      JSON.stringify({ owner, attempt, expiresAt: clock.now() + ttlMs } satisfies TaskLeaseValue);
    const entry = await kv.get(key);
    try {
      let revision: number;
      if (entry?.operation === "PUT") {
        const held = entry.json<TaskLeaseValue>();
        if (
          held.attempt > attempt ||
          (held.attempt === attempt && (held.revoked || held.owner !== owner))
        ) {
          throw new LeaseLostError(
            `task ${taskId} attempt ${attempt}: lease belongs to attempt ${held.attempt}`,
          );
        }
        revision = await kv.update(key, value(), entry.revision);
      } else {
        revision = entry
          ? await kv.update(key, value(), entry.revision)
          : await kv.create(key, value());
      }
      return new TaskLease(kv, taskId, attempt, owner, ttlMs, clock, revision);
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      throw new LeaseLostError(`task ${taskId} attempt ${attempt}: lost the race for its lease`);
    }
  }

  /**
   * Extends the lease. Throws {@link LeaseLostError} when someone else wrote it;
   * rethrows anything else (a disconnect): the caller decides how long to ride that out.
   */
  async renew(): Promise<void> {
    const key = taskLeaseKey(this.taskId);
    try {
      this.revision = await this.kv.update(key, this.value(), this.revision);
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      // A retried write whose first try landed looks like a conflict: check whose it is.
      const entry = await this.kv.get(key);
      const held = entry?.operation === "PUT" ? entry.json<TaskLeaseValue>() : null;
      if (held && held.owner === this.owner && held.attempt === this.attempt && !held.revoked) {
        this.revision = entry!.revision;
        return;
      }
      throw new LeaseLostError(`task ${this.taskId} attempt ${this.attempt}: lease taken over`);
    }
  }

  private value(): string {
    return JSON.stringify({
      owner: this.owner,
      attempt: this.attempt,
      expiresAt: this.clock.now() + this.ttlMs,
    } satisfies TaskLeaseValue);
  }

  /** Gives the lease up if it is still ours. */
  async release(): Promise<void> {
    await this.kv.delete(taskLeaseKey(this.taskId), { previousSeq: this.revision }).catch(() => {});
  }

  /**
   * Takes a task's lease away from whoever holds `attempt` (or older): the
   * orchestrator does this before it requeues or cancels, so a holder that
   * wakes up late finds its lease gone.
   */
  static async revoke(kv: KV, taskId: string, attempt: number): Promise<void> {
    const key = taskLeaseKey(taskId);
    for (let i = 0; i < 5; i++) {
      const entry = await kv.get(key);
      const held = entry?.operation === "PUT" ? entry.json<TaskLeaseValue>() : null;
      if (held && held.attempt > attempt) return;
      const value = JSON.stringify({
        owner: "orchestrator",
        attempt,
        expiresAt: 0,
        revoked: true,
      } satisfies TaskLeaseValue);
      try {
        if (entry) await kv.update(key, value, entry.revision);
        else await kv.create(key, value);
        return;
      } catch {
        // The holder renewed between our read and write: read again and retry.
      }
    }
  }
}
