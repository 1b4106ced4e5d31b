//! Reason codes on the wire: parsing the byte, which codes each packet may carry (MQTT 5.0
//! table 2-6), and the MQTT 3.1.1 CONNACK return codes.

use crate::error::DecodeError;
use crate::kind::Kind;
use crate::packet::ReasonCode;

impl ReasonCode {
    /// The reason code with this value, or `None` if 5.0 defines no such code.
    pub fn from_u8(v: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match v {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// Whether MQTT 5.0 allows this code in the given packet.
    pub(crate) fn allowed_in(self, kind: Kind) -> bool {
        use Kind::*;
        let kinds: &[Kind] = match self as u8 {
            0x00 => &[
                ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
            ],
            0x01 | 0x02 => &[SubAck],
            0x04 => &[Disconnect],
            0x10 => &[PubAck, PubRec],
            0x11 => &[UnsubAck],
            0x18 | 0x19 => &[Auth],
            0x80 | 0x83 | 0x87 => &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
            0x81 | 0x82 | 0x89 | 0x8C | 0x95 | 0x9A..=0x9D | 0x9F => &[ConnAck, Disconnect],
            0x84..=0x86 | 0x88 | 0x8A => &[ConnAck],
            0x8B | 0x8D | 0x8E | 0x93 | 0x94 | 0x96 | 0x98 | 0xA0 => &[Disconnect],
            0x8F => &[SubAck, UnsubAck, Disconnect],
            0x90 | 0x99 => &[ConnAck, PubAck, PubRec, Disconnect],
            0x91 => &[PubAck, PubRec, SubAck, UnsubAck],
            0x92 => &[PubRel, PubComp],
            0x97 => &[ConnAck, PubAck, PubRec, SubAck, Disconnect],
            0x9E | 0xA1 | 0xA2 => &[SubAck, Disconnect],
            _ => &[],
        };
        kinds.contains(&kind)
    }

    /// The MQTT 3.1.1 CONNACK return code nearest to this reason code.
    pub(crate) fn to_v311_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword => 4,
            ReasonCode::NotAuthorized => 5,
            _ => 3,
        }
    }
}

/// Parses a 5.0 reason code byte and checks it is allowed in `kind`.
pub(crate) fn decode_v5(byte: u8, kind: Kind) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode(byte))?;
    if code.allowed_in(kind) {
        Ok(code)
    } else {
        Err(DecodeError::ReasonCodeNotAllowed {
            code: byte,
            packet: kind.name(),
        })
    }
}

/// Parses a 3.1.1 CONNACK return code (0..=5).
pub(crate) fn decode_v311_connack(byte: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match byte {
        0 => ReasonCode::Success,
        1 => ReasonCode::UnsupportedProtocolVersion,
        2 => ReasonCode::ClientIdentifierNotValid,
        3 => ReasonCode::ServerUnavailable,
        4 => ReasonCode::BadUserNameOrPassword,
        5 => ReasonCode::NotAuthorized,
        _ => return Err(DecodeError::InvalidReasonCode(byte)),
    })
}
