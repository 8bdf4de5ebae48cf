import AxeBuilder from "@axe-core/playwright";
import { expect, type Page } from "@playwright/test";

/** The WCAG 2.1 A and AA rules axe checks. */
const WCAG21AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/**
 * Checks the page as it is now: no WCAG 2.1 AA violation axe can find, and no sideways
 * scrolling at its current width. Names each violation's rule and first elements.
 */
export async function expectAccessible(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).withTags(WCAG21AA).analyze();
  const found = results.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`,
  );
  expect(found, `${what}: accessibility violations`).toEqual([]);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow, `${what}: sideways scroll at ${page.viewportSize()?.width} px`).toBeLessThanOrEqual(0);
  // Nor a table spilling out of its card. On a phone a card may scroll a wide table
  // (WCAG's reflow exempts data tables); on a laptop every table fits its card.
  const wide = (page.viewportSize()?.width ?? 0) >= 1000;
  const spills = await page.evaluate((wide) =>
    [...document.querySelectorAll("table")].flatMap((table) => {
      const card = table.closest(".card");
      if (!card) return []; // the page itself must not scroll (above)
      const over = table.getBoundingClientRect().right - card.getBoundingClientRect().right;
      const scrolls = card.scrollWidth > card.clientWidth + 1;
      if (getComputedStyle(card).overflowX === "visible" ? over > 1 : wide && scrolls) {
        return [`${table.className}: ${Math.round(Math.max(over, card.scrollWidth - card.clientWidth))} px`];
      }
      return [];
    }), wide);
  expect(spills, `${what}: tables wider than their cards at ${page.viewportSize()?.width} px`).toEqual([]);
}

/** Each width a page is checked at: a phone and a laptop. */
export const WIDTHS = [390, 1280];

/**
 * Presses Tab until `target` has focus (at most 60 times), checking that every control
 * it stops on shows where focus is (an outline).
 */
export async function tabTo(page: Page, target: import("@playwright/test").Locator) {
  for (let i = 0; i < 60; i++) {
    if (await target.evaluate((el) => el === document.activeElement).catch(() => false)) return;
    await page.keyboard.press("Tab");
    const shown = await page.evaluate(() => {
      const el = document.activeElement as HTMLElement | null;
      if (!el || el === document.body) return "";
      const style = getComputedStyle(el);
      const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
      return outline ? "" : `no visible focus on ${el.outerHTML.slice(0, 100)}`;
    });
    expect(shown, "focus is visible").toBe("");
  }
  await expect(target).toBeFocused();
}
