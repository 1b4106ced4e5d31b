//! API keys: how applications authenticate to the HTTP API. A key belongs to one tenant and has
//! a [`Scope`]; the key created by [`Registry::bootstrap`] is additionally the installation
//! admin (may manage tenants). Secrets are shown once at creation and stored only as SHA-256
//! hashes (see `secret.rs` for why a fast hash is right here).

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mqtt_policy::{KEY_POLICY_VARIABLES, MqttPolicy};
use crate::secret::{self, API_KEY_PREFIX, MAX_PRESENTED_SECRET_LEN};
use crate::{Registry, now_ms, tenants, validate};

/// `last_used_at` is written at most this often per key, so authentication stays a read.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// What a key may do within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything, including managing the tenant's API keys.
    Admin,
    /// Read and change devices, send commands, post telemetry.
    ReadWrite,
    /// Read only.
    ReadOnly,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ReadWrite => "read_write",
            Scope::ReadOnly => "read_only",
        }
    }

    pub fn can_write(self) -> bool {
        matches!(self, Scope::Admin | Scope::ReadWrite)
    }

    pub fn can_admin(self) -> bool {
        matches!(self, Scope::Admin)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Scope> {
        match s {
            "admin" => Ok(Scope::Admin),
            "read_write" => Ok(Scope::ReadWrite),
            "read_only" => Ok(Scope::ReadOnly),
            _ => Err(Error::invalid(
                "scope",
                "must be admin, read_write or read_only",
            )),
        }
    }
}

/// A key as it may be shown: never the secret, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scope: Scope,
    /// May manage tenants (only the key made by `bootstrap`).
    pub installation_admin: bool,
    pub created_at: i64,
    /// Updated on authentication, at most once a minute.
    pub last_used_at: Option<i64>,
    pub revoked: bool,
    /// What the key may do over MQTT; `None` = [`MqttPolicy::default_for`] its scope.
    pub mqtt_policy: Option<MqttPolicy>,
}

impl ApiKey {
    /// The MQTT policy in force: the key's own, or its scope's default.
    pub fn effective_mqtt_policy(&self) -> MqttPolicy {
        self.mqtt_policy
            .clone()
            .unwrap_or_else(|| MqttPolicy::default_for(self.scope))
    }
}

/// A key just created, with its secret — the only time the secret exists outside the caller.
#[derive(Clone)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: String,
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

const KEY_COLUMNS: &str = "id, tenant, name, scope, installation_admin, created_at, last_used_at, \
                           revoked_at IS NOT NULL, mqtt_policy";

impl Registry {
    /// A new key for `tenant` (which must exist). Never an installation admin.
    pub fn create_api_key(&self, tenant: &str, name: &str, scope: Scope) -> Result<NewApiKey> {
        self.create_api_key_with_policy(tenant, name, scope, None)
    }

    /// [`create_api_key`](Self::create_api_key) with an MQTT topic policy (validated here;
    /// `None` = the scope's default).
    pub fn create_api_key_with_policy(
        &self,
        tenant: &str,
        name: &str,
        scope: Scope,
        mqtt_policy: Option<MqttPolicy>,
    ) -> Result<NewApiKey> {
        validate::name("name", name, 1)?;
        if let Some(policy) = &mqtt_policy {
            policy.validate(KEY_POLICY_VARIABLES)?;
        }
        let (mut new_key, hash) = prepare_key(tenant, name, scope, false, now_ms())?;
        new_key.key.mqtt_policy = mqtt_policy;
        self.write(|tx| {
            tenants::require_tenant(tx, tenant)?;
            insert_key(tx, &new_key.key, &hash)
        })?;
        Ok(new_key)
    }

    /// The tenant's keys, revoked ones included, oldest first. `NotFound` for an unknown tenant.
    pub fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let conn = self.conn();
        tenants::require_tenant(&conn, tenant)?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], key_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes a key of `tenant`; revoking twice is fine. The last active installation-admin key
    /// cannot be revoked (`Conflict`): nobody could manage tenants afterwards.
    pub fn revoke_api_key(&self, tenant: &str, key_id: &str) -> Result<()> {
        let now = now_ms();
        self.write(|tx| {
            let found: Option<(bool, bool)> = tx
                .query_row(
                    "SELECT installation_admin, revoked_at IS NOT NULL FROM api_keys
                     WHERE tenant = ?1 AND id = ?2",
                    [tenant, key_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((installation_admin, revoked)) = found else {
                return Err(Error::not_found("api key", key_id));
            };
            if revoked {
                return Ok(());
            }
            if installation_admin {
                let others: i64 = tx.query_row(
                    "SELECT count(*) FROM api_keys
                     WHERE installation_admin = 1 AND revoked_at IS NULL AND id <> ?1",
                    [key_id],
                    |r| r.get(0),
                )?;
                if others == 0 {
                    return Err(Error::Conflict(
                        "the last installation admin key cannot be revoked".to_string(),
                    ));
                }
            }
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2",
                params![now, key_id],
            )?;
            Ok(())
        })
    }

    /// The active key whose secret this is, or `None` (unknown, revoked, malformed).
    pub fn authenticate_api_key(&self, secret: &str) -> Result<Option<ApiKey>> {
        if !secret.starts_with(API_KEY_PREFIX) || secret.len() > MAX_PRESENTED_SECRET_LEN {
            return Ok(None);
        }
        let hash = secret::hash(secret);
        let now = now_ms();
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1 AND revoked_at IS NULL"
            ))?
            .query_row([&hash], key_from_row)
            .optional()?;
        let Some(mut key) = found else {
            return Ok(None);
        };
        let stale = key
            .last_used_at
            .is_none_or(|t| t <= now.saturating_sub(LAST_USED_GRANULARITY_MS));
        if stale {
            // Best effort: a busy database must not turn a valid key into a failed request.
            let updated = conn
                .prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2")
                .and_then(|mut stmt| stmt.execute(params![now, key.id]));
            match updated {
                Ok(_) => key.last_used_at = Some(now),
                Err(error) => {
                    tracing::warn!(key_id = %key.id, error = %error, "Could not record API key use.");
                }
            }
        }
        Ok(Some(key))
    }
}

/// A key record and the hash to store, built before any lock is taken.
pub(crate) fn prepare_key(
    tenant: &str,
    name: &str,
    scope: Scope,
    installation_admin: bool,
    now: i64,
) -> Result<(NewApiKey, String)> {
    let secret = secret::new_secret(API_KEY_PREFIX)?;
    let hash = secret::hash(&secret);
    let key = ApiKey {
        id: format!("k-{}", secret::random_hex(8)?),
        tenant: tenant.to_string(),
        name: name.to_string(),
        scope,
        installation_admin,
        created_at: now,
        last_used_at: None,
        revoked: false,
        mqtt_policy: None,
    };
    Ok((NewApiKey { key, secret }, hash))
}

pub(crate) fn insert_key(conn: &Connection, key: &ApiKey, secret_hash: &str) -> Result<()> {
    let policy = key
        .mqtt_policy
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    let inserted = conn.execute(
        "INSERT INTO api_keys (id, tenant, name, scope, installation_admin, secret_hash, created_at,
                               mqtt_policy)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        params![
            key.id,
            key.tenant,
            key.name,
            key.scope,
            key.installation_admin,
            secret_hash,
            key.created_at,
            policy
        ],
    )?;
    if inserted == 0 {
        // 64-bit id or 256-bit secret collision: practically impossible, never silent.
        return Err(Error::already_exists("api key", &key.id));
    }
    Ok(())
}

/// Reads a row of `KEY_COLUMNS`.
fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        scope: row.get(3)?,
        installation_admin: row.get(4)?,
        created_at: row.get(5)?,
        last_used_at: row.get(6)?,
        revoked: row.get(7)?,
        mqtt_policy: row
            .get::<_, Option<String>>(8)?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
    })
}

impl FromSql for Scope {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Scope> {
        value
            .as_str()?
            .parse()
            .map_err(|e: Error| FromSqlError::Other(Box::new(e)))
    }
}

impl ToSql for Scope {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}
