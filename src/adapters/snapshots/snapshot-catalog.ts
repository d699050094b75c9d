/**
 * The snapshot store's catalog: the version and checkpoint entries in the KV
 * bucket (`v.<tenant>.<session>.<version>`, `ck.<tenant>.<session>.<task>`; see
 * the storage layout in `snapshot-store.ts`), the session heads that list the
 * versions (`snapshot-head.ts`), and the manifests they point to, with a small
 * in-process cache of manifests. Every per-session read goes through the head:
 * nothing here lists keys but {@link keys}, which only GC uses.
 */
import { JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ErrorCodes, RetryableError, ValidationError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";
import { forEachLimit } from "./async-limit.js";
import { ChunkStore } from "./chunk-store.js";
import { notFound } from "./snapshot-errors.js";
import { type HeadVersion, headVersionOf, SnapshotHeads, withVersion } from "./snapshot-head.js";
import {
  decodeManifest,
  decodeVersionEntry,
  encodeVersionEntry,
  type Manifest,
  type VersionInfo,
} from "./snapshot-manifest.js";

/** A version (or checkpoint) entry with the KV revision it was read at. */
export interface StoredEntry {
  readonly info: VersionInfo;
  readonly revision: number;
}

const MANIFEST_CACHE = 16;
/** Set once every session of the bucket has a head (see {@link SnapshotCatalog.ensureHeads}). */
const FORMAT_KEY = "format";

export function versionKey(tenant: string, session: string, version: number): string {
  if (!Number.isInteger(version) || version < 0)
    throw new ValidationError(`invalid version: ${version}`);
  return `v.${tenant}.${session}.${String(version).padStart(10, "0")}`;
}

/** Reads (and, for known-good marks, updates) the entries of one snapshot store. */
export class SnapshotCatalog {
  private readonly manifests = new Map<string, Manifest>();
  readonly heads: SnapshotHeads;

  constructor(
    readonly kv: KV,
    private readonly chunks: ChunkStore,
    private readonly jsm: JetStreamManager,
    private readonly bucket: string,
  ) {
    this.heads = new SnapshotHeads(kv);
  }

  /**
   * Removes the entry `key` if it is still the message at `revision`; false if it
   * changed or went meanwhile. A delete by sequence, unlike a KV delete or purge,
   * leaves no marker behind, so forgetting entries never grows the bucket.
   */
  async erase(key: string, revision: number): Promise<boolean> {
    try {
      return await this.jsm.streams.deleteMessage(`KV_${this.bucket}`, revision, false);
    } catch (err) {
      if (!(err instanceof JetStreamApiError)) throw err;
      // Refused: judged by the key itself, not the error's text. Still there unchanged is a failure.
      if ((await this.kv.get(key))?.revision === revision) throw err;
      return false;
    }
  }

  /** The session's latest version (the latest known-good one with `knownGood`), or null. */
  async latest(tenant: string, session: string, knownGood = false): Promise<VersionInfo | null> {
    return this.newest(tenant, session, (v) => !knownGood || v.knownGood);
  }

  /**
   * The newest version the head lists that `accept`s, read from its entry. An entry
   * pruned since the head was read is passed over for the next older one.
   */
  async newest(
    tenant: string,
    session: string,
    accept: (v: HeadVersion) => boolean,
  ): Promise<VersionInfo | null> {
    const { head } = await this.heads.read(tenant, session);
    for (const v of [...head.versions].reverse()) {
      if (!accept(v)) continue;
      const e = await this.getEntry(versionKey(tenant, session, v.version));
      if (e) return e.info;
    }
    return null;
  }

  /** Marks a version known-good (entry, then head), retrying when another writer changed its entry. */
  async markKnownGood(tenant: string, session: string, version: number): Promise<VersionInfo> {
    const key = versionKey(tenant, session, version);
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await this.getEntry(key);
      if (!e) throw notFound(`${tenant}/${session} has no version ${version}`);
      const info: VersionInfo = { ...e.info, knownGood: true };
      try {
        if (!e.info.knownGood) await this.kv.update(key, encodeVersionEntry(info), e.revision);
      } catch (err) {
        if (!isCasConflict(err)) throw err;
        continue;
      }
      // Also when the entry was marked already: a mark that died before this finishes here.
      // A version pruned from the head meanwhile whose entry the mark saved comes back.
      const good = headVersionOf(info);
      await this.heads.update(tenant, session, (h) =>
        h.versions.some((v) => v.version === version && v.knownGood) ? null : withVersion(h, good),
      );
      return info;
    }
    throw new RetryableError(
      ErrorCodes.SNAPSHOT_STORE_ERROR,
      `could not mark ${key}: too many writers`,
    );
  }

  /** Reads a manifest, from the cache if it is there; `cache` also keeps it there. */
  async readManifest(tenant: string, hash: string, cache: boolean): Promise<Manifest> {
    const name = ChunkStore.objectName(tenant, hash);
    const hit = this.manifests.get(name);
    if (hit) return hit;
    const manifest = await decodeManifest(await this.chunks.read(tenant, hash), name);
    if (cache) this.cacheManifest(name, manifest);
    return manifest;
  }

  cacheManifest(name: string, manifest: Manifest): void {
    this.manifests.delete(name);
    this.manifests.set(name, manifest);
    if (this.manifests.size > MANIFEST_CACHE)
      this.manifests.delete(this.manifests.keys().next().value!);
  }

  /** Every version entry the session's head lists, oldest first. */
  async entries(tenant: string, session: string): Promise<StoredEntry[]> {
    const { versions } = (await this.heads.read(tenant, session)).head;
    const out: Array<StoredEntry | null> = new Array(versions.length).fill(null);
    await forEachLimit(versions, 16, async (v, i) => {
      out[i] = await this.getEntry(versionKey(tenant, session, v.version));
    });
    return out.filter((e): e is StoredEntry => e !== null);
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT") return null;
    return { info: decodeVersionEntry(e.value, key), revision: e.revision };
  }

  /**
   * Gives every session of a bucket written before heads existed its head, once per
   * bucket (a `format` key records that it is done): without one its versions would
   * be invisible to restores, and GC would take them for a dead writer's leftovers.
   * The one listing is paid at open, never per task; a new bucket has nothing to list.
   */
  async ensureHeads(): Promise<number> {
    const marker = await this.kv.get(FORMAT_KEY);
    if (marker?.operation === "PUT") return 0;
    const bySession = new Map<string, { tenant: string; session: string; v: HeadVersion[] }>();
    for (const key of await this.keys("v.>")) {
      const [, tenant, session] = key.split(".");
      const entry = await this.getEntry(key);
      if (!entry || tenant === undefined || session === undefined) continue;
      const id = `${tenant}.${session}`;
      const s = bySession.get(id) ?? { tenant, session, v: [] };
      s.v.push(headVersionOf(entry.info));
      bySession.set(id, s);
    }
    for (const { tenant, session, v } of bySession.values()) {
      await this.heads.update(tenant, session, (h) => {
        const listed = new Set(h.versions.map((x) => x.version));
        const missing = v.filter((x) => !listed.has(x.version));
        return missing.length === 0 ? null : missing.reduce(withVersion, h);
      });
    }
    await this.kv.put(FORMAT_KEY, JSON.stringify({ heads: 1 }));
    return bySession.size;
  }

  /** Keys matching `filter`: costs the server the whole bucket, so only GC calls it. */
  async keys(filter: string): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }
}
