import { expect, test } from "@playwright/test";
import { signIn } from "./session";

test("an admin makes a key, sees it once, and revoking it signs its holder out", async ({ page, browser }) => {
  await signIn(page);
  await page.getByRole("link", { name: "API keys" }).click();
  await expect(page.getByRole("heading", { name: "API keys" })).toBeVisible();
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);

  await page.getByLabel("Name *").fill("e2e viewer");
  await page.getByLabel("Role").selectOption("viewer");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.getByLabel("The new key");
  await expect(secret).toHaveValue(/^fdk_[0-9A-Za-z]{38}$/);
  const key = await secret.inputValue();
  const row = page.locator("tr", { hasText: "e2e viewer" });
  await expect(row).toContainText("active");
  await expect(row).not.toContainText(key.slice(12));

  // The holder signs in with it and, as a viewer, finds no admin pages.
  const holder = await browser.newContext();
  const theirs = await holder.newPage();
  await signIn(theirs, key);
  await expect(theirs.getByRole("link", { name: "API keys" })).toHaveCount(0);
  await theirs.goto("/audit");
  await expect(theirs.getByRole("heading", { name: "Not allowed" })).toBeVisible();

  // Rotating makes a successor, shown once, and the table lists it.
  const original = page.locator(`tr[data-key-id="${await row.getAttribute("data-key-id")}"]`);
  await original.getByRole("button", { name: "Rotate" }).click();
  await expect(secret).not.toHaveValue(key);
  await expect(secret).toHaveValue(/^fdk_[0-9A-Za-z]{38}$/);
  await expect(row).toHaveCount(2);
  await expect(page.locator("tr", { hasText: "rotated from" })).toHaveCount(1);

  page.once("dialog", (dialog) => dialog.accept());
  await original.getByRole("button", { name: "Revoke" }).click();
  await expect(original).toContainText("revoked");
  await theirs.goto("/");
  await expect(theirs).toHaveURL(/\/login\?next=/);
  await holder.close();

  // The trail has all of it, filterable without JavaScript.
  await page.goto("/audit?action=api_key");
  await expect(page.getByRole("heading", { name: "Audit trail" })).toBeVisible();
  // Two keys were made: the admin key scripts/e2e.sh made with the CLI, and this one.
  await expect(page.locator("td code", { hasText: "api_key.create" })).toHaveCount(2);
  await expect(page.locator("td code", { hasText: "api_key.revoke" })).toHaveCount(1);
  await page.getByRole("textbox", { name: "Action contains" }).fill("auth.sign_in");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/action=auth.sign_in/);
  await expect(page.locator("td code", { hasText: "auth.sign_in" }).first()).toBeVisible();
});

test("a key scoped to a tag, with a budget, shows its limits and sees only that tag's pipelines", async ({ page, browser }) => {
  await signIn(page);
  await page.goto("/admin/api-keys");
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.getByLabel("Name *").fill("e2e agent");
  await page.getByLabel("Role").selectOption("operator");
  await page.getByLabel("Only pipelines tagged (comma-separated)").fill("ingest");
  await page.getByLabel("Actions").selectOption("read,trigger");
  await page.getByLabel("Runs per hour").fill("5");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.getByLabel("The new key");
  await expect(secret).toHaveValue(/^fdk_[0-9A-Za-z]{38}$/);
  const key = await secret.inputValue();
  const row = page.locator("tr", { hasText: "e2e agent" });
  await expect(row).toContainText("tags ingest; read, trigger; 0/5 runs an hour");
  await page.screenshot({ path: "test-results/api-keys-scoped.png", fullPage: true });

  // Signed in with it, the dashboard lists only the pipeline tagged `ingest`.
  const agent = await browser.newContext();
  const theirs = await agent.newPage();
  await signIn(theirs, key);
  await expect(theirs.getByRole("link", { name: "Alpha ingest" })).toBeVisible();
  await expect(theirs.getByText("Beta transform")).toHaveCount(0);
  await expect(theirs.getByText("Gamma export")).toHaveCount(0);
  await theirs.screenshot({ path: "test-results/dashboard-scoped.png", fullPage: true });
  await agent.close();
});

test("hydrated forms answer in place: a refused key at sign-in, a bad number in the key form", async ({ page }) => {
  await page.goto("/login?next=/admin/api-keys");
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  // A reload would drop this mark: the answers below must come without one.
  await page.evaluate(() => ((window as unknown as { stayed: boolean }).stayed = true));
  const stayed = () => page.evaluate(() => (window as unknown as { stayed?: boolean }).stayed === true);

  await page.getByLabel("API key").fill("fdk_not_a_key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("That key is not valid, expired or revoked.");
  expect(await stayed()).toBe(true);

  // The right key: the server function's redirect takes the browser to `next`.
  await page.getByLabel("API key").fill(process.env.FLOWDECK_ADMIN_KEY ?? "");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((url) => url.pathname === "/admin/api-keys");
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  await page.evaluate(() => ((window as unknown as { stayed: boolean }).stayed = true));

  await page.getByLabel("Name *").fill("e2e bad expiry");
  await page.getByLabel("Expires in days (empty: never)").fill("0");
  await page.getByRole("button", { name: "Create key" }).click();
  await expect(page.getByRole("alert")).toContainText("whole number from 1 to 3650");
  expect(await stayed()).toBe(true);
  await expect(page.locator("tr", { hasText: "e2e bad expiry" })).toHaveCount(0);
});
