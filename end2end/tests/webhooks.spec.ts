import { expect, test } from "@playwright/test";
import { adminKey, signIn } from "./session";

// After dashboard.spec.ts (files run in order, one worker): it adds a pipeline, which the
// dashboard's counts do not expect.
test("an admin subscribes a webhook, sees its secret once, and its deliveries with Resend", async ({ page }) => {
  await signIn(page);
  await page.getByRole("link", { name: "Webhooks" }).click();
  await expect(page.getByRole("heading", { name: "Webhooks" })).toBeVisible();
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.getByLabel("URL *").fill("https://hooks.invalid/flowdeck");
  await page.getByLabel("pipeline.created").check();
  await page.getByRole("button", { name: "Create endpoint" }).click();
  const secret = page.getByLabel("The signing secret");
  await expect(secret).toHaveValue(/^whsec_[A-Za-z0-9+/=]{32}$/);
  const card = page.locator("section.webhook", { hasText: "https://hooks.invalid/flowdeck" });
  await expect(card).toContainText("pipeline.created, run.failed");

  // A new pipeline is an event: its delivery is listed, failing (the host does not
  // resolve), with Resend, which brings the page back.
  const made = await page.request.post("/api/pipelines/", {
    headers: { Authorization: `Bearer ${adminKey}` },
    data: { name: "Webhook e2e" },
  });
  expect(made.status()).toBe(201);
  await expect(async () => {
    await page.reload();
    await expect(card.locator("tbody tr").first()).toContainText("could not connect", { timeout: 1000 });
  }).toPass({ timeout: 15_000 });
  await expect(card.locator("tbody tr").first()).toContainText("pipeline.created");
  await page.screenshot({ path: "test-results/webhooks.png", fullPage: true });
  await card.getByRole("button", { name: "Resend" }).first().click();
  await expect(page).toHaveURL(/\/admin\/webhooks/);
  await expect(card.locator("tbody tr").first()).toContainText("pipeline.created");
});
