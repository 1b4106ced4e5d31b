// Rebalancing: the API's moves from surplus to deficit cells for the coming hour, as a list and
// as arrows on the map; a move becomes rebalance work orders for bikes in its donor cell.
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, qs } from "../../common/api";
import { fmtNumber, t } from "../../common/i18n";
import { Link } from "../../common/router";
import { api } from "../auth";
import { BS, EMPTY, boundsOf, canWrite, fmtMeters, lines, openCityMap, points, setData, type CityMap } from "./common";
import { createOrder } from "./workorders";

interface Move {
  from_cell: string;
  to_cell: string;
  bikes: number;
  distance_m: number;
}
interface Rebalancing {
  hour_of_day: number;
  moves: Move[];
  cell_centers: Record<string, [number, number]>;
  candidates: Record<string, string[]>;
}

export function RebalancingPage() {
  const box = useRef<HTMLDivElement>(null);
  const cm = useRef<CityMap | null>(null);
  const [data, setData_] = useState<Rebalancing | null>(null);
  const [selected, setSelected] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [made, setMade] = useState<Record<number, string>>({});
  const [reload, setReload] = useState(0);
  // "" plans for the coming hour (the API's default); else a local hour of day, 0 to 23.
  const [hour, setHour] = useState("");
  const write = canWrite();

  useEffect(() => {
    let disposed = false;
    (async () => {
      if (!box.current) return;
      const c = await openCityMap(box.current);
      if (disposed) return c.map.remove();
      cm.current = c;
      const { map } = c;
      map.addSource("moves", { type: "geojson", data: EMPTY });
      map.addSource("move-ends", { type: "geojson", data: EMPTY });
      map.addLayer({
        id: "moves-line",
        type: "line",
        source: "moves",
        layout: { "line-cap": "round" },
        paint: {
          "line-color": ["case", ["get", "selected"], "#f59e0b", "#7c3aed"],
          "line-width": ["interpolate", ["linear"], ["get", "bikes"], 1, 2, 10, 7],
          "line-opacity": 0.85,
        },
      });
      map.addLayer({
        id: "moves-from",
        type: "circle",
        source: "move-ends",
        filter: ["==", ["get", "end"], "from"],
        paint: { "circle-radius": 5, "circle-color": "#16a34a", "circle-stroke-color": "#fff", "circle-stroke-width": 1.5 },
      });
      map.on("click", "moves-line", (e) => {
        const f = e.features?.[0];
        if (f) setSelected(Number(f.properties.index));
      });
      setReload((n) => n + 1);
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      cm.current?.map.remove();
      cm.current = null;
    };
  }, []);

  useEffect(() => {
    if (reload === 0) return;
    // A slower answer for the hour chosen before must not overwrite this one.
    const ctl = new AbortController();
    api<Rebalancing>(`/api/v1/bikeshare/rebalancing${qs({ max_moves: 100, hour })}`, { signal: ctl.signal })
      .then((r) => {
        setData_(r);
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [reload, hour]);
  // Another hour is another list: what was dispatched from the last one no longer lines up.
  useEffect(() => {
    setMade({});
    setSelected(null);
  }, [hour]);

  useEffect(() => {
    const map = cm.current?.map;
    if (!map || !data) return;
    const segs: { coords: [number, number][]; props: Record<string, unknown> }[] = [];
    const ends: { lon: number; lat: number; props: Record<string, unknown> }[] = [];
    data.moves.forEach((m, i) => {
      const a = data.cell_centers[m.from_cell];
      const b = data.cell_centers[m.to_cell];
      if (!a || !b) return;
      segs.push({ coords: [[a[1], a[0]], [b[1], b[0]]], props: { index: i, bikes: m.bikes, selected: i === selected } });
      ends.push({ lon: a[1], lat: a[0], props: { end: "from" } });
      ends.push({ lon: b[1], lat: b[0], props: { end: "to" } });
      segs.push({ coords: arrowHead(a, b), props: { index: i, bikes: 1, selected: i === selected } });
    });
    setData(map, "moves", lines(segs));
    setData(map, "move-ends", points(ends));
    box.current?.setAttribute("data-moves", String(segs.length));
    if (selected == null) {
      const bb = boundsOf(segs.flatMap((s) => s.coords));
      if (bb) map.fitBounds(bb, { padding: 60, maxZoom: 16, animate: false });
    }
  }, [data, selected, cm.current]);

  const dispatch = async (i: number) => {
    if (!data) return;
    const m = data.moves[i];
    const bikes = (data.candidates[m.from_cell] ?? []).slice(0, m.bikes);
    if (bikes.length === 0) {
      setMade({ ...made, [i]: t("bs.rebal.noBikes") });
      return;
    }
    const reason = t("bs.rebal.reason", { from: m.from_cell, to: m.to_cell });
    try {
      const orders = [];
      for (const b of bikes) orders.push(await createOrder(b, "rebalance", reason));
      setMade({ ...made, [i]: t("bs.rebal.created", { count: orders.length, bikes: orders.map((o) => o.bike).join(", ") }) });
      // The next suggestion no longer offers bikes that are on their way.
      setReload(reload + 1);
    } catch (e) {
      setMade({ ...made, [i]: errorText(e) });
    }
  };

  const total = data?.moves.reduce((s, m) => s + m.bikes, 0) ?? 0;
  return (
    <div class="bs-split">
      <div class="bs-mapbox">
        <div ref={box} class="map" data-testid="rebalancing-map" />
      </div>
      <aside class="bs-side">
        <div class="toolbar">
          <h2>{t("bs.rebal.title")}</h2>
          <select aria-label={t("bs.rebal.hour")} value={hour} onChange={(e) => setHour(e.currentTarget.value)} data-testid="rebalancing-hour">
            <option value="">{t("bs.rebal.nextHour")}</option>
            {Array.from({ length: 24 }, (_, h) => (
              <option value={String(h)}>{t("bs.rebal.atHour", { hour: String(h).padStart(2, "0") })}</option>
            ))}
          </select>
          <button onClick={() => setReload(reload + 1)}>{t("bs.refresh")}</button>
        </div>
        {data && (
          <p class="muted" data-testid="rebalancing-summary">
            {t("bs.rebal.summary", { hour: data.hour_of_day, moves: data.moves.length, bikes: fmtNumber(total) })}
          </p>
        )}
        {error && <p class="error" role="alert">{error}</p>}
        <p class="small">
          <Link href={`${BS}work-orders?kind=rebalance`}>{t("bs.rebal.openOrders")}</Link>
        </p>
        <table class="grid compact" data-testid="rebalancing-table">
          <thead>
            <tr>
              <th>{t("bs.rebal.from")}</th>
              <th>{t("bs.rebal.to")}</th>
              <th class="num">{t("bs.rebal.bikes")}</th>
              <th class="num">{t("bs.rebal.distance")}</th>
              {write && <th />}
            </tr>
          </thead>
          <tbody>
            {data?.moves.map((m, i) => (
              <>
                <tr class={`clickable${i === selected ? " selected" : ""}`} onClick={() => setSelected(i)} data-move={i}>
                  <td class="mono small">{m.from_cell}</td>
                  <td class="mono small">{m.to_cell}</td>
                  <td class="num">{m.bikes}</td>
                  <td class="num">{fmtMeters(m.distance_m)}</td>
                  {write && (
                    <td>
                      <button
                        data-testid="move-dispatch"
                        disabled={!!made[i]}
                        onClick={(e) => {
                          e.stopPropagation();
                          dispatch(i);
                        }}
                      >
                        {t("bs.rebal.dispatch")}
                      </button>
                    </td>
                  )}
                </tr>
                {made[i] && (
                  <tr class="detail-row">
                    <td colSpan={5} class="small" data-testid="move-result">
                      {made[i]}
                    </td>
                  </tr>
                )}
              </>
            ))}
            {data && data.moves.length === 0 && (
              <tr>
                <td colSpan={5} class="muted">
                  {t("bs.rebal.empty")}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </aside>
    </div>
  );
}

/** The two barbs of an arrow head at b for a move from a ([lat, lon]), as one line through b:
 * a fifth of the move long (20 to 120 m), 25° off its axis. The city is small enough for a
 * flat projection scaled by cos(lat). */
function arrowHead(a: [number, number], b: [number, number]): [number, number][] {
  const k = Math.cos((b[0] * Math.PI) / 180);
  const dx = (b[1] - a[1]) * k;
  const dy = b[0] - a[0];
  const len = Math.hypot(dx, dy);
  if (len === 0) return [[b[1], b[0]], [b[1], b[0]]];
  const metres = len * 111_320;
  const size = Math.min(120, Math.max(20, metres / 5)) / 111_320;
  const ux = dx / len;
  const uy = dy / len;
  const barb = (angle: number): [number, number] => {
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    // Back along the move, turned by ±angle.
    const x = -(ux * c - uy * s) * size;
    const y = -(ux * s + uy * c) * size;
    return [b[1] + x / k, b[0] + y];
  };
  const r = (25 * Math.PI) / 180;
  return [barb(r), [b[1], b[0]], barb(-r)];
}
