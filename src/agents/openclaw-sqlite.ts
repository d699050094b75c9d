/**
 * Makes OpenClaw's SQLite databases safe to copy while its gateway keeps
 * running, for the snapshot the host takes right after a quiesce.
 *
 * Why a checkpoint alone is not enough: in WAL mode the database file changes
 * only when a checkpoint copies WAL frames into it, and OpenClaw checkpoints on
 * its own (a maintenance timer, an auto-checkpoint after 1000 pages). One of
 * those during the copy would tear the copied file. So for each WAL database
 * this opens a connection that checkpoints with TRUNCATE (the file now holds
 * every committed transaction, the WAL is empty) and then keeps a read
 * transaction open. A reader that began on an empty WAL reads the database file
 * itself (read lock 0), and no checkpoint may write the file while such a
 * reader lives; OpenClaw's writes go on, into the WAL. The hold ends when the
 * driver drops it (next turn, release, stop) or after {@link HOLD_MAX_MS}.
 * That the WAL was empty when the read began is checked after it began: a WAL
 * of 0 bytes then means no frame existed (truncating it needs every reader
 * gone), else the attempt is rolled back and repeated.
 *
 * Databases in rollback-journal mode (OpenClaw's lock databases, its
 * quarantine store) are only checkpoint-free files: they are not held, as a
 * read lock would stall their writers.
 *
 * The work runs in a child process of OpenClaw's own Node 24 (`node:sqlite`),
 * so the agent host may run on any Node, and a hold is released by ending that
 * process (its locks die with it), even if the driver itself dies.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { AgentError, ErrorCodes } from "../errors.js";

/** A hold never outlives this, whether or not anyone drops it (a snapshot takes seconds). */
export const HOLD_MAX_MS = 10 * 60 * 1000;
/** How long taking the hold may take before the quiesce fails. */
const TAKE_TIMEOUT_MS = 8000;

/** The child's program (CommonJS, run with `node -e`); argv: files as JSON, hold ms. */
const HOLD_SCRIPT = String.raw`
const { DatabaseSync } = require("node:sqlite");
const { statSync } = require("node:fs");
const files = JSON.parse(process.argv[1]);
const holdMs = Number(process.argv[2]);
const pause = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const held = [];
for (const file of files) {
  // Gone since it was listed (a scratch database): opening would create it anew.
  if (!statSync(file, { throwIfNoEntry: false })) continue;
  const db = new DatabaseSync(file, { timeout: 5000 });
  const mode = String(db.prepare("PRAGMA journal_mode").get().journal_mode).toLowerCase();
  if (mode !== "wal") { db.close(); continue; }
  for (let attempt = 1; ; attempt++) {
    const r = db.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get();
    db.exec("BEGIN");
    db.prepare("SELECT count(*) FROM sqlite_schema").get();
    const wal = statSync(file + "-wal", { throwIfNoEntry: false });
    if (r.busy === 0 && (!wal || wal.size === 0)) break;
    db.exec("ROLLBACK");
    if (attempt >= 40) throw new Error(file + ": its WAL stayed busy");
    pause(Math.min(200, 10 * attempt));
  }
  held.push(db);
}
process.stdout.write("held " + held.length + "\n");
if (holdMs <= 0) process.exit(0);
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), holdMs);
`;

/** Checkpointed databases, kept unchanged on disk until {@link SqliteHold.release}. */
export class SqliteHold {
  private constructor(private child: ChildProcess | undefined) {}

  /**
   * Checkpoints every database in `files` (absolute paths) with OpenClaw's
   * `node`, then holds the WAL ones (`hold: true`, while a gateway runs) or
   * lets go at once (nothing else writes them). Throws `AGENT_FAILED`
   * (retryable: the host then copies nothing) when that fails.
   */
  static async take(
    node: string,
    files: readonly string[],
    opts: { hold: boolean; holdMs?: number },
  ): Promise<SqliteHold> {
    if (files.length === 0) return new SqliteHold(undefined);
    const holdMs = opts.hold ? (opts.holdMs ?? HOLD_MAX_MS) : 0;
    const child = spawn(
      node,
      ["--no-warnings", "-e", HOLD_SCRIPT, JSON.stringify(files), String(holdMs)],
      { stdio: ["pipe", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "" } },
    );
    let err = "";
    child.stderr?.on("data", (c: Buffer) => {
      if (err.length < 4096) err += c.toString("utf8");
    });
    // The child may exit before we write to its stdin: never crash on that pipe.
    child.stdin?.on("error", () => {});
    const held = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), TAKE_TIMEOUT_MS);
      child.stdout?.once("data", () => {
        clearTimeout(timer);
        resolve(true);
      });
      child.once("close", () => {
        clearTimeout(timer);
        resolve(false);
      });
      child.once("error", (e) => {
        err ||= e.message;
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!held) {
      child.kill("SIGKILL");
      const why = err.trim().split("\n").slice(-3).join(" ") || "timed out";
      throw new AgentError(ErrorCodes.AGENT_FAILED, `cannot checkpoint OpenClaw's SQLite: ${why}`);
    }
    if (holdMs <= 0) return new SqliteHold(undefined);
    child.unref();
    return new SqliteHold(child);
  }

  /** Whether the databases are still held. */
  get holding(): boolean {
    return this.child !== undefined && this.child.exitCode === null;
  }

  /** Lets the databases change again; resolves once the locks are gone. */
  async release(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    child.stdin?.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
    await closed;
    clearTimeout(timer);
  }
}

/** The child's program for {@link clearGatewayOwnerLease}; argv: the state database. */
const CLEAR_LEASE_SCRIPT = String.raw`
const { DatabaseSync } = require("node:sqlite");
const { statSync } = require("node:fs");
const file = process.argv[1];
if (!statSync(file, { throwIfNoEntry: false })) process.exit(0);
const db = new DatabaseSync(file, { timeout: 5000 });
const table = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'state_leases'").get();
const n = table ? db.prepare("DELETE FROM state_leases WHERE scope = 'gateway-owner'").run().changes : 0;
db.close();
process.stdout.write("cleared " + n + "\n");
`;

/**
 * Removes OpenClaw's gateway owner lease from the state database `file` before a
 * gateway starts on it. The lease is a row naming the owner's pid and host, live
 * for 5 minutes; a snapshot taken while a gateway ran carries it. Restored in
 * another sandbox, whose hostname and pid namespace look the same, the old owner
 * cannot be told dead and the new gateway refuses to start ("another Gateway
 * owner lease is still active"). No other gateway can hold this workspace: the
 * driver stopped its own first, and the workspace is this container's.
 */
export async function clearGatewayOwnerLease(node: string, file: string): Promise<number> {
  const child = spawn(node, ["-e", CLEAR_LEASE_SCRIPT, file], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "" },
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
  child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const code = await new Promise<number | null>((resolve) => {
    child.on("error", () => resolve(null));
    child.on("close", resolve);
  });
  if (code !== 0) {
    throw new AgentError(
      ErrorCodes.AGENT_START_FAILED,
      `could not clear OpenClaw's gateway lease in ${file}: ${err.trim().slice(-500) || `exit ${code}`}`,
    );
  }
  return Number(/cleared (\d+)/.exec(out)?.[1] ?? 0);
}
