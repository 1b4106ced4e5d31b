//! Tenants: the isolation boundary. Every key, device and command belongs to exactly one, and
//! deleting a tenant deletes all of them (foreign-key cascades, one statement).
//!
//! Also home of [`Registry::bootstrap`], which creates the first tenant and the installation
//! admin key on an empty database.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::api_keys::{self, NewApiKey, Scope};
use crate::error::{Error, Result};
use crate::{Registry, now_ms, secret, validate};

/// Id of the tenant [`Registry::bootstrap`] creates.
pub const DEFAULT_TENANT_ID: &str = "default";
const DEFAULT_TENANT_NAME: &str = "Default";
const BOOTSTRAP_KEY_NAME: &str = "installation admin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Days the raw telemetry of the tenant's devices is kept (1 to 36500), unless their
    /// profile sets its own; none inherits the installation's `storage.retention_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// A change to a tenant: the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    /// 1 to 200 characters.
    pub name: Option<String>,
    /// `Some(None)` clears it (the installation's retention applies again).
    pub retention_days: Option<Option<u32>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// Slug `[a-z0-9][a-z0-9-]{0,62}`; `t-<8 hex>` is generated when absent.
    pub id: Option<String>,
    /// 1 to 200 characters.
    pub name: String,
}

impl Registry {
    /// First start: when no tenant exists, creates tenant `default` and an admin API key that is
    /// the installation admin, and returns both (the only time the secret is available).
    /// Afterwards `Ok(None)`. One transaction, so a crash cannot leave a tenant without its key.
    pub fn bootstrap(&self) -> Result<Option<(Tenant, NewApiKey)>> {
        let now = now_ms();
        let tenant = Tenant {
            id: DEFAULT_TENANT_ID.to_string(),
            name: DEFAULT_TENANT_NAME.to_string(),
            created_at: now,
            retention_days: None,
        };
        let (new_key, hash) =
            api_keys::prepare_key(&tenant.id, BOOTSTRAP_KEY_NAME, Scope::Admin, true, now)?;
        let created = self.write(|tx| {
            let any: Option<i64> = tx
                .query_row("SELECT 1 FROM tenants LIMIT 1", [], |r| r.get(0))
                .optional()?;
            if any.is_some() {
                return Ok(false);
            }
            insert_tenant(tx, &tenant)?;
            api_keys::insert_key(tx, &new_key.key, &hash)?;
            Ok(true)
        })?;
        if !created {
            return Ok(None);
        }
        tracing::info!(tenant = %tenant.id, key_id = %new_key.key.id, "Bootstrapped the installation admin key.");
        Ok(Some((tenant, new_key)))
    }

    pub fn create_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        validate::name("name", &new.name, 1)?;
        if let Some(id) = &new.id {
            validate::tenant_id(id)?;
        }
        // A generated id collides with probability 2^-32 per existing tenant; retry a little.
        for _ in 0..4 {
            let id = match &new.id {
                Some(id) => id.clone(),
                None => format!("t-{}", secret::random_hex(4)?),
            };
            let tenant = Tenant {
                id,
                name: new.name.clone(),
                created_at: now_ms(),
                retention_days: None,
            };
            match self.write(|tx| insert_tenant(tx, &tenant)) {
                Err(Error::AlreadyExists { .. }) if new.id.is_none() => continue,
                other => return other.map(|()| tenant),
            }
        }
        Err(Error::Conflict(
            "could not generate an unused tenant id".to_string(),
        ))
    }

    pub fn get_tenant(&self, id: &str) -> Result<Tenant> {
        let conn = self.conn();
        load_tenant(&conn, id)
    }

    /// Changes a tenant's name and/or telemetry retention.
    pub fn update_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant> {
        if let Some(name) = &patch.name {
            validate::name("name", name, 1)?;
        }
        if let Some(days) = patch.retention_days {
            validate::retention_days(
                "retention_days",
                days,
                "the installation's storage.retention_days",
            )?;
        }
        self.write(|tx| {
            require_tenant(tx, id)?;
            if let Some(name) = &patch.name {
                tx.execute(
                    "UPDATE tenants SET name = ?1 WHERE id = ?2",
                    params![name, id],
                )?;
            }
            if let Some(days) = patch.retention_days {
                tx.execute(
                    "UPDATE tenants SET retention_days = ?1 WHERE id = ?2",
                    params![days, id],
                )?;
            }
            load_tenant(tx, id)
        })
    }

    /// All tenants, by id.
    pub fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))?;
        let rows = stmt.query_map([], tenant_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the tenant with its keys, devices, labels and commands. Refuses (`Conflict`) to
    /// delete a tenant holding an active installation-admin key: that would lock everyone out of
    /// tenant management.
    pub fn delete_tenant(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM tenants WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Err(Error::not_found("tenant", id));
            }
            let holds_admin: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM api_keys
                     WHERE tenant = ?1 AND installation_admin = 1 AND revoked_at IS NULL LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if holds_admin.is_some() {
                return Err(Error::Conflict(format!(
                    "tenant {id:?} holds the installation admin key and cannot be deleted"
                )));
            }
            tx.execute("DELETE FROM tenants WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

const TENANT_COLUMNS: &str = "id, name, created_at, retention_days";

fn tenant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        retention_days: row.get(3)?,
    })
}

fn load_tenant(conn: &Connection, id: &str) -> Result<Tenant> {
    conn.prepare_cached(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
    ))?
    .query_row([id], tenant_from_row)
    .optional()?
    .ok_or_else(|| Error::not_found("tenant", id))
}

fn insert_tenant(conn: &Connection, tenant: &Tenant) -> Result<()> {
    let inserted = conn.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO NOTHING",
        params![tenant.id, tenant.name, tenant.created_at],
    )?;
    if inserted == 0 {
        return Err(Error::already_exists("tenant", &tenant.id));
    }
    Ok(())
}

/// `NotFound` unless tenant `id` exists.
pub(crate) fn require_tenant(conn: &Connection, id: &str) -> Result<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match exists {
        Some(_) => Ok(()),
        None => Err(Error::not_found("tenant", id)),
    }
}
