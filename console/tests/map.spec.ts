// The fleet map against `wulian demo`: the demand heat map toggles with its legend and hour
// selector, districts are labelled, and zoomed in every bike is a dot with its status and
// battery one click away.
import { join } from "node:path";
import { IMAGES, expect, test } from "./fixtures";

type MapHandle = import("maplibre-gl").Map;

interface Demand {
  rows: { cell: string; hour_start_ms: number; demand: number }[];
  cell_centers: Record<string, [number, number]>;
  utc_offset_minutes: number;
}

test.beforeEach(async ({ page, server }, info) => {
  if (info.title.startsWith("a tile server")) return;
  await page.goto(`${server.base}/console/`);
  await page.evaluate((k) => sessionStorage.setItem("wulian.apiKey", k), server.key);
  await page.goto(`${server.base}/console/map`);
  await expect(page.getByTestId("fleet-map")).toHaveAttribute("data-bikes", /^[1-9]/, { timeout: 30_000 });
});

test("the demand heat map toggles, shows a legend and follows the hour", async ({ page, server }) => {
  // The simulated riders start trips within seconds at the demo's time scale.
  let demand: Demand | null = null;
  await expect
    .poll(
      async () => {
        demand = await server.api<Demand>("/api/v1/bikeshare/demand?days=7");
        return demand.rows.filter((r) => r.demand > 0).length;
      },
      { timeout: 90_000 },
    )
    .toBeGreaterThan(0);
  // A few more cells make a better picture for the user guide (not required).
  for (let i = 0; i < 8 && new Set(demand!.rows.filter((r) => r.demand > 0).map((r) => r.cell)).size < 8; i++) {
    await page.waitForTimeout(2000);
    demand = await server.api<Demand>("/api/v1/bikeshare/demand?days=7");
  }
  const busy = demand!.rows.find((r) => r.demand > 0)!;
  expect(demand!.cell_centers[busy.cell]).toHaveLength(2);

  const heatVisible = () =>
    page.evaluate(() => (window as unknown as { __wulianMap: MapHandle }).__wulianMap.getLayoutProperty("demand-heat", "visibility"));
  await expect(page.getByTestId("heat-legend")).toHaveCount(0);
  expect(await heatVisible()).toBe("none");

  await page.getByTestId("heat-toggle").check();
  const legend = page.getByTestId("heat-legend");
  await expect(legend).toBeVisible();
  await expect(legend.locator(".heat-ramp")).toBeVisible();
  await expect(page.getByTestId("heat-max")).toHaveText(/\d/);
  await expect(page.getByTestId("fleet-map")).toHaveAttribute("data-heat-cells", /^[1-9]/);
  await expect.poll(heatVisible).toBe("visible");
  await page.waitForFunction(() => (window as unknown as { __wulianMap: MapHandle }).__wulianMap.loaded());
  await page.screenshot({ path: join(IMAGES, "console-map-heat.png") });

  // The tenant's local hour of a row with trips keeps cells on the map; the next hour with
  // none says so instead of a scale.
  const hourOf = (ms: number) => (((Math.floor((ms + demand!.utc_offset_minutes * 60_000) / 3_600_000) % 24) + 24) % 24);
  const hour = hourOf(busy.hour_start_ms);
  await page.getByTestId("heat-hour").selectOption(String(hour));
  const cells = new Set(demand!.rows.filter((r) => r.demand > 0 && hourOf(r.hour_start_ms) === hour).map((r) => r.cell));
  await expect(page.getByTestId("fleet-map")).toHaveAttribute("data-heat-cells", String(cells.size));
  const quiet = [...Array(24).keys()].find((h) => !demand!.rows.some((r) => r.demand > 0 && hourOf(r.hour_start_ms) === h));
  if (quiet != null) {
    await page.getByTestId("heat-hour").selectOption(String(quiet));
    await expect(page.getByTestId("fleet-map")).toHaveAttribute("data-heat-cells", "0");
    await expect(legend).toContainText(/No trip started|没有行程/);
  }

  await page.getByTestId("heat-toggle").uncheck();
  await expect(legend).toHaveCount(0);
  await expect.poll(heatVisible).toBe("none");
});

test("districts, lakes and streets are labelled in the page's language", async ({ page, server }) => {
  const basemap = await server.api<{ features: { properties: Record<string, string>; geometry: { type: string } }[] }>(
    "/api/v1/bikeshare/basemap",
  );
  const named = basemap.features.filter(
    (f) => f.geometry.type === "Polygon" && (f.properties.layer === "district" || (f.properties.layer === "water" && f.properties.kind !== "river")),
  );
  expect(named.length).toBeGreaterThan(0);
  const labels = page.locator(".map-label:not(.street)");
  const streetLabels = page.locator(".map-label.street");
  await expect(labels).toHaveCount(named.length);
  await expect(labels.first()).toBeVisible();
  expect((await labels.allTextContents()).sort()).toEqual(named.map((f) => f.properties.name_en).sort());
  await expect(streetLabels).toHaveCount(0);
  // Zoomed in past the area labels' zoom they give way to street names, those in view only.
  await page.evaluate(() => (window as unknown as { __wulianMap: MapHandle }).__wulianMap.jumpTo({ zoom: 16 }));
  await expect(labels).toHaveCount(0);
  await expect(streetLabels.first()).toBeVisible();
  const streetNames = new Set(basemap.features.filter((f) => f.properties.layer === "street").map((f) => f.properties.name_en));
  for (const name of await streetLabels.allTextContents()) expect(streetNames).toContain(name);
  expect(await streetLabels.count()).toBeLessThan(streetNames.size + 1);
  await page.waitForFunction(() => (window as unknown as { __wulianMap: MapHandle }).__wulianMap.loaded());
  await page.screenshot({ path: join(IMAGES, "console-map-streets.png") });
});

test("a cluster tells its count on hover", async ({ page }) => {
  const spot = await page.waitForFunction(() => {
    const map = (window as unknown as { __wulianMap: MapHandle }).__wulianMap;
    if (!map.loaded()) return null;
    const hit = map.queryRenderedFeatures({ layers: ["bike-clusters"] })[0];
    if (!hit) return null;
    const p = map.project((hit.geometry as GeoJSON.Point).coordinates as [number, number]);
    const r = map.getCanvas().getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y, count: hit.properties.point_count as number };
  });
  const { x, y, count } = (await spot.jsonValue())!;
  await page.mouse.move(x, y);
  await expect(page.locator(".cluster-count")).toContainText(`${count} bikes here`);
});

test("zoomed in, each bike is a dot with its status and battery", async ({ page, server }) => {
  const { bikes } = await server.api<{ bikes: { id: string; lat: number; lon: number; status: string }[] }>(
    "/api/v1/bikeshare/fleet?limit=1000",
  );
  const bike = bikes.find((b) => b.lat != null && b.status === "available") ?? bikes.find((b) => b.lat != null)!;
  await page.evaluate(([lon, lat]) => {
    (window as unknown as { __wulianMap: MapHandle }).__wulianMap.jumpTo({ center: [lon, lat], zoom: 17.5 });
  }, [bike.lon, bike.lat]);
  // The dot under the map's centre (clusters break up above zoom 15).
  const point = await page.waitForFunction(() => {
    const map = (window as unknown as { __wulianMap: MapHandle }).__wulianMap;
    if (!map.loaded()) return null;
    const c = map.project(map.getCenter());
    const hit = map.queryRenderedFeatures(
      [
        [c.x - 40, c.y - 40],
        [c.x + 40, c.y + 40],
      ],
      { layers: ["bike-points"] },
    )[0];
    if (!hit) return null;
    const p = map.project((hit.geometry as GeoJSON.Point).coordinates as [number, number]);
    const r = map.getCanvas().getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y };
  });
  const { x, y } = (await point.jsonValue())!;
  await page.mouse.click(x, y);
  const popup = page.locator(".maplibregl-popup .popup");
  await expect(popup).toBeVisible();
  await expect(popup.locator("a")).toHaveAttribute("href", /\/console\/devices\/bike-/);
  await expect(popup).toContainText(/Battery: (\d+%|—)/);
  await expect(popup).toContainText(/Available|On a trip|Low battery|Faulty|Out of fence|Unknown/);
});

test("a tile server replaces the GeoJSON basemap", async ({ page, server }) => {
  // As a deployment with `[map] tiles = [...]` answers (crates/wulian/tests/map_tiles.rs checks
  // the server's side); the tiles come from the page's own origin, which its CSP allows.
  const png = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    "base64",
  );
  const tileRequests: string[] = [];
  let basemapAsked = false;
  await page.route("**/api/v1/bikeshare/basemap/tiles", (r) =>
    r.fulfill({
      json: { style_url: null, tiles: [`${server.base}/test-tiles/{z}/{x}/{y}.png`], tile_size: 256, attribution: "© Test tiles" },
    }),
  );
  await page.route("**/api/v1/bikeshare/basemap", (r) => {
    basemapAsked = true;
    return r.continue();
  });
  await page.route("**/test-tiles/**", (r) => {
    tileRequests.push(r.request().url());
    return r.fulfill({ status: 200, contentType: "image/png", body: png });
  });
  await page.goto(`${server.base}/console/`);
  await page.evaluate((k) => sessionStorage.setItem("wulian.apiKey", k), server.key);
  await page.goto(`${server.base}/console/map`);
  await expect(page.getByTestId("fleet-map")).toHaveAttribute("data-bikes", /^[1-9]/, { timeout: 30_000 });
  const layers = await page.evaluate(() =>
    (window as unknown as { __wulianMap: MapHandle }).__wulianMap.getStyle().layers.map((l) => l.id),
  );
  expect(layers[0]).toBe("tiles");
  expect(layers).not.toContain("basemap-street");
  expect(layers).toContain("fences-line");
  expect(layers).toContain("bike-clusters");
  await expect.poll(() => tileRequests.length).toBeGreaterThan(0);
  expect(tileRequests[0]).toMatch(/\/test-tiles\/\d+\/\d+\/\d+\.png$/);
  expect(basemapAsked).toBe(false);
  await expect(page.locator(".maplibregl-ctrl-attrib")).toContainText("© Test tiles");

  // The bike share's other maps (zones, trips, rebalancing) draw on the same tiles.
  await page.goto(`${server.base}/console/bikeshare/zones`);
  await expect(page.locator("[data-ready='1']")).toHaveCount(1, { timeout: 30_000 });
  const zoneLayers = await page.evaluate(() =>
    (window as unknown as { __wulianMap: MapHandle }).__wulianMap.getStyle().layers.map((l) => l.id),
  );
  expect(zoneLayers[0]).toBe("tiles");
  expect(basemapAsked).toBe(false);
});
