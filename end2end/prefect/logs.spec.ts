import { expect, test, type Page } from "@playwright/test";
import { expectAccessible, WIDTHS } from "../tests/a11y";
import { adminKey, signIn } from "../tests/session";

const api = { Authorization: `Bearer ${adminKey}` };

/** Records when each log line (by Prefect's id) appeared on the page, in epoch ms. */
async function recordArrivals(page: Page) {
  await page.evaluate(() => {
    const seen: Record<string, number> = {};
    (window as any).__arrivals = seen;
    new MutationObserver(() => {
      for (const li of document.querySelectorAll<HTMLElement>("[data-testid=log-lines] li[data-id]")) {
        seen[li.dataset.id!] ??= Date.now();
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
}

test("a failing run's log shows live on its page, its failure says why, and it restarts from the failed stage", async ({ page }) => {
  const made = await page.request.post("/api/pipelines/", {
    headers: api,
    data: { name: "Logs e2e", default_parameters: { stage_seconds: 1.5, fail_stage: "Spark Processing" } },
  });
  expect(made.status()).toBe(201);
  const pipeline = (await made.json()).id;

  await signIn(page);
  const run = (await (await page.request.post(`/api/pipelines/${pipeline}/runs`, { headers: api, data: {} })).json()).id;
  await page.goto(`/runs/${run}`);
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await recordArrivals(page);

  // Lines arrive while the run runs, attributed to their stage.
  const lines = page.getByTestId("log-lines");
  await expect(lines.locator("li", { hasText: "Data Generation: 1000 records" })).toBeVisible({ timeout: 60_000 });
  const running = await (await page.request.get(`/api/runs/${run}`, { headers: api })).json();
  expect(running.status).toBe("running");
  await expect(page.getByTestId("log-state")).toHaveText("Following the log live.");

  // The failure: its error line, the reason at the top, and the stream's end.
  await expect(lines.locator("li.l-error").first()).toContainText("simulated failure", { timeout: 60_000 });
  await expect(page.getByRole("region", { name: "Why it failed" })).toContainText(
    "Spark Processing: simulated failure in stage 'Spark Processing'",
  );
  await expect(page.getByTestId("log-state")).toHaveText("The run has finished; its log is complete.", {
    timeout: 30_000,
  });

  // Each line reached the page within 2 s of Prefect receiving it.
  const arrivals: Record<string, number> = await page.evaluate(() => (window as any).__arrivals);
  const read = await (await page.request.get(`/api/runs/${run}/logs?level=debug`, { headers: api })).json();
  const delays = read.logs
    .filter((l: any) => arrivals[l.id] && l.received_at)
    .map((l: any) => arrivals[l.id] - Date.parse(l.received_at));
  console.log(`${delays.length} lines shown live; Prefect to page: worst ${Math.max(...delays)} ms`);
  expect(delays.length).toBeGreaterThan(5);
  expect(Math.max(...delays)).toBeLessThan(2000);

  // Filters: by level, by stage, by text; follow can be paused.
  await page.getByTestId("log-level").selectOption("error");
  await expect(lines.locator("li").first()).toBeVisible();
  expect(await lines.locator("li:not(.l-error):not(.l-critical)").count()).toBe(0);
  await page.getByTestId("log-level").selectOption("info");
  await page.getByTestId("log-stage").selectOption("Data Generation");
  await expect(lines.locator("li", { hasText: "Data Generation: 1000 records" })).toBeVisible();
  expect(await lines.locator("li", { hasText: "Data Ingestion: 1000 records" }).count()).toBe(0);
  await page.getByTestId("log-stage").selectOption("");
  await page.getByTestId("log-search").fill("ingestion: 1000");
  await expect(lines.locator("li")).toHaveCount(1);
  await page.getByTestId("log-search").fill("");
  await page.getByTestId("log-follow").click();
  await expect(page.getByTestId("log-follow")).toHaveAttribute("aria-pressed", "false");
  const download = await page.request.get(`/api/runs/${run}/logs/download`, { headers: api });
  expect(download.headers()["content-disposition"]).toContain(`run-${run}-logs.txt`);
  expect(await download.text()).toContain("[Data Generation] prefect.flow_runs: Data Generation: 1000 records");
  await page.screenshot({ path: "test-results/run-logs.png", fullPage: true });
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    await expectAccessible(page, `the run page with its log at ${width} px`);
    if (width < 500) await page.screenshot({ path: "test-results/run-logs-phone.png", fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });

  // Retry from the failed stage (same parameters: it fails there again, reusing the rest).
  await page.getByTestId("retry-from").click();
  await page.waitForURL((url) => url.pathname !== `/runs/${run}`);
  await expect(page.getByTestId("retry-of")).toContainText(`run #${run}, from Spark Processing`);
  const stages = page.getByTestId("stage-row");
  await expect(stages.nth(0)).toContainText("skipped");
  await expect(stages.nth(0)).toContainText(`Output reused from run #${run}`);
  await expect(stages.nth(1)).toContainText("skipped");

  // With the failure switched off, the restart completes and runs only the rest.
  const restart = await page.request.post(`/api/runs/${run}/retry`, {
    headers: api,
    data: { from_stage: "Spark Processing", parameters: { fail_stage: null } },
  });
  expect(restart.status()).toBe(202);
  const restarted = (await restart.json()).id;
  await page.goto(`/runs/${restarted}`);
  await expect(page.locator("h1 .badge")).toHaveText("completed", { timeout: 60_000 });
  await expect(stages.nth(0)).toContainText("skipped");
  await expect(stages.nth(2)).toContainText("completed");
  await expect(stages.nth(4)).toContainText("completed");
  await expect(lines.locator("li", { hasText: "Data Generation: reusing the output of flow run" })).toBeVisible({
    timeout: 30_000,
  });
  expect(await lines.locator("li", { hasText: "Data Generation: 1000 records" }).count()).toBe(0);
  await page.screenshot({ path: "test-results/run-restarted.png", fullPage: true });
});
