//! CONNECT (section 3.1): the only packet that carries its own protocol level, so it is
//! decoded the same way whatever the connection's protocol is.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Connect, LastWill, Properties, Protocol, QoS};
use crate::properties;
use crate::topic::is_valid_topic_name;
use crate::wire::{Reader, put_binary, put_string};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

pub(crate) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::ReservedBitSet);
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0x03;
    if flags & WILL == 0 && (will_qos != 0 || flags & WILL_RETAIN != 0) {
        return Err(DecodeError::InvalidWillFlags);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS(will_qos))?;
    if protocol == Protocol::V311 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = match protocol {
        Protocol::V5 => properties::decode(r, Kind::Connect)?,
        Protocol::V311 => Properties::default(),
    };

    let client_id = r.string()?;
    let will = if flags & WILL != 0 {
        let properties = match protocol {
            Protocol::V5 => properties::decode(r, Kind::Will)?,
            Protocol::V311 => Properties::default(),
        };
        let topic = r.string()?;
        if !is_valid_topic_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        Some(LastWill {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: flags & WILL_RETAIN != 0,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties,
    })
}

/// Encodes for `c.protocol`; the connection's protocol argument does not apply to CONNECT.
pub(crate) fn encode(c: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = c.protocol == Protocol::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    put_string(buf, "MQTT")?;
    buf.put_u8(if v5 { 5 } else { 4 });
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(will) = &c.will {
        flags |= WILL | ((will.qos as u8) << WILL_QOS_SHIFT);
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        properties::encode(&c.properties, Kind::Connect, buf)?;
    }
    put_string(buf, &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            properties::encode(&will.properties, Kind::Will, buf)?;
        }
        put_string(buf, &will.topic)?;
        put_binary(buf, &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_string(buf, username)?;
    }
    if let Some(password) = &c.password {
        put_binary(buf, password)?;
    }
    Ok(())
}
