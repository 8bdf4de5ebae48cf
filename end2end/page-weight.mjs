// Page weight as a browser sees it: loads each page in Debian's Chromium, signed in, waits
// for the wasm (and any lazily loaded island) and prints the bytes transferred per file, and
// how many requests, and bytes, came before the page was interactive (its islands hydrated).
// On the dashboard ("/") it also times a filter keystroke: from navigation to the keystroke's
// answer shown, typed as soon as the page is interactive.
// Usage: node page-weight.mjs URL KEY PATH...   (a benchmark: prints, asserts nothing)
import { chromium } from "@playwright/test";

const [base, key, ...paths] = process.argv.slice(2);
if (!base || !key || paths.length === 0) {
  console.error("usage: node page-weight.mjs URL KEY PATH...");
  process.exit(2);
}

// Notes, in page time (ms since navigation), when the page says it is hydrated and when a
// filter's empty answer is shown.
const observe = () => {
  new MutationObserver(() => {
    if (!window.__hydratedAt && document.body?.dataset.hydrated === "true") {
      window.__hydratedAt = performance.now();
    }
    if (!window.__emptyAt && document.querySelector("p.empty")) {
      window.__emptyAt = performance.now();
    }
  }).observe(document, { attributes: true, childList: true, subtree: true });
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
for (const path of paths) {
  const context = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${key}` } });
  const page = await context.newPage();
  await page.addInitScript(observe);
  const files = [];
  page.on("requestfinished", async (request) => {
    const sizes = await request.sizes();
    const response = await request.response();
    files.push({
      url: new URL(request.url()).pathname,
      bytes: sizes.responseBodySize + sizes.responseHeadersSize,
      encoding: (await response?.headerValue("content-encoding")) ?? "identity",
    });
  });
  await page.goto(base + path);
  await page.waitForFunction(() => window.__hydratedAt);
  // What the browser fetched before it was interactive: the document and every resource
  // whose request started before hydration ended (transfer sizes include headers).
  const before = await page.evaluate(() => {
    const at = window.__hydratedAt;
    const nav = performance.getEntriesByType("navigation")[0];
    const early = performance.getEntriesByType("resource").filter((r) => r.startTime <= at);
    return {
      at,
      requests: 1 + early.length,
      bytes: nav.transferSize + early.reduce((sum, r) => sum + r.transferSize, 0),
    };
  });
  // Islands hydrate after the page's wasm; lazy ones fetch their chunks then.
  await page.waitForTimeout(1500);
  const total = files.reduce((sum, f) => sum + f.bytes, 0);
  console.log(`${path}: ${files.length} files, ${total} bytes (${(total / 1024).toFixed(1)} KiB) transferred; ` +
    `interactive after ${before.at.toFixed(0)} ms, ${before.requests} requests, ${before.bytes} bytes before`);
  for (const f of files.sort((a, b) => b.bytes - a.bytes)) {
    console.log(`  ${String(f.bytes).padStart(8)}  ${f.encoding.padEnd(8)}  ${f.url}`);
  }
  await context.close();
}

// The first working filter keystroke on the dashboard, in a fresh context (nothing cached).
if (paths.includes("/")) {
  const context = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${key}` } });
  const page = await context.newPage();
  await page.addInitScript(observe);
  await page.goto(base + "/", { waitUntil: "commit" });
  await page.waitForFunction(() => window.__hydratedAt);
  const typedAt = await page.evaluate(() => performance.now());
  // No pipeline name has a "~"; the answer is the empty result.
  await page.locator("input[name=q]").press("~");
  await page.waitForFunction(() => window.__emptyAt);
  const t = await page.evaluate(() => ({ hydrated: window.__hydratedAt, shown: window.__emptyAt }));
  console.log(`dashboard filter keystroke: typed at ${typedAt.toFixed(0)} ms after navigation ` +
    `(interactive at ${t.hydrated.toFixed(0)} ms), its answer shown at ${t.shown.toFixed(0)} ms`);
  await context.close();
}
await browser.close();
