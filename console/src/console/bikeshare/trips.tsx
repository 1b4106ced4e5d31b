// Trips: a list filtered by state, time, bike and rider, paged by request time; one trip with
// its route on the map, its fare, ledger postings and state history.
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, qs } from "../../common/api";
import { fmtDuration, fmtMoney, fmtTime, t, type MsgKey } from "../../common/i18n";
import { Link, navigate } from "../../common/router";
import { api } from "../auth";
import {
  BS,
  TRIP_STATES,
  boundsOf,
  fmtMeters,
  fromLocalInput,
  isRegulator,
  lines,
  openCityMap,
  points,
  toLocalInput,
  type CityMap,
  type StatementLine,
  type Trip,
} from "./common";

const PAGE = 50;

export function TripList() {
  const params = new URLSearchParams(location.search);
  const [state, setState] = useState(params.get("state") ?? "");
  const [bike, setBike] = useState(params.get("bike") ?? "");
  const [rider, setRider] = useState(params.get("rider") ?? "");
  const [from, setFrom] = useState(toLocalInput(params.get("from") ? Number(params.get("from")) : null));
  const [to, setTo] = useState(toLocalInput(params.get("to") ? Number(params.get("to")) : null));
  const [filter, setFilter] = useState({ state, bike, rider, from, to });
  // befores[i] opens page i: trips requested before `to`, less those already shown on the page
  // before (trips requested in the same millisecond as its last one, which `to` must include).
  const [befores, setBefores] = useState<({ to: number; seen: string[] } | undefined)[]>([undefined]);
  const [trips, setTrips] = useState<Trip[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const h = setTimeout(() => {
      setFilter({ state, bike: bike.trim(), rider: rider.trim(), from, to });
      setBefores([undefined]);
    }, 250);
    return () => clearTimeout(h);
  }, [state, bike, rider, from, to]);

  useEffect(() => {
    const ctl = new AbortController();
    const before = befores[befores.length - 1];
    const fromMs = fromLocalInput(filter.from);
    const toMs = fromLocalInput(filter.to);
    const upper = before !== undefined && toMs !== undefined ? Math.min(before.to, toMs) : (before?.to ?? toMs);
    const seen = new Set(before?.seen ?? []);
    history.replaceState(
      null,
      "",
      location.pathname + qs({ state: filter.state, bike: filter.bike, rider: filter.rider, from: fromMs, to: toMs }),
    );
    api<{ trips: Trip[] }>(
      `/api/v1/bikeshare/trips${qs({ state: filter.state, bike: filter.bike, rider: filter.rider, from: fromMs, to: upper, limit: PAGE + seen.size })}`,
      { signal: ctl.signal },
    )
      .then((r) => {
        setTrips(r.trips.filter((x) => !seen.has(x.id)).slice(0, PAGE));
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [filter, befores]);

  const lastAt = trips && trips.length === PAGE ? trips[trips.length - 1].requested_at : undefined;
  const older =
    lastAt === undefined ? undefined : { to: lastAt + 1, seen: trips!.filter((x) => x.requested_at === lastAt).map((x) => x.id) };

  return (
    <section>
      <div class="toolbar">
        <h1>{t("bs.trips.title")}</h1>
        <select aria-label={t("bs.trips.state")} value={state} onChange={(e) => setState(e.currentTarget.value)} data-testid="trips-state">
          <option value="">{t("bs.trips.allStates")}</option>
          {TRIP_STATES.map((s) => (
            <option value={s}>{t(`bs.tripState.${s}`)}</option>
          ))}
        </select>
        <label class="inline">
          {t("bs.trips.from")}
          <input type="datetime-local" value={from} onInput={(e) => setFrom(e.currentTarget.value)} data-testid="trips-from" />
        </label>
        <label class="inline">
          {t("bs.trips.to")}
          <input type="datetime-local" value={to} onInput={(e) => setTo(e.currentTarget.value)} data-testid="trips-to" />
        </label>
        <input type="search" placeholder={t("bs.trips.bike")} value={bike} onInput={(e) => setBike(e.currentTarget.value)} data-testid="trips-bike" />
        <input type="search" placeholder={t("bs.trips.rider")} value={rider} onInput={(e) => setRider(e.currentTarget.value)} data-testid="trips-rider" />
      </div>
      {error && <p class="error" role="alert">{t("common.error", { detail: error })}</p>}
      <TripTable trips={trips} />
      <div class="pager">
        <button disabled={befores.length <= 1} onClick={() => setBefores(befores.slice(0, -1))}>
          {t("bs.newer")}
        </button>
        <span>{t("devices.page", { page: befores.length })}</span>
        <button disabled={!older} onClick={() => older && setBefores([...befores, older])}>
          {t("bs.older")}
        </button>
      </div>
    </section>
  );
}

export function TripTable({ trips, hideRider }: { trips: Trip[] | null; hideRider?: boolean }) {
  return (
    <table class="grid" data-testid="trips-table">
      <thead>
        <tr>
          <th>{t("bs.trips.requested")}</th>
          <th>{t("bs.trips.state")}</th>
          <th>{t("bs.trips.bike")}</th>
          {!hideRider && <th>{t("bs.trips.rider")}</th>}
          <th class="num">{t("bs.trips.duration")}</th>
          <th class="num">{t("bs.trips.distance")}</th>
          <th class="num">{t("bs.trips.fare")}</th>
        </tr>
      </thead>
      <tbody>
        {trips?.map((tr) => (
          <tr key={tr.id} class="clickable" data-trip={tr.id} onClick={() => navigate(`${BS}trips/${encodeURIComponent(tr.id)}`)}>
            <td>
              <Link href={`${BS}trips/${encodeURIComponent(tr.id)}`}>{fmtTime(tr.requested_at)}</Link>
            </td>
            <td>
              <span class={`badge trip-${tr.state}`}>{t(`bs.tripState.${tr.state}` as MsgKey)}</span>
              {tr.out_of_fence && <span class="chip">{t("bs.trips.outOfFence")}</span>}
            </td>
            <td>{tr.bike}</td>
            {!hideRider && <td class="mono small">{tr.rider}</td>}
            <td class="num">{tr.duration_ms != null ? fmtDuration(tr.duration_ms) : "—"}</td>
            <td class="num">{fmtMeters(tr.distance_m)}</td>
            <td class="num">{tr.total != null ? fmtMoney(tr.total) : "—"}</td>
          </tr>
        ))}
        {trips && trips.length === 0 && (
          <tr>
            <td colSpan={7} class="muted">
              {t("bs.trips.empty")}
            </td>
          </tr>
        )}
      </tbody>
    </table>
  );
}

interface TripDetail {
  trip: Trip;
  history: { at: number; state: string; detail: string | null }[];
}

export function TripPage({ id }: { id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const cm = useRef<CityMap | null>(null);
  const [detail, setDetail] = useState<TripDetail | null>(null);
  const [postings, setPostings] = useState<StatementLine[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api<TripDetail>(`/api/v1/bikeshare/trips/${encodeURIComponent(id)}`)
      .then(async (d) => {
        setDetail(d);
        // The ledger lines that name this trip (charges and refunds); the city sees none.
        if (!isRegulator()) {
          const r = await api<{ statement: StatementLine[] }>(`/api/v1/bikeshare/riders/${encodeURIComponent(d.trip.rider)}`);
          setPostings(r.statement.filter((l) => l.reference === d.trip.id));
        }
      })
      .catch((e) => setError(errorText(e)));
  }, [id]);

  useEffect(() => {
    if (!detail) return;
    let disposed = false;
    (async () => {
      if (!box.current) return;
      const c = await openCityMap(box.current);
      if (disposed) return c.map.remove();
      cm.current = c;
      const { map } = c;
      const tr = detail.trip;
      const route: [number, number][] = (tr.route ?? []).map((p) => [p[1], p[0]]);
      // Without a stored route (no consent, or reduced after the retention period), the start
      // and end positions are all there is.
      const ends: [number, number][] = [];
      if (tr.start) ends.push([tr.start[1], tr.start[0]]);
      if (tr.end) ends.push([tr.end[1], tr.end[0]]);
      const path = route.length >= 2 ? route : ends;
      map.addSource("route", { type: "geojson", data: lines(path.length >= 2 ? [{ coords: path, props: {} }] : []) });
      map.addLayer({
        id: "route-line",
        type: "line",
        source: "route",
        layout: { "line-cap": "round", "line-join": "round" },
        paint: {
          "line-color": "#7c3aed",
          "line-width": 4,
          ...(route.length >= 2 ? {} : { "line-dasharray": ["literal", [1, 2]] }),
        },
      });
      const marks = [];
      if (tr.start) marks.push({ lon: tr.start[1], lat: tr.start[0], props: { end: "start" } });
      if (tr.end) marks.push({ lon: tr.end[1], lat: tr.end[0], props: { end: "end" } });
      map.addSource("ends", { type: "geojson", data: points(marks) });
      map.addLayer({
        id: "route-ends",
        type: "circle",
        source: "ends",
        paint: {
          "circle-radius": 8,
          "circle-color": ["match", ["get", "end"], "start", "#16a34a", "#dc2626"],
          "circle-stroke-color": "#fff",
          "circle-stroke-width": 2,
        },
      });
      const b = boundsOf([...path, ...ends]);
      if (b) map.fitBounds(b, { padding: 60, maxZoom: 17, animate: false });
      box.current.setAttribute("data-route-points", String(route.length));
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      cm.current?.map.remove();
      cm.current = null;
    };
  }, [detail]);

  if (error) return <p class="error" role="alert">{t("common.error", { detail: error })}</p>;
  if (!detail) return <p class="muted">{t("common.loading")}</p>;
  const tr = detail.trip;
  return (
    <section>
      <div class="toolbar">
        <Link href={`${BS}trips`}>← {t("bs.trips.title")}</Link>
        <h1 data-testid="trip-title">{t("bs.trips.trip", { id: tr.id })}</h1>
        <span class={`badge trip-${tr.state}`} data-testid="trip-state">
          {t(`bs.tripState.${tr.state}` as MsgKey)}
        </span>
      </div>
      <div class="cards">
        <div class="card bs-mapcard">
          <div ref={box} class="map" data-testid="trip-map" />
        </div>
        <div class="card">
          <dl class="facts" data-testid="trip-facts">
            <dt>{t("bs.trips.bike")}</dt>
            <dd>
              <Link href={`/console/devices/${encodeURIComponent(tr.bike)}`}>{tr.bike}</Link>
            </dd>
            <dt>{t("bs.trips.rider")}</dt>
            <dd>{isRegulator() ? <span class="mono">{tr.rider}</span> : <Link href={`${BS}riders/${encodeURIComponent(tr.rider)}`}>{tr.rider}</Link>}</dd>
            <dt>{t("bs.trips.requested")}</dt>
            <dd>{fmtTime(tr.requested_at)}</dd>
            <dt>{t("bs.trips.unlocked")}</dt>
            <dd>{fmtTime(tr.unlocked_at)}</dd>
            <dt>{t("bs.trips.locked")}</dt>
            <dd>{fmtTime(tr.locked_at)}</dd>
            <dt>{t("bs.trips.duration")}</dt>
            <dd data-testid="trip-duration">{tr.duration_ms != null ? fmtDuration(tr.duration_ms) : "—"}</dd>
            <dt>{t("bs.trips.distance")}</dt>
            <dd data-testid="trip-distance">{fmtMeters(tr.distance_m)}</dd>
            <dt>{t("bs.trips.endZone")}</dt>
            <dd>{tr.end_zone ?? (tr.out_of_fence ? t("bs.trips.outOfFence") : "—")}</dd>
            <dt>{t("bs.trips.route")}</dt>
            <dd>
              {tr.route && tr.route.length > 0
                ? t("bs.trips.routePoints", { count: tr.route.length })
                : tr.route_reduced
                  ? t("bs.trips.routeReduced")
                  : t("bs.trips.noRoute")}
            </dd>
            {tr.failure && (
              <>
                <dt>{t("bs.trips.failure")}</dt>
                <dd class="error">{tr.failure}</dd>
              </>
            )}
          </dl>
          <h3>{t("bs.trips.fare")}</h3>
          {tr.fare ? (
            <table class="grid compact" data-testid="trip-fare">
              <tbody>
                {tr.fare.lines.map((l) => (
                  <tr>
                    <td title={l.description}>{t(`bs.fareLine.${l.kind}` as MsgKey) ?? l.kind}</td>
                    <td class="num">{fmtMoney(l.amount, tr.fare!.currency)}</td>
                  </tr>
                ))}
                <tr>
                  <th>{t("bs.trips.total")}</th>
                  <th class="num">{fmtMoney(tr.fare.total, tr.fare.currency)}</th>
                </tr>
              </tbody>
            </table>
          ) : (
            <p class="muted">{t("bs.trips.noFare")}</p>
          )}
        </div>
      </div>
      <div class="cards">
        {postings && (
          <div class="card">
            <h2>{t("bs.trips.postings")}</h2>
            <Statement lines={postings} testid="trip-postings" />
          </div>
        )}
        <div class="card">
          <h2>{t("bs.trips.history")}</h2>
          <ol class="bs-history" data-testid="trip-history">
            {detail.history.map((h) => (
              <li>
                <span class="muted small">{fmtTime(h.at)}</span> <b>{t(`bs.tripState.${h.state}` as MsgKey) ?? h.state}</b>
                {h.detail && <span class="muted"> · {h.detail}</span>}
              </li>
            ))}
          </ol>
        </div>
      </div>
    </section>
  );
}

export function Statement({ lines, testid }: { lines: StatementLine[]; testid?: string }) {
  return (
    <table class="grid compact" data-testid={testid}>
      <thead>
        <tr>
          <th>{t("bs.ledger.time")}</th>
          <th>{t("bs.ledger.kind")}</th>
          <th>{t("bs.ledger.memo")}</th>
          <th class="num">{t("bs.ledger.amount")}</th>
          <th class="num">{t("bs.ledger.balance")}</th>
        </tr>
      </thead>
      <tbody>
        {lines.map((l) => (
          <tr key={l.journal_id}>
            <td class="small">{fmtTime(l.created_at)}</td>
            <td>{t(`bs.journal.${l.kind}` as MsgKey) ?? l.kind}</td>
            <td class="small">{l.memo}</td>
            <td class={`num ${l.amount < 0 ? "error" : "ok"}`}>{fmtMoney(l.amount)}</td>
            <td class="num">{fmtMoney(l.balance_after)}</td>
          </tr>
        ))}
        {lines.length === 0 && (
          <tr>
            <td colSpan={5} class="muted">
              {t("bs.ledger.empty")}
            </td>
          </tr>
        )}
      </tbody>
    </table>
  );
}
