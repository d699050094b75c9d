/**
 * Faults for chaos tests, and the seeded randomness that picks them.
 *
 * - {@link Rng}: a tiny seeded PRNG (mulberry32) with independent streams per
 *   label, so a plan drawn from it does not depend on timing;
 * - the faults themselves, each a real signal to a real process found through
 *   /proc (see {@link ChaosFleet.containerProcesses}): SIGKILL an agent, SIGKILL
 *   a container's sandbox, SIGSTOP an agent, SIGKILL a node and start it again
 *   under the same id;
 * - {@link FaultInjector}: runs faults one at a time and keeps a log of them.
 *
 * What a "container" is for a process pool: the node's child process for it,
 * which leads its process group. With bubblewrap (the default where it is
 * usable) that is the outer `bwrap`, the sandbox: `bwrap → bwrap (pid 1 of the
 * sandbox's pid namespace) → node scripted-agent`, and killing the outer one
 * takes the rest down (`--die-with-parent`). Without bubblewrap the agent is
 * the container's only process, so killing "the container" is killing its
 * process group.
 */
import { readFile } from "node:fs/promises";
import { mulberry32 } from "../../src/sim/workload.js";
import { retrying, WAIT_MS } from "../harness/arrivals.js";
import type { ChaosFleet } from "../harness/chaos-fleet.js";

/** A seeded random stream; {@link fork} derives independent ones by label. */
export class Rng {
  private readonly next_: () => number;

  constructor(readonly seed: number) {
    this.next_ = mulberry32(seed);
  }

  /** A float in [0, 1). */
  next(): number {
    return this.next_();
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  /** An item of `weights` (item → weight), chosen with probability proportional to its weight. */
  weighted<T extends string>(weights: Readonly<Record<T, number>>): T {
    const entries = Object.entries(weights) as Array<[T, number]>;
    let x = this.next() * entries.reduce((n, [, w]) => n + w, 0);
    for (const [item, w] of entries) {
      x -= w;
      if (x < 0) return item;
    }
    return entries.at(-1)![0];
  }

  /** An independent stream for `label`: the same seed and label always give the same stream. */
  fork(label: number): Rng {
    return new Rng(mulberry32((this.seed ^ Math.imul(label + 1, 0x9e3779b1)) >>> 0)() * 2 ** 32);
  }
}

/** The seed in `$name` (a 32-bit unsigned integer; `random`: a fresh one), or `fallback`. */
export function seedFrom(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  // Exploring: a fresh plan each run (printed, so a failure can be replayed).
  if (text === "random") return Math.floor(Math.random() * 2 ** 32);
  const seed = Number(text);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
    throw new Error(`${name} must be an integer in [0, 2^32), not ${JSON.stringify(text)}`);
  }
  return seed;
}

/** Resolves once process `pid` is gone (exited, or a zombie), within `timeoutMs`. */
export async function waitGone(pid: number, what: string, timeoutMs = WAIT_MS): Promise<void> {
  await retrying(
    async () => {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
      // A process that closed its files may still be tearing down for a moment.
      if (stat !== null && stat[stat.lastIndexOf(")") + 2] !== "Z") throw new Error("still alive");
    },
    `${what} (pid ${pid}) to be gone`,
    timeoutMs,
  );
}

/** SIGKILLs the agent process of a container; resolves with its pid once it is gone. */
export async function killAgent(fleet: ChaosFleet, node: string, container: string) {
  const pid = await fleet.agentPid(node, container);
  process.kill(pid, "SIGKILL");
  await waitGone(pid, `the agent of ${container}`);
  return pid;
}

/**
 * A fault: SIGKILL an agent mid-turn (`agent`) or right after a turn (`idle`),
 * SIGKILL a container's sandbox (`sandbox`), freeze an agent with SIGSTOP
 * (`hang`: its node must notice the silence and kill it), or SIGKILL a node
 * and start it again under the same id (`node`).
 */
export type FaultKind = "agent" | "sandbox" | "idle" | "node" | "hang";

/** One fault as the injector ran it (or could not: the target was gone already). */
export interface FaultRecord {
  readonly kind: FaultKind;
  readonly node: string;
  readonly container: string;
  /** Why it was injected (which task, after which event). */
  readonly label: string;
  /** The pid that got the signal; undefined when there was nothing to signal. */
  readonly pid?: number;
  /** Why there was nothing to signal (the container was restarting, or replaced). */
  readonly missed?: string;
  readonly ms: number;
}

/**
 * Runs faults one at a time, so a node restart finishes before the next kill
 * and a fault never lands on a half-restarted node.
 */
export class FaultInjector {
  readonly log: FaultRecord[] = [];
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly fleet: ChaosFleet) {}

  /**
   * Queues `kind` against `container` of `node` and resolves once it took
   * effect: the node is back, or the agent is gone (a frozen one killed by its
   * node). A container with no agent process to signal (restarting, replaced)
   * is logged as missed; anything else that goes wrong rejects.
   */
  inject(kind: FaultKind, node: string, container: string, label: string): Promise<FaultRecord> {
    const run = async (): Promise<FaultRecord> => {
      const t0 = Date.now();
      const base = { kind, node, container, label };
      const ran = (more: { pid?: number; missed?: string }) => ({
        ...base,
        ...more,
        ms: Date.now() - t0,
      });
      if (kind === "node") {
        const pid = this.fleet.pidOf(node);
        await this.fleet.killNode(node);
        await this.fleet.restartNode(node, 1, 60_000);
        return ran({ pid });
      }
      let procs: Awaited<ReturnType<ChaosFleet["containerProcesses"]>>;
      try {
        procs = await this.fleet.containerProcesses(node, container);
      } catch (err) {
        return ran({ missed: (err as Error).message });
      }
      const pid = kind === "sandbox" ? procs.root : procs.agent;
      try {
        if (kind === "hang") process.kill(pid, "SIGSTOP");
        else if (kind === "sandbox" && !procs.sandboxed) process.kill(-pid, "SIGKILL");
        else process.kill(pid, "SIGKILL");
      } catch (err) {
        return ran({ missed: `pid ${pid}: ${(err as Error).message}` });
      }
      // Frozen: its node hears no heartbeat for missedHeartbeats × agentHeartbeatMs, then kills it.
      await waitGone(procs.agent, `the agent of ${container} (${kind})`, 60_000);
      return ran({ pid });
    };
    const done = this.chain.then(run).then((r) => {
      this.log.push(r);
      return r;
    });
    this.chain = done.then(
      () => {},
      () => {},
    );
    return done;
  }

  /** Resolves once every queued fault ran. */
  async idle(): Promise<void> {
    await this.chain;
  }

  /** How many faults of each kind hit a process (missed ones apart). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const f of this.log) {
      const key = f.missed ? `${f.kind} (missed)` : f.kind;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }

  /** The counts, then the first `lines` faults, one a line. */
  summary(lines = 40): string {
    const out = [`faults: ${JSON.stringify(this.counts())}`];
    for (const f of this.log.slice(0, lines)) {
      const target = `${f.node}/${f.container} pid ${f.pid ?? "-"}`;
      out.push(
        `  ${f.kind} ${target} ${f.label} ${f.ms} ms${f.missed ? ` missed: ${f.missed}` : ""}`,
      );
    }
    if (this.log.length > lines) out.push(`  ... and ${this.log.length - lines} more`);
    return out.join("\n");
  }
}
