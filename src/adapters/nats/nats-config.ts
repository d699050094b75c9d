/**
 * The embedded nats-server's configuration: the template `nats/server.conf` and how its
 * `{{NAME}}` placeholders are filled in (see {@link renderNatsConfig}).
 */
import { fileURLToPath } from "node:url";
import { ConfigError } from "../../errors.js";

/** The documented source of the embedded server's configuration. */
export const DEFAULT_CONFIG_TEMPLATE = fileURLToPath(
  new URL("../../../nats/server.conf", import.meta.url),
);

/**
 * Replaces every `{{NAME}}` in `template` with its value: strings quoted and escaped
 * for nats-server's config syntax, numbers bare. An unknown name is a {@link ConfigError}.
 */
export function renderNatsConfig(
  template: string,
  values: Readonly<Record<string, string | number>>,
): string {
  return template.replace(/\{\{\s*([A-Z0-9_]+)\s*\}\}/g, (_match, name: string) => {
    const value = values[name];
    if (value === undefined) {
      throw new ConfigError(`unknown placeholder {{${name}}} in the nats-server config template`);
    }
    if (typeof value === "number") return String(value);
    // nats-server's quoted strings take the JSON escapes except \b and \f, which only
    // control characters need; no path or host we accept contains one.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
    if (/[\u0000-\u001f]/.test(value)) {
      throw new ConfigError(`nats-server config value for ${name} contains a control character`);
    }
    return JSON.stringify(value);
  });
}
