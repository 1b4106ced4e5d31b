import { useEffect, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { fmtMoney, fmtTime, t, type MsgKey } from "../common/i18n";
import { Link } from "../common/router";
import { riderApi } from "./auth";
import { Receipt, RidePage } from "./ride";
import { LIVE_STATES, type Trip, type TripView } from "./types";

export function Trips() {
  const [trips, setTrips] = useState<Trip[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    riderApi<{ trips: Trip[] }>("/api/v1/rider/trips")
      .then((r) => setTrips(r.trips))
      .catch((e) => setError(errorText(e)));
  }, []);
  if (error) return <p class="error pad">{error}</p>;
  if (!trips) return <p class="muted pad">{t("common.loading")}</p>;
  if (trips.length === 0) return <p class="muted pad">{t("rider.noTrips")}</p>;
  return (
    <ul class="list pad" data-testid="trips">
      {trips.map((tr) => (
        <li>
          <Link href={LIVE_STATES.includes(tr.state) ? `/rider/ride/${tr.id}` : `/rider/trips/${tr.id}`}>
            <span>
              {fmtTime(tr.requested_at)} · {tr.bike}
            </span>
            <span class="muted">{t(`rider.state.${tr.state}` as MsgKey)}</span>
            <span class="num">{tr.total != null ? fmtMoney(tr.total) : ""}</span>
          </Link>
        </li>
      ))}
    </ul>
  );
}

export function TripPage({ id }: { id: string }) {
  const [view, setView] = useState<TripView | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    riderApi<TripView>(`/api/v1/rider/trips/${encodeURIComponent(id)}`)
      .then(setView)
      .catch((e) => setError(errorText(e)));
  }, [id]);
  if (error) return <p class="error pad">{error}</p>;
  if (!view) return <p class="muted pad">{t("common.loading")}</p>;
  return view.trip.state === "settled" ? <Receipt trip={view.trip} /> : <RidePage id={id} />;
}
