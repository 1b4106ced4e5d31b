// The device list with 10,000 devices: imported through POST /api/v1/devices/import, then
// measured in the browser — time from navigation to the first rows, time for a search to
// apply (typing to the filtered rows, the list's 250 ms pause included), time to turn a page —
// and checked to hold one page of rows, not the fleet. The numbers are printed (`devices:`
// lines) and recorded in docs/benchmarks.md ("Web console").
import { expect, test } from "./fixtures";

const DEVICES = 10_000;
const BATCH = 1_000;
const PAGE = 50;

/** The median of a few runs. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

test("the device list stays server-side and paged with 10,000 devices", async ({ page, server }) => {
  test.setTimeout(300_000);
  const importStart = Date.now();
  // Ten requests at once: the registry shares its fsyncs between concurrent writers.
  const results = await Promise.all(
    Array.from({ length: DEVICES / BATCH }, async (_, b) => {
      const devices = Array.from({ length: BATCH }, (_, i) => {
        const n = b * BATCH + i;
        return { id: `meter-${String(n).padStart(5, "0")}`, name: `Water meter ${n}`, labels: { site: `s${n % 20}` } };
      });
      const r = await fetch(`${server.base}/api/v1/devices/import`, {
        method: "POST",
        headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
        body: JSON.stringify({ devices }),
      });
      expect(r.status).toBe(200);
      return (await r.json()) as { created: unknown[]; errors: unknown[] };
    }),
  );
  const importMs = Date.now() - importStart;
  expect(results.flatMap((r) => r.errors)).toEqual([]);
  expect(results.reduce((n, r) => n + r.created.length, 0)).toBe(DEVICES);

  // When the first device rows reach the DOM, timed from the navigation's start.
  await page.addInitScript(() => {
    const w = window as unknown as { __firstRows?: number };
    new MutationObserver((_, obs) => {
      if (w.__firstRows === undefined && document.querySelector("[data-testid=device-table] tbody tr a")) {
        w.__firstRows = performance.now();
        obs.disconnect();
      }
    }).observe(document, { subtree: true, childList: true });
  });
  await page.goto(`${server.base}/console/`);
  await page.getByTestId("tab-key").click();
  await page.getByTestId("api-key").fill(server.key);
  await page.getByTestId("login-submit").click();
  const rows = page.getByTestId("device-table").locator("tbody tr");
  await expect(rows).toHaveCount(PAGE);

  const firstRows: number[] = [];
  for (let i = 0; i < 3; i++) {
    await page.goto(`${server.base}/console/devices`);
    await expect(rows).toHaveCount(PAGE);
    firstRows.push(await page.evaluate(() => (window as unknown as { __firstRows: number }).__firstRows));
  }
  const total = Number(await page.getByTestId("device-total").getAttribute("data-total"));
  expect(total).toBeGreaterThanOrEqual(DEVICES);

  // Typing a search: from the input event to rows that all match it.
  const search = (needle: string) =>
    page.evaluate(async (needle) => {
      const input = document.querySelector<HTMLInputElement>("[data-testid=device-search]")!;
      const shown = () => [...document.querySelectorAll("[data-testid=device-table] tbody tr a")].map((a) => a.textContent ?? "");
      const done = () => {
        const r = shown();
        return r.length > 0 && r.every((id) => id.includes(needle));
      };
      const start = performance.now();
      input.value = needle;
      input.dispatchEvent(new Event("input", { bubbles: true }));
      await new Promise<void>((ok) => {
        const obs = new MutationObserver(() => {
          if (done()) {
            obs.disconnect();
            ok();
          }
        });
        obs.observe(document.body, { subtree: true, childList: true, characterData: true });
      });
      return performance.now() - start;
    }, needle);
  const filters: number[] = [];
  for (const needle of ["meter-0777", "meter-0123", "meter-0999", "meter-0500", "meter-0042"]) {
    filters.push(await search(needle));
    await expect(rows).toHaveCount(10);
    await expect(rows.first()).toContainText(needle);
  }
  // Names are searched too, case-insensitively, and the total follows the filter.
  await page.getByTestId("device-search").fill("WATER METER 9999");
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText("meter-09999");
  await expect(page.getByTestId("device-total")).toHaveAttribute("data-total", "1");

  // Paging through the 10,000: each page one request, the DOM one page.
  await page.getByTestId("device-search").fill("meter-");
  await expect(page.getByTestId("device-total")).toHaveAttribute("data-total", String(DEVICES));
  await expect(rows.first()).toContainText("meter-00000");
  const pages: number[] = [];
  for (let p = 1; p <= 5; p++) {
    const start = Date.now();
    await page.getByTestId("device-next").click();
    await expect(rows.first()).toContainText(`meter-${String(p * PAGE).padStart(5, "0")}`);
    pages.push(Date.now() - start);
    await expect(rows).toHaveCount(PAGE);
  }
  expect(await page.locator("tr").count()).toBeLessThanOrEqual(PAGE + 2);

  const numbers = {
    devices: total,
    import_ms: importMs,
    first_rows_ms: Math.round(median(firstRows)),
    filter_ms: Math.round(median(filters)),
    filter_max_ms: Math.round(Math.max(...filters)),
    next_page_ms: median(pages),
  };
  console.log(`devices: ${JSON.stringify(numbers)}`);
  test.info().annotations.push({ type: "devices", description: JSON.stringify(numbers) });
  // Loose bounds that catch a list gone client-side (seconds), not a slow machine's jitter.
  expect(numbers.first_rows_ms).toBeLessThan(3_000);
  expect(numbers.filter_ms).toBeLessThan(2_000);
  expect(numbers.next_page_ms).toBeLessThan(2_000);
});
