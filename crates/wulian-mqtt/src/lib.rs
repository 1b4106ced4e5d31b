//! MQTT 3.1.1 and 5.0 packet codec: pure functions from bytes to [`Packet`] and back, no I/O.
//!
//! The broker owns the socket and the buffer; it calls [`decode`] whenever bytes arrive and
//! [`encode`] whenever it wants to send. Both protocol levels share one packet model
//! ([`packet`]); the `protocol` argument decides which wire format is used.

pub mod packet;
pub mod topic;

mod decode;
mod encode;
mod error;
mod kind;
mod packets;
mod properties;
mod reason;
mod wire;

pub use decode::decode;
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use packet::*;

#[cfg(test)]
mod testutil;
