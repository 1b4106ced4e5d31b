//! Over-the-air updates: firmware records (the bytes live in files, see wulian-ingest's `ota`),
//! per-tenant Ed25519 signing keys, and campaigns with one row per targeted device.
//!
//! A campaign snapshots its devices when created (profile, labels and/or ids), then the engine
//! moves them `pending → notified → downloading/downloaded/installing → succeeded|failed`, a
//! batch at a time; `cancelled` ends a device that was never finished. These functions are the
//! engine's primitives, each one transaction.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, validate};

/// Devices one campaign may target.
pub const MAX_CAMPAIGN_DEVICES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    pub id: String,
    pub tenant: String,
    /// The device profile the image is for.
    pub profile: String,
    pub version: String,
    pub size: u64,
    /// Hex SHA-256 of the image.
    pub sha256: String,
    /// Hex Ed25519 signature of the 32-byte SHA-256 digest, by the tenant's OTA signing key.
    pub signature: String,
    pub created_at: i64,
}

/// Which devices a campaign updates: every device matching all the given filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCampaign {
    pub name: String,
    pub firmware_id: String,
    pub target: CampaignTarget,
    /// Devices updated at once; or `batch_percent` of the targeted devices (rounded up).
    pub batch_size: Option<u32>,
    pub batch_percent: Option<u32>,
    /// Abort when more than this share of finished devices failed …
    pub failure_threshold_pct: u32,
    /// … and at least this many failed.
    pub min_failures: u32,
    /// A device that has not finished this long after it was notified has failed (`timed_out`).
    pub device_timeout_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCounts {
    pub total: u64,
    pub pending: u64,
    /// Notified, downloading, downloaded or installing.
    pub in_progress: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub firmware_id: String,
    pub target: CampaignTarget,
    pub batch_size: u32,
    pub failure_threshold_pct: u32,
    pub min_failures: u32,
    pub device_timeout_ms: i64,
    /// `running`, `completed`, `aborted` or `cancelled`.
    pub status: String,
    pub status_reason: Option<String>,
    pub counts: CampaignCounts,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDevice {
    pub device_id: String,
    pub state: String,
    pub progress: u8,
    pub error: Option<String>,
    pub notified_at: Option<i64>,
    pub updated_at: i64,
}

/// States a device reports; the engine sets `notified`, `failed` (time-out) and `cancelled`.
pub const REPORTABLE_STATES: &[&str] = &[
    "downloading",
    "downloaded",
    "installing",
    "succeeded",
    "failed",
];
const IN_PROGRESS: &str = "('notified', 'downloading', 'downloaded', 'installing')";

impl Registry {
    /// The tenant's OTA signing key pair (PKCS#8, raw public key), if created.
    pub fn ota_signing_key(&self, tenant: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached("SELECT pkcs8, public_key FROM ota_signing_keys WHERE tenant = ?1")?
            .query_row([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Stores a key pair unless the tenant has one; returns the tenant's key either way.
    pub fn store_ota_signing_key(
        &self,
        tenant: &str,
        pkcs8: &[u8],
        public_key: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let now = now_ms();
        self.write(|tx| {
            crate::tenants::require_tenant(tx, tenant)?;
            tx.execute(
                "INSERT INTO ota_signing_keys (tenant, pkcs8, public_key, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![tenant, pkcs8, public_key, now],
            )?;
            Ok(tx.query_row(
                "SELECT pkcs8, public_key FROM ota_signing_keys WHERE tenant = ?1",
                [tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
    }

    /// A new firmware id (`fw-` + 16 hex).
    pub fn new_firmware_id(&self) -> Result<String> {
        Ok(format!("fw-{}", secret::random_hex(8)?))
    }

    pub fn create_firmware(&self, firmware: &Firmware) -> Result<()> {
        validate::identifier("profile", &firmware.profile)?;
        if firmware.version.is_empty() || firmware.version.len() > 64 {
            return Err(Error::invalid("version", "1 to 64 characters"));
        }
        self.write(|tx| {
            crate::tenants::require_tenant(tx, &firmware.tenant)?;
            let inserted = tx.execute(
                "INSERT INTO firmware (id, tenant, profile, version, size, sha256, signature, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                params![
                    firmware.id,
                    firmware.tenant,
                    firmware.profile,
                    firmware.version,
                    i64::try_from(firmware.size).unwrap_or(i64::MAX),
                    firmware.sha256,
                    firmware.signature,
                    firmware.created_at
                ],
            )?;
            if inserted == 0 {
                return Err(Error::already_exists(
                    "firmware",
                    &format!("{} {}", firmware.profile, firmware.version),
                ));
            }
            Ok(())
        })
    }

    pub fn get_firmware(&self, tenant: &str, id: &str) -> Result<Firmware> {
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT id, tenant, profile, version, size, sha256, signature, created_at
             FROM firmware WHERE tenant = ?1 AND id = ?2",
        )?
        .query_row([tenant, id], read_firmware)
        .optional()?
        .ok_or_else(|| Error::not_found("firmware", id))
    }

    pub fn list_firmware(&self, tenant: &str) -> Result<Vec<Firmware>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, tenant, profile, version, size, sha256, signature, created_at
             FROM firmware WHERE tenant = ?1 ORDER BY created_at DESC, id",
        )?;
        let rows = stmt.query_map([tenant], read_firmware)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a firmware record that no campaign uses (the caller removes the file).
    pub fn delete_firmware(&self, tenant: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            let used: i64 = tx.query_row(
                "SELECT count(*) FROM ota_campaigns WHERE tenant = ?1 AND firmware_id = ?2",
                [tenant, id],
                |r| r.get(0),
            )?;
            if used > 0 {
                return Err(Error::Conflict(format!(
                    "firmware {id:?} is used by {used} campaign(s)"
                )));
            }
            if tx.execute(
                "DELETE FROM firmware WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )? == 0
            {
                return Err(Error::not_found("firmware", id));
            }
            Ok(())
        })
    }

    /// Creates a campaign over the devices matching its target, all `pending`.
    pub fn create_campaign(&self, tenant: &str, new: &NewCampaign) -> Result<Campaign> {
        validate::name("name", &new.name, 1)?;
        if new.failure_threshold_pct > 100 {
            return Err(Error::invalid("failure_threshold_pct", "0 to 100"));
        }
        if !(1_000..=7 * 86_400_000).contains(&new.device_timeout_ms) {
            return Err(Error::invalid("device_timeout_ms", "1 s to 7 days"));
        }
        if new.target.profile.is_none()
            && new.target.labels.is_empty()
            && new.target.devices.is_empty()
        {
            return Err(Error::invalid(
                "target",
                "name a profile, labels or devices (an empty target would update everything)",
            ));
        }
        let id = format!("ota-{}", secret::random_hex(8)?);
        let now = now_ms();
        let target_json = serde_json::to_string(&new.target)?;
        self.write(|tx| {
            let firmware = tx
                .query_row(
                    "SELECT profile FROM firmware WHERE tenant = ?1 AND id = ?2",
                    [tenant, &new.firmware_id],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("firmware", &new.firmware_id))?;
            let devices = matching_devices(tx, tenant, &new.target)?;
            if devices.is_empty() {
                return Err(Error::invalid("target", "no device matches"));
            }
            if devices.len() > MAX_CAMPAIGN_DEVICES {
                return Err(Error::invalid(
                    "target",
                    format!("{} devices match; at most {MAX_CAMPAIGN_DEVICES}", devices.len()),
                ));
            }
            let batch = match (new.batch_size, new.batch_percent) {
                (Some(n), None) if n >= 1 => n,
                (None, Some(p)) if (1..=100).contains(&p) => {
                    u32::try_from((devices.len() * p as usize).div_ceil(100)).unwrap_or(u32::MAX).max(1)
                }
                (None, None) => u32::try_from(devices.len()).unwrap_or(u32::MAX),
                _ => {
                    return Err(Error::invalid(
                        "batch_size",
                        "give batch_size (at least 1) or batch_percent (1 to 100), not both",
                    ));
                }
            };
            tracing::debug!(firmware_profile = %firmware, devices = devices.len(), "Campaign targets.");
            tx.execute(
                "INSERT INTO ota_campaigns (id, tenant, name, firmware_id, target, batch_size,
                        failure_threshold_pct, min_failures, device_timeout_ms, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running', ?10, ?10)",
                params![
                    id,
                    tenant,
                    new.name,
                    new.firmware_id,
                    target_json,
                    batch,
                    new.failure_threshold_pct,
                    new.min_failures,
                    new.device_timeout_ms,
                    now
                ],
            )?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ota_campaign_devices (campaign_id, tenant, device_id, state, progress, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4)",
            )?;
            for device in &devices {
                stmt.execute(params![id, tenant, device, now])?;
            }
            load_campaign(tx, tenant, &id)
        })
    }

    pub fn get_campaign(&self, tenant: &str, id: &str) -> Result<Campaign> {
        let conn = self.conn();
        load_campaign(&conn, tenant, id)
    }

    pub fn list_campaigns(&self, tenant: &str) -> Result<Vec<Campaign>> {
        let conn = self.conn();
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT id FROM ota_campaigns WHERE tenant = ?1 ORDER BY created_at DESC, id",
            )?
            .query_map([tenant], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.iter()
            .map(|id| load_campaign(&conn, tenant, id))
            .collect()
    }

    /// Every running campaign of every tenant (for the engine).
    pub fn running_campaigns(&self) -> Result<Vec<Campaign>> {
        let conn = self.conn();
        let ids: Vec<(String, String)> = conn
            .prepare_cached(
                "SELECT tenant, id FROM ota_campaigns WHERE status = 'running' ORDER BY created_at",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        ids.iter()
            .map(|(t, id)| load_campaign(&conn, t, id))
            .collect()
    }

    pub fn campaign_devices(&self, tenant: &str, id: &str) -> Result<Vec<CampaignDevice>> {
        let conn = self.conn();
        load_campaign(&conn, tenant, id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, state, progress, error, notified_at, updated_at
             FROM ota_campaign_devices WHERE campaign_id = ?1 ORDER BY device_id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(CampaignDevice {
                device_id: r.get(0)?,
                state: r.get(1)?,
                progress: r.get(2)?,
                error: r.get(3)?,
                notified_at: r.get(4)?,
                updated_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks devices notified longer than `timeout` ago and not finished as failed (`timed_out`);
    /// returns them.
    pub fn ota_time_out(&self, campaign_id: &str, notified_before: i64) -> Result<Vec<String>> {
        let now = now_ms();
        self.write(|tx| {
            let ids: Vec<String> = tx
                .prepare_cached(&format!(
                    "SELECT device_id FROM ota_campaign_devices WHERE campaign_id = ?1
                     AND state IN {IN_PROGRESS} AND notified_at < ?2"
                ))?
                .query_map(params![campaign_id, notified_before], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            tx.execute(
                &format!(
                    "UPDATE ota_campaign_devices SET state = 'failed', error = 'timed_out', updated_at = ?3
                     WHERE campaign_id = ?1 AND state IN {IN_PROGRESS} AND notified_at < ?2"
                ),
                params![campaign_id, notified_before, now],
            )?;
            Ok(ids)
        })
    }

    /// Moves up to `n` pending devices to `notified`; returns them.
    pub fn ota_next_batch(&self, campaign_id: &str, n: u64) -> Result<Vec<String>> {
        let now = now_ms();
        self.write(|tx| {
            let ids: Vec<String> = tx
                .prepare_cached(
                    "SELECT device_id FROM ota_campaign_devices WHERE campaign_id = ?1 AND state = 'pending'
                     ORDER BY device_id LIMIT ?2",
                )?
                .query_map(params![campaign_id, i64::try_from(n).unwrap_or(i64::MAX)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = tx.prepare_cached(
                "UPDATE ota_campaign_devices SET state = 'notified', notified_at = ?3, updated_at = ?3
                 WHERE campaign_id = ?1 AND device_id = ?2",
            )?;
            for id in &ids {
                stmt.execute(params![campaign_id, id, now])?;
            }
            Ok(ids)
        })
    }

    /// Ends a running campaign with `status` (`completed`, `aborted`, `cancelled`): devices not
    /// finished become `cancelled`. Returns the devices that had been notified (their job
    /// message should be withdrawn). A campaign already ended is left as it is.
    pub fn ota_end_campaign(
        &self,
        tenant: &str,
        id: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<Vec<String>> {
        let now = now_ms();
        self.write(|tx| {
            let current: String = tx
                .query_row(
                    "SELECT status FROM ota_campaigns WHERE tenant = ?1 AND id = ?2",
                    [tenant, id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("campaign", id))?;
            if current != "running" {
                return Ok(Vec::new());
            }
            let notified: Vec<String> = tx
                .prepare_cached(&format!(
                    "SELECT device_id FROM ota_campaign_devices WHERE campaign_id = ?1 AND state IN {IN_PROGRESS}"
                ))?
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            tx.execute(
                &format!(
                    "UPDATE ota_campaign_devices SET state = 'cancelled', updated_at = ?2
                     WHERE campaign_id = ?1 AND (state = 'pending' OR state IN {IN_PROGRESS})"
                ),
                params![id, now],
            )?;
            tx.execute(
                "UPDATE ota_campaigns SET status = ?1, status_reason = ?2, updated_at = ?3 WHERE id = ?4",
                params![status, reason, now, id],
            )?;
            Ok(notified)
        })
    }

    /// A device's progress report for a campaign. Returns the device's row after the update;
    /// `Conflict` when the device is not in progress in that (running) campaign.
    pub fn ota_report(
        &self,
        tenant: &str,
        device_id: &str,
        campaign_id: &str,
        state: &str,
        progress: u8,
        error: Option<&str>,
    ) -> Result<CampaignDevice> {
        if !REPORTABLE_STATES.contains(&state) {
            return Err(Error::invalid(
                "state",
                format!("one of {}", REPORTABLE_STATES.join(", ")),
            ));
        }
        let now = now_ms();
        self.write(|tx| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT d.state FROM ota_campaign_devices d JOIN ota_campaigns c ON c.id = d.campaign_id
                     WHERE d.campaign_id = ?1 AND d.device_id = ?2 AND c.tenant = ?3 AND c.status = 'running'",
                    [campaign_id, device_id, tenant],
                    |r| r.get(0),
                )
                .optional()?;
            match current.as_deref() {
                None => return Err(Error::not_found("campaign", campaign_id)),
                Some("notified" | "downloading" | "downloaded" | "installing") => {}
                Some("pending") => {
                    return Err(Error::Conflict(format!(
                        "the device has not been sent campaign {campaign_id}'s update yet"
                    )));
                }
                Some(other) => {
                    return Err(Error::Conflict(format!(
                        "the device's update in campaign {campaign_id} is already {other}"
                    )));
                }
            }
            let progress = if state == "succeeded" { 100 } else { progress.min(100) };
            tx.execute(
                "UPDATE ota_campaign_devices SET state = ?1, progress = ?2, error = ?3, updated_at = ?4
                 WHERE campaign_id = ?5 AND device_id = ?6",
                params![state, progress, error, now, campaign_id, device_id],
            )?;
            Ok(tx.query_row(
                "SELECT device_id, state, progress, error, notified_at, updated_at
                 FROM ota_campaign_devices WHERE campaign_id = ?1 AND device_id = ?2",
                [campaign_id, device_id],
                |r| {
                    Ok(CampaignDevice {
                        device_id: r.get(0)?,
                        state: r.get(1)?,
                        progress: r.get(2)?,
                        error: r.get(3)?,
                        notified_at: r.get(4)?,
                        updated_at: r.get(5)?,
                    })
                },
            )?)
        })
    }
}

fn read_firmware(r: &rusqlite::Row<'_>) -> rusqlite::Result<Firmware> {
    Ok(Firmware {
        id: r.get(0)?,
        tenant: r.get(1)?,
        profile: r.get(2)?,
        version: r.get(3)?,
        size: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        sha256: r.get(5)?,
        signature: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn matching_devices(
    conn: &Connection,
    tenant: &str,
    target: &CampaignTarget,
) -> Result<Vec<String>> {
    let mut sql = String::from("SELECT d.id FROM devices d WHERE d.tenant = ?");
    let mut args = vec![SqlValue::Text(tenant.to_string())];
    if let Some(profile) = &target.profile {
        sql.push_str(" AND d.profile = ?");
        args.push(SqlValue::Text(profile.clone()));
    }
    for (key, value) in &target.labels {
        sql.push_str(
            " AND d.pk IN (SELECT device_pk FROM device_labels WHERE tenant = ? AND key = ? AND value = ?)",
        );
        args.push(SqlValue::Text(tenant.to_string()));
        args.push(SqlValue::Text(key.clone()));
        args.push(SqlValue::Text(value.clone()));
    }
    if !target.devices.is_empty() {
        sql.push_str(" AND d.id IN (SELECT value FROM json_each(?))");
        args.push(SqlValue::Text(serde_json::to_string(&target.devices)?));
    }
    sql.push_str(" ORDER BY d.id");
    let ids = conn
        .prepare(&sql)?
        .query_map(params_from_iter(args), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

fn load_campaign(conn: &Connection, tenant: &str, id: &str) -> Result<Campaign> {
    type Row = (
        String,
        String,
        String,
        u32,
        u32,
        u32,
        i64,
        String,
        Option<String>,
        i64,
        i64,
    );
    let row: Row = conn
        .prepare_cached(
            "SELECT name, firmware_id, target, batch_size, failure_threshold_pct, min_failures,
                    device_timeout_ms, status, status_reason, created_at, updated_at
             FROM ota_campaigns WHERE tenant = ?1 AND id = ?2",
        )?
        .query_row([tenant, id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })
        .optional()?
        .ok_or_else(|| Error::not_found("campaign", id))?;
    let mut counts = CampaignCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM ota_campaign_devices WHERE campaign_id = ?1 GROUP BY state",
    )?;
    let states = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for state in states {
        let (state, n) = state?;
        let n = u64::try_from(n).unwrap_or(0);
        counts.total += n;
        match state.as_str() {
            "pending" => counts.pending += n,
            "succeeded" => counts.succeeded += n,
            "failed" => counts.failed += n,
            "cancelled" => counts.cancelled += n,
            _ => counts.in_progress += n,
        }
    }
    let (
        name,
        firmware_id,
        target,
        batch_size,
        failure_threshold_pct,
        min_failures,
        device_timeout_ms,
        status,
        status_reason,
        created_at,
        updated_at,
    ) = row;
    Ok(Campaign {
        id: id.to_string(),
        tenant: tenant.to_string(),
        name,
        firmware_id,
        target: serde_json::from_str(&target)?,
        batch_size,
        failure_threshold_pct,
        min_failures,
        device_timeout_ms,
        status,
        status_reason,
        counts,
        created_at,
        updated_at,
    })
}
