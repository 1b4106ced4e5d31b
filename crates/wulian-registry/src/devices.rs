//! Devices and their credentials.
//!
//! A device id is its MQTT client id and username, so ids are unique across the whole
//! installation; everything else is tenant-scoped: a device of another tenant is `NotFound`,
//! never visible. Creating an id that exists anywhere answers `AlreadyExists` with the same
//! message whatever the owning tenant, so only existence leaks (unavoidable for global ids).
//!
//! The token (`wld_` + 64 hex) is returned once, at creation or rotation; the row keeps its
//! SHA-256. [`Registry::authenticate_device`] loads the row by id and compares hashes in
//! constant time, comparing against a dummy hash when the device is unknown so both cases cost
//! the same.
//!
//! Listing uses keyset pagination over the `(tenant, id)` index: the cursor is the last id of the
//! previous page, so pages stay cheap however deep, and concurrent inserts never shift a page.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::secret::{self, DEVICE_TOKEN_PREFIX, MAX_PRESENTED_SECRET_LEN};
use crate::{Registry, now_ms, tenants, validate};

const DEFAULT_PROFILE: &str = "default";
/// The longest grace period of a rotated token: 30 days.
pub const MAX_TOKEN_GRACE_MS: i64 = 30 * 86_400_000;
const DEFAULT_PAGE_SIZE: u32 = 100;
/// At most this many label filters per query (each is one indexed subquery).
const MAX_LABEL_FILTERS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub profile: String,
    pub labels: BTreeMap<String, String>,
    /// Always a JSON object.
    pub attributes: Value,
    /// A disabled device keeps its record but cannot authenticate.
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub token_rotated_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDevice {
    /// 1–128 of `A-Z a-z 0-9 _ . : -`, not `me`; unique in the installation.
    pub id: String,
    /// 0–200 characters; the id when absent.
    pub name: Option<String>,
    /// Same rules as ids; `default` when absent.
    pub profile: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A JSON object of at most 16 KiB; `{}` when absent.
    pub attributes: Option<Value>,
    #[serde(default)]
    pub disabled: bool,
}

/// Changes to a device; `None` leaves a field as it is. `labels` and `attributes` replace whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DevicePatch {
    pub name: Option<String>,
    pub profile: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub attributes: Option<Value>,
    pub disabled: Option<bool>,
}

/// Filters and paging for [`Registry::list_devices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceQuery {
    /// 1..=1000, default 100.
    pub limit: u32,
    /// `next_cursor` of the previous page (opaque to callers).
    pub cursor: Option<String>,
    pub profile: Option<String>,
    /// `(key, value)` pairs a device must all carry.
    pub label: Vec<(String, String)>,
    /// Substring of the id or name; case-insensitive for ASCII letters.
    pub search: Option<String>,
}

impl Default for DeviceQuery {
    fn default() -> DeviceQuery {
        DeviceQuery {
            limit: DEFAULT_PAGE_SIZE,
            cursor: None,
            profile: None,
            label: Vec::new(),
            search: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePage {
    /// Ordered by id.
    pub devices: Vec<Device>,
    /// Present when more devices match; pass it back as `cursor`.
    pub next_cursor: Option<String>,
    /// Devices matching the filters, across all pages.
    pub total: u64,
}

/// Who an authenticated device is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub tenant: String,
    pub device_id: String,
}

/// Columns of a full device read, for `FROM devices d`. Labels come from the side table as one
/// JSON object via the `(device_pk, key)` primary key.
const DEVICE_COLUMNS: &str = "d.id, d.tenant, d.name, d.profile, \
     (SELECT json_group_object(l.key, l.value) FROM device_labels l WHERE l.device_pk = d.pk), \
     d.attributes, d.disabled, d.created_at, d.updated_at, d.token_rotated_at";

/// A device row as stored; JSON is parsed after the row is read.
struct DeviceRow {
    id: String,
    tenant: String,
    name: String,
    profile: String,
    labels: Option<String>,
    attributes: String,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    token_rotated_at: i64,
}

impl DeviceRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
        Ok(DeviceRow {
            id: row.get(0)?,
            tenant: row.get(1)?,
            name: row.get(2)?,
            profile: row.get(3)?,
            labels: row.get(4)?,
            attributes: row.get(5)?,
            disabled: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            token_rotated_at: row.get(9)?,
        })
    }

    fn into_device(self) -> Result<Device> {
        let labels = match self.labels {
            Some(json) => serde_json::from_str(&json)?,
            None => BTreeMap::new(),
        };
        Ok(Device {
            id: self.id,
            tenant: self.tenant,
            name: self.name,
            profile: self.profile,
            labels,
            attributes: serde_json::from_str(&self.attributes)?,
            disabled: self.disabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
            token_rotated_at: self.token_rotated_at,
        })
    }
}

/// Stands in for the stored hash of an unknown device so the comparison still runs.
const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Registry {
    /// Creates a device in `tenant` and returns it with its first token (shown once).
    pub fn create_device(&self, tenant: &str, new: &NewDevice) -> Result<(Device, String)> {
        validate::device_id(&new.id)?;
        let name = match &new.name {
            Some(name) => {
                validate::name("name", name, 0)?;
                name.clone()
            }
            None => new.id.clone(),
        };
        let profile = match &new.profile {
            Some(profile) => {
                validate::identifier("profile", profile)?;
                profile.clone()
            }
            None => DEFAULT_PROFILE.to_string(),
        };
        validate::labels(&new.labels)?;
        let attributes = new
            .attributes
            .clone()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let attributes_json = validate::attributes(&attributes)?;
        let token = secret::new_secret(DEVICE_TOKEN_PREFIX)?;
        let token_hash = secret::hash(&token);
        let now = now_ms();

        self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let taken: Option<i64> = tx
                .query_row("SELECT 1 FROM devices WHERE id = ?1", [&new.id], |r| {
                    r.get(0)
                })
                .optional()?;
            if taken.is_some() {
                return Err(Error::already_exists("device", &new.id));
            }
            tx.execute(
                "INSERT INTO devices (id, tenant, name, profile, attributes, disabled, token_hash,
                                      created_at, updated_at, token_rotated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)",
                params![
                    new.id,
                    tenant,
                    name,
                    profile,
                    attributes_json,
                    new.disabled,
                    token_hash,
                    now
                ],
            )?;
            insert_labels(tx, tx.last_insert_rowid(), tenant, &new.labels)
        })?;

        let device = Device {
            id: new.id.clone(),
            tenant: tenant.to_string(),
            name,
            profile,
            labels: new.labels.clone(),
            attributes,
            disabled: new.disabled,
            created_at: now,
            updated_at: now,
            token_rotated_at: now,
        };
        Ok((device, token))
    }

    pub fn get_device(&self, tenant: &str, id: &str) -> Result<Device> {
        let conn = self.read_conn();
        load_device(&conn, tenant, id)
    }

    /// One page of the tenant's devices matching `q`, by id, with the total match count.
    pub fn list_devices(&self, tenant: &str, q: &DeviceQuery) -> Result<DevicePage> {
        validate::limit(q.limit)?;
        if q.label.len() > MAX_LABEL_FILTERS {
            return Err(Error::invalid(
                "label",
                format!("at most {MAX_LABEL_FILTERS} label filters"),
            ));
        }
        let ListSql {
            page_sql,
            page_args,
            count_sql,
            count_args,
        } = list_sql(tenant, q);
        let (rows, total) = {
            let conn = self.conn();
            let rows = conn
                .prepare_cached(&page_sql)?
                .query_map(params_from_iter(page_args), DeviceRow::read)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let total: i64 = conn
                .prepare_cached(&count_sql)?
                .query_row(params_from_iter(count_args), |r| r.get(0))?;
            (rows, total)
        };

        let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        let devices = rows
            .into_iter()
            .take(limit)
            .map(DeviceRow::into_device)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more {
            devices.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DevicePage {
            devices,
            next_cursor,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// Every device id of `tenant`, by id (for cleaning up telemetry when a tenant goes).
    pub fn all_device_ids(&self, tenant: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id FROM devices WHERE tenant = ?1 ORDER BY id")?;
        let ids = stmt.query_map([tenant], |r| r.get(0))?;
        Ok(ids.collect::<rusqlite::Result<_>>()?)
    }

    /// Applies `patch` and returns the device as stored.
    pub fn update_device(&self, tenant: &str, id: &str, patch: &DevicePatch) -> Result<Device> {
        if let Some(name) = &patch.name {
            validate::name("name", name, 0)?;
        }
        if let Some(profile) = &patch.profile {
            validate::identifier("profile", profile)?;
        }
        if let Some(labels) = &patch.labels {
            validate::labels(labels)?;
        }
        let attributes_json = patch
            .attributes
            .as_ref()
            .map(validate::attributes)
            .transpose()?;
        let now = now_ms();
        let device = self.write(|tx| {
            let pk: i64 = tx
                .query_row(
                    "SELECT pk FROM devices WHERE tenant = ?1 AND id = ?2",
                    [tenant, id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("device", id))?;
            tx.execute(
                "UPDATE devices SET name = coalesce(?1, name), profile = coalesce(?2, profile),
                        attributes = coalesce(?3, attributes), disabled = coalesce(?4, disabled),
                        updated_at = ?5
                 WHERE pk = ?6",
                params![
                    patch.name,
                    patch.profile,
                    attributes_json,
                    patch.disabled,
                    now,
                    pk
                ],
            )?;
            if let Some(labels) = &patch.labels {
                tx.execute("DELETE FROM device_labels WHERE device_pk = ?1", [pk])?;
                insert_labels(tx, pk, tenant, labels)?;
            }
            load_device(tx, tenant, id)
        })?;
        if patch.profile.is_some() {
            self.bump_profile_generation();
        }
        Ok(device)
    }

    /// Deletes the device with its labels and commands.
    pub fn delete_device(&self, tenant: &str, id: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM devices WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?)
        })?;
        if deleted == 0 {
            return Err(Error::not_found("device", id));
        }
        // A device re-created under this id may have another profile: cached profiles reload.
        self.bump_profile_generation();
        Ok(())
    }

    /// A new token for the device; the old one stops working with this call.
    pub fn rotate_device_token(&self, tenant: &str, id: &str) -> Result<String> {
        self.rotate_device_token_with_grace(tenant, id, 0)
    }

    /// A new token for the device. With `grace_ms > 0` the current token keeps working for that
    /// long (devices in the field switch over without downtime); a rotation during a grace
    /// period ends it (only the token being replaced gets the grace).
    pub fn rotate_device_token_with_grace(
        &self,
        tenant: &str,
        id: &str,
        grace_ms: i64,
    ) -> Result<String> {
        if !(0..=MAX_TOKEN_GRACE_MS).contains(&grace_ms) {
            return Err(Error::invalid(
                "grace_s",
                format!("must be 0 to {} seconds", MAX_TOKEN_GRACE_MS / 1000),
            ));
        }
        let token = secret::new_secret(DEVICE_TOKEN_PREFIX)?;
        let token_hash = secret::hash(&token);
        let now = now_ms();
        let expires = (grace_ms > 0).then_some(now.saturating_add(grace_ms));
        let updated = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE devices SET
                        previous_token_hash = CASE WHEN ?5 IS NULL THEN NULL ELSE token_hash END,
                        previous_token_expires_at = ?5,
                        token_hash = ?1, token_rotated_at = ?2
                 WHERE tenant = ?3 AND id = ?4",
                params![token_hash, now, tenant, id, expires],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::not_found("device", id));
        }
        Ok(token)
    }

    /// Device id + token → identity, for MQTT CONNECT and HTTP ingest. `None` for an unknown
    /// device, a wrong token or a disabled device, indistinguishably.
    pub fn authenticate_device(
        &self,
        device_id: &str,
        token: &str,
    ) -> Result<Option<DeviceIdentity>> {
        if !validate::is_plausible_device_id(device_id) || token.len() > MAX_PRESENTED_SECRET_LEN {
            return Ok(None);
        }
        let presented = secret::hash(token);
        type Row = (String, String, bool, Option<String>, Option<i64>);
        let found: Option<Row> = {
            let conn = self.read_conn();
            conn.prepare_cached(
                "SELECT tenant, token_hash, disabled, previous_token_hash, previous_token_expires_at
                 FROM devices WHERE id = ?1",
            )?
            .query_row([device_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?
        };
        let stored = found
            .as_ref()
            .map_or(DUMMY_HASH, |(_, hash, ..)| hash.as_str());
        // Both comparisons always run, so timing says nothing about which one matched.
        let previous = found
            .as_ref()
            .and_then(|(_, _, _, hash, expires)| {
                hash.as_deref()
                    .filter(|_| expires.is_some_and(|e| e > now_ms()))
            })
            .unwrap_or(DUMMY_HASH);
        let current_matches = secret::hashes_equal(stored, &presented);
        let previous_matches = secret::hashes_equal(previous, &presented) && previous != DUMMY_HASH;
        let matches = current_matches | previous_matches;
        match found {
            Some((tenant, _, disabled, ..)) if matches && !disabled => Ok(Some(DeviceIdentity {
                tenant,
                device_id: device_id.to_string(),
            })),
            _ => Ok(None),
        }
    }
}

/// The SQL of one list page and of its total count, with their arguments.
struct ListSql {
    page_sql: String,
    page_args: Vec<SqlValue>,
    count_sql: String,
    count_args: Vec<SqlValue>,
}

fn list_sql(tenant: &str, q: &DeviceQuery) -> ListSql {
    let mut filter = String::from("d.tenant = ?");
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(tenant.to_string())];
    if let Some(profile) = &q.profile {
        filter.push_str(" AND d.profile = ?");
        args.push(SqlValue::Text(profile.clone()));
    }
    for (key, value) in &q.label {
        filter.push_str(
            " AND d.pk IN (SELECT device_pk FROM device_labels \
             WHERE tenant = ? AND key = ? AND value = ?)",
        );
        args.push(SqlValue::Text(tenant.to_string()));
        args.push(SqlValue::Text(key.clone()));
        args.push(SqlValue::Text(value.clone()));
    }
    if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
        // SQLite's lower() folds ASCII only; fold the needle the same way.
        filter.push_str(" AND (instr(lower(d.id), ?) > 0 OR instr(lower(d.name), ?) > 0)");
        let needle = search.to_ascii_lowercase();
        args.push(SqlValue::Text(needle.clone()));
        args.push(SqlValue::Text(needle));
    }
    let count_sql = format!("SELECT count(*) FROM devices d WHERE {filter}");
    let count_args = args.clone();
    if let Some(cursor) = &q.cursor {
        filter.push_str(" AND d.id > ?");
        args.push(SqlValue::Text(cursor.clone()));
    }
    // One extra row tells whether another page follows.
    args.push(SqlValue::Integer(i64::from(q.limit) + 1));
    let page_sql =
        format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE {filter} ORDER BY d.id LIMIT ?");

    ListSql {
        page_sql,
        page_args: args,
        count_sql,
        count_args,
    }
}

fn load_device(conn: &Connection, tenant: &str, id: &str) -> Result<Device> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.tenant = ?1 AND d.id = ?2"
    ))?
    .query_row([tenant, id], DeviceRow::read)
    .optional()?
    .ok_or_else(|| Error::not_found("device", id))?
    .into_device()
}

fn insert_labels(
    conn: &Connection,
    device_pk: i64,
    tenant: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO device_labels (device_pk, tenant, key, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (key, value) in labels {
        stmt.execute(params![device_pk, tenant, key, value])?;
    }
    Ok(())
}

#[cfg(test)]
mod plan_tests {
    //! The list queries must be driven by indexes, not full scans of `devices`: checked with
    //! `EXPLAIN QUERY PLAN` rather than timings, so the test is fast and deterministic.

    use super::*;

    fn plan(registry: &Registry, sql: &str, args: &[SqlValue]) -> String {
        let conn = registry.conn();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    fn assert_indexed(plan: &str) {
        for line in plan.lines() {
            let scans_devices = line.starts_with("SCAN d") && !line.contains("INDEX");
            assert!(!scans_devices, "full scan of devices:\n{plan}");
            assert!(!line.starts_with("SCAN l"), "full scan of labels:\n{plan}");
        }
    }

    #[test]
    fn list_queries_use_indexes() {
        let registry = Registry::open_in_memory().unwrap();
        let queries = [
            DeviceQuery::default(),
            DeviceQuery {
                cursor: Some("x".into()),
                ..DeviceQuery::default()
            },
            DeviceQuery {
                profile: Some("p".into()),
                cursor: Some("x".into()),
                ..DeviceQuery::default()
            },
            DeviceQuery {
                label: vec![("env".into(), "prod".into()), ("zone".into(), "a".into())],
                ..DeviceQuery::default()
            },
            DeviceQuery {
                search: Some("k".into()),
                ..DeviceQuery::default()
            },
        ];
        for q in queries {
            let sql = list_sql("t", &q);
            let page = plan(&registry, &sql.page_sql, &sql.page_args);
            assert_indexed(&page);
            assert!(!page.contains("TEMP B-TREE FOR ORDER BY"), "{page}");
            assert_indexed(&plan(&registry, &sql.count_sql, &sql.count_args));
        }
    }

    #[test]
    fn point_lookups_use_indexes() {
        let registry = Registry::open_in_memory().unwrap();
        for (sql, args) in [
            (
                format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.tenant = ?1 AND d.id = ?2"),
                vec!["t", "d"],
            ),
            (
                "SELECT tenant, token_hash, disabled FROM devices WHERE id = ?1".to_string(),
                vec!["d"],
            ),
        ] {
            let args: Vec<SqlValue> = args.into_iter().map(|a| SqlValue::Text(a.into())).collect();
            let plan = plan(&registry, &sql, &args);
            assert!(!plan.contains("SCAN"), "{plan}");
        }
    }
}
