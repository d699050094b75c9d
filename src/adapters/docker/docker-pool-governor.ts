/**
 * The node-wide policy of the Docker pool (see docker-pool.ts): admission of
 * starts under the memory budget and the start throttle, shedding under
 * pressure, reaping of idle containers, and removal of orphans. Every decision
 * runs in one serial queue, so two sheds never pick the same container and an
 * admission always sees the sheds before it.
 */
import { AgentError, type ClawfleetError, ErrorCodes, toErrorInfo } from "../../errors.js";
import type { ContainerSpec } from "../agent-link/pool-adapter.js";
import { type IdleContainer, pickReap, removeOrphans } from "./docker-cleanup.js";
import type { DockerContainer } from "./docker-container.js";
import type { DockerPoolEvent, GovernorDeps, RemovalReason } from "./docker-pool-events.js";
import { hostAvailableMb, pickShed, type SheddableContainer } from "./memory-budget.js";

interface Waiter {
  readonly id: string;
  readonly since: number;
  announced: boolean;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const SWEEP_EVERY_TICKS = 10;

/** See the module comment. */
export class DockerPoolGovernor {
  private readonly tracked = new Map<string, { handle: DockerContainer; spec: ContainerSpec }>();
  private waiters: Waiter[] = [];
  private inflight = 0;
  private serial: Promise<void> = Promise.resolve();
  private pumpQueued = false;
  private hostAvailable: number | undefined;
  private ticks = 0;
  private closed = false;

  constructor(private readonly deps: GovernorDeps) {}

  get containers(): DockerContainer[] {
    return [...this.tracked.values()].map((t) => t.handle);
  }

  /** Resolves when `id` may start: within the budget and the start throttle. */
  admit(id: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.closed) return reject(closedError());
      this.waiters.push({ id, since: this.deps.clock.now(), announced: false, resolve, reject });
      this.schedulePump();
    });
  }

  /** A start admitted by {@link admit} has finished, either way. */
  startDone(_id: string): void {
    this.inflight--;
    this.schedulePump();
  }

  /** Watches a started container until it is gone. */
  track(handle: DockerContainer, spec: ContainerSpec): void {
    this.tracked.set(spec.id, { handle, spec });
    this.deps.budget.working(spec.id, false);
    void handle.whenClosed().then(() => {
      this.tracked.delete(spec.id);
      this.deps.budget.release(spec.id);
      this.schedulePump();
    });
  }

  setPriority(id: string, priority: number): void {
    const t = this.tracked.get(id);
    if (t) t.handle.use.priority = priority;
  }

  /** Removes a container, telling its owner `reason`. */
  async evict(id: string, reason: ClawfleetError): Promise<void> {
    const t = this.tracked.get(id);
    if (!t) return;
    await t.handle.evict(reason);
    this.deps.budget.release(id);
  }

  /** One round: stats, pressure, idle reaping, waiting starts, and now and then orphans. */
  tick(): Promise<void> {
    return this.serially(async () => {
      await this.sample();
      const deficit = this.deps.budget.deficitMb(0, this.hostAvailable);
      if (deficit > 0) await this.shed(deficit, "pressure", true);
      const hard = this.deps.budget.hardDeficitMb(this.hostAvailable);
      if (hard > 0) await this.shed(hard, "hard-limit", true);
      await this.reap();
      await this.pump();
      if (++this.ticks % SWEEP_EVERY_TICKS === 0) await this.sweepNow();
    });
  }

  /** Removes containers of this fleet that no live node owns. */
  sweep(): Promise<void> {
    return this.serially(() => this.sweepNow());
  }

  /** Refuses waiting and future starts. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(closedError());
  }

  /** Resolves when no decision is running. */
  idle(): Promise<void> {
    return this.serially(async () => {});
  }

  private serially(fn: () => Promise<void>): Promise<void> {
    const run = this.serial.then(fn).catch((err: unknown) => {
      this.deps.logger.warn({ err: toErrorInfo(err) }, "docker pool round failed");
    });
    this.serial = run;
    return run;
  }

  private schedulePump(): void {
    if (this.pumpQueued || this.closed) return;
    this.pumpQueued = true;
    void this.serially(async () => {
      this.pumpQueued = false;
      await this.pump();
    });
  }

  private emit(event: DockerPoolEvent): void {
    this.deps.logger.debug({ ...event }, `docker pool: ${event.type}`);
    this.deps.onEvent?.(event);
  }

  /** Tells the budget which containers are running a turn now. */
  private syncWorking(): void {
    for (const [id, t] of this.tracked) this.deps.budget.working(id, t.handle.use.busy);
  }

  private async sample(): Promise<void> {
    const { budget } = this.deps;
    await Promise.all(
      [...this.tracked.entries()].map(async ([id, t]) => {
        const mb = await t.handle.memoryMb();
        if (mb !== undefined) budget.measured(id, mb);
      }),
    );
    this.syncWorking();
    this.hostAvailable = await (this.deps.hostAvailableMb ?? hostAvailableMb)();
    this.emit({
      type: "sample",
      usedMb: budget.usedMb,
      measuredMb: budget.measuredMb,
      limitMb: budget.limitMb,
      hostAvailableMb: this.hostAvailable,
      containers: this.tracked.size,
    });
  }

  private async pump(): Promise<void> {
    const { budget, settings } = this.deps;
    let sampled = false;
    while (this.waiters.length > 0 && this.inflight < settings.maxConcurrentStarts) {
      const w = this.waiters[0]!;
      // Decide on fresh figures: a busy agent may have grown since the last round.
      if (!sampled && this.tracked.size > 0) await this.sample();
      sampled = true;
      const reserve = budget.startReserveMb;
      const deficit = budget.deficitMb(reserve, this.hostAvailable);
      if (deficit > 0 && (await this.shed(deficit, "start", false)) === 0) {
        if (!w.announced) {
          w.announced = true;
          const { usedMb, limitMb } = budget;
          this.emit({ type: "waiting", id: w.id, usedMb, reserveMb: reserve, limitMb });
        }
        return;
      }
      if (budget.deficitMb(reserve, this.hostAvailable) > 0) continue;
      this.waiters.shift();
      const usedMb = budget.usedMb;
      budget.admit(w.id, reserve);
      this.inflight++;
      const waitedMs = this.deps.clock.now() - w.since;
      this.emit({
        type: "admitted",
        starting: this.inflight,
        id: w.id,
        usedMb,
        reserveMb: reserve,
        limitMb: budget.limitMb,
        waitedMs,
      });
      w.resolve();
    }
  }

  /** Idle and reserved containers, or with `busy` only those running a turn. */
  private candidates(busy: boolean): SheddableContainer[] {
    const now = this.deps.clock.now();
    const out: SheddableContainer[] = [];
    for (const [id, { handle, spec }] of this.tracked) {
      const u = handle.use;
      if (u.busy !== busy || u.removing || !handle.alive) continue;
      const reserved = u.priority >= 0 && now - u.lastUsedAt < spec.profile.reservedWindowMs;
      const state = busy ? "busy" : reserved ? "reserved" : "idle";
      const usageMb = busy ? (this.deps.budget.measuredOf(id) ?? 0) : this.deps.budget.chargeOf(id);
      out.push({ id, state, priority: u.priority, lastUsedAt: u.lastUsedAt, usageMb });
    }
    return out;
  }

  /**
   * Removes containers to free `needMb`, lowest value first; returns how many
   * went. Past the hard limit only busy ones are left to take (the soft pass
   * before it took every idle and reserved one it needed).
   */
  private async shed(needMb: number, reason: Exclude<RemovalReason, "idle-ttl">, partial: boolean) {
    const candidates = this.candidates(reason === "hard-limit");
    const picked = pickShed(candidates, needMb, partial);
    for (const c of picked) this.tracked.get(c.id)!.handle.use.removing = true;
    const kept = candidates.filter((c) => !picked.includes(c)).map((c) => c.priority);
    for (const c of picked) {
      const { budget } = this.deps;
      this.emit({
        type: "shed",
        id: c.id,
        reason,
        priority: c.priority,
        state: c.state,
        usageMb: c.usageMb,
        usedMb: budget.usedMb,
        limitMb: budget.limitMb,
        keptPriorities: kept,
      });
      const why =
        reason === "hard-limit"
          ? "container removed mid-turn: the node's containers passed the hard memory limit"
          : `container shed under memory pressure (${reason})`;
      await this.remove(c.id, reason, why);
    }
    return picked.length;
  }

  private async reap(): Promise<void> {
    const now = this.deps.clock.now();
    const idle: IdleContainer[] = [];
    for (const [id, { handle, spec }] of this.tracked) {
      const u = handle.use;
      if (u.busy || u.removing || !handle.alive) continue;
      const { name: pool, minIdle } = spec.profile;
      idle.push({ id, pool, idleMs: now - u.lastUsedAt, minIdle });
    }
    const picked = pickReap(idle, this.deps.settings.idleTtlMs);
    for (const c of picked) this.tracked.get(c.id)!.handle.use.removing = true;
    for (const c of picked) {
      this.emit({ type: "reaped", id: c.id, idleMs: c.idleMs });
      await this.remove(c.id, "idle-ttl", `container reaped after ${c.idleMs} ms idle`);
    }
  }

  private async remove(id: string, reason: RemovalReason, why: string) {
    const t = this.tracked.get(id);
    if (!t) return;
    const { workspaceDir, use } = t.handle;
    const info = { id, pool: t.spec.profile.name, workspaceDir, session: use.session, reason };
    try {
      await this.deps.onShed?.(info);
    } catch (err) {
      this.deps.logger.warn({ err: toErrorInfo(err), container: id }, "onShed failed");
    }
    await this.evict(id, new AgentError(ErrorCodes.AGENT_EXITED, why));
    this.emit({ type: "removed", id, reason });
  }

  private async sweepNow(): Promise<void> {
    const removed = await removeOrphans(this.deps.docker, this.deps.owner, {
      liveNodes: this.deps.liveNodes,
      graceMs: this.deps.orphanGraceMs ?? 30_000,
      now: this.deps.clock.now(),
    });
    for (const o of removed) this.emit({ type: "orphan-removed", ...o });
  }
}

function closedError(): AgentError {
  return new AgentError(ErrorCodes.AGENT_START_FAILED, "docker pool is closed");
}
