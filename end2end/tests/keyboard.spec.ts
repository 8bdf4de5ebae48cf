import { expect, test } from "@playwright/test";
import { tabTo } from "./a11y";
import { adminKey, signIn } from "./session";

// After dashboard.spec.ts (files run in order): it adds a pipeline and runs.
test("Run, Cancel and Retry work by keyboard alone, with visible focus", async ({ page }) => {
  const api = { Authorization: `Bearer ${adminKey}` };
  const made = await page.request.post("/api/pipelines/", { headers: api, data: { name: "Keyboard e2e" } });
  expect(made.status()).toBe(201);
  const pipeline = (await made.json()).id;
  await signIn(page);
  await page.goto(`/pipelines/${pipeline}`);
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

  await tabTo(page, page.getByRole("button", { name: "▶ Run", exact: true }));
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/runs\/\d+$/);
  const first = page.url();
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

  await tabTo(page, page.getByRole("button", { name: "■ Cancel" }));
  await page.keyboard.press("Enter");
  await expect(page.locator("h1 .badge")).toHaveText("cancelled");

  await tabTo(page, page.getByRole("button", { name: "↻ Retry" }));
  await page.keyboard.press("Enter");
  await page.waitForURL((url) => url.href !== first && /\/runs\/\d+$/.test(url.pathname));
  await expect(page.getByTestId("retry-of")).toContainText("Retry of run #");
});
