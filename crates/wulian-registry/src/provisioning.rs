//! Claim provisioning: a device that holds its profile's provisioning secret and a serial
//! number the operator registered obtains its own device credentials, once.
//!
//! The operator sets a secret on the profile (shown once, stored hashed) and registers the
//! serial numbers expected in the field; firmware carries the secret (the same for the whole
//! profile) and its own serial. A claim creates the device with the serial as its id, so the
//! unique device id also makes each claim single-use, whatever the races. Every claim attempt is
//! audited; the API rate-limits them per profile from the audit log.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::{self, MAX_PRESENTED_SECRET_LEN, PROVISIONING_SECRET_PREFIX};
use crate::{Device, NewDevice, Registry, now_ms, validate};

/// Serials registered per request.
pub const MAX_SERIALS_PER_CALL: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningSerial {
    pub serial: String,
    pub created_at: i64,
    pub claimed_at: Option<i64>,
}

/// Why a claim was refused. Unknown profile, disabled provisioning and a wrong secret are one
/// answer, so a guesser learns nothing about which profiles exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    BadSecret,
    SerialNotRegistered,
    AlreadyClaimed,
}

impl ClaimRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            ClaimRefusal::BadSecret => "invalid_credentials",
            ClaimRefusal::SerialNotRegistered => "serial_not_registered",
            ClaimRefusal::AlreadyClaimed => "already_claimed",
        }
    }
}

impl Registry {
    /// A new provisioning secret for the profile (replacing any previous one); shown once.
    pub fn set_provisioning_secret(&self, tenant: &str, profile: &str) -> Result<String> {
        let secret = secret::new_secret(PROVISIONING_SECRET_PREFIX)?;
        let hash = secret::hash(&secret);
        let updated = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE profiles SET provisioning_secret_hash = ?1 WHERE tenant = ?2 AND id = ?3",
                params![hash, tenant, profile],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::not_found("profile", profile));
        }
        Ok(secret)
    }

    /// Turns claim provisioning off for the profile (the secret stops working).
    pub fn disable_provisioning(&self, tenant: &str, profile: &str) -> Result<()> {
        let updated = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE profiles SET provisioning_secret_hash = NULL WHERE tenant = ?1 AND id = ?2",
                params![tenant, profile],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::not_found("profile", profile));
        }
        Ok(())
    }

    /// Registers serials that may claim a device of `profile`; returns how many were new.
    /// Serials become device ids, so they follow the device id rules.
    pub fn add_provisioning_serials(
        &self,
        tenant: &str,
        profile: &str,
        serials: &[String],
    ) -> Result<usize> {
        if serials.is_empty() || serials.len() > MAX_SERIALS_PER_CALL {
            return Err(Error::invalid(
                "serials",
                format!("1 to {MAX_SERIALS_PER_CALL} per call"),
            ));
        }
        for (i, serial) in serials.iter().enumerate() {
            validate::device_id(serial)
                .map_err(|e| Error::invalid("serials", format!("entry {i} ({serial:?}): {e}")))?;
        }
        let now = now_ms();
        self.write(|tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM profiles WHERE tenant = ?1 AND id = ?2",
                    [tenant, profile],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(Error::not_found("profile", profile));
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO provisioning_serials (tenant, profile, serial, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            let mut added = 0;
            for serial in serials {
                added += stmt.execute(params![tenant, profile, serial, now])?;
            }
            Ok(added)
        })
    }

    pub fn list_provisioning_serials(
        &self,
        tenant: &str,
        profile: &str,
    ) -> Result<Vec<ProvisioningSerial>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT serial, created_at, claimed_at FROM provisioning_serials
             WHERE tenant = ?1 AND profile = ?2 ORDER BY serial",
        )?;
        let rows = stmt.query_map([tenant, profile], |r| {
            Ok(ProvisioningSerial {
                serial: r.get(0)?,
                created_at: r.get(1)?,
                claimed_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A device's claim: checks the secret (constant time) and the serial, then creates the
    /// device `serial` in `profile` and returns it with its token (shown once).
    pub fn claim_device(
        &self,
        tenant: &str,
        profile: &str,
        serial: &str,
        presented_secret: &str,
    ) -> Result<std::result::Result<(Device, String), ClaimRefusal>> {
        if presented_secret.len() > MAX_PRESENTED_SECRET_LEN {
            return Ok(Err(ClaimRefusal::BadSecret));
        }
        let presented = secret::hash(presented_secret);
        let (stored, registered): (Option<String>, Option<Option<i64>>) = {
            let conn = self.conn();
            let stored = conn
                .prepare_cached(
                    "SELECT provisioning_secret_hash FROM profiles WHERE tenant = ?1 AND id = ?2",
                )?
                .query_row([tenant, profile], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten();
            let registered = conn
                .prepare_cached(
                    "SELECT claimed_at FROM provisioning_serials
                     WHERE tenant = ?1 AND profile = ?2 AND serial = ?3",
                )?
                .query_row([tenant, profile, serial], |r| r.get::<_, Option<i64>>(0))
                .optional()?;
            (stored, registered)
        };
        let matches = secret::hashes_equal(
            stored
                .as_deref()
                .unwrap_or("0000000000000000000000000000000000000000000000000000000000000000"),
            &presented,
        );
        if stored.is_none() || !matches {
            return Ok(Err(ClaimRefusal::BadSecret));
        }
        match registered {
            None => return Ok(Err(ClaimRefusal::SerialNotRegistered)),
            Some(Some(_)) => return Ok(Err(ClaimRefusal::AlreadyClaimed)),
            Some(None) => {}
        }
        let new = NewDevice {
            id: serial.to_string(),
            profile: Some(profile.to_string()),
            labels: [("serial".to_string(), serial.to_string())].into(),
            ..NewDevice::default()
        };
        let created = match self.create_device(tenant, &new) {
            Ok(created) => created,
            // A concurrent claim of the same serial won the race, or the id was taken.
            Err(Error::AlreadyExists { .. }) => return Ok(Err(ClaimRefusal::AlreadyClaimed)),
            Err(other) => return Err(other),
        };
        let now = now_ms();
        self.write(|tx| {
            tx.execute(
                "UPDATE provisioning_serials SET claimed_at = ?1
                 WHERE tenant = ?2 AND profile = ?3 AND serial = ?4",
                params![now, tenant, profile, serial],
            )?;
            Ok(())
        })?;
        Ok(Ok(created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewProfile;
    use crate::audit::NewAuditEntry;
    use crate::test_support::registry_with_tenant;

    #[test]
    fn a_serial_claims_once_with_the_right_secret() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let t = tenant.id;
        reg.create_profile(
            &t,
            &NewProfile {
                id: "lock".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let secret = reg.set_provisioning_secret(&t, "lock").unwrap();
        assert!(secret.starts_with("wlp_"));
        assert_eq!(
            reg.add_provisioning_serials(
                &t,
                "lock",
                &["SN-1".into(), "SN-2".into(), "SN-1".into()]
            )
            .unwrap(),
            2
        );
        assert!(
            reg.add_provisioning_serials(&t, "lock", &["bad serial".into()])
                .is_err()
        );

        assert_eq!(
            reg.claim_device(&t, "lock", "SN-1", "wlp_wrong")
                .unwrap()
                .unwrap_err(),
            ClaimRefusal::BadSecret
        );
        assert_eq!(
            reg.claim_device(&t, "lock", "SN-9", &secret)
                .unwrap()
                .unwrap_err(),
            ClaimRefusal::SerialNotRegistered
        );
        let (device, token) = reg
            .claim_device(&t, "lock", "SN-1", &secret)
            .unwrap()
            .unwrap();
        assert_eq!(
            (device.id.as_str(), device.profile.as_str()),
            ("SN-1", "lock")
        );
        assert!(reg.authenticate_device("SN-1", &token).unwrap().is_some());
        assert_eq!(
            reg.claim_device(&t, "lock", "SN-1", &secret)
                .unwrap()
                .unwrap_err(),
            ClaimRefusal::AlreadyClaimed
        );
        let serials = reg.list_provisioning_serials(&t, "lock").unwrap();
        assert!(serials[0].claimed_at.is_some() && serials[1].claimed_at.is_none());

        reg.disable_provisioning(&t, "lock").unwrap();
        assert_eq!(
            reg.claim_device(&t, "lock", "SN-2", &secret)
                .unwrap()
                .unwrap_err(),
            ClaimRefusal::BadSecret
        );
        // Another tenant's profile of the same name is another profile.
        assert_eq!(
            reg.claim_device("other", "lock", "SN-2", &secret)
                .unwrap()
                .unwrap_err(),
            ClaimRefusal::BadSecret
        );
    }

    #[test]
    fn audit_entries_list_and_count() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        for outcome in ["ok", "invalid_credentials", "ok"] {
            reg.record_audit(
                &tenant.id,
                &NewAuditEntry {
                    actor: "provisioning:127.0.0.1",
                    action: "device.claim",
                    target: "lock/SN-1",
                    outcome,
                    detail: "",
                },
            )
            .unwrap();
        }
        let all = reg.list_audit(&tenant.id, 10, None).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[0].id > all[1].id, "newest first");
        assert_eq!(
            reg.list_audit(&tenant.id, 10, Some(all[1].id))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            reg.count_audit_since(&tenant.id, "device.claim", "lock/", 0)
                .unwrap(),
            3
        );
        assert_eq!(
            reg.count_audit_since(&tenant.id, "device.claim", "gate/", 0)
                .unwrap(),
            0
        );
        assert_eq!(reg.list_audit("other", 10, None).unwrap().len(), 0);
    }
}
