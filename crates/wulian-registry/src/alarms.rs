//! Alarms: a condition on a device that someone should know about, with a lifecycle
//! (`active → acknowledged → cleared`, or `active → cleared`) and deduplication — at most one
//! open (not cleared) alarm per device and type; raising it again counts and updates it.
//! Cleared alarms stay as history.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, validate};

pub const SEVERITIES: &[&str] = &["critical", "major", "minor", "warning", "indeterminate"];
const MAX_ALARM_DETAILS_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: String,
    pub device_id: String,
    /// e.g. `high_temperature`, `inactive`, `geofence_exit`.
    #[serde(rename = "type")]
    pub alarm_type: String,
    pub severity: String,
    /// `active`, `acknowledged` or `cleared`.
    pub status: String,
    /// What raised it: `rule:<id>`, `presence`, `api:<key id>`.
    pub source: String,
    /// A JSON object: the values that triggered it (latest raise).
    pub details: Value,
    /// How many times it was raised while open.
    pub count: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<i64>,
}

/// What changed, for notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmChange {
    Raised,
    /// Raised again while open (count + 1).
    Updated,
    Acknowledged,
    Cleared,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AlarmQuery {
    pub device_id: Option<String>,
    pub alarm_type: Option<String>,
    /// `open` (active or acknowledged), `active`, `acknowledged`, `cleared`.
    pub status: Option<String>,
    /// One of [`SEVERITIES`].
    pub severity: Option<String>,
    /// Alarms created before this (ms), for paging back.
    pub before: Option<i64>,
    /// With `before`: the id of the last alarm of the previous page. Alarms created in that
    /// same millisecond with a greater id follow it (the list's order is `created_at` newest
    /// first, then `id`), so a page boundary inside one millisecond neither skips nor repeats.
    pub before_id: Option<String>,
    pub limit: u32,
}

const ALARM_COLUMNS: &str = "id, device_id, type, severity, status, source, details, count, \
     created_at, updated_at, acknowledged_at, acknowledged_by, cleared_at";

fn read_alarm(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Alarm, String)> {
    Ok((
        Alarm {
            id: r.get(0)?,
            device_id: r.get(1)?,
            alarm_type: r.get(2)?,
            severity: r.get(3)?,
            status: r.get(4)?,
            source: r.get(5)?,
            details: Value::Null,
            count: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            acknowledged_at: r.get(10)?,
            acknowledged_by: r.get(11)?,
            cleared_at: r.get(12)?,
        },
        r.get(6)?,
    ))
}

fn finish((mut alarm, details): (Alarm, String)) -> Result<Alarm> {
    alarm.details = serde_json::from_str(&details)?;
    Ok(alarm)
}

fn check_type(alarm_type: &str) -> Result<()> {
    let ok = !alarm_type.is_empty()
        && alarm_type.len() <= 64
        && alarm_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "type",
            "1 to 64 characters of A-Z a-z 0-9 _ . -",
        ))
    }
}

impl Registry {
    /// Raises an alarm on a device, or updates the open one of the same type. Returns the alarm
    /// and whether it was new.
    pub fn raise_alarm(
        &self,
        tenant: &str,
        device_id: &str,
        alarm_type: &str,
        severity: &str,
        source: &str,
        details: &Value,
    ) -> Result<(Alarm, AlarmChange)> {
        check_type(alarm_type)?;
        if !SEVERITIES.contains(&severity) {
            return Err(Error::invalid(
                "severity",
                format!("one of {}", SEVERITIES.join(", ")),
            ));
        }
        let details_json = serde_json::to_string(details)?;
        if !details.is_object() || details_json.len() > MAX_ALARM_DETAILS_BYTES {
            return Err(Error::invalid(
                "details",
                format!("a JSON object of at most {MAX_ALARM_DETAILS_BYTES} bytes"),
            ));
        }
        let now = now_ms();
        let new_id = format!("al-{}", secret::random_hex(8)?);
        self.write(|tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM devices WHERE tenant = ?1 AND id = ?2",
                    [tenant, device_id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(Error::not_found("device", device_id));
            }
            let open: Option<String> = tx
                .query_row(
                    "SELECT id FROM alarms WHERE tenant = ?1 AND device_id = ?2 AND type = ?3
                     AND status != 'cleared'",
                    [tenant, device_id, alarm_type],
                    |r| r.get(0),
                )
                .optional()?;
            let (id, change) = match open {
                Some(id) => {
                    tx.execute(
                        "UPDATE alarms SET severity = ?1, details = ?2, count = count + 1,
                                updated_at = ?3, source = ?4 WHERE id = ?5",
                        params![severity, details_json, now, source, id],
                    )?;
                    (id, AlarmChange::Updated)
                }
                None => {
                    tx.execute(
                        "INSERT INTO alarms (id, tenant, device_id, type, severity, status, source,
                                details, count, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, 1, ?8, ?8)",
                        params![
                            new_id,
                            tenant,
                            device_id,
                            alarm_type,
                            severity,
                            source,
                            details_json,
                            now
                        ],
                    )?;
                    (new_id.clone(), AlarmChange::Raised)
                }
            };
            Ok((load_alarm(tx, tenant, &id)?, change))
        })
    }

    /// Clears the open alarm of a device and type; `None` when there is none.
    pub fn clear_alarm(
        &self,
        tenant: &str,
        device_id: &str,
        alarm_type: &str,
    ) -> Result<Option<Alarm>> {
        let now = now_ms();
        self.write(|tx| {
            let open: Option<String> = tx
                .query_row(
                    "SELECT id FROM alarms WHERE tenant = ?1 AND device_id = ?2 AND type = ?3
                     AND status != 'cleared'",
                    [tenant, device_id, alarm_type],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = open else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE alarms SET status = 'cleared', cleared_at = ?1, updated_at = ?1 WHERE id = ?2",
                params![now, id],
            )?;
            Ok(Some(load_alarm(tx, tenant, &id)?))
        })
    }

    /// Clears an alarm by id (operators); `Conflict` if it is already cleared.
    pub fn clear_alarm_by_id(&self, tenant: &str, id: &str) -> Result<Alarm> {
        let now = now_ms();
        self.write(|tx| {
            let alarm = load_alarm(tx, tenant, id)?;
            if alarm.status == "cleared" {
                return Err(Error::Conflict(format!("alarm {id} is already cleared")));
            }
            tx.execute(
                "UPDATE alarms SET status = 'cleared', cleared_at = ?1, updated_at = ?1 WHERE id = ?2",
                params![now, id],
            )?;
            load_alarm(tx, tenant, id)
        })
    }

    /// Acknowledges an active alarm; `Conflict` unless it is active.
    pub fn acknowledge_alarm(&self, tenant: &str, id: &str, by: &str) -> Result<Alarm> {
        let now = now_ms();
        self.write(|tx| {
            let alarm = load_alarm(tx, tenant, id)?;
            if alarm.status != "active" {
                return Err(Error::Conflict(format!(
                    "alarm {id} is {}; only active alarms are acknowledged",
                    alarm.status
                )));
            }
            tx.execute(
                "UPDATE alarms SET status = 'acknowledged', acknowledged_at = ?1,
                        acknowledged_by = ?2, updated_at = ?1 WHERE id = ?3",
                params![now, by, id],
            )?;
            load_alarm(tx, tenant, id)
        })
    }

    pub fn get_alarm(&self, tenant: &str, id: &str) -> Result<Alarm> {
        let conn = self.conn();
        load_alarm(&conn, tenant, id)
    }

    /// Alarms matching `q`, newest first.
    pub fn list_alarms(&self, tenant: &str, q: &AlarmQuery) -> Result<Vec<Alarm>> {
        validate::limit(q.limit)?;
        let mut sql = format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE tenant = ?");
        let mut args = vec![SqlValue::Text(tenant.to_string())];
        if let Some(device) = &q.device_id {
            sql.push_str(" AND device_id = ?");
            args.push(SqlValue::Text(device.clone()));
        }
        if let Some(t) = &q.alarm_type {
            sql.push_str(" AND type = ?");
            args.push(SqlValue::Text(t.clone()));
        }
        match q.status.as_deref() {
            None => {}
            Some("open") => sql.push_str(" AND status != 'cleared'"),
            Some(s @ ("active" | "acknowledged" | "cleared")) => {
                sql.push_str(" AND status = ?");
                args.push(SqlValue::Text(s.to_string()));
            }
            Some(other) => {
                return Err(Error::invalid(
                    "status",
                    format!("{other:?}: one of open, active, acknowledged, cleared"),
                ));
            }
        }
        if let Some(severity) = &q.severity {
            if !SEVERITIES.contains(&severity.as_str()) {
                return Err(Error::invalid(
                    "severity",
                    format!("{severity:?}: one of {}", SEVERITIES.join(", ")),
                ));
            }
            sql.push_str(" AND severity = ?");
            args.push(SqlValue::Text(severity.clone()));
        }
        match (q.before, &q.before_id) {
            (Some(before), None) => {
                sql.push_str(" AND created_at < ?");
                args.push(SqlValue::Integer(before));
            }
            (Some(before), Some(id)) => {
                sql.push_str(" AND (created_at < ? OR (created_at = ? AND id > ?))");
                args.push(SqlValue::Integer(before));
                args.push(SqlValue::Integer(before));
                args.push(SqlValue::Text(id.clone()));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "before_id",
                    "only with before (the created_at of the alarm it names)",
                ));
            }
            (None, None) => {}
        }
        sql.push_str(" ORDER BY created_at DESC, id LIMIT ?");
        args.push(SqlValue::Integer(i64::from(q.limit)));
        let rows = {
            let conn = self.conn();
            conn.prepare(&sql)?
                .query_map(params_from_iter(args), read_alarm)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        rows.into_iter().map(finish).collect()
    }
}

fn load_alarm(conn: &Connection, tenant: &str, id: &str) -> Result<Alarm> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {ALARM_COLUMNS} FROM alarms WHERE tenant = ?1 AND id = ?2"
        ))?
        .query_row([tenant, id], read_alarm)
        .optional()?
        .ok_or_else(|| Error::not_found("alarm", id))?;
    finish(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{new_device, registry_with_tenant};
    use serde_json::json;

    #[test]
    fn lifecycle_and_dedup() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        reg.create_device(&t, &new_device("d1")).unwrap();
        let (a, change) = reg
            .raise_alarm(&t, "d1", "hot", "major", "rule:r1", &json!({"temp": 90}))
            .unwrap();
        assert_eq!(
            (a.status.as_str(), change, a.count),
            ("active", AlarmChange::Raised, 1)
        );
        let (b, change) = reg
            .raise_alarm(&t, "d1", "hot", "critical", "rule:r1", &json!({"temp": 95}))
            .unwrap();
        assert_eq!(
            (b.id.as_str(), change, b.count),
            (a.id.as_str(), AlarmChange::Updated, 2)
        );
        assert_eq!(
            (b.severity.as_str(), &b.details),
            ("critical", &json!({"temp": 95}))
        );
        let acked = reg.acknowledge_alarm(&t, &a.id, "api_key:k1").unwrap();
        assert_eq!(acked.status, "acknowledged");
        assert!(reg.acknowledge_alarm(&t, &a.id, "k").is_err());
        // Raising an acknowledged alarm updates it (still open).
        let (c, change) = reg
            .raise_alarm(&t, "d1", "hot", "major", "rule:r1", &json!({}))
            .unwrap();
        assert_eq!(
            (c.id, c.status.as_str(), change),
            (a.id.clone(), "acknowledged", AlarmChange::Updated)
        );
        let cleared = reg.clear_alarm(&t, "d1", "hot").unwrap().unwrap();
        assert_eq!(cleared.status, "cleared");
        assert!(reg.clear_alarm(&t, "d1", "hot").unwrap().is_none());
        // After clearing, a new raise is a new alarm; the old one is history.
        let (d, change) = reg
            .raise_alarm(&t, "d1", "hot", "minor", "rule:r1", &json!({}))
            .unwrap();
        assert_ne!(d.id, a.id);
        assert_eq!(change, AlarmChange::Raised);
        let open = reg
            .list_alarms(
                &t,
                &AlarmQuery {
                    status: Some("open".into()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(open.len(), 1);
        let all = reg
            .list_alarms(
                &t,
                &AlarmQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(all.len(), 2);
        assert!(
            reg.raise_alarm(&t, "d1", "hot", "loud", "x", &json!({}))
                .is_err()
        );
        assert!(
            reg.raise_alarm(&t, "d1", "bad type", "minor", "x", &json!({}))
                .is_err()
        );
        assert!(
            reg.raise_alarm(&t, "ghost", "hot", "minor", "x", &json!({}))
                .is_err()
        );
        assert!(matches!(
            reg.get_alarm("other", &d.id),
            Err(Error::NotFound { .. })
        ));
    }

    /// Raises `n` alarms (types `t0`..) on `device` with `severity`, all created at `at` ms.
    fn raise_at(reg: &Registry, t: &str, device: &str, severity: &str, n: usize, at: i64) {
        for i in 0..n {
            let (a, _) = reg
                .raise_alarm(t, device, &format!("t{i}"), severity, "x", &json!({}))
                .unwrap();
            reg.write(|tx| {
                tx.execute(
                    "UPDATE alarms SET created_at = ?1 WHERE id = ?2",
                    params![at, a.id],
                )?;
                Ok(())
            })
            .unwrap();
        }
    }

    #[test]
    fn pages_split_inside_one_millisecond_neither_skip_nor_repeat() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        reg.create_device(&t, &new_device("d1")).unwrap();
        reg.create_device(&t, &new_device("d2")).unwrap();
        // Five alarms in one millisecond, two older ones in another: pages of two split both.
        raise_at(&reg, &t, "d1", "major", 5, 2_000);
        raise_at(&reg, &t, "d2", "major", 2, 1_000);
        let all = reg
            .list_alarms(
                &t,
                &AlarmQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(all.len(), 7);
        let mut paged = Vec::new();
        let mut q = AlarmQuery {
            limit: 2,
            ..Default::default()
        };
        loop {
            let page = reg.list_alarms(&t, &q).unwrap();
            let Some(last) = page.last() else { break };
            q.before = Some(last.created_at);
            q.before_id = Some(last.id.clone());
            paged.extend(page.into_iter().map(|a| a.id));
        }
        let expected: Vec<String> = all.into_iter().map(|a| a.id).collect();
        assert_eq!(paged, expected);
        // `before` alone is "created before": it skips the rest of a millisecond.
        let older = reg
            .list_alarms(
                &t,
                &AlarmQuery {
                    before: Some(2_000),
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(older.len(), 2);
        let lone = reg.list_alarms(
            &t,
            &AlarmQuery {
                before_id: Some(expected[0].clone()),
                limit: 2,
                ..Default::default()
            },
        );
        assert!(matches!(lone, Err(Error::Invalid { .. })), "{lone:?}");
    }

    #[test]
    fn severity_type_and_device_filter_in_the_query() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        reg.create_device(&t, &new_device("d1")).unwrap();
        reg.create_device(&t, &new_device("d2")).unwrap();
        raise_at(&reg, &t, "d1", "minor", 30, 1_000);
        raise_at(&reg, &t, "d2", "critical", 2, 500);
        let q =
            |severity: Option<&str>, device: Option<&str>, alarm_type: Option<&str>| AlarmQuery {
                severity: severity.map(str::to_string),
                device_id: device.map(str::to_string),
                alarm_type: alarm_type.map(str::to_string),
                limit: 10,
                ..Default::default()
            };
        // The two critical alarms are older than 30 minor ones, yet one page of 10 has them.
        let critical = reg
            .list_alarms(&t, &q(Some("critical"), None, None))
            .unwrap();
        assert_eq!(critical.len(), 2);
        assert!(
            critical
                .iter()
                .all(|a| a.severity == "critical" && a.device_id == "d2")
        );
        assert!(
            reg.list_alarms(&t, &q(Some("critical"), Some("d1"), None))
                .unwrap()
                .is_empty()
        );
        let one = reg
            .list_alarms(&t, &q(Some("minor"), Some("d1"), Some("t7")))
            .unwrap();
        assert_eq!((one.len(), one[0].alarm_type.as_str()), (1, "t7"));
        assert_eq!(
            reg.list_alarms(&t, &q(None, None, Some("t1")))
                .unwrap()
                .len(),
            2
        );
        let bad = reg.list_alarms(&t, &q(Some("loud"), None, None));
        assert!(matches!(bad, Err(Error::Invalid { .. })), "{bad:?}");
        // Another tenant sees none of them.
        let other = reg
            .create_tenant(&crate::test_support::new_tenant("other"))
            .unwrap();
        assert!(
            reg.list_alarms(&other.id, &q(Some("critical"), None, None))
                .unwrap()
                .is_empty()
        );
    }
}
