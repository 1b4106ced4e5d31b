//! Framing on the way out: the body is built in a scratch buffer so its length is known,
//! then the fixed header, the body and (for PUBLISH) the payload are appended to the
//! caller's buffer. On error nothing is appended.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::EncodeError;
use crate::kind::Kind;
use crate::packet::{Packet, Protocol};
use crate::packets::{
    ack, auth, connack, connect, disconnect, publish, suback, subscribe, unsuback, unsubscribe,
};
use crate::wire::put_var_int;

/// Append the encoding of `packet` for `protocol` to `buf`. For V311, properties and
/// 5.0-only fields are omitted; ConnAck codes map to 3.1.1 return codes; SubAck error codes
/// encode as 0x80; UnsubAck has no codes; Disconnect has no body; Auth is an error.
/// CONNECT is encoded for its own `protocol` field.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let mut body = BytesMut::new();
    let mut payload: Option<&Bytes> = None;
    let first = match packet {
        Packet::Connect(c) => {
            connect::encode(c, &mut body)?;
            0x10
        }
        Packet::ConnAck(c) => {
            connack::encode(c, protocol, &mut body)?;
            0x20
        }
        Packet::Publish(p) => {
            publish::encode_header(p, protocol, &mut body)?;
            payload = Some(&p.payload);
            publish::first_byte(p)
        }
        Packet::PubAck(a) => {
            ack::encode(a, protocol, Kind::PubAck, &mut body)?;
            0x40
        }
        Packet::PubRec(a) => {
            ack::encode(a, protocol, Kind::PubRec, &mut body)?;
            0x50
        }
        Packet::PubRel(a) => {
            ack::encode(a, protocol, Kind::PubRel, &mut body)?;
            0x62
        }
        Packet::PubComp(a) => {
            ack::encode(a, protocol, Kind::PubComp, &mut body)?;
            0x70
        }
        Packet::Subscribe(s) => {
            subscribe::encode(s, protocol, &mut body)?;
            0x82
        }
        Packet::SubAck(s) => {
            suback::encode(s, protocol, &mut body)?;
            0x90
        }
        Packet::Unsubscribe(u) => {
            unsubscribe::encode(u, protocol, &mut body)?;
            0xA2
        }
        Packet::UnsubAck(u) => {
            unsuback::encode(u, protocol, &mut body)?;
            0xB0
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(d) => {
            disconnect::encode(d, protocol, &mut body)?;
            0xE0
        }
        Packet::Auth(a) => {
            if protocol == Protocol::V311 {
                return Err(EncodeError::AuthNotInV311);
            }
            auth::encode(a, &mut body)?;
            0xF0
        }
    };
    let payload_len = payload.map_or(0, Bytes::len);
    let remaining = body.len().saturating_add(payload_len);
    let mut header = BytesMut::with_capacity(5);
    header.put_u8(first);
    put_var_int(&mut header, remaining)?;
    buf.reserve(header.len() + remaining);
    buf.put_slice(&header);
    buf.put_slice(&body);
    if let Some(payload) = payload {
        buf.put_slice(payload);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
