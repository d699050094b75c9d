/**
 * The behaviour endpoints of the public API: `behavior.set`, `behavior.get`
 * and `behavior.history` on `<prefix>.api.`, per tenant and runtime profile.
 */
import { z } from "zod";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { BehaviorStore } from "../adapters/records/behavior-store.js";
import { type Clock, isoNow } from "../clock.js";
import { NotFoundError } from "../errors.js";
import { IdSchema } from "../protocol/api-schemas.js";

const Target = {
  tenant: IdSchema.default("default"),
  profile: IdSchema.default("default"),
};

export const BehaviorSetRequestSchema = z.strictObject({
  ...Target,
  files: z.record(z.string(), z.string()).default({}),
  remove: z.array(z.string()).default([]),
});
export const BehaviorGetRequestSchema = z.strictObject({
  ...Target,
  version: z.number().int().positive().optional(),
});
export const BehaviorHistoryRequestSchema = z.strictObject(Target);

/** Handlers keyed by endpoint subject (relative to `<prefix>.api`). */
export function behaviorEndpoints(
  nats: FleetNats,
  clock: Clock,
  parse: <S extends z.ZodType>(schema: S, body: unknown) => z.output<S>,
): Record<string, (body: unknown) => Promise<object>> {
  const store = new BehaviorStore(nats.kv.behaviors);
  return {
    "behavior.set": async (body) => {
      const req = parse(BehaviorSetRequestSchema, body);
      const behavior = await store.change(
        req.tenant,
        req.profile,
        { set: req.files, remove: req.remove },
        isoNow(clock),
      );
      return { behavior };
    },
    "behavior.get": async (body) => {
      const req = parse(BehaviorGetRequestSchema, body);
      if (req.version === undefined) return { behavior: await store.get(req.tenant, req.profile) };
      const found = (await store.history(req.tenant, req.profile)).find(
        (b) => b.version === req.version,
      );
      if (!found)
        throw new NotFoundError(
          `no behaviour version ${req.version} for ${req.tenant}/${req.profile}`,
        );
      return { behavior: found };
    },
    "behavior.history": async (body) => {
      const req = parse(BehaviorHistoryRequestSchema, body);
      const versions = (await store.history(req.tenant, req.profile)).map((b) => ({
        version: b.version,
        hash: b.hash,
        updatedAt: b.updatedAt,
        files: Object.keys(b.files).sort(),
      }));
      return { versions };
    },
  };
}
