//! The ingest pipeline and the command service: what happens to a device message between the
//! transport that received it and the stores that keep it, and how applications talk back to
//! devices. Transports (the MQTT broker, the HTTP API, later CoAP) all call into this crate, so
//! validation, durability and command matching are the same whatever the device speaks.

pub mod auth;
pub mod commands;
pub mod pipeline;
pub mod telemetry;

pub use auth::DeviceAuthenticator;
pub use commands::{CommandError, CommandRequest, CommandService, SentCommand};
pub use pipeline::{IngestError, Pipeline};
