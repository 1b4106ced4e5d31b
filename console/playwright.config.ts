// Browser tests against the real binary (tests/fixtures.ts starts `wulian demo`), in the
// system Chromium: no browser downloads. CHROMIUM overrides its path, WULIAN_BIN the binary's.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  timeout: 180_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    headless: true,
    viewport: { width: 1280, height: 800 },
    actionTimeout: 15_000,
    navigationTimeout: 30_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      // No GPU here: WebGL runs on SwiftShader (ANGLE over Vulkan, Chromium's default). Measured
      // against these, `--use-gl=angle --use-angle=swiftshader` and `--disable-gpu-vsync
      // --disable-frame-rate-limit` made the map pan slower (docs/console.md, Size and speed).
      args: ["--disable-dev-shm-usage", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
    },
    trace: "off",
  },
});
