/**
 * The orchestrator actor's lifecycle: `standby ⇄ leading → stopped`. Any number
 * of orchestrators may run; one leads at a time by holding a KV lease. While
 * standing by it campaigns for the lease; while leading it renews the lease and
 * runs the scheduler; losing the lease sends it back to standby at once.
 *
 * `campaign` and `lead` are named callback actors the runtime provides.
 */
import { fromCallback, setup } from "xstate";

export type OrchestratorEvent =
  | { type: "ELECTED" }
  | { type: "DEPOSED"; reason: string }
  | { type: "STOP" };

/** The orchestrator machine; provide `campaign` and `lead` with `.provide({ actors })`. */
export const orchestratorMachine = setup({
  types: { events: {} as OrchestratorEvent },
  actors: {
    /** Tries to take the lease; sends ELECTED when it does. */
    campaign: fromCallback<OrchestratorEvent>(() => () => {}),
    /** Renews the lease and runs the scheduler; sends DEPOSED when the lease is lost. */
    lead: fromCallback<OrchestratorEvent>(() => () => {}),
  },
}).createMachine({
  id: "orchestrator",
  initial: "standby",
  on: { STOP: ".stopped" },
  states: {
    standby: { invoke: { src: "campaign" }, on: { ELECTED: "leading" } },
    leading: { invoke: { src: "lead" }, on: { DEPOSED: "standby" } },
    stopped: { type: "final" },
  },
});
