/**
 * Content-addressed objects of the snapshot store, in one NATS Object Store
 * bucket, named `<tenant>/sha256/<hex>` so that identical content is shared by
 * the sessions of one tenant and never across tenants (a tenant can only name
 * objects under its own prefix, so guessing a hash reveals nothing).
 *
 * Chunks of workspace files and the (gzipped) manifests are both such objects.
 * A chunk is deflated when that saves at least 10 %; the object's metadata says
 * so (`enc: deflate-raw`). Reads check the SHA-256 of the decoded bytes.
 *
 * ## Leases and fenced deletes (why GC cannot break a snapshot)
 *
 * Each object's meta record carries an `mtime`. It is a lease on the object's
 * existence: the garbage collector only deletes an unreferenced object whose
 * mtime is older than its grace period `G`, and a snapshot only references an
 * object it did not upload itself if it saw an mtime no older than
 * `refreshAfterMs` (= G − maxSnapshot − 2·skew) at the snapshot's start; if the
 * mtime is older, the snapshot renews it ("touch": rewrite the meta record with
 * a new mtime). Both the touch and the delete are conditional on the meta
 * record's stream sequence (`Nats-Expected-Last-Subject-Sequence` on the
 * publish; delete-by-sequence for the delete), so when they race exactly one
 * wins: a touch that loses finds the object gone and uploads it again; a delete
 * that loses leaves the object alone. The argument is in snapshot-gc.ts.
 */
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { deflateRaw, deflateRawSync, inflateRaw } from "node:zlib";
import {
  JetStreamApiError,
  type JetStreamClient,
  JetStreamError,
  type JetStreamManager,
  JsHeaders,
  PubHeaders,
} from "@nats-io/jetstream";
import { ConnectionError, errors, headers, RequestError } from "@nats-io/nats-core";
import { Base64UrlPaddedCodec, type ObjectInfo, type ObjectStore } from "@nats-io/obj";
import type { Clock } from "../../clock.js";
import { ErrorCodes, RetryableError } from "../../errors.js";
import { hasApiCode, isCasConflict, isTransient, ServerApiCodes } from "../nats/nats-retry.js";
import { corrupt } from "./snapshot-manifest.js";

/** An error of the NATS client itself (connection, request, JetStream), not a verdict on data. */
function isClientFailure(err: unknown): boolean {
  return (
    err instanceof JetStreamError ||
    err instanceof JetStreamApiError ||
    err instanceof ConnectionError ||
    err instanceof RequestError ||
    err instanceof errors.TimeoutError ||
    err instanceof errors.ClosedConnectionError ||
    err instanceof errors.DrainingConnectionError ||
    err instanceof errors.ProtocolError
  );
}

const deflateRawAsync = promisify(deflateRaw);
const inflateRawAsync = promisify(inflateRaw);

/** Chunks shorter than this are stored as they are. */
const MIN_COMPRESS_BYTES = 512;
/** How much of a chunk is test-compressed to decide whether compressing it pays. */
const SAMPLE_BYTES = 64 * 1024;
const ENC_DEFLATE = "deflate-raw";

/** The meta record of an object as the server stores it (ADR-20). */
interface ServerObjectInfo {
  name: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  mtime: string;
  deleted?: boolean;
  metadata?: Record<string, string>;
  [other: string]: unknown;
}

interface MetaRecord {
  readonly info: ServerObjectInfo;
  /** The meta message's stream sequence: what touches and deletes are conditional on. */
  readonly seq: number;
}

interface Known {
  /** The object's mtime as last seen or written (ms since the epoch). */
  readonly mtime: number;
}

/** How {@link ChunkStore.ensure} made sure an object is stored. */
export type EnsureOutcome = "uploaded" | "reused" | "refreshed";

export interface EnsureResult {
  readonly outcome: EnsureOutcome;
  /** Bytes sent as object data (0 unless uploaded). */
  readonly sentBytes: number;
}

/** Options of a {@link ChunkStore}. */
export interface ChunkStoreOptions {
  /** Deflate chunks when it saves at least 10 %. */
  readonly compress: boolean;
  /** Largest data message of an object (the Object Store's `max_chunk_size`). */
  readonly maxMessageBytes: number;
  /** An object seen with an mtime at most this old (before the snapshot's start) is reused as is. */
  readonly refreshAfterMs: number;
  /** How many object names the in-process cache remembers. */
  readonly cacheEntries: number;
}

/** Content-addressed objects of the snapshot store; see the module comment. */
export class ChunkStore {
  readonly stream: string;
  private readonly known = new Map<string, Known>();
  private readonly inflight = new Map<string, Promise<EnsureResult>>();

  constructor(
    private readonly os: ObjectStore,
    private readonly bucket: string,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly options: ChunkStoreOptions,
    private readonly clock: Clock,
  ) {
    this.stream = `OBJ_${bucket}`;
  }

  /** The object name of `hash` for `tenant`. */
  static objectName(tenant: string, hash: string): string {
    return `${tenant}/sha256/${hash}`;
  }

  /** The tenant and hash of an object name, or null for names this store does not make. */
  static parseName(name: string): { tenant: string; hash: string } | null {
    const m = /^([A-Za-z0-9_-]{1,128})\/sha256\/([0-9a-f]{64})$/.exec(name);
    return m ? { tenant: m[1]!, hash: m[2]! } : null;
  }

  /** SHA-256 of `data`, lowercase hex. */
  static hash(data: Uint8Array): string {
    return createHash("sha256").update(data).digest("hex");
  }

  /**
   * Makes sure the object `hash` of `tenant` is stored, with a lease good for a
   * snapshot that started at `startedAt`: reuses it when it is there and fresh,
   * renews its lease when it is there but old, uploads `data` otherwise.
   * `beforeUpload` runs just before an upload (a test hook; throwing aborts).
   */
  async ensure(
    tenant: string,
    hash: string,
    data: Uint8Array,
    startedAt: number,
    opts: { compress?: boolean; beforeUpload?: () => void | Promise<void> } = {},
  ): Promise<EnsureResult> {
    const name = ChunkStore.objectName(tenant, hash);
    if (this.isFresh(name, startedAt)) return { outcome: "reused", sentBytes: 0 };
    const running = this.inflight.get(name);
    if (running) {
      // Someone in this process is storing the same object: wait, then judge by our own start.
      await running.catch(() => {});
      if (this.isFresh(name, startedAt)) return { outcome: "reused", sentBytes: 0 };
    }
    const p = this.establish(name, data, startedAt, opts);
    this.inflight.set(name, p);
    try {
      return await p;
    } finally {
      if (this.inflight.get(name) === p) this.inflight.delete(name);
    }
  }

  /** Reads and verifies the object `hash` of `tenant`; SNAPSHOT_CORRUPT when missing or wrong. */
  async read(tenant: string, hash: string): Promise<Buffer> {
    const name = ChunkStore.objectName(tenant, hash);
    // An object replaced while we read it (a concurrent re-upload) is read again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const cur = await this.meta(name);
      if (!cur || cur.info.deleted) break;
      const stored = await this.readData(name, cur.info);
      if (stored === null) continue;
      const data =
        cur.info.metadata?.enc === ENC_DEFLATE
          ? await inflateRawAsync(stored).catch((err: unknown) => {
              throw corrupt(`object ${name} does not inflate`, err);
            })
          : Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
      if (ChunkStore.hash(data) !== hash) throw corrupt(`object ${name} does not match its hash`);
      return data;
    }
    throw corrupt(`object ${name} is missing from the store`);
  }

  /** Every live object of the bucket (meta records only). */
  list(): Promise<ObjectInfo[]> {
    return this.os.list();
  }

  /**
   * Deletes `name` if its mtime is older than `cutoff`, conditional on its meta
   * record being the one just read: a concurrent touch or re-upload wins.
   * Resolves with the bytes freed, or null when nothing was deleted.
   */
  async deleteIfStale(
    name: string,
    cutoff: number,
    beforeDelete?: (name: string) => void | Promise<void>,
  ): Promise<number | null> {
    const cur = await this.meta(name);
    if (!cur || cur.info.deleted || !(Date.parse(cur.info.mtime) < cutoff)) return null;
    await beforeDelete?.(name);
    try {
      if (!(await this.jsm.streams.deleteMessage(this.stream, cur.seq, false))) return null;
    } catch (err) {
      // The server refuses a delete of a sequence that is gone (10043 inside the stream,
      // 10057 below its first); that a touch or re-upload won is judged by the meta
      // record itself, not by the error's text.
      if (!hasApiCode(err, ServerApiCodes.SequenceNotFound, ServerApiCodes.StreamMsgDeleteFailed))
        throw err;
      const now = await this.meta(name);
      if (now?.seq !== cur.seq) return null; // touched or replaced since we read it: it lives
      throw err;
    }
    this.known.delete(name);
    // The meta record is gone, so nobody can reach this data any more; a new upload of
    // the same name gets a new nuid. A crash here leaves orphan data for sweepOrphans.
    await this.jsm.streams.purge(this.stream, { filter: this.dataSubject(cur.info.nuid) });
    return cur.info.size;
  }

  /**
   * Purges object data that no meta record points to (left by a crashed upload or
   * delete) and whose newest message is older than `cutoff` (server time). An
   * upload in progress is younger than any cutoff the caller may pass (G > the
   * longest snapshot), so it is never mistaken for an orphan.
   */
  async sweepOrphans(liveNuids: ReadonlySet<string>, cutoff: number): Promise<number> {
    const prefix = `$O.${this.bucket}.C.`;
    const si = await this.jsm.streams.info(this.stream, { subjects_filter: `${prefix}>` });
    let purged = 0;
    for (const subject of Object.keys(si.state.subjects ?? {})) {
      if (liveNuids.has(subject.slice(prefix.length))) continue;
      const last = await this.jsm.streams.getMessage(this.stream, { last_by_subj: subject });
      if (!last || last.time.getTime() >= cutoff) continue;
      await this.jsm.streams.purge(this.stream, { filter: subject });
      purged++;
    }
    return purged;
  }

  /** Forgets what this process knows about `name` (its lease may be gone). */
  forget(name: string): void {
    this.known.delete(name);
  }

  private isFresh(name: string, startedAt: number): boolean {
    const k = this.known.get(name);
    return k !== undefined && k.mtime >= startedAt - this.options.refreshAfterMs;
  }

  private async establish(
    name: string,
    data: Uint8Array,
    startedAt: number,
    opts: { compress?: boolean; beforeUpload?: () => void | Promise<void> },
  ): Promise<EnsureResult> {
    const fresh = (mtime: number) => mtime >= startedAt - this.options.refreshAfterMs;
    const cur = await this.meta(name);
    if (cur && !cur.info.deleted) {
      const mtime = Date.parse(cur.info.mtime);
      if (fresh(mtime)) {
        this.remember(name, mtime);
        return { outcome: "reused", sentBytes: 0 };
      }
      if (await this.touch(name, cur)) return { outcome: "refreshed", sentBytes: 0 };
      // Lost a race (touched, replaced or deleted since we looked): look once more.
      const again = await this.meta(name);
      if (again && !again.info.deleted && fresh(Date.parse(again.info.mtime))) {
        this.remember(name, Date.parse(again.info.mtime));
        return { outcome: "reused", sentBytes: 0 };
      }
    }
    await opts.beforeUpload?.();
    const sentBytes = await this.upload(name, data, opts.compress ?? this.options.compress);
    return { outcome: "uploaded", sentBytes };
  }

  private async upload(name: string, data: Uint8Array, compress: boolean): Promise<number> {
    let payload: Uint8Array = data;
    let metadata: Record<string, string> | undefined;
    if (compress && data.length >= MIN_COMPRESS_BYTES && worthCompressing(data)) {
      const z = await deflateRawAsync(data, { level: 1 });
      if (z.length <= data.length * 0.9) {
        payload = z;
        metadata = { enc: ENC_DEFLATE };
      }
    }
    const info = await this.os.putBlob(
      {
        name,
        options: { max_chunk_size: this.options.maxMessageBytes },
        ...(metadata ? { metadata } : {}),
      },
      payload,
    );
    this.remember(name, Date.parse(info.mtime));
    return payload.length;
  }

  /** Renews the lease of `name`, conditional on `cur` still being its meta record. */
  private async touch(name: string, cur: MetaRecord): Promise<boolean> {
    const { revision: _revision, ...meta } = cur.info;
    const now = this.clock.now();
    const h = headers();
    h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
    h.set(PubHeaders.ExpectedLastSubjectSequenceHdr, String(cur.seq));
    try {
      await this.js.publish(
        this.metaSubject(name),
        JSON.stringify({ ...meta, mtime: new Date(now).toISOString() }),
        {
          headers: h,
        },
      );
    } catch (err) {
      if (isCasConflict(err)) {
        this.known.delete(name);
        return false;
      }
      throw err;
    }
    this.remember(name, now);
    return true;
  }

  private async meta(name: string): Promise<MetaRecord | null> {
    const m = await this.jsm.streams.getMessage(this.stream, {
      last_by_subj: this.metaSubject(name),
    });
    return m ? { info: m.json<ServerObjectInfo>(), seq: m.seq } : null;
  }

  /** The stored bytes of an object, or null if its data vanished (replaced meanwhile). */
  private async readData(name: string, info: ServerObjectInfo): Promise<Uint8Array | null> {
    if (info.size === 0) return new Uint8Array(0);
    if (info.chunks === 1) {
      // One message: fetch it instead of running a consumer for it. A direct get returns
      // raw bytes (the API get base64-encodes them); it may be served by a lagging
      // replica, so a miss is asked again of the stream leader. Data under a nuid never
      // changes, so a hit is always right.
      const query = { last_by_subj: this.dataSubject(info.nuid) };
      const m =
        (await this.jsm.direct.getMessage(this.stream, query).catch(replicaMiss)) ??
        (await this.jsm.streams.getMessage(this.stream, query));
      return m && m.data.length === info.size ? m.data : null;
    }
    try {
      // Null when the object was deleted since we read its meta record: read again.
      return await this.os.getBlob(name);
    } catch (err) {
      // Out of reach for now: the caller may retry.
      if (isTransient(err)) throw err;
      // The client's own failures (a consumer's status, a lost heartbeat, a refused API
      // call, as during a server restart) say nothing of the stored bytes: a retry, bounded
      // by the task's attempts, may read them.
      if (isClientFailure(err)) {
        throw new RetryableError(
          ErrorCodes.SNAPSHOT_STORE_ERROR,
          `object ${name} could not be read: ${(err as Error).message}`,
          { cause: err },
        );
      }
      // What is left is the object client's verdict on the bytes (its digest does not match).
      throw corrupt(`object ${name} could not be read`, err);
    }
  }

  private remember(name: string, mtime: number): void {
    this.known.delete(name);
    this.known.set(name, { mtime });
    if (this.known.size > this.options.cacheEntries) {
      const oldest = this.known.keys().next().value;
      if (oldest !== undefined) this.known.delete(oldest);
    }
  }

  private metaSubject(name: string): string {
    return `$O.${this.bucket}.M.${Base64UrlPaddedCodec.encode(name)}`;
  }

  private dataSubject(nuid: string): string {
    return `$O.${this.bucket}.C.${nuid}`;
  }
}

/** A direct get that a replica could not answer is asked of the leader; a bug surfaces. */
function replicaMiss(err: unknown): null {
  if (isTransient(err) || err instanceof JetStreamError) return null;
  throw err;
}

/** Whether deflating `data` is likely to save 10 %, judged on a sample. */
function worthCompressing(data: Uint8Array): boolean {
  if (data.length <= SAMPLE_BYTES) return true;
  const sample = data.subarray(0, SAMPLE_BYTES);
  return deflateRawSync(sample, { level: 1 }).length <= SAMPLE_BYTES * 0.9;
}
