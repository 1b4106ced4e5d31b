//! SUBACK (section 3.9): one result per requested filter. 3.1.1 knows only granted QoS 0-2
//! and the failure code 0x80, so every 5.0 error code is sent to 3.1.1 clients as 0x80.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Properties, Protocol, ReasonCode, SubAck};
use crate::properties;
use crate::reason;
use crate::wire::{Reader, put_packet_id};

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = match protocol {
        Protocol::V5 => properties::decode(r, Kind::SubAck)?,
        Protocol::V311 => Properties::default(),
    };
    let mut codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let byte = r.u8()?;
        codes.push(match protocol {
            Protocol::V5 => reason::decode_v5(byte, Kind::SubAck)?,
            Protocol::V311 => match byte {
                0x00 => ReasonCode::GRANTED_QOS0,
                0x01 => ReasonCode::GrantedQoS1,
                0x02 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                _ => return Err(DecodeError::InvalidReasonCode(byte)),
            },
        });
    }
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

pub(crate) fn encode(
    s: &SubAck,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(buf, s.packet_id)?;
    match protocol {
        Protocol::V5 => {
            properties::encode(&s.properties, Kind::SubAck, buf)?;
            for &code in &s.codes {
                buf.put_u8(code as u8);
            }
        }
        Protocol::V311 => {
            for &code in &s.codes {
                buf.put_u8(match code {
                    ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => {
                        code as u8
                    }
                    _ => 0x80,
                });
            }
        }
    }
    Ok(())
}
