import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two cores: integration tests spawn real servers and agents, so keep concurrency low.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
