import { expect, test } from "@playwright/test";
import { adminKey as key, signIn } from "./session";

test.beforeAll(() => {
  expect(key, "FLOWDECK_ADMIN_KEY must be set").toMatch(/^fdk_/);
});

test("signing in works without JavaScript and the dashboard is server-rendered", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await signIn(page);
  await expect(page.getByRole("heading", { name: "Pipelines" })).toBeVisible();
  await expect(page.getByTestId("pipeline-row")).toHaveCount(3);
  await expect(page.getByRole("link", { name: "Alpha ingest" })).toBeVisible();
  // Without the wasm nothing filters: typing changes no row.
  await page.getByTestId("pipeline-filter").fill("alpha");
  await expect(page.getByTestId("pipeline-row")).toHaveCount(3);
  await context.close();
});

test("after hydration the list filters as you type, without a reload", async ({ page }) => {
  await signIn(page);
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  // A reload would drop this marker; the app's own navigation keeps it.
  await page.evaluate(() => ((window as any).__sameDocument = true));
  await expect(page.getByTestId("pipeline-count")).toHaveText("3 of 3");
  await page.getByTestId("pipeline-filter").fill("alpha");
  await expect(page.getByTestId("pipeline-row")).toHaveCount(1);
  await expect(page.getByTestId("pipeline-count")).toHaveText("1 of 3");
  await expect(page).toHaveURL(/\/\?q=alpha$/);
  await page.getByTestId("pipeline-filter").fill("");
  await expect(page).toHaveURL(/\/$/);
  await page.getByTestId("status-filter").selectOption("completed");
  await expect(page).toHaveURL(/\?status=completed$/);
  await expect(page.getByTestId("pipeline-row")).toHaveCount(1);
  await expect(page.getByRole("link", { name: "Gamma export" })).toBeVisible();
  // The filters live in the URL: back goes to the unfiltered list.
  await page.goBack();
  await expect(page.getByTestId("pipeline-row")).toHaveCount(3);
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
});

test("a filtered dashboard URL can be shared and renders without JavaScript", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await signIn(page);
  await page.goto("/?tag=ingest");
  await expect(page.getByTestId("pipeline-row")).toHaveCount(1);
  await expect(page.getByRole("link", { name: "Alpha ingest" })).toBeVisible();
  await expect(page.locator("time").first()).toHaveAttribute("title", /UTC$/);
  await context.close();
});

test("an operator runs a pipeline and lands on the new run's page", async ({ page }) => {
  await signIn(page);
  await page.getByRole("link", { name: "Beta transform" }).click();
  await expect(page).toHaveURL(/\/pipelines\/\d+$/);
  await expect(page.getByRole("heading", { name: /Beta transform/ })).toBeVisible();
  await page.getByRole("button", { name: "▶ Run" }).click();
  await expect(page).toHaveURL(/\/runs\/\d+$/);
  await expect(page.getByRole("heading", { name: /Run #\d+/ })).toContainText("pending");
  await expect(page.getByTestId("stage-row")).toHaveCount(5);
});

test("an operator cancels a pending run and retries it", async ({ page }) => {
  await signIn(page);
  await page.getByRole("link", { name: "Alpha ingest" }).click();
  await page.getByRole("button", { name: "▶ Run" }).click();
  await expect(page).toHaveURL(/\/runs\/\d+$/);
  const original = page.url();
  await page.getByRole("button", { name: "■ Cancel" }).click();
  await expect(page.getByRole("heading", { name: /Run #\d+/ })).toContainText("cancelled");
  await expect(page.getByText("cancelled before it reached Prefect")).toBeVisible();
  await page.getByRole("button", { name: "↻ Retry" }).click();
  await expect(page).not.toHaveURL(original);
  await expect(page.getByRole("heading", { name: /Run #\d+/ })).toContainText("pending");
  await expect(page.getByText(/Retry of/)).toBeVisible();
});

test("unknown pages answer 404 with a helpful page", async ({ page }) => {
  await signIn(page);
  const response = await page.goto("/pipelines/987654");
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Not found" })).toBeVisible();
});

test("pages hydrate under their Content Security Policy without a single violation", async ({ page }) => {
  await page.addInitScript(() => {
    (window as any).__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      (window as any).__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  await signIn(page);
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.getByTestId("pipeline-filter").fill("gamma");
  await expect(page.getByTestId("pipeline-row")).toHaveCount(1);
  expect(await page.evaluate(() => (window as any).__violations)).toEqual([]);
  await page.getByRole("link", { name: "Gamma export" }).click();
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.getByText("Run with parameters…").click();
  await expect(page.getByRole("button", { name: "▶ Run with these parameters" })).toBeVisible();
  expect(await page.evaluate(() => (window as any).__violations)).toEqual([]);
  // Markup injected into the page (what an XSS would do) cannot run script.
  const injected = await page.evaluate(async () => {
    const div = document.createElement("div");
    div.innerHTML = '<img src="data:," onerror="window.__ran = true">';
    document.body.appendChild(div);
    await new Promise((resolve) => setTimeout(resolve, 300));
    return (window as any).__ran === true;
  });
  expect(injected).toBe(false);
});

// Last in this file (one worker, in order): it adds a pipeline, which the counts above
// do not expect.
test("an admin creates a pipeline from the form and runs it with parameters", async ({ page }) => {
  await signIn(page);
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.getByRole("link", { name: "+ New pipeline" }).click();
  await expect(page.getByRole("heading", { name: "New pipeline" })).toBeVisible();
  // A new page: its form answers in place only once its island has hydrated (before that,
  // a click submits it as a plain form and the error comes back in the address).
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  // No Prefect in this test server: the form says so and takes a typed deployment name.
  await expect(page.getByText("Prefect is not configured")).toBeVisible();
  await page.getByLabel("Name *").fill("Delta load");
  await page.getByLabel("Default parameters (JSON object)").fill("[1, 2]");
  await page.getByRole("button", { name: "Create pipeline" }).click();
  await expect(page.getByRole("alert")).toContainText("default_parameters");
  await expect(page).toHaveURL(/\/pipelines\/new$/);

  await page.getByLabel("Default parameters (JSON object)").fill('{"rows": 7, "mode": "full"}');
  await page.getByLabel("Tags, comma-separated").fill("nightly, finance");
  await page.getByRole("button", { name: "Create pipeline" }).click();
  await expect(page).toHaveURL(/\/pipelines\/\d+$/);
  await expect(page.getByRole("heading", { name: /Delta load/ })).toBeVisible();

  await page.getByText("Run with parameters…").click();
  const rows = page.getByLabel("rows", { exact: true });
  await expect(rows).toHaveValue("7");
  await rows.fill("12");
  await page.getByRole("button", { name: "▶ Run with these parameters" }).click();
  await expect(page).toHaveURL(/\/runs\/\d+$/);
  await expect(page.locator("pre.code")).toContainText('"rows": 12');
  await expect(page.locator("pre.code")).toContainText('"mode": "full"');
});

const auth = () => ({ Authorization: `Bearer ${key}` });

test("a pipeline created through the API appears on an open dashboard within a second", async ({ page, request }) => {
  await signIn(page);
  await expect(page.getByTestId("live")).toHaveText("live");
  let reloaded = false;
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) reloaded = true;
  });
  const name = `Live ${Date.now()}`;
  const made = await request.post("/api/pipelines/", { headers: auth(), data: { name } });
  expect(made.status()).toBe(201);
  await expect(page.getByRole("link", { name })).toBeVisible({ timeout: 1000 });
  expect(reloaded, "the row arrives without a reload").toBe(false);
  // Its first run is announced to screen readers as its status changes (a new row is not).
  await expect(page.getByTestId("rows-announce")).toHaveText("");
  const pipeline = (await made.json()).id;
  const run = await (await request.post(`/api/pipelines/${pipeline}/runs`, { headers: auth(), data: {} })).json();
  await request.post("/api/status-update/", { headers: auth(), data: { run_id: run.id, status: "running" } });
  await expect(page.getByTestId("rows-announce")).toHaveText(`${name}: running`);
});

test("a stage update appears on an open run page within a second", async ({ page, request }) => {
  const pipeline = await (
    await request.post("/api/pipelines/", { headers: auth(), data: { name: `Run page ${Date.now()}` } })
  ).json();
  const run = await (await request.post(`/api/pipelines/${pipeline.id}/runs`, { headers: auth(), data: {} })).json();
  await signIn(page);
  await page.goto(`/runs/${run.id}`);
  await expect(page.getByTestId("live")).toHaveText("live");
  await expect(page.getByTestId("timeline-empty")).toBeVisible();
  let reloaded = false;
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) reloaded = true;
  });
  const update = await request.post("/api/status-update/", {
    headers: auth(),
    data: { run_id: run.id, stage_name: "Data Ingestion", status: "running", records_processed: 42 },
  });
  expect(update.status()).toBe(200);
  const row = page.getByTestId("stage-row").nth(1);
  await expect(row).toContainText("running", { timeout: 1000 });
  await expect(row).toContainText("42", { timeout: 1000 });
  await expect(page.getByRole("heading", { name: /Run #\d+/ })).toContainText("running", { timeout: 1000 });
  // Screen readers hear the new status, politely.
  await expect(page.getByTestId("run-announce")).toHaveText(`Run #${run.id} is running`);
  // The stage timeline appears and draws the running stage.
  await expect(page.getByTestId("timeline-row")).toHaveCount(5, { timeout: 1000 });
  await expect(page.getByTestId("timeline").locator("rect")).toHaveCount(1);
  // The run ends: Cancel gives way to Retry, as the server renders them, in place.
  await expect(page.getByRole("button", { name: "■ Cancel" })).toBeVisible();
  const ended = await request.post("/api/status-update/", {
    headers: auth(),
    data: { run_id: run.id, status: "failed", error_message: "boom" },
  });
  expect(ended.status()).toBe(200);
  await expect(page.getByRole("button", { name: "↻ Retry" })).toBeVisible({ timeout: 1000 });
  await expect(page.getByRole("button", { name: "■ Cancel" })).toHaveCount(0);
  await expect(page.getByRole("heading", { name: /Run #\d+/ })).toContainText("failed");
  await expect(page.getByTestId("run-announce")).toHaveText(`Run #${run.id} failed: boom`);
  expect(reloaded, "the stage changes without a reload").toBe(false);
});
