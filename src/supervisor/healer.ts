/**
 * The orchestrator's supervisor of sessions: it applies the healing ladder
 * ({@link SessionSupervisor}) to every lost attempt, raises the alert with its
 * post-mortem at the last tier, and keeps the set of quarantined sessions
 * current from KV so new tasks of one fail at once.
 */
import type { HealingDecision, LostAttemptInfo } from "../actors/task-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { QuarantineRegistry } from "../adapters/records/quarantine-registry.js";
import { readTimeline } from "../adapters/records/task-timeline.js";
import { type Clock, isoNow } from "../clock.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import type { Logger } from "../logger.js";
import { type SessionHealthView, SessionSupervisor } from "./session-supervisor.js";

/** A lost attempt, as a task actor reports it. */
export type LostAttempt = LostAttemptInfo;

export type { HealingDecision };

/** Each decision's tier and a line for the task's timeline. */
export const HEALING_TIERS: Readonly<
  Record<HealingDecision, { readonly tier: 2 | 3 | 4; readonly message: string }>
> = {
  recreate: {
    tier: 2,
    message:
      "tier 2 recreate: the next attempt restores the session and resumes after its last checkpoint",
  },
  repair: {
    tier: 3,
    message:
      "tier 3 repair: the next attempt starts over from the last known-good version, config and behaviour repaired",
  },
  quarantined: {
    tier: 4,
    message: "tier 4 alert: the session is quarantined until a person releases it",
  },
};

/** Session supervision for one leadership term. */
export class Healer {
  private readonly ladder: SessionSupervisor;
  private readonly registry: QuarantineRegistry;
  private readonly quarantined = new Set<string>();
  private stopWatch: () => void = () => {};

  constructor(
    private readonly nats: FleetNats,
    options: ResolvedFleetOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    this.ladder = new SessionSupervisor(options.healing, clock);
    this.registry = new QuarantineRegistry(nats);
  }

  /** Loads the quarantines and follows them; `changed` hears of each one set or lifted. */
  async start(
    changed: (tenant: string, session: string, quarantined: boolean) => void,
  ): Promise<void> {
    this.stopWatch = await this.registry.watch(({ tenant, session }, on) => {
      const key = `${tenant}/${session}`;
      if (on) this.quarantined.add(key);
      else {
        this.quarantined.delete(key);
        this.ladder.healthy(tenant, session);
      }
      changed(tenant, session, on);
    });
  }

  stop(): void {
    this.stopWatch();
  }

  isQuarantined(tenant: string, session: string): boolean {
    return this.quarantined.has(`${tenant}/${session}`);
  }

  /** The session's turn succeeded: its ladder starts over. */
  healthy(tenant: string, session: string): void {
    this.ladder.healthy(tenant, session);
  }

  /** Decides the remedy for a lost attempt; at the last tier, raises the alert first. */
  async attemptLost(lost: LostAttempt): Promise<HealingDecision> {
    const remedy = this.ladder.attemptLost(lost.tenant, lost.session, lost);
    if (remedy.kind === "retry") return remedy.repair ? "repair" : "recreate";
    const now = this.clock.now();
    const alertId = QuarantineRegistry.newAlertId(now);
    const timeline = await readTimeline(this.nats, lost.taskId).catch(() => []);
    await this.registry.raise({
      alertId,
      severity: "critical",
      tenant: lost.tenant,
      session: lost.session,
      taskId: lost.taskId,
      at: isoNow(this.clock),
      summary: `${lost.tenant}/${lost.session}: every remedy failed (last: ${lost.error.code}: ${lost.error.message}); the session is quarantined until released`,
      tiers: [...remedy.history],
      lastErrors: [...remedy.lastErrors],
      logTail: [...lost.logTail],
      timeline,
    });
    this.quarantined.add(`${lost.tenant}/${lost.session}`);
    this.log.error({ alertId, tenant: lost.tenant, session: lost.session }, "session quarantined");
    return "quarantined";
  }

  /** Sessions on the ladder now, for the tree. */
  view(): SessionHealthView[] {
    return this.ladder.view();
  }
}
