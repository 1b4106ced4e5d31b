//! Presence: whether each device is connected, when it was last heard from, how it connected,
//! and what it sent — for every transport.
//!
//! Live state is kept in memory (a message must not cost a database write); a background task
//! saves changed records to the registry every [`SAVE_INTERVAL`] and at shutdown, so last-seen
//! times survive restarts. Online/offline and inactive/active transitions are published retained
//! on `devices/{id}/presence`, so an application that subscribes to `devices/+/presence` learns
//! every device's state at once and every change after.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wulian_broker::{
    Broker, ConnectionInfo, Identity, OutboundMessage, Principal, Properties, Protocol, QoS,
    RetainedSource, TransportKind,
};
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_mqtt::topic;
use wulian_registry::{PresenceRecord, Registry};

use crate::alarms::AlarmService;
use crate::device_table::DeviceTable;
use crate::live::LiveEvents;
use crate::models::ModelCache;

/// The alarm type raised when a device goes silent past its profile's inactivity timeout.
pub const INACTIVE_ALARM: &str = "inactive";

/// How often changed presence records are written to the registry.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// Records written per registry transaction when saving.
const SAVE_CHUNK: usize = 512;
/// How often devices are checked against their profile's inactivity timeout.
pub const INACTIVITY_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Devices tracked; past this, devices not connected are forgotten (their saved record stays).
const MAX_TRACKED: usize = 2_000_000;

/// A connection's details, kept as a few plain fields: every connected device of a large
/// fleet carries them (as a parsed JSON map they cost about a kilobyte, as JSON text ~150 bytes
/// on the heap). Serialized as the JSON object the API shows and the registry stores:
/// `transport`, `listener`, `tls`, `protocol`, `client_id`, `remote_addr`, `keep_alive_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionDetails {
    listener: Option<TransportKind>,
    protocol: Option<Protocol>,
    keep_alive_s: u16,
    /// Address and port (a `SocketAddr` is 32 bytes for IPv6's flow and scope fields).
    remote_addr: Option<(IpAddr, u16)>,
    /// `None` while kept for a device whose client id is its device id (as devices' are):
    /// filled in when the details leave the tracker.
    client_id: Option<Box<str>>,
}

impl ConnectionDetails {
    /// The details of `device`'s connection.
    pub fn of(info: &ConnectionInfo, device: &str) -> ConnectionDetails {
        ConnectionDetails {
            listener: Some(info.transport),
            protocol: Some(info.protocol),
            keep_alive_s: info.keep_alive,
            remote_addr: Some((info.remote_addr.ip(), info.remote_addr.port())),
            client_id: (info.client_id != device).then(|| info.client_id.as_str().into()),
        }
    }

    /// With the client id written out (`device`'s id when it is the same).
    fn for_device(&self, device: &str) -> ConnectionDetails {
        ConnectionDetails {
            client_id: Some(self.client_id.clone().unwrap_or_else(|| device.into())),
            ..self.clone()
        }
    }

    /// Text saved earlier; fields it lacks (or does not know) read back as null.
    pub fn from_text(text: &str) -> ConnectionDetails {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let listener = match value["listener"].as_str() {
            Some("tcp") => Some(TransportKind::Tcp),
            Some("tls") => Some(TransportKind::Tls),
            Some("ws") => Some(TransportKind::Ws),
            Some("wss") => Some(TransportKind::Wss),
            _ => None,
        };
        let protocol = match value["protocol"].as_str() {
            Some("3.1.1") => Some(Protocol::V311),
            Some("5.0") => Some(Protocol::V5),
            _ => None,
        };
        ConnectionDetails {
            listener,
            protocol,
            keep_alive_s: value["keep_alive_s"]
                .as_u64()
                .and_then(|k| u16::try_from(k).ok())
                .unwrap_or(0),
            remote_addr: value["remote_addr"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|a| (a.ip(), a.port())),
            client_id: value["client_id"].as_str().map(Into::into),
        }
    }

    pub fn value(&self) -> Value {
        self.value_with_client_id(None)
    }

    /// [`ConnectionDetails::value`], with `device` as the client id when none is kept (the
    /// saved record needs no owned copy with it filled in).
    fn value_with_client_id(&self, device: Option<&str>) -> Value {
        json!({
            "transport": "mqtt",
            "listener": self.listener.map(TransportKind::as_str),
            "tls": self.listener.is_some_and(TransportKind::is_tls),
            "protocol": self.protocol.map(|p| match p {
                Protocol::V311 => "3.1.1",
                Protocol::V5 => "5.0",
            }),
            "client_id": self.client_id.as_deref().or(device),
            "remote_addr": self.remote_addr.map(|(ip, port)| SocketAddr::new(ip, port).to_string()),
            "keep_alive_s": self.keep_alive_s,
        })
    }
}

impl Serialize for ConnectionDetails {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

/// One device's connectivity as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DevicePresence {
    /// Connected over MQTT right now.
    pub online: bool,
    /// Heard from (a message over any transport, or a connect) past its profile's inactivity
    /// timeout; `false` when the profile sets none.
    pub inactive: bool,
    pub last_seen_at: Option<i64>,
    pub connected_at: Option<i64>,
    pub disconnected_at: Option<i64>,
    pub disconnect_reason: Option<String>,
    /// The last connection: transport, protocol, client id, remote address, keep alive.
    pub connection: Option<ConnectionDetails>,
    /// Messages and payload bytes received from the device since it was created (as far as
    /// saved; the last few seconds before a crash may be missing).
    pub messages_in: u64,
    pub bytes_in: u64,
}

#[derive(Debug, Default)]
pub struct PresenceMetrics {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub became_inactive: AtomicU64,
}

/// One device's presence as the tracker keeps it: [`DevicePresence`] in ~110 bytes rather
/// than ~170 (a fleet's worth of them), and whether it changed since the last save.
/// Timestamps are ms since the epoch, 0 for never.
#[derive(Debug, Default)]
struct Slot {
    online: bool,
    inactive: bool,
    dirty: bool,
    last_seen_at: i64,
    connected_at: i64,
    disconnected_at: i64,
    /// When the presence last changed (the `at` of its presence message).
    changed_at: i64,
    disconnect_reason: Option<Box<str>>,
    connection: Option<ConnectionDetails>,
    messages_in: u64,
    bytes_in: u64,
}

/// A kept timestamp as the API shows it.
fn ms(at: i64) -> Option<i64> {
    (at != 0).then_some(at)
}

impl Slot {
    /// The record saved for the device.
    fn record(&self, tenant: &str, device: &str) -> PresenceRecord {
        PresenceRecord {
            tenant: tenant.to_string(),
            device_id: device.to_string(),
            online: self.online,
            last_seen_at: ms(self.last_seen_at),
            connected_at: ms(self.connected_at),
            disconnected_at: ms(self.disconnected_at),
            disconnect_reason: self.disconnect_reason.as_deref().map(str::to_string),
            connection: self
                .connection
                .as_ref()
                .map(|c| c.value_with_client_id(Some(device)).to_string()),
            messages_in: self.messages_in,
            bytes_in: self.bytes_in,
        }
    }

    /// The device's presence as it leaves the tracker (connection details complete).
    fn presence(&self, device: &str) -> DevicePresence {
        DevicePresence {
            online: self.online,
            inactive: self.inactive,
            last_seen_at: ms(self.last_seen_at),
            connected_at: ms(self.connected_at),
            disconnected_at: ms(self.disconnected_at),
            disconnect_reason: self.disconnect_reason.as_deref().map(str::to_string),
            connection: self.connection.as_ref().map(|c| c.for_device(device)),
            messages_in: self.messages_in,
            bytes_in: self.bytes_in,
        }
    }
}

/// tenant → device → slot, looked up by `&str` (no allocation per message).
#[derive(Debug, Default)]
struct Table {
    by_tenant: DeviceTable<Slot>,
}

impl Table {
    fn get(&self, tenant: &str, device: &str) -> Option<&Slot> {
        self.by_tenant.get(tenant, device)
    }

    fn get_mut(&mut self, tenant: &str, device: &str) -> Option<&mut Slot> {
        self.by_tenant.get_mut(tenant, device)
    }

    /// The device's slot, created (allocating its keys) only the first time.
    fn slot(&mut self, tenant: &str, device: &str) -> &mut Slot {
        if self.by_tenant.len() >= MAX_TRACKED && self.get(tenant, device).is_none() {
            // Forget devices not connected (their saved record stays).
            self.by_tenant.retain(|s| s.online);
        }
        self.by_tenant.get_or_insert_with(tenant, device, || Slot {
            changed_at: now_ms(),
            ..Slot::default()
        })
    }

    fn remove(&mut self, tenant: &str, device: &str) {
        self.by_tenant.remove(tenant, device);
    }
}

pub struct PresenceTracker {
    registry: Arc<Registry>,
    broker: Broker,
    models: Arc<ModelCache>,
    alarms: Arc<AlarmService>,
    devices: Mutex<Table>,
    live: OnceLock<Arc<LiveEvents>>,
    pub metrics: PresenceMetrics,
}

impl PresenceTracker {
    /// Loads the saved records. Devices saved as online were cut off by a crash or restart:
    /// they start offline.
    pub fn load(
        registry: Arc<Registry>,
        broker: Broker,
        models: Arc<ModelCache>,
        alarms: Arc<AlarmService>,
    ) -> wulian_registry::Result<Arc<PresenceTracker>> {
        let mut devices = Table::default();
        for record in registry.load_presence()? {
            let was_online = record.online;
            let changed_at = if was_online {
                now_ms()
            } else {
                record
                    .disconnected_at
                    .or(record.connected_at)
                    .or(record.last_seen_at)
                    .unwrap_or(0)
            };
            let slot = devices.slot(&record.tenant, &record.device_id);
            *slot = Slot {
                changed_at,
                last_seen_at: record.last_seen_at.unwrap_or(0),
                connected_at: record.connected_at.unwrap_or(0),
                disconnected_at: record.disconnected_at.unwrap_or(0),
                disconnect_reason: if was_online {
                    Some("server restarted".into())
                } else {
                    record.disconnect_reason.map(Into::into)
                },
                connection: record
                    .connection
                    .as_deref()
                    .map(ConnectionDetails::from_text),
                messages_in: record.messages_in,
                bytes_in: record.bytes_in,
                ..Slot::default()
            };
        }
        let tracker = Arc::new(PresenceTracker {
            registry,
            broker,
            models,
            alarms,
            devices: Mutex::new(devices),
            live: OnceLock::new(),
            metrics: PresenceMetrics::default(),
        });
        tracker
            .broker
            .set_retained_source(Arc::new(PresenceRetained::new(&tracker)));
        Ok(tracker)
    }

    /// Connects the live event hub (the pipeline does, when the tracker is attached to it).
    pub fn attach_live(&self, live: Arc<LiveEvents>) {
        // A second pipeline (tests) keeps the first hub.
        let _first = self.live.set(live);
    }

    pub fn get(&self, tenant: &str, device: &str) -> DevicePresence {
        self.devices
            .lock()
            .get(tenant, device)
            .map(|s| s.presence(device))
            .unwrap_or_default()
    }

    /// A message from the device over any transport.
    pub fn seen(&self, tenant: &str, device: &str, bytes: usize) {
        let became_active = {
            let mut devices = self.devices.lock();
            let slot = devices.slot(tenant, device);
            slot.dirty = true;
            slot.last_seen_at = now_ms();
            slot.messages_in += 1;
            slot.bytes_in += bytes as u64;
            std::mem::replace(&mut slot.inactive, false)
        };
        if became_active {
            self.announce(tenant, device, "active");
            self.clear_inactive_alarm(tenant, device);
        }
    }

    fn clear_inactive_alarm(&self, tenant: &str, device: &str) {
        let (alarms, tenant, device) = (
            Arc::clone(&self.alarms),
            tenant.to_string(),
            device.to_string(),
        );
        tokio::spawn(async move {
            if let Err(error) = alarms.clear(&tenant, &device, INACTIVE_ALARM).await {
                tracing::warn!(tenant, device, error = %error, "Clearing an inactivity alarm failed.");
            }
        });
    }

    pub fn connected(&self, identity: &Identity, info: &ConnectionInfo) {
        let Principal::Device { device_id } = &identity.principal else {
            return;
        };
        self.metrics.connects.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let was_inactive;
        {
            let mut devices = self.devices.lock();
            let slot = devices.slot(&identity.tenant, device_id);
            slot.dirty = true;
            was_inactive = slot.inactive;
            slot.online = true;
            slot.inactive = false;
            slot.connected_at = now;
            slot.last_seen_at = now;
            slot.disconnect_reason = None;
            slot.connection = Some(ConnectionDetails::of(info, device_id));
        }
        self.announce(&identity.tenant, device_id, "connected");
        if was_inactive {
            self.clear_inactive_alarm(&identity.tenant, device_id);
        }
    }

    pub fn disconnected(&self, identity: &Identity, reason: &str) {
        let Principal::Device { device_id } = &identity.principal else {
            return;
        };
        self.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
        {
            let mut devices = self.devices.lock();
            let slot = devices.slot(&identity.tenant, device_id);
            slot.dirty = true;
            slot.online = false;
            slot.disconnected_at = now_ms();
            slot.disconnect_reason = Some(reason.into());
        }
        self.announce(&identity.tenant, device_id, "disconnected");
    }

    /// Forgets a deleted device, and clears its retained presence message.
    pub fn forget(&self, tenant: &str, device: &str) {
        self.devices.lock().remove(tenant, device);
        self.broker.publish(
            tenant,
            OutboundMessage {
                topic: format!("devices/{device}/presence"),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
            },
        );
    }

    /// Publishes the device's state on `devices/{id}/presence` and to live streams (`change`:
    /// connected, disconnected, inactive, active). The broker keeps no retained copy: new
    /// subscriptions get the current state from [`PresenceRetained`].
    fn announce(&self, tenant: &str, device: &str, change: &'static str) {
        let at = now_ms();
        let p = {
            let mut devices = self.devices.lock();
            match devices.get_mut(tenant, device) {
                Some(slot) => {
                    slot.changed_at = at;
                    slot.presence(device)
                }
                None => DevicePresence::default(),
            }
        };
        if let Some(live) = self.live.get() {
            live.status(tenant, device, change, &p);
        }
        self.broker.publish(
            tenant,
            presence_message(device, p.online, p.inactive, p.last_seen_at, at),
        );
    }

    /// The presence messages of `tenant`'s known devices on the topics `filter` matches.
    fn retained(&self, tenant: &str, filter: &str) -> Vec<OutboundMessage> {
        // A filter that can match `devices/{id}/presence` names one device at the second
        // level, or matches every id there (`+`, `#`).
        let levels: Vec<&str> = filter.splitn(3, '/').collect();
        let one = match levels.as_slice() {
            [first, id, ..] if *first != "#" && *id != "+" && *id != "#" => Some(*id),
            _ => None,
        };
        if let Some(id) = one {
            if !topic::matches(filter, &presence_topic(id)) {
                return Vec::new();
            }
            let devices = self.devices.lock();
            return devices
                .get(tenant, id)
                .map(|s| {
                    presence_message(id, s.online, s.inactive, ms(s.last_seen_at), s.changed_at)
                })
                .into_iter()
                .collect();
        }
        if !topic::matches(filter, "devices/any/presence") {
            return Vec::new();
        }
        // Copied under the lock, formatted outside it: a tenant may have 100,000 devices.
        let states: Vec<(String, bool, bool, Option<i64>, i64)> = {
            let devices = self.devices.lock();
            let Some(by_device) = devices.by_tenant.tenant(tenant) else {
                return Vec::new();
            };
            by_device
                .iter()
                .map(|(id, s)| {
                    (
                        id.to_string(),
                        s.online,
                        s.inactive,
                        ms(s.last_seen_at),
                        s.changed_at,
                    )
                })
                .collect()
        };
        let mut out: Vec<OutboundMessage> = states
            .into_iter()
            .map(|(id, online, inactive, last_seen_at, at)| {
                presence_message(&id, online, inactive, last_seen_at, at)
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// The tenants with tracked devices, copied out so the lock is not held across awaits.
    fn tenant_names(&self) -> Vec<String> {
        let devices = self.devices.lock();
        devices.by_tenant.tenants().map(str::to_string).collect()
    }

    /// Writes the changed records to the registry.
    pub async fn save(&self) -> wulian_registry::Result<usize> {
        let tenants = self.tenant_names();
        let mut saved = 0;
        let mut failed = None;
        for tenant in tenants {
            // A slice of the table at a time: after a reconnect storm every device is dirty,
            // and records for a whole fleet at once would be megabytes of short-lived copies.
            let mut at = 0;
            loop {
                let (records, next) = {
                    let mut devices = self.devices.lock();
                    let Some(by_device) = devices.by_tenant.tenant_mut(&tenant) else {
                        break;
                    };
                    let end = (at + SAVE_CHUNK).min(by_device.len());
                    if at >= end {
                        break;
                    }
                    let mut records = Vec::new();
                    for i in at..end {
                        let Some((device, slot)) = by_device.get_index_mut(i) else {
                            break;
                        };
                        if !slot.dirty {
                            continue;
                        }
                        slot.dirty = false;
                        records.push(slot.record(&tenant, device));
                    }
                    (records, end)
                };
                at = next;
                if records.is_empty() {
                    continue;
                }
                match self.save_records(records).await {
                    Ok(count) => saved += count,
                    Err(error) => failed = Some(error),
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(saved),
        }
    }

    /// Writes records; on failure marks their devices dirty again (the next round retries).
    async fn save_records(&self, records: Vec<PresenceRecord>) -> wulian_registry::Result<usize> {
        let keys: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.tenant.clone(), r.device_id.clone()))
            .collect();
        let count = records.len();
        let result = run_blocking(&self.registry, move |r| r.save_presence(&records)).await;
        if result.is_err() {
            let mut devices = self.devices.lock();
            for (tenant, device) in keys {
                if let Some(slot) = devices.get_mut(&tenant, &device) {
                    slot.dirty = true;
                }
            }
        }
        result.map(|()| count)
    }

    /// Marks devices silent past their profile's inactivity timeout; returns how many changed.
    pub async fn check_inactivity(&self) -> usize {
        let now = now_ms();
        let tenants = self.tenant_names();
        let mut candidates: Vec<((String, String), i64)> = Vec::new();
        for tenant in tenants {
            // Most fleets' profiles set no timeout: then nothing is copied or looked up.
            if !self.models.tenant_has_inactivity_timeouts(&tenant).await {
                continue;
            }
            let devices = self.devices.lock();
            let Some(by_device) = devices.by_tenant.tenant(&tenant) else {
                continue;
            };
            candidates.extend(
                by_device
                    .iter()
                    .filter(|(_, s)| !s.inactive)
                    .filter_map(|(d, s)| {
                        Some(((tenant.clone(), d.to_string()), ms(s.last_seen_at)?))
                    }),
            );
        }
        let mut changed = 0;
        for ((tenant, device), last_seen) in candidates {
            let Some(profile) = self.models.profile(&tenant, &device).await else {
                continue;
            };
            let Some(timeout_s) = profile.settings.effective_inactivity_timeout_s() else {
                continue;
            };
            if now - last_seen < i64::from(timeout_s) * 1000 {
                continue;
            }
            let flipped = {
                let mut devices = self.devices.lock();
                match devices.get_mut(&tenant, &device) {
                    Some(s) if s.last_seen_at == last_seen && !s.inactive => {
                        s.inactive = true;
                        true
                    }
                    _ => false,
                }
            };
            if flipped {
                changed += 1;
                self.metrics.became_inactive.fetch_add(1, Ordering::Relaxed);
                tracing::info!(tenant, device, timeout_s, "Device inactive.");
                self.announce(&tenant, &device, "inactive");
                let details = json!({"last_seen_at": last_seen, "inactivity_timeout_s": timeout_s});
                if let Err(error) = self
                    .alarms
                    .raise(
                        &tenant,
                        &device,
                        INACTIVE_ALARM,
                        "warning",
                        "presence",
                        details,
                    )
                    .await
                {
                    tracing::warn!(tenant, device, error = %error, "Raising an inactivity alarm failed.");
                }
            }
        }
        changed
    }

    /// Saves and checks periodically until `shutdown`, then saves once more.
    pub async fn run(self: Arc<PresenceTracker>, shutdown: CancellationToken) {
        let mut save = tokio::time::interval(SAVE_INTERVAL);
        let mut check = tokio::time::interval(INACTIVITY_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = save.tick() => {
                    if let Err(error) = self.save().await {
                        tracing::warn!(error = %error, "Saving presence failed; retrying.");
                    }
                }
                _ = check.tick() => {
                    self.check_inactivity().await;
                }
            }
        }
        if let Err(error) = self.save().await {
            tracing::warn!(error = %error, "Saving presence at shutdown failed.");
        }
    }
}

fn presence_topic(device: &str) -> String {
    format!("devices/{device}/presence")
}

/// A device's presence message (QoS 1, retained, JSON).
fn presence_message(
    device: &str,
    online: bool,
    inactive: bool,
    last_seen_at: Option<i64>,
    at: i64,
) -> OutboundMessage {
    let body = json!({
        "online": online,
        "inactive": inactive,
        "last_seen_at": last_seen_at,
        "at": at,
    });
    OutboundMessage::json(presence_topic(device), body.to_string(), true)
}

/// The device id of a `devices/{id}/presence` topic.
fn presence_device(topic: &str) -> Option<&str> {
    let id = topic.strip_prefix("devices/")?.strip_suffix("/presence")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The broker's retained `devices/{id}/presence` messages, answered from the tracker: a
/// retained copy per device in the broker (and its store, rewritten at every connect) would
/// repeat what the tracker holds anyway.
pub struct PresenceRetained(Weak<PresenceTracker>);

impl PresenceRetained {
    pub fn new(tracker: &Arc<PresenceTracker>) -> PresenceRetained {
        PresenceRetained(Arc::downgrade(tracker))
    }
}

impl RetainedSource for PresenceRetained {
    fn claims(&self, topic: &str) -> bool {
        presence_device(topic).is_some()
    }

    fn matching(&self, tenant: &str, filter: &str) -> Vec<OutboundMessage> {
        self.0
            .upgrade()
            .map(|tracker| tracker.retained(tenant, filter))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod connection_details_tests {
    use super::*;

    /// A fleet keeps one slot per device: its size is a budget (docs/benchmarks.md).
    #[test]
    fn a_devices_slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 112, "Slot is {size} bytes");
    }

    #[test]
    fn connection_details_serialize_and_read_back() {
        let info = ConnectionInfo {
            protocol: Protocol::V5,
            client_id: "bike-1".into(),
            remote_addr: "192.0.2.7:50123".parse().unwrap(),
            keep_alive: 60,
            transport: TransportKind::Wss,
        };
        let kept = ConnectionDetails::of(&info, "bike-1");
        let details = kept.for_device("bike-1");
        let expected = json!({
            "transport": "mqtt", "listener": "wss", "tls": true, "protocol": "5.0",
            "client_id": "bike-1", "remote_addr": "192.0.2.7:50123", "keep_alive_s": 60
        });
        assert_eq!(details.value(), expected);
        // The saved record fills in the client id the tracker leaves out for devices.
        assert_eq!(kept.value()["client_id"], Value::Null);
        assert_eq!(kept.value_with_client_id(Some("bike-1")), expected);
        let presence = DevicePresence {
            connection: Some(details.clone()),
            ..DevicePresence::default()
        };
        assert_eq!(
            serde_json::to_value(&presence).unwrap()["connection"],
            expected
        );
        assert_eq!(
            ConnectionDetails::from_text(&details.value().to_string()),
            details
        );
        // Older or foreign text: what is missing reads back as null.
        let old = ConnectionDetails::from_text(r#"{"protocol":"mqtt"}"#);
        assert_eq!(old.value()["protocol"], Value::Null);
        assert_eq!(old.value()["remote_addr"], Value::Null);
        assert_eq!(
            ConnectionDetails::from_text("not json").value()["tls"],
            false
        );
    }
}

#[cfg(test)]
mod inactivity_tests {
    use super::*;
    use crate::webhooks::{WebhookConfig, WebhookSender};
    use wulian_broker::{
        Authenticator, BrokerConfig, ConnectRequest, InboundMessage, MessageSink, ReasonCode,
        SinkError,
    };
    use wulian_registry::NewProfile;
    use wulian_registry::test_support::{new_device, new_device_with, registry_with_tenant};

    struct Nobody;

    #[async_trait::async_trait]
    impl Authenticator for Nobody {
        async fn authenticate(&self, _req: &ConnectRequest) -> Result<Identity, ReasonCode> {
            Err(ReasonCode::NotAuthorized)
        }
    }

    #[async_trait::async_trait]
    impl MessageSink for Nobody {
        async fn on_publish(&self, _i: &Identity, _m: &InboundMessage) -> Result<(), SinkError> {
            Ok(())
        }
    }

    /// A tracker on `reg` with a broker nobody connects to, and its model cache.
    fn tracker(reg: &Arc<Registry>) -> (Arc<PresenceTracker>, Arc<ModelCache>) {
        let broker = Broker::new(BrokerConfig::default(), Arc::new(Nobody), Arc::new(Nobody));
        let webhooks = WebhookSender::start(
            Arc::clone(reg),
            WebhookConfig::default(),
            CancellationToken::new(),
        );
        let alarms = AlarmService::new(Arc::clone(reg), broker.clone(), webhooks);
        let models = ModelCache::new(Arc::clone(reg));
        let tracker =
            PresenceTracker::load(Arc::clone(reg), broker, Arc::clone(&models), alarms).unwrap();
        (tracker, models)
    }

    fn silence(tracker: &PresenceTracker, tenant: &str, device: &str, ms: i64) {
        tracker
            .devices
            .lock()
            .get_mut(tenant, device)
            .unwrap()
            .last_seen_at = now_ms() - ms;
    }

    /// Every dirty device is saved, over several slices of the table, and only once.
    #[tokio::test]
    async fn save_writes_every_changed_device_in_slices() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let n = SAVE_CHUNK * 2 + 7;
        for i in 0..n {
            reg.create_device(&tenant.id, &new_device(&format!("d{i}")))
                .unwrap();
        }
        let reg = Arc::new(reg);
        let (tracker, _) = tracker(&reg);
        for i in 0..n {
            tracker.seen("acme", &format!("d{i}"), i);
        }
        assert_eq!(tracker.save().await.unwrap(), n);
        assert_eq!(tracker.save().await.unwrap(), 0, "nothing changed since");
        let saved = reg.load_presence().unwrap();
        assert_eq!(saved.len(), n);
        let d9 = saved.iter().find(|r| r.device_id == "d9").unwrap();
        assert_eq!((d9.messages_in, d9.bytes_in), (1, 9));
    }

    /// Only devices whose profile sets a timeout become inactive, once silent past it; a
    /// tenant whose profiles set none is skipped whole.
    #[tokio::test]
    async fn silent_devices_become_inactive_past_their_profiles_timeout() {
        let (reg, tenant) = registry_with_tenant("acme").unwrap();
        let mut profile: NewProfile = serde_json::from_value(json!({"id": "sensor"})).unwrap();
        profile.settings.inactivity_timeout_s = Some(60);
        reg.create_profile(&tenant.id, &profile).unwrap();
        reg.create_device(&tenant.id, &new_device_with("d1", "sensor", &[]))
            .unwrap();
        reg.create_device(&tenant.id, &new_device("d2")).unwrap();
        let other = reg
            .create_tenant(
                &serde_json::from_value(json!({"id": "quiet", "name": "Quiet"})).unwrap(),
            )
            .unwrap();
        reg.create_device(&other.id, &new_device("q1")).unwrap();
        let reg = Arc::new(reg);
        let (tracker, models) = tracker(&reg);
        for (t, d) in [("acme", "d1"), ("acme", "d2"), ("quiet", "q1")] {
            tracker.seen(t, d, 10);
        }
        assert_eq!(tracker.check_inactivity().await, 0);
        silence(&tracker, "acme", "d1", 30_000);
        assert_eq!(tracker.check_inactivity().await, 0, "30 s is within 60");
        for (t, d) in [("acme", "d1"), ("acme", "d2"), ("quiet", "q1")] {
            silence(&tracker, t, d, 120_000);
        }
        assert_eq!(tracker.check_inactivity().await, 1);
        assert!(tracker.get("acme", "d1").inactive);
        assert!(
            !tracker.get("acme", "d2").inactive,
            "its profile sets no timeout"
        );
        assert!(!models.tenant_has_inactivity_timeouts("quiet").await);
        // A message makes it active again.
        tracker.seen("acme", "d1", 10);
        assert!(!tracker.get("acme", "d1").inactive);
    }
}
