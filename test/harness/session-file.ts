/**
 * A file of a session's files as a restore gives them, read through a real
 * snapshot store into a scratch directory: what the session's next turn would see.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type {
  RestoreSelector,
  SnapshotStore,
} from "../../src/adapters/snapshots/snapshot-store.js";
import { ErrorCodes } from "../../src/errors.js";

/**
 * The text of `file` in the version of the session `select` picks (its latest
 * known-good by default), or null when there is no such version or file.
 * Unpacks below `scratch` and removes what it unpacked.
 */
export async function readSessionFile(
  store: SnapshotStore,
  scratch: string,
  tenant: string,
  session: string,
  file: string,
  select: RestoreSelector = { knownGood: true },
): Promise<string | null> {
  const dir = await mkdtemp(path.join(scratch, "peek-"));
  try {
    try {
      await store.restore(tenant, session, dir, select);
    } catch (err) {
      if ((err as { code?: string }).code === ErrorCodes.SNAPSHOT_NOT_FOUND) return null;
      throw err;
    }
    return await readFile(path.join(dir, file), "utf8").catch(() => null);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
