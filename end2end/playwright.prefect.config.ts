import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// The specs that drive the real demo flow in Prefect (scripts/e2e-prefect.sh starts their
// server with PREFECT_API_URL); the rest of the settings are the main config's.
export default defineConfig({
  ...base,
  testDir: "./prefect",
  timeout: 120_000,
});
