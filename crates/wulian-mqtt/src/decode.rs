//! Framing on the way in: the fixed header (type, flags, remaining length) is checked as
//! soon as its bytes are there, so garbage and oversized packets are refused before the
//! body is buffered; then the body goes to the packet's own decoder.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::kind::Kind;
use crate::packet::{Packet, Protocol};
use crate::packets::{
    ack, auth, connack, connect, disconnect, publish, suback, subscribe, unsuback, unsubscribe,
};
use crate::wire::{Reader, VarInt, parse_var_int};

/// Decode one packet from the front of `buf`. `Ok(None)` = not enough bytes yet (nothing
/// consumed). On `Ok(Some(p))` the packet's bytes are consumed. `protocol` is the protocol
/// level of the connection (ignored for CONNECT, which carries its own level). A packet
/// whose total size (fixed header + remaining length) exceeds `max_packet_size` is
/// [`DecodeError::PacketTooLarge`], detected from the fixed header alone.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (packet_type, flags) = (first >> 4, first & 0x0F);
    check_flags(packet_type, flags, protocol)?;
    let (remaining, len_bytes) = match parse_var_int(&buf[1..]) {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
        VarInt::Malformed => return Err(DecodeError::MalformedRemainingLength),
    };
    let size = 1 + len_bytes + remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    // No `reserve` here: a peer must not make us allocate by announcing a large length.
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(1 + len_bytes);
    let mut r = Reader::new(frame);
    let packet = decode_body(&mut r, packet_type, flags, protocol)?;
    r.finish()?;
    Ok(Some(packet))
}

/// Packet types and their fixed header flags (section 2.1.3).
fn check_flags(packet_type: u8, flags: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let expected = match packet_type {
        3 => return publish::check_flags(flags, protocol),
        6 | 8 | 10 => 0b0010,
        1 | 2 | 4 | 5 | 7 | 9 | 11..=14 => 0,
        15 if protocol == Protocol::V5 => 0,
        _ => return Err(DecodeError::InvalidPacketType(packet_type)),
    };
    if flags != expected {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    Ok(())
}

fn decode_body(
    r: &mut Reader,
    packet_type: u8,
    flags: u8,
    protocol: Protocol,
) -> Result<Packet, DecodeError> {
    Ok(match packet_type {
        1 => Packet::Connect(connect::decode(r)?),
        2 => Packet::ConnAck(connack::decode(r, protocol)?),
        3 => Packet::Publish(publish::decode(r, protocol, flags)?),
        4 => Packet::PubAck(ack::decode(r, protocol, Kind::PubAck)?),
        5 => Packet::PubRec(ack::decode(r, protocol, Kind::PubRec)?),
        6 => Packet::PubRel(ack::decode(r, protocol, Kind::PubRel)?),
        7 => Packet::PubComp(ack::decode(r, protocol, Kind::PubComp)?),
        8 => Packet::Subscribe(subscribe::decode(r, protocol)?),
        9 => Packet::SubAck(suback::decode(r, protocol)?),
        10 => Packet::Unsubscribe(unsubscribe::decode(r, protocol)?),
        11 => Packet::UnsubAck(unsuback::decode(r, protocol)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect::decode(r, protocol)?),
        15 => Packet::Auth(auth::decode(r)?),
        _ => return Err(DecodeError::InvalidPacketType(packet_type)),
    })
}

#[cfg(test)]
mod tests;
