/**
 * The orchestrator role: campaigns for the fleet's leader lease and, while it
 * holds it, runs a {@link TaskScheduler}. Standbys take over when the leader's
 * lease expires (or at once when it steps down cleanly).
 */
import { type Actor, createActor, fromCallback, toPromise } from "xstate";
import { type OrchestratorEvent, orchestratorMachine } from "../actors/orchestrator-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { LeaderLease, ORCHESTRATOR_LEASE_KEY } from "../adapters/records/leader-lease.js";
import { type Clock, every, systemClock } from "../clock.js";
import { toErrorInfo } from "../errors.js";
import type { ResolvedFleetOptions } from "../fleet-options.js";
import { type Logger, silentLogger } from "../logger.js";
import { TaskScheduler } from "./task-scheduler.js";

export interface FleetOrchestratorDeps {
  readonly nats: FleetNats;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** This contender's id. Default: the node id from options. */
  readonly id?: string;
}

/** A running orchestrator (leader or standby). */
export class FleetOrchestrator {
  readonly id: string;
  private readonly actor: Actor<typeof orchestratorMachine>;
  private scheduler: TaskScheduler | null = null;
  private stepDown: Promise<void> = Promise.resolve();

  private constructor(options: ResolvedFleetOptions, deps: FleetOrchestratorDeps) {
    this.id = deps.id ?? options.nodeId;
    const clock = deps.clock ?? systemClock;
    const log = (deps.logger ?? silentLogger).child({ role: "orchestrator", id: this.id });
    const lease = new LeaderLease(
      deps.nats.kv.leases,
      ORCHESTRATOR_LEASE_KEY,
      this.id,
      options.nodeTimeoutMs,
      clock,
    );
    const renewMs = Math.max(20, Math.floor(options.nodeTimeoutMs / 5));

    const campaign = fromCallback<OrchestratorEvent>(({ sendBack }) => {
      let busy = false;
      const attempt = () => {
        if (busy) return;
        busy = true;
        lease
          .tryAcquire()
          .then((won) => won && sendBack({ type: "ELECTED" }))
          .catch((err) => log.warn({ err: toErrorInfo(err) }, "campaign failed"))
          .finally(() => {
            busy = false;
          });
      };
      attempt();
      return every(clock, renewMs, attempt);
    });

    const lead = fromCallback<OrchestratorEvent>(({ sendBack }) => {
      const scheduler = new TaskScheduler(this.id, deps.nats, options, clock, log);
      this.scheduler = scheduler;
      log.info({}, "leading");
      scheduler.start().catch((err) => {
        log.error({ err: toErrorInfo(err) }, "scheduler failed to start");
        sendBack({ type: "DEPOSED", reason: "scheduler failed to start" });
      });
      // A takeover deposes at once; a disconnect only shortly before the lease could lapse.
      let lastOk = clock.now();
      const stopRenewing = every(clock, renewMs, () => {
        lease.renew().then(
          (ok) => {
            if (ok) lastOk = clock.now();
            else sendBack({ type: "DEPOSED", reason: "lease taken over" });
          },
          () => {
            if (clock.now() - lastOk >= 0.8 * options.nodeTimeoutMs)
              sendBack({ type: "DEPOSED", reason: "lease lapsed" });
          },
        );
      });
      return () => {
        stopRenewing();
        this.scheduler = null;
        this.stepDown = scheduler.stop().then(() => lease.release());
      };
    });

    this.actor = createActor(orchestratorMachine.provide({ actors: { campaign, lead } }), {
      clock,
    });
    this.leaseSince = () => lease.heldSince;
  }

  private readonly leaseSince: () => string;

  /** Starts campaigning (and leading once elected). */
  static start(options: ResolvedFleetOptions, deps: FleetOrchestratorDeps): FleetOrchestrator {
    const o = new FleetOrchestrator(options, deps);
    o.actor.start();
    return o;
  }

  /** Whether this orchestrator leads now. */
  get leading(): boolean {
    return this.actor.getSnapshot().value === "leading";
  }

  /** Status of the scheduler while leading. */
  status() {
    return this.scheduler?.status(this.leaseSince()) ?? null;
  }

  /** Resolves once this orchestrator leads. */
  async whenLeading(): Promise<void> {
    if (this.leading) return;
    await new Promise<void>((resolve) => {
      const sub = this.actor.subscribe((s) => {
        if (s.value === "leading") {
          sub.unsubscribe();
          resolve();
        }
      });
    });
  }

  /** Stops leading (releasing the lease for a standby) and campaigning. */
  async stop(): Promise<void> {
    if (this.actor.getSnapshot().status === "active") this.actor.send({ type: "STOP" });
    await toPromise(this.actor).catch(() => {});
    await this.stepDown;
  }
}
