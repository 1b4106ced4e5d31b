// Alarms, rules and users in the operator console, against the real `wulian demo`: an alarm
// raised over the API appears live (WebSocket, session cookie) and is acknowledged and cleared;
// a rule is saved (after the API's parse error is shown in place), dry-run and disabled; an
// admin creates a viewer, who can look but not acknowledge; and the alarms screen in zh-CN.
import type { Browser, Page } from "@playwright/test";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { IMAGES, expect, test, type Server } from "./fixtures";

const PASSWORD = "wulian-admin-e2e-Pw7";

async function call(server: Server, method: string, path: string, body?: unknown) {
  const r = await fetch(server.base + path, {
    method,
    headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

let serial = 0;
function unique(prefix: string): string {
  serial += 1;
  return `${prefix}${Date.now() % 1_000_000}${serial}`;
}

/** A user of the demo's tenant, created with the admin key. */
async function user(server: Server, role: string): Promise<string> {
  const username = unique(role.slice(0, 3));
  const r = await call(server, "POST", "/api/v1/users", { username, role, password: PASSWORD });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return username;
}

async function signIn(page: Page, server: Server, username: string, password = PASSWORD) {
  await page.goto(`${server.base}/console/`);
  await page.locator("input[autocomplete=username]").fill(username);
  await page.locator("input[autocomplete=current-password]").fill(password);
  await page.getByTestId("login-submit").click();
  await expect(page.locator(".who")).toContainText(username);
}

async function raise(server: Server, type: string, severity = "major") {
  const r = await call(server, "POST", "/api/v1/alarms", {
    device_id: "bike-0001",
    type,
    severity,
    details: { battery: 7, note: "raised by admin.spec.ts" },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { id: string };
}

async function openAlarms(page: Page) {
  await page.getByTestId("nav-alarms").click();
  await expect(page.getByTestId("alarm-table")).toBeVisible();
  // The socket is up before anything is raised, so what follows arrives live.
  await expect(page.getByTestId("alarm-live")).toHaveAttribute("data-state", "live");
}

test("an alarm raised over the API appears live; the operator acknowledges and clears it", async ({ page, server }) => {
  const op = await user(server, "operator");
  // Some history, for the screenshot.
  for (const [device, type, severity] of [
    ["bike-0007", "lock_jammed", "critical"],
    ["bike-0012", "low_battery", "minor"],
    ["bike-0003", "out_of_fence", "warning"],
    ["bike-0020", "tamper", "major"],
  ]) {
    expect((await call(server, "POST", "/api/v1/alarms", { device_id: device, type, severity })).status).toBe(200);
  }
  await signIn(page, server, op);
  await openAlarms(page);
  // Marks this document: a reload would lose it.
  await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
  const live = page.getByTestId("alarm-live");
  const before = Number(await live.getAttribute("data-events"));

  const type = unique("e2e_overheat_");
  const alarm = await raise(server, type);
  const row = page.locator(`tr[data-alarm="${alarm.id}"]`);
  await expect(row).toBeVisible();
  await expect(row).toContainText(type);
  await expect(row).toContainText("Major");
  await expect(row.getByTestId("alarm-state")).toHaveText("Active");
  // It came over the WebSocket, into the same document.
  expect(Number(await live.getAttribute("data-events"))).toBeGreaterThan(before);
  expect(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument)).toBe(true);
  await expect(row.getByRole("link", { name: "bike-0001" })).toHaveAttribute("href", "/console/devices/bike-0001");
  await row.click();
  await expect(page.locator(".detail-row")).toContainText("raised by admin.spec.ts");
  await page.mouse.move(640, 780);
  await page.screenshot({ path: join(IMAGES, "console-alarms.png") });

  await row.getByTestId("alarm-ack").click();
  await expect(row.getByTestId("alarm-state")).toHaveText("Acknowledged");
  await expect(row.getByTestId("alarm-ack")).toHaveCount(0);
  const acked = await call(server, "GET", `/api/v1/alarms/${alarm.id}`);
  expect(acked.body.status).toBe("acknowledged");
  expect(acked.body.acknowledged_by).toBe(`user:${op}`);

  // A raise of the same device and type while open counts, live, on the same row.
  await raise(server, type);
  await expect(row.locator("td.num")).toHaveText("2");

  await row.getByTestId("alarm-clear").click();
  // The default view shows open alarms: a cleared one leaves it.
  await expect(row).toHaveCount(0);
  expect((await call(server, "GET", `/api/v1/alarms/${alarm.id}`)).body.status).toBe("cleared");
  await page.getByTestId("alarm-status").selectOption("cleared");
  await page.getByTestId("alarm-type").fill(type);
  await expect(page.locator("[data-alarm]")).toHaveCount(1);
  await expect(row.getByTestId("alarm-state")).toHaveText("Cleared");
  await expect(page).toHaveURL(/status=cleared/);
});

/** The status (and problem code) a WebSocket handshake to the alarm feed gets. */
function handshake(server: Server, headers: Record<string, string>): Promise<{ status: number; code?: string }> {
  return new Promise((ok, fail) => {
    const req = request(`${server.base}/api/v1/alarms/ws`, {
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        ...headers,
      },
      timeout: 10_000,
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      ok({ status: res.statusCode ?? 0 });
    });
    req.on("response", (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode ?? 0, code: JSON.parse(body || "{}").code }));
    });
    req.on("error", fail);
    req.end();
  });
}

test("the alarm socket takes a session cookie only from the console's own origin", async ({ page, server }) => {
  const op = await user(server, "operator");
  await signIn(page, server, op);
  const cookie = (await page.context().cookies()).find((c) => c.name === "wulian_session")!;
  const jar = `wulian_session=${cookie.value}`;
  expect(await handshake(server, { Cookie: jar, Origin: server.base })).toEqual({ status: 101 });
  // Another port of the same host: the same site, so the browser sends the cookie along.
  expect(await handshake(server, { Cookie: jar, Origin: "http://127.0.0.1:1" })).toEqual({
    status: 403,
    code: "origin_mismatch",
  });
  expect(await handshake(server, { Cookie: jar })).toEqual({ status: 403, code: "origin_mismatch" });
  // API keys are not sent by browsers on their own; they need no Origin.
  expect(await handshake(server, { Authorization: `Bearer ${server.key}` })).toEqual({ status: 101 });

  // And in the browser: a page of another origin on this host cannot open the operator's feed.
  const other = createServer((_, res) => {
    res.setHeader("Content-Type", "text/html");
    res.end("<!doctype html><title>elsewhere</title>");
  });
  await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
  try {
    await page.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`);
    const outcome = await page.evaluate(
      (url) =>
        new Promise((ok) => {
          const ws = new WebSocket(url);
          ws.onopen = () => ok("open");
          ws.onerror = () => ok("refused");
        }),
      server.base.replace(/^http/, "ws") + "/api/v1/alarms/ws",
    );
    expect(outcome).toBe("refused");
  } finally {
    other.close();
  }
});

test("signed in with an API key, alarms still arrive live (the key offered as a subprotocol)", async ({ page, server }) => {
  await page.goto(`${server.base}/console/`);
  await page.evaluate((k) => sessionStorage.setItem("wulian.apiKey", k), server.key);
  await page.goto(`${server.base}/console/alarms`);
  await expect(page.getByTestId("alarm-table")).toBeVisible();
  await expect(page.getByTestId("alarm-live")).toHaveAttribute("data-state", "live");
  const type = unique("e2e_keyed_");
  const alarm = await raise(server, type);
  await expect(page.locator(`tr[data-alarm="${alarm.id}"]`)).toContainText(type);
});

test("the alarm list pages through more than a page, newest first", async ({ page, server }) => {
  const op = await user(server, "operator");
  const type = unique("e2e_many_");
  // 60 devices' alarms of one type: more than the 50 a page shows.
  const devices = (await (await fetch(`${server.base}/api/v1/devices?limit=60`, {
    headers: { Authorization: `Bearer ${server.key}` },
  })).json()) as { devices: { id: string }[] };
  expect(devices.devices.length).toBe(60);
  for (const d of devices.devices) {
    const r = await call(server, "POST", "/api/v1/alarms", { device_id: d.id, type, severity: "minor" });
    expect(r.status).toBe(200);
  }
  await signIn(page, server, op);
  await page.goto(`${server.base}/console/alarms?status=open&type=${type}`);
  const rows = page.locator("[data-alarm]");
  await expect(rows).toHaveCount(50);
  await expect(rows.first()).toContainText(devices.devices[59].id);
  await page.getByTestId("alarm-next").click();
  await expect(rows).toHaveCount(10);
  await expect(rows.last()).toContainText(devices.devices[0].id);
  await expect(page.getByTestId("alarm-next")).toBeDisabled();
  // Every state, from a bookmarked address.
  await page.getByTestId("alarm-status").selectOption("");
  await expect(page).toHaveURL(/status=all/);
  await page.reload();
  await expect(rows).toHaveCount(50);
  await expect(page.getByTestId("alarm-status")).toHaveValue("");
  // A severity the API cannot filter on is filtered here, without losing the paging.
  await page.goto(`${server.base}/console/alarms?status=open&type=${type}&severity=critical`);
  await expect(page.getByText("No alarm matches.")).toBeVisible();
});

test("an operator writes a rule, sees where it is wrong, dry-runs and disables it", async ({ page, server }) => {
  const op = await user(server, "operator");
  await signIn(page, server, op);
  await page.getByTestId("nav-rules").click();
  await page.getByTestId("rule-new").click();

  const id = unique("e2e-hot-");
  const form = page.getByTestId("rule-form");
  await form.locator("input[name=id]").fill(id);
  await form.locator("input[name=name]").fill("Battery hot");
  await page.getByTestId("rule-sql").fill("SELECT device_id, temp\nFROM 'devices/+/telemetry'\nWHER temp > 50");
  await page.getByTestId("rule-save").click();
  // The API's parse error, at its line, under the query.
  const fault = page.getByTestId("fault-sql");
  await expect(fault).toContainText("line 3");
  await expect(fault.locator("pre")).toContainText("3 | WHER temp > 50");
  // The caret moves to the fault (selecting the "W" of WHER) after the fault renders; a fill
  // racing that move would type into the selection, so wait for it.
  const sqlBox = page.getByTestId("rule-sql");
  await expect(sqlBox).toBeFocused();
  expect(await sqlBox.evaluate((box: HTMLTextAreaElement) => box.value.slice(box.selectionStart, box.selectionEnd))).toBe("W");

  await sqlBox.fill("SELECT device_id, temp\nFROM 'devices/+/telemetry'\nWHERE temp > 50");
  await page.getByTestId("rule-actions").fill('[{"action": "alarm", "type": "hot", "severity": "sideways"}]');
  await page.getByTestId("rule-save").click();
  await expect(page.getByTestId("fault-actions")).toContainText("Action 1");
  await expect(page.getByTestId("fault-sql")).toHaveCount(0);

  await page
    .getByTestId("rule-actions")
    .fill('[{"action": "alarm", "type": "hot", "severity": "major", "clear_when_false": true}]');
  await page.getByTestId("rule-save").click();
  await expect(page.getByTestId("rule-saved")).toBeVisible();
  await expect(page.getByTestId("rule-title")).toHaveText(id);
  await expect(page).toHaveURL(new RegExp(`/console/rules/${id}$`));
  const stored = await call(server, "GET", `/api/v1/rules/${id}`);
  expect(stored.body.sql).toContain("WHERE temp > 50");
  expect(stored.body.enabled).toBe(true);

  // Two messages in order: the first matches and raises, the second clears.
  await page.getByTestId("dry-run").locator("input[name=device]").fill("bike-0001");
  await page.getByTestId("dry-run-payload").fill('[{"temp": 55}, {"temp": 20}]');
  await page.getByTestId("dry-run-submit").click();
  const results = page.getByTestId("dry-run-results").locator(":scope > li");
  await expect(results).toHaveCount(2);
  await expect(results.nth(0)).toHaveAttribute("data-matched", "true");
  await expect(results.nth(0).getByTestId("dry-run-actions")).toContainText("raise alarm");
  await expect(results.nth(0).getByTestId("dry-run-actions")).toContainText('"type":"hot"');
  await expect(results.nth(0)).toContainText('"temp": 55');
  await expect(results.nth(1)).toHaveAttribute("data-matched", "false");
  await expect(results.nth(1).getByTestId("dry-run-actions")).toContainText("clear alarm");
  await page.evaluate(() => scrollTo(0, 0));
  await page.screenshot({ path: join(IMAGES, "console-rules.png"), fullPage: true });

  // The saved rule over the last hour of bike-0001's stored telemetry (the simulator's).
  await page.getByRole("button", { name: "Replay the last hour" }).click();
  await expect(page.getByTestId("replay-summary")).toContainText(/[1-9]\d* messages from stored telemetry/);

  // An edit not saved yet is what the dry run tries.
  await page.getByTestId("rule-sql").fill("SELECT device_id, temp\nFROM 'devices/+/telemetry'\nWHERE temp > 60");
  await page.getByTestId("dry-run-payload").fill('{"temp": 55}');
  await page.getByTestId("dry-run-submit").click();
  await expect(results).toHaveCount(1);
  await expect(results.nth(0)).toHaveAttribute("data-matched", "false");
  await expect(results.nth(0)).toContainText("WHERE is false");

  await page.getByRole("link", { name: /Rules/ }).first().click();
  const listed = page.locator(`tr[data-rule="${id}"]`);
  await expect(listed).toContainText("devices/+/telemetry");
  await listed.getByRole("switch").click();
  await expect(listed).toContainText("Off");
  await expect.poll(async () => (await call(server, "GET", `/api/v1/rules/${id}`)).body.enabled).toBe(false);
});

test("an admin adds a viewer, who sees alarms but cannot acknowledge them", async ({ page, server, browser }) => {
  const admin = await user(server, "admin");
  await signIn(page, server, admin);
  page.on("dialog", (d) => void d.accept());
  await page.getByTestId("nav-users").click();
  await expect(page.getByTestId("users-table")).toContainText(admin);

  const viewer = unique("viewer");
  const form = page.getByTestId("user-create");
  await form.locator("input[name=username]").fill(viewer);
  await form.locator("select[name=role]").selectOption("viewer");
  await form.getByRole("button", { name: "Add" }).click();
  // No password typed: the server generated one, shown once.
  const shown = page.getByTestId("shown-password");
  await expect(shown).toContainText(viewer);
  const generated = (await shown.locator("code").textContent())!.trim();
  expect(generated.length).toBeGreaterThanOrEqual(10);
  const row = page.locator(`tr[data-user="${viewer}"]`);
  await expect(row).toBeVisible();
  expect((await call(server, "GET", `/api/v1/users/${viewer}`)).body.role).toBe("viewer");
  await page.screenshot({ path: join(IMAGES, "console-users.png") });

  // A role change applies at once; back to viewer for what follows.
  await row.getByRole("combobox").selectOption("operator");
  await expect(page.getByText(`${viewer} is now Operator.`)).toBeVisible();
  expect((await call(server, "GET", `/api/v1/users/${viewer}`)).body.role).toBe("operator");
  await row.getByRole("combobox").selectOption("viewer");
  await expect(page.getByText(`${viewer} is now Viewer.`)).toBeVisible();

  // A reset replaces the password; the new one is shown once.
  await page.getByRole("button", { name: "I have noted it" }).click();
  await row.getByRole("button", { name: "Reset password" }).click();
  await expect(shown).toBeVisible();
  const reset = (await shown.locator("code").textContent())!.trim();
  expect(reset).not.toBe(generated);

  const ctx = await (browser as Browser).newContext({ locale: "en-US" });
  try {
    const vp = await ctx.newPage();
    await signIn(vp, server, viewer, reset);
    await expect(vp.getByTestId("nav-users")).toHaveCount(0);
    await openAlarms(vp);
    await expect(vp.getByText("Your role can view alarms but not acknowledge")).toBeVisible();
    const alarm = await raise(server, unique("e2e_viewer_"), "warning");
    const alarmRow = vp.locator(`tr[data-alarm="${alarm.id}"]`);
    await expect(alarmRow).toBeVisible();
    await expect(alarmRow.getByTestId("alarm-ack")).toHaveCount(0);
    await expect(alarmRow.getByRole("button")).toHaveCount(0);
    // Nor does the API let the viewer's session do it behind the screen's back.
    const status = await vp.evaluate(async (id) => {
      const who = await (await fetch("/api/v1/session")).json();
      const r = await fetch(`/api/v1/alarms/${id}/ack`, { method: "POST", headers: { "X-CSRF-Token": who.csrf_token } });
      return r.status;
    }, alarm.id);
    expect(status).toBe(403);
    // The users page, typed in by hand, says why it shows nothing.
    await vp.goto(`${server.base}/console/users`);
    await expect(vp.getByTestId("users-error")).toContainText("needs the admin role; yours is Viewer");

    // Everyone changes their own password.
    await vp.getByTestId("nav-account").click();
    const change = vp.getByTestId("change-password");
    await change.locator("input[name=old]").fill(reset);
    await change.locator("input[name=new]").fill("another-Viewer-pw-42");
    await change.locator("input[name=again]").fill("another-Viewer-pw-42");
    await change.getByRole("button", { name: "Change password" }).click();
    await expect(vp.getByText("Password changed.")).toBeVisible();
    const login = await fetch(`${server.base}/api/v1/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ tenant: "default", username: viewer, password: "another-Viewer-pw-42" }),
    });
    expect(login.status).toBe(200);
  } finally {
    await ctx.close();
  }

  await row.getByRole("button", { name: "Delete" }).click();
  await expect(row).toHaveCount(0);
  expect((await call(server, "GET", `/api/v1/users/${viewer}`)).status).toBe(404);
});

test.describe("zh-CN", () => {
  test.use({ locale: "zh-CN" });

  test("the alarms screen in Simplified Chinese", async ({ page, server }) => {
    const op = await user(server, "operator");
    await signIn(page, server, op);
    await expect(page.getByTestId("nav-alarms")).toHaveText("告警");
    await openAlarms(page);
    await expect(page.getByRole("heading", { name: "告警" })).toBeVisible();
    await expect(page.getByTestId("alarm-live")).toHaveText("实时");
    const alarm = await raise(server, unique("e2e_zh_"), "critical");
    const row = page.locator(`tr[data-alarm="${alarm.id}"]`);
    await expect(row).toContainText("紧急");
    await expect(row.getByTestId("alarm-state")).toHaveText("活动");
    await row.getByRole("button", { name: "确认" }).click();
    await expect(row.getByTestId("alarm-state")).toHaveText("已确认");
    await page.screenshot({ path: join(IMAGES, "console-alarms-zh-CN.png") });
  });
});
