//! Live device events for the API's streams (`GET /api/v1/live`): telemetry as it is stored,
//! connection changes, twin changes and command state changes, per tenant.
//!
//! One `broadcast` channel per tenant that has a stream open. Publishers ask first whether
//! anyone listens — one atomic load while no stream is open anywhere, a map lookup otherwise —
//! and build no event when nobody does. Telemetry, twin and command events are built only for
//! devices some stream of the tenant subscribed to; status changes for every device of a
//! tenant with a stream open (the device list shows them all). Each stream filters the
//! tenant's channel down to its own devices.
//!
//! Memory is bounded: a channel holds [`CHANNEL_CAPACITY`] events whatever the number of
//! streams, and a stream that falls further behind loses the oldest and is told how many
//! ([`LiveRecv::Lagged`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use wulian_common::time::now_ms;
use wulian_registry::{Command, Twin, TwinSection};
use wulian_tsdb::{Value, WriteEntry};

use crate::presence::DevicePresence;

/// Events buffered per tenant channel; a stream further behind is told it lagged.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Streams open at once across the installation.
pub const MAX_STREAMS: usize = 10_000;
/// Devices one stream may subscribe to.
pub const MAX_DEVICES_PER_STREAM: usize = 1_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveError {
    #[error("too many live streams are open ({MAX_STREAMS}); try again later")]
    TooManyStreams,
    #[error("a stream may subscribe to at most {MAX_DEVICES_PER_STREAM} devices")]
    TooManyDevices,
}

/// One event, as a stream sends it (JSON with a `type` member).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Readings of one device at one timestamp, once durable.
    Telemetry {
        device: String,
        ts: i64,
        values: Map<String, Json>,
    },
    /// A connection change: `connected`, `disconnected`, `inactive` (silent past its profile's
    /// timeout) or `active` (heard from again).
    Status {
        device: String,
        change: &'static str,
        online: bool,
        inactive: bool,
        last_seen_at: Option<i64>,
        at: i64,
    },
    /// The twin after a change of `section` (`desired` or `reported`).
    Twin {
        device: String,
        section: &'static str,
        version: i64,
        desired: Json,
        reported: Json,
        delta: Json,
    },
    /// A command's new state (`pending`, `sent`, `succeeded`, `failed`, `timed_out`,
    /// `undelivered`), with the device's answer once it answered.
    Command { device: String, command: Command },
}

impl LiveEvent {
    pub fn device(&self) -> &str {
        match self {
            LiveEvent::Telemetry { device, .. }
            | LiveEvent::Status { device, .. }
            | LiveEvent::Twin { device, .. }
            | LiveEvent::Command { device, .. } => device,
        }
    }
}

#[derive(Debug, Default)]
pub struct LiveMetrics {
    /// Events put on a channel (once, however many streams read them).
    pub events: AtomicU64,
    /// Events streams missed because they fell behind (counted per stream).
    pub dropped: AtomicU64,
}

/// The streams of one tenant.
struct TenantStreams {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// Devices some stream watches → how many streams watch each.
    devices: HashMap<String, usize>,
    streams: usize,
}

/// The hub: publishers (pipeline, presence, twins, commands) on one side, streams on the other.
pub struct LiveEvents {
    streams: AtomicUsize,
    tenants: RwLock<HashMap<String, TenantStreams>>,
    pub metrics: LiveMetrics,
}

/// What a stream gets next.
#[derive(Debug)]
pub enum LiveRecv {
    Event(Arc<LiveEvent>),
    /// The stream fell behind and this many events of its tenant's channel were skipped (some
    /// may have concerned devices it does not watch).
    Lagged(u64),
}

impl LiveEvents {
    pub fn new() -> Arc<LiveEvents> {
        Arc::new(LiveEvents {
            streams: AtomicUsize::new(0),
            tenants: RwLock::new(HashMap::new()),
            metrics: LiveMetrics::default(),
        })
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Opens a stream of `tenant`: full events of `devices`, and status changes of every
    /// device of the tenant when `all_status`.
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        devices: HashSet<String>,
        all_status: bool,
    ) -> Result<LiveSubscription, LiveError> {
        if devices.len() > MAX_DEVICES_PER_STREAM {
            return Err(LiveError::TooManyDevices);
        }
        let mut tenants = self.tenants.write();
        if self.streams.load(Ordering::Relaxed) >= MAX_STREAMS {
            return Err(LiveError::TooManyStreams);
        }
        let streams = tenants
            .entry(tenant.to_string())
            .or_insert_with(|| TenantStreams {
                sender: broadcast::channel(CHANNEL_CAPACITY).0,
                devices: HashMap::new(),
                streams: 0,
            });
        streams.streams += 1;
        for device in &devices {
            *streams.devices.entry(device.clone()).or_default() += 1;
        }
        let rx = streams.sender.subscribe();
        self.streams.fetch_add(1, Ordering::Relaxed);
        Ok(LiveSubscription {
            hub: Arc::clone(self),
            tenant: tenant.to_string(),
            devices,
            all_status,
            rx,
        })
    }

    /// Whether a stream of `tenant` watches `device` (its telemetry, twin and commands).
    pub fn watches(&self, tenant: &str, device: &str) -> bool {
        self.streams.load(Ordering::Relaxed) > 0
            && self
                .tenants
                .read()
                .get(tenant)
                .is_some_and(|t| t.devices.contains_key(device))
    }

    fn tenant_open(&self, tenant: &str) -> bool {
        self.streams.load(Ordering::Relaxed) > 0 && self.tenants.read().contains_key(tenant)
    }

    fn send(&self, tenant: &str, event: LiveEvent) {
        if let Some(streams) = self.tenants.read().get(tenant) {
            // No receiver left is not an error: the last stream is closing.
            if streams.sender.send(Arc::new(event)).is_ok() {
                self.metrics.events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The events for `entries` of `device` about to be stored, one per timestamp; `None` when
    /// no stream watches the device. Built before the write (which consumes the entries) and
    /// sent with [`LiveEvents::publish`] once it succeeded.
    pub fn telemetry_events(
        &self,
        tenant: &str,
        device: &str,
        entries: &[WriteEntry],
    ) -> Option<Vec<LiveEvent>> {
        if !self.watches(tenant, device) {
            return None;
        }
        let mut by_ts: Vec<(i64, Map<String, Json>)> = Vec::new();
        for entry in entries.iter().filter(|e| e.series.device == device) {
            let value = match &entry.value {
                Value::F64(v) => Json::from(*v),
                Value::I64(v) => Json::from(*v),
                Value::Bool(v) => Json::from(*v),
                Value::Str(v) => Json::from(v.as_str()),
            };
            // A message's readings share a timestamp and arrive together: the last group is
            // almost always the one to extend.
            match by_ts.iter_mut().rev().find(|(ts, _)| *ts == entry.ts) {
                Some((_, values)) => {
                    values.insert(entry.series.key.clone(), value);
                }
                None => {
                    let mut values = Map::new();
                    values.insert(entry.series.key.clone(), value);
                    by_ts.push((entry.ts, values));
                }
            }
        }
        Some(
            by_ts
                .into_iter()
                .map(|(ts, values)| LiveEvent::Telemetry {
                    device: device.to_string(),
                    ts,
                    values,
                })
                .collect(),
        )
    }

    /// Sends events built by [`LiveEvents::telemetry_events`].
    pub fn publish(&self, tenant: &str, events: Vec<LiveEvent>) {
        for event in events {
            self.send(tenant, event);
        }
    }

    /// A device's connection changed (`change`: connected, disconnected, inactive, active).
    pub fn status(&self, tenant: &str, device: &str, change: &'static str, p: &DevicePresence) {
        if !self.tenant_open(tenant) {
            return;
        }
        self.send(
            tenant,
            LiveEvent::Status {
                device: device.to_string(),
                change,
                online: p.online,
                inactive: p.inactive,
                last_seen_at: p.last_seen_at,
                at: now_ms(),
            },
        );
    }

    /// A device's twin changed.
    pub fn twin(&self, tenant: &str, section: TwinSection, twin: &Twin) {
        if !self.watches(tenant, &twin.device_id) {
            return;
        }
        self.send(
            tenant,
            LiveEvent::Twin {
                device: twin.device_id.clone(),
                section: section.as_str(),
                version: twin.version,
                desired: twin.desired.clone(),
                reported: twin.reported.clone(),
                delta: twin.delta.clone(),
            },
        );
    }

    /// A command was stored or changed state.
    pub fn command(&self, command: &Command) {
        if !self.watches(&command.tenant, &command.device_id) {
            return;
        }
        self.send(
            &command.tenant,
            LiveEvent::Command {
                device: command.device_id.clone(),
                command: command.clone(),
            },
        );
    }
}

/// An open stream. Dropping it unsubscribes.
pub struct LiveSubscription {
    hub: Arc<LiveEvents>,
    tenant: String,
    devices: HashSet<String>,
    all_status: bool,
    rx: broadcast::Receiver<Arc<LiveEvent>>,
}

impl LiveSubscription {
    pub fn devices(&self) -> &HashSet<String> {
        &self.devices
    }

    pub fn all_status(&self) -> bool {
        self.all_status
    }

    /// Replaces what the stream watches.
    pub fn set(&mut self, devices: HashSet<String>, all_status: bool) -> Result<(), LiveError> {
        if devices.len() > MAX_DEVICES_PER_STREAM {
            return Err(LiveError::TooManyDevices);
        }
        let mut tenants = self.hub.tenants.write();
        if let Some(streams) = tenants.get_mut(&self.tenant) {
            for device in devices.difference(&self.devices) {
                *streams.devices.entry(device.clone()).or_default() += 1;
            }
            for device in self.devices.difference(&devices) {
                release(&mut streams.devices, device);
            }
        }
        self.devices = devices;
        self.all_status = all_status;
        Ok(())
    }

    fn wants(&self, event: &LiveEvent) -> bool {
        (self.all_status && matches!(event, LiveEvent::Status { .. }))
            || self.devices.contains(event.device())
    }

    /// The next event for this stream; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<LiveRecv> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.wants(&event) => return Some(LiveRecv::Event(event)),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    self.hub.metrics.dropped.fetch_add(n, Ordering::Relaxed);
                    return Some(LiveRecv::Lagged(n));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn release(devices: &mut HashMap<String, usize>, device: &str) {
    if let Some(count) = devices.get_mut(device) {
        *count -= 1;
        if *count == 0 {
            devices.remove(device);
        }
    }
}

impl Drop for LiveSubscription {
    fn drop(&mut self) {
        let mut tenants = self.hub.tenants.write();
        if let Some(streams) = tenants.get_mut(&self.tenant) {
            for device in &self.devices {
                release(&mut streams.devices, device);
            }
            streams.streams -= 1;
            if streams.streams == 0 {
                tenants.remove(&self.tenant);
            }
        }
        self.hub.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
