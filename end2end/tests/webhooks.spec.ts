import { expect, test } from "@playwright/test";
import { expectAccessible } from "./a11y";
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

test("an endpoint's page shows every attempt, gives a new secret once, and disables it", async ({ page }) => {
  await signIn(page);
  await page.goto("/admin/webhooks");
  await page.getByRole("link", { name: "https://hooks.invalid/flowdeck" }).first().click();
  await expect(page).toHaveURL(/\/admin\/webhooks\/\d+$/);
  await expect(page.getByRole("heading", { name: /^Webhook endpoint \d+$/ })).toBeVisible();
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

  // The delivery opens onto its attempts: each with its time, why it failed and latency.
  const delivery = page.locator("details.delivery", { hasText: "pipeline.created" }).first();
  await delivery.locator("summary").click();
  const attempts = delivery.locator("table.attempts tbody tr");
  await expect(attempts.first()).toContainText("could not connect");
  await expect(attempts.first()).toContainText(/\d+ ms/);
  await expect(delivery).toContainText(/webhook-id msg_/);

  // Nothing spills sideways, on a laptop or a phone, and axe finds nothing (with a
  // delivery open onto its attempts).
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await expectAccessible(page, `a webhook endpoint's page at ${width} px`);
  }
  await page.screenshot({ path: "test-results/webhook-endpoint-phone.png", fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // A new secret is shown once, with the overlap during which the old one still signs.
  await page.getByLabel("Overlap").selectOption("1");
  await page.getByRole("button", { name: "New secret" }).click();
  await expect(page.getByLabel("The signing secret")).toHaveValue(/^whsec_[A-Za-z0-9+/=]{32}$/);
  await expect(page.locator("#rotated-webhook-secret")).toContainText("old secret's signature too until");
  await page.screenshot({ path: "test-results/webhook-endpoint.png", fullPage: true });
  await page.reload();
  await expect(page.getByLabel("The signing secret")).toHaveCount(0);

  // Disabled by an admin, and enabled again.
  await page.getByRole("button", { name: "Disable" }).click();
  await expect(page.locator(".facts")).toContainText("disabled: disabled by an admin");
  await page.getByRole("button", { name: "Enable" }).click();
  await expect(page.getByRole("button", { name: "Disable" })).toBeVisible();
  await expect(page.locator(".facts")).not.toContainText("disabled:");
});
