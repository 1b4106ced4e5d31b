// Nearby bikes and parking zones on the map; unlock by code or QR.
import type { FeatureCollection } from "geojson";
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, newIdempotencyKey, qs } from "../common/api";
import { t } from "../common/i18n";
import { navigate } from "../common/router";
import { riderApi } from "./auth";
import { Scanner, scanSupported } from "./scanner";
import { LIVE_STATES, type Trip } from "./types";

interface NearBike {
  id: string;
  lat: number;
  lon: number;
  battery: number | null;
  distance_m: number;
}

const DEFAULT_CENTER: [number, number] = [120.155, 30.274]; // lon, lat of the demo city
const RADIUS_M = 1000;

export function Home() {
  const box = useRef<HTMLDivElement>(null);
  const mapRef = useRef<import("maplibre-gl").Map | null>(null);
  const [bikes, setBikes] = useState<NearBike[] | null>(null);
  const [code, setCode] = useState(() => new URLSearchParams(location.search).get("bike") ?? "");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [scanning, setScanning] = useState(false);

  // A live trip (after a reload, or from another tab) goes straight to the ride screen.
  useEffect(() => {
    riderApi<{ trips: Trip[] }>("/api/v1/rider/trips")
      .then((r) => {
        const live = r.trips.find((tr) => LIVE_STATES.includes(tr.state));
        if (live) navigate(`/rider/ride/${live.id}`, true);
      })
      .catch(() => undefined);
  }, []);

  useEffect(() => {
    let disposed = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    (async () => {
      const [kit, tiles] = await Promise.all([
        import("../common/mapkit"),
        riderApi<import("../common/mapkit").MapTiles>("/api/v1/rider/basemap/tiles").catch(() => null),
      ]);
      if (disposed || !box.current) return;
      // A deployment's tile server replaces the GeoJSON basemap (docs/configuration.md, [map]).
      const style = kit.tileStyle(tiles);
      const map = kit.createMap(box.current, DEFAULT_CENTER, 14.5, style, tiles?.attribution);
      mapRef.current = map;
      (window as unknown as { __wulianMap: unknown }).__wulianMap = map;
      const geolocate = new kit.maplibregl.GeolocateControl({ trackUserLocation: false });
      map.addControl(geolocate, "top-right");
      const [basemap, zones] = await Promise.all([
        style ? null : riderApi<FeatureCollection>("/api/v1/rider/basemap").catch(() => null),
        riderApi<FeatureCollection>("/api/v1/rider/zones").catch(() => null),
      ]);
      await kit.whenLoaded(map);
      if (disposed) return;
      if (basemap) kit.addBasemap(map, basemap);
      if (zones) kit.addFences(map, zones);
      map.addSource("near", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
      map.addLayer({
        id: "near-bikes",
        type: "circle",
        source: "near",
        paint: {
          "circle-color": kit.STATUS_COLORS.available,
          "circle-radius": ["interpolate", ["linear"], ["zoom"], 13, 4, 18, 10],
          "circle-stroke-color": "#fff",
          "circle-stroke-width": 2,
        },
      });
      map.on("click", "near-bikes", (e) => {
        const id = e.features?.[0]?.properties?.id;
        if (typeof id === "string") setCode(id);
      });

      const load = async () => {
        const c = map.getCenter();
        try {
          const r = await riderApi<{ bikes: NearBike[] }>(
            `/api/v1/rider/bikes/nearby${qs({ lat: c.lat.toFixed(6), lon: c.lng.toFixed(6), radius_m: RADIUS_M, limit: 100 })}`,
          );
          if (disposed) return;
          setBikes(r.bikes);
          (map.getSource("near") as import("maplibre-gl").GeoJSONSource).setData({
            type: "FeatureCollection",
            features: r.bikes.map((b) => ({
              type: "Feature",
              geometry: { type: "Point", coordinates: [b.lon, b.lat] },
              properties: { id: b.id, battery: b.battery },
            })),
          });
        } catch (e) {
          setError(errorText(e));
        }
      };
      // Centre on the rider when the browser may tell where they are.
      if ("geolocation" in navigator) {
        navigator.geolocation.getCurrentPosition(
          (p) => {
            map.jumpTo({ center: [p.coords.longitude, p.coords.latitude] });
            load();
          },
          () => undefined,
          { timeout: 5000, maximumAge: 60_000 },
        );
      }
      map.on("moveend", load);
      await load();
      timer = setInterval(load, 15_000);
    })().catch((e) => setError(errorText(e)));
    return () => {
      disposed = true;
      clearInterval(timer);
      mapRef.current?.remove();
      mapRef.current = null;
    };
  }, []);

  const unlock = async (e?: Event) => {
    e?.preventDefault();
    const bike = code.trim();
    if (!bike) return;
    setBusy(true);
    setError(null);
    try {
      // One key per attempt: a retried request (flaky network) returns the same trip.
      const r = await riderApi<{ trip: Trip }>("/api/v1/rider/trips", {
        method: "POST",
        body: { bike },
        headers: { "Idempotency-Key": newIdempotencyKey() },
      });
      if (r.trip.state === "failed") {
        setError(t("rider.unlockFailed", { detail: r.trip.failure ?? "?" }));
      } else navigate(`/rider/ride/${r.trip.id}`);
    } catch (err) {
      setError(t("rider.unlockFailed", { detail: errorText(err) }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="rider-home">
      <div ref={box} class="map rider-map" data-testid="rider-map" />
      <form class="sheet" onSubmit={unlock}>
        <p class="muted small" data-testid="nearby-count">
          {bikes ? t("rider.nearby", { count: bikes.length }) : t("rider.locating")}
        </p>
        <div class="row">
          <input
            aria-label={t("rider.code")}
            data-testid="bike-code"
            placeholder={t("rider.codePlaceholder")}
            value={code}
            onInput={(e) => setCode(e.currentTarget.value)}
            autocapitalize="off"
            autocomplete="off"
          />
          <button type="button" onClick={() => (scanSupported() ? setScanning(true) : setError(t("rider.scanUnavailable")))}>
            {t("rider.scan")}
          </button>
        </div>
        <button class="primary big" type="submit" disabled={busy || !code.trim()} data-testid="unlock">
          {busy ? t("rider.unlocking") : t("rider.unlock")}
        </button>
        {error && <p class="error" role="alert">{error}</p>}
      </form>
      {scanning && (
        <Scanner
          onCode={(c) => {
            setScanning(false);
            setCode(c);
          }}
          onClose={() => setScanning(false)}
        />
      )}
    </div>
  );
}
