//! Operations views: the fleet by status, bikes near a rider, supply and demand per H3 cell
//! and hour, and rebalancing suggestions.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wulian_common::time::now_ms;

use crate::cells::{self, DEFAULT_RESOLUTION, HOUR_MS, Move, SupplyDemand, SupplyDemandRow};
use crate::error::{Error, Result};
use crate::fleet::{BikeSnapshot, Status};
use crate::service::BikeShare;
use crate::trips;

/// A bike in the fleet view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetBike {
    pub id: String,
    pub status: Status,
    #[serde(flatten)]
    pub snapshot: BikeSnapshot,
    pub trip: Option<String>,
    pub parking_zone: Option<String>,
    pub flagged: Option<String>,
    pub trips_completed: u64,
    /// Parked since (end of its last trip), when known.
    pub idle_since: Option<i64>,
    /// Parked longer than the system's `idle_hours`.
    pub idle: bool,
}

#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// Only bikes of this status: `available`, `on_trip`, `low_battery`, `faulty`,
    /// `out_of_fence` or `unknown`.
    pub status: Option<String>,
    /// Only bikes idle longer than the system's `idle_hours`.
    #[serde(default)]
    pub idle: Option<bool>,
    /// At most this many, 1 to 100,000 (default 1,000).
    pub limit: Option<usize>,
    /// Bike id to start after (paging, ids ascending).
    pub after: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetSummary {
    pub bikes: usize,
    pub by_status: HashMap<&'static str, usize>,
    pub idle: usize,
    pub at: i64,
}

/// A bike a rider can take, nearest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NearbyBike {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub battery: Option<f64>,
    pub distance_m: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DemandReport {
    pub resolution: u8,
    pub days: u32,
    pub rows: Vec<SupplyDemandRow>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rebalancing {
    /// The local hour of day the suggestion is for (the coming hour).
    pub hour_of_day: u8,
    pub moves: Vec<Move>,
    /// Available bikes per cell now.
    pub supply: HashMap<String, u32>,
    /// Expected trip starts per cell in that hour (mean of the past days).
    pub expected_demand: HashMap<String, f64>,
}

impl BikeShare {
    pub fn fleet(&self, tenant: &str, q: &FleetQuery) -> Result<Vec<FleetBike>> {
        let wanted = match q.status.as_deref() {
            None => None,
            Some(s) => Some(parse_status(s)?),
        };
        let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
        let now = now_ms();
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let idle_ms = i64::from(t.settings.idle_hours) * HOUR_MS;
        let mut ids: Vec<&String> = t
            .bikes
            .keys()
            .filter(|id| q.after.as_ref().is_none_or(|a| *id > a))
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let b = &t.bikes[id];
            let status = t.status(b, now);
            if wanted.is_some_and(|w| w != status) {
                continue;
            }
            let idle_since = b.last_trip_end;
            let idle = status != Status::OnTrip && idle_since.is_some_and(|s| now - s > idle_ms);
            if q.idle.is_some_and(|want| want != idle) {
                continue;
            }
            let parking_zone = b
                .snapshot
                .position()
                .and_then(|(lat, lon)| t.fences.locate(lat, lon).parking.map(str::to_string));
            out.push(FleetBike {
                id: id.clone(),
                status,
                snapshot: b.snapshot.clone(),
                trip: b.trip.as_ref().map(|(id, _)| id.clone()),
                parking_zone,
                flagged: b.flagged.clone(),
                trips_completed: b.trips_completed,
                idle_since,
                idle,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn fleet_summary(&self, tenant: &str) -> Result<FleetSummary> {
        let now = now_ms();
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let idle_ms = i64::from(t.settings.idle_hours) * HOUR_MS;
        let statuses: Vec<Status> = t.bikes.values().map(|b| t.status(b, now)).collect();
        let idle = t
            .bikes
            .values()
            .filter(|b| b.trip.is_none() && b.last_trip_end.is_some_and(|s| now - s > idle_ms))
            .count();
        Ok(FleetSummary {
            bikes: t.bikes.len(),
            by_status: crate::fleet::summary(statuses.into_iter()),
            idle,
            at: now,
        })
    }

    /// Available bikes within `radius_m` of a point, nearest first.
    pub fn nearby(
        &self,
        tenant: &str,
        lat: f64,
        lon: f64,
        radius_m: f64,
        limit: usize,
    ) -> Result<Vec<NearbyBike>> {
        if !crate::lock::valid_position(lat, lon) {
            return Err(Error::invalid(
                "invalid_position",
                "lat must be -90..90 and lon -180..180",
            ));
        }
        let radius_m = radius_m.clamp(10.0, 5_000.0);
        let now = now_ms();
        // A bounding box first: cheap rejection before the great-circle distance.
        let dlat = radius_m / 111_320.0;
        let dlon = radius_m / (111_320.0 * lat.to_radians().cos().max(0.01));
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let mut out: Vec<NearbyBike> = t
            .bikes
            .iter()
            .filter_map(|(id, b)| {
                let (blat, blon) = b.snapshot.position()?;
                if (blat - lat).abs() > dlat || (blon - lon).abs() > dlon {
                    return None;
                }
                if !matches!(t.status(b, now), Status::Available | Status::OutOfFence) {
                    return None;
                }
                let d = wulian_rules::geo::distance_m(lat, lon, blat, blon);
                (d <= radius_m).then(|| NearbyBike {
                    id: id.clone(),
                    lat: blat,
                    lon: blon,
                    battery: b.snapshot.battery,
                    distance_m: d.round(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then_with(|| a.id.cmp(&b.id))
        });
        out.truncate(limit.clamp(1, 500));
        Ok(out)
    }

    /// Available bikes per H3 cell right now.
    pub fn supply_now(&self, tenant: &str) -> Result<HashMap<String, u32>> {
        let now = now_ms();
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let mut supply: HashMap<String, u32> = HashMap::new();
        for b in t.bikes.values() {
            if t.status(b, now) != Status::Available {
                continue;
            }
            if let Some((lat, lon)) = b.snapshot.position()
                && let Ok(c) = cells::cell(lat, lon, DEFAULT_RESOLUTION)
            {
                *supply.entry(c).or_default() += 1;
            }
        }
        Ok(supply)
    }

    /// Trip starts per cell and hour over the past `days`, with the current supply in the
    /// current hour.
    pub async fn demand(&self, tenant: &str, days: u32) -> Result<(SupplyDemand, DemandReport)> {
        let days = days.clamp(1, 90);
        let now = now_ms();
        let from = now - i64::from(days) * 86_400_000;
        let t = tenant.to_string();
        let starts = self
            .db
            .run(move |c| Ok(trips::starts_between(c, &t, from, now)?))
            .await?;
        let mut sd = SupplyDemand::new();
        let mut per: HashMap<(String, i64), u32> = HashMap::new();
        for (lat, lon, at) in starts {
            if let Ok(c) = cells::cell(lat, lon, DEFAULT_RESOLUTION) {
                *per.entry((c, cells::hour_start(at))).or_default() += 1;
            }
        }
        for ((c, hour), n) in per {
            sd.add_demand(&c, hour, n);
        }
        for (c, n) in self.supply_now(tenant)? {
            sd.add_supply(&c, cells::hour_start(now), n);
        }
        let report = DemandReport {
            resolution: DEFAULT_RESOLUTION,
            days,
            rows: sd.rows(),
        };
        Ok((sd, report))
    }

    /// Moves from surplus to deficit cells for the coming hour.
    pub async fn rebalancing(&self, tenant: &str, max_moves: usize) -> Result<Rebalancing> {
        let offset = crate::wallet::utc_offset_minutes(&self.settings(tenant)?.timezone);
        let (sd, _) = self.demand(tenant, 7).await?;
        let next_hour = now_ms() + HOUR_MS + i64::from(offset) * 60_000;
        let hour_of_day = (next_hour.div_euclid(HOUR_MS).rem_euclid(24)) as u8;
        let expected = sd.expected_demand(hour_of_day, offset);
        let supply = self.supply_now(tenant)?;
        let moves = cells::suggest_rebalancing(&supply, &expected, max_moves.clamp(1, 1000));
        Ok(Rebalancing {
            hour_of_day,
            moves,
            supply,
            expected_demand: expected,
        })
    }
}

fn parse_status(s: &str) -> Result<Status> {
    Ok(match s {
        "available" => Status::Available,
        "on_trip" => Status::OnTrip,
        "low_battery" => Status::LowBattery,
        "faulty" => Status::Faulty,
        "out_of_fence" => Status::OutOfFence,
        "unknown" => Status::Unknown,
        other => {
            return Err(Error::invalid(
                "invalid_status",
                format!(
                    "unknown status {other:?}; one of available, on_trip, low_battery, faulty, out_of_fence, unknown"
                ),
            ));
        }
    })
}

impl BikeShare {
    /// Where a point stands with respect to the fences, and the nearest parking zone: what the
    /// rider app shows when a ride ends ("park inside a blue zone: the nearest is 120 m").
    pub fn placement(&self, tenant: &str, lat: f64, lon: f64) -> Result<serde_json::Value> {
        if !crate::lock::valid_position(lat, lon) {
            return Err(Error::invalid(
                "invalid_position",
                "lat must be -90..90 and lon -180..180",
            ));
        }
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let p = t.fences.locate(lat, lon);
        let nearest = t.fences.nearest_parking(lat, lon, 2_000.0);
        Ok(serde_json::json!({
            "in_service_area": p.in_service_area,
            "parking_zone": p.parking,
            "no_parking": p.no_parking,
            "no_riding": p.no_riding,
            "parkable": p.parkable(),
            "nearest_parking": nearest.map(|(name, d)| serde_json::json!({"zone": name, "distance_m": d.round()})),
        }))
    }

    /// The tenant's fences as a GeoJSON FeatureCollection (for maps).
    pub fn fences_geojson(&self, tenant: &str) -> Result<serde_json::Value> {
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        Ok(serde_json::json!({
            "type": "FeatureCollection",
            "features": t.fences.fences().iter().map(|f| serde_json::json!({
                "type": "Feature",
                "properties": {"name": f.name, "kind": f.kind.as_str(), "properties": f.properties},
                "geometry": polygon_geojson(&f.polygon),
            })).collect::<Vec<_>>(),
        }))
    }
}

/// A polygon back as GeoJSON (rings closed, as RFC 7946 wants).
pub fn polygon_geojson(p: &wulian_rules::geo::Polygon) -> serde_json::Value {
    let rings: Vec<Vec<[f64; 2]>> = p
        .rings()
        .iter()
        .map(|ring| {
            let mut r: Vec<[f64; 2]> = ring.iter().map(|&(lon, lat)| [lon, lat]).collect();
            if let (Some(first), Some(last)) = (r.first().copied(), r.last().copied())
                && first != last
            {
                r.push(first);
            }
            r
        })
        .collect();
    serde_json::json!({"type": "Polygon", "coordinates": rings})
}
