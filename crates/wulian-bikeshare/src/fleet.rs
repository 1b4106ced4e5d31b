//! The fleet as the bike share sees it: each bike's latest state, kept in memory from the
//! telemetry store's last-value cache at start and from stored telemetry afterwards, and the
//! classification operators and feeds use (available, on trip, low battery, …).

use std::collections::HashMap;

use serde::Serialize;
use wulian_tsdb::{Point, Value, WriteEntry};

/// A stored number (float or integer) as f64; other kinds are not numbers.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::F64(x) => Some(*x),
        Value::I64(x) => Some(*x as f64),
        _ => None,
    }
}

/// A bike's stored positions in `[from, to)`, `(lat, lon, ts)` ascending: the `lat` and `lon`
/// series joined on their timestamps (a report carries both), at most `limit` of each read.
pub fn stored_positions(
    tsdb: &wulian_tsdb::Tsdb,
    tenant: &str,
    bike: &str,
    from: i64,
    to: i64,
    limit: usize,
) -> Vec<(f64, f64, i64)> {
    let series = |key: &str| wulian_tsdb::SeriesKey::new(tenant, bike, key);
    let lat = tsdb.range(&series("lat"), from, to, limit).points;
    if lat.is_empty() {
        return Vec::new();
    }
    let lons: std::collections::HashMap<i64, f64> = tsdb
        .range(&series("lon"), from, to, limit)
        .points
        .iter()
        .filter_map(|p| number(&p.value).map(|v| (p.ts, v)))
        .collect();
    lat.iter()
        .filter_map(|p| Some((number(&p.value)?, *lons.get(&p.ts)?, p.ts)))
        .collect()
}

/// The latest known state of one bike.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BikeSnapshot {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub battery: Option<f64>,
    pub locked: Option<bool>,
    pub speed: Option<f64>,
    pub fix: Option<i64>,
    /// Time of the newest report (ms).
    pub reported_at: Option<i64>,
}

impl BikeSnapshot {
    /// Folds stored points in; an older report than what is known (a late upload) does not
    /// overwrite a newer value of the same key.
    pub fn apply(&mut self, key: &str, ts: i64, value: &Value) {
        if self.reported_at.is_some_and(|r| ts < r) && key != "battery" {
            // Late data: keep the newer view (battery is monotonic enough not to matter).
            return;
        }
        let num = number(value);
        match key {
            "lat" => self.lat = num.filter(|v| (-90.0..=90.0).contains(v)),
            "lon" => self.lon = num.filter(|v| (-180.0..=180.0).contains(v)),
            "battery" => self.battery = num,
            "speed" => self.speed = num,
            "fix" => self.fix = num.map(|v| v as i64),
            "locked" => {
                if let Value::Bool(b) = value {
                    self.locked = Some(*b);
                }
            }
            _ => return,
        }
        self.reported_at = Some(self.reported_at.map_or(ts, |r| r.max(ts)));
    }

    pub fn from_latest(points: &[(String, Point)]) -> BikeSnapshot {
        let mut s = BikeSnapshot::default();
        let mut sorted: Vec<&(String, Point)> = points.iter().collect();
        sorted.sort_by_key(|(_, p)| p.ts);
        for (k, p) in sorted {
            s.apply(k, p.ts, &p.value);
        }
        s
    }

    pub fn position(&self) -> Option<(f64, f64)> {
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) if crate::lock::valid_position(lat, lon) => Some((lat, lon)),
            _ => None,
        }
    }
}

/// What a stored write tells about a bike: the keys the bike share reads, and whether the
/// shackle was reported closed (possibly ending a trip).
pub fn fold(snapshot: &mut BikeSnapshot, entries: &[WriteEntry]) -> Option<i64> {
    let mut closed_at = None;
    for e in entries {
        snapshot.apply(&e.series.key, e.ts, &e.value);
        if e.series.key == "locked" && e.value == Value::Bool(true) {
            closed_at = Some(closed_at.map_or(e.ts, |t: i64| t.max(e.ts)));
        }
    }
    closed_at
}

/// A bike's status in the operator's fleet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = BikeStatus)]
pub enum Status {
    Available,
    OnTrip,
    LowBattery,
    Faulty,
    OutOfFence,
    /// Not heard from for longer than the system's `stale_after_s`, or never.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Available => "available",
            Status::OnTrip => "on_trip",
            Status::LowBattery => "low_battery",
            Status::Faulty => "faulty",
            Status::OutOfFence => "out_of_fence",
            Status::Unknown => "unknown",
        }
    }

    /// The MDS 2.0 vehicle state of a bike in this status.
    pub fn mds_state(self) -> &'static str {
        match self {
            Status::Available | Status::OutOfFence => "available",
            Status::OnTrip => "on_trip",
            Status::LowBattery | Status::Faulty => "non_operational",
            Status::Unknown => "unknown",
        }
    }
}

/// The facts a status is decided from.
pub struct Facts<'a> {
    pub snapshot: &'a BikeSnapshot,
    pub on_trip: bool,
    pub faulty: bool,
    pub parkable: Option<bool>,
    pub in_service_area: Option<bool>,
    pub now: i64,
    pub low_battery_pct: u32,
    pub stale_after_ms: i64,
}

/// Decides a bike's status; the order is the priority (a faulty bike on a trip is on a trip).
pub fn classify(f: &Facts<'_>) -> Status {
    if f.on_trip {
        return Status::OnTrip;
    }
    if f.faulty {
        return Status::Faulty;
    }
    let fresh = f
        .snapshot
        .reported_at
        .is_some_and(|t| f.now - t <= f.stale_after_ms);
    if !fresh || f.snapshot.position().is_none() {
        return Status::Unknown;
    }
    if f.snapshot
        .battery
        .is_some_and(|b| b < f64::from(f.low_battery_pct))
    {
        return Status::LowBattery;
    }
    if f.parkable == Some(false) || f.in_service_area == Some(false) {
        return Status::OutOfFence;
    }
    Status::Available
}

/// Counts per status.
pub fn summary(statuses: impl Iterator<Item = Status>) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for s in statuses {
        *out.entry(s.as_str()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(battery: f64, reported_at: i64) -> BikeSnapshot {
        BikeSnapshot {
            lat: Some(30.0),
            lon: Some(120.0),
            battery: Some(battery),
            locked: Some(true),
            reported_at: Some(reported_at),
            ..BikeSnapshot::default()
        }
    }

    fn facts(s: &BikeSnapshot) -> Facts<'_> {
        Facts {
            snapshot: s,
            on_trip: false,
            faulty: false,
            parkable: Some(true),
            in_service_area: Some(true),
            now: 1_000_000,
            low_battery_pct: 15,
            stale_after_ms: 600_000,
        }
    }

    #[test]
    fn classification_follows_priority() {
        let s = snap(80.0, 999_000);
        assert_eq!(classify(&facts(&s)), Status::Available);
        assert_eq!(
            classify(&Facts {
                on_trip: true,
                faulty: true,
                ..facts(&s)
            }),
            Status::OnTrip
        );
        assert_eq!(
            classify(&Facts {
                faulty: true,
                ..facts(&s)
            }),
            Status::Faulty
        );
        assert_eq!(classify(&facts(&snap(10.0, 999_000))), Status::LowBattery);
        assert_eq!(classify(&facts(&snap(80.0, 1))), Status::Unknown);
        assert_eq!(
            classify(&Facts {
                parkable: Some(false),
                ..facts(&s)
            }),
            Status::OutOfFence
        );
    }

    #[test]
    fn late_reports_do_not_move_a_bike_back() {
        let mut s = BikeSnapshot::default();
        s.apply("lat", 2_000, &Value::F64(30.2));
        s.apply("lat", 1_000, &Value::F64(30.1));
        assert_eq!(s.lat, Some(30.2));
        assert_eq!(s.reported_at, Some(2_000));
        s.apply("lat", 3_000, &Value::F64(91.0));
        assert_eq!(s.lat, None, "an impossible latitude is no position");
    }
}
