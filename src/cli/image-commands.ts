/**
 * `clawfleet image build [--runtime scripted|openclaw]`: builds an agent image on
 * the Docker engine with no registry (this host's node runtime and the bundled
 * agent on scratch, see docker-image.ts; with `openclaw`, also the OpenClaw
 * install of this host, see runtime-image.ts), showing each step on stderr as it
 * goes (the last line: its size and build time). Prints the tag and image id on stdout.
 */
import { type Command, Option } from "commander";
import { dockerClient } from "../adapters/docker/docker-pool-wiring.js";
import {
  buildRuntimeImage,
  IMAGE_RUNTIMES,
  IMAGE_TAGS,
  type ImageRuntime,
} from "../adapters/docker/runtime-image.js";
import { ConfigError } from "../errors.js";
import { oneOf, printJson } from "./cli-common.js";

interface BuildFlags {
  runtime: ImageRuntime;
  runtimesDir?: string;
  tag?: string;
  force?: boolean;
  dockerHost?: string;
  json?: boolean;
}

const TAGS_HELP = IMAGE_RUNTIMES.map((r) => `${r}: ${IMAGE_TAGS[r]}`).join(", ");

/** Registers `image build`. */
export function registerImageCommands(program: Command): void {
  const image = program.command("image").description("agent images for Docker pools");
  image
    .command("build")
    .description("build an agent image from this host's node and the project (no registry needed)")
    .addOption(
      new Option("--runtime <name>", "what the image runs: the reference agent, or OpenClaw too")
        .choices(IMAGE_RUNTIMES)
        .argParser(oneOf("--runtime", IMAGE_RUNTIMES))
        .default("scripted"),
    )
    .option(
      "--runtimes-dir <dir>",
      "where OpenClaw is installed (default: $CLAWFLEET_RUNTIMES_DIR or ~/.cache/clawfleet/runtimes)",
    )
    .option("--tag <tag>", `image tag (default per runtime: ${TAGS_HELP})`)
    .option("--force", "build even when the image is up to date")
    .option("--docker-host <url>", "engine (default: $DOCKER_HOST, else /var/run/docker.sock)")
    .option("--json", "print the result as JSON")
    .action(async (flags: BuildFlags) => {
      const docker = dockerClient(flags.dockerHost);
      try {
        await docker.ping();
      } catch (err) {
        const where = flags.dockerHost ?? process.env.DOCKER_HOST ?? "/var/run/docker.sock";
        throw new ConfigError(`no Docker engine at ${where}: ${(err as Error).message}`);
      }
      const built = await buildRuntimeImage(docker, {
        runtime: flags.runtime,
        runtimesDir: flags.runtimesDir,
        tag: flags.tag,
        force: flags.force,
        progress: (line) => process.stderr.write(`image: ${line}\n`),
      });
      if (flags.json) printJson(built);
      else process.stdout.write(`${built.tag} ${built.id}${built.cached ? " (up to date)" : ""}\n`);
    });
}
