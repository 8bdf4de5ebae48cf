// Page weight as a browser sees it: loads each page in Debian's Chromium, signed in, waits
// for the wasm (and any lazily loaded island) and prints the bytes transferred per file.
// Usage: node page-weight.mjs URL KEY PATH...   (a benchmark: prints, asserts nothing)
import { chromium } from "@playwright/test";

const [base, key, ...paths] = process.argv.slice(2);
if (!base || !key || paths.length === 0) {
  console.error("usage: node page-weight.mjs URL KEY PATH...");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
for (const path of paths) {
  const context = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${key}` } });
  const page = await context.newPage();
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
  await page.waitForSelector("body[data-hydrated='true']");
  // Islands hydrate after the page's wasm; lazy ones fetch their chunks then.
  await page.waitForTimeout(1500);
  const total = files.reduce((sum, f) => sum + f.bytes, 0);
  console.log(`${path}: ${files.length} files, ${total} bytes (${(total / 1024).toFixed(1)} KiB) transferred`);
  for (const f of files.sort((a, b) => b.bytes - a.bytes)) {
    console.log(`  ${String(f.bytes).padStart(8)}  ${f.encoding.padEnd(8)}  ${f.url}`);
  }
  await context.close();
}
await browser.close();
