// MapLibre GL without internet tiles: a blank style, then the tenant's basemap (districts,
// water, streets as GeoJSON) and its fences drawn as layers. Loaded lazily: the map's code
// is the largest part of the bundle and only map screens need it. Styled for a frame budget
// on machines without a GPU, where every pass over the screen's pixels counts
// (docs/console.md, "Size and speed").
import type { FeatureCollection, Geometry } from "geojson";
import type { Map as MlMap, StyleSpecification } from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import * as maplibregl from "maplibre-gl";
// The worker is a module of its own; Vite copies it as a hashed asset.
import workerUrl from "maplibre-gl/dist/maplibre-gl-worker.mjs?url";

maplibregl.setWorkerUrl(workerUrl);

export { maplibregl };
export type { MlMap };

/** Colours shared by the console and the rider app. */
export const STATUS_COLORS: Record<string, string> = {
  available: "#16a34a",
  on_trip: "#2563eb",
  low_battery: "#f59e0b",
  faulty: "#dc2626",
  out_of_fence: "#a21caf",
  unknown: "#6b7280",
};

export const FENCE_COLORS: Record<string, string> = {
  parking: "#2563eb",
  no_parking: "#dc2626",
  no_riding: "#7f1d1d",
  service_area: "#0f766e",
};

/** The land colour, painted by the map's container behind a transparent canvas (see createMap). */
export const LAND_COLOR = "#ece8df";

/** A style with no sources and no layers: the land colour is the container's CSS background.
 * A deployment with a tile server passes its style URL instead (see docs/console.md). */
function blankStyle(): StyleSpecification {
  return { version: 8, sources: {}, layers: [] };
}

/** A deployment's tile server (`GET /api/v1/bikeshare/basemap/tiles`, `[map]` in its config). */
export interface MapTiles {
  style_url: string | null;
  tiles: string[];
  tile_size: number;
  attribution: string | null;
}

/** The style for a deployment's tile server: its own style document, or one raster layer of
 * its tiles; null when it has none (then draw the GeoJSON basemap). */
export function tileStyle(t: MapTiles | null): string | StyleSpecification | null {
  if (t?.style_url) return t.style_url;
  if (!t || t.tiles.length === 0) return null;
  return {
    version: 8,
    sources: {
      tiles: {
        type: "raster",
        tiles: t.tiles,
        tileSize: t.tile_size || 256,
        ...(t.attribution ? { attribution: t.attribution } : {}),
      },
    },
    layers: [{ id: "tiles", type: "raster", source: "tiles" }],
  };
}

export function createMap(
  container: HTMLElement,
  center: [number, number],
  zoom: number,
  style?: string | StyleSpecification | null,
  attribution?: string | null,
): MlMap {
  // The canvas is transparent where nothing is drawn and the browser's compositor shows the
  // container's background there: a full-screen background layer would be one more pass over
  // every pixel per frame, which is what a software renderer (no GPU: SwiftShader) pays most for.
  container.style.background = LAND_COLOR;
  const map = new maplibregl.Map({
    container,
    style: style || blankStyle(),
    center,
    zoom,
    // A tile server's licence usually asks for its attribution on the map.
    attributionControl: attribution ? { compact: true, customAttribution: attribution } : false,
    fadeDuration: 0,
    // Keep the GPU work per frame small on weak devices.
    maxPitch: 0,
    dragRotate: false,
  });
  skipSkyWhenFlat(map);
  return map;
}

/**
 * MapLibre draws the sky, a full-screen quad with a per-pixel shader, on every frame, even on a
 * flat Mercator map whose horizon is never in view. Measured on a machine without a GPU
 * (SwiftShader), it was 45 of the 110 ms a panning frame cost; this map never pitches, so the
 * sky is skipped while the pitch is 0 (`drawFunctions` is the painter's pluggable table).
 */
function skipSkyWhenFlat(map: MlMap): void {
  type Draw = (...args: unknown[]) => void;
  const painter = (map as unknown as { painter?: { drawFunctions?: Record<string, Draw> } }).painter;
  const sky = painter?.drawFunctions?.sky;
  if (!painter || !sky) return;
  painter.drawFunctions = {
    ...painter.drawFunctions,
    sky: (...args: unknown[]) => {
      if (map.getPitch() > 0) sky(...args);
    },
  };
}

export function whenLoaded(map: MlMap): Promise<void> {
  return map.loaded() ? Promise.resolve() : new Promise((r) => map.once("load", () => r()));
}

type Filter = maplibregl.ExpressionSpecification;

/** The basemap's layers (features with `layer`: district, water or street) on `source`. */
function basemapLayers(map: MlMap, source: string): void {
  const layer = (name: string): Filter => ["==", ["get", "layer"], name];
  // Districts are filled only when they carry a colour of their own: the land colour behind the
  // canvas stands for the rest, and a fill over the whole city is a full-screen pass per frame.
  map.addLayer({
    id: "basemap-district",
    type: "fill",
    source,
    filter: ["all", layer("district"), ["has", "color"]],
    paint: { "fill-color": ["get", "color"], "fill-antialias": false },
  });
  map.addLayer({
    id: "basemap-district-line",
    type: "line",
    source,
    filter: layer("district"),
    paint: { "line-color": "#b8ae98", "line-width": 1, "line-dasharray": [3, 2] },
  });
  // A constant, opaque colour: MapLibre draws it in its opaque pass, without blending.
  map.addLayer({
    id: "basemap-water",
    type: "fill",
    source,
    filter: ["all", layer("water"), ["!=", ["geometry-type"], "LineString"]],
    paint: { "fill-color": "#a9cfe8", "fill-antialias": false },
  });
  map.addLayer({
    id: "basemap-water-line",
    type: "line",
    source,
    filter: ["all", layer("water"), ["==", ["geometry-type"], "LineString"]],
    paint: { "line-color": "#a9cfe8", "line-width": 4 },
  });
  // Generalised like any city map: the whole city shows its main roads; local streets, a
  // dense grid that was the basemap's largest cost per frame at city zoom, from zoom 13.5.
  const major: Filter = ["in", ["get", "class"], ["literal", ["primary", "trunk", "major", "arterial", "ring"]]];
  map.addLayer({
    id: "basemap-street",
    type: "line",
    source,
    minzoom: 13.5,
    filter: ["all", layer("street"), ["!", major]],
    layout: { "line-cap": "round", "line-join": "round" },
    paint: { "line-color": "#ffffff", "line-width": ["interpolate", ["linear"], ["zoom"], 13.5, 1.5, 16, 5] },
  });
  map.addLayer({
    id: "basemap-street-major",
    type: "line",
    source,
    filter: ["all", layer("street"), major],
    layout: { "line-cap": "round", "line-join": "round" },
    paint: { "line-color": "#ffffff", "line-width": ["interpolate", ["linear"], ["zoom"], 11, 1.5, 16, 10] },
  });
}

/** The fences' layers (features with `kind`) on `source`, limited by `only` when given. */
function fenceLayers(map: MlMap, source: string, only?: Filter): void {
  const color: maplibregl.ExpressionSpecification = [
    "match",
    ["get", "kind"],
    "parking",
    FENCE_COLORS.parking,
    "no_parking",
    FENCE_COLORS.no_parking,
    "no_riding",
    FENCE_COLORS.no_riding,
    FENCE_COLORS.service_area,
  ];
  const and = (f: Filter): Filter => (only ? ["all", only, f] : f);
  map.addLayer({
    id: "fences-fill",
    type: "fill",
    source,
    filter: and(["!=", ["get", "kind"], "service_area"]),
    paint: { "fill-color": color, "fill-opacity": 0.25 },
  });
  map.addLayer({
    id: "fences-line",
    type: "line",
    source,
    ...(only ? { filter: only } : {}),
    paint: {
      "line-color": color,
      "line-width": ["case", ["==", ["get", "kind"], "service_area"], 2.5, 1.2],
      "line-dasharray": ["literal", [2, 1]],
    },
  });
}

/** Draws a basemap FeatureCollection whose features carry `layer`: district, water or street. */
export function addBasemap(map: MlMap, basemap: FeatureCollection): void {
  map.addSource("basemap", { type: "geojson", data: basemap });
  basemapLayers(map, "basemap");
}

/** Fences (a FeatureCollection with `kind` per feature) in a source `fences` of their own,
 * beneath whatever is added later; pages that edit fences set that source's data. */
export function addFences(map: MlMap, fences: FeatureCollection): void {
  map.addSource("fences", { type: "geojson", data: fences });
  fenceLayers(map, "fences");
}

/**
 * The basemap and the fences in ONE source `city` (the same layers as addBasemap and
 * addFences), for read-only maps. Each GeoJSON source that has fill or line layers costs a
 * stencil pass over the screen per frame (MapLibre's tile clipping masks); one source costs one.
 */
export function addCity(map: MlMap, basemap: FeatureCollection | null, fences: FeatureCollection): void {
  const data: FeatureCollection = {
    type: "FeatureCollection",
    features: [
      ...(basemap?.features ?? []).filter((f) => f.properties?.layer !== "fence"),
      ...fences.features.map((f) => ({ ...f, properties: { ...f.properties, layer: "fence" } })),
    ],
  };
  map.addSource("city", { type: "geojson", data });
  if (basemap) basemapLayers(map, "city");
  fenceLayers(map, "city", ["==", ["get", "layer"], "fence"]);
}

/**
 * Names of districts and lakes as HTML labels at the middle of their outlines, in the page's
 * language (`name_en` / `name_zh`). Labels need no glyph files this way: MapLibre's own text
 * needs SDF glyph PBFs from a server, and there is none without internet. Shown below
 * `maxZoom`. Returns a function that removes them.
 */
export function addAreaLabels(map: MlMap, basemap: FeatureCollection, zh: boolean, maxZoom = 15): () => void {
  const markers: maplibregl.Marker[] = [];
  for (const f of basemap.features) {
    const p = f.properties ?? {};
    const isLake = p.layer === "water" && p.kind !== "river";
    if ((p.layer !== "district" && !isLake) || f.geometry?.type !== "Polygon") continue;
    const name = (zh ? p.name_zh : p.name_en) ?? p.name;
    const ring = f.geometry.coordinates[0] ?? [];
    if (typeof name !== "string" || ring.length < 3) continue;
    // The vertices' average: inside the convex districts and the round lakes the demo draws.
    const n = ring.length - 1;
    const at = ring.slice(0, n).reduce(([x, y], c) => [x + c[0] / n, y + c[1] / n], [0, 0]) as [number, number];
    const el = document.createElement("div");
    el.className = isLake ? "map-label water" : "map-label";
    el.textContent = name;
    markers.push(new maplibregl.Marker({ element: el }).setLngLat(at));
  }
  const sync = () => {
    const show = map.getZoom() < maxZoom;
    for (const m of markers) {
      if (show && !m.getElement().isConnected) m.addTo(map);
      else if (!show && m.getElement().isConnected) m.remove();
    }
  };
  sync();
  map.on("zoomend", sync);
  return () => {
    map.off("zoomend", sync);
    markers.forEach((m) => m.remove());
  };
}

/**
 * Street names as HTML labels along their streets: main roads from `majorZoom`, every street
 * from `allZoom`. When the map stops moving each street in view gets its label on its segment
 * nearest the view's centre, turned along it; streets out of view have no element, so a pan
 * moves a few dozen labels at most. Returns a function that removes them.
 */
export function addStreetLabels(map: MlMap, basemap: FeatureCollection, zh: boolean, majorZoom = 14, allZoom = 15.5): () => void {
  const MAJOR = new Set(["primary", "trunk", "major", "arterial", "ring"]);
  type Spot = { at: [number, number]; angle: number };
  const streets: { spots: Spot[]; major: boolean; el: HTMLElement; marker?: maplibregl.Marker }[] = [];
  for (const f of basemap.features) {
    const p = f.properties ?? {};
    if (p.layer !== "street" || f.geometry?.type !== "LineString") continue;
    const name = (zh ? p.name_zh : p.name_en) ?? p.name;
    const line = f.geometry.coordinates;
    if (typeof name !== "string" || line.length < 2) continue;
    const spots: Spot[] = [];
    for (let i = 1; i < line.length; i++) {
      const [a, b] = [line[i - 1], line[i]];
      const at: [number, number] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
      // The segment's direction on screen (Mercator keeps angles), turned to read left to right.
      const dx = (b[0] - a[0]) * Math.cos((at[1] * Math.PI) / 180);
      let angle = (-Math.atan2(b[1] - a[1], dx) * 180) / Math.PI;
      if (angle > 90) angle -= 180;
      if (angle < -90) angle += 180;
      spots.push({ at, angle });
    }
    const el = document.createElement("div");
    el.className = "map-label street";
    el.textContent = name;
    streets.push({ spots, major: MAJOR.has(p.class), el });
  }
  const sync = () => {
    const z = map.getZoom();
    const view = map.getBounds();
    const c = map.getCenter();
    const k = Math.cos((c.lat * Math.PI) / 180);
    for (const s of streets) {
      let best: Spot | null = null;
      let bestD = Infinity;
      if (z >= allZoom || (s.major && z >= majorZoom)) {
        for (const spot of s.spots) {
          if (!view.contains(spot.at)) continue;
          const d = ((spot.at[0] - c.lng) * k) ** 2 + (spot.at[1] - c.lat) ** 2;
          if (d < bestD) [best, bestD] = [spot, d];
        }
      }
      if (best) {
        s.marker ??= new maplibregl.Marker({ element: s.el, rotationAlignment: "map" });
        s.marker.setLngLat(best.at).setRotation(best.angle);
        if (!s.el.isConnected) s.marker.addTo(map);
      } else if (s.marker) {
        s.marker.remove();
        s.marker = undefined;
      }
    }
  };
  sync();
  map.on("moveend", sync);
  return () => {
    map.off("moveend", sync);
    for (const s of streets) s.marker?.remove();
  };
}

/** Bounds of every coordinate of `fc`, or null when it has none. */
export function bounds(fc: FeatureCollection): [[number, number], [number, number]] | null {
  let [w, s, e, n] = [Infinity, Infinity, -Infinity, -Infinity];
  const visit = (c: unknown): void => {
    if (Array.isArray(c) && typeof c[0] === "number") {
      const [x, y] = c as number[];
      w = Math.min(w, x);
      e = Math.max(e, x);
      s = Math.min(s, y);
      n = Math.max(n, y);
    } else if (Array.isArray(c)) c.forEach(visit);
  };
  for (const f of fc.features) {
    const g = f.geometry as Geometry | null;
    if (g && "coordinates" in g) visit(g.coordinates);
  }
  return Number.isFinite(w) ? [[w, s], [e, n]] : null;
}
