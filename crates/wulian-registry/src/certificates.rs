//! Device X.509 identity: the CA certificates a tenant registers, and the device
//! certificates it revokes.
//!
//! A device presenting a client certificate over mutual TLS is the device named by the
//! certificate's common name, if that device's tenant registered a CA the certificate chains
//! to and has not revoked the certificate. Device ids are unique in the installation, so the
//! CN alone names the tenant; the chain check against *that tenant's* CAs (done by the caller,
//! see [`Registry::certificate_login`]) keeps one tenant's CA from vouching for another
//! tenant's devices. The registry stores certificates as DER with their SHA-256 fingerprint
//! (unique: a CA belongs to one tenant); parsing and verification live with TLS, not here.
//!
//! Revocations name a serial number or a fingerprint (lowercase hex). They are kept per device
//! and deleted with it.

use std::sync::atomic::Ordering;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, tenants, validate};

/// At most this many CA certificates per tenant (each is tried on every certificate login).
pub const MAX_CA_CERTIFICATES: i64 = 32;
/// Largest CA certificate accepted (DER).
const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// A registered CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaCertificate {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The certificate's subject common name, for people.
    pub subject: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    #[serde(skip)]
    pub der: Vec<u8>,
    pub created_at: i64,
}

/// A revoked device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCertificate {
    pub device_id: String,
    pub serial: Option<String>,
    pub fingerprint: Option<String>,
    pub revoked_at: i64,
}

/// What certificate login needs to know about a device, in one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLogin {
    pub tenant: String,
    pub device_id: String,
    pub disabled: bool,
    /// The tenant's CA certificates (DER).
    pub cas: Vec<Vec<u8>>,
    pub revoked_serials: Vec<String>,
    pub revoked_fingerprints: Vec<String>,
}

/// SHA-256 of a DER certificate, lowercase hex: the fingerprint used everywhere here.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn normalize_hex(field: &'static str, text: &str) -> Result<String> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if digits.is_empty() || digits.len() > 128 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(field, "must be hexadecimal"));
    }
    Ok(digits)
}

impl Registry {
    /// Registers a CA certificate (DER, already checked to be usable by the caller) for
    /// `tenant` with its subject CN. `AlreadyExists` if this certificate is registered
    /// anywhere.
    pub fn add_ca_certificate(
        &self,
        tenant: &str,
        name: &str,
        subject: &str,
        der: &[u8],
    ) -> Result<CaCertificate> {
        validate::name("name", name, 1)?;
        if der.is_empty() || der.len() > MAX_CERTIFICATE_BYTES {
            return Err(Error::invalid(
                "certificate",
                format!("must be 1 to {MAX_CERTIFICATE_BYTES} bytes of DER"),
            ));
        }
        let ca = CaCertificate {
            id: format!("ca-{}", secret::random_hex(8)?),
            tenant: tenant.to_string(),
            name: name.to_string(),
            subject: subject.to_string(),
            fingerprint: certificate_fingerprint(der),
            der: der.to_vec(),
            created_at: now_ms(),
        };
        self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM ca_certificates WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            if count >= MAX_CA_CERTIFICATES {
                return Err(Error::Conflict(format!(
                    "a tenant may register at most {MAX_CA_CERTIFICATES} CA certificates"
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO ca_certificates (id, tenant, name, subject, fingerprint, der, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    ca.id,
                    ca.tenant,
                    ca.name,
                    ca.subject,
                    ca.fingerprint,
                    ca.der,
                    ca.created_at
                ],
            )?;
            if inserted == 0 {
                return Err(Error::already_exists("CA certificate", &ca.fingerprint));
            }
            Ok(())
        })?;
        self.ca_generation.fetch_add(1, Ordering::SeqCst);
        Ok(ca)
    }

    /// The tenant's CA certificates, oldest first.
    pub fn list_ca_certificates(&self, tenant: &str) -> Result<Vec<CaCertificate>> {
        let conn = self.conn();
        tenants::require_tenant(&conn, tenant)?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, tenant, name, subject, fingerprint, der, created_at FROM ca_certificates
             WHERE tenant = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([tenant], ca_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes a CA certificate of `tenant`; devices whose certificates it issued can no
    /// longer log in with them.
    pub fn delete_ca_certificate(&self, tenant: &str, id: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM ca_certificates WHERE tenant = ?1 AND id = ?2",
                [tenant, id],
            )?)
        })?;
        if deleted == 0 {
            return Err(Error::not_found("CA certificate", id));
        }
        self.ca_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Every tenant's CA certificates (DER): the set TLS listeners accept client certificates
    /// from.
    pub fn all_ca_certificates(&self) -> Result<Vec<Vec<u8>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT der FROM ca_certificates ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Changes whenever this process adds or deletes a CA certificate, so listeners know when
    /// to reload [`all_ca_certificates`](Self::all_ca_certificates).
    pub fn ca_generation(&self) -> u64 {
        self.ca_generation.load(Ordering::SeqCst)
    }

    /// Revokes a certificate of device `device_id` of `tenant` by serial number and/or
    /// fingerprint (hex, colons allowed). The caller should also close the device's
    /// connection.
    pub fn revoke_device_certificate(
        &self,
        tenant: &str,
        device_id: &str,
        serial: Option<&str>,
        fingerprint: Option<&str>,
    ) -> Result<RevokedCertificate> {
        let serial = serial.map(|s| normalize_hex("serial", s)).transpose()?;
        let serial = serial.map(|s| {
            let trimmed = s.trim_start_matches('0');
            let trimmed = if trimmed.len() % 2 == 1 {
                format!("0{trimmed}")
            } else {
                trimmed.to_string()
            };
            if trimmed.is_empty() {
                "00".to_string()
            } else {
                trimmed
            }
        });
        let fingerprint = fingerprint
            .map(|f| normalize_hex("fingerprint", f))
            .transpose()?;
        if serial.is_none() && fingerprint.is_none() {
            return Err(Error::invalid(
                "serial",
                "give the certificate's serial or fingerprint",
            ));
        }
        let revoked = RevokedCertificate {
            device_id: device_id.to_string(),
            serial,
            fingerprint,
            revoked_at: now_ms(),
        };
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM devices WHERE tenant = ?1 AND id = ?2",
                    [tenant, device_id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(Error::not_found("device", device_id));
            }
            tx.execute(
                "INSERT INTO revoked_certificates (tenant, device_id, serial, fingerprint, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    tenant,
                    device_id,
                    revoked.serial,
                    revoked.fingerprint,
                    revoked.revoked_at
                ],
            )?;
            Ok(())
        })?;
        Ok(revoked)
    }

    /// A device's revoked certificates, oldest first.
    pub fn list_revoked_certificates(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Vec<RevokedCertificate>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, serial, fingerprint, revoked_at FROM revoked_certificates
             WHERE tenant = ?1 AND device_id = ?2 ORDER BY revoked_at, rowid",
        )?;
        let rows = stmt.query_map([tenant, device_id], |r| {
            Ok(RevokedCertificate {
                device_id: r.get(0)?,
                serial: r.get(1)?,
                fingerprint: r.get(2)?,
                revoked_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Everything needed to decide a certificate login for `device_id` (any tenant), or
    /// `None` for an unknown device.
    pub fn certificate_login(&self, device_id: &str) -> Result<Option<CertificateLogin>> {
        if !validate::is_plausible_device_id(device_id) {
            return Ok(None);
        }
        let conn = self.conn();
        let found: Option<(String, bool)> = conn
            .prepare_cached("SELECT tenant, disabled FROM devices WHERE id = ?1")?
            .query_row([device_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((tenant, disabled)) = found else {
            return Ok(None);
        };
        let cas = conn
            .prepare_cached("SELECT der FROM ca_certificates WHERE tenant = ?1")?
            .query_map([&tenant], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
        let mut revoked_serials = Vec::new();
        let mut revoked_fingerprints = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT serial, fingerprint FROM revoked_certificates WHERE tenant = ?1 AND device_id = ?2",
        )?;
        let rows = stmt.query_map([&tenant, device_id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?;
        for row in rows {
            let (serial, fingerprint) = row?;
            revoked_serials.extend(serial);
            revoked_fingerprints.extend(fingerprint);
        }
        Ok(Some(CertificateLogin {
            tenant,
            device_id: device_id.to_string(),
            disabled,
            cas,
            revoked_serials,
            revoked_fingerprints,
        }))
    }
}

fn ca_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CaCertificate> {
    Ok(CaCertificate {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        subject: row.get(3)?,
        fingerprint: row.get(4)?,
        der: row.get(5)?,
        created_at: row.get(6)?,
    })
}
