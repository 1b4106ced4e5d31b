//! MQTT 5.0 properties (section 2.2.2): decoding with the per-packet allow list, duplicate
//! and value-range checks; encoding in identifier order. MQTT 3.1.1 packets have no
//! properties, so the packet codecs only call into here for 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::Properties;
use crate::topic::is_valid_topic_name;
use crate::wire::{Reader, put_binary, put_string, put_var_int};

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Where each property may appear (table 2-4), or `None` for an unknown identifier.
fn allowed_in(id: u8) -> Option<&'static [Kind]> {
    use Kind::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => &[Publish, Will],
        SUBSCRIPTION_IDENTIFIER => &[Publish, Subscribe],
        SESSION_EXPIRY_INTERVAL => &[Connect, ConnAck, Disconnect],
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => &[ConnAck],
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => &[Connect, ConnAck, Auth],
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => &[Connect],
        WILL_DELAY_INTERVAL => &[Will],
        SERVER_REFERENCE => &[ConnAck, Disconnect],
        REASON_STRING => &[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ],
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => &[Connect, ConnAck],
        TOPIC_ALIAS => &[Publish],
        USER_PROPERTY => &[
            Connect,
            Will,
            ConnAck,
            Publish,
            PubAck,
            PubRec,
            PubRel,
            PubComp,
            Subscribe,
            SubAck,
            Unsubscribe,
            UnsubAck,
            Disconnect,
            Auth,
        ],
        _ => return None,
    })
}

impl Properties {
    /// True when no property is set (the 3.1.1 case, and the short forms of 5.0 acks).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Reads a property length and the properties that follow it.
pub(crate) fn decode(r: &mut Reader, kind: Kind) -> Result<Properties, DecodeError> {
    let len = r.var_int()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::TruncatedField)?;
    let mut r = Reader::new(r.bytes(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        let id = r.u8()?;
        let kinds = allowed_in(id).ok_or(DecodeError::UnknownProperty(id))?;
        if !kinds.contains(&kind) {
            return Err(DecodeError::PropertyNotAllowed {
                property: id,
                packet: kind.name(),
            });
        }
        decode_one(&mut r, id, &mut p)?;
    }
    if kind != Kind::Publish && p.subscription_identifiers.len() > 1 {
        return Err(DecodeError::DuplicateProperty(SUBSCRIPTION_IDENTIFIER));
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(p)
}

fn set<T>(slot: &mut Option<T>, id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property restricted to 0 or 1.
fn flag(r: &mut Reader, id: u8) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue { property: id }),
    }
}

fn non_zero_u16(r: &mut Reader, id: u8) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue { property: id }),
        v => Ok(v),
    }
}

fn decode_one(r: &mut Reader, id: u8, p: &mut Properties) -> Result<(), DecodeError> {
    match id {
        PAYLOAD_FORMAT_INDICATOR => set(&mut p.payload_format_indicator, id, flag(r, id)?),
        MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, id, r.u32()?),
        CONTENT_TYPE => set(&mut p.content_type, id, r.string()?),
        RESPONSE_TOPIC => {
            let topic = r.string()?;
            if !is_valid_topic_name(&topic) {
                return Err(DecodeError::InvalidPropertyValue { property: id });
            }
            set(&mut p.response_topic, id, topic)
        }
        CORRELATION_DATA => set(&mut p.correlation_data, id, r.binary()?),
        SUBSCRIPTION_IDENTIFIER => match r.var_int()? {
            0 => Err(DecodeError::InvalidPropertyValue { property: id }),
            v => {
                p.subscription_identifiers.push(v);
                Ok(())
            }
        },
        SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, id, r.u32()?),
        ASSIGNED_CLIENT_IDENTIFIER => set(&mut p.assigned_client_identifier, id, r.string()?),
        SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, id, r.u16()?),
        AUTHENTICATION_METHOD => set(&mut p.authentication_method, id, r.string()?),
        AUTHENTICATION_DATA => set(&mut p.authentication_data, id, r.binary()?),
        REQUEST_PROBLEM_INFORMATION => set(&mut p.request_problem_information, id, flag(r, id)?),
        WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, id, r.u32()?),
        REQUEST_RESPONSE_INFORMATION => set(&mut p.request_response_information, id, flag(r, id)?),
        RESPONSE_INFORMATION => set(&mut p.response_information, id, r.string()?),
        SERVER_REFERENCE => set(&mut p.server_reference, id, r.string()?),
        REASON_STRING => set(&mut p.reason_string, id, r.string()?),
        RECEIVE_MAXIMUM => set(&mut p.receive_maximum, id, non_zero_u16(r, id)?),
        TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, id, r.u16()?),
        TOPIC_ALIAS => set(&mut p.topic_alias, id, non_zero_u16(r, id)?),
        MAXIMUM_QOS => set(&mut p.maximum_qos, id, flag(r, id)?),
        RETAIN_AVAILABLE => set(&mut p.retain_available, id, flag(r, id)?),
        USER_PROPERTY => {
            let key = r.string()?;
            let value = r.string()?;
            p.user_properties.push((key, value));
            Ok(())
        }
        MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => Err(DecodeError::InvalidPropertyValue { property: id }),
            v => set(&mut p.maximum_packet_size, id, v),
        },
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.wildcard_subscription_available, id, flag(r, id)?)
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            set(&mut p.subscription_identifier_available, id, flag(r, id)?)
        }
        SHARED_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.shared_subscription_available, id, flag(r, id)?)
        }
        _ => Err(DecodeError::UnknownProperty(id)),
    }
}

/// Appends the property length and the properties, refusing any not allowed in `kind`.
pub(crate) fn encode(p: &Properties, kind: Kind, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if kind != Kind::Publish && p.subscription_identifiers.len() > 1 {
        return Err(EncodeError::MultipleSubscriptionIdentifiers {
            packet: kind.name(),
        });
    }
    let mut w = Writer {
        out: BytesMut::new(),
        kind,
    };
    w.u8(PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator)?;
    w.u32(MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval)?;
    w.string(CONTENT_TYPE, p.content_type.as_deref())?;
    w.string(RESPONSE_TOPIC, p.response_topic.as_deref())?;
    w.binary(CORRELATION_DATA, p.correlation_data.as_ref())?;
    for &v in &p.subscription_identifiers {
        w.head(SUBSCRIPTION_IDENTIFIER)?;
        put_var_int(&mut w.out, v as usize)?;
    }
    w.u32(SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)?;
    w.string(
        ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier.as_deref(),
    )?;
    w.u16(SERVER_KEEP_ALIVE, p.server_keep_alive)?;
    w.string(AUTHENTICATION_METHOD, p.authentication_method.as_deref())?;
    w.binary(AUTHENTICATION_DATA, p.authentication_data.as_ref())?;
    w.u8(REQUEST_PROBLEM_INFORMATION, p.request_problem_information)?;
    w.u32(WILL_DELAY_INTERVAL, p.will_delay_interval)?;
    w.u8(REQUEST_RESPONSE_INFORMATION, p.request_response_information)?;
    w.string(RESPONSE_INFORMATION, p.response_information.as_deref())?;
    w.string(SERVER_REFERENCE, p.server_reference.as_deref())?;
    w.string(REASON_STRING, p.reason_string.as_deref())?;
    w.u16(RECEIVE_MAXIMUM, p.receive_maximum)?;
    w.u16(TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum)?;
    w.u16(TOPIC_ALIAS, p.topic_alias)?;
    w.u8(MAXIMUM_QOS, p.maximum_qos)?;
    w.u8(RETAIN_AVAILABLE, p.retain_available)?;
    for (key, value) in &p.user_properties {
        w.head(USER_PROPERTY)?;
        put_string(&mut w.out, key)?;
        put_string(&mut w.out, value)?;
    }
    w.u32(MAXIMUM_PACKET_SIZE, p.maximum_packet_size)?;
    w.u8(
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    )?;
    w.u8(
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    )?;
    w.u8(
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    )?;
    put_var_int(buf, w.out.len())?;
    buf.put_slice(&w.out);
    Ok(())
}

/// Collects encoded properties, checking each against the allow list as it is written.
struct Writer {
    out: BytesMut,
    kind: Kind,
}

impl Writer {
    fn head(&mut self, id: u8) -> Result<(), EncodeError> {
        if !allowed_in(id).is_some_and(|kinds| kinds.contains(&self.kind)) {
            return Err(EncodeError::PropertyNotAllowed {
                property: id,
                packet: self.kind.name(),
            });
        }
        self.out.put_u8(id);
        Ok(())
    }

    fn u8(&mut self, id: u8, v: Option<u8>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.head(id)?;
            self.out.put_u8(v);
        }
        Ok(())
    }

    fn u16(&mut self, id: u8, v: Option<u16>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.head(id)?;
            self.out.put_u16(v);
        }
        Ok(())
    }

    fn u32(&mut self, id: u8, v: Option<u32>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.head(id)?;
            self.out.put_u32(v);
        }
        Ok(())
    }

    fn string(&mut self, id: u8, v: Option<&str>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.head(id)?;
            put_string(&mut self.out, v)?;
        }
        Ok(())
    }

    fn binary(&mut self, id: u8, v: Option<&Bytes>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.head(id)?;
            put_binary(&mut self.out, v)?;
        }
        Ok(())
    }
}
