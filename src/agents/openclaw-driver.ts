/**
 * OpenClaw as a runtime driver: one warm OpenClaw gateway per container, fed
 * each turn over its OpenAI-compatible endpoint (openclaw-chat.ts), its
 * conversation history kept by OpenClaw itself in SQLite in the workspace
 * (layout: openclaw-config.ts).
 *
 * Lifecycle. `start()` checks that the runtime loads (`openclaw --version`,
 * 0.5 s) but starts no gateway: the node releases the agent and restores the
 * session's files before a container's first turn (turn-runner.ts), so a gateway
 * started earlier would be stopped unused. The gateway starts with the first
 * turn (ready in ~7–11 s, then OpenClaw's first turn pays ~3–5 s of lazy
 * loading) and stays up for the next turns of the same session (~0.3 s each).
 * `release()` stops it, so no process holds files in a workspace about to be
 * replaced; a turn of another session than the gateway's does the same in case
 * no release came. A gateway whose memory passed `recycleRssMb` after a turn is
 * restarted before the next one.
 *
 * A finished answer is checkpointed as step 1: a retried attempt of the same
 * turn returns it instead of asking OpenClaw (and the model) again.
 *
 * Runs inside the sandbox: needs the runtime directory (read-only), the
 * workspace and a private `/tmp` (HOME, caches, OpenClaw's lock files).
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, constants, mkdir, mkdtemp, realpath, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { AgentError, ClawfleetError, ConfigError, ErrorCodes } from "../errors.js";
import { type OpenClawProfile, OpenClawProfileSchema } from "../runtime-options.js";
import { ChatBrokenError, chatTurn } from "./openclaw-chat.js";
import { OPENCLAW_CONFIG_FILE, OPENCLAW_STATE_DIR, openclawSessionKey } from "./openclaw-config.js";
import { OpenClawGateway } from "./openclaw-gateway.js";
import { clearGatewayOwnerLease, SqliteHold } from "./openclaw-sqlite.js";
import {
  snapshotDatabases,
  writeBehaviorFiles,
  writeOpenClawConfig,
} from "./openclaw-workspace.js";
import type {
  AgentHostConfig,
  DriverContext,
  DriverTurn,
  ModelEndpoint,
  RuntimeDriver,
} from "./runtime-driver.js";

/** Options mostly for tests; the host passes none. */
export interface OpenClawDriverOptions {
  /** Where HOME and caches go. Default the OS temp dir (the sandbox's private `/tmp`). */
  readonly scratchDir?: string;
  /** Largest answer accepted. Default 1 MiB. */
  readonly maxOutputBytes?: number;
}

/** OpenClaw's programs in a runtime directory: npm's bin links (see openclaw-runtime.ts). */
const BIN = { node: "node_modules/.bin/node", openclaw: "node_modules/.bin/openclaw" };

interface Running {
  readonly proc: OpenClawGateway;
  readonly token: string;
}

/** See the module comment. */
export class OpenClawDriver implements RuntimeDriver {
  readonly name = "openclaw";
  readonly capabilities = ["quiesce", "release"] as const;
  private readonly profile: OpenClawProfile;
  private program: { node: string; entry: string } | undefined;
  private scratch: string | undefined;
  private gateway: Running | undefined;
  /** The OpenClaw session key of the files in the workspace, once a turn named it. */
  private session: string | undefined;
  private recycleDue = false;
  private hold: SqliteHold | undefined;

  /**
   * `config` is the host's (its `openclaw` profile and `runtimeDir`, the
   * runtime's install directory as seen here), `workspace` the session
   * workspace (absolute), `model` the container's model endpoint, `log` the
   * host's diagnostics.
   */
  constructor(
    private readonly config: AgentHostConfig,
    private readonly workspace: string,
    private readonly model: ModelEndpoint,
    private readonly log: (msg: string) => void,
    private readonly options: OpenClawDriverOptions = {},
  ) {
    this.profile = config.openclaw ?? OpenClawProfileSchema.parse({});
  }

  /** The running gateway's pid, if one runs (diagnostics). */
  get gatewayPid(): number | undefined {
    return this.gateway?.proc.pid;
  }

  async start(): Promise<void> {
    const dir = this.config.runtimeDir;
    if (dir === undefined) throw new ConfigError("the openclaw runtime needs runtimeDir");
    let node: string;
    let entry: string;
    try {
      node = await realpath(path.join(dir, BIN.node));
      entry = await realpath(path.join(dir, BIN.openclaw));
      await access(node, constants.X_OK);
    } catch (err) {
      throw new ClawfleetError(
        ErrorCodes.RUNTIME_NOT_INSTALLED,
        `OpenClaw is not installed in ${dir} (${(err as Error).message}); install it with: clawfleet runtime install openclaw`,
      );
    }
    this.program = { node, entry };
    this.scratch = await mkdtemp(path.join(this.options.scratchDir ?? tmpdir(), "openclaw-"));
    const { stdout } = await promisify(execFile)(node, [entry, "--version"], {
      cwd: this.scratch,
      env: this.env(""),
      timeout: 30_000,
    }).catch((err: Error) => {
      throw new AgentError(ErrorCodes.AGENT_START_FAILED, `OpenClaw does not run: ${err.message}`);
    });
    this.log(`openclaw: ${stdout.trim()} on ${node}`);
  }

  async runTurn(turn: DriverTurn, ctx: DriverContext): Promise<string> {
    await this.dropHold();
    if (turn.resumeAfter >= 1 && turn.steps.length >= 1) {
      ctx.log("info", "OpenClaw's answer to this turn is checkpointed; returning it");
      const saved = turn.steps[0];
      return typeof saved === "string" ? saved : JSON.stringify(saved);
    }
    const key = openclawSessionKey(turn.tenant, turn.session);
    if (this.gateway !== undefined && this.session !== key)
      await this.stopGateway("the workspace holds another session now");
    this.session = key;
    await writeBehaviorFiles(this.workspace, turn.behavior);
    if (this.gateway?.proc.hasExited) await this.stopGateway("it exited between turns");
    if (this.gateway !== undefined && this.recycleDue)
      await this.stopGateway(`its memory passed ${this.profile.recycleRssMb} MiB`);
    const gw = this.gateway ?? (await this.startGateway());
    let answer: string;
    try {
      answer = await chatTurn({
        url: gw.proc.url,
        token: gw.token,
        sessionKey: key,
        input: turn.input,
        signal: ctx.signal,
        maxOutputBytes: this.options.maxOutputBytes ?? 1024 * 1024,
      });
    } catch (err) {
      if (!(err instanceof ChatBrokenError)) throw err;
      const alive = !gw.proc.hasExited && (await gw.proc.ready());
      if (!alive) await this.stopGateway("it died during the turn");
      throw new AgentError(
        ErrorCodes.AGENT_EXITED,
        `OpenClaw's gateway ${alive ? "broke off its answer" : "died during the turn"}: ${err.message}${
          alive ? "" : `; ${gw.proc.tail(4)}`
        }`,
      );
    }
    const rss = await gw.proc.rssMb();
    if (rss > this.profile.recycleRssMb) {
      this.recycleDue = true;
      this.log(`openclaw: gateway uses ${Math.round(rss)} MiB; it restarts before the next turn`);
    }
    await ctx.step({ step: 1, name: "openclaw", output: answer });
    return answer;
  }

  /** Checkpoints OpenClaw's databases and keeps them unchanged until the next turn (openclaw-sqlite.ts). */
  async quiesce(): Promise<void> {
    await this.dropHold();
    if (this.program === undefined) return;
    const running = this.gateway !== undefined && !this.gateway.proc.hasExited;
    this.hold = await SqliteHold.take(this.program.node, await snapshotDatabases(this.workspace), {
      hold: running,
    });
  }

  async release(): Promise<void> {
    await this.dropHold();
    await this.stopGateway("the workspace is to be replaced");
    this.session = undefined;
  }

  async stop(): Promise<void> {
    await this.dropHold();
    await this.stopGateway();
    if (this.scratch !== undefined) await rm(this.scratch, { recursive: true, force: true });
    this.scratch = undefined;
  }

  /** The gateway's whole environment: nothing of the host's but what is named here. */
  private env(token: string): Record<string, string> {
    const scratch = this.scratch ?? tmpdir();
    const env: Record<string, string> = {
      PATH: [path.dirname(this.program?.node ?? ""), "/usr/local/bin", "/usr/bin", "/bin"].join(
        path.delimiter,
      ),
      HOME: path.join(scratch, "home"),
      TMPDIR: tmpdir(),
      XDG_CACHE_HOME: path.join(scratch, "cache"),
      XDG_CONFIG_HOME: path.join(scratch, "config"),
      XDG_DATA_HOME: path.join(scratch, "data"),
      LANG: "C.UTF-8",
      OPENCLAW_STATE_DIR: path.join(this.workspace, OPENCLAW_STATE_DIR),
      OPENCLAW_CONFIG_PATH: path.join(this.workspace, OPENCLAW_CONFIG_FILE),
      OPENCLAW_NO_AUTO_UPDATE: "1",
      OPENCLAW_OFFLINE: "1",
    };
    if (token !== "") env.OPENCLAW_GATEWAY_TOKEN = token;
    // Only clawfleet's own names: OPENAI_API_KEY and the like would switch on OpenClaw's
    // built-in providers (embeddings, voice) beside the one its config names.
    for (const [k, v] of Object.entries(this.model.env)) if (k.startsWith("CLAWFLEET_")) env[k] = v;
    if (process.env.TZ !== undefined) env.TZ = process.env.TZ;
    return env;
  }

  private async startGateway(): Promise<Running> {
    const program = this.program;
    if (program === undefined) throw new AgentError(ErrorCodes.AGENT_START_FAILED, "not started");
    for (const sub of ["home", "cache", "config", "data"])
      await mkdir(path.join(this.scratch!, sub), { recursive: true });
    const port = await freePort();
    const token = randomBytes(24).toString("base64url");
    const warning = await writeOpenClawConfig(this.workspace, {
      workspace: this.workspace,
      stateDir: path.join(this.workspace, OPENCLAW_STATE_DIR),
      port,
      model: {
        baseUrl: this.model.baseUrl,
        api: this.config.model.api,
        model: this.config.model.model,
        contextWindow: this.profile.contextWindow,
        maxTokens: this.profile.maxTokens,
      },
    });
    if (warning) this.log(`openclaw: ${warning}`);
    const cleared = await clearGatewayOwnerLease(
      program.node,
      path.join(this.workspace, OPENCLAW_STATE_DIR, "state", "openclaw.sqlite"),
    );
    if (cleared > 0) this.log("openclaw: cleared a restored gateway owner lease");
    const started = Date.now();
    const proc = await OpenClawGateway.start({
      node: program.node,
      entry: program.entry,
      cwd: this.workspace,
      env: this.env(token),
      port,
      readyTimeoutMs: this.profile.readyTimeoutMs,
    });
    this.log(`openclaw: gateway ${proc.pid} ready in ${Date.now() - started} ms`);
    this.gateway = { proc, token };
    this.recycleDue = false;
    return this.gateway;
  }

  private async stopGateway(why?: string): Promise<void> {
    const gw = this.gateway;
    if (gw === undefined) return;
    this.gateway = undefined;
    if (why) this.log(`openclaw: stopping gateway ${gw.proc.pid}: ${why}`);
    await gw.proc.stop();
  }

  private async dropHold(): Promise<void> {
    const hold = this.hold;
    this.hold = undefined;
    await hold?.release();
  }
}

/** A port free on loopback now (unsandboxed runs share the host's ports). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      server.close(() => resolve(port));
    });
  });
}
