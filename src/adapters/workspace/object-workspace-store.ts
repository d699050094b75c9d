/**
 * A {@link WorkspaceStore} on the NATS snapshot store: a session's files live
 * as versioned snapshots in the Object Store instead of a host directory, so any
 * container on any node can restore them.
 *
 * - `restore` puts the session's latest known-good version (or the version asked
 *   for) into the workspace (an empty workspace for a new session);
 * - `save` (after a successful turn) snapshots the workspace as the next version,
 *   marked known-good at once, or (`pending`) once `confirm` says the turn is
 *   committed, then prunes old versions when `keepLast` is set;
 * - checkpoints of a running task are snapshots kept apart from the session's
 *   versions (`ck.` keys): they never become `latest`, so a failed task leaves the
 *   session's files as they were; the task's own retries restore them.
 *
 * Consistency: `quiesce(dir)` (the runtime adapter's hook, e.g. OpenClaw's
 * `backup` or a SQLite checkpoint) runs right before every snapshot taken here,
 * in `save` and `saveCheckpoint`; `exclude` names files never copied live
 * (`SQLITE_LIVE_FILES`). A restore always empties the workspace first, so a stale
 * `-wal` can never sit beside a restored database.
 */
import { ClawfleetError, ErrorCodes } from "../../errors.js";
import type { SnapshotStore, VersionInfo } from "../snapshots/snapshot-store.js";
import { emptyDir } from "./local-workspace-store.js";
import type { SaveOptions, WorkspaceStore } from "./workspace-store.js";

/** Options of an {@link ObjectWorkspaceStore}. */
export interface ObjectWorkspaceStoreOptions {
  /** Paths never stored (see `compileExclude`), e.g. `SQLITE_LIVE_FILES`. */
  readonly exclude?: readonly string[];
  /** Runs right before every snapshot, with the workspace directory. */
  readonly quiesce?: (dir: string) => Promise<void>;
  /** After each save, keep only this many versions (plus `keepKnownGood`). Default: keep all. */
  readonly keepLast?: number;
  /** Prune after every this many versions. Default 10. */
  readonly pruneEvery?: number;
  /** Known-good versions kept by that pruning besides the last `keepLast`. Default 1. */
  readonly keepKnownGood?: number;
}

/** A {@link WorkspaceStore} backed by a {@link SnapshotStore}; see the module comment. */
export class ObjectWorkspaceStore implements WorkspaceStore {
  /** What each workspace directory was last restored from or saved as: the next save's parent. */
  private readonly lineage = new Map<
    string,
    { tenant: string; session: string; version: number }
  >();

  constructor(
    readonly snapshots: SnapshotStore,
    private readonly options: ObjectWorkspaceStoreOptions = {},
  ) {}

  async restore(tenant: string, session: string, dir: string, version?: number): Promise<void> {
    try {
      // The restore point is the last version a turn succeeded on: syncs taken during a
      // turn that then failed are kept for a person to go back to, never restored by themselves.
      const info = await this.snapshots.restore(
        tenant,
        session,
        dir,
        version === undefined ? { knownGood: true } : { version },
      );
      this.lineage.set(dir, { tenant, session, version: info.version });
    } catch (err) {
      if (!(err instanceof ClawfleetError && err.code === ErrorCodes.SNAPSHOT_NOT_FOUND)) throw err;
      this.lineage.delete(dir);
      await emptyDir(dir);
    }
  }

  async save(
    tenant: string,
    session: string,
    dir: string,
    options: SaveOptions = {},
  ): Promise<number> {
    return (await this.saveVersion(tenant, session, dir, options)).version;
  }

  /** The pending version becomes the latest known-good: what the session's next turn gets. */
  async confirm(tenant: string, session: string, version: number): Promise<void> {
    await this.snapshots.markKnownGood(tenant, session, version);
  }

  async isCurrent(tenant: string, session: string, dir: string): Promise<boolean> {
    const held = this.lineage.get(dir);
    if (!held || held.tenant !== tenant || held.session !== session) return false;
    // Someone may have saved or restored a newer version elsewhere since (another node, `restore`).
    const latest = await this.snapshots.latest(tenant, session, { knownGood: true });
    return latest?.version === held.version;
  }

  /**
   * Background sync: the workspace as it is now, mid-turn, as a version that is
   * not known-good (no quiesce: the agent is busy). A sync killed half-way leaves
   * every committed version as it was. Syncs give point-in-time recovery of work
   * in progress; turns restore only from known-good versions.
   */
  async sync(
    tenant: string,
    session: string,
    dir: string,
    precommit?: () => Promise<void>,
  ): Promise<number> {
    const from = this.lineage.get(dir);
    const info = await this.snapshots.snapshot(tenant, session, dir, {
      ...(precommit ? { precommit } : {}),
      ...(this.options.exclude ? { exclude: this.options.exclude } : {}),
      reason: "sync",
      knownGood: false,
      ...(from && from.tenant === tenant && from.session === session
        ? { parent: from.version }
        : {}),
    });
    return info.version;
  }

  /** {@link save}, resolving with the version written. */
  async saveVersion(
    tenant: string,
    session: string,
    dir: string,
    { precommit, pending = false }: SaveOptions = {},
  ): Promise<VersionInfo> {
    await this.options.quiesce?.(dir);
    const from = this.lineage.get(dir);
    const parent =
      from && from.tenant === tenant && from.session === session ? from.version : undefined;
    const info = await this.snapshots.snapshot(tenant, session, dir, {
      ...(precommit ? { precommit } : {}),
      ...(this.options.exclude ? { exclude: this.options.exclude } : {}),
      reason: "turn",
      knownGood: !pending,
      ...(parent === undefined ? {} : { parent }),
    });
    this.lineage.set(dir, { tenant, session, version: info.version });
    // Pruning lists the session's versions: not on every turn's hot path, but every
    // `pruneEvery` versions (a session holds at most keepLast + pruneEvery in between).
    if (
      this.options.keepLast !== undefined &&
      info.version % (this.options.pruneEvery ?? 10) === 0
    ) {
      await this.snapshots.prune(tenant, session, {
        keepLast: this.options.keepLast,
        ...(this.options.keepKnownGood === undefined
          ? {}
          : { keepKnownGood: this.options.keepKnownGood }),
      });
    }
    return info;
  }

  async saveCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<void> {
    await this.options.quiesce?.(dir);
    await this.snapshots.saveCheckpoint(tenant, session, taskId, step, dir, {
      ...(this.options.exclude ? { exclude: this.options.exclude } : {}),
      reason: `task ${taskId} step ${step}`,
    });
  }

  async restoreCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<boolean> {
    return (await this.snapshots.restoreCheckpoint(tenant, session, taskId, step, dir)) !== null;
  }

  async dropCheckpoints(tenant: string, session: string, taskId: string): Promise<void> {
    await this.snapshots.dropCheckpoints(tenant, session, taskId);
  }
}
