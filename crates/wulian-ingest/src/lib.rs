//! The ingest pipeline and the command service: what happens to a device message between the
//! transport that received it and the stores that keep it, and how applications talk back to
//! devices. Transports (the MQTT broker, the HTTP API, later CoAP) all call into this crate, so
//! validation, durability and command matching are the same whatever the device speaks.

pub mod alarms;
pub mod auth;
pub mod commands;
mod deferred;
mod device_table;
pub mod live;
pub mod models;
pub mod observer;
pub mod ota;
pub mod pipeline;
pub mod presence;
pub mod rules;
pub mod telemetry;
pub mod twins;
pub mod webhooks;
pub mod zones;

pub use alarms::{AlarmEvent, AlarmService};
pub use auth::DeviceAuthenticator;
pub use commands::{CommandError, CommandRequest, CommandService, SentCommand};
pub use live::{LiveError, LiveEvent, LiveEvents, LiveRecv, LiveSubscription};
pub use models::ModelCache;
pub use observer::DeviceObserver;
pub use ota::{OtaError, OtaService};
pub use pipeline::{IngestError, Lifecycle, Pipeline};
pub use presence::{DevicePresence, PresenceTracker};
pub use rules::{RuleExecutor, RuleHost};
pub use twins::TwinService;
pub use webhooks::{WebhookConfig, WebhookRequest, WebhookSender};
pub use zones::ZoneCache;
