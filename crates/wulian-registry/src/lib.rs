//! The registry: tenants, API keys, users and their sessions, devices with their credentials,
//! profiles with thing models, twins, presence and commands, kept in one SQLite file.
//!
//! Why SQLite: the registry is small, relational and read-mostly, and an embedded database keeps
//! the platform a single binary. WAL mode lets readers in other processes (backups, `sqlite3`)
//! run alongside the writer; `busy_timeout` makes short lock waits invisible to callers.
//!
//! Every method is synchronous (async callers use `spawn_blocking`). [`Registry`] is `Send +
//! Sync`: one writer connection behind a mutex, held only for the SQL itself — secrets are
//! generated and hashed before the lock is taken, and the fsync that makes a write durable
//! happens after it is released, shared by every write committed meanwhile (`wulian_common::group_commit`).
//! Hot reads use a few read-only connections. Tenant isolation is enforced here, not by callers: every
//! query that takes a `tenant` filters by it, and a record of another tenant is `NotFound`.

mod alarms;
mod api_keys;
mod audit;
mod certificates;
mod commands;
mod devices;
mod error;
mod migrations;
pub mod model_import;
mod mqtt_policy;
mod ota;
mod presence;
mod profiles;
mod provisioning;
mod retention;
mod rules;
mod secret;
mod sessions;
mod tenants;
pub mod test_support;
pub mod thing_model;
mod twins;
mod users;
mod validate;
mod webhooks;
mod zones;

use std::path::Path;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use alarms::{Alarm, AlarmChange, AlarmQuery, SEVERITIES};
pub use api_keys::{ApiKey, NewApiKey, Scope};
pub use audit::{AuditEntry, NewAuditEntry};
pub use certificates::{
    CaCertificate, CertificateLogin, MAX_CA_CERTIFICATES, RevokedCertificate,
    certificate_fingerprint,
};
pub use commands::{Command, CommandStatus};
pub use devices::{Device, DeviceIdentity, DevicePage, DevicePatch, DeviceQuery, NewDevice};
pub use error::{Error, Result};
pub use mqtt_policy::{KEY_POLICY_VARIABLES, MAX_POLICY_RULES, MqttPolicy, TopicRules};
pub use ota::{
    Campaign, CampaignCounts, CampaignDevice, CampaignTarget, Firmware, MAX_CAMPAIGN_DEVICES,
    NewCampaign, REPORTABLE_STATES,
};
pub use presence::PresenceRecord;
pub use profiles::{MAX_PROFILES, NewProfile, Profile, ProfileSettings, ValidationMode};
pub use provisioning::{ClaimRefusal, MAX_SERIALS_PER_CALL, ProvisioningSerial};
pub use retention::RetentionOverrides;
pub use rules::{MAX_RULES, NewRule, StoredRule};
pub use secret::{API_KEY_PREFIX, DEVICE_TOKEN_PREFIX, PROVISIONING_SECRET_PREFIX, new_command_id};
pub use sessions::{
    LoginThrottle, MAX_SESSIONS_PER_USER, NewSession, SESSION_TOKEN_PREFIX, Session,
    SessionTimeouts,
};
pub use tenants::{DEFAULT_TENANT_ID, NewTenant, Tenant, TenantPatch};
pub use thing_model::ThingModel;
pub use twins::{MAX_TWIN_SECTION_BYTES, Twin, TwinSection, TwinUpdate, delta, merge_patch};
pub use users::{
    LoginCheck, MAX_PASSWORD_LEN, MAX_USERNAME_LEN, MAX_USERS, MIN_PASSWORD_LEN, NewUser,
    PasswordChange, Role, User, UserPatch, check_password, validate_username,
};
pub use validate::{
    MAX_ATTRIBUTES_BYTES, MAX_COMMAND_PARAMS_BYTES, MAX_DEVICE_ID_LEN, MAX_LABEL_KEY_LEN,
    MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_NAME_LEN, MAX_RETENTION_DAYS, RESERVED_DEVICE_ID,
};
pub use webhooks::{AlarmWebhook, DeadLetter, check_webhook_url};
pub use zones::{MAX_ZONES, Zone};

/// How long a statement waits for another process's write lock before failing with `BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections beside the writer (see `Registry::read_conn`).
const READERS: usize = 3;

/// The registry database. Cheap to share behind an `Arc`.
pub struct Registry {
    conn: Mutex<Connection>,
    /// Read-only connections for the hottest reads (device and API-key authentication, device
    /// lookups), so a connect storm does not queue behind writes' fsyncs. Empty for an
    /// in-memory database, which other connections cannot see: reads then use `conn`.
    readers: Vec<Mutex<Connection>>,
    /// Makes commits durable after the writer is released (group commit).
    group_commit: wulian_common::group_commit::GroupCommit,
    /// Bumped on every CA certificate change (see `certificates.rs`).
    ca_generation: std::sync::atomic::AtomicU64,
    /// Bumped on every profile change and device profile assignment (see `profiles.rs`).
    profile_generation: std::sync::atomic::AtomicU64,
}

// The API layer shares one registry across tasks; keep that a compile-time guarantee.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Registry>();
};

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating if needed) the database at `path`, switches it to WAL mode and applies
    /// pending migrations.
    pub fn open(path: &Path) -> Result<Registry> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut registry = Registry::init(Connection::open(path)?, Some(wal.into()))?;
        for _ in 0..READERS {
            let reader = Connection::open(path)?;
            reader.busy_timeout(BUSY_TIMEOUT)?;
            reader.pragma_update(None, "query_only", true)?;
            registry.readers.push(Mutex::new(reader));
        }
        Ok(registry)
    }

    /// A private in-memory database (tests, ephemeral runs). Same schema and rules.
    pub fn open_in_memory() -> Result<Registry> {
        Registry::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, wal: Option<std::path::PathBuf>) -> Result<Registry> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // In-memory databases answer "memory"; files answer "wal".
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // A committed change (a device created, a token rotated, a command's answer) is on disk
        // before the caller hears of it, so a power cut cannot undo a secret already shown. The
        // migrations run with FULL; afterwards COMMIT does not sync (NORMAL) and `write` waits
        // for a WAL sync shared with every other write of the moment (wulian_common::group_commit).
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version = migrations::run(&mut conn)?;
        if wal.is_some() {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        tracing::debug!(schema_version = version, "Registry opened.");
        Ok(Registry {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            group_commit: wulian_common::group_commit::GroupCommit::new(wal),
            ca_generation: std::sync::atomic::AtomicU64::new(0),
            profile_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    /// A connection for reads only: a free reader, or the busiest reader's turn, or (in
    /// memory) the writer. WAL readers see every committed write and never block it.
    fn read_conn(&self) -> MutexGuard<'_, Connection> {
        match self.readers.iter().find_map(|r| r.try_lock()) {
            Some(reader) => reader,
            None => match self.readers.first() {
                Some(reader) => reader.lock(),
                None => self.conn(),
            },
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Runs `f` in an immediate (write-locking) transaction; commits on `Ok`, rolls back on
    /// `Err`. Returns once the commit is durable; the writer connection is free meanwhile.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let seq = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            (out, self.group_commit.committed())
        };
        let (out, seq) = seq;
        self.group_commit
            .wait_durable(seq)
            .map_err(|e| Error::Io(format!("sync the registry's write-ahead log: {e}")))?;
        Ok(out)
    }
}

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
