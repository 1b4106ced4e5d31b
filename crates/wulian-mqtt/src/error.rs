//! Why a packet could not be decoded or encoded. Decode errors are precise (for logs and
//! tests) and each maps onto the MQTT 5.0 reason code the broker should disconnect with.

use crate::packet::ReasonCode;

/// A received packet violates the protocol. The connection should be closed (for 5.0, after
/// sending DISCONNECT or CONNACK with [`DecodeError::reason_code`]). The decode buffer is in
/// an unspecified state afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("remaining length is longer than 4 bytes")]
    MalformedRemainingLength,
    #[error("variable byte integer is longer than 4 bytes")]
    MalformedVarInt,
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("invalid protocol name")]
    InvalidProtocolName,
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    #[error("reserved bit set")]
    ReservedBitSet,
    #[error("will QoS or will retain set without the will flag")]
    InvalidWillFlags,
    #[error("password flag set without user name flag (MQTT 3.1.1)")]
    PasswordWithoutUsername,
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("string contains U+0000")]
    NulCharacter,
    #[error("field extends past the end of the packet")]
    TruncatedField,
    #[error("bytes left over at the end of the packet")]
    TrailingBytes,
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    #[error("packet identifier is zero")]
    ZeroPacketId,
    #[error("topic name contains a wildcard or is otherwise invalid")]
    InvalidTopicName,
    #[error("topic name is empty and no topic alias is given")]
    EmptyTopicName,
    #[error("SUBSCRIBE without topic filters")]
    EmptySubscription,
    #[error("UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    #[error("retain handling 3 in subscription options")]
    InvalidRetainHandling,
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    #[error("property {property:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { property: u8, packet: &'static str },
    #[error("property {property:#04x} has an invalid value")]
    InvalidPropertyValue { property: u8 },
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
    #[error("unknown reason code {0:#04x}")]
    InvalidReasonCode(u8),
    #[error("reason code {code:#04x} is not allowed in {packet}")]
    ReasonCodeNotAllowed { code: u8, packet: &'static str },
}

impl DecodeError {
    /// The MQTT 5.0 reason code to report this error with (DISCONNECT or CONNACK).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            InvalidTopicName => ReasonCode::TopicNameInvalid,
            InvalidPropertyValue { property: 0x23 } => ReasonCode::TopicAliasInvalid,
            ZeroPacketId
            | EmptyTopicName
            | EmptySubscription
            | EmptyUnsubscribe
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | DuplicateProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod
            | ReasonCodeNotAllowed { .. } => ReasonCode::ProtocolError,
            MalformedRemainingLength
            | MalformedVarInt
            | InvalidPacketType(_)
            | InvalidFlags { .. }
            | InvalidProtocolName
            | ReservedBitSet
            | InvalidWillFlags
            | PasswordWithoutUsername
            | InvalidUtf8
            | NulCharacter
            | TruncatedField
            | TrailingBytes
            | InvalidQoS(_)
            | DupWithQoS0
            | UnknownProperty(_)
            | InvalidReasonCode(_) => ReasonCode::MalformedPacket,
        }
    }
}

/// A packet cannot be represented on the wire. Nothing is appended to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("AUTH does not exist in MQTT 3.1.1")]
    AuthNotInV311,
    #[error("string of {0} bytes is longer than 65535")]
    StringTooLong(usize),
    #[error("binary data of {0} bytes is longer than 65535")]
    BinaryTooLong(usize),
    #[error("value {0} does not fit a variable byte integer")]
    VarIntTooLarge(usize),
    #[error("packet identifier is zero")]
    ZeroPacketId,
    #[error("password without user name is not allowed in MQTT 3.1.1")]
    PasswordWithoutUsername,
    #[error("empty topic name is not allowed in MQTT 3.1.1")]
    EmptyTopicName,
    #[error("property {property:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { property: u8, packet: &'static str },
    #[error("more than one subscription identifier in {packet}")]
    MultipleSubscriptionIdentifiers { packet: &'static str },
}
