// The fleet map's data off the page's thread. The page hands over the raw bytes of
// `GET /api/v1/bikeshare/fleet` (transferred, not copied); this worker parses them, keeps the
// bikes in compact arrays, writes the GeoJSON the map clusters into a Blob, and answers with the
// Blob's URL, which MapLibre's own worker fetches and parses. So 100,000 bikes (25 MB of JSON)
// never become objects on the page's thread: its frames stay free for drawing, and its heap
// holds no garbage for a collector to pause a pan on.

export type FleetRequest =
  | { kind: "fleet"; bytes: ArrayBuffer; hidden: string[] }
  | { kind: "hide"; hidden: string[] };

export type FleetAnswer =
  | { kind: "data"; url: string; total: number; shown: number }
  | { kind: "error"; message: string };

interface Bike {
  id: string;
  lat: number | null;
  lon: number | null;
  status: string;
  battery: number | null;
  parking_zone: string | null;
}

let ids: string[] = [];
let lon = new Float64Array(0);
let lat = new Float64Array(0);
let status: string[] = [];
let battery: (number | null)[] = [];
let zone: (string | null)[] = [];

function keep(bikes: Bike[]): void {
  const placed = bikes.filter((b) => b.lat != null && b.lon != null);
  ids = placed.map((b) => b.id);
  lon = Float64Array.from(placed, (b) => b.lon as number);
  lat = Float64Array.from(placed, (b) => b.lat as number);
  status = placed.map((b) => b.status);
  battery = placed.map((b) => b.battery);
  zone = placed.map((b) => b.parking_zone);
}

/** The GeoJSON text of the bikes whose status is not hidden, and how many they are. */
function geojson(hidden: Set<string>): { text: string[]; shown: number } {
  const parts: string[] = ['{"type":"FeatureCollection","features":['];
  let shown = 0;
  for (let i = 0; i < ids.length; i++) {
    if (hidden.has(status[i])) continue;
    const props = JSON.stringify({ id: ids[i], status: status[i], battery: battery[i], zone: zone[i] });
    parts.push(
      `${shown ? "," : ""}{"type":"Feature","geometry":{"type":"Point","coordinates":[${lon[i]},${lat[i]}]},"properties":${props}}`,
    );
    shown++;
  }
  parts.push("]}");
  return { text: parts, shown };
}

function answer(hidden: string[]): FleetAnswer {
  const { text, shown } = geojson(new Set(hidden));
  const url = URL.createObjectURL(new Blob(text, { type: "application/geo+json" }));
  return { kind: "data", url, total: ids.length, shown };
}

self.onmessage = (e: MessageEvent<FleetRequest>) => {
  const m = e.data;
  let reply: FleetAnswer;
  try {
    if (m.kind === "fleet") {
      const body = JSON.parse(new TextDecoder().decode(m.bytes)) as { bikes?: Bike[] };
      if (!Array.isArray(body.bikes)) throw new Error("the fleet answer has no `bikes` list");
      keep(body.bikes);
    }
    reply = answer(m.hidden);
  } catch (err) {
    reply = { kind: "error", message: String(err) };
  }
  (self as unknown as Worker).postMessage(reply);
};
