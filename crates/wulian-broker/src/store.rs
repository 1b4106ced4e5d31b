//! Durable broker state: persistent sessions, their queued messages, and retained messages.
//!
//! The broker keeps all of this in memory and writes through to a [`Store`] so it survives a
//! restart. The trait is the seam for other back ends (a NATS JetStream KV store for cluster
//! mode); [`SqliteStore`] is the single-node implementation. Calls are synchronous and made
//! from the blocking pool ([`run`]), never on the connection tasks' hot path: clean sessions
//! and messages for connected clients never touch the store.
//!
//! Messages are stored as encoded MQTT 5.0 PUBLISH packets (the codec is the serialisation
//! format, so every property survives) plus the wall-clock time they expire at. Queued
//! messages carry a broker-wide sequence number: appends are idempotent (`INSERT OR IGNORE`)
//! and a session snapshot replaces only rows up to the sequence number it was taken at, so a
//! snapshot and concurrent appends cannot lose or duplicate messages.
//!
//! On disk: SQLite in WAL mode, every write on disk before it is acknowledged (writes share
//! fsyncs: `wulian_common::group_commit`); the file is marked with
//! `application_id` "WLBR" (checked at open) and a schema version in `user_version` (a newer
//! one is refused). SQLite's journal handles torn writes: a transaction is all or nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use wulian_common::group_commit::GroupCommit;
use wulian_mqtt::{Packet, Protocol, Publish, QoS, RetainHandling, SubscriptionOptions};

/// A store failure; the broker logs it and carries on with its in-memory state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is not a wulian broker store (application id {1:#x})")]
    NotOurs(String, i64),
    #[error("broker store schema version {0} is newer than this build understands")]
    TooNew(i64),
    #[error("could not encode a stored message: {0}")]
    Encode(#[from] wulian_mqtt::EncodeError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One queued or in-flight message of a persistent session.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Broker-wide sequence number (delivery order within a session).
    pub seq: u64,
    /// `(packet id, state)` of a message that was in flight: state 1 = QoS 1 sent, 2 = QoS 2
    /// sent, 3 = PUBREL sent. None for a message not yet sent.
    pub inflight: Option<(u16, u8)>,
    /// The message (QoS and retain as delivered); None only for state 3.
    pub publish: Option<Publish>,
    /// Wall-clock expiry (Unix ms) from the message expiry interval.
    pub expires_at_ms: Option<u64>,
}

/// A persistent session as stored.
#[derive(Debug, Clone, Default)]
pub struct StoredSession {
    pub tenant: String,
    pub client_id: String,
    /// Session expiry interval in seconds; `u32::MAX` = never.
    pub expiry_secs: u32,
    /// When the client disconnected (Unix ms); None while it is connected.
    pub disconnected_at_ms: Option<u64>,
    /// Filter, options and MQTT 5.0 subscription identifier.
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
    pub messages: Vec<StoredMessage>,
}

/// A retained message as stored.
#[derive(Debug, Clone)]
pub struct StoredRetained {
    pub tenant: String,
    pub publish: Publish,
    pub expires_at_ms: Option<u64>,
}

/// Durable broker state. Implementations must be safe to call from several blocking threads.
pub trait Store: Send + Sync + 'static {
    fn load_sessions(&self) -> Result<Vec<StoredSession>>;
    /// Creates or updates a session's expiry and connection time (not its contents).
    fn put_session(
        &self,
        tenant: &str,
        client_id: &str,
        expiry_secs: u32,
        disconnected_at_ms: Option<u64>,
    ) -> Result<()>;
    /// Replaces the session's contents: subscriptions, inbound QoS 2 ids and the messages with
    /// `seq <= watermark` (later ones were appended concurrently and are kept).
    fn save_snapshot(&self, session: &StoredSession, watermark: u64) -> Result<()>;
    fn delete_session(&self, tenant: &str, client_id: &str) -> Result<()>;
    fn put_subscription(
        &self,
        tenant: &str,
        client_id: &str,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Result<()>;
    fn delete_subscription(&self, tenant: &str, client_id: &str, filter: &str) -> Result<()>;
    /// Appends messages queued for offline sessions: `(tenant, client id, message)`.
    fn append_messages(&self, batch: &[(String, String, StoredMessage)]) -> Result<()>;
    fn load_retained(&self) -> Result<Vec<StoredRetained>>;
    fn put_retained(&self, retained: &StoredRetained) -> Result<()>;
    /// Deletes the retained messages of these `(tenant, topic)` pairs, in one transaction.
    fn delete_retained(&self, retained: &[(String, String)]) -> Result<()>;
}

/// Runs a store call on the blocking pool.
pub(crate) async fn run<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T> + Send + 'static,
{
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Current wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Remaining time until `expires_at_ms`, None once passed.
pub(crate) fn remaining(expires_at_ms: u64, now_ms: u64) -> Option<Duration> {
    expires_at_ms
        .checked_sub(now_ms)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// `application_id` of our SQLite files ("WLBR"), checked at open.
const APPLICATION_ID: i64 = 0x574C_4252;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    tenant TEXT NOT NULL,
    client_id TEXT NOT NULL,
    expiry_secs INTEGER NOT NULL,
    disconnected_at_ms INTEGER,
    inbound_qos2 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, client_id)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    options INTEGER NOT NULL,
    PRIMARY KEY (tenant, client_id, filter)
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    client_id TEXT NOT NULL,
    packet_id INTEGER,
    state INTEGER,
    publish BLOB,
    expires_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (tenant, client_id, seq);
CREATE TABLE IF NOT EXISTS retained (
    tenant TEXT NOT NULL,
    topic TEXT NOT NULL,
    publish BLOB NOT NULL,
    expires_at_ms INTEGER,
    PRIMARY KEY (tenant, topic)
);
";

/// The single-node store: one SQLite file (WAL mode) in the broker's data directory.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Writes share WAL fsyncs, after the connection is released (a connect storm's retained
    /// presence messages would otherwise queue one fsync and one blocking thread each).
    group: GroupCommit,
}

/// The writer connection, locked; [`Writer::durable`] releases it and waits for the fsync.
struct Writer<'a> {
    conn: parking_lot::MutexGuard<'a, Connection>,
    group: &'a GroupCommit,
}

impl Writer<'_> {
    /// Call after the write committed: returns once it is on disk.
    fn durable(self) -> Result<()> {
        let seq = self.group.committed();
        drop(self.conn);
        Ok(self.group.wait_durable(seq)?)
    }
}

impl std::ops::Deref for Writer<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/broker.sqlite`.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("broker.sqlite");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if app != 0 && app != APPLICATION_ID {
            return Err(StoreError::NotOurs(path.display().to_string(), app));
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        // From here COMMIT writes the WAL without syncing it; `Writer::durable` syncs it.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut wal = path.into_os_string();
        wal.push("-wal");
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            group: GroupCommit::new(Some(wal.into())),
        })
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            conn: self.conn.lock(),
            group: &self.group,
        }
    }
}

fn encode_publish(p: &Publish) -> Result<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut p = p.clone();
    if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
        p.packet_id = 1;
    }
    wulian_mqtt::encode(&Packet::Publish(p), Protocol::V5, &mut buf)?;
    Ok(buf.to_vec())
}

/// Decodes a stored PUBLISH; a row that does not decode is skipped (logged), not fatal.
fn decode_publish(blob: &[u8]) -> Option<Publish> {
    let mut buf = BytesMut::from(blob);
    match wulian_mqtt::decode(&mut buf, Protocol::V5, usize::MAX) {
        Ok(Some(Packet::Publish(p))) => Some(p),
        other => {
            tracing::warn!(result = ?other.map(|p| p.is_some()), "undecodable stored message skipped");
            None
        }
    }
}

/// Options in the low byte (the SUBSCRIBE options byte), subscription identifier above.
fn options_to_int(o: SubscriptionOptions, sub_id: Option<u32>) -> i64 {
    i64::from(o.qos as u8)
        | (i64::from(o.no_local) << 2)
        | (i64::from(o.retain_as_published) << 3)
        | ((o.retain_handling as i64) << 4)
        | (i64::from(sub_id.unwrap_or(0)) << 8)
}

fn sub_id_from_int(v: i64) -> Option<u32> {
    u32::try_from(v >> 8).ok().filter(|id| *id != 0)
}

fn options_from_int(v: i64) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8((v & 3) as u8).unwrap_or(QoS::AtMostOnce),
        no_local: v & 4 != 0,
        retain_as_published: v & 8 != 0,
        retain_handling: match (v >> 4) & 3 {
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert_message(tx: &Connection, tenant: &str, client_id: &str, m: &StoredMessage) -> Result<()> {
    let blob = m.publish.as_ref().map(encode_publish).transpose()?;
    tx.execute(
        "INSERT OR IGNORE INTO messages (seq, tenant, client_id, packet_id, state, publish, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            to_i64(m.seq),
            tenant,
            client_id,
            m.inflight.map(|(id, _)| id),
            m.inflight.map(|(_, s)| s),
            blob,
            m.expires_at_ms.map(to_i64),
        ],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn load_sessions(&self) -> Result<Vec<StoredSession>> {
        let conn = self.conn.lock();
        let mut sessions = Vec::new();
        let mut stmt = conn.prepare(
            "SELECT tenant, client_id, expiry_secs, disconnected_at_ms, inbound_qos2 FROM sessions",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredSession {
                tenant: r.get(0)?,
                client_id: r.get(1)?,
                expiry_secs: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                disconnected_at_ms: r
                    .get::<_, Option<i64>>(3)?
                    .map(|v| u64::try_from(v).unwrap_or(0)),
                inbound_qos2: r
                    .get::<_, String>(4)?
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                ..StoredSession::default()
            })
        })?;
        for row in rows {
            sessions.push(row?);
        }
        let mut subs = conn.prepare(
            "SELECT filter, options FROM subscriptions WHERE tenant = ?1 AND client_id = ?2",
        )?;
        let mut msgs = conn.prepare(
            "SELECT seq, packet_id, state, publish, expires_at_ms FROM messages
             WHERE tenant = ?1 AND client_id = ?2 ORDER BY seq",
        )?;
        for s in &mut sessions {
            let rows = subs.query_map(params![s.tenant, s.client_id], |r| {
                let v: i64 = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    options_from_int(v),
                    sub_id_from_int(v),
                ))
            })?;
            for row in rows {
                s.subscriptions.push(row?);
            }
            let rows = msgs.query_map(params![s.tenant, s.client_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<u16>>(1)?,
                    r.get::<_, Option<u8>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?;
            for row in rows {
                let (seq, packet_id, state, blob, expires) = row?;
                let publish = match blob {
                    Some(b) => match decode_publish(&b) {
                        Some(p) => Some(p),
                        None => continue,
                    },
                    None => None,
                };
                s.messages.push(StoredMessage {
                    seq: u64::try_from(seq).unwrap_or(0),
                    inflight: packet_id.zip(state),
                    publish,
                    expires_at_ms: expires.map(|v| u64::try_from(v).unwrap_or(0)),
                });
            }
        }
        Ok(sessions)
    }

    fn put_session(
        &self,
        tenant: &str,
        client_id: &str,
        expiry_secs: u32,
        disconnected_at_ms: Option<u64>,
    ) -> Result<()> {
        let w = self.writer();
        w.execute(
            "INSERT INTO sessions (tenant, client_id, expiry_secs, disconnected_at_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, client_id) DO UPDATE SET
               expiry_secs = excluded.expiry_secs, disconnected_at_ms = excluded.disconnected_at_ms",
            params![
                tenant,
                client_id,
                i64::from(expiry_secs),
                disconnected_at_ms.map(to_i64)
            ],
        )?;
        w.durable()
    }

    fn save_snapshot(&self, s: &StoredSession, watermark: u64) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction()?;
        let qos2: Vec<String> = s.inbound_qos2.iter().map(u16::to_string).collect();
        tx.execute(
            "INSERT INTO sessions (tenant, client_id, expiry_secs, disconnected_at_ms, inbound_qos2)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, client_id) DO UPDATE SET
               expiry_secs = excluded.expiry_secs, disconnected_at_ms = excluded.disconnected_at_ms,
               inbound_qos2 = excluded.inbound_qos2",
            params![
                s.tenant,
                s.client_id,
                i64::from(s.expiry_secs),
                s.disconnected_at_ms.map(to_i64),
                qos2.join(",")
            ],
        )?;
        tx.execute(
            "DELETE FROM subscriptions WHERE tenant = ?1 AND client_id = ?2",
            params![s.tenant, s.client_id],
        )?;
        for (filter, options, sub_id) in &s.subscriptions {
            tx.execute(
                "INSERT INTO subscriptions (tenant, client_id, filter, options) VALUES (?1, ?2, ?3, ?4)",
                params![s.tenant, s.client_id, filter, options_to_int(*options, *sub_id)],
            )?;
        }
        tx.execute(
            "DELETE FROM messages WHERE tenant = ?1 AND client_id = ?2 AND seq <= ?3",
            params![s.tenant, s.client_id, to_i64(watermark)],
        )?;
        for m in &s.messages {
            insert_message(&tx, &s.tenant, &s.client_id, m)?;
        }
        tx.commit()?;
        w.durable()
    }

    fn delete_session(&self, tenant: &str, client_id: &str) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction()?;
        for table in ["sessions", "subscriptions", "messages"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant = ?1 AND client_id = ?2"),
                params![tenant, client_id],
            )?;
        }
        tx.commit()?;
        w.durable()
    }

    fn put_subscription(
        &self,
        tenant: &str,
        client_id: &str,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Result<()> {
        let w = self.writer();
        w.execute(
            "INSERT OR REPLACE INTO subscriptions (tenant, client_id, filter, options) VALUES (?1, ?2, ?3, ?4)",
            params![tenant, client_id, filter, options_to_int(options, sub_id)],
        )?;
        w.durable()
    }

    fn delete_subscription(&self, tenant: &str, client_id: &str, filter: &str) -> Result<()> {
        let w = self.writer();
        w.execute(
            "DELETE FROM subscriptions WHERE tenant = ?1 AND client_id = ?2 AND filter = ?3",
            params![tenant, client_id, filter],
        )?;
        w.durable()
    }

    fn append_messages(&self, batch: &[(String, String, StoredMessage)]) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction()?;
        for (tenant, client_id, m) in batch {
            // Only for sessions that still exist (it may have expired meanwhile).
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM sessions WHERE tenant = ?1 AND client_id = ?2",
                    params![tenant, client_id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                insert_message(&tx, tenant, client_id, m)?;
            }
        }
        tx.commit()?;
        w.durable()
    }

    fn load_retained(&self) -> Result<Vec<StoredRetained>> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT tenant, publish, expires_at_ms FROM retained")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (tenant, blob, expires) = row?;
            if let Some(publish) = decode_publish(&blob) {
                out.push(StoredRetained {
                    tenant,
                    publish,
                    expires_at_ms: expires.map(|v| u64::try_from(v).unwrap_or(0)),
                });
            }
        }
        Ok(out)
    }

    fn put_retained(&self, r: &StoredRetained) -> Result<()> {
        let blob = encode_publish(&r.publish)?;
        let w = self.writer();
        w.execute(
            "INSERT OR REPLACE INTO retained (tenant, topic, publish, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![r.tenant, r.publish.topic, blob, r.expires_at_ms.map(to_i64)],
        )?;
        w.durable()
    }

    fn delete_retained(&self, retained: &[(String, String)]) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM retained WHERE tenant = ?1 AND topic = ?2")?;
            for (tenant, topic) in retained {
                delete.execute(params![tenant, topic])?;
            }
        }
        tx.commit()?;
        w.durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wulian_mqtt::Properties;

    fn publish(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: 0,
            payload: Bytes::from_static(b"hi"),
            properties: Properties {
                content_type: Some("text/plain".into()),
                ..Properties::default()
            },
        }
    }

    fn msg(seq: u64, topic: &str) -> StoredMessage {
        StoredMessage {
            seq,
            inflight: None,
            publish: Some(publish(topic)),
            expires_at_ms: None,
        }
    }

    #[test]
    fn sessions_roundtrip_and_snapshot_keeps_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.put_session("t", "c", 60, None).unwrap();
        let opts = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        store
            .put_subscription("t", "c", "a/#", opts, Some(300))
            .unwrap();
        let batch = vec![
            ("t".to_string(), "c".to_string(), msg(1, "a/1")),
            ("t".to_string(), "c".to_string(), msg(5, "a/5")),
            ("t".to_string(), "gone".to_string(), msg(6, "a/6")),
        ];
        store.append_messages(&batch).unwrap();
        // Snapshot at watermark 4 replaces seq 1 with an in-flight seq 2; seq 5 stays.
        let snapshot = StoredSession {
            tenant: "t".into(),
            client_id: "c".into(),
            expiry_secs: 60,
            disconnected_at_ms: Some(10),
            subscriptions: vec![("a/#".into(), opts, Some(300))],
            inbound_qos2: vec![7, 9],
            messages: vec![StoredMessage {
                inflight: Some((3, 1)),
                ..msg(2, "a/2")
            }],
        };
        store.save_snapshot(&snapshot, 4).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        let sessions = store.load_sessions().unwrap();
        assert_eq!(sessions.len(), 1);
        let s = &sessions[0];
        assert_eq!(s.subscriptions, vec![("a/#".to_string(), opts, Some(300))]);
        assert_eq!(s.inbound_qos2, vec![7, 9]);
        assert_eq!(s.disconnected_at_ms, Some(10));
        let seqs: Vec<u64> = s.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![2, 5]);
        assert_eq!(s.messages[0].inflight, Some((3, 1)));
        let p = s.messages[0].publish.as_ref().unwrap();
        assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
        store.delete_session("t", "c").unwrap();
        assert!(store.load_sessions().unwrap().is_empty());
    }

    #[test]
    fn retained_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let r = StoredRetained {
            tenant: "t".into(),
            publish: publish("a/b"),
            expires_at_ms: Some(99),
        };
        store.put_retained(&r).unwrap();
        let all = store.load_retained().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].publish.topic, "a/b");
        assert_eq!(all[0].expires_at_ms, Some(99));
        store
            .delete_retained(&[("t".into(), "a/b".into())])
            .unwrap();
        assert!(store.load_retained().unwrap().is_empty());
    }
}
