// A telemetry chart that never loads more points than it has pixels: every window is asked
// with `max_points` = the plot's width, so the server picks the bucket (hourly averages for
// 30 days, whole seconds when zoomed far in). Dragging across the plot zooms by loading the
// selected window again.
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

export function TelemetryChart({ deviceId, keys }: { deviceId: string; keys: string[] }) {
  const [key, setKey] = useState(keys.includes("battery") ? "battery" : keys[0]);
  const [win, setWin] = useState(() => {
    const to = Date.now();
    return { from: to - 3_600_000, to };
  });
  const [info, setInfo] = useState("");
  const [error, setError] = useState<string | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // The window the plot shows; the x scale's range function reads it.
  const shown = useRef(win);

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
        </span>
      </div>
      <div ref={box} class="plot" data-testid="chart" />
      {error && <p class="error">{error}</p>}
      <p class="muted small">{t("device.zoomHint")}</p>
    </div>
  );
}
