//! SUBSCRIBE (section 3.8): topic filters with their subscription options. Filters are not
//! validated here: an invalid filter gets a per-filter SUBACK code (0x8F), which is the
//! broker's decision, not a reason to drop the connection.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::kind::Kind;
use crate::packet::{
    Properties, Protocol, QoS, RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use crate::properties;
use crate::topic::shared_subscription;
use crate::wire::{Reader, put_packet_id, put_string};

const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;
const RETAIN_HANDLING_SHIFT: u8 = 4;

pub(crate) fn decode(r: &mut Reader, protocol: Protocol) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = match protocol {
        Protocol::V5 => properties::decode(r, Kind::Subscribe)?,
        Protocol::V311 => Properties::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_options(r.u8()?, protocol)?;
        if options.no_local && shared_subscription(&filter).is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscription);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_options(byte: u8, protocol: Protocol) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = match protocol {
        Protocol::V311 => 0xFC,
        Protocol::V5 => 0xC0,
    };
    if byte & reserved != 0 {
        return Err(DecodeError::ReservedBitSet);
    }
    let qos = byte & 0x03;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos: QoS::from_u8(qos).ok_or(DecodeError::InvalidQoS(qos))?,
        no_local: byte & NO_LOCAL != 0,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

/// In 3.1.1 only the QoS of the options is written.
pub(crate) fn encode(
    s: &Subscribe,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(buf, s.packet_id)?;
    if protocol == Protocol::V5 {
        properties::encode(&s.properties, Kind::Subscribe, buf)?;
    }
    for f in &s.filters {
        put_string(buf, &f.filter)?;
        let o = &f.options;
        let mut byte = o.qos as u8;
        if protocol == Protocol::V5 {
            byte |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
            if o.no_local {
                byte |= NO_LOCAL;
            }
            if o.retain_as_published {
                byte |= RETAIN_AS_PUBLISHED;
            }
        }
        buf.put_u8(byte);
    }
    Ok(())
}
