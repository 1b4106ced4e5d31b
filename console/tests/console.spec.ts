// The operator: sign in with the admin API key, find a device, open its chart, send a command
// and see the answer; then the fleet map. In English and in Simplified Chinese.
import { join } from "node:path";
import { IMAGES, expect, test } from "./fixtures";

const LOCALES = [
  { locale: "en-US", suffix: "", succeeded: "succeeded", devices: "Devices" },
  { locale: "zh-CN", suffix: "-zh-CN", succeeded: "成功", devices: "设备" },
];

for (const l of LOCALES) {
  test.describe(`console (${l.locale})`, () => {
    test.use({ locale: l.locale });

    test("operator finds a device, charts it, sends a command, sees the map", async ({ page, server }) => {
      await page.goto(`${server.base}/console/`);
      await page.getByTestId("tab-key").click();
      await page.getByTestId("api-key").fill(server.key);
      await page.getByTestId("login-submit").click();

      await expect(page.getByRole("heading", { name: l.devices })).toBeVisible();
      await expect(page.getByTestId("device-table").locator("tbody tr")).not.toHaveCount(0);
      if (!l.suffix) await page.screenshot({ path: join(IMAGES, "console-devices.png") });

      await page.getByTestId("device-search").fill("bike-0001");
      await expect(page.getByTestId("device-table").locator("tbody tr")).toHaveCount(1);
      await page.getByRole("link", { name: "bike-0001", exact: true }).click();
      await expect(page.getByTestId("device-title")).toHaveText("bike-0001");
      await expect(page.getByTestId("latest-values")).toContainText("battery");

      const chart = page.getByTestId("chart");
      await expect(chart.locator("canvas")).toBeVisible();
      await expect(chart).toHaveAttribute("data-points", /^[1-9]/);

      await page.getByTestId("command-name").fill("ring");
      await page.getByTestId("command-send").click();
      const answer = page.getByTestId("command-answer");
      await expect(answer).toContainText(l.succeeded);
      await expect(answer).toContainText("rang_s");
      await page.evaluate(() => scrollTo(0, 0));
      await page.screenshot({ path: join(IMAGES, `console-device${l.suffix}.png`), fullPage: true });

      await page.getByTestId("nav-map").click();
      const map = page.getByTestId("fleet-map");
      await expect(map).toHaveAttribute("data-bikes", /^[1-9]/, { timeout: 30_000 });
      await page.waitForFunction(() => {
        const m = (window as unknown as { __wulianMap?: { loaded(): boolean } }).__wulianMap;
        return !!m && m.loaded();
      });
      await page.screenshot({ path: join(IMAGES, `console-map${l.suffix}.png`) });
    });
  });
}

test("operator signs in with an account; changes carry the CSRF token", async ({ page, server }) => {
  const username = `op${Date.now() % 1_000_000}`;
  const password = "wulian-console-e2e-Pw7";
  const created = await fetch(`${server.base}/api/v1/users`, {
    method: "POST",
    headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ username, role: "operator", password }),
  });
  test.skip(created.status === 404, "this server has no operator accounts yet");
  expect(created.status).toBe(201);

  await page.goto(`${server.base}/console/`);
  await page.getByLabel(/User name/).fill(username);
  await page.getByLabel(/Password/).fill(password);
  await page.getByTestId("login-submit").click();
  await expect(page.locator(".who")).toContainText(username);

  await page.goto(`${server.base}/console/devices/bike-0002`);
  await expect(page.getByTestId("device-title")).toHaveText("bike-0002");
  await page.getByTestId("command-name").fill("ring");
  await page.getByTestId("command-send").click();
  await expect(page.getByTestId("command-answer")).toContainText("succeeded");

  // The session survives a reload (cookie), and signing out ends it.
  await page.reload();
  await expect(page.locator(".who")).toContainText(username);
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByTestId("login-submit")).toBeVisible();
});
