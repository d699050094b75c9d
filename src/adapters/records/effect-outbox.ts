/**
 * Exactly-once delivery of agent side effects. Each effect is keyed by
 * `taskId.step` in the outbox bucket, published on
 * `<prefix>.effects.<tenant>.<kind>` with the message id `taskId/step` (so the
 * stream drops a second publish within its duplicate window), then marked
 * published (so a replay after the window is not sent again either).
 */
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { FleetSubjects } from "../../protocol/fleet-subjects.js";

/** One effect as stored in the outbox. */
export interface OutboxEntry {
  readonly tenant: string;
  readonly taskId: string;
  readonly step: number;
  readonly kind: string;
  readonly payload: unknown;
  readonly published: boolean;
}

/** Whether an effect went out now or had gone out before. */
export type DeliveryResult = "sent" | "duplicate";

/** The outbox of one process. */
export class EffectOutbox {
  constructor(
    private readonly kv: KV,
    private readonly js: JetStreamClient,
    private readonly subjects: FleetSubjects,
  ) {}

  /** Delivers the effect of `taskId`'s `step` once, however often it is replayed. */
  async deliver(effect: Omit<OutboxEntry, "published">): Promise<DeliveryResult> {
    const key = `${effect.taskId}.${effect.step}`;
    const entry = await this.kv.get(key);
    let stored = entry?.operation === "PUT" ? entry.json<OutboxEntry>() : null;
    if (stored?.published) return "duplicate";
    if (!stored) {
      stored = { ...effect, published: false };
      // The first attempt's effect wins: a replay publishes what was recorded, not a new payload.
      await this.kv.create(key, JSON.stringify(stored)).catch(async () => {
        const again = await this.kv.get(key);
        if (again?.operation === "PUT") stored = again.json<OutboxEntry>();
      });
      if (stored.published) return "duplicate";
    }
    const ack = await this.js.publish(
      this.subjects.effect(stored.tenant, stored.kind),
      JSON.stringify({ taskId: stored.taskId, step: stored.step, payload: stored.payload }),
      { msgID: `${stored.taskId}/${stored.step}` },
    );
    await this.kv.put(key, JSON.stringify({ ...stored, published: true }));
    return ack.duplicate ? "duplicate" : "sent";
  }
}
