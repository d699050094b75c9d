/**
 * Placement for one term: the head task of every waiting session walks the
 * preference ladder (with this term's claims applied, so two tasks are never
 * sent to one idle container between heartbeats), and its actor is told where
 * to run. Placing is batched: any number of changes in one tick cost one pass.
 * The actor's `dispatch` is the request to the chosen node.
 */
import type { FleetView } from "../actors/placement-ladder.js";
import { type DispatchInput, dispatchRequestOf, priorityRank } from "../actors/task-machine.js";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { type DispatchReply, DispatchReplySchema } from "../protocol/fleet-messages.js";
import type { OpenTask, OpenTasks } from "./open-tasks.js";
import type { PlacementClaims } from "./placement-claims.js";

/** How long a node has to answer a dispatch before the attempt counts as spent. */
const DISPATCH_TIMEOUT_MS = 5000;

/** The placement loop of one term. */
export class TaskPlacer {
  /** Placements by rung, for `status`. */
  readonly placements: Record<string, number> = {};
  private queued = false;
  private stopped = false;

  constructor(
    private readonly nats: FleetNats,
    private readonly tasks: OpenTasks,
    private readonly claims: PlacementClaims,
    private readonly view: () => FleetView,
  ) {}

  /** Places what can be placed, once, after the current tick's changes. */
  schedule(): void {
    if (this.queued || this.stopped) return;
    this.queued = true;
    queueMicrotask(() => {
      this.queued = false;
      if (!this.stopped) this.placeQueued();
    });
  }

  stop(): void {
    this.stopped = true;
  }

  /** Counts a placement by its rung. */
  placed(rung: string): void {
    this.placements[rung] = (this.placements[rung] ?? 0) + 1;
  }

  /** Asks the chosen node to run the attempt (the task actor's `dispatch`). */
  async dispatch(input: DispatchInput): Promise<DispatchReply> {
    const reply = await this.nats.nc.request(
      this.nats.subjects.node(input.placement.node, "dispatch"),
      JSON.stringify(dispatchRequestOf(input)),
      { timeout: DISPATCH_TIMEOUT_MS },
    );
    return DispatchReplySchema.parse(reply.json());
  }

  /** Places the head task of every session that waits: higher priority, then older, first. */
  private placeQueued(): void {
    const heads: OpenTask[] = [];
    for (const head of this.tasks.heads()) {
      if (head.actor.getSnapshot().value === "queued") heads.push(head);
    }
    if (heads.length === 0) return;
    const rank = (t: OpenTask) => priorityRank(t.actor.getSnapshot().context.record.priority);
    heads.sort((a, b) => rank(b) - rank(a) || a.seq - b.seq);
    const view = this.view();
    // Two passes, so a cold task never takes the idle container a warm session is waiting for.
    for (const warmPass of [true, false]) {
      for (const t of heads) {
        const snap = t.actor.getSnapshot();
        if (snap.value !== "queued") continue;
        const { record, avoid } = snap.context;
        const d = this.claims.decide(record.tenant, record.session, view, {
          taskId: record.taskId,
          avoid: new Set(avoid),
        });
        if (d.kind !== "place") continue;
        const warm = d.placement.rung === "warm" || d.placement.rung === "reserved";
        if (warm !== warmPass) continue;
        this.claims.claim(record.taskId, d.placement);
        t.actor.send({ type: "PLACE", placement: d.placement });
      }
    }
  }
}
