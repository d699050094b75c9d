/**
 * `clawfleet image build`: builds the agent image on the Docker engine with no
 * registry (this host's node runtime and the bundled agent on scratch; see
 * docker-image.ts), showing each step on stderr as it goes. Prints the tag and
 * image id on stdout.
 */
import type { Command } from "commander";
import { buildAgentImage, DEFAULT_AGENT_IMAGE } from "../adapters/docker/docker-image.js";
import { dockerClient } from "../adapters/docker/docker-pool-wiring.js";
import { ConfigError } from "../errors.js";
import { printJson } from "./cli-common.js";

interface BuildFlags {
  tag: string;
  force?: boolean;
  dockerHost?: string;
  json?: boolean;
}

/** Registers `image build`. */
export function registerImageCommands(program: Command): void {
  const image = program.command("image").description("agent images for Docker pools");
  image
    .command("build")
    .description("build the agent image from this host's node and the project (no registry needed)")
    .option("--tag <tag>", "image tag", DEFAULT_AGENT_IMAGE)
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
      const built = await buildAgentImage(docker, {
        tag: flags.tag,
        force: flags.force,
        progress: (line) => process.stderr.write(`image: ${line}\n`),
      });
      if (flags.json) printJson(built);
      else process.stdout.write(`${built.tag} ${built.id}${built.cached ? " (up to date)" : ""}\n`);
    });
}
