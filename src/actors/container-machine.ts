/**
 * The container actor: one per container on a node, child of its pool.
 *
 * `starting → idle ⇄ busy → reserved → idle`, `failed` when the agent dies or cannot
 * start, `stopping → stopped` on request. It holds at most one session's
 * working copy: after a successful turn it is reserved for that session for a
 * while, then idle but still warm; after a failed turn its copy is suspect and
 * it holds nothing.
 *
 * All I/O is in named actors the node runtime provides (`startContainer`,
 * `runTask`, `watchExit`, `stopContainer`), so the machine is testable alone.
 */
import { assign, fromCallback, fromPromise, raise, sendParent, setup } from "xstate";
import type { ContainerHandle, ExitInfo } from "../adapters/agent-link/pool-adapter.js";
import { InternalError } from "../errors.js";
import type { ContainerState, DispatchRequest } from "../protocol/fleet-messages.js";

/** How a turn ended, from the container's point of view. */
export interface TaskOutcome {
  /** The turn succeeded and the session's state was saved. */
  readonly ok: boolean;
  /** The agent is still alive and may take another turn. */
  readonly agentAlive: boolean;
}

export interface ContainerMachineInput {
  readonly id: string;
  readonly pool: string;
  /** How long a container stays reserved for the session it just served. */
  readonly reservedWindowMs: number;
  /** Agent restarts in place allowed within `agentRestartWindowMs` before the container fails. */
  readonly maxAgentRestarts?: number;
  /** The restart-intensity window of tier 1. Default 300 000 ms. */
  readonly agentRestartWindowMs?: number;
  /** A task to run as soon as the container is up (a "new container" placement). */
  readonly task?: DispatchRequest;
}

export interface ContainerContext {
  id: string;
  pool: string;
  reservedWindowMs: number;
  maxAgentRestarts: number;
  agentRestartWindowMs: number;
  /** Agent restarts within the last window (restart intensity of tier 1). */
  recentRestarts: number;
  /** Agent restarts in place over the container's life, for the supervision tree. */
  agentRestarts: number;
  handle: ContainerHandle | null;
  task: DispatchRequest | null;
  abort: AbortController | null;
  /** The session whose working copy this container holds. */
  warm: { tenant: string; session: string } | null;
  error: string | null;
}

export type ContainerEvent =
  | { type: "ASSIGN"; task: DispatchRequest }
  | { type: "CANCEL"; taskId: string; attempt: number }
  | { type: "AGENT_EXITED"; info: ExitInfo }
  | { type: "RESTART_AGED" }
  | { type: "STOP" };

export interface RunTaskInput {
  readonly handle: ContainerHandle;
  readonly containerId: string;
  readonly task: DispatchRequest;
  readonly warm: { tenant: string; session: string } | null;
  readonly signal: AbortSignal;
}

/** What an up container does between turns (idle or reserved). */
const WAITING_FOR_WORK = {
  ASSIGN: { target: "busy", actions: "takeTask" },
  AGENT_EXITED: [
    // Died between turns: its workspace is as the last turn left it (still warm).
    { guard: "canRestart", target: "#container.restarting" },
    { target: "#container.failed", actions: "recordExit" },
  ],
} as const;

/** The container machine; its named actors are provided by the node runtime. */
export const containerMachine = setup({
  types: {
    context: {} as ContainerContext,
    events: {} as ContainerEvent,
    input: {} as ContainerMachineInput,
  },
  actors: {
    startContainer: fromPromise<ContainerHandle, { id: string; pool: string }>(async () => {
      throw new InternalError("startContainer is provided by the node runtime");
    }),
    runTask: fromPromise<TaskOutcome, RunTaskInput>(async () => {
      throw new InternalError("runTask is provided by the node runtime");
    }),
    watchExit: fromCallback<ContainerEvent, ContainerHandle>(({ sendBack, input }) =>
      input.onExit((info) => sendBack({ type: "AGENT_EXITED", info })),
    ),
    stopContainer: fromPromise<void, ContainerHandle | null>(async ({ input }) => {
      await input?.stop();
    }),
    /** Tier 1: a new agent process for the same container and workspace. */
    restartAgent: fromPromise<
      ContainerHandle,
      { id: string; pool: string; handle: ContainerHandle | null }
    >(async () => {
      throw new InternalError("restartAgent is provided by the node runtime");
    }),
  },
  delays: { reservedWindow: ({ context }) => context.reservedWindowMs },
  guards: {
    canRestart: ({ context }) => context.recentRestarts < context.maxAgentRestarts,
  },
  actions: {
    takeTask: assign({ task: ({ event }) => (event.type === "ASSIGN" ? event.task : null) }),
    recordExit: assign({
      error: ({ event }) => (event.type === "AGENT_EXITED" ? event.info.error.message : null),
    }),
    notifyUp: sendParent(({ context }: { context: ContainerContext }) => ({
      type: "CONTAINER_UP",
      id: context.id,
    })),
    notifyGone: sendParent(({ context }: { context: ContainerContext }) => ({
      type: "CONTAINER_GONE",
      id: context.id,
      failedToStart: context.handle === null,
    })),
  },
}).createMachine({
  id: "container",
  context: ({ input }) => ({
    id: input.id,
    pool: input.pool,
    reservedWindowMs: input.reservedWindowMs,
    maxAgentRestarts: input.maxAgentRestarts ?? 2,
    agentRestartWindowMs: input.agentRestartWindowMs ?? 300_000,
    recentRestarts: 0,
    agentRestarts: 0,
    handle: null,
    task: input.task ?? null,
    abort: null,
    warm: null,
    error: null,
  }),
  initial: "starting",
  on: {
    STOP: ".stopping",
    RESTART_AGED: {
      actions: assign({ recentRestarts: ({ context }) => context.recentRestarts - 1 }),
    },
  },
  states: {
    starting: {
      invoke: {
        src: "startContainer",
        input: ({ context }) => ({ id: context.id, pool: context.pool }),
        onDone: { target: "up", actions: assign({ handle: ({ event }) => event.output }) },
        onError: {
          target: "failed",
          actions: assign({
            error: ({ event }) => (event.error as Error)?.message ?? "start failed",
          }),
        },
      },
    },
    up: {
      entry: "notifyUp",
      invoke: { src: "watchExit", input: ({ context }) => context.handle! },
      initial: "route",
      states: {
        route: {
          always: [
            { guard: ({ context }) => context.task !== null, target: "busy" },
            { target: "idle" },
          ],
        },
        idle: { on: WAITING_FOR_WORK },
        // Just served a session: kept for its follow-up for the reserved window, then idle
        // (still warm). The orchestrator decides who may take it meanwhile.
        reserved: { after: { reservedWindow: "idle" }, on: WAITING_FOR_WORK },
        busy: {
          entry: assign({ abort: () => new AbortController() }),
          invoke: {
            src: "runTask",
            input: ({ context }) => ({
              handle: context.handle!,
              containerId: context.id,
              task: context.task!,
              warm: context.warm,
              signal: context.abort!.signal,
            }),
            onDone: [
              {
                // Died mid-turn: restart it in place, but the working copy is suspect.
                guard: ({ context, event }) =>
                  !event.output.agentAlive && context.recentRestarts < context.maxAgentRestarts,
                target: "#container.restarting",
                actions: assign({ task: null, warm: null }),
              },
              {
                guard: ({ event }) => !event.output.agentAlive,
                target: "#container.failed",
                actions: assign({ error: "agent died during a turn", task: null, warm: null }),
              },
              {
                guard: ({ event }) => event.output.ok,
                target: "reserved",
                actions: assign({
                  warm: ({ context }) => ({
                    tenant: context.task!.tenant,
                    session: context.task!.session,
                  }),
                  task: null,
                }),
              },
              { target: "idle", actions: assign({ warm: null, task: null }) },
            ],
            onError: {
              target: "#container.failed",
              actions: assign({
                error: ({ event }) => (event.error as Error)?.message ?? "turn failed",
                warm: null,
              }),
            },
          },
          on: {
            CANCEL: {
              guard: ({ context, event }) =>
                context.task?.taskId === event.taskId && context.task.attempt === event.attempt,
              actions: ({ context }) => context.abort?.abort("cancel"),
            },
          },
          // Leaving busy any other way than the turn's end (a stop) ends the turn as retryable.
          exit: [({ context }) => context.abort?.abort("shutdown"), assign({ abort: null })],
        },
      },
    },
    restarting: {
      entry: [
        assign({
          recentRestarts: ({ context }) => context.recentRestarts + 1,
          agentRestarts: ({ context }) => context.agentRestarts + 1,
        }),
        // The restart leaves the window when this fires (on the actor's clock, whatever state).
        raise({ type: "RESTART_AGED" }, { delay: ({ context }) => context.agentRestartWindowMs }),
      ],
      invoke: {
        src: "restartAgent",
        input: ({ context }) => ({ id: context.id, pool: context.pool, handle: context.handle }),
        onDone: { target: "up", actions: assign({ handle: ({ event }) => event.output }) },
        onError: {
          target: "failed",
          actions: assign({
            error: ({ event }) => (event.error as Error)?.message ?? "restart failed",
          }),
        },
      },
    },
    failed: {
      invoke: {
        src: "stopContainer",
        input: ({ context }) => context.handle,
        onDone: "gone",
        onError: "gone",
      },
      on: { STOP: {} },
    },
    stopping: {
      invoke: {
        src: "stopContainer",
        input: ({ context }) => context.handle,
        onDone: "stopped",
        onError: "stopped",
      },
      on: { STOP: {} },
    },
    gone: { type: "final", entry: "notifyGone" },
    stopped: { type: "final", entry: "notifyGone" },
  },
});

/** The state a container shows the fleet, from its actor snapshot. */
export function containerStateOf(snapshot: { value: unknown }): ContainerState {
  const v = snapshot.value;
  if (typeof v === "object" && v !== null && "up" in v) {
    const sub = (v as { up: string }).up;
    return sub === "busy" || sub === "idle" || sub === "reserved" ? sub : "starting";
  }
  switch (v) {
    case "starting":
    case "restarting":
      return "starting";
    case "stopping":
      return "draining";
    case "stopped":
      return "stopped";
    default:
      return "failed";
  }
}
