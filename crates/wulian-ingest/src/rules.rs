//! The rule engine's host: keeps the engine's rules in step with the registry, feeds it every
//! stored telemetry message, and carries out the actions it fires with the platform's services
//! (alarms, broker, commands, telemetry store, webhooks).
//!
//! Ingest never waits for rules: `RuleEngine::process` only evaluates and enqueues (bounded,
//! overflow dropped and counted); the executor runs on its own task. Derived telemetry is
//! written straight to the store, not through the pipeline, so rules cannot feed themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Number, Value as Json};
use wulian_broker::{Broker, OutboundMessage, Properties, QoS};
use wulian_common::blocking::run_blocking;
use wulian_common::topics;
use wulian_registry::{Registry, StoredRule};
use wulian_rules::{
    ActionError, ActionExecutor, ActionInvocation, EngineConfig, InvocationReceiver, Message,
    ResolvedAction, Rule, RuleDefinition, RuleEngine, RuleError, ZoneResolver,
};
use wulian_tsdb::{SeriesKey, Tsdb, Value, WriteEntry};

use crate::alarms::AlarmService;
use crate::commands::{CommandRequest, CommandService};
use crate::telemetry::is_valid_key;
use crate::webhooks::{WebhookRequest, WebhookSender};

/// Upper bounds of the rule-to-action latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 30, 50, 100, 250, 1000, 5000];

/// Rule-to-action latency: time from the engine queuing an action to the executor starting it.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Cumulative-style counts are computed on export; each slot counts its own bucket, the last
    /// slot counts everything above the largest bound.
    buckets: [AtomicU64; 13],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let ms = elapsed.as_millis() as u64;
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus histogram text for `name`.
    pub fn prometheus(&self, name: &str, help: &str) -> String {
        let bounds = LATENCY_BUCKETS_MS.map(|ms| ms as f64 / 1000.0);
        let counts = self.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        wulian_common::metrics::histogram_text(name, help, &bounds, &counts, sum)
    }
}

pub struct RuleHost {
    engine: RuleEngine,
    registry: Arc<Registry>,
    zones: Arc<dyn ZoneResolver>,
    pub latency: Arc<LatencyHistogram>,
}

impl RuleHost {
    pub fn new(
        registry: Arc<Registry>,
        config: EngineConfig,
        zones: Arc<dyn ZoneResolver>,
    ) -> (Arc<RuleHost>, InvocationReceiver) {
        let (engine, receiver) = RuleEngine::new(config, Arc::clone(&zones));
        let host = Arc::new(RuleHost {
            engine,
            registry,
            zones,
            latency: Arc::new(LatencyHistogram::default()),
        });
        (host, receiver)
    }

    pub fn engine(&self) -> &RuleEngine {
        &self.engine
    }

    pub fn zones(&self) -> &Arc<dyn ZoneResolver> {
        &self.zones
    }

    /// Compiles a stored rule (as saved: it compiled then, so an error now means the language
    /// changed under it).
    pub fn compile(stored: &StoredRule) -> Result<Rule, RuleError> {
        Rule::compile(RuleDefinition::from_json_actions(
            &stored.id,
            &stored.sql,
            &stored.actions,
        )?)
    }

    /// Installs every enabled rule of the registry; returns how many.
    pub async fn load(&self) -> wulian_registry::Result<usize> {
        let stored = run_blocking(&self.registry, |r| r.enabled_rules()).await?;
        let mut loaded = 0;
        for rule in &stored {
            match RuleHost::compile(rule) {
                Ok(compiled) => {
                    self.engine.install(&rule.tenant, compiled);
                    loaded += 1;
                }
                Err(error) => {
                    tracing::error!(tenant = %rule.tenant, rule = %rule.id, error = %error, "Stored rule does not compile; not installed.");
                }
            }
        }
        Ok(loaded)
    }

    /// Installs `compiled` if the rule is enabled, else removes it from the engine.
    pub fn apply(&self, stored: &StoredRule, compiled: Rule) {
        if stored.enabled {
            self.engine.install(&stored.tenant, compiled);
        } else {
            self.engine.remove(&stored.tenant, &stored.id);
        }
    }

    pub fn remove(&self, tenant: &str, id: &str) {
        self.engine.remove(tenant, id);
    }

    /// Messages for the rules from stored telemetry entries of one device (one per timestamp,
    /// as `messages_from_readings` builds them), or `None` when no rule of the tenant listens
    /// on the device's telemetry topic — the common case costs one lookup.
    pub fn messages(
        &self,
        tenant: &str,
        device: &str,
        entries: &[WriteEntry],
    ) -> Option<Vec<Message>> {
        let topic = topics::telemetry_topic(device);
        if !self.engine.wants(tenant, &topic) {
            return None;
        }
        let readings = entries
            .iter()
            .map(|e| (e.ts, e.series.key.clone(), json_value(&e.value)));
        Some(wulian_rules::messages_from_readings(
            tenant,
            device,
            readings,
            usize::MAX,
        ))
    }

    /// Evaluates the messages (never blocks).
    pub fn process(&self, messages: &[Message]) {
        for message in messages {
            self.engine.process(message);
        }
    }
}

pub fn json_value(value: &Value) -> Json {
    match value {
        Value::F64(v) => Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::I64(v) => Json::from(*v),
        Value::Bool(v) => Json::Bool(*v),
        Value::Str(v) => Json::String(v.clone()),
    }
}

/// Carries out rule actions with the platform's services.
pub struct RuleExecutor {
    pub alarms: Arc<AlarmService>,
    pub broker: Broker,
    pub commands: Arc<CommandService>,
    pub tsdb: Tsdb,
    pub webhooks: Arc<WebhookSender>,
    pub latency: Arc<LatencyHistogram>,
}

impl ActionExecutor for RuleExecutor {
    async fn execute(&self, inv: ActionInvocation) -> Result<(), ActionError> {
        self.latency.observe(inv.enqueued_at.elapsed());
        let source = format!("rule:{}", inv.rule_id);
        let fail = |e: &dyn std::fmt::Display| ActionError(e.to_string());
        match inv.action {
            ResolvedAction::RaiseAlarm {
                alarm_type,
                severity,
                details,
            } => {
                let details = if details.is_object() {
                    details
                } else {
                    serde_json::json!({ "value": details })
                };
                self.alarms
                    .raise(
                        &inv.tenant,
                        &inv.device_id,
                        &alarm_type,
                        severity.as_str(),
                        &source,
                        details,
                    )
                    .await
                    .map_err(|e| fail(&e))?;
            }
            ResolvedAction::ClearAlarm { alarm_type } => {
                self.alarms
                    .clear(&inv.tenant, &inv.device_id, &alarm_type)
                    .await
                    .map_err(|e| fail(&e))?;
            }
            ResolvedAction::Republish {
                topic,
                payload,
                qos,
                retain,
            } => {
                let qos = match qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                self.broker.publish(
                    &inv.tenant,
                    OutboundMessage {
                        topic,
                        payload: Bytes::from(payload),
                        qos,
                        retain,
                        properties: Properties::default(),
                    },
                );
            }
            ResolvedAction::Command {
                device_id,
                name,
                params,
                timeout_ms,
            } => {
                let request = CommandRequest {
                    name,
                    params,
                    timeout: Duration::from_millis(timeout_ms.unwrap_or(10_000)),
                };
                // Fire and forget: the command's outcome is in its record, not the rule's.
                self.commands
                    .send(&inv.tenant, &device_id, request)
                    .await
                    .map_err(|e| fail(&e))?;
            }
            ResolvedAction::WriteTelemetry {
                device_id,
                timestamp_ms,
                values,
            } => {
                let mut entries = Vec::with_capacity(values.len());
                for (key, value) in values {
                    if !is_valid_key(&key) {
                        return Err(ActionError(format!("{key:?} is not a valid telemetry key")));
                    }
                    let value = match value {
                        Json::Null => continue,
                        Json::Bool(b) => Value::Bool(b),
                        Json::String(s) => Value::Str(s),
                        Json::Number(n) => match n.as_i64() {
                            Some(i) => Value::I64(i),
                            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
                        },
                        _ => {
                            return Err(ActionError(format!(
                                "{key}: arrays and objects are not telemetry values"
                            )));
                        }
                    };
                    entries.push(WriteEntry {
                        series: SeriesKey {
                            tenant: inv.tenant.clone(),
                            device: device_id.clone(),
                            key,
                        },
                        ts: timestamp_ms,
                        value,
                    });
                }
                if !entries.is_empty() {
                    self.tsdb.write(entries).await.map_err(|e| fail(&e))?;
                }
            }
            ResolvedAction::Webhook {
                url,
                method,
                headers,
                body,
            } => {
                self.webhooks.send(WebhookRequest {
                    tenant: inv.tenant,
                    source,
                    url,
                    method: method.as_str().to_string(),
                    headers,
                    body: body.into_bytes(),
                });
            }
        }
        Ok(())
    }
}
