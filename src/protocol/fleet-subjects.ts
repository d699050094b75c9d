/**
 * Every subject, stream, bucket and object store name the fleet uses, derived from
 * one configurable prefix so several fleets can share a NATS account, and the
 * defaults of that namespace (prefix, retention), defined here once.
 */
import { ConfigError } from "../errors.js";

/** The prefix of a fleet that names none. */
export const DEFAULT_PREFIX = "fleet";

/** How long the fleet's streams, task records and checkpoints keep data by default: 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000;

export interface FleetSubjects {
  readonly prefix: string;
  /** Service group of the public API: `<prefix>.api`. */
  readonly api: string;
  /** Submissions: `<prefix>.tasks.<tenant>.<session>` into the tasks stream. */
  task(tenant: string, session: string): string;
  readonly tasksWildcard: string;
  /** Final task records: `<prefix>.results.<taskId>`. */
  result(taskId: string): string;
  readonly resultsWildcard: string;
  /** Task lifecycle events from nodes: `<prefix>.events.task.<taskId>`. */
  taskEvent(taskId: string): string;
  readonly taskEventsWildcard: string;
  /** Orchestrator-side timeline events: `<prefix>.events.timeline.<taskId>`. */
  timelineEvent(taskId: string): string;
  /** Both kinds of events of one task, in stream order: `<prefix>.events.*.<taskId>`. */
  taskHistory(taskId: string): string;
  /** Everything the events stream holds: `<prefix>.events.>`. */
  readonly eventsWildcard: string;
  /** Agent side effects: `<prefix>.effects.<tenant>.<kind>`. */
  effect(tenant: string, kind: string): string;
  readonly effectsWildcard: string;
  /** Commands to one node: `<prefix>.node.<node>.<verb>`. */
  node(nodeId: string, verb: "dispatch" | "cancel"): string;
  /** Critical alerts with post-mortems: `<prefix>.alerts.critical`. */
  readonly alertsCritical: string;
  /** Requests to the leading orchestrator: `<prefix>.ctl.<verb>`. */
  ctl(verb: "cancel" | "status"): string;
  /** Agents' model calls, relayed by nodes to the model gateway: `<prefix>.model.call`. */
  readonly modelCall: string;
  readonly streams: {
    readonly tasks: string;
    readonly events: string;
    readonly results: string;
    readonly effects: string;
  };
  readonly buckets: {
    readonly tasks: string;
    readonly nodes: string;
    readonly leases: string;
    readonly checkpoints: string;
    readonly outbox: string;
    readonly behaviors: string;
    readonly sessions: string;
    readonly alerts: string;
    /** The snapshot store's versions, heads and checkpoints (KV). */
    readonly snapshots: string;
  };
  /** The snapshot store's content-addressed objects: the Object Store and its stream. */
  readonly objects: { readonly chunks: string; readonly chunksStream: string };
  /** Durable consumer names of the orchestrator. */
  readonly consumers: { readonly tasks: string; readonly events: string };
}

/** Prefixes are one or more NATS tokens of `[A-Za-z0-9_-]`. */
export const PREFIX_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Derives all names from `prefix` (default `fleet`). */
export function fleetSubjects(prefix = DEFAULT_PREFIX): FleetSubjects {
  if (!PREFIX_PATTERN.test(prefix)) throw new ConfigError(`invalid subject prefix: ${prefix}`);
  const upper = prefix.replaceAll(".", "_").toUpperCase();
  const lower = prefix.replaceAll(".", "_");
  return {
    prefix,
    api: `${prefix}.api`,
    task: (tenant, session) => `${prefix}.tasks.${tenant}.${session}`,
    tasksWildcard: `${prefix}.tasks.>`,
    result: (taskId) => `${prefix}.results.${taskId}`,
    resultsWildcard: `${prefix}.results.>`,
    taskEvent: (taskId) => `${prefix}.events.task.${taskId}`,
    taskEventsWildcard: `${prefix}.events.task.>`,
    timelineEvent: (taskId) => `${prefix}.events.timeline.${taskId}`,
    taskHistory: (taskId) => `${prefix}.events.*.${taskId}`,
    eventsWildcard: `${prefix}.events.>`,
    effect: (tenant, kind) => `${prefix}.effects.${tenant}.${kind}`,
    effectsWildcard: `${prefix}.effects.>`,
    node: (nodeId, verb) => `${prefix}.node.${nodeId}.${verb}`,
    ctl: (verb) => `${prefix}.ctl.${verb}`,
    alertsCritical: `${prefix}.alerts.critical`,
    modelCall: `${prefix}.model.call`,
    streams: {
      tasks: `${upper}_TASKS`,
      events: `${upper}_EVENTS`,
      results: `${upper}_RESULTS`,
      effects: `${upper}_EFFECTS`,
    },
    buckets: {
      tasks: `${lower}_tasks`,
      nodes: `${lower}_nodes`,
      leases: `${lower}_leases`,
      checkpoints: `${lower}_checkpoints`,
      outbox: `${lower}_outbox`,
      behaviors: `${lower}_behaviors`,
      sessions: `${lower}_sessions`,
      alerts: `${lower}_alerts`,
      snapshots: `${lower}_snapshots`,
    },
    objects: { chunks: `${lower}_chunks`, chunksStream: `OBJ_${lower}_chunks` },
    consumers: { tasks: "orchestrator", events: "orchestrator-events" },
  };
}
