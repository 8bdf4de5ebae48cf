// Live log figures as a browser sees them: opens a run's page in Debian's Chromium before
// its flow starts, notes when each log line appears on the page, and once the run's log
// is complete compares that with when Prefect received the line (its `received_at`).
// Prints lines shown, the rate the page kept up with, and the delay from Prefect to the
// page (p50, p99, worst). A benchmark: prints, asserts nothing.
// Usage: node log-bench.mjs URL KEY RUN_ID
import { chromium } from "@playwright/test";

const [base, key, run] = process.argv.slice(2);
if (!base || !key || !run) {
  console.error("usage: node log-bench.mjs URL KEY RUN_ID");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const context = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${key}` } });
const page = await context.newPage();
await page.addInitScript(() => {
  const seen = {};
  window.__arrivals = seen;
  const note = () => {
    for (const li of document.querySelectorAll("[data-testid=log-lines] li[data-id]")) {
      seen[li.dataset.id] ??= Date.now();
    }
  };
  new MutationObserver(note).observe(document, { childList: true, subtree: true });
});
await page.goto(`${base}/runs/${run}`);
await page.getByTestId("log-state").filter({ hasText: "its log is complete" }).waitFor({ timeout: 600_000 });
const arrivals = await page.evaluate(() => window.__arrivals);
await browser.close();

// When Prefect received each line, read back a page at a time.
const received = {};
const written = [];
for (let offset = 0; ; offset += 200) {
  const answer = await fetch(`${base}/api/runs/${run}/logs?level=debug&limit=200&offset=${offset}`, {
    headers: { Authorization: `Bearer ${key}` },
  });
  const page = await answer.json();
  for (const line of page.logs) {
    received[line.id] = Date.parse(line.received_at);
    written.push(Date.parse(line.timestamp));
  }
  if (page.next_offset == null) break;
}
const delays = Object.entries(arrivals)
  .filter(([id]) => received[id])
  .map(([id, at]) => at - received[id])
  .sort((a, b) => a - b);
const times = Object.values(arrivals).sort((a, b) => a - b);
const span = (times[times.length - 1] - times[0]) / 1000;
const pick = (q) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))];
written.sort((a, b) => a - b);
const wrote = (written[written.length - 1] - written[0]) / 1000;
console.log(
  `written ${written.length} lines in ${wrote.toFixed(1)} s (${Math.round(written.length / wrote)} lines/s); ` +
  `lines shown ${times.length} of ${Object.keys(received).length} in ${span.toFixed(1)} s ` +
    `(${Math.round(times.length / span)} lines/s); Prefect to page: ` +
    `p50 ${pick(0.5)} ms, p99 ${pick(0.99)} ms, worst ${delays[delays.length - 1]} ms`,
);
