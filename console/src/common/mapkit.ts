// MapLibre GL without internet tiles: a blank style, then the tenant's basemap (districts,
// water, streets as GeoJSON) and its fences drawn as layers. Loaded lazily: the map's code
// is the largest part of the bundle and only map screens need it.
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

/** A style with no sources: the background only. A deployment with a tile server passes its
 * style URL instead (see docs/console.md). */
function blankStyle(): StyleSpecification {
  return {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#f3f1ec" } }],
  };
}

export function createMap(
  container: HTMLElement,
  center: [number, number],
  zoom: number,
  styleUrl?: string | null,
): MlMap {
  return new maplibregl.Map({
    container,
    style: styleUrl || blankStyle(),
    center,
    zoom,
    attributionControl: false,
    fadeDuration: 0,
    // Keep the GPU work per frame small on weak devices.
    maxPitch: 0,
    dragRotate: false,
  });
}

export function whenLoaded(map: MlMap): Promise<void> {
  return map.loaded() ? Promise.resolve() : new Promise((r) => map.once("load", () => r()));
}

/** Draws a basemap FeatureCollection whose features carry `layer`: district, water or street. */
export function addBasemap(map: MlMap, basemap: FeatureCollection): void {
  map.addSource("basemap", { type: "geojson", data: basemap });
  map.addLayer({
    id: "basemap-district",
    type: "fill",
    source: "basemap",
    filter: ["==", ["get", "layer"], "district"],
    paint: {
      "fill-color": ["coalesce", ["get", "color"], "#e9e5dc"],
      "fill-outline-color": "#cfc8b8",
    },
  });
  map.addLayer({
    id: "basemap-district-line",
    type: "line",
    source: "basemap",
    filter: ["==", ["get", "layer"], "district"],
    paint: { "line-color": "#b8ae98", "line-width": 1, "line-dasharray": [3, 2] },
  });
  map.addLayer({
    id: "basemap-water",
    type: "fill",
    source: "basemap",
    filter: ["==", ["get", "layer"], "water"],
    paint: { "fill-color": "#a9cfe8" },
  });
  map.addLayer({
    id: "basemap-water-line",
    type: "line",
    source: "basemap",
    filter: ["all", ["==", ["get", "layer"], "water"], ["==", ["geometry-type"], "LineString"]],
    paint: { "line-color": "#a9cfe8", "line-width": 4 },
  });
  map.addLayer({
    id: "basemap-street",
    type: "line",
    source: "basemap",
    filter: ["==", ["get", "layer"], "street"],
    layout: { "line-cap": "round", "line-join": "round" },
    paint: {
      "line-color": "#ffffff",
      "line-width": [
        "interpolate",
        ["linear"],
        ["zoom"],
        11,
        ["match", ["get", "class"], ["primary", "trunk", "major"], 2, 0.6],
        16,
        ["match", ["get", "class"], ["primary", "trunk", "major"], 10, 5],
      ],
    },
  });
}

/** Fences (a FeatureCollection with `kind` per feature), beneath whatever is added later. */
export function addFences(map: MlMap, fences: FeatureCollection): void {
  map.addSource("fences", { type: "geojson", data: fences });
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
  map.addLayer({
    id: "fences-fill",
    type: "fill",
    source: "fences",
    filter: ["!=", ["get", "kind"], "service_area"],
    paint: { "fill-color": color, "fill-opacity": 0.25 },
  });
  map.addLayer({
    id: "fences-line",
    type: "line",
    source: "fences",
    paint: {
      "line-color": color,
      "line-width": ["case", ["==", ["get", "kind"], "service_area"], 2.5, 1.2],
      "line-dasharray": ["literal", [2, 1]],
    },
  });
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
