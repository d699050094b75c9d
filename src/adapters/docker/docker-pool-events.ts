/**
 * What the Docker pool tells the outside: the container handed to `onShed`
 * before it is removed, and the events of every decision it takes (for tests,
 * metrics and logs); and what its governor depends on.
 */
import type Docker from "dockerode";
import type { Clock } from "../../clock.js";
import type { DockerFleetSettings } from "../../fleet-options.js";
import type { Logger } from "../../logger.js";
import type { ContainerOwner } from "./docker-container-spec.js";
import type { MemoryBudget } from "./memory-budget.js";

/** What a shed or reaped container held, given to `onShed` before it goes. */
export interface ShedContainer {
  readonly id: string;
  readonly pool: string;
  readonly workspaceDir: string;
  /** The session of its last turn, whose working copy the workspace holds. */
  readonly session?: { readonly tenant: string; readonly session: string };
  readonly reason: RemovalReason;
}

/**
 * Why the pool removed a container: `start` (to admit a start), `pressure`
 * (over budget), `hard-limit` (past the hard limit with nothing idle left: a
 * busy one, whose turn is retried), `idle-ttl` (reaped).
 */
export type RemovalReason = "start" | "pressure" | "hard-limit" | "idle-ttl";

/** What the pool decided, as it happens. */
export type DockerPoolEvent =
  | {
      type: "sample";
      /** Charged: measured, and at least the reserve for containers starting or busy. */
      usedMb: number;
      /** Really held, as measured. */
      measuredMb: number;
      limitMb: number;
      hostAvailableMb?: number;
      containers: number;
    }
  | {
      type: "admitted";
      /** Starts in flight, this one included. */
      starting: number;
      id: string;
      usedMb: number;
      reserveMb: number;
      limitMb: number;
      waitedMs: number;
    }
  | { type: "waiting"; id: string; usedMb: number; reserveMb: number; limitMb: number }
  | {
      type: "shed";
      id: string;
      reason: Exclude<RemovalReason, "idle-ttl">;
      priority: number;
      state: "idle" | "reserved" | "busy";
      usageMb: number;
      usedMb: number;
      limitMb: number;
      /** Priorities of the candidates this round left in place. */
      keptPriorities: number[];
    }
  | { type: "reaped"; id: string; idleMs: number }
  | { type: "removed"; id: string; reason: RemovalReason }
  | { type: "orphan-removed"; dockerId: string; node: string; name: string };

/** Dependencies of the Docker pool's governor (docker-pool-governor.ts). */
export interface GovernorDeps {
  readonly docker: Docker;
  readonly budget: MemoryBudget;
  readonly owner: ContainerOwner;
  readonly settings: DockerFleetSettings;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly liveNodes?: () => Promise<ReadonlySet<string>>;
  readonly onShed?: (c: ShedContainer) => Promise<void>;
  readonly onEvent?: (event: DockerPoolEvent) => void;
  readonly hostAvailableMb?: () => Promise<number | undefined>;
  /** Orphans younger than this are left alone (their node may not have announced itself yet). */
  readonly orphanGraceMs?: number;
}
