/**
 * The state endpoints of the public API: `snapshots` lists a session's
 * versions; `restore` makes an older version (by number, or the latest at or
 * before a time) the session's newest one. Nothing is overwritten: the restore
 * is a new version with the old one as its parent, and the next turn, on any
 * container, starts from it (warm copies notice that they are behind).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { z } from "zod";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import {
  SnapshotStore,
  SQLITE_LIVE_FILES,
  type VersionInfo,
} from "../adapters/snapshots/snapshot-store.js";
import type { Clock } from "../clock.js";
import { IdSchema } from "../protocol/api-schemas.js";

export const SnapshotsRequestSchema = z.strictObject({
  tenant: IdSchema.default("default"),
  session: IdSchema,
});

export const RestoreRequestSchema = z
  .strictObject({
    tenant: IdSchema.default("default"),
    session: IdSchema,
    version: z.number().int().positive().optional(),
    /** ISO time: the newest version taken at or before it. */
    at: z.iso.datetime({ offset: true }).optional(),
  })
  .refine((r) => (r.version === undefined) !== (r.at === undefined), {
    message: "give exactly one of version or at",
  });

/** A version as the API shows it. */
function view(v: VersionInfo) {
  return {
    version: v.version,
    createdAt: v.createdAt,
    files: v.files,
    bytes: v.bytes,
    knownGood: v.knownGood,
    reason: v.reason,
    parent: v.parent,
  };
}

/** Handlers keyed by endpoint subject (relative to `<prefix>.api`). */
export function snapshotEndpoints(
  nats: FleetNats,
  clock: Clock,
  parse: <S extends z.ZodType>(schema: S, body: unknown) => z.output<S>,
): Record<string, (body: unknown) => Promise<object>> {
  let opened: Promise<SnapshotStore> | null = null;
  const store = () => {
    opened ??= SnapshotStore.open(nats.nc, { prefix: nats.subjects.prefix }, clock);
    return opened;
  };
  return {
    snapshots: async (body) => {
      const req = parse(SnapshotsRequestSchema, body);
      const versions = await (await store()).versions(req.tenant, req.session);
      return { tenant: req.tenant, session: req.session, versions: versions.map(view) };
    },
    restore: async (body) => {
      const req = parse(RestoreRequestSchema, body);
      const snapshots = await store();
      // Through a scratch directory: every chunk is already stored, so nothing is uploaded again.
      const dir = await mkdtemp(path.join(tmpdir(), "clawfleet-restore-"));
      try {
        const work = path.join(dir, "ws");
        const from = await snapshots.restore(
          req.tenant,
          req.session,
          work,
          req.version !== undefined ? { version: req.version } : { at: new Date(req.at!) },
        );
        const restored = await snapshots.snapshot(req.tenant, req.session, work, {
          exclude: SQLITE_LIVE_FILES,
          reason: `restore of version ${from.version}`,
          parent: from.version,
          // Going back is a person's decision: the result is where turns go on from.
          knownGood: true,
        });
        return { from: view(from), version: view(restored) };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
