//! Named geographic zones per tenant (parking areas, service areas, no-go areas): a polygon as
//! GeoJSON, a free-form kind and properties. Rules test points against them (`in_zone`); the
//! registry stores them as given — callers validate the polygon before saving.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{Registry, now_ms, tenants};

/// Zones per tenant.
pub const MAX_ZONES: i64 = 10_000;
const MAX_POLYGON_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub tenant: String,
    pub name: String,
    /// e.g. `parking`, `no_parking`, `service_area`.
    pub kind: String,
    /// A GeoJSON Polygon (or its coordinates).
    pub polygon: Value,
    /// A JSON object (capacity, opening hours, …).
    pub properties: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

fn check(name: &str, kind: &str, polygon: &Value, properties: &Value) -> Result<(String, String)> {
    let ok_name = !name.is_empty()
        && name.chars().count() <= 128
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\'' || c == '/');
    if !ok_name {
        return Err(Error::invalid(
            "name",
            "1 to 128 characters, without control characters, quotes or slashes",
        ));
    }
    if kind.is_empty() || kind.len() > 64 {
        return Err(Error::invalid("kind", "1 to 64 characters"));
    }
    if !properties.is_object() {
        return Err(Error::invalid("properties", "must be a JSON object"));
    }
    let polygon_json = serde_json::to_string(polygon)?;
    if polygon_json.len() > MAX_POLYGON_BYTES {
        return Err(Error::invalid(
            "polygon",
            format!("at most {MAX_POLYGON_BYTES} bytes of JSON"),
        ));
    }
    Ok((polygon_json, serde_json::to_string(properties)?))
}

impl Registry {
    /// Creates or replaces the zone `name`; returns it and whether it was new.
    pub fn put_zone(
        &self,
        tenant: &str,
        name: &str,
        kind: &str,
        polygon: &Value,
        properties: &Value,
    ) -> Result<(Zone, bool)> {
        let (polygon_json, properties_json) = check(name, kind, polygon, properties)?;
        let now = now_ms();
        let existed = self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM zones WHERE tenant = ?1 AND name = ?2",
                    [tenant, name],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some();
            if !exists {
                let count: i64 = tx.query_row(
                    "SELECT count(*) FROM zones WHERE tenant = ?1",
                    [tenant],
                    |r| r.get(0),
                )?;
                if count >= MAX_ZONES {
                    return Err(Error::Conflict(format!(
                        "a tenant has at most {MAX_ZONES} zones"
                    )));
                }
            }
            tx.execute(
                "INSERT INTO zones (tenant, name, kind, polygon, properties, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (tenant, name) DO UPDATE SET kind = ?3, polygon = ?4,
                        properties = ?5, updated_at = ?6",
                params![tenant, name, kind, polygon_json, properties_json, now],
            )?;
            Ok(exists)
        })?;
        Ok((self.get_zone(tenant, name)?, !existed))
    }

    pub fn get_zone(&self, tenant: &str, name: &str) -> Result<Zone> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "SELECT tenant, name, kind, polygon, properties, created_at, updated_at
                 FROM zones WHERE tenant = ?1 AND name = ?2",
            )?
            .query_row([tenant, name], read_row)
            .optional()?
            .ok_or_else(|| Error::not_found("zone", name))?;
        finish(row)
    }

    pub fn list_zones(&self, tenant: &str) -> Result<Vec<Zone>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT tenant, name, kind, polygon, properties, created_at, updated_at
                 FROM zones WHERE tenant = ?1 ORDER BY name",
            )?;
            stmt.query_map([tenant], read_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }

    /// A cheap fingerprint of a tenant's zones, `(count, newest updated_at)`: callers that
    /// keep zones in memory poll it and reload only when it changes.
    pub fn zone_stamp(&self, tenant: &str) -> Result<(usize, i64)> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM zones WHERE tenant = ?1",
        )?;
        let (count, newest): (i64, i64) =
            stmt.query_row([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((usize::try_from(count).unwrap_or(0), newest))
    }

    /// Every zone of every tenant (loaded by the rule engine's zone cache).
    pub fn all_zones(&self) -> Result<Vec<Zone>> {
        let rows = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT tenant, name, kind, polygon, properties, created_at, updated_at
                 FROM zones ORDER BY tenant, name",
            )?;
            stmt.query_map([], read_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }

    pub fn delete_zone(&self, tenant: &str, name: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM zones WHERE tenant = ?1 AND name = ?2",
                [tenant, name],
            )?)
        })?;
        if deleted == 0 {
            return Err(Error::not_found("zone", name));
        }
        Ok(())
    }
}

type Row = (String, String, String, String, String, i64, i64);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn finish((tenant, name, kind, polygon, properties, created_at, updated_at): Row) -> Result<Zone> {
    Ok(Zone {
        tenant,
        name,
        kind,
        polygon: serde_json::from_str(&polygon)?,
        properties: serde_json::from_str(&properties)?,
        created_at,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use crate::test_support::registry_with_tenant;
    use serde_json::json;

    #[test]
    fn zones_round_trip() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        let square =
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]});
        let (zone, created) = reg
            .put_zone(&t, "Depot A", "parking", &square, &json!({"capacity": 40}))
            .unwrap();
        assert!(created);
        assert_eq!(zone.properties["capacity"], 40);
        assert_eq!(reg.list_zones(&t).unwrap().len(), 1);
        assert_eq!(reg.all_zones().unwrap().len(), 1);
        assert!(
            reg.put_zone(&t, "a/b", "parking", &square, &json!({}))
                .is_err()
        );
        assert!(
            reg.put_zone(&t, "x", "parking", &square, &json!([1]))
                .is_err()
        );
        assert!(reg.get_zone("other", "Depot A").is_err());
        reg.delete_zone(&t, "Depot A").unwrap();
        assert!(reg.delete_zone(&t, "Depot A").is_err());
    }
}
