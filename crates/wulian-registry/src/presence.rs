//! Persisted presence: the last known connectivity of each device, written in batches by the
//! ingest side's presence tracker (which keeps the live state in memory — a database write per
//! message would cost more than the message) and read back at start.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::error::Result;

/// One device's connectivity as last saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub tenant: String,
    pub device_id: String,
    pub online: bool,
    pub last_seen_at: Option<i64>,
    pub connected_at: Option<i64>,
    pub disconnected_at: Option<i64>,
    pub disconnect_reason: Option<String>,
    /// Details of the last connection (protocol, client, remote address, TLS): a JSON object's
    /// text, stored as it is (parsed, a fleet's worth of them is megabytes of small maps).
    pub connection: Option<String>,
    pub messages_in: u64,
    pub bytes_in: u64,
}

impl Registry {
    /// Upserts presence records in one transaction. Records of devices that no longer exist are
    /// skipped (a device deleted between two saves).
    pub fn save_presence(&self, records: &[PresenceRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO device_presence (tenant, device_id, online, last_seen_at, connected_at,
                        disconnected_at, disconnect_reason, connection, messages_in, bytes_in)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                 WHERE EXISTS (SELECT 1 FROM devices WHERE tenant = ?1 AND id = ?2)
                 ON CONFLICT (tenant, device_id) DO UPDATE SET online = ?3, last_seen_at = ?4,
                        connected_at = ?5, disconnected_at = ?6, disconnect_reason = ?7,
                        connection = ?8, messages_in = ?9, bytes_in = ?10",
            )?;
            for r in records {
                let connection = r.connection.as_deref();
                stmt.execute(params![
                    r.tenant,
                    r.device_id,
                    r.online,
                    r.last_seen_at,
                    r.connected_at,
                    r.disconnected_at,
                    r.disconnect_reason,
                    connection,
                    i64::try_from(r.messages_in).unwrap_or(i64::MAX),
                    i64::try_from(r.bytes_in).unwrap_or(i64::MAX),
                ])?;
            }
            Ok(())
        })
    }

    /// Every saved presence record (read once at start).
    pub fn load_presence(&self) -> Result<Vec<PresenceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT tenant, device_id, online, last_seen_at, connected_at, disconnected_at,
                    disconnect_reason, connection, messages_in, bytes_in
             FROM device_presence",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PresenceRecord {
                tenant: r.get(0)?,
                device_id: r.get(1)?,
                online: r.get(2)?,
                last_seen_at: r.get(3)?,
                connected_at: r.get(4)?,
                disconnected_at: r.get(5)?,
                disconnect_reason: r.get(6)?,
                connection: r.get(7)?,
                messages_in: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                bytes_in: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{new_device, registry_with_tenant};

    #[test]
    fn presence_round_trips_and_skips_deleted_devices() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        reg.create_device(&tenant.id, &new_device("d1")).unwrap();
        let record = PresenceRecord {
            tenant: tenant.id.clone(),
            device_id: "d1".into(),
            online: true,
            last_seen_at: Some(5),
            connection: Some(r#"{"protocol":"mqtt"}"#.to_string()),
            messages_in: 3,
            bytes_in: 99,
            ..Default::default()
        };
        let ghost = PresenceRecord {
            device_id: "gone".into(),
            ..record.clone()
        };
        reg.save_presence(&[record.clone(), ghost]).unwrap();
        assert_eq!(reg.load_presence().unwrap(), vec![record.clone()]);
        let offline = PresenceRecord {
            online: false,
            messages_in: 4,
            ..record
        };
        reg.save_presence(std::slice::from_ref(&offline)).unwrap();
        assert_eq!(reg.load_presence().unwrap(), vec![offline]);
    }
}
