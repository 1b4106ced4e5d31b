//! Versioned schema migrations, embedded in the binary and applied in order when the registry
//! opens. Version *n* is `MIGRATIONS[n - 1]`; `schema_migrations` records which have run, so
//! opening is idempotent. Never edit a shipped migration — append a new one.
//!
//! Layout choices (see also the modules that query these tables):
//! - `devices.pk` is an integer surrogate key so label rows stay small; the public `id` is
//!   globally `UNIQUE` because it is the MQTT client id. `UNIQUE (tenant, id)` serves every
//!   tenant-scoped lookup and keyset pagination (`tenant = ? AND id > ? ORDER BY id`).
//! - Labels live in `device_labels` (with the tenant copied in) so `key = value` filters use the
//!   `(tenant, key, value)` index instead of parsing JSON per row.
//! - Commands reference `(tenant, device_id)`, so a command can never point at another
//!   tenant's device, and deleting a device or tenant cascades to them.
//! - Only SHA-256 hashes of secrets are stored (`api_keys.secret_hash`, `devices.token_hash`).
//! - `api_keys.mqtt_policy` is JSON (a small document read whole with its key, never queried).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant             TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    scope              TEXT NOT NULL CHECK (scope IN ('admin', 'read_write', 'read_only')),
    installation_admin INTEGER NOT NULL DEFAULT 0 CHECK (installation_admin IN (0, 1)),
    secret_hash        TEXT NOT NULL UNIQUE,
    created_at         INTEGER NOT NULL,
    last_used_at       INTEGER,
    revoked_at         INTEGER
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at);

CREATE TABLE devices (
    pk               INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    profile          TEXT NOT NULL,
    attributes       TEXT NOT NULL,
    disabled         INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    token_hash       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    token_rotated_at INTEGER NOT NULL,
    UNIQUE (tenant, id)
) STRICT;
CREATE INDEX devices_by_profile ON devices (tenant, profile, id);

CREATE TABLE device_labels (
    device_pk INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    tenant    TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (device_pk, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_labels_by_pair ON device_labels (tenant, key, value);

CREATE TABLE commands (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    params     TEXT NOT NULL,
    status     TEXT NOT NULL
        CHECK (status IN ('pending', 'sent', 'succeeded', 'failed', 'timed_out', 'undelivered')),
    response   TEXT,
    timeout_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    FOREIGN KEY (tenant, device_id) REFERENCES devices (tenant, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX commands_by_device ON commands (tenant, device_id, created_at DESC, id DESC);
CREATE INDEX commands_open ON commands (status) WHERE status IN ('pending', 'sent');
"#,
    // 2: MQTT topic policies of API keys (JSON; NULL = the default of the key's scope).
    r#"
ALTER TABLE api_keys ADD COLUMN mqtt_policy TEXT;
"#,
    // 3: device X.509 identity: tenants' CA certificates and revoked device certificates.
    r#"
CREATE TABLE ca_certificates (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    der         BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX ca_certificates_by_tenant ON ca_certificates (tenant, created_at);

CREATE TABLE revoked_certificates (
    tenant      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    serial      TEXT,
    fingerprint TEXT,
    revoked_at  INTEGER NOT NULL,
    CHECK (serial IS NOT NULL OR fingerprint IS NOT NULL),
    FOREIGN KEY (tenant, device_id) REFERENCES devices (tenant, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX revoked_certificates_by_device ON revoked_certificates (tenant, device_id);
"#,
];

/// The schema version this build creates.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the database up to [`latest_version`]. One immediate transaction, so two processes
/// opening the same file at once cannot both apply a migration.
pub(crate) fn run(conn: &mut Connection) -> Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT;",
    )?;
    let current: i64 = tx
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    let known = latest_version();
    if current > known {
        return Err(Error::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::now_ms()],
        )?;
        tracing::info!(version, "Applied registry migration.");
    }
    tx.commit()?;
    Ok(known)
}
