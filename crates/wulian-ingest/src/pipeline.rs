//! The one ingest pipeline every transport feeds (MQTT through the broker's `MessageSink`, HTTP
//! through the API): decide what a device message means, validate it, and make it durable
//! before the transport acknowledges it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use wulian_broker::{
    ConnectionInfo, Durable, Identity, InboundMessage, MessageSink, Principal, SinkError, Staged,
};
use wulian_common::time::now_ms;
use wulian_common::topics::{DeviceTopic, parse_device_topic};
use wulian_mqtt::{QoS, ReasonCode};
use wulian_tsdb::{SeriesKey, Tsdb, WriteEntry};

use wulian_registry::thing_model::Violation;

use crate::alarms::AlarmService;
use crate::commands::CommandService;
use crate::deferred::{Deferred, DeviceKey, WriteJob};
use crate::live::LiveEvents;
use crate::models::{ModelCache, ModelVerdict};
use crate::observer::DeviceObserver;
use crate::ota::OtaService;
use crate::presence::PresenceTracker;
use crate::rules::RuleHost;
use crate::telemetry::{self, PayloadError, Reading};
use crate::twins::TwinService;
use crate::webhooks::WebhookSender;
use crate::zones::ZoneCache;

/// Why a device message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("{0}")]
    Rejected(wulian_tsdb::Error),
    #[error("telemetry store unavailable: {0}")]
    Store(wulian_tsdb::Error),
    /// The payload breaks the device's thing model (profile validation `reject`).
    #[error("{}", describe_violations(.0))]
    ModelViolation(Vec<Violation>),
    /// More messages than the device's profile allows per minute.
    #[error("more than {per_minute} messages per minute (the device profile's limit)")]
    RateLimited { per_minute: u32 },
}

fn describe_violations(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.key, v.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

impl IngestError {
    /// Stable machine-readable name, shared by HTTP problem documents and MQTT reason strings.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Payload(e) => e.code(),
            IngestError::Rejected(wulian_tsdb::Error::TypeMismatch { .. }) => "type_mismatch",
            IngestError::Rejected(_) => "invalid_value",
            IngestError::Store(_) => "store_unavailable",
            IngestError::ModelViolation(_) => "model_violation",
            IngestError::RateLimited { .. } => "rate_limited",
        }
    }

    pub fn is_client_error(&self) -> bool {
        !matches!(self, IngestError::Store(_))
    }

    fn from_store(error: wulian_tsdb::Error) -> IngestError {
        match error {
            wulian_tsdb::Error::TypeMismatch { .. }
            | wulian_tsdb::Error::NonFiniteValue { .. }
            | wulian_tsdb::Error::TimestampOutOfRange { .. }
            | wulian_tsdb::Error::InvalidSeriesKey { .. }
            | wulian_tsdb::Error::BatchTooLarge { .. } => IngestError::Rejected(error),
            other => IngestError::Store(other),
        }
    }

    /// The per-key violations of a `model_violation`.
    pub fn violations(&self) -> &[Violation] {
        match self {
            IngestError::ModelViolation(v) => v,
            _ => &[],
        }
    }

    fn reason_code(&self) -> ReasonCode {
        if matches!(self, IngestError::RateLimited { .. }) {
            // 0x96 Message rate too high is for DISCONNECT only; PUBACK says quota exceeded.
            ReasonCode::QuotaExceeded
        } else if self.is_client_error() {
            ReasonCode::PayloadFormatInvalid
        } else {
            ReasonCode::ImplementationSpecificError
        }
    }
}

/// Counters for /metrics. No per-device labels: device-level numbers belong in the TSDB.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub messages_accepted: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub points_written: AtomicU64,
    pub command_answers: AtomicU64,
    pub command_answers_unmatched: AtomicU64,
    /// Messages stored although they broke their thing model (validation `flag`).
    pub messages_flagged: AtomicU64,
}

pub struct Pipeline {
    /// The pipeline itself, for writes that outlive the call that staged them.
    me: Weak<Pipeline>,
    tsdb: Tsdb,
    /// QoS 0 telemetry waiting for its batch (see `deferred.rs`).
    deferred: Deferred,
    // Set once at wiring time: the command service publishes through the broker, and the
    // broker delivers to this pipeline, so one of the two has to be attached after creation.
    commands: OnceLock<Arc<CommandService>>,
    lifecycle: OnceLock<Lifecycle>,
    observer: OnceLock<Arc<dyn DeviceObserver>>,
    // Live API streams; the pipeline hands it to the services it is attached to, so every
    // transport and service feeds the same hub without wiring of its own.
    live: Arc<LiveEvents>,
    pub metrics: IngestMetrics,
}

/// The device-lifecycle services the pipeline feeds: thing-model checks, twins, presence.
#[derive(Clone)]
pub struct Lifecycle {
    pub models: Arc<ModelCache>,
    pub twins: Arc<TwinService>,
    pub presence: Arc<PresenceTracker>,
    pub ota: Arc<OtaService>,
    pub alarms: Arc<AlarmService>,
    pub webhooks: Arc<WebhookSender>,
    pub rules: Arc<RuleHost>,
    pub zones: Arc<ZoneCache>,
}

impl Lifecycle {
    /// Drops what the lifecycle services keep about a deleted device (the registry's rows go
    /// with the device by cascade).
    pub fn device_deleted(&self, tenant: &str, device: &str) {
        self.presence.forget(tenant, device);
        self.twins.forget(tenant, device);
    }
}

impl Pipeline {
    pub fn new(tsdb: Tsdb) -> Arc<Pipeline> {
        Arc::new_cyclic(|me| Pipeline {
            me: me.clone(),
            tsdb,
            deferred: Deferred::new(),
            commands: OnceLock::new(),
            lifecycle: OnceLock::new(),
            observer: OnceLock::new(),
            live: LiveEvents::new(),
            metrics: IngestMetrics::default(),
        })
    }

    /// How long QoS 0 telemetry waits for its batch (see `deferred.rs`; 2 ms by default).
    pub fn set_qos0_batch_window(&self, window: std::time::Duration) {
        self.deferred.set_window(window);
    }

    /// Writes the QoS 0 telemetry still waiting for its batch (see `deferred.rs`); call it
    /// after the transports stopped and before the store closes.
    pub async fn flush_deferred(&self) {
        self.deferred.flush().await;
    }

    /// The hub of live device events (telemetry, status, twins, commands) for API streams.
    pub fn live(&self) -> &Arc<LiveEvents> {
        &self.live
    }

    /// Connects the command service that device answers are handed to. A second call is ignored.
    pub fn attach_commands(&self, commands: Arc<CommandService>) {
        commands.attach_live(Arc::clone(&self.live));
        if self.commands.set(commands).is_err() {
            tracing::warn!("Command service attached twice; keeping the first.");
        }
    }

    /// Connects thing models, twins and presence. A second call is ignored.
    pub fn attach_lifecycle(&self, lifecycle: Lifecycle) {
        lifecycle.twins.attach_live(Arc::clone(&self.live));
        lifecycle.presence.attach_live(Arc::clone(&self.live));
        if self.lifecycle.set(lifecycle).is_err() {
            tracing::warn!("Lifecycle services attached twice; keeping the first.");
        }
    }

    /// Connects the solution that watches device messages (see [`DeviceObserver`]). A second
    /// call is ignored.
    pub fn attach_observer(&self, observer: Arc<dyn DeviceObserver>) {
        if self.observer.set(observer).is_err() {
            tracing::warn!("Device observer attached twice; keeping the first.");
        }
    }

    pub fn lifecycle(&self) -> Option<&Lifecycle> {
        self.lifecycle.get()
    }

    /// Records that a device was heard from (any transport; MQTT is recorded by the pipeline
    /// itself, other transports call this).
    pub fn seen(&self, tenant: &str, device: &str, bytes: usize) {
        if let Some(lifecycle) = self.lifecycle.get() {
            lifecycle.presence.seen(tenant, device, bytes);
        }
    }

    /// Parses and stores a telemetry payload of `device` in `tenant`. Resolves once the points
    /// are durable under the store's durability policy. Returns the number of points stored.
    pub async fn ingest_telemetry(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<usize, IngestError> {
        self.seen(tenant, device, payload.len());
        self.ingest_telemetry_unseen(tenant, device, payload).await
    }

    /// [`Pipeline::ingest_telemetry`] for transports that record presence themselves (MQTT).
    async fn ingest_telemetry_unseen(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<usize, IngestError> {
        let result = self.store(tenant, device, payload).await;
        self.count(tenant, device, &result);
        result
    }

    /// Counts one message's outcome for /metrics (and logs a refusal).
    fn count(&self, tenant: &str, device: &str, result: &Result<usize, IngestError>) {
        match result {
            Ok(points) => {
                self.metrics
                    .messages_accepted
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .points_written
                    .fetch_add(*points as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.metrics
                    .messages_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tenant, device, code = error.code(), error = %error, "Telemetry refused.");
            }
        }
    }

    async fn store(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<usize, IngestError> {
        let entries = self.checked_entries(tenant, device, payload).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let count = entries.len();
        let for_rules = self.rule_messages(tenant, device, &entries);
        let observed = self.observed(tenant, device).then(|| entries.clone());
        let live = self.live.telemetry_events(tenant, device, &entries);
        self.tsdb
            .write(entries)
            .await
            .map_err(IngestError::from_store)?;
        self.run_rules(for_rules);
        self.observe_stored(tenant, device, observed.as_deref());
        if let Some(events) = live {
            self.live.publish(tenant, events);
        }
        Ok(count)
    }

    /// Stores the telemetry payloads of one device (one client's read batch) with one write
    /// and returns one result per payload. The store refuses a write as a whole, so when the
    /// batch fails, each payload is written on its own (in order) for its own answer, exactly
    /// as if they had come one by one.
    async fn ingest_telemetry_batch(
        &self,
        tenant: &str,
        device: &str,
        payloads: &[&[u8]],
    ) -> Vec<Result<usize, IngestError>> {
        let mut results: Vec<Result<usize, IngestError>> = Vec::with_capacity(payloads.len());
        let mut all = Vec::new();
        let mut written = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            match self.checked_entries(tenant, device, payload).await {
                Ok(entries) => {
                    results.push(Ok(entries.len()));
                    if !entries.is_empty() {
                        written.push(i);
                        all.extend(entries);
                    }
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if !all.is_empty() {
            let for_rules = self.rule_messages(tenant, device, &all);
            let observed = self.observed(tenant, device).then(|| all.clone());
            let live = self.live.telemetry_events(tenant, device, &all);
            if self.tsdb.write(all).await.is_ok() {
                self.run_rules(for_rules);
                self.observe_stored(tenant, device, observed.as_deref());
                if let Some(events) = live {
                    self.live.publish(tenant, events);
                }
            } else {
                // Nothing of a refused write is stored: retry one by one for each its own answer.
                for &i in &written {
                    results[i] = self.store(tenant, device, payloads[i]).await;
                }
            }
        }
        for result in &results {
            self.count(tenant, device, result);
        }
        results
    }

    /// [`Pipeline::ingest_telemetry_batch`] in two steps: every payload is parsed and checked
    /// now (one result each, refusals counted), and the returned future writes the accepted
    /// ones and resolves, once they are durable, to one result per payload (those refused
    /// in the first step answer `Ok(0)` there and are ignored). `None`: nothing to write.
    ///
    /// `joins_batch`: the write waits for the next QoS 0 batch (`deferred.rs`). It then lets
    /// the batch's other writes prepare before it sends its request, so that the store's
    /// writer receives them together and commits them as one group, rather than waking for
    /// the first while the rest are still being prepared. Otherwise it first flushes the
    /// batch if `device_key` (the device's [`Deferred::key`]) has writes in it.
    async fn stage_telemetry_batch(
        &self,
        tenant: &str,
        device: &str,
        device_key: DeviceKey,
        payloads: Vec<bytes::Bytes>,
        joins_batch: bool,
    ) -> (
        Vec<Result<usize, IngestError>>,
        Option<impl Future<Output = Vec<Result<usize, IngestError>>> + Send + 'static>,
    ) {
        let mut checked: Vec<Result<usize, IngestError>> = Vec::with_capacity(payloads.len());
        // Readings now; the store's entries (a series key each) once the messages are routed.
        let mut all = Vec::new();
        for payload in &payloads {
            match self.checked_readings(tenant, device, payload).await {
                Ok(readings) => {
                    checked.push(Ok(readings.len()));
                    all.extend(readings);
                }
                Err(error) => {
                    let refused = Err(error);
                    self.count(tenant, device, &refused);
                    checked.push(refused);
                }
            }
        }
        if all.is_empty() {
            for result in checked.iter().filter(|r| r.is_ok()) {
                self.count(tenant, device, result);
            }
            return (checked, None);
        }
        let points: Vec<Option<usize>> = checked.iter().map(|r| r.as_ref().ok().copied()).collect();
        let (tenant, device) = (tenant.to_string(), device.to_string());
        // Owned, so that a QoS 0 write can wait for its batch after the call returned.
        let this = self.me.upgrade();
        let durable = async move {
            let mut results: Vec<Result<usize, IngestError>> = Vec::with_capacity(points.len());
            // `self` is alive while it stages, so this holds; answered like a closed store.
            let Some(this) = this else {
                return points
                    .iter()
                    .map(|_| Err(IngestError::Store(wulian_tsdb::Error::Closed)))
                    .collect();
            };
            // Prepared here, after the broker has routed the messages, not before.
            let all = entries(&tenant, &device, all);
            let for_rules = this.rule_messages(&tenant, &device, &all);
            let observed = this.observed(&tenant, &device).then(|| all.clone());
            let live = this.live.telemetry_events(&tenant, &device, &all);
            if joins_batch {
                tokio::task::yield_now().await;
            } else if this.deferred.holds(device_key) {
                // The device's earlier QoS 0 readings go first (see `deferred.rs`).
                this.deferred.flush().await;
            }
            if this.tsdb.write(all).await.is_ok() {
                this.run_rules(for_rules);
                this.observe_stored(&tenant, &device, observed.as_deref());
                if let Some(events) = live {
                    this.live.publish(&tenant, events);
                }
                results.extend(points.iter().map(|p| Ok(p.unwrap_or(0))));
            } else {
                // Nothing of a refused write is stored: retry one by one for each its own answer.
                for (payload, p) in payloads.iter().zip(&points) {
                    results.push(match p {
                        Some(_) => this.store(&tenant, &device, payload).await,
                        None => Ok(0),
                    });
                }
            }
            for (result, p) in results.iter().zip(&points) {
                if p.is_some() {
                    this.count(&tenant, &device, result);
                }
            }
            results
        };
        (checked, Some(durable))
    }

    fn command_answer(&self, tenant: &str, device: &str, msg: &InboundMessage) {
        let correlation = msg.properties.correlation_data.as_deref();
        let resolved = self
            .commands
            .get()
            .is_some_and(|c| c.resolve(tenant, device, correlation, &msg.payload));
        if resolved {
            self.metrics.command_answers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics
                .command_answers_unmatched
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tenant, device, topic = %msg.topic, "Command answer matches no waiting command.");
        }
    }
}

impl Pipeline {
    /// The rule engine's messages for entries about to be stored (`None`: no rule listens).
    fn rule_messages(
        &self,
        tenant: &str,
        device: &str,
        entries: &[WriteEntry],
    ) -> Option<Vec<wulian_rules::Message>> {
        self.lifecycle
            .get()?
            .rules
            .messages(tenant, device, entries)
    }

    /// Whether an observer wants this device's telemetry (it is copied for it only then).
    fn observed(&self, tenant: &str, device: &str) -> bool {
        self.observer
            .get()
            .is_some_and(|o| o.watches(tenant, device))
    }

    fn observe_stored(&self, tenant: &str, device: &str, entries: Option<&[WriteEntry]>) {
        if let (Some(observer), Some(entries)) = (self.observer.get(), entries) {
            observer.telemetry_stored(tenant, device, entries);
        }
    }

    /// Hands stored messages to the rules (evaluation only; actions run elsewhere).
    fn run_rules(&self, messages: Option<Vec<wulian_rules::Message>>) {
        if let (Some(messages), Some(lifecycle)) = (messages, self.lifecycle.get()) {
            lifecycle.rules.process(&messages);
        }
    }

    /// Parses a payload and checks it against the device's thing model and rate limit.
    async fn checked_entries(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<Vec<WriteEntry>, IngestError> {
        let readings = self.checked_readings(tenant, device, payload).await?;
        Ok(entries(tenant, device, readings))
    }

    /// [`Pipeline::checked_entries`] before they become the store's entries.
    async fn checked_readings(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<Vec<Reading>, IngestError> {
        let now = now_ms();
        let readings = telemetry::parse(payload, now)?;
        if let Some(lifecycle) = self.lifecycle.get() {
            match lifecycle.models.check(tenant, device, &readings).await {
                ModelVerdict::Accept => {}
                ModelVerdict::Flagged(violations) => {
                    self.metrics
                        .messages_flagged
                        .fetch_add(1, Ordering::Relaxed);
                    lifecycle
                        .models
                        .record_flagged(tenant, device, now, violations);
                }
                ModelVerdict::Reject(violations) => {
                    return Err(IngestError::ModelViolation(violations));
                }
                ModelVerdict::RateLimited { per_minute } => {
                    return Err(IngestError::RateLimited { per_minute });
                }
            }
        }
        Ok(readings)
    }
}

/// The store's entries for the readings of `device` in `tenant`.
fn entries(tenant: &str, device: &str, readings: Vec<Reading>) -> Vec<WriteEntry> {
    readings
        .into_iter()
        .map(|r| WriteEntry {
            series: SeriesKey {
                tenant: tenant.to_string(),
                device: device.to_string(),
                key: r.key,
            },
            ts: r.ts,
            value: r.value,
        })
        .collect()
}

#[async_trait::async_trait]
impl MessageSink for Pipeline {
    async fn on_publish(&self, identity: &Identity, msg: &InboundMessage) -> Result<(), SinkError> {
        self.seen_mqtt(identity, std::slice::from_ref(msg));
        if let Some(result) = self.twin_message(identity, msg).await {
            return result;
        }
        match self.route(identity, msg)? {
            Some(device_id) => self
                .ingest_telemetry_unseen(&identity.tenant, device_id, &msg.payload)
                .await
                .map(|_| ())
                .map_err(sink_error),
            None => Ok(()),
        }
    }

    async fn on_publish_batch(
        &self,
        identity: &Identity,
        msgs: &[InboundMessage],
    ) -> Vec<Result<(), SinkError>> {
        self.seen_mqtt(identity, msgs);
        let mut results = Vec::with_capacity(msgs.len());
        // The telemetry messages: their index in `msgs` and their payload.
        let mut telemetry = Vec::new();
        let mut payloads: Vec<&[u8]> = Vec::new();
        let mut device = None;
        for (i, msg) in msgs.iter().enumerate() {
            if let Some(result) = self.twin_message(identity, msg).await {
                results.push(result);
                continue;
            }
            match self.route(identity, msg) {
                Ok(Some(device_id)) => {
                    device = Some(device_id);
                    telemetry.push(i);
                    payloads.push(&msg.payload);
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(error) => results.push(Err(error)),
            }
        }
        if let Some(device_id) = device {
            let stored = self
                .ingest_telemetry_batch(&identity.tenant, device_id, &payloads)
                .await;
            for (i, result) in telemetry.into_iter().zip(stored) {
                results[i] = result.map(|_| ()).map_err(sink_error);
            }
        }
        results
    }

    /// Telemetry is checked (parsed, thing model, rate) before the broker routes it and
    /// written while subscribers already have it; the PUBACK still waits for the write.
    async fn stage_publish_batch<'a>(
        &'a self,
        identity: &Identity,
        msgs: &[InboundMessage],
    ) -> Staged<'a> {
        self.seen_mqtt(identity, msgs);
        let mut accepted = Vec::with_capacity(msgs.len());
        let mut telemetry = Vec::new();
        let mut payloads = Vec::new();
        let mut device = None;
        for (i, msg) in msgs.iter().enumerate() {
            if let Some(result) = self.twin_message(identity, msg).await {
                accepted.push(result);
                continue;
            }
            match self.route(identity, msg) {
                Ok(Some(device_id)) => {
                    device = Some(device_id);
                    telemetry.push(i);
                    payloads.push(msg.payload.clone());
                    accepted.push(Ok(()));
                }
                Ok(None) => accepted.push(Ok(())),
                Err(error) => accepted.push(Err(error)),
            }
        }
        let Some(device_id) = device else {
            return Staged {
                accepted,
                durable: None,
            };
        };
        let joins_batch = msgs.iter().all(|m| m.qos == QoS::AtMostOnce);
        let key = self.deferred.key(&identity.tenant, device_id);
        let (checked, write) = self
            .stage_telemetry_batch(&identity.tenant, device_id, key, payloads, joins_batch)
            .await;
        for (&i, result) in telemetry.iter().zip(checked) {
            accepted[i] = result.map(|_| ()).map_err(sink_error);
        }
        let Some(write) = write else {
            return Staged {
                accepted,
                durable: None,
            };
        };
        if joins_batch {
            // Nobody is acknowledged: the write joins the next batch (`deferred.rs`), and its
            // outcome is counted there, not reported to the connection.
            let job: WriteJob = Box::pin(async move {
                write.await;
            });
            let durable = match self.deferred.push(key, job) {
                Ok(()) => None,
                Err(job) => {
                    let n = msgs.len();
                    // The store is behind: the publisher writes and waits (see `deferred.rs`).
                    let inline: Durable<'a> = Box::pin(async move {
                        job.await;
                        vec![Ok(()); n]
                    });
                    Some(inline)
                }
            };
            return Staged { accepted, durable };
        }
        let n = msgs.len();
        let durable = async move {
            let mut results: Vec<Result<(), SinkError>> = vec![Ok(()); n];
            for (i, result) in telemetry.into_iter().zip(write.await) {
                results[i] = result.map(|_| ()).map_err(sink_error);
            }
            results
        };
        Staged {
            accepted,
            durable: Some(Box::pin(durable)),
        }
    }

    async fn on_connect(&self, identity: &Identity, info: &ConnectionInfo) {
        if let Some(lifecycle) = self.lifecycle.get() {
            lifecycle.presence.connected(identity, info);
        }
    }

    async fn on_disconnect(&self, identity: &Identity, reason: &str) {
        if let Some(lifecycle) = self.lifecycle.get() {
            lifecycle.presence.disconnected(identity, reason);
        }
    }
}

impl Pipeline {
    /// Presence bookkeeping for a device's MQTT messages.
    fn seen_mqtt(&self, identity: &Identity, msgs: &[InboundMessage]) {
        if let (Some(lifecycle), Principal::Device { device_id }) =
            (self.lifecycle.get(), &identity.principal)
        {
            for msg in msgs {
                lifecycle
                    .presence
                    .seen(&identity.tenant, device_id, msg.payload.len());
            }
        }
    }

    /// Handles a device's own twin message; `None` when `msg` is not one.
    async fn twin_message(
        &self,
        identity: &Identity,
        msg: &InboundMessage,
    ) -> Option<Result<(), SinkError>> {
        let Principal::Device { device_id } = &identity.principal else {
            return None;
        };
        let (topic_device, kind) = parse_device_topic(&msg.topic)?;
        let get = match kind {
            DeviceTopic::TwinReported => false,
            DeviceTopic::TwinGet => true,
            DeviceTopic::OtaProgress if topic_device == device_id => {
                let ota = &self.lifecycle.get()?.ota;
                return Some(
                    ota.report(&identity.tenant, device_id, &msg.payload)
                        .await
                        .map(|_| ())
                        .map_err(ota_sink_error),
                );
            }
            _ => return None,
        };
        if topic_device != device_id {
            return None; // route() refuses it
        }
        let twins = &self.lifecycle.get()?.twins;
        Some(
            twins
                .on_device_message(&identity.tenant, device_id, get, msg)
                .await,
        )
    }

    /// What a device message means: `Some(device id)` for telemetry to store, `None` when
    /// nothing is left to do (handled here or nothing to store), or a refusal.
    fn route<'a>(
        &self,
        identity: &'a Identity,
        msg: &InboundMessage,
    ) -> Result<Option<&'a str>, SinkError> {
        let Principal::Device { device_id } = &identity.principal else {
            // Applications publish to devices (commands, twins) or among themselves; the broker
            // routes what their policy allows. Only devices feed the telemetry store.
            return Ok(None);
        };
        let Some((topic_device, kind)) = parse_device_topic(&msg.topic) else {
            // Outside the device namespace: the broker's policy decides; nothing to store.
            return Ok(None);
        };
        // The broker's policy already confines a device to its own namespace; checking again
        // here keeps a policy mistake from writing into another device's series.
        if topic_device != device_id {
            return Err(SinkError {
                code: ReasonCode::NotAuthorized,
                reason: "devices may only publish under their own devices/{id}/".to_string(),
            });
        }
        match kind {
            DeviceTopic::Telemetry => Ok(Some(device_id)),
            DeviceTopic::CommandResponse { .. } => {
                self.command_answer(&identity.tenant, device_id, msg);
                Ok(None)
            }
            DeviceTopic::Event { name } => {
                if let Some(observer) = self.observer.get() {
                    observer.event(&identity.tenant, device_id, name, &msg.payload);
                }
                Ok(None)
            }
            DeviceTopic::Command { .. }
            | DeviceTopic::TwinReported
            | DeviceTopic::TwinGet
            | DeviceTopic::OtaProgress
            | DeviceTopic::Other => Ok(None),
        }
    }
}

fn ota_sink_error(error: crate::ota::OtaError) -> SinkError {
    use wulian_registry::Error as E;
    let code = match &error {
        crate::ota::OtaError::Registry(E::Invalid { .. }) => ReasonCode::PayloadFormatInvalid,
        crate::ota::OtaError::Registry(E::NotFound { .. } | E::Conflict(_)) => {
            ReasonCode::UnspecifiedError
        }
        _ => ReasonCode::ImplementationSpecificError,
    };
    SinkError {
        code,
        reason: error.to_string(),
    }
}

fn sink_error(error: IngestError) -> SinkError {
    SinkError {
        code: error.reason_code(),
        reason: format!("{}: {error}", error.code()),
    }
}
