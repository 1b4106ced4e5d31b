//! A tenant's bike-share system: its settings, pricing plans, ride-pass products and the
//! installation's secrets (the pepper for identity numbers, the key that rotates public
//! vehicle ids).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pricing::{PassProduct, PricingPlan};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS systems (
    tenant TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS plans (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;
CREATE TABLE IF NOT EXISTS pass_products (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;
CREATE TABLE IF NOT EXISTS basemaps (
    tenant TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS bike_counters (
    tenant TEXT NOT NULL,
    bike TEXT NOT NULL,
    trips_completed INTEGER NOT NULL DEFAULT 0,
    last_trip_end INTEGER,
    flagged TEXT,
    PRIMARY KEY (tenant, bike)
) STRICT;
";

/// What happens when a rider locks a bike outside every parking fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParkingPolicy {
    /// The trip stays open for `grace_minutes`: the rider may reopen the lock and move the
    /// bike into a fence; when the grace ends it settles with the dispatch fee.
    Grace,
    /// The trip settles at once with the dispatch fee.
    Fee,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(as = BikeShareSettings)]
pub struct Settings {
    /// Shown in GBFS `system_information`.
    pub name: String,
    pub operator: String,
    pub language: String,
    pub timezone: String,
    pub feed_contact_email: String,
    pub parking_policy: ParkingPolicy,
    pub grace_minutes: u32,
    /// How long a lock has to confirm an unlock.
    pub unlock_timeout_s: u32,
    /// Routes are kept this long, then reduced to their start and end cells.
    pub route_retention_days: u32,
    /// Below this charge a bike is not offered to riders and a battery work order opens.
    pub low_battery_pct: u32,
    /// A bike parked longer than this counts as idle in the fleet view.
    pub idle_hours: u32,
    /// A bike that has not reported for this long is `unknown` (not offered).
    pub stale_after_s: u32,
    pub default_plan: String,
    /// GBFS feed time to live.
    pub gbfs_ttl_s: u32,
    /// Riders top up through the sandbox provider (approves everything, moves no money): for
    /// demos and test systems only. Production systems use a desk or an external adapter.
    pub payments_sandbox: bool,
    /// The locks' report intervals, parked and riding, set through their twins (the contract's
    /// defaults, 300 and 10, need no twin write).
    pub parked_interval_s: u32,
    pub riding_interval_s: u32,
    /// Sign-up attempts accepted per client address and hour (0: no limit). Bounds account
    /// farming and the guessing of identity numbers through `id_number_registered`.
    pub signups_per_address_per_hour: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            name: "Bike share".into(),
            operator: "wulian".into(),
            language: "zh-CN".into(),
            timezone: "Asia/Shanghai".into(),
            feed_contact_email: "open-data@example.com".into(),
            parking_policy: ParkingPolicy::Grace,
            grace_minutes: 5,
            unlock_timeout_s: 10,
            route_retention_days: 30,
            low_battery_pct: 15,
            idle_hours: 48,
            stale_after_s: 1800,
            default_plan: "standard".into(),
            gbfs_ttl_s: 10,
            payments_sandbox: false,
            signups_per_address_per_hour: 20,
            parked_interval_s: crate::lock::PARKED_INTERVAL_S,
            riding_interval_s: crate::lock::RIDING_INTERVAL_S,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, rule: &str| {
            Err(Error::invalid(
                "invalid_settings",
                format!("{field}: {rule}"),
            ))
        };
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return bad("name", "1 to 200 characters");
        }
        if !(1..=120).contains(&self.unlock_timeout_s) {
            return bad("unlock_timeout_s", "1 to 120");
        }
        if self.grace_minutes > 120 {
            return bad("grace_minutes", "0 to 120");
        }
        if !(1..=3650).contains(&self.route_retention_days) {
            return bad("route_retention_days", "1 to 3650");
        }
        if self.low_battery_pct > 100 {
            return bad("low_battery_pct", "0 to 100");
        }
        if !(1..=8760).contains(&self.idle_hours) {
            return bad("idle_hours", "1 to 8760");
        }
        if !(60..=604_800).contains(&self.stale_after_s) {
            return bad("stale_after_s", "60 to 604800");
        }
        if !(1..=86_400).contains(&self.parked_interval_s) {
            return bad("parked_interval_s", "1 to 86400");
        }
        if !(1..=3_600).contains(&self.riding_interval_s) {
            return bad("riding_interval_s", "1 to 3600");
        }
        if !(0..=3600).contains(&self.gbfs_ttl_s) {
            return bad("gbfs_ttl_s", "0 to 3600");
        }
        Ok(())
    }
}

pub fn get(conn: &Connection, tenant: &str) -> Result<Option<Settings>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT settings FROM systems WHERE tenant = ?1",
            params![tenant],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| Error::Internal(format!("stored settings: {e}")))
    })
    .transpose()
}

pub fn all(conn: &Connection) -> Result<Vec<(String, Settings)>> {
    let mut stmt = conn.prepare("SELECT tenant, settings FROM systems ORDER BY tenant")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(t, s)| {
            serde_json::from_str(&s)
                .map(|s| (t, s))
                .map_err(|e| Error::Internal(format!("stored settings: {e}")))
        })
        .collect()
}

pub fn put(conn: &Connection, tenant: &str, settings: &Settings, now: i64) -> Result<()> {
    settings.validate()?;
    let text = serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO systems (tenant, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(tenant) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        params![tenant, text, now],
    )?;
    Ok(())
}

pub fn plans(conn: &Connection, tenant: &str) -> Result<Vec<PricingPlan>> {
    load(conn, "plans", tenant)
}

pub fn pass_products(conn: &Connection, tenant: &str) -> Result<Vec<PassProduct>> {
    load(conn, "pass_products", tenant)
}

fn load<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    tenant: &str,
) -> Result<Vec<T>> {
    // `table` is one of this module's constants.
    let mut stmt = conn.prepare(&format!(
        "SELECT body FROM {table} WHERE tenant = ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map(params![tenant], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter()
        .map(|b| {
            serde_json::from_str(b).map_err(|e| Error::Internal(format!("stored {table}: {e}")))
        })
        .collect()
}

pub fn put_plan(conn: &Connection, tenant: &str, plan: &PricingPlan) -> Result<()> {
    plan.validate()
        .map_err(|e| Error::invalid("invalid_plan", e.to_string()))?;
    let body = serde_json::to_string(plan).map_err(|e| Error::Internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO plans (tenant, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT(tenant, id) DO UPDATE SET body = excluded.body",
        params![tenant, plan.id, body],
    )?;
    Ok(())
}

pub fn put_pass_product(conn: &Connection, tenant: &str, pass: &PassProduct) -> Result<()> {
    pass.validate()
        .map_err(|e| Error::invalid("invalid_pass", e.to_string()))?;
    let body = serde_json::to_string(pass).map_err(|e| Error::Internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO pass_products (tenant, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT(tenant, id) DO UPDATE SET body = excluded.body",
        params![tenant, pass.id, body],
    )?;
    Ok(())
}

/// A 32-byte installation secret, created on first use.
pub fn secret(conn: &Connection, name: &str) -> Result<Vec<u8>> {
    if let Some(v) = conn
        .query_row(
            "SELECT value FROM secrets WHERE name = ?1",
            params![name],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
    {
        return Ok(v);
    }
    let mut value = vec![0u8; 32];
    getrandom::fill(&mut value).map_err(|e| Error::Internal(format!("randomness: {e}")))?;
    conn.execute(
        "INSERT INTO secrets (name, value) VALUES (?1, ?2)",
        params![name, value],
    )?;
    Ok(value)
}

/// Per-bike counters: trips completed (rotates the public GBFS id), when the last trip ended,
/// and why the bike is flagged (a lock that failed to open), if it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BikeCounters {
    pub trips_completed: u64,
    pub last_trip_end: Option<i64>,
    pub flagged: Option<String>,
}

pub fn bike_counters(conn: &Connection, tenant: &str) -> Result<Vec<(String, BikeCounters)>> {
    let mut stmt = conn.prepare(
        "SELECT bike, trips_completed, last_trip_end, flagged FROM bike_counters WHERE tenant = ?1",
    )?;
    let rows = stmt
        .query_map(params![tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                BikeCounters {
                    trips_completed: r.get::<_, i64>(1)?.max(0) as u64,
                    last_trip_end: r.get(2)?,
                    flagged: r.get(3)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn count_trip_end(conn: &Connection, tenant: &str, bike: &str, at: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO bike_counters (tenant, bike, trips_completed, last_trip_end) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT(tenant, bike) DO UPDATE SET trips_completed = trips_completed + 1,
             last_trip_end = excluded.last_trip_end",
        params![tenant, bike, at],
    )?;
    Ok(())
}

pub fn set_flag(conn: &Connection, tenant: &str, bike: &str, flag: Option<&str>) -> Result<()> {
    conn.execute(
        "INSERT INTO bike_counters (tenant, bike, flagged) VALUES (?1, ?2, ?3)
         ON CONFLICT(tenant, bike) DO UPDATE SET flagged = excluded.flagged",
        params![tenant, bike, flag],
    )?;
    Ok(())
}

/// The largest basemap kept (GeoJSON text).
pub const MAX_BASEMAP_BYTES: usize = 8 * 1024 * 1024;

/// Stores the tenant's basemap: a GeoJSON FeatureCollection that consoles draw under the fleet
/// when no tile server is configured (the demo stores its synthetic city's).
pub fn put_basemap(
    conn: &Connection,
    tenant: &str,
    basemap: &serde_json::Value,
    now: i64,
) -> Result<()> {
    if basemap.get("type").and_then(serde_json::Value::as_str) != Some("FeatureCollection")
        || !basemap
            .get("features")
            .is_some_and(serde_json::Value::is_array)
    {
        return Err(Error::invalid(
            "invalid_basemap",
            "a basemap is a GeoJSON FeatureCollection",
        ));
    }
    let body = serde_json::to_string(basemap).map_err(|e| Error::Internal(e.to_string()))?;
    if body.len() > MAX_BASEMAP_BYTES {
        return Err(Error::invalid(
            "basemap_too_large",
            format!("at most {MAX_BASEMAP_BYTES} bytes of GeoJSON"),
        ));
    }
    conn.execute(
        "INSERT INTO basemaps (tenant, body, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(tenant) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        params![tenant, body, now],
    )?;
    Ok(())
}

/// The tenant's basemap as stored (GeoJSON text), if any.
pub fn basemap(conn: &Connection, tenant: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT body FROM basemaps WHERE tenant = ?1",
            params![tenant],
            |r| r.get(0),
        )
        .optional()?)
}
