/**
 * The port between a node and wherever a session's files rest between turns: the
 * local directory store of a one-host fleet, or the versioned snapshot store in NATS.
 * Turn runners depend on this interface only, so the two are interchangeable.
 */

/** How {@link WorkspaceStore.save} lands. */
export interface SaveOptions {
  /** Runs right before the save becomes visible; throwing from it abandons the save. */
  readonly precommit?: () => Promise<void>;
  /**
   * The version is written but is not the session's files (not restored, not
   * current) until {@link WorkspaceStore.confirm}: a turn's files become the
   * session's only once the turn is committed. Versioned stores only; an
   * unversioned store saves at once.
   */
  readonly pending?: boolean;
}

/** Moves a session's working copy in and out of containers. */
export interface WorkspaceStore {
  /**
   * Replaces the contents of `dir` with the session's saved files (empty for a new
   * session): `version` if given and the store is versioned, else the latest saved.
   */
  restore(tenant: string, session: string, dir: string, version?: number): Promise<void>;
  /**
   * Saves the contents of `dir` as the session's files (or, `pending`, as a version
   * that becomes them on {@link confirm}); resolves with the new version, if versioned.
   */
  save(
    tenant: string,
    session: string,
    dir: string,
    options?: SaveOptions,
  ): Promise<number | undefined>;
  /** Makes a pending version the session's files (versioned stores only). */
  confirm?(tenant: string, session: string, version: number): Promise<void>;
  /**
   * Whether `dir` still holds the session's latest files (nobody saved or restored a
   * newer version since this process put them there), so a warm container may skip
   * the restore.
   */
  isCurrent(tenant: string, session: string, dir: string): Promise<boolean>;
  /** Saves the workspace mid-turn as a version that is not known-good (versioned stores only). */
  sync?(
    tenant: string,
    session: string,
    dir: string,
    precommit?: () => Promise<void>,
  ): Promise<number>;
  /**
   * Saves `dir` as the state after `step` of a running task, apart from the
   * session's files: a resumed attempt restores exactly this, and a failed task
   * leaves the session's files as they were.
   */
  saveCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<void>;
  /** Replaces the contents of `dir` with the state saved after `step`; false if there is none. */
  restoreCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<boolean>;
  /** Forgets a task's checkpoints (the task ended). */
  dropCheckpoints(tenant: string, session: string, taskId: string): Promise<void>;
}
