//! Framing on the way out: the body is built in a scratch buffer so its length is known,
//! then the fixed header, the body and (for PUBLISH) the payload are appended to the
//! caller's buffer. On error nothing is appended.
//!
//! The scratch buffer is per thread and reused: a broker encodes a PUBACK or a delivery per
//! message, and two fresh allocations for each (body and header) showed in its profile.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::EncodeError;
use crate::kind::Kind;
use crate::packet::{Packet, Protocol};
use crate::packets::{
    ack, auth, connack, connect, disconnect, publish, suback, subscribe, unsuback, unsubscribe,
};
use crate::wire::{MAX_VAR_INT, put_var_int};

/// Append the encoding of `packet` for `protocol` to `buf`. For V311, properties and
/// 5.0-only fields are omitted; ConnAck codes map to 3.1.1 return codes; SubAck error codes
/// encode as 0x80; UnsubAck has no codes; Disconnect has no body; Auth is an error.
/// CONNECT is encoded for its own `protocol` field.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
    BODY_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut body) => {
            body.clear();
            let result = encode_with(packet, protocol, buf, &mut body);
            if body.capacity() > KEEP_SCRATCH {
                *body = BytesMut::new();
            }
            result
        }
        // Not reached (encoding does not re-enter), but never worth a panic.
        Err(_) => encode_with(packet, protocol, buf, &mut BytesMut::new()),
    })
}

/// A scratch body that grew past this (a large CONNECT or SUBACK) is not kept.
const KEEP_SCRATCH: usize = 16 * 1024;

thread_local! {
    static BODY_SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

fn encode_with(
    packet: &Packet,
    protocol: Protocol,
    buf: &mut BytesMut,
    body: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut payload: Option<&Bytes> = None;
    let first = match packet {
        Packet::Connect(c) => {
            connect::encode(c, body)?;
            0x10
        }
        Packet::ConnAck(c) => {
            connack::encode(c, protocol, body)?;
            0x20
        }
        Packet::Publish(p) => {
            publish::encode_header(p, protocol, body)?;
            payload = Some(&p.payload);
            publish::first_byte(p)
        }
        Packet::PubAck(a) => {
            ack::encode(a, protocol, Kind::PubAck, body)?;
            0x40
        }
        Packet::PubRec(a) => {
            ack::encode(a, protocol, Kind::PubRec, body)?;
            0x50
        }
        Packet::PubRel(a) => {
            ack::encode(a, protocol, Kind::PubRel, body)?;
            0x62
        }
        Packet::PubComp(a) => {
            ack::encode(a, protocol, Kind::PubComp, body)?;
            0x70
        }
        Packet::Subscribe(s) => {
            subscribe::encode(s, protocol, body)?;
            0x82
        }
        Packet::SubAck(s) => {
            suback::encode(s, protocol, body)?;
            0x90
        }
        Packet::Unsubscribe(u) => {
            unsubscribe::encode(u, protocol, body)?;
            0xA2
        }
        Packet::UnsubAck(u) => {
            unsuback::encode(u, protocol, body)?;
            0xB0
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(d) => {
            disconnect::encode(d, protocol, body)?;
            0xE0
        }
        Packet::Auth(a) => {
            if protocol == Protocol::V311 {
                return Err(EncodeError::AuthNotInV311);
            }
            auth::encode(a, body)?;
            0xF0
        }
    };
    let payload_len = payload.map_or(0, Bytes::len);
    let remaining = body.len().saturating_add(payload_len);
    if remaining > MAX_VAR_INT {
        // Checked before anything is appended (put_var_int would fail half-way).
        return Err(EncodeError::VarIntTooLarge(remaining));
    }
    buf.reserve(5 + remaining);
    buf.put_u8(first);
    put_var_int(buf, remaining)?;
    buf.put_slice(body);
    if let Some(payload) = payload {
        buf.put_slice(payload);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
