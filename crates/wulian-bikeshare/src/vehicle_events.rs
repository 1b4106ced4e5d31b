//! The vehicle event log the city reads through MDS: every state change of a bike (trip
//! start and end, maintenance, rebalancing, battery) with where and when it happened.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::Result;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vehicle_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    bike TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    event_types TEXT NOT NULL,
    trip TEXT,
    lat REAL,
    lon REAL,
    battery INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS vehicle_events_time ON vehicle_events(tenant, at);
CREATE INDEX IF NOT EXISTS vehicle_events_bike ON vehicle_events(tenant, bike, at);
";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VehicleEvent {
    pub id: i64,
    pub bike: String,
    pub at: i64,
    /// MDS vehicle state after the event.
    pub state: String,
    /// MDS event types.
    pub event_types: Vec<String>,
    pub trip: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub battery: Option<i64>,
}

/// A vehicle state change the bike share records, in MDS 2.0's vocabulary: each is a
/// transition of MDS' state machine (checked in the tests against [`crate::mds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: &'static str,
    pub event: &'static str,
    pub to: &'static str,
}

/// The lock confirmed an unlock.
pub const TRIP_START: Change = Change {
    from: "available",
    event: "trip_start",
    to: "on_trip",
};
/// The trip settled.
pub const TRIP_END: Change = Change {
    from: "on_trip",
    event: "trip_end",
    to: "available",
};
/// A repair or inspection order took the bike out of service.
pub const MAINTENANCE_START: Change = Change {
    from: "available",
    event: "maintenance",
    to: "non_operational",
};
/// Its last such order was closed.
pub const MAINTENANCE_END: Change = Change {
    from: "non_operational",
    event: "maintenance",
    to: "available",
};
/// A battery order took the bike out of service.
pub const BATTERY_LOW: Change = Change {
    from: "available",
    event: "battery_low",
    to: "non_operational",
};
/// The battery was swapped or charged.
pub const BATTERY_CHARGED: Change = Change {
    from: "non_operational",
    event: "battery_charged",
    to: "available",
};

/// The change that takes a bike out of service for an order of `kind`.
pub fn leaving_service(kind: crate::workorders::Kind) -> Change {
    if kind == crate::workorders::Kind::Battery {
        BATTERY_LOW
    } else {
        MAINTENANCE_START
    }
}

pub struct NewEvent<'a> {
    pub bike: &'a str,
    pub at: i64,
    pub change: Change,
    pub trip: Option<&'a str>,
    pub position: Option<(f64, f64)>,
    pub battery: Option<i64>,
}

pub fn record(conn: &Connection, tenant: &str, e: &NewEvent<'_>) -> Result<()> {
    let types = serde_json::to_string(&[e.change.event]).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "INSERT INTO vehicle_events (tenant, bike, at, state, event_types, trip, lat, lon, battery)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            tenant,
            e.bike,
            e.at,
            e.change.to,
            types,
            e.trip,
            e.position.map(|p| p.0),
            e.position.map(|p| p.1),
            e.battery
        ],
    )?;
    Ok(())
}

/// Events in `[from, to)`, oldest first, at most `limit`.
pub fn between(
    conn: &Connection,
    tenant: &str,
    from: i64,
    to: i64,
    limit: u32,
) -> Result<Vec<VehicleEvent>> {
    let mut stmt = conn.prepare(
        "SELECT id, bike, at, state, event_types, trip, lat, lon, battery FROM vehicle_events
         WHERE tenant = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(params![tenant, from, to, limit], read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The latest event of every bike of the tenant.
pub fn latest_per_bike(conn: &Connection, tenant: &str) -> Result<Vec<VehicleEvent>> {
    let mut stmt = conn.prepare(
        "SELECT id, bike, at, state, event_types, trip, lat, lon, battery FROM vehicle_events
         WHERE id IN (SELECT MAX(id) FROM vehicle_events WHERE tenant = ?1 GROUP BY bike)",
    )?;
    let rows = stmt
        .query_map(params![tenant], read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<VehicleEvent> {
    let types: String = r.get(4)?;
    Ok(VehicleEvent {
        id: r.get(0)?,
        bike: r.get(1)?,
        at: r.get(2)?,
        state: r.get(3)?,
        event_types: serde_json::from_str(&types).unwrap_or_default(),
        trip: r.get(5)?,
        lat: r.get(6)?,
        lon: r.get(7)?,
        battery: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mds::{EventType, VehicleState, transition_allowed};

    #[test]
    fn every_recorded_change_is_an_mds_transition() {
        for c in [
            TRIP_START,
            TRIP_END,
            MAINTENANCE_START,
            MAINTENANCE_END,
            BATTERY_LOW,
            BATTERY_CHARGED,
        ] {
            let (from, event, to) = (
                VehicleState::parse(c.from).unwrap(),
                EventType::parse(c.event).unwrap(),
                VehicleState::parse(c.to).unwrap(),
            );
            assert!(transition_allowed(from, event, to), "{c:?}");
        }
    }
}
