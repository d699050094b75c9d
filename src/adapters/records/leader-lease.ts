/**
 * A lease in a KV bucket that at most one holder owns at a time: acquire and
 * renew are compare-and-set on the key's revision, and expiry lives in the
 * value because nats-server 2.9 has no per-key TTL. A holder that fails to
 * renew must assume it lost the lease.
 */
import type { KV } from "@nats-io/kv";
import type { Clock } from "../../clock.js";
import { isCasConflict } from "../nats/nats-retry.js";

/** The key of the orchestrator's leader lease in the leases bucket. */
export const ORCHESTRATOR_LEASE_KEY = "orchestrator";

/** The stored value of a lease. */
export interface LeaseValue {
  readonly owner: string;
  readonly expiresAt: number;
  readonly since: string;
}

/** One contender's handle on a named lease. */
export class LeaderLease {
  private revision = 0;
  private since = "";

  constructor(
    private readonly kv: KV,
    private readonly key: string,
    readonly owner: string,
    private readonly ttlMs: number,
    private readonly clock: Clock,
  ) {}

  /** Takes the lease if it is free, expired or already ours; resolves whether we hold it. */
  async tryAcquire(): Promise<boolean> {
    const entry = await this.kv.get(this.key);
    const now = this.clock.now();
    try {
      if (entry?.operation !== "PUT") {
        this.since = new Date(now).toISOString();
        this.revision = entry
          ? await this.kv.update(this.key, this.encode(now), entry.revision)
          : await this.kv.create(this.key, this.encode(now));
        return true;
      }
      const value = entry.json<LeaseValue>();
      if (value.owner !== this.owner && value.expiresAt > now) return false;
      this.since = value.owner === this.owner ? value.since : new Date(now).toISOString();
      this.revision = await this.kv.update(this.key, this.encode(now), entry.revision);
      return true;
    } catch {
      // Someone else wrote between our read and our write: they won this round.
      return false;
    }
  }

  /**
   * Extends our lease: `true` when extended, `false` when someone else holds it
   * now. A disconnect rethrows: the lease may still be ours until it expires.
   */
  async renew(): Promise<boolean> {
    try {
      this.revision = await this.kv.update(this.key, this.encode(this.clock.now()), this.revision);
      return true;
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      // A retried write whose first try landed looks like a conflict: check whose it is.
      const entry = await this.kv.get(this.key);
      if (entry?.operation === "PUT" && entry.json<LeaseValue>().owner === this.owner) {
        this.revision = entry.revision;
        return true;
      }
      return false;
    }
  }

  /** Gives the lease up so a standby can take over at once. */
  async release(): Promise<void> {
    await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => {});
  }

  /** When we became the holder (ISO time). */
  get heldSince(): string {
    return this.since;
  }

  /** The current holder as stored, if any. */
  static async read(kv: KV, key: string): Promise<LeaseValue | null> {
    const entry = await kv.get(key);
    return entry && entry.operation === "PUT" ? entry.json<LeaseValue>() : null;
  }

  private encode(now: number): string {
    return JSON.stringify({
      owner: this.owner,
      expiresAt: now + this.ttlMs,
      since: this.since,
    } satisfies LeaseValue);
  }
}
