/**
 * Where a session's files rest between turns, until the state plane moves them
 * into the NATS Object Store: a directory per tenant/session under the data dir.
 * Nodes sharing a data dir (one host) share sessions; a save replaces the old
 * copy atomically, so a crash mid-save leaves the previous copy intact.
 */
import { randomBytes } from "node:crypto";
import { cp, mkdir, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { ClawfleetError, TerminalError } from "../errors.js";

/** Moves a session's working copy in and out of containers. */
export interface WorkspaceStore {
  /** Replaces the contents of `dir` with the session's saved files (empty for a new session). */
  restore(tenant: string, session: string, dir: string): Promise<void>;
  /** Saves the contents of `dir` as the session's files. */
  save(tenant: string, session: string, dir: string): Promise<void>;
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** A {@link WorkspaceStore} on the local filesystem under `root`. */
export class LocalWorkspaceStore implements WorkspaceStore {
  constructor(private readonly root: string) {}

  async restore(tenant: string, session: string, dir: string): Promise<void> {
    const from = this.sessionDir(tenant, session);
    await emptyDir(dir);
    try {
      await cp(from, dir, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw wrap("restore", err);
    }
  }

  async save(tenant: string, session: string, dir: string): Promise<void> {
    const final = this.sessionDir(tenant, session);
    const parent = path.dirname(final);
    const tag = randomBytes(6).toString("hex");
    const tmp = path.join(parent, `.${session}.tmp-${tag}`);
    const old = path.join(parent, `.${session}.old-${tag}`);
    try {
      await mkdir(parent, { recursive: true });
      await cp(dir, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      let hadOld = true;
      await rename(final, old).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
        hadOld = false;
      });
      await rename(tmp, final);
      if (hadOld) await rm(old, { recursive: true, force: true });
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw wrap("save", err);
    }
  }

  private sessionDir(tenant: string, session: string): string {
    // Ids are validated at the API; checking again keeps a bad caller from escaping root.
    if (!ID.test(tenant) || !ID.test(session)) {
      throw new TerminalError(
        "WORKSPACE_ERROR",
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
  return new TerminalError("WORKSPACE_ERROR", `workspace ${op} failed: ${(err as Error).message}`, {
    cause: err,
  });
}
