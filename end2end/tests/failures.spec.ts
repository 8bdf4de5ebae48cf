import { expect, test } from "@playwright/test";
import { adminKey, signIn } from "./session";

// After dashboard.spec.ts (files run in order, one worker): it adds a pipeline, which the
// dashboard's counts do not expect.
test("a failed run says why on its page, on its pipeline's page and on the dashboard", async ({ page }) => {
  const api = { Authorization: `Bearer ${adminKey}` };
  const made = await page.request.post("/api/pipelines/", {
    headers: api,
    data: { name: "Failure e2e", stages: ["extract", "load"] },
  });
  expect(made.status()).toBe(201);
  const pipeline = (await made.json()).id;
  const run = (await (await page.request.post(`/api/pipelines/${pipeline}/runs`, { headers: api, data: {} })).json()).id;
  const report = await page.request.post("/api/status-update/", {
    headers: api,
    data: { run_id: run, stage_name: "extract", status: "failed", error_message: "disk full on /data" },
  });
  expect(report.status()).toBe(200);

  await signIn(page);
  await page.goto(`/runs/${run}`);
  const why = page.getByRole("region", { name: "Why it failed" });
  await expect(why).toContainText("extract: disk full on /data");
  await page.screenshot({ path: "test-results/run-failure.png", fullPage: true });

  await page.goto(`/pipelines/${pipeline}`);
  await expect(page.getByTestId("run-failure").first()).toHaveText("extract: disk full on /data");

  await page.goto("/");
  const row = page.getByTestId("pipeline-row").filter({ hasText: "Failure e2e" });
  await expect(row.locator("td[title]")).toHaveAttribute("title", "extract: disk full on /data");
});
