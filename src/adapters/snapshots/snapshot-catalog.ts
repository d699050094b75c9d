/**
 * The snapshot store's catalog: the version and checkpoint entries in the KV
 * bucket (`v.<tenant>.<session>.<version>`, `ck.<tenant>.<session>.<task>.<step>`;
 * see the storage layout in `snapshot-store.ts`) and the manifests they point to,
 * with a small in-process cache of manifests.
 */
import type { KV } from "@nats-io/kv";
import { RetryableError, ValidationError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";
import { forEachLimit } from "./async-limit.js";
import { ChunkStore } from "./chunk-store.js";
import { notFound } from "./snapshot-errors.js";
import {
  decodeManifest,
  decodeVersionEntry,
  encodeVersionEntry,
  type Manifest,
  type VersionInfo,
} from "./snapshot-manifest.js";
import { SnapshotErrorCodes } from "./workspace-rules.js";

/** A version (or checkpoint) entry with the KV revision it was read at. */
export interface StoredEntry {
  readonly info: VersionInfo;
  readonly revision: number;
}

const MANIFEST_CACHE = 16;

export function versionKey(tenant: string, session: string, version: number): string {
  if (!Number.isInteger(version) || version < 0)
    throw new ValidationError(`invalid version: ${version}`);
  return `v.${tenant}.${session}.${String(version).padStart(10, "0")}`;
}

/** Reads (and, for known-good marks, updates) the entries of one snapshot store. */
export class SnapshotCatalog {
  private readonly manifests = new Map<string, Manifest>();

  constructor(
    readonly kv: KV,
    private readonly chunks: ChunkStore,
  ) {}

  /** The session's latest version (the latest known-good one with `knownGood`), or null. */
  async latest(tenant: string, session: string, knownGood = false): Promise<VersionInfo | null> {
    // Newest first: usually the first entry read answers, or one behind a few syncs.
    for (const n of (await this.versionNumbers(tenant, session)).reverse()) {
      const e = await this.getEntry(versionKey(tenant, session, n));
      if (e && (!knownGood || e.info.knownGood)) return e.info;
    }
    return null;
  }

  /** Marks a version known-good, retrying when another writer changed its entry. */
  async markKnownGood(tenant: string, session: string, version: number): Promise<VersionInfo> {
    const key = versionKey(tenant, session, version);
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await this.getEntry(key);
      if (!e) throw notFound(`${tenant}/${session} has no version ${version}`);
      if (e.info.knownGood) return e.info;
      const info: VersionInfo = { ...e.info, knownGood: true };
      try {
        await this.kv.update(key, encodeVersionEntry(info), e.revision);
        return info;
      } catch (err) {
        if (!isCasConflict(err)) throw err;
      }
    }
    throw new RetryableError(
      SnapshotErrorCodes.SNAPSHOT_STORE_ERROR,
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

  /** Every version entry of the session, oldest first. */
  async entries(tenant: string, session: string): Promise<StoredEntry[]> {
    const numbers = await this.versionNumbers(tenant, session);
    const out: Array<StoredEntry | null> = new Array(numbers.length).fill(null);
    await forEachLimit(numbers, 16, async (n, i) => {
      out[i] = await this.getEntry(versionKey(tenant, session, n));
    });
    return out.filter((e): e is StoredEntry => e !== null);
  }

  async versionNumbers(tenant: string, session: string): Promise<number[]> {
    return (await this.keys(`v.${tenant}.${session}.*`))
      .map((k) => Number(k.slice(k.lastIndexOf(".") + 1)))
      .filter((n) => Number.isInteger(n))
      .sort((a, b) => a - b);
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT") return null;
    return { info: decodeVersionEntry(e.value, key), revision: e.revision };
  }

  async keys(filter: string): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }
}
