/**
 * Critical alerts and quarantined sessions, in the alerts bucket (no TTL: a
 * quarantine lasts until a person releases it). The last tier of the healing
 * ladder writes a post-mortem as `alert.<id>`, marks the session with
 * `quarantine.<tenant>.<session>`, and publishes the alert on
 * `<prefix>.alerts.critical`. The orchestrator fails new tasks of a marked
 * session at once; `clawfleet session release` removes the mark.
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { ErrorInfoSchema } from "../../protocol/api-schemas.js";
import { bucketKeys, type FleetNats } from "../nats/fleet-nats.js";

export const TierEntrySchema = z.object({
  tier: z.number(),
  remedy: z.string(),
  at: z.string(),
  taskId: z.string(),
  attempt: z.number(),
  error: ErrorInfoSchema,
});

/** What a person needs to understand why a session was given up on. */
export const PostMortemSchema = z.object({
  alertId: z.string(),
  severity: z.literal("critical"),
  tenant: z.string(),
  session: z.string(),
  taskId: z.string(),
  at: z.string(),
  summary: z.string(),
  /** The tiers tried, with times, oldest first. */
  tiers: z.array(TierEntrySchema),
  /** The last errors the session's attempts ended with, oldest first. */
  lastErrors: z.array(ErrorInfoSchema),
  /** The agent's last log lines from the final attempt. */
  logTail: z.array(z.string()),
  /** The failing task's timeline (see `fleet.api.timeline`). */
  timeline: z.array(z.unknown()),
});
export type PostMortem = z.infer<typeof PostMortemSchema>;

export const QuarantineSchema = z.object({
  tenant: z.string(),
  session: z.string(),
  alertId: z.string(),
  since: z.string(),
});
export type Quarantine = z.infer<typeof QuarantineSchema>;

const quarantineKey = (tenant: string, session: string) => `quarantine.${tenant}.${session}`;

/** Reads and writes alerts and quarantines. */
export class QuarantineRegistry {
  constructor(private readonly nats: FleetNats) {}

  /** A fresh alert id. */
  static newAlertId(now: number): string {
    return `a${now.toString(36)}${randomBytes(4).toString("hex")}`;
  }

  /** Stores the post-mortem, quarantines its session, and publishes the alert. */
  async raise(pm: PostMortem): Promise<void> {
    const { kv, nc, subjects } = this.nats;
    await kv.alerts.put(`alert.${pm.alertId}`, JSON.stringify(pm));
    const q: Quarantine = {
      tenant: pm.tenant,
      session: pm.session,
      alertId: pm.alertId,
      since: pm.at,
    };
    await kv.alerts.put(quarantineKey(pm.tenant, pm.session), JSON.stringify(q));
    nc.publish(subjects.alertsCritical, JSON.stringify(pm));
  }

  /** Lifts a session's quarantine; false if it had none. */
  async release(tenant: string, session: string): Promise<boolean> {
    const entry = await this.nats.kv.alerts.get(quarantineKey(tenant, session));
    if (entry?.operation !== "PUT") return false;
    await this.nats.kv.alerts.delete(quarantineKey(tenant, session));
    return true;
  }

  /** Every stored post-mortem, oldest first. */
  async alerts(): Promise<PostMortem[]> {
    const out: PostMortem[] = [];
    for (const k of await bucketKeys(this.nats.jsm, this.nats.subjects.buckets.alerts, "alert.>")) {
      const e = await this.nats.kv.alerts.get(k);
      if (e?.operation !== "PUT") continue;
      const pm = PostMortemSchema.safeParse(e.json());
      if (pm.success) out.push(pm.data);
    }
    return out.sort((a, b) => a.at.localeCompare(b.at));
  }

  /** Sessions quarantined now. */
  async quarantines(): Promise<Quarantine[]> {
    const out: Quarantine[] = [];
    for (const k of await bucketKeys(
      this.nats.jsm,
      this.nats.subjects.buckets.alerts,
      "quarantine.>",
    )) {
      const e = await this.nats.kv.alerts.get(k);
      const q = e?.operation === "PUT" ? QuarantineSchema.safeParse(e.json()) : null;
      if (q?.success) out.push(q.data);
    }
    return out;
  }

  /** Calls `onChange` with every quarantine mark as it is set (`true`) or lifted (`false`). */
  async watch(
    onChange: (key: { tenant: string; session: string }, quarantined: boolean) => void,
  ): Promise<() => void> {
    const w = await this.nats.kv.alerts.watch({ key: "quarantine.>" });
    void (async () => {
      for await (const e of w) {
        const [, tenant = "", session = ""] = e.key.split(".");
        onChange({ tenant, session }, e.operation === "PUT");
      }
    })();
    return () => w.stop();
  }
}
