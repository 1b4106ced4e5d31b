export interface FareLine {
  kind: string;
  description: string;
  amount: number;
}
export interface Fare {
  currency: string;
  lines: FareLine[];
  total: number;
}
export interface Trip {
  id: string;
  bike: string;
  state: "requested" | "unlocking" | "riding" | "ending" | "settled" | "failed";
  requested_at: number;
  unlocked_at: number | null;
  locked_at: number | null;
  settled_at: number | null;
  end_zone: string | null;
  out_of_fence: boolean;
  grace_until: number | null;
  distance_m: number | null;
  duration_ms: number | null;
  fare: Fare | null;
  total: number | null;
  failure: string | null;
}
export interface Placement {
  parkable: boolean;
  no_parking: boolean;
  in_service_area: boolean;
  parking_zone: string | null;
  nearest_parking: { zone: string; distance_m: number } | null;
}
export interface TripView {
  trip: Trip;
  fare_so_far?: Fare;
  parking?: Placement | null;
}
export const LIVE_STATES = ["requested", "unlocking", "riding", "ending"];
