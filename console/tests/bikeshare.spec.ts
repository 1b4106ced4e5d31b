// The bike-share operator screens against `wulian demo`: zones uploaded and drawn, a trip a
// rider made through the rider API with its route, a refund from the rider's page, a work order
// from a rebalancing suggestion taken to done, what a viewer sees, and the screens in zh-CN.
import type { Page } from "@playwright/test";
import { join } from "node:path";
import { IMAGES, expect, residentId, test, type Server } from "./fixtures";

interface Bike {
  id: string;
  lat: number;
  lon: number;
}
interface TripView {
  id: string;
  state: string;
  bike: string;
  unlocked_at: number | null;
  grace_until: number | null;
  total: number | null;
  start: [number, number] | null;
}

async function signIn(page: Page, server: Server) {
  await page.goto(`${server.base}/console/`);
  await page.getByTestId("tab-key").click();
  await page.getByTestId("api-key").fill(server.key);
  await page.getByTestId("login-submit").click();
  await expect(page.getByTestId("nav-bikeshare")).toBeVisible();
}

async function mapReady(page: Page, testid: string) {
  await expect(page.getByTestId(testid)).toHaveAttribute("data-ready", "1", { timeout: 30_000 });
  await page.waitForFunction(() => {
    const m = (window as unknown as { __wulianMap?: { loaded(): boolean } }).__wulianMap;
    return !!m && m.loaded();
  });
}

async function call<T>(server: Server, method: string, path: string, body?: unknown, token = server.key, headers: Record<string, string> = {}) {
  const r = await fetch(server.base + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** A rider signed up through the rider API, consenting to routes, with ¥20 from the sandbox. */
async function newRider(server: Server, seed: number): Promise<{ id: string; token: string }> {
  const phone = `137${String(seed).padStart(8, "0").slice(-8)}`;
  const up = await call<{ rider: { id: string }; token: string }>(server, "POST", "/api/v1/rider/default/sign-up", {
    phone,
    name: "E2E Rider",
    real_name: "张三",
    id_number: residentId(seed),
    location_consent: true,
  });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  const top = await call(server, "POST", "/api/v1/rider/wallet/top-ups", { amount: 2000, idempotency_key: `e2e-${seed}` }, up.body.token);
  expect(top.status, JSON.stringify(top.body)).toBe(200);
  return { id: up.body.rider.id, token: up.body.token };
}

/** Available bikes alone in their H3 cell: a trip from one leaves its cell with demand and no
 * supply, which the rebalancing suggestion then has to fill. */
async function lonelyBikes(server: Server): Promise<Bike[]> {
  const fleet = await server.api<{ bikes: Bike[] }>("/api/v1/bikeshare/fleet?status=available&limit=1000");
  const byCell = new Map<string, Bike[]>();
  for (const b of fleet.bikes) {
    const where = await server.api<{ cell: string }>(`/api/v1/bikeshare/locate?lat=${b.lat}&lon=${b.lon}`);
    byCell.set(where.cell, [...(byCell.get(where.cell) ?? []), b]);
  }
  return [...byCell.values()].filter((l) => l.length === 1).map((l) => l[0]);
}

/** Rents one of `bikes` (the simulated riders may take one first) and rides until the trip
 * settles; a ride that ends outside the fences (grace) is resumed, as a rider would. */
async function rideToSettlement(server: Server, token: string, bikes: Bike[]): Promise<TripView> {
  let trip: TripView | null = null;
  for (const b of bikes.slice(0, 10)) {
    const r = await call<{ trip: TripView }>(server, "POST", "/api/v1/rider/trips", { bike: b.id }, token, {
      "Idempotency-Key": `e2e-${b.id}-${Date.now()}`,
    });
    if (r.status >= 300) continue;
    trip = r.body.trip;
    await expect
      .poll(async () => (await call<{ trip: TripView }>(server, "GET", `/api/v1/rider/trips/${trip!.id}`, undefined, token)).body.trip.state, {
        timeout: 30_000,
      })
      .not.toMatch(/^(requested|unlocking)$/);
    const now = (await call<{ trip: TripView }>(server, "GET", `/api/v1/rider/trips/${trip.id}`, undefined, token)).body.trip;
    if (now.state !== "failed") break;
    trip = null;
  }
  expect(trip, "no bike unlocked").not.toBeNull();
  for (let attempt = 0; attempt < 4; attempt++) {
    let now: TripView | null = null;
    await expect
      .poll(
        async () => {
          now = (await call<{ trip: TripView }>(server, "GET", `/api/v1/rider/trips/${trip!.id}`, undefined, token)).body.trip;
          return now.state === "settled" || (now.state === "ending" && now.grace_until != null);
        },
        { timeout: 150_000, intervals: [1000] },
      )
      .toBe(true);
    if (now!.state === "settled") return now!;
    const resumed = await call(server, "POST", `/api/v1/rider/trips/${trip!.id}/resume`, undefined, token, {
      "Idempotency-Key": `e2e-resume-${trip!.id}-${attempt}`,
    });
    expect(resumed.status, JSON.stringify(resumed.body)).toBeLessThan(300);
  }
  throw new Error("the trip never settled inside a fence");
}

test.describe.serial("bike share operator screens (en)", () => {
  test.use({ locale: "en-US", viewport: { width: 1400, height: 860 } });
  const seed = 20_000 + (Date.now() % 100_000) * 3;
  let trip: TripView;
  let rider: { id: string; token: string };

  test("zones: upload a GeoJSON file and draw a polygon; both listed and on the map", async ({ page, server }) => {
    await signIn(page, server);
    await page.getByTestId("nav-bikeshare").click();
    await mapReady(page, "zones-map");
    const map = page.getByTestId("zones-map");
    const before = Number(await map.getAttribute("data-zones"));
    expect(before).toBeGreaterThan(0);

    // One good parking zone and one that is no polygon: the API refuses the second.
    const square = (lon: number, lat: number, d: number) => [
      [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]],
    ];
    const doc = {
      type: "FeatureCollection",
      features: [
        { type: "Feature", properties: { name: "e2e-upload-park", kind: "parking", capacity: 8 }, geometry: { type: "Polygon", coordinates: square(120.1552, 30.2741, 0.0002) } },
        { type: "Feature", properties: { name: "e2e-upload-bad" }, geometry: { type: "Polygon", coordinates: [[[120.15, 30.27], [120.16, 30.27]]] } },
      ],
    };
    await page.getByTestId("zone-upload").setInputFiles({ name: "fences.geojson", mimeType: "application/geo+json", buffer: Buffer.from(JSON.stringify(doc)) });
    const results = page.getByTestId("upload-results");
    await expect(results).toContainText("e2e-upload-park: saved");
    await expect(results.locator("li.error")).toContainText(/e2e-upload-bad: .*polygon.*\(invalid_field\)/);
    await expect(map).toHaveAttribute("data-zones", String(before + 1));

    // Draw a no-parking zone with four clicks.
    await page.getByTestId("draw-start").click();
    const box = (await map.boundingBox())!;
    const [cx, cy] = [box.x + box.width / 2, box.y + box.height / 2 + 40];
    for (const [dx, dy] of [[-70, -50], [70, -50], [70, 50], [-70, 50]]) await page.mouse.click(cx + dx, cy + dy);
    await expect(map).toHaveAttribute("data-vertices", "4");
    await page.getByTestId("draw-finish").click();
    await page.getByTestId("new-zone-name").fill("e2e-drawn");
    await page.getByTestId("new-zone-kind").selectOption("no_parking");
    await page.getByTestId("new-zone-save").click();
    await expect(map).toHaveAttribute("data-zones", String(before + 2));
    const drawn = await server.api<{ kind: string; polygon: { coordinates: number[][][] } }>("/api/v1/zones/e2e-drawn");
    expect(drawn.kind).toBe("no_parking");
    expect(drawn.polygon.coordinates[0]).toHaveLength(5);

    // Both in the list and among the map's rendered fences.
    await page.getByTestId("zones-search").fill("e2e-");
    await expect(page.getByTestId("zones-table").locator("tbody tr")).toHaveCount(2);
    await page.screenshot({ path: join(IMAGES, "console-bs-zones.png") });
    await page.getByTestId("zones-table").getByText("e2e-upload-park").click();
    await expect(page.getByTestId("zone-editor")).toContainText("capacity");
    const onMap = await page.evaluate(async () => {
      type Src = { getData(): Promise<{ features: { properties: { name: string; kind: string } }[] }> };
      const m = (window as unknown as { __wulianMap: { getSource(id: string): Src } }).__wulianMap;
      const data = await m.getSource("fences").getData();
      return Object.fromEntries(data.features.map((f) => [f.properties.name, f.properties.kind]));
    });
    expect(onMap).toMatchObject({ "e2e-upload-park": "parking", "e2e-drawn": "no_parking" });
    // The selected zone is outlined on the map (once the map has drawn the frame after the
    // selection: polled).
    await expect
      .poll(() =>
        page.evaluate(() => {
          const m = (window as unknown as { __wulianMap: { queryRenderedFeatures(o: object): unknown[] } }).__wulianMap;
          return m.queryRenderedFeatures({ layers: ["zone-selected"] }).length;
        }),
      )
      .toBeGreaterThan(0);

    // Rename the drawn zone and make it a parking zone; then delete it.
    await page.getByTestId("zones-table").getByText("e2e-drawn").click();
    await page.getByTestId("zone-name").fill("e2e-drawn-2");
    await page.getByTestId("zone-kind").selectOption("parking");
    await page.getByTestId("zone-save").click();
    await expect(page.getByTestId("zones-table")).toContainText("e2e-drawn-2");
    expect((await server.api<{ kind: string }>("/api/v1/zones/e2e-drawn-2")).kind).toBe("parking");
    expect((await fetch(`${server.base}/api/v1/zones/e2e-drawn`, { headers: { Authorization: `Bearer ${server.key}` } })).status).toBe(404);
    page.once("dialog", (d) => d.accept());
    await page.getByTestId("zone-delete").click();
    await expect(page.getByTestId("zones-table").locator("tbody tr")).toHaveCount(1);
  });

  test("a rider's trip shows in the list with its route; a refund changes the balance", async ({ page, server }) => {
    rider = await newRider(server, seed);
    trip = await rideToSettlement(server, rider.token, await lonelyBikes(server));
    expect(trip.total ?? 0).toBeGreaterThan(0);

    await signIn(page, server);
    await page.goto(`${server.base}/console/bikeshare/trips?rider=${rider.id}`);
    const row = page.locator(`tr[data-trip="${trip.id}"]`);
    await expect(row).toContainText(trip.bike);
    await expect(row).toContainText("Settled");
    await page.getByTestId("trips-state").selectOption("failed");
    await expect(row).toHaveCount(0);
    await page.getByTestId("trips-state").selectOption("settled");
    await row.click();
    await expect(page.getByTestId("trip-title")).toContainText(trip.id);
    await mapReady(page, "trip-map");
    await expect(page.getByTestId("trip-map")).toHaveAttribute("data-route-points", /^[1-9]/);
    await expect(page.getByTestId("trip-fare")).toContainText("Total");
    await expect(page.getByTestId("trip-postings")).toContainText("Charge");
    await expect(page.getByTestId("trip-history")).toContainText("Settled");
    await page.screenshot({ path: join(IMAGES, "console-bs-trip.png"), fullPage: true });

    // The rider's page: found by the phone's last digits; refund 0.50 of the trip.
    await page.getByTestId("bs-nav-riders").click();
    await page.getByTestId("riders-search").fill(`137${String(seed).padStart(8, "0").slice(-8)}`.slice(-6));
    await expect(page.getByTestId("riders-table").locator("tbody tr")).toHaveCount(1);
    await page.getByTestId("riders-table").getByText(rider.id).click();
    const balance = page.getByTestId("rider-balance");
    const before = (await call<{ balance: number }>(server, "GET", `/api/v1/bikeshare/riders/${rider.id}`)).body.balance;
    await expect(balance).toContainText((before / 100).toFixed(2));
    await page.getByTestId("refund-trip").selectOption(trip.id);
    await page.getByTestId("refund-amount").fill("0.50");
    await page.getByTestId("refund-reason").fill("e2e: bumpy saddle");
    await page.getByTestId("refund-submit").click();
    await expect(page.getByTestId("refund-done")).toBeVisible();
    await expect(balance).toContainText(((before + 50) / 100).toFixed(2));
    await expect(page.getByTestId("rider-statement")).toContainText("Refund");
    expect((await call<{ balance: number }>(server, "GET", `/api/v1/bikeshare/riders/${rider.id}`)).body.balance).toBe(before + 50);
    await page.screenshot({ path: join(IMAGES, "console-bs-rider.png"), fullPage: true });

    // More than was charged is refused, with the API's reason.
    await page.getByTestId("refund-amount").fill("99");
    await page.getByTestId("refund-reason").fill("too much");
    await page.getByTestId("refund-submit").click();
    await expect(page.getByRole("alert")).toContainText("refund_exceeds_charge");
  });

  test("a rebalancing suggestion becomes a work order, which is closed", async ({ page, server }) => {
    // An hour of the day whose demand some cell lacks bikes for. The demo's riders (and this
    // suite's) start trips all the time, but which cells run short is up to the simulation: ask
    // every hour until one suggests a move.
    let hour = -1;
    await expect
      .poll(
        async () => {
          for (let h = 0; h < 24; h++) {
            const r = await server.api<{ moves: unknown[] }>(`/api/v1/bikeshare/rebalancing?hour=${h}`);
            if (r.moves.length > 0) {
              hour = h;
              return r.moves.length;
            }
          }
          return 0;
        },
        { timeout: 90_000, intervals: [2000] },
      )
      .toBeGreaterThan(0);

    await signIn(page, server);
    await page.goto(`${server.base}/console/bikeshare/rebalancing`);
    await mapReady(page, "rebalancing-map");
    await page.getByTestId("rebalancing-hour").selectOption(String(hour));
    const moves = page.getByTestId("rebalancing-map");
    // The city keeps moving: a deficit may close and another open between two answers.
    await expect
      .poll(
        async () => {
          if ((await moves.getAttribute("data-moves")) === "0") await page.getByRole("button", { name: "Refresh" }).click();
          return Number(await moves.getAttribute("data-moves"));
        },
        { timeout: 60_000, intervals: [2000] },
      )
      .toBeGreaterThan(0);
    await expect(page.getByTestId("rebalancing-table").locator("tr[data-move]")).not.toHaveCount(0);
    await page.screenshot({ path: join(IMAGES, "console-bs-rebalancing.png") });
    await page.getByTestId("move-dispatch").first().click();
    const result = page.getByTestId("move-result").first();
    await expect(result).toContainText(/work orders opened: bike-/);
    const bike = /bike-\d+/.exec((await result.textContent())!)![0];

    await page.getByTestId("bs-nav-work-orders").click();
    await page.getByTestId("orders-kind").selectOption("rebalance");
    await page.getByTestId("orders-bike").fill(bike);
    const order = page.locator("tr[data-order]").filter({ hasText: bike }).first();
    await expect(order).toHaveAttribute("data-state", "open");
    // Assigned to a crew from its row, and found again by its assignee.
    const crew = `North crew ${Date.now() % 100_000}`;
    await order.getByTestId("order-assignee-input").fill(crew);
    await order.getByTestId("order-assign").click();
    await expect(order.getByTestId("order-assign")).toHaveCount(0);
    await page.getByTestId("orders-assignee").fill(crew);
    await expect(page).toHaveURL(/assignee=North/);
    await expect(page.locator("tr[data-order]")).toHaveCount(1);
    await expect(order.getByTestId("order-assignee-input")).toHaveValue(crew);
    await page.screenshot({ path: join(IMAGES, "console-bs-orders.png") });
    await order.getByTestId("order-done").click();
    await expect(page.locator("tr[data-order]").filter({ hasText: bike }).first()).toHaveAttribute("data-state", "done");
    // A closed order shows its assignee as text.
    await expect(order.getByTestId("order-assignee")).toHaveText(crew);
    const orders = await server.api<{ work_orders: { bike: string; kind: string; state: string; assignee: string | null }[] }>(
      `/api/v1/bikeshare/work-orders?kind=rebalance&bike=${bike}&assignee=${encodeURIComponent(crew)}`,
    );
    expect(orders.work_orders).toHaveLength(1);
    expect(orders.work_orders[0]).toMatchObject({ bike, kind: "rebalance", state: "done", assignee: crew });
  });

  test("a viewer reads without actions and sees riders without their real-name fields", async ({ page, server }) => {
    const username = `viewer${Date.now() % 1_000_000}`;
    const password = "wulian-viewer-e2e-Pw7";
    const made = await call(server, "POST", "/api/v1/users", { username, role: "viewer", password });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    await page.goto(`${server.base}/console/`);
    await page.getByLabel(/User name/).fill(username);
    await page.getByLabel(/Password/).fill(password);
    await page.getByTestId("login-submit").click();
    await expect(page.locator(".who")).toContainText(username);
    await page.goto(`${server.base}/console/bikeshare/zones`);
    await mapReady(page, "zones-map");
    await expect(page.getByTestId("zones-table").locator("tbody tr")).not.toHaveCount(0);
    await expect(page.getByTestId("draw-start")).toHaveCount(0);
    await expect(page.getByTestId("zone-upload")).toHaveCount(0);

    await page.goto(`${server.base}/console/bikeshare/riders/${rider.id}`);
    await expect(page.getByTestId("rider-balance")).toBeVisible();
    await expect(page.getByText("张三")).toHaveCount(0);
    await expect(page.getByText(/\+86 137\*\*\*\*/)).toBeVisible();
    await expect(page.getByTestId("refund-form")).toHaveCount(0);
    await page.goto(`${server.base}/console/bikeshare/work-orders`);
    await expect(page.getByTestId("orders-table")).toBeVisible();
    await expect(page.getByTestId("order-new")).toHaveCount(0);
    await expect(page.getByTestId("order-done")).toHaveCount(0);
  });

  test("a city regulator sees trips but no riders", async ({ page, server }) => {
    const username = `city${Date.now() % 1_000_000}`;
    const password = "wulian-city-e2e-Pw7";
    const made = await call(server, "POST", "/api/v1/users", { username, role: "city_regulator", password });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    await page.goto(`${server.base}/console/`);
    await page.getByLabel(/User name/).fill(username);
    await page.getByLabel(/Password/).fill(password);
    await page.getByTestId("login-submit").click();
    await expect(page.locator(".who")).toContainText(username);
    await page.goto(`${server.base}/console/bikeshare/trips/${trip.id}`);
    await expect(page.getByTestId("trip-title")).toContainText(trip.id);
    await expect(page.getByTestId("bs-nav-trips")).toBeVisible();
    await expect(page.getByTestId("bs-nav-riders")).toHaveCount(0);
    // The rider is an opaque id without a link, and the rider's ledger is not fetched.
    await expect(page.getByTestId("trip-facts").getByRole("link", { name: rider.id })).toHaveCount(0);
    await expect(page.getByTestId("trip-postings")).toHaveCount(0);
    const refused = await page.evaluate(async (id) => (await fetch(`/api/v1/bikeshare/riders/${id}`)).status, rider.id);
    expect(refused).toBe(403);
  });
});

test.describe("bike share operator screens (zh-CN)", () => {
  test.use({ locale: "zh-CN", viewport: { width: 1400, height: 860 } });

  test("the section and its pages in Simplified Chinese", async ({ page, server }) => {
    await expect
      .poll(async () => (await server.api<{ trips: unknown[] }>("/api/v1/bikeshare/trips?limit=1")).trips.length, { timeout: 120_000 })
      .toBe(1);
    await signIn(page, server);
    await expect(page.getByTestId("nav-bikeshare")).toHaveText("共享单车");
    await page.getByTestId("nav-bikeshare").click();
    await expect(page.getByTestId("bs-nav")).toContainText("电子围栏");
    await expect(page.getByTestId("bs-nav")).toContainText("调度建议");
    await mapReady(page, "zones-map");
    await expect(page.getByRole("heading", { name: "电子围栏" })).toBeVisible();
    await expect(page.getByTestId("zones-kind")).toContainText("停车区");
    await page.getByTestId("bs-nav-trips").click();
    await expect(page.getByRole("heading", { name: "行程" })).toBeVisible();
    await expect(page.getByTestId("trips-table").locator("tbody tr")).not.toHaveCount(0);
    await expect(page.getByTestId("trips-table")).toContainText(/已结算|失败|骑行中|开锁中|结束中|已请求/);
    await page.screenshot({ path: join(IMAGES, "console-bs-trips-zh-CN.png") });
    await page.getByTestId("bs-nav-work-orders").click();
    await expect(page.getByTestId("orders-kind")).toContainText("调度");
  });
});
