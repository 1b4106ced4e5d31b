//! Device twins over MQTT and for the API: applies patches through the registry (the source of
//! truth) and tells everyone who needs to know.
//!
//! - After every change whose delta differs, the current delta goes to `devices/{id}/twin/delta`
//!   as a *retained* QoS 1 message: a device that was offline receives what it missed as soon as
//!   it subscribes, whether or not its session persisted.
//! - After every change, `devices/{id}/twin/updated` carries the whole twin to applications.
//! - A device publishing to `devices/{id}/twin/get` gets the whole twin on `devices/{id}/twin`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Value, json};
use wulian_broker::{Broker, InboundMessage, OutboundMessage, Properties, QoS, SinkError};
use wulian_common::blocking::run_blocking;
use wulian_common::topics;
use wulian_mqtt::ReasonCode;
use wulian_registry::{Registry, Twin, TwinSection, TwinUpdate};

use crate::live::LiveEvents;

#[derive(Debug, Default)]
pub struct TwinMetrics {
    pub updates: AtomicU64,
    pub refused: AtomicU64,
}

pub struct TwinService {
    registry: Arc<Registry>,
    broker: Broker,
    live: OnceLock<Arc<LiveEvents>>,
    pub metrics: TwinMetrics,
}

impl TwinService {
    pub fn new(registry: Arc<Registry>, broker: Broker) -> Arc<TwinService> {
        Arc::new(TwinService {
            registry,
            broker,
            live: OnceLock::new(),
            metrics: TwinMetrics::default(),
        })
    }

    /// Connects the live event hub (the pipeline does, when the service is attached to it).
    pub fn attach_live(&self, live: Arc<LiveEvents>) {
        // A second pipeline (tests) keeps the first hub.
        let _first = self.live.set(live);
    }

    pub async fn get(&self, tenant: &str, device: &str) -> wulian_registry::Result<Twin> {
        let (t, d) = (tenant.to_string(), device.to_string());
        run_blocking(&self.registry, move |r| r.get_twin(&t, &d)).await
    }

    /// Applies a merge patch to one section, then notifies (see the module docs).
    pub async fn patch(
        &self,
        tenant: &str,
        device: &str,
        section: TwinSection,
        patch: Value,
        expected_version: Option<i64>,
    ) -> wulian_registry::Result<TwinUpdate> {
        let (t, d) = (tenant.to_string(), device.to_string());
        let result = run_blocking(&self.registry, move |r| {
            r.patch_twin(&t, &d, section, &patch, expected_version)
        })
        .await;
        match &result {
            Ok(update) if update.changed => {
                self.metrics.updates.fetch_add(1, Ordering::Relaxed);
                self.notify(tenant, section, update);
            }
            Ok(_) => {}
            Err(_) => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn notify(&self, tenant: &str, section: TwinSection, update: &TwinUpdate) {
        let twin = &update.twin;
        if let Some(live) = self.live.get() {
            live.twin(tenant, section, twin);
        }
        if update.delta_changed {
            let delta = json!({"version": twin.version, "delta": twin.delta});
            self.publish(
                tenant,
                topics::twin_delta_topic(&twin.device_id),
                &delta,
                true,
            );
        }
        let updated = json!({
            "version": twin.version,
            "section": section.as_str(),
            "desired": twin.desired,
            "reported": twin.reported,
            "delta": twin.delta,
        });
        self.publish(
            tenant,
            topics::twin_updated_topic(&twin.device_id),
            &updated,
            false,
        );
    }

    fn publish(&self, tenant: &str, topic: String, body: &Value, retain: bool) {
        self.broker.publish(
            tenant,
            OutboundMessage::json(topic, body.to_string(), retain),
        );
    }

    /// Clears the retained delta of a deleted device (an empty retained message removes it).
    pub fn forget(&self, tenant: &str, device: &str) {
        self.broker.publish(
            tenant,
            OutboundMessage {
                topic: topics::twin_delta_topic(device),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
            },
        );
    }

    /// A device's own twin message: a reported patch, or a request for the whole twin.
    pub async fn on_device_message(
        &self,
        tenant: &str,
        device: &str,
        get: bool,
        msg: &InboundMessage,
    ) -> Result<(), SinkError> {
        if get {
            let twin = self.get(tenant, device).await.map_err(store_error)?;
            let body = serde_json::to_vec(&twin).unwrap_or_default();
            let mut answer = OutboundMessage::json(topics::twin_topic(device), body, false);
            // Lets an MQTT 5 device match the answer to its request.
            answer.properties.correlation_data = msg.properties.correlation_data.clone();
            self.broker.publish(tenant, answer);
            return Ok(());
        }
        let patch: Value = serde_json::from_slice(&msg.payload).map_err(|e| {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            SinkError {
                code: ReasonCode::PayloadFormatInvalid,
                reason: format!("invalid_json: {e}"),
            }
        })?;
        self.patch(tenant, device, TwinSection::Reported, patch, None)
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}

fn store_error(error: wulian_registry::Error) -> SinkError {
    use wulian_registry::Error as E;
    let (code, name) = match &error {
        E::TooLarge { .. } => (ReasonCode::QuotaExceeded, "twin_too_large"),
        E::Invalid { .. } => (ReasonCode::PayloadFormatInvalid, "invalid_twin"),
        E::NotFound { .. } => (ReasonCode::NotAuthorized, "device_not_found"),
        _ => {
            tracing::error!(error = %error, "Twin update failed.");
            (ReasonCode::ImplementationSpecificError, "store_unavailable")
        }
    };
    SinkError {
        code,
        reason: format!("{name}: {error}"),
    }
}
