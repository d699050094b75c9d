/**
 * Memory accounting of a node's containers, for safe density: the budget is the
 * host's memory minus headroom. An idle or reserved container is charged what
 * its stats say it holds; one that is starting or running a turn is charged at
 * least the reserve (what a working agent is expected to reach), since it may
 * grow at any moment. A start is admitted only if its reserve fits; whatever is
 * over budget, or would keep a start out, is freed by shedding idle or reserved
 * containers, lowest value first; past the hard limit (budget plus half the
 * headroom, by real measurements) a busy container goes too, since the host
 * comes first. Pure bookkeeping: the Docker pool feeds it stats and acts.
 *
 * "Holds" means memory the kernel cannot reclaim without killing: anonymous
 * pages and tmpfs (cgroup v1 `active_anon + inactive_anon`, v2 `anon + shmem`).
 * Page cache is left to the headroom: the kernel reclaims it under pressure, and
 * shared file pages (the node binary) are charged to whichever container read
 * them first, which would make per-container figures meaningless.
 */
import { readFile } from "node:fs/promises";
import { totalmem } from "node:os";

const MiB = 2 ** 20;

/** A container the budget may shed: it is up and not running a turn. */
export interface SheddableContainer {
  readonly id: string;
  /** `idle` holds no one's reservation; `reserved` just served a session; `busy` runs a turn. */
  readonly state: "idle" | "reserved" | "busy";
  /** Priority of the last task it ran (low 0, normal 1, high 2); -1 if it never ran one. */
  readonly priority: number;
  /** When it last finished a turn (or came up), ms since the epoch. */
  readonly lastUsedAt: number;
  /** What shedding it frees, MiB. */
  readonly usageMb: number;
}

/**
 * The order in which containers are shed, first to go first: lower priority of
 * the task they served, then idle before reserved, then least recently used.
 */
export function shedOrder(candidates: readonly SheddableContainer[]): SheddableContainer[] {
  const stateRank = (s: SheddableContainer["state"]) =>
    s === "idle" ? 0 : s === "reserved" ? 1 : 2;
  return [...candidates].sort(
    (a, b) =>
      a.priority - b.priority ||
      stateRank(a.state) - stateRank(b.state) ||
      a.lastUsedAt - b.lastUsedAt,
  );
}

/**
 * The containers to shed to free `needMb`, in {@link shedOrder}. With `partial`
 * false it returns none when all of them together would not free enough
 * (shedding for a start that still could not be admitted would be waste).
 */
export function pickShed(
  candidates: readonly SheddableContainer[],
  needMb: number,
  partial: boolean,
): SheddableContainer[] {
  const picked: SheddableContainer[] = [];
  let freed = 0;
  for (const c of shedOrder(candidates)) {
    if (freed >= needMb) break;
    picked.push(c);
    freed += c.usageMb;
  }
  return freed >= needMb || partial ? picked : [];
}

/** The memory stats of the Docker API that {@link memoryUsageMb} reads (v1 and v2 cgroups). */
export interface MemoryStatsLike {
  readonly usage?: number;
  readonly stats?: Readonly<Record<string, number | undefined>>;
}

/** Memory a container holds (see the module comment), in MiB, from its Docker stats. */
export function memoryUsageMb(memory: MemoryStatsLike | undefined): number | undefined {
  const s = memory?.stats;
  if (!memory || !s) return memory?.usage === undefined ? undefined : memory.usage / MiB;
  if (s.total_active_anon !== undefined && s.total_inactive_anon !== undefined)
    return (s.total_active_anon + s.total_inactive_anon) / MiB;
  if (s.anon !== undefined) return (s.anon + (s.shmem ?? 0)) / MiB;
  const reclaimable = s.total_inactive_file ?? s.inactive_file ?? s.cache ?? 0;
  return memory.usage === undefined ? undefined : Math.max(0, memory.usage - reclaimable) / MiB;
}

/** Parses a cgroup `memory.stat` file (`key value` lines, v1 or v2). */
export function parseMemoryStat(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const [key, value] = line.split(" ");
    if (key && value !== undefined && /^\d+$/.test(value)) out[key] = Number(value);
  }
  return out;
}

/** The host's `MemAvailable` in MiB (Linux), or undefined where it cannot be read. */
export async function hostAvailableMb(): Promise<number | undefined> {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile("/proc/meminfo", "utf8"));
    return m?.[1] === undefined ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

/** Sizes of a {@link MemoryBudget}. */
export interface MemoryBudgetOptions {
  /** Memory the host offers before headroom. Default: the host's total memory. */
  readonly hostMemoryMb?: number;
  /** Memory kept from containers. Default 10% of the host, at least 512 MiB. */
  readonly headroomMb?: number;
  /** Charged at least to a container while it starts or runs a turn. */
  readonly startReserveMb: number;
}

interface Charge {
  reserveMb: number;
  usageMb?: number;
  /** Starting or running a turn: it may grow to the reserve at any moment. */
  working: boolean;
}

/** The node's container memory account; see the module comment. */
export class MemoryBudget {
  readonly hostMemoryMb: number;
  readonly headroomMb: number;
  /** What containers together may hold: host memory minus headroom. */
  readonly limitMb: number;
  readonly startReserveMb: number;
  private readonly charges = new Map<string, Charge>();

  constructor(options: MemoryBudgetOptions) {
    this.hostMemoryMb = options.hostMemoryMb ?? Math.floor(totalmem() / MiB);
    this.headroomMb = options.headroomMb ?? Math.max(512, Math.floor(this.hostMemoryMb / 10));
    this.limitMb = Math.max(0, this.hostMemoryMb - this.headroomMb);
    this.startReserveMb = options.startReserveMb;
  }

  /** Below this much real `MemAvailable` the host itself is short, whatever the account says. */
  get hostFloorMb(): number {
    return Math.floor(this.headroomMb / 4);
  }

  /** Past this much really held, busy containers are removed too. */
  get hardLimitMb(): number {
    return this.limitMb + Math.floor(this.headroomMb / 2);
  }

  /** Charges an admitted start its reserve. */
  admit(id: string, reserveMb: number = this.startReserveMb): void {
    this.charges.set(id, { reserveMb, working: true });
  }

  /** Whether the container is starting or running a turn (charged at least its reserve) or idle. */
  working(id: string, working: boolean): void {
    const c = this.charges.get(id);
    if (c) c.working = working;
  }

  /** Records a measurement. */
  measured(id: string, usageMb: number): void {
    const c = this.charges.get(id);
    if (c) c.usageMb = usageMb;
  }

  /** The container is gone. */
  release(id: string): void {
    this.charges.delete(id);
  }

  /** What `id` is charged now, MiB. */
  chargeOf(id: string): number {
    const c = this.charges.get(id);
    if (!c) return 0;
    if (c.usageMb === undefined) return c.reserveMb;
    return c.working ? Math.max(c.usageMb, c.reserveMb) : c.usageMb;
  }

  /** What `id` was last measured to hold, MiB. */
  measuredOf(id: string): number | undefined {
    return this.charges.get(id)?.usageMb;
  }

  /** Everything charged, MiB. */
  get usedMb(): number {
    let sum = 0;
    for (const id of this.charges.keys()) sum += this.chargeOf(id);
    return sum;
  }

  /** What the containers were last measured to hold together, MiB (unmeasured ones count 0). */
  get measuredMb(): number {
    let sum = 0;
    for (const c of this.charges.values()) sum += c.usageMb ?? 0;
    return sum;
  }

  /**
   * How much must be freed so that `extraMb` more fits: over the budget, or
   * under the host floor of real available memory when `hostAvailable` is known.
   */
  deficitMb(extraMb = 0, hostAvailable?: number): number {
    const account = this.usedMb + extraMb - this.limitMb;
    const host = hostAvailable === undefined ? 0 : this.hostFloorMb + extraMb - hostAvailable;
    return Math.max(0, account, host);
  }

  /** How far real use is past the hard limit (or the host below its floor), MiB. */
  hardDeficitMb(hostAvailable?: number): number {
    const account = this.measuredMb - this.hardLimitMb;
    const host = hostAvailable === undefined ? 0 : this.hostFloorMb - hostAvailable;
    return Math.max(0, account, host);
  }
}
