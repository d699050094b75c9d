/**
 * A session's head: one KV entry, `h.<tenant>.<session>`, listing the session's
 * kept versions (number, time, known-good) and the highest number ever
 * committed. Finding the latest version, the latest known-good one or the one
 * at a time is then one read of the head and one of the entry, however many
 * versions, checkpoints and sessions the bucket has seen: on nats-server 2.9 a
 * filtered key listing costs server CPU in proportion to the whole bucket, so no
 * per-task path lists keys.
 *
 * The version entry claims its number (created create-only, so two writers never
 * share one); the head's listing, by compare-and-set, is what commits it: readers
 * see only the versions a head lists. Changes to a
 * head are merges (add a version, drop some, set a flag) retried on conflict, so
 * concurrent writers of one session compose in any order. A writer that dies
 * between its entry and the head leaves an entry the head does not list: it is
 * never `latest` (its caller saw no success), later writers skip its number, and
 * GC removes it once older than the grace period (`snapshot-gc.ts`).
 *
 * A head is as long as the session's retention (the fleet prunes to
 * `snapshotKeepLast` plus the newest known-good, every tenth version): a store
 * that never prunes keeps every version, and its heads grow with them.
 */
import type { KV } from "@nats-io/kv";
import { z } from "zod";
import { ErrorCodes, RetryableError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";
import { corrupt, type VersionInfo } from "./snapshot-manifest.js";

const HeadVersionSchema = z.object({
  version: z.number().int().min(1),
  /** Commit time, ms since the epoch (restore by time picks from these). */
  at: z.number().int(),
  knownGood: z.boolean(),
});

export const HeadSchema = z.object({
  format: z.literal(1),
  /** The highest version number committed so far; the next writer tries the one above. */
  last: z.number().int().min(0),
  /** The kept versions, oldest first. */
  versions: z.array(HeadVersionSchema),
});

export type Head = Omit<z.output<typeof HeadSchema>, "format">;
export type HeadVersion = z.output<typeof HeadVersionSchema>;

const EMPTY: Head = { last: 0, versions: [] };
const MAX_TRIES = 50;

export function headKey(tenant: string, session: string): string {
  return `h.${tenant}.${session}`;
}

/** The head entry of a version (what the head keeps of it). */
export function headVersionOf(info: VersionInfo): HeadVersion {
  return { version: info.version, at: Date.parse(info.createdAt), knownGood: info.knownGood };
}

/** Adds (or replaces) `v` in `head`, keeping the versions in order. */
export function withVersion(head: Head, v: HeadVersion): Head {
  const versions = head.versions.filter((x) => x.version !== v.version);
  versions.push(v);
  versions.sort((a, b) => a.version - b.version);
  return { last: Math.max(head.last, v.version), versions };
}

/** Serialises a head for KV. */
export function encodeHead(head: Head): string {
  return JSON.stringify({ format: 1, ...head });
}

/** Reads and updates the heads of one bucket. */
export class SnapshotHeads {
  constructor(private readonly kv: KV) {}

  /** The session's head (empty for a session without versions) and its KV revision (0: never written). */
  async read(tenant: string, session: string): Promise<{ head: Head; revision: number }> {
    const key = headKey(tenant, session);
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT") return { head: EMPTY, revision: e?.revision ?? 0 };
    return { head: decodeHead(e.value, key), revision: e.revision };
  }

  /**
   * Applies `change` by compare-and-set, reading again after a conflict; `change`
   * returns null when there is nothing to do. Resolves with the head as written.
   */
  async update(tenant: string, session: string, change: (h: Head) => Head | null): Promise<Head> {
    const key = headKey(tenant, session);
    for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
      const { head, revision } = await this.read(tenant, session);
      const next = change(head);
      if (next === null) return head;
      const value = encodeHead(next);
      try {
        // Revision 0: the key was never written. A delete marker has a revision and is updated.
        if (revision === 0) await this.kv.create(key, value);
        else await this.kv.update(key, value, revision);
        return next;
      } catch (err) {
        if (!isCasConflict(err)) throw err;
      }
    }
    throw new RetryableError(
      ErrorCodes.SNAPSHOT_STORE_ERROR,
      `could not update ${key}: too many concurrent writers`,
    );
  }
}

function decodeHead(bytes: Uint8Array, what: string): Head {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw corrupt(`${what}: head is not JSON`, err);
  }
  const parsed = HeadSchema.safeParse(value);
  if (!parsed.success) throw corrupt(`${what}: invalid head: ${z.prettifyError(parsed.error)}`);
  const { format: _format, ...head } = parsed.data;
  return head;
}
