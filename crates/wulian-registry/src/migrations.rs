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
//! - `users.password_hash` is the exception to SHA-256: people choose passwords, so they get
//!   Argon2id (see `users.rs`).

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
    // 4: device lifecycle: profiles with thing models, twins, persisted presence, and token
    // rotation with a grace period (the previous token's hash stays valid until it expires).
    r#"
ALTER TABLE devices ADD COLUMN previous_token_hash TEXT;
ALTER TABLE devices ADD COLUMN previous_token_expires_at INTEGER;

CREATE TABLE profiles (
    tenant      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    model       TEXT NOT NULL,
    validation  TEXT NOT NULL CHECK (validation IN ('reject', 'flag', 'off')),
    settings    TEXT NOT NULL,
    provisioning_secret_hash TEXT,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE device_twins (
    tenant              TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    desired             TEXT NOT NULL,
    reported            TEXT NOT NULL,
    version             INTEGER NOT NULL,
    desired_version     INTEGER NOT NULL,
    reported_version    INTEGER NOT NULL,
    desired_updated_at  INTEGER,
    reported_updated_at INTEGER,
    PRIMARY KEY (tenant, device_id),
    FOREIGN KEY (tenant, device_id) REFERENCES devices (tenant, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE provisioning_serials (
    tenant     TEXT NOT NULL,
    profile    TEXT NOT NULL,
    serial     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    claimed_at INTEGER,
    PRIMARY KEY (tenant, profile, serial),
    FOREIGN KEY (tenant, profile) REFERENCES profiles (tenant, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE ota_signing_keys (
    tenant     TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pkcs8      BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE firmware (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    profile    TEXT NOT NULL,
    version    TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant, profile, version)
) STRICT;

CREATE TABLE ota_campaigns (
    id                    TEXT PRIMARY KEY NOT NULL,
    tenant                TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    firmware_id           TEXT NOT NULL REFERENCES firmware (id),
    target                TEXT NOT NULL,
    batch_size            INTEGER NOT NULL,
    failure_threshold_pct INTEGER NOT NULL,
    min_failures          INTEGER NOT NULL,
    device_timeout_ms     INTEGER NOT NULL,
    status                TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'aborted', 'cancelled')),
    status_reason         TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
) STRICT;
CREATE INDEX ota_campaigns_by_tenant ON ota_campaigns (tenant, created_at);
CREATE INDEX ota_campaigns_running ON ota_campaigns (status) WHERE status = 'running';

CREATE TABLE ota_campaign_devices (
    campaign_id TEXT NOT NULL REFERENCES ota_campaigns (id) ON DELETE CASCADE,
    tenant      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'notified', 'downloading', 'downloaded',
                                              'installing', 'succeeded', 'failed', 'cancelled')),
    progress    INTEGER NOT NULL,
    error       TEXT,
    notified_at INTEGER,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, device_id),
    FOREIGN KEY (tenant, device_id) REFERENCES devices (tenant, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX ota_campaign_devices_by_device ON ota_campaign_devices (tenant, device_id);

CREATE TABLE alarms (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id       TEXT NOT NULL,
    type            TEXT NOT NULL,
    severity        TEXT NOT NULL
        CHECK (severity IN ('critical', 'major', 'minor', 'warning', 'indeterminate')),
    status          TEXT NOT NULL CHECK (status IN ('active', 'acknowledged', 'cleared')),
    source          TEXT NOT NULL,
    details         TEXT NOT NULL,
    count           INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT,
    cleared_at      INTEGER
) STRICT;
-- Dedup: one open (not cleared) alarm per device and type.
CREATE UNIQUE INDEX alarms_open ON alarms (tenant, device_id, type) WHERE status != 'cleared';
CREATE INDEX alarms_by_tenant ON alarms (tenant, created_at DESC, id);
CREATE INDEX alarms_by_device ON alarms (tenant, device_id, created_at DESC);

CREATE TABLE webhook_dead_letters (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source     TEXT NOT NULL,
    url        TEXT NOT NULL,
    method     TEXT NOT NULL,
    headers    TEXT NOT NULL,
    body       BLOB NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_dead_letters_by_tenant ON webhook_dead_letters (tenant, created_at DESC);

CREATE TABLE alarm_webhooks (
    tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    url        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;

CREATE TABLE rules (
    tenant      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    sql         TEXT NOT NULL,
    actions     TEXT NOT NULL,
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE zones (
    tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    polygon    TEXT NOT NULL,
    properties TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    tenant  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_by_tenant ON audit_log (tenant, at DESC, id DESC);
CREATE INDEX audit_log_by_target ON audit_log (tenant, action, target, at);

CREATE TABLE device_presence (
    tenant            TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    online            INTEGER NOT NULL CHECK (online IN (0, 1)),
    last_seen_at      INTEGER,
    connected_at      INTEGER,
    disconnected_at   INTEGER,
    disconnect_reason TEXT,
    connection        TEXT,
    messages_in       INTEGER NOT NULL,
    bytes_in          INTEGER NOT NULL,
    PRIMARY KEY (tenant, device_id),
    FOREIGN KEY (tenant, device_id) REFERENCES devices (tenant, id) ON DELETE CASCADE
) STRICT;
"#,
    // 5: telemetry retention per tenant and per profile, in days (NULL: inherit the tenant's,
    // then the installation's `storage.retention_days`). A column rather than a key of the
    // profile's settings JSON, so that the retention task reads every device's in one join.
    r#"
ALTER TABLE tenants ADD COLUMN retention_days INTEGER
    CHECK (retention_days BETWEEN 1 AND 36500);
ALTER TABLE profiles ADD COLUMN retention_days INTEGER
    CHECK (retention_days BETWEEN 1 AND 36500);
"#,
    // 6: people: users with Argon2id password hashes (PHC strings), their console sessions
    // (SHA-256 of the cookie token, the CSRF token, idle and absolute expiry) and failed logins
    // for the login throttle (keys `user:<tenant>/<name>` and `client:<address>`, no tenant:
    // an address is throttled across tenants, and a login for an unknown tenant still counts).
    r#"
CREATE TABLE users (
    tenant              TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    username            TEXT NOT NULL,
    role                TEXT NOT NULL
        CHECK (role IN ('admin', 'operator', 'viewer', 'city_regulator')),
    password_hash       TEXT NOT NULL,
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL,
    last_login_at       INTEGER,
    PRIMARY KEY (tenant, username)
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    username        TEXT NOT NULL,
    csrf_token      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    idle_timeout_ms INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    FOREIGN KEY (tenant, username) REFERENCES users (tenant, username) ON DELETE CASCADE
) STRICT;
CREATE INDEX sessions_by_user ON sessions (tenant, username, created_at);

CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_by_key ON login_failures (key, at);
CREATE INDEX login_failures_by_time ON login_failures (at);
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
