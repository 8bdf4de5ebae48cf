import { expect, test } from "@playwright/test";
import { expectAccessible, tabTo, WIDTHS } from "./a11y";
import { adminKey, signIn } from "./session";

// First of the specs (files run in order): it reads the seeded pipelines and writes nothing.
test("every page meets WCAG 2.1 AA as axe checks it, at 390 and 1280 px", async ({ page }) => {
  const api = { Authorization: `Bearer ${adminKey}` };
  const pipelines = await (await page.request.get("/api/pipelines/", { headers: api })).json();
  const gamma = pipelines.find((p: any) => p.name === "Gamma export");
  const runs = await (
    await page.request.post("/api/runs/filter", { headers: api, data: { limit: 1 } })
  ).json();

  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    await page.goto("/login");
    await expectAccessible(page, "sign-in");
  }
  await signIn(page);
  const pages = [
    ["dashboard", "/"],
    ["pipeline", `/pipelines/${gamma.id}`],
    ["run", `/runs/${runs[0].id}`],
    ["new pipeline form", "/pipelines/new"],
    ["API keys", "/admin/api-keys"],
    ["webhooks", "/admin/webhooks"],
    ["audit", "/audit"],
    ["not found", "/no/such/page"],
  ];
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    for (const [what, path] of pages) {
      await page.goto(path);
      await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
      await expectAccessible(page, `${what} (${path})`);
    }
  }
});

test("the dashboard's filter works by keyboard alone, with visible focus", async ({ page }) => {
  await signIn(page);
  await expect(page.locator("body[data-hydrated='true']")).toHaveCount(1);
  const filter = page.getByRole("searchbox").first();
  await tabTo(page, filter);
  await page.keyboard.type("Gamma");
  await expect(page.getByTestId("pipeline-row")).toHaveCount(1);
});
