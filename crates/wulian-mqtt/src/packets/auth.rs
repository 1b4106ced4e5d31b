//! AUTH (section 3.15, 5.0 only): extended authentication exchange. An empty body means
//! Success with no properties.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Auth, Properties, ReasonCode};
use crate::properties;
use crate::reason;
use crate::wire::Reader;

/// Only called for 5.0; the framing rejects packet type 15 on 3.1.1 connections.
pub(crate) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth {
        code: ReasonCode::Success,
        properties: Properties::default(),
    };
    if !r.is_empty() {
        a.code = reason::decode_v5(r.u8()?, Kind::Auth)?;
        if !r.is_empty() {
            a.properties = properties::decode(r, Kind::Auth)?;
        }
    }
    Ok(a)
}

/// Empty body for Success without properties; otherwise code and (possibly empty) properties.
pub(crate) fn encode(a: &Auth, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if a.code == ReasonCode::Success && a.properties.is_empty() {
        return Ok(());
    }
    buf.put_u8(a.code as u8);
    properties::encode(&a.properties, Kind::Auth, buf)
}
