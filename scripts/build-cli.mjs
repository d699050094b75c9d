#!/usr/bin/env node
/**
 * The CLI (and, through it, every role) bundled by esbuild into dist/cli/, so
 * `clawfleet` starts on plain node instead of compiling TypeScript through tsx at
 * every call (1-3 s). `npm ci` runs it as `prepare`; bin/clawfleet.js runs it
 * again when a source changed since (see {@link currentBuild}).
 *
 * The bundle behaves as the sources do:
 * - `import.meta.url` in every source file is rewritten to that file's own URL in
 *   src/ (relative to the bundle, so a moved checkout still works): code that finds
 *   project files from it (`new URL("../../../nats/server.conf", import.meta.url)`,
 *   the agent's entry for its own bundle) sees the same paths as from source.
 * - packages are inlined but for those that must stay files in node_modules: esbuild
 *   (a native binary), tsx, better-sqlite3 (native, optional), and dockerode (it
 *   loads .proto files beside itself). dockerode and its gRPC and ssh2 stack cost
 *   about 100 ms to load, so the bundle loads it on the first `new Docker()`, and a
 *   command that never talks to Docker never loads it.
 *
 * Each build goes to its own directory, named by the hash of its output, and
 * dist/cli/current.json is switched to it by an atomic rename: a CLI starting while
 * another rebuilds reads either the old build or the new one, never half of one.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SRC = path.join(ROOT, "src");
const OUT = path.join(ROOT, "dist", "cli");
const CURRENT = path.join(OUT, "current.json");
const ENTRY = path.join(SRC, "cli", "main.ts");
/** Inlined packages come from here; npm rewrites it on every change to node_modules. */
const INSTALLED = path.join(ROOT, "node_modules", ".package-lock.json");
const THIS_FILE = fileURLToPath(import.meta.url);
/** esbuild reads compiler options from it (decorators, targets): a change must rebuild. */
const TSCONFIG = path.join(ROOT, "tsconfig.json");
/**
 * Earlier builds are kept this long: a CLI started from one may still load a chunk of
 * it (roles load theirs at start). Edits rebuild often, so not much longer.
 */
const KEEP_OLD_MS = 3600 * 1000;

/** [mtimeMs, size] of a file, or null when it is gone. */
function fingerprint(file) {
  try {
    const s = statSync(file);
    return [s.mtimeMs, s.size];
  } catch {
    return null;
  }
}

/**
 * The entry of the build made from the files as they are now, or null when there is
 * none or any file it was built from changed (mtime or size), was removed, or the
 * installed packages or this script changed. A stat per input: about a millisecond.
 */
export function currentBuild() {
  let current;
  try {
    current = JSON.parse(readFileSync(CURRENT, "utf8"));
  } catch {
    return null;
  }
  for (const [rel, seen] of Object.entries(current.inputs ?? {})) {
    const now = fingerprint(path.join(ROOT, rel));
    if (now === null || now[0] !== seen[0] || now[1] !== seen[1]) return null;
  }
  const main = path.join(OUT, current.id, "main.mjs");
  return fingerprint(main) === null ? null : main;
}

/** Rewrites `import.meta.url` in a source file to that file's URL, relative to the bundle. */
function sourceUrlPlugin(outDir) {
  return {
    name: "source-import-meta-url",
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, async (args) => {
        if (!args.path.startsWith(SRC + path.sep)) return undefined;
        const text = await readFile(args.path, "utf8");
        const rel = path.relative(outDir, args.path).split(path.sep).join("/");
        const url = `new URL(${JSON.stringify(rel)}, import.meta.url).href`;
        return { contents: text.replace(/\bimport\.meta\.url\b/g, url), loader: "ts" };
      });
    },
  };
}

/** dockerode, required from node_modules on the first `new Docker()`. */
const lazyDockerodePlugin = {
  name: "lazy-dockerode",
  setup(build) {
    build.onResolve({ filter: /^dockerode$/ }, () => ({ path: "dockerode", namespace: "lazy" }));
    build.onLoad({ filter: /.*/, namespace: "lazy" }, () => ({
      contents: [
        'import { createRequire } from "node:module";',
        "const load = () => createRequire(import.meta.url)('dockerode');",
        "export default function Docker(...args) { return new (load())(...args); }",
      ].join("\n"),
      loader: "js",
      resolveDir: ROOT,
    }));
  },
};

/**
 * Builds the CLI into a new directory, makes it the current build and returns its
 * entry. Safe to run concurrently: identical builds land in the same directory.
 */
export async function buildCli() {
  const { build } = await import("esbuild");
  await mkdir(OUT, { recursive: true });
  const tmp = path.join(OUT, `.tmp-${process.pid}-${Date.now()}`);
  // Taken before the build: a file edited while it runs then no longer matches, and
  // the next call builds again rather than trusting a bundle of its older text.
  const before = new Map(
    [...(await sourceFiles(SRC)), INSTALLED, THIS_FILE, TSCONFIG].map((f) => [f, fingerprint(f)]),
  );
  // Every output file sits directly in the build's directory, so one relative path
  // per source file is right for whichever chunk its code lands in.
  const depthProbe = path.join(OUT, "id");
  try {
    const result = await build({
      // Metafile paths are relative to this, whatever directory the CLI was started in.
      absWorkingDir: ROOT,
      entryPoints: { main: ENTRY },
      outdir: tmp,
      outExtension: { ".js": ".mjs" },
      bundle: true,
      splitting: true,
      format: "esm",
      platform: "node",
      target: "node20",
      external: ["esbuild", "tsx", "better-sqlite3"],
      plugins: [sourceUrlPlugin(depthProbe), lazyDockerodePlugin],
      // Inlined CommonJS packages call require(); ES modules have none of their own.
      banner: {
        js: 'import { createRequire as __clawfleetRequire } from "node:module"; const require = __clawfleetRequire(import.meta.url);',
      },
      metafile: true,
      legalComments: "none",
      logLevel: "error",
    });
    const hash = createHash("sha256");
    const names = (await readdir(tmp)).sort();
    for (const name of names) hash.update(name).update(await readFile(path.join(tmp, name)));
    const id = hash.digest("hex").slice(0, 16);
    const dir = path.join(OUT, id);
    // A concurrent build of the same sources got there first: keep its directory.
    await rename(tmp, dir).catch(async (err) => {
      if (fingerprint(path.join(dir, "main.mjs")) === null) throw err;
    });
    const inputs = {};
    const files = Object.keys(result.metafile.inputs)
      .filter((f) => !f.includes("node_modules/") && !f.startsWith("lazy:"))
      .map((f) => path.resolve(ROOT, f));
    for (const file of [...files, INSTALLED, THIS_FILE, TSCONFIG]) {
      // A file that appeared during the build has no earlier stat: [0, -1] never matches.
      const seen = before.get(file) ?? (fingerprint(file) ? [0, -1] : null);
      if (seen) inputs[path.relative(ROOT, file)] = seen;
    }
    const pointer = `${CURRENT}.${process.pid}.tmp`;
    await writeFile(
      pointer,
      `${JSON.stringify({ id, builtAt: new Date().toISOString(), inputs })}\n`,
    );
    await rename(pointer, CURRENT);
    await removeOld(id).catch(() => {});
    return path.join(dir, "main.mjs");
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Every file under `dir`. */
async function sourceFiles(dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? e.path, e.name));
}

/** Removes other builds untouched for an hour, and temp dirs of builds that died. */
async function removeOld(keep) {
  for (const name of await readdir(OUT)) {
    if (name === keep || name.startsWith("current.json")) continue;
    const dir = path.join(OUT, name);
    const s = await stat(dir).catch(() => null);
    if (s && Date.now() - s.mtimeMs > KEEP_OLD_MS) await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE) {
  const started = Date.now();
  const main = await buildCli();
  process.stdout.write(
    `clawfleet: CLI built in ${Date.now() - started} ms: ${path.relative(ROOT, main)}\n`,
  );
}
