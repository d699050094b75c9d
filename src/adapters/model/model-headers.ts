/**
 * Which HTTP headers cross the model gateway, each way. The agent is untrusted
 * (DESIGN rule 4): whatever credential it sends is dropped and the gateway's own
 * key put in its place, so an agent can neither spend a key it smuggled in nor
 * learn the fleet's. Answers are filtered by an allow-list rather than a
 * deny-list: an upstream's cookies, or a header a future provider invents, do
 * not reach the sandbox unless someone decides they should.
 */

import { MODEL_CREDENTIAL_HEADERS as CREDENTIAL_HEADERS } from "../../protocol/model-messages.js";

/**
 * Hop-by-hop and framing headers: they describe the agent's connection to its
 * shim, not the gateway's to the upstream, and fetch sets its own.
 */
const CONNECTION_HEADERS = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "accept-encoding",
]);

/** Answer headers relayed to the agent by exact name. */
const ANSWER_HEADERS = new Set(["content-type", "retry-after", "x-request-id", "request-id"]);

/** Answer headers relayed to the agent by prefix: rate-limit and provider metadata. */
const ANSWER_HEADER_PREFIXES = ["openai-", "anthropic-", "x-ratelimit-"];

/** The frames' header values are capped (model-messages.ts); longer ones are dropped, not cut. */
const MAX_HEADER_VALUE = 16_384;

/** The wire format of an upstream, which names the header its key travels in. */
export type UpstreamApi = "openai" | "anthropic";

/**
 * The headers to send upstream: the agent's, lower-cased, minus credentials and
 * connection headers, plus `accept-encoding: identity` (bodies are relayed as
 * text, chunk by chunk) and the upstream's key when it has one: OpenAI-style
 * upstreams take `authorization: Bearer <key>`, Anthropic ones `x-api-key`
 * (the agent's `anthropic-version` passes through untouched).
 */
export function upstreamRequestHeaders(
  agentHeaders: Readonly<Record<string, string>>,
  api: UpstreamApi,
  key: string | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(agentHeaders)) {
    const lower = name.toLowerCase();
    if (CREDENTIAL_HEADERS.has(lower) || CONNECTION_HEADERS.has(lower)) continue;
    out[lower] = value;
  }
  out["accept-encoding"] = "identity";
  if (key !== undefined) {
    if (api === "anthropic") out["x-api-key"] = key;
    else out.authorization = `Bearer ${key}`;
  }
  return out;
}

/** Whether an answer header may reach the agent; see the module comment. */
export function isRelayedAnswerHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return ANSWER_HEADERS.has(lower) || ANSWER_HEADER_PREFIXES.some((p) => lower.startsWith(p));
}

/** The answer headers relayed to the agent (lower-cased names; never `set-cookie`). */
export function relayedAnswerHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    if (isRelayedAnswerHeader(name) && value.length <= MAX_HEADER_VALUE) out[name] = value;
  });
  return out;
}
