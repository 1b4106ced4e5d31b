//! Trips: the state machine and its table.
//!
//! ```text
//! requested ──unlock sent──► unlocking ──lock confirmed (token echoed)──► riding
//!     │                          │                                          │ lock closed
//!     └──────────► failed ◄──────┘ (refused, timed out, expired)            ▼
//!                                                          ending ──settle──► settled
//!                                 (outside a parking fence under the grace policy, `ending`
//!                                  waits for the rider to move the bike or for the grace end)
//! ```
//!
//! Every transition is a compare-and-set on the state column, so a confirmation that arrives
//! twice (the command answer and the `unlocked` event) or after a timeout changes nothing.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trips (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    rider TEXT NOT NULL,
    bike TEXT NOT NULL,
    state TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    idempotency_key TEXT,
    token_hash TEXT NOT NULL,
    token_expires_at INTEGER NOT NULL,
    requested_at INTEGER NOT NULL,
    unlocked_at INTEGER,
    locked_at INTEGER,
    settled_at INTEGER,
    start_lat REAL, start_lon REAL,
    end_lat REAL, end_lon REAL,
    start_cell TEXT, end_cell TEXT,
    end_zone TEXT,
    out_of_fence INTEGER NOT NULL DEFAULT 0,
    grace_until INTEGER,
    distance_m REAL,
    duration_ms INTEGER,
    fare TEXT,
    total INTEGER,
    ride_charge INTEGER,
    journal_id INTEGER,
    route TEXT,
    route_reduced INTEGER NOT NULL DEFAULT 0,
    failure TEXT,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS trips_idem ON trips(tenant, rider, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- At most one live trip per bike and per rider: the database refuses a double rental.
CREATE UNIQUE INDEX IF NOT EXISTS trips_live_bike ON trips(tenant, bike)
    WHERE state IN ('requested', 'unlocking', 'riding', 'ending');
CREATE UNIQUE INDEX IF NOT EXISTS trips_live_rider ON trips(tenant, rider)
    WHERE state IN ('requested', 'unlocking', 'riding', 'ending');
CREATE INDEX IF NOT EXISTS trips_rider ON trips(tenant, rider, requested_at);
CREATE INDEX IF NOT EXISTS trips_time ON trips(tenant, requested_at);
CREATE INDEX IF NOT EXISTS trips_settled ON trips(tenant, settled_at);
CREATE TABLE IF NOT EXISTS trip_log (
    trip TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS trip_log_trip ON trip_log(trip);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripState {
    Requested,
    Unlocking,
    Riding,
    Ending,
    Settled,
    Failed,
}

impl TripState {
    pub fn as_str(self) -> &'static str {
        match self {
            TripState::Requested => "requested",
            TripState::Unlocking => "unlocking",
            TripState::Riding => "riding",
            TripState::Ending => "ending",
            TripState::Settled => "settled",
            TripState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TripState> {
        Some(match s {
            "requested" => TripState::Requested,
            "unlocking" => TripState::Unlocking,
            "riding" => TripState::Riding,
            "ending" => TripState::Ending,
            "settled" => TripState::Settled,
            "failed" => TripState::Failed,
            _ => return None,
        })
    }

    pub fn is_live(self) -> bool {
        !matches!(self, TripState::Settled | TripState::Failed)
    }

    /// The transitions the state machine allows.
    pub fn can_become(self, next: TripState) -> bool {
        use TripState::*;
        matches!(
            (self, next),
            (Requested, Unlocking)
                | (Requested | Unlocking, Failed)
                | (Unlocking, Riding)
                | (Riding, Ending)
                // Under the grace policy the rider may reopen the lock to move the bike.
                | (Ending, Riding)
                | (Ending, Settled)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Trip {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub rider: String,
    pub bike: String,
    pub state: TripState,
    pub plan_id: String,
    pub requested_at: i64,
    pub unlocked_at: Option<i64>,
    pub locked_at: Option<i64>,
    pub settled_at: Option<i64>,
    pub start: Option<[f64; 2]>,
    pub end: Option<[f64; 2]>,
    pub start_cell: Option<String>,
    pub end_cell: Option<String>,
    pub end_zone: Option<String>,
    pub out_of_fence: bool,
    pub grace_until: Option<i64>,
    pub distance_m: Option<f64>,
    pub duration_ms: Option<i64>,
    /// The fare's lines and total (a receipt), once settled.
    #[schema(value_type = Option<crate::pricing::Fare>)]
    pub fare: Option<Value>,
    pub total: Option<i64>,
    /// `[[lat, lon, ts], …]` from the lock's reports; `None` once reduced to cells or when the
    /// rider did not consent to location processing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<f64>>>)]
    pub route: Option<Value>,
    pub route_reduced: bool,
    pub failure: Option<String>,
    #[serde(skip)]
    pub token_hash: String,
    #[serde(skip)]
    pub token_expires_at: i64,
    #[serde(skip)]
    pub journal_id: Option<i64>,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant, rider, bike, state, plan_id, requested_at, unlocked_at, locked_at, \
    settled_at, start_lat, start_lon, end_lat, end_lon, start_cell, end_cell, end_zone, out_of_fence, \
    grace_until, distance_m, duration_ms, fare, total, route, route_reduced, failure, token_hash, \
    token_expires_at, journal_id, updated_at";

fn point(lat: Option<f64>, lon: Option<f64>) -> Option<[f64; 2]> {
    Some([lat?, lon?])
}

fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Trip> {
    let state: String = row.get(4)?;
    let json = |i: usize| -> rusqlite::Result<Option<Value>> {
        let text: Option<String> = row.get(i)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    Ok(Trip {
        id: row.get(0)?,
        tenant: row.get(1)?,
        rider: row.get(2)?,
        bike: row.get(3)?,
        state: TripState::parse(&state).unwrap_or(TripState::Failed),
        plan_id: row.get(5)?,
        requested_at: row.get(6)?,
        unlocked_at: row.get(7)?,
        locked_at: row.get(8)?,
        settled_at: row.get(9)?,
        start: point(row.get(10)?, row.get(11)?),
        end: point(row.get(12)?, row.get(13)?),
        start_cell: row.get(14)?,
        end_cell: row.get(15)?,
        end_zone: row.get(16)?,
        out_of_fence: row.get::<_, i64>(17)? != 0,
        grace_until: row.get(18)?,
        distance_m: row.get(19)?,
        duration_ms: row.get(20)?,
        fare: json(21)?,
        total: row.get(22)?,
        route: json(23)?,
        route_reduced: row.get::<_, i64>(24)? != 0,
        failure: row.get(25)?,
        token_hash: row.get(26)?,
        token_expires_at: row.get(27)?,
        journal_id: row.get(28)?,
        updated_at: row.get(29)?,
    })
}

/// What a new trip needs.
pub struct NewTrip<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub rider: &'a str,
    pub bike: &'a str,
    pub plan_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub token_hash: &'a str,
    pub token_expires_at: i64,
    pub start: Option<(f64, f64)>,
    pub now: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TripStoreError {
    #[error("the bike is already rented")]
    BikeBusy,
    #[error("the rider already has a trip running")]
    RiderBusy,
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

pub fn insert(conn: &Connection, t: &NewTrip<'_>) -> Result<Trip, TripStoreError> {
    let result = conn.execute(
        "INSERT INTO trips (id, tenant, rider, bike, state, plan_id, idempotency_key, token_hash,
             token_expires_at, requested_at, start_lat, start_lon, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'requested', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9)",
        params![
            t.id,
            t.tenant,
            t.rider,
            t.bike,
            t.plan_id,
            t.idempotency_key,
            t.token_hash,
            t.token_expires_at,
            t.now,
            t.start.map(|p| p.0),
            t.start.map(|p| p.1),
        ],
    );
    match result {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(if msg.contains("trips.bike") {
                TripStoreError::BikeBusy
            } else if msg.contains("trips.rider") {
                TripStoreError::RiderBusy
            } else {
                TripStoreError::Sql(rusqlite::Error::SqliteFailure(e, Some(msg)))
            });
        }
        Err(e) => return Err(e.into()),
    }
    log(conn, t.id, TripState::Requested, None, t.now)?;
    Ok(get(conn, t.tenant, t.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?)
}

pub fn get(conn: &Connection, tenant: &str, id: &str) -> rusqlite::Result<Option<Trip>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM trips WHERE tenant = ?1 AND id = ?2"),
        params![tenant, id],
        read,
    )
    .optional()
}

pub fn by_idempotency_key(
    conn: &Connection,
    tenant: &str,
    rider: &str,
    key: &str,
) -> rusqlite::Result<Option<Trip>> {
    conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM trips WHERE tenant = ?1 AND rider = ?2 AND idempotency_key = ?3"
        ),
        params![tenant, rider, key],
        read,
    )
    .optional()
}

/// The live trip of a bike, if any.
pub fn live_for_bike(
    conn: &Connection,
    tenant: &str,
    bike: &str,
) -> rusqlite::Result<Option<Trip>> {
    conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM trips WHERE tenant = ?1 AND bike = ?2
             AND state IN ('requested', 'unlocking', 'riding', 'ending')"
        ),
        params![tenant, bike],
        read,
    )
    .optional()
}

/// Every live trip of the installation (restart recovery).
pub fn all_live(conn: &Connection) -> rusqlite::Result<Vec<Trip>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM trips WHERE state IN ('requested', 'unlocking', 'riding', 'ending')"
    ))?;
    stmt.query_map([], read)?.collect()
}

/// Filters for [`list`].
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TripQuery {
    pub rider: Option<String>,
    pub bike: Option<String>,
    /// `requested`, `unlocking`, `riding`, `ending`, `settled` or `failed`.
    pub state: Option<String>,
    /// Trips requested at or after (ms).
    pub from: Option<i64>,
    /// Trips requested before (ms).
    pub to: Option<i64>,
    /// At most this many, 1 to 1,000 (default 100).
    pub limit: Option<u32>,
}

/// The trips matching `q`, newest first, without their routes (a list of a thousand long trips
/// would carry megabytes of points nobody looks at; [`get`] has the route).
pub fn list(conn: &Connection, tenant: &str, q: &TripQuery) -> rusqlite::Result<Vec<Trip>> {
    let columns = COLUMNS.replacen("total, route,", "total, NULL,", 1);
    debug_assert_ne!(columns, COLUMNS, "the route column moved");
    query(conn, tenant, q, &columns)
}

/// [`list`] with each trip's route (a rider's data export).
pub fn list_with_routes(
    conn: &Connection,
    tenant: &str,
    q: &TripQuery,
) -> rusqlite::Result<Vec<Trip>> {
    query(conn, tenant, q, COLUMNS)
}

fn query(
    conn: &Connection,
    tenant: &str,
    q: &TripQuery,
    columns: &str,
) -> rusqlite::Result<Vec<Trip>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut stmt = conn.prepare(&format!(
        "SELECT {columns} FROM trips WHERE tenant = ?1
           AND (?2 IS NULL OR rider = ?2) AND (?3 IS NULL OR bike = ?3) AND (?4 IS NULL OR state = ?4)
           AND (?5 IS NULL OR requested_at >= ?5) AND (?6 IS NULL OR requested_at < ?6)
         ORDER BY requested_at DESC LIMIT ?7"
    ))?;
    stmt.query_map(
        params![tenant, q.rider, q.bike, q.state, q.from, q.to, limit],
        read,
    )?
    .collect()
}

/// Trips that ended (settled) in `[from, to)` — MDS trips, demand statistics.
pub fn settled_between(
    conn: &Connection,
    tenant: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<Trip>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM trips WHERE tenant = ?1 AND state = 'settled'
           AND settled_at >= ?2 AND settled_at < ?3 ORDER BY settled_at"
    ))?;
    stmt.query_map(params![tenant, from, to], read)?.collect()
}

/// Trip starts (unlocked) in `[from, to)`: `(start_lat, start_lon, unlocked_at)`.
pub fn starts_between(
    conn: &Connection,
    tenant: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<(f64, f64, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT start_lat, start_lon, unlocked_at FROM trips WHERE tenant = ?1
           AND unlocked_at >= ?2 AND unlocked_at < ?3 AND start_lat IS NOT NULL",
    )?;
    stmt.query_map(params![tenant, from, to], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?
    .collect()
}

/// Moves a trip from `from` to `to` if it is still in `from`, with the given column updates
/// (`SET` fragments with their values). Returns whether it moved.
// One step of the state machine names all its parts; a struct for them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn transition(
    conn: &Connection,
    tenant: &str,
    id: &str,
    from: TripState,
    to: TripState,
    sets: &[(&str, &dyn rusqlite::ToSql)],
    now: i64,
    detail: Option<&str>,
) -> rusqlite::Result<bool> {
    debug_assert!(from.can_become(to), "{from:?} -> {to:?}");
    let mut sql = String::from("UPDATE trips SET state = ?1, updated_at = ?2");
    let to_name = to.as_str();
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&to_name, &now];
    // Column names come from this crate only, never from input.
    for (i, (column, value)) in sets.iter().enumerate() {
        sql.push_str(&format!(", {column} = ?{}", i + 3));
        values.push(*value);
    }
    let n = sets.len() + 3;
    sql.push_str(&format!(
        " WHERE tenant = ?{n} AND id = ?{} AND state = ?{}",
        n + 1,
        n + 2
    ));
    let from_str = from.as_str();
    values.push(&tenant);
    values.push(&id);
    values.push(&from_str);
    let moved = conn.execute(&sql, values.as_slice())? == 1;
    if moved {
        log(conn, id, to, detail, now)?;
    }
    Ok(moved)
}

fn log(
    conn: &Connection,
    trip: &str,
    state: TripState,
    detail: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO trip_log (trip, at, state, detail) VALUES (?1, ?2, ?3, ?4)",
        params![trip, now, state.as_str(), detail],
    )?;
    Ok(())
}

/// The state history of a trip: `(at, state, detail)`.
pub fn history(
    conn: &Connection,
    trip: &str,
) -> rusqlite::Result<Vec<(i64, String, Option<String>)>> {
    let mut stmt =
        conn.prepare("SELECT at, state, detail FROM trip_log WHERE trip = ?1 ORDER BY rowid")?;
    stmt.query_map(params![trip], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Reduces the routes of trips settled before `before` to their start and end cells (the
/// privacy retention of location tracks). Returns how many were reduced.
pub fn reduce_routes(conn: &Connection, before: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE trips SET route = NULL, start_lat = NULL, start_lon = NULL, end_lat = NULL,
             end_lon = NULL, route_reduced = 1
         WHERE state IN ('settled', 'failed') AND route_reduced = 0 AND requested_at < ?1",
        params![before],
    )
}

/// De-identifies a rider's trips (erasure): the rider id is replaced, positions and routes go,
/// cells, times and money stay for the ledger and the city's statistics.
pub fn deidentify_rider(
    conn: &Connection,
    tenant: &str,
    rider: &str,
    alias: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE trips SET rider = ?3, route = NULL, start_lat = NULL, start_lon = NULL,
             end_lat = NULL, end_lon = NULL, route_reduced = 1, idempotency_key = NULL
         WHERE tenant = ?1 AND rider = ?2",
        params![tenant, rider, alias],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_leave_routes_to_the_trip_and_the_export() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let new = NewTrip {
            id: "trip-1",
            tenant: "acme",
            rider: "r1",
            bike: "bike-1",
            plan_id: "standard",
            idempotency_key: None,
            token_hash: "h",
            token_expires_at: 0,
            start: Some((30.25, 120.1)),
            now: 1_000,
        };
        insert(&conn, &new).unwrap();
        conn.execute(
            "UPDATE trips SET route = '[[30.25,120.1,1000],[30.26,120.11,2000]]' WHERE id = 'trip-1'",
            [],
        )
        .unwrap();
        let q = TripQuery::default();
        let listed = list(&conn, "acme", &q).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].route, None);
        assert_eq!(listed[0].start, Some([30.25, 120.1]));
        let exported = list_with_routes(&conn, "acme", &q).unwrap();
        assert!(exported[0].route.as_ref().is_some_and(|r| r.is_array()));
        let one = get(&conn, "acme", "trip-1").unwrap().unwrap();
        assert_eq!(one.route, exported[0].route);
    }
}
