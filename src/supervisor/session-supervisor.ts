/**
 * The session-level healing ladder, run by the leading orchestrator. Every lost
 * attempt of a session (agent crash or hang, lost node or lease) is a failure
 * to remedy; restart intensity per tier decides when a remedy has failed too
 * often and the next tier takes over:
 *
 * - tier 2, recreate: the next attempt runs on another container, restored
 *   from the latest known-good version and resumed from its last checkpoint
 *   (tier 1, restarting the agent in place, is the node's; see the README);
 * - tier 3, repair: the next attempt drops the task's checkpoints and starts
 *   the turn over from the last known-good version;
 * - tier 4, alert: the task fails with `SESSION_QUARANTINED`, a critical alert
 *   with a post-mortem is raised, and the session takes no work until released.
 *
 * A success resets the session's ladder; the session stays in view as healthy
 * (tier 0) with its history for one window, so a person can see what healed it.
 * State is per leadership term: a new leader starts every session at tier 2
 * again (quarantines are durable in KV).
 */
import type { Clock } from "../clock.js";
import type { ErrorInfo } from "../errors.js";
import { RestartIntensity } from "./restart-intensity.js";

/** Limits of the ladder's tiers. */
export interface HealingOptions {
  /** Lost attempts remedied by recreating within the window. Default 2. */
  readonly recreateMax: number;
  /** Lost attempts remedied by repairing within the window. Default 1. */
  readonly repairMax: number;
  /** The restart-intensity window. Default 300 000 ms. */
  readonly windowMs: number;
}

/** One step up the ladder, for the tree and the post-mortem. */
export interface TierEntry {
  readonly tier: 2 | 3 | 4;
  readonly remedy: "recreate" | "repair" | "alert";
  readonly at: string;
  readonly taskId: string;
  readonly attempt: number;
  readonly error: ErrorInfo;
}

/** What to do about a lost attempt. */
export type Remedy =
  | { readonly kind: "retry"; readonly tier: 2 | 3; readonly repair: boolean }
  | {
      readonly kind: "quarantine";
      readonly history: readonly TierEntry[];
      readonly lastErrors: readonly ErrorInfo[];
    };

interface SessionHealth {
  /** 0: recovered (kept in view for a window), else the tier it is at. */
  tier: 0 | 2 | 3 | 4;
  recreate: RestartIntensity;
  repair: RestartIntensity;
  readonly history: TierEntry[];
  lastErrors: ErrorInfo[];
  recoveredAt?: number;
}

/** A session's place on the ladder, as the tree shows it. */
export interface SessionHealthView {
  readonly tenant: string;
  readonly session: string;
  /** 0 once it recovered, else the tier it is at. */
  readonly tier: number;
  readonly restarts: { readonly recreate: number; readonly repair: number };
  readonly history: readonly TierEntry[];
  /** When its last climb ended in a success. */
  readonly recoveredAt?: string;
}

const KEEP = 20;

/** The ladder for every session of one orchestrator term. */
export class SessionSupervisor {
  private readonly sessions = new Map<string, SessionHealth>();

  constructor(
    private readonly options: HealingOptions,
    private readonly clock: Clock,
  ) {}

  /** Decides the remedy for a lost attempt of `tenant/session`. */
  attemptLost(
    tenant: string,
    session: string,
    lost: { taskId: string; attempt: number; error: ErrorInfo },
  ): Remedy {
    const key = `${tenant}/${session}`;
    this.prune();
    let s = this.sessions.get(key);
    if (!s) {
      s = { tier: 2, ...this.freshLadder(), history: [], lastErrors: [] };
      this.sessions.set(key, s);
    } else if (s.tier === 0) {
      // Failing again after a recovery: a new climb from the bottom, the history kept.
      Object.assign(s, { tier: 2, ...this.freshLadder(), lastErrors: [], recoveredAt: undefined });
    }
    push(s.lastErrors, lost.error);
    const at = new Date(this.clock.now()).toISOString();
    const note = (tier: TierEntry["tier"], remedy: TierEntry["remedy"]) =>
      push(s.history, {
        tier,
        remedy,
        at,
        taskId: lost.taskId,
        attempt: lost.attempt,
        error: lost.error,
      });
    if (s.tier === 2) {
      if (s.recreate.allow()) {
        note(2, "recreate");
        return { kind: "retry", tier: 2, repair: false };
      }
      s.tier = 3;
    }
    if (s.tier === 3 && s.repair.allow()) {
      note(3, "repair");
      return { kind: "retry", tier: 3, repair: true };
    }
    s.tier = 4;
    note(4, "alert");
    return { kind: "quarantine", history: [...s.history], lastErrors: [...s.lastErrors] };
  }

  /** The session works again: back to the bottom of the ladder, still in view for a window. */
  healthy(tenant: string, session: string): void {
    const s = this.sessions.get(`${tenant}/${session}`);
    if (!s || s.tier === 0) return;
    s.tier = 0;
    s.recoveredAt = this.clock.now();
  }

  /** Every session under supervision (climbing, quarantined, or recovered within the window). */
  view(): SessionHealthView[] {
    this.prune();
    return [...this.sessions.entries()].map(([key, s]) => {
      const [tenant = "", session = ""] = key.split("/");
      return {
        tenant,
        session,
        tier: s.tier,
        restarts: { recreate: s.recreate.recent, repair: s.repair.recent },
        history: [...s.history],
        ...(s.recoveredAt === undefined
          ? {}
          : { recoveredAt: new Date(s.recoveredAt).toISOString() }),
      };
    });
  }

  private freshLadder(): Pick<SessionHealth, "recreate" | "repair"> {
    return {
      recreate: new RestartIntensity(this.options.recreateMax, this.options.windowMs, this.clock),
      repair: new RestartIntensity(this.options.repairMax, this.options.windowMs, this.clock),
    };
  }

  /** Forgets sessions that recovered more than a window ago. */
  private prune(): void {
    const now = this.clock.now();
    for (const [key, s] of this.sessions) {
      if (s.recoveredAt !== undefined && now - s.recoveredAt > this.options.windowMs)
        this.sessions.delete(key);
    }
  }
}

function push<T>(list: T[], item: T): void {
  list.push(item);
  if (list.length > KEEP) list.shift();
}
