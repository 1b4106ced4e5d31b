//! DISCONNECT (section 3.14): empty in 3.1.1; in 5.0 an optional reason code and optional
//! properties, where an empty body means normal disconnection.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Disconnect, Properties, Protocol, ReasonCode};
use crate::properties;
use crate::reason;
use crate::wire::Reader;

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect {
        code: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties::default(),
    };
    if protocol == Protocol::V5 && !r.is_empty() {
        d.code = reason::decode_v5(r.u8()?, Kind::Disconnect)?;
        if !r.is_empty() {
            d.properties = properties::decode(r, Kind::Disconnect)?;
        }
    }
    Ok(d)
}

/// Uses the shortest form: empty, reason code only, or reason code and properties.
pub(crate) fn encode(
    d: &Disconnect,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if protocol == Protocol::V311 {
        return Ok(());
    }
    let no_properties = d.properties.is_empty();
    if d.code != ReasonCode::NORMAL_DISCONNECTION || !no_properties {
        buf.put_u8(d.code as u8);
    }
    if !no_properties {
        properties::encode(&d.properties, Kind::Disconnect, buf)?;
    }
    Ok(())
}
