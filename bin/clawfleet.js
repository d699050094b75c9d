#!/usr/bin/env node
// The `clawfleet` command. It runs the CLI's esbuild bundle (dist/cli/, built by
// `npm ci` through `prepare`: scripts/build-cli.mjs) on plain node, which starts in a
// fraction of the 1-3 s that compiling the sources through tsx takes at every call.
// The bundle runs only if it was built from the sources as they are now; after a
// change it is rebuilt first (once, about half a second). Where it cannot be built
// (a read-only checkout), or with CLAWFLEET_FROM_SOURCE=1, the CLI runs from src/
// through tsx, as vitest runs the fleet: never old code.
import { pathToFileURL } from "node:url";
import { buildCli, currentBuild } from "../scripts/build-cli.mjs";

async function bundledEntry() {
  if (process.env.CLAWFLEET_FROM_SOURCE === "1") return null;
  const built = currentBuild();
  if (built) return built;
  try {
    return await buildCli();
  } catch (err) {
    process.stderr.write(`clawfleet: cannot build the CLI (${err.message}); running from source\n`);
    return null;
  }
}

const entry = await bundledEntry();
if (entry) {
  await import(pathToFileURL(entry).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
