//! MDS 2.0 Provider API payloads: pure builders from input structs to response bodies, plus
//! the micromobility vehicle state machine.
//!
//! Endpoints and their bodies (media type [`MEDIA_TYPE`], `version` [`VERSION`]; MDS 2.0 has
//! no `data` wrapper, the array sits at the top level next to `version`):
//!
//! | endpoint | builder | body |
//! |---|---|---|
//! | `/vehicles`, `/vehicles/{device_id}` | [`vehicles_response`], [`vehicle_response`] | `vehicles`, `last_updated`, `ttl`, `links` |
//! | `/vehicles/status[/{device_id}]` | [`vehicles_status_response`], [`vehicle_status_response`] | `vehicles_status`, `last_updated`, `ttl`, `links` |
//! | `/trips?end_time=YYYY-MM-DDTHH` | [`trips_response`] | `trips` (never paginated) |
//! | `/telemetry?telemetry_time=YYYY-MM-DDTHH` | [`telemetry_response`] | `telemetry` |
//! | `/events/historical?event_time=YYYY-MM-DDTHH` | [`events_historical_response`] | `events` (never paginated) |
//! | `/events/recent?start_time&end_time` | [`events_recent_response`] | `events`, `links` |
//!
//! Timestamps are integer ms since the epoch; `ttl` is in ms and at most 5 minutes. Hour
//! parameters parse with [`HourWindow::parse`], the recent-events range with [`recent_window`].
//! Pagination follows JSON:API (`page[number]`, `page[size]`) with `first`, `last`, `prev` and
//! `next` links, `next` null on the last page.
//!
//! Identifiers: `device_id`, `trip_id`, `event_id` and `telemetry_id` are UUIDs derived from
//! the tenant's namespace and the internal id with [`uuid_v5_like`], so they are stable without
//! a mapping table. `vehicle_id` is the code printed on the bike: MDS is for the regulator,
//! behind authentication, and wants persistent identities of vehicles (not of riders).
//!
//! MDS carries no rider identity and none of the inputs has a field for one. A trip has no
//! route in MDS 2.0: the points are in `/telemetry`. Micromobility does not use `journey_id`
//! (telemetry sends `null`) nor `fare_attributes`; a trip's price is `standard_cost` /
//! `actual_cost` in integer minor units with an ISO 4217 `currency`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The media type of every MDS 2.0 JSON response (`Content-Type`, and the `Accept` to honour).
pub const MEDIA_TYPE: &str = "application/vnd.mds+json;version=2.0";

/// The `version` field of every body: MDS requires `MAJOR.MINOR.PATCH` there.
pub const VERSION: &str = "2.0.0";

/// The largest `ttl` MDS allows for near-realtime endpoints, ms (5 minutes).
pub const MAX_TTL_MS: u32 = 300_000;

/// How far back `/events/recent` reaches, ms (2 weeks).
pub const RECENT_EVENTS_MS: i64 = 14 * 24 * 3_600_000;

/// Why a payload could not be built, or a query parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdsError {
    /// One input record breaks an MDS rule; `id` says which.
    #[error("{what} {id}: {reason}")]
    InvalidRecord {
        what: &'static str,
        id: String,
        reason: String,
    },
    /// An hour parameter is not `YYYY-MM-DDTHH` (answer 400).
    #[error("invalid hour {0:?}: expected YYYY-MM-DDTHH (UTC)")]
    InvalidHour(String),
    /// A recent-events range is reversed or reaches beyond two weeks (answer 400).
    #[error("invalid time range: {0}")]
    InvalidRange(String),
}

/// Result of this module.
pub type Result<T, E = MdsError> = std::result::Result<T, E>;

fn invalid(what: &'static str, id: impl Into<String>, reason: impl Into<String>) -> MdsError {
    MdsError::InvalidRecord {
        what,
        id: id.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

/// A deterministic name-based UUID: the first 128 bits of SHA-256(`namespace` ‖ `name`) with
/// version 8 and the RFC variant set, exactly RFC 9562's example B.2 of a SHA-256 name-based
/// UUIDv8 (SHA-1, which version 5 needs, is not among our dependencies). Same inputs, same
/// UUID; lowercase, as MDS' UUID pattern requires.
pub fn uuid_v5_like(namespace: &[u8; 16], name: &str) -> String {
    let digest = Sha256::new()
        .chain_update(namespace)
        .chain_update(name.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// What every response of one provider (tenant) shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdsContext {
    /// The provider's UUID in OMF's providers.csv.
    pub provider_id: String,
    /// The data solution provider's UUID when it differs from `provider_id`.
    pub data_provider_id: Option<String>,
    /// The tenant's namespace for derived UUIDs: 16 random bytes, generated once and kept, so
    /// two tenants never share an id.
    pub namespace: [u8; 16],
    /// Where the endpoints live, e.g. `http://127.0.0.1:8080/mds/v2/{tenant}`; pagination links
    /// are built on it.
    pub base_url: String,
    /// The instant the response describes, ms since the epoch (`last_updated`).
    pub now_ms: i64,
    /// ms until the near-realtime data is refreshed; capped at [`MAX_TTL_MS`].
    pub ttl_ms: u32,
}

impl MdsContext {
    /// The `device_id` of the bike whose internal code is `bike_id`.
    pub fn device_id(&self, bike_id: &str) -> String {
        uuid_v5_like(&self.namespace, &format!("device:{bike_id}"))
    }

    /// The MDS `trip_id` of the internal trip `trip_id`.
    pub fn trip_id(&self, trip_id: &str) -> String {
        uuid_v5_like(&self.namespace, &format!("trip:{trip_id}"))
    }

    fn event_id(&self, e: &MdsEvent) -> String {
        let types: Vec<&str> = e.event_types.iter().map(|t| t.as_str()).collect();
        let name = format!(
            "event:{}:{}:{}:{}",
            e.bike_id.len(),
            e.bike_id,
            e.timestamp_ms,
            types.join(",")
        );
        uuid_v5_like(&self.namespace, &name)
    }

    fn telemetry_id(&self, t: &MdsTelemetry) -> String {
        let name = format!(
            "telemetry:{}:{}:{}",
            t.bike_id.len(),
            t.bike_id,
            t.timestamp_ms
        );
        uuid_v5_like(&self.namespace, &name)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    fn ttl(&self) -> u32 {
        self.ttl_ms.min(MAX_TTL_MS)
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every value, in the spec's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value spelled `s` on the wire.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Micromobility vehicle states of MDS 2.0 (1.x's `unknown` became `non_contactable` and
    /// `missing`).
    VehicleState {
        Removed => "removed",
        Available => "available",
        NonOperational => "non_operational",
        Reserved => "reserved",
        OnTrip => "on_trip",
        NonContactable => "non_contactable",
        Missing => "missing",
        Elsewhere => "elsewhere",
    }
}

vocabulary! {
    /// Micromobility event types of MDS 2.0.
    EventType {
        AgencyDropOff => "agency_drop_off",
        AgencyPickUp => "agency_pick_up",
        BatteryCharged => "battery_charged",
        BatteryLow => "battery_low",
        ChangedGeographies => "changed_geographies",
        CommsLost => "comms_lost",
        CommsRestored => "comms_restored",
        CompliancePickUp => "compliance_pick_up",
        Decommissioned => "decommissioned",
        Located => "located",
        Maintenance => "maintenance",
        MaintenancePickUp => "maintenance_pick_up",
        NotLocated => "not_located",
        OffHours => "off_hours",
        OnHours => "on_hours",
        ProviderDropOff => "provider_drop_off",
        RebalancePickUp => "rebalance_pick_up",
        ReservationCancel => "reservation_cancel",
        ReservationStart => "reservation_start",
        SystemResume => "system_resume",
        SystemSuspend => "system_suspend",
        TripCancel => "trip_cancel",
        TripEnd => "trip_end",
        TripEnterJurisdiction => "trip_enter_jurisdiction",
        TripLeaveJurisdiction => "trip_leave_jurisdiction",
        TripStart => "trip_start",
        Unspecified => "unspecified",
    }
}

impl EventType {
    /// Events that belong to a trip: MDS requires `trip_ids` on them.
    pub fn is_trip_event(self) -> bool {
        matches!(
            self,
            EventType::TripStart
                | EventType::TripEnd
                | EventType::TripCancel
                | EventType::TripEnterJurisdiction
                | EventType::TripLeaveJurisdiction
        )
    }
}

vocabulary! {
    /// MDS `vehicle_type` (the micromobility ones).
    MdsVehicleType {
        Bicycle => "bicycle",
        CargoBicycle => "cargo_bicycle",
        ScooterStanding => "scooter_standing",
        ScooterSeated => "scooter_seated",
        Moped => "moped",
        Other => "other",
    }
}

vocabulary! {
    /// MDS `propulsion_types` values (the micromobility ones).
    MdsPropulsion {
        Human => "human",
        ElectricAssist => "electric_assist",
        Electric => "electric",
    }
}

vocabulary! {
    /// Micromobility accessibility attributes.
    Accessibility {
        Adaptive => "adaptive",
    }
}

vocabulary! {
    /// Micromobility `trip_type`.
    TripType {
        Rider => "rider",
        Rebalance => "rebalance",
        Maintenance => "maintenance",
    }
}

vocabulary! {
    /// Where a trip ended, as detected or reported.
    ParkingCategory {
        Corral => "corral",
        Curb => "curb",
        Rack => "rack",
        OtherValid => "other_valid",
        Invalid => "invalid",
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------------

/// One row of the micromobility state-transition table: `event` moves a vehicle in any state
/// of `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static [VehicleState],
    pub event: EventType,
    pub to: VehicleState,
}

const fn t(from: &'static [VehicleState], event: EventType, to: VehicleState) -> Transition {
    Transition { from, event, to }
}

use EventType as E;
use VehicleState as S;

/// Every state but the two "lost" ones.
const KNOWN: &[VehicleState] = &[
    S::Available,
    S::Elsewhere,
    S::NonOperational,
    S::OnTrip,
    S::Removed,
    S::Reserved,
];

/// MDS 2.0 micromobility "Vehicle State Events" (modes/micromobility.md), row by row.
const TRANSITIONS: &[Transition] = &[
    t(&[S::Available], E::BatteryLow, S::NonOperational),
    t(&[S::Available], E::Maintenance, S::NonOperational),
    t(&[S::Available], E::OffHours, S::NonOperational),
    t(&[S::Available], E::ReservationStart, S::Reserved),
    t(&[S::Available], E::SystemSuspend, S::NonOperational),
    t(KNOWN, E::CommsLost, S::NonContactable),
    t(KNOWN, E::Unspecified, S::NonContactable),
    t(
        &[S::Available, S::NonContactable, S::Missing],
        E::Unspecified,
        S::NonOperational,
    ),
    t(
        &[S::Available, S::NonOperational, S::Elsewhere],
        E::CompliancePickUp,
        S::Removed,
    ),
    t(
        &[S::Available, S::NonOperational, S::Elsewhere],
        E::MaintenancePickUp,
        S::Removed,
    ),
    t(
        &[S::Available, S::NonOperational, S::Elsewhere],
        E::RebalancePickUp,
        S::Removed,
    ),
    t(
        &[
            S::Available,
            S::NonOperational,
            S::Elsewhere,
            S::NonContactable,
            S::Missing,
        ],
        E::AgencyPickUp,
        S::Removed,
    ),
    t(
        &[
            S::Available,
            S::NonOperational,
            S::Elsewhere,
            S::NonContactable,
            S::Missing,
        ],
        E::Decommissioned,
        S::Removed,
    ),
    t(&[S::Available, S::Reserved], E::TripStart, S::OnTrip),
    t(&[S::Elsewhere], E::TripEnterJurisdiction, S::OnTrip),
    t(&[S::Missing], E::Located, S::Available),
    t(&[S::Missing], E::Located, S::Elsewhere),
    t(&[S::Missing], E::Located, S::NonOperational),
    t(&[S::Missing], E::Located, S::OnTrip),
    t(&[S::Missing], E::Located, S::Removed),
    t(&[S::Missing], E::Located, S::Reserved),
    t(&[S::NonContactable], E::CommsRestored, S::Available),
    t(&[S::NonContactable], E::CommsRestored, S::Elsewhere),
    t(&[S::NonContactable], E::CommsRestored, S::NonOperational),
    t(&[S::NonContactable], E::CommsRestored, S::OnTrip),
    t(&[S::NonContactable], E::CommsRestored, S::Removed),
    t(&[S::NonContactable], E::CommsRestored, S::Reserved),
    t(&[S::NonContactable], E::NotLocated, S::Missing),
    t(&[S::NonContactable], E::Unspecified, S::Missing),
    t(
        &[S::NonContactable, S::Missing],
        E::Unspecified,
        S::Elsewhere,
    ),
    t(&[S::NonContactable, S::Missing], E::Unspecified, S::OnTrip),
    t(
        &[S::NonContactable, S::Missing],
        E::Unspecified,
        S::Reserved,
    ),
    t(
        &[
            S::NonContactable,
            S::Missing,
            S::NonOperational,
            S::Available,
            S::Elsewhere,
        ],
        E::Unspecified,
        S::Removed,
    ),
    t(&[S::NonOperational], E::BatteryCharged, S::Available),
    t(&[S::NonOperational], E::Maintenance, S::Available),
    t(&[S::NonOperational], E::OnHours, S::Available),
    t(&[S::NonOperational], E::SystemResume, S::Available),
    t(
        &[S::NonOperational, S::NonContactable, S::Missing],
        E::Unspecified,
        S::Available,
    ),
    t(&[S::OnTrip], E::ChangedGeographies, S::OnTrip),
    t(&[S::OnTrip], E::TripCancel, S::Available),
    t(&[S::OnTrip], E::TripEnd, S::Available),
    t(&[S::OnTrip], E::TripLeaveJurisdiction, S::Elsewhere),
    t(
        &[S::Removed, S::NonContactable, S::Missing],
        E::AgencyDropOff,
        S::Available,
    ),
    t(
        &[S::Removed, S::NonContactable, S::Missing],
        E::ProviderDropOff,
        S::Available,
    ),
    t(&[S::Reserved], E::ReservationCancel, S::Available),
];

/// The micromobility transition table, for documentation and exhaustive checks.
pub fn transitions() -> &'static [Transition] {
    TRANSITIONS
}

/// Whether MDS 2.0's micromobility state machine lets an event of type `event` move a vehicle
/// from `from` to `to`. Work orders use it so that the events they record are ones a city's
/// MDS consumer accepts, e.g. a repair is `available` →`maintenance`→ `non_operational` (or
/// `maintenance_pick_up` → `removed` when the bike goes to the workshop) and back with
/// `maintenance` / `provider_drop_off`; a battery swap is `battery_low` then
/// `battery_charged`; a rebalance is `rebalance_pick_up` then `provider_drop_off`.
pub fn transition_allowed(from: VehicleState, event: EventType, to: VehicleState) -> bool {
    TRANSITIONS
        .iter()
        .any(|t| t.event == event && t.to == to && t.from.contains(&from))
}

/// The states an event of type `event` can move a vehicle in `from` to.
pub fn next_states(from: VehicleState, event: EventType) -> impl Iterator<Item = VehicleState> {
    TRANSITIONS
        .iter()
        .filter(move |t| t.event == event && t.from.contains(&from))
        .map(|t| t.to)
}

/// Whether one event with several ordered types (e.g. [`trip_end`, `battery_low`]) can move a
/// vehicle from `from` to `to`, passing through the intermediate states MDS discards. An event
/// without a type is never valid.
pub fn events_allowed(from: VehicleState, events: &[EventType], to: VehicleState) -> bool {
    if events.is_empty() {
        return false;
    }
    let mut states = vec![from];
    for &event in events {
        let mut next: Vec<VehicleState> = Vec::new();
        for &s in &states {
            for n in next_states(s, event) {
                if !next.contains(&n) {
                    next.push(n);
                }
            }
        }
        states = next;
    }
    states.contains(&to)
}

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// One UTC hour, `[start_ms, end_ms)`, from an `end_time`, `event_time` or `telemetry_time`
/// parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourWindow {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl HourWindow {
    /// Parses `YYYY-MM-DDTHH` (UTC, hour 00–23), e.g. `2019-10-01T07` is
    /// `[2019-10-01T07:00:00Z, 2019-10-01T08:00:00Z)`.
    pub fn parse(s: &str) -> Result<HourWindow> {
        let bad = || MdsError::InvalidHour(s.to_owned());
        let b = s.as_bytes();
        let shape_ok = b.len() == 13
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12]
                .iter()
                .all(|&i| b[i].is_ascii_digit());
        if !shape_ok {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
        let (y, m, d, h) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
            return Err(bad());
        }
        let days = days_from_civil(y, m, d);
        // A day past the month's end (2023-02-30) does not come back unchanged.
        if wulian_common::time::civil_from_days(days) != (y, m, d) {
            return Err(bad());
        }
        let start_ms = (days * 24 + h) * 3_600_000;
        Ok(HourWindow {
            start_ms,
            end_ms: start_ms + 3_600_000,
        })
    }

    /// The hour holding `ms`, formatted `YYYY-MM-DDTHH`.
    pub fn format(ms: i64) -> String {
        let hours = ms.div_euclid(3_600_000);
        let (y, m, d) = wulian_common::time::civil_from_days(hours.div_euclid(24));
        format!("{y:04}-{m:02}-{d:02}T{:02}", hours.rem_euclid(24))
    }

    /// Whether `ms` falls in the hour (start inclusive, end exclusive, as MDS defines it).
    pub fn contains(&self, ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&ms)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks an `/events/recent` range at `now_ms`: `start_ms <= end_ms`, neither more than two
/// weeks before now (MDS answers 400 otherwise).
pub fn recent_window(start_ms: i64, end_ms: i64, now_ms: i64) -> Result<(i64, i64)> {
    if start_ms > end_ms {
        return Err(MdsError::InvalidRange(
            "start_time is after end_time".into(),
        ));
    }
    if start_ms < now_ms.saturating_sub(RECENT_EVENTS_MS) {
        return Err(MdsError::InvalidRange(
            "start_time is more than two weeks ago".into(),
        ));
    }
    Ok((start_ms, end_ms))
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

/// A requested page, JSON:API style (`page[number]` from 1, `page[size]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: u32,
    pub size: u32,
}

impl Page {
    /// Page size when the client names none (MDS recommends supporting at least 500).
    pub const DEFAULT_SIZE: u32 = 1000;
    /// The largest page served, so a response stays bounded.
    pub const MAX_SIZE: u32 = 10_000;

    /// From the query parameters, clamped: number at least 1, size within 1..=MAX_SIZE.
    pub fn new(number: Option<u32>, size: Option<u32>) -> Page {
        Page {
            number: number.unwrap_or(1).max(1),
            size: size.unwrap_or(Page::DEFAULT_SIZE).clamp(1, Page::MAX_SIZE),
        }
    }

    fn last_number(&self, total: usize) -> u32 {
        let size = usize::try_from(self.size.max(1)).unwrap_or(usize::MAX);
        u32::try_from(total.div_ceil(size).max(1)).unwrap_or(u32::MAX)
    }

    fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let start = usize::try_from(self.number.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(size);
        let start = start.min(items.len());
        let end = start.saturating_add(size).min(items.len());
        &items[start..end]
    }
}

/// JSON:API pagination links; `prev` is null on the first page and `next` on the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Links {
    pub first: Option<String>,
    pub last: Option<String>,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Links {
    /// Links of `page` over `total` items at `url`, keeping `query` (`a=1&b=2`, may be empty).
    fn new(url: &str, query: &str, page: Page, total: usize) -> Links {
        let last = page.last_number(total);
        let sep = if query.is_empty() { "" } else { "&" };
        let link = |n: u32| {
            format!(
                "{url}?{query}{sep}page%5Bnumber%5D={n}&page%5Bsize%5D={}",
                page.size
            )
        };
        Links {
            first: Some(link(1)),
            last: Some(link(last)),
            prev: (page.number > 1).then(|| link(page.number.saturating_sub(1).min(last))),
            next: (page.number < last).then(|| link(page.number.saturating_add(1))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payload objects
// ---------------------------------------------------------------------------------------------

/// A position report, input of events, telemetry and trips.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub altitude_m: Option<f64>,
    /// Degrees clockwise from true north.
    pub heading_deg: Option<f64>,
    /// As the lock reports it (km/h); published in m/s as MDS wants.
    pub speed_kmh: Option<f64>,
    pub horizontal_accuracy_m: Option<f64>,
    pub satellites: Option<u32>,
}

impl Location {
    /// A bare position, without the optional readings.
    pub fn new(lat: f64, lon: f64) -> Location {
        Location {
            lat,
            lon,
            ..Location::default()
        }
    }
}

/// MDS GPS data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gps {
    pub lat: f64,
    pub lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    /// m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizontal_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellites: Option<u32>,
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `loc` as MDS GPS data; `None` when the position is not a valid WGS-84 coordinate. Optional
/// readings that are not finite numbers are left out.
fn gps(loc: &Location) -> Option<Gps> {
    let valid = loc.lat.is_finite()
        && loc.lon.is_finite()
        && (-90.0..=90.0).contains(&loc.lat)
        && (-180.0..=180.0).contains(&loc.lon);
    if !valid {
        return None;
    }
    let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
    Some(Gps {
        lat: round6(loc.lat),
        lng: round6(loc.lon),
        altitude: finite(loc.altitude_m),
        heading: finite(loc.heading_deg),
        speed: finite(loc.speed_kmh).map(|kmh| kmh / 3.6),
        horizontal_accuracy: finite(loc.horizontal_accuracy_m).filter(|a| *a >= 0.0),
        satellites: loc.satellites,
    })
}

/// Micromobility `vehicle_attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct VehicleAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub make: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A bike of the fleet, input of the `/vehicles` builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdsVehicle {
    /// Internal code (device id); `device_id` derives from it.
    pub bike_id: String,
    /// The code visible on the bike (its QR label).
    pub vehicle_id: String,
    pub vehicle_type: MdsVehicleType,
    pub propulsion_types: Vec<MdsPropulsion>,
    /// Accessibility features of the vehicle; empty for a standard bike.
    pub accessibility_attributes: Vec<Accessibility>,
    pub vehicle_attributes: Option<VehicleAttributes>,
    /// Propulsion battery, mAh ("required if available": absent for a pedal bike).
    pub battery_capacity_mah: Option<u32>,
    pub maximum_speed_kph: Option<u32>,
}

impl MdsVehicle {
    /// A pedal bicycle whose label is its internal code.
    pub fn bicycle(bike_id: &str) -> MdsVehicle {
        MdsVehicle {
            bike_id: bike_id.to_owned(),
            vehicle_id: bike_id.to_owned(),
            vehicle_type: MdsVehicleType::Bicycle,
            propulsion_types: vec![MdsPropulsion::Human],
            accessibility_attributes: Vec::new(),
            vehicle_attributes: None,
            battery_capacity_mah: None,
            maximum_speed_kph: None,
        }
    }
}

/// MDS Vehicle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VehicleOut {
    pub device_id: String,
    pub provider_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_provider_id: Option<String>,
    pub vehicle_id: String,
    pub vehicle_type: MdsVehicleType,
    pub propulsion_types: Vec<MdsPropulsion>,
    pub accessibility_attributes: Vec<Accessibility>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_attributes: Option<VehicleAttributes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_speed: Option<u32>,
}

fn vehicle_out(ctx: &MdsContext, v: &MdsVehicle) -> VehicleOut {
    let mut propulsion_types = v.propulsion_types.clone();
    if propulsion_types.is_empty() {
        // MDS requires at least one; a bike with none declared is pedalled.
        propulsion_types.push(MdsPropulsion::Human);
    }
    VehicleOut {
        device_id: ctx.device_id(&v.bike_id),
        provider_id: ctx.provider_id.clone(),
        data_provider_id: ctx.data_provider_id.clone(),
        vehicle_id: v.vehicle_id.clone(),
        vehicle_type: v.vehicle_type,
        propulsion_types,
        accessibility_attributes: v.accessibility_attributes.clone(),
        vehicle_attributes: v.vehicle_attributes.clone(),
        battery_capacity: v.battery_capacity_mah,
        maximum_speed: v.maximum_speed_kph,
    }
}

/// A vehicle state change, input of the event builders (from the vehicle event log).
#[derive(Debug, Clone, PartialEq)]
pub struct MdsEvent {
    pub bike_id: String,
    pub timestamp_ms: i64,
    /// The state after the event.
    pub vehicle_state: VehicleState,
    /// At least one; several are applied in order.
    pub event_types: Vec<EventType>,
    pub location: Location,
    /// Battery percent, 0–100 (the lock's, for a pedal bike).
    pub battery_pct: Option<u8>,
    /// Internal trip ids; required for trip events.
    pub trip_ids: Vec<String>,
    pub publication_time_ms: Option<i64>,
    /// A ticket in the agency's 311 or CRM system.
    pub associated_ticket: Option<String>,
}

/// MDS Event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventOut {
    pub device_id: String,
    pub provider_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_provider_id: Option<String>,
    pub event_id: String,
    pub vehicle_state: VehicleState,
    pub event_types: Vec<EventType>,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publication_time: Option<i64>,
    pub location: Gps,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trip_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub associated_ticket: Option<String>,
}

fn event_out(ctx: &MdsContext, e: &MdsEvent) -> Result<EventOut> {
    let id = || format!("{}@{}", e.bike_id, e.timestamp_ms);
    if e.event_types.is_empty() {
        return Err(invalid("event", id(), "no event type"));
    }
    if e.trip_ids.is_empty() && e.event_types.iter().any(|t| t.is_trip_event()) {
        return Err(invalid("event", id(), "a trip event needs trip_ids"));
    }
    if e.battery_pct.is_some_and(|b| b > 100) {
        return Err(invalid("event", id(), "battery percent above 100"));
    }
    let location = gps(&e.location).ok_or_else(|| invalid("event", id(), "invalid location"))?;
    Ok(EventOut {
        device_id: ctx.device_id(&e.bike_id),
        provider_id: ctx.provider_id.clone(),
        data_provider_id: ctx.data_provider_id.clone(),
        event_id: ctx.event_id(e),
        vehicle_state: e.vehicle_state,
        event_types: e.event_types.clone(),
        timestamp: e.timestamp_ms,
        publication_time: e.publication_time_ms,
        location,
        battery_percent: e.battery_pct,
        trip_ids: e.trip_ids.iter().map(|t| ctx.trip_id(t)).collect(),
        associated_ticket: e.associated_ticket.clone(),
    })
}

/// A position report of a bike, input of the telemetry builders.
#[derive(Debug, Clone, PartialEq)]
pub struct MdsTelemetry {
    pub bike_id: String,
    pub timestamp_ms: i64,
    pub location: Location,
    pub battery_pct: Option<u8>,
    /// Internal ids of the trips the report belongs to; empty when not on a trip.
    pub trip_ids: Vec<String>,
    pub tipped_over: Option<bool>,
}

/// MDS Telemetry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryOut {
    pub device_id: String,
    pub provider_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_provider_id: Option<String>,
    pub telemetry_id: String,
    pub timestamp: i64,
    /// `null` when not on a trip.
    pub trip_ids: Option<Vec<String>>,
    /// Always `null`: micromobility has no journeys.
    pub journey_id: Option<String>,
    pub location: Gps,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tipped_over: Option<bool>,
}

fn telemetry_out(ctx: &MdsContext, t: &MdsTelemetry) -> Result<TelemetryOut> {
    let id = || format!("{}@{}", t.bike_id, t.timestamp_ms);
    if t.battery_pct.is_some_and(|b| b > 100) {
        return Err(invalid("telemetry", id(), "battery percent above 100"));
    }
    let location =
        gps(&t.location).ok_or_else(|| invalid("telemetry", id(), "invalid location"))?;
    Ok(TelemetryOut {
        device_id: ctx.device_id(&t.bike_id),
        provider_id: ctx.provider_id.clone(),
        data_provider_id: ctx.data_provider_id.clone(),
        telemetry_id: ctx.telemetry_id(t),
        timestamp: t.timestamp_ms,
        trip_ids: (!t.trip_ids.is_empty())
            .then(|| t.trip_ids.iter().map(|id| ctx.trip_id(id)).collect()),
        journey_id: None,
        location,
        battery_percent: t.battery_pct,
        tipped_over: t.tipped_over,
    })
}

/// The latest event and report of one bike, input of the `/vehicles/status` builders.
#[derive(Debug, Clone, PartialEq)]
pub struct MdsVehicleStatus {
    pub last_event: MdsEvent,
    pub last_telemetry: MdsTelemetry,
}

/// MDS Vehicle Status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleStatusOut {
    pub device_id: String,
    pub provider_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_provider_id: Option<String>,
    pub last_event: EventOut,
    pub last_telemetry: TelemetryOut,
}

fn vehicle_status_out(ctx: &MdsContext, s: &MdsVehicleStatus) -> Result<VehicleStatusOut> {
    if s.last_event.bike_id != s.last_telemetry.bike_id {
        return Err(invalid(
            "vehicle status",
            s.last_event.bike_id.clone(),
            "last event and last telemetry are of different bikes",
        ));
    }
    Ok(VehicleStatusOut {
        device_id: ctx.device_id(&s.last_event.bike_id),
        provider_id: ctx.provider_id.clone(),
        data_provider_id: ctx.data_provider_id.clone(),
        last_event: event_out(ctx, &s.last_event)?,
        last_telemetry: telemetry_out(ctx, &s.last_telemetry)?,
    })
}

/// A finished trip, input of [`trips_response`].
#[derive(Debug, Clone, PartialEq)]
pub struct MdsTrip {
    /// Internal trip id; `trip_id` derives from it.
    pub trip_id: String,
    pub bike_id: String,
    pub trip_type: Option<TripType>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub start: Location,
    pub end: Location,
    pub distance_m: u32,
    pub publication_time_ms: Option<i64>,
    /// Accessibility features used during the trip.
    pub accessibility_attributes: Vec<Accessibility>,
    pub parking_category: Option<ParkingCategory>,
    pub parking_verification_url: Option<String>,
    /// What the trip costs at standard prices, currency minor units.
    pub standard_cost: Option<u64>,
    /// What the rider paid, currency minor units.
    pub actual_cost: Option<u64>,
    /// ISO 4217 code (`CNY`); MDS implies USD cents when absent.
    pub currency: Option<String>,
}

/// MDS Trip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripOut {
    pub provider_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_provider_id: Option<String>,
    pub device_id: String,
    pub trip_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trip_type: Option<TripType>,
    pub start_time: i64,
    pub end_time: i64,
    pub start_location: Gps,
    pub end_location: Gps,
    /// Seconds.
    pub duration: u64,
    /// Metres.
    pub distance: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publication_time: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accessibility_attributes: Vec<Accessibility>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parking_verification_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parking_category: Option<ParkingCategory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standard_cost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_cost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

fn trip_out(ctx: &MdsContext, t: &MdsTrip) -> Result<TripOut> {
    let id = || t.trip_id.clone();
    if t.end_ms < t.start_ms {
        return Err(invalid("trip", id(), "ends before it starts"));
    }
    if let Some(c) = &t.currency
        && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid(
            "trip",
            id(),
            format!("currency {c:?} is not ISO 4217"),
        ));
    }
    let start_location =
        gps(&t.start).ok_or_else(|| invalid("trip", id(), "invalid start location"))?;
    let end_location = gps(&t.end).ok_or_else(|| invalid("trip", id(), "invalid end location"))?;
    let duration_ms = u64::try_from(t.end_ms.saturating_sub(t.start_ms)).unwrap_or(0);
    Ok(TripOut {
        provider_id: ctx.provider_id.clone(),
        data_provider_id: ctx.data_provider_id.clone(),
        device_id: ctx.device_id(&t.bike_id),
        trip_id: ctx.trip_id(&t.trip_id),
        trip_type: t.trip_type,
        start_time: t.start_ms,
        end_time: t.end_ms,
        start_location,
        end_location,
        duration: duration_ms.saturating_add(500) / 1000,
        distance: t.distance_m,
        publication_time: t.publication_time_ms,
        accessibility_attributes: t.accessibility_attributes.clone(),
        parking_verification_url: t.parking_verification_url.clone(),
        parking_category: t.parking_category,
        standard_cost: t.standard_cost,
        actual_cost: t.actual_cost,
        currency: t.currency.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An MDS 2.0 response body: `version`, the near-realtime `last_updated` / `ttl` where the
/// endpoint has them, the payload array, and pagination `links` where used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response<P> {
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(flatten)]
    pub payload: P,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
}

impl<P: Serialize> Response<P> {
    /// The body as JSON bytes.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// `{ "vehicles": [] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vehicles {
    pub vehicles: Vec<VehicleOut>,
}

/// `{ "vehicles_status": [] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehiclesStatus {
    pub vehicles_status: Vec<VehicleStatusOut>,
}

/// `{ "trips": [] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trips {
    pub trips: Vec<TripOut>,
}

/// `{ "telemetry": [] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Telemetry {
    pub telemetry: Vec<TelemetryOut>,
}

/// `{ "events": [] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Events {
    pub events: Vec<EventOut>,
}

impl MdsContext {
    fn realtime<P>(&self, payload: P, links: Option<Links>) -> Response<P> {
        Response {
            version: VERSION,
            last_updated: Some(self.now_ms),
            ttl: Some(self.ttl()),
            payload,
            links,
        }
    }

    fn historical<P>(&self, payload: P, links: Option<Links>) -> Response<P> {
        Response {
            version: VERSION,
            last_updated: None,
            ttl: None,
            payload,
            links,
        }
    }
}

/// `GET /vehicles`: `page` of `vehicles` (every bike deployed in the last 30 days) with links.
pub fn vehicles_response(
    ctx: &MdsContext,
    vehicles: &[MdsVehicle],
    page: Page,
) -> Response<Vehicles> {
    let links = Links::new(&ctx.url("/vehicles"), "", page, vehicles.len());
    let vehicles = page
        .slice(vehicles)
        .iter()
        .map(|v| vehicle_out(ctx, v))
        .collect();
    ctx.realtime(Vehicles { vehicles }, Some(links))
}

/// `GET /vehicles/{device_id}`: the one vehicle.
pub fn vehicle_response(ctx: &MdsContext, vehicle: &MdsVehicle) -> Response<Vehicles> {
    ctx.realtime(
        Vehicles {
            vehicles: vec![vehicle_out(ctx, vehicle)],
        },
        None,
    )
}

/// `GET /vehicles/status`: `page` of `statuses` with links. Fails on the first invalid record.
pub fn vehicles_status_response(
    ctx: &MdsContext,
    statuses: &[MdsVehicleStatus],
    page: Page,
) -> Result<Response<VehiclesStatus>> {
    let links = Links::new(&ctx.url("/vehicles/status"), "", page, statuses.len());
    let vehicles_status = page
        .slice(statuses)
        .iter()
        .map(|s| vehicle_status_out(ctx, s))
        .collect::<Result<_>>()?;
    Ok(ctx.realtime(VehiclesStatus { vehicles_status }, Some(links)))
}

/// `GET /vehicles/status/{device_id}`: the one vehicle's status.
pub fn vehicle_status_response(
    ctx: &MdsContext,
    status: &MdsVehicleStatus,
) -> Result<Response<VehiclesStatus>> {
    Ok(ctx.realtime(
        VehiclesStatus {
            vehicles_status: vec![vehicle_status_out(ctx, status)?],
        },
        None,
    ))
}

/// `GET /trips?end_time=…`: every trip that ended in the hour (the caller selects them; MDS
/// forbids paginating this endpoint). Fails on the first invalid trip.
pub fn trips_response(ctx: &MdsContext, trips: &[MdsTrip]) -> Result<Response<Trips>> {
    let trips = trips
        .iter()
        .map(|t| trip_out(ctx, t))
        .collect::<Result<_>>()?;
    Ok(ctx.historical(Trips { trips }, None))
}

/// `GET /telemetry?telemetry_time=…`: every report of the hour, trips' points included.
pub fn telemetry_response(
    ctx: &MdsContext,
    points: &[MdsTelemetry],
) -> Result<Response<Telemetry>> {
    let telemetry = points
        .iter()
        .map(|p| telemetry_out(ctx, p))
        .collect::<Result<_>>()?;
    Ok(ctx.historical(Telemetry { telemetry }, None))
}

/// `GET /events/historical?event_time=…`: every event of the hour (never paginated).
pub fn events_historical_response(
    ctx: &MdsContext,
    events: &[MdsEvent],
) -> Result<Response<Events>> {
    let events = events
        .iter()
        .map(|e| event_out(ctx, e))
        .collect::<Result<_>>()?;
    Ok(ctx.historical(Events { events }, None))
}

/// `GET /events/recent?start_time=…&end_time=…`: `page` of the events in the range (checked
/// with [`recent_window`] by the caller), links keeping the range.
pub fn events_recent_response(
    ctx: &MdsContext,
    events: &[MdsEvent],
    range: (i64, i64),
    page: Page,
) -> Result<Response<Events>> {
    let query = format!("start_time={}&end_time={}", range.0, range.1);
    let links = Links::new(&ctx.url("/events/recent"), &query, page, events.len());
    let events = page
        .slice(events)
        .iter()
        .map(|e| event_out(ctx, e))
        .collect::<Result<_>>()?;
    Ok(ctx.historical(Events { events }, Some(links)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_matches_rfc9562_example_b2() {
        // The DNS namespace 6ba7b810-9dad-11d1-80b4-00c04fd430c8.
        let dns = [
            0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4,
            0x30, 0xc8,
        ];
        assert_eq!(
            uuid_v5_like(&dns, "www.example.com"),
            "5c146b14-3c52-8afd-938a-375d0df1fbf6"
        );
    }

    #[test]
    fn hours_parse_and_format() {
        let w = HourWindow::parse("2019-10-01T07").unwrap();
        assert_eq!(w.start_ms, 1_569_913_200_000);
        assert_eq!(w.end_ms - w.start_ms, 3_600_000);
        assert!(w.contains(w.start_ms) && !w.contains(w.end_ms));
        assert_eq!(HourWindow::format(w.start_ms + 1), "2019-10-01T07");
        assert_eq!(
            HourWindow::parse("2024-02-29T23").unwrap().start_ms,
            1_709_247_600_000
        );
        for bad in [
            "2019-10-01",
            "2019-10-01T24",
            "2023-02-29T00",
            "2019-13-01T00",
            "2019-10-01T7",
            "2019-10-01 07",
            "２019-10-01T07",
            "2019-00-10T00",
        ] {
            assert!(HourWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_slice_and_link() {
        let items: Vec<u32> = (0..25).collect();
        let p = Page::new(Some(3), Some(10));
        assert_eq!(p.slice(&items), &[20, 21, 22, 23, 24]);
        assert_eq!(Page::new(Some(9), Some(10)).slice(&items), &[] as &[u32]);
        assert_eq!(Page::new(Some(0), Some(0)), Page { number: 1, size: 1 });
        assert_eq!(Page::new(None, Some(u32::MAX)).size, Page::MAX_SIZE);
        let links = Links::new("http://h/v", "", p, items.len());
        assert_eq!(links.next, None);
        assert_eq!(
            links.prev.as_deref(),
            Some("http://h/v?page%5Bnumber%5D=2&page%5Bsize%5D=10")
        );
        let empty = Links::new("http://h/v", "a=1", Page::new(None, None), 0);
        assert_eq!(empty.first, empty.last);
        assert_eq!((empty.prev, empty.next), (None, None));
    }
}
