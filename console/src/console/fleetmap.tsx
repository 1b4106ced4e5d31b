// The bike-share fleet on a WebGL map: basemap and fences from GeoJSON, every bike in one
// clustered GeoJSON source (clustering runs in MapLibre's worker), coloured by status. The
// fleet's JSON is parsed in a worker of ours (fleetworker.ts), never on the page's thread.
import type { FeatureCollection, Point } from "geojson";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { fmtNumber, t, type MsgKey } from "../common/i18n";
import { api, currentAuth } from "./auth";
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
      const fences: FeatureCollection = {
        type: "FeatureCollection",
        features: zones.map((z) => ({ type: "Feature", geometry: z.polygon, properties: { kind: z.kind, name: z.name } })),
      };
      kit.addCity(map, basemap, fences);
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
        {note && <p class="muted small">{note}</p>}
        {error && <p class="error">{error}</p>}
      </aside>
    </div>
  );
}
