//! One module per packet type, each with the body (variable header and payload) decoder
//! and encoder. Framing (fixed header, remaining length) lives in `decode` and `encode`.

pub(crate) mod ack;
pub(crate) mod auth;
pub(crate) mod connack;
pub(crate) mod connect;
pub(crate) mod disconnect;
pub(crate) mod publish;
pub(crate) mod suback;
pub(crate) mod subscribe;
pub(crate) mod unsuback;
pub(crate) mod unsubscribe;
