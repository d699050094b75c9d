/**
 * Where a session's files rest between turns, until the state plane moves them
 * into the NATS Object Store: a directory per tenant/session under the data dir.
 * Nodes sharing a data dir (one host) share sessions; a save replaces the old
 * copy atomically, so a crash mid-save leaves the previous copy intact.
 */
import { randomBytes } from "node:crypto";
import { cp, mkdir, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { ClawfleetError, ErrorCodes, TerminalError } from "../../errors.js";
import type { SaveOptions, WorkspaceStore } from "./workspace-store.js";

const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** A {@link WorkspaceStore} on the local filesystem under `root`. */
export class LocalWorkspaceStore implements WorkspaceStore {
  constructor(private readonly root: string) {}

  /** Unversioned: `version` is ignored, the one saved copy is the latest. */
  async restore(tenant: string, session: string, dir: string, _version?: number): Promise<void> {
    const from = this.sessionDir(tenant, session);
    await emptyDir(dir);
    try {
      await cp(from, dir, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw wrap("restore", err);
    }
  }

  /** Unversioned: a warm copy is current unless another process saved the session since. */
  async isCurrent(): Promise<boolean> {
    return true;
  }

  async save(
    tenant: string,
    session: string,
    dir: string,
    options: SaveOptions = {},
  ): Promise<undefined> {
    const final = this.sessionDir(tenant, session);
    const parent = path.dirname(final);
    const tag = randomBytes(6).toString("hex");
    const tmp = path.join(parent, `.${session}.tmp-${tag}`);
    const old = path.join(parent, `.${session}.old-${tag}`);
    const abandon = async (err: unknown): Promise<never> => {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    };
    try {
      await mkdir(parent, { recursive: true });
      await cp(dir, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    } catch (err) {
      return abandon(wrap("save", err));
    }
    // The caller's verdict passes as it is (a lost lease, a NATS hiccup to retry).
    await options.precommit?.().catch(abandon);
    try {
      let hadOld = true;
      await rename(final, old).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
        hadOld = false;
      });
      await rename(tmp, final);
      if (hadOld) await rm(old, { recursive: true, force: true });
    } catch (err) {
      return abandon(wrap("save", err));
    }
  }

  async saveCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<void> {
    const root = this.checkpointDir(tenant, session, taskId);
    const final = path.join(root, String(step));
    const tmp = path.join(root, `.tmp-${step}-${randomBytes(6).toString("hex")}`);
    try {
      await mkdir(root, { recursive: true });
      await cp(dir, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await rm(final, { recursive: true, force: true });
      await rename(tmp, final);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw wrap("checkpoint", err);
    }
    // Only the newest checkpoint is ever restored; older ones are dead weight.
    for (const name of await readdir(root)) {
      if (/^\d+$/.test(name) && Number(name) < step)
        await rm(path.join(root, name), { recursive: true, force: true });
    }
  }

  async restoreCheckpoint(
    tenant: string,
    session: string,
    taskId: string,
    step: number,
    dir: string,
  ): Promise<boolean> {
    const from = path.join(this.checkpointDir(tenant, session, taskId), String(step));
    try {
      await readdir(from);
    } catch {
      return false;
    }
    await emptyDir(dir);
    await cp(from, dir, {
      recursive: true,
      verbatimSymlinks: true,
      preserveTimestamps: true,
    }).catch((err) => {
      throw wrap("checkpoint restore", err);
    });
    return true;
  }

  async dropCheckpoints(tenant: string, session: string, taskId: string): Promise<void> {
    await rm(this.checkpointDir(tenant, session, taskId), { recursive: true, force: true });
  }

  private checkpointDir(tenant: string, session: string, taskId: string): string {
    if (!ID.test(taskId))
      throw new TerminalError(ErrorCodes.WORKSPACE_ERROR, `invalid task id: ${taskId}`);
    // Session ids never contain dots, so this cannot collide with a session's directory.
    return path.join(
      path.dirname(this.sessionDir(tenant, session)),
      ".checkpoints",
      session,
      taskId,
    );
  }

  private sessionDir(tenant: string, session: string): string {
    // Ids are validated at the API; checking again keeps a bad caller from escaping root.
    if (!ID.test(tenant) || !ID.test(session)) {
      throw new TerminalError(
        ErrorCodes.WORKSPACE_ERROR,
        `invalid tenant or session id: ${tenant}/${session}`,
      );
    }
    return path.join(this.root, tenant, session);
  }
}

/** Removes everything inside `dir`, keeping `dir` itself (it may be a mount point). */
export async function emptyDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const entries = await readdir(dir);
  await Promise.all(entries.map((e) => rm(path.join(dir, e), { recursive: true, force: true })));
}

function wrap(op: string, err: unknown): ClawfleetError {
  if (err instanceof ClawfleetError) return err;
  return new TerminalError(
    ErrorCodes.WORKSPACE_ERROR,
    `workspace ${op} failed: ${(err as Error).message}`,
    {
      cause: err,
    },
  );
}
