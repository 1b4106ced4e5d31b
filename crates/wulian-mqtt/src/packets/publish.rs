//! PUBLISH (section 3.3). Flags in the fixed header carry DUP, QoS and RETAIN; the payload
//! is everything after the variable header and is shared with the input buffer, not copied.

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Properties, Protocol, Publish, QoS};
use crate::properties;
use crate::wire::{Reader, put_packet_id, put_string};

const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;

/// Checks the fixed header flags, which is possible before the body has arrived.
pub(crate) fn check_flags(flags: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(DecodeError::InvalidQoS(qos));
    }
    if protocol == Protocol::V5 && qos == 0 && flags & DUP != 0 {
        return Err(DecodeError::DupWithQoS0);
    }
    Ok(())
}

pub(crate) fn decode(
    r: &mut Reader,
    protocol: Protocol,
    flags: u8,
) -> Result<Publish, DecodeError> {
    let qos = (flags >> 1) & 0x03;
    let qos = QoS::from_u8(qos).ok_or(DecodeError::InvalidQoS(qos))?;
    let topic = r.string()?;
    if topic.contains(['+', '#']) {
        return Err(DecodeError::InvalidTopicName);
    }
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => r.packet_id()?,
    };
    let properties = match protocol {
        Protocol::V5 => properties::decode(r, Kind::Publish)?,
        Protocol::V311 => Properties::default(),
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// The fixed header's first byte.
pub(crate) fn first_byte(p: &Publish) -> u8 {
    let mut byte = 0x30 | ((p.qos as u8) << 1);
    if p.dup {
        byte |= DUP;
    }
    if p.retain {
        byte |= RETAIN;
    }
    byte
}

/// Encodes the variable header; the caller appends the payload.
pub(crate) fn encode_header(
    p: &Publish,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if protocol == Protocol::V311 && p.topic.is_empty() {
        return Err(EncodeError::EmptyTopicName);
    }
    put_string(buf, &p.topic)?;
    if p.qos != QoS::AtMostOnce {
        put_packet_id(buf, p.packet_id)?;
    }
    if protocol == Protocol::V5 {
        properties::encode(&p.properties, Kind::Publish, buf)?;
    }
    Ok(())
}
