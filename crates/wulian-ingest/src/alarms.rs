//! Alarms: raise, clear and acknowledge (the registry keeps them, deduplicated per device and
//! type) and tell everyone who listens:
//!
//! - applications over MQTT on `alarms/{device_id}/{type}` (QoS 1),
//! - the tenant's alarm webhooks (through the retrying [`WebhookSender`]),
//! - live API streams ([`AlarmService::subscribe`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use wulian_broker::{Broker, OutboundMessage};
use wulian_common::blocking::run_blocking;
use wulian_registry::{Alarm, AlarmChange, Registry};

use crate::webhooks::{WebhookRequest, WebhookSender};

/// Events buffered per live stream; a stream that falls further behind is told it lagged.
const STREAM_BUFFER: usize = 1024;

/// One alarm change, as notifications carry it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmEvent {
    #[serde(skip)]
    pub tenant: String,
    pub change: AlarmChange,
    pub alarm: Alarm,
}

#[derive(Debug, Default)]
pub struct AlarmMetrics {
    pub raised: AtomicU64,
    pub cleared: AtomicU64,
}

pub struct AlarmService {
    registry: Arc<Registry>,
    broker: Broker,
    webhooks: Arc<WebhookSender>,
    events: broadcast::Sender<AlarmEvent>,
    pub metrics: AlarmMetrics,
}

impl AlarmService {
    pub fn new(
        registry: Arc<Registry>,
        broker: Broker,
        webhooks: Arc<WebhookSender>,
    ) -> Arc<AlarmService> {
        let (events, _) = broadcast::channel(STREAM_BUFFER);
        Arc::new(AlarmService {
            registry,
            broker,
            webhooks,
            events,
            metrics: AlarmMetrics::default(),
        })
    }

    /// Every alarm change of every tenant from now on (filter by `tenant`).
    pub fn subscribe(&self) -> broadcast::Receiver<AlarmEvent> {
        self.events.subscribe()
    }

    pub async fn raise(
        &self,
        tenant: &str,
        device: &str,
        alarm_type: &str,
        severity: &str,
        source: &str,
        details: Value,
    ) -> wulian_registry::Result<Alarm> {
        let (t, d, ty, sev, src) = (
            tenant.to_string(),
            device.to_string(),
            alarm_type.to_string(),
            severity.to_string(),
            source.to_string(),
        );
        let (alarm, change) = run_blocking(&self.registry, move |r| {
            r.raise_alarm(&t, &d, &ty, &sev, &src, &details)
        })
        .await?;
        if change == AlarmChange::Raised {
            self.metrics.raised.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                tenant,
                device,
                alarm_type,
                severity,
                source,
                "Alarm raised."
            );
        }
        self.notify(tenant, change, &alarm).await;
        Ok(alarm)
    }

    /// Clears the open alarm of this device and type, if there is one.
    pub async fn clear(
        &self,
        tenant: &str,
        device: &str,
        alarm_type: &str,
    ) -> wulian_registry::Result<Option<Alarm>> {
        let (t, d, ty) = (
            tenant.to_string(),
            device.to_string(),
            alarm_type.to_string(),
        );
        let cleared = run_blocking(&self.registry, move |r| r.clear_alarm(&t, &d, &ty)).await?;
        if let Some(alarm) = &cleared {
            self.metrics.cleared.fetch_add(1, Ordering::Relaxed);
            tracing::info!(tenant, device, alarm_type, "Alarm cleared.");
            self.notify(tenant, AlarmChange::Cleared, alarm).await;
        }
        Ok(cleared)
    }

    pub async fn clear_by_id(&self, tenant: &str, id: &str) -> wulian_registry::Result<Alarm> {
        let (t, i) = (tenant.to_string(), id.to_string());
        let alarm = run_blocking(&self.registry, move |r| r.clear_alarm_by_id(&t, &i)).await?;
        self.metrics.cleared.fetch_add(1, Ordering::Relaxed);
        self.notify(tenant, AlarmChange::Cleared, &alarm).await;
        Ok(alarm)
    }

    pub async fn acknowledge(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
    ) -> wulian_registry::Result<Alarm> {
        let (t, i, b) = (tenant.to_string(), id.to_string(), by.to_string());
        let alarm = run_blocking(&self.registry, move |r| r.acknowledge_alarm(&t, &i, &b)).await?;
        self.notify(tenant, AlarmChange::Acknowledged, &alarm).await;
        Ok(alarm)
    }

    async fn notify(&self, tenant: &str, change: AlarmChange, alarm: &Alarm) {
        let event = AlarmEvent {
            tenant: tenant.to_string(),
            change,
            alarm: alarm.clone(),
        };
        let body = serde_json::to_vec(&event).unwrap_or_default();
        // No live stream listening is normal.
        let _listeners = self.events.send(event).unwrap_or(0);
        self.broker.publish(
            tenant,
            OutboundMessage::json(
                format!("alarms/{}/{}", alarm.device_id, alarm.alarm_type),
                body.clone(),
                false,
            ),
        );
        let t = tenant.to_string();
        let hooks = match run_blocking(&self.registry, move |r| r.list_alarm_webhooks(&t)).await {
            Ok(hooks) => hooks,
            Err(error) => {
                tracing::error!(error = %error, "Reading alarm webhooks failed.");
                return;
            }
        };
        for hook in hooks {
            self.webhooks.send(WebhookRequest {
                tenant: tenant.to_string(),
                source: "alarms".to_string(),
                url: hook.url,
                method: "POST".to_string(),
                headers: vec![("content-type".to_string(), "application/json".to_string())],
                body: body.clone(),
            });
        }
    }
}
