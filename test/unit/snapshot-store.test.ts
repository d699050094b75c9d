import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { Objm } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChunkStore } from "../../src/adapters/snapshots/chunk-store.js";
import { encodeHead, headKey, headVersionOf } from "../../src/adapters/snapshots/snapshot-head.js";
import {
  encodeManifest,
  encodeVersionEntry,
  type Manifest,
  type VersionInfo,
} from "../../src/adapters/snapshots/snapshot-manifest.js";
import {
  SnapshotStore,
  type SnapshotStoreHooks,
  type SnapshotStoreOptions,
  SQLITE_LIVE_FILES,
  snapshotStoreNames,
} from "../../src/adapters/snapshots/snapshot-store.js";
import { ObjectWorkspaceStore } from "../../src/adapters/workspace/object-workspace-store.js";
import type { Clock } from "../../src/clock.js";
import { ClawfleetError } from "../../src/errors.js";
import { NatsServer } from "../harness/nats-server.js";

/** Real time plus an offset the test moves forward. */
class OffsetClock implements Clock {
  offset = 0;
  now(): number {
    return Date.now() + this.offset;
  }
  setTimeout(fn: (...args: unknown[]) => void, ms: number): unknown {
    return setTimeout(fn, ms);
  }
  clearTimeout(id: unknown): void {
    clearTimeout(id as NodeJS.Timeout);
  }
}

const KiB = 1024;
const CHUNK = 64 * KiB;
const BASE: SnapshotStoreOptions = {
  chunkSize: CHUNK,
  gcGraceMs: 60_000,
  maxSnapshotMs: 20_000,
  clockSkewMs: 1_000,
};

describe("SnapshotStore", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let scratch: string;
  let n = 0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    nc = await nats.connect();
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-snap-test-"));
  });

  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]();
    await rm(scratch, { recursive: true, force: true });
  });

  /** A store on its own buckets (a fresh prefix), with its own clock and hooks. */
  async function freshStore(options: SnapshotStoreOptions = {}, prefix = `p${++n}`) {
    const clock = new OffsetClock();
    const hooks: SnapshotStoreHooks = {};
    const store = await SnapshotStore.open(nc, { ...BASE, prefix, ...options }, clock, hooks);
    return { store, clock, hooks, prefix };
  }

  async function dir(name = "ws"): Promise<string> {
    const d = path.join(scratch, `${name}-${++n}`);
    await mkdir(d, { recursive: true });
    return d;
  }

  async function put(
    root: string,
    rel: string,
    content: string | Buffer,
    mode?: number,
  ): Promise<void> {
    const p = path.join(root, rel);
    await mkdir(path.dirname(p), { recursive: true });
    await writeFile(p, content, mode === undefined ? {} : { mode });
  }

  /** path → a description of type, mode, content hash or link target. */
  async function tree(root: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const walk = async (rel: string) => {
      for (const name of (await readdir(path.join(root, rel))).sort()) {
        const p = rel ? `${rel}/${name}` : name;
        const st = await lstat(path.join(root, p));
        const mode = (st.mode & 0o777).toString(8);
        if (st.isDirectory()) {
          out[p] = `dir ${mode}`;
          await walk(p);
        } else if (st.isSymbolicLink()) {
          out[p] = `link -> ${await readlink(path.join(root, p))}`;
        } else {
          const sha = createHash("sha256")
            .update(await readFile(path.join(root, p)))
            .digest("hex")
            .slice(0, 16);
          out[p] = `file ${mode} ${st.size} ${sha} ${Math.floor(st.mtimeMs)}`;
        }
      }
    };
    await walk("");
    return out;
  }

  async function codeOf(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(ClawfleetError);
      return (err as ClawfleetError).code;
    }
    throw new Error("expected a rejection");
  }

  async function objectNames(prefix: string): Promise<string[]> {
    const os = await new Objm(nc).open(snapshotStoreNames(prefix).chunks);
    return (await os.list()).map((o) => o.name).sort();
  }

  /** Stores a hand-made manifest as version 1 of tenant/session, as a forger with NATS access could. */
  async function forge(
    prefix: string,
    tenant: string,
    session: string,
    manifest: Manifest,
  ): Promise<void> {
    const names = snapshotStoreNames(prefix);
    const bytes = await encodeManifest(manifest);
    const hash = ChunkStore.hash(bytes);
    const os = await new Objm(nc).open(names.chunks);
    await os.putBlob({ name: ChunkStore.objectName(tenant, hash) }, bytes);
    const kv = await new Kvm(nc).open(names.snapshots);
    const info: VersionInfo = {
      tenant,
      session,
      version: 1,
      createdAt: new Date().toISOString(),
      manifest: hash,
      manifestBytes: bytes.length,
      entries: manifest.entries.length,
      files: 0,
      bytes: 0,
      uploadedBytes: 0,
      uploadedChunks: 0,
      reusedChunks: 0,
      refreshedChunks: 0,
      knownGood: false,
    };
    await kv.create(`v.${tenant}.${session}.0000000001`, encodeVersionEntry(info));
    await kv.put(
      headKey(tenant, session),
      encodeHead({ last: 1, versions: [headVersionOf(info)] }),
    );
  }

  /** Records the JetStream API requests made while `fn` runs (by anyone on this server). */
  async function apiRequests(fn: () => Promise<unknown>): Promise<string[]> {
    const seen: string[] = [];
    const sub = nc.subscribe("$JS.API.>", {
      callback: (_err, m) => {
        seen.push(m.subject);
      },
    });
    await nc.flush();
    try {
      await fn();
      await nc.flush();
    } finally {
      sub.unsubscribe();
    }
    return seen;
  }

  /** Messages the snapshot bucket holds (live keys plus any delete markers). */
  async function bucketMessages(prefix: string): Promise<number> {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(`KV_${snapshotStoreNames(prefix).snapshots}`)).state.messages;
  }

  it("round-trips files, modes, nested and empty dirs, empty files and inner symlinks", async () => {
    const { store } = await freshStore();
    const src = await dir();
    await put(src, "README.md", "# hello\n");
    await put(src, "bin/run.sh", "#!/bin/sh\necho hi\n", 0o755);
    await put(src, "secret.txt", "s3cret", 0o600);
    await put(src, "ro.txt", "read only", 0o444);
    await put(src, "a/b/c/deep.bin", randomBytes(3 * CHUNK + 123));
    await put(src, "a/b/text.log", "line\n".repeat(40_000)); // compressible, several chunks
    await put(src, "empty.txt", "");
    await mkdir(path.join(src, "empty-dir/inner"), { recursive: true });
    await symlink("a/b/c/deep.bin", path.join(src, "link-to-file"));
    await symlink("a", path.join(src, "link-to-dir"));
    await symlink("../text.log", path.join(src, "a/b/c/up-link"));
    await symlink("not-there-yet", path.join(src, "dangling"));
    const before = await tree(src);

    const v = await store.snapshot("acme", "s1", src, { reason: "test" });
    expect(v).toMatchObject({
      tenant: "acme",
      session: "s1",
      version: 1,
      knownGood: false,
      reason: "test",
    });
    expect(v.files).toBe(7);
    expect(v.bytes).toBe(8 + 18 + 6 + 9 + (3 * CHUNK + 123) + 5 * 40_000);
    expect(v.uploadedChunks).toBeGreaterThanOrEqual(4 + 4 + 4);
    // The log is deflated: far fewer bytes travel than it holds.
    expect(v.uploadedBytes).toBeLessThan(v.bytes - 150_000);

    const dst = await dir("restore");
    await put(dst, "stale/junk.txt", "must disappear");
    const restored = await store.restore("acme", "s1", dst);
    expect(restored.version).toBe(1);
    expect(await tree(dst)).toEqual(before);
  });

  it("uploads only the changed chunk after a 1 KB change, and restores either version", async () => {
    const { store } = await freshStore();
    const src = await dir();
    const big = randomBytes(16 * CHUNK); // 1 MiB in 16 chunks
    await put(src, "big.bin", big);
    await put(src, "notes.md", "notes\n");
    const v1 = await store.snapshot("acme", "s1", src);
    expect(v1.uploadedChunks).toBe(17);
    const v1tree = await tree(src);

    const fh = await open(path.join(src, "big.bin"), "r+");
    await fh.write(randomBytes(KiB), 0, KiB, 5 * CHUNK + 100);
    await fh.close();
    const v2 = await store.snapshot("acme", "s1", src);
    expect(v2.version).toBe(2);
    expect(v2.uploadedChunks).toBe(1);
    expect(v2.uploadedBytes).toBeLessThanOrEqual(CHUNK + v2.manifestBytes);
    expect(v2.reusedChunks).toBe(16);
    const v2tree = await tree(src);

    // A fresh process (cold cache) finds the same chunks in the store.
    const { store: cold } = await freshStore({}, store.options.prefix);
    await put(src, "notes.md", "notes, edited\n");
    const v3 = await cold.snapshot("acme", "s1", src);
    expect(v3.uploadedChunks).toBe(1);
    expect(v3.reusedChunks).toBe(16);

    const dst = await dir("restore");
    await store.restore("acme", "s1", dst, { version: 1 });
    expect(await tree(dst)).toEqual(v1tree);
    await store.restore("acme", "s1", dst, { version: 2 });
    expect(await tree(dst)).toEqual(v2tree);
    expect(await codeOf(store.restore("acme", "s1", dst, { version: 9 }))).toBe(
      "SNAPSHOT_NOT_FOUND",
    );
  });

  it("lists versions, restores the latest at or before a time, and tracks known-good", async () => {
    const { store, clock } = await freshStore();
    const src = await dir();
    expect(await store.latest("acme", "s1")).toBeNull();
    expect(await codeOf(store.restore("acme", "s1", src))).toBe("SNAPSHOT_NOT_FOUND");

    await put(src, "state.txt", "one");
    const v1 = await store.snapshot("acme", "s1", src);
    clock.offset += 10_000;
    await put(src, "state.txt", "two");
    const v2 = await store.snapshot("acme", "s1", src, { knownGood: true });
    clock.offset += 10_000;
    await put(src, "state.txt", "three");
    const v3 = await store.snapshot("acme", "s1", src);

    expect((await store.versions("acme", "s1")).map((v) => [v.version, v.knownGood])).toEqual([
      [1, false],
      [2, true],
      [3, false],
    ]);
    expect((await store.latest("acme", "s1"))?.version).toBe(3);

    const dst = await dir("restore");
    const between = new Date(Date.parse(v1.createdAt) + 5_000);
    expect((await store.restore("acme", "s1", dst, { at: between })).version).toBe(1);
    expect(await readFile(path.join(dst, "state.txt"), "utf8")).toBe("one");
    expect((await store.restore("acme", "s1", dst, { at: new Date(v3.createdAt) })).version).toBe(
      3,
    );
    expect(
      await codeOf(
        store.restore("acme", "s1", dst, { at: new Date(Date.parse(v1.createdAt) - 1) }),
      ),
    ).toBe("SNAPSHOT_NOT_FOUND");

    expect((await store.restore("acme", "s1", dst, { knownGood: true })).version).toBe(v2.version);
    expect(await readFile(path.join(dst, "state.txt"), "utf8")).toBe("two");
    await store.markKnownGood("acme", "s1", 3);
    expect((await store.restore("acme", "s1", dst, { knownGood: true })).version).toBe(3);
    expect(await codeOf(store.markKnownGood("acme", "s1", 7))).toBe("SNAPSHOT_NOT_FOUND");
  });

  it("numbers versions by compare-and-set: concurrent writers never share a number", async () => {
    const { store } = await freshStore();
    const dirs = await Promise.all([dir(), dir(), dir(), dir()]);
    await Promise.all(dirs.map((d, i) => put(d, "f.txt", `writer ${i}`)));
    const versions = await Promise.all(dirs.map((d) => store.snapshot("acme", "race", d)));
    expect(versions.map((v) => v.version).sort()).toEqual([1, 2, 3, 4]);
  });

  it("reads a session's versions through its head: no key listing, however many entries the bucket holds", async () => {
    const { store, prefix } = await freshStore();
    const src = await dir();
    const dst = await dir("restore");
    // Other sessions' history in the same bucket.
    for (let i = 0; i < 5; i++) {
      await put(src, "f.txt", `other ${i}`);
      await store.snapshot("acme", `other-${i}`, src, { knownGood: true });
    }
    await put(src, "f.txt", "one");
    const v1 = await store.snapshot("acme", "s1", src, { knownGood: true });
    const requests = await apiRequests(async () => {
      await put(src, "f.txt", "two");
      await store.snapshot("acme", "s1", src);
      expect((await store.latest("acme", "s1"))?.version).toBe(2);
      expect((await store.latest("acme", "s1", { knownGood: true }))?.version).toBe(1);
      await store.restore("acme", "s1", dst, { knownGood: true });
      await store.restore("acme", "s1", dst, { at: new Date(v1.createdAt) });
      await store.restore("acme", "s1", dst, { version: 2 });
      await store.saveCheckpoint("acme", "s1", "t1", 1, src);
      await store.saveCheckpoint("acme", "s1", "t1", 2, src);
      expect(await store.restoreCheckpoint("acme", "s1", "t1", 2, dst)).not.toBeNull();
      await store.dropCheckpoints("acme", "s1", "t1");
      await store.markKnownGood("acme", "s1", 2);
      expect(await store.prune("acme", "s1", { keepLast: 1, keepKnownGood: 0 })).toEqual([1]);
    });
    // A listing is a consumer (keys, watch) or a stream info with a subject filter.
    expect(requests.filter((s) => /CONSUMER|STREAM\.INFO/.test(s))).toEqual([]);
    // Dropped checkpoints and pruned versions leave no delete markers: one head and one
    // version per session, and nothing else but the bucket's format marker.
    expect(await bucketMessages(prefix)).toBe(2 * 6 + 1);
  });

  it("gives the sessions of a bucket written before heads their heads when it opens", async () => {
    const { store, prefix } = await freshStore();
    const src = await dir();
    await put(src, "f.txt", "old");
    const v1 = await store.snapshot("acme", "legacy", src, { knownGood: true });
    await put(src, "f.txt", "older still");
    await store.snapshot("acme", "legacy", src);
    // The layout before heads: version entries only.
    const kv = await new Kvm(nc).open(`${prefix}_snapshots`);
    await kv.purge("h.acme.legacy");
    await kv.purge("format");
    expect(await (await freshStore({}, prefix)).store.latest("acme", "legacy")).toMatchObject({
      version: 2,
    });
    const { store: reopened, clock } = await freshStore({}, prefix);
    expect((await reopened.latest("acme", "legacy", { knownGood: true }))?.version).toBe(
      v1.version,
    );
    expect((await reopened.versions("acme", "legacy")).map((v) => v.version)).toEqual([1, 2]);
    // Listed again, so GC never takes them for a dead writer's leftovers.
    clock.offset += 10 * 60_000; // past the grace period
    expect((await reopened.gc()).orphanVersions).toBe(0);
  });

  it("GC removes a version entry its head never listed (a writer died before the head update)", async () => {
    const { store, clock, prefix } = await freshStore();
    const src = await dir();
    await put(src, "f.txt", "one");
    const v1 = await store.snapshot("acme", "s1", src);
    // As a writer that died between creating entry 2 and listing it in the head leaves it.
    const kv = await new Kvm(nc).open(snapshotStoreNames(prefix).snapshots);
    await kv.create(
      "v.acme.s1.0000000002",
      encodeVersionEntry({ ...v1, version: 2, createdAt: new Date(clock.now()).toISOString() }),
    );
    expect((await store.latest("acme", "s1"))?.version).toBe(1);
    // The next writer passes over the number taken.
    await put(src, "f.txt", "three");
    expect((await store.snapshot("acme", "s1", src)).version).toBe(3);
    expect((await store.gc()).orphanVersions).toBe(0); // within the grace period
    clock.offset += 10 * 60_000;
    expect((await store.gc()).orphanVersions).toBe(1);
    expect(await codeOf(store.restore("acme", "s1", await dir(), { version: 2 }))).toBe(
      "SNAPSHOT_NOT_FOUND",
    );
    expect((await store.versions("acme", "s1")).map((v) => v.version)).toEqual([1, 3]);
  });

  it("prunes to the last N plus known-good, and GC removes only unreferenced chunks after the grace period", async () => {
    const { store, clock, prefix } = await freshStore();
    const shared = randomBytes(CHUNK);
    const onlyV1 = randomBytes(CHUNK);
    const src = await dir();
    await put(src, "shared.bin", shared);
    await put(src, "gone.bin", onlyV1);
    const v1 = await store.snapshot("acme", "s1", src);
    await rm(path.join(src, "gone.bin"));
    await put(src, "good.txt", "good state");
    await store.snapshot("acme", "s1", src, { knownGood: true });
    await put(src, "good.txt", "later state");
    await store.snapshot("acme", "s1", src);
    const other = await dir();
    await put(other, "copy.bin", shared);
    await store.snapshot("acme", "s2", other);

    expect(await store.prune("acme", "s1", { keepLast: 1 })).toEqual([1]);
    expect((await store.versions("acme", "s1")).map((v) => v.version)).toEqual([2, 3]);

    const goneName = ChunkStore.objectName("acme", ChunkStore.hash(onlyV1));
    const sharedName = ChunkStore.objectName("acme", ChunkStore.hash(shared));
    const v1Manifest = ChunkStore.objectName("acme", v1.manifest);
    expect(await objectNames(prefix)).toEqual(
      expect.arrayContaining([goneName, sharedName, v1Manifest]),
    );

    // Within the grace period nothing goes.
    const early = await store.gc();
    expect(early.deleted).toBe(0);
    expect(early.young).toBe(2);

    clock.offset += 10 * 60_000;
    const report = await store.gc();
    expect(report).toMatchObject({ deleted: 2, raced: 0, skippedTenants: [] });
    const names = await objectNames(prefix);
    expect(names).not.toContain(goneName);
    expect(names).not.toContain(v1Manifest);
    expect(names).toContain(sharedName);

    const dst = await dir("restore");
    await store.restore("acme", "s2", dst);
    expect(await readFile(path.join(dst, "copy.bin"))).toEqual(shared);
    await store.restore("acme", "s1", dst, { version: 2 });
    expect(await readFile(path.join(dst, "good.txt"), "utf8")).toBe("good state");
    expect(await codeOf(store.restore("acme", "s1", dst, { version: 1 }))).toBe(
      "SNAPSHOT_NOT_FOUND",
    );
    expect((await store.gc()).deleted).toBe(0);
  });

  it("GC loses a race against a snapshot renewing the chunk it is about to delete", async () => {
    const { store, clock, hooks } = await freshStore();
    const content = randomBytes(CHUNK);
    const a = await dir();
    await put(a, "x.bin", content);
    await store.snapshot("acme", "s1", a);
    await rm(path.join(a, "x.bin"));
    await put(a, "y.txt", "y");
    await store.snapshot("acme", "s1", a);
    await store.prune("acme", "s1", { keepLast: 1, keepKnownGood: 0 });
    clock.offset += 10 * 60_000;

    const target = ChunkStore.objectName("acme", ChunkStore.hash(content));
    const b = await dir();
    await put(b, "again.bin", content);
    let renewed: VersionInfo | undefined;
    hooks.beforeChunkDelete = async (name) => {
      if (name !== target || renewed) return;
      // GC has read the chunk's old lease; a snapshot reusing it now renews the lease first.
      renewed = await store.snapshot("acme", "s2", b);
    };
    const report = await store.gc();
    expect(renewed?.refreshedChunks).toBe(1);
    expect(renewed?.uploadedChunks).toBe(0);
    expect(report.raced).toBe(1);

    const dst = await dir("restore");
    await store.restore("acme", "s2", dst);
    expect(await readFile(path.join(dst, "again.bin"))).toEqual(content);
  });

  it("refuses symlinks that leave the workspace, and leaves the previous version intact", async () => {
    const { store } = await freshStore();
    const src = await dir();
    await put(src, "ok.txt", "fine");
    await store.snapshot("acme", "s1", src);
    const good = await tree(src);

    await symlink("../../etc", path.join(src, "evil"));
    expect(await codeOf(store.snapshot("acme", "s1", src))).toBe("SYMLINK_ESCAPE");
    await rm(path.join(src, "evil"));
    await symlink("/etc/passwd", path.join(src, "absolute"));
    expect(await codeOf(store.snapshot("acme", "s1", src))).toBe("SYMLINK_ESCAPE");
    await rm(path.join(src, "absolute"));
    // Read as text `b/../outside` stays inside; resolved through `b -> .` it does not.
    await symlink(".", path.join(src, "b"));
    await symlink("b/../outside", path.join(src, "sneaky"));
    expect(await codeOf(store.snapshot("acme", "s1", src))).toBe("SYMLINK_ESCAPE");

    expect((await store.versions("acme", "s1")).map((v) => v.version)).toEqual([1]);
    const dst = await dir("restore");
    await store.restore("acme", "s1", dst);
    expect(await tree(dst)).toEqual(good);
  });

  it("checks manifests on restore and leaves the target untouched when they break the rules", async () => {
    const { store, prefix } = await freshStore();
    const dst = await dir("restore");
    await put(dst, "keep.txt", "still here");
    const cases: Array<[string, Manifest["entries"], string]> = [
      [
        "dotdot",
        [{ type: "file", path: "../escape.txt", mode: 0o644, mtime: 0, size: 0, chunks: [] }],
        "PATH_ESCAPE",
      ],
      [
        "absolute",
        [{ type: "file", path: "/tmp/x", mode: 0o644, mtime: 0, size: 0, chunks: [] }],
        "PATH_ESCAPE",
      ],
      [
        "unnormal",
        [{ type: "file", path: "a//b", mode: 0o644, mtime: 0, size: 0, chunks: [] }],
        "PATH_ESCAPE",
      ],
      [
        "through-link",
        [
          { type: "symlink", path: "a", target: "." },
          { type: "file", path: "a/x", mode: 0o644, mtime: 0, size: 0, chunks: [] },
        ],
        "PATH_ESCAPE",
      ],
      ["link-out", [{ type: "symlink", path: "l", target: "../../etc/passwd" }], "SYMLINK_ESCAPE"],
      [
        "link-resolved-out",
        [
          { type: "symlink", path: "b", target: "." },
          { type: "symlink", path: "x", target: "b/../outside" },
        ],
        "SYMLINK_ESCAPE",
      ],
    ];
    for (const [session, entries, code] of cases) {
      await forge(prefix, "acme", session, { format: 1, chunkSize: CHUNK, entries });
      expect([session, await codeOf(store.restore("acme", session, dst))]).toEqual([session, code]);
      expect(await readdir(dst)).toEqual(["keep.txt"]);
    }
    expect(await readdir(path.dirname(dst))).not.toContainEqual(
      expect.stringContaining(".restore-"),
    );
  });

  it("enforces file, workspace and entry limits on snapshot and on restore, and refuses special files", async () => {
    const src = await dir();
    await put(src, "a.bin", randomBytes(1000));
    await put(src, "b.bin", randomBytes(1000));
    const { store: perFile } = await freshStore({ limits: { maxFileBytes: 999 } });
    expect(await codeOf(perFile.snapshot("acme", "s1", src))).toBe("FILE_TOO_LARGE");
    const { store: perWs } = await freshStore({ limits: { maxWorkspaceBytes: 1500 } });
    expect(await codeOf(perWs.snapshot("acme", "s1", src))).toBe("WORKSPACE_TOO_LARGE");
    const { store: count } = await freshStore({ limits: { maxFiles: 1 } });
    expect(await codeOf(count.snapshot("acme", "s1", src))).toBe("TOO_MANY_FILES");
    expect(await perFile.latest("acme", "s1")).toBeNull();

    // Stored under generous limits, refused on restore under tight ones; the target survives.
    const { store: roomy, prefix } = await freshStore();
    await roomy.snapshot("acme", "s1", src);
    const { store: tight } = await freshStore({ limits: { maxFileBytes: 999 } }, prefix);
    const dst = await dir("restore");
    await put(dst, "keep.txt", "x");
    expect(await codeOf(tight.restore("acme", "s1", dst))).toBe("FILE_TOO_LARGE");
    expect(await readdir(dst)).toEqual(["keep.txt"]);

    execFileSync("mkfifo", [path.join(src, "pipe")]);
    expect(await codeOf(roomy.snapshot("acme", "s1", src))).toBe("SPECIAL_FILE");
    expect((await roomy.snapshot("acme", "s1", src, { exclude: ["pipe"] })).version).toBe(2);

    // A name that is not UTF-8 cannot be stored faithfully: refused, not silently dropped.
    const odd = await dir();
    await writeFile(Buffer.concat([Buffer.from(`${odd}/`), Buffer.from([0x66, 0xff, 0x66])]), "x");
    expect(await codeOf(roomy.snapshot("acme", "s1", odd))).toBe("WORKSPACE_ERROR");
  });

  it("never stores excluded files (SQLite live files, directories, globs)", async () => {
    const { store } = await freshStore();
    const src = await dir();
    await put(src, "data/app.db", "db pages");
    await put(src, "data/app.db-wal", "live wal");
    await put(src, "data/app.db-shm", "shm");
    await put(src, "data/app.db-journal", "journal");
    await put(src, "cache/big.tmp", "cache");
    await put(src, "notes/draft.tmp", "tmp");
    await put(src, "notes/keep.md", "keep");
    const v = await store.snapshot("acme", "s1", src, {
      exclude: [...SQLITE_LIVE_FILES, "cache/", "**/*.tmp"],
    });
    expect(v.files).toBe(2);
    const dst = await dir("restore");
    await store.restore("acme", "s1", dst);
    expect(Object.keys(await tree(dst)).sort()).toEqual([
      "data",
      "data/app.db",
      "notes",
      "notes/keep.md",
    ]);
  });

  it("leaves latest at the previous version when a snapshot dies mid-upload or before commit", async () => {
    const { store, hooks } = await freshStore();
    const src = await dir();
    await put(src, "v1.txt", "first");
    await store.snapshot("acme", "s1", src);
    const v1 = await tree(src);

    for (let i = 0; i < 6; i++) await put(src, `new-${i}.bin`, randomBytes(CHUNK));
    hooks.beforeChunkUpload = (n) => {
      if (n === 3) throw new Error("container killed");
    };
    await expect(store.snapshot("acme", "s1", src)).rejects.toThrow(/container killed/);
    expect((await store.latest("acme", "s1"))?.version).toBe(1);

    hooks.beforeChunkUpload = undefined;
    hooks.beforeCommit = () => {
      throw new Error("killed before commit");
    };
    await expect(store.snapshot("acme", "s1", src)).rejects.toThrow(/killed before commit/);
    expect((await store.versions("acme", "s1")).map((v) => v.version)).toEqual([1]);
    const dst = await dir("restore");
    await store.restore("acme", "s1", dst);
    expect(await tree(dst)).toEqual(v1);

    // The retry finds the chunks that made it and uploads nothing twice.
    hooks.beforeCommit = undefined;
    const v2 = await store.snapshot("acme", "s1", src);
    expect(v2.version).toBe(2);
    expect(v2.uploadedChunks).toBe(0);
    expect(v2.reusedChunks).toBe(7);
  });

  it("keeps tenants apart: separate chunk keys, no cross-tenant restore, no reading by hash", async () => {
    const { store, prefix } = await freshStore();
    const content = randomBytes(2 * KiB);
    const a = await dir();
    await put(a, "same.bin", content);
    await store.snapshot("tenant-a", "s1", a);
    await store.snapshot("tenant-b", "s1", a);
    const hash = ChunkStore.hash(content);
    const names = await objectNames(prefix);
    expect(names).toContain(ChunkStore.objectName("tenant-a", hash));
    expect(names).toContain(ChunkStore.objectName("tenant-b", hash));

    const b = await dir();
    await put(b, "private.txt", "tenant a only");
    await store.snapshot("tenant-a", "secret", b);
    const dst = await dir("restore");
    expect(await codeOf(store.restore("tenant-b", "secret", dst))).toBe("SNAPSHOT_NOT_FOUND");

    // A manifest under tenant-b naming tenant-a's chunk by hash cannot read it.
    const privateHash = ChunkStore.hash(Buffer.from("tenant a only"));
    await forge(prefix, "tenant-b", "stolen", {
      format: 1,
      chunkSize: CHUNK,
      entries: [
        { type: "file", path: "loot.txt", mode: 0o644, mtime: 0, size: 13, chunks: [privateHash] },
      ],
    });
    expect(await codeOf(store.restore("tenant-b", "stolen", dst))).toBe("SNAPSHOT_CORRUPT");
    expect(await readdir(dst)).toEqual([]);
  });

  it("rejects bad options and ids with coded errors", async () => {
    await expect(
      SnapshotStore.open(nc, { gcGraceMs: 1000, maxSnapshotMs: 5000 }),
    ).rejects.toMatchObject({
      code: "CONFIG_INVALID",
    });
    const { store } = await freshStore();
    expect(await codeOf(store.snapshot("bad.tenant", "s", scratch))).toBe("INVALID_REQUEST");
    expect(await codeOf(store.snapshot("acme", "s", scratch, { exclude: [""] }))).toBe(
      "INVALID_REQUEST",
    );
  });
});

describe("ObjectWorkspaceStore", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let scratch: string;

  beforeAll(async () => {
    nats = await NatsServer.start();
    nc = await nats.connect();
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-ows-test-"));
  });

  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]();
    await rm(scratch, { recursive: true, force: true });
  });

  it("restores latest, saves known-good versions, and keeps checkpoints apart from them", async () => {
    const snapshots = await SnapshotStore.open(nc, { ...BASE, prefix: "ows" });
    const quiesced: string[] = [];
    const store = new ObjectWorkspaceStore(snapshots, {
      exclude: SQLITE_LIVE_FILES,
      quiesce: async (d) => {
        quiesced.push(d);
      },
      keepLast: 2,
      pruneEvery: 1,
    });
    const ws = path.join(scratch, "container-1");
    await mkdir(ws, { recursive: true });
    await writeFile(path.join(ws, "leftover.txt"), "from another session");

    await store.restore("acme", "s1", ws);
    expect(await readdir(ws)).toEqual([]);

    await writeFile(path.join(ws, "memory.md"), "turn 1\n");
    await writeFile(path.join(ws, "db.sqlite-wal"), "live");
    await store.save("acme", "s1", ws);
    const v1 = await snapshots.latest("acme", "s1");
    expect(v1).toMatchObject({ version: 1, knownGood: true, reason: "turn", files: 1 });

    // A task's checkpoints: never the session's latest.
    await writeFile(path.join(ws, "memory.md"), "turn 1\nstep 1\n");
    await store.saveCheckpoint("acme", "s1", "task-1", 1, ws);
    await writeFile(path.join(ws, "memory.md"), "turn 1\nstep 1\nstep 2\n");
    await store.saveCheckpoint("acme", "s1", "task-1", 2, ws);
    expect((await snapshots.latest("acme", "s1"))?.version).toBe(1);

    const other = path.join(scratch, "container-2");
    expect(await store.restoreCheckpoint("acme", "s1", "task-1", 1, other)).toBe(false);
    expect(await store.restoreCheckpoint("acme", "s1", "task-1", 2, other)).toBe(true);
    expect(await readFile(path.join(other, "memory.md"), "utf8")).toBe("turn 1\nstep 1\nstep 2\n");
    await store.restore("acme", "s1", other);
    expect(await readFile(path.join(other, "memory.md"), "utf8")).toBe("turn 1\n");

    await store.dropCheckpoints("acme", "s1", "task-1");
    expect(await store.restoreCheckpoint("acme", "s1", "task-1", 2, other)).toBe(false);

    await writeFile(path.join(other, "memory.md"), "turn 2\n");
    await store.save("acme", "s1", other);
    await writeFile(path.join(other, "memory.md"), "turn 3\n");
    await store.save("acme", "s1", other);
    const versions = await snapshots.versions("acme", "s1");
    expect(versions.map((v) => [v.version, v.parent])).toEqual([
      [2, 1],
      [3, 2],
    ]);
    expect(quiesced).toEqual([ws, ws, ws, other, other]);
  });
});
