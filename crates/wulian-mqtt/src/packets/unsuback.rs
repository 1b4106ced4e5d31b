//! UNSUBACK (section 3.11): in 3.1.1 just the packet identifier, in 5.0 also properties and
//! one reason code per filter.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Properties, Protocol, UnsubAck};
use crate::properties;
use crate::reason;
use crate::wire::{Reader, put_packet_id};

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut ack = UnsubAck {
        packet_id,
        codes: Vec::new(),
        properties: Properties::default(),
    };
    if protocol == Protocol::V5 {
        ack.properties = properties::decode(r, Kind::UnsubAck)?;
        while !r.is_empty() {
            ack.codes.push(reason::decode_v5(r.u8()?, Kind::UnsubAck)?);
        }
    }
    Ok(ack)
}

pub(crate) fn encode(
    u: &UnsubAck,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(buf, u.packet_id)?;
    if protocol == Protocol::V5 {
        properties::encode(&u.properties, Kind::UnsubAck, buf)?;
        for &code in &u.codes {
            buf.put_u8(code as u8);
        }
    }
    Ok(())
}
