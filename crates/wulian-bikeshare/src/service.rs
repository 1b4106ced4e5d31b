//! The bike share at run time: which tenants run a system, their fleets in memory, and the
//! trip flow across the platform's services (commands for unlocks, twins for report
//! intervals, stored telemetry for positions and routes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wulian_common::time::now_ms;
use wulian_ingest::{CommandService, DeviceObserver, TwinService};
use wulian_registry::{DeviceQuery, NewDevice, NewProfile, Registry, TwinSection, Zone};
use wulian_tsdb::{Tsdb, WriteEntry};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::fence::{Fence, FenceIndex};
use crate::fleet::{self, BikeSnapshot, Status};
use crate::pricing::{PassProduct, PricingPlan};
use crate::system::{self, Settings};
use crate::trips::{self, TripState};
use crate::{lock, workorders};

/// The platform services the bike share is built on.
#[derive(Clone)]
pub struct Platform {
    pub registry: Arc<Registry>,
    pub tsdb: Tsdb,
    pub commands: Arc<CommandService>,
    pub twins: Arc<TwinService>,
    /// The rule engine's zone cache, whose generation tells when zones changed.
    pub zones: Arc<wulian_ingest::ZoneCache>,
}

/// One bike as the service keeps it in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bike {
    pub snapshot: BikeSnapshot,
    /// The live trip and its state.
    pub trip: Option<(String, TripState)>,
    pub out_of_service: Option<workorders::Kind>,
    /// Why the bike is held back (a lock that failed to open), until an operator clears it.
    pub flagged: Option<String>,
    pub trips_completed: u64,
    pub last_trip_end: Option<i64>,
}

/// A tenant's running system.
pub(crate) struct TenantState {
    pub settings: Settings,
    pub fences: Arc<FenceIndex>,
    /// Zone count and newest change, to reload fences only when zones changed.
    pub fence_stamp: (usize, i64),
    pub bikes: HashMap<String, Bike>,
    pub plans: Vec<PricingPlan>,
    pub passes: Vec<PassProduct>,
}

impl TenantState {
    pub fn status(&self, bike: &Bike, now: i64) -> Status {
        bike_status(&self.fences, &self.settings, bike, now)
    }

    pub fn plan(&self, id: &str) -> Option<&PricingPlan> {
        self.plans.iter().find(|p| p.id == id)
    }
}

/// A bike's status from its state, the fences and the system's thresholds.
pub(crate) fn bike_status(
    fences: &FenceIndex,
    settings: &Settings,
    bike: &Bike,
    now: i64,
) -> Status {
    let placement = bike
        .snapshot
        .position()
        .map(|(lat, lon)| fences.locate(lat, lon));
    fleet::classify(&fleet::Facts {
        snapshot: &bike.snapshot,
        on_trip: bike.trip.is_some(),
        faulty: bike.flagged.is_some() || bike.out_of_service.is_some(),
        parkable: placement.map(|p| p.parkable()),
        in_service_area: placement.map(|p| p.in_service_area),
        now,
        low_battery_pct: settings.low_battery_pct,
        stale_after_ms: i64::from(settings.stale_after_s) * 1000,
    })
}

/// Something a lock did that the trip flow reacts to, handed from the ingest path to the
/// bike share's own task.
#[derive(Debug)]
pub(crate) enum Signal {
    Closed {
        tenant: String,
        bike: String,
        at: i64,
    },
    Event {
        tenant: String,
        bike: String,
        name: String,
        payload: Vec<u8>,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct Metrics {
    pub trips_requested: AtomicU64,
    pub trips_started: AtomicU64,
    pub trips_failed: AtomicU64,
    pub trips_settled: AtomicU64,
    pub signals_dropped: AtomicU64,
}

pub struct BikeShare {
    pub(crate) db: Db,
    pub(crate) platform: Platform,
    pub(crate) tenants: RwLock<HashMap<String, TenantState>>,
    signals: mpsc::Sender<Signal>,
    signal_rx: Mutex<Option<mpsc::Receiver<Signal>>>,
    /// Locks closing are settled a few at a time: a burst of settlements (the heaviest
    /// transactions) would otherwise crowd out the unlock confirmations riders wait for.
    pub(crate) closing: tokio::sync::Semaphore,
    pub(crate) pepper: Vec<u8>,
    pub(crate) public_id_secret: Vec<u8>,
    pub metrics: Metrics,
    /// Serialised GBFS `vehicle_status` per tenant with its build time (see `feeds`).
    pub(crate) feed_cache: FeedCache,
    /// When each tenant's zones were last checked for changes.
    fence_checks: Mutex<HashMap<String, (i64, u64)>>,
    /// Held across a fence reload's read and install, so that a slow reload that started
    /// before a zone changed cannot install its stale index over a newer one.
    fence_reload: tokio::sync::Mutex<()>,
    /// Recent sign-up attempts per (tenant, client address), for the sign-up limit.
    signups: Mutex<HashMap<(String, std::net::IpAddr), std::collections::VecDeque<i64>>>,
}

const SIGNAL_QUEUE: usize = 65_536;
/// Lock closings (trip endings and settlements) handled at once; see `BikeShare::closing`.
const CONCURRENT_CLOSINGS: usize = 4;

/// Per tenant: the latest GBFS `vehicle_status`.
pub(crate) type FeedCache = Mutex<HashMap<String, Arc<crate::feeds::CachedFeed>>>;

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl BikeShare {
    /// Opens the bike share's database under `dir` and loads every enabled tenant.
    pub async fn open(dir: &std::path::Path, platform: Platform) -> Result<Arc<BikeShare>> {
        let db = Db::open(dir)?;
        BikeShare::with_db(db, platform).await
    }

    pub async fn with_db(db: Db, platform: Platform) -> Result<Arc<BikeShare>> {
        let (pepper, public_id_secret) = db.with(|c| {
            Ok((
                system::secret(c, "id_number_pepper")?,
                system::secret(c, "public_vehicle_id")?,
            ))
        })?;
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let service = Arc::new(BikeShare {
            db,
            platform,
            tenants: RwLock::new(HashMap::new()),
            signals: tx,
            signal_rx: Mutex::new(Some(rx)),
            closing: tokio::sync::Semaphore::new(CONCURRENT_CLOSINGS),
            pepper,
            public_id_secret,
            metrics: Metrics::default(),
            feed_cache: Mutex::new(HashMap::new()),
            signups: Mutex::new(HashMap::new()),
            fence_checks: Mutex::new(HashMap::new()),
            fence_reload: tokio::sync::Mutex::new(()),
        });
        let systems = service.db.run(|c| system::all(c)).await?;
        for (tenant, _) in systems {
            service.load_tenant(&tenant).await?;
        }
        Ok(service)
    }

    /// Starts the background work: lock signals, unlock and grace deadlines, route reduction,
    /// fleet and fence refreshes. Returns when `shutdown` is cancelled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let service = Arc::clone(self);
        let rx = service.signal_rx.lock().take();
        tokio::spawn(async move {
            let mut rx = match rx {
                Some(rx) => rx,
                None => return,
            };
            service.recover().await;
            // The periodic work on a task of its own: a sweep over thousands of live trips or
            // a GBFS rebuild takes a while, and lock signals must not wait for it (they did,
            // and trips settled seconds after their locks closed).
            let upkeep = Arc::clone(&service);
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut ticks: u64 = 0;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            ticks += 1;
                            upkeep.sweep(ticks).await;
                            upkeep.refresh_feeds().await;
                        }
                    }
                }
            });
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(signal) = rx.recv() => {
                        let s = Arc::clone(&service);
                        // Each signal on its own task: a slow settlement must not hold up the
                        // next lock's confirmation.
                        tokio::spawn(async move { s.handle(signal).await });
                    }
                }
            }
        })
    }

    pub fn is_enabled(&self, tenant: &str) -> bool {
        self.tenants.read().contains_key(tenant)
    }

    pub fn settings(&self, tenant: &str) -> Result<Settings> {
        self.tenants
            .read()
            .get(tenant)
            .map(|t| t.settings.clone())
            .ok_or_else(not_enabled)
    }

    /// Turns the bike share on for a tenant (or updates its settings): the smart-lock
    /// profile, the default plans when it has none, and the settings.
    pub async fn enable(&self, tenant: &str, settings: Settings) -> Result<Settings> {
        settings.validate()?;
        let profile: NewProfile = serde_json::from_value(lock::profile_json())
            .map_err(|e| Error::Internal(format!("smart-lock profile: {e}")))?;
        let t = tenant.to_string();
        let registry = Arc::clone(&self.platform.registry);
        tokio::task::spawn_blocking(move || -> Result<()> {
            match registry.get_profile(&t, lock::PROFILE_ID) {
                Ok(_) => Ok(()),
                Err(wulian_registry::Error::NotFound { .. }) => registry
                    .create_profile(&t, &profile)
                    .map(|_| ())
                    .map_err(Error::from),
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let (t, s) = (tenant.to_string(), settings.clone());
        self.db
            .tx(move |tx| {
                system::put(tx, &t, &s, now_ms())?;
                if system::plans(tx, &t)?.is_empty() {
                    let (plans, passes) = crate::pricing::default_plans();
                    for p in &plans {
                        system::put_plan(tx, &t, p)?;
                    }
                    for p in &passes {
                        system::put_pass_product(tx, &t, p)?;
                    }
                }
                Ok(())
            })
            .await?;
        self.load_tenant(tenant).await?;
        let bikes = self.bike_list(tenant);
        self.push_intervals(tenant, bikes);
        Ok(settings)
    }

    /// (Re)loads a tenant: settings, plans, bikes (devices of the smart-lock profile) with
    /// their latest values from the telemetry store's cache, counters, work orders, live trips
    /// and fences.
    pub async fn load_tenant(&self, tenant: &str) -> Result<()> {
        let t = tenant.to_string();
        let (settings, plans, passes, counters, out, live) = self
            .db
            .run(move |c| {
                let settings = system::get(c, &t)?.ok_or_else(not_enabled)?;
                Ok((
                    settings,
                    system::plans(c, &t)?,
                    system::pass_products(c, &t)?,
                    system::bike_counters(c, &t)?,
                    workorders::bikes_out_of_service(c, &t)?,
                    trips::all_live(c)?
                        .into_iter()
                        .filter(|tr| tr.tenant == t)
                        .collect::<Vec<_>>(),
                ))
            })
            .await?;
        let ids = self.bike_ids(tenant).await?;
        let mut bikes: HashMap<String, Bike> = HashMap::with_capacity(ids.len());
        for id in ids {
            let snapshot = BikeSnapshot::from_latest(&self.platform.tsdb.latest(tenant, &id));
            bikes.insert(
                id,
                Bike {
                    snapshot,
                    ..Bike::default()
                },
            );
        }
        for (id, c) in counters {
            if let Some(b) = bikes.get_mut(&id) {
                b.trips_completed = c.trips_completed;
                b.last_trip_end = c.last_trip_end;
                b.flagged = c.flagged;
            }
        }
        for (id, kind) in out {
            if let Some(b) = bikes.get_mut(&id) {
                b.out_of_service = Some(kind);
            }
        }
        for trip in live {
            if let Some(b) = bikes.get_mut(&trip.bike) {
                b.trip = Some((trip.id.clone(), trip.state));
            }
        }
        // Under the reload lock, so that a refresh cannot record a check between this read
        // of the zones and the install of what was read.
        let _reloading = self.fence_reload.lock().await;
        let (checked_at, generation) = (now_ms(), self.platform.zones.generation());
        let (fences, stamp) = self.load_fences(tenant).await?;
        let state = TenantState {
            settings,
            fences: Arc::new(fences),
            fence_stamp: stamp,
            bikes,
            plans,
            passes,
        };
        self.tenants.write().insert(tenant.to_string(), state);
        self.fences_checked_now(tenant, checked_at, generation);
        Ok(())
    }

    async fn bike_ids(&self, tenant: &str) -> Result<Vec<String>> {
        let registry = Arc::clone(&self.platform.registry);
        let t = tenant.to_string();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let mut ids = Vec::new();
            let mut q = DeviceQuery {
                limit: 1000,
                profile: Some(lock::PROFILE_ID.to_string()),
                ..DeviceQuery::default()
            };
            loop {
                let page = registry.list_devices(&t, &q)?;
                ids.extend(
                    page.devices
                        .into_iter()
                        .filter(|d| !d.disabled)
                        .map(|d| d.id),
                );
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            Ok(ids)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    async fn load_fences(&self, tenant: &str) -> Result<(FenceIndex, (usize, i64))> {
        let zones = self.zones(tenant).await?;
        let stamp = zone_stamp(&zones);
        let mut fences = Vec::new();
        for z in zones {
            match Fence::from_zone(&z.name, &z.kind, &z.polygon, &z.properties) {
                Ok(Some(f)) => fences.push(f),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(tenant, zone = %z.name, %error, "Zone is not a usable fence; skipped.")
                }
            }
        }
        Ok((FenceIndex::new(fences), stamp))
    }

    async fn zones(&self, tenant: &str) -> Result<Vec<Zone>> {
        let registry = Arc::clone(&self.platform.registry);
        let t = tenant.to_string();
        tokio::task::spawn_blocking(move || registry.list_zones(&t))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::from)
    }

    /// Reloads a tenant's fences if its zones changed (a zone deleted and another added in
    /// the same millisecond would be missed; the next change catches up). Returns once the
    /// fences reflect every zone change made before the call.
    pub async fn refresh_fences(&self, tenant: &str) -> Result<()> {
        // Every lock that closes asks. Zones changed through the API bump the zone cache's
        // generation, which costs nothing to read; the registry itself is asked only when it
        // moved, or every 10 s for changes made around the API.
        let generation = self.platform.zones.generation();
        if self.fences_checked(tenant, generation) {
            return Ok(());
        }
        let _reloading = self.fence_reload.lock().await;
        // A check recorded only once its reload is installed: a caller that finds one here
        // (perhaps after waiting for that reload) sees fences at least that fresh.
        if self.fences_checked(tenant, generation) {
            return Ok(());
        }
        let checked_at = now_ms();
        let registry = Arc::clone(&self.platform.registry);
        let t = tenant.to_string();
        let stamp = tokio::task::spawn_blocking(move || registry.zone_stamp(&t))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let unchanged = self
            .tenants
            .read()
            .get(tenant)
            .is_some_and(|t| t.fence_stamp == stamp);
        if !unchanged {
            let (fences, stamp) = self.load_fences(tenant).await?;
            if let Some(t) = self.tenants.write().get_mut(tenant) {
                t.fences = Arc::new(fences);
                t.fence_stamp = stamp;
            }
        }
        self.fences_checked_now(tenant, checked_at, generation);
        Ok(())
    }

    /// Whether the tenant's fences were checked at zone `generation` within the last 10 s.
    fn fences_checked(&self, tenant: &str, generation: u64) -> bool {
        let now = now_ms();
        self.fence_checks
            .lock()
            .get(tenant)
            .is_some_and(|&(at, seen)| seen == generation && now - at < 10_000)
    }

    /// Records a check that began at `at`, when the zone cache was at `generation` (read
    /// before the registry was, so a change racing the check bumps past it).
    fn fences_checked_now(&self, tenant: &str, at: i64, generation: u64) {
        self.fence_checks
            .lock()
            .insert(tenant.to_string(), (at, generation));
    }

    /// Adds bikes registered since the last look (devices created through the generic API
    /// with the smart-lock profile) and drops deleted or disabled ones.
    pub async fn refresh_bikes(&self, tenant: &str) -> Result<()> {
        let ids = self.bike_ids(tenant).await?;
        let mut added = Vec::new();
        {
            let mut tenants = self.tenants.write();
            let Some(t) = tenants.get_mut(tenant) else {
                return Ok(());
            };
            let keep: std::collections::HashSet<&String> = ids.iter().collect();
            t.bikes
                .retain(|id, b| keep.contains(id) || b.trip.is_some());
            for id in &ids {
                if !t.bikes.contains_key(id) {
                    let snapshot =
                        BikeSnapshot::from_latest(&self.platform.tsdb.latest(tenant, id));
                    t.bikes.insert(
                        id.clone(),
                        Bike {
                            snapshot,
                            ..Bike::default()
                        },
                    );
                    added.push(id.clone());
                }
            }
        }
        self.push_intervals(tenant, added);
        Ok(())
    }

    /// The ids of a tenant's bikes.
    pub(crate) fn bike_list(&self, tenant: &str) -> Vec<String> {
        self.tenants
            .read()
            .get(tenant)
            .map(|t| t.bikes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Counts a sign-up attempt from `address` and refuses it (429 `too_many_signups`) beyond
    /// the system's `signups_per_address_per_hour`.
    pub fn check_signup(&self, tenant: &str, address: Option<std::net::IpAddr>) -> Result<()> {
        let limit = self.settings(tenant)?.signups_per_address_per_hour;
        let Some(address) = address.filter(|_| limit > 0) else {
            return Ok(());
        };
        let now = now_ms();
        const HOUR_MS: i64 = 3_600_000;
        let mut signups = self.signups.lock();
        // Forget addresses whose window has passed, so the map stays small.
        if signups.len() > 10_000 {
            signups.retain(|_, times| times.back().is_some_and(|t| now - t < HOUR_MS));
        }
        let times = signups.entry((tenant.to_string(), address)).or_default();
        while times.front().is_some_and(|t| now - t >= HOUR_MS) {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let retry_s = times
                .front()
                .map_or(60, |t| (HOUR_MS - (now - t)) / 1000 + 1);
            return Err(Error::Rule {
                status: 429,
                code: "too_many_signups",
                message: format!("too many sign-ups from this address; try again in {retry_s} s"),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// After zones were written to the registry directly (not through the API, which does
    /// this itself): reloads the platform's zone cache, so rules and fences see them.
    pub async fn zones_written(&self) -> Result<()> {
        self.platform.zones.reload().await?;
        Ok(())
    }

    /// Stores the tenant's basemap (a GeoJSON FeatureCollection) for the consoles.
    pub async fn set_basemap(&self, tenant: &str, basemap: Value) -> Result<()> {
        let t = tenant.to_string();
        self.db
            .tx(move |tx| system::put_basemap(tx, &t, &basemap, now_ms()))
            .await
    }

    /// Registers a bike: a device of the smart-lock profile. Returns its token (shown once).
    pub async fn register_bike(
        &self,
        tenant: &str,
        id: &str,
        name: Option<String>,
    ) -> Result<(wulian_registry::Device, String)> {
        if !self.is_enabled(tenant) {
            return Err(not_enabled());
        }
        let new = NewDevice {
            id: id.to_string(),
            name,
            profile: Some(lock::PROFILE_ID.to_string()),
            ..NewDevice::default()
        };
        let registry = Arc::clone(&self.platform.registry);
        let t = tenant.to_string();
        let created = tokio::task::spawn_blocking(move || registry.create_device(&t, &new))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(t) = self.tenants.write().get_mut(tenant) {
            t.bikes.entry(id.to_string()).or_default();
        }
        self.push_intervals(tenant, vec![id.to_string()]);
        Ok(created)
    }

    // ---- helpers -------------------------------------------------------------------------

    pub(crate) fn snapshot(&self, tenant: &str, bike: &str) -> Option<BikeSnapshot> {
        self.tenants
            .read()
            .get(tenant)?
            .bikes
            .get(bike)
            .map(|b| b.snapshot.clone())
    }

    pub(crate) fn live_trip(&self, tenant: &str, bike: &str) -> Option<(String, TripState)> {
        self.tenants
            .read()
            .get(tenant)?
            .bikes
            .get(bike)?
            .trip
            .clone()
    }

    pub(crate) fn set_live(&self, tenant: &str, bike: &str, trip: Option<(String, TripState)>) {
        if let Some(b) = self
            .tenants
            .write()
            .get_mut(tenant)
            .and_then(|t| t.bikes.get_mut(bike))
        {
            // The lock confirmed it opened: an older "closed" report must not end the ride.
            if matches!(trip, Some((_, TripState::Riding))) {
                b.snapshot.locked = Some(false);
            }
            b.trip = trip;
        }
    }

    /// Sets the lock's report interval through its twin (in the background: a twin write must
    /// not hold up a rider).
    /// Sets the locks' report intervals through their twins — parked and riding, which the
    /// lock applies by itself on every state change, so no trip writes a twin. Only when the
    /// system's intervals differ from the contract's defaults (a lock without a twin value
    /// uses those). In the background, one bike after the other: a twin write must not hold
    /// up a rider, and 100,000 of them must not flood the registry.
    pub(crate) fn push_intervals(&self, tenant: &str, bikes: Vec<String>) {
        let Ok(settings) = self.settings(tenant) else {
            return;
        };
        let (parked, riding) = (settings.parked_interval_s, settings.riding_interval_s);
        if (parked, riding) == (lock::PARKED_INTERVAL_S, lock::RIDING_INTERVAL_S)
            || bikes.is_empty()
        {
            return;
        }
        let twins = Arc::clone(&self.platform.twins);
        let t = tenant.to_string();
        tokio::spawn(async move {
            let patch = json!({"report_intervals": {"parked_s": parked, "riding_s": riding}});
            for bike in bikes {
                if let Err(error) = twins
                    .patch(&t, &bike, TwinSection::Desired, patch.clone(), None)
                    .await
                {
                    tracing::warn!(tenant = %t, %bike, %error, "Setting the report intervals failed.");
                }
            }
        });
    }
}

impl DeviceObserver for BikeShare {
    fn watches(&self, tenant: &str, device: &str) -> bool {
        self.tenants
            .read()
            .get(tenant)
            .is_some_and(|t| t.bikes.contains_key(device))
    }

    fn telemetry_stored(&self, tenant: &str, device: &str, entries: &[WriteEntry]) {
        let closed_during_trip = {
            let mut tenants = self.tenants.write();
            let Some(bike) = tenants
                .get_mut(tenant)
                .and_then(|t| t.bikes.get_mut(device))
            else {
                return;
            };
            let closed = fleet::fold(&mut bike.snapshot, entries);
            closed.filter(|_| matches!(bike.trip, Some((_, TripState::Riding))))
        };
        if let Some(at) = closed_during_trip {
            self.signal(Signal::Closed {
                tenant: tenant.to_string(),
                bike: device.to_string(),
                at,
            });
        }
    }

    fn event(&self, tenant: &str, device: &str, name: &str, payload: &[u8]) {
        if !self.watches(tenant, device) {
            return;
        }
        self.signal(Signal::Event {
            tenant: tenant.to_string(),
            bike: device.to_string(),
            name: name.to_string(),
            payload: payload.to_vec(),
        });
    }
}

impl BikeShare {
    fn signal(&self, signal: Signal) {
        if self.signals.try_send(signal).is_err() {
            // The sweeper still ends trips from the stored lock state; nothing is lost but time.
            self.metrics.signals_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) fn not_enabled() -> Error {
    Error::not_found(
        "bikeshare_not_enabled",
        "bike share is not enabled for this tenant",
    )
}

fn zone_stamp(zones: &[Zone]) -> (usize, i64) {
    (
        zones.len(),
        zones.iter().map(|z| z.updated_at).max().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests;
