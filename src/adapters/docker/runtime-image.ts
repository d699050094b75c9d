/**
 * The OpenClaw agent image (`clawfleet image build --runtime openclaw`, tag
 * {@link OPENCLAW_AGENT_IMAGE}): the standard agent image (docker-image.ts) plus
 * the OpenClaw install of this host (openclaw-runtime.ts) at
 * {@link OPENCLAW_IMAGE_DIR}, and the shared libraries its Node 24 and its
 * native addons load (joined to node 20's; on one host they are mostly the same).
 *
 * The install is copied as it is, so the driver finds Node and OpenClaw in the
 * image the way it does on a host, through npm's bin links: symbolic links stay
 * links, and executables stay executable. Nothing in it is writable by the
 * agent: every entry is owned by root, files are r--/r-x and directories r-x
 * for everyone (and the container's root is read-only anyway).
 *
 * Identity without reading the install. The image's hash must change when the
 * runtime in it would, but hashing ~700 MB would make every `up` and every
 * up-to-date check take seconds. The layer's identity is the install's marker
 * (OpenClaw and Node versions, install time) and a listing of every relative
 * path, type, size, mode and link target. What that misses, a file rewritten in
 * place at the same size, does not happen to an install: the installer builds
 * a new directory and publishes it with one rename, marker last
 * (runtime-install.ts), and nothing edits it afterwards; `--force` rebuilds
 * regardless. The small files of the standard image keep their content hash.
 */

import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import path from "node:path";
import type Docker from "dockerode";
import { ConfigError } from "../../errors.js";
import type { PoolProfile } from "../../fleet-options.js";
import { OPENCLAW_AGENT_IMAGE } from "../../runtime-options.js";
import type { RuntimeFiles } from "../agent-link/agent-launch.js";
import {
  type InstalledOpenClaw,
  locateOpenClaw,
  OPENCLAW_VERSION,
  RUNTIME_MARKER,
} from "../runtimes/openclaw-runtime.js";
import {
  type BuildAgentImageOptions,
  type BuiltAgentImage,
  buildAgentImage,
  type ContextEntry,
  DEFAULT_AGENT_IMAGE,
  nodeRuntimeFiles,
} from "./docker-image.js";

/** Where runtimes are in an image. */
export const IMAGE_RUNTIMES_DIR = "/opt/clawfleet/runtimes";
/** The pinned OpenClaw's install directory in the OpenClaw image: the agent host's `runtimeDir`. */
export const OPENCLAW_IMAGE_DIR = `${IMAGE_RUNTIMES_DIR}/openclaw-${OPENCLAW_VERSION}`;
/** The label naming the runtime baked into an image (`openclaw-<version>`). */
export const RUNTIME_LABEL = "io.clawfleet.runtime";

/** The runtimes `clawfleet image build --runtime` makes an image for. */
export const IMAGE_RUNTIMES = ["scripted", "openclaw"] as const;
export type ImageRuntime = (typeof IMAGE_RUNTIMES)[number];
/** The default tag of each runtime's image. */
export const IMAGE_TAGS: Readonly<Record<ImageRuntime, string>> = {
  scripted: DEFAULT_AGENT_IMAGE,
  openclaw: OPENCLAW_AGENT_IMAGE,
};
/** What {@link RUNTIME_LABEL} says on an image of each runtime built by this version. */
export const IMAGE_RUNTIME_LABELS: Readonly<Record<ImageRuntime, string | undefined>> = {
  scripted: undefined,
  openclaw: `openclaw-${OPENCLAW_VERSION}`,
};

/**
 * A directory added to the standard image in its own layer, listed in the
 * context but stood for in the image's hash by `identity` instead of its content.
 */
export interface ImageLayer {
  /** The context directory holding it: every entry's name starts with `<source>/`. */
  readonly source: string;
  /** Where it is copied in the image (absolute). */
  readonly target: string;
  readonly entries: readonly ContextEntry[];
  /** Changes whenever what the layer puts in the image would (see the module comment). */
  readonly identity: string;
  /** Bytes of file content in `entries`. */
  readonly bytes: number;
  /** Host paths of more shared libraries the layer's programs load, copied like node's. */
  readonly libs: readonly string[];
  /** More labels for the image. */
  readonly labels: Readonly<Record<string, string>>;
}

/** lstat calls in flight while listing (the listing is ~40k entries). */
const LIST_BATCH = 128;

/** Read-only for everyone, executable for everyone when the owner could execute it. */
const imageMode = (mode: number, dir: boolean) => (dir || mode & 0o100 ? 0o555 : 0o444);

/**
 * The layer holding the OpenClaw install `installed`; see the module comment.
 * A link pointing out of the install, or anything but files, directories and
 * links, is a ConfigError: it could not work in the image.
 */
export async function openclawImageLayer(
  installed: InstalledOpenClaw,
  progress: (line: string) => void = () => {},
): Promise<ImageLayer> {
  const dir = installed.dir;
  const source = "runtime";
  const found = await readdir(dir, { withFileTypes: true, recursive: true });
  const rels = found.map((d) => path.relative(dir, path.join(d.parentPath, d.name))).sort();
  const entries: ContextEntry[] = [];
  const addons: string[] = [];
  let bytes = 0;
  for (let i = 0; i < rels.length; i += LIST_BATCH) {
    const batch = rels.slice(i, i + LIST_BATCH);
    const stats = await Promise.all(batch.map((rel) => lstat(path.join(dir, rel))));
    for (const [j, st] of stats.entries()) {
      const rel = batch[j]!;
      const file = path.join(dir, rel);
      const name = `${source}/${rel}`;
      if (st.isDirectory()) entries.push({ name, mode: imageMode(st.mode, true) });
      else if (st.isFile()) {
        entries.push({ name, mode: imageMode(st.mode, false), file, size: st.size });
        bytes += st.size;
        if (rel.endsWith(".node")) addons.push(file);
      } else if (st.isSymbolicLink()) {
        const linkname = await readlink(file);
        const resolved = path.resolve(path.dirname(file), linkname);
        const inside = resolved === dir || resolved.startsWith(`${dir}${path.sep}`);
        if (path.isAbsolute(linkname) || !inside)
          throw new ConfigError(
            `${file} links out of the OpenClaw install (${linkname}); reinstall it with: clawfleet runtime install openclaw`,
          );
        entries.push({ name, mode: 0o777, type: "symlink", linkname });
      } else throw new ConfigError(`${file} is not a file, directory or link; cannot copy it`);
    }
  }
  const identity = createHash("sha256").update(await readFile(path.join(dir, RUNTIME_MARKER)));
  for (const e of entries)
    identity.update(
      `${e.name}\0${e.type ?? ""}\0${e.mode}\0${e.size ?? ""}\0${e.linkname ?? ""}\n`,
    );
  const libs = await runtimeLibraries(installed, addons);
  const links = entries.filter((e) => e.type === "symlink").length;
  const files = entries.filter((e) => e.file).length;
  progress(
    `OpenClaw ${installed.version} (node ${installed.nodeVersion}) from ${dir}: ${files} files, ${links} links, ${(bytes / 2 ** 20).toFixed(1)} MiB; its node and ${addons.length} native addons load ${libs.length} shared libraries`,
  );
  return {
    source,
    target: OPENCLAW_IMAGE_DIR,
    entries,
    identity: identity.digest("hex"),
    bytes,
    libs,
    labels: { [RUNTIME_LABEL]: IMAGE_RUNTIME_LABELS.openclaw! },
  };
}

/**
 * The shared libraries of the install's Node and of its native addons (node-pty
 * needs libutil), as host paths. Addons for other systems (darwin, win32 prebuilds
 * shipped in the packages) have none `ldd` can name; libraries inside the
 * install are in the layer already.
 */
async function runtimeLibraries(installed: InstalledOpenClaw, addons: readonly string[]) {
  const libs = new Set<string>();
  for (const binary of [installed.node, ...addons])
    for (const lib of (await nodeRuntimeFiles(binary)).libs)
      if (!lib.startsWith(`${installed.dir}${path.sep}`)) libs.add(lib);
  return [...libs].sort();
}

/** Options of {@link buildRuntimeImage}. */
export interface BuildRuntimeImageOptions extends Omit<BuildAgentImageOptions, "layers"> {
  /** Default `scripted`: the standard image. */
  readonly runtime?: ImageRuntime;
  /** Where the runtime is installed (default: openclaw-runtime.ts's `defaultRuntimesDir`). */
  readonly runtimesDir?: string;
}

/**
 * Builds (or finds up to date) the image of `runtime`, tagged by default
 * {@link IMAGE_TAGS}. OpenClaw's needs its install on this host: a
 * `RUNTIME_NOT_INSTALLED` error names the command that makes one.
 */
export async function buildRuntimeImage(
  docker: Docker,
  options: BuildRuntimeImageOptions = {},
): Promise<BuiltAgentImage> {
  const { runtime = "scripted", runtimesDir, ...rest } = options;
  const tag = options.tag ?? IMAGE_TAGS[runtime];
  if (runtime === "scripted") return buildAgentImage(docker, { ...rest, tag });
  const installed = await locateOpenClaw(runtimesDir);
  const layer = await openclawImageLayer(installed, options.progress);
  return buildAgentImage(docker, { ...rest, tag, layers: [layer] });
}

/**
 * Where a Docker pool's runtime is inside its image: OpenClaw's pools run an
 * image with the runtime at {@link OPENCLAW_IMAGE_DIR} (a pool naming its own
 * image must put it there too); other runtimes bring no files.
 */
export function imageRuntimeFiles(profile: PoolProfile): RuntimeFiles | undefined {
  return profile.runtime === "openclaw" ? { dir: OPENCLAW_IMAGE_DIR } : undefined;
}
