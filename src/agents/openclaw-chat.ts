/**
 * One turn over OpenClaw's OpenAI-compatible endpoint: `POST
 * /v1/chat/completions` on the gateway with the new user message only (OpenClaw
 * keeps the history per session key), streamed as Server-Sent Events, the
 * content deltas joined into the answer.
 *
 * Aborting the request stops the run: OpenClaw cancels an agent run whose HTTP
 * client disconnects (its docs, and checked: "HTTP client disconnected",
 * "model fallback chain stopped: reason=caller_signal_aborted").
 */
import { ClawfleetError, ErrorCodes, ModelError, TerminalError } from "../errors.js";

/** One turn's request. */
export interface ChatRequest {
  /** The gateway's root URL. */
  readonly url: string;
  readonly token: string;
  readonly sessionKey: string;
  readonly input: string;
  readonly signal: AbortSignal;
  /** `provider/model` to use instead of the agent's own (the warm-up's stand-in). */
  readonly model?: string;
  /** Largest answer accepted. */
  readonly maxOutputBytes: number;
}

/** The gateway could not be reached or broke off; the caller knows whether it died. */
export class ChatBrokenError extends Error {}

/** Error bodies are read up to this size. */
const MAX_ERROR_BODY = 64 * 1024;

/** Runs one turn; resolves with the answer's text. See the module comment for errors. */
export async function chatTurn(req: ChatRequest): Promise<string> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${req.token}`,
    "content-type": "application/json",
    "x-openclaw-session-key": req.sessionKey,
  };
  if (req.model !== undefined) headers["x-openclaw-model"] = req.model;
  let res: Response;
  try {
    res = await fetch(`${req.url}/v1/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        model: "openclaw",
        stream: true,
        messages: [{ role: "user", content: req.input }],
      }),
      signal: req.signal,
    });
  } catch (err) {
    throw broken(err, req.signal);
  }
  if (res.status !== 200) {
    const text = await readSome(res);
    throw openclawError(res.status, errorMessage(text) ?? (text.trim() || res.statusText));
  }
  let answer = "";
  let bytes = 0;
  let pending = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return answer;
        const event = parseEvent(data);
        if (event.error !== undefined) throw openclawError(500, event.error);
        if (event.content === "") continue;
        bytes += Buffer.byteLength(event.content);
        if (bytes > req.maxOutputBytes)
          throw new TerminalError(
            ErrorCodes.OUTPUT_TOO_LARGE,
            `OpenClaw's answer is over ${req.maxOutputBytes} bytes`,
          );
        answer += event.content;
      }
    }
  } catch (err) {
    if (err instanceof ClawfleetError) throw err;
    throw broken(err, req.signal);
  }
  throw new ChatBrokenError("OpenClaw's answer ended before [DONE]");
}

/** A content delta or an error from one SSE `data:` line. */
function parseEvent(data: string): { content: string; error?: string } {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return { content: "" };
  }
  const j = json as {
    error?: { message?: unknown } | string;
    choices?: { delta?: { content?: unknown } }[];
  };
  if (j.error !== undefined)
    return {
      content: "",
      error: typeof j.error === "string" ? j.error : String(j.error.message ?? "unknown error"),
    };
  const content = j.choices?.[0]?.delta?.content;
  return { content: typeof content === "string" ? content : "" };
}

function errorMessage(body: string): string | undefined {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } };
    return typeof j.error?.message === "string" ? j.error.message : undefined;
  } catch {
    return undefined;
  }
}

const MODEL_CODES = Object.values(ErrorCodes).filter((c) => c.startsWith("MODEL_"));

/**
 * An error OpenClaw answered. When the model call failed in the fleet and
 * OpenClaw passes the endpoint's message on (it does for a 4xx), that error
 * surfaces as itself, retryable as its code says. After a 5xx or 429 OpenClaw
 * retries (8 calls over ~80 s, measured) and then says only "upstream provider
 * error": a retryable `MODEL_UPSTREAM_FAILED`. Anything else is OpenClaw
 * refusing the turn: terminal `AGENT_FAILED`. (When the bridge itself reports
 * a failed call, the host aborts the turn first; the driver then throws the
 * abort's reason.)
 */
export function openclawError(status: number, message: string): ClawfleetError {
  const code = MODEL_CODES.find((c) => message.includes(c));
  if (code !== undefined) return new ModelError(code, message);
  if (/upstream provider error/i.test(message))
    return new ModelError(ErrorCodes.MODEL_UPSTREAM_FAILED, `OpenClaw: ${message}`);
  return new TerminalError(
    ErrorCodes.AGENT_FAILED,
    `OpenClaw failed the turn (HTTP ${status}): ${message}`,
  );
}

async function readSome(res: Response): Promise<string> {
  try {
    const text = await res.text();
    return text.slice(0, MAX_ERROR_BODY);
  } catch {
    return "";
  }
}

/** A failure of the request itself: the abort's reason when aborted. */
function broken(err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return signal.reason instanceof ClawfleetError ? signal.reason : err;
  return new ChatBrokenError(err instanceof Error ? err.message : String(err), { cause: err });
}
