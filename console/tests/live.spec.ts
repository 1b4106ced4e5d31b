// The device page live (/api/v1/live over a WebSocket): an operator with an account watches a
// device while values are posted through the API, edits a desired twin property, sends a
// command and sees its answer, rotates a token and sees the lock drop off; the device list's
// dots follow connection changes; a viewer sees the same page without any control.
import { join } from "node:path";
import type { Page } from "@playwright/test";
import { IMAGES, expect, test, type Server } from "./fixtures";

const PASSWORD = "wulian-live-e2e-Pw7";

async function call(server: Server, method: string, path: string, auth: string, body?: unknown): Promise<Response> {
  return fetch(server.base + path, {
    method,
    headers: { Authorization: `Bearer ${auth}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function user(server: Server, role: string): Promise<string> {
  const username = `${role}${Date.now() % 1_000_000}`;
  const r = await call(server, "POST", "/api/v1/users", server.key, { username, role, password: PASSWORD });
  expect(r.status, await r.text()).toBe(201);
  return username;
}

async function signIn(page: Page, server: Server, username: string) {
  await page.goto(`${server.base}/console/`);
  await page.getByLabel(/User name/).fill(username);
  await page.getByLabel(/Password/).fill(PASSWORD);
  await page.getByTestId("login-submit").click();
  await expect(page.locator(".who")).toContainText(username);
}

/** A device of our own in the demo installation, with readings; returns its token. */
async function device(server: Server, id: string): Promise<string> {
  const r = await call(server, "POST", "/api/v1/devices", server.key, { id, name: "Live e2e meter" });
  const text = await r.text();
  expect(r.status, text).toBe(201);
  const token = (JSON.parse(text) as { token: string }).token;
  const now = Date.now();
  const points = [0, 1, 2, 3].map((i) => ({ ts: now - (4 - i) * 60_000, temp: 20 + i, humidity: 50 }));
  const posted = await call(server, "POST", `/api/v1/devices/${id}/telemetry`, token, points);
  expect(posted.status, await posted.text()).toBe(200);
  return token;
}

test.use({ locale: "en-US" });

test("an operator watches a device live, edits its twin, commands it and rotates a token", async ({ page, server }) => {
  const id = `meter-${Date.now() % 1_000_000}`;
  let token = await device(server, id);
  await signIn(page, server, await user(server, "operator"));

  await page.goto(`${server.base}/console/devices/${id}`);
  await expect(page.getByTestId("device-title")).toHaveText(id);
  await expect(page.getByTestId("live-state")).toHaveAttribute("data-state", "live");
  const chart = page.getByTestId("chart");
  await expect(chart).toHaveAttribute("data-points", /^[1-9]/);
  const before = Number(await chart.getAttribute("data-points"));
  // Survives only if the page is never reloaded.
  await page.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));

  // A value posted through the API appears in the latest values and on the chart.
  const posted = await call(server, "POST", `/api/v1/devices/${id}/telemetry`, token, { temp: 42.5, humidity: 51 });
  expect(posted.status).toBe(200);
  await expect(page.locator('[data-testid=latest-values] tr[data-key="temp"]')).toContainText("42.5");
  await expect(chart).toHaveAttribute("data-live-points", "1");
  await expect(chart).toHaveAttribute("data-points", String(before + 1));

  // The twin: an invalid document is refused in the form; a valid one is saved and shown.
  await page.getByTestId("twin-edit").click();
  const editor = page.getByTestId("twin-desired-editor");
  await editor.fill('{"report_interval_s": 30,');
  await expect(page.getByTestId("twin-error")).toContainText("Not valid JSON");
  await expect(page.getByTestId("twin-save")).toBeDisabled();
  await editor.fill('{"report_interval_s": null}');
  await expect(page.getByTestId("twin-error")).toContainText("null");
  await editor.fill('{"report_interval_s": 30, "mode": "eco"}');
  await page.getByTestId("twin-save").click();
  await expect(page.getByTestId("twin-desired")).toContainText('"report_interval_s": 30');
  await expect(page.getByTestId("twin-delta")).toContainText('"mode": "eco"');
  const twin = (await (await call(server, "GET", `/api/v1/devices/${id}/twin`, server.key)).json()) as {
    desired: Record<string, unknown>;
  };
  expect(twin.desired).toEqual({ report_interval_s: 30, mode: "eco" });
  // The device reports over HTTP: the reported document and the delta change live.
  const reported = await fetch(`${server.base}/api/v1/devices/${id}/twin/reported`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ report_interval_s: 30, mode: "eco" }),
  });
  expect(reported.status).toBe(200);
  await expect(page.getByTestId("twin-reported")).toContainText('"mode": "eco"');
  await expect(page.getByTestId("twin-delta")).toHaveText("{}");

  // Rotate the token: shown once, with a warning; the new one works, the old one does not.
  await page.getByTestId("token-rotate").click();
  await expect(page.getByTestId("rotate-panel")).toContainText(id);
  await page.getByTestId("rotate-confirm").click();
  const panel = page.getByTestId("token-panel");
  await expect(panel).toContainText("shown only this once");
  const fresh = (await page.getByTestId("new-token").textContent()) ?? "";
  expect(fresh).toMatch(/^wld_/);
  const old = await call(server, "POST", `/api/v1/devices/${id}/telemetry`, token, { temp: 1 });
  expect(old.status).toBe(401);
  token = fresh;
  const ok = await call(server, "POST", `/api/v1/devices/${id}/telemetry`, token, { temp: 43.25 });
  expect(ok.status).toBe(200);
  await expect(page.locator('[data-testid=latest-values] tr[data-key="temp"]')).toContainText("43.25");

  expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
  await page.evaluate(() => scrollTo(0, 0));
  await page.screenshot({ path: join(IMAGES, "console-device-live.png"), fullPage: true });
});

test("a simulated lock: its command answer and its disconnect arrive live, on the page and in the list", async ({
  page,
  server,
}) => {
  await signIn(page, server, await user(server, "operator"));
  await page.goto(`${server.base}/console/devices/bike-0007`);
  await expect(page.getByTestId("live-state")).toHaveAttribute("data-state", "live");
  await expect(page.getByTestId("device-presence")).toContainText("Online");

  await page.getByTestId("command-name").fill("ring");
  await page.getByTestId("command-send").click();
  const answer = page.getByTestId("command-answer");
  await expect(answer).toHaveAttribute("data-status", "succeeded");
  await expect(answer).toContainText("rang_s");
  await expect(page.getByTestId("recent-commands")).toContainText("succeeded");

  // Rotating the token without grace disconnects the lock: the page says so by itself.
  await page.getByTestId("token-rotate").click();
  await page.getByTestId("rotate-confirm").click();
  await expect(page.getByTestId("token-panel")).toBeVisible();
  await expect(page.getByTestId("device-presence")).toContainText("Offline");

  // The list: bike-0008 is online until its token is rotated through the API.
  await page.getByTestId("nav-devices").click();
  await page.getByTestId("device-search").fill("bike-0008");
  await expect(page.getByTestId("device-table").locator("tbody tr")).toHaveCount(1);
  const dot = page.getByTestId("presence-bike-0008");
  await expect(dot).toContainText("Online");
  await page.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));
  const r = await call(server, "POST", "/api/v1/devices/bike-0008/token", server.key);
  expect(r.status).toBe(200);
  await expect(dot).toContainText("Offline");
  expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
});

test("a viewer sees the device page without controls", async ({ page, server }) => {
  const id = `meter-v${Date.now() % 1_000_000}`;
  const token = await device(server, id);
  await signIn(page, server, await user(server, "viewer"));
  await page.goto(`${server.base}/console/devices/${id}`);
  await expect(page.getByTestId("device-title")).toHaveText(id);
  await expect(page.getByTestId("live-state")).toHaveAttribute("data-state", "live");
  await expect(page.getByTestId("twin-desired")).toBeVisible();
  await expect(page.getByTestId("read-only")).toBeVisible();
  await expect(page.getByTestId("twin-edit")).toHaveCount(0);
  await expect(page.getByTestId("token-rotate")).toHaveCount(0);
  await expect(page.getByTestId("command-send")).toHaveCount(0);
  // Viewers still get live values.
  await call(server, "POST", `/api/v1/devices/${id}/telemetry`, token, { temp: 7.5 });
  await expect(page.locator('[data-testid=latest-values] tr[data-key="temp"]')).toContainText("7.5");
});
