/**
 * The pool actor: one per node × runtime profile. It owns its container actors
 * as children, keeps `minIdle` of them started and idle, never holds more than
 * `max`, throttles concurrent starts, and replaces containers that die, with a
 * growing delay while starts keep failing (so a broken image cannot spin).
 */
import { type ActorRefFrom, assign, enqueueActions, setup } from "xstate";
import type { PoolProfile } from "../fleet-options.js";
import type {
  ContainerInfo,
  ContainerState,
  DispatchRequest,
  NodeHeartbeat,
} from "../protocol/fleet-messages.js";
import { type ContainerContext, containerMachine, containerStateOf } from "./container-machine.js";

export interface PoolMachineInput {
  readonly name: string;
  readonly profile: PoolProfile;
  /** Makes a fresh container id (unique across the fleet). */
  readonly newId: () => string;
}

type ContainerRef = ActorRefFrom<typeof containerMachine>;

export interface PoolContext {
  name: string;
  profile: PoolProfile;
  newId: () => string;
  containers: Record<string, ContainerRef>;
  /** Starts that failed in a row; resets when a container comes up. */
  startFailures: number;
  /** Containers that left service on their own (failed or died), for the supervision tree. */
  replaced: number;
}

export type PoolEvent =
  | { type: "SPAWN"; id: string; task?: DispatchRequest }
  | { type: "CHECK" }
  | { type: "CONTAINER_UP"; id: string }
  | { type: "CONTAINER_GONE"; id: string; failedToStart: boolean }
  | { type: "STOP" };

const MAX_RESTART_DELAY_MS = 10_000;

/** Counts of this pool's containers by state. */
export function poolStates(context: PoolContext): Record<ContainerState, number> {
  const counts = {} as Record<ContainerState, number>;
  for (const ref of Object.values(context.containers)) {
    const s = containerStateOf(ref.getSnapshot());
    counts[s] = (counts[s] ?? 0) + 1;
  }
  return counts;
}

/**
 * How a node announces one pool (run by `context`, under `profile`) in its
 * heartbeat: the pool's summary and each of its containers, as of `at`.
 */
export function announcePool(
  node: string,
  profile: PoolProfile,
  context: PoolContext,
  at: string,
  crashes = 0,
): { pool: NodeHeartbeat["pools"][number]; containers: ContainerInfo[] } {
  const containers = Object.values(context.containers).map((ref): ContainerInfo => {
    const snap = ref.getSnapshot();
    const c: ContainerContext = snap.context;
    const holder = c.task ?? c.warm;
    return {
      id: c.id,
      node,
      pool: profile.name,
      runtime: profile.runtime,
      state: containerStateOf(snap),
      tenant: holder?.tenant,
      session: holder?.session,
      taskId: c.task?.taskId,
      restarts: c.agentRestarts,
      updatedAt: at,
    };
  });
  const pool = {
    node,
    name: profile.name,
    runtime: profile.runtime,
    minIdle: profile.minIdle,
    max: profile.max,
    size: containers.length,
    states: poolStates(context),
    restarts: context.replaced,
    crashes,
  };
  return { pool, containers };
}

/** Why a new container cannot be started now, or null if it can. */
export function refuseStart(context: PoolContext): string | null {
  const states = poolStates(context);
  const size = Object.keys(context.containers).length;
  if (size >= context.profile.max) return "POOL_FULL";
  if ((states.starting ?? 0) >= context.profile.maxConcurrentStarts) return "POOL_THROTTLED";
  return null;
}

/** The pool machine; spawns `container` children (provide its actors via `provide`). */
export const poolMachine = setup({
  types: {
    context: {} as PoolContext,
    events: {} as PoolEvent,
    input: {} as PoolMachineInput,
  },
  actors: { container: containerMachine },
  delays: {
    restartDelay: ({ context }) =>
      Math.min(250 * 2 ** Math.max(0, context.startFailures - 1), MAX_RESTART_DELAY_MS),
  },
  guards: {
    hasRoom: ({ context }) => Object.keys(context.containers).length < context.profile.max,
  },
  actions: {
    spawnContainer: assign({
      containers: ({ context, event, spawn }) =>
        event.type !== "SPAWN"
          ? context.containers
          : {
              ...context.containers,
              [event.id]: spawn("container", {
                id: event.id,
                input: {
                  id: event.id,
                  pool: context.name,
                  task: event.task,
                  reservedWindowMs: context.profile.reservedWindowMs,
                  maxAgentRestarts: context.profile.maxAgentRestarts,
                  agentRestartWindowMs: context.profile.agentRestartWindowMs,
                },
              }),
            },
    }),
    // Top up to minIdle ready-or-starting containers, within max and the start throttle.
    replenish: enqueueActions(({ context, enqueue }) => {
      const states = poolStates(context);
      let size = Object.keys(context.containers).length;
      let starting = states.starting ?? 0;
      let spare = (states.idle ?? 0) + starting;
      while (
        spare < context.profile.minIdle &&
        size < context.profile.max &&
        starting < context.profile.maxConcurrentStarts
      ) {
        enqueue.raise({ type: "SPAWN", id: context.newId() });
        size++;
        starting++;
        spare++;
      }
    }),
  },
}).createMachine({
  id: "pool",
  context: ({ input }) => ({
    name: input.name,
    profile: input.profile,
    newId: input.newId,
    containers: {},
    startFailures: 0,
    replaced: 0,
  }),
  initial: "running",
  states: {
    running: {
      entry: "replenish",
      on: {
        SPAWN: { guard: "hasRoom", actions: "spawnContainer" },
        CHECK: { actions: "replenish" },
        CONTAINER_UP: { actions: assign({ startFailures: 0 }) },
        CONTAINER_GONE: [
          {
            guard: ({ event }) => event.failedToStart,
            target: "backoff",
            actions: assign({
              containers: ({ context, event }) => without(context.containers, event.id),
              startFailures: ({ context }) => context.startFailures + 1,
              replaced: ({ context }) => context.replaced + 1,
            }),
          },
          {
            actions: [
              assign({
                containers: ({ context, event }) => without(context.containers, event.id),
                replaced: ({ context }) => context.replaced + 1,
              }),
              "replenish",
            ],
          },
        ],
        STOP: "stopping",
      },
    },
    // Starts are failing: wait before trying again, still serving what is up.
    backoff: {
      after: { restartDelay: "running" },
      on: {
        SPAWN: { guard: "hasRoom", actions: "spawnContainer" },
        CONTAINER_UP: { target: "running", actions: assign({ startFailures: 0 }) },
        CONTAINER_GONE: {
          actions: assign({
            containers: ({ context, event }) => without(context.containers, event.id),
            startFailures: ({ context, event }) =>
              context.startFailures + (event.failedToStart ? 1 : 0),
            replaced: ({ context }) => context.replaced + 1,
          }),
        },
        STOP: "stopping",
      },
    },
    stopping: {
      entry: ({ context }) => {
        for (const ref of Object.values(context.containers)) ref.send({ type: "STOP" });
      },
      always: {
        guard: ({ context }) => Object.keys(context.containers).length === 0,
        target: "stopped",
      },
      on: {
        CONTAINER_GONE: {
          actions: assign({
            containers: ({ context, event }) => without(context.containers, event.id),
          }),
        },
      },
    },
    // Not a final state: the last children's done events still arrive after their
    // CONTAINER_GONE, and a finished actor would drop them with a warning.
    stopped: {},
  },
});

function without<T>(record: Record<string, T>, key: string): Record<string, T> {
  const { [key]: _, ...rest } = record;
  return rest;
}
