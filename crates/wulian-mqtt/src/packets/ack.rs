//! PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4-3.7): a packet identifier and, in 5.0,
//! a reason code and properties that are both omitted when they carry nothing.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Ack, Properties, Protocol, ReasonCode};
use crate::properties;
use crate::reason;
use crate::wire::{Reader, put_packet_id};

pub(crate) fn decode(r: &mut Reader, protocol: Protocol, kind: Kind) -> Result<Ack, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut ack = Ack {
        packet_id,
        code: ReasonCode::Success,
        properties: Properties::default(),
    };
    if protocol == Protocol::V5 && !r.is_empty() {
        ack.code = reason::decode_v5(r.u8()?, kind)?;
        if !r.is_empty() {
            ack.properties = properties::decode(r, kind)?;
        }
    }
    Ok(ack)
}

/// Uses the 2-byte form for Success without properties and the 3-byte form for another
/// code without properties.
pub(crate) fn encode(
    a: &Ack,
    protocol: Protocol,
    kind: Kind,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(buf, a.packet_id)?;
    if protocol == Protocol::V5 {
        let no_properties = a.properties.is_empty();
        if a.code != ReasonCode::Success || !no_properties {
            buf.put_u8(a.code as u8);
        }
        if !no_properties {
            properties::encode(&a.properties, kind, buf)?;
        }
    }
    Ok(())
}
