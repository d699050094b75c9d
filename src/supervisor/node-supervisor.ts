/**
 * The root of a node's supervision tree: one actor per node whose children are
 * its pools (which supervise their containers, which restart their agents).
 * A pool actor that crashes (an error thrown inside it: a bug, never a
 * container's failure, which the pool handles itself) is started again, as
 * an OTP one-for-one supervisor would, after stopping the dead pool's
 * containers (XState stops an errored actor, not its children); past
 * `poolRestartMax` crashes within `windowMs` the node gives up: it enters
 * `failed`, and the node role stops taking work and announces why in its
 * heartbeat (shown by `tree`), so the orchestrator places elsewhere and a
 * person looks.
 */
import { type ActorRefFrom, assign, type EventObject, setup } from "xstate";
import { poolMachine } from "../actors/pool-machine.js";
import type { PoolProfile } from "../fleet-options.js";

/** Input of {@link nodeSupervisorMachine}. */
export interface NodeSupervisorInput {
  readonly profiles: readonly PoolProfile[];
  /** Makes a fresh container id (unique across the fleet). */
  readonly newId: () => string;
  /** Pool crashes restarted within `windowMs` before the node gives up. */
  readonly poolRestartMax: number;
  readonly windowMs: number;
  /** The node's clock (restart intensity is judged on it). */
  readonly now: () => number;
}

type PoolRef = ActorRefFrom<typeof poolMachine>;

/** The supervisor's state: its pools, their crash counts, and why it gave up. */
export interface NodeSupervisorContext {
  readonly profiles: readonly PoolProfile[];
  readonly newId: () => string;
  readonly poolRestartMax: number;
  readonly windowMs: number;
  readonly now: () => number;
  pools: Record<string, PoolRef>;
  /** Crashes restarted, per pool, over the node's life (for the tree). */
  poolCrashes: Record<string, number>;
  /** When the recent crashes happened (restart intensity). */
  crashTimes: number[];
  /** Why the node gave up. */
  failure: string | null;
}

/** `STOP`, or a child's error (`xstate.error.actor.<id>`, carrying `error`). */
export type NodeSupervisorEvent = { type: "STOP" } | (EventObject & { error?: unknown });

/** The child id of pool `name`. */
export const poolActorId = (name: string) => `pool:${name}`;

const ERROR_PREFIX = "xstate.error.actor.pool:";

const poolOf = (event: EventObject) => event.type.slice(ERROR_PREFIX.length);

const recentCrashes = (context: NodeSupervisorContext) =>
  context.crashTimes.filter((t) => context.now() - t <= context.windowMs);

/**
 * The node supervisor; provide `pool` (the pool machine with its containers'
 * actors) and the `gaveUp` action (what the node does when it gives up).
 */
export const nodeSupervisorMachine = setup({
  types: {
    context: {} as NodeSupervisorContext,
    events: {} as NodeSupervisorEvent,
    input: {} as NodeSupervisorInput,
  },
  actors: { pool: poolMachine },
  guards: {
    mayRestart: ({ context }) => recentCrashes(context).length < context.poolRestartMax,
  },
  actions: {
    // The crashed pool's containers are still running: stop them (each stops its agent).
    stopOrphans: ({ context, event }) => {
      const dead = context.pools[poolOf(event)];
      const containers = dead?.getSnapshot().context?.containers ?? {};
      for (const ref of Object.values(containers)) ref.send({ type: "STOP" });
    },
    restartPool: assign(({ context, event, spawn }) => {
      const name = poolOf(event);
      const profile = context.profiles.find((p) => p.name === name);
      if (!profile) return {};
      return {
        pools: {
          ...context.pools,
          [name]: spawn("pool", {
            id: poolActorId(name),
            input: { name, profile, newId: context.newId },
          }),
        },
        poolCrashes: { ...context.poolCrashes, [name]: (context.poolCrashes[name] ?? 0) + 1 },
        crashTimes: [...recentCrashes(context), context.now()],
      };
    }),
    recordFailure: assign({
      failure: ({ context, event }) =>
        `pool ${poolOf(event)} crashed ${recentCrashes(context).length + 1} times within ${context.windowMs} ms: ${describe(errorOf(event))}`,
    }),
    /** Provided by the node role. */
    gaveUp: () => {},
    /** Provided by the node role: a pool crashed (and its containers with it). */
    poolCrashed: (_, _params: { pool: string; error: string }) => {},
  },
}).createMachine({
  id: "node",
  context: ({ input, spawn }) => ({
    profiles: input.profiles,
    newId: input.newId,
    poolRestartMax: input.poolRestartMax,
    windowMs: input.windowMs,
    now: input.now,
    pools: Object.fromEntries(
      input.profiles.map((profile) => [
        profile.name,
        spawn("pool", {
          id: poolActorId(profile.name),
          input: { name: profile.name, profile, newId: input.newId },
        }),
      ]),
    ),
    poolCrashes: {},
    crashTimes: [],
    failure: null,
  }),
  initial: "supervising",
  // Every state takes child errors: one it did not would make the root itself fail, and an
  // unobserved root's failure is thrown, which would take the whole process down.
  on: {
    "xstate.error.actor.*": {
      actions: [
        {
          type: "poolCrashed",
          params: ({ event }) => ({ pool: poolOf(event), error: describe(errorOf(event)) }),
        },
        "stopOrphans",
      ],
    },
  },
  states: {
    supervising: {
      on: {
        "xstate.error.actor.*": [
          // Only pools are children; an error of anything else is taken and ignored.
          { guard: ({ event }) => !event.type.startsWith(ERROR_PREFIX) },
          {
            guard: "mayRestart",
            actions: [
              {
                type: "poolCrashed",
                params: ({ event }) => ({ pool: poolOf(event), error: describe(errorOf(event)) }),
              },
              "stopOrphans",
              "restartPool",
            ],
          },
          {
            target: "failed",
            actions: [
              {
                type: "poolCrashed",
                params: ({ event }) => ({ pool: poolOf(event), error: describe(errorOf(event)) }),
              },
              "stopOrphans",
              "recordFailure",
            ],
          },
        ],
        STOP: "stopping",
      },
    },
    // Gave up: serves no more work until the node is restarted.
    failed: { entry: "gaveUp", on: { STOP: "stopping" } },
    // The node role stops the pools; a crash now only has its containers stopped.
    stopping: {},
  },
});

function errorOf(event: NodeSupervisorEvent): unknown {
  return "error" in event ? event.error : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
