//! CONNACK (section 3.2). In 3.1.1 the reason code is one of six return codes; the
//! mapping both ways lives in `reason`.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{ConnAck, Properties, Protocol};
use crate::properties;
use crate::reason;
use crate::wire::Reader;

const SESSION_PRESENT: u8 = 0x01;

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & !SESSION_PRESENT != 0 {
        return Err(DecodeError::ReservedBitSet);
    }
    let code = r.u8()?;
    let (code, properties) = match protocol {
        Protocol::V311 => (reason::decode_v311_connack(code)?, Properties::default()),
        Protocol::V5 => (
            reason::decode_v5(code, Kind::ConnAck)?,
            properties::decode(r, Kind::ConnAck)?,
        ),
    };
    Ok(ConnAck {
        session_present: flags & SESSION_PRESENT != 0,
        code,
        properties,
    })
}

pub(crate) fn encode(
    c: &ConnAck,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u8(u8::from(c.session_present));
    match protocol {
        Protocol::V311 => buf.put_u8(c.code.to_v311_connack()),
        Protocol::V5 => {
            buf.put_u8(c.code as u8);
            properties::encode(&c.properties, Kind::ConnAck, buf)?;
        }
    }
    Ok(())
}
