// Zones (electronic fences): on the map and in a list; upload a GeoJSON file, draw a polygon by
// clicking its vertices, change a zone's kind or name, delete it. The zone API validates every
// polygon; its problem+json answers are shown as they come.
import type { Feature, FeatureCollection, Polygon } from "geojson";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { errorText } from "../../common/api";
import { fmtTime, t, type MsgKey } from "../../common/i18n";
import { api } from "../auth";
import { EMPTY, FENCE_KINDS, canWrite, openCityMap, setData, zonePolygon, zonesToGeoJson, type CityMap, type Zone } from "./common";

const PAGE = 100;

interface UploadItem {
  name: string;
  kind: string;
  polygon: unknown;
  properties: Record<string, unknown>;
}
interface UploadResult {
  name: string;
  ok: boolean;
  detail: string;
}

/** The zones a GeoJSON document describes: a Polygon, a Feature, a FeatureCollection; each
 * polygon of a MultiPolygon becomes a zone of its own. Names and kinds come from the features'
 * properties, else from the file name and the chosen kind. Geometry is passed on unchecked:
 * the API is the judge of what is a valid polygon. */
export function zonesFromGeoJson(doc: unknown, base: string, kind: string): UploadItem[] {
  const out: UploadItem[] = [];
  const add = (geometry: unknown, props: Record<string, unknown>, n: number) => {
    const g = geometry as { type?: string; coordinates?: unknown } | null;
    const { name, kind: k, ...rest } = props;
    const zoneKind = typeof k === "string" && k ? k : kind;
    const zoneName = typeof name === "string" && name ? name : `${base}-${n}`;
    if (g?.type === "MultiPolygon" && Array.isArray(g.coordinates)) {
      g.coordinates.forEach((c, i) =>
        out.push({ name: `${zoneName}-${i + 1}`, kind: zoneKind, polygon: { type: "Polygon", coordinates: c }, properties: rest }),
      );
    } else {
      out.push({ name: zoneName, kind: zoneKind, polygon: geometry, properties: rest });
    }
  };
  const d = doc as { type?: string; features?: unknown[]; geometry?: unknown; properties?: Record<string, unknown> };
  if (d?.type === "FeatureCollection" && Array.isArray(d.features)) {
    d.features.forEach((f, i) => {
      const feat = f as Feature;
      add(feat.geometry, (feat.properties ?? {}) as Record<string, unknown>, i + 1);
    });
  } else if (d?.type === "Feature") {
    add(d.geometry, d.properties ?? {}, 1);
  } else {
    add(doc, {}, 1);
  }
  return out;
}

export function ZonesPage() {
  const box = useRef<HTMLDivElement>(null);
  const cm = useRef<CityMap | null>(null);
  const [zones, setZones] = useState<Zone[]>([]);
  const [kindFilter, setKindFilter] = useState("");
  const [search, setSearch] = useState("");
  const [shown, setShown] = useState(PAGE);
  const [selected, setSelected] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [drawing, setDrawing] = useState<[number, number][] | null>(null);
  const drawingRef = useRef(drawing);
  drawingRef.current = drawing;
  const [finished, setFinished] = useState<[number, number][] | null>(null);
  const [uploadKind, setUploadKind] = useState("parking");
  const [results, setResults] = useState<UploadResult[] | null>(null);
  const [busy, setBusy] = useState(false);
  const write = canWrite();

  const reload = async () => {
    try {
      setZones(await api<Zone[]>("/api/v1/zones"));
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  };

  useEffect(() => {
    let disposed = false;
    (async () => {
      if (!box.current) return;
      const c = await openCityMap(box.current, setNote);
      if (disposed) return c.map.remove();
      cm.current = c;
      setZones(c.zones);
      const { map } = c;
      map.addLayer({
        id: "zone-selected",
        type: "line",
        source: "fences",
        filter: ["==", ["get", "selected"], true],
        paint: { "line-color": "#f59e0b", "line-width": 4 },
      });
      map.addSource("draw", { type: "geojson", data: EMPTY });
      map.addLayer({ id: "draw-fill", type: "fill", source: "draw", filter: ["==", ["geometry-type"], "Polygon"], paint: { "fill-color": "#f59e0b", "fill-opacity": 0.25 } });
      map.addLayer({ id: "draw-line", type: "line", source: "draw", filter: ["!=", ["geometry-type"], "Point"], paint: { "line-color": "#b45309", "line-width": 2 } });
      map.addLayer({
        id: "draw-vertex",
        type: "circle",
        source: "draw",
        filter: ["==", ["geometry-type"], "Point"],
        paint: { "circle-radius": 5, "circle-color": "#fff", "circle-stroke-color": "#b45309", "circle-stroke-width": 2 },
      });
      map.on("click", (e) => {
        const d = drawingRef.current;
        if (d) {
          setDrawing([...d, [e.lngLat.lng, e.lngLat.lat]]);
          return;
        }
        const hit = map.queryRenderedFeatures(e.point, { layers: ["fences-fill"] })[0];
        if (hit) setSelected(String(hit.properties.name));
      });
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      cm.current?.map.remove();
      cm.current = null;
    };
  }, []);

  // Keep the map's fences and the drawing in step with the state.
  useEffect(() => {
    const map = cm.current?.map;
    if (!map) return;
    setData(map, "fences", zonesToGeoJson(zones, selected));
    box.current?.setAttribute("data-zones", String(zones.length));
  }, [zones, selected, cm.current]);
  useEffect(() => {
    const map = cm.current?.map;
    if (!map) return;
    const v = drawing ?? finished ?? [];
    const features: Feature[] = v.map((c) => ({ type: "Feature", geometry: { type: "Point", coordinates: c }, properties: {} }));
    if (v.length >= 3) features.push({ type: "Feature", geometry: { type: "Polygon", coordinates: [[...v, v[0]]] }, properties: {} });
    else if (v.length === 2) features.push({ type: "Feature", geometry: { type: "LineString", coordinates: v }, properties: {} });
    setData(map, "draw", { type: "FeatureCollection", features } as FeatureCollection);
    map.getCanvas().style.cursor = drawing ? "crosshair" : "";
    box.current?.setAttribute("data-vertices", String(v.length));
  }, [drawing, finished]);

  const filtered = useMemo(() => {
    const q = search.trim().toLowerCase();
    return zones.filter((z) => (!kindFilter || z.kind === kindFilter) && (!q || z.name.toLowerCase().includes(q)));
  }, [zones, kindFilter, search]);

  const focus = (z: Zone) => {
    setSelected(z.name);
    const g = zonePolygon(z.polygon);
    const map = cm.current?.map;
    if (!g || !map) return;
    const b = cm.current!.kit.bounds({ type: "FeatureCollection", features: [{ type: "Feature", geometry: g, properties: {} }] });
    if (b) map.fitBounds(b, { padding: 80, maxZoom: 17, duration: 300 });
  };

  const upload = async (file: File) => {
    setResults(null);
    setError(null);
    let doc: unknown;
    try {
      doc = JSON.parse(await file.text());
    } catch (e) {
      setError(t("bs.zones.notJson", { detail: String((e as Error).message) }));
      return;
    }
    const base = file.name.replace(/\.(geo)?json$/i, "").replace(/[^\w.-]+/g, "-") || "zone";
    const items = zonesFromGeoJson(doc, base, uploadKind);
    setBusy(true);
    const out: UploadResult[] = [];
    for (const z of items) {
      try {
        await api(`/api/v1/zones/${encodeURIComponent(z.name)}`, {
          method: "PUT",
          body: { kind: z.kind, polygon: z.polygon, properties: z.properties },
        });
        out.push({ name: z.name, ok: true, detail: t(`bs.kind.${z.kind}` as MsgKey) ?? z.kind });
      } catch (e) {
        out.push({ name: z.name, ok: false, detail: errorText(e) });
      }
    }
    setBusy(false);
    setResults(out);
    await reload();
    const first = out.find((r) => r.ok);
    if (first) setSelected(first.name);
  };

  const sel = zones.find((z) => z.name === selected) ?? null;

  return (
    <div class="bs-split">
      <div class="bs-mapbox">
        <div ref={box} class="map" data-testid="zones-map" />
        {drawing && (
          <div class="bs-drawbar" data-testid="draw-bar">
            <span>{t("bs.zones.drawHint", { count: drawing.length })}</span>
            <button disabled={drawing.length === 0} onClick={() => setDrawing(drawing.slice(0, -1))}>
              {t("bs.zones.undo")}
            </button>
            <button
              class="primary"
              data-testid="draw-finish"
              disabled={drawing.length < 3}
              onClick={() => {
                setFinished(drawing);
                setDrawing(null);
              }}
            >
              {t("bs.zones.finish")}
            </button>
            <button data-testid="draw-cancel" onClick={() => setDrawing(null)}>
              {t("common.cancel")}
            </button>
          </div>
        )}
      </div>
      <aside class="bs-side">
        <div class="toolbar">
          <h2>{t("bs.zones.title")}</h2>
          <span class="muted" data-testid="zones-count">
            {t("bs.zones.count", { count: filtered.length })}
          </span>
        </div>
        {note && <p class="muted small">{note}</p>}
        {error && (
          <p class="error" role="alert" data-testid="zones-error">
            {error}
          </p>
        )}
        {write && !drawing && !finished && (
          <div class="card stack">
            <div class="row wrap">
              <button class="primary" data-testid="draw-start" onClick={() => { setDrawing([]); setSelected(null); }}>
                {t("bs.zones.draw")}
              </button>
            </div>
            <div class="row wrap">
              <label>
                {t("bs.zones.uploadKind")}
                <select value={uploadKind} onChange={(e) => setUploadKind(e.currentTarget.value)}>
                  {FENCE_KINDS.map((k) => (
                    <option value={k}>{t(`bs.kind.${k}`)}</option>
                  ))}
                </select>
              </label>
              <label>
                {t("bs.zones.upload")}
                <input
                  type="file"
                  accept=".json,.geojson,application/geo+json,application/json"
                  data-testid="zone-upload"
                  disabled={busy}
                  onChange={(e) => {
                    const f = e.currentTarget.files?.[0];
                    if (f) upload(f);
                    e.currentTarget.value = "";
                  }}
                />
              </label>
            </div>
            <p class="muted small">{t("bs.zones.uploadHint")}</p>
            {results && (
              <ul class="bs-results" data-testid="upload-results">
                {results.map((r) => (
                  <li class={r.ok ? "ok" : "error"}>
                    <b>{r.name}</b>: {r.ok ? t("bs.zones.saved", { kind: r.detail }) : r.detail}
                  </li>
                ))}
              </ul>
            )}
          </div>
        )}
        {finished && (
          <NewZone
            vertices={finished}
            onDone={async (name) => {
              setFinished(null);
              await reload();
              if (name) setSelected(name);
            }}
          />
        )}
        {sel && !finished && (
          <ZoneEditor
            key={sel.name + sel.updated_at}
            zone={sel}
            write={write}
            onDone={async (name) => {
              await reload();
              setSelected(name);
            }}
          />
        )}
        <div class="row wrap">
          <select aria-label={t("bs.zones.kind")} value={kindFilter} onChange={(e) => setKindFilter(e.currentTarget.value)} data-testid="zones-kind">
            <option value="">{t("bs.zones.allKinds")}</option>
            {[...new Set([...FENCE_KINDS, ...zones.map((z) => z.kind)])].map((k) => (
              <option value={k}>{(FENCE_KINDS as readonly string[]).includes(k) ? t(`bs.kind.${k}` as MsgKey) : k}</option>
            ))}
          </select>
          <input type="search" placeholder={t("bs.zones.search")} value={search} onInput={(e) => setSearch(e.currentTarget.value)} data-testid="zones-search" />
        </div>
        <table class="grid compact" data-testid="zones-table">
          <thead>
            <tr>
              <th>{t("bs.zones.name")}</th>
              <th>{t("bs.zones.kind")}</th>
              <th>{t("bs.zones.updated")}</th>
            </tr>
          </thead>
          <tbody>
            {filtered.slice(0, shown).map((z) => (
              <tr key={z.name} class={`clickable${z.name === selected ? " selected" : ""}`} onClick={() => focus(z)}>
                <td class="clip">{z.name}</td>
                <td>
                  <span class={`swatch fence-${z.kind}`} /> {(FENCE_KINDS as readonly string[]).includes(z.kind) ? t(`bs.kind.${z.kind}` as MsgKey) : z.kind}
                </td>
                <td class="small muted">{fmtTime(z.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {filtered.length > shown && (
          <button class="link" onClick={() => setShown(shown + PAGE)}>
            {t("bs.more", { count: filtered.length - shown })}
          </button>
        )}
      </aside>
    </div>
  );
}

function NewZone({ vertices, onDone }: { vertices: [number, number][]; onDone: (name: string | null) => void }) {
  const [name, setName] = useState("");
  const [kind, setKind] = useState("parking");
  const [error, setError] = useState<string | null>(null);
  const save = async (e: Event) => {
    e.preventDefault();
    const polygon: Polygon = { type: "Polygon", coordinates: [[...vertices, vertices[0]]] };
    try {
      await api(`/api/v1/zones/${encodeURIComponent(name.trim())}`, { method: "PUT", body: { kind, polygon } });
      onDone(name.trim());
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <form class="card stack" onSubmit={save} data-testid="new-zone">
      <h3>{t("bs.zones.newZone", { count: vertices.length })}</h3>
      <label>
        {t("bs.zones.name")}
        <input required value={name} onInput={(e) => setName(e.currentTarget.value)} data-testid="new-zone-name" />
      </label>
      <label>
        {t("bs.zones.kind")}
        <select value={kind} onChange={(e) => setKind(e.currentTarget.value)} data-testid="new-zone-kind">
          {FENCE_KINDS.map((k) => (
            <option value={k}>{t(`bs.kind.${k}`)}</option>
          ))}
        </select>
      </label>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="row">
        <button class="primary" type="submit" data-testid="new-zone-save">
          {t("common.save")}
        </button>
        <button type="button" onClick={() => onDone(null)}>
          {t("common.cancel")}
        </button>
      </div>
    </form>
  );
}

function ZoneEditor({ zone, write, onDone }: { zone: Zone; write: boolean; onDone: (name: string | null) => void }) {
  const [name, setName] = useState(zone.name);
  const [kind, setKind] = useState(zone.kind);
  const [error, setError] = useState<string | null>(null);
  const path = (n: string) => `/api/v1/zones/${encodeURIComponent(n)}`;
  const save = async (e: Event) => {
    e.preventDefault();
    const next = name.trim();
    try {
      await api(path(next), { method: "PUT", body: { kind, polygon: zone.polygon, properties: zone.properties } });
      // A new name is a new zone: the old one goes once the new one is stored.
      if (next !== zone.name) await api(path(zone.name), { method: "DELETE" });
      onDone(next);
    } catch (err) {
      setError(errorText(err));
    }
  };
  const remove = async () => {
    if (!confirm(t("bs.zones.confirmDelete", { name: zone.name }))) return;
    try {
      await api(path(zone.name), { method: "DELETE" });
      onDone(null);
    } catch (err) {
      setError(errorText(err));
    }
  };
  const props = Object.entries(zone.properties ?? {});
  return (
    <form class="card stack" onSubmit={save} data-testid="zone-editor">
      <h3>{zone.name}</h3>
      {write ? (
        <>
          <label>
            {t("bs.zones.name")}
            <input required value={name} onInput={(e) => setName(e.currentTarget.value)} data-testid="zone-name" />
          </label>
          <label>
            {t("bs.zones.kind")}
            <select value={kind} onChange={(e) => setKind(e.currentTarget.value)} data-testid="zone-kind">
              {[...new Set([...FENCE_KINDS, zone.kind])].map((k) => (
                <option value={k}>{(FENCE_KINDS as readonly string[]).includes(k) ? t(`bs.kind.${k}` as MsgKey) : k}</option>
              ))}
            </select>
          </label>
        </>
      ) : (
        <p>{(FENCE_KINDS as readonly string[]).includes(zone.kind) ? t(`bs.kind.${zone.kind}` as MsgKey) : zone.kind}</p>
      )}
      {props.length > 0 && (
        <dl class="facts small">
          {props.map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>{typeof v === "string" ? v : JSON.stringify(v)}</dd>
            </>
          ))}
        </dl>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      {write && (
        <div class="row">
          <button class="primary" type="submit" data-testid="zone-save">
            {t("common.save")}
          </button>
          <button type="button" class="danger" onClick={remove} data-testid="zone-delete">
            {t("bs.zones.delete")}
          </button>
        </div>
      )}
    </form>
  );
}
