// Shared pieces of the bike-share operator screens: API types, what the caller's role may do,
// and a map with the city's basemap and fences that each screen draws its own layers on.
import type { Feature, FeatureCollection, Geometry, LineString, Point, Polygon } from "geojson";
import { currentAuth } from "../auth";
import { openCity } from "../citymap";

export const BS = "/console/bikeshare/";
/** The zone kinds the bike share treats as fences (others are the platform's own). */
export const FENCE_KINDS = ["service_area", "parking", "no_parking", "no_riding"] as const;
export const TRIP_STATES = ["requested", "unlocking", "riding", "ending", "settled", "failed"] as const;
export const ORDER_KINDS = ["rebalance", "repair", "battery", "inspect"] as const;
export const ORDER_STATES = ["open", "in_progress", "done", "cancelled"] as const;
/** Where the demo city is, until the basemap says otherwise. */

export interface Zone {
  name: string;
  kind: string;
  polygon: unknown;
  properties: Record<string, unknown>;
  updated_at: number;
}

export interface FareLine {
  kind: string;
  amount: number;
  description: string;
}

export interface Trip {
  id: string;
  rider: string;
  bike: string;
  state: string;
  plan_id: string;
  requested_at: number;
  unlocked_at: number | null;
  locked_at: number | null;
  settled_at: number | null;
  start: [number, number] | null;
  end: [number, number] | null;
  end_zone: string | null;
  out_of_fence: boolean;
  distance_m: number | null;
  duration_ms: number | null;
  fare: { currency: string; lines: FareLine[]; total: number } | null;
  total: number | null;
  route?: [number, number, number][] | null;
  route_reduced: boolean;
  failure: string | null;
}

export interface Rider {
  id: string;
  phone: string | null;
  display_name: string | null;
  real_name: string | null;
  id_number_last4: string | null;
  birth_date: string | null;
  created_at: number;
  location_consent: boolean;
  status: string;
}

export interface StatementLine {
  journal_id: number;
  kind: string;
  created_at: number;
  reference: string;
  memo: string;
  amount: number;
  balance_after: number;
}

export interface WorkOrder {
  id: string;
  bike: string;
  kind: string;
  state: string;
  reason: string;
  target_cell: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
  note: string | null;
  /** A crew or a person, free text; null while unassigned. */
  assignee: string | null;
}

/** Whether the caller may change things: admins and operators. An API key's scope is not
 * known here; the API refuses what it may not do and the screen shows why. */
export function canWrite(): boolean {
  const a = currentAuth();
  if (!a) return false;
  if (a.kind === "key") return true;
  return a.role === "admin" || a.role === "operator";
}

export function isRegulator(): boolean {
  const a = currentAuth();
  return a?.kind === "session" && a.role === "city_regulator";
}

/** A zone's stored polygon (a GeoJSON Polygon, its bare rings, or one ring) as a Polygon. */
export function zonePolygon(p: unknown): Polygon | null {
  if (p && typeof p === "object" && !Array.isArray(p)) {
    const g = p as { type?: string; coordinates?: unknown };
    return g.type === "Polygon" ? (g as Polygon) : null;
  }
  if (!Array.isArray(p) || p.length === 0) return null;
  // One ring is an array of positions; rings are arrays of those.
  if (Array.isArray(p[0]) && typeof p[0][0] === "number") return { type: "Polygon", coordinates: [p as number[][]] };
  return { type: "Polygon", coordinates: p as number[][][] };
}

export function zonesToGeoJson(zones: Zone[], selected?: string | null): FeatureCollection {
  const features: Feature[] = [];
  for (const z of zones) {
    const g = zonePolygon(z.polygon);
    if (g) features.push({ type: "Feature", geometry: g, properties: { kind: z.kind, name: z.name, selected: z.name === selected } });
  }
  return { type: "FeatureCollection", features };
}

export function points(list: { lon: number; lat: number; props: Record<string, unknown> }[]): FeatureCollection<Point> {
  return {
    type: "FeatureCollection",
    features: list.map((p) => ({ type: "Feature", geometry: { type: "Point", coordinates: [p.lon, p.lat] }, properties: p.props })),
  };
}

export function lines(list: { coords: [number, number][]; props: Record<string, unknown> }[]): FeatureCollection<LineString> {
  return {
    type: "FeatureCollection",
    features: list.map((l) => ({ type: "Feature", geometry: { type: "LineString", coordinates: l.coords }, properties: l.props })),
  };
}

export const EMPTY: FeatureCollection = { type: "FeatureCollection", features: [] };

export type Kit = typeof import("../../common/mapkit");
export type MlMap = import("maplibre-gl").Map;

export interface CityMap {
  kit: Kit;
  map: MlMap;
  zones: Zone[];
}

/**
 * A map in `box` with the tenant's basemap and its fences, fitted to the city. Resolves once
 * the style has loaded, so callers can add sources and layers at once. `note` receives a
 * message when the tenant has no basemap.
 */
export async function openCityMap(box: HTMLElement, note?: (m: string) => void): Promise<CityMap> {
  const { kit, map, basemap, zones } = await openCity<Zone>(box, { note });
  if (basemap) kit.addBasemap(map, basemap);
  const fences = zonesToGeoJson(zones.filter((z) => (FENCE_KINDS as readonly string[]).includes(z.kind)));
  kit.addFences(map, fences);
  const b = kit.bounds(basemap ?? fences);
  if (b) map.fitBounds(b, { padding: 20, animate: false });
  box.setAttribute("data-ready", "1");
  return { kit, map, zones };
}

export function setData(map: MlMap, source: string, data: FeatureCollection): void {
  const src = map.getSource(source) as import("maplibre-gl").GeoJSONSource | undefined;
  src?.setData(data);
}

/** Bounds of a list of [lon, lat] positions, or null. */
export function boundsOf(coords: [number, number][]): [[number, number], [number, number]] | null {
  if (coords.length === 0) return null;
  let [w, s, e, n] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of coords) {
    w = Math.min(w, x);
    e = Math.max(e, x);
    s = Math.min(s, y);
    n = Math.max(n, y);
  }
  return [[w, s], [e, n]];
}

export function fmtMeters(m: number | null | undefined): string {
  if (m == null) return "—";
  return m >= 1000 ? `${(m / 1000).toFixed(2)} km` : `${Math.round(m)} m`;
}

/** `datetime-local` input value ↔ ms since the epoch, in the browser's time zone. */
export function toLocalInput(ms: number | null): string {
  if (ms == null) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}
export function fromLocalInput(v: string): number | undefined {
  if (!v) return undefined;
  const ms = new Date(v).getTime();
  return Number.isFinite(ms) ? ms : undefined;
}

export type { Geometry };
