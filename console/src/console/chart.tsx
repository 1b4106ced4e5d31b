// A telemetry chart that never loads more points than it has pixels: every window is asked
// with `max_points` = the plot's width, so the server picks the bucket (hourly averages for
// 30 days, whole seconds when zoomed far in). Dragging across the plot zooms by loading the
// selected window again. Readings that arrive live (a `PointFeed`, fed by the device page's
// WebSocket) are appended to the plot without loading anything; a window that ends at "now"
// slides along with them.
import type uPlot from "uplot";
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, qs } from "../common/api";
import { fmtInterval, fmtNumber, lang, t, type MsgKey } from "../common/i18n";
import { api } from "./auth";

interface Query {
  agg?: string;
  interval?: number;
  series: Record<string, { ts: number; value: number | null }[]>;
}

const RANGES: [MsgKey, number][] = [
  ["device.range1h", 3_600_000],
  ["device.range24h", 86_400_000],
  ["device.range7d", 7 * 86_400_000],
  ["device.range30d", 30 * 86_400_000],
];
const MIN_WINDOW_MS = 10_000;
/** A window that ended this close to now when loaded follows live readings. */
const FOLLOW_MS = 60_000;
/** Live points kept beyond what was loaded, so a page left open stays bounded. */
const MAX_POINTS = 20_000;

export interface LivePoint {
  ts: number;
  values: Record<string, unknown>;
}

/** Live readings of one device, for the chart to append. */
export class PointFeed {
  private listeners = new Set<(p: LivePoint) => void>();
  push(p: LivePoint) {
    this.listeners.forEach((f) => f(p));
  }
  listen(f: (p: LivePoint) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
}

/** Index where `x` goes in the sorted `xs`. */
function insertAt(xs: number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** An axis tick in the current language: the date for wide windows, seconds for narrow ones. */
function fmtTick(ms: number, spanMs: number): string {
  const d = new Date(ms);
  const opts: Intl.DateTimeFormatOptions =
    spanMs > 3 * 86_400_000
      ? { month: "numeric", day: "numeric" }
      : spanMs > 86_400_000
        ? { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" }
        : spanMs > 0 && spanMs < 300_000
          ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
          : spanMs === 0
            ? { year: "numeric", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }
            : { hour: "2-digit", minute: "2-digit" };
  return d.toLocaleString(lang(), { ...opts, hour12: false });
}

export function TelemetryChart({ deviceId, keys, feed }: { deviceId: string; keys: string[]; feed?: PointFeed }) {
  const [key, setKey] = useState(keys.includes("battery") ? "battery" : keys[0]);
  const [win, setWin] = useState(() => {
    const to = Date.now();
    return { from: to - 3_600_000, to };
  });
  const [info, setInfo] = useState("");
  // Live readings appended since the window was loaded.
  const [appended, setAppended] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // The window the plot shows; the x scale's range function reads it.
  const shown = useRef(win);
  // The plotted points (seconds, values), and whether the window follows live readings.
  const data = useRef<[number[], (number | null)[]]>([[], []]);
  const follow = useRef(false);

  // Create the plot once (uPlot loads lazily), resize it with its box.
  useEffect(() => {
    let disposed = false;
    let observer: ResizeObserver | undefined;
    (async () => {
      const { default: UPlot } = await import("uplot");
      await import("uplot/dist/uPlot.min.css");
      if (disposed || !box.current) return;
      const width = box.current.clientWidth;
      const opts: uPlot.Options = {
        width,
        height: 280,
        scales: { x: { time: true, range: () => [shown.current.from / 1000, shown.current.to / 1000] } },
        series: [{ label: t("device.time"), value: (_u, v) => (v == null ? "—" : fmtTick(v * 1000, 0)) }, { label: key, stroke: "#2563eb", width: 1.5, fill: "rgba(37,99,235,0.08)", spanGaps: false }],
        axes: [
          {
            values: (u, splits) => {
              const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
              return splits.map((v) => fmtTick(v * 1000, span * 1000));
            },
          },
          {},
        ],
        cursor: { drag: { x: true, y: false, setScale: false } },
        legend: { show: true },
        hooks: {
          setSelect: [
            (u) => {
              if (u.select.width < 5) return;
              const from = Math.round(u.posToVal(u.select.left, "x") * 1000);
              const to = Math.round(u.posToVal(u.select.left + u.select.width, "x") * 1000);
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              if (to - from >= 1) {
                const mid = (from + to) / 2;
                const half = Math.max(to - from, MIN_WINDOW_MS) / 2;
                setWin({ from: Math.round(mid - half), to: Math.round(mid + half) });
              }
            },
          ],
        },
      };
      plot.current = new UPlot(opts, [[], []], box.current);
      (box.current as HTMLElement & { uplot?: uPlot }).uplot = plot.current;
      observer = new ResizeObserver(() => {
        if (plot.current && box.current) plot.current.setSize({ width: box.current.clientWidth, height: 280 });
      });
      observer.observe(box.current);
      setWin((w) => ({ ...w })); // load now that the plot exists
    })();
    return () => {
      disposed = true;
      observer?.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [deviceId, key]);

  // Load the window whenever it changes.
  useEffect(() => {
    if (!plot.current || !box.current) return;
    const ctl = new AbortController();
    const following = win.to >= Date.now() - FOLLOW_MS;
    const points = Math.max(50, Math.min(2000, Math.round(plot.current.width)));
    const path = `/api/v1/devices/${encodeURIComponent(deviceId)}/telemetry${qs({
      keys: key,
      from: win.from,
      to: win.to,
      max_points: points,
    })}`;
    api<Query>(path, { signal: ctl.signal })
      .then((q) => {
        const rows = q.series[key] ?? [];
        const xs = rows.map((r) => r.ts / 1000);
        const ys = rows.map((r) => (typeof r.value === "number" ? r.value : null));
        shown.current = win;
        data.current = [xs, ys];
        setAppended(0);
        follow.current = following;
        plot.current?.setData([xs, ys]);
        box.current?.setAttribute("data-points", String(rows.length));
        setInfo(
          rows.length === 0
            ? t("device.chartEmpty")
            : q.agg && q.interval
              ? t("device.chartInfo", { agg: q.agg, interval: fmtInterval(q.interval), points: fmtNumber(rows.length) })
              : t("device.chartRaw", { points: fmtNumber(rows.length) }),
        );
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [deviceId, key, win, lang()]);

  // Append live readings of the charted key.
  useEffect(() => {
    if (!feed) return;
    return feed.listen((p) => {
      const v = p.values[key];
      if (typeof v !== "number" || !plot.current || !box.current) return;
      const w = shown.current;
      if (p.ts < w.from || (p.ts > w.to && !follow.current)) return;
      if (p.ts > w.to) {
        const span = w.to - w.from;
        shown.current = { from: p.ts - span, to: p.ts };
      }
      const [xs, ys] = data.current;
      const x = p.ts / 1000;
      const i = insertAt(xs, x);
      if (i > 0 && xs[i - 1] === x) ys[i - 1] = v;
      else {
        xs.splice(i, 0, x);
        ys.splice(i, 0, v);
      }
      // Drop what slid out of the window, and never keep more than MAX_POINTS.
      const from = shown.current.from / 1000;
      let drop = 0;
      while (drop < xs.length && xs[drop] < from) drop++;
      drop = Math.max(drop, xs.length - MAX_POINTS);
      if (drop > 0) {
        xs.splice(0, drop);
        ys.splice(0, drop);
      }
      plot.current.setData([xs, ys]);
      box.current.setAttribute("data-points", String(xs.length));
      box.current.setAttribute("data-live-points", String(Number(box.current.getAttribute("data-live-points") ?? 0) + 1));
      setAppended((n) => n + 1);
    });
  }, [feed, key]);

  const zoomOut = () => {
    const mid = (win.from + win.to) / 2;
    const half = Math.min((win.to - win.from) * 2, 90 * 86_400_000);
    setWin({ from: Math.round(mid - half), to: Math.min(Math.round(mid + half), Date.now()) });
  };

  return (
    <div class="chart">
      <div class="toolbar">
        <label>
          {t("device.chartKey")}{" "}
          <select value={key} data-testid="chart-key" onChange={(e) => setKey(e.currentTarget.value)}>
            {keys.map((k) => (
              <option value={k}>{k}</option>
            ))}
          </select>
        </label>
        <div class="segmented">
          {RANGES.map(([label, span]) => (
            <button
              onClick={() => {
                const to = Date.now();
                setWin({ from: to - span, to });
              }}
            >
              {t(label)}
            </button>
          ))}
          <button onClick={zoomOut}>{t("device.zoomOut")}</button>
        </div>
        <span class="muted" data-testid="chart-info">
          {info}
          {appended > 0 && ` · ${t("live.appended", { points: fmtNumber(appended) })}`}
        </span>
      </div>
      <div ref={box} class="plot" data-testid="chart" />
      {error && <p class="error">{error}</p>}
      <p class="muted small">{t("device.zoomHint")}</p>
    </div>
  );
}
