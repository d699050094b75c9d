/**
 * clawfleet's public API, by plane (see docs/architecture.md). Everything not
 * exported here is internal and may change. (Kept in this order by hand: biome's
 * import sorting is off for this file.)
 */

// ---- Cross-cutting: errors, clock, logging, options ---------------------------------
export { type Clock, systemClock } from "./clock.js";
export {
  AgentError,
  ClawfleetError,
  ConfigError,
  type ErrorCode,
  ErrorCodes,
  type ErrorInfo,
  InternalError,
  ModelError,
  NatsServerError,
  NotFoundError,
  RetryableError,
  TerminalError,
  TimeoutError,
  ValidationError,
} from "./errors.js";
export {
  type FleetOptions,
  type PoolProfile,
  type PoolProfileOptions,
  type ResolvedFleetOptions,
  resolveFleetOptions,
  resolvePoolProfile,
} from "./fleet-options.js";
export { type Logger, silentLogger } from "./logger.js";
export type {
  ModelGatewayOptions,
  ModelGatewaySettings,
  ModelUpstream,
  ModelUpstreamOptions,
} from "./model-gateway-options.js";
export {
  COMMAND_PRESETS,
  type CommandProfile,
  type CommandProfileOptions,
  type ModelBinding,
  type ModelBindingOptions,
  type OpenClawProfile,
  type OpenClawProfileOptions,
  RUNTIME_NAMES,
  type RuntimeName,
} from "./runtime-options.js";

// ---- Protocol: the wire schemas ------------------------------------------------------
export {
  type AgentMessage,
  AgentMessageSchema,
  type HostMessage,
  HostMessageSchema,
  type TurnMessage,
} from "./protocol/agent-protocol.js";
export {
  type ApiReply,
  ErrorCodeSchema,
  ErrorInfoSchema,
  type FleetStatus,
  isTerminal,
  MAX_INPUT_BYTES,
  type PoolSummary,
  type Priority,
  type Rung,
  type RunRequest,
  RunRequestSchema,
  type SubmitRequest,
  SubmitRequestSchema,
  type TaskRecord,
  TaskRecordSchema,
  type TaskStatus,
} from "./protocol/api-schemas.js";
export {
  DEFAULT_PREFIX,
  DEFAULT_RETENTION_MS,
  type FleetSubjects,
  fleetSubjects,
} from "./protocol/fleet-subjects.js";
export {
  type ModelCallRequest,
  ModelCallRequestSchema,
  type ModelCallSummary,
  ModelCallSummarySchema,
  type ModelFrame,
  ModelFrameSchema,
} from "./protocol/model-messages.js";

// ---- Edge: talking to a fleet --------------------------------------------------------
export { ApiService, type ApiServiceDeps } from "./gateway/api-service.js";
export { FleetClient, type FleetClientOptions } from "./gateway/fleet-client.js";
export type { FleetTree } from "./gateway/fleet-tree.js";
export { taskIdForKey } from "./gateway/task-submitter.js";

// ---- Control: actors, placement, roles, supervision ----------------------------------
export { containerMachine, containerStateOf } from "./actors/container-machine.js";
export { orchestratorMachine } from "./actors/orchestrator-machine.js";
export {
  type Claims,
  decidePlacement,
  type FleetView,
  type LadderDecision,
} from "./actors/placement-ladder.js";
export { poolMachine } from "./actors/pool-machine.js";
export {
  type HealingDecision,
  type Placement,
  statusOfState,
  taskMachine,
  taskRecordOf,
} from "./actors/task-machine.js";
export { FleetNode, type FleetNodeDeps } from "./roles/fleet-node.js";
export { FleetOrchestrator, type FleetOrchestratorDeps } from "./roles/fleet-orchestrator.js";
export { ModelGateway, type ModelGatewayDeps } from "./roles/model-gateway.js";
export {
  type LocalFleet,
  type RoleDeps,
  type RoleName,
  type RunningRole,
  startLocalFleet,
  startRole,
} from "./roles/fleet-roles.js";
export { RestartIntensity } from "./supervisor/restart-intensity.js";
export { type HealingOptions, SessionSupervisor } from "./supervisor/session-supervisor.js";

// ---- Runtime: pools, containers, the agent link --------------------------------------
export {
  AgentConnection,
  type AgentConnectionOptions,
} from "./adapters/agent-link/agent-connection.js";
export type {
  AgentModelRequest,
  ContainerHandle,
  ContainerSpec,
  ExitInfo,
  ModelCallHook,
  ModelCallSink,
  PoolAdapter,
  TurnHooks,
} from "./adapters/agent-link/pool-adapter.js";
export {
  callModel,
  type ModelCallOptions,
  type ModelCallOutcome,
  type ModelClientDeps,
} from "./adapters/model/model-client.js";
export {
  defaultRuntimesDir,
  type InstalledOpenClaw,
  locateOpenClaw,
  OPENCLAW_NODE_VERSION,
  OPENCLAW_VERSION,
} from "./adapters/runtimes/openclaw-runtime.js";
export { installOpenClaw } from "./adapters/runtimes/runtime-install.js";
export type {
  DriverContext,
  DriverTurn,
  ModelEndpoint,
  RuntimeDriver,
} from "./agents/runtime-driver.js";
export {
  ProcessPool,
  type ProcessPoolOptions,
  processPoolAvailableSandbox,
} from "./adapters/process/process-pool.js";

// ---- State: NATS, records, snapshots, workspaces -------------------------------------
export { connectFleet, type FleetNats, type FleetNatsOptions } from "./adapters/nats/fleet-nats.js";
export {
  ensureNatsServer,
  findNatsServer,
  installHint,
} from "./adapters/nats/nats-server-binary.js";
export {
  type NatsServerHandle,
  type StartNatsServerOptions,
  startNatsServer,
} from "./adapters/nats/nats-server-process.js";
export { type BehaviorSet, BehaviorStore } from "./adapters/records/behavior-store.js";
export type { PostMortem } from "./adapters/records/quarantine-registry.js";
export {
  SnapshotStore,
  type SnapshotStoreOptions,
  SQLITE_LIVE_FILES,
  type VersionInfo,
} from "./adapters/snapshots/snapshot-store.js";
export { LocalWorkspaceStore } from "./adapters/workspace/local-workspace-store.js";
export {
  ObjectWorkspaceStore,
  type ObjectWorkspaceStoreOptions,
} from "./adapters/workspace/object-workspace-store.js";
export type { SaveOptions, WorkspaceStore } from "./adapters/workspace/workspace-store.js";

// ---- Simulation ----------------------------------------------------------------------
export {
  renderChart,
  renderTable,
  runSimulation,
  type SimOptions,
  type SimReport,
} from "./sim/index.js";
