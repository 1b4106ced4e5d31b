//! The city's open data built from the running system: GBFS 3.0 (public) and MDS 2.0 (for the
//! regulator). The builders are in [`crate::gbfs`] and [`crate::mds`]; this module fills their
//! inputs from the fleet, the fences, the plans, the trips and the vehicle event log.
//!
//! Location data is minimised before it leaves: bikes on a trip are never in GBFS, GBFS ids
//! rotate after every trip, and MDS positions are rounded to 4 decimals (about 11 m).

use std::sync::Arc;

use serde_json::Value;
use wulian_common::time::now_ms;

use crate::error::{Error, Result};
use crate::fleet::Status;
use crate::gbfs::{
    self, FeedContext, FeedName, StationCounts, VehicleIdKey, VehicleTypeCount, VehicleView,
    ZoneView,
};
use crate::mds::{
    self, Location, MdsContext, MdsEvent, MdsTelemetry, MdsTrip, MdsVehicle, MdsVehicleStatus, Page,
};
use crate::service::{BikeShare, TenantState};
use crate::{pricing, system, trips, vehicle_events};

/// The one vehicle type of a pedal-bike system.
pub const VEHICLE_TYPE: &str = "bike";

/// `vehicle_status` is rebuilt in the background when older than the feed's ttl, and at least
/// this long after the last build (a ttl of 0 still does not rebuild more than once a second).
const MIN_REBUILD_MS: i64 = 1_000;

/// A built `vehicle_status` document, plain and gzip-compressed.
pub struct CachedFeed {
    pub built_at: i64,
    pub json: Vec<u8>,
    pub gzip: Vec<u8>,
}

fn gbfs_error(e: gbfs::GbfsError) -> Error {
    Error::Internal(format!("GBFS feed: {e}"))
}

pub(crate) fn mds_error(e: mds::MdsError) -> Error {
    // MDS answers a malformed query (bad hour, reversed or too old a window) with 400.
    Error::Rule {
        status: 400,
        code: "invalid_query",
        message: e.to_string(),
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl BikeShare {
    fn feed_context(&self, tenant: &str, t: &TenantState, base_url: &str, now: i64) -> FeedContext {
        FeedContext {
            system_id: format!("wulian_{tenant}"),
            languages: vec![t.settings.language.clone()],
            base_url: base_url.to_string(),
            ttl_s: t.settings.gbfs_ttl_s,
            now_ms: now,
        }
    }

    fn zone_views(t: &TenantState) -> Vec<ZoneView> {
        t.fences
            .fences()
            .iter()
            .map(|f| ZoneView {
                zone_id: f.name.clone(),
                name: f.name.clone(),
                kind: f.kind,
                geometry: crate::ops::polygon_geojson(&f.polygon),
                properties: f.properties.clone(),
            })
            .collect()
    }

    /// One GBFS feed of a tenant as JSON bytes. `base_url` is where the feeds are served
    /// (`http://host/gbfs/v3/{tenant}`).
    pub fn gbfs_feed(&self, tenant: &str, feed: FeedName, base_url: &str) -> Result<Arc<Vec<u8>>> {
        let now = now_ms();
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(|| Error::not_found("system_not_found", "no bike share here"))?;
        let ctx = self.feed_context(tenant, t, base_url, now);
        let types = [VEHICLE_TYPE.to_string()];
        let plan_ids: Vec<&str> = t.plans.iter().map(|p| p.id.as_str()).collect();
        let bytes = match feed {
            FeedName::Gbfs => gbfs::gbfs(&ctx, &FeedName::PUBLISHED).to_json(),
            FeedName::GbfsVersions => gbfs::gbfs_versions(&ctx, &[]).to_json(),
            FeedName::SystemInformation => {
                let mut info =
                    gbfs::SystemInfo::new(&ctx, &t.settings.name, &t.settings.feed_contact_email);
                info.operator = Some(ctx.localized(&t.settings.operator));
                info.timezone = t.settings.timezone.clone();
                gbfs::system_information(&ctx, &info)
                    .map_err(gbfs_error)?
                    .to_json()
            }
            FeedName::VehicleTypes => {
                let default_plan = t.settings.default_plan.as_str();
                let bike = gbfs::VehicleTypeInfo::bicycle(
                    VEHICLE_TYPE,
                    "Bicycle",
                    default_plan,
                    &plan_ids,
                );
                gbfs::vehicle_types(&ctx, &[bike])
                    .map_err(gbfs_error)?
                    .to_json()
            }
            FeedName::GeofencingZones => gbfs::geofencing_zones(&ctx, &Self::zone_views(t), &types)
                .map_err(gbfs_error)?
                .to_json(),
            FeedName::StationInformation => gbfs::station_information(&ctx, &Self::zone_views(t))
                .map_err(gbfs_error)?
                .to_json(),
            FeedName::StationStatus => {
                let zones = Self::zone_views(t);
                let counts = self.station_counts(t, now);
                gbfs::station_status(&ctx, &zones, &counts, &types).to_json()
            }
            FeedName::SystemPricingPlans => {
                let plans: Vec<Value> = t
                    .plans
                    .iter()
                    .map(|p| pricing::to_gbfs(p, &t.settings.language))
                    .collect::<std::result::Result<_, _>>()?;
                gbfs::system_pricing_plans(&ctx, &plans)
                    .map_err(gbfs_error)?
                    .to_json()
            }
            FeedName::VehicleStatus => {
                return Err(Error::Internal(
                    "vehicle_status is served from its cache (vehicle_status_feed)".into(),
                ));
            }
        };
        bytes
            .map(Arc::new)
            .map_err(|e| Error::Internal(format!("GBFS serialisation: {e}")))
    }

    fn station_counts(&self, t: &TenantState, now: i64) -> Vec<StationCounts> {
        let mut counts: std::collections::HashMap<&str, (u32, u32)> =
            std::collections::HashMap::new();
        for b in t.bikes.values() {
            let Some((lat, lon)) = b.snapshot.position() else {
                continue;
            };
            let Some(zone) = t.fences.locate(lat, lon).parking else {
                continue;
            };
            let entry = counts.entry(zone).or_default();
            match t.status(b, now) {
                Status::Available => entry.0 += 1,
                Status::OnTrip | Status::Unknown => {}
                _ => entry.1 += 1,
            }
        }
        counts
            .into_iter()
            .map(|(zone, (available, disabled))| StationCounts {
                zone_id: zone.to_string(),
                available: vec![VehicleTypeCount {
                    vehicle_type_id: VEHICLE_TYPE.to_string(),
                    count: available,
                }],
                disabled,
            })
            .collect()
    }

    /// `vehicle_status.json` from its cache: a city polls it constantly and it covers the whole
    /// fleet, so it is built in the background every ttl ([`BikeShare::refresh_feeds`]) and
    /// served as built; only the very first request of a tenant builds it.
    pub async fn vehicle_status_feed(self: &Arc<Self>, tenant: &str) -> Result<Arc<CachedFeed>> {
        if !self.is_enabled(tenant) {
            return Err(Error::not_found("system_not_found", "no bike share here"));
        }
        if let Some(feed) = self.feed_cache.lock().get(tenant) {
            return Ok(Arc::clone(feed));
        }
        self.rebuild_vehicle_status(tenant).await
    }

    /// Rebuilds the `vehicle_status` documents older than their ttl. Called every second.
    pub async fn refresh_feeds(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<String> = {
            let cache = self.feed_cache.lock();
            let tenants = self.tenants.read();
            tenants
                .iter()
                .filter(|(tenant, t)| {
                    cache.get(*tenant).is_some_and(|f| {
                        let ttl_ms = i64::from(t.settings.gbfs_ttl_s) * 1000;
                        now - f.built_at >= ttl_ms.max(MIN_REBUILD_MS)
                    })
                })
                .map(|(tenant, _)| tenant.clone())
                .collect()
        };
        for tenant in due {
            if let Err(error) = self.rebuild_vehicle_status(&tenant).await {
                tracing::warn!(tenant, %error, "Rebuilding GBFS vehicle_status failed.");
            }
        }
    }

    async fn rebuild_vehicle_status(self: &Arc<Self>, tenant: &str) -> Result<Arc<CachedFeed>> {
        let service = Arc::clone(self);
        let t = tenant.to_string();
        let feed = tokio::task::spawn_blocking(move || service.build_vehicle_status(&t))
            .await
            .map_err(|e| Error::Internal(format!("GBFS build task: {e}")))??;
        let feed = Arc::new(feed);
        self.feed_cache
            .lock()
            .insert(tenant.to_string(), Arc::clone(&feed));
        Ok(feed)
    }

    fn build_vehicle_status(&self, tenant: &str) -> Result<CachedFeed> {
        let now = now_ms();
        let key = VehicleIdKey::new(&self.public_id_secret);
        // Only a copy of the fleet under its read lock (which the ingest path's updates wait
        // for); statuses, fence lookups and serialisation after it.
        let (ctx, fences, settings, bikes) = {
            let tenants = self.tenants.read();
            let t = tenants
                .get(tenant)
                .ok_or_else(|| Error::not_found("system_not_found", "no bike share here"))?;
            // vehicle_status links to no other feed: no base URL needed.
            let ctx = self.feed_context(tenant, t, "", now);
            let bikes: Vec<(String, crate::service::Bike)> = t
                .bikes
                .iter()
                .map(|(id, b)| (id.clone(), b.clone()))
                .collect();
            (ctx, Arc::clone(&t.fences), t.settings.clone(), bikes)
        };
        let plan = Some(settings.default_plan.clone());
        let mut views = Vec::with_capacity(bikes.len());
        for (id, b) in bikes {
            let status = crate::service::bike_status(&fences, &settings, &b, now);
            let Some((lat, lon)) = b.snapshot.position() else {
                continue;
            };
            if status == Status::Unknown {
                continue;
            }
            views.push(VehicleView {
                bike_id: id,
                lat,
                lon,
                is_reserved: false,
                is_disabled: !matches!(
                    status,
                    Status::Available | Status::OutOfFence | Status::OnTrip
                ),
                on_trip: status == Status::OnTrip,
                battery_pct: None,
                vehicle_type_id: VEHICLE_TYPE.to_string(),
                pricing_plan_id: plan.clone(),
                station_id: fences.locate(lat, lon).parking.map(str::to_string),
                last_reported_ms: b.snapshot.reported_at.unwrap_or(now),
                trips_completed: b.trips_completed,
            });
        }
        let json = gbfs::vehicle_status(&ctx, &key, &views)
            .to_json()
            .map_err(|e| Error::Internal(format!("GBFS serialisation: {e}")))?;
        let gzip = gzip(&json)?;
        Ok(CachedFeed {
            built_at: now,
            json,
            gzip,
        })
    }

    // ---- MDS -------------------------------------------------------------------------------

    pub async fn mds_context(&self, tenant: &str, base_url: &str) -> Result<MdsContext> {
        let settings = self.settings(tenant)?;
        let name = format!("mds_namespace:{tenant}");
        let secret = self.db.run(move |c| system::secret(c, &name)).await?;
        let mut namespace = [0u8; 16];
        namespace.copy_from_slice(&secret[..16]);
        Ok(MdsContext {
            provider_id: mds::uuid_v5_like(&namespace, "provider"),
            data_provider_id: None,
            namespace,
            base_url: base_url.to_string(),
            now_ms: now_ms(),
            ttl_ms: (settings.gbfs_ttl_s.max(1) * 1000).min(mds::MAX_TTL_MS),
        })
    }

    pub fn mds_vehicles(&self, tenant: &str) -> Result<Vec<MdsVehicle>> {
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let mut ids: Vec<&String> = t.bikes.keys().collect();
        ids.sort();
        Ok(ids.into_iter().map(|id| MdsVehicle::bicycle(id)).collect())
    }

    /// Each bike's latest event (from the log, or its current state when it has none yet)
    /// and latest report.
    pub async fn mds_vehicle_status(&self, tenant: &str) -> Result<Vec<MdsVehicleStatus>> {
        let t = tenant.to_string();
        let latest = self
            .db
            .run(move |c| vehicle_events::latest_per_bike(c, &t))
            .await?;
        let by_bike: std::collections::HashMap<String, vehicle_events::VehicleEvent> =
            latest.into_iter().map(|e| (e.bike.clone(), e)).collect();
        let now = now_ms();
        let tenants = self.tenants.read();
        let t = tenants
            .get(tenant)
            .ok_or_else(crate::service::not_enabled)?;
        let mut ids: Vec<&String> = t.bikes.keys().collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let b = &t.bikes[id];
            let Some((lat, lon)) = b.snapshot.position() else {
                continue;
            };
            let location = Location::new(round4(lat), round4(lon));
            let battery = b.snapshot.battery.map(|v| v.clamp(0.0, 100.0) as u8);
            let reported = b.snapshot.reported_at.unwrap_or(now);
            let trip_ids: Vec<String> = b.trip.iter().map(|(id, _)| id.clone()).collect();
            let last_event = match by_bike.get(id) {
                Some(e) => mds_event(e, location),
                None => {
                    // No logged change yet: the bike entered service in its current state.
                    let state = mds::VehicleState::parse(t.status(b, now).mds_state())
                        .unwrap_or(mds::VehicleState::NonContactable);
                    let event = if state == mds::VehicleState::Available {
                        mds::EventType::ProviderDropOff
                    } else {
                        mds::EventType::Unspecified
                    };
                    MdsEvent {
                        bike_id: id.clone(),
                        timestamp_ms: reported,
                        vehicle_state: state,
                        event_types: vec![event],
                        location,
                        battery_pct: battery,
                        trip_ids: trip_ids.clone(),
                        publication_time_ms: None,
                        associated_ticket: None,
                    }
                }
            };
            out.push(MdsVehicleStatus {
                last_event,
                last_telemetry: MdsTelemetry {
                    bike_id: id.clone(),
                    timestamp_ms: reported,
                    location,
                    battery_pct: battery,
                    trip_ids,
                    tipped_over: None,
                },
            });
        }
        Ok(out)
    }

    /// Trips that ended in `[from, to)`.
    pub async fn mds_trips(&self, tenant: &str, from: i64, to: i64) -> Result<Vec<MdsTrip>> {
        let t = tenant.to_string();
        let list = self
            .db
            .run(move |c| Ok(trips::settled_between(c, &t, from, to)?))
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|trip| {
                let start = trip
                    .start
                    .or_else(|| trip.start_cell.as_deref().and_then(cell_point))?;
                let end = trip
                    .end
                    .or_else(|| trip.end_cell.as_deref().and_then(cell_point))?;
                let standard =
                    trip.fare
                        .as_ref()
                        .and_then(|f| f["lines"].as_array())
                        .map(|lines| {
                            lines
                                .iter()
                                .filter_map(|l| l["amount"].as_i64())
                                .filter(|a| *a > 0)
                                .sum::<i64>()
                        });
                Some(MdsTrip {
                    trip_id: trip.id.clone(),
                    bike_id: trip.bike.clone(),
                    trip_type: None,
                    start_ms: trip.unlocked_at.unwrap_or(trip.requested_at),
                    end_ms: trip.locked_at.or(trip.settled_at)?,
                    start: Location::new(round4(start[0]), round4(start[1])),
                    end: Location::new(round4(end[0]), round4(end[1])),
                    distance_m: trip.distance_m.unwrap_or(0.0).max(0.0) as u32,
                    publication_time_ms: trip.settled_at,
                    accessibility_attributes: Vec::new(),
                    parking_category: None,
                    parking_verification_url: None,
                    standard_cost: standard.map(|s| s.max(0) as u64),
                    actual_cost: trip.total.map(|s| s.max(0) as u64),
                    currency: Some(crate::ledger::CURRENCY.to_string()),
                })
            })
            .collect())
    }

    pub async fn mds_events(&self, tenant: &str, from: i64, to: i64) -> Result<Vec<MdsEvent>> {
        let t = tenant.to_string();
        let list = self
            .db
            .run(move |c| vehicle_events::between(c, &t, from, to, 100_000))
            .await?;
        Ok(list
            .iter()
            .map(|e| {
                let location =
                    Location::new(round4(e.lat.unwrap_or(0.0)), round4(e.lon.unwrap_or(0.0)));
                mds_event(e, location)
            })
            .collect())
    }

    /// The bikes' reports in `[from, to)` from the telemetry store, with the trip each belongs
    /// to. At most `limit` points in all.
    pub async fn mds_telemetry(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<MdsTelemetry>> {
        let bikes: Vec<String> = {
            let tenants = self.tenants.read();
            let t = tenants
                .get(tenant)
                .ok_or_else(crate::service::not_enabled)?;
            let mut ids: Vec<String> = t.bikes.keys().cloned().collect();
            ids.sort();
            ids
        };
        let tn = tenant.to_string();
        let trips_in_window = self
            .db
            .run(move |c| {
                Ok(trips::list(
                    c,
                    &tn,
                    &trips::TripQuery {
                        from: Some(from - 86_400_000),
                        to: Some(to),
                        limit: Some(1000),
                        ..Default::default()
                    },
                )?)
            })
            .await?;
        let tsdb = self.platform.tsdb.clone();
        let tenant = tenant.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for bike in bikes {
                for (la, lo, ts) in
                    crate::fleet::stored_positions(&tsdb, &tenant, &bike, from, to, limit)
                {
                    let trip_ids = trips_in_window
                        .iter()
                        .filter(|t| {
                            t.bike == bike
                                && t.unlocked_at.is_some_and(|u| u <= ts)
                                && t.locked_at.is_none_or(|l| ts <= l)
                        })
                        .map(|t| t.id.clone())
                        .collect();
                    out.push(MdsTelemetry {
                        bike_id: bike.clone(),
                        timestamp_ms: ts,
                        location: Location::new(round4(la), round4(lo)),
                        battery_pct: None,
                        trip_ids,
                        tipped_over: None,
                    });
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }
}

fn cell_point(cell: &str) -> Option<[f64; 2]> {
    crate::cells::cell_center(cell)
        .ok()
        .map(|(lat, lon)| [lat, lon])
}

fn mds_event(e: &vehicle_events::VehicleEvent, location: Location) -> MdsEvent {
    MdsEvent {
        bike_id: e.bike.clone(),
        timestamp_ms: e.at,
        vehicle_state: mds::VehicleState::parse(&e.state)
            .unwrap_or(mds::VehicleState::NonContactable),
        event_types: {
            let types: Vec<mds::EventType> = e
                .event_types
                .iter()
                .filter_map(|t| mds::EventType::parse(t))
                .collect();
            if types.is_empty() {
                vec![mds::EventType::Unspecified]
            } else {
                types
            }
        },
        location,
        battery_pct: e.battery.map(|b| b.clamp(0, 100) as u8),
        trip_ids: e.trip.iter().cloned().collect(),
        publication_time_ms: None,
        associated_ticket: None,
    }
}

/// MDS pages, re-exported for the API.
pub fn page(number: Option<u32>, size: Option<u32>) -> Page {
    Page::new(number, size)
}

/// Fast gzip: the feed is rebuilt often and mostly read over networks where bytes count more
/// than the last percent of compression.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 6),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|e| Error::Internal(format!("gzip: {e}")))
}
