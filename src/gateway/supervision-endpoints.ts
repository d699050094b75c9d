/**
 * The supervision endpoints of the public API: `alerts` (post-mortems and
 * quarantined sessions) and `session.release` (lift a quarantine).
 */
import { z } from "zod";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { QuarantineRegistry } from "../adapters/records/quarantine-registry.js";
import { IdSchema } from "../protocol/api-schemas.js";

export const ReleaseRequestSchema = z.strictObject({
  tenant: IdSchema.default("default"),
  session: IdSchema,
});

/** Handlers keyed by endpoint subject (relative to `<prefix>.api`). */
export function supervisionEndpoints(
  nats: FleetNats,
  parse: <S extends z.ZodType>(schema: S, body: unknown) => z.output<S>,
): Record<string, (body: unknown) => Promise<object>> {
  const registry = new QuarantineRegistry(nats);
  return {
    alerts: async () => ({
      alerts: await registry.alerts(),
      quarantined: await registry.quarantines(),
    }),
    "session.release": async (body) => {
      const req = parse(ReleaseRequestSchema, body);
      return {
        tenant: req.tenant,
        session: req.session,
        released: await registry.release(req.tenant, req.session),
      };
    },
  };
}
