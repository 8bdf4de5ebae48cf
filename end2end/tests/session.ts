import { expect, type Page } from "@playwright/test";

/** The admin key scripts/e2e.sh made for this run. */
export const adminKey = process.env.FLOWDECK_ADMIN_KEY ?? "";

/** Signs in at /login with `key` and waits for the dashboard. */
export async function signIn(page: Page, key: string = adminKey) {
  await page.goto("/");
  await expect(page).toHaveURL(/\/login\?next=/);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  // Wait for the dashboard itself: the sign-in URL (`/login?next=/`) also ends in "/".
  await page.waitForURL((url) => url.pathname === "/");
  await expect(page.getByRole("heading", { name: "Pipelines" })).toBeVisible();
}
