/**
 * Reading snapshots: choosing the version a restore selector names, and
 * materialising a version (or checkpoint) into a directory.
 *
 * ## A restore
 *
 * Read the version's manifest, check it against the workspace rules and limits,
 * download and verify every chunk into a staging directory beside the target,
 * check every symlink against the staged tree, and only then empty the target
 * and move the staged entries in (renames). The target directory itself is kept
 * (it may be bind-mounted into a sandbox). A restore that fails before the move
 * leaves the target as it was; one that fails during the move empties it; it
 * never resolves with a partial tree.
 */
import { constants } from "node:fs";
import {
  chmod,
  cp,
  type FileHandle,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  symlink,
  utimes,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ValidationError } from "../../errors.js";
import { emptyDir } from "../workspace/local-workspace-store.js";
import { forEachLimit, Limiter } from "./async-limit.js";
import type { ChunkStore } from "./chunk-store.js";
import { type SnapshotCatalog, versionKey } from "./snapshot-catalog.js";
import { guard, notFound } from "./snapshot-errors.js";
import { checkManifest, corrupt, type VersionInfo } from "./snapshot-manifest.js";
import type { ResolvedSnapshotStoreOptions } from "./snapshot-store-options.js";
import { checkSymlink } from "./workspace-rules.js";

/** Which version to restore: one of `version`, or the newest matching `at` and/or `knownGood`; default the latest. */
export interface RestoreSelector {
  readonly version?: number;
  /** The newest version created at or before this time. */
  readonly at?: Date;
  /** The newest known-good version. */
  readonly knownGood?: boolean;
}

/** Restores versions into directories. */
export class SnapshotReader {
  constructor(
    private readonly catalog: SnapshotCatalog,
    private readonly chunks: ChunkStore,
    private readonly options: ResolvedSnapshotStoreOptions,
  ) {}

  /** Replaces the contents of `dir` with the version `select` names. */
  async restore(
    tenant: string,
    session: string,
    dir: string,
    select: RestoreSelector,
  ): Promise<VersionInfo> {
    const info = await this.resolve(tenant, session, select);
    await this.materialize(info, dir);
    return info;
  }

  private async resolve(
    tenant: string,
    session: string,
    select: RestoreSelector,
  ): Promise<VersionInfo> {
    if (select.version !== undefined) {
      if (select.at !== undefined || select.knownGood !== undefined) {
        throw new ValidationError("restore takes a version, or at/knownGood, not both");
      }
      const e = await this.catalog.getEntry(versionKey(tenant, session, select.version));
      if (!e) throw notFound(`${tenant}/${session} has no version ${select.version}`);
      return e.info;
    }
    if (select.at === undefined) {
      // Guarded as `latest`: failures read as they did when this called SnapshotStore.latest.
      const latest = await guard("latest", () =>
        this.catalog.latest(tenant, session, !!select.knownGood),
      );
      if (!latest)
        throw notFound(
          `${tenant}/${session} has no ${select.knownGood ? "known-good " : ""}snapshot`,
        );
      return latest;
    }
    const at = select.at?.getTime();
    if (at !== undefined && Number.isNaN(at)) throw new ValidationError("invalid restore time");
    const match = await this.catalog.newest(
      tenant,
      session,
      (v) => (at === undefined || v.at <= at) && (!select.knownGood || v.knownGood),
    );
    if (!match) {
      const what = [
        at === undefined ? "" : `at or before ${select.at!.toISOString()}`,
        select.knownGood ? "known-good" : "",
      ]
        .filter(Boolean)
        .join(", ");
      throw notFound(`${tenant}/${session} has no version ${what}`);
    }
    return match;
  }

  /** Writes a version into `dir`; see "A restore" above. */
  async materialize(info: VersionInfo, dir: string): Promise<void> {
    const { tenant } = info;
    const manifest = await this.catalog.readManifest(tenant, info.manifest, true);
    checkManifest(manifest, this.options.limits);
    const { chunkSize } = manifest;
    const target = path.resolve(dir);
    const staging = await makeStaging(target);
    const dirs = manifest.entries
      .filter((e) => e.type === "dir")
      .sort((a, b) => depth(b.path) - depth(a.path));
    try {
      for (const e of manifest.entries) {
        if (e.type === "dir")
          await mkdir(path.join(staging, e.path), { recursive: true, mode: 0o700 });
      }
      const fetches = new Limiter(this.options.concurrency);
      const files = manifest.entries.filter((e) => e.type === "file");
      await forEachLimit(files, this.options.concurrency, async (f) => {
        const fh = await open(
          path.join(staging, f.path),
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          const results = await Promise.allSettled(
            f.chunks.map((hash, i) =>
              fetches.run(async () => {
                const data = await this.chunks.read(tenant, hash);
                const expected = Math.min(chunkSize, f.size - i * chunkSize);
                if (data.length !== expected)
                  throw corrupt(`${f.path}: chunk ${i} has ${data.length} bytes, not ${expected}`);
                await writeFully(fh, data, i * chunkSize);
              }),
            ),
          );
          const failed = results.find((r) => r.status === "rejected");
          if (failed) throw failed.reason;
          await fh.chmod(f.mode);
          await fh.utimes(seconds(f.mtime), seconds(f.mtime));
        } finally {
          await fh.close();
        }
      });
      const links = manifest.entries.filter((e) => e.type === "symlink");
      for (const l of links) await symlink(l.target, path.join(staging, l.path));
      for (const l of links) await checkSymlink(staging, l.path, l.target);
      // Nested directories get their modes and times here, deepest first, after their contents.
      for (const d of dirs) {
        if (depth(d.path) === 0) continue;
        const p = path.join(staging, d.path);
        await utimes(p, seconds(d.mtime), seconds(d.mtime));
        await chmod(p, d.mode);
      }

      // Everything is here and checked: swap it in, keeping `target` itself.
      await mkdir(target, { recursive: true });
      try {
        await emptyDir(target);
        for (const name of await readdir(staging))
          await moveEntry(path.join(staging, name), path.join(target, name));
        for (const d of dirs) {
          if (depth(d.path) !== 0) continue;
          // By handle, never following a symlink someone may have put in its place.
          const fh = await open(
            path.join(target, d.path),
            constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
          );
          try {
            await fh.utimes(seconds(d.mtime), seconds(d.mtime));
            await fh.chmod(d.mode);
          } finally {
            await fh.close();
          }
        }
      } catch (err) {
        // Never leave a half-moved tree behind.
        await emptyDir(target).catch(() => {});
        throw err;
      }
    } finally {
      await rm(staging, { recursive: true, force: true }).catch(() => {});
    }
  }
}

/** Seconds for utimes: the middle of the recorded millisecond, so float rounding cannot drop it. */
function seconds(ms: number): number {
  return (ms + 0.5) / 1000;
}

function depth(p: string): number {
  let n = 0;
  for (const c of p) if (c === "/") n++;
  return n;
}

async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** A private directory beside `target` (same filesystem, so moves are renames), else in tmp. */
async function makeStaging(target: string): Promise<string> {
  const parent = path.dirname(target);
  try {
    await mkdir(parent, { recursive: true });
    return await mkdtemp(path.join(parent, `.${path.basename(target)}.restore-`));
  } catch {
    return mkdtemp(path.join(tmpdir(), "clawfleet-restore-"));
  }
}

async function moveEntry(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await cp(from, to, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  }
}
