/**
 * Behaviour as text (DESIGN rule 3): the markdown files that shape an agent
 * (AGENTS.md, SOUL.md, prompts, tool policy), versioned in NATS per tenant and
 * runtime profile. Every turn reads the latest version, so a change takes
 * effect at the next turn with no restart; the version's hash goes on the
 * task record.
 */
import { createHash } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../errors.js";
import { isCasConflict } from "../nats/nats-retry.js";

/** Limits on behaviour files. */
export const MAX_BEHAVIOR_FILE_BYTES = 256 * 1024;
export const MAX_BEHAVIOR_TOTAL_BYTES = 1024 * 1024;

const FileName = z
  .string()
  .regex(
    /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/,
    "file names are 1-128 characters of [A-Za-z0-9_.-]",
  );

export const BehaviorSetSchema = z.object({
  files: z.record(FileName, z.string()),
  version: z.number().int().nonnegative(),
  hash: z.string(),
  updatedAt: z.string(),
});
/** One version of a tenant's behaviour for a runtime profile. */
export type BehaviorSet = z.infer<typeof BehaviorSetSchema>;

/** The empty behaviour (no files), what a turn gets before anything was set. */
export const EMPTY_BEHAVIOR: BehaviorSet = {
  files: {},
  version: 0,
  hash: hashFiles({}),
  updatedAt: "",
};

/** A stable content hash of a set of files (order-independent). */
export function hashFiles(files: Record<string, string>): string {
  const h = createHash("sha256");
  for (const name of Object.keys(files).sort()) h.update(`${name}\u0000${files[name]}\u0000`);
  return `sha256:${h.digest("hex").slice(0, 32)}`;
}

/** A change to a behaviour set: files added or replaced, files removed. */
export interface BehaviorChange {
  readonly set?: Readonly<Record<string, string>>;
  readonly remove?: readonly string[];
}

/** Reads and changes behaviour sets in the behaviours bucket. */
export class BehaviorStore {
  constructor(private readonly kv: KV) {}

  /** The latest behaviour of `tenant` for `profile` (empty if none was set). */
  async get(tenant: string, profile: string): Promise<BehaviorSet> {
    const entry = await this.kv.get(key(tenant, profile));
    if (entry?.operation !== "PUT") return EMPTY_BEHAVIOR;
    return { ...BehaviorSetSchema.parse(entry.json()), version: entry.revision };
  }

  /**
   * Writes a new version: `set` files are added or replaced, `remove` names are
   * dropped, everything else is kept. Concurrent changes are serialised by
   * compare-and-set, so none is lost.
   */
  async change(
    tenant: string,
    profile: string,
    change: BehaviorChange,
    now: string,
  ): Promise<BehaviorSet> {
    return (await this.apply(tenant, profile, change, now)) as BehaviorSet;
  }

  /**
   * Like {@link change}, but only if the latest version is still `version`
   * (0: nothing was ever set); null when it is not. For changes made on what
   * a version held, such as a repair, that must not undo a newer one.
   */
  changeIfCurrent(
    tenant: string,
    profile: string,
    version: number,
    change: BehaviorChange,
    now: string,
  ): Promise<BehaviorSet | null> {
    return this.apply(tenant, profile, change, now, version);
  }

  private async apply(
    tenant: string,
    profile: string,
    change: BehaviorChange,
    now: string,
    ifVersion?: number,
  ): Promise<BehaviorSet | null> {
    for (const name of Object.keys(change.set ?? {})) {
      if (!FileName.safeParse(name).success)
        throw new ValidationError(`invalid behaviour file name: ${name}`);
    }
    for (let tries = 0; ; tries++) {
      const k = key(tenant, profile);
      const entry = await this.kv.get(k);
      if (ifVersion !== undefined && (entry?.revision ?? 0) !== ifVersion) return null;
      const current = entry?.operation === "PUT" ? BehaviorSetSchema.parse(entry.json()).files : {};
      const files: Record<string, string> = { ...current, ...change.set };
      for (const name of change.remove ?? []) delete files[name];
      checkSizes(files);
      const next = { files, version: 0, hash: hashFiles(files), updatedAt: now };
      try {
        const revision = entry
          ? await this.kv.update(k, JSON.stringify(next), entry.revision)
          : await this.kv.create(k, JSON.stringify(next));
        return { ...next, version: revision };
      } catch (err) {
        if (!isCasConflict(err) || tries >= 10) throw err;
      }
    }
  }

  /** Every kept version, oldest first (the bucket keeps the last 64). */
  async history(tenant: string, profile: string): Promise<BehaviorSet[]> {
    const out: BehaviorSet[] = [];
    const iter = await this.kv.history({ key: key(tenant, profile) });
    for await (const e of iter) {
      if (e.operation !== "PUT") continue;
      out.push({ ...BehaviorSetSchema.parse(e.json()), version: e.revision });
    }
    return out;
  }
}

function key(tenant: string, profile: string): string {
  return `${tenant}.${profile}`;
}

function checkSizes(files: Record<string, string>): void {
  let total = 0;
  for (const [name, text] of Object.entries(files)) {
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_BEHAVIOR_FILE_BYTES) {
      throw new ValidationError(
        `behaviour file ${name} is ${bytes} bytes; the limit is ${MAX_BEHAVIOR_FILE_BYTES}`,
        {
          code: ErrorCodes.BEHAVIOR_TOO_LARGE,
        },
      );
    }
    total += bytes;
  }
  if (total > MAX_BEHAVIOR_TOTAL_BYTES) {
    throw new ValidationError(
      `behaviour files total ${total} bytes; the limit is ${MAX_BEHAVIOR_TOTAL_BYTES}`,
      {
        code: ErrorCodes.BEHAVIOR_TOO_LARGE,
      },
    );
  }
}
