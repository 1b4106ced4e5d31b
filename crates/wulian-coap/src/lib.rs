//! The CoAP endpoint (RFC 7252 over UDP) for constrained devices — NB-IoT modules that wake,
//! send one datagram and sleep. Same identities and contract as MQTT and HTTP
//! (docs/device-contract.md): a device id and its token, the same telemetry JSON, the same
//! commands; a command waits for the device's next request and rides back in its response.
//! The user guide is docs/coap.md.
//!
//! coap-lite encodes and decodes messages; the message layer (which datagrams get a Reset,
//! deduplication of retransmissions), the resources and the limits are here. DTLS is not
//! supported yet (docs/coap.md says why): run it on a private APN or a trusted network.

mod dedup;
mod handler;
mod limits;
mod metrics;
mod payload;
mod rate;
mod request;
mod server;
mod wire;

pub use limits::{CoapLimits, DEFAULT_MAX_MESSAGE_BYTES, EXCHANGE_LIFETIME};
pub use metrics::CoapMetrics;
pub use server::CoapServer;
