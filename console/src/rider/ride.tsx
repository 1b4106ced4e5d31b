// The ride: time and fare so far, where to park; the receipt once the lock ends the trip.
import { useEffect, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { fmtDuration, fmtMoney, fmtTime, t, type MsgKey } from "../common/i18n";
import { navigate } from "../common/router";
import { riderApi } from "./auth";
import type { Trip, TripView } from "./types";

const POLL_MS = 2000;

export function RidePage({ id }: { id: string }) {
  const [view, setView] = useState<TripView | null>(null);
  const [now, setNow] = useState(Date.now());
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const v = await riderApi<TripView>(`/api/v1/rider/trips/${encodeURIComponent(id)}`);
        if (!live) return;
        setView(v);
        setError(null);
        if (v.trip.state === "settled" || v.trip.state === "failed") return;
      } catch (e) {
        if (live) setError(errorText(e));
      }
      timer = setTimeout(poll, POLL_MS);
    };
    poll();
    const tick = setInterval(() => setNow(Date.now()), 1000);
    return () => {
      live = false;
      clearTimeout(timer);
      clearInterval(tick);
    };
  }, [id]);

  if (!view) return <p class="muted pad">{error ?? t("common.loading")}</p>;
  const trip = view.trip;
  if (trip.state === "settled") return <Receipt trip={trip} />;
  if (trip.state === "failed")
    return (
      <div class="pad">
        <p class="error">{t("rider.unlockFailed", { detail: trip.failure ?? "?" })}</p>
        <button onClick={() => navigate("/rider/")}>{t("common.back")}</button>
      </div>
    );

  const started = trip.unlocked_at ?? trip.requested_at;
  const parking = view.parking;
  let guidance = t("rider.parkInZone");
  let guidanceClass = "guide";
  if (parking?.parkable) {
    guidance = t("rider.inZone");
    guidanceClass = "guide ok";
  } else if (parking?.no_parking) {
    guidance = `${t("rider.noParkingHere")} ${t("rider.parkInZone")}`;
    guidanceClass = "guide warn";
  }
  const resume = async () => {
    try {
      await riderApi(`/api/v1/rider/trips/${encodeURIComponent(id)}/resume`, { method: "POST" });
    } catch (e) {
      setError(errorText(e));
    }
  };

  return (
    <div class="ride pad" data-testid="ride">
      <h1>{t("rider.riding", { bike: trip.bike })}</h1>
      <p class="state">{t(`rider.state.${trip.state}` as MsgKey)}</p>
      <div class="ride-stats">
        <div>
          <span class="label">{t("rider.elapsed")}</span>
          <span class="value" data-testid="ride-time">
            {fmtDuration(now - started)}
          </span>
        </div>
        <div>
          <span class="label">{t("rider.fareSoFar")}</span>
          <span class="value" data-testid="ride-fare">
            {view.fare_so_far ? fmtMoney(view.fare_so_far.total, view.fare_so_far.currency) : "—"}
          </span>
        </div>
      </div>
      <p class={guidanceClass} data-testid="ride-guidance">
        <span class="swatch fence-parking" /> {guidance}
        {parking && !parking.parkable && parking.nearest_parking && (
          <> {t("rider.nearestZone", { distance: Math.round(parking.nearest_parking.distance_m) })}</>
        )}
      </p>
      {trip.state === "ending" && trip.grace_until && (
        <div class="guide warn">
          <p>{t("rider.grace", { time: fmtTime(trip.grace_until) })}</p>
          <button class="primary" onClick={resume}>
            {t("rider.resume")}
          </button>
        </div>
      )}
      {trip.state === "ending" && !trip.grace_until && <p class="muted">{t("rider.ending")}</p>}
      {error && <p class="error">{error}</p>}
    </div>
  );
}

export function Receipt({ trip }: { trip: Trip }) {
  const currency = trip.fare?.currency ?? "CNY";
  return (
    <div class="receipt pad" data-testid="receipt">
      <h1>{t("rider.receipt")}</h1>
      <p class="muted">
        {trip.bike} · {fmtTime(trip.settled_at ?? trip.locked_at)}
      </p>
      <table class="grid compact">
        <tbody>
          {trip.fare?.lines.map((l) => (
            <tr>
              <td>{l.description}</td>
              <td class="num">{fmtMoney(l.amount, currency)}</td>
            </tr>
          ))}
          <tr class="total">
            <td>{t("rider.total")}</td>
            <td class="num" data-testid="receipt-total">
              {fmtMoney(trip.total ?? trip.fare?.total ?? 0, currency)}
            </td>
          </tr>
        </tbody>
      </table>
      <dl class="facts">
        <dt>{t("rider.duration")}</dt>
        <dd>{trip.duration_ms != null ? fmtDuration(trip.duration_ms) : "—"}</dd>
        <dt>{t("rider.distance")}</dt>
        <dd>{trip.distance_m != null ? `${Math.round(trip.distance_m)} m` : "—"}</dd>
        <dt>{t("map.zone")}</dt>
        <dd>{trip.end_zone ?? "—"}</dd>
      </dl>
      <button class="primary big" onClick={() => navigate("/rider/")}>
        {t("rider.done")}
      </button>
    </div>
  );
}
