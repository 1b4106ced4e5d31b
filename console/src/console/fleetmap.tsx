// The bike-share fleet on a WebGL map: basemap and fences from GeoJSON, every bike in one
// clustered GeoJSON source (clustering runs in MapLibre's worker), coloured by status.
import type { Feature, FeatureCollection, Point } from "geojson";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { fmtNumber, t, type MsgKey } from "../common/i18n";
import { api } from "./auth";

interface Bike {
  id: string;
  lat: number | null;
  lon: number | null;
  status: string;
  battery: number | null;
  parking_zone: string | null;
}
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

export function bikesToGeoJson(bikes: Bike[], hidden: Set<string>): FeatureCollection<Point> {
  const features: Feature<Point>[] = [];
  for (const b of bikes) {
    if (b.lat == null || b.lon == null || hidden.has(b.status)) continue;
    features.push({
      type: "Feature",
      geometry: { type: "Point", coordinates: [b.lon, b.lat] },
      properties: { id: b.id, status: b.status, battery: b.battery, zone: b.parking_zone },
    });
  }
  return { type: "FeatureCollection", features };
}

export function FleetMap() {
  const box = useRef<HTMLDivElement>(null);
  const bikes = useRef<Bike[]>([]);
  const [summary, setSummary] = useState<Summary | null>(null);
  const [shown, setShown] = useState<number | null>(null);
  const [hidden, setHidden] = useState<Set<string>>(new Set());
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const mapRef = useRef<import("maplibre-gl").Map | null>(null);
  const hiddenRef = useRef(hidden);
  hiddenRef.current = hidden;

  const redraw = () => {
    const map = mapRef.current;
    const src = map?.getSource("bikes") as import("maplibre-gl").GeoJSONSource | undefined;
    if (!src) return;
    const fc = bikesToGeoJson(bikes.current, hiddenRef.current);
    src.setData(fc);
    setShown(fc.features.length);
  };

  useEffect(() => {
    let disposed = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    (async () => {
      const kit = await import("../common/mapkit");
      if (disposed || !box.current) return;
      const map = kit.createMap(box.current, [120.155, 30.274], 12);
      mapRef.current = map;
      (window as unknown as { __wulianMap: unknown }).__wulianMap = map;
      map.addControl(new kit.maplibregl.NavigationControl({ showCompass: false }), "top-right");
      map.addControl(new kit.maplibregl.ScaleControl({}), "bottom-left");
      const [basemap, zones] = await Promise.all([
        api<FeatureCollection>("/api/v1/bikeshare/basemap").catch((e) => {
          if (e instanceof ApiError && e.status === 404) setNote(t("map.noBasemap"));
          return null;
        }),
        api<Zone[]>("/api/v1/zones").catch(() => [] as Zone[]),
      ]);
      await kit.whenLoaded(map);
      if (disposed) return;
      if (basemap) kit.addBasemap(map, basemap);
      const fences: FeatureCollection = {
        type: "FeatureCollection",
        features: zones.map((z) => ({ type: "Feature", geometry: z.polygon, properties: { kind: z.kind, name: z.name } })),
      };
      kit.addFences(map, fences);
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
          "circle-radius": ["interpolate", ["linear"], ["sqrt", ["get", "point_count"]], 1, 8, 30, 28, 300, 60],
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

      const load = async () => {
        try {
          const [fleet, s] = await Promise.all([
            api<{ bikes: Bike[] }>("/api/v1/bikeshare/fleet?limit=100000"),
            api<Summary>("/api/v1/bikeshare/fleet/summary"),
          ]);
          if (disposed) return;
          bikes.current = fleet.bikes;
          setSummary(s);
          redraw();
          setError(null);
          box.current?.setAttribute("data-bikes", String(fleet.bikes.length));
        } catch (e) {
          setError(errorText(e));
        }
      };
      await load();
      timer = setInterval(load, REFRESH_MS);
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      clearInterval(timer);
      mapRef.current?.remove();
      mapRef.current = null;
    };
  }, []);

  useEffect(redraw, [hidden]);

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
        {shown != null && <p class="muted small" data-testid="bikes-shown">{fmtNumber(shown)} / {fmtNumber(bikes.current.length)}</p>}
        <h3>{t("map.zones")}</h3>
        <ul class="legend">
          {(["parking", "no_parking", "no_riding", "service_area"] as const).map((k) => (
            <li>
              <span class={`swatch fence-${k}`} /> {t(`map.fence.${k}`)}
            </li>
          ))}
        </ul>
        {note && <p class="muted small">{note}</p>}
        {error && <p class="error">{error}</p>}
      </aside>
    </div>
  );
}
