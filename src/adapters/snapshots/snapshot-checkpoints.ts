/**
 * Checkpoints of running tasks: snapshots stored under one key per task,
 * `ck.<tenant>.<session>.<taskId>`, apart from the session's versions (never a
 * version, never `latest`). A task keeps only its newest checkpoint: saving step
 * N replaces the entry (the bucket keeps one value per key), so saving, restoring
 * and dropping are reads and writes of one key, never a listing. GC drops those
 * older than `checkpointRetentionMs` (`snapshot-gc.ts`).
 */

import type { SnapshotCatalog } from "./snapshot-catalog.js";
import { encodeVersionEntry, type VersionInfo } from "./snapshot-manifest.js";
import type { SnapshotReader } from "./snapshot-reader.js";
import type { SnapshotStoreHooks } from "./snapshot-store-options.js";
import type { SnapshotWriter } from "./snapshot-writer.js";

function checkpointKey(tenant: string, session: string, taskId: string): string {
  return `ck.${tenant}.${session}.${taskId}`;
}

/** Saves, restores and drops checkpoints (arguments already checked). */
export class SnapshotCheckpoints {
  constructor(
    private readonly catalog: SnapshotCatalog,
    private readonly writer: SnapshotWriter,
    private readonly reader: SnapshotReader,
    private readonly hooks: SnapshotStoreHooks,
  ) {}

  /** Stores `dir` as the state after `step` of task `taskId`, replacing the task's older checkpoints. */
  async save(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
    exclude: readonly string[],
    reason: string | undefined,
  ): Promise<VersionInfo> {
    const captured = await this.writer.capture(tenant, dir, exclude);
    await this.hooks.beforeCommit?.();
    this.writer.checkDeadline(captured.startedAt);
    const info = this.writer.versionInfo(tenant, session, step, captured, {
      reason: reason ?? "checkpoint",
    });
    const full: VersionInfo = { ...info, checkpoint: { taskId, step } };
    await this.catalog.kv.put(checkpointKey(tenant, session, taskId), encodeVersionEntry(full));
    return full;
  }

  /** Restores the state after `step` of task `taskId` into `dir`; null (and `dir` untouched) if there is none. */
  async restore(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<VersionInfo | null> {
    const e = await this.catalog.getEntry(checkpointKey(tenant, session, taskId));
    // Only the newest step is kept: asking for another one finds nothing.
    if (!e || e.info.checkpoint?.step !== step) return null;
    await this.reader.materialize(e.info, dir);
    return e.info;
  }

  /** Forgets every checkpoint of task `taskId`. */
  async drop(tenant: string, session: string, taskId: string): Promise<void> {
    const key = checkpointKey(tenant, session, taskId);
    const e = await this.catalog.kv.get(key);
    // A save racing in (a stale attempt) leaves its newer entry: GC expires it.
    if (e?.operation === "PUT") await this.catalog.erase(key, e.revision);
  }
}
