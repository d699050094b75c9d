import { createHash } from "node:crypto";
import { lstat, mkdir, open, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { findNatsServer } from "../src/adapters/nats/nats-server-binary.js";
import { startNatsServer } from "../src/adapters/nats/nats-server-process.js";
import {
  SnapshotStore,
  SQLITE_LIVE_FILES,
  snapshotStoreNames,
  type VersionInfo,
} from "../src/adapters/snapshots/snapshot-store.js";
import { type Cleanup, tempDir, withCleanup } from "./lib/cleanup.js";
import { round } from "./lib/measure.js";
import { type IntParam, paramsUsage, parseIntParams } from "./lib/options.js";
import { commandVersion, gitState, machineInfo, progress } from "./lib/report.js";

const PARAMS = {
  mb: { default: 200, min: 10, help: "workspace size in MB (10^6 bytes)" },
  chunkKib: { default: 1024, min: 1, help: "chunk size in KiB" },
  concurrency: { default: 8, min: 1, help: "chunk uploads/downloads in flight" },
  seed: { default: 1, min: 0, help: "seed of the generated workspace" },
} satisfies Record<string, IntParam>;

type Params = Record<keyof typeof PARAMS, number>;

export const usage = `npm run bench -- snapshot [options]

Snapshot store: first snapshot, unchanged snapshot, 1 KiB change (warm and cold cache),
restore into an empty dir, on a generated workspace. JSON report on stdout, summary on stderr.

${paramsUsage(PARAMS)}`;

const EXCLUDE = [...SQLITE_LIVE_FILES];
const TENANT = "bench";
const SESSION = "s1";
const MB = 1_000_000;
const KiB = 1024;

const _benchDir = path.dirname(fileURLToPath(import.meta.url));

/** Runs the bench; resolves with the JSON report (and prints the summary on stderr). */
export async function run(argv: readonly string[]): Promise<object> {
  const params = parseIntParams(argv, PARAMS);
  const startedAt = new Date();
  const loadAtStart = loadavg().map((l) => round(l, 2));
  const t0 = performance.now();
  const binary = findNatsServer();
  if (binary === null)
    throw new Error("nats-server is not installed (apt-get install -y nats-server)");
  return withCleanup(async (cleanup) => {
    const root = await tempDir(cleanup, "clawfleet-bench-snapshot-");
    const ws = path.join(root, "workspace");
    progress(`generating a ${params.mb} MB workspace (seed ${params.seed})`);
    const genStart = performance.now();
    const layout = await generateWorkspace(ws, params);
    const generateS = round((performance.now() - genStart) / 1000, 1);

    const nc = await startServer(root, binary, cleanup);
    const options = {
      prefix: "bench",
      chunkSize: params.chunkKib * KiB,
      concurrency: params.concurrency,
    };
    const store = await SnapshotStore.open(nc, options);

    progress("first snapshot");
    const first = await measureSnapshot(nc, () =>
      store.snapshot(TENANT, SESSION, ws, { exclude: EXCLUDE }),
    );
    progress("snapshot with nothing changed");
    const unchanged = await measureSnapshot(nc, () =>
      store.snapshot(TENANT, SESSION, ws, { exclude: EXCLUDE }),
    );
    progress("1 KiB change, snapshot");
    await poke(path.join(ws, layout.bigBinary), params.seed + 1);
    const change = await measureSnapshot(nc, () =>
      store.snapshot(TENANT, SESSION, ws, { exclude: EXCLUDE }),
    );
    progress("1 KiB change, snapshot from a fresh process cache");
    await poke(path.join(ws, layout.textFile), params.seed + 2);
    const cold = await SnapshotStore.open(nc, options);
    const changeCold = await measureSnapshot(nc, () =>
      cold.snapshot(TENANT, SESSION, ws, { exclude: EXCLUDE }),
    );

    progress("restore into an empty directory");
    const out = path.join(root, "restored");
    const before = nc.stats();
    const rt0 = performance.now();
    const restored = await cold.restore(TENANT, SESSION, out);
    const restoreMs = performance.now() - rt0;
    const after = nc.stats();
    progress("comparing the restored tree with the source");
    const [want, got] = await Promise.all([treeDigest(ws, EXCLUDE), treeDigest(out, [])]);
    if (want !== got) throw new Error("the restored workspace differs from the source");

    const jsm = await jetstreamManager(nc);
    const si = await jsm.streams.info(snapshotStoreNames("bench").chunksStream);
    const report = {
      bench: "snapshot",
      date: startedAt.toISOString(),
      duration_s: round((performance.now() - t0) / 1000, 1),
      machine: {
        ...machineInfo(),
        // Other work on the machine skews timings; these say how busy it was.
        load_avg_at_start: loadAtStart,
        load_avg_at_end: loadavg().map((l) => round(l, 2)),
      },
      versions: {
        nats_server: await commandVersion(binary, /v?(\d+\.\d+\.\d+\S*)/),
        git: await gitState(),
      },
      params: {
        ...params,
        compress: true,
        exclude: EXCLUDE,
        server: "nats-server on loopback, file storage",
      },
      workspace: { ...layout.counts, generate_s: generateS },
      first_snapshot: first,
      unchanged_snapshot: unchanged,
      change_1kib: change,
      change_1kib_cold_cache: changeCold,
      restore: {
        ms: round(restoreMs, 1),
        version: restored.version,
        bytes: restored.bytes,
        wire_in_bytes: after.inBytes - before.inBytes,
        mb_per_s: round(restored.bytes / MB / (restoreMs / 1000), 1),
        verified: true,
      },
      store: { stream_bytes: si.state.bytes, stream_messages: si.state.messages },
    };
    await nc.close();
    process.stderr.write(summary(report));
    return report;
  });
}

interface SnapshotFigures {
  readonly ms: number;
  readonly version: number;
  readonly bytes: number;
  readonly files: number;
  readonly uploaded_chunks: number;
  readonly reused_chunks: number;
  readonly bytes_sent: number;
  readonly uploaded_bytes: number;
  readonly manifest_bytes: number;
  readonly wire_out_bytes: number;
  readonly mb_per_s: number;
}

async function measureSnapshot(
  nc: NatsConnection,
  fn: () => Promise<VersionInfo>,
): Promise<SnapshotFigures> {
  const before = nc.stats();
  const t0 = performance.now();
  const v = await fn();
  const ms = performance.now() - t0;
  const after = nc.stats();
  return {
    ms: round(ms, 1),
    version: v.version,
    bytes: v.bytes,
    files: v.files,
    uploaded_chunks: v.uploadedChunks,
    reused_chunks: v.reusedChunks,
    bytes_sent: v.uploadedBytes,
    uploaded_bytes: v.uploadedBytes,
    manifest_bytes: v.manifestBytes,
    wire_out_bytes: after.outBytes - before.outBytes,
    mb_per_s: round(v.bytes / MB / (ms / 1000), 1),
  };
}

async function startServer(
  root: string,
  binary: string,
  cleanup: Cleanup,
): Promise<NatsConnection> {
  const storeDir = path.join(root, "nats");
  await mkdir(storeDir, { recursive: true });
  const server = await startNatsServer({
    storeDir,
    binary,
    logFile: path.join(storeDir, "nats-server.log"),
  });
  cleanup.defer("stop nats-server", () => server.stop());
  const nc = await connect({ servers: server.url, name: "bench-snapshot" });
  cleanup.defer("close the connection", () => (nc.isClosed() ? undefined : nc.close()));
  return nc;
}

// ------------------------------------------------------------------------- workspace

/** A seeded xorshift32 generator. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed * 2654435761) >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Buffer {
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) words[i] = this.next();
    return Buffer.from(words.buffer, 0, n);
  }
}

interface Layout {
  readonly bigBinary: string;
  readonly textFile: string;
  readonly counts: {
    readonly files: number;
    readonly dirs: number;
    readonly bytes: number;
    readonly random_bytes: number;
    readonly compressible_bytes: number;
    readonly excluded_bytes: number;
  };
}

/**
 * 40 % large random binaries, 20 % small random blobs (100 kB, in 20 directories),
 * 30 % text, 10 % a SQLite-like database (4 KiB pages, mostly zeros), plus 300 small
 * text files and a live `-wal` that the snapshot excludes.
 */
async function generateWorkspace(root: string, params: Params): Promise<Layout> {
  const rng = new Rng(params.seed);
  const total = params.mb * MB;
  let files = 0;
  let bytes = 0;
  let random = 0;
  let compressible = 0;
  const dirs = new Set<string>();
  const write = async (rel: string, data: Buffer, kind: "random" | "text") => {
    const dir = path.dirname(path.join(root, rel));
    if (!dirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      dirs.add(dir);
    }
    await writeFile(path.join(root, rel), data);
    files++;
    bytes += data.length;
    if (kind === "random") random += data.length;
    else compressible += data.length;
  };

  const bigEach = Math.floor((0.4 * total) / 2);
  for (let i = 0; i < 2; i++) await write(`models/weights-${i}.bin`, rng.bytes(bigEach), "random");
  const blob = 100_000;
  const blobs = Math.floor((0.2 * total) / blob);
  for (let i = 0; i < blobs; i++) {
    await write(
      `data/shard-${String(i % 20).padStart(2, "0")}/blob-${i}.bin`,
      rng.bytes(blob),
      "random",
    );
  }
  const vocabulary = Array.from({ length: 4000 }, () =>
    Array.from({ length: 2 + rng.int(9) }, () => String.fromCharCode(97 + rng.int(26))).join(""),
  );
  const text = (size: number) => {
    const parts: string[] = [];
    let n = 0;
    while (n < size) {
      const words = 4 + rng.int(12);
      const line = `${Array.from({ length: words }, () => vocabulary[rng.int(vocabulary.length)]).join(" ")}.\n`;
      parts.push(line);
      n += line.length;
    }
    return Buffer.from(parts.join("")).subarray(0, size);
  };
  const docs = 20;
  const docSize = Math.floor((0.3 * total - 300 * 2_000) / docs);
  for (let i = 0; i < docs; i++)
    await write(`docs/notes-${String(i).padStart(2, "0")}.md`, text(docSize), "text");
  for (let i = 0; i < 300; i++) await write(`src/mod-${i % 10}/file-${i}.ts`, text(2_000), "text");
  const page = 4096;
  const pages = Math.floor((0.1 * total) / page);
  const db = Buffer.alloc(pages * page);
  for (let p = 0; p < pages; p++) text(600).copy(db, p * page);
  await write("state/app.db", db, "text");
  const wal = rng.bytes(2 * MB);
  await mkdir(path.join(root, "state"), { recursive: true });
  await writeFile(path.join(root, "state/app.db-wal"), wal);

  return {
    bigBinary: "models/weights-0.bin",
    textFile: "docs/notes-03.md",
    counts: {
      files,
      dirs: dirs.size,
      bytes,
      random_bytes: random,
      compressible_bytes: compressible,
      excluded_bytes: wal.length,
    },
  };
}

/** Overwrites 1 KiB in the middle of `file`, in place. */
async function poke(file: string, seed: number): Promise<void> {
  const fh = await open(file, "r+");
  try {
    const { size } = await fh.stat();
    await fh.write(new Rng(seed).bytes(KiB), 0, KiB, Math.floor(size / 2));
  } finally {
    await fh.close();
  }
}

/** One hash over every path, type, mode and content under `root`, minus `exclude`d names. */
async function treeDigest(root: string, exclude: readonly string[]): Promise<string> {
  const suffixes = exclude.map((p) => p.replace(/^\*/, ""));
  const h = createHash("sha256");
  const walk = async (rel: string) => {
    for (const name of (await readdir(path.join(root, rel))).sort()) {
      if (suffixes.some((s) => name.endsWith(s))) continue;
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(path.join(root, p));
      h.update(`${p}\0${st.mode & 0o7777}\0`);
      if (st.isDirectory()) await walk(p);
      else if (st.isSymbolicLink()) h.update(await readlink(path.join(root, p)));
      else h.update(await readFile(path.join(root, p)));
    }
  };
  await walk("");
  return h.digest("hex");
}

// ---------------------------------------------------------------------------- report

function summary(r: {
  machine: { load_avg_at_start: number[] };
  params: Params;
  workspace: Layout["counts"];
  first_snapshot: SnapshotFigures;
  unchanged_snapshot: SnapshotFigures;
  change_1kib: SnapshotFigures;
  change_1kib_cold_cache: SnapshotFigures;
  restore: { ms: number; mb_per_s: number; wire_in_bytes: number };
  store: { stream_bytes: number };
}): string {
  const mb = (n: number) => `${(n / MB).toFixed(1)} MB`;
  const kb = (n: number) => (n >= MB ? mb(n) : `${(n / 1000).toFixed(1)} kB`);
  const row = (name: string, f: SnapshotFigures) =>
    `  ${name.padEnd(26)} ${`${f.ms.toFixed(0)} ms`.padStart(9)}   sent ${kb(f.bytes_sent).padStart(9)}` +
    `   chunks up ${String(f.uploaded_chunks).padStart(4)} / reused ${String(f.reused_chunks).padStart(4)}` +
    `   wire out ${kb(f.wire_out_bytes)}\n`;
  const w = r.workspace;
  return (
    "\nsnapshot store\n" +
    `  workspace: ${mb(w.bytes)} in ${w.files} files (${mb(w.random_bytes)} random, ${mb(w.compressible_bytes)} compressible; ${kb(w.excluded_bytes)} -wal excluded)\n` +
    `  chunk ${r.params.chunkKib} KiB, ${r.params.concurrency} in flight, deflate on\n\n` +
    row("first snapshot", r.first_snapshot) +
    row("unchanged", r.unchanged_snapshot) +
    row("1 KiB change", r.change_1kib) +
    row("1 KiB change, cold cache", r.change_1kib_cold_cache) +
    `  ${"restore into empty dir".padEnd(26)} ${`${r.restore.ms.toFixed(0)} ms`.padStart(9)}   ${r.restore.mb_per_s} MB/s, wire in ${mb(r.restore.wire_in_bytes)}\n` +
    `  stored in JetStream: ${mb(r.store.stream_bytes)}; load average ${r.machine.load_avg_at_start[0]} at start\n\n`
  );
}
