/**
 * The `clawfleet` command. Role commands (`up`, `node`, `orchestrator`,
 * `gateway`) run until SIGINT/SIGTERM; client commands talk to the public API
 * and exit. The command tree and how failures read are in program.ts.
 */
import { runProgram } from "./program.js";

await runProgram(process.argv);
