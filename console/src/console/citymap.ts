// The operator console's city map, as every map screen opens it: on the deployment's tile
// server when it has one (`[map]`, docs/configuration.md), else on the GeoJSON basemap the bike
// share keeps; with navigation and scale controls; and the tenant's zones.
import type { FeatureCollection } from "geojson";
import type { Map as MlMap } from "maplibre-gl";
import { ApiError } from "../common/api";
import { t } from "../common/i18n";
import type { MapTiles } from "../common/mapkit";
import { api } from "./auth";

/** The demo city's centre (Hangzhou), until the basemap or the zones give the bounds. */
export const CITY_CENTER: [number, number] = [120.155, 30.274];

export interface OpenedCity<Z> {
  kit: typeof import("../common/mapkit");
  map: MlMap;
  /** Null when a tile server draws the city, or when no basemap is stored. */
  basemap: FeatureCollection | null;
  zones: Z[];
}

/**
 * Creates the map in `box` and loads what it shows; resolves once the map's style is loaded.
 * `onMap` gets the map as soon as it exists, so a screen that goes away meanwhile can remove it;
 * `note` hears of a missing basemap.
 */
export async function openCity<Z>(
  box: HTMLElement,
  opts: { onMap?: (map: MlMap) => void; note?: (message: string) => void } = {},
): Promise<OpenedCity<Z>> {
  const [kit, tiles] = await Promise.all([
    import("../common/mapkit"),
    api<MapTiles>("/api/v1/bikeshare/basemap/tiles").catch(() => null),
  ]);
  const style = kit.tileStyle(tiles);
  const map = kit.createMap(box, CITY_CENTER, 12, style, tiles?.attribution);
  (window as unknown as { __wulianMap: unknown }).__wulianMap = map;
  map.addControl(new kit.maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new kit.maplibregl.ScaleControl({}), "bottom-left");
  opts.onMap?.(map);
  const [basemap, zones] = await Promise.all([
    style
      ? null
      : api<FeatureCollection>("/api/v1/bikeshare/basemap").catch((e) => {
          if (e instanceof ApiError && e.status === 404) opts.note?.(t("map.noBasemap"));
          return null;
        }),
    api<Z[]>("/api/v1/zones").catch(() => [] as Z[]),
  ]);
  await kit.whenLoaded(map);
  return { kit, map, basemap, zones };
}
