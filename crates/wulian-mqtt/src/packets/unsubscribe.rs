//! UNSUBSCRIBE (section 3.10): a non-empty list of topic filters. As with SUBSCRIBE the
//! filters themselves are left to the broker to judge.

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{Properties, Protocol, Unsubscribe};
use crate::properties;
use crate::wire::{Reader, put_packet_id, put_string};

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = match protocol {
        Protocol::V5 => properties::decode(r, Kind::Unsubscribe)?,
        Protocol::V311 => Properties::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn encode(
    u: &Unsubscribe,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(buf, u.packet_id)?;
    if protocol == Protocol::V5 {
        properties::encode(&u.properties, Kind::Unsubscribe, buf)?;
    }
    for f in &u.filters {
        put_string(buf, f)?;
    }
    Ok(())
}
