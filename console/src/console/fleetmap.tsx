// The bike-share fleet on a WebGL map: basemap and fences from GeoJSON, every bike in one
// clustered GeoJSON source (clustering runs in MapLibre's worker), coloured by status. The
// fleet's JSON is parsed in a worker of ours (fleetworker.ts), never on the page's thread.
import type { FeatureCollection, Point } from "geojson";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { fmtNumber, t, useLang, type MsgKey } from "../common/i18n";
import { api, currentAuth } from "./auth";
import { openCity } from "./citymap";
import type { FleetAnswer, FleetRequest } from "./fleetworker";

interface Zone {
  name: string;
  kind: string;
  polygon: FeatureCollection["features"][number]["geometry"];
}
interface Summary {
  bikes: number;
  by_status: Record<string, number>;
}

const STATUSES = ["available", "on_trip", "low_battery", "faulty", "out_of_fence", "unknown"];
const REFRESH_MS = 15_000;
/** Fleets above this size refresh every REFRESH_LARGE_MS: each refresh moves the whole fleet
 * (about 250 bytes a bike) and re-clusters it in the map's worker. */
const LARGE_FLEET = 20_000;
const REFRESH_LARGE_MS = 60_000;

interface Demand {
  days: number;
  rows: { cell: string; hour_start_ms: number; demand: number }[];
  cell_centers: Record<string, [number, number]>;
  utc_offset_minutes: number;
}

/** Colours of the heat map by density; the legend's gradient (style.css `.heat-ramp`) matches. */
const HEAT_RAMP: [number, string][] = [
  [0, "rgba(37, 99, 235, 0)"],
  [0.2, "rgba(37, 99, 235, 0.55)"],
  [0.45, "#22c55e"],
  [0.7, "#facc15"],
  [1, "#dc2626"],
];

/**
 * Trip starts a day per cell at the tenant's local hour `hour` (null: the whole day), as points
 * at the cells' centres weighted 0–1 against the busiest cell, which `max` is.
 */
export function demandPoints(d: Demand, hour: number | null): { fc: FeatureCollection<Point>; max: number } {
  const per = new Map<string, number>();
  for (const r of d.rows) {
    if (!r.demand) continue;
    const local = Math.floor((r.hour_start_ms + d.utc_offset_minutes * 60_000) / 3_600_000);
    if (hour != null && ((local % 24) + 24) % 24 !== hour) continue;
    per.set(r.cell, (per.get(r.cell) ?? 0) + r.demand);
  }
  const days = Math.max(1, d.days);
  const max = Math.max(0, ...per.values()) / days;
  const features: FeatureCollection<Point>["features"] = [];
  for (const [cell, n] of per) {
    const c = d.cell_centers[cell];
    if (!c) continue;
    const perDay = n / days;
    features.push({
      type: "Feature",
      geometry: { type: "Point", coordinates: [c[1], c[0]] },
      properties: { cell, per_day: perDay, w: max > 0 ? perDay / max : 0 },
    });
  }
  return { fc: { type: "FeatureCollection", features }, max };
}

/** The fleet's raw bytes, with the operator's credential (parsed by the worker, not here). */
async function fleetBytes(): Promise<ArrayBuffer> {
  const auth = currentAuth();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (auth?.kind === "key") headers.Authorization = `Bearer ${auth.key}`;
  const r = await fetch("/api/v1/bikeshare/fleet?limit=100000", { headers, credentials: "same-origin" });
  if (!r.ok) {
    const p = (await r.json().catch(() => ({}))) as { code?: string; detail?: string };
    throw new ApiError(r.status, p.code ?? `http_${r.status}`, p.detail ?? r.statusText);
  }
  return r.arrayBuffer();
}

export function FleetMap() {
  const box = useRef<HTMLDivElement>(null);
  const worker = useRef<Worker | null>(null);
  const total = useRef(0);
  const [summary, setSummary] = useState<Summary | null>(null);
  const [shown, setShown] = useState<number | null>(null);
  const [hidden, setHidden] = useState<Set<string>>(new Set());
  const [note, setNote] = useState<string | null>(null);
  const [ready, setReady] = useState(false);
  const basemapRef = useRef<FeatureCollection | null>(null);
  const language = useLang();
  const [heatOn, setHeatOn] = useState(false);
  const [heatHour, setHeatHour] = useState<number | null>(null);
  const [demand, setDemand] = useState<Demand | null>(null);
  const [heatMax, setHeatMax] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const mapRef = useRef<import("maplibre-gl").Map | null>(null);
  const hiddenRef = useRef(hidden);
  hiddenRef.current = hidden;

  const post = (m: FleetRequest, transfer: Transferable[] = []) => worker.current?.postMessage(m, transfer);
  const redraw = () => post({ kind: "hide", hidden: [...hiddenRef.current] });

  useEffect(() => {
    let disposed = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    let blobUrl: string | null = null;
    const w = new Worker(new URL("./fleetworker.ts", import.meta.url), { type: "module" });
    worker.current = w;
    w.onmessage = (e: MessageEvent<FleetAnswer>) => {
      const m = e.data;
      if (m.kind === "error") {
        setError(m.message);
        return;
      }
      const src = mapRef.current?.getSource("bikes") as import("maplibre-gl").GeoJSONSource | undefined;
      if (disposed || !src) {
        URL.revokeObjectURL(m.url);
        return;
      }
      // MapLibre's worker fetches the Blob itself; the one before this has been read by now.
      src.setData(m.url);
      if (blobUrl) URL.revokeObjectURL(blobUrl);
      blobUrl = m.url;
      total.current = m.total;
      setShown(m.shown);
      box.current?.setAttribute("data-bikes", String(m.total));
    };
    (async () => {
      if (!box.current) return;
      const { kit, map, basemap, zones } = await openCity<Zone>(box.current, {
        onMap: (m) => {
          mapRef.current = m;
          // Gone before the map existed: the clean-up has run, so remove it here.
          if (disposed) m.remove();
        },
        note: setNote,
      });
      if (disposed) return;
      const fences: FeatureCollection = {
        type: "FeatureCollection",
        features: zones.map((z) => ({ type: "Feature", geometry: z.polygon, properties: { kind: z.kind, name: z.name } })),
      };
      kit.addCity(map, basemap, fences);
      basemapRef.current = basemap;
      const b = kit.bounds(basemap ?? fences);
      if (b) map.fitBounds(b, { padding: 20, animate: false });

      map.addSource("bikes", {
        type: "geojson",
        data: { type: "FeatureCollection", features: [] },
        cluster: true,
        clusterRadius: 45,
        clusterMaxZoom: 15,
        clusterProperties: {
          available: ["+", ["case", ["==", ["get", "status"], "available"], 1, 0]],
        },
      });
      map.addLayer({
        id: "bike-clusters",
        type: "circle",
        source: "bikes",
        filter: ["has", "point_count"],
        paint: {
          // Green when most bikes in the cluster are available, amber when few are.
          "circle-color": [
            "interpolate",
            ["linear"],
            ["/", ["get", "available"], ["get", "point_count"]],
            0,
            "#f59e0b",
            0.6,
            "#16a34a",
          ],
          "circle-opacity": 0.85,
          "circle-stroke-color": "#fff",
          "circle-stroke-width": 1.5,
          // Sized by the cluster's count, kept small: every pixel a circle covers is drawn each frame.
          "circle-radius": ["interpolate", ["linear"], ["get", "point_count"], 2, 6, 100, 10, 1000, 16, 10000, 24],
        },
      });
      map.addLayer({
        id: "bike-points",
        type: "circle",
        source: "bikes",
        filter: ["!", ["has", "point_count"]],
        paint: {
          "circle-color": ["match", ["get", "status"], ...STATUSES.flatMap((s) => [s, kit.STATUS_COLORS[s]]), "#6b7280"] as never,
          "circle-radius": ["interpolate", ["linear"], ["zoom"], 12, 3, 17, 7],
          "circle-stroke-color": "#fff",
          "circle-stroke-width": 1,
        },
      });
      // The demand heat map, beneath the bikes; hidden until the operator turns it on.
      map.addSource("demand", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
      map.addLayer(
        {
          id: "demand-heat",
          type: "heatmap",
          source: "demand",
          layout: { visibility: "none" },
          paint: {
            "heatmap-weight": ["get", "w"],
            // About two H3 cells (resolution 9) at any zoom.
            "heatmap-radius": ["interpolate", ["exponential", 2], ["zoom"], 12, 22, 16, 350],
            "heatmap-color": ["interpolate", ["linear"], ["heatmap-density"], ...HEAT_RAMP.flat()] as never,
            "heatmap-opacity": 0.8,
          },
        },
        "bike-clusters",
      );
      setReady(true);
      map.on("click", "bike-clusters", async (e) => {
        const f = e.features?.[0];
        if (!f) return;
        const src = map.getSource("bikes") as import("maplibre-gl").GeoJSONSource;
        const zoom = await src.getClusterExpansionZoom(f.properties.cluster_id as number);
        map.easeTo({ center: (f.geometry as Point).coordinates as [number, number], zoom });
      });
      map.on("click", "bike-points", (e) => {
        const f = e.features?.[0];
        if (!f) return;
        const p = f.properties as { id: string; status: string; battery: number; zone: string | null };
        const html = document.createElement("div");
        html.className = "popup";
        const link = document.createElement("a");
        link.href = `/console/devices/${encodeURIComponent(p.id)}`;
        link.textContent = p.id;
        html.append(link);
        const rows: [string, string][] = [
          ["", t(`map.legend.${p.status}` as MsgKey)],
          [t("map.battery"), p.battery != null ? `${fmtNumber(p.battery, 0)}%` : "—"],
          [t("map.zone"), p.zone && p.zone !== "null" ? p.zone : "—"],
        ];
        for (const [k, v] of rows) {
          const line = document.createElement("div");
          line.textContent = k ? `${k}: ${v}` : v;
          html.append(line);
        }
        new kit.maplibregl.Popup({ closeButton: true })
          .setLngLat((f.geometry as Point).coordinates as [number, number])
          .setDOMContent(html)
          .addTo(map);
      });
      for (const layer of ["bike-clusters", "bike-points"]) {
        map.on("mouseenter", layer, () => (map.getCanvas().style.cursor = "pointer"));
        map.on("mouseleave", layer, () => (map.getCanvas().style.cursor = ""));
      }
      // A cluster's count on hover: circles carry no text (MapLibre text needs a glyph server).
      const hover = new kit.maplibregl.Popup({ closeButton: false, closeOnClick: false, className: "cluster-count" });
      map.on("mousemove", "bike-clusters", (e) => {
        const f = e.features?.[0];
        if (!f) return;
        hover
          .setLngLat((f.geometry as Point).coordinates as [number, number])
          .setText(t("map.cluster", { count: fmtNumber(f.properties.point_count as number) }))
          .addTo(map);
      });
      map.on("mouseleave", "bike-clusters", () => hover.remove());

      const load = async () => {
        try {
          const [bytes, s] = await Promise.all([fleetBytes(), api<Summary>("/api/v1/bikeshare/fleet/summary")]);
          if (disposed) return;
          post({ kind: "fleet", bytes, hidden: [...hiddenRef.current] }, [bytes]);
          setSummary(s);
          setError(null);
        } catch (e) {
          setError(errorText(e));
        }
      };
      await load();
      // A refresh waits while the map moves or the tab is hidden, so a pan never stalls on it.
      let last = Date.now();
      timer = setInterval(() => {
        const every = total.current > LARGE_FLEET ? REFRESH_LARGE_MS : REFRESH_MS;
        if (Date.now() - last < every || document.hidden || map.isMoving()) return;
        last = Date.now();
        void load();
      }, 1000);
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      clearInterval(timer);
      w.terminate();
      worker.current = null;
      if (blobUrl) URL.revokeObjectURL(blobUrl);
      mapRef.current?.remove();
      mapRef.current = null;
    };
  }, []);

  useEffect(redraw, [hidden]);

  // District, lake and street names, in the page's language.
  useEffect(() => {
    const map = mapRef.current;
    const basemap = basemapRef.current;
    if (!ready || !map || !basemap) return;
    let remove: (() => void) | undefined;
    let gone = false;
    void import("../common/mapkit").then((kit) => {
      if (gone || mapRef.current !== map) return;
      const zh = language === "zh-CN";
      const removers = [kit.addAreaLabels(map, basemap, zh), kit.addStreetLabels(map, basemap, zh)];
      remove = () => removers.forEach((r) => r());
    });
    return () => {
      gone = true;
      remove?.();
    };
  }, [ready, language]);

  // The heat map: demand is asked for once, when first shown; the hour only regroups it.
  useEffect(() => {
    if (heatOn && !demand) {
      api<Demand>("/api/v1/bikeshare/demand?days=7").then(setDemand, (e) => setError(errorText(e)));
    }
  }, [heatOn, demand]);
  useEffect(() => {
    const map = mapRef.current;
    if (!ready || !map) return;
    map.setLayoutProperty("demand-heat", "visibility", heatOn && demand ? "visible" : "none");
    if (!heatOn || !demand) return;
    const { fc, max } = demandPoints(demand, heatHour);
    (map.getSource("demand") as import("maplibre-gl").GeoJSONSource).setData(fc);
    setHeatMax(max);
    box.current?.setAttribute("data-heat-cells", String(fc.features.length));
  }, [ready, heatOn, heatHour, demand]);

  const toggle = (s: string) => {
    const next = new Set(hidden);
    if (next.has(s)) next.delete(s);
    else next.add(s);
    setHidden(next);
  };

  return (
    <div class="fleet">
      <div ref={box} class="map" data-testid="fleet-map" />
      <aside class="panel" data-testid="fleet-summary">
        <h2>{t("map.title")}</h2>
        <p class="big">{summary ? t("map.bikes", { count: fmtNumber(summary.bikes) }) : t("map.loadingBikes")}</p>
        <ul class="legend">
          {STATUSES.map((s) => (
            <li>
              <label>
                <input type="checkbox" checked={!hidden.has(s)} onChange={() => toggle(s)} />
                <span class={`swatch status-${s}`} />
                {t(`map.legend.${s}` as MsgKey)}
                <span class="count">{fmtNumber(summary?.by_status[s] ?? 0)}</span>
              </label>
            </li>
          ))}
        </ul>
        {shown != null && <p class="muted small" data-testid="bikes-shown">{fmtNumber(shown)} / {fmtNumber(total.current)}</p>}
        <h3>{t("map.zones")}</h3>
        <ul class="legend">
          {(["parking", "no_parking", "no_riding", "service_area"] as const).map((k) => (
            <li>
              <span class={`swatch fence-${k}`} /> {t(`map.fence.${k}`)}
            </li>
          ))}
        </ul>
        <h3>{t("map.heat.title")}</h3>
        <label class="heat-toggle">
          <input type="checkbox" data-testid="heat-toggle" checked={heatOn} onChange={() => setHeatOn(!heatOn)} />
          {t("map.heat.toggle")}
        </label>
        {heatOn && (
          <div class="heat-legend" data-testid="heat-legend">
            <label class="heat-hour">
              {t("map.heat.hour")}
              <select
                data-testid="heat-hour"
                value={heatHour == null ? "" : String(heatHour)}
                onChange={(e) => {
                  const v = (e.target as HTMLSelectElement).value;
                  setHeatHour(v === "" ? null : Number(v));
                }}
              >
                <option value="">{t("map.heat.allDay")}</option>
                {Array.from({ length: 24 }, (_, h) => (
                  <option value={String(h)}>{`${String(h).padStart(2, "0")}:00–${String((h + 1) % 24).padStart(2, "0")}:00`}</option>
                ))}
              </select>
            </label>
            {!demand ? (
              <p class="muted small">{t("map.heat.loading")}</p>
            ) : heatMax ? (
              <>
                <div class="heat-ramp" />
                <div class="heat-scale small">
                  <span>0</span>
                  <span data-testid="heat-max">{fmtNumber(heatMax, heatMax < 10 ? 1 : 0)}</span>
                </div>
                <p class="muted small">{t("map.heat.scale", { days: String(demand.days) })}</p>
              </>
            ) : (
              <p class="muted small">{t("map.heat.none", { days: String(demand.days) })}</p>
            )}
          </div>
        )}
        {note && <p class="muted small">{note}</p>}
        {error && <p class="error">{error}</p>}
      </aside>
    </div>
  );
}
